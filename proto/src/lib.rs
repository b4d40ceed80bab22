//! kith-proto (work in progress).

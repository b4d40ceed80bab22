//! kith-client (work in progress).

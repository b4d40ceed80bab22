//! kith-crypto (work in progress).

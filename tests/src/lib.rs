//! kith-tests (work in progress).

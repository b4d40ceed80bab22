//! kith-node (work in progress).

//! kith-client-api (work in progress).

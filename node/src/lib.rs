//! The kith home node: holds its users, their mailboxes, presence and sessions, and wires the
//! client API to them.

pub mod store;

//! kith's whole-node tests, in one binary: real nodes on loopback over real sockets.

#![allow(clippy::print_stderr, reason = "skipped tests say why on stderr")]

mod harness;

mod accounts;
mod bench_smoke;
mod durability;
mod errors;
mod history;
mod messaging;
mod presence;
mod receipts;
mod store;

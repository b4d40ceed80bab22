//! kith's whole-node tests, in one binary: real nodes on loopback over real sockets.

#![allow(clippy::print_stderr, reason = "skipped tests say why on stderr")]

mod cli;
mod harness;
mod instances;

mod accounts;
mod bench_smoke;
mod chaos;
mod config;
mod durability;
mod e2ee;
mod errors;
mod fault_proxy;
mod federation;
mod federation_faults;
mod hardening;
mod history;
mod keys;
mod messaging;
mod operations;
mod presence;
mod presence_privacy;
mod receipts;
mod scale;
mod sessions;
mod store;
mod tls;
mod web;

//! `kith-load`: opens thousands of authenticated connections to a kith node (or an XMPP
//! server, for comparison), runs a named workload between sender→receiver pairs and reports
//! what the server did: connections held, messages sent, received, lost and duplicated,
//! throughput, latency percentiles (HDR histograms) and the server's memory and CPU.
//!
//! Every message carries its pair, its sequence number and the moment it was handed to the
//! sender's socket, so a receiver times it (send→receive) and checks it (lost, duplicated)
//! on its own; kith's `sent` answer carries the time back too (send→stored). Receivers
//! acknowledge every message (`ack`, or an XEP-0184 receipt), so the server does its full work.
//!
//! Accounts come from `kith user import` and tokens are minted with the node's key when its
//! data directory is given ([`provision`]); ten thousand users take seconds.
//!
//! The run logic is a library so tests can call it in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), kith_bench::BenchError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kith_bench::{KithNode, Rate, RunOptions, Scenario, Server, Silent, run};
//!
//! let options = RunOptions {
//!     scenario: Scenario::Throughput,
//!     server: Server::Kith {
//!         senders: KithNode { targets: vec!["127.0.0.1:8080".parse().unwrap()], server_name: "localhost".into(), files: None },
//!         receivers: None,
//!     },
//!     connections: 4, pairs: 2, rate: Rate::Max,
//!     duration: Duration::from_secs(1), warmup: Duration::ZERO, size: 64, window: 16,
//!     pids: vec![], source_addresses: 1, connect_concurrency: 8,
//!     settle: Duration::ZERO, drain_timeout: Duration::from_secs(5), user_prefix: "load".into(),
//! };
//! let (_interrupt, interrupted) = tokio::sync::watch::channel(false);
//! let report = run(options, Arc::new(Silent), interrupted).await?;
//! assert_eq!(report.lost, 0);
//! # Ok(()) }
//! ```
//!
//! The XMPP side reads stanzas with a small hand-written reader (`xmpp::stanza`), not an XML
//! crate: the load test reads a handful of stanza shapes from servers it configures itself.

pub mod compare;
pub mod error;
mod kith;
pub mod measure;
pub mod pace;
pub mod provision;
pub mod report;
mod roles;
pub mod run;
pub mod system;
mod xmpp;

pub use error::BenchError;
pub use pace::Rate;
pub use provision::NodeFiles;
pub use report::{Progress, Report};
pub use run::{Defaults, KithNode, Observer, RunOptions, Scenario, Server, Silent, XmppServer, run};

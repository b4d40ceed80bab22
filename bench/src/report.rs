//! What a run reports: a [`Report`] serialised as JSON (`--json`) or printed as a summary.

use std::fmt;

use serde::Serialize;

use crate::measure::Percentiles;
use crate::system::FileLimit;

/// Connections of a run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Connections {
    /// How many were asked for.
    pub requested: usize,
    /// How many were opened and authenticated.
    pub established: u64,
    /// How many could not be.
    pub failed: u64,
    /// Established connections the server closed (or that broke) before the run ended.
    pub disconnected: u64,
    /// Seconds it took to open them all.
    pub connect_seconds: f64,
    /// Source addresses they were spread over.
    pub source_addresses: usize,
}

/// The measured server processes (figures added up over the pids given).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerUsage {
    /// The processes.
    pub pids: Vec<u32>,
    /// RSS before the run's connections were opened, bytes.
    pub rss_before_bytes: u64,
    /// RSS with every connection open (before traffic), bytes.
    pub rss_connected_bytes: u64,
    /// RSS at the end of the run, bytes.
    pub rss_end_bytes: u64,
    /// `(rss_connected - rss_before) / established`: what one idle connection costs, bytes.
    pub rss_per_connection_bytes: Option<f64>,
    /// CPU seconds (user + system) used during the traffic phase.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the traffic phase's wall time (1.0 = one core busy).
    pub cpu_cores: f64,
    /// CPU seconds per 1,000 received messages.
    pub cpu_seconds_per_1000_messages: Option<f64>,
    /// Bytes written to storage during the traffic phase per received message (WAL frames,
    /// checkpoints, logs): like instructions, a figure the machine's load does not move.
    pub storage_bytes_per_message: Option<f64>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `idle`, `throughput`, `latency` or `federation`.
    pub scenario: String,
    /// `kith` or `xmpp`.
    pub protocol: String,
    /// The server(s) driven.
    pub targets: Vec<String>,
    /// The connections.
    pub connections: Connections,
    /// Sender→receiver pairs that sent.
    pub pairs: usize,
    /// Target rate: messages per second, or `max`.
    pub rate: String,
    /// Message size, bytes.
    pub size: usize,
    /// Seconds of sending (after warm-up; 0 for `idle`), and of holding for `idle`.
    pub duration_seconds: f64,
    /// Seconds of warm-up excluded from latency and throughput.
    pub warmup_seconds: f64,
    /// Messages handed to senders' sockets.
    pub sent: u64,
    /// Messages the server confirmed as durably stored (kith's `sent`; XMPP has no such answer).
    pub stored: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Sent and never received (after the drain).
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Receipts the senders got (kith `receipt`, XEP-0184 `received`).
    pub receipts: u64,
    /// Error answers from the server.
    pub errors: u64,
    /// Frames or stanzas the workload did not expect.
    pub unexpected: u64,
    /// Messages received per second (after warm-up, until the last one arrived).
    pub throughput: f64,
    /// Send→receive latency, milliseconds.
    pub latency_ms: Percentiles,
    /// Send→stored latency (kith's `sent`), milliseconds.
    pub stored_latency_ms: Option<Percentiles>,
    /// The server's memory and CPU, when pids were given.
    pub server: Option<ServerUsage>,
    /// The load generator's open-file limit.
    pub file_limit: Option<FileLimit>,
    /// The 1-minute load average at the start and at the end.
    pub load_average: [Option<f64>; 2],
    /// Seconds spent creating accounts and getting tokens.
    pub provision_seconds: f64,
    /// Whether the run was cut short (Ctrl-C); the figures are what was measured until then.
    pub interrupted: bool,
    /// Things the reader should know (a file limit too low, a drain that timed out …).
    pub warnings: Vec<String>,
    /// The first few errors seen.
    pub error_samples: Vec<String>,
}

fn opt(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}{unit}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.connections;
        writeln!(
            f,
            "kith-load {} ({}) against {}{}",
            self.scenario,
            self.protocol,
            self.targets.join(", "),
            if self.interrupted { "  [interrupted]" } else { "" }
        )?;
        writeln!(
            f,
            "  connections  {} established, {} failed, {} dropped by the server (of {}; {:.1} s to open, {} source addresses)",
            c.established, c.failed, c.disconnected, c.requested, c.connect_seconds, c.source_addresses
        )?;
        if self.pairs > 0 {
            writeln!(
                f,
                "  workload     {} pairs, rate {}, {:.1} s (+{:.1} s warm-up), {} B messages",
                self.pairs, self.rate, self.duration_seconds, self.warmup_seconds, self.size
            )?;
            writeln!(
                f,
                "  messages     {} sent, {} stored, {} received, {} lost, {} duplicated, {} receipts, {} errors",
                self.sent, self.stored, self.received, self.lost, self.duplicated, self.receipts, self.errors
            )?;
            writeln!(f, "  throughput   {:.0} messages/s", self.throughput)?;
            let l = &self.latency_ms;
            writeln!(
                f,
                "  send→receive p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                l.p50, l.p90, l.p99, l.p999, l.max
            )?;
            if let Some(s) = &self.stored_latency_ms {
                writeln!(
                    f,
                    "  send→stored  p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                    s.p50, s.p90, s.p99, s.p999, s.max
                )?;
            }
        }
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  server       RSS {:.1} MiB before, {:.1} MiB connected, {:.1} MiB at the end; {} per connection",
                mib(s.rss_before_bytes),
                mib(s.rss_connected_bytes),
                mib(s.rss_end_bytes),
                opt(s.rss_per_connection_bytes.map(|b| b / 1024.0), " KiB")
            )?;
            if self.pairs > 0 {
                writeln!(
                    f,
                    "               CPU {:.2} s ({:.2} cores), {} s per 1,000 messages; {} written to storage per message",
                    s.cpu_seconds,
                    s.cpu_cores,
                    opt(s.cpu_seconds_per_1000_messages, ""),
                    opt(s.storage_bytes_per_message.map(|b| b / 1024.0), " KiB")
                )?;
            }
        }
        writeln!(
            f,
            "  load average {} at the start, {} at the end; provisioning took {:.1} s",
            opt(self.load_average[0], ""),
            opt(self.load_average[1], ""),
            self.provision_seconds
        )?;
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        for error in &self.error_samples {
            writeln!(f, "  e.g. {error}")?;
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A one-line snapshot for the live progress line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// What the run is doing.
    pub phase: &'static str,
    /// Seconds into the phase.
    pub elapsed_seconds: f64,
    /// Connections open.
    pub established: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Messages sent so far.
    pub sent: u64,
    /// Messages received so far.
    pub received: u64,
    /// Receive rate over the last interval, messages/s.
    pub rate: f64,
    /// Send→receive p99 so far, ms.
    pub p99_ms: f64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} {:>5.1}s] conns {} (+{} failed)  sent {}  recv {}  {:.0}/s  p99 {:.2} ms",
            self.phase,
            self.elapsed_seconds,
            self.established,
            self.failed,
            self.sent,
            self.received,
            self.rate,
            self.p99_ms
        )
    }
}

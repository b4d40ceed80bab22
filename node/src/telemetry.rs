//! What an instance counts as it works, for `/metrics`: messages accepted, pushed and
//! acknowledged, how long a committed message takes to reach the sessions, and failures of
//! the engines it depends on. Scrape-time figures (sessions, outbox, hand-off lag) are read
//! where they live when `/metrics` is asked for.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The counters of one instance.
#[derive(Debug)]
pub struct Telemetry {
    /// Messages stored for the first time (repeats of a `clientMessageId` or an envelope are
    /// not counted), from this node's users and from other nodes.
    pub messages_in: Counter,
    /// Message frames queued for live sessions on this instance.
    pub messages_pushed: Counter,
    /// Receipts (`ack` and `read`) recorded.
    pub receipts: Counter,
    /// Seconds from a message's commit to its push being done (cache written, this instance's
    /// sessions queued, other instances handed it).
    pub commit_to_push: Histogram,
    registry: Registry,
}

impl Default for Telemetry {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kith");
        let messages_in = Counter::default();
        let messages_pushed = Counter::default();
        let receipts = Counter::default();
        // 50 µs to about 1.6 s.
        let commit_to_push = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register("messages_in", "Messages stored for the first time", messages_in.clone());
        registry.register("messages_pushed", "Message frames queued for live sessions here", messages_pushed.clone());
        registry.register("receipts", "Receipts recorded", receipts.clone());
        registry.register(
            "commit_to_push_seconds",
            "From a message's commit to its push being done",
            commit_to_push.clone(),
        );
        Self { messages_in, messages_pushed, receipts, commit_to_push, registry }
    }
}

impl Telemetry {
    /// The counters in the OpenMetrics text format, without the closing `# EOF` (the caller
    /// appends its scrape-time families first).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return String::new();
        }
        match text.strip_suffix("# EOF\n") {
            Some(body) => body.to_owned(),
            None => text,
        }
    }
}

//! What a run measures while it runs: counters, latency histograms, per-pair progress, and the
//! message bodies that carry their own send time, so a receiver can time a message and check
//! it against its pair without asking anyone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;

/// Highest latency the histograms track, in microseconds (a minute).
const MAX_TRACKED_MICROS: u64 = 60_000_000;

/// How many error messages a run keeps as examples.
const ERROR_SAMPLES: usize = 8;

/// The run's clock: nanoseconds since the run started, small enough to put in a message.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self { epoch: Instant::now() }
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time since `then_ns`, in microseconds (0 if `then_ns` is in the future).
    pub fn micros_since(&self, then_ns: u64) -> u64 {
        self.now_ns().saturating_sub(then_ns) / 1_000
    }
}

/// The body of load message `seq` of pair `pair`, sent at `sent_ns`, padded with `x` to `size`
/// bytes (never shorter than its header `pair.seq.sent_ns.`).
pub fn message_body(pair: usize, seq: u64, sent_ns: u64, size: usize) -> String {
    let mut body = format!("{pair}.{seq}.{sent_ns}.");
    if body.len() < size {
        body.extend(std::iter::repeat_n('x', size - body.len()));
    }
    body
}

/// What a receiver reads back from a body made by [`message_body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHeader {
    /// The pair.
    pub pair: usize,
    /// The message's number within its pair, from 0.
    pub seq: u64,
    /// When it was handed to the sender's socket ([`Clock::now_ns`]).
    pub sent_ns: u64,
}

/// Parses the header of a load message; `None` for anything else.
pub fn parse_body(body: &str) -> Option<BodyHeader> {
    let mut parts = body.splitn(4, '.');
    Some(BodyHeader {
        pair: parts.next()?.parse().ok()?,
        seq: parts.next()?.parse().ok()?,
        sent_ns: parts.next()?.parse().ok()?,
    })
}

/// A client message id carrying the send time (`seq.sent_ns`), so the `sent` answer can be
/// timed without a table of outstanding sends.
pub fn client_message_id(seq: u64, sent_ns: u64) -> String {
    format!("{seq}.{sent_ns}")
}

/// The send time in a client message id made by [`client_message_id`].
pub fn parse_client_message_id(id: &str) -> Option<u64> {
    id.split_once('.')?.1.parse().ok()
}

/// The progress of one sender→receiver pair, shared by its two connections.
#[derive(Debug, Default)]
pub struct Pair {
    /// Messages handed to the sender's socket.
    pub sent: AtomicU64,
    /// Distinct messages the receiver has read.
    pub received: AtomicU64,
    /// Wakes the sender when the receiver makes progress (for a bounded window).
    pub progress: Notify,
    /// One side could not connect: the pair sits out (every message would count as lost).
    pub broken: std::sync::atomic::AtomicBool,
}

impl Pair {
    /// Messages sent and not yet received.
    pub fn outstanding(&self) -> u64 {
        self.sent.load(Ordering::Acquire).saturating_sub(self.received.load(Ordering::Acquire))
    }
}

/// Which sequence numbers of one pair a receiver has seen, to tell new messages from repeats.
#[derive(Debug, Default)]
pub struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    /// Marks `seq` seen; true if it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let Ok(word) = usize::try_from(seq / 64) else {
            return false;
        };
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1u64 << (seq % 64);
        let new = self.bits[word] & mask == 0;
        self.bits[word] |= mask;
        new
    }
}

/// Counters and histograms of a run, shared by all its connections.
#[derive(Debug)]
pub struct Recorder {
    /// The run's clock.
    pub clock: Clock,
    /// Connections opened and authenticated.
    pub established: AtomicU64,
    /// Connections that could not be opened or authenticated.
    pub failed: AtomicU64,
    /// Established connections that the server closed, or that broke, before the run ended.
    pub disconnected: AtomicU64,
    /// Messages handed to senders' sockets.
    pub sent: AtomicU64,
    /// `sent` answers (the message is durably stored) — kith only.
    pub stored: AtomicU64,
    /// Distinct messages read by their receivers.
    pub received: AtomicU64,
    /// Messages a receiver read again.
    pub duplicated: AtomicU64,
    /// Receipts (kith `receipt`, XEP-0184 `received`) read by senders.
    pub receipts: AtomicU64,
    /// Error answers from the server.
    pub errors: AtomicU64,
    /// Frames or stanzas that were not what the workload expects.
    pub unexpected: AtomicU64,
    /// When the last message was received ([`Clock::now_ns`]).
    pub last_received_ns: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    stored_latency: Mutex<Histogram<u64>>,
    error_samples: Mutex<Vec<String>>,
}

impl Recorder {
    /// A recorder with everything at zero, its clock starting now.
    pub fn new() -> Self {
        Self {
            clock: Clock::start(),
            established: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            receipts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            last_received_ns: AtomicU64::new(0),
            latency: Mutex::new(histogram()),
            stored_latency: Mutex::new(histogram()),
            error_samples: Mutex::new(Vec::new()),
        }
    }

    /// Records a received message of `pair` (already checked against its [`Seen`]).
    pub fn record_received(&self, pair: &Pair, sent_ns: u64, new: bool) {
        if new {
            let micros = self.clock.micros_since(sent_ns);
            record(&self.latency, micros);
            self.received.fetch_add(1, Ordering::Relaxed);
            self.last_received_ns.fetch_max(self.clock.now_ns(), Ordering::Relaxed);
            pair.received.fetch_add(1, Ordering::AcqRel);
            pair.progress.notify_one();
        } else {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a `sent` answer for a message sent at `sent_ns`.
    pub fn record_stored(&self, sent_ns: u64) {
        record(&self.stored_latency, self.clock.micros_since(sent_ns));
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Records an error answer or failure, keeping the first few as examples.
    pub fn record_error(&self, what: impl FnOnce() -> String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.sample_error(what);
    }

    /// Keeps an error message as an example without counting it as an error answer.
    pub fn sample_error(&self, what: impl FnOnce() -> String) {
        let mut samples = self.error_samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() < ERROR_SAMPLES {
            let what = what();
            // One example of each error is enough; thousands of the same would hide the rest.
            if !samples.contains(&what) {
                samples.push(what);
            }
        }
    }

    /// The error examples kept so far.
    pub fn error_samples(&self) -> Vec<String> {
        self.error_samples.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Percentiles of send→receive latency so far.
    pub fn latency(&self) -> Percentiles {
        Percentiles::of(&self.latency.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Percentiles of send→stored latency so far (`None` when nothing was stored).
    pub fn stored_latency(&self) -> Option<Percentiles> {
        let histogram = self.stored_latency.lock().unwrap_or_else(PoisonError::into_inner);
        (!histogram.is_empty()).then(|| Percentiles::of(&histogram))
    }

    /// Forgets latencies recorded so far (after a warm-up).
    pub fn reset_latencies(&self) {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner).reset();
        self.stored_latency.lock().unwrap_or_else(PoisonError::into_inner).reset();
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    // Three significant figures from 1 µs to a minute. The bounds are constants that
    // hdrhistogram accepts, so this cannot fail at run time.
    #[allow(clippy::expect_used, reason = "constant, valid bounds")]
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3).expect("valid histogram bounds")
}

fn record(histogram: &Mutex<Histogram<u64>>, micros: u64) {
    let mut histogram = histogram.lock().unwrap_or_else(PoisonError::into_inner);
    histogram.saturating_record(micros.clamp(1, MAX_TRACKED_MICROS));
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// How many samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Highest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1_000.0,
        }
    }
}

/// Waits for `duration` unless `stop` fires first; true if it was stopped.
pub async fn sleep_or_stop(duration: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => false,
        () = stopped(stop) => true,
    }
}

/// Resolves once `stop` is true; never if its sender is gone without setting it.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_pair_sequence_and_time_at_the_requested_size() {
        let body = message_body(12, 345, 6_789, 100);
        assert_eq!(body.len(), 100);
        assert_eq!(parse_body(&body), Some(BodyHeader { pair: 12, seq: 345, sent_ns: 6_789 }));
        assert_eq!(message_body(1, 2, 3, 0), "1.2.3.");
        assert_eq!(parse_body("hello"), None);
    }

    #[test]
    fn client_message_ids_carry_the_send_time() {
        assert_eq!(parse_client_message_id(&client_message_id(7, 99)), Some(99));
        assert_eq!(parse_client_message_id("c-1"), None);
    }

    #[test]
    fn seen_tells_repeats() {
        let mut seen = Seen::default();
        assert!(seen.insert(0));
        assert!(seen.insert(130));
        assert!(!seen.insert(130));
        assert!(!seen.insert(0));
    }

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let recorder = Recorder::new();
        let pair = Pair::default();
        let now = recorder.clock.now_ns();
        recorder.record_received(&pair, now, true);
        recorder.record_received(&pair, now, false);
        assert_eq!(Recorder::get(&recorder.received), 1);
        assert_eq!(Recorder::get(&recorder.duplicated), 1);
        assert_eq!(recorder.latency().count, 1);
        assert!(recorder.latency().max < 1_000.0);
    }
}

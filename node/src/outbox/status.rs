//! What each outbox pump is doing, for operators: failed attempts since the last success, the
//! last failure, when the next attempt is due, and a way to make it retry now. The pumps write
//! it; `/metrics`, `GET /federation/status` (`kith federation status`) and
//! `POST /federation/retry/{peer}` (`kith federation retry`) read and nudge it.
//!
//! It lives in memory, not in the store: it describes the running pumps (a restarted node
//! starts every pump afresh, attempting at once), and keeping it there costs no write per
//! failed attempt.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kith_federation::{FederationError, RequestFailure};
use kith_proto::{ServerName, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::store::OutboxStats;

/// Why a pump's last attempt failed, in words an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureKind {
    /// No connection could be made.
    Unreachable,
    /// The peer did not answer in time.
    TimedOut,
    /// The connection died before the answer came.
    ConnectionLost,
    /// The peer refused the whole batch (busy, or something it does not accept).
    Refused,
    /// The peer answered but left some envelopes unacked (a failed commit, a clock that is off).
    Unacked,
    /// Anything else (a protocol error, the network stopping).
    Other,
}

impl FailureKind {
    /// The kind of a failed delivery, and what else there is to say about it.
    pub(crate) fn of(error: &FederationError) -> (Self, String) {
        match error {
            FederationError::Request { failure: RequestFailure::Unreachable(why), .. } => {
                (Self::Unreachable, why.clone())
            }
            FederationError::Request { failure: failure @ RequestFailure::TimedOut, .. } => {
                (Self::TimedOut, failure.to_string())
            }
            FederationError::Request { failure: failure @ RequestFailure::ConnectionLost, .. } => {
                (Self::ConnectionLost, failure.to_string())
            }
            FederationError::Refused { refusal, .. } => (Self::Refused, refusal.to_string()),
            other => (Self::Other, other.to_string()),
        }
    }

    /// Whether the failure says the peer could not be reached (so a probe, or the peer
    /// connecting, is the moment to try again), rather than that it answered badly.
    pub(crate) fn is_network(self) -> bool {
        matches!(self, Self::Unreachable | Self::TimedOut | Self::ConnectionLost)
    }

    /// The name used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::TimedOut => "timedOut",
            Self::ConnectionLost => "connectionLost",
            Self::Refused => "refused",
            Self::Unacked => "unacked",
            Self::Other => "other",
        }
    }
}

/// A pump's last failure.
#[derive(Debug, Clone)]
struct Failure {
    kind: FailureKind,
    detail: String,
    at: Timestamp,
}

/// What one pump reports.
#[derive(Debug, Default)]
struct PumpState {
    /// Failed attempts since the last success.
    attempts: u32,
    /// The last failure, kept after a success (with its time) for the operator.
    last_failure: Option<Failure>,
    /// When the pump will try again by its backoff timer, if it waits (a probe that finds the
    /// peer back, or the peer connecting, starts it sooner).
    next_attempt: Option<Instant>,
}

/// One destination's pump: its state and the operator's "retry now".
#[derive(Debug, Default)]
pub(crate) struct Pump {
    state: Mutex<PumpState>,
    /// Rung by `kith federation retry`.
    pub(crate) retry: Notify,
}

impl Pump {
    fn state(&self) -> std::sync::MutexGuard<'_, PumpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last attempt delivered everything it sent.
    pub(crate) fn succeeded(&self) {
        let mut state = self.state();
        state.attempts = 0;
        state.next_attempt = None;
    }

    /// An attempt failed; the next is due after `delay`.
    pub(crate) fn failed(&self, kind: FailureKind, detail: String, delay: Duration) {
        let mut state = self.state();
        state.attempts = state.attempts.saturating_add(1);
        state.last_failure = Some(Failure { kind, detail, at: Timestamp::now() });
        state.next_attempt = Some(Instant::now() + delay);
    }

    /// The pump stopped waiting (it attempts now).
    pub(crate) fn attempting(&self) {
        self.state().next_attempt = None;
    }
}

/// Every pinned destination's pump.
#[derive(Debug, Default)]
pub(crate) struct Pumps {
    by_destination: HashMap<ServerName, Arc<Pump>>,
}

impl Pumps {
    /// A pump for each of `destinations`.
    pub(crate) fn new<'a>(destinations: impl IntoIterator<Item = &'a ServerName>) -> Self {
        Self { by_destination: destinations.into_iter().map(|d| (d.clone(), Arc::default())).collect() }
    }

    /// The pump of `destination`.
    pub(crate) fn get(&self, destination: &ServerName) -> Option<Arc<Pump>> {
        self.by_destination.get(destination).cloned()
    }

    /// Tells the pump of `destination` to retry now, without waiting out its backoff; false
    /// if no peer of that name is pinned.
    pub(crate) fn retry_now(&self, destination: &ServerName) -> bool {
        self.by_destination.get(destination).is_some_and(|pump| {
            pump.retry.notify_one();
            true
        })
    }

    /// What every destination looks like now: the pinned ones, and any other that still has
    /// envelopes queued (a peer no longer pinned).
    pub(crate) fn report(
        &self,
        stats: &[OutboxStats],
        connected: &[ServerName],
        pumping_here: &[ServerName],
    ) -> FederationStatus {
        let now_ms = Timestamp::now().as_millis();
        let now = Instant::now();
        let mut rows: BTreeMap<String, DestinationStatus> = BTreeMap::new();
        for (name, pump) in &self.by_destination {
            let state = pump.state();
            rows.insert(
                name.to_string(),
                DestinationStatus {
                    destination: name.to_string(),
                    pinned: true,
                    connected: connected.contains(name),
                    pumping_here: pumping_here.contains(name),
                    depth: 0,
                    oldest_age_seconds: None,
                    attempts: state.attempts,
                    last_error: state.last_failure.as_ref().map(|f| LastError {
                        kind: f.kind,
                        detail: f.detail.clone(),
                        age_seconds: seconds(now_ms - f.at.as_millis()),
                    }),
                    next_attempt_in_seconds: state
                        .next_attempt
                        .map(|at| at.saturating_duration_since(now).as_secs_f64()),
                },
            );
        }
        for s in stats {
            let row = rows.entry(s.destination.clone()).or_insert_with(|| DestinationStatus {
                destination: s.destination.clone(),
                ..DestinationStatus::default()
            });
            row.depth = s.depth;
            row.oldest_age_seconds = s.oldest.map(|t| seconds(now_ms - t.as_millis()));
        }
        FederationStatus { destinations: rows.into_values().collect() }
    }
}

fn seconds(millis: i64) -> f64 {
    millis.max(0) as f64 / 1000.0
}

/// `GET /federation/status`: every destination's outbox and pump.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederationStatus {
    /// By destination name.
    pub destinations: Vec<DestinationStatus>,
}

/// One destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// The peer's server name.
    pub destination: String,
    /// Whether this instance holds its outbox lease (so its pump is the one sending); with
    /// several instances, exactly one does.
    pub pumping_here: bool,
    /// Whether an operator pinned it (a peer removed from the configuration keeps its rows).
    pub pinned: bool,
    /// Whether a live connection to it is open now.
    pub connected: bool,
    /// Envelopes waiting for its ack.
    pub depth: u64,
    /// Age of the oldest waiting envelope.
    pub oldest_age_seconds: Option<f64>,
    /// Failed attempts since the last success.
    pub attempts: u32,
    /// The last failure (kept after a success).
    pub last_error: Option<LastError>,
    /// When the pump tries again at the latest, if it waits; a probe that finds the peer back
    /// (every 2 s while it is unreachable), the peer connecting, or a retry start it sooner.
    pub next_attempt_in_seconds: Option<f64>,
}

/// A pump's last failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What the network or the peer said.
    pub detail: String,
    /// How long ago.
    pub age_seconds: f64,
}

impl FederationStatus {
    /// Appends the pump gauges to a Prometheus text exposition (depth and oldest age are
    /// written by the caller from the same store read).
    pub fn write_metrics(&self, text: &mut String) {
        let _ = writeln!(
            text,
            "# HELP kith_federation_connected Whether a live connection to the peer is open.\n# TYPE kith_federation_connected gauge"
        );
        for d in self.destinations.iter().filter(|d| d.pinned) {
            let _ = writeln!(
                text,
                "kith_federation_connected{{destination=\"{}\"}} {}",
                d.destination,
                u8::from(d.connected)
            );
        }
        let _ = writeln!(
            text,
            "# HELP kith_outbox_lease_held Whether this instance holds the destination's outbox lease (pumps it).\n# TYPE kith_outbox_lease_held gauge"
        );
        for d in self.destinations.iter().filter(|d| d.pinned) {
            let _ = writeln!(
                text,
                "kith_outbox_lease_held{{destination=\"{}\"}} {}",
                d.destination,
                u8::from(d.pumping_here)
            );
        }
        let _ = writeln!(
            text,
            "# HELP kith_outbox_attempts Failed delivery attempts since the last success.\n# TYPE kith_outbox_attempts gauge"
        );
        for d in self.destinations.iter().filter(|d| d.pinned) {
            let _ = writeln!(text, "kith_outbox_attempts{{destination=\"{}\"}} {}", d.destination, d.attempts);
        }
        let _ = writeln!(
            text,
            "# HELP kith_outbox_next_attempt_seconds Seconds until the next attempt by the backoff timer (0: not waiting).\n# TYPE kith_outbox_next_attempt_seconds gauge"
        );
        for d in self.destinations.iter().filter(|d| d.pinned) {
            let next = d.next_attempt_in_seconds.unwrap_or(0.0);
            let _ = writeln!(text, "kith_outbox_next_attempt_seconds{{destination=\"{}\"}} {next}", d.destination);
        }
        let _ = writeln!(
            text,
            "# HELP kith_outbox_last_error_timestamp_seconds When the last attempt failed, by kind of failure.\n# TYPE kith_outbox_last_error_timestamp_seconds gauge"
        );
        let now = Timestamp::now().as_millis() as f64 / 1000.0;
        for d in &self.destinations {
            if let Some(e) = &d.last_error {
                let at = now - e.age_seconds;
                let _ = writeln!(
                    text,
                    "kith_outbox_last_error_timestamp_seconds{{destination=\"{}\",kind=\"{}\"}} {at:.3}",
                    d.destination,
                    e.kind.as_str()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    #[test]
    fn a_report_joins_pump_state_with_the_outbox_and_shows_unpinned_backlogs() {
        let pumps = Pumps::new(&[name("beta"), name("gamma")]);
        let beta = pumps.get(&name("beta")).unwrap();
        beta.failed(FailureKind::Unreachable, "refused".into(), Duration::from_secs(60));
        beta.failed(FailureKind::Unreachable, "refused".into(), Duration::from_secs(60));
        let stats = [
            OutboxStats { destination: "beta".into(), depth: 7, oldest: Some(Timestamp::now()) },
            OutboxStats { destination: "old".into(), depth: 2, oldest: None },
        ];
        let report = pumps.report(&stats, &[name("gamma")], &[]);
        let names: Vec<_> = report.destinations.iter().map(|d| d.destination.as_str()).collect();
        assert_eq!(names, ["beta", "gamma", "old"]);
        let b = &report.destinations[0];
        assert_eq!((b.depth, b.attempts, b.connected, b.pinned), (7, 2, false, true));
        assert_eq!(b.last_error.as_ref().map(|e| e.kind), Some(FailureKind::Unreachable));
        assert!(b.next_attempt_in_seconds.is_some_and(|s| s > 50.0 && s <= 60.0));
        assert!(report.destinations[1].connected);
        assert!(!report.destinations[2].pinned);

        beta.succeeded();
        let after = pumps.report(&[], &[], &[]);
        assert_eq!((after.destinations[0].attempts, after.destinations[0].next_attempt_in_seconds), (0, None));
        assert!(after.destinations[0].last_error.is_some(), "the last error stays for the operator");
        let mut text = String::new();
        after.write_metrics(&mut text);
        assert!(text.contains("kith_outbox_attempts{destination=\"beta\"} 0"), "{text}");
        assert!(text.contains("kith_outbox_last_error_timestamp_seconds{destination=\"beta\",kind=\"unreachable\"}"));
    }

    #[test]
    fn retry_reaches_only_pinned_pumps() {
        let pumps = Pumps::new(&[name("beta")]);
        assert!(pumps.retry_now(&name("beta")));
        assert!(!pumps.retry_now(&name("nobody")));
    }
}

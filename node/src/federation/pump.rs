//! One pump per destination: sends what its outbox holds, oldest first, one batch at a time,
//! and removes envelopes only once acked. A failed batch is resent under the same envelope ids
//! (a timeout means "maybe delivered"; the peer deduplicates) after an exponential backoff with
//! jitter, or sooner: at once when the peer connects (dialled by either side) or an operator
//! says `kith federation retry`, and, while the peer is unreachable, as soon as a probe (a
//! dial every [`PROBE_INTERVAL`]) finds it back.

use std::sync::Arc;
use std::time::Duration;

use kith_client_api::SessionEvent;
use kith_federation::{Envelope, MessageBody, Outcome, Probe};
use kith_proto::{ErrorCode, ServerFrame, ServerName, Timestamp};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Federation;
use super::outbound;
use super::status::FailureKind;
use crate::state::AppState;
use crate::store::OutboxRow;

/// Most envelopes per request.
const BATCH: u32 = 512;

/// Most body bytes per request, well under the protocol's cap.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// While a peer with a backlog is unreachable, how often the pump probes it: one dial (none if
/// one is under way), each bounded by the network's dial timeout (5 s). A healed network is
/// noticed within this, however long the backoff has grown.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The range of retry delays: the first, and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// The first delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    /// 250 ms doubling to 3 minutes.
    fn default() -> Self {
        Self { min: Duration::from_millis(250), max: Duration::from_secs(180) }
    }
}

/// Exponential backoff with jitter.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    /// No failures yet.
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        Self { policy, failures: 0 }
    }

    /// The delay before the next attempt, after one more failure: doubling from the policy's
    /// `min`, capped at its `max`, each drawn between half and all of it.
    pub(crate) fn next(&mut self, jitter: u32) -> Duration {
        let exp = self.policy.min.saturating_mul(1 << self.failures.min(16)).min(self.policy.max);
        self.failures = self.failures.saturating_add(1);
        let fraction = 0.5 + f64::from(jitter) / f64::from(u32::MAX) / 2.0;
        exp.mul_f64(fraction)
    }

    /// Back to the first delay (the peer answered, or showed up).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Runs the pump for `destination` until shutdown.
pub(crate) async fn run(
    state: AppState,
    federation: Arc<Federation>,
    destination: ServerName,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let Some(pump) = federation.pumps.get(&destination) else {
        return;
    };
    let mut backoff = Backoff::new(federation.backoff);
    let mut reachable = federation.network.reachable();
    let mut connections = federation.network.connections();
    loop {
        let rows = match state.store.outbox_batch(&destination, BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(%destination, error = %e, "cannot read the outbox");
                Vec::new()
            }
        };
        let rows = within_bytes(rows);
        if rows.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {}
                () = pump.retry.notified() => {}
            }
            continue;
        }
        let failure = match send(&federation, &destination, &rows).await {
            Ok(acks) => match settle(&state, &destination, &rows, acks).await {
                0 => None,
                // The peer answered but left some envelopes unacked (a commit that failed, a
                // clock that is off): resending at once would only repeat that.
                unacked => Some((FailureKind::Unacked, format!("{unacked} envelope(s) not acked"))),
            },
            Err(e) => Some(FailureKind::of(&e)),
        };
        let Some((kind, reason)) = failure else {
            backoff.reset();
            pump.succeeded();
            continue;
        };
        let delay = backoff.next(getrandom::u32().unwrap_or(u32::MAX / 2));
        pump.failed(kind, reason.clone(), delay);
        info!(%destination, waiting = rows.len(), retry_in_ms = delay.as_millis(), kind = kind.as_str(), %reason, "will retry");
        // Only news from after this point counts (a probe covers a connection made meanwhile).
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = reachable.try_recv() {}
        while let Ok(_) | Err(TryRecvError::Lagged(_)) = connections.try_recv() {}
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        let network = kind.is_network();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut sleep => break,
                () = pump.retry.notified() => {
                    info!(%destination, "retrying now, as an operator asked");
                    backoff.reset();
                    break;
                }
                peer = connections.recv() => match peer {
                    Ok(peer) if peer == destination => {
                        debug!(%destination, "peer connected; retrying now");
                        backoff.reset();
                        break;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                peer = reachable.recv() => match peer {
                    Ok(peer) if network && peer == destination => {
                        backoff.reset();
                        break;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = probe.tick(), if network => match federation.network.probe(&destination).await {
                    Ok(Probe::Connected) => {
                        debug!(%destination, "probe found the peer connected; retrying now");
                        backoff.reset();
                        break;
                    }
                    Ok(Probe::Dialing) => {}
                    Err(e) => debug!(%destination, error = %e, "cannot probe"),
                },
            }
        }
        pump.attempting();
    }
}

/// The leading rows whose bodies fit in one request.
fn within_bytes(mut rows: Vec<OutboxRow>) -> Vec<OutboxRow> {
    let mut total = 0;
    let keep = rows
        .iter()
        .position(|row| {
            total += row.body.len();
            total > BATCH_BYTES
        })
        .unwrap_or(rows.len())
        .max(1);
    rows.truncate(keep);
    rows
}

/// Signs the rows (now, so `sentAt` is fresh on every attempt) and delivers them.
async fn send(
    federation: &Federation,
    destination: &ServerName,
    rows: &[OutboxRow],
) -> Result<Vec<kith_federation::Ack>, kith_federation::FederationError> {
    let now = Timestamp::now();
    let local = federation.local_name();
    let envelopes = rows
        .iter()
        .filter_map(|row| {
            let kind = outbound::kind(&row.kind)?;
            Envelope::seal_encoded(&federation.key, &row.envelope_id, local, destination, kind, row.body.clone(), now)
                .inspect_err(|e| warn!(error = %e, "cannot sign an envelope"))
                .ok()
        })
        .collect();
    federation.network.deliver(destination, envelopes).await
}

/// Removes acked rows; tells senders whose messages the peer refused. Returns how many rows
/// stay because the peer did not ack them.
async fn settle(
    state: &AppState,
    destination: &ServerName,
    rows: &[OutboxRow],
    acks: Vec<kith_federation::Ack>,
) -> usize {
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        match acks.iter().find(|ack| ack.id == row.envelope_id).map(|ack| &ack.outcome) {
            Some(Outcome::Accepted) => done.push(row.seq),
            Some(Outcome::Rejected(reason)) => {
                warn!(%destination, envelope = %row.envelope_id, kind = %row.kind, %reason, "peer refused an envelope");
                tell_sender(state, destination, row, reason);
                done.push(row.seq);
            }
            // Not acked (an unknown kind, or a peer that skipped it): it stays for the next try.
            None => debug!(envelope = %row.envelope_id, "no ack"),
        }
    }
    let unacked = rows.len() - done.len();
    if done.is_empty() {
        return unacked;
    }
    match state.store.outbox_remove(destination, done).await {
        Ok(committed) => {
            if let Err(e) = committed.await {
                warn!(error = %e, "cannot remove acked envelopes; they will be resent and deduplicated");
            }
        }
        Err(e) => warn!(error = %e, "cannot remove acked envelopes; they will be resent and deduplicated"),
    }
    unacked
}

/// A refused message: its sender hears why (it was stored as `sent` and will not get further).
fn tell_sender(state: &AppState, destination: &ServerName, row: &OutboxRow, reason: &str) {
    if row.kind != "message" {
        return;
    }
    let Ok(body) = serde_json::from_slice::<MessageBody>(&row.body) else {
        return;
    };
    let frame = ServerFrame::Error {
        code: ErrorCode::NotFound,
        message: format!("message {} to {} was refused by {destination}: {reason}", body.message_id, body.receiver_id),
        client_message_id: None,
    };
    let dropped = state.sessions.push_to_user(&body.sender_id, &SessionEvent::frame(&frame), None);
    crate::presence::after_dropping(state, dropped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = BackoffPolicy::default();
        let mut backoff = Backoff::new(policy);
        let full = |b: &mut Backoff| b.next(u32::MAX);
        assert_eq!(full(&mut backoff), policy.min);
        assert_eq!(full(&mut backoff), policy.min * 2);
        assert_eq!(backoff.next(0), policy.min * 2, "half of 4x at the lowest jitter");
        for _ in 0..30 {
            assert!(full(&mut backoff) <= policy.max);
        }
        assert_eq!(full(&mut backoff), policy.max);
        backoff.reset();
        assert_eq!(full(&mut backoff), policy.min);
    }

    #[test]
    fn a_flat_policy_waits_between_half_and_all_of_it() {
        let long = Duration::from_secs(600);
        let mut backoff = Backoff::new(BackoffPolicy { min: long, max: long });
        assert_eq!(backoff.next(0), long / 2);
        assert_eq!(backoff.next(u32::MAX), long);
    }
}

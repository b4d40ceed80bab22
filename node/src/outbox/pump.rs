//! One pump per destination: sends what its outbox holds, oldest first, one batch at a time,
//! and removes envelopes only once acked. A failed batch is resent under the same envelope ids
//! (a timeout means "maybe delivered"; the peer deduplicates) after an exponential backoff with
//! jitter, or sooner: at once when the peer connects (dialled by either side) or an operator
//! says `kith federation retry`, and, while the peer is unreachable, as soon as a probe (a
//! dial every [`PROBE_INTERVAL`]) finds it back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kith_federation::{Envelope, Kind, MessageBody, Outcome, Probe, SealedBatch};
use kith_proto::{ServerName, Timestamp};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::status::FailureKind;
use super::{Destination, RefusedMessage};
use crate::peers::Peers;
use crate::store::{OutboxRow, Store};

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

/// How often an instance that does not hold a destination's lease asks for it again: a dead
/// holder's lease is free at once, so another instance takes over within this.
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// How often an idle pump looks at its outbox without being woken.
const IDLE_POLL: Duration = Duration::from_secs(5);

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

/// What one pump works with.
pub(super) struct Pump {
    pub(super) store: Arc<dyn Store>,
    pub(super) peers: Arc<Peers>,
    pub(super) destination: Arc<Destination>,
    /// How long to wait between failed attempts.
    pub(super) backoff: BackoffPolicy,
    /// Where refused messages are reported.
    pub(super) refused: mpsc::Sender<RefusedMessage>,
    pub(super) shutdown: CancellationToken,
}

/// Runs the pump until shutdown.
pub(super) async fn run(pump: Pump) {
    let Pump { store, peers, destination: this, backoff, refused, shutdown } = pump;
    let destination = this.name.clone();
    let status = this.status.clone();
    let mut backoff = Backoff::new(backoff);
    let mut reachable = peers.network.reachable();
    let mut connections = peers.network.connections();
    let lease = format!("outbox:{destination}");
    loop {
        // One instance of a node pumps a destination at a time.
        let held = store.try_lease(&lease).await;
        let was = this.holding.swap(matches!(held, Ok(true)), Ordering::Relaxed);
        match held {
            Ok(true) => {
                if !was {
                    info!(%destination, "this instance pumps the outbox");
                }
            }
            held_or_failed => {
                if let Err(e) = held_or_failed {
                    warn!(%destination, error = %e, "cannot check the outbox lease");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(LEASE_RETRY) => {}
                }
                continue;
            }
        }
        let rows = match store.outbox_batch(&destination, BATCH).await {
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
                () = this.wake.notified() => {}
                () = status.retry.notified() => {}
                // A wake from another instance may be lost while Redis is down: look anyway.
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        let failure = match send(&peers, &destination, &rows).await {
            Ok(acks) => match settle(store.as_ref(), &refused, &destination, &rows, acks).await {
                0 => None,
                // The peer answered but left some envelopes unacked (a commit that failed, a
                // clock that is off): resending at once would only repeat that.
                unacked => Some((FailureKind::Unacked, format!("{unacked} envelope(s) not acked"))),
            },
            Err(e) => Some(FailureKind::of(&e)),
        };
        let Some((kind, reason)) = failure else {
            backoff.reset();
            status.succeeded();
            continue;
        };
        let delay = backoff.next(getrandom::u32().unwrap_or(u32::MAX / 2));
        status.failed(kind, reason.clone(), delay);
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
                () = status.retry.notified() => {
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
                _ = probe.tick(), if network => match peers.network.probe(&destination).await {
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
        status.attempting();
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

/// Seals the rows as one batch (now, so `sentAt` is fresh on every attempt) and delivers it.
async fn send(
    peers: &Peers,
    destination: &ServerName,
    rows: &[OutboxRow],
) -> Result<Vec<kith_federation::Ack>, kith_federation::FederationError> {
    let now = Timestamp::now();
    let local = peers.local_name();
    let envelopes = rows
        .iter()
        .map(|row| Envelope::unsigned(&row.envelope_id, local, destination, row.kind, row.body.clone(), now))
        .collect();
    let batch = SealedBatch::seal(&peers.key, local, envelopes)?;
    peers.network.deliver_sealed(destination, batch).await
}

/// Removes acked rows; tells senders whose messages the peer refused. Returns how many rows
/// stay because the peer did not ack them.
async fn settle(
    store: &dyn Store,
    refused: &mpsc::Sender<RefusedMessage>,
    destination: &ServerName,
    rows: &[OutboxRow],
    acks: Vec<kith_federation::Ack>,
) -> usize {
    let outcomes: HashMap<&str, &Outcome> = acks.iter().map(|ack| (ack.id.as_str(), &ack.outcome)).collect();
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        match outcomes.get(row.envelope_id.as_str()).copied() {
            Some(Outcome::Accepted) => done.push(row.key),
            Some(Outcome::Rejected(reason)) => {
                warn!(%destination, envelope = %row.envelope_id, kind = row.kind.as_str(), %reason, "peer refused an envelope");
                report_refusal(refused, destination, row, reason);
                done.push(row.key);
            }
            // Not acked (an unknown kind, or a peer that skipped it): it stays for the next try.
            None => debug!(envelope = %row.envelope_id, "no ack"),
        }
    }
    let unacked = rows.len() - done.len();
    if done.is_empty() {
        return unacked;
    }
    match store.outbox_remove(destination, done).await {
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
fn report_refusal(refused: &mpsc::Sender<RefusedMessage>, destination: &ServerName, row: &OutboxRow, reason: &str) {
    if row.kind != Kind::Message {
        return;
    }
    let Ok(body) = serde_json::from_slice::<MessageBody>(&row.body) else {
        return;
    };
    let notice = RefusedMessage {
        message_id: body.message_id,
        sender: body.sender_id,
        receiver: body.receiver_id,
        destination: destination.clone(),
        reason: reason.to_owned(),
    };
    if refused.try_send(notice).is_err() {
        warn!(%destination, "too many refusals waiting; a sender will not hear of one");
    }
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

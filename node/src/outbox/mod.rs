//! The federation outbox: envelopes for other nodes wait in a table (written in the same
//! transaction as their local effect, see `store`), and one pump per destination ([`pump`])
//! sends them, oldest first, until acked.
//!
//! [`Outbox`] is the handle the rest of the node uses: queue envelopes that carry no local
//! effect of their own (presence), ring a destination's pump when its outbox gained
//! envelopes, and hear which messages a peer refused. Operators see each pump's state
//! ([`status`]) in `/metrics` and through the admin routes ([`admin`]) that
//! `kith federation status|retry` talk to.

pub(crate) mod admin;
mod pump;
pub mod status;

pub use pump::BackoffPolicy;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kith_proto::{MessageId, ServerName, Timestamp, UserId};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cluster::Cluster;
use crate::peers::Peers;
use crate::store::{OutboxEntry, Store};

/// How many refusal notices may wait for delivery to tell their senders.
const REFUSALS_QUEUED: usize = 1024;

/// How often the monitor looks at the outbox.
const MONITOR_INTERVAL: Duration = Duration::from_secs(30);

/// A message a peer refused for good: its sender should hear why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedMessage {
    /// The message.
    pub message_id: MessageId,
    /// Its sender, a user of this node.
    pub sender: UserId,
    /// Its receiver, a user of `destination`.
    pub receiver: UserId,
    /// The peer that refused it.
    pub destination: ServerName,
    /// The peer's words.
    pub reason: String,
}

/// One destination's pump, as the rest of the node sees it.
#[derive(Debug)]
pub(crate) struct Destination {
    name: ServerName,
    /// Rung when its outbox gains envelopes.
    wake: Notify,
    /// Whether this instance's pump holds the destination's lease (so wakes stay here).
    holding: AtomicBool,
    /// Whether telling the other instances is asked for and not yet done.
    announcing: AtomicBool,
    /// What the pump is doing, and the operator's "retry now".
    status: Arc<status::Pump>,
}

/// The outbox's handle.
#[derive(Debug)]
pub struct Outbox {
    store: Arc<dyn Store>,
    tasks: TaskTracker,
    cluster: Arc<Cluster>,
    /// Each pinned destination.
    destinations: HashMap<ServerName, Arc<Destination>>,
    /// Every pump's state, for operators.
    pumps: status::Pumps,
    /// How long pumps wait between failed attempts.
    backoff: BackoffPolicy,
    /// Where pumps report refused messages.
    refused: mpsc::Sender<RefusedMessage>,
}

impl Outbox {
    /// An outbox over `store` for the pinned `destinations`; also returns where refused
    /// messages are reported.
    pub fn new(
        store: Arc<dyn Store>,
        tasks: TaskTracker,
        cluster: Arc<Cluster>,
        destinations: Vec<ServerName>,
        backoff: BackoffPolicy,
    ) -> (Self, mpsc::Receiver<RefusedMessage>) {
        let (refused, refusals) = mpsc::channel(REFUSALS_QUEUED);
        let pumps = status::Pumps::new(destinations.iter());
        let destinations = destinations
            .into_iter()
            .filter_map(|name| {
                let destination = Destination {
                    name: name.clone(),
                    wake: Notify::new(),
                    holding: AtomicBool::new(false),
                    announcing: AtomicBool::new(false),
                    status: pumps.get(&name)?,
                };
                Some((name, Arc::new(destination)))
            })
            .collect();
        (Self { store, tasks, cluster, destinations, pumps, backoff, refused }, refusals)
    }

    /// Tells the pump of `destination` to retry now, without waiting out its backoff; false if
    /// no peer of that name is pinned.
    pub fn retry_now(&self, destination: &ServerName) -> bool {
        self.pumps.retry_now(destination)
    }

    /// Every destination's outbox and pump, as operators see it (the pumps of this instance:
    /// `pumpingHere` says which destinations' leases it holds).
    ///
    /// # Errors
    /// When the store cannot report the outbox.
    pub async fn status(&self, peers: &Peers) -> Result<status::FederationStatus, crate::store::StoreError> {
        let stats = self.store.outbox_stats().await?;
        let connected = peers.network.connected_peers().await;
        let pumping: Vec<ServerName> =
            self.destinations.values().filter(|d| d.holding.load(Ordering::Relaxed)).map(|d| d.name.clone()).collect();
        Ok(self.pumps.report(&stats, &connected, &pumping))
    }

    /// Rings this instance's pump of `destination`.
    pub fn wake(&self, destination: &ServerName) {
        if let Some(destination) = self.destinations.get(destination) {
            destination.wake.notify_one();
        }
    }

    /// `destination`'s outbox gained envelopes (they are committed): rings whichever instance
    /// pumps it, this one or, through the cluster, another.
    pub fn committed(&self, destination: &ServerName) {
        let Some(destination) = self.destinations.get(destination) else {
            return;
        };
        destination.wake.notify_one();
        if !self.cluster.is_shared() || destination.holding.load(Ordering::Relaxed) {
            return;
        }
        // One announcement in flight at a time; a commit while it is on its way asks for one
        // more after it, so none is lost.
        if destination.announcing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (destination, cluster) = (destination.clone(), self.cluster.clone());
        self.tasks.spawn(async move {
            loop {
                destination.announcing.store(false, Ordering::Release);
                cluster.wake_outbox(&destination.name).await;
                if !destination.announcing.load(Ordering::Acquire) {
                    return;
                }
            }
        });
    }

    /// Queues envelopes that carry no local effect (presence) and, once they are committed,
    /// wakes their pumps. A failure is logged: presence is renewed, never essential.
    pub async fn queue(&self, entries: Vec<OutboxEntry>) {
        if entries.is_empty() {
            return;
        }
        let destinations: std::collections::HashSet<ServerName> =
            entries.iter().map(|e| e.destination.clone()).collect();
        match self.store.enqueue_envelopes(entries).await {
            Ok(committed) => match committed.await {
                Ok(()) => destinations.iter().for_each(|d| self.committed(d)),
                Err(e) => warn!(error = %e, "envelopes not queued"),
            },
            Err(e) => warn!(error = %e, "envelopes not queued"),
        }
    }

    /// Starts a pump per pinned peer and the monitor that logs the outbox while it is not
    /// empty; they stop on `shutdown`.
    pub fn spawn(&self, peers: &Arc<Peers>, shutdown: &CancellationToken) {
        for destination in self.destinations.values() {
            self.tasks.spawn(pump::run(pump::Pump {
                store: self.store.clone(),
                peers: peers.clone(),
                destination: destination.clone(),
                backoff: self.backoff,
                refused: self.refused.clone(),
                shutdown: shutdown.clone(),
            }));
        }
        self.tasks.spawn(monitor(self.store.clone(), shutdown.clone()));
    }
}

/// Logs outbox depth and the age of its oldest entry, per destination, while it is not empty.
async fn monitor(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(MONITOR_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.outbox_stats().await {
            Ok(stats) => {
                let now = Timestamp::now().as_millis();
                for s in stats {
                    let age_s = s.oldest.map_or(0, |t| (now - t.as_millis()) / 1000);
                    info!(destination = %s.destination, depth = s.depth, oldest_age_s = age_s, "outbox waiting");
                }
            }
            Err(e) => warn!(error = %e, "cannot read outbox stats"),
        }
    }
}

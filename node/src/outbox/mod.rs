//! The federation outbox: envelopes for other nodes wait in a table (written in the same
//! transaction as their local effect, see `store`), and one pump per destination ([`pump`])
//! sends them, oldest first, until acked.
//!
//! [`Outbox`] is the handle the rest of the node uses: queue envelopes that carry no local
//! effect of their own (presence), ring a destination's pump when its outbox gained
//! envelopes, and hear which messages a peer refused.

mod pump;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kith_proto::{MessageId, ServerName, Timestamp, UserId};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

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

/// The outbox's handle.
#[derive(Debug)]
pub struct Outbox {
    store: Arc<dyn Store>,
    tasks: TaskTracker,
    /// One wake-up per destination, rung when its outbox gains envelopes.
    wakes: HashMap<ServerName, Arc<Notify>>,
    /// Where pumps report refused messages.
    refused: mpsc::Sender<RefusedMessage>,
}

impl Outbox {
    /// An outbox over `store` for the pinned `destinations`; also returns where refused
    /// messages are reported.
    pub fn new(
        store: Arc<dyn Store>,
        tasks: TaskTracker,
        destinations: impl IntoIterator<Item = ServerName>,
    ) -> (Self, mpsc::Receiver<RefusedMessage>) {
        let (refused, refusals) = mpsc::channel(REFUSALS_QUEUED);
        let wakes = destinations.into_iter().map(|d| (d, Arc::new(Notify::new()))).collect();
        (Self { store, tasks, wakes, refused }, refusals)
    }

    /// Rings the pump of `destination`: its outbox has news.
    pub fn wake(&self, destination: &ServerName) {
        if let Some(wake) = self.wakes.get(destination) {
            wake.notify_one();
        }
    }

    /// Queues envelopes that carry no local effect (presence), then wakes their pumps once they
    /// are committed. A failure is logged: presence is renewed, never essential.
    pub async fn queue(&self, entries: Vec<OutboxEntry>) {
        if entries.is_empty() {
            return;
        }
        let destinations: std::collections::HashSet<ServerName> =
            entries.iter().map(|e| e.destination.clone()).collect();
        match self.store.enqueue_envelopes(entries).await {
            Ok(committed) => {
                let wakes: Vec<Arc<Notify>> = destinations.iter().filter_map(|d| self.wakes.get(d).cloned()).collect();
                self.tasks.spawn(async move {
                    match committed.await {
                        Ok(()) => wakes.iter().for_each(|wake| wake.notify_one()),
                        Err(e) => warn!(error = %e, "envelopes not queued"),
                    }
                });
            }
            Err(e) => warn!(error = %e, "envelopes not queued"),
        }
    }

    /// Starts a pump per pinned peer and the monitor that logs the outbox while it is not
    /// empty; they stop on `shutdown`.
    pub fn spawn(&self, peers: &Arc<Peers>, shutdown: &CancellationToken) {
        for (destination, wake) in &self.wakes {
            self.tasks.spawn(pump::run(pump::Pump {
                store: self.store.clone(),
                peers: peers.clone(),
                destination: destination.clone(),
                wake: wake.clone(),
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

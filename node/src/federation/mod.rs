//! The node's side of federation: what crosses to other nodes and what comes from them.
//!
//! - Outgoing envelopes are written to the outbox in the same transaction as their local effect
//!   ([`outbound`]) and sent by one pump per destination ([`pump`]) until acked.
//! - Incoming envelopes are verified, applied through the store (deduplicated by
//!   `(origin, id)`), and acked only after their effects are committed ([`inbound`]).
//! - Presence crosses as envelopes too: a node tells a peer which of its users it watches, and
//!   the peer sends their changes; a peer whose connection breaks has its online users shown
//!   offline until it is back ([`peer_loss`]).

mod inbound;
pub(crate) mod outbound;
mod peer_loss;
mod pump;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kith_client_api::{RateLimitConfig, RateLimits, ServiceError};
use kith_federation::{Directory, Envelope, KeysClaimBody, NetworkConfig, NetworkHandle, NodeKey, Payload, Verifier};
use kith_proto::keys::KeyBundles;
use kith_proto::{ServerName, Timestamp, UserId};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::FederationConfig;
use crate::state::AppState;
use crate::store::OutboxEntry;

/// Why federation could not start.
pub type StartError = kith_federation::FederationError;

/// Federation state shared by the node's parts.
#[derive(Debug)]
pub struct Federation {
    /// Talks to the network task.
    pub network: NetworkHandle,
    /// This node's key (signs every envelope).
    pub key: NodeKey,
    /// The pinned peers.
    pub directory: Directory,
    /// Checks inbound envelopes.
    pub verifier: Verifier,
    /// This node's server name.
    local: ServerName,
    /// One wake-up per destination, rung when its outbox gains envelopes.
    wakes: HashMap<ServerName, Arc<Notify>>,
    /// Users of this node that peers watch, and which peers.
    remote_watchers: Mutex<HashMap<UserId, HashSet<ServerName>>>,
    /// When each remote user's latest presence was observed, so older news is ignored.
    remote_presence_at: Mutex<HashMap<UserId, Timestamp>>,
    /// Key claims from users of other nodes, per requester.
    claim_limits: RateLimits,
    /// Remote users this node asked to hear about, and when.
    subscribed: Mutex<HashMap<UserId, std::time::Instant>>,
}

/// How long a presence subscription at another node is trusted before it is asked for again
/// (the other node keeps subscriptions in memory and forgets them when it restarts).
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(600);

/// Most remote users remembered as subscribed; past that, old entries are forgotten.
const MAX_SUBSCRIBED: usize = 100_000;

impl Federation {
    /// Starts the network: listens, and pins the configured peers.
    ///
    /// # Errors
    /// When the key cannot be loaded, two bindings clash, or the address cannot be used.
    pub async fn start(
        key: NodeKey,
        server_name: ServerName,
        config: &FederationConfig,
        rate_limits: RateLimitConfig,
    ) -> Result<(Self, tokio::sync::mpsc::Receiver<kith_federation::Inbound>), StartError> {
        let directory = Directory::new(config.peers.iter().cloned())?;
        let network_config =
            NetworkConfig::new(key.clone(), server_name.clone(), vec![config.listen.clone()], directory.clone());
        let (network, inbound, _task) = kith_federation::start(network_config).await?;
        let wakes = directory.peers().map(|p| (p.name().clone(), Arc::new(Notify::new()))).collect();
        for peer in directory.peers() {
            info!(peer = %peer.name(), peer_id = %peer.peer_id(), address = %peer.address(), "pinned peer");
        }
        let federation = Self {
            network,
            key,
            directory,
            verifier: Verifier::new(server_name.clone(), config.replay_window),
            local: server_name,
            wakes,
            remote_watchers: Mutex::default(),
            remote_presence_at: Mutex::default(),
            claim_limits: RateLimits::new(rate_limits),
            subscribed: Mutex::default(),
        };
        Ok((federation, inbound))
    }

    /// This node's server name (the origin of its envelopes).
    pub fn local_name(&self) -> &ServerName {
        &self.local
    }

    /// Whether `server` is a pinned peer.
    pub fn knows(&self, server: &ServerName) -> bool {
        self.directory.by_name(server).is_some()
    }

    /// Rings the pump of `destination`: its outbox has news.
    pub fn wake(&self, destination: &ServerName) {
        if let Some(wake) = self.wakes.get(destination) {
            wake.notify_one();
        }
    }

    /// Claims key bundles of `user`, a user of another node, on behalf of `requester` (with one
    /// one-time prekey per device, or with none when only listing devices).
    ///
    /// # Errors
    /// [`ServiceError::UnknownServer`] for an unpinned server; [`ServiceError::Unavailable`]
    /// when the peer does not answer or refuses.
    pub async fn claim_remote(
        &self,
        requester: &UserId,
        user: &UserId,
        one_time: bool,
    ) -> Result<KeyBundles, ServiceError> {
        let server = user.server_name();
        let Some(pinned) = self.directory.by_name(&server) else {
            return Err(ServiceError::UnknownServer(server));
        };
        let claim =
            Payload::KeysClaim(KeysClaimBody { requester_id: requester.clone(), user_id: user.clone(), one_time });
        let id = kith_proto::MessageId::now().to_string();
        let envelope = Envelope::seal(&self.key, &id, &self.local, &server, &claim, Timestamp::now())
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let answer = match self.network.query(&server, envelope).await {
            Ok(answer) => answer,
            Err(kith_federation::FederationError::Refused { reason, .. })
                if reason.starts_with(kith_federation::protocol::REFUSED_UNKNOWN_USER) =>
            {
                return Err(ServiceError::UnknownUser(user.clone()));
            }
            Err(e) => return Err(ServiceError::Unavailable(e.to_string())),
        };
        let verified = self
            .verifier
            .verify(&self.directory, &pinned.peer_id(), answer, Timestamp::now())
            .map_err(|e| ServiceError::Unavailable(format!("{server} answered with an invalid envelope: {e}")))?;
        match verified.into_payload() {
            Payload::KeysBundles(bundles) if bundles.user_id == *user => Ok(bundles),
            _ => Err(ServiceError::Unavailable(format!("{server} answered a key claim with something else"))),
        }
    }

    /// Whether to ask `user`'s node for their presence changes: not if it was asked recently.
    pub fn should_subscribe(&self, user: &UserId) -> bool {
        let now = std::time::Instant::now();
        let mut subscribed = self.subscribed.lock().unwrap_or_else(PoisonError::into_inner);
        if subscribed.get(user).is_some_and(|at| now.duration_since(*at) < RESUBSCRIBE_AFTER) {
            return false;
        }
        if subscribed.len() >= MAX_SUBSCRIBED {
            subscribed.retain(|_, at| now.duration_since(*at) < RESUBSCRIBE_AFTER);
        }
        if subscribed.len() < MAX_SUBSCRIBED {
            subscribed.insert(user.clone(), now);
        }
        true
    }

    /// Records that `peer` watches `users` (users of this node).
    fn add_remote_watcher(&self, peer: &ServerName, users: &[UserId]) {
        let mut watchers = self.remote_watchers.lock().unwrap_or_else(PoisonError::into_inner);
        for user in users {
            watchers.entry(user.clone()).or_default().insert(peer.clone());
        }
    }

    /// The peers watching `user`.
    pub fn watchers_of(&self, user: &UserId) -> Vec<ServerName> {
        let watchers = self.remote_watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.get(user).map(|w| w.iter().cloned().collect()).unwrap_or_default()
    }

    /// Whether presence observed at `at` is newer than what is known of `user`; records it if so.
    fn newer_presence(&self, user: &UserId, at: Timestamp) -> bool {
        let mut known = self.remote_presence_at.lock().unwrap_or_else(PoisonError::into_inner);
        match known.get(user) {
            Some(seen) if *seen > at => false,
            _ => {
                known.insert(user.clone(), at);
                true
            }
        }
    }
}

/// Starts the tasks that make federation run: a pump per pinned peer, the inbound handler, a
/// monitor that logs the outbox while it is not empty, and the presence bookkeeping for peers
/// that connect anew or are lost.
pub(crate) fn spawn_tasks(
    state: &AppState,
    federation: &Arc<Federation>,
    inbound: tokio::sync::mpsc::Receiver<kith_federation::Inbound>,
    shutdown: &CancellationToken,
) {
    for (destination, wake) in &federation.wakes {
        state.tasks.spawn(pump::run(
            state.clone(),
            federation.clone(),
            destination.clone(),
            wake.clone(),
            shutdown.clone(),
        ));
    }
    state.tasks.spawn(inbound::serve(state.clone(), federation.clone(), inbound, shutdown.clone()));
    state.tasks.spawn(monitor(state.clone(), shutdown.clone()));
    state.tasks.spawn(renew_presence_subscriptions(state.clone(), federation.clone(), shutdown.clone()));
    state.tasks.spawn(peer_loss::run(state.clone(), federation.clone(), shutdown.clone()));
}

/// Users per renewed `presence.subscribe` envelope.
const RENEW_CHUNK: usize = 500;

/// Renews this node's presence subscriptions at a peer that connects anew: it keeps them in
/// memory, so after a restart it would otherwise not report changes until a session here
/// subscribed again.
async fn renew_presence_subscriptions(state: AppState, federation: Arc<Federation>, shutdown: CancellationToken) {
    let mut connections = federation.network.connections();
    loop {
        let servers: Vec<ServerName> = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = connections.recv() => match connected {
                Ok(server) => vec![server],
                // Connections are rare, so this hardly happens; renewing everywhere is safe.
                Err(RecvError::Lagged(_)) => federation.wakes.keys().cloned().collect(),
                Err(RecvError::Closed) => return,
            },
        };
        for server in servers {
            let users = state.sessions.watched_on(&server);
            if users.is_empty() {
                continue;
            }
            debug!(%server, users = users.len(), "renewing presence subscriptions");
            let entries = users
                .chunks(RENEW_CHUNK)
                .filter_map(|chunk| outbound::presence_subscribe(server.clone(), chunk.to_vec()))
                .collect();
            queue(&state, &federation, &server, entries).await;
        }
    }
}

/// Queues envelopes that carry no local effect (presence), then wakes the pump once they are
/// committed.
pub(crate) async fn queue(
    state: &AppState,
    federation: &Arc<Federation>,
    destination: &ServerName,
    entries: Vec<OutboxEntry>,
) {
    if entries.is_empty() {
        return;
    }
    match state.store.enqueue_envelopes(entries).await {
        Ok(committed) => {
            let (federation, destination) = (federation.clone(), destination.clone());
            state.tasks.spawn(async move {
                match committed.await {
                    Ok(()) => federation.wake(&destination),
                    Err(e) => tracing::warn!(error = %e, "presence envelopes not queued"),
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "presence envelopes not queued"),
    }
}

/// How often the monitor looks at the outbox.
const MONITOR_INTERVAL: Duration = Duration::from_secs(30);

/// Logs outbox depth and the age of its oldest entry, per destination, while it is not empty.
async fn monitor(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(MONITOR_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.store.outbox_stats().await {
            Ok(stats) => {
                let now = Timestamp::now().as_millis();
                for s in stats {
                    let age_s = s.oldest.map_or(0, |t| (now - t.as_millis()) / 1000);
                    info!(destination = %s.destination, depth = s.depth, oldest_age_s = age_s, "outbox waiting");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read outbox stats"),
        }
    }
}

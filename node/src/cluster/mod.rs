//! The instances of one node, and what passes between them.
//!
//! A node runs alone ([`Cluster::alone`]: everything in this process) or as several
//! interchangeable instances sharing its store and a Redis ([`Cluster::shared`]). Then:
//!
//! - presence is cluster-wide (see [`membership`]): a user is online while any instance holds
//!   one of their sessions, and a dead instance's users go offline within 20 s;
//! - a push for a user whose sessions are on other instances is handed to each of them
//!   through its stream ([`stream`]), and so are presence frames for other instances' watchers,
//!   device removals and outbox wake-ups;
//! - when Redis is down, nothing waits for it: messages are in the store, and what could not
//!   be handed over is replayed from there when it is back.
//!
//! What other instances hand this one arrives as [`Incoming`] events, which the entry point
//! `cluster_inbound` delivers, so this module stays below the ones that act on them.

mod link;
mod membership;
mod stream;
mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kith_client_api::SessionEvent;
use kith_proto::{DeviceId, PresenceView, ServerName, Timestamp, UserId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub(crate) use link::Link;
pub use link::LinkError;
pub use membership::Departed;
use membership::{HEARTBEAT, Membership};
use wire::Wire;

use crate::audience::Audience;

/// How many events from other instances may wait for delivery here.
const INCOMING_QUEUE: usize = 4096;

/// Most users remembered as having missed a push while Redis was down; past that, every
/// instance replays every session when it is back.
const MAX_MISSED: usize = 10_000;

/// How long a peer's presence subscription of a user is kept (peers renew every 10 minutes).
const PEER_WATCH_TTL_MS: i64 = 3600 * 1000;

/// Something another instance handed this one, or that this one must do because of them.
#[derive(Debug)]
pub enum Incoming {
    /// A frame for `user`'s sessions here, but those of device `except`.
    ToUser {
        /// Whose sessions.
        user: UserId,
        /// The device that needs nothing.
        except: Option<DeviceId>,
        /// The frame.
        event: SessionEvent,
    },
    /// A presence frame for the sessions here watching `user`.
    ToWatchers {
        /// Whose presence.
        user: UserId,
        /// The frame.
        event: SessionEvent,
        /// Which watchers may have it.
        audience: Audience,
    },
    /// A device was removed on another instance.
    CloseDevice {
        /// Whose.
        user: UserId,
        /// Which.
        device: DeviceId,
    },
    /// A destination's outbox gained envelopes on another instance.
    OutboxWake(ServerName),
    /// Pushes for these users' sessions here (all, when `None`) may have been lost.
    Replay(Option<Vec<UserId>>),
    /// A dead instance's user went offline.
    Departed(Departed),
    /// This instance's entries were lost (Redis restarted, or a reaper took this instance for
    /// dead): register every local user again, then replay every session here, since pushes
    /// for them found no instance to go to meanwhile.
    Rejoin,
}

impl From<Wire> for Incoming {
    fn from(wire: Wire) -> Self {
        match wire {
            Wire::ToUser { user, except, message_id, text } => {
                Self::ToUser { user, except: except.map(DeviceId), event: SessionEvent::encoded(text, message_id) }
            }
            Wire::ToWatchers { user, text, admitted, inverted } => Self::ToWatchers {
                user,
                event: SessionEvent::encoded(text, None),
                audience: Audience::read_wire(admitted, inverted),
            },
            Wire::CloseDevice { user, device } => Self::CloseDevice { user, device: DeviceId(device) },
            Wire::OutboxWake { destination } => match ServerName::parse(&destination) {
                Ok(destination) => Self::OutboxWake(destination),
                // Not a name this version reads: a replay of nobody does no harm.
                Err(_) => Self::Replay(Some(Vec::new())),
            },
            Wire::Replay { users } => Self::Replay(users),
        }
    }
}

/// How far behind this instance's stream is: the age of the newest entry read, and when it
/// was read.
#[derive(Debug, Default)]
pub struct Lag {
    last_ms: AtomicI64,
}

impl Lag {
    /// Notes an entry read now; its id starts with the milliseconds it was added at.
    fn observe(&self, entry_id: &str) {
        if let Some(added) = entry_id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()) {
            self.last_ms.store(Timestamp::now().as_millis() - added, Ordering::Relaxed);
        }
    }

    /// Milliseconds between the newest entry read being added and being read.
    pub fn last_ms(&self) -> i64 {
        self.last_ms.load(Ordering::Relaxed)
    }
}

/// The instances of this node.
#[derive(Debug)]
pub struct Cluster {
    instance_id: String,
    shared: Option<Shared>,
    /// Peers watching users of this node, when this process runs alone.
    peer_watchers: Mutex<HashMap<UserId, HashSet<ServerName>>>,
}

#[derive(Debug)]
struct Shared {
    link: Arc<Link>,
    membership: Membership,
    lag: Arc<Lag>,
    /// Users pushes to whom could not be handed over, to replay when Redis is back.
    missed: Mutex<HashSet<UserId>>,
    /// More than [`MAX_MISSED`] missed: everyone replays.
    missed_everyone: AtomicBool,
    /// Where events for this instance go.
    incoming: mpsc::Sender<Incoming>,
}

impl Cluster {
    /// A node of one process: nothing to hand over.
    pub fn alone(instance_id: String) -> Self {
        Self { instance_id, shared: None, peer_watchers: Mutex::default() }
    }

    /// One instance of a node whose instances share the Redis at `url`, its keys starting with
    /// `prefix`; also returns where events for this instance arrive.
    ///
    /// # Errors
    /// For a URL Redis cannot use (an unreachable Redis is not an error: it is down for now).
    pub fn shared(
        instance_id: String,
        url: &str,
        prefix: String,
    ) -> Result<(Self, mpsc::Receiver<Incoming>), LinkError> {
        let link = Arc::new(Link::open(url, prefix)?);
        let (incoming, events) = mpsc::channel(INCOMING_QUEUE);
        let shared = Shared {
            link,
            membership: Membership::new(),
            lag: Arc::default(),
            missed: Mutex::default(),
            missed_everyone: AtomicBool::new(false),
            incoming,
        };
        Ok((Self { instance_id, shared: Some(shared), peer_watchers: Mutex::default() }, events))
    }

    /// This instance's name.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Whether other instances share this node.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether the node can serve: always alone; with instances, while Redis answers.
    ///
    /// # Errors
    /// Why not.
    pub fn ready(&self) -> Result<(), String> {
        match &self.shared {
            Some(shared) if !shared.link.is_up() => Err("redis is down".into()),
            _ => Ok(()),
        }
    }

    /// The Redis link, when instances share the node.
    pub(crate) fn link(&self) -> Option<&Link> {
        self.shared.as_ref().map(|s| s.link.as_ref())
    }

    /// After Redis was back: asks the other instances to replay for the users whose pushes this
    /// one could not hand over meanwhile.
    pub async fn replay_missed(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let users: Vec<UserId> =
            std::mem::take(&mut *shared.missed.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect();
        let everyone = shared.missed_everyone.swap(false, Ordering::Relaxed);
        let told = if everyone {
            self.broadcast(Wire::Replay { users: None }).await
        } else if users.is_empty() {
            true
        } else {
            info!(users = users.len(), "asking the other instances to replay what could not be handed over");
            self.broadcast(Wire::Replay { users: Some(users.clone()) }).await
        };
        if !told {
            // Redis failed again (an overloaded Redis answers some calls and times out others):
            // kept for the next time it is back, so that no missed push is forgotten.
            if everyone {
                shared.missed_everyone.store(true, Ordering::Relaxed);
            }
            let mut missed = shared.missed.lock().unwrap_or_else(PoisonError::into_inner);
            for user in users {
                if missed.len() >= MAX_MISSED {
                    shared.missed_everyone.store(true, Ordering::Relaxed);
                    break;
                }
                missed.insert(user);
            }
        }
    }

    /// Redis operations that failed since start (0 alone).
    pub fn redis_errors(&self) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.link.errors())
    }

    /// Entries waiting in this instance's stream (none alone).
    pub async fn backlog(&self) -> Option<u64> {
        let shared = self.shared.as_ref()?;
        let key = shared.link.key(&["stream", &self.instance_id]);
        shared.link.run(|mut c| async move { redis::cmd("XLEN").arg(&key).query_async(&mut c).await }).await.ok()
    }

    /// How far behind this instance's stream was when last read, in milliseconds.
    pub fn handoff_lag_ms(&self) -> i64 {
        self.shared.as_ref().map_or(0, |s| s.lag.last_ms())
    }

    /// Starts the heartbeat, the reaper and the stream consumer (nothing alone).
    pub fn spawn(&self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        let Some(shared) = &self.shared else {
            return;
        };
        tasks.spawn(stream::consume(
            shared.link.clone(),
            self.instance_id.clone(),
            shared.incoming.clone(),
            shared.lag.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(keep_alive(
            shared.link.clone(),
            self.instance_id.clone(),
            shared.incoming.clone(),
            shutdown.clone(),
        ));
    }

    /// Records whether this instance holds a session of `user` now; returns the user's new
    /// presence when that changed it across the node. `None` when nothing changed, or when
    /// Redis is down (the change is made when every local user registers again).
    pub async fn transition(&self, user: &UserId, online_here: bool, now: Timestamp) -> Option<PresenceView> {
        let shared = self.shared.as_ref()?;
        match shared.membership.transition(&shared.link, &self.instance_id, user, online_here, now).await {
            Ok(change) => change,
            Err(e) => {
                warn!(error = %e, "presence change not recorded in redis; made when it is back");
                None
            }
        }
    }

    /// A user's presence across the node, as Redis has it, and when it last changed.
    pub async fn presence(&self, user: &UserId) -> Option<crate::cache::Observed> {
        let shared = self.shared.as_ref()?;
        shared.membership.presence(&shared.link, user).await.ok().flatten()
    }

    /// The users Redis believes have a session here (to compare with the truth on rejoin).
    pub async fn registered_here(&self) -> Vec<UserId> {
        match &self.shared {
            Some(shared) => shared.membership.users_of(&shared.link, &self.instance_id).await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Hands `event` to the other instances holding sessions of `user` (but those of device
    /// `except`).
    pub async fn forward_to_user(&self, user: &UserId, event: &SessionEvent, except: Option<DeviceId>) {
        let Some(shared) = &self.shared else {
            return;
        };
        let key = shared.link.key(&["user", user.as_str(), "instances"]);
        self.forward(shared, user, key, || Wire::to_user(user, event, except)).await;
    }

    /// Hands a presence frame to the other instances with sessions watching `user`.
    pub async fn forward_to_watchers(&self, user: &UserId, event: &SessionEvent, audience: &Audience) {
        let Some(shared) = &self.shared else {
            return;
        };
        let key = shared.link.key(&["user", user.as_str(), "watchers"]);
        self.forward(shared, user, key, || Wire::to_watchers(user, event, audience)).await;
    }

    async fn forward(&self, shared: &Shared, user: &UserId, set: String, wire: impl FnOnce() -> Wire) {
        let instances: Result<Vec<String>, LinkError> =
            shared.link.run(|mut c| async move { redis::cmd("SMEMBERS").arg(&set).query_async(&mut c).await }).await;
        let result = match instances {
            Ok(instances) => {
                let others: Vec<&String> = instances.iter().filter(|i| **i != self.instance_id).collect();
                if others.is_empty() {
                    return;
                }
                let wire = wire();
                let mut result = Ok(());
                for instance in others {
                    if let Err(e) = stream::add(&shared.link, instance, &wire).await {
                        result = Err(e);
                    }
                }
                result
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Delivered from the store when Redis is back.
            let mut missed = shared.missed.lock().unwrap_or_else(PoisonError::into_inner);
            if missed.len() < MAX_MISSED {
                missed.insert(user.clone());
            } else {
                shared.missed_everyone.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Tells every other live instance; false if some could not be told.
    async fn broadcast(&self, wire: Wire) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        match shared.membership.live(&shared.link).await {
            Ok(instances) => {
                let mut told = true;
                for instance in instances.iter().filter(|i| **i != self.instance_id) {
                    if let Err(e) = stream::add(&shared.link, instance, &wire).await {
                        warn!(error = %e, %instance, "could not tell another instance");
                        told = false;
                    }
                }
                told
            }
            Err(e) => {
                warn!(error = %e, "could not tell the other instances");
                false
            }
        }
    }

    /// Tells the other instances that a device was removed.
    pub async fn close_device(&self, user: &UserId, device: DeviceId) {
        self.broadcast(Wire::CloseDevice { user: user.clone(), device: device.0 }).await;
    }

    /// Tells the other instances that `destination`'s outbox has news.
    pub async fn wake_outbox(&self, destination: &ServerName) {
        self.broadcast(Wire::OutboxWake { destination: destination.to_string() }).await;
    }

    /// Notes that this instance has sessions watching `users`, so their presence frames are
    /// handed here.
    pub async fn watch(&self, users: &[UserId]) {
        let Some(shared) = &self.shared else {
            return;
        };
        let keys: Vec<String> = users.iter().map(|u| shared.link.key(&["user", u.as_str(), "watchers"])).collect();
        let instance = self.instance_id.clone();
        let result: Result<(), LinkError> = shared
            .link
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("SADD").arg(key).arg(&instance).ignore();
                }
                pipe.query_async(&mut c).await
            })
            .await;
        if let Err(e) = result {
            warn!(error = %e, "presence subscriptions not shared with the other instances");
        }
    }

    /// This instance has no session watching `user` any more.
    pub async fn unwatch(&self, user: &UserId) {
        let Some(shared) = &self.shared else {
            return;
        };
        let key = shared.link.key(&["user", user.as_str(), "watchers"]);
        let instance = self.instance_id.clone();
        let _: Result<i64, _> = shared
            .link
            .run(|mut c| async move { redis::cmd("SREM").arg(&key).arg(&instance).query_async(&mut c).await })
            .await;
    }

    /// Records that users of `peer` watch `users` (users of this node).
    pub async fn add_peer_watchers(&self, peer: &ServerName, users: &[UserId]) {
        let Some(shared) = &self.shared else {
            let mut watchers = self.peer_watchers.lock().unwrap_or_else(PoisonError::into_inner);
            for user in users {
                watchers.entry(user.clone()).or_default().insert(peer.clone());
            }
            return;
        };
        let keys: Vec<String> = users.iter().map(|u| shared.link.key(&["user", u.as_str(), "peers"])).collect();
        let peer = peer.to_string();
        let result: Result<(), LinkError> = shared
            .link
            .run(|mut c| async move {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("SADD").arg(key).arg(&peer).ignore();
                    pipe.cmd("PEXPIRE").arg(key).arg(PEER_WATCH_TTL_MS).ignore();
                }
                pipe.query_async(&mut c).await
            })
            .await;
        if let Err(e) = result {
            warn!(error = %e, "a peer's presence subscription is not recorded; it renews it");
        }
    }

    /// The peers watching `user`.
    pub async fn peer_watchers(&self, user: &UserId) -> Vec<ServerName> {
        let Some(shared) = &self.shared else {
            let watchers = self.peer_watchers.lock().unwrap_or_else(PoisonError::into_inner);
            return watchers.get(user).map(|w| w.iter().cloned().collect()).unwrap_or_default();
        };
        let key = shared.link.key(&["user", user.as_str(), "peers"]);
        let peers: Result<Vec<String>, LinkError> =
            shared.link.run(|mut c| async move { redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await }).await;
        peers.unwrap_or_default().iter().filter_map(|p| ServerName::parse(p).ok()).collect()
    }
}

/// Every [`HEARTBEAT`]: checks Redis, says this instance is alive, reaps dead instances, and
/// when Redis is back after an outage asks for what it missed to be replayed.
async fn keep_alive(link: Arc<Link>, instance: String, incoming: mpsc::Sender<Incoming>, shutdown: CancellationToken) {
    let membership = Membership::new();
    let mut tick = tokio::time::interval(HEARTBEAT.min(Duration::from_secs(1)));
    let mut since_beat = HEARTBEAT;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let back = link.check().await;
        since_beat += tick.period();
        if !back && since_beat < HEARTBEAT {
            continue;
        }
        since_beat = Duration::ZERO;
        match membership.heartbeat(&link, &instance).await {
            Ok(true) => {
                info!(%instance, "joined the node's instances");
                let _ = incoming.send(Incoming::Rejoin).await;
            }
            Ok(false) if back => {
                let _ = incoming.send(Incoming::Rejoin).await;
            }
            Ok(false) => {}
            Err(_) => continue,
        }
        match membership.reap_dead(&link).await {
            Ok(departed) => {
                for gone in departed {
                    if incoming.send(Incoming::Departed(gone)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => warn!(error = %e, "could not look for dead instances"),
        }
    }
}

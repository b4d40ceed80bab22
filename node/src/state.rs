//! The handles every part of the node shares. Only the lowest layers' types appear here
//! (store, cache, sessions, outbox, peers), so that every module may use the state and no
//! module loop goes through it.

use std::ops::Deref;
use std::sync::Arc;

use kith_proto::ServerName;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::cluster::Cluster;
use crate::outbox::Outbox;
use crate::password::Hasher;
use crate::peers::Peers;
use crate::remote_presence::RemotePresence;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::users::Users;

/// Everything the node's parts share; cloning is one reference count.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Handles>,
}

/// The handles inside [`AppState`].
#[derive(Debug)]
pub struct Handles {
    /// The name this node is home to.
    pub server_name: ServerName,
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Presence and recent messages.
    pub cache: Arc<dyn Cache>,
    /// Live sessions.
    pub sessions: Sessions,
    /// Which user ids exist.
    pub users: Users,
    /// Password hashing, off the async runtime.
    pub hasher: Hasher,
    /// Work that outlives a request (pushes after a commit, presence writes); shutdown waits
    /// for it.
    pub tasks: TaskTracker,
    /// Serialises presence transitions so that the last one written is the true one.
    pub presence_lock: tokio::sync::Mutex<()>,
    /// Remote users this instance subscribed to at their nodes.
    pub remote_presence: RemotePresence,
    /// Envelopes waiting for other nodes.
    pub outbox: Outbox,
    /// Other nodes.
    pub peers: Arc<Peers>,
    /// The other instances of this node, if any.
    pub cluster: Arc<Cluster>,
    /// What this instance counts, for `/metrics`.
    pub telemetry: Telemetry,
    /// How many of each user's one-time prekeys may still be claimed this window.
    pub prekey_budget: crate::prekey_budget::PrekeyBudget,
}

impl AppState {
    /// Wraps the handles.
    pub fn new(handles: Handles) -> Self {
        Self { inner: Arc::new(handles) }
    }
}

impl Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.inner
    }
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl std::fmt::Debug for dyn Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}

//! Presence: a user is online while they have at least one live session on this node.
//!
//! Transitions are computed from the session registry, the truth, under one lock, so that
//! concurrent opens and closes always leave the cache, the store and the watchers with the
//! user's real state. The store keeps `status` and `last_seen` for after a restart.
//!
//! Across nodes, presence travels as envelopes: a node subscribes at a peer to the users its
//! sessions watch, and the peer sends their changes (the data is in `remote_presence`).

use std::collections::HashMap;

use kith_client_api::{ServiceError, SessionId};
use kith_federation::PresenceBody;
use kith_proto::limits::MAX_PRESENCE_SUBSCRIPTIONS;
use kith_proto::{PresenceStatus, PresenceView, ServerName, Timestamp, UserId};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::push;
use crate::state::AppState;
use crate::store::{OutboxEntry, envelopes};

/// Users per renewed `presence.subscribe` envelope.
const RENEW_CHUNK: usize = 500;

/// Brings the cache, the store and the watchers (here and at other nodes) in line with
/// whether `user` has a live session now. Does nothing when nothing changed.
pub(crate) async fn refresh(state: &AppState, user: &UserId) {
    let _serialised = state.presence_lock.lock().await;
    let online = state.sessions.is_online(user);
    let status = if online { PresenceStatus::Online } else { PresenceStatus::Offline };
    if state.cache.presence(user).await.is_some_and(|p| p.status == status) {
        return;
    }
    let now = Timestamp::now();
    let view = PresenceView { user_id: user.clone(), status, last_seen: (!online).then_some(now) };
    match state.store.set_presence(user, online, now).await {
        Ok(committed) => {
            state.tasks.spawn(async move {
                if let Err(e) = committed.await {
                    warn!(error = %e, "presence not persisted");
                }
            });
        }
        Err(e) => warn!(error = %e, "presence not persisted"),
    }
    // Peers with users watching this one hear it too.
    let entries = state.remote_presence.watchers_of(user).into_iter().filter_map(|peer| envelope(peer, &view, now));
    state.outbox.queue(entries.collect()).await;
    push::presence(state, view).await;
}

fn envelope(peer: ServerName, view: &PresenceView, at: Timestamp) -> Option<OutboxEntry> {
    envelopes::presence(peer, view, at).inspect_err(|e| warn!(error = %e, "cannot encode presence")).ok()
}

/// `user`'s presence: from the cache, else offline with the `last_seen` the store kept. For a
/// user of another node, what its node last said (offline until it says anything).
pub(crate) async fn presence_of(state: &AppState, user: &UserId) -> Result<PresenceView, ServiceError> {
    if let Some(view) = state.cache.presence(user).await {
        return Ok(view);
    }
    if !user.is_on(&state.server_name) {
        if !state.peers.knows(&user.server_name()) {
            return Err(ServiceError::UnknownServer(user.server_name()));
        }
        return Ok(PresenceView { user_id: user.clone(), status: PresenceStatus::Offline, last_seen: None });
    }
    let record = state.store.user(user).await?.ok_or_else(|| ServiceError::UnknownUser(user.clone()))?;
    Ok(PresenceView { user_id: user.clone(), status: PresenceStatus::Offline, last_seen: record.last_seen })
}

/// Makes `session` watch `users` and returns their presence now.
pub(crate) async fn subscribe(
    state: &AppState,
    session: SessionId,
    users: Vec<UserId>,
) -> Result<Vec<PresenceView>, ServiceError> {
    let watching = state.sessions.watch_count(session);
    if watching + users.len() > MAX_PRESENCE_SUBSCRIPTIONS {
        return Err(ServiceError::InvalidRequest(format!(
            "a session may watch at most {MAX_PRESENCE_SUBSCRIPTIONS} users (watching {watching}, asked for {} more)",
            users.len()
        )));
    }
    // Every user must exist (or live on a pinned node) before anything is watched.
    for user in &users {
        presence_of(state, user).await?;
    }
    // Watch first, then read: a change between the two reaches this session as a frame, so it
    // never keeps a stale state.
    if !state.sessions.watch(session, &users) {
        return Err(ServiceError::Unavailable("session closed".into()));
    }
    let mut views = Vec::with_capacity(users.len());
    for user in &users {
        let view = presence_of(state, user).await?;
        if !user.is_on(&state.server_name) && state.cache.presence(user).await.is_none() {
            // Offline until its node says otherwise, remembered so that a first report saying
            // the same is not news to the watchers. Bounded by the subscription limits.
            state.cache.set_presence(view.clone()).await;
        }
        views.push(view);
    }
    // Ask the home nodes of remote users to send their changes here, unless this node asked
    // for that user recently.
    let mut by_server: HashMap<ServerName, Vec<UserId>> = HashMap::new();
    for user in users.into_iter().filter(|u| !u.is_on(&state.server_name)) {
        if state.remote_presence.should_subscribe(&user) {
            by_server.entry(user.server_name()).or_default().push(user);
        }
    }
    let entries = by_server.into_iter().filter_map(|(server, users)| subscription(server, users));
    state.outbox.queue(entries.collect()).await;
    Ok(views)
}

fn subscription(server: ServerName, users: Vec<UserId>) -> Option<OutboxEntry> {
    envelopes::presence_subscribe(server, users).inspect_err(|e| warn!(error = %e, "cannot encode a subscription")).ok()
}

/// Another node reports a user's presence: news (newer than what was heard, and different)
/// reaches the watchers here.
pub(crate) async fn heard(state: &AppState, body: PresenceBody) {
    let view = PresenceView { user_id: body.user_id, status: body.status, last_seen: body.last_seen };
    let known = state.cache.presence(&view.user_id).await;
    if state.remote_presence.is_newer(&view.user_id, body.at) && known.as_ref() != Some(&view) {
        push::presence(state, view).await;
    }
}

/// Another node's users watch `users` (users of this node): remember that, and tell it their
/// presence now.
pub(crate) async fn watched_from(state: &AppState, origin: &ServerName, users: Vec<UserId>) {
    // Under the presence lock, as every local change is: a change racing this subscription is
    // then either in the state read here or sent after it with a later timestamp, never lost
    // behind a stale answer.
    let _serialised = state.presence_lock.lock().await;
    // Only users who exist are watched.
    let mut watched = Vec::new();
    let mut entries = Vec::new();
    for user in users {
        if let Ok(view) = presence_of(state, &user).await {
            entries.extend(envelope(origin.clone(), &view, Timestamp::now()));
            watched.push(user);
        }
    }
    state.remote_presence.add_watcher(origin, &watched);
    state.outbox.queue(entries).await;
}

/// Renews this node's presence subscriptions at a peer that connects anew: it keeps them in
/// memory, so after a restart it would otherwise not report changes until a session here
/// subscribed again.
pub(crate) async fn renew_subscriptions(state: AppState, shutdown: CancellationToken) {
    let mut connections = state.peers.network.connections();
    loop {
        let servers: Vec<ServerName> = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = connections.recv() => match connected {
                Ok(server) => vec![server],
                // Connections are rare, so this hardly happens; renewing everywhere is safe.
                Err(RecvError::Lagged(_)) => state.peers.names().collect(),
                Err(RecvError::Closed) => return,
            },
        };
        for server in servers {
            let users = state.sessions.watched_on(&server);
            if users.is_empty() {
                continue;
            }
            debug!(%server, users = users.len(), "renewing presence subscriptions");
            let entries =
                users.chunks(RENEW_CHUNK).filter_map(|chunk| subscription(server.clone(), chunk.to_vec())).collect();
            state.outbox.queue(entries).await;
        }
    }
}

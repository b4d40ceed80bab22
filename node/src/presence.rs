//! Presence: a user is online while they have at least one live session on this node.
//!
//! Transitions are computed from the session registry, the truth, under one lock, so that
//! concurrent opens and closes always leave the cache, the store and the watchers with the
//! user's real state. The store keeps `status` and `last_seen` for after a restart.

use kith_client_api::{ServiceError, SessionEvent, SessionId};
use kith_proto::limits::MAX_PRESENCE_SUBSCRIPTIONS;
use std::collections::HashMap;

use kith_proto::{PresenceStatus, PresenceView, ServerFrame, ServerName, Timestamp, UserId};
use tracing::warn;

use crate::federation;
use crate::sessions::Dropped;
use crate::state::AppState;

/// Brings the cache, the store and the watchers in line with whether `user` has a live
/// session now. Does nothing when nothing changed.
pub(crate) async fn refresh(state: &AppState, user: &UserId) {
    let _serialised = state.presence_lock.lock().await;
    let online = state.sessions.is_online(user);
    let status = if online { PresenceStatus::Online } else { PresenceStatus::Offline };
    if state.cache.presence(user).await.is_some_and(|p| p.status == status) {
        return;
    }
    let now = Timestamp::now();
    let view = PresenceView { user_id: user.clone(), status, last_seen: (!online).then_some(now) };
    state.cache.set_presence(view.clone()).await;
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
    for peer in state.federation.watchers_of(user) {
        let entries = federation::outbound::presence(peer.clone(), &view, now).into_iter().collect();
        federation::queue(state, &state.federation, &peer, entries).await;
    }
    let dropped = state.sessions.push_to_watchers(user, &SessionEvent::frame(&ServerFrame::Presence(view)));
    after_dropping(state, dropped);
}

/// Re-checks the presence of users who lost their last session because it was too slow.
pub(crate) fn after_dropping(state: &AppState, dropped: Vec<Dropped>) {
    for Dropped(user) in dropped {
        let state_for_task = state.clone();
        state.tasks.spawn(async move { refresh(&state_for_task, &user).await });
    }
}

/// `user`'s presence: from the cache, else offline with the `last_seen` the store kept. For a
/// user of another node, what its node last said (offline until it says anything).
pub(crate) async fn presence_of(state: &AppState, user: &UserId) -> Result<PresenceView, ServiceError> {
    if let Some(view) = state.cache.presence(user).await {
        return Ok(view);
    }
    if !user.is_on(&state.server_name) {
        if !state.federation.knows(&user.server_name()) {
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
        if state.federation.should_subscribe(&user) {
            by_server.entry(user.server_name()).or_default().push(user);
        }
    }
    for (server, users) in by_server {
        let entries = federation::outbound::presence_subscribe(server.clone(), users).into_iter().collect();
        federation::queue(state, &state.federation, &server, entries).await;
    }
    Ok(views)
}

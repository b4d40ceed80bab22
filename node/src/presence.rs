//! Presence: a user is online while they have at least one live session on this node (on
//! any of its instances).
//!
//! Transitions are computed from the session registry, the truth, under one lock, so that
//! concurrent opens and closes always leave the cache, the store and the watchers with the
//! user's real state. With several instances, each says whether it holds a session of the
//! user, and `cluster` decides atomically whether that changed the user's presence. The store
//! keeps `status` and `last_seen` for after a restart.
//!
//! Across nodes, presence travels as envelopes: a node subscribes at a peer to the users its
//! sessions watch, and the peer sends their changes (the data is in `remote_presence`). A
//! peer whose connection breaks has its online users shown offline until it is back.

use std::collections::HashMap;

use kith_client_api::{ServiceError, SessionId};
use kith_federation::PresenceBody;
use kith_proto::limits::MAX_PRESENCE_SUBSCRIPTIONS;
use kith_proto::{PresenceStatus, PresenceView, PresenceVisibility, ServerName, Timestamp, UserId};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::audience::Audience;
use crate::cache::Observed;
use crate::push;
use crate::state::AppState;
use crate::store::{OutboxEntry, envelopes};

/// Users per renewed `presence.subscribe` envelope.
const RENEW_CHUNK: usize = 500;

/// Brings the cache, the store and the watchers (here, on other instances and at other
/// nodes) in line with whether `user` has a live session now. Does nothing when nothing
/// changed.
pub(crate) async fn refresh(state: &AppState, user: &UserId) {
    let _serialised = state.presence_lock.lock().await;
    let online = state.sessions.is_online(user);
    let now = Timestamp::now();
    let view = if state.cluster.is_shared() {
        match state.cluster.transition(user, online, now).await {
            Some(view) => view,
            None => return,
        }
    } else {
        let status = if online { PresenceStatus::Online } else { PresenceStatus::Offline };
        if state.cache.presence(user).await.is_some_and(|p| p.view.status == status) {
            return;
        }
        PresenceView { user_id: user.clone(), status, last_seen: (!online).then_some(now) }
    };
    changed(state, view, now).await;
}

/// A user of this node went online or offline at `at`: the store keeps it for after a
/// restart, peers watching them and the sessions watching them hear it (those the user shares
/// their presence with: see [`audience`]).
async fn changed(state: &AppState, view: PresenceView, at: Timestamp) {
    let online = view.status == PresenceStatus::Online;
    match state.store.set_presence(&view.user_id, online, view.last_seen.unwrap_or(at)).await {
        Ok(committed) => {
            state.tasks.spawn(async move {
                if let Err(e) = committed.await {
                    warn!(error = %e, "presence not persisted");
                }
            });
        }
        Err(e) => warn!(error = %e, "presence not persisted"),
    }
    // Recorded (by push) before the peers watching are read: a peer subscribing meanwhile
    // either is read here or reads the new state itself (see `watched_from`).
    let audience = audience_or_nobody(state, &view.user_id).await;
    push::presence(state, view.clone(), at, &audience).await;
    let peers = state.cluster.peer_watchers(&view.user_id).await;
    let entries = peers.into_iter().filter_map(|peer| envelope(peer, &view, at, &audience));
    state.outbox.queue(entries.collect()).await;
}

/// Who may see `user`'s (a user of this node) presence now: their setting, and under
/// `contacts` every user they have a conversation with (a message either way, on any node).
///
/// # Errors
/// [`ServiceError::UnknownUser`], store errors.
pub(crate) async fn audience(state: &AppState, user: &UserId) -> Result<Audience, ServiceError> {
    let record = state.store.user(user).await?.ok_or_else(|| ServiceError::UnknownUser(user.clone()))?;
    Ok(match record.presence_visibility {
        PresenceVisibility::Everyone => Audience::Everyone,
        PresenceVisibility::Nobody => Audience::only(user, []),
        PresenceVisibility::Contacts => Audience::only(user, state.store.conversation_peers(user).await?),
    })
}

/// [`audience`], or only the user when it cannot be read: a store failure must not make
/// presence public.
async fn audience_or_nobody(state: &AppState, user: &UserId) -> Audience {
    audience(state, user).await.unwrap_or_else(|e| {
        warn!(error = %e, "presence audience unknown, shown to no one");
        Audience::only(user, [])
    })
}

/// Whether `viewer` may see `user`'s presence: for a user of this node by their setting, for
/// a remote user by what their node said.
async fn admits(state: &AppState, viewer: &UserId, user: &UserId) -> Result<bool, ServiceError> {
    if viewer == user {
        return Ok(true);
    }
    if user.is_on(&state.server_name) {
        Ok(audience(state, user).await?.admits(viewer))
    } else {
        Ok(state.remote_presence.audience(user).admits(viewer))
    }
}

/// `user`'s presence as `viewer` may see it: the real one, or [`PresenceView::hidden`].
///
/// # Errors
/// [`ServiceError::UnknownUser`] (or `UnknownServer`) as [`presence_of`].
pub(crate) async fn presence_for(
    state: &AppState,
    viewer: &UserId,
    user: &UserId,
) -> Result<PresenceView, ServiceError> {
    let view = presence_of(state, user).await?;
    Ok(if admits(state, viewer, user).await? { view } else { PresenceView::hidden(user.clone()) })
}

/// Who may see `user`'s presence.
///
/// # Errors
/// [`ServiceError::UnknownUser`], store errors.
pub(crate) async fn visibility(state: &AppState, user: &UserId) -> Result<PresenceVisibility, ServiceError> {
    let record = state.store.user(user).await?.ok_or_else(|| ServiceError::UnknownUser(user.clone()))?;
    Ok(record.presence_visibility)
}

/// Stores who may see `user`'s presence, then tells the sessions watching them what they may
/// see now (the real presence, or `unknown`), and the peers watching them whom of their users
/// it is shown to.
///
/// # Errors
/// [`ServiceError::UnknownUser`], store errors.
pub(crate) async fn set_visibility(
    state: &AppState,
    user: &UserId,
    visibility: PresenceVisibility,
) -> Result<(), ServiceError> {
    let _serialised = state.presence_lock.lock().await;
    if !state.store.set_presence_visibility(user, visibility).await?.await? {
        return Err(ServiceError::UnknownUser(user.clone()));
    }
    let now = observed(state, user).await?;
    let audience = audience(state, user).await?;
    push::presence_to(state, now.view.clone(), &audience).await;
    push::presence_to(state, PresenceView::hidden(user.clone()), &audience.complement()).await;
    let peers = state.cluster.peer_watchers(user).await;
    let entries = peers.into_iter().filter_map(|peer| envelope(peer, &now.view, now.at, &audience));
    state.outbox.queue(entries.collect()).await;
    Ok(())
}

/// Another instance died holding `user`'s last session: they are offline since its last
/// heartbeat.
pub(crate) async fn departed(state: &AppState, user: UserId, last_seen: Timestamp) {
    let view = PresenceView { user_id: user, status: PresenceStatus::Offline, last_seen: Some(last_seen) };
    changed(state, view, last_seen).await;
}

/// This instance's presence entries were lost (Redis restarted, or this instance was taken
/// for dead): every user it holds a session of registers again, and every user Redis still
/// believes it holds but who has gone meanwhile is taken offline.
pub(crate) async fn rejoin(state: &AppState) {
    let mut users = state.sessions.online_users();
    users.extend(state.cluster.registered_here().await);
    users.sort();
    users.dedup();
    for user in users {
        refresh(state, &user).await;
    }
}

fn envelope(peer: ServerName, view: &PresenceView, at: Timestamp, audience: &Audience) -> Option<OutboxEntry> {
    envelopes::presence(peer, view, at, audience).inspect_err(|e| warn!(error = %e, "cannot encode presence")).ok()
}

/// `user`'s presence: from the cache, else offline with the `last_seen` the store kept. For a
/// user of another node, what its node last said (offline until it says anything).
pub(crate) async fn presence_of(state: &AppState, user: &UserId) -> Result<PresenceView, ServiceError> {
    observed(state, user).await.map(|o| o.view)
}

/// [`presence_of`], with when it last changed.
async fn observed(state: &AppState, user: &UserId) -> Result<Observed, ServiceError> {
    if let Some(observed) = state.cache.presence(user).await {
        return Ok(observed);
    }
    let never = Timestamp::from_millis(0);
    if !user.is_on(&state.server_name) {
        if !state.peers.knows(&user.server_name()) {
            return Err(ServiceError::UnknownServer(user.server_name()));
        }
        let view = PresenceView { user_id: user.clone(), status: PresenceStatus::Offline, last_seen: None };
        return Ok(Observed { view, at: never });
    }
    let record = state.store.user(user).await?.ok_or_else(|| ServiceError::UnknownUser(user.clone()))?;
    let view = PresenceView { user_id: user.clone(), status: PresenceStatus::Offline, last_seen: record.last_seen };
    Ok(Observed { view, at: record.last_seen.unwrap_or(never) })
}

/// Makes `session` watch `users` and returns their presence now, as the session's user may
/// see it (changes they may not see never reach the session).
pub(crate) async fn subscribe(
    state: &AppState,
    session: SessionId,
    users: Vec<UserId>,
) -> Result<Vec<PresenceView>, ServiceError> {
    let viewer = state.sessions.user_of(session).ok_or_else(|| ServiceError::Unavailable("session closed".into()))?;
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
    // Their changes computed on other instances are handed here too.
    state.cluster.watch(&users).await;
    let mut views = Vec::with_capacity(users.len());
    for user in &users {
        let view = presence_of(state, user).await?;
        if !user.is_on(&state.server_name) && state.cache.presence(user).await.is_none() {
            // Offline until its node says otherwise (any report is newer), remembered so that a
            // first report saying the same is not news to the watchers. Bounded by the
            // subscription limits.
            state.cache.set_presence(view.clone(), Timestamp::from_millis(0)).await;
        }
        let admitted = admits(state, &viewer, user).await?;
        views.push(if admitted { view } else { PresenceView::hidden(user.clone()) });
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
    let audience = Audience::from_wire(&body.user_id, body.audience);
    let before = state.remote_presence.set_audience(&body.user_id, audience.clone());
    let view = PresenceView { user_id: body.user_id, status: body.status, last_seen: body.last_seen };
    if state.cache.presence(&view.user_id).await.map(|o| o.view).as_ref() != Some(&view) {
        // Older than what was heard before: dropped there.
        push::presence(state, view.clone(), body.at, &audience).await;
    } else if before != audience {
        // Only whom it is shown to changed: the newly admitted see it now.
        push::presence_to(state, view.clone(), &audience).await;
    }
    if before != audience {
        push::presence_to(state, PresenceView::hidden(view.user_id), &audience.complement()).await;
    }
}

/// Another node's users watch `users` (users of this node): remember that, and tell it their
/// presence now.
pub(crate) async fn watched_from(state: &AppState, origin: &ServerName, users: Vec<UserId>) {
    // Watch first, then read, as sessions do; and each answer carries the time its state last
    // changed, not now: a change racing this answer (here, or on another instance) either is
    // in what is read, or reaches the peer stamped later than this answer, so the peer never
    // keeps a stale state because of it.
    let mut watched = Vec::new();
    for user in users {
        if presence_of(state, &user).await.is_ok() {
            watched.push(user);
        }
    }
    state.cluster.add_peer_watchers(origin, &watched).await;
    let mut entries = Vec::new();
    for user in &watched {
        if let Ok(now) = observed(state, user).await {
            let audience = audience_or_nobody(state, user).await;
            entries.extend(envelope(origin.clone(), &now.view, now.at, &audience));
        }
    }
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

/// Until shutdown: when a peer's connection breaks (it crashed, stopped, or the network
/// failed) it can no longer report its users' presence, so whoever it last said was online is
/// shown offline from then on, instead of online for as long as the peer stays away. When it
/// connects again, the renewed subscriptions bring its users' real presence.
pub(crate) async fn forget_lost_peers(state: AppState, shutdown: CancellationToken) {
    let mut lost = state.peers.network.lost();
    loop {
        let server = tokio::select! {
            () = shutdown.cancelled() => return,
            lost = lost.recv() => match lost {
                Ok(server) => server,
                // Losses are rare; one missed is a peer whose users stay as last reported.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        };
        let now = Timestamp::now();
        let mut marked = 0;
        for user in state.sessions.watched_on(&server) {
            let online = state.cache.presence(&user).await.is_some_and(|p| p.view.status == PresenceStatus::Online);
            if online {
                let view = PresenceView { user_id: user, status: PresenceStatus::Offline, last_seen: Some(now) };
                // Dropped there if the peer's own news is newer.
                let audience = state.remote_presence.audience(&view.user_id);
                push::presence(&state, view, now, &audience).await;
                marked += 1;
            }
        }
        debug!(%server, users = marked, "peer lost: its online users shown offline");
    }
}

/// Until shutdown: brings the presence of users whose session was closed (too slow, or its
/// device removed) up to date at once, without waiting for the connection to finish ending.
pub(crate) async fn after_closing(
    state: AppState,
    mut closed: tokio::sync::mpsc::Receiver<UserId>,
    shutdown: CancellationToken,
) {
    loop {
        let user = tokio::select! {
            () = shutdown.cancelled() => return,
            user = closed.recv() => match user {
                Some(user) => user,
                None => return,
            },
        };
        refresh(&state, &user).await;
    }
}

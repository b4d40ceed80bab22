//! A peer whose connection broke (it crashed, it stopped, the network failed) can no longer
//! report its users' presence. Whoever it last said was online is shown offline from then on,
//! instead of online for as long as the peer stays away; when it connects again, the renewed
//! subscriptions bring its users' real presence.

use std::sync::Arc;

use kith_client_api::SessionEvent;
use kith_proto::{PresenceStatus, PresenceView, ServerFrame, ServerName, Timestamp};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Federation;
use crate::presence;
use crate::state::AppState;

/// Marks the watched users of every peer whose connection is lost offline, until shutdown.
pub(super) async fn run(state: AppState, federation: Arc<Federation>, shutdown: CancellationToken) {
    let mut lost = federation.network.lost();
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
        mark_offline(&state, &federation, &server).await;
    }
}

/// Shows every watched user of `server` who was online as offline, seen last now.
async fn mark_offline(state: &AppState, federation: &Federation, server: &ServerName) {
    let now = Timestamp::now();
    let mut marked = 0;
    for user in state.sessions.watched_on(server) {
        let online = state.cache.presence(&user).await.is_some_and(|p| p.status == PresenceStatus::Online);
        // Only news newer than what the peer itself said counts, as for its own reports.
        if !online || !federation.newer_presence(&user, now) {
            continue;
        }
        let view = PresenceView { user_id: user.clone(), status: PresenceStatus::Offline, last_seen: Some(now) };
        state.cache.set_presence(view.clone()).await;
        let dropped = state.sessions.push_to_watchers(&user, &SessionEvent::frame(&ServerFrame::Presence(view)));
        presence::after_dropping(state, dropped);
        marked += 1;
    }
    debug!(%server, users = marked, "peer lost: its online users shown offline");
}

//! The entry point for what the node's other instances hand this one (see `cluster`), as
//! `service` is for clients and `federation_inbound` for other nodes: frames for sessions
//! here, device removals, outbox wake-ups, replays, and presence changes of users whose
//! instance died.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Incoming;
use crate::presence;
use crate::state::AppState;

/// Handles events from other instances until shutdown, in order.
pub(crate) async fn serve(state: AppState, mut incoming: mpsc::Receiver<Incoming>, shutdown: CancellationToken) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = incoming.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        handle(&state, event).await;
    }
}

async fn handle(state: &AppState, event: Incoming) {
    match event {
        Incoming::ToUser { user, except, event } => {
            let queued = state.sessions.push_to_user(&user, &event, except);
            if event.message_id().is_some() {
                state.telemetry.messages_pushed.inc_by(queued as u64);
            }
        }
        Incoming::ToWatchers { user, event, audience } => {
            if state.sessions.is_watched(&user) {
                state.sessions.push_to_watchers(&user, &event, &audience);
            } else {
                // Its watchers here left: stop receiving these. A session that started watching
                // meanwhile registered here before telling Redis, so looking again after
                // leaving settles it either way.
                state.cluster.unwatch(&user).await;
                if state.sessions.is_watched(&user) {
                    state.cluster.watch(std::slice::from_ref(&user)).await;
                    state.sessions.push_to_watchers(&user, &event, &audience);
                }
            }
        }
        Incoming::CloseDevice { user, device } => {
            state.users.forget_device(&user, device);
            state.sessions.close_device(&user, device);
        }
        Incoming::OutboxWake(destination) => state.outbox.wake(&destination),
        Incoming::Replay(users) => state.sessions.replay(users.as_deref()),
        Incoming::Departed(gone) => presence::departed(state, gone.user, gone.last_seen).await,
        Incoming::Rejoin => {
            // Registered first, so pushes committed from now on find this instance; then
            // replayed, for those committed before.
            presence::rejoin(state).await;
            state.sessions.replay(None);
            state.cache.recover().await;
            state.cluster.replay_missed().await;
        }
    }
}

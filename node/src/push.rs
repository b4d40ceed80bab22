//! Push: how anything reaches a user's live sessions. Every "a message, a receipt, a presence
//! change, `keys.changed` or an error reaches someone's sessions" goes through here, with the
//! cache write that must come first (so a page of history read after a push never misses
//! what was pushed).
//!
//! Sessions on this instance are pushed to directly; sessions on the node's other instances
//! get the same frame through `cluster`. Pushing never waits on a client: sessions have
//! bounded queues, and one too slow to take a push is closed (see `sessions`); what it missed
//! is pending in the store and comes again with the replay on its next connect.

use kith_client_api::SessionEvent;
use kith_proto::{
    DeviceId, IncomingMessage, MessageId, MessageStatus, MessageView, PresenceView, ServerFrame, Timestamp, UserId,
};

use crate::audience::Audience;
use crate::state::AppState;

/// A newly stored message: recorded as recent, then pushed to its receiver's sessions (if the
/// receiver is a user of this node) and to every session of its sender but those of the device
/// that sent it (`from_device`; `None` for a message from another node, whose sender has no
/// sessions here).
pub(crate) async fn message(state: &AppState, view: &MessageView, from_device: Option<DeviceId>) {
    state.cache.record_message(view).await;
    let event = SessionEvent::message(IncomingMessage {
        message_id: view.message_id,
        sender_id: view.sender_id.clone(),
        receiver_id: view.receiver_id.clone(),
        message: view.message.clone(),
        timestamp: view.timestamp,
    });
    let (sender, receiver) = (&view.sender_id, &view.receiver_id);
    if sender != receiver && receiver.is_on(&state.server_name) {
        event_to_user(state, receiver, &event, None).await;
    }
    if from_device.is_some() {
        event_to_user(state, sender, &event, from_device).await;
    }
}

/// `event` to every session of `user` but those of device `except`, here and on the node's
/// other instances.
async fn event_to_user(state: &AppState, user: &UserId, event: &SessionEvent, except: Option<DeviceId>) {
    let queued = state.sessions.push_to_user(user, event, except);
    if event.message_id().is_some() {
        state.telemetry.messages_pushed.inc_by(queued as u64);
    }
    state.cluster.forward_to_user(user, event, except).await;
}

/// A message's status moved forward: recorded in the recent messages, then the sender's
/// sessions get a `receipt` frame.
pub(crate) async fn receipt(
    state: &AppState,
    sender: &UserId,
    receiver: &UserId,
    message_id: MessageId,
    status: MessageStatus,
    at: Timestamp,
) {
    state.cache.record_status(sender, receiver, message_id, status).await;
    to_user(state, sender, &ServerFrame::Receipt { message_id, status, timestamp: at }, None).await;
}

/// A user's presence, as observed at `at`: recorded, then every session watching them hears
/// it, unless newer news was recorded already.
pub(crate) async fn presence(state: &AppState, view: PresenceView, at: Timestamp, audience: &Audience) {
    if !state.cache.set_presence(view.clone(), at).await {
        return;
    }
    presence_to(state, view, audience).await;
}

/// `view` to the sessions watching its user that `audience` admits, here and on the other
/// instances; not recorded (for telling watchers what they may see after a setting changed).
pub(crate) async fn presence_to(state: &AppState, view: PresenceView, audience: &Audience) {
    let user = view.user_id.clone();
    let event = SessionEvent::frame(&ServerFrame::Presence(view));
    state.sessions.push_to_watchers(&user, &event, audience);
    state.cluster.forward_to_watchers(&user, &event, audience).await;
}

/// Any other frame (`keys.changed`, an error about an earlier message) to every session of
/// `user` but those of device `except`.
pub(crate) async fn to_user(state: &AppState, user: &UserId, frame: &ServerFrame, except: Option<DeviceId>) {
    event_to_user(state, user, &SessionEvent::frame(frame), except).await;
}

/// A device was removed: its sessions end, here and on the other instances.
pub(crate) async fn close_device(state: &AppState, user: &UserId, device: DeviceId) {
    state.sessions.close_device(user, device);
    state.cluster.close_device(user, device).await;
}

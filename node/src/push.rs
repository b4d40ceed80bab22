//! Push: how anything reaches a user's live sessions. Every "a message, a receipt, a presence
//! change, `keys.changed` or an error reaches someone's sessions" goes through here, with the
//! cache write that must come first (so a page of history read after a push never misses
//! what was pushed).
//!
//! Pushing never waits on a client: sessions have bounded queues, and one too slow to take a
//! push is closed (see `sessions`); what it missed is pending in the store and comes again
//! with the replay on its next connect.

use kith_client_api::SessionEvent;
use kith_proto::{
    DeviceId, IncomingMessage, MessageId, MessageStatus, MessageView, PresenceView, ServerFrame, Timestamp, UserId,
};

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
        state.sessions.push_to_user(receiver, &event, None);
    }
    if from_device.is_some() {
        state.sessions.push_to_user(sender, &event, from_device);
    }
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
    to_user(state, sender, &ServerFrame::Receipt { message_id, status, timestamp: at }, None);
}

/// A user's presence changed: recorded, then every session watching them hears it.
pub(crate) async fn presence(state: &AppState, view: PresenceView) {
    state.cache.set_presence(view.clone()).await;
    let user = view.user_id.clone();
    state.sessions.push_to_watchers(&user, &SessionEvent::frame(&ServerFrame::Presence(view)));
}

/// Any other frame (`keys.changed`, an error about an earlier message) to every session of
/// `user` but those of device `except`.
pub(crate) fn to_user(state: &AppState, user: &UserId, frame: &ServerFrame, except: Option<DeviceId>) {
    state.sessions.push_to_user(user, &SessionEvent::frame(frame), except);
}

/// A device was removed: its sessions end.
pub(crate) fn close_device(state: &AppState, user: &UserId, device: DeviceId) {
    state.sessions.close_device(user, device);
}

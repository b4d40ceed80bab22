//! Envelopes this node queues for others, as outbox entries. Ids are chosen so that the same
//! effect always travels under the same id: a message under its message id, a receipt under
//! its message id and status.

use std::sync::Arc;

use kith_federation::{Kind, MessageBody, Payload, PresenceBody, PresenceSubscribeBody, ReceiptBody};
use kith_proto::{MessageId, MessageStatus, MessageView, PresenceView, ServerName, Timestamp, UserId};
use tracing::warn;

use crate::store::{ForwardReceipt, OutboxEntry};

fn entry(destination: ServerName, envelope_id: String, payload: &Payload) -> Option<OutboxEntry> {
    match payload.encode() {
        Ok(body) => Some(OutboxEntry { destination, envelope_id, kind: payload.kind().as_str().to_owned(), body }),
        Err(e) => {
            warn!(error = %e, "cannot encode an envelope body");
            None
        }
    }
}

/// The envelope carrying `message` to its receiver's node.
pub(crate) fn message(message: &MessageView) -> Option<OutboxEntry> {
    let body = MessageBody {
        message_id: message.message_id,
        sender_id: message.sender_id.clone(),
        receiver_id: message.receiver_id.clone(),
        message: message.message.clone(),
        timestamp: message.timestamp,
    };
    entry(message.receiver_id.server_name(), message.message_id.to_string(), &Payload::Message(body))
}

/// Builds, inside the receipt's transaction, the envelope that tells a sender on another node
/// that `receiver` got or read `message_id`.
pub(crate) fn receipt_forwarder(local: ServerName, receiver: UserId, message_id: MessageId) -> ForwardReceipt {
    Arc::new(move |sender: &UserId, status: MessageStatus, at: Timestamp| {
        if sender.is_on(&local) {
            return None;
        }
        let body = ReceiptBody { message_id, sender_id: sender.clone(), receiver_id: receiver.clone(), status, at };
        entry(sender.server_name(), format!("{message_id}:{}", status.as_str()), &Payload::Receipt(body))
    })
}

/// The envelope telling `destination` about a user's presence.
pub(crate) fn presence(destination: ServerName, view: &PresenceView, at: Timestamp) -> Option<OutboxEntry> {
    let body = PresenceBody { user_id: view.user_id.clone(), status: view.status, last_seen: view.last_seen, at };
    entry(destination, kith_proto::MessageId::now().to_string(), &Payload::Presence(body))
}

/// The envelope telling `destination` that users of this node watch `users` (theirs).
pub(crate) fn presence_subscribe(destination: ServerName, users: Vec<UserId>) -> Option<OutboxEntry> {
    entry(
        destination,
        kith_proto::MessageId::now().to_string(),
        &Payload::PresenceSubscribe(PresenceSubscribeBody { user_ids: users }),
    )
}

/// The kind of a queued envelope, as the pump reads it back.
pub(crate) fn kind(name: &str) -> Option<Kind> {
    Kind::parse(name)
}

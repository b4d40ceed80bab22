//! The envelopes this node queues for other nodes, as outbox entries. Ids are chosen so that
//! the same effect always travels under the same id: a message under its message id, a
//! receipt under its message id and status. Bodies are signed when sent, not here.

use kith_federation::{FederationError, MessageBody, Payload, PresenceBody, PresenceSubscribeBody, ReceiptBody};
use kith_proto::{MessageId, MessageStatus, MessageView, PresenceView, ServerName, Timestamp, UserId};

use super::OutboxEntry;

use crate::audience::Audience;

fn entry(destination: ServerName, envelope_id: String, payload: &Payload) -> Result<OutboxEntry, FederationError> {
    Ok(OutboxEntry { destination, envelope_id, kind: payload.kind(), body: payload.encode()? })
}

/// The envelope carrying `message` to its receiver's node.
///
/// # Errors
/// Only if the body cannot be encoded, which plain data never fails.
pub(crate) fn message(message: &MessageView) -> Result<OutboxEntry, FederationError> {
    let body = MessageBody {
        message_id: message.message_id,
        sender_id: message.sender_id.clone(),
        receiver_id: message.receiver_id.clone(),
        message: message.message.clone(),
        timestamp: message.timestamp,
    };
    entry(message.receiver_id.server_name(), message.message_id.to_string(), &Payload::Message(body))
}

/// The envelope telling `sender`'s node that `receiver` got or read `message_id`.
///
/// # Errors
/// Only if the body cannot be encoded.
pub(crate) fn receipt(
    message_id: MessageId,
    sender: &UserId,
    receiver: &UserId,
    status: MessageStatus,
    at: Timestamp,
) -> Result<OutboxEntry, FederationError> {
    let body = ReceiptBody { message_id, sender_id: sender.clone(), receiver_id: receiver.clone(), status, at };
    entry(sender.server_name(), format!("{message_id}:{}", status.as_str()), &Payload::Receipt(body))
}

/// The envelope telling `destination` about a user's presence, as observed at `at`.
///
/// # Errors
/// Only if the body cannot be encoded.
pub(crate) fn presence(
    destination: ServerName,
    view: &PresenceView,
    at: Timestamp,
    audience: &Audience,
) -> Result<OutboxEntry, FederationError> {
    let body = PresenceBody {
        user_id: view.user_id.clone(),
        status: view.status,
        last_seen: view.last_seen,
        at,
        audience: audience.on(&destination),
    };
    entry(destination, MessageId::now().to_string(), &Payload::Presence(body))
}

/// The envelope telling `destination` that users of this node watch `users` (theirs).
///
/// # Errors
/// Only if the body cannot be encoded.
pub(crate) fn presence_subscribe(destination: ServerName, users: Vec<UserId>) -> Result<OutboxEntry, FederationError> {
    entry(
        destination,
        MessageId::now().to_string(),
        &Payload::PresenceSubscribe(PresenceSubscribeBody { user_ids: users }),
    )
}

//! Delivery: a message is stored in both mailboxes in one commit, then pushed from memory to
//! every live session of its receiver; receipts move its status forward and reach its sender.
//!
//! What happens after a commit runs in a task of its own, so it happens even if the client
//! that sent the message is gone by then.

use kith_client_api::{Caller, Completion, OutgoingMessage, SendOutcome, ServiceError, SessionEvent};
use kith_proto::{DeviceId, IncomingMessage, MessageId, MessageStatus, MessageView, ServerFrame, Timestamp};
use tokio::sync::oneshot;

use crate::state::AppState;
use crate::store::{AppendOutcome, NewMessage, Receipt};
use crate::{federation, presence};

/// Accepts a message from `sender`; the completion resolves once it is durably stored.
pub(crate) async fn send(
    state: &AppState,
    caller: &Caller,
    message: OutgoingMessage,
) -> Result<Completion<SendOutcome>, ServiceError> {
    let sender = &caller.user;
    let receiver = message.receiver;
    let remote = !receiver.is_on(&state.server_name);
    if remote {
        // A server nobody pinned is refused now, not after the message sat in an outbox.
        if !state.federation.knows(&receiver.server_name()) {
            return Err(ServiceError::UnknownServer(receiver.server_name()));
        }
    } else if !state.users.exists(&receiver).await? {
        return Err(ServiceError::UnknownUser(receiver));
    }
    let view = MessageView {
        message_id: MessageId::now(),
        sender_id: sender.clone(),
        receiver_id: receiver.clone(),
        message: message.content,
        timestamp: Timestamp::now(),
        status: MessageStatus::Sent,
    };
    // For a receiver on another node, the envelope that carries it is queued in the same
    // transaction as the sender's copy.
    let forward = if remote { federation::outbound::message(&view) } else { None };
    let committed = state
        .store
        .append_message(NewMessage {
            message_id: view.message_id,
            sender: sender.clone(),
            receiver,
            content: view.message.clone(),
            timestamp: view.timestamp,
            client_message_id: message.client_message_id,
            sender_device: Some(caller.device),
            forward,
            received: None,
        })
        .await?;

    let (answer, answered) = oneshot::channel();
    let task_state = state.clone();
    let caller_device = caller.device;
    state.tasks.spawn(async move {
        let outcome = match committed.await {
            Ok(AppendOutcome::Stored { message_id, timestamp, .. }) => {
                let outcome = SendOutcome { message_id, timestamp, duplicate: false };
                if remote {
                    task_state.federation.wake(&view.receiver_id.server_name());
                }
                deliver(&task_state, view, Some(caller_device)).await;
                Ok(outcome)
            }
            Ok(AppendOutcome::Duplicate { message_id, timestamp }) => {
                Ok(SendOutcome { message_id, timestamp, duplicate: true })
            }
            Err(e) => Err(ServiceError::from(e)),
        };
        // The sender may have gone; the message is stored and delivered regardless.
        let _ = answer.send(outcome);
    });
    Ok(Box::pin(async move {
        answered.await.unwrap_or_else(|_| Err(ServiceError::Unavailable("node shutting down".into())))
    }))
}

/// After the commit: remember the message as recent and push it to the receiver's sessions and
/// to the sender's other devices (all of them for a message from another node).
pub(crate) async fn deliver(state: &AppState, view: MessageView, sender_device: Option<DeviceId>) {
    state.cache.record_message(&view).await;
    let receiver = view.receiver_id.clone();
    let sender = view.sender_id.clone();
    let event = SessionEvent::message(IncomingMessage {
        message_id: view.message_id,
        sender_id: view.sender_id,
        receiver_id: view.receiver_id,
        message: view.message,
        timestamp: view.timestamp,
    });
    let mut dropped =
        if sender == receiver { Vec::new() } else { state.sessions.push_to_user(&receiver, &event, None) };
    if sender_device.is_some() {
        dropped.extend(state.sessions.push_to_user(&sender, &event, sender_device));
    }
    presence::after_dropping(state, dropped);
}

/// Records that `reader` has (`Delivered`) or has read (`Read`) a message addressed to them;
/// when that moves its status forward, the sender's sessions get a `receipt`.
pub(crate) async fn receipt(
    state: &AppState,
    caller: &Caller,
    message_id: MessageId,
    status: MessageStatus,
) -> Result<Completion<()>, ServiceError> {
    let at = Timestamp::now();
    let reader = &caller.user;
    let forward = federation::outbound::receipt_forwarder(state.server_name.clone(), reader.clone(), message_id);
    let receipt =
        Receipt { reader: reader.clone(), device: caller.device, message_id, status, at, forward: Some(forward) };
    let committed = state.store.record_receipt(receipt).await?;
    let (answer, answered) = oneshot::channel();
    let task_state = state.clone();
    let reader = reader.clone();
    state.tasks.spawn(async move {
        let result = match committed.await {
            Ok(outcome) => {
                if let Some(status) = outcome.advanced_to {
                    if !outcome.sender.is_on(&task_state.server_name) {
                        task_state.federation.wake(&outcome.sender.server_name());
                    }
                    task_state.cache.record_status(&reader, &outcome.sender, message_id, status).await;
                    let frame = ServerFrame::Receipt { message_id, status, timestamp: at };
                    let frame = SessionEvent::frame(&frame);
                    let dropped = task_state.sessions.push_to_user(&outcome.sender, &frame, None);
                    presence::after_dropping(&task_state, dropped);
                }
                Ok(())
            }
            Err(e) => Err(ServiceError::from(e)),
        };
        let _ = answer.send(result);
    });
    Ok(Box::pin(async move {
        answered.await.unwrap_or_else(|_| Err(ServiceError::Unavailable("node shutting down".into())))
    }))
}

//! Delivery: a message is stored in both mailboxes in one commit (or in the sender's mailbox
//! with the envelope that carries it to another node), then pushed; receipts move its status
//! forward and reach its sender.
//!
//! What happens after a commit runs in the caller's answer, and in a task of its own if the
//! caller drops that answer first ([`crate::detach`]), so it happens even if the client that
//! sent the message is gone by then.

use kith_client_api::{Caller, Completion, OutgoingMessage, SendOutcome, ServiceError};
use kith_proto::{ErrorCode, MessageId, MessageStatus, MessageView, ServerFrame, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detach::finish_even_if_dropped;
use crate::outbox::RefusedMessage;
use crate::push;
use crate::state::AppState;
use crate::store::{AppendOutcome, NewMessage, Receipt, Recipient, Resumed, Source, envelopes};

/// Accepts a message from `caller`; the completion resolves once it is durably stored.
pub(crate) async fn send(
    state: &AppState,
    caller: &Caller,
    message: OutgoingMessage,
) -> Result<Completion<SendOutcome>, ServiceError> {
    let receiver = message.receiver;
    let remote = !receiver.is_on(&state.server_name);
    if remote {
        // A server nobody pinned is refused now, not after the message sat in an outbox.
        if !state.peers.knows(&receiver.server_name()) {
            return Err(ServiceError::UnknownServer(receiver.server_name()));
        }
    } else if !state.users.exists(&receiver).await? {
        return Err(ServiceError::UnknownUser(receiver));
    }
    let view = MessageView {
        message_id: MessageId::now(),
        sender_id: caller.user.clone(),
        receiver_id: receiver,
        message: message.content,
        timestamp: Timestamp::now(),
        status: MessageStatus::Sent,
    };
    // For a receiver on another node, the envelope that carries it is queued in the same
    // transaction as the sender's copy.
    let to = if remote {
        Recipient::Peer(envelopes::message(&view).map_err(|e| ServiceError::Internal(e.to_string()))?)
    } else {
        Recipient::User
    };
    let committed = state
        .store
        .append_message(NewMessage {
            message_id: view.message_id,
            sender: view.sender_id.clone(),
            receiver: view.receiver_id.clone(),
            content: view.message.clone(),
            timestamp: view.timestamp,
            from: Source::Device { device: caller.device, client_message_id: message.client_message_id },
            to,
        })
        .await?;

    let task_state = state.clone();
    let from_device = caller.device;
    Ok(Box::pin(finish_even_if_dropped(&state.tasks, async move {
        match committed.await {
            Ok(AppendOutcome::Stored { message_id, timestamp }) => {
                let committed_at = std::time::Instant::now();
                task_state.telemetry.messages_in.inc();
                if remote {
                    task_state.outbox.committed(&view.receiver_id.server_name());
                }
                push::message(&task_state, &view, Some(from_device)).await;
                task_state.telemetry.commit_to_push.observe(committed_at.elapsed().as_secs_f64());
                Ok(SendOutcome { message_id, timestamp, duplicate: false })
            }
            Ok(AppendOutcome::Duplicate { message_id, timestamp }) => {
                Ok(SendOutcome { message_id, timestamp, duplicate: true })
            }
            Err(e) => Err(ServiceError::from(e)),
        }
    })))
}

/// Records that `caller` has (`Delivered`) or has read (`Read`) a message addressed to them;
/// when that moves its status forward, the sender's sessions get a `receipt` (here, or through
/// an envelope queued in the same commit for a sender on another node).
pub(crate) async fn receipt(
    state: &AppState,
    caller: &Caller,
    message_id: MessageId,
    status: MessageStatus,
) -> Result<Completion<()>, ServiceError> {
    let at = Timestamp::now();
    let reader = caller.user.clone();
    let receipt = Receipt { reader: reader.clone(), device: caller.device, message_id, status, at };
    let committed = state.store.record_receipt(receipt).await?;
    let task_state = state.clone();
    Ok(Box::pin(finish_even_if_dropped(&state.tasks, async move {
        let outcome = committed.await.map_err(ServiceError::from)?;
        task_state.telemetry.receipts.inc();
        if let Some(status) = outcome.advanced_to {
            if !outcome.sender.is_on(&task_state.server_name) {
                task_state.outbox.committed(&outcome.sender.server_name());
            }
            push::receipt(&task_state, &outcome.sender, &reader, message_id, status, at).await;
        }
        Ok::<(), ServiceError>(())
    })))
}

/// Tells senders whose messages another node refused for good (they were stored as `sent` and
/// will get no further), until shutdown.
pub(crate) async fn report_refusals(
    state: AppState,
    mut refusals: mpsc::Receiver<RefusedMessage>,
    shutdown: CancellationToken,
) {
    loop {
        let refused = tokio::select! {
            () = shutdown.cancelled() => return,
            refused = refusals.recv() => match refused {
                Some(refused) => refused,
                None => return,
            },
        };
        let frame = ServerFrame::Error {
            code: ErrorCode::NotFound,
            message: format!(
                "message {} to {} was refused by {}: {}",
                refused.message_id, refused.receiver, refused.destination, refused.reason
            ),
            client_message_id: None,
        };
        push::to_user(&state, &refused.sender, &frame, None).await;
    }
}

/// How often hand-offs between shards are looked for, and how old one must be to count as
/// left by a crash (younger ones are still being completed by their sender).
const HANDOFF_SWEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Completes, until shutdown, what an instance that died between the two commits of a
/// message or receipt between shards left half done, and pushes what that delivered.
pub(crate) async fn resume_handoffs(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HANDOFF_SWEEP);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let resumed = match state.store.resume_handoffs(HANDOFF_SWEEP).await {
            Ok(resumed) => resumed,
            Err(e) => {
                tracing::warn!(error = %e, "cannot resume hand-offs between shards");
                continue;
            }
        };
        for done in resumed {
            match done {
                Resumed::Message(view) => push::message(&state, &view, None).await,
                Resumed::Status { sender, receiver, message_id, status, at } => {
                    push::receipt(&state, &sender, &receiver, message_id, status, at).await;
                }
            }
        }
    }
}

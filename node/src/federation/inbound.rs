//! Envelopes from other nodes: verified, applied in order through the store (deduplicated by
//! `(origin, id)`), and acked only after their effects are committed. An envelope whose commit
//! failed gets no ack, so its origin sends it again.

use std::sync::Arc;

use kith_client_api::SessionEvent;
use kith_federation::protocol::{MAX_ENVELOPES_PER_REQUEST, REFUSED_UNKNOWN_USER};
use kith_federation::{
    Ack, Envelope, Inbound, InboundRequest, Outcome, Payload, PeerId, Rejection, Response, VerifiedEnvelope,
};
use kith_proto::{MessageStatus, MessageView, PresenceView, ServerFrame, ServerName, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Federation, outbound};
use crate::state::AppState;
use crate::store::{AppendOutcome, Committed, InboxKey, NewMessage, RemoteReceipt};
use crate::{delivery, keys, presence};

/// Serves inbound requests until shutdown, each in a task of its own.
pub(super) async fn serve(
    state: AppState,
    federation: Arc<Federation>,
    mut inbound: mpsc::Receiver<Inbound>,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            () = shutdown.cancelled() => return,
            request = inbound.recv() => match request {
                Some(request) => request,
                None => return,
            },
        };
        state.tasks.spawn(handle(state.clone(), federation.clone(), request));
    }
}

async fn handle(state: AppState, federation: Arc<Federation>, inbound: Inbound) {
    let Inbound { peer, from, request, reply } = inbound;
    let response = match request {
        InboundRequest::Deliver(envelopes) if envelopes.len() > MAX_ENVELOPES_PER_REQUEST => Response::Refused(
            format!("at most {MAX_ENVELOPES_PER_REQUEST} envelopes per request (got {})", envelopes.len()),
        ),
        InboundRequest::Deliver(envelopes) => {
            Response::Acks(deliver(&state, &federation, peer, &from, envelopes).await)
        }
        InboundRequest::Query(envelope) => query(&state, &federation, peer, envelope).await,
    };
    let _ = reply.send(response);
}

/// Verifies a batch off the async runtime (ed25519 checks are CPU work). `None` if the check
/// itself could not run: then nothing is acked and the origin sends the batch again later.
async fn verify(
    federation: &Arc<Federation>,
    peer: PeerId,
    envelopes: Vec<Envelope>,
) -> Option<Vec<(String, Result<VerifiedEnvelope, Rejection>)>> {
    let federation = federation.clone();
    let now = Timestamp::now();
    tokio::task::spawn_blocking(move || {
        envelopes
            .into_iter()
            .map(|e| (e.id.clone(), federation.verifier.verify(&federation.directory, &peer, e, now)))
            .collect()
    })
    .await
    .inspect_err(|e| warn!(error = %e, "envelope verification did not run"))
    .ok()
}

/// An envelope's effect, between enqueueing and commit.
enum Step {
    Done(String, Outcome),
    Message(String, Committed<AppendOutcome>, MessageView),
    Receipt(String, Committed<Option<MessageStatus>>, RemoteReceipt),
    /// The store refused to take it (it is closing): no ack, the origin resends.
    Unacked,
}

async fn deliver(
    state: &AppState,
    federation: &Arc<Federation>,
    peer: PeerId,
    from: &ServerName,
    envelopes: Vec<Envelope>,
) -> Vec<Ack> {
    let Some(verified) = verify(federation, peer, envelopes).await else {
        return Vec::new();
    };
    // Enqueue every effect in order first, so the whole batch shares group commits.
    let mut steps = Vec::with_capacity(verified.len());
    for (id, envelope) in verified {
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(rejection) if !rejection.is_final() => {
                // Perhaps a clock that is off for a while: no ack, the origin tries again later.
                debug!(%from, %id, %rejection, "envelope not accepted yet");
                steps.push(Step::Unacked);
                continue;
            }
            Err(rejection) => {
                debug!(%from, %id, %rejection, "envelope refused");
                steps.push(Step::Done(id, Outcome::Rejected(rejection.to_string())));
                continue;
            }
        };
        steps.push(enqueue(state, federation, envelope).await);
    }
    let mut acks = Vec::with_capacity(steps.len());
    for step in steps {
        match step {
            Step::Done(id, outcome) => acks.push(Ack { id, outcome }),
            Step::Message(id, committed, view) => match committed.await {
                Ok(AppendOutcome::Stored { .. }) => {
                    delivery::deliver(state, view, None).await;
                    acks.push(Ack { id, outcome: Outcome::Accepted });
                }
                Ok(AppendOutcome::Duplicate { .. }) => acks.push(Ack { id, outcome: Outcome::Accepted }),
                Err(e) => warn!(error = %e, "incoming message not stored; its origin will resend it"),
            },
            Step::Receipt(id, committed, receipt) => match committed.await {
                Ok(advanced) => {
                    if let Some(status) = advanced {
                        let frame = ServerFrame::Receipt {
                            message_id: receipt.message_id,
                            status,
                            timestamp: Timestamp::now(),
                        };
                        state.cache.record_status(&receipt.sender, &receipt.receiver, receipt.message_id, status).await;
                        let dropped = state.sessions.push_to_user(&receipt.sender, &SessionEvent::frame(&frame), None);
                        presence::after_dropping(state, dropped);
                    }
                    acks.push(Ack { id, outcome: Outcome::Accepted });
                }
                Err(e) => warn!(error = %e, "incoming receipt not stored; its origin will resend it"),
            },
            Step::Unacked => {}
        }
    }
    acks
}

async fn enqueue(state: &AppState, federation: &Arc<Federation>, envelope: VerifiedEnvelope) -> Step {
    let id = envelope.id().to_owned();
    let received = InboxKey { origin: envelope.origin().clone(), envelope_id: id.clone() };
    match envelope.into_payload() {
        Payload::Message(body) => {
            match state.users.exists(&body.receiver_id).await {
                Ok(true) => {}
                Ok(false) => {
                    return Step::Done(id, Outcome::Rejected(format!("user {} does not exist", body.receiver_id)));
                }
                Err(_) => return Step::Unacked,
            }
            let view = MessageView {
                message_id: body.message_id,
                sender_id: body.sender_id,
                receiver_id: body.receiver_id,
                message: body.message,
                timestamp: body.timestamp,
                status: MessageStatus::Sent,
            };
            let message = NewMessage {
                message_id: view.message_id,
                sender: view.sender_id.clone(),
                receiver: view.receiver_id.clone(),
                content: view.message.clone(),
                timestamp: view.timestamp,
                client_message_id: None,
                sender_device: None,
                forward: None,
                received: Some(received),
            };
            match state.store.append_message(message).await {
                Ok(committed) => Step::Message(id, committed, view),
                Err(_) => Step::Unacked,
            }
        }
        Payload::Receipt(body) => {
            let receipt = RemoteReceipt {
                sender: body.sender_id,
                receiver: body.receiver_id,
                message_id: body.message_id,
                status: body.status,
                received,
            };
            match state.store.apply_remote_receipt(receipt.clone()).await {
                Ok(committed) => Step::Receipt(id, committed, receipt),
                Err(_) => Step::Unacked,
            }
        }
        Payload::Presence(body) => {
            let view = PresenceView { user_id: body.user_id, status: body.status, last_seen: body.last_seen };
            let known = state.cache.presence(&view.user_id).await;
            if federation.newer_presence(&view.user_id, body.at) && known.as_ref() != Some(&view) {
                state.cache.set_presence(view.clone()).await;
                let user = view.user_id.clone();
                let dropped =
                    state.sessions.push_to_watchers(&user, &SessionEvent::frame(&ServerFrame::Presence(view)));
                presence::after_dropping(state, dropped);
            }
            Step::Done(id, Outcome::Accepted)
        }
        Payload::PresenceSubscribe(body) => {
            let origin = received.origin;
            // Under the presence lock, as every local change is: a change racing this
            // subscription is then either in the state read here or sent after it with a later
            // timestamp, never lost behind a stale answer.
            let _serialised = state.presence_lock.lock().await;
            // Only users who exist are watched; tell the watcher their state now.
            let mut watched = Vec::new();
            let mut entries = Vec::new();
            for user in body.user_ids {
                if let Ok(view) = presence::presence_of(state, &user).await {
                    entries.extend(outbound::presence(origin.clone(), &view, Timestamp::now()));
                    watched.push(user);
                }
            }
            federation.add_remote_watcher(&origin, &watched);
            super::queue(state, federation, &origin, entries).await;
            Step::Done(id, Outcome::Accepted)
        }
        Payload::KeysClaim(_) | Payload::KeysBundles(_) => {
            Step::Done(id, Outcome::Rejected("key claims are queries, not deliveries".into()))
        }
    }
}

/// Answers a `keys.claim` query with this node's bundles of the user, rate limited per
/// requester.
async fn query(state: &AppState, federation: &Arc<Federation>, peer: PeerId, envelope: Envelope) -> Response {
    let Some((_, verified)) = verify(federation, peer, vec![envelope]).await.and_then(|mut v| v.pop()) else {
        return Response::Refused("the query could not be checked; try again".into());
    };
    let envelope = match verified {
        Ok(envelope) => envelope,
        Err(rejection) => return Response::Refused(rejection.to_string()),
    };
    let origin = envelope.origin().clone();
    let Payload::KeysClaim(claim) = envelope.into_payload() else {
        return Response::Refused("only keys.claim is a query".into());
    };
    if claim.one_time && federation.claim_limits.check_key_claim(&claim.requester_id).is_err() {
        return Response::Refused(format!("{} is claiming keys too fast", claim.requester_id));
    }
    let bundles = if claim.one_time {
        keys::claim_local(state, &claim.user_id).await
    } else {
        keys::devices_local(state, &claim.user_id).await
    };
    let bundles = match bundles {
        Ok(bundles) => bundles,
        Err(kith_client_api::ServiceError::UnknownUser(user)) => {
            return Response::Refused(format!("{REFUSED_UNKNOWN_USER}: {user}"));
        }
        Err(e) => return Response::Refused(e.to_string()),
    };
    let answer = Envelope::seal(
        &federation.key,
        &kith_proto::MessageId::now().to_string(),
        federation.local_name(),
        &origin,
        &Payload::KeysBundles(bundles),
        Timestamp::now(),
    );
    match answer {
        Ok(answer) => Response::Answer(answer),
        Err(e) => Response::Refused(e.to_string()),
    }
}

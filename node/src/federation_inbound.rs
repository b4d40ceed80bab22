//! The federation entry point: envelopes from other nodes, as the client API is the entry
//! point for clients. Each is verified, applied in order through the store (deduplicated by
//! `(origin, id)`), and acked only after its effects are committed. An envelope whose commit
//! failed gets no ack, so its origin sends it again.

use kith_client_api::ServiceError;
use kith_federation::protocol::MAX_ENVELOPES_PER_REQUEST;
use kith_federation::{
    Ack, Envelope, Inbound, InboundRequest, Outcome, Payload, PeerId, Refusal, RefusalReason, Rejection, Response,
    SealedBatch, VerifiedEnvelope,
};
use kith_proto::{MessageStatus, MessageView, ServerName};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::state::AppState;
use crate::store::{AppendOutcome, Committed, InboxKey, NewMessage, Recipient, RemoteReceipt, Source};
use crate::{keys, presence, push};

/// Serves inbound requests until shutdown, each in a task of its own.
pub(crate) async fn serve(state: AppState, mut inbound: mpsc::Receiver<Inbound>, shutdown: CancellationToken) {
    loop {
        let request = tokio::select! {
            () = shutdown.cancelled() => return,
            request = inbound.recv() => match request {
                Some(request) => request,
                None => return,
            },
        };
        state.tasks.spawn(handle(state.clone(), request));
    }
}

async fn handle(state: AppState, inbound: Inbound) {
    let Inbound { peer, from, request, reply } = inbound;
    let response = match request {
        InboundRequest::Deliver(envelopes) => delivery(&state, peer, &from, Delivery::Each(envelopes)).await,
        InboundRequest::DeliverSealed(batch) => delivery(&state, peer, &from, Delivery::Sealed(batch)).await,
        InboundRequest::Query(envelope) => query(&state, peer, envelope).await,
    };
    let _ = reply.send(response);
}

/// Envelopes to apply, as they came: each signed alone, or sealed together.
enum Delivery {
    Each(Vec<Envelope>),
    Sealed(SealedBatch),
}

impl Delivery {
    fn len(&self) -> usize {
        match self {
            Self::Each(envelopes) => envelopes.len(),
            Self::Sealed(batch) => batch.envelopes.len(),
        }
    }
}

/// Applies a delivery of at most [`MAX_ENVELOPES_PER_REQUEST`] envelopes; refuses a larger one.
async fn delivery(state: &AppState, peer: PeerId, from: &ServerName, envelopes: Delivery) -> Response {
    if envelopes.len() > MAX_ENVELOPES_PER_REQUEST {
        return Response::Refused(Refusal::new(
            RefusalReason::Invalid,
            format!("at most {MAX_ENVELOPES_PER_REQUEST} envelopes per request (got {})", envelopes.len()),
        ));
    }
    Response::Acks(deliver(state, peer, from, envelopes).await)
}

/// Verifies a delivery off the async runtime (ed25519 checks are CPU work). `None` if the
/// check itself could not run: then nothing is acked and the origin sends the batch again later.
async fn verify(
    state: &AppState,
    peer: PeerId,
    envelopes: Delivery,
) -> Option<Vec<(String, Result<VerifiedEnvelope, Rejection>)>> {
    let peers = state.peers.clone();
    let now = kith_proto::Timestamp::now();
    tokio::task::spawn_blocking(move || match envelopes {
        Delivery::Each(envelopes) => peers.verifier.verify_all(&peers.directory, &peer, envelopes, now),
        Delivery::Sealed(batch) => peers.verifier.verify_sealed(&peers.directory, &peer, batch, now),
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

async fn deliver(state: &AppState, peer: PeerId, from: &ServerName, envelopes: Delivery) -> Vec<Ack> {
    let Some(verified) = verify(state, peer, envelopes).await else {
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
        steps.push(enqueue(state, envelope).await);
    }
    let mut acks = Vec::with_capacity(steps.len());
    for step in steps {
        match step {
            Step::Done(id, outcome) => acks.push(Ack { id, outcome }),
            Step::Message(id, committed, view) => match committed.await {
                Ok(AppendOutcome::Stored { .. }) => {
                    state.telemetry.messages_in.inc();
                    push::message(state, &view, None).await;
                    acks.push(Ack { id, outcome: Outcome::Accepted });
                }
                Ok(AppendOutcome::Duplicate { .. }) => acks.push(Ack { id, outcome: Outcome::Accepted }),
                Err(e) => warn!(error = %e, "incoming message not stored; its origin will resend it"),
            },
            Step::Receipt(id, committed, receipt) => match committed.await {
                Ok(advanced) => {
                    if let Some(status) = advanced {
                        push::receipt(
                            state,
                            &receipt.sender,
                            &receipt.receiver,
                            receipt.message_id,
                            status,
                            receipt.at,
                        )
                        .await;
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

async fn enqueue(state: &AppState, envelope: VerifiedEnvelope) -> Step {
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
                from: Source::Peer(received),
                to: Recipient::User,
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
                at: body.at,
                received,
            };
            match state.store.apply_remote_receipt(receipt.clone()).await {
                Ok(committed) => Step::Receipt(id, committed, receipt),
                Err(_) => Step::Unacked,
            }
        }
        Payload::Presence(body) => {
            presence::heard(state, body).await;
            Step::Done(id, Outcome::Accepted)
        }
        Payload::PresenceSubscribe(body) => {
            presence::watched_from(state, &received.origin, body.user_ids).await;
            Step::Done(id, Outcome::Accepted)
        }
        Payload::KeysClaim(_) | Payload::KeysBundles(_) => {
            Step::Done(id, Outcome::Rejected("key claims are queries, not deliveries".into()))
        }
    }
}

/// Answers a `keys.claim` query with this node's bundles of the user, rate limited per
/// requester.
async fn query(state: &AppState, peer: PeerId, envelope: Envelope) -> Response {
    let refused = |reason, detail: String| Response::Refused(Refusal::new(reason, detail));
    let Some((_, verified)) = verify(state, peer, Delivery::Each(vec![envelope])).await.and_then(|mut v| v.pop())
    else {
        return refused(RefusalReason::Unavailable, "the query could not be checked; try again".into());
    };
    let envelope = match verified {
        Ok(envelope) => envelope,
        Err(rejection) => return refused(RefusalReason::Invalid, rejection.to_string()),
    };
    let origin = envelope.origin().clone();
    let Payload::KeysClaim(claim) = envelope.into_payload() else {
        return refused(RefusalReason::Invalid, "only keys.claim is a query".into());
    };
    if claim.one_time && state.peers.claim_limits.check_key_claim(&claim.requester_id).is_err() {
        return refused(RefusalReason::RateLimited, format!("{} is claiming keys too fast", claim.requester_id));
    }
    let bundles = if claim.one_time {
        keys::claim_local(state, &claim.user_id).await
    } else {
        keys::devices_local(state, &claim.user_id).await
    };
    let bundles = match bundles {
        Ok(bundles) => bundles,
        Err(e @ ServiceError::UnknownUser(_)) => return refused(RefusalReason::UnknownUser, e.to_string()),
        Err(e) => return refused(RefusalReason::Unavailable, e.to_string()),
    };
    match state.peers.seal(&origin, &Payload::KeysBundles(bundles)) {
        Ok(answer) => Response::Answer(answer),
        Err(e) => refused(RefusalReason::Unavailable, e.to_string()),
    }
}

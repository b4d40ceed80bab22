//! Federation: users of different nodes chat as users of one node do, and nothing is lost or
//! doubled when a node crashes, restarts or is unreachable for a while.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail};
use kith_federation::{
    Directory, Envelope, MessageBody, NetworkConfig, NodeKey, Outcome, Payload, PinnedPeer, Request, SealedBatch,
};
use kith_proto::limits::MAX_MESSAGE_BYTES;
use kith_proto::{ClientFrame, MessageId, MessageStatus, PresenceStatus, ServerFrame, ServerName, Timestamp, UserId};

use crate::harness::{Backend, PASSWORD, PATIENCE, TestNode, eventually, frame_where, message, send, unique_loopback};

/// Starts SQLite nodes with these names, each pinning all the others.
pub(crate) async fn federation(names: &[&str], extra_args: &[&str]) -> Result<Vec<TestNode>> {
    let backends = names.iter().map(|_| Backend::Sqlite).collect();
    federation_on(names, backends, extra_args).await
}

/// Starts nodes with these names on these stores, each pinning all the others.
async fn federation_on(names: &[&str], backends: Vec<Backend>, extra_args: &[&str]) -> Result<Vec<TestNode>> {
    let mut nodes = names
        .iter()
        .zip(backends)
        .map(|(name, backend)| TestNode::prepare(name, backend, extra_args))
        .collect::<Result<Vec<_>>>()?;
    let bindings: Vec<String> = nodes.iter().map(TestNode::binding).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (j, binding) in bindings.iter().enumerate() {
            if i != j {
                node.pin_binding(binding.clone());
            }
        }
    }
    for node in &mut nodes {
        node.launch().await?;
    }
    Ok(nodes)
}

fn sent_id(frame: ServerFrame) -> Option<MessageId> {
    match frame {
        ServerFrame::Sent { message_id, .. } => Some(message_id),
        _ => None,
    }
}

fn receipt(frame: ServerFrame) -> Option<(MessageId, MessageStatus)> {
    match frame {
        ServerFrame::Receipt { message_id, status, .. } => Some((message_id, status)),
        _ => None,
    }
}

fn presence_of(user: &str) -> impl FnMut(ServerFrame) -> Option<PresenceStatus> + '_ {
    move |frame| match frame {
        // `unknown` until the user\'s node says whom it shows them to.
        ServerFrame::Presence(p) if p.user_id.as_str() == user && p.status != PresenceStatus::Unknown => Some(p.status),
        _ => None,
    }
}

/// Envelopes waiting in a node's outbox (read from its SQLite file while it runs).
async fn outbox_depth(node: &TestNode) -> Result<i64> {
    let pool = sqlx::SqlitePool::connect(&node.database_url()).await?;
    let depth = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&pool).await?;
    pool.close().await;
    Ok(depth)
}

/// Waits until a node's outbox is empty.
async fn outbox_drains(node: &TestNode) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if outbox_depth(node).await? == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("outbox of {} still holds {} envelopes", node.server_name, outbox_depth(node).await?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn users_of_two_nodes_chat_both_ways_with_receipts_and_presence() -> Result<()> {
    chat_both_ways(&federation(&["alpha", "beta"], &[]).await?).await
}

#[tokio::test]
async fn users_of_two_nodes_on_postgresql_chat_both_ways_with_receipts_and_presence() -> Result<()> {
    let Some(alpha) = Backend::postgres().await else { return Ok(()) };
    let Some(beta) = Backend::postgres().await else { return Ok(()) };
    let nodes = federation_on(&["alpha", "beta"], vec![alpha, beta], &[]).await?;
    chat_both_ways(&nodes).await?;
    // The outbox of a PostgreSQL node drains too (what the pumps read is the store's).
    let pool = sqlx::PgPool::connect(&nodes[0].database_url()).await?;
    eventually("alpha's outbox is empty", async || {
        let depth: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(&pool).await?;
        Ok(if depth == 0 { Ok(()) } else { Err(depth) })
    })
    .await?;
    pool.close().await;
    Ok(())
}

/// Alice on the first node and bob on the second: presence, a message each way, receipts.
async fn chat_both_ways(nodes: &[TestNode]) -> Result<()> {
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    let alice = alpha.user("alice").await?;
    let bob = beta.user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;

    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob@beta".into()] }).await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Offline);
    let mut bob_ws = bob.connect().await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Online);

    alice_ws.send(&send("a-1", "bob@beta", "hello from alpha")).await?;
    let id = frame_where(&mut alice_ws, sent_id).await?;
    let got = frame_where(&mut bob_ws, message).await?;
    assert_eq!((got.message_id, got.sender_id.as_str(), got.message.as_str()), (id, "alice@alpha", "hello from alpha"));

    bob_ws.send(&ClientFrame::Ack { message_id: id }).await?;
    assert_eq!(frame_where(&mut alice_ws, receipt).await?, (id, MessageStatus::Delivered));
    bob_ws.send(&ClientFrame::Read { message_id: id }).await?;
    assert_eq!(frame_where(&mut alice_ws, receipt).await?, (id, MessageStatus::Read));
    assert_eq!(alice.history("bob@beta", None, None).await?.messages[0].status, MessageStatus::Read);
    assert_eq!(bob.history("alice@alpha", None, None).await?.messages[0].status, MessageStatus::Read);

    bob_ws.send(&send("b-1", "alice@alpha", "hello from beta")).await?;
    let reply = frame_where(&mut alice_ws, message).await?;
    assert_eq!((reply.sender_id.as_str(), reply.message.as_str()), ("bob@beta", "hello from beta"));
    alice_ws.send(&ClientFrame::Ack { message_id: reply.message_id }).await?;

    bob_ws.close().await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Offline);
    assert_eq!(alice.presence("bob@beta").await?.status, PresenceStatus::Offline);
    Ok(())
}

#[tokio::test]
async fn presence_subscriptions_are_renewed_when_the_watched_node_restarts() -> Result<()> {
    let mut nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    nodes[1].user("bob").await?.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob@beta".into()] }).await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Offline);

    // Beta crashes and comes back without the subscriptions it kept in memory; alpha renews
    // them when it reconnects, so bob coming online still reaches alice.
    nodes[1].kill().await?;
    nodes[1].restart().await?;
    let bob = nodes[1].client().login("bob", PASSWORD).await?;
    let _bob_ws = bob.connect().await?;
    // Beta may first answer the renewed subscription (bob offline since its restart).
    frame_where(&mut alice_ws, |f| (presence_of("bob@beta")(f) == Some(PresenceStatus::Online)).then_some(())).await?;
    Ok(())
}

#[tokio::test]
async fn a_server_nobody_pinned_is_refused_at_send_time() -> Result<()> {
    let nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    let refused = alice.send_message("carol@gamma", "anyone there?", None).await;
    assert!(
        matches!(
            refused,
            Err(kith_client::ClientError::Api { status: 404, code: kith_proto::ErrorCode::UnknownServer, .. })
        ),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test]
async fn messages_queued_while_the_peer_is_down_arrive_in_order_exactly_once() -> Result<()> {
    let mut nodes = federation(&["alpha", "beta"], &["--message-rate", "0"]).await?;
    let alice = nodes[0].user("alice").await?;
    nodes[1].user("bob").await?.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    nodes[1].kill().await?;

    let mut alice_ws = alice.connect().await?;
    for i in 0..200 {
        alice_ws.send(&send(&format!("c-{i}"), "bob@beta", &format!("queued {i:03}"))).await?;
    }
    for _ in 0..200 {
        frame_where(&mut alice_ws, sent_id).await?;
    }
    assert_eq!(outbox_depth(&nodes[0]).await?, 200, "all 200 wait in alpha's outbox");

    nodes[1].restart().await?;
    let bob = nodes[1].client().login("bob", PASSWORD).await?;
    let mut bob_ws = bob.connect().await?;
    let mut seen = HashSet::new();
    for i in 0..200 {
        let got = frame_where(&mut bob_ws, message).await?;
        assert_eq!(got.message, format!("queued {i:03}"), "in order");
        assert!(seen.insert(got.message_id), "exactly once");
        bob_ws.send(&ClientFrame::Ack { message_id: got.message_id }).await?;
    }
    outbox_drains(&nodes[0]).await?;
    // Nothing comes twice: the next message bob sees is one sent now.
    let (_, marker) = alice.send_message("bob@beta", "after the backlog", None).await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message_id, marker.message_id);
    assert_eq!(bob.history("alice@alpha", None, Some(100)).await?.messages.len(), 100);
    Ok(())
}

/// Several of alpha's users send to bob at once, as fast as alpha takes them, so the pump's
/// requests carry their conversations interleaved while bob's acks come back as receipts and
/// removals of acked envelopes share commits with new sends: each conversation arrives in
/// order, each message once, and every message ends `delivered` at its sender.
#[tokio::test]
async fn conversations_sent_at_once_arrive_each_in_order_and_once() -> Result<()> {
    const SENDERS: usize = 4;
    const EACH: usize = 150;
    let nodes = federation(&["alpha", "beta"], &["--message-rate", "0"]).await?;
    let bob = nodes[1].user("bob").await?;
    let mut bob_ws = bob.connect().await?;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let user = nodes[0].user(&format!("sender{s}")).await?;
        let ws = user.connect().await?;
        senders.push((user, ws));
    }
    let sending = futures_util::future::try_join_all(senders.iter_mut().enumerate().map(|(s, (_, ws))| async move {
        for i in 0..EACH {
            ws.send(&send(&format!("c-{s}-{i}"), "bob@beta", &format!("{s} {i:03}"))).await?;
        }
        for _ in 0..EACH {
            frame_where(ws, sent_id).await?;
        }
        anyhow::Ok(())
    }));
    let receiving = async {
        let mut next = [0usize; SENDERS];
        let mut seen = HashSet::new();
        while next.iter().sum::<usize>() < SENDERS * EACH {
            let got = frame_where(&mut bob_ws, message).await?;
            let Some((s, i)) = got.message.split_once(' ') else { bail!("unexpected message {:?}", got.message) };
            let (s, i): (usize, usize) = (s.parse()?, i.parse()?);
            assert!(seen.insert(got.message_id), "{} came twice", got.message);
            assert_eq!(i, next[s], "sender{s}'s conversation out of order");
            next[s] += 1;
            bob_ws.send(&ClientFrame::Ack { message_id: got.message_id }).await?;
        }
        anyhow::Ok(())
    };
    tokio::try_join!(sending, receiving)?;
    outbox_drains(&nodes[0]).await?;
    for (user, _) in &senders {
        eventually("every message delivered at its sender", async || {
            let history = user.history("bob@beta", None, Some(100)).await?;
            let behind = history.messages.iter().filter(|m| m.status == MessageStatus::Sent).count();
            Ok(if behind == 0 { Ok(()) } else { Err(behind) })
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_message_acked_just_before_the_origin_crashed_still_arrives() -> Result<()> {
    let mut nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    let bob = nodes[1].user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    // Beta is down at first, so the message can only be in alpha's outbox when alpha dies.
    nodes[1].kill().await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&send("c-1", "bob@beta", "survive this")).await?;
    let id = frame_where(&mut alice_ws, sent_id).await?;
    nodes[0].kill().await?;

    nodes[1].restart().await?;
    nodes[0].restart().await?;
    let mut bob_ws = nodes[1].client().login("bob", PASSWORD).await?.connect().await?;
    let got = frame_where(&mut bob_ws, message).await?;
    assert_eq!((got.message_id, got.message.as_str()), (id, "survive this"));
    drop(bob);
    Ok(())
}

#[tokio::test]
async fn every_pair_of_three_nodes_can_talk() -> Result<()> {
    let nodes = federation(&["alpha", "beta", "gamma"], &[]).await?;
    let mut users = Vec::new();
    for node in &nodes {
        let user = node.user("user").await?;
        let ws = user.connect().await?;
        users.push((user, ws));
    }
    for from in 0..3 {
        for to in 0..3 {
            if from == to {
                continue;
            }
            let receiver = format!("user@{}", nodes[to].server_name);
            let text = format!("{} to {}", nodes[from].server_name, nodes[to].server_name);
            users[from].0.send_message(&receiver, &text, None).await?;
            let got = frame_where(&mut users[to].1, message).await?;
            assert_eq!(got.message, text);
            assert_eq!(got.sender_id.as_str(), format!("user@{}", nodes[from].server_name));
        }
    }
    Ok(())
}

/// A node the test plays itself: an in-process network with its own key, pinned by `beta`.
struct FakePeer {
    name: ServerName,
    key: NodeKey,
    network: kith_federation::NetworkHandle,
}

impl FakePeer {
    fn prepare(name: &str) -> (ServerName, NodeKey, String) {
        let key = NodeKey::ephemeral();
        let address = format!("/ip4/{}/tcp/4001", unique_loopback());
        (ServerName::parse(name).unwrap_or_else(|e| panic!("{e}")), key, address)
    }

    async fn start(name: ServerName, key: NodeKey, address: &str, beta: &TestNode) -> Result<Self> {
        let pinned: PinnedPeer = beta.binding().parse()?;
        let config = NetworkConfig::new(key.clone(), name.clone(), vec![address.parse()?], Directory::new([pinned])?);
        let (network, _inbound, _task) = kith_federation::start(config).await?;
        Ok(Self { name, key, network })
    }

    fn envelope(&self, id: &str, origin: &str, payload: &Payload, sent_at: Timestamp) -> Result<Envelope> {
        Ok(Envelope::seal(&self.key, id, &ServerName::parse(origin)?, &ServerName::parse("beta")?, payload, sent_at)?)
    }

    async fn deliver(&self, envelopes: Vec<Envelope>) -> Result<Vec<Outcome>> {
        let beta = ServerName::parse("beta")?;
        Ok(self.network.deliver(&beta, envelopes).await?.into_iter().map(|ack| ack.outcome).collect())
    }

    /// An envelope for a sealed batch (no signature of its own).
    fn unsigned(&self, id: &str, payload: &Payload) -> Result<Envelope> {
        let (origin, beta) = (self.name.clone(), ServerName::parse("beta")?);
        Ok(Envelope::unsigned(id, &origin, &beta, payload.kind(), payload.encode()?, Timestamp::now()))
    }

    async fn deliver_sealed(&self, batch: SealedBatch) -> Result<Vec<Outcome>> {
        let beta = ServerName::parse("beta")?;
        Ok(self.network.deliver_sealed(&beta, batch).await?.into_iter().map(|ack| ack.outcome).collect())
    }
}

#[tokio::test]
async fn a_sealed_batch_is_stored_but_for_the_envelope_changed_after_sealing_and_a_forged_batch_is_refused()
-> Result<()> {
    let (alpha_name, alpha_key, alpha_address) = FakePeer::prepare("alpha");
    let mut beta = TestNode::prepare("beta", Backend::Sqlite, &[])?;
    beta.pin_binding(format!("alpha={alpha_address}/p2p/{}", alpha_key.peer_id()));
    beta.launch().await?;
    let bob = beta.user("bob").await?;
    let alpha = FakePeer::start(alpha_name.clone(), alpha_key, &alpha_address, &beta).await?;

    let envelopes = ["one", "two", "three"]
        .iter()
        .enumerate()
        .map(|(n, text)| alpha.unsigned(&format!("s-{n}"), &to_bob("alice@alpha", text)?))
        .collect::<Result<Vec<_>>>()?;
    let mut batch = SealedBatch::seal(&alpha.key, &alpha_name, envelopes)?;
    let changed = to_bob("alice@alpha", "changed on the way")?;
    batch.envelopes[1].body = changed.encode()?;
    let outcomes = alpha.deliver_sealed(batch).await?;
    assert!(
        matches!(&outcomes[..], [Outcome::Accepted, Outcome::Rejected(r), Outcome::Accepted] if r.contains("signature")),
        "{outcomes:?}"
    );
    // Sealed by another key in alpha's name: nothing of it is stored.
    let stranger = NodeKey::ephemeral();
    let forged =
        SealedBatch::seal(&stranger, &alpha_name, vec![alpha.unsigned("s-9", &to_bob("alice@alpha", "forged")?)?])?;
    assert!(matches!(&alpha.deliver_sealed(forged).await?[..], [Outcome::Rejected(_)]));
    let history = bob.history("alice@alpha", None, None).await?;
    assert_eq!(history.messages.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(), ["one", "three"]);
    Ok(())
}

fn to_bob(from: &str, text: &str) -> Result<Payload> {
    Ok(Payload::Message(MessageBody {
        message_id: MessageId::now(),
        sender_id: UserId::parse(from)?,
        receiver_id: UserId::parse("bob@beta")?,
        message: text.into(),
        timestamp: Timestamp::now(),
    }))
}

#[tokio::test]
async fn forged_foreign_replayed_stale_and_oversized_envelopes_are_refused_and_the_node_keeps_serving() -> Result<()> {
    let (alpha_name, alpha_key, alpha_address) = FakePeer::prepare("alpha");
    let (gamma_name, gamma_key, gamma_address) = FakePeer::prepare("gamma");
    let mut beta = TestNode::prepare("beta", Backend::Sqlite, &[])?;
    beta.pin_binding(format!("alpha={alpha_address}/p2p/{}", alpha_key.peer_id()));
    beta.pin_binding(format!("gamma={gamma_address}/p2p/{}", gamma_key.peer_id()));
    beta.launch().await?;
    let bob = beta.user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let alpha = FakePeer::start(alpha_name, alpha_key, &alpha_address, &beta).await?;
    let gamma = FakePeer::start(gamma_name, gamma_key, &gamma_address, &beta).await?;
    let now = Timestamp::now();

    // Signed by gamma but claiming to be from alpha.
    let forged = gamma.envelope("f-1", "alpha", &to_bob("alice@alpha", "forged")?, now)?;
    assert!(matches!(&gamma.deliver(vec![forged]).await?[..], [Outcome::Rejected(_)]));
    // From alpha, speaking for a user of gamma.
    let foreign = alpha.envelope("f-2", "alpha", &to_bob("carol@gamma", "not yours")?, now)?;
    assert!(matches!(&alpha.deliver(vec![foreign]).await?[..], [Outcome::Rejected(r)] if r.contains("carol@gamma")));
    // Outside the replay window.
    let stale = alpha.envelope(
        "f-3",
        "alpha",
        &to_bob("alice@alpha", "old")?,
        Timestamp::from_millis(now.as_millis() - 3_600_000),
    )?;
    // Not refused for good (a clock may be off for a while): left unacked, to be sent again.
    assert!(alpha.deliver(vec![stale]).await?.is_empty());

    // A good one, then the same envelope replayed: acked twice, stored once.
    let good = to_bob("alice@alpha", "the real one")?;
    let first = alpha.envelope("g-1", "alpha", &good, Timestamp::now())?;
    assert_eq!(alpha.deliver(vec![first]).await?, [Outcome::Accepted]);
    let replay = alpha.envelope("g-1", "alpha", &good, Timestamp::now())?;
    assert_eq!(alpha.deliver(vec![replay]).await?, [Outcome::Accepted]);
    let history = bob.history("alice@alpha", None, None).await?;
    assert_eq!(history.messages.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(), ["the real one"]);

    // A message over the client API's 64 KiB is refused from a peer too; one at the limit is
    // taken.
    let sized = |bytes: usize| {
        Ok::<_, anyhow::Error>(Payload::Message(MessageBody {
            message_id: MessageId::now(),
            sender_id: UserId::parse("alice@alpha")?,
            receiver_id: UserId::parse("bob@beta")?,
            message: "x".repeat(bytes),
            timestamp: Timestamp::now(),
        }))
    };
    let too_long = alpha.envelope("long", "alpha", &sized(MAX_MESSAGE_BYTES + 1)?, Timestamp::now())?;
    assert!(
        matches!(&alpha.deliver(vec![too_long]).await?[..], [Outcome::Rejected(r)] if r.contains("65536")),
        "a message over the limit"
    );
    let longest = alpha.envelope("longest", "alpha", &sized(MAX_MESSAGE_BYTES)?, Timestamp::now())?;
    assert_eq!(alpha.deliver(vec![longest]).await?, [Outcome::Accepted]);
    // A request of 7 MiB is read and answered (refused for its content), so one over the 8 MiB
    // cap that fails, fails because beta, the receiver, cuts it off; the node keeps serving.
    let near_cap = alpha.envelope("near", "alpha", &sized(7 * 1024 * 1024)?, Timestamp::now())?;
    assert!(matches!(&alpha.deliver(vec![near_cap]).await?[..], [Outcome::Rejected(_)]), "a 7 MiB request is answered");
    let oversized = alpha.envelope("big", "alpha", &sized(9 * 1024 * 1024)?, Timestamp::now())?;
    let beta_name = ServerName::parse("beta")?;
    let answer = alpha.network.request(&beta_name, Request::Deliver(vec![oversized])).await;
    assert!(
        matches!(&answer, Err(kith_federation::FederationError::Request { server, .. }) if *server == beta_name),
        "the request reached beta and got no answer: {answer:?}"
    );
    let after = alpha.envelope("g-2", "alpha", &to_bob("alice@alpha", "still serving")?, Timestamp::now())?;
    assert_eq!(alpha.deliver(vec![after]).await?, [Outcome::Accepted]);
    let stored: Vec<usize> =
        bob.history("alice@alpha", None, None).await?.messages.iter().map(|m| m.message.len()).collect();
    assert_eq!(stored, ["the real one".len(), MAX_MESSAGE_BYTES, "still serving".len()]);
    assert_eq!(gamma.name.as_str(), "gamma");
    Ok(())
}

#[tokio::test]
async fn key_bundles_of_a_remote_user_are_claimed_through_their_home_node() -> Result<()> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use kith_crypto::{DeviceCertificate, DeviceIdentity, PreKeyBundle, UserIdentity, UserIdentityPublic};
    use rand_core::UnwrapErr;

    let nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    let bob = nodes[1].user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let mut rng = UnwrapErr(getrandom::SysRng);
    let identity = DeviceIdentity::generate(&mut rng);
    let bob_user = UserIdentity::generate(&mut rng);
    bob.publish_keys(&crate::keys::keys_of(&bob, &bob_user, &identity, 7, 1)?).await?;

    // The user identity and certificate travel with the bundle across nodes.
    let bundles = alice.claim_keys("bob@beta").await?;
    assert_eq!(bundles.user_id.as_str(), "bob@beta");
    let served = UserIdentityPublic::from_bytes(&BASE64.decode(bundles.user_identity.as_deref().unwrap_or(""))?)?;
    assert_eq!(&served, bob_user.public());
    let certificate =
        DeviceCertificate::from_bytes(&BASE64.decode(bundles.devices[0].certificate.as_deref().unwrap_or(""))?)?;
    let bundle = PreKeyBundle::from_bytes(&BASE64.decode(&bundles.devices[0].bundle)?)?.verify(
        &certificate,
        &served,
        "bob@beta",
        0,
    )?;
    assert_eq!(bundle.identity(), identity.public());
    assert_eq!(bundle.bundle().one_time_prekey().map(|k| k.id()), Some(7));
    assert_eq!(bob.key_count().await?.one_time_pre_keys, 0, "claimed on bob's node");
    let unknown = alice.claim_keys("nobody@beta").await;
    assert!(matches!(unknown, Err(kith_client::ClientError::Api { status: 404, .. })), "{unknown:?}");
    Ok(())
}

fn history_status(page: kith_proto::rest::HistoryPage) -> Option<MessageStatus> {
    page.messages.first().map(|m| m.status)
}

#[tokio::test]
async fn a_read_receipt_given_while_the_senders_node_is_down_arrives_once_it_is_back() -> Result<()> {
    let mut nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    let bob = nodes[1].user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let mut bob_ws = bob.connect().await?;
    let (_, sent) = alice.send_message("bob@beta", "read me while alpha is away", None).await?;
    let got = frame_where(&mut bob_ws, message).await?;
    assert_eq!(got.message_id, sent.message_id);
    bob_ws.send(&ClientFrame::Ack { message_id: got.message_id }).await?;
    eventually("alice's copy is delivered", async || {
        let status = history_status(alice.history("bob@beta", None, None).await?);
        Ok(if status == Some(MessageStatus::Delivered) { Ok(()) } else { Err(status) })
    })
    .await?;

    nodes[0].kill().await?;
    bob_ws.send(&ClientFrame::Read { message_id: got.message_id }).await?;
    // Bob's copy says so at once; the receipt waits in beta's outbox for alpha.
    eventually("bob's copy is read and its receipt queued", async || {
        let status = history_status(bob.history("alice@alpha", None, None).await?);
        let queued = outbox_depth(&nodes[1]).await?;
        Ok(if status == Some(MessageStatus::Read) && queued > 0 { Ok(()) } else { Err((status, queued)) })
    })
    .await?;

    nodes[0].restart().await?;
    let alice = nodes[0].client().login("alice", PASSWORD).await?;
    eventually("alice's copy is read", async || {
        let status = history_status(alice.history("bob@beta", None, None).await?);
        Ok(if status == Some(MessageStatus::Read) { Ok(()) } else { Err(status) })
    })
    .await?;
    outbox_drains(&nodes[1]).await?;
    Ok(())
}

#[tokio::test]
async fn a_remote_user_shows_offline_when_their_node_crashes_and_online_again_after_it_returns() -> Result<()> {
    let mut nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    let bob = nodes[1].user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob@beta".into()] }).await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Offline);
    let bob_ws = bob.connect().await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Online);

    // Beta dies with bob's session open: nobody is left to say bob went away, yet he is not
    // reachable, so alpha must stop showing him online.
    nodes[1].kill().await?;
    drop(bob_ws);
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Offline);
    let seen = alice.presence("bob@beta").await?;
    assert_eq!(seen.status, PresenceStatus::Offline);

    nodes[1].restart().await?;
    let bob = nodes[1].client().login("bob", PASSWORD).await?;
    let _bob_ws = bob.connect().await?;
    // Beta may first answer the renewed subscription (bob offline since its restart).
    frame_where(&mut alice_ws, |f| (presence_of("bob@beta")(f) == Some(PresenceStatus::Online)).then_some(())).await?;
    Ok(())
}

/// The device ids a key listing names.
fn devices(listed: &kith_proto::keys::KeyBundles) -> Vec<u32> {
    listed.devices.iter().map(|d| d.device_id.0).collect()
}

#[tokio::test]
async fn a_removed_device_loses_its_queue_and_its_keys_here_and_across_federation() -> Result<()> {
    use kith_crypto::UserIdentity;
    use kith_proto::DeviceId;

    use crate::keys::{keys, rng};

    let nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    let bob_phone = nodes[1].user("bob").await?;
    let carol = nodes[1].user("carol").await?;
    let bob_laptop = nodes[1].client().device(DeviceId(1)).login("bob", PASSWORD).await?;
    let bob_user = UserIdentity::generate(&mut rng());
    bob_phone.publish_keys(&keys(&bob_phone, &bob_user, 0, 3)?).await?;
    bob_laptop.publish_keys(&keys(&bob_laptop, &bob_user, 100, 3)?).await?;
    assert_eq!(devices(&carol.device_keys("bob").await?), [0, 1]);
    assert_eq!(devices(&alice.device_keys("bob@beta").await?), [0, 1]);

    // A message reaches the phone, which acks it; the laptop, offline, still has it queued.
    let mut phone = bob_phone.connect().await?;
    let (_, before) = alice.send_message("bob@beta", "before the removal", None).await?;
    assert_eq!(frame_where(&mut phone, message).await?.message_id, before.message_id);
    phone.send(&ClientFrame::Ack { message_id: before.message_id }).await?;

    bob_phone.remove_device(DeviceId(1)).await?;
    // Its keys are gone, for the users of its node and for those of others.
    assert_eq!(devices(&carol.device_keys("bob").await?), [0]);
    assert_eq!(devices(&alice.device_keys("bob@beta").await?), [0]);
    assert_eq!(devices(&alice.claim_keys("bob@beta").await?), [0]);
    // Logging in as that device again makes a new, empty one: nothing from before comes.
    let reinstalled = nodes[1].client().device(DeviceId(1)).login("bob", PASSWORD).await?;
    let mut laptop = reinstalled.connect().await?;
    let (_, after) = alice.send_message("bob@beta", "after the removal", None).await?;
    assert_eq!(frame_where(&mut laptop, message).await?.message_id, after.message_id, "no backlog");
    assert_eq!(devices(&carol.device_keys("bob").await?), [0], "no keys until it publishes some");
    Ok(())
}

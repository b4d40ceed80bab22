//! Federation: users of different nodes chat as users of one node do, and nothing is lost or
//! doubled when a node crashes, restarts or is unreachable for a while.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, bail};
use kith_federation::{
    Directory, Envelope, MessageBody, NetworkConfig, NodeKey, Outcome, Payload, PinnedPeer, Request, Response,
};
use kith_proto::{ClientFrame, MessageId, MessageStatus, PresenceStatus, ServerFrame, ServerName, Timestamp, UserId};

use crate::harness::{Backend, PASSWORD, PATIENCE, TestNode, frame_where, message, send, unique_loopback};

/// Starts nodes with these names, each pinning all the others.
async fn federation(names: &[&str], extra_args: &[&str]) -> Result<Vec<TestNode>> {
    let mut nodes =
        names.iter().map(|name| TestNode::prepare(name, Backend::Sqlite, extra_args)).collect::<Result<Vec<_>>>()?;
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
        ServerFrame::Presence(p) if p.user_id.as_str() == user => Some(p.status),
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
    let nodes = federation(&["alpha", "beta"], &[]).await?;
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    let alice = alpha.user("alice").await?;
    let bob = beta.user("bob").await?;

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
    nodes[1].user("bob").await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob@beta".into()] }).await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Offline);

    // Beta crashes and comes back without the subscriptions it kept in memory; alpha renews
    // them when it reconnects, so bob coming online still reaches alice.
    nodes[1].kill().await?;
    nodes[1].restart().await?;
    let bob = nodes[1].client().login("bob", PASSWORD).await?;
    let _bob_ws = bob.connect().await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@beta")).await?, PresenceStatus::Online);
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
    nodes[1].user("bob").await?;
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

#[tokio::test]
async fn a_message_acked_just_before_the_origin_crashed_still_arrives() -> Result<()> {
    let mut nodes = federation(&["alpha", "beta"], &[]).await?;
    let alice = nodes[0].user("alice").await?;
    let bob = nodes[1].user("bob").await?;
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

    // A request over the size cap fails without taking the node down.
    let huge = Payload::Message(MessageBody {
        message_id: MessageId::now(),
        sender_id: UserId::parse("alice@alpha")?,
        receiver_id: UserId::parse("bob@beta")?,
        message: "x".repeat(9 * 1024 * 1024),
        timestamp: Timestamp::now(),
    });
    let oversized = alpha.envelope("big", "alpha", &huge, Timestamp::now())?;
    let beta_name = ServerName::parse("beta")?;
    assert!(!matches!(
        alpha.network.request(&beta_name, Request::Deliver(vec![oversized])).await,
        Ok(Response::Acks(_))
    ));
    let after = alpha.envelope("g-2", "alpha", &to_bob("alice@alpha", "still serving")?, Timestamp::now())?;
    assert_eq!(alpha.deliver(vec![after]).await?, [Outcome::Accepted]);
    assert_eq!(bob.history("alice@alpha", None, None).await?.messages.len(), 2);
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

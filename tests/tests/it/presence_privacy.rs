//! Presence privacy: a user's presence and `lastSeen` are shown only to those their setting
//! admits (`contacts`, the default: users with a conversation with them; `everyone`;
//! `nobody`), over REST, on the WebSocket and across federation. Others see `unknown`.

use anyhow::{Result, bail};
use kith_client::{Authed, Connection};
use kith_proto::{ClientFrame, PresenceStatus, PresenceView, PresenceVisibility, ServerFrame};

use crate::federation::federation;
use crate::harness::{PASSWORD, TestNode, frame_where, next_frame};

fn presence_of(user: &str) -> impl FnMut(ServerFrame) -> Option<PresenceView> + '_ {
    move |frame| match frame {
        ServerFrame::Presence(p) if p.user_id.as_str() == user => Some(p),
        _ => None,
    }
}

/// Makes `a` and `b` contacts: a message from `a` to `b`.
async fn converse(a: &Authed, b: &Authed, id: &str) -> Result<()> {
    a.send_message(b.user_id().as_str(), "hello", Some(id)).await?;
    Ok(())
}

/// Asserts that `watcher` was pushed nothing about `user` but `unknown`: asks for its own
/// presence, whose answer queues after anything pushed before, and checks every frame before
/// it.
async fn heard_nothing_real_of(watcher: &mut Connection, watcher_id: &str, user: &str) -> Result<()> {
    watcher.send(&ClientFrame::PresenceSubscribe { user_ids: vec![watcher_id.into()] }).await?;
    loop {
        match next_frame(watcher).await? {
            ServerFrame::Presence(p) if p.user_id.as_str() == watcher_id => return Ok(()),
            ServerFrame::Presence(p) if p.user_id.as_str() == user && p.status != PresenceStatus::Unknown => {
                bail!("{watcher_id} was shown {user}'s presence: {p:?}")
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_stranger_sees_unknown_a_contact_sees_presence() -> Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob, carol) = (node.user("alice").await?, node.user("bob").await?, node.user("carol").await?);
    converse(&alice, &bob, "c-1").await?;
    assert_eq!(bob.presence_visibility().await?, PresenceVisibility::Contacts, "the default");

    let mut alice_ws = alice.connect().await?;
    let mut carol_ws = carol.connect().await?;
    for ws in [&mut alice_ws, &mut carol_ws] {
        ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    }
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@test")).await?.status, PresenceStatus::Offline);
    assert_eq!(frame_where(&mut carol_ws, presence_of("bob@test")).await?, PresenceView::hidden(bob.user_id().clone()));

    let bob_ws = bob.connect().await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@test")).await?.status, PresenceStatus::Online);
    bob_ws.close().await?;
    let offline = frame_where(&mut alice_ws, presence_of("bob@test")).await?;
    assert!(offline.status == PresenceStatus::Offline && offline.last_seen.is_some(), "{offline:?}");
    // The contact saw bob come and go; the stranger heard nothing, and asking tells nothing.
    heard_nothing_real_of(&mut carol_ws, "carol@test", "bob@test").await?;
    assert_eq!(carol.presence("bob").await?, PresenceView::hidden(bob.user_id().clone()));
    assert_eq!(alice.presence("bob").await?, offline);
    // Bob himself always sees his own.
    assert_eq!(bob.presence("bob").await?, offline);
    // Contacts either way: bob sees alice (she wrote to him), not carol.
    assert_eq!(bob.presence("alice").await?.status, PresenceStatus::Online);
    assert_eq!(bob.presence("carol").await?.status, PresenceStatus::Unknown);
    Ok(())
}

#[tokio::test]
async fn nobody_hides_from_contacts_too_everyone_shows_strangers_and_it_survives_a_restart() -> Result<()> {
    let mut node = TestNode::start().await?;
    let (alice, bob, carol) = (node.user("alice").await?, node.user("bob").await?, node.user("carol").await?);
    converse(&bob, &alice, "c-1").await?;
    let _bob_ws = bob.connect().await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@test")).await?.status, PresenceStatus::Online);

    // `nobody`: the watching contact is told `unknown` at once, and asking says the same.
    bob.set_presence_visibility(PresenceVisibility::Nobody).await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@test")).await?.status, PresenceStatus::Unknown);
    assert_eq!(alice.presence("bob").await?.status, PresenceStatus::Unknown);
    assert_eq!(bob.presence_visibility().await?, PresenceVisibility::Nobody);

    // `everyone`: even a stranger sees him.
    bob.set_presence_visibility(PresenceVisibility::Everyone).await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@test")).await?.status, PresenceStatus::Online);
    assert_eq!(carol.presence("bob").await?.status, PresenceStatus::Online);

    // The setting is stored: after a restart it still holds.
    bob.set_presence_visibility(PresenceVisibility::Nobody).await?;
    drop(alice_ws);
    node.restart().await?;
    let bob = node.client().login("bob", PASSWORD).await?;
    let alice = node.client().login("alice", PASSWORD).await?;
    assert_eq!(bob.presence_visibility().await?, PresenceVisibility::Nobody);
    let _bob_ws = bob.connect().await?;
    assert_eq!(alice.presence("bob").await?.status, PresenceStatus::Unknown);
    assert_eq!(bob.presence("bob").await?.status, PresenceStatus::Online);
    Ok(())
}

#[tokio::test]
async fn a_bad_setting_is_refused_by_name() -> Result<()> {
    let node = TestNode::start().await?;
    let bob = node.user("bob").await?;
    let response = crate::harness::http()
        .put(node.url("/api/v1/settings/presence"))
        .bearer_auth(bob.token())
        .json(&serde_json::json!({"visibility": "friends"}))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await?;
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("visibility"), "{body}");
    assert_eq!(bob.presence_visibility().await?, PresenceVisibility::Contacts);
    Ok(())
}

#[tokio::test]
async fn a_stranger_on_another_node_sees_unknown_a_contact_there_sees_presence() -> Result<()> {
    let nodes = federation(&["alpha", "beta"], &[]).await?;
    let (alice, dave) = (nodes[0].user("alice").await?, nodes[0].user("dave").await?);
    let bob = nodes[1].user("bob").await?;
    // dave and bob have a conversation (bob's node knows it from bob's mailbox); alice none.
    converse(&bob, &dave, "c-1").await?;
    crate::harness::eventually("dave has bob's message", async || {
        let page = dave.history("bob@beta", None, None).await?;
        Ok(if page.messages.is_empty() { Err("not yet") } else { Ok(()) })
    })
    .await?;

    let mut alice_ws = alice.connect().await?;
    let mut dave_ws = dave.connect().await?;
    for ws in [&mut alice_ws, &mut dave_ws] {
        ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob@beta".into()] }).await?;
    }
    let _bob_ws = bob.connect().await?;
    // Beta's report reached alpha: the contact sees bob online...
    frame_where(&mut dave_ws, |f| presence_of("bob@beta")(f).filter(|p| p.status == PresenceStatus::Online).map(drop))
        .await?;
    // ...the stranger was told nothing and asking tells nothing.
    heard_nothing_real_of(&mut alice_ws, "alice@alpha", "bob@beta").await?;
    assert_eq!(alice.presence("bob@beta").await?.status, PresenceStatus::Unknown);
    assert_eq!(dave.presence("bob@beta").await?.status, PresenceStatus::Online);
    Ok(())
}

#[tokio::test]
async fn across_instances_through_redis_only_contacts_are_pushed_presence() -> Result<()> {
    let Some(cluster) = crate::instances::TestCluster::start("alpha", 2, 2).await? else { return Ok(()) };
    let (alice, carol) = (cluster.user(0, "alice").await?, cluster.user(0, "carol").await?);
    let bob = cluster.user(0, "bob").await?;
    converse(&alice, &bob, "c-1").await?;
    // alice (a contact) and carol (a stranger) watch from instance 0; bob comes online on
    // instance 1, whose change reaches instance 0 through Redis.
    let mut alice_ws = alice.connect().await?;
    let mut carol_ws = carol.connect().await?;
    for ws in [&mut alice_ws, &mut carol_ws] {
        ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    }
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@alpha")).await?.status, PresenceStatus::Offline);
    let _bob_ws = cluster.at(1, &bob)?.connect().await?;
    assert_eq!(frame_where(&mut alice_ws, presence_of("bob@alpha")).await?.status, PresenceStatus::Online);
    heard_nothing_real_of(&mut carol_ws, "carol@alpha", "bob@alpha").await?;
    assert_eq!(carol.presence("bob").await?.status, PresenceStatus::Unknown);
    assert_eq!(cluster.at(1, &carol)?.presence("bob").await?.status, PresenceStatus::Unknown);
    Ok(())
}

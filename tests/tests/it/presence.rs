//! Presence: online while a session is live, offline with `lastSeen` after the last one
//! closes or dies.

use anyhow::Result;
use kith_proto::{ClientFrame, PresenceStatus, PresenceView, ServerFrame};

use crate::harness::{Backend, TestNode, eventually, frame_where};

fn presence(frame: ServerFrame) -> Option<PresenceView> {
    match frame {
        ServerFrame::Presence(p) => Some(p),
        _ => None,
    }
}

#[tokio::test]
async fn presence_flips_online_then_offline_with_last_seen() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;

    let before = alice.presence("bob").await?;
    assert_eq!(before.status, PresenceStatus::Offline);
    assert_eq!(before.last_seen, None, "never seen");

    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    assert_eq!(frame_where(&mut alice_ws, presence).await?.status, PresenceStatus::Offline);

    let phone = bob.connect().await?;
    let online = frame_where(&mut alice_ws, presence).await?;
    assert_eq!((online.user_id.as_str(), online.status), ("bob@test", PresenceStatus::Online));
    assert_eq!(alice.presence("bob@test").await?.status, PresenceStatus::Online);

    // A second session and its close change nothing; the last close does.
    let laptop = bob.connect().await?;
    laptop.close().await?;
    assert_eq!(alice.presence("bob").await?.status, PresenceStatus::Online);
    phone.close().await?;
    let offline = frame_where(&mut alice_ws, presence).await?;
    assert_eq!(offline.status, PresenceStatus::Offline);
    let last_seen = offline.last_seen.expect("lastSeen is set when the last session closes");
    let rest = alice.presence("bob").await?;
    assert_eq!((rest.status, rest.last_seen), (PresenceStatus::Offline, Some(last_seen)));
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_goes_offline() -> Result<()> {
    // Short timings, yet nothing here races them: only bob's silent socket is on a clock, and
    // alice asks over REST until she sees the outcome. (The exact timing is a unit test of
    // the WebSocket loop, on paused time, in kith-client-api.)
    let node =
        TestNode::start_with(Backend::Sqlite, &["--ws-ping-interval", "200ms", "--ws-idle-timeout", "1s"]).await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    // Bob connects and then never reads again, so his client never answers a ping.
    let silent = bob.connect().await?;
    assert_eq!(alice.presence("bob").await?.status, PresenceStatus::Online);
    let offline = eventually("bob is offline", async || {
        let seen = alice.presence("bob").await?;
        Ok(if seen.status == PresenceStatus::Offline { Ok(seen) } else { Err(seen) })
    })
    .await?;
    assert!(offline.last_seen.is_some(), "{offline:?}");
    drop(silent);
    Ok(())
}

#[tokio::test]
async fn last_seen_survives_a_restart() -> Result<()> {
    let mut node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    frame_where(&mut alice_ws, presence).await?;
    bob.connect().await?.close().await?;
    let seen = loop {
        let p = frame_where(&mut alice_ws, presence).await?;
        if p.status == PresenceStatus::Offline {
            break p.last_seen.expect("lastSeen is set when the last session closes");
        }
    };
    alice_ws.close().await?;
    assert!(node.terminate().await?, "graceful shutdown exits 0");
    node.restart().await?;
    let alice = node.client().login("alice", crate::harness::PASSWORD).await?;
    let after = alice.presence("bob").await?;
    assert_eq!((after.status, after.last_seen), (PresenceStatus::Offline, Some(seen)));
    Ok(())
}

#[tokio::test]
async fn everyone_is_offline_after_a_crash() -> Result<()> {
    let mut node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let _bob_ws = bob.connect().await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    assert_eq!(frame_where(&mut alice_ws, presence).await?.status, PresenceStatus::Online);
    // Bob's presence is written to the store after it is shown; wait for that write, or the
    // kill below would race it.
    let pool = sqlx::SqlitePool::connect(&format!("{}?mode=ro", node.database_url())).await?;
    eventually("bob is online in the store", async || {
        let status: String =
            sqlx::query_scalar("SELECT status FROM users WHERE user_id = 'bob@test'").fetch_one(&pool).await?;
        Ok(if status == "online" { Ok(()) } else { Err(status) })
    })
    .await?;
    pool.close().await;
    node.kill().await?;
    node.restart().await?;
    let after = node.client().login("alice", crate::harness::PASSWORD).await?.presence("bob").await?;
    assert_eq!(after.status, PresenceStatus::Offline);
    assert!(after.last_seen.is_some(), "the restart sets lastSeen for whoever was online");
    Ok(())
}

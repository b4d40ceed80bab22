//! One node as several instances on PostgreSQL shards and Redis: users on different
//! instances chat as if on one; shards hold only their owners' rows; killed instances, a
//! restarted Redis and a wrong shard list lose nothing and say so.

use std::time::Duration;

use anyhow::{Context, Result};
use kith_node::store::shard_of;
use kith_proto::{ClientFrame, MessageStatus, PresenceStatus, ServerFrame};

use crate::harness::{PATIENCE, TestNode, frame_where, message, send};
use crate::instances::{TestCluster, TestNginx, TestRedis};

/// The presence frames of `user` with `status`.
fn presence_of(user: &str, status: PresenceStatus) -> impl FnMut(ServerFrame) -> Option<kith_proto::PresenceView> {
    let user = user.to_owned();
    move |frame| match frame {
        ServerFrame::Presence(view) if view.user_id.as_str() == user && view.status == status => Some(view),
        _ => None,
    }
}

fn user_id(name: &str, server: &str) -> kith_proto::UserId {
    kith_proto::UserId::parse(&format!("{name}@{server}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Two user names of `server` whose rows live on different shards of `shards`.
fn on_two_shards(server: &str, shards: u32) -> Result<(String, String)> {
    let names: Vec<String> = (0..64).map(|i| format!("user{i}")).collect();
    let first = &names[0];
    let other = names
        .iter()
        .find(|n| shard_of(&user_id(n, server), shards) != shard_of(&user_id(first, server), shards))
        .context("64 names on one shard")?;
    Ok((first.clone(), other.clone()))
}

#[tokio::test]
async fn users_on_two_instances_chat_with_receipts_and_presence_both_ways() -> Result<()> {
    let Some(cluster) = TestCluster::start("alpha", 2, 2).await? else { return Ok(()) };
    // Registered on one instance, used on the other: the instances share the token secret.
    let alice = cluster.user(0, "alice").await?;
    alice.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let bob = cluster.user(0, "bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let bob = cluster.at(1, &bob)?;
    assert!(bob.base_url() != alice.base_url());

    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    frame_where(&mut alice_ws, presence_of("bob@alpha", PresenceStatus::Offline)).await?;
    let mut bob_ws = bob.connect().await?;
    frame_where(&mut alice_ws, presence_of("bob@alpha", PresenceStatus::Online)).await?;
    bob_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["alice".into()] }).await?;
    frame_where(&mut bob_ws, presence_of("alice@alpha", PresenceStatus::Online)).await?;

    alice_ws.send(&send("a-1", "bob", "hi from instance 0")).await?;
    let got = frame_where(&mut bob_ws, message).await?;
    assert_eq!((got.sender_id.as_str(), got.message.as_str()), ("alice@alpha", "hi from instance 0"));
    for (frame, status) in [
        (ClientFrame::Ack { message_id: got.message_id }, MessageStatus::Delivered),
        (ClientFrame::Read { message_id: got.message_id }, MessageStatus::Read),
    ] {
        bob_ws.send(&frame).await?;
        let receipt = frame_where(&mut alice_ws, |f| match f {
            ServerFrame::Receipt { message_id, status, .. } if message_id == got.message_id => Some(status),
            _ => None,
        })
        .await?;
        assert_eq!(receipt, status);
    }
    bob_ws.send(&send("b-1", "alice", "and back from instance 1")).await?;
    assert_eq!(frame_where(&mut alice_ws, message).await?.message, "and back from instance 1");
    // History is the same through either instance.
    let through_0 = alice.history("bob", None, None).await?;
    let through_1 = cluster.at(1, &alice)?.history("bob", None, None).await?;
    assert_eq!(through_0.messages, through_1.messages);
    assert_eq!(through_0.messages.len(), 2);
    assert_eq!(through_0.messages[0].status, MessageStatus::Read);

    drop(bob_ws);
    let offline = frame_where(&mut alice_ws, presence_of("bob@alpha", PresenceStatus::Offline)).await?;
    assert!(offline.last_seen.is_some());
    Ok(())
}

#[tokio::test]
async fn each_shard_holds_exactly_its_owners_rows() -> Result<()> {
    let Some(cluster) = TestCluster::start("alpha", 1, 3).await? else { return Ok(()) };
    let names: Vec<String> = (0..9).map(|i| format!("user{i}")).collect();
    let mut users = Vec::new();
    for name in &names {
        users.push(cluster.user(0, name).await?);
    }
    // Everyone writes to the next one, and the next one reads it.
    for (i, user) in users.iter().enumerate() {
        let to = &names[(i + 1) % names.len()];
        user.send_message(to, &format!("{i} to {to}"), Some(&format!("c-{i}"))).await?;
    }
    let ids: Vec<_> = users.iter().map(|u| u.user_id().clone()).collect();
    let spread: std::collections::HashSet<u32> = ids.iter().map(|u| shard_of(u, 3)).collect();
    assert_eq!(spread.len(), 3, "the test's users cover every shard");
    for shard in 0..3u32 {
        let pool = cluster.shard(shard as usize).await?;
        let owners = |table: &str, column: &str| {
            let sql = format!("SELECT DISTINCT {column} FROM {table}");
            let pool = pool.clone();
            async move { anyhow::Ok(sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await?) }
        };
        let expected: std::collections::BTreeSet<String> =
            ids.iter().filter(|u| shard_of(u, 3) == shard).map(ToString::to_string).collect();
        for (table, column) in [
            ("users", "user_id"),
            ("devices", "user_id"),
            ("messages", "owner_id"),
            ("device_pending", "owner_id"),
            ("client_message_ids", "sender_id"),
        ] {
            let found: std::collections::BTreeSet<String> = owners(table, column).await?.into_iter().collect();
            let stray: Vec<_> = found.iter().filter(|o| !expected.contains(*o)).collect();
            assert!(stray.is_empty(), "shard {shard}'s {table} holds rows of {stray:?}");
            if table != "client_message_ids" {
                assert_eq!(found, expected, "shard {shard}'s {table}");
            }
        }
        let (handoffs,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM handoffs").fetch_one(&pool).await?;
        assert_eq!(handoffs, 0, "every hand-off completed");
        pool.close().await;
    }
    // Each mailbox holds its owner's two messages: one sent, one received.
    for user in &users {
        let peer_after = &names[(names.iter().position(|n| user.user_id().name() == n).unwrap_or(0) + 1) % 9];
        assert_eq!(user.history(peer_after, None, None).await?.messages.len(), 1);
    }
    Ok(())
}

#[tokio::test]
async fn an_instance_killed_between_two_shard_commits_delivers_the_message_once() -> Result<()> {
    let Some(mut cluster) = TestCluster::start("alpha", 1, 2).await? else { return Ok(()) };
    // Two users on different shards.
    let (sender, receiver) = on_two_shards("alpha", 2)?;
    let alice = cluster.user(0, &sender).await?;
    let carol = cluster.user(0, &receiver).await?;
    let shard_of_name = |name: &str| shard_of(&user_id(name, "alpha"), 2) as usize;
    let (alice_shard, carol_shard) =
        (cluster.shard(shard_of_name(&sender)).await?, cluster.shard(shard_of_name(&receiver)).await?);
    // Hold every write on carol's shard: the second commit cannot happen.
    let mut hold = carol_shard.begin().await?;
    sqlx::query("LOCK TABLE messages IN EXCLUSIVE MODE").execute(&mut *hold).await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&send("x-1", &receiver, "between two commits")).await?;
    // The first commit is done when alice's shard holds the hand-off.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM handoffs").fetch_one(&alice_shard).await?;
        if n == 1 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the first commit never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.instance_mut(0).kill().await?;
    hold.rollback().await?;
    drop(alice_ws);

    cluster.instance_mut(0).restart().await?;
    let carol = cluster.at(0, &carol)?;
    let mut carol_ws = carol.connect().await?;
    let got = frame_where(&mut carol_ws, message).await?;
    assert_eq!(got.message, "between two commits");
    // Resending it (its `sent` was never answered) is the same message.
    let alice = cluster.at(0, &alice)?;
    let (_, resent) = alice.send_message(&receiver, "between two commits", Some("x-1")).await?;
    assert_eq!(resent.message_id, got.message_id);
    let history = carol.history(&sender, None, None).await?;
    assert_eq!(history.messages.iter().map(|m| m.message_id).collect::<Vec<_>>(), [got.message_id], "once");
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM handoffs").fetch_one(&alice_shard).await?;
    assert_eq!(n, 0, "the hand-off was completed and removed");
    Ok(())
}

#[tokio::test]
async fn a_killed_instances_clients_reconnect_through_nginx_and_its_users_go_offline() -> Result<()> {
    let Some(mut cluster) = TestCluster::start("alpha", 2, 2).await? else { return Ok(()) };
    let Some(nginx) = TestNginx::start(&[cluster.instance(0).addr, cluster.instance(1).addr]).await? else {
        return Ok(());
    };
    let alice = cluster.user(0, "alice").await?;
    alice.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let bob = cluster.user(0, "bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let dave = cluster.user(0, "dave").await?;
    dave.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    // bob and dave are connected to instance 1 only; alice watches dave from instance 0.
    let bob_ws = cluster.at(1, &bob)?.connect().await?;
    let dave_ws = cluster.at(1, &dave)?.connect().await?;
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["dave".into()] }).await?;
    frame_where(&mut alice_ws, presence_of("dave@alpha", PresenceStatus::Online)).await?;

    cluster.instance_mut(1).kill().await?;
    let killed_at = kith_proto::Timestamp::now();
    drop((bob_ws, dave_ws));
    // Meanwhile alice writes to bob.
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(alice.send_message("bob", &format!("while you were away {i}"), None).await?.1.message_id);
    }
    // bob reconnects through nginx: the only live instance serves him everything pending.
    let mut bob_ws = nginx.at(&bob)?.connect().await?;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.push(frame_where(&mut bob_ws, message).await?.message_id);
    }
    assert_eq!(got, sent);
    // dave's only session died with instance 1: offline within the TTL, last seen about then.
    let offline = tokio::time::timeout(Duration::from_secs(40), async {
        frame_where(&mut alice_ws, presence_of("dave@alpha", PresenceStatus::Offline)).await
    })
    .await
    .context("dave never went offline")??;
    let last_seen = offline.last_seen.context("no lastSeen")?;
    let off_by = (killed_at.as_millis() - last_seen.as_millis()).abs();
    assert!(off_by < 10_000, "lastSeen {last_seen} is {off_by} ms from the kill");
    Ok(())
}

#[tokio::test]
async fn a_redis_restart_mid_chat_loses_nothing_and_pushes_resume_without_a_reconnect() -> Result<()> {
    let Some(mut redis) = TestRedis::start().await? else { return Ok(()) };
    let Some(mut cluster) = TestCluster::prepare("alpha", 2).await? else { return Ok(()) };
    cluster.redis_url = redis.url.clone();
    cluster.add_instance().await?;
    cluster.add_instance().await?;
    let alice = cluster.user(0, "alice").await?;
    alice.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let bob = cluster.user(0, "bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let mut bob_ws = cluster.at(1, &bob)?.connect().await?;
    alice.send_message("bob", "before", None).await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message, "before");

    redis.kill().await?;
    // Sends still commit and answer `sent` while Redis is down.
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(alice.send_message("bob", &format!("during {i}"), None).await?.1.message_id);
    }
    // Every instance says so to whoever checks its readiness.
    let ready = |i: usize| {
        let url = cluster.instance(i).url("/readyz");
        async move {
            let response = crate::harness::http().get(url).send().await?;
            let status = response.status().as_u16();
            anyhow::Ok((status, response.text().await?))
        }
    };
    for i in 0..2 {
        let (status, body) = crate::harness::eventually("readyz says redis is down", async || {
            let (status, body) = ready(i).await?;
            Ok(if status == 503 { Ok((status, body)) } else { Err(status) })
        })
        .await?;
        assert!(body.contains("redis is down"), "{status} {body}");
    }
    redis.restart().await?;
    // bob's open connection gets them, in order, once, with no reconnect.
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let m = frame_where(&mut bob_ws, message).await?;
        if m.message != "before" {
            got.push(m.message_id);
        }
    }
    assert_eq!(got, sent);
    alice.send_message("bob", "after", None).await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message, "after");
    for i in 0..2 {
        crate::harness::eventually("readyz says ready again", async || {
            let (status, _) = ready(i).await?;
            Ok(if status == 200 { Ok(()) } else { Err(status) })
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_shard_list_of_the_wrong_size_or_order_is_refused_with_the_shard_named() -> Result<()> {
    let Some(cluster) = TestCluster::start("alpha", 1, 3).await? else { return Ok(()) };
    let shards = &cluster.shards;
    for wrong in [vec![shards[1].clone(), shards[0].clone(), shards[2].clone()], shards[..2].to_vec()] {
        let args = cluster.instance_args("wrong");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut node = TestNode::prepare("alpha", crate::harness::Backend::Shards(wrong), &args)?;
        let e = node.launch().await.expect_err("started on a wrong shard list");
        let log = format!("{e:#}");
        assert!(log.contains("was initialised as shard"), "{log}");
        assert!(log.contains("resharding is not supported"), "{log}");
    }
    Ok(())
}

#[tokio::test]
async fn a_second_instance_without_redis_is_refused() -> Result<()> {
    let Some(urls) = crate::instances::shards(1).await else { return Ok(()) };
    let backend = crate::harness::Backend::Postgres(urls[0].clone());
    let _first = TestNode::start_with(backend.clone(), &[]).await?;
    let mut second = TestNode::prepare("test", backend, &[])?;
    let e = second.launch().await.expect_err("two lone instances on one store");
    assert!(format!("{e:#}").contains("another kith instance is serving this database"), "{e:#}");
    // And on SQLite, a second process on the same data directory.
    let first = TestNode::start().await?;
    let second = tokio::process::Command::new(TestNode::binary())
        .arg("serve")
        .arg("--data-dir")
        .arg(first.data_dir())
        .args(["--listen", "127.0.0.1:0", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .env("KITH_LOG", "info")
        .kill_on_drop(true)
        .output();
    let second = tokio::time::timeout(PATIENCE, second).await.context("the second process did not exit")??;
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stdout).to_string() + &String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another kith instance has"), "{said}");
    Ok(())
}

/// Which destinations instance at `metrics` pumps, from its status.
async fn pumps_here(metrics: &str, destination: &str) -> Result<bool> {
    let status: serde_json::Value = crate::harness::http()
        .get(format!("http://{metrics}/federation/status"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let destinations = status["destinations"].as_array().context("no destinations")?;
    Ok(destinations.iter().any(|d| d["destination"] == destination && d["pumpingHere"] == true))
}

#[tokio::test]
async fn a_node_of_two_instances_federates_and_another_instance_takes_over_a_dead_ones_outbox() -> Result<()> {
    let Some(mut alpha) = TestCluster::prepare("alpha", 2).await? else { return Ok(()) };
    let mut beta = TestNode::prepare("beta", crate::harness::Backend::Sqlite, &[])?;
    alpha.pin(beta.binding());
    let metrics: Vec<String> =
        (0..2).map(|_| crate::instances::free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_>>()?;
    for address in &metrics {
        alpha.prepare_instance(&["--metrics-listen", address])?;
    }
    // beta pins alpha once per instance: one server name, one peer id, two addresses.
    for binding in alpha.bindings() {
        beta.pin_binding(binding);
    }
    for i in 0..2 {
        alpha.instance_mut(i).launch().await?;
    }
    beta.launch().await?;

    let alice = alpha.user(0, "alice").await?;
    let bob = beta.user("bob").await?;
    let mut alice_ws = alice.connect().await?;
    let mut bob_ws = bob.connect().await?;
    alice_ws.send(&send("a-1", "bob@beta", "hello beta")).await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message, "hello beta");
    // beta's answer reaches alice on instance 0, whichever alpha instance beta reached.
    bob_ws.send(&send("b-1", "alice@alpha", "hello alpha")).await?;
    assert_eq!(frame_where(&mut alice_ws, message).await?.message, "hello alpha");

    // Exactly one instance pumps beta's outbox.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let holder = loop {
        let here = [pumps_here(&metrics[0], "beta").await?, pumps_here(&metrics[1], "beta").await?];
        match here {
            [true, false] => break 0,
            [false, true] => break 1,
            [true, true] => anyhow::bail!("both instances pump beta"),
            [false, false] => {}
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "nobody pumps beta");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = 1 - holder;
    // Each instance's /metrics says who it is, that Redis answers, and who pumps beta.
    for (i, address) in metrics.iter().enumerate() {
        let text = crate::harness::http().get(format!("http://{address}/metrics")).send().await?.text().await?;
        let held = u8::from(i == holder);
        for line in [
            format!("kith_instance_info{{instance=\"i{i}\"}} 1"),
            "kith_redis_up 1".to_owned(),
            format!("kith_outbox_lease_held{{destination=\"beta\"}} {held}"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
    // alice's message counted where she sent it, bob's where beta delivered it: two in all.
    let mut stored = 0.0;
    for address in &metrics {
        let text = crate::harness::http().get(format!("http://{address}/metrics")).send().await?.text().await?;
        let line = text.lines().find_map(|l| l.strip_prefix("kith_messages_in_total ")).context("no count")?;
        stored += line.parse::<f64>()?;
    }
    assert_eq!(stored, 2.0, "messages stored across the instances");

    // beta goes down; a backlog builds up; the instance pumping it dies; beta comes back.
    beta.kill().await?;
    drop(bob_ws);
    let sender = alpha.at(other, &alice)?;
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(
            sender.send_message("bob@beta", &format!("backlog {i}"), Some(&format!("k-{i}"))).await?.1.message_id,
        );
    }
    alpha.instance_mut(holder).kill().await?;
    beta.restart().await?;
    let bob = crate::harness::TestNode::client(&beta).login("bob", crate::harness::PASSWORD).await?;
    let mut bob_ws = bob.connect().await?;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let m = frame_where(&mut bob_ws, message).await?;
        if m.message.starts_with("backlog") {
            got.push(m.message_id);
        }
    }
    assert_eq!(got, sent, "all of it, in order, once");
    assert!(pumps_here(&metrics[other], "beta").await?, "the live instance took the lease over");
    let history = bob.history("alice@alpha", None, Some(100)).await?;
    let backlog = history.messages.iter().filter(|m| m.message.starts_with("backlog")).count();
    assert_eq!(backlog, 30, "stored once each at beta");
    Ok(())
}

#[tokio::test]
async fn scripts_cluster_brings_up_a_node_of_instances_behind_nginx_and_takes_it_down() -> Result<()> {
    // What scripts/cluster needs: PostgreSQL, Redis and nginx.
    if crate::instances::shards(1).await.is_none() || crate::instances::redis_url().await.is_none() {
        return Ok(());
    }
    if crate::instances::nginx().is_none() {
        return Ok(());
    }
    let dir = tempfile::Builder::new().prefix("kith-cluster-").tempdir()?;
    // Ports for the instances (base, base+1), their federation (+100) and metrics (+200)
    // listeners: a base where all six are free now.
    let base = (0..100)
        .map(|_| crate::instances::free_port().map(|p| p.saturating_sub(300).max(20_000)))
        .filter_map(Result::ok)
        .find(|base| {
            [0, 1, 100, 101, 200, 201]
                .iter()
                .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok())
        })
        .context("no free ports for scripts/cluster")?;
    let front = crate::instances::free_port()?;
    let name = format!("cluster{}", std::process::id());
    let script = |command: &[&str]| {
        let mut run = tokio::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster"));
        run.args(command)
            .env("KITH_BIN", TestNode::binary())
            .env("KITH_CLUSTER_DIR", dir.path())
            .env("KITH_CLUSTER_BASE", base.to_string())
            .env("KITH_CLUSTER_DB", format!("kith_test_{name}_"))
            .env("KITH_CLUSTER_PG", "postgres://postgres@127.0.0.1:5432")
            .kill_on_drop(true);
        let command = command.join(" ");
        async move {
            let out = tokio::time::timeout(PATIENCE * 3, run.output()).await.context("scripts/cluster hung")??;
            let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            anyhow::ensure!(out.status.success(), "scripts/cluster {command} failed:\n{said}");
            Ok(said)
        }
    };
    let port = front.to_string();
    let said = script(&["up", "--instances", "2", "--shards", "2", "--port", &port, "--name", &name]).await?;
    let front = kith_client::Client::new(&format!("http://127.0.0.1:{front}"))?;
    let outcome = async {
        let alice = front.register("alice", crate::harness::PASSWORD).await?;
        let bob = front.register("bob", crate::harness::PASSWORD).await?;
        let mut bob_ws = bob.connect().await?;
        alice.send_message("bob", "through nginx", None).await?;
        anyhow::ensure!(frame_where(&mut bob_ws, message).await?.message == "through nginx");
        anyhow::Ok(())
    }
    .await;
    let stopped = script(&["down", "--drop"]).await;
    outcome.with_context(|| format!("scripts/cluster said:\n{said}"))?;
    stopped?;
    Ok(())
}

#[tokio::test]
async fn instances_share_their_secrets_through_a_shared_data_dir_or_files_named_in_the_environment() -> Result<()> {
    let Some(redis) = crate::instances::redis_url().await else { return Ok(()) };
    let Some(shards) = crate::instances::shards(1).await else { return Ok(()) };
    let shared = tempfile::Builder::new().prefix("kith-shared-").tempdir()?;
    let prefix = format!("kith-test:{}:secrets:", std::process::id());
    let common = |id: &str| {
        vec![
            "--redis-url".to_owned(),
            redis.clone(),
            "--redis-prefix".into(),
            prefix.clone(),
            "--instance-id".into(),
            id.into(),
        ]
    };
    // Instance 0 keeps its secrets in a data directory the instances share: it creates them.
    let args = common("i0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = TestNode::prepare("alpha", crate::harness::Backend::Shards(shards.clone()), &args)?;
    first.omit_flag("--data-dir");
    let shared_dir = shared.path().display().to_string();
    let mut with_dir = args.clone();
    with_dir.extend(["--data-dir", shared_dir.as_str()]);
    first.set_args(&with_dir);
    first.launch().await?;
    // Instance 1 has a data directory of its own and is told where the secrets are by the
    // environment.
    let args = common("i1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut second = TestNode::prepare("alpha", crate::harness::Backend::Shards(shards), &args)?;
    second.set_env("KITH_NODE_KEY_FILE", &shared.path().join(kith_federation::NODE_KEY_FILE).display().to_string());
    second.set_env(
        "KITH_TOKEN_SECRET_FILE",
        &shared.path().join(kith_node::secrets::TOKEN_SECRET_FILE).display().to_string(),
    );
    second.launch().await?;

    // A token from one is a token at the other.
    let alice = first.user("alice").await?;
    let at_second =
        kith_client::Client::new(&format!("http://{}", second.addr))?.authed(kith_proto::rest::AuthResponse {
            user_id: alice.user_id().clone(),
            device_id: alice.device_id(),
            token: alice.token().to_owned(),
        });
    at_second.history("alice", None, None).await?;
    // Both speak to other nodes with the shared key, not one of their own.
    let shared_key = kith_federation::NodeKey::load_or_create(shared.path())?.peer_id().to_string();
    for node in [&first, &second] {
        let line = node.log_line("federation listening").await?;
        assert!(line.contains(&shared_key), "{line} is not {shared_key}");
    }
    assert!(!second.data_dir().join(kith_node::secrets::TOKEN_SECRET_FILE).exists(), "no secret of its own");
    Ok(())
}

//! End-to-end encryption as users meet it: real `kith-chat` processes on real nodes. The node
//! stores and relays envelopes it cannot read; devices decrypt; tampering, offline periods and
//! changed identities are seen for what they are; a device the node adds gets nothing; linked
//! devices share the account's identity; withheld messages do not wedge a session; profiles
//! hold nothing in clear.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_client::proto::rest::AuthResponse;
use kith_proto::{ClientFrame, ServerFrame};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::cli::{ChatUser, text_of};
use crate::harness::{Backend, PATIENCE, TestNode, frame_where, message};

#[tokio::test]
async fn two_cli_users_exchange_encrypted_messages_both_ways() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    let mut bob_live = bob.listen().await?;

    alice.send("bob", "hello bob, this is alice").await?;
    let got = bob_live.next_message().await?;
    assert_eq!(got["type"], "message");
    assert_eq!(got["text"], "hello bob, this is alice");
    assert_eq!(got["from"], "alice@test");
    assert_eq!(got["to"], "bob@test");
    assert_eq!(got["encrypted"], true);

    // Bob answers from another terminal while his listener keeps running on the same profile.
    bob.send("alice@test", "hi alice, bob here").await?;
    alice.send("bob", "how are you?").await?;
    assert_eq!(bob_live.next_message().await?["text"], "how are you?");

    let expected = ["hello bob, this is alice", "hi alice, bob here", "how are you?"];
    assert_eq!(alice.history_texts("bob").await?, expected);
    assert_eq!(bob.history_texts("alice").await?, expected);
    let alice_view = alice.history("bob").await?;
    assert_eq!(alice_view[1]["from"], "bob@test");
    assert!(alice_view.iter().all(|m| m["encrypted"] == true));

    // The human format says who wrote what.
    let printed = alice.ok(&["history", "bob"]).await?;
    assert!(printed.contains("bob@test -> alice@test: hi alice, bob here"), "{printed}");
    bob_live.kill().await
}

#[tokio::test]
async fn the_interactive_mode_sends_lines_and_shows_replies() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    let mut bob_live = bob.listen().await?;
    alice.send("bob", "earlier").await?;
    assert_eq!(bob_live.next_message().await?["text"], "earlier");

    let mut chat = alice.chat("bob")?;
    let mut input = chat.stdin.take().context("stdin")?;
    let mut output = BufReader::new(chat.stdout.take().context("stdout")?).lines();
    // The recent history comes first.
    let first = tokio::time::timeout(PATIENCE, output.next_line()).await??.context("output")?;
    assert!(first.ends_with("alice@test -> bob@test: earlier"), "{first}");

    input.write_all(b"typed in the chat\n").await?;
    assert_eq!(bob_live.next_message().await?["text"], "typed in the chat");
    bob.send("alice", "seen it").await?;
    let shown = tokio::time::timeout(PATIENCE, async {
        loop {
            match output.next_line().await? {
                Some(line) if line.contains("seen it") => return Ok::<_, anyhow::Error>(line),
                Some(_) => {}
                None => anyhow::bail!("chat ended"),
            }
        }
    })
    .await??;
    assert!(shown.ends_with("bob@test -> alice@test: seen it"), "{shown}");

    input.write_all(b"/quit\n").await?;
    let status = tokio::time::timeout(PATIENCE, chat.wait()).await??;
    assert!(status.success());
    bob_live.kill().await
}

/// Messages both ways with distinctive texts; returns the texts.
async fn converse(node: &TestNode) -> Result<Vec<&'static str>> {
    let alice = ChatUser::register(node, "alice").await?;
    let bob = ChatUser::register(node, "bob").await?;
    let secrets = ["zebra-crossing-4711", "quokka-smiles-0815", "narwhal-tusk-2342"];
    alice.send("bob", secrets[0]).await?;
    bob.send("alice", secrets[1]).await?;
    alice.send("bob", secrets[2]).await?;
    assert_eq!(bob.history_texts("alice").await?, secrets);
    assert_eq!(alice.history_texts("bob").await?, secrets);
    Ok(secrets.to_vec())
}

fn files_under(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { files.extend(files_under(&path)?) } else { files.push(path) }
    }
    Ok(files)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_sqlite_store_holds_no_plaintext() -> Result<()> {
    let node = TestNode::start().await?;
    let secrets = converse(&node).await?;
    let mut envelopes = 0;
    let files = files_under(node.data_dir())?;
    assert!(files.iter().any(|f| f.to_string_lossy().ends_with("-wal")), "the WAL is checked too: {files:?}");
    for file in &files {
        let bytes = std::fs::read(file)?;
        for secret in &secrets {
            assert!(!contains(&bytes, secret), "{} contains {secret:?}", file.display());
        }
        envelopes += usize::from(contains(&bytes, "kith.e2ee"));
    }
    assert!(envelopes > 0, "the envelopes themselves are stored");
    for secret in &secrets {
        assert!(!node.log_text().contains(secret), "the node's log contains {secret:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_postgres_store_holds_no_plaintext() -> Result<()> {
    let Some(backend) = Backend::postgres().await else { return Ok(()) };
    let node = TestNode::start_with(backend, &[]).await?;
    let secrets = converse(&node).await?;
    let pool = sqlx::PgPool::connect(&node.database_url()).await?;
    // Whole rows as text, whatever the columns are.
    let rows: Vec<(String,)> = sqlx::query_as("SELECT m::text FROM messages m").fetch_all(&pool).await?;
    pool.close().await;
    assert_eq!(rows.len(), 2 * secrets.len(), "a copy per mailbox");
    for (row,) in &rows {
        assert!(row.contains("kith.e2ee"), "{row}");
        for secret in &secrets {
            assert!(!row.contains(secret), "a messages row contains {secret:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_device_of_both_users_reads_the_conversation() -> Result<()> {
    let node = TestNode::start().await?;
    let alice_phone = ChatUser::register(&node, "alice").await?;
    let alice_laptop = ChatUser::link(&node, &alice_phone).await?;
    let bob_phone = ChatUser::register(&node, "bob").await?;
    let bob_laptop = ChatUser::link(&node, &bob_phone).await?;

    alice_phone.send("bob", "to all of bob's devices").await?;
    bob_laptop.send("alice", "answered from bob's laptop").await?;
    alice_phone.send("bob", "and one more").await?;

    let expected = ["to all of bob's devices", "answered from bob's laptop", "and one more"];
    for (device, peer) in [(&bob_phone, "alice"), (&bob_laptop, "alice"), (&alice_laptop, "bob"), (&alice_phone, "bob")]
    {
        assert_eq!(device.history_texts(peer).await?, expected, "as {} sees it", device.profile_dir().display());
    }
    // Alice's laptop shows her own phone's messages as hers.
    let laptop_view = alice_laptop.history("bob").await?;
    assert_eq!(laptop_view[0]["from"], "alice@test");
    assert_eq!(laptop_view[0]["to"], "bob@test");
    assert_ne!(laptop_view[0]["fromDevice"], alice_laptop.account()?.device_id.0);
    Ok(())
}

#[tokio::test]
async fn messages_sent_while_offline_arrive_in_order_and_decrypt() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    let mut bob_live = bob.listen().await?;
    alice.send("bob", "before the break").await?;
    assert_eq!(bob_live.next_message().await?["text"], "before the break");
    bob_live.kill().await?;

    let sent: Vec<String> = (1..=12).map(|i| format!("while you were away #{i}")).collect();
    for text in &sent {
        alice.send("bob", text).await?;
    }

    let mut bob_live = bob.listen().await?;
    let arrived: Vec<String> = bob_live.seen.iter().filter(|l| l["type"] != "caughtUp").map(text_of).collect();
    assert_eq!(arrived, sent, "everything pending, in order, before the listener was caught up");
    alice.send("bob", "welcome back").await?;
    assert_eq!(bob_live.next_message().await?["text"], "welcome back");
    bob_live.kill().await?;

    // All of it was acknowledged: a new listener gets nothing again.
    let bob_live = bob.listen().await?;
    assert_eq!(bob_live.seen.len(), 1, "only caughtUp: {:?}", bob_live.seen);
    bob_live.kill().await
}

#[tokio::test]
async fn a_tampered_ciphertext_is_reported_and_later_messages_still_decrypt() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    alice.send("bob", "hello").await?;
    assert_eq!(bob.history_texts("alice").await?, ["hello"]);
    bob.send("alice", "hi").await?;
    assert_eq!(alice.history_texts("bob").await?, ["hello", "hi"]);

    // A server that takes a message away (here: acknowledging it on bob's device) ...
    let alice_account = alice.account()?;
    let alice_api = node.client().authed(AuthResponse {
        user_id: alice_account.user_id,
        device_id: alice_account.device_id,
        token: alice_account.token,
    });
    let mut alice_ws = alice_api.connect().await?;
    alice.send("bob", "the original").await?;
    let bob_account = bob.account()?;
    let bob_api = node.client().authed(AuthResponse {
        user_id: bob_account.user_id.clone(),
        device_id: bob_account.device_id,
        token: bob_account.token.clone(),
    });
    let mut bob_ws = bob_api.connect().await?;
    let original = frame_where(&mut bob_ws, message).await?;
    bob_ws.send(&ClientFrame::Ack { message_id: original.message_id }).await?;
    // The receipt reaches the sender once the acknowledgement is committed.
    frame_where(&mut alice_ws, |f| match f {
        ServerFrame::Receipt { message_id, .. } if message_id == original.message_id => Some(()),
        _ => None,
    })
    .await?;
    bob_ws.close().await?;
    alice_ws.close().await?;

    // ... and puts in a copy with one bit of bob's ciphertext flipped, sent with alice's token.
    let mut envelope: Value = serde_json::from_str(&original.message)?;
    let entry = envelope["to"]
        .as_array_mut()
        .context("to")?
        .iter_mut()
        .find(|r| r["userId"] == "bob@test")
        .context("bob's copy")?;
    let mut body = BASE64.decode(entry["body"].as_str().context("body")?)?;
    let middle = body.len() - 20;
    body[middle] ^= 0x01;
    entry["body"] = BASE64.encode(&body).into();
    alice_api.send_message("bob", &envelope.to_string(), None).await?;
    alice.send("bob", "after the tampering").await?;

    let bob_live = bob.listen().await?;
    let reported = bob_live.seen.iter().find(|l| l["type"] == "undecryptable").cloned();
    let reported = reported.context("the tampered message is reported")?;
    assert_eq!(reported["from"], "alice@test");
    assert!(reported["reason"].as_str().is_some_and(|r| r.contains("failed authentication")), "{reported}");
    let texts: Vec<String> = bob_live.seen.iter().filter(|l| l["type"] != "caughtUp").map(text_of).collect();
    assert_eq!(texts, ["<undecryptable>", "after the tampering"]);
    bob_live.kill().await?;

    // The history keeps the gap, and the human format says what happened.
    assert_eq!(bob.history_texts("alice").await?, ["hello", "hi", "<undecryptable>", "after the tampering"]);
    let printed = bob.ok(&["history", "alice"]).await?;
    assert!(printed.contains("could not be decrypted"), "{printed}");
    bob.send("alice", "still talking").await?;
    assert_eq!(alice.history_texts("bob").await?.last().map(String::as_str), Some("still talking"));
    Ok(())
}

#[tokio::test]
async fn a_changed_identity_is_announced_loudly_and_blocks_sending_until_trusted() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    let bob_device = bob.account()?.device_id.0;
    alice.send("bob", "hello").await?;
    assert_eq!(bob.history_texts("alice").await?, ["hello"]);

    let before = alice.safety_number("bob").await?;
    assert_eq!(bob.safety_number("alice").await?, before, "both sides see the same number");

    // Bob lost his phone and starts over: a new identity, on the same device id.
    let mut alice_live = alice.listen().await?;
    let bob_again = ChatUser::start_over(&node, "bob", Some(bob_device)).await?;
    let changed = alice_live.next_where(|l| l["type"] == "identityChanged").await?;
    assert_eq!(changed["userId"], "bob@test");
    let stderr = alice_live.stderr_contains("HAS CHANGED").await?;
    assert!(stderr.contains("kith-chat trust bob@test"), "{stderr}");

    let after = alice.safety_number("bob").await?;
    assert_eq!(bob_again.safety_number("alice").await?, after, "both sides agree again");
    assert_ne!(after, before, "and the number is not the old one");

    let refused = alice.run(&["send", "bob", "are you really bob?"]).await?;
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("CHANGED") && refused.stderr.contains("kith-chat trust bob@test"),
        "{}",
        refused.stderr
    );
    let listed = alice.run(&["history", "bob"]).await?;
    assert!(listed.stderr.contains("HAS CHANGED"), "{}", listed.stderr);

    assert!(alice.ok(&["trust", "bob"]).await?.contains("accepted"));
    alice.send("bob", "welcome back, bob").await?;
    assert_eq!(bob_again.history_texts("alice").await?, ["welcome back, bob"]);
    alice_live.kill().await
}

#[tokio::test]
async fn failures_are_one_clear_line() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    ChatUser::register(&node, "bob").await?;

    let unknown = alice.run(&["send", "nobody", "hi"]).await?;
    assert!(!unknown.success);
    assert_eq!(unknown.stderr, "error: no such user: nobody@test\n");

    let taken = ChatUser::link(&node, &alice).await?;
    let again = taken.run(&["register", "carol"]).await?;
    assert!(!again.success);
    assert!(
        again.stderr.starts_with("error: the profile in ") && again.stderr.contains("already belongs to alice@test")
    );

    // A server that is not there: a port held by a socket that does not listen, so nothing
    // else can take it meanwhile (as a freed port could be) and every connection is refused.
    let nobody = tokio::net::TcpSocket::new_v4()?;
    nobody.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let down_at = format!("http://{}", nobody.local_addr()?);
    let down = alice.run_at(&down_at, &["send", "bob", "hi"]).await?;
    assert!(!down.success);
    let expected = format!("error: cannot reach {down_at}: connection refused");
    assert!(down.stderr.starts_with(&expected), "{}", down.stderr);
    assert_eq!(down.stderr.lines().count(), 1, "{}", down.stderr);
    let listen = alice.run_at(&down_at, &["listen"]).await?;
    assert!(!listen.success);
    assert!(listen.stderr.starts_with(&expected), "{}", listen.stderr);
    Ok(())
}

/// Files under `dir`, recursively.
fn all_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    files_under(dir)
}

#[tokio::test]
async fn a_password_alone_does_not_make_a_trusted_device() -> Result<()> {
    let node = TestNode::start().await?;
    ChatUser::register(&node, "alice").await?;
    let stranger = crate::cli::ChatUser::register(&node, "someone").await?;
    let fresh = tempfile::tempdir()?;
    let refused = stranger.command(&["login", "alice"]).env("KITH_PROFILE", fresh.path()).output().await?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr)?;
    assert!(stderr.contains("not linked to alice@test") && stderr.contains("kith-chat link accept"), "{stderr}");
    assert!(!fresh.path().join("state.json").exists(), "no profile was made");
    Ok(())
}

#[tokio::test]
async fn a_device_the_server_adds_gets_nothing_readable_and_the_sender_says_why() -> Result<()> {
    use kith_crypto::{DeviceIdentity, SignedPreKey, UserIdentity};
    use rand_core::UnwrapErr;

    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    let bob_device = bob.account()?.device_id.0;

    // The node (here: rows written straight into its database) adds two devices to bob: one
    // without a certificate, one with a certificate by an identity the node made.
    let mut rng = UnwrapErr(getrandom::SysRng);
    let pool = sqlx::SqlitePool::connect(&node.database_url()).await?;
    let intruder = UserIdentity::generate(&mut rng);
    for (device, certified) in [(77i64, false), (78, true)] {
        let ghost = DeviceIdentity::generate(&mut rng);
        let signed = SignedPreKey::generate(1, &ghost, &mut rng);
        sqlx::query(
            "INSERT INTO devices (user_id, device_id, created_at, identity, signed_prekey) VALUES (?, ?, 0, ?, ?)",
        )
        .bind("bob@test")
        .bind(device)
        .bind(ghost.public().to_bytes())
        .bind(signed.public().to_bytes())
        .execute(&pool)
        .await?;
        if certified {
            let certificate = intruder.certify("bob@test", u32::try_from(device)?, ghost.public())?;
            sqlx::query("INSERT INTO device_certificates (user_id, device_id, certificate) VALUES (?, ?, ?)")
                .bind("bob@test")
                .bind(device)
                .bind(certificate.to_bytes())
                .execute(&pool)
                .await?;
        }
    }
    pool.close().await;

    // Alice writes to bob for the first time: her client fetches bob's devices and refuses
    // the two, saying why.
    let sent = alice.run(&["send", "bob", "for bob's eyes only"]).await?;
    assert!(sent.success, "{}", sent.stderr);
    for device in ["77", "78"] {
        assert!(sent.stderr.contains(&format!("NOT writing to device {device} of bob@test")), "{}", sent.stderr);
    }
    assert!(sent.stderr.contains("it has no certificate"), "{}", sent.stderr);
    assert!(sent.stderr.contains("signed by another identity"), "{}", sent.stderr);

    // The envelope the node stored has a copy for bob's real device only.
    let history = alice.history("bob").await?;
    assert_eq!(history.len(), 1);
    let alice_account = alice.account()?;
    let api = node.client().authed(AuthResponse {
        user_id: alice_account.user_id,
        device_id: alice_account.device_id,
        token: alice_account.token,
    });
    let stored = api.history("bob", None, None).await?.messages;
    let envelope: Value = serde_json::from_str(&stored[0].message)?;
    let readers: Vec<(String, u64)> = envelope["to"]
        .as_array()
        .context("to")?
        .iter()
        .map(|r| (r["userId"].as_str().unwrap_or_default().to_owned(), r["deviceId"].as_u64().unwrap_or_default()))
        .collect();
    assert_eq!(readers, [("bob@test".to_owned(), u64::from(bob_device))]);
    assert_eq!(bob.history_texts("alice").await?, ["for bob's eyes only"]);
    Ok(())
}

#[tokio::test]
async fn a_linked_device_reads_new_messages_and_the_safety_number_stays() -> Result<()> {
    let node = TestNode::start().await?;
    let alice_phone = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    alice_phone.send("bob", "before the laptop").await?;
    assert_eq!(bob.history_texts("alice").await?, ["before the laptop"]);
    let number = bob.safety_number("alice").await?;

    let mut bob_live = bob.listen().await?;
    let alice_laptop = ChatUser::link(&node, &alice_phone).await?;
    // Bob hears of the new device (certified by alice's identity), not of a changed identity.
    let news = bob_live.next_where(|l| l["type"] == "newDevice").await?;
    assert_eq!(news["userId"], "alice@test");
    assert_eq!(news["deviceId"], alice_laptop.account()?.device_id.0);
    assert!(!bob_live.seen.iter().any(|l| l["type"] == "identityChanged"), "{:?}", bob_live.seen);
    bob_live.kill().await?;

    bob.send("alice", "after the laptop").await?;
    alice_laptop.send("bob", "typed on the laptop").await?;
    let after = ["after the laptop", "typed on the laptop"];
    assert_eq!(alice_laptop.history_texts("bob").await?, after, "the laptop has what came after the link");
    assert_eq!(alice_phone.history_texts("bob").await?, ["before the laptop", after[0], after[1]]);
    assert_eq!(bob.history_texts("alice").await?, ["before the laptop", after[0], after[1]]);
    // One number per pair of users, whatever devices they have.
    assert_eq!(bob.safety_number("alice").await?, number);
    assert_eq!(alice_laptop.safety_number("bob").await?, number);
    assert_eq!(alice_phone.safety_number("bob").await?, number);

    // The phone removes the laptop with a signed removal: bob stops writing to it.
    let laptop_device = alice_laptop.account()?.device_id.0;
    let devices = alice_phone.ok(&["devices"]).await?;
    assert!(devices.contains(&format!("device {laptop_device}")), "{devices}");
    let mut bob_live = bob.listen().await?;
    alice_phone.ok(&["remove-device", &laptop_device.to_string()]).await?;
    let removed = bob_live.next_where(|l| l["type"] == "deviceRemoved").await?;
    assert_eq!(removed["deviceId"], laptop_device);
    bob_live.kill().await?;
    bob.send("alice", "after the removal").await?;
    let bob_account = bob.account()?;
    let api = node.client().authed(AuthResponse {
        user_id: bob_account.user_id,
        device_id: bob_account.device_id,
        token: bob_account.token,
    });
    let stored = api.history("alice", None, None).await?.messages;
    let last: Value = serde_json::from_str(&stored.last().context("a message")?.message)?;
    let devices: Vec<u64> =
        last["to"].as_array().context("to")?.iter().filter_map(|r| r["deviceId"].as_u64()).collect();
    assert!(!devices.contains(&u64::from(laptop_device)), "{devices:?}");
    assert_eq!(alice_phone.history_texts("bob").await?.last().map(String::as_str), Some("after the removal"));
    Ok(())
}

#[tokio::test]
async fn three_thousand_withheld_messages_do_not_wedge_the_session() -> Result<()> {
    use kith_client::Messenger;

    // No per-user message rate: this test sends 3,000 at once.
    let node = TestNode::start_with(Backend::Sqlite, &["--message-rate", "0"]).await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    alice.send("bob", "hello").await?;
    bob.send("alice", "hi").await?;
    assert_eq!(alice.history_texts("bob").await?, ["hello", "hi"]);
    assert_eq!(bob.history_texts("alice").await?, ["hello", "hi"]);

    // Alice sends 3,000 messages (through the SDK's bulk send, which saves once rather than
    // 3,000 times) that the node drops before bob's device gets them.
    let mut sdk = Messenger::open(alice.open_profile(), None)?;
    let bob_id = sdk.resolve("bob")?;
    let texts: Vec<String> = (0..3000).map(|i| format!("withheld {i}")).collect();
    assert_eq!(sdk.send_all(&bob_id, &texts).await?.len(), 3000);
    let pool = sqlx::SqlitePool::connect(&node.database_url()).await?;
    let dropped = sqlx::query("DELETE FROM device_pending WHERE owner_id = 'bob@test'").execute(&pool).await?;
    pool.close().await;
    assert_eq!(dropped.rows_affected(), 3000);

    alice.send("bob", "after the gap").await?;
    let mut bob_live = bob.listen().await?;
    let lost = bob_live.seen.iter().find(|l| l["type"] == "messagesLost").cloned().context("the gap is reported")?;
    assert_eq!(lost["userId"], "alice@test");
    assert_eq!(lost["count"], 2000, "the newest 1,000 keys are kept, the rest are lost: {lost}");
    let texts: Vec<String> = bob_live.seen.iter().filter(|l| l["type"] == "message").map(text_of).collect();
    assert_eq!(texts, ["after the gap"]);
    // Nothing wedged: the conversation goes on both ways.
    bob.send("alice", "still here").await?;
    alice.send("bob", "me too").await?;
    assert_eq!(bob_live.next_message().await?["text"], "me too");
    bob_live.kill().await?;
    assert_eq!(alice.history_texts("bob").await?.last().map(String::as_str), Some("me too"));
    Ok(())
}

#[tokio::test]
async fn profiles_on_disk_hold_no_key_material_or_plaintext_in_clear() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = ChatUser::register(&node, "alice").await?;
    let bob = ChatUser::register(&node, "bob").await?;
    let secrets = ["kestrel-over-the-dunes-1193", "lantern-under-water-5521"];
    alice.send("bob", secrets[0]).await?;
    bob.send("alice", secrets[1]).await?;
    assert_eq!(alice.history_texts("bob").await?, secrets);
    assert_eq!(bob.history_texts("alice").await?, secrets);

    // What a reader of the files must not find: the texts, the login tokens, and the keys
    // (the node's copies of the public halves stand in for the secrets it never saw; any key
    // in clear would show next to them).
    let mut needles: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
    for user in [&alice, &bob] {
        needles.push(user.account()?.token);
        let listed = node.user(&format!("reader-of-{}", user.account()?.user_id.name())).await?;
        let bundles = listed.device_keys(user.account()?.user_id.as_str()).await?;
        needles.extend(bundles.user_identity.clone());
        for device in &bundles.devices {
            needles.extend(device.certificate.clone());
            let bundle = BASE64.decode(&device.bundle)?;
            // The device's public identity, as encoded in the bundle (130 bytes from offset 2).
            let identity = [&[2u8, 0x10][..], &bundle[2..130]].concat();
            needles.push(BASE64.encode(&identity));
            needles.push(identity.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    for user in [&alice, &bob] {
        for file in all_files(user.profile_dir())? {
            let bytes = std::fs::read(&file)?;
            for needle in &needles {
                assert!(!contains(&bytes, needle), "{} holds {needle:?} in clear", file.display());
            }
        }
    }

    // Without a passphrase a profile is made in clear, and kith-chat says so once.
    let plain = tempfile::tempdir()?;
    let made = alice
        .command(&["register", "carol"])
        .env("KITH_PROFILE", plain.path())
        .env("KITH_PASSPHRASE", "")
        .output()
        .await?;
    assert!(made.status.success());
    let warning = String::from_utf8(made.stderr)?;
    assert_eq!(warning.matches("NOT encrypted").count(), 1, "{warning}");
    let quiet = alice.run(&["history", "bob"]).await?;
    assert!(!quiet.stderr.contains("NOT encrypted"), "{}", quiet.stderr);
    Ok(())
}

//! End-to-end encryption as users meet it: real `kith-chat` processes on real nodes. The node
//! stores and relays envelopes it cannot read; devices decrypt; tampering, offline periods and
//! changed identities are seen for what they are.

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
    let alice_laptop = ChatUser::login(&node, "alice", None).await?;
    let bob_phone = ChatUser::register(&node, "bob").await?;
    let bob_laptop = ChatUser::login(&node, "bob", None).await?;

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

    let before = alice.safety_numbers("bob").await?;
    assert_eq!(before.len(), 1);
    assert_eq!(bob.safety_numbers("alice").await?, before, "both sides see the same number");

    // Bob reinstalls: a new profile on the same device.
    let mut alice_live = alice.listen().await?;
    let bob_again = ChatUser::login(&node, "bob", Some(bob_device)).await?;
    let changed = alice_live.next_where(|l| l["type"] == "identityChanged").await?;
    assert_eq!(changed["userId"], "bob@test");
    assert_eq!(changed["deviceId"], bob_device);
    let stderr = alice_live.stderr_contains("HAS CHANGED").await?;
    assert!(stderr.contains("kith-chat trust bob@test"), "{stderr}");

    let after = alice.safety_numbers("bob").await?;
    assert_eq!(bob_again.safety_numbers("alice").await?, after, "both sides agree again");
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

    let taken = ChatUser::login(&node, "alice", None).await?;
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

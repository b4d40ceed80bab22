//! Messages between two users of one node: real time, REST to WebSocket, offline
//! redelivery, idempotent sends.

use anyhow::Result;
use kith_proto::{ClientFrame, DeviceId, ErrorCode, MessageStatus, ServerFrame};

use crate::harness::{PASSWORD, TestNode, closed, frame_where, message, next_any, send};

#[tokio::test]
async fn two_users_chat_over_websocket_in_real_time() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut alice_ws = alice.connect().await?;
    let mut bob_ws = bob.connect().await?;

    alice_ws.send(&send("a-1", "bob", "hi bob")).await?;
    let (sent_id, _) = frame_where(&mut alice_ws, |f| match f {
        ServerFrame::Sent { client_message_id, message_id, timestamp } if client_message_id == "a-1" => {
            Some((message_id, timestamp))
        }
        _ => None,
    })
    .await?;
    let got = frame_where(&mut bob_ws, message).await?;
    assert_eq!(got.message_id, sent_id);
    assert_eq!(got.sender_id.as_str(), "alice@test");
    assert_eq!(got.receiver_id.as_str(), "bob@test");
    assert_eq!(got.message, "hi bob");

    bob_ws.send(&send("b-1", "alice@test", "hi alice")).await?;
    let reply = frame_where(&mut alice_ws, message).await?;
    assert_eq!(reply.message, "hi alice");
    assert_eq!(reply.sender_id.as_str(), "bob@test");
    Ok(())
}

#[tokio::test]
async fn every_open_session_of_the_receiver_gets_the_message() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut phone = bob.connect().await?;
    let mut laptop = bob.connect().await?;
    alice.send_message("bob", "to both", None).await?;
    assert_eq!(frame_where(&mut phone, message).await?.message, "to both");
    assert_eq!(frame_where(&mut laptop, message).await?.message, "to both");
    Ok(())
}

#[tokio::test]
async fn rest_send_reaches_a_websocket_receiver() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut bob_ws = bob.connect().await?;
    let (_, sent) = alice.send_message("bob@test", "over REST", Some("r-1")).await?;
    let got = frame_where(&mut bob_ws, message).await?;
    assert_eq!(got.message_id, sent.message_id);
    assert_eq!(got.message, "over REST");
    assert_eq!(got.timestamp, sent.timestamp);
    Ok(())
}

#[tokio::test]
async fn offline_receiver_gets_everything_in_order_on_connect_and_nothing_again_after_acking() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut sent = Vec::new();
    for i in 0..20 {
        let (_, response) = alice.send_message("bob", &format!("message {i}"), None).await?;
        sent.push(response.message_id);
    }

    // Connecting without acking: all twenty, in order, then `synced`.
    let mut first = bob.connect().await?;
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(frame_where(&mut first, message).await?);
    }
    assert_eq!(next_any(&mut first).await?, ServerFrame::Synced, "synced follows the replay");
    assert_eq!(received.iter().map(|m| m.message_id).collect::<Vec<_>>(), sent);
    assert_eq!(received[7].message, "message 7");
    first.close().await?;

    // Unacked, so they come again; this time ack them all. Alice watches for the receipts,
    // which the node sends once each ack is committed.
    let mut alice_ws = alice.connect().await?;
    let mut second = bob.connect().await?;
    for expected in &sent {
        let m = frame_where(&mut second, message).await?;
        assert_eq!(&m.message_id, expected);
        second.send(&ClientFrame::Ack { message_id: m.message_id }).await?;
    }
    let mut unreceipted: std::collections::HashSet<_> = sent.iter().copied().collect();
    while !unreceipted.is_empty() {
        let id = frame_where(&mut alice_ws, |f| match f {
            ServerFrame::Receipt { message_id, status: MessageStatus::Delivered, .. } => Some(message_id),
            _ => None,
        })
        .await?;
        unreceipted.remove(&id);
    }
    second.close().await?;

    // Nothing comes again: the first message a new session sees is one sent after it connected.
    let mut third = bob.connect().await?;
    let (_, marker) = alice.send_message("bob", "after the acks", None).await?;
    let first_seen = frame_where(&mut third, message).await?;
    assert_eq!(first_seen.message_id, marker.message_id, "acked messages must not come again");
    Ok(())
}

#[tokio::test]
async fn the_same_client_message_id_twice_is_one_message() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;

    let (first_kind, first) = alice.send_message("bob", "once", Some("dup-1")).await?;
    let (second_kind, second) = alice.send_message("bob", "once", Some("dup-1")).await?;
    assert_eq!(first_kind, kith_client::Sent::New);
    assert_eq!(second_kind, kith_client::Sent::Repeat);
    assert_eq!(first.message_id, second.message_id);
    assert_eq!(first.timestamp, second.timestamp);

    // Over the WebSocket too: both `sent` frames name the first message.
    let mut ws = alice.connect().await?;
    ws.send(&send("dup-1", "bob", "once")).await?;
    ws.send(&send("dup-1", "bob", "once")).await?;
    for _ in 0..2 {
        let id = frame_where(&mut ws, |f| match f {
            ServerFrame::Sent { message_id, .. } => Some(message_id),
            _ => None,
        })
        .await?;
        assert_eq!(id, first.message_id);
    }

    let page = bob.history("alice", None, None).await?;
    assert_eq!(page.messages.len(), 1, "one message stored: {:?}", page.messages);
    // The same id from another sender is another message.
    let (kind, other) = bob.send_message("alice", "mine", Some("dup-1")).await?;
    assert_eq!(kind, kith_client::Sent::New);
    assert_ne!(other.message_id, first.message_id);
    Ok(())
}

#[tokio::test]
async fn a_message_to_oneself_reaches_ones_other_devices() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let laptop = node.client().device(DeviceId(1)).login("alice", PASSWORD).await?;
    let mut laptop_ws = laptop.connect().await?;
    let (_, sent) = alice.send_message("alice", "note to self", None).await?;
    let got = frame_where(&mut laptop_ws, message).await?;
    assert_eq!(got.message_id, sent.message_id);
    assert_eq!(alice.history("alice", None, None).await?.messages.len(), 1);
    Ok(())
}

#[tokio::test]
async fn every_device_gets_its_own_copy_until_it_acks_and_the_senders_other_devices_see_the_chat() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let alice_laptop = node.client().device(DeviceId(1)).login("alice", PASSWORD).await?;
    let bob_phone = node.user("bob").await?;
    let bob_laptop = node.client().device(DeviceId(1)).login("bob", PASSWORD).await?;
    let (_, sent) = alice.send_message("bob", "for all of bob", None).await?;

    // The phone acks; the laptop, offline meanwhile, still gets the message when it connects.
    let mut alice_ws = alice.connect().await?;
    let mut phone = bob_phone.connect().await?;
    let got = frame_where(&mut phone, message).await?;
    phone.send(&ClientFrame::Ack { message_id: got.message_id }).await?;
    let receipt = frame_where(&mut alice_ws, |f| match f {
        ServerFrame::Receipt { message_id, status, .. } => Some((message_id, status)),
        _ => None,
    })
    .await?;
    assert_eq!(receipt, (sent.message_id, MessageStatus::Delivered));
    let mut laptop = bob_laptop.connect().await?;
    assert_eq!(frame_where(&mut laptop, message).await?.message_id, sent.message_id);
    phone.close().await?;
    let mut phone_again = bob_phone.connect().await?;
    let (_, marker) = alice.send_message("bob", "marker", None).await?;
    assert_eq!(frame_where(&mut phone_again, message).await?.message_id, marker.message_id, "acked on the phone");

    // Alice's other device got her outgoing message too.
    let mut alice_laptop_ws = alice_laptop.connect().await?;
    let copy = frame_where(&mut alice_laptop_ws, message).await?;
    assert_eq!((copy.message_id, copy.sender_id.as_str()), (sent.message_id, "alice@test"));
    Ok(())
}

#[tokio::test]
async fn a_sixth_device_is_refused_until_one_is_removed() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    for device in 1..5 {
        node.client().device(DeviceId(device)).login("alice", PASSWORD).await?;
    }
    let sixth = node.client().device(DeviceId(5)).login("alice", PASSWORD).await;
    assert!(
        matches!(sixth, Err(kith_client::ClientError::Api { status: 409, code: ErrorCode::TooManyDevices, .. })),
        "{sixth:?}"
    );
    let old = node.client().device(DeviceId(4)).login("alice", PASSWORD).await?;
    let mut old_ws = old.connect().await?;
    alice.remove_device(DeviceId(4)).await?;
    // The removed device's open connection ends, its token no longer opens one, nor sends.
    closed(&mut old_ws).await?;
    let refused = old.connect().await;
    assert!(matches!(refused, Err(kith_client::ClientError::Api { status: 401, .. })), "{refused:?}");
    let send = old.send_message("alice", "from a lost phone", None).await;
    assert!(matches!(send, Err(kith_client::ClientError::Api { status: 401, .. })), "{send:?}");
    node.client().device(DeviceId(5)).login("alice", PASSWORD).await?;
    Ok(())
}

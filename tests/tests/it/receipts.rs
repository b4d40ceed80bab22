//! Receipts: the receiver's ack and read reach the sender and show in history; status only
//! moves forward.

use anyhow::Result;
use kith_proto::{ClientFrame, MessageId, MessageStatus, ServerFrame};

use crate::harness::{TestNode, frame_where, message};

fn receipt(frame: ServerFrame) -> Option<(MessageId, MessageStatus)> {
    match frame {
        ServerFrame::Receipt { message_id, status, .. } => Some((message_id, status)),
        _ => None,
    }
}

#[tokio::test]
async fn delivered_and_read_receipts_reach_the_sender_and_show_in_history() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut alice_ws = alice.connect().await?;
    let mut bob_ws = bob.connect().await?;

    let (_, sent) = alice.send_message("bob", "did you get this?", None).await?;
    assert_eq!(alice.history("bob", None, None).await?.messages[0].status, MessageStatus::Sent);

    let got = frame_where(&mut bob_ws, message).await?;
    bob_ws.send(&ClientFrame::Ack { message_id: got.message_id }).await?;
    assert_eq!(frame_where(&mut alice_ws, receipt).await?, (sent.message_id, MessageStatus::Delivered));
    assert_eq!(alice.history("bob", None, None).await?.messages[0].status, MessageStatus::Delivered);

    bob_ws.send(&ClientFrame::Read { message_id: got.message_id }).await?;
    assert_eq!(frame_where(&mut alice_ws, receipt).await?, (sent.message_id, MessageStatus::Read));
    // Both copies say so: the sender's and the receiver's.
    assert_eq!(alice.history("bob", None, None).await?.messages[0].status, MessageStatus::Read);
    assert_eq!(bob.history("alice", None, None).await?.messages[0].status, MessageStatus::Read);

    // A late ack does not move it back, and tells the sender nothing new: the next receipt
    // alice sees is for a later message.
    bob_ws.send(&ClientFrame::Ack { message_id: got.message_id }).await?;
    let (_, later) = alice.send_message("bob", "and this?", None).await?;
    bob_ws.send(&ClientFrame::Read { message_id: later.message_id }).await?;
    assert_eq!(frame_where(&mut alice_ws, receipt).await?, (later.message_id, MessageStatus::Read));
    let history = alice.history("bob", None, None).await?;
    assert_eq!(history.messages[0].status, MessageStatus::Read);
    Ok(())
}

#[tokio::test]
async fn read_without_ack_stops_redelivery() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut alice_ws = alice.connect().await?;
    let (_, sent) = alice.send_message("bob", "read me", None).await?;
    let mut bob_ws = bob.connect().await?;
    let got = frame_where(&mut bob_ws, message).await?;
    bob_ws.send(&ClientFrame::Read { message_id: got.message_id }).await?;
    assert_eq!(frame_where(&mut alice_ws, receipt).await?, (sent.message_id, MessageStatus::Read));
    bob_ws.close().await?;

    let mut again = bob.connect().await?;
    let (_, marker) = alice.send_message("bob", "marker", None).await?;
    assert_eq!(frame_where(&mut again, message).await?.message_id, marker.message_id);
    Ok(())
}

//! WebSocket sessions as a client meets their end: a token that expires while the socket is
//! open, and a client that stops reading while others carry on. (The exact timings are unit
//! tests of the WebSocket loop on paused time, in kith-client-api.)

use anyhow::{Result, bail};
use kith_client::ClientError;
use kith_proto::{ClientFrame, ErrorCode, MessageId, PresenceStatus, ServerFrame};

use crate::harness::{Backend, PASSWORD, TestNode, closed, frame_where, message};

#[tokio::test]
async fn a_socket_closes_with_4001_when_its_token_expires_and_a_new_login_carries_on() -> Result<()> {
    let node = TestNode::start_with(Backend::Sqlite, &["--token-ttl", "1s"]).await?;
    let alice = node.user("alice").await?;
    node.user("bob").await?;
    let mut ws = alice.connect().await?;
    // The socket stays up while the token is good (one second, and five of leeway), then:
    let (code, reason) = closed(&mut ws).await?;
    assert_eq!(code, 4001, "{reason}");
    let expired = alice.send_message("bob", "with the old token", None).await;
    assert!(matches!(expired, Err(ClientError::Api { status: 401, code: ErrorCode::TokenExpired, .. })), "{expired:?}");
    let refused = alice.connect().await;
    assert!(matches!(refused, Err(ClientError::Api { status: 401, code: ErrorCode::TokenExpired, .. })), "{refused:?}");

    let again = node.client().login("alice", PASSWORD).await?;
    let bob = node.client().login("bob", PASSWORD).await?;
    let mut ws = again.connect().await?;
    let (_, sent) = bob.send_message("alice", "welcome back", None).await?;
    assert_eq!(frame_where(&mut ws, message).await?.message_id, sent.message_id);
    Ok(())
}

fn offline(user: &str) -> impl FnMut(ServerFrame) -> Option<()> + '_ {
    move |frame| match frame {
        ServerFrame::Presence(p) if p.user_id.as_str() == user && p.status == PresenceStatus::Offline => Some(()),
        _ => None,
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013_others_carry_on_and_nothing_is_lost() -> Result<()> {
    // Four pushes may wait for a session; past that it is too slow.
    let node = TestNode::start_with(Backend::Sqlite, &["--session-queue", "4", "--message-rate", "0"]).await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    bob.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let carol = node.user("carol").await?;
    let mut carol_ws = carol.connect().await?;
    let mut bob_ws = bob.connect().await?;
    carol_ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    frame_where(&mut carol_ws, |f| matches!(f, ServerFrame::Presence(_)).then_some(())).await?;

    // Bob stops reading. Alice sends him big messages until his socket's buffers are full, his
    // queue overflows and the node lets go of his session (carol sees him go offline).
    let big = "x".repeat(60 * 1024);
    let mut sent: Vec<MessageId> = Vec::new();
    loop {
        tokio::select! {
            biased;
            gone = frame_where(&mut carol_ws, offline("bob@test")) => {
                gone?;
                break;
            }
            answer = alice.send_message("bob", &big, None) => sent.push(answer?.1.message_id),
        }
        if sent.len() > 2_000 {
            bail!("bob's session survived {} unread messages", sent.len());
        }
    }
    // Bob reads at last: what the buffers held, then the close that tells him to reconnect.
    let (code, reason) = closed(&mut bob_ws).await?;
    assert_eq!(code, 1013, "{reason}");

    // Carol was never disturbed.
    let (_, to_carol) = alice.send_message("carol", "are you still there?", None).await?;
    assert_eq!(frame_where(&mut carol_ws, message).await?.message_id, to_carol.message_id);

    // Bob reconnects and gets everything, in order.
    let mut again = bob.connect().await?;
    let mut replayed = Vec::new();
    while replayed.len() < sent.len() {
        replayed.push(frame_where(&mut again, message).await?.message_id);
    }
    assert_eq!(replayed, sent, "every message sent to bob comes again, in order");
    Ok(())
}

//! Bad input gets a clear error and disturbs nobody: malformed JSON, bad tokens, oversized
//! messages and frames, and users trying to act as each other.

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{EncodingKey, Header};
use kith_client::ClientError;
use kith_proto::limits::{MAX_MESSAGE_BYTES, MAX_WS_FRAME_BYTES};
use kith_proto::{ClientFrame, ErrorBody, ErrorCode, ServerFrame};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{
    Attempt, PATIENCE, TestNode, closed, frame_where, http, message, next_any, next_frame, refilled_since, send,
    spend_allowance,
};

/// A raw request's status and error code.
async fn error_of(response: reqwest::Response) -> Result<(StatusCode, ErrorCode, String)> {
    let status = response.status();
    let body: ErrorBody = response.json().await?;
    Ok((status, body.error.code, body.error.message))
}

fn token(node: &TestNode, sub: &str, exp_offset_secs: i64, secret: Option<&[u8]>) -> Result<String> {
    let own = std::fs::read(node.data_dir().join("token-secret.key"))?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": sub,
        "iss": "test",
        "iat": now,
        "exp": now.saturating_add_signed(exp_offset_secs),
        "did": 0,
    });
    Ok(jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.unwrap_or(&own)))?)
}

#[tokio::test]
async fn rest_errors_are_json_with_the_documented_status() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    node.user("bob").await?;
    let http = http();
    let messages = node.url("/api/v1/messages");

    let malformed = http
        .post(&messages)
        .bearer_auth(alice.token())
        .header("content-type", "application/json")
        .body("{\"senderId\": ")
        .send()
        .await?;
    assert_eq!(error_of(malformed).await?.0, StatusCode::BAD_REQUEST);
    let wrong_shape = http
        .post(&messages)
        .bearer_auth(alice.token())
        .json(&serde_json::json!({"senderId": "alice", "message": 42}))
        .send()
        .await?;
    let (status, code, _) = error_of(wrong_shape).await?;
    assert_eq!((status, code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson));

    let body = serde_json::json!({"senderId": "alice", "receiverId": "bob", "message": "hi"});
    let missing = http.post(&messages).json(&body).send().await?;
    assert_eq!(error_of(missing).await?.1, ErrorCode::MissingToken);

    let expired = http.post(&messages).bearer_auth(token(&node, "alice@test", -3600, None)?).json(&body).send().await?;
    let (status, code, _) = error_of(expired).await?;
    assert_eq!((status, code), (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired));

    let forged = token(&node, "alice@test", 3600, Some(&[9; 32]))?;
    let wrongly_signed = http.post(&messages).bearer_auth(forged).json(&body).send().await?;
    let (status, code, _) = error_of(wrongly_signed).await?;
    assert_eq!((status, code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken));

    let garbage = http.post(&messages).bearer_auth("not.a.jwt").json(&body).send().await?;
    assert_eq!(error_of(garbage).await?.1, ErrorCode::InvalidToken);

    // 65 KiB of message: 413, and nothing stored.
    let big = "x".repeat(65 * 1024);
    let too_large = alice.send_message("bob", &big, None).await;
    assert!(
        matches!(too_large, Err(ClientError::Api { status: 413, code: ErrorCode::PayloadTooLarge, .. })),
        "{too_large:?}"
    );
    // Exactly 64 KiB is fine.
    alice.send_message("bob", &"x".repeat(MAX_MESSAGE_BYTES), None).await?;
    assert_eq!(alice.history("bob", None, None).await?.messages.len(), 1);

    let unknown = alice.send_message("nobody", "hello?", None).await;
    assert!(matches!(unknown, Err(ClientError::Api { status: 404, code: ErrorCode::NotFound, .. })), "{unknown:?}");
    let elsewhere = alice.send_message("bob@elsewhere", "hello?", None).await;
    assert!(
        matches!(elsewhere, Err(ClientError::Api { status: 404, code: ErrorCode::UnknownServer, .. })),
        "{elsewhere:?}"
    );
    let nul = alice.send_message("bob", "a\u{0}b", None).await;
    assert!(matches!(nul, Err(ClientError::Api { status: 400, code: ErrorCode::InvalidRequest, .. })), "{nul:?}");
    let bad_path = http.delete(node.url("/api/v1/devices/abc")).bearer_auth(alice.token()).send().await?;
    assert_eq!(error_of(bad_path).await?.0, StatusCode::BAD_REQUEST);
    let bad_limit = alice.history("bob", None, Some(101)).await;
    assert!(matches!(bad_limit, Err(ClientError::Api { status: 400, .. })), "{bad_limit:?}");

    let no_route = http.get(node.url("/api/v1/nothing")).send().await?;
    assert_eq!(error_of(no_route).await?.0, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn a_third_user_can_neither_read_nor_send_as_the_pair() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let carol = node.user("carol").await?;
    let (_, secret) = alice.send_message("bob", "between us", None).await?;

    let peeking = carol.history_between("alice", "bob", None, None).await;
    let nonexistent = carol.history("nobody", None, None).await;
    match (peeking, nonexistent) {
        (Err(ClientError::Api { status: 404, code: c1, .. }), Err(ClientError::Api { status: 404, code: c2, .. })) => {
            assert_eq!((c1, c2), (ErrorCode::NotFound, ErrorCode::NotFound))
        }
        other => panic!("expected 404 for both, got {other:?}"),
    }

    // Sending as alice with carol's token.
    let http = http();
    let spoof = http
        .post(node.url("/api/v1/messages"))
        .bearer_auth(carol.token())
        .json(&serde_json::json!({"senderId": "alice", "receiverId": "bob", "message": "it's me, alice"}))
        .send()
        .await?;
    assert_eq!(error_of(spoof).await?.1, ErrorCode::Forbidden);

    // Acknowledging or reading someone else's message.
    let mut carol_ws = carol.connect().await?;
    for frame in
        [ClientFrame::Ack { message_id: secret.message_id }, ClientFrame::Read { message_id: secret.message_id }]
    {
        carol_ws.send(&frame).await?;
        let refused = next_frame(&mut carol_ws).await?;
        assert!(matches!(refused, ServerFrame::Error { code: ErrorCode::NotFound, .. }), "{frame:?}: {refused:?}");
    }
    assert_eq!(bob.history("alice", None, None).await?.messages[0].status, kith_proto::MessageStatus::Sent);
    assert_eq!(alice.history("bob", None, None).await?.messages[0].status, kith_proto::MessageStatus::Sent);
    // And bob's copy is still pending for him.
    let mut bob_ws = bob.connect().await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message_id, secret.message_id);
    // The sender cannot mark their own message read either.
    let mut alice_ws = alice.connect().await?;
    alice_ws.send(&ClientFrame::Read { message_id: secret.message_id }).await?;
    assert!(matches!(next_frame(&mut alice_ws).await?, ServerFrame::Error { code: ErrorCode::NotFound, .. }));
    Ok(())
}

#[tokio::test]
async fn bad_websocket_frames_get_error_frames_and_the_connection_stays_up() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut ws = alice.connect().await?;
    let mut bob_ws = bob.connect().await?;

    for bad in ["not json", "{\"type\":\"send\"}", "{\"type\":\"teleport\"}", "[]"] {
        ws.send_text(bad).await?;
        let frame = next_frame(&mut ws).await?;
        assert!(matches!(frame, ServerFrame::Error { code: ErrorCode::InvalidJson, .. }), "{bad}: {frame:?}");
    }
    ws.send_message(Message::Binary(vec![1, 2, 3].into())).await?;
    assert!(matches!(next_frame(&mut ws).await?, ServerFrame::Error { .. }));

    ws.send(&send("big", "bob", &"x".repeat(65 * 1024))).await?;
    match next_frame(&mut ws).await? {
        ServerFrame::Error { code, client_message_id, .. } => {
            assert_eq!(code, ErrorCode::PayloadTooLarge);
            assert_eq!(client_message_id.as_deref(), Some("big"));
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    ws.send(&send("c-1", "nobody", "hi")).await?;
    assert!(matches!(
        next_frame(&mut ws).await?,
        ServerFrame::Error { code: ErrorCode::NotFound, client_message_id: Some(_), .. }
    ));

    // Still up and working.
    ws.send(&send("ok", "bob", "still here")).await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message, "still here");
    Ok(())
}

#[tokio::test]
async fn an_oversized_frame_closes_that_socket_with_1009_and_no_other() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut bob_ws = bob.connect().await?;
    let mut alice_ws = alice.connect().await?;

    assert_eq!(next_any(&mut alice_ws).await?, ServerFrame::Synced);
    alice_ws.send_text("x".repeat(MAX_WS_FRAME_BYTES + 1)).await?;
    assert_eq!(closed(&mut alice_ws).await?.0, 1009, "message too big");

    // Bob's session is untouched, and alice can reconnect.
    let mut again = alice.connect().await?;
    again.send(&send("after", "bob", "I'm back")).await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message, "I'm back");
    Ok(())
}

#[tokio::test]
async fn the_websocket_takes_the_token_as_a_query_parameter_and_refuses_without_one() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let ws_url = format!("ws://{}/api/v1/ws", node.addr);

    let refused =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(ws_url.as_str().into_client_request()?))
            .await?;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            let body: ErrorBody = serde_json::from_slice(response.body().as_deref().unwrap_or_default())?;
            assert_eq!(body.error.code, ErrorCode::MissingToken);
        }
        other => panic!("expected 401, got {other:?}"),
    }

    let (mut socket, _) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(format!("{ws_url}?token={}", alice.token())))
            .await??;
    socket.send(Message::Text("{\"type\":\"presence.subscribe\",\"userIds\":[\"alice\"]}".into())).await?;
    let synced = next_text(&mut socket).await?;
    assert!(synced.contains("\"synced\""), "{synced}");
    let reply = next_text(&mut socket).await?;
    assert!(reply.contains("\"presence\""), "{reply}");
    Ok(())
}

/// The next text frame of a raw socket; the server's keep-alive pings may come in between.
async fn next_text<S>(socket: &mut S) -> Result<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(PATIENCE, socket.next()).await? {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => anyhow::bail!("expected a text frame, got {other:?}"),
        }
    }
}

/// A REST send against the rate limit.
async fn rest_attempt(sender: &kith_client::Authed, receiver: &str, text: String) -> Result<Attempt> {
    match sender.send_message(receiver, &text, None).await {
        Ok(_) => Ok(Attempt::Accepted),
        Err(ClientError::Api { status: 429, code: ErrorCode::RateLimited, .. }) => Ok(Attempt::Limited),
        Err(e) => Err(e.into()),
    }
}

/// A WebSocket send against the rate limit: `sent`, or an `error` frame for this send.
async fn ws_attempt(ws: &mut kith_client::Connection, client_message_id: &str, receiver: &str) -> Result<Attempt> {
    ws.send(&send(client_message_id, receiver, "over the socket")).await?;
    frame_where(ws, |frame| match frame {
        ServerFrame::Sent { client_message_id: id, .. } if id == client_message_id => Some(Ok(Attempt::Accepted)),
        ServerFrame::Error { code, client_message_id: Some(id), .. } if id == client_message_id => {
            Some(if code == ErrorCode::RateLimited { Ok(Attempt::Limited) } else { Err(anyhow::anyhow!("{code:?}")) })
        }
        _ => None,
    })
    .await?
}

const MESSAGE_RATE: u32 = 1;
const MESSAGE_BURST: u32 = 3;

async fn rate_limited_node() -> Result<TestNode> {
    let (rate, burst) = (MESSAGE_RATE.to_string(), MESSAGE_BURST.to_string());
    TestNode::start_with(crate::harness::Backend::Sqlite, &["--message-rate", &rate, "--message-burst", &burst]).await
}

#[tokio::test]
async fn sending_too_fast_over_rest_is_limited_per_user_and_the_websocket_shares_the_allowance() -> Result<()> {
    let node = rate_limited_node().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut alice_ws = alice.connect().await?;
    let refused =
        spend_allowance(MESSAGE_BURST, MESSAGE_RATE, async |n| rest_attempt(&alice, "bob", format!("rest {n}")).await)
            .await?;
    // The socket draws on the same allowance: its send right after is refused too.
    let over_ws = ws_attempt(&mut alice_ws, "ws-1", "bob").await?;
    if !refilled_since(refused, MESSAGE_RATE) {
        assert_eq!(over_ws, Attempt::Limited, "a WebSocket send right after REST spent the allowance");
    }
    // Bob has his own allowance.
    bob.send_message("alice", "hi", None).await?;
    Ok(())
}

#[tokio::test]
async fn sending_too_fast_over_the_websocket_gets_an_error_frame_the_connection_stays_up_and_rest_shares_it()
-> Result<()> {
    let node = rate_limited_node().await?;
    let carol = node.user("carol").await?;
    let dave = node.user("dave").await?;
    let mut carol_ws = carol.connect().await?;
    let mut dave_ws = dave.connect().await?;
    let refused = spend_allowance(MESSAGE_BURST, MESSAGE_RATE, async |n| {
        ws_attempt(&mut carol_ws, &format!("ws-{n}"), "dave").await
    })
    .await?;
    // REST right after is refused too.
    let over_rest = rest_attempt(&carol, "dave", "over REST".into()).await?;
    if !refilled_since(refused, MESSAGE_RATE) {
        assert_eq!(over_rest, Attempt::Limited, "a REST send right after the socket spent the allowance");
    }
    // The limited socket still works, and dave, with his own allowance, sends on his.
    carol_ws.send(&ClientFrame::Read { message_id: kith_proto::MessageId::now() }).await?;
    assert!(matches!(next_frame(&mut carol_ws).await?, ServerFrame::Error { code: ErrorCode::NotFound, .. }));
    assert_eq!(ws_attempt(&mut dave_ws, "d-1", "carol").await?, Attempt::Accepted);
    Ok(())
}

#[tokio::test]
async fn one_user_may_hold_only_so_many_connections() -> Result<()> {
    let node = TestNode::start_with(crate::harness::Backend::Sqlite, &["--max-sessions-per-user", "2"]).await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let _one = alice.connect().await?;
    let _two = alice.connect().await?;
    let third = alice.connect().await;
    assert!(matches!(third, Err(ClientError::Api { status: 429, .. })), "{third:?}");
    // Others are not affected.
    bob.connect().await?;
    Ok(())
}

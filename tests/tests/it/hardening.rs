//! Hostile input at the edge (issue 11): every refusal is a clear error, nobody else notices.

use std::time::Duration;

use anyhow::Result;
use jsonwebtoken::{EncodingKey, Header};
use kith_client::ClientError;
use kith_proto::limits::{MAX_PRESENCE_SUBSCRIPTIONS, MAX_WS_FRAME_BYTES};
use kith_proto::rest::AuthResponse;
use kith_proto::{ClientFrame, DeviceId, ErrorBody, ErrorCode, PresenceStatus, ServerFrame};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{
    Attempt, Backend, PASSWORD, PATIENCE, TestNode, closed, eventually, frame_where, http, message, next_any,
    next_frame, refilled_since, send, spend_allowance, unique_loopback,
};

/// A raw response's status, error code and message.
async fn error_of(response: reqwest::Response) -> Result<(StatusCode, ErrorCode, String)> {
    let status = response.status();
    let body: ErrorBody = response.json().await?;
    Ok((status, body.error.code, body.error.message))
}

#[tokio::test]
async fn removing_a_device_that_does_not_exist_is_404_and_the_token_still_works() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let gone = http().delete(node.url("/api/v1/devices/77")).bearer_auth(alice.token()).send().await?;
    let (status, code, message) = error_of(gone).await?;
    assert_eq!((status, code), (StatusCode::NOT_FOUND, ErrorCode::NotFound), "{message}");
    assert!(message.contains("device 77"), "{message}");
    // Nothing told the client its own token is dead, and it is not.
    alice.key_count().await?;
    Ok(())
}

#[tokio::test]
async fn usernames_of_dots_alone_are_refused_with_a_clear_400() -> Result<()> {
    let node = TestNode::start().await?;
    for name in [".", "..", "..."] {
        let response = http()
            .post(node.url("/api/v1/register"))
            .json(&serde_json::json!({"username": name, "password": "correct horse battery"}))
            .send()
            .await?;
        let (status, code, message) = error_of(response).await?;
        assert_eq!((status, code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest), "{name}: {message}");
        assert!(message.contains("dots"), "{name}: {message}");
    }
    // A name with dots and more is still a name.
    node.user("a.b").await?;
    Ok(())
}

#[tokio::test]
async fn a_websocket_handshake_that_is_not_one_is_refused_with_the_json_error_body() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let ws = node.url("/api/v1/ws");
    let handshake = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    // Each case leaves out or spoils one header of an otherwise good handshake.
    let cases: [(&str, Option<&str>, &str); 4] = [
        ("upgrade", None, "Upgrade"),
        ("connection", None, "Connection"),
        ("sec-websocket-version", Some("8"), "Sec-WebSocket-Version"),
        ("sec-websocket-key", None, "Sec-WebSocket-Key"),
    ];
    for (header, replacement, named) in cases {
        let mut request = http().get(&ws).bearer_auth(alice.token());
        for (name, value) in handshake {
            match (name == header, replacement) {
                (false, _) => request = request.header(name, value),
                (true, Some(other)) => request = request.header(name, other),
                (true, None) => {}
            }
        }
        let (status, code, message) = error_of(request.send().await?).await?;
        assert_eq!((status, code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest), "{header}: {message}");
        assert!(message.contains(named), "{header}: {message}");
    }
    // The same handshake, whole, is accepted.
    alice.connect().await?;
    Ok(())
}

/// A raw WebSocket data frame (text or continuation), for what a well-behaved client never sends.
fn raw_frame(payload: &[u8], opcode: Data, is_final: bool) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), OpCode::Data(opcode), is_final))
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_that_socket_with_1007_and_a_reason() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut bob_ws = bob.connect().await?;
    let mut ws = alice.connect().await?;
    assert_eq!(next_any(&mut ws).await?, ServerFrame::Synced);
    ws.send_message(raw_frame(b"{\"type\":\"ack\",\xff\xfe}", Data::Text, true)).await?;
    let (code, reason) = closed(&mut ws).await?;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("UTF-8"), "{reason}");

    // The same in fragments: the invalid sequence is split over two of them.
    let mut ws = alice.connect().await?;
    assert_eq!(next_any(&mut ws).await?, ServerFrame::Synced);
    ws.send_message(raw_frame(b"{\"type\":\"ack\",\"x\":\"\xe2\x82", Data::Text, false)).await?;
    ws.send_message(raw_frame(b"\xff\"}", Data::Continue, true)).await?;
    assert_eq!(closed(&mut ws).await?.0, 1007);

    // Others are untouched, and alice reconnects.
    let mut again = alice.connect().await?;
    again.send(&send("after", "bob", "still here")).await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message, "still here");
    Ok(())
}

#[tokio::test]
async fn a_fragmented_text_frame_is_reassembled_and_handled_as_one() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut bob_ws = bob.connect().await?;
    let mut ws = alice.connect().await?;
    let frame = serde_json::to_vec(&send("frag-1", "bob", "in three pieces, é split too"))?;
    // Cut inside the two bytes of "é", so that no fragment alone is valid UTF-8 at its end.
    let cut = frame.windows(2).position(|w| w == "é".as_bytes()).map_or(frame.len() / 2, |at| at + 1);
    ws.send_message(raw_frame(&frame[..5], Data::Text, false)).await?;
    ws.send_message(raw_frame(&frame[5..cut], Data::Continue, false)).await?;
    ws.send_message(raw_frame(&frame[cut..], Data::Continue, true)).await?;
    let sent = frame_where(&mut ws, |f| match f {
        ServerFrame::Sent { client_message_id, .. } => Some(client_message_id),
        _ => None,
    })
    .await?;
    assert_eq!(sent, "frag-1");
    assert_eq!(frame_where(&mut bob_ws, message).await?.message, "in three pieces, é split too");

    // Fragments adding up to more than the frame limit close the socket with 1009.
    let mut ws = alice.connect().await?;
    let piece = vec![b' '; MAX_WS_FRAME_BYTES / 2 + 1];
    ws.send_message(raw_frame(&piece, Data::Text, false)).await?;
    ws.send_message(raw_frame(&piece, Data::Continue, true)).await?;
    assert_eq!(closed(&mut ws).await?.0, 1009);
    Ok(())
}

/// A token signed with the node's own secret, for any subject and device.
fn node_token(node: &TestNode, sub: &str, device: u32) -> Result<String> {
    let secret = std::fs::read(node.data_dir().join("token-secret.key"))?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"sub": sub, "iss": "test", "iat": now, "exp": now + 3600, "did": device});
    Ok(jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(&secret))?)
}

#[tokio::test]
async fn a_refused_websocket_upgrade_moves_no_presence_and_a_ghost_has_none() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let watcher = node.user("watcher").await?;
    let second = node.client().device(DeviceId(1)).login("alice", PASSWORD).await?;
    alice.remove_device(DeviceId(1)).await?;
    // The watcher is no contact of alice's: she shows herself to everyone for this test.
    alice.set_presence_visibility(kith_proto::PresenceVisibility::Everyone).await?;
    let before = watcher.presence("alice").await?;
    assert_eq!(before.status, PresenceStatus::Offline);

    // The removed device's token, and a validly signed one for a user that does not exist.
    let refused = second.connect().await;
    assert!(matches!(refused, Err(ClientError::Api { status: 401, .. })), "{refused:?}");
    let ghost = kith_client::Client::new(&node.url(""))?.authed(AuthResponse {
        user_id: "ghost@test".parse()?,
        device_id: DeviceId(0),
        token: node_token(&node, "ghost@test", 0)?,
    });
    let refused = ghost.connect().await;
    assert!(matches!(refused, Err(ClientError::Api { status: 401, .. })), "{refused:?}");

    // Presence is as it was; the ghost has none.
    assert_eq!(watcher.presence("alice").await?, before, "a refused upgrade moved alice's presence");
    let ghostly = watcher.presence("ghost").await;
    assert!(matches!(ghostly, Err(ClientError::Api { status: 404, code: ErrorCode::NotFound, .. })), "{ghostly:?}");
    // And a real connect still moves it.
    let _online = alice.connect().await?;
    eventually("alice online", async || {
        let seen = watcher.presence("alice").await?;
        Ok(if seen.status == PresenceStatus::Online { Ok(()) } else { Err(seen) })
    })
    .await?;
    Ok(())
}

/// Opens a WebSocket with `origin` (if any); the HTTP status of a refusal, and its error code.
async fn handshake_with_origin(node: &TestNode, token: &str, origin: Option<&str>) -> Result<Option<(u16, ErrorCode)>> {
    let mut request = format!("ws://{}/api/v1/ws?token={token}", node.addr).into_client_request()?;
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse()?);
    }
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request)).await? {
        Ok(_) => Ok(None),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body: ErrorBody = serde_json::from_slice(response.body().as_deref().unwrap_or_default())?;
            Ok(Some((response.status().as_u16(), body.error.code)))
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn a_websocket_from_a_foreign_web_origin_is_refused_and_own_configured_or_none_pass() -> Result<()> {
    let node = TestNode::start_with(Backend::Sqlite, &["--allowed-origin", "https://chat.example"]).await?;
    let alice = node.user("alice").await?;
    let own = format!("http://{}", node.addr);
    for allowed in [None, Some(own.as_str()), Some("https://chat.example"), Some("https://CHAT.example/")] {
        assert_eq!(handshake_with_origin(&node, alice.token(), allowed).await?, None, "{allowed:?}");
    }
    for foreign in ["https://evil.example", "null", "http://chat.example", "https://chat.example:444"] {
        let refused = handshake_with_origin(&node, alice.token(), Some(foreign)).await?;
        assert_eq!(refused, Some((403, ErrorCode::Forbidden)), "{foreign}");
    }
    Ok(())
}

/// How long the slowloris test gives clients to send headers and bodies.
const STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads until the node closes the socket (EOF or reset); what it sent before, and when.
async fn until_closed(mut socket: TcpStream, deadline: Instant) -> Result<(Vec<u8>, Instant)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buffer)).await {
            Err(_) => anyhow::bail!("still open at the deadline; got {:?}", String::from_utf8_lossy(&received)),
            Ok(Ok(0) | Err(_)) => return Ok((received, Instant::now())),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn a_thousand_stalled_sockets_are_closed_in_time_while_users_register_and_chat() -> Result<()> {
    let timeout = format!("{}s", STALL_TIMEOUT.as_secs());
    let node = TestNode::start_with(
        Backend::Sqlite,
        &["--http-header-timeout", &timeout, "--http-body-timeout", &timeout, "--account-rate", "0"],
    )
    .await?;
    // Half stop in the middle of their headers, half in the middle of a body they announced.
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for n in 0..1000 {
        let mut socket = TcpStream::connect(node.addr).await?;
        let half: &[u8] = if n % 2 == 0 {
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Wait: "
        } else {
            b"POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user"
        };
        socket.write_all(half).await?;
        stalled.push(socket);
    }
    let deadline = opened + STALL_TIMEOUT + PATIENCE;
    let closing = futures_util::future::join_all(stalled.into_iter().map(|socket| until_closed(socket, deadline)));

    // Meanwhile, as if nothing were going on.
    let users = async {
        let health = http().get(node.url("/healthz")).send().await?;
        assert_eq!(health.status(), StatusCode::OK);
        let alice = node.user("alice").await?;
        let bob = node.user("bob").await?;
        let mut bob_ws = bob.connect().await?;
        alice.send_message("bob", "despite them", None).await?;
        assert_eq!(frame_where(&mut bob_ws, message).await?.message, "despite them");
        anyhow::Ok(())
    };
    let (closed, chatted) = tokio::join!(closing, users);
    chatted?;
    let mut timed_out_bodies = 0;
    for (n, outcome) in closed.into_iter().enumerate() {
        let (received, at) = outcome.map_err(|e| anyhow::anyhow!("stalled socket {n}: {e}"))?;
        assert!(at.duration_since(opened) >= STALL_TIMEOUT, "socket {n} closed before the timeout");
        if n % 2 == 1 {
            let answer = String::from_utf8_lossy(&received);
            assert!(answer.starts_with("HTTP/1.1 408"), "socket {n}: {answer}");
            assert!(answer.contains("request_timeout"), "socket {n}: {answer}");
            timed_out_bodies += 1;
        }
    }
    assert_eq!(timed_out_bodies, 500);
    node.log_line("closed HTTP connections that stalled").await?;
    Ok(())
}

#[tokio::test]
async fn plain_http_connections_over_the_cap_get_503_and_websockets_are_not_counted() -> Result<()> {
    const CAP: usize = 4;
    let node = TestNode::start_with(Backend::Sqlite, &["--max-http-connections", &CAP.to_string()]).await?;
    // Registered over a connection that is closed after the answer, so it holds no slot.
    crate::harness::install_crypto();
    let once = reqwest::Client::builder().pool_max_idle_per_host(0).timeout(PATIENCE).build()?;
    let registered = once
        .post(node.url("/api/v1/register"))
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await?;
    let token = registered.json::<AuthResponse>().await?.token;
    // More WebSockets than HTTP slots, one after the other: upgraded, each frees its slot.
    let mut sockets = Vec::new();
    for n in 0..CAP + 2 {
        let url = format!("ws://{}/api/v1/ws?token={token}", node.addr);
        let opened = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url)).await?;
        sockets.push(opened.map_err(|e| anyhow::anyhow!("WebSocket {n}: {e}"))?);
    }
    // Fill the slots with idle keep-alive connections, each having had one answer.
    let mut idle = Vec::new();
    eventually("every HTTP slot held", async || {
        let mut socket = TcpStream::connect(node.addr).await?;
        socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await?;
        let mut buffer = [0u8; 512];
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut buffer)).await??;
        if buffer[..n].starts_with(b"HTTP/1.1 200") {
            idle.push(socket);
        }
        Ok(if idle.len() == CAP { Ok(()) } else { Err(idle.len()) })
    })
    .await?;
    let over = TcpStream::connect(node.addr).await?;
    let (answer, _) = until_closed(over, Instant::now() + PATIENCE).await?;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"unavailable\""), "{answer}");
    // Freeing one makes room again.
    idle.pop();
    eventually("a freed HTTP slot is usable", async || {
        Ok(match once.get(node.url("/healthz")).send().await {
            Ok(response) if response.status() == StatusCode::OK => Ok(()),
            Ok(response) => Err(response.status().to_string()),
            Err(e) => Err(e.to_string()),
        })
    })
    .await?;
    Ok(())
}

/// A login from a source address of its own: its status, and its error code if refused.
async fn login_from(
    node: &TestNode,
    source: std::net::Ipv4Addr,
    password: &str,
) -> Result<(StatusCode, Option<ErrorCode>)> {
    crate::harness::install_crypto();
    let client = reqwest::Client::builder().local_address(std::net::IpAddr::V4(source)).timeout(PATIENCE).build()?;
    let response = client
        .post(node.url("/api/v1/login"))
        .json(&serde_json::json!({"username": "bob", "password": password}))
        .send()
        .await?;
    let status = response.status();
    if status.is_success() { Ok((status, None)) } else { Ok((status, Some(error_of(response).await?.1))) }
}

#[tokio::test]
async fn failed_logins_of_one_account_back_off_whatever_address_they_come_from() -> Result<()> {
    let node = TestNode::start_with(
        Backend::Sqlite,
        &["--account-rate", "0", "--login-free-failures", "2", "--login-backoff-max", "1h"],
    )
    .await?;
    node.user("bob").await?;
    // Two wrong guesses from two addresses…
    for _ in 0..2 {
        assert_eq!(login_from(&node, unique_loopback(), "wrong password").await?.0, StatusCode::UNAUTHORIZED);
    }
    // …and a third address is held back, even with the right password, until the wait passed.
    let held = login_from(&node, unique_loopback(), PASSWORD).await?;
    assert_eq!(held, (StatusCode::TOO_MANY_REQUESTS, Some(ErrorCode::RateLimited)));
    // Another account is not affected.
    node.user("alice").await?;
    node.client().login("alice", PASSWORD).await?;
    // The wait is a second: then the right password works, and resets the count.
    eventually("bob may log in again", async || {
        let (status, code) = login_from(&node, unique_loopback(), PASSWORD).await?;
        Ok(if status == StatusCode::OK { Ok(()) } else { Err((status, code)) })
    })
    .await?;
    assert_eq!(login_from(&node, unique_loopback(), "wrong password").await?.0, StatusCode::UNAUTHORIZED);
    Ok(())
}

/// A WebSocket connection attempt: through, refused as rate limited, or refused otherwise
/// (an invalid token still counts against the address).
async fn ws_attempt(node: &TestNode, token: &str) -> Result<Attempt> {
    let url = format!("ws://{}/api/v1/ws?token={token}", node.addr);
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url)).await? {
        Ok(_) => Ok(Attempt::Accepted),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 429 => Ok(Attempt::Limited),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 401 => Ok(Attempt::Accepted),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn websocket_connection_attempts_are_limited_per_user_and_per_address() -> Result<()> {
    const RATE: u32 = 1;
    const BURST: u32 = 4;
    let node = TestNode::start_with(
        Backend::Sqlite,
        &["--ws-connect-user-rate", "1", "--ws-connect-user-burst", "4", "--ws-connect-address-rate", "0"],
    )
    .await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let refused = spend_allowance(BURST, RATE, async |_| ws_attempt(&node, alice.token()).await).await?;
    // Bob has his own allowance.
    if !refilled_since(refused, RATE) {
        assert_eq!(ws_attempt(&node, alice.token()).await?, Attempt::Limited);
    }
    assert_eq!(ws_attempt(&node, bob.token()).await?, Attempt::Accepted);

    // Per address: attempts with tokens that are no good count too, and then hold back a
    // good one from the same address.
    let node = TestNode::start_with(
        Backend::Sqlite,
        &["--ws-connect-user-rate", "0", "--ws-connect-address-rate", "1", "--ws-connect-address-burst", "4"],
    )
    .await?;
    let carol = node.user("carol").await?;
    let refused = spend_allowance(BURST, RATE, async |_| ws_attempt(&node, "not.a.token").await).await?;
    let good = ws_attempt(&node, carol.token()).await?;
    if !refilled_since(refused, RATE) {
        assert_eq!(good, Attempt::Limited, "the address spent its allowance");
    }
    Ok(())
}

/// A token with any header and claims, signed (HMAC-SHA256 over the node's secret, or
/// whatever `sign` makes of the signing input).
fn crafted_token(header: &serde_json::Value, claims: &serde_json::Value, sign: impl FnOnce(&str) -> String) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
    let signature = sign(&input);
    format!("{input}.{signature}")
}

#[tokio::test]
async fn tokens_are_hs256_from_this_node_with_every_required_claim_for_a_user_that_exists() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let secret = std::fs::read(node.data_dir().join("token-secret.key"))?;
    let now = jsonwebtoken::get_current_timestamp();
    let good = serde_json::json!({"sub": "alice@test", "iss": "test", "iat": now, "exp": now + 3600, "did": 0});
    let signed = |header: jsonwebtoken::Header, claims: &serde_json::Value| {
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&secret))
    };
    let without = |claim: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().map(|c| c.remove(claim));
        claims
    };
    let mut refused = vec![
        // Algorithm pinning: no signature at all, another HMAC, a public-key algorithm.
        (
            "alg none",
            crafted_token(&serde_json::json!({"alg": "none", "typ": "JWT"}), &good, |_| String::new()),
            "HS256",
        ),
        ("HS512", signed(Header::new(jsonwebtoken::Algorithm::HS512), &good)?, "algorithm must be HS256"),
        (
            "RS256",
            crafted_token(&serde_json::json!({"alg": "RS256", "typ": "JWT"}), &good, |_| "AAAA".into()),
            "algorithm must be HS256",
        ),
    ];
    // The issuer, and a user of this server that does not exist.
    let mut other_issuer = good.clone();
    other_issuer["iss"] = "elsewhere".into();
    refused.push(("another issuer", signed(Header::default(), &other_issuer)?, "another server"));
    let mut ghost = good.clone();
    ghost["sub"] = "ghost@test".into();
    refused.push(("a user that does not exist", signed(Header::default(), &ghost)?, "log in again"));
    for claim in ["exp", "sub", "iss"] {
        refused.push((claim, signed(Header::default(), &without(claim))?, claim));
    }
    for (what, token, says) in refused {
        let response = http().get(node.url("/api/v1/keys/count")).bearer_auth(&token).send().await?;
        let (status, code, message) = error_of(response).await?;
        assert_eq!((status, code), (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken), "{what}: {message}");
        assert!(message.contains(says), "{what}: {message}");
    }
    // The good one, signed the same way, works.
    let response =
        http().get(node.url("/api/v1/keys/count")).bearer_auth(signed(Header::default(), &good)?).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(alice.key_count().await?.one_time_pre_keys, 0);
    Ok(())
}

#[tokio::test]
async fn a_body_over_512_kib_is_413_and_presence_subscriptions_stop_at_1000() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    node.user("bob").await?;
    let big = serde_json::json!({"senderId": "alice", "receiverId": "bob", "message": "x".repeat(600 * 1024)});
    let response = http().post(node.url("/api/v1/messages")).bearer_auth(alice.token()).json(&big).send().await?;
    let (status, code, message) = error_of(response).await?;
    assert_eq!((status, code), (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge), "{message}");
    assert!(message.contains("524288"), "{message}");
    // A query value that does not parse is a 400 naming it, not a 500.
    let response = http()
        .get(node.url("/api/v1/messages?user1=alice&user2=bob&limit=many"))
        .bearer_auth(alice.token())
        .send()
        .await?;
    assert_eq!(error_of(response).await?.0, StatusCode::BAD_REQUEST);

    let mut ws = alice.connect().await?;
    let too_many: Vec<String> = (0..=MAX_PRESENCE_SUBSCRIPTIONS).map(|n| format!("user{n}")).collect();
    ws.send(&ClientFrame::PresenceSubscribe { user_ids: too_many }).await?;
    match next_frame(&mut ws).await? {
        ServerFrame::Error { code: ErrorCode::InvalidRequest, message, .. } => {
            assert!(message.contains("1000"), "{message}")
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    // The connection stays up and a subscription within the cap works.
    ws.send(&ClientFrame::PresenceSubscribe { user_ids: vec!["bob".into()] }).await?;
    assert!(matches!(next_frame(&mut ws).await?, ServerFrame::Presence(_)));
    Ok(())
}

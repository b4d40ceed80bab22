//! Every wait of the SDK ends: a node that accepts connections and then says nothing makes
//! each call fail with [`ClientError::TimedOut`] naming what it waited for, instead of hanging.
//! Time is paused (and jumps ahead whenever every task waits), so the deadlines are exact and
//! the tests take no real time.

use std::time::Duration;

use futures_util::StreamExt;
use kith_client::proto::rest::AuthResponse;
use kith_client::{Client, ClientError, Timeouts};
use kith_proto::{DeviceId, UserId};
use tokio::net::TcpListener;
use tokio::time::Instant;

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    request: Duration::from_secs(7),
    idle: Duration::from_secs(11),
    close: Duration::from_secs(5),
};

/// A listener on loopback that accepts connections and then does whatever `serve` does.
async fn node<F, Fut>(serve: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    format!("http://{addr}")
}

/// Holds the connection open without reading or writing a byte.
async fn silent(stream: tokio::net::TcpStream) {
    std::future::pending::<()>().await;
    drop(stream);
}

/// Completes the WebSocket handshake, then neither reads nor writes again (so it answers no
/// ping and no close).
async fn silent_websocket(stream: tokio::net::TcpStream) {
    let socket = tokio_tungstenite::accept_async(stream).await.unwrap();
    std::future::pending::<()>().await;
    drop(socket);
}

fn authed(base: &str) -> kith_client::Authed {
    let client = Client::new(base).unwrap().timeouts(TIMEOUTS).unwrap();
    client.authed(AuthResponse {
        user_id: UserId::parse("alice@test").unwrap(),
        device_id: DeviceId(0),
        token: "token".into(),
    })
}

#[tokio::test(start_paused = true)]
async fn a_request_the_node_never_answers_times_out_after_the_request_deadline() {
    let base = node(silent).await;
    let started = Instant::now();
    let answer = Client::new(&base).unwrap().timeouts(TIMEOUTS).unwrap().register("alice", "password").await;
    match answer {
        Err(ClientError::TimedOut(what)) => assert!(what.contains("/api/v1/register"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(started.elapsed().as_secs(), TIMEOUTS.request.as_secs());
}

#[tokio::test(start_paused = true)]
async fn a_websocket_handshake_the_node_never_answers_times_out_after_the_connect_deadline() {
    let base = node(silent).await;
    let started = Instant::now();
    match authed(&base).connect().await {
        Err(ClientError::TimedOut(what)) => assert!(what.contains("handshake"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(started.elapsed().as_secs(), TIMEOUTS.connect.as_secs());
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_is_pinged_after_the_idle_time_and_given_up_on_after_twice_that() {
    let base = node(silent_websocket).await;
    let mut connection = authed(&base).connect().await.unwrap();
    let started = Instant::now();
    match connection.next_frame().await {
        Err(ClientError::TimedOut(what)) => assert!(what.contains("did not answer a ping"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(started.elapsed().as_secs(), 2 * TIMEOUTS.idle.as_secs());
}

#[tokio::test(start_paused = true)]
async fn a_node_that_answers_pings_keeps_the_connection_however_long_it_is_quiet() {
    // A node that reads (so tungstenite answers the client's pings) but never sends a frame.
    let base = node(|stream| async move {
        let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
        while let Some(Ok(_)) = socket.next().await {}
    })
    .await;
    let mut connection = authed(&base).connect().await.unwrap();
    let quiet = TIMEOUTS.idle * 10;
    assert!(tokio::time::timeout(quiet, connection.next_frame()).await.is_err(), "still waiting after {quiet:?}");
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_read_does_not_restart_the_idle_deadline() {
    let base = node(silent_websocket).await;
    let mut connection = authed(&base).connect().await.unwrap();
    let started = Instant::now();
    // A caller that reads in a select loop with a shorter tick, cancelling each read.
    let outcome = loop {
        if let Ok(outcome) = tokio::time::timeout(Duration::from_secs(1), connection.next_frame()).await {
            break outcome;
        }
    };
    assert!(matches!(outcome, Err(ClientError::TimedOut(_))), "{outcome:?}");
    assert_eq!(started.elapsed().as_secs(), 2 * TIMEOUTS.idle.as_secs());
}

#[tokio::test(start_paused = true)]
async fn a_close_the_node_never_answers_times_out_after_the_close_deadline() {
    let base = node(silent_websocket).await;
    let connection = authed(&base).connect().await.unwrap();
    let started = Instant::now();
    match connection.close().await {
        Err(ClientError::TimedOut(what)) => assert!(what.contains("close"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(started.elapsed().as_secs(), TIMEOUTS.close.as_secs());
}

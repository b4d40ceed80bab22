//! The WebSocket loop's clocks, on paused time: the idle timeout, the send timeout of a client
//! that does not read, the end of a session, and the expiry of the token a connection was
//! opened with. A real socket on loopback and a fake node behind the API; tokio's clock jumps
//! ahead whenever every task waits, so each deadline is exact and costs no real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use kith_client_api::{
    ApiState, Caller, ChatService, Completion, OutgoingMessage, Password, RateLimitConfig, RateLimits, SendOutcome,
    ServiceError, Session, SessionEvent, SessionId, SessionLease, TokenKeys, WsConfig,
};
use kith_proto::keys::{KeyBundles, KeyCount, KeyUpload};
use kith_proto::rest::HistoryPage;
use kith_proto::{
    DeviceId, IncomingMessage, MessageId, MessageStatus, PresenceView, ServerFrame, ServerName, UserId, Username,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WS: WsConfig = WsConfig {
    ping_interval: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(30),
    send_timeout: Duration::from_secs(10),
    max_in_flight: 256,
};

/// A node that only holds sessions: each open session's queue is kept so the test can push to
/// it (or end it), and each lease says when the API let go of the session.
#[derive(Debug)]
struct FakeNode {
    name: ServerName,
    queues: Mutex<Vec<mpsc::Sender<SessionEvent>>>,
    /// Sessions whose lease was dropped, counted.
    ended: watch::Sender<usize>,
}

#[derive(Debug)]
struct Lease(watch::Sender<usize>);

impl SessionLease for Lease {}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n += 1);
    }
}

fn refused<T>() -> Result<T, ServiceError> {
    Err(ServiceError::Internal("not part of this test".into()))
}

#[async_trait]
impl ChatService for FakeNode {
    fn server_name(&self) -> &ServerName {
        &self.name
    }
    async fn register(&self, _: Username, _: Password, _: DeviceId) -> Result<UserId, ServiceError> {
        refused()
    }
    async fn login(&self, _: Username, _: Password, _: DeviceId) -> Result<UserId, ServiceError> {
        refused()
    }
    async fn send(&self, _: &Caller, _: OutgoingMessage) -> Result<Completion<SendOutcome>, ServiceError> {
        refused()
    }
    async fn history(&self, _: &UserId, _: &UserId, _: Option<MessageId>, _: u32) -> Result<HistoryPage, ServiceError> {
        refused()
    }
    async fn presence(&self, _: &UserId, _: &UserId) -> Result<PresenceView, ServiceError> {
        refused()
    }
    async fn presence_visibility(&self, _: &UserId) -> Result<kith_proto::PresenceVisibility, ServiceError> {
        refused()
    }
    async fn set_presence_visibility(&self, _: &UserId, _: kith_proto::PresenceVisibility) -> Result<(), ServiceError> {
        refused()
    }
    async fn open_session(&self, _: &Caller) -> Result<Session, ServiceError> {
        let (tx, events) = mpsc::channel(1024);
        let mut queues = self.queues.lock().unwrap();
        queues.push(tx);
        let id = SessionId(u64::try_from(queues.len()).unwrap());
        Ok(Session { id, events, lease: Box::new(Lease(self.ended.clone())) })
    }
    async fn pending(&self, _: &Caller, _: i64, _: u32) -> Result<Vec<(i64, IncomingMessage)>, ServiceError> {
        Ok(Vec::new())
    }
    async fn receipt(&self, _: &Caller, _: MessageId, _: MessageStatus) -> Result<Completion<()>, ServiceError> {
        refused()
    }
    async fn subscribe_presence(&self, _: SessionId, _: Vec<UserId>) -> Result<Vec<PresenceView>, ServiceError> {
        refused()
    }
    async fn publish_keys(&self, _: &Caller, _: KeyUpload) -> Result<KeyCount, ServiceError> {
        refused()
    }
    async fn claim_keys(&self, _: &Caller, _: &UserId) -> Result<KeyBundles, ServiceError> {
        refused()
    }
    async fn device_keys(&self, _: &Caller, _: &UserId) -> Result<KeyBundles, ServiceError> {
        refused()
    }
    async fn publish_removal(&self, _: &Caller, _: kith_proto::keys::RemovalUpload) -> Result<(), ServiceError> {
        Err(ServiceError::Internal("not part of this test".into()))
    }
    async fn key_count(&self, _: &Caller) -> Result<KeyCount, ServiceError> {
        refused()
    }
    async fn remove_device(&self, _: &Caller, _: DeviceId) -> Result<(), ServiceError> {
        refused()
    }
    async fn check_device(&self, _: &Caller) -> Result<(), ServiceError> {
        Ok(())
    }
    async fn ready(&self) -> Result<(), ServiceError> {
        Ok(())
    }
}

/// The API, served on loopback in this process.
struct Served {
    node: Arc<FakeNode>,
    tokens: Arc<TokenKeys>,
    url: String,
}

async fn serve(token_ttl: Duration) -> Served {
    let name = ServerName::parse("test").unwrap();
    let (ended, _) = watch::channel(0);
    let node = Arc::new(FakeNode { name: name.clone(), queues: Mutex::default(), ended });
    let tokens = Arc::new(TokenKeys::new(&[7; 32], name, token_ttl));
    let state = ApiState {
        service: node.clone(),
        tokens: tokens.clone(),
        limits: Arc::new(RateLimits::new(RateLimitConfig::default())),
        ws: WS,
        shutdown: Default::default(),
        connections: Default::default(),
        connection_slots: Arc::new(tokio::sync::Semaphore::new(100)),
        origins: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/api/v1/ws", listener.local_addr().unwrap());
    let app = kith_client_api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served { node, tokens, url }
}

impl Served {
    /// Connects as `user` and reads up to `synced`.
    async fn connect(&self, user: &str) -> Socket {
        let caller = Caller { user: UserId::parse(&format!("{user}@test")).unwrap(), device: DeviceId(0) };
        let token = self.tokens.issue(&caller).unwrap();
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("{}?token={token}", self.url)).await.unwrap();
        assert_eq!(next_text(&mut socket).await, serde_json::to_string(&ServerFrame::Synced).unwrap());
        socket
    }

    /// How many sessions the API has let go of.
    fn ended(&self) -> usize {
        *self.node.ended.borrow()
    }

    /// Waits until `n` sessions have been let go of; returns when.
    async fn until_ended(&self, n: usize) -> Instant {
        self.node.ended.subscribe().wait_for(|ended| *ended >= n).await.unwrap();
        Instant::now()
    }

    /// The push queue of the `n`th session opened (from 0).
    fn queue(&self, n: usize) -> mpsc::Sender<SessionEvent> {
        self.node.queues.lock().unwrap()[n].clone()
    }
}

/// The next text frame; pings are answered by reading.
async fn next_text(socket: &mut Socket) -> String {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Reads (and so answers pings) until the server's close; returns its code.
async fn close_code(socket: &mut Socket) -> u16 {
    loop {
        match socket.next().await {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn push(text: &str) -> SessionEvent {
    SessionEvent::frame(&ServerFrame::Error {
        code: kith_proto::ErrorCode::Internal,
        message: text.into(),
        client_message_id: None,
    })
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_no_ping_is_closed_with_4000_once_silent_for_the_idle_timeout() {
    let served = serve(Duration::from_secs(3600)).await;
    let mut silent = served.connect("bob").await;
    let connected = Instant::now();
    // Not reading: the server's pings go unanswered.
    tokio::time::sleep(WS.idle_timeout).await;
    assert_eq!(served.ended(), 0, "not before the idle timeout");
    // The server notices at its first ping tick past the timeout and sends its close; it
    // waits up to 2 s for the answer. Reading now (which answers the pings, too late) finds
    // the close frame.
    tokio::time::sleep_until(connected + WS.idle_timeout + WS.ping_interval + Duration::from_millis(500)).await;
    assert_eq!(close_code(&mut silent).await, 4000);
    let after = served.until_ended(1).await - connected;
    assert!(
        after > WS.idle_timeout && after <= WS.idle_timeout + WS.ping_interval + Duration::from_secs(2),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_pings_stays_connected_however_long_it_is_quiet() {
    let served = serve(Duration::from_secs(3600)).await;
    let mut reading = served.connect("alice").await;
    let quiet_until = Instant::now() + WS.idle_timeout * 20;
    let mut pings = 0;
    while let Ok(frame) = tokio::time::timeout_at(quiet_until, reading.next()).await {
        assert!(matches!(frame, Some(Ok(Message::Ping(_)))), "{frame:?}");
        pings += 1;
    }
    assert!(pings >= 59, "pinged every {:?}: {pings}", WS.ping_interval);
    assert_eq!(served.ended(), 0, "still connected");
    // Reading answered every ping meanwhile; a push still arrives.
    served.queue(0).send(push("still here")).await.unwrap();
    assert!(next_text(&mut reading).await.contains("still here"));
    assert_eq!(served.ended(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_dropped_after_the_send_timeout_and_others_keep_their_pushes() {
    let served = serve(Duration::from_secs(3600)).await;
    let mut stuck = served.connect("bob").await;
    let mut other = served.connect("alice").await;
    let big = "x".repeat(60 * 1024);
    // Far more than the socket buffers hold: the server's write blocks, and only its send
    // timeout ends that.
    let (stuck_queue, other_queue) = (served.queue(0), served.queue(1));
    let started = Instant::now();
    let flood = tokio::spawn(async move {
        for _ in 0..1000 {
            if stuck_queue.send(push(&big)).await.is_err() {
                break;
            }
        }
    });
    // Its write blocks at once (on paused time, writing takes none): it times out, and the
    // close frame that cannot be written either is given up on after 2 s.
    let after = served.until_ended(1).await - started;
    assert!(after >= WS.send_timeout && after <= WS.send_timeout + Duration::from_secs(3), "{after:?}");
    // The other connection is untouched.
    other_queue.send(push("for alice")).await.unwrap();
    assert!(next_text(&mut other).await.contains("for alice"));
    assert_eq!(served.ended(), 1);
    flood.abort();
    // The stuck client, reading at last, finds its connection over.
    loop {
        match stuck.next().await {
            Some(Ok(Message::Text(_) | Message::Ping(_))) => {}
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(other)) => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_the_node_ends_closes_with_1013_so_the_client_reconnects() {
    let served = serve(Duration::from_secs(3600)).await;
    let mut socket = served.connect("bob").await;
    // The node drops the session's queue, as it does for one too far behind.
    served.node.queues.lock().unwrap().clear();
    assert_eq!(close_code(&mut socket).await, 1013);
}

#[tokio::test(start_paused = true)]
async fn a_connection_closes_with_4001_when_its_token_expires_and_not_before() {
    let ttl = Duration::from_secs(120);
    let served = serve(ttl).await;
    let mut socket = served.connect("alice").await;
    let connected = Instant::now();
    // The client reads throughout (answering pings), so only the token can end it.
    let code = close_code(&mut socket).await;
    let after = Instant::now() - connected;
    assert_eq!(code, 4001);
    // When REST would refuse it: `exp` (in whole seconds) plus 5 s of leeway for clock skew,
    // past the last second that is still accepted.
    let leeway = Duration::from_secs(5);
    assert!(after >= ttl + leeway && after <= ttl + leeway + Duration::from_secs(1), "{after:?}");
    served.until_ended(1).await;
    // The client answered the close, so the socket ended at once.
    assert!(matches!(socket.next().await, None | Some(Err(_))));
    let _ = socket.close(None).await;
}

//! One WebSocket connection: replays what is pending, then relays pushes from the node and
//! frames from the client until either side ends it.
//!
//! The loop owns its socket; nothing else writes to it. A send's `sent` answer is awaited off
//! the loop (in [`Connection::in_flight`]) so a client may pipeline sends, but sends enter the
//! node in the order the client sent them. A client that stops answering pings, or does not
//! read what it is sent, is disconnected; its messages stay pending and come again on its next
//! connect.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use kith_proto::limits::MAX_WS_FRAME_BYTES;
use kith_proto::{MessageId, MessageStatus, ServerFrame, UserId};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use super::frame::{self, Command, Refused};
use crate::error::ApiError;
use crate::service::{Caller, OutgoingMessage, Session, SessionEvent};
use crate::state::ApiState;

/// Close codes this loop uses (RFC 6455 section 7.4.1, and 4xxx for the application).
mod close_code {
    /// The server is shutting down.
    pub(super) const GOING_AWAY: u16 = 1001;
    /// A text frame was not valid UTF-8 (RFC 6455 section 8.1: the connection must fail).
    pub(super) const INVALID_PAYLOAD: u16 = 1007;
    /// A frame was over the size limit.
    pub(super) const TOO_BIG: u16 = 1009;
    /// The server failed.
    pub(super) const INTERNAL: u16 = 1011;
    /// The client fell too far behind; reconnect to get what is pending.
    pub(super) const TRY_AGAIN_LATER: u16 = 1013;
    /// The client stopped answering pings.
    pub(super) const TIMEOUT: u16 = 4000;
    /// The token the connection was opened with expired: log in again, then reconnect.
    pub(super) const TOKEN_EXPIRED: u16 = 4001;
}

/// How long a closing connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// How many pending messages one replay query fetches.
const REPLAY_PAGE: u32 = 256;

/// At most how many frames that were ready at once are written before a flush, so that a
/// stream of pushes cannot hold back the frames already written.
const BURST_FRAMES: usize = 64;

/// A frame to send once an in-flight operation completes, if it needs an answer.
type Answer = Option<ServerFrame>;

/// Why the loop ended.
#[derive(Debug)]
enum End {
    /// The client closed the connection.
    ClientClosed,
    /// The server ends it, with this close code and reason.
    ServerClosed(u16, &'static str),
    /// The socket failed (reset, protocol error).
    SocketError(String),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientClosed => f.write_str("closed by the client"),
            Self::ServerClosed(code, reason) => write!(f, "closed by the server ({code} {reason})"),
            Self::SocketError(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// The state of one connection.
struct Connection {
    socket: WebSocket,
    caller: Caller,
    state: ApiState,
    /// Messages sent on this connection and not acknowledged yet: a push of one that raced the
    /// replay, or a replay asked for later, does not send it again.
    sent: HashSet<MessageId>,
    /// Sends and receipts awaiting their commit.
    in_flight: FuturesUnordered<futures_util::future::BoxFuture<'static, Answer>>,
    /// When the client last sent anything (pongs included).
    last_heard: Instant,
    /// When the token the connection was opened with stops being accepted.
    token_until: std::time::SystemTime,
    /// Whether frames were written since the last flush.
    unflushed: bool,
}

/// Runs a write to the socket, failing the connection when the client has not taken the
/// bytes within `timeout`.
async fn in_time(timeout: Duration, write: impl Future<Output = Result<(), axum::Error>>) -> Result<(), End> {
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(End::SocketError(e.to_string())),
        Err(_) => Err(End::ServerClosed(close_code::TRY_AGAIN_LATER, "client is not reading")),
    }
}

/// Serves one authenticated WebSocket until it closes.
pub(crate) async fn serve(
    socket: WebSocket,
    caller: Caller,
    token_until: std::time::SystemTime,
    session: Session,
    state: ApiState,
) {
    let mut conn = Connection {
        socket,
        caller,
        state,
        sent: HashSet::new(),
        in_flight: FuturesUnordered::new(),
        last_heard: Instant::now(),
        token_until,
        unflushed: false,
    };
    let end = conn.run(session).await;
    debug!(user = %conn.caller.user, device = %conn.caller.device, %end, "websocket closed");
}

impl Connection {
    async fn run(&mut self, mut session: Session) -> End {
        let replayed = match self.replay().await {
            Ok(()) => match self.send(ServerFrame::Synced).await {
                Ok(()) => self.flush().await,
                Err(end) => Err(end),
            },
            Err(end) => Err(end),
        };
        let end = match replayed {
            Ok(()) => self.relay(&mut session).await,
            Err(end) => end,
        };
        self.close(&end).await;
        // Answers still in flight concern durable operations; the client learns of them from
        // history or redelivery. Dropping the session now takes the user offline if it was
        // their last one.
        drop(session);
        end
    }

    /// Sends every message still pending for the user, oldest first.
    async fn replay(&mut self) -> Result<(), End> {
        let mut after = 0;
        loop {
            let page = self
                .state
                .service
                .pending(&self.caller, after, REPLAY_PAGE)
                .await
                .map_err(|_| End::ServerClosed(close_code::INTERNAL, "could not load pending messages"))?;
            let full = page.len() == REPLAY_PAGE as usize;
            for (position, message) in page {
                after = position;
                if self.sent.insert(message.message_id) {
                    self.send(ServerFrame::Message(message)).await?;
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Relays pushes and client frames until one side ends the connection.
    async fn relay(&mut self, session: &mut Session) -> End {
        let idle_timeout = self.state.ws.idle_timeout;
        // The first ping goes out one interval after the replay, not at once: the client has
        // just shown it is alive.
        let every = self.state.ws.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + every, every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A token is checked once, at the upgrade; the connection ends when it would no longer
        // be accepted, as a REST request with it would be refused then.
        let valid_for = self.token_until.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        let token_expiry = tokio::time::sleep(valid_for);
        tokio::pin!(token_expiry);
        let shutdown = self.state.shutdown.clone();
        loop {
            let may_read = self.in_flight.len() < self.state.ws.max_in_flight;
            let step = tokio::select! {
                biased;
                () = shutdown.cancelled() => Err(End::ServerClosed(close_code::GOING_AWAY, "server shutting down")),
                () = &mut token_expiry => {
                    Err(End::ServerClosed(close_code::TOKEN_EXPIRED, "token expired; log in again"))
                }
                event = session.events.recv() => match event {
                    Some(event) => self.push(event).await,
                    None => Err(End::ServerClosed(close_code::TRY_AGAIN_LATER, "session ended; reconnect")),
                },
                Some(answer) = self.in_flight.next(), if !self.in_flight.is_empty() => match answer {
                    Some(frame) => self.send(frame).await,
                    None => Ok(()),
                },
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > idle_timeout {
                        Err(End::ServerClosed(close_code::TIMEOUT, "no pong"))
                    } else {
                        self.send_raw(Message::Ping(Default::default())).await
                    }
                },
                frame = self.socket.recv(), if may_read => self.receive(frame, session).await,
            };
            if let Err(end) = step {
                return end;
            }
            if let Err(end) = self.write_ready(session).await {
                return end;
            }
        }
    }

    /// After a step: writes whatever else is ready to go (pushes, answers to sends) behind what
    /// the step wrote, then flushes them together. Under load many frames then leave in one
    /// write to the socket rather than one system call each; when nothing else is ready, this is
    /// the step's own flush.
    async fn write_ready(&mut self, session: &mut Session) -> Result<(), End> {
        for _ in 0..BURST_FRAMES {
            if !self.unflushed {
                // The step wrote nothing (an ack, a pong): nothing waits to go out.
                return Ok(());
            }
            if let Ok(event) = session.events.try_recv() {
                self.push(event).await?;
            } else if let Some(Some(answer)) = self.in_flight.next().now_or_never() {
                if let Some(frame) = answer {
                    self.send(frame).await?;
                }
            } else {
                break;
            }
        }
        self.flush().await
    }

    /// Forwards a push from the node, or replays what is pending when asked to.
    async fn push(&mut self, event: SessionEvent) -> Result<(), End> {
        if event.is_replay() {
            return self.replay().await;
        }
        if let Some(id) = event.message_id()
            && !self.sent.insert(id)
        {
            return Ok(());
        }
        self.send_raw(Message::Text(event.text().into())).await
    }

    /// Handles whatever the client sent.
    async fn receive(&mut self, frame: Option<Result<Message, axum::Error>>, session: &Session) -> Result<(), End> {
        let message = match frame {
            None => return Err(End::ClientClosed),
            Some(Err(e)) => return Err(socket_error(e)),
            Some(Ok(message)) => message,
        };
        self.last_heard = Instant::now();
        match message {
            Message::Text(text) if text.len() > MAX_WS_FRAME_BYTES => {
                Err(End::ServerClosed(close_code::TOO_BIG, "frame too large"))
            }
            Message::Binary(data) if data.len() > MAX_WS_FRAME_BYTES => {
                Err(End::ServerClosed(close_code::TOO_BIG, "frame too large"))
            }
            Message::Text(text) => self.on_text(&text, session).await,
            Message::Binary(_) => {
                self.send(error_frame(
                    ApiError::InvalidJson("binary frames are not supported; send JSON text".into()),
                    None,
                ))
                .await
            }
            Message::Ping(_) | Message::Pong(_) => Ok(()),
            Message::Close(_) => Err(End::ClientClosed),
        }
    }

    async fn on_text(&mut self, text: &Utf8Bytes, session: &Session) -> Result<(), End> {
        match frame::parse_frame(text.as_str(), self.state.service.server_name()) {
            Err(Refused { error, client_message_id }) => self.send(error_frame(error, client_message_id)).await,
            Ok(Command::Send { client_message_id, message }) => self.on_send(client_message_id, message).await,
            Ok(Command::Ack(message_id)) => {
                self.sent.remove(&message_id);
                self.on_receipt(message_id, MessageStatus::Delivered).await
            }
            Ok(Command::Read(message_id)) => {
                self.sent.remove(&message_id);
                self.on_receipt(message_id, MessageStatus::Read).await
            }
            Ok(Command::Subscribe(users)) => self.on_subscribe(users, session).await,
        }
    }

    async fn on_send(&mut self, client_message_id: String, message: OutgoingMessage) -> Result<(), End> {
        let service = self.state.service.clone();
        let accepted = async {
            self.state.limits.check_message(&self.caller.user)?;
            Ok::<_, ApiError>(service.send(&self.caller, message).await?)
        }
        .await;
        match accepted {
            Ok(completion) => {
                self.in_flight.push(
                    completion
                        .map(move |outcome| {
                            Some(match outcome {
                                Ok(outcome) => ServerFrame::Sent {
                                    client_message_id,
                                    message_id: outcome.message_id,
                                    timestamp: outcome.timestamp,
                                },
                                Err(e) => ApiError::from(e).to_frame(Some(client_message_id)),
                            })
                        })
                        .boxed(),
                );
                Ok(())
            }
            Err(e) => self.send(error_frame(e, Some(client_message_id))).await,
        }
    }

    async fn on_receipt(&mut self, message_id: MessageId, status: MessageStatus) -> Result<(), End> {
        match self.state.service.receipt(&self.caller, message_id, status).await {
            Ok(completion) => {
                self.in_flight
                    .push(completion.map(|done| done.err().map(|e| ApiError::from(e).to_frame(None))).boxed());
                Ok(())
            }
            Err(e) => self.send(error_frame(e.into(), None)).await,
        }
    }

    async fn on_subscribe(&mut self, users: Vec<UserId>, session: &Session) -> Result<(), End> {
        let result = self.state.service.subscribe_presence(session.id, users).await.map_err(ApiError::from);
        match result {
            Ok(presences) => {
                for presence in presences {
                    self.send(ServerFrame::Presence(presence)).await?;
                }
                Ok(())
            }
            Err(e) => self.send(error_frame(e, None)).await,
        }
    }

    async fn send(&mut self, frame: ServerFrame) -> Result<(), End> {
        match serde_json::to_string(&frame) {
            Ok(text) => self.send_raw(Message::Text(text.into())).await,
            Err(e) => Err(End::SocketError(format!("encoding frame: {e}"))),
        }
    }

    /// Writes `message` into the socket's buffer; [`Self::flush`] sends what is buffered (a full
    /// buffer is written out at once).
    async fn send_raw(&mut self, message: Message) -> Result<(), End> {
        in_time(self.state.ws.send_timeout, self.socket.feed(message)).await?;
        self.unflushed = true;
        Ok(())
    }

    /// Sends every frame written since the last flush.
    async fn flush(&mut self) -> Result<(), End> {
        if self.unflushed {
            in_time(self.state.ws.send_timeout, self.socket.flush()).await?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// When the server ends the connection: sends a close frame, then reads until the client's
    /// close answers it (as RFC 6455 asks), so the client sees the code rather than a reset.
    async fn close(&mut self, end: &End) {
        let End::ServerClosed(code, reason) = end else {
            return;
        };
        let linger = async {
            let frame = CloseFrame { code: *code, reason: (*reason).into() };
            if self.socket.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, linger).await;
    }
}

fn error_frame(e: ApiError, client_message_id: Option<String>) -> ServerFrame {
    e.to_frame(client_message_id)
}

/// Classifies a read error: an oversized frame is answered with close code 1009, a text frame
/// that is not UTF-8 with 1007 (RFC 6455 requires failing the connection; the close frame
/// says why rather than a bare reset).
fn socket_error(e: axum::Error) -> End {
    match e.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => {
            End::ServerClosed(close_code::TOO_BIG, "frame too large")
        }
        Ok(e) if matches!(*e, tungstenite::Error::Utf8(_)) => {
            End::ServerClosed(close_code::INVALID_PAYLOAD, "text frame is not valid UTF-8")
        }
        Ok(e) => End::SocketError(e.to_string()),
        Err(e) => End::SocketError(e.to_string()),
    }
}

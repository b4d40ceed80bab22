//! The kith driver: authenticated WebSockets (`GET /api/v1/ws`) speaking the `kith-proto`
//! frames. A leaner loop per connection than `kith-client`'s `Connection`: split halves,
//! small buffers, acks batched per read burst, so thousands of connections cost the load
//! generator little.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{FutureExt, SinkExt, StreamExt};
use kith_proto::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::error::BenchError;
use crate::measure::{self, Recorder, Seen};
use crate::roles::{ReceiverJob, Role, SenderJob, Signals, lost_connection, raised, tcp_connect};

/// An open kith WebSocket.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Read chunk of a load connection: frames are small, and thousands of connections add up.
const READ_BUFFER: usize = 8 * 1024;

/// Opens `target`'s WebSocket from `source` with a bearer `token`.
pub(crate) async fn connect(source: IpAddr, target: SocketAddr, token: &str) -> Result<Ws, BenchError> {
    let stream = tcp_connect(source, target).await?;
    let fail = |reason: String| BenchError::Connect { what: format!("{source} → ws://{target}"), reason };
    let mut request = format!("ws://{target}/api/v1/ws").into_client_request().map_err(|e| fail(e.to_string()))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| fail(e.to_string()))?;
    request.headers_mut().insert("authorization", bearer);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(READ_BUFFER)
        .max_write_buffer_size(1 << 20);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(ws)
}

/// Runs one connection's role until the run stops it.
pub(crate) async fn drive(ws: Ws, role: Role, recorder: Arc<Recorder>, signals: Signals) {
    match role {
        Role::Idle => idle(ws, &recorder, signals).await,
        Role::Sender(job) => sender(ws, job, &recorder, signals).await,
        Role::Receiver(job) => receiver(ws, job, &recorder, signals).await,
    }
}

/// What one read from the socket meant.
enum Read {
    Frame(Utf8Bytes),
    Other,
    Ended(String),
}

fn classify(item: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Read {
    match item {
        Some(Ok(Message::Text(text))) => Read::Frame(text),
        Some(Ok(Message::Close(frame))) => Read::Ended(match frame {
            Some(frame) => format!("closed by the node: {} {}", frame.code, frame.reason),
            None => "closed by the node".to_owned(),
        }),
        Some(Ok(_)) => Read::Other,
        Some(Err(e)) => Read::Ended(format!("socket: {e}")),
        None => Read::Ended("connection ended".to_owned()),
    }
}

async fn idle(mut ws: Ws, recorder: &Recorder, mut signals: Signals) {
    loop {
        tokio::select! {
            _ = raised(&mut signals.stop) => break,
            item = ws.next() => match classify(item) {
                Read::Frame(_) | Read::Other => {}
                Read::Ended(why) => return lost_connection(recorder, || why),
            },
        }
    }
    let _ = ws.close(None).now_or_never();
}

async fn sender(ws: Ws, job: SenderJob, recorder: &Recorder, mut signals: Signals) {
    let (mut sink, mut stream) = ws.split();
    let mut pacer: Option<crate::pace::Pacer> = None;
    let mut sending = true;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = raised(&mut signals.stop) => break,
            _ = raised(&mut signals.stop_sending), if sending => sending = false,
            item = stream.next() => match classify(item) {
                Read::Frame(text) => on_sender_frame(&text, recorder),
                Read::Other => {}
                Read::Ended(why) => return lost_connection(recorder, || why),
            },
            _ = raised(&mut signals.go), if sending && pacer.is_none() => {
                if job.pair.broken.load(Ordering::Relaxed) {
                    sending = false;
                } else {
                    pacer = Some(job.pacer());
                }
            }
            n = async { match pacer.as_mut() { Some(p) => p.ready(&job.pair).await, None => std::future::pending().await } }, if sending => {
                for _ in 0..n {
                    let sent_ns = recorder.clock.now_ns();
                    let frame = ClientFrame::Send {
                        client_message_id: measure::client_message_id(seq, sent_ns),
                        receiver_id: job.to.clone(),
                        message: measure::message_body(job.index, seq, sent_ns, job.size),
                    };
                    seq += 1;
                    let text = match serde_json::to_string(&frame) {
                        Ok(text) => text,
                        Err(e) => return recorder.record_error(|| format!("encoding a send: {e}")),
                    };
                    if let Err(e) = sink.feed(Message::Text(text.into())).await {
                        return lost_connection(recorder, || format!("sending: {e}"));
                    }
                    job.count_sent(recorder);
                }
                if let Err(e) = sink.flush().await {
                    return lost_connection(recorder, || format!("sending: {e}"));
                }
            },
        }
    }
    let _ = sink.send(Message::Close(None)).now_or_never();
}

fn on_sender_frame(text: &str, recorder: &Recorder) {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Sent { client_message_id, .. }) => match measure::parse_client_message_id(&client_message_id) {
            Some(sent_ns) => recorder.record_stored(sent_ns),
            None => {
                recorder.unexpected.fetch_add(1, Ordering::Relaxed);
            }
        },
        Ok(ServerFrame::Receipt { .. }) => {
            recorder.receipts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(ServerFrame::Error { code, message, .. }) => {
            recorder.record_error(|| format!("node answered {code:?}: {message}"));
        }
        Ok(ServerFrame::Presence(_) | ServerFrame::Synced | ServerFrame::KeysChanged { .. }) => {}
        Ok(ServerFrame::Message(_)) | Err(_) => {
            recorder.unexpected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn receiver(ws: Ws, job: ReceiverJob, recorder: &Recorder, mut signals: Signals) {
    let (mut sink, mut stream) = ws.split();
    let mut seen = Seen::default();
    loop {
        let first = tokio::select! {
            _ = raised(&mut signals.stop) => break,
            item = stream.next() => item,
        };
        // Handle this frame and every one already buffered, then flush their acks at once.
        let mut item = Some(first);
        let mut acks = 0usize;
        while let Some(next) = item.take() {
            match classify(next) {
                Read::Frame(text) => {
                    if let Some(ack) = on_receiver_frame(&text, &job, &mut seen, recorder) {
                        if let Err(e) = sink.feed(Message::Text(ack.into())).await {
                            return lost_connection(recorder, || format!("acking: {e}"));
                        }
                        acks += 1;
                    }
                }
                Read::Other => {}
                Read::Ended(why) => return lost_connection(recorder, || why),
            }
            item = stream.next().now_or_never();
        }
        if acks > 0
            && let Err(e) = sink.flush().await
        {
            return lost_connection(recorder, || format!("acking: {e}"));
        }
    }
    let _ = sink.send(Message::Close(None)).now_or_never();
}

/// Records a received frame; returns the ack to send for a message.
fn on_receiver_frame(text: &str, job: &ReceiverJob, seen: &mut Seen, recorder: &Recorder) -> Option<String> {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Message(message)) => {
            match measure::parse_body(&message.message) {
                Some(header) if header.pair == job.index => {
                    let new = seen.insert(header.seq);
                    recorder.record_received(&job.pair, header.sent_ns, new);
                }
                _ => {
                    recorder.unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
            serde_json::to_string(&ClientFrame::Ack { message_id: message.message_id }).ok()
        }
        Ok(ServerFrame::Error { code, message, .. }) => {
            recorder.record_error(|| format!("node answered {code:?}: {message}"));
            None
        }
        Ok(
            ServerFrame::Presence(_)
            | ServerFrame::Receipt { .. }
            | ServerFrame::Synced
            | ServerFrame::KeysChanged { .. },
        ) => None,
        Ok(ServerFrame::Sent { .. }) | Err(_) => {
            recorder.unexpected.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

//! The WebSocket side: send frames, read frames, every wait with a deadline.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use kith_proto::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;
use crate::timeouts::Timeouts;

/// An open real-time connection. Pings are answered while frames are being read, so a
/// connection that is not read from is eventually closed by the node. While reading, a node
/// silent for [`Timeouts::idle`] is pinged, and one silent for twice that is given up on.
#[derive(Debug)]
pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    timeouts: Timeouts,
    /// When the node last sent anything (frames, pings, pongs).
    last_heard: Instant,
    /// Whether the client has pinged the node since it last heard from it.
    pinged: bool,
}

impl Connection {
    pub(crate) async fn open(
        base: &str,
        token: &str,
        timeouts: Timeouts,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, ClientError> {
        let url = format!("ws{}/api/v1/ws", base.trim_start_matches("http"));
        let mut request = url.as_str().into_client_request()?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ClientError::Url { url: url.clone(), reason: e.to_string() })?;
        request.headers_mut().insert("authorization", bearer);
        // `wss://` for an `https://` base; the same trust as the REST calls.
        let connector = tls.map(tokio_tungstenite::Connector::Rustls);
        // Nagle off (`true`): an ack written while the frame before is unacknowledged would
        // otherwise wait for the node's delayed ACK.
        let connecting = tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
        let (socket, _) = tokio::time::timeout(timeouts.connect, connecting).await.map_err(|_| {
            ClientError::TimedOut(format!("no WebSocket handshake from {url} in {:?}", timeouts.connect))
        })??;
        Ok(Self { socket, timeouts, last_heard: Instant::now(), pinged: false })
    }

    /// Sends a frame.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send_text(text).await
    }

    /// Sends raw text, for talking to the node in ways the typed frames do not allow.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), ClientError> {
        self.send_message(Message::Text(text.into())).await
    }

    /// Sends a raw WebSocket message.
    ///
    /// # Errors
    /// [`ClientError::TimedOut`] when the node does not take it within [`Timeouts::request`]
    /// (it stopped reading), transport errors.
    pub async fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        let deadline = self.timeouts.request;
        tokio::time::timeout(deadline, self.socket.send(message))
            .await
            .map_err(|_| ClientError::TimedOut(format!("the node took no frame for {deadline:?}")))??;
        Ok(())
    }

    /// The next frame from the node. Cancel-safe: usable in `tokio::select!`, and cancelling
    /// does not restart the idle deadline.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the node closed the connection (with its code);
    /// [`ClientError::TimedOut`] when the node said nothing, not even to a ping, for twice
    /// [`Timeouts::idle`]; transport and decoding errors.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let idle = self.timeouts.idle;
            let next = match tokio::time::timeout_at(self.last_heard + idle, self.socket.next()).await {
                Ok(next) => next,
                Err(_) if !self.pinged => {
                    // Silent for a while: ask, and give it as long again to answer.
                    self.pinged = true;
                    self.last_heard = Instant::now();
                    self.socket.send(Message::Ping(Default::default())).await?;
                    continue;
                }
                Err(_) => {
                    return Err(ClientError::TimedOut(format!(
                        "the node sent nothing for {:?}, and did not answer a ping",
                        idle * 2
                    )));
                }
            };
            self.last_heard = Instant::now();
            self.pinged = false;
            match next {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| ClientError::Decode(format!("{e}: {text}")));
                }
                Some(Ok(Message::Close(frame))) => {
                    // Sends the close reply tungstenite queued, so the node need not wait for it.
                    let _ = tokio::time::timeout(self.timeouts.close, self.socket.flush()).await;
                    return Err(closed(frame));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(closed(None)),
            }
        }
    }

    /// Closes the connection politely: sends a close and reads until the node answers it, for
    /// at most [`Timeouts::close`].
    ///
    /// # Errors
    /// [`ClientError::TimedOut`] when the node did not answer the close in time; transport
    /// errors.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let deadline = self.timeouts.close;
        let handshake = async {
            self.socket.close(None).await?;
            // Read until the node's close answer, so the close completes on both sides.
            while let Some(Ok(_)) = self.socket.next().await {}
            Ok::<_, ClientError>(())
        };
        tokio::time::timeout(deadline, handshake)
            .await
            .map_err(|_| ClientError::TimedOut(format!("the node did not answer a close in {deadline:?}")))?
    }
}

fn closed(frame: Option<CloseFrame>) -> ClientError {
    match frame {
        Some(frame) => ClientError::Closed { code: frame.code.into(), reason: frame.reason.to_string() },
        None => ClientError::Closed { code: 1005, reason: String::new() },
    }
}

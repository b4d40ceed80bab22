//! The WebSocket side: send frames, read frames.

use futures_util::{SinkExt, StreamExt};
use kith_proto::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;

/// An open real-time connection. Pings are answered while frames are being read, so a
/// connection that is not read from is eventually closed by the node.
#[derive(Debug)]
pub struct Connection {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Connection {
    pub(crate) async fn open(base: &str, token: &str) -> Result<Self, ClientError> {
        let url = format!("ws{}/api/v1/ws", base.trim_start_matches("http"));
        let mut request = url.as_str().into_client_request()?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ClientError::Url { url: url.clone(), reason: e.to_string() })?;
        request.headers_mut().insert("authorization", bearer);
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket })
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
        Ok(self.socket.send(Message::Text(text.into())).await?)
    }

    /// Sends a raw WebSocket message.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        Ok(self.socket.send(message).await?)
    }

    /// The next frame from the node.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the node closed the connection (with its code), transport
    /// and decoding errors.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| ClientError::Decode(format!("{e}: {text}")));
                }
                Some(Ok(Message::Close(frame))) => {
                    // Sends the close reply tungstenite queued, so the node need not wait for it.
                    let _ = self.socket.flush().await;
                    return Err(closed(frame));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err(closed(None)),
            }
        }
    }

    /// Closes the connection politely.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.socket.close(None).await?;
        // Read until the node's close answer, so the close completes on both sides.
        while let Some(Ok(_)) = self.socket.next().await {}
        Ok(())
    }
}

fn closed(frame: Option<CloseFrame>) -> ClientError {
    match frame {
        Some(frame) => ClientError::Closed { code: frame.code.into(), reason: frame.reason.to_string() },
        None => ClientError::Closed { code: 1005, reason: String::new() },
    }
}

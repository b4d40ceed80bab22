//! The REST side: accounts, messages, history, presence.

use kith_proto::keys::{KeyBundles, KeyCount, KeyUpload, RemovalUpload};
use kith_proto::rest::{AuthResponse, Credentials, HistoryPage, HistoryQuery, SendMessageRequest, SendMessageResponse};
use kith_proto::{
    DeviceId, ErrorBody, ErrorCode, MessageId, PresenceSettings, PresenceView, PresenceVisibility, UserId,
};
use reqwest::{RequestBuilder, Response};
use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::error::ClientError;
use crate::timeouts::Timeouts;
use crate::tls::Trust;
use crate::ws::Connection;

/// A node's client API, before logging in.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    /// The device that registers or logs in (the node's default, 0, when unset).
    device: Option<DeviceId>,
    /// How long each kind of wait may take.
    timeouts: Timeouts,
    /// For `https://`: the TLS configuration (whom it trusts), shared by REST and WebSocket.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client of the node at `base_url` (`http://host:port`, or `https://host:port`
    /// trusting the system's certificate authorities).
    ///
    /// # Errors
    /// [`ClientError::Url`] when the URL is neither `http://…` nor `https://…`;
    /// [`ClientError::Tls`] for `https://` on a system without CA certificates.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_trust(base_url, &Trust::System)
    }

    /// A client of the node at `base_url` that, for `https://`, trusts the authorities in
    /// `trust` (ignored for `http://`).
    ///
    /// # Errors
    /// [`ClientError::Url`] when the URL is neither `http://…` nor `https://…`;
    /// [`ClientError::Tls`] when the authorities cannot be read.
    pub fn with_trust(base_url: &str, trust: &Trust) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        let tls = if base.starts_with("https://") {
            Some(trust.client_config()?)
        } else if base.starts_with("http://") {
            None
        } else {
            return Err(ClientError::Url {
                url: base_url.into(),
                reason: "must start with http:// or https://".into(),
            });
        };
        let timeouts = Timeouts::default();
        Ok(Self { http: http_client(&timeouts, tls.as_ref())?, base, device: None, timeouts, tls })
    }

    /// The same client with other deadlines.
    ///
    /// # Errors
    /// Only if the HTTP client cannot be built (in practice never).
    pub fn timeouts(mut self, timeouts: Timeouts) -> Result<Self, ClientError> {
        self.http = http_client(&timeouts, self.tls.as_ref())?;
        self.timeouts = timeouts;
        Ok(self)
    }

    /// The same client, registering and logging in as `device` of the user.
    #[must_use]
    pub fn device(mut self, device: DeviceId) -> Self {
        self.device = Some(device);
        self
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Creates an account and logs in.
    ///
    /// # Errors
    /// `409 username_taken`, `400 invalid_request`, transport errors.
    pub async fn register(&self, username: &str, password: &str) -> Result<Authed, ClientError> {
        let body = Credentials { username: username.into(), password: password.into(), device_id: self.device };
        let auth: AuthResponse = decode(self.http.post(self.url("/api/v1/register")).json(&body)).await?;
        Ok(self.authed(auth))
    }

    /// Logs in.
    ///
    /// # Errors
    /// `401 invalid_credentials`, transport errors.
    pub async fn login(&self, username: &str, password: &str) -> Result<Authed, ClientError> {
        let body = Credentials { username: username.into(), password: password.into(), device_id: self.device };
        let auth: AuthResponse = decode(self.http.post(self.url("/api/v1/login")).json(&body)).await?;
        Ok(self.authed(auth))
    }

    /// Uses a token obtained earlier.
    pub fn authed(&self, auth: AuthResponse) -> Authed {
        Authed { client: self.clone(), user_id: auth.user_id, device_id: auth.device_id, token: auth.token }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// A logged-in user's view of the API.
#[derive(Debug, Clone)]
pub struct Authed {
    client: Client,
    user_id: UserId,
    device_id: DeviceId,
    token: String,
}

/// Whether a send stored a new message or repeated an earlier `clientMessageId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Newly stored (201).
    New,
    /// A repeat; nothing new stored (200).
    Repeat,
}

impl Authed {
    /// Who this is.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Which of the user's devices this is.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends a message over REST; returns once it is durably stored.
    ///
    /// # Errors
    /// `404` unknown receiver, `413` too large, `429` too fast, transport errors.
    pub async fn send_message(
        &self,
        receiver: &str,
        message: &str,
        client_message_id: Option<&str>,
    ) -> Result<(Sent, SendMessageResponse), ClientError> {
        let body = SendMessageRequest {
            sender_id: self.user_id.to_string(),
            receiver_id: receiver.into(),
            message: message.into(),
            client_message_id: client_message_id.map(Into::into),
        };
        let response = send(self.auth(self.client.http.post(self.client.url("/api/v1/messages"))).json(&body)).await?;
        let sent = if response.status() == reqwest::StatusCode::CREATED { Sent::New } else { Sent::Repeat };
        Ok((sent, response.json().await?))
    }

    /// A page of the conversation with `peer`: the newest `limit` messages before `before`.
    ///
    /// # Errors
    /// `404` for a conversation the caller is not part of, transport errors.
    pub async fn history(
        &self,
        peer: &str,
        before: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        self.history_between(self.user_id.as_str(), peer, before, limit).await
    }

    /// A page of the conversation between `user1` and `user2` (the caller must be one of them).
    ///
    /// # Errors
    /// As [`Authed::history`].
    pub async fn history_between(
        &self,
        user1: &str,
        user2: &str,
        before: Option<MessageId>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ClientError> {
        let query =
            HistoryQuery { user1: user1.into(), user2: user2.into(), before: before.map(|id| id.to_string()), limit };
        decode(self.auth(self.client.http.get(self.client.url("/api/v1/messages"))).query(&query)).await
    }

    /// A user's presence.
    ///
    /// # Errors
    /// `404` for an unknown user, transport errors.
    pub async fn presence(&self, user: &str) -> Result<PresenceView, ClientError> {
        let url = self.client.url(&format!("/api/v1/presence/{user}"));
        decode(self.auth(self.client.http.get(url))).await
    }

    /// Who may see this user's presence.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn presence_visibility(&self) -> Result<PresenceVisibility, ClientError> {
        let url = self.client.url("/api/v1/settings/presence");
        let settings: PresenceSettings = decode(self.auth(self.client.http.get(url))).await?;
        Ok(settings.visibility)
    }

    /// Sets who may see this user's presence: everyone, contacts (the default) or nobody.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn set_presence_visibility(&self, visibility: PresenceVisibility) -> Result<(), ClientError> {
        let url = self.client.url("/api/v1/settings/presence");
        send(self.auth(self.client.http.put(url)).json(&PresenceSettings { visibility })).await.map(drop)
    }

    /// Publishes this device's public keys (identity, signed prekey, more one-time prekeys).
    ///
    /// # Errors
    /// `422` when a key or signature does not verify (`400` for one over its size rules), transport errors.
    pub async fn publish_keys(&self, keys: &KeyUpload) -> Result<KeyCount, ClientError> {
        decode(self.auth(self.client.http.put(self.client.url("/api/v1/keys"))).json(keys)).await
    }

    /// Claims a prekey bundle for each of `user`'s devices.
    ///
    /// # Errors
    /// `404` for an unknown user, `429` when claiming too fast, transport errors.
    pub async fn claim_keys(&self, user: &str) -> Result<KeyBundles, ClientError> {
        decode(self.auth(self.client.http.get(self.client.url(&format!("/api/v1/keys/{user}"))))).await
    }

    /// The identity and signed prekey of each of `user`'s devices, claiming no one-time
    /// prekey (to keep a device list current).
    ///
    /// # Errors
    /// `404` for an unknown user, transport errors.
    pub async fn device_keys(&self, user: &str) -> Result<KeyBundles, ClientError> {
        decode(self.auth(self.client.http.get(self.client.url(&format!("/api/v1/keys/{user}/devices"))))).await
    }

    /// How many one-time prekeys this device has left on the node.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn key_count(&self) -> Result<KeyCount, ClientError> {
        decode(self.auth(self.client.http.get(self.client.url("/api/v1/keys/count")))).await
    }

    /// Hands the node a removal of one of the user's devices signed by the account's user
    /// identity (`POST /api/v1/keys/removals`); the node serves it to contacts and removes the
    /// device.
    ///
    /// # Errors
    /// `422` for a removal the node cannot check, transport errors.
    pub async fn publish_removal(&self, removal: &RemovalUpload) -> Result<(), ClientError> {
        send(self.auth(self.client.http.post(self.client.url("/api/v1/keys/removals"))).json(removal)).await.map(drop)
    }

    /// Removes one of the user's devices (its keys and its queue go with it).
    ///
    /// # Errors
    /// `404` for an unknown device, transport errors.
    pub async fn remove_device(&self, device: DeviceId) -> Result<(), ClientError> {
        send(self.auth(self.client.http.delete(self.client.url(&format!("/api/v1/devices/{device}"))))).await?;
        Ok(())
    }

    /// Opens the real-time WebSocket.
    ///
    /// # Errors
    /// `401` for a bad token, [`ClientError::TimedOut`] when the handshake takes longer than
    /// [`Timeouts::connect`], transport errors.
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        Connection::open(&self.client.base, &self.token, self.client.timeouts, self.client.tls.clone()).await
    }

    fn auth(&self, request: RequestBuilder) -> RequestBuilder {
        request.bearer_auth(&self.token)
    }
}

/// How long an idle connection is kept for reuse: below the node's `--http-header-timeout`
/// (10 s by default), after which the node closes it, so that a request is rarely sent on a
/// connection the node is closing at that moment.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The HTTP client: every request has a deadline; `https://` with the given TLS configuration.
fn http_client(timeouts: &Timeouts, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT);
    // Always a configuration of our own, with our crypto provider: for `http://` one that is
    // never used, since reqwest would otherwise need a process-wide default provider.
    let config = match tls {
        Some(config) => rustls::ClientConfig::clone(config),
        None => crate::tls::unused_config()?,
    };
    let builder = builder.tls_backend_preconfigured(config);
    builder.build().map_err(ClientError::from)
}

/// Sends a request; a non-success answer becomes [`ClientError::Api`].
async fn send(request: RequestBuilder) -> Result<Response, ClientError> {
    let response = request.send().await?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ClientError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message },
        Err(_) => ClientError::Api { status: status.as_u16(), code: ErrorCode::Unknown, message: text },
    })
}

async fn decode<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, ClientError> {
    Ok(send(request).await?.json().await?)
}

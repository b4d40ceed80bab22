//! What the API needs from the node behind it.
//!
//! The HTTP and WebSocket edge parses, authenticates and validates; everything that touches
//! state goes through [`ChatService`], which the node implements. The API crate therefore knows
//! nothing of stores, caches or federation, and the node nothing of HTTP.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use kith_proto::keys::{KeyBundles, KeyCount, KeyUpload, RemovalUpload};
use kith_proto::{
    ClientMessageId, DeviceId, IncomingMessage, MessageId, MessageStatus, PresenceView, PresenceVisibility,
    ServerFrame, ServerName, Timestamp, UserId, Username, rest::HistoryPage,
};
use tokio::sync::mpsc;

/// Why the node refused or failed a request. Mapped to HTTP statuses and WS error frames once,
/// in [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field breaks a documented rule; the message names it.
    #[error("{0}")]
    InvalidRequest(String),
    /// The username is taken.
    #[error("username {0} is taken")]
    UsernameTaken(Username),
    /// Wrong username or password (the same answer for both, so accounts cannot be probed).
    #[error("wrong username or password")]
    InvalidCredentials,
    /// The user does not exist on its home server.
    #[error("user {0} does not exist")]
    UnknownUser(UserId),
    /// The caller has no conversation with that user (or the user does not exist).
    #[error("no conversation between {0} and {1}")]
    UnknownConversation(UserId, UserId),
    /// The message does not exist or is not the caller's to acknowledge.
    #[error("message {0} not found")]
    UnknownMessage(MessageId),
    /// The receiver's home server is not one this node can reach.
    #[error("server {0} is not reachable from this node")]
    UnknownServer(ServerName),
    /// The request speaks for someone other than the caller.
    #[error("{0}")]
    Forbidden(String),
    /// The user has as many devices as allowed.
    #[error("{0}")]
    TooManyDevices(String),
    /// The device does not exist (never added, or removed): log in again.
    #[error("device {1} of {0} does not exist; log in again")]
    UnknownDevice(UserId, DeviceId),
    /// The device a request names (not the caller's own) is not one of the user's devices:
    /// the caller's token is fine, the target is not there.
    #[error("device {1} of {0} does not exist")]
    NoSuchDevice(UserId, DeviceId),
    /// The user has as many live connections as one user may.
    #[error("{0}")]
    TooManySessions(String),
    /// Uploaded keys are malformed or their signatures do not verify.
    #[error("invalid keys: {0}")]
    InvalidKeys(String),
    /// A device certificate is by another user identity than the account's, and the upload
    /// did not ask to reset it.
    #[error("{0} has another user identity: link this device from one of the account's devices, or reset the identity")]
    UserIdentityConflict(UserId),
    /// The node cannot serve it now (store down, shutting down, overloaded).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; details go to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Who is calling: an authenticated user and the device they called from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The user.
    pub user: UserId,
    /// Their device.
    pub device: DeviceId,
}

/// A password as the client sent it: 8 to 256 characters. Never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Checks the documented length rule.
    ///
    /// # Errors
    /// [`ServiceError::InvalidRequest`] naming the rule.
    pub fn parse(s: String) -> Result<Self, ServiceError> {
        use kith_proto::limits::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};
        let chars = s.chars().count();
        if (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&chars) {
            Ok(Self(s))
        } else {
            Err(ServiceError::InvalidRequest(format!(
                "password must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters (got {chars})"
            )))
        }
    }

    /// The password, for hashing or verifying.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// A message the caller asks to send, already checked against the API's rules.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Who receives it.
    pub receiver: UserId,
    /// The content, at most [`kith_proto::limits::MAX_MESSAGE_BYTES`].
    pub content: String,
    /// The sender's idempotency key.
    pub client_message_id: Option<ClientMessageId>,
}

/// The answer to a send, once the message is durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    /// The message's id.
    pub message_id: MessageId,
    /// When it was stored.
    pub timestamp: Timestamp,
    /// Whether this repeated an earlier `clientMessageId` (nothing new was stored).
    pub duplicate: bool,
}

/// Resolves when an accepted operation has been committed (or failed).
pub type Completion<T> = Pin<Box<dyn Future<Output = Result<T, ServiceError>> + Send>>;

/// Something pushed to a live session, already encoded as its JSON frame: a message pushed to
/// several sessions is encoded once, and a queued event is one pointer (every session's queue
/// allocates its first slots up front, so their size is memory per idle connection).
#[derive(Debug, Clone)]
pub struct SessionEvent(Arc<Encoded>);

/// An encoded frame and, for a `message` frame, the message's id; or the request to replay.
#[derive(Debug)]
struct Encoded {
    message_id: Option<MessageId>,
    text: String,
    /// Not a frame: "send again whatever is pending that you have not sent".
    replay: bool,
}

impl SessionEvent {
    /// The `message` frame carrying `message`.
    pub fn message(message: IncomingMessage) -> Self {
        let message_id = Some(message.message_id);
        Self(Arc::new(Encoded { message_id, text: encode(&ServerFrame::Message(message)), replay: false }))
    }

    /// Any other frame: receipts, presence, key changes.
    pub fn frame(frame: &ServerFrame) -> Self {
        Self(Arc::new(Encoded { message_id: None, text: encode(frame), replay: false }))
    }

    /// A frame encoded elsewhere (by another instance of the node), with the message's id for a
    /// `message` frame.
    pub fn encoded(text: String, message_id: Option<MessageId>) -> Self {
        Self(Arc::new(Encoded { message_id, text, replay: false }))
    }

    /// Asks the connection to send again what is pending for it and it has not sent: pushes
    /// may have been lost on their way (the node lost its hand-off between instances for a
    /// while), and the store still has every message.
    pub fn replay() -> Self {
        Self(Arc::new(Encoded { message_id: None, text: String::new(), replay: true }))
    }

    /// Whether this is [`SessionEvent::replay`] rather than a frame.
    pub fn is_replay(&self) -> bool {
        self.0.replay
    }

    /// The message's id, for a `message` frame (to skip a push that raced the replay).
    pub fn message_id(&self) -> Option<MessageId> {
        self.0.message_id
    }

    /// The encoded frame.
    pub fn text(&self) -> &str {
        &self.0.text
    }
}

/// Encodes a frame. Frames are plain data (strings, numbers, ids), which JSON always encodes;
/// should that ever fail, the session gets an `internal` error frame instead.
fn encode(frame: &ServerFrame) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode a frame");
        r#"{"type":"error","code":"internal","message":"internal error"}"#.to_owned()
    })
}

/// Identifies one live session (one WebSocket) on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Keeps a session registered; dropping it ends the session (and, for the user's last one,
/// sets them offline).
pub trait SessionLease: Send + Sync + fmt::Debug {}

/// A live session: what the node pushes to it, and the lease that keeps it registered.
#[derive(Debug)]
pub struct Session {
    /// This session's id.
    pub id: SessionId,
    /// Pushes from the node. `None` means the node ended the session (it fell too far behind,
    /// or the node is stopping); the client should reconnect and will be sent what is pending.
    pub events: mpsc::Receiver<SessionEvent>,
    /// Dropped when the connection ends.
    pub lease: Box<dyn SessionLease>,
}

/// The node, as the API sees it.
#[async_trait]
pub trait ChatService: Send + Sync + 'static {
    /// The server name this node is home to.
    fn server_name(&self) -> &ServerName;

    /// Creates an account with its first device.
    ///
    /// # Errors
    /// [`ServiceError::UsernameTaken`].
    async fn register(&self, username: Username, password: Password, device: DeviceId) -> Result<UserId, ServiceError>;

    /// Checks a password and adds `device` to the account if it is new.
    ///
    /// # Errors
    /// [`ServiceError::InvalidCredentials`] for an unknown user or a wrong password alike;
    /// [`ServiceError::TooManyDevices`].
    async fn login(&self, username: Username, password: Password, device: DeviceId) -> Result<UserId, ServiceError>;

    /// Accepts a message for delivery. Awaiting this orders it after the caller's earlier
    /// sends; the returned [`Completion`] resolves once it is durably stored.
    ///
    /// # Errors
    /// [`ServiceError::UnknownUser`] for a receiver that does not exist,
    /// [`ServiceError::UnknownServer`] for one on a server this node cannot reach.
    async fn send(&self, sender: &Caller, message: OutgoingMessage) -> Result<Completion<SendOutcome>, ServiceError>;

    /// A page of `caller`'s conversation with `peer`: the newest `limit` messages before
    /// `before`, oldest first.
    async fn history(
        &self,
        caller: &UserId,
        peer: &UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<HistoryPage, ServiceError>;

    /// A user's presence as `viewer` may see it: the real one if the user shares it with
    /// them (their setting, and for `contacts` a conversation between the two), else
    /// [`PresenceView::hidden`].
    ///
    /// # Errors
    /// [`ServiceError::UnknownUser`] when the user does not exist.
    async fn presence(&self, viewer: &UserId, user: &UserId) -> Result<PresenceView, ServiceError>;

    /// Who may see `user`'s presence.
    async fn presence_visibility(&self, user: &UserId) -> Result<PresenceVisibility, ServiceError>;

    /// Sets who may see `user`'s presence; watchers who may no longer see it are told
    /// `unknown`, those who now may are told the real presence.
    async fn set_presence_visibility(&self, user: &UserId, visibility: PresenceVisibility) -> Result<(), ServiceError>;

    /// Registers a live session of `caller`'s device: from now on, messages for it are pushed.
    ///
    /// # Errors
    /// [`ServiceError::UnknownDevice`] for a device that was removed.
    async fn open_session(&self, caller: &Caller) -> Result<Session, ServiceError>;

    /// Messages `caller`'s device has not acked, with a position after `after`, oldest first,
    /// for redelivery when a session opens. Positions are opaque and only increase.
    async fn pending(
        &self,
        caller: &Caller,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, IncomingMessage)>, ServiceError>;

    /// Records that `caller`'s device has the message (`Delivered`) or that the user has read
    /// it (`Read`, receiver only); the sender is told when the status moves forward.
    ///
    /// # Errors
    /// [`ServiceError::UnknownMessage`] (from the completion) when the message is not in the
    /// caller's mailbox (or, for `Read`, not addressed to them).
    async fn receipt(
        &self,
        caller: &Caller,
        message_id: MessageId,
        status: MessageStatus,
    ) -> Result<Completion<()>, ServiceError>;

    /// Makes `session` receive presence changes of `users` (of those that share their
    /// presence with the session's user); returns their current presence as that user may
    /// see it.
    async fn subscribe_presence(
        &self,
        session: SessionId,
        users: Vec<UserId>,
    ) -> Result<Vec<PresenceView>, ServiceError>;

    /// Publishes the public keys of `caller`'s device (verifying every signature).
    ///
    /// # Errors
    /// [`ServiceError::InvalidKeys`] naming what does not verify.
    async fn publish_keys(&self, caller: &Caller, keys: KeyUpload) -> Result<KeyCount, ServiceError>;

    /// A prekey bundle for each of `user`'s devices, claiming one one-time prekey of each.
    ///
    /// # Errors
    /// [`ServiceError::UnknownUser`].
    async fn claim_keys(&self, caller: &Caller, user: &UserId) -> Result<KeyBundles, ServiceError>;

    /// The identity and signed prekey of each of `user`'s devices, claiming nothing: for
    /// clients keeping their list of a user's devices up to date.
    ///
    /// # Errors
    /// [`ServiceError::UnknownUser`].
    async fn device_keys(&self, caller: &Caller, user: &UserId) -> Result<KeyBundles, ServiceError>;

    /// How many one-time prekeys `caller`'s device has left.
    async fn key_count(&self, caller: &Caller) -> Result<KeyCount, ServiceError>;

    /// Removes one of the caller's devices, with its keys and its queue.
    ///
    /// # Errors
    /// [`ServiceError::NoSuchDevice`] when the user has no such device.
    async fn remove_device(&self, caller: &Caller, device: DeviceId) -> Result<(), ServiceError>;

    /// Stores a removal of one of the caller's devices signed by the account's user identity,
    /// serves it to contacts from then on, and removes that device (if it still has the key
    /// the removal names).
    ///
    /// # Errors
    /// [`ServiceError::InvalidKeys`] for a removal that does not decode, is for another user,
    /// or is not signed by the account's user identity.
    async fn publish_removal(&self, caller: &Caller, removal: RemovalUpload) -> Result<(), ServiceError>;

    /// Whether the caller's device still exists (it may have been removed since its token was
    /// issued). Every authenticated REST request asks; [`ChatService::open_session`] checks too.
    ///
    /// # Errors
    /// [`ServiceError::UnknownDevice`].
    async fn check_device(&self, caller: &Caller) -> Result<(), ServiceError>;

    /// Whether the node can serve requests (its store answers).
    async fn ready(&self) -> Result<(), ServiceError>;
}

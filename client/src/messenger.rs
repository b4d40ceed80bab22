//! The end-to-end encrypting client: accounts, keys, sending, receiving, safety numbers.
//!
//! A [`Messenger`] is one device of one user, backed by a [`Profile`]. It encrypts every
//! message for each device of the receiver and each other device of the sender (see
//! [`crate::envelope`]), and decrypts, stores and only then acknowledges what it receives, so a
//! crash never loses a message: one that was not stored is delivered again and decrypts from
//! the state saved before it.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_crypto::{PreKeyBundle, VerifiedPreKeyBundle, safety_number};
use kith_proto::keys::KeyBundles;
use kith_proto::{
    ClientFrame, DeviceId, ErrorCode, IdError, IncomingMessage, MessageId, MessageStatus, ServerFrame, Timestamp,
    UserId,
};
use rand_core::UnwrapErr;

use crate::envelope::{self, Content, Envelope, EnvelopeError, Payload, Recipient};
use crate::history::{Body, HistoryEntry};
use crate::profile::{Profile, ProfileError};
use crate::sessions::{IdentityStatus, KeyStore, Notice, SessionError};
use crate::state::{Account, Outgoing, Processed, State};
use crate::{Authed, Client, ClientError, Connection};

/// Upload more one-time prekeys when the node holds fewer than this.
pub const PREKEY_LOW_WATER: u32 = 20;

/// How many one-time prekeys the node should hold after a top-up.
pub const PREKEY_TARGET: u32 = 100;

/// How long [`Messenger::sync`] waits for the node's next frame before giving up.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a messenger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MessengerError {
    /// Talking to the node failed (unreachable, refused, unexpected answer).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The profile could not be read or written.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The encryption layer refused (no devices, changed identity, a protocol error).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The message could not be packed (too large for its recipients).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The user does not exist on their node.
    #[error("no such user: {0}")]
    UnknownUser(String),
    /// A user id is malformed.
    #[error(transparent)]
    InvalidUserId(#[from] IdError),
    /// The message was encrypted and saved but the node did not confirm it; it is sent again
    /// (once) by the next operation that talks to the node.
    #[error("message queued, not yet confirmed by the server: {0}")]
    Queued(ClientError),
    /// The node's answer did not arrive in time.
    #[error("the server sent nothing for {0:?}")]
    Timeout(Duration),
}

/// What happened, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message arrived and is stored: decrypted, unencrypted, or undecryptable (see
    /// [`Body`]).
    Message(HistoryEntry),
    /// A device's identity key differs from the one this profile knew: a reinstall, or
    /// someone in the middle. Nothing is sent to the user until [`Messenger::trust`].
    IdentityChanged {
        /// Whose device.
        user_id: UserId,
        /// Which.
        device_id: DeviceId,
    },
    /// A user this profile talks to (or this user) has a device it had not seen.
    NewDevice {
        /// Whose device.
        user_id: UserId,
        /// Which.
        device_id: DeviceId,
    },
    /// Everything that was pending when the connection opened has been received.
    CaughtUp,
    /// One of this user's messages was delivered or read.
    Receipt {
        /// The message.
        message_id: MessageId,
        /// How far it got.
        status: MessageStatus,
    },
    /// The node refused something this client sent over the WebSocket.
    ServerError {
        /// The error code.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
}

impl From<Notice> for Event {
    fn from(notice: Notice) -> Self {
        match notice {
            Notice::IdentityChanged(user_id, device_id) => Self::IdentityChanged { user_id, device_id },
            Notice::NewDevice(user_id, device_id) => Self::NewDevice { user_id, device_id },
        }
    }
}

/// A message this device sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// It, as stored in the local history.
    pub entry: HistoryEntry,
    /// What was learned on the way (new devices of the receiver).
    pub events: Vec<Event>,
}

/// The safety number of this device with one device of another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// Whose device.
    pub user_id: UserId,
    /// Which.
    pub device_id: DeviceId,
    /// This device.
    pub our_device_id: DeviceId,
    /// 60 digits in 12 groups of 5; the other user sees the same for this device.
    pub number: String,
    /// Whether the device's identity changed and was not accepted yet.
    pub changed: bool,
}

/// A live connection to the node, from [`Messenger::connect`]. Read it with
/// [`Inbox::next_frame`] (cancel-safe) and pass each frame to [`Messenger::handle`].
#[derive(Debug)]
pub struct Inbox {
    conn: Connection,
    /// Whether the node said `synced`: everything pending at connect time has arrived.
    synced: bool,
}

impl Inbox {
    /// The next frame from the node. Cancel-safe: usable in `tokio::select!`.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the node closed the connection; transport errors.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        self.conn.next_frame().await
    }

    /// Whether everything pending at connect time has been received.
    pub fn caught_up(&self) -> bool {
        self.synced
    }

    /// Closes the connection politely.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn close(self) -> Result<(), ClientError> {
        self.conn.close().await
    }
}

/// One device of one user: the end-to-end encrypting client.
#[derive(Debug)]
pub struct Messenger {
    profile: Profile,
    api: Authed,
    rng: UnwrapErr<getrandom::SysRng>,
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    rand_core::Rng::fill_bytes(&mut UnwrapErr(getrandom::SysRng), &mut bytes);
    u32::from_le_bytes(bytes)
}

fn random_device_id() -> DeviceId {
    DeviceId(random_u32().max(1))
}

fn client_message_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::Rng::fill_bytes(&mut UnwrapErr(getrandom::SysRng), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, .. })
}

/// A refusal that sending again will not change (the message is dropped from the outbox).
fn permanent(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 400 | 403 | 404 | 413, .. })
}

impl Messenger {
    /// Creates an account on the node at `server` and a profile for this device in `profile`
    /// (which must not hold one), then publishes the device's keys.
    ///
    /// `device` defaults to a random non-zero id.
    ///
    /// # Errors
    /// [`ProfileError::Taken`], the node's refusals (`username_taken` …), transport errors.
    pub async fn register(
        profile: Profile,
        server: &str,
        username: &str,
        password: &str,
        device: Option<DeviceId>,
    ) -> Result<Self, MessengerError> {
        if let Ok(existing) = profile.account() {
            return Err(ProfileError::Taken {
                path: profile.dir().to_owned(),
                user: existing.user_id,
                device: existing.device_id,
            }
            .into());
        }
        let client = Client::new(server)?.device(device.unwrap_or_else(random_device_id));
        let api = client.register(username, password).await?;
        Self::start(profile, api).await
    }

    /// Logs in. With an existing profile of the same user, keeps its keys and device (only the
    /// token changes); otherwise creates a profile with new keys for `device` (default: a
    /// random non-zero id). Logging in to a device id another profile used gives that device a
    /// new identity, which its conversation partners are told about.
    ///
    /// # Errors
    /// [`ProfileError::Taken`] for a profile of another user or device; `invalid_credentials`,
    /// `too_many_devices`, transport errors.
    pub async fn login(
        profile: Profile,
        server: &str,
        username: &str,
        password: &str,
        device: Option<DeviceId>,
    ) -> Result<Self, MessengerError> {
        let existing = match profile.account() {
            Ok(account) => Some(account),
            Err(ProfileError::Missing(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(account) = existing else {
            let client = Client::new(server)?.device(device.unwrap_or_else(random_device_id));
            let api = client.login(username, password).await?;
            return Self::start(profile, api).await;
        };
        let taken = || ProfileError::Taken {
            path: profile.dir().to_owned(),
            user: account.user_id.clone(),
            device: account.device_id,
        };
        if account.user_id.name() != username || device.is_some_and(|d| d != account.device_id) {
            return Err(taken().into());
        }
        let api = Client::new(server)?.device(account.device_id).login(username, password).await?;
        if api.user_id() != &account.user_id {
            return Err(taken().into());
        }
        let mut locked = profile.lock().await?;
        locked.state.account.token = api.token().to_owned();
        locked.state.account.server = api.base_url().to_owned();
        locked.save()?;
        drop(locked);
        let mut messenger = Self { profile, api, rng: UnwrapErr(getrandom::SysRng) };
        messenger.replenish_prekeys().await?;
        Ok(messenger)
    }

    /// A new profile for a freshly authenticated device, and its keys published.
    async fn start(profile: Profile, api: Authed) -> Result<Self, MessengerError> {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let state = State {
            account: Account {
                server: api.base_url().to_owned(),
                user_id: api.user_id().clone(),
                device_id: api.device_id(),
                token: api.token().to_owned(),
            },
            keys: KeyStore::generate(Timestamp::now(), &mut rng),
            processed: Processed::default(),
            outbox: Vec::new(),
            keys_published: false,
        };
        profile.create(&state).await?;
        let mut messenger = Self { profile, api, rng };
        messenger.replenish_prekeys().await?;
        Ok(messenger)
    }

    /// Opens an existing profile, talking to the node it was made with, or to `server`.
    ///
    /// # Errors
    /// [`ProfileError::Missing`] and other profile errors; an invalid URL.
    pub fn open(profile: Profile, server: Option<&str>) -> Result<Self, MessengerError> {
        let account = profile.account()?;
        let client = Client::new(server.unwrap_or(&account.server))?.device(account.device_id);
        let api = client.authed(kith_proto::rest::AuthResponse {
            user_id: account.user_id,
            device_id: account.device_id,
            token: account.token,
        });
        Ok(Self { profile, api, rng: UnwrapErr(getrandom::SysRng) })
    }

    /// This user.
    pub fn user_id(&self) -> &UserId {
        self.api.user_id()
    }

    /// This device.
    pub fn device_id(&self) -> DeviceId {
        self.api.device_id()
    }

    /// The node's base URL.
    pub fn server(&self) -> &str {
        self.api.base_url()
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The typed API client underneath, for calls this type does not wrap.
    pub fn api(&self) -> &Authed {
        &self.api
    }

    /// A user id from what a person typed: `name@server`, or a bare `name` of this node.
    ///
    /// # Errors
    /// [`MessengerError::InvalidUserId`].
    pub fn resolve(&self, user: &str) -> Result<UserId, MessengerError> {
        Ok(UserId::parse_or_local(user, &self.user_id().server_name())?)
    }

    fn me(&self) -> (UserId, DeviceId) {
        (self.user_id().clone(), self.device_id())
    }

    /// Tops up this device's one-time prekeys on the node (to [`PREKEY_TARGET`] when fewer
    /// than [`PREKEY_LOW_WATER`] are left) and replaces the signed prekey when it is due;
    /// returns how many one-time prekeys the node holds. The secrets are saved before the
    /// public halves are uploaded.
    ///
    /// # Errors
    /// Transport and profile errors; the node refusing the keys.
    pub async fn replenish_prekeys(&mut self) -> Result<u32, MessengerError> {
        // Until this profile's keys were published once, the node's count may be another
        // installation's (a reused device id): publish a full batch regardless.
        let first = !self.profile.read()?.keys_published;
        let count = if first { 0 } else { self.api.key_count().await?.one_time_pre_keys };
        let upload = {
            let mut locked = self.profile.lock().await?;
            let keys = &mut locked.state.keys;
            let rotated = keys.rotate_signed_prekey_if_due(Timestamp::now(), &mut self.rng);
            let missing = if count < PREKEY_LOW_WATER { PREKEY_TARGET - count } else { 0 };
            if missing == 0 && !rotated {
                return Ok(count);
            }
            let new = keys.new_one_time_prekeys(missing, &mut self.rng)?;
            let upload = keys.upload(&new);
            locked.save()?;
            upload
        };
        let published = self.api.publish_keys(&upload).await?;
        tracing::debug!(one_time_prekeys = published.one_time_pre_keys, "published keys");
        if first {
            let mut locked = self.profile.lock().await?;
            locked.state.keys_published = true;
            locked.save()?;
        }
        Ok(published.one_time_pre_keys)
    }

    /// Fetches `user`'s device list (which claims nothing), and only when a device needs a new
    /// session claims a bundle per device; checks every bundle and takes it in: new devices,
    /// changed identities, sessions for devices that have none.
    async fn refresh(&mut self, user: &UserId) -> Result<Vec<Event>, MessengerError> {
        let listed = match self.api.device_keys(user.as_str()).await {
            Err(e) if not_found(&e) => return Err(MessengerError::UnknownUser(user.to_string())),
            other => verified_bundles(user, &other?),
        };
        let (me, my_device) = self.me();
        let wants_sessions = self.profile.read()?.keys.wants_sessions(user, (&me, my_device), &listed);
        let bundles = if wants_sessions {
            match self.api.claim_keys(user.as_str()).await {
                Err(e) if not_found(&e) => return Err(MessengerError::UnknownUser(user.to_string())),
                other => verified_bundles(user, &other?),
            }
        } else {
            listed
        };
        let mut locked = self.profile.lock().await?;
        let notices =
            locked.state.keys.apply_bundles(user, (&me, my_device), &bundles, Timestamp::now(), &mut self.rng)?;
        locked.save()?;
        Ok(notices.into_iter().map(Event::from).collect())
    }

    async fn refresh_if_needed(&mut self, users: &[&UserId]) -> Result<Vec<Event>, MessengerError> {
        let state = self.profile.read()?;
        let now = Timestamp::now();
        let due: Vec<UserId> =
            users.iter().filter(|u| state.keys.needs_refresh(u, now)).map(|u| (*u).clone()).collect();
        drop(state);
        let mut events = Vec::new();
        for user in due {
            events.extend(self.refresh(&user).await?);
        }
        Ok(events)
    }

    /// Encrypts `text` for every device of `to` and every other device of this user, saves
    /// the sessions, then sends it. Messages queued by an earlier failure go first.
    ///
    /// # Errors
    /// [`MessengerError::UnknownUser`]; [`SessionError::IdentityChanged`] while a recipient
    /// device has an unaccepted new identity (see [`Messenger::trust`]);
    /// [`SessionError::NoDevices`] when `to` never published keys; [`EnvelopeError::TooLarge`];
    /// [`MessengerError::Queued`] when the node could not be reached after the message was
    /// saved; transport and profile errors.
    pub async fn send(&mut self, to: &UserId, text: &str) -> Result<SentMessage, MessengerError> {
        // An unreachable node fails this message before it is encrypted.
        self.flush_outbox().await.map_err(|e| match e {
            MessengerError::Queued(e) => MessengerError::Client(e),
            other => other,
        })?;
        let (me, my_device) = self.me();
        let events = self.refresh_if_needed(&[to, &me]).await?;
        let outgoing = {
            let mut locked = self.profile.lock().await?;
            let keys = &mut locked.state.keys;
            let recipients = keys.recipients(to, (&me, my_device))?;
            let payload = kith_crypto::Zeroizing::new(Payload { to: to.clone(), text: text.to_owned() }.to_bytes()?);
            let mut copies = Vec::with_capacity(recipients.len());
            for (user_id, device_id) in recipients {
                let body = keys.encrypt(&user_id, device_id, &payload, &mut self.rng)?;
                copies.push(Recipient { user_id, device_id, body });
            }
            // Dropping `locked` unsaved on an error discards the advanced sessions; nothing
            // they encrypted has left this process.
            let message = Envelope { from_device: my_device, to: copies }.encode()?;
            let outgoing =
                Outgoing { client_message_id: client_message_id(), to: to.clone(), text: text.to_owned(), message };
            locked.state.outbox.push(outgoing.clone());
            locked.save()?;
            outgoing
        };
        let entry = self.deliver(outgoing).await?;
        Ok(SentMessage { entry, events })
    }

    /// Sends what is in the outbox (messages saved but not confirmed by the node); returns how
    /// many went out. Ones the node refuses for good are dropped (and logged).
    ///
    /// # Errors
    /// [`MessengerError::Queued`] when the node cannot be reached; profile errors.
    pub async fn flush_outbox(&mut self) -> Result<usize, MessengerError> {
        let queued = self.profile.read()?.outbox;
        let mut sent = 0;
        for outgoing in queued {
            match self.deliver(outgoing).await {
                Ok(_) => sent += 1,
                Err(e @ (MessengerError::Queued(_) | MessengerError::Profile(_))) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "a queued message was refused; dropped"),
            }
        }
        Ok(sent)
    }

    /// Sends a saved message and records it in the history once the node has it.
    async fn deliver(&mut self, outgoing: Outgoing) -> Result<HistoryEntry, MessengerError> {
        let result =
            self.api.send_message(outgoing.to.as_str(), &outgoing.message, Some(&outgoing.client_message_id)).await;
        let (me, my_device) = self.me();
        let mut locked = self.profile.lock().await?;
        let done = |locked: &mut crate::profile::Locked| {
            locked.state.outbox.retain(|o| o.client_message_id != outgoing.client_message_id);
        };
        match result {
            Ok((_, response)) => {
                let entry = HistoryEntry {
                    message_id: response.message_id,
                    timestamp: response.timestamp,
                    from: me,
                    from_device: Some(my_device),
                    to: outgoing.to.clone(),
                    body: Body::Message { text: outgoing.text.clone(), encrypted: true },
                };
                locked.append_history(&outgoing.to, &entry)?;
                locked.state.processed.insert(response.message_id);
                done(&mut locked);
                locked.save()?;
                Ok(entry)
            }
            Err(e) if permanent(&e) => {
                done(&mut locked);
                locked.save()?;
                if not_found(&e) && matches!(&e, ClientError::Api { code: ErrorCode::NotFound, .. }) {
                    return Err(MessengerError::UnknownUser(outgoing.to.to_string()));
                }
                Err(e.into())
            }
            Err(e) => Err(MessengerError::Queued(e)),
        }
    }

    /// Opens the WebSocket: first tops up prekeys and sends queued messages, then connects;
    /// the node marks the end of what was pending ([`Event::CaughtUp`]).
    ///
    /// # Errors
    /// Transport errors (`401` for an expired token), profile errors.
    pub async fn connect(&mut self) -> Result<Inbox, MessengerError> {
        self.replenish_prekeys().await?;
        self.flush_outbox().await?;
        let conn = self.api.connect().await?;
        Ok(Inbox { conn, synced: false })
    }

    /// Waits for the next frame and handles it.
    ///
    /// # Errors
    /// As [`Inbox::next_frame`] and [`Messenger::handle`].
    pub async fn next_events(&mut self, inbox: &mut Inbox) -> Result<Vec<Event>, MessengerError> {
        let frame = inbox.next_frame().await?;
        self.handle(inbox, frame).await
    }

    /// Handles one frame from the node: a message is decrypted (or found undecryptable),
    /// stored, and then acknowledged; `keys.changed` refreshes that user's devices.
    ///
    /// # Errors
    /// Profile errors (the message is then not acknowledged, and comes again), transport
    /// errors while acknowledging.
    pub async fn handle(&mut self, inbox: &mut Inbox, frame: ServerFrame) -> Result<Vec<Event>, MessengerError> {
        match frame {
            ServerFrame::Message(message) => self.receive(inbox, message).await,
            ServerFrame::KeysChanged { user_id, device_id } => {
                tracing::info!(user = %user_id, device = %device_id, "keys changed");
                match self.refresh(&user_id).await {
                    Ok(events) => Ok(events),
                    Err(e) => {
                        tracing::warn!(user = %user_id, error = %e, "could not fetch changed keys; will retry before sending");
                        let mut locked = self.profile.lock().await?;
                        locked.state.keys.mark_stale(&user_id);
                        locked.save()?;
                        Ok(Vec::new())
                    }
                }
            }
            ServerFrame::Synced => {
                inbox.synced = true;
                Ok(vec![Event::CaughtUp])
            }
            ServerFrame::Receipt { message_id, status, .. } => Ok(vec![Event::Receipt { message_id, status }]),
            ServerFrame::Error { code, message, .. } => Ok(vec![Event::ServerError { code, message }]),
            ServerFrame::Presence(_) | ServerFrame::Sent { .. } => Ok(Vec::new()),
        }
    }

    async fn receive(&mut self, inbox: &mut Inbox, message: IncomingMessage) -> Result<Vec<Event>, MessengerError> {
        let (me, my_device) = self.me();
        let events = store_incoming(&self.profile, (&me, my_device), &message).await?;
        inbox.conn.send(&ClientFrame::Ack { message_id: message.message_id }).await?;
        Ok(events)
    }

    /// Receives everything pending (decrypting, storing and acknowledging it) and returns what
    /// happened; for commands that do not stay connected.
    ///
    /// # Errors
    /// As [`Messenger::connect`] and [`Messenger::handle`]; [`MessengerError::Timeout`].
    pub async fn sync(&mut self) -> Result<Vec<Event>, MessengerError> {
        let mut inbox = self.connect().await?;
        let mut events = Vec::new();
        while !inbox.synced {
            let frame = tokio::time::timeout(SYNC_TIMEOUT, inbox.next_frame())
                .await
                .map_err(|_| MessengerError::Timeout(SYNC_TIMEOUT))??;
            events.extend(self.handle(&mut inbox, frame).await?);
        }
        // The node takes each ack into its store queue before it reads the next frame, so the
        // acks sent above are recorded even though the connection closes now.
        if let Err(e) = inbox.close().await {
            tracing::debug!(error = %e, "closing after sync");
        }
        Ok(events)
    }

    /// The stored history of the conversation with `peer` (without fetching anything).
    ///
    /// # Errors
    /// Profile errors.
    pub fn history(&self, peer: &UserId) -> Result<Vec<HistoryEntry>, MessengerError> {
        Ok(self.profile.history(peer)?)
    }

    /// Fetches `peer`'s current devices and returns this device's safety number with each.
    ///
    /// # Errors
    /// [`MessengerError::UnknownUser`], transport and profile errors.
    pub async fn safety_numbers(&mut self, peer: &UserId) -> Result<(Vec<SafetyNumber>, Vec<Event>), MessengerError> {
        let events = self.refresh(peer).await?;
        let state = self.profile.read()?;
        let (me, my_device) = self.me();
        let mine = state.keys.identity.public();
        let numbers = state
            .keys
            .devices_of(peer)
            .into_iter()
            .filter(|d| !(d.user_id == me && d.device_id == my_device))
            .map(|d| SafetyNumber {
                number: safety_number(mine, me.as_str(), &d.identity, d.user_id.as_str()),
                user_id: d.user_id,
                device_id: d.device_id,
                our_device_id: my_device,
                changed: d.status == IdentityStatus::Changed,
            })
            .collect();
        Ok((numbers, events))
    }

    /// The devices of `user` whose identity changed and was not accepted yet.
    ///
    /// # Errors
    /// Profile errors.
    pub fn changed_identities(&self, user: &UserId) -> Result<Vec<DeviceId>, MessengerError> {
        Ok(self
            .profile
            .read()?
            .keys
            .devices_of(user)
            .into_iter()
            .filter(|d| d.status == IdentityStatus::Changed)
            .map(|d| d.device_id)
            .collect())
    }

    /// Accepts the current identities of `user`'s devices (after comparing safety numbers), so
    /// that sending to them works again; returns how many changed identities were accepted.
    ///
    /// # Errors
    /// Profile errors.
    pub async fn trust(&mut self, user: &UserId) -> Result<usize, MessengerError> {
        let mut locked = self.profile.lock().await?;
        let accepted = locked.state.keys.accept(user);
        locked.save()?;
        Ok(accepted)
    }
}

/// Decrypts (or finds undecryptable) and stores a message unless it was handled before; after
/// this returns it may be acknowledged. Plaintext is written first, then the state that says
/// the message is done: a crash in between brings the message again, and it decrypts again
/// from the state saved before it.
async fn store_incoming(
    profile: &Profile,
    (me, my_device): (&UserId, DeviceId),
    message: &IncomingMessage,
) -> Result<Vec<Event>, MessengerError> {
    let mut locked = profile.lock().await?;
    if locked.state.processed.contains(&message.message_id) {
        return Ok(Vec::new());
    }
    let (entry, notices) = open(&mut locked.state.keys, (me, my_device), message);
    if let Body::Undecryptable { reason } = &entry.body {
        tracing::warn!(message = %message.message_id, from = %message.sender_id, %reason, "undecryptable message");
    }
    locked.append_history(entry.peer(me), &entry)?;
    locked.state.processed.insert(message.message_id);
    locked.save()?;
    let mut events: Vec<Event> = notices.into_iter().map(Event::from).collect();
    events.push(Event::Message(entry));
    Ok(events)
}

/// Makes what it can of a message: the decrypted text, plain text marked as unencrypted, or
/// the reason it cannot be read. Changes the key store only when something decrypts.
fn open(keys: &mut KeyStore, me: (&UserId, DeviceId), message: &IncomingMessage) -> (HistoryEntry, Vec<Notice>) {
    let mut entry = HistoryEntry {
        message_id: message.message_id,
        timestamp: message.timestamp,
        from: message.sender_id.clone(),
        from_device: None,
        to: message.receiver_id.clone(),
        body: Body::Undecryptable { reason: String::new() },
    };
    let undecryptable = |reason: String| Body::Undecryptable { reason };
    let (body, notices) = match envelope::decode(&message.message) {
        Ok(Content::Plain(text)) => (Body::Message { text, encrypted: false }, Vec::new()),
        Err(e) => (undecryptable(e.to_string()), Vec::new()),
        Ok(Content::Encrypted(envelope)) => {
            entry.from_device = Some(envelope.from_device);
            open_envelope(keys, me, message, &envelope)
        }
    };
    entry.body = body;
    (entry, notices)
}

fn open_envelope(
    keys: &mut KeyStore,
    (me, my_device): (&UserId, DeviceId),
    message: &IncomingMessage,
    envelope: &Envelope,
) -> (Body, Vec<Notice>) {
    let sender = &message.sender_id;
    // Devices the sender wrote to that this profile does not know: its device lists are old.
    for r in &envelope.to {
        let relevant = &r.user_id == sender || &r.user_id == me;
        if relevant && !(&r.user_id == me && r.device_id == my_device) && !keys.knows(&r.user_id, r.device_id) {
            keys.mark_stale(&r.user_id);
        }
    }
    let Some(body) = envelope.body_for(me, my_device) else {
        return (
            Body::Undecryptable {
                reason: format!(
                    "not encrypted for this device ({my_device}); it may have been added after the message was sent"
                ),
            },
            Vec::new(),
        );
    };
    if sender == me && envelope.from_device == my_device {
        return (Body::Undecryptable { reason: "claims to come from this very device".into() }, Vec::new());
    }
    match keys.decrypt(sender, envelope.from_device, body) {
        Err(e) => (Body::Undecryptable { reason: e.to_string() }, Vec::new()),
        Ok((plaintext, notices)) => {
            let plaintext = kith_crypto::Zeroizing::new(plaintext);
            let body = match Payload::from_bytes(&plaintext) {
                Ok(payload) if payload.to == message.receiver_id => {
                    Body::Message { text: payload.text, encrypted: true }
                }
                Ok(payload) => Body::Undecryptable {
                    reason: format!(
                        "the message was written to {} but delivered as one to {}",
                        payload.to, message.receiver_id
                    ),
                },
                Err(e) => Body::Undecryptable { reason: e.to_string() },
            };
            (body, notices)
        }
    }
}

/// Decodes and verifies the bundles of `user`'s devices, leaving out (and logging) any that
/// does not verify: the node checks keys before storing them, so a bad one is its doing.
fn verified_bundles(user: &UserId, bundles: &KeyBundles) -> Vec<(DeviceId, VerifiedPreKeyBundle)> {
    bundles
        .devices
        .iter()
        .filter_map(|device| {
            let verified = BASE64
                .decode(device.bundle.as_bytes())
                .map_err(|e| e.to_string())
                .and_then(|bytes| PreKeyBundle::from_bytes(&bytes).map_err(|e| e.to_string()))
                .and_then(|bundle| bundle.verify().map_err(|e| e.to_string()));
            match verified {
                Ok(bundle) => Some((device.device_id, bundle)),
                Err(e) => {
                    tracing::warn!(%user, device = %device.device_id, error = %e, "ignoring a bad key bundle");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kith_crypto::PreKeyBundle;

    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    /// A profile on disk for `who`'s device, without a node.
    async fn profile(dir: &std::path::Path, who: &UserId, device: DeviceId) -> Profile {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let mut keys = KeyStore::generate(Timestamp::now(), &mut rng);
        keys.new_one_time_prekeys(5, &mut rng).unwrap();
        let state = State {
            account: Account {
                server: "http://127.0.0.1:1".into(),
                user_id: who.clone(),
                device_id: device,
                token: "t".into(),
            },
            keys,
            processed: Processed::default(),
            outbox: Vec::new(),
            keys_published: true,
        };
        let profile = Profile::new(dir);
        profile.create(&state).await.unwrap();
        profile
    }

    /// Encrypts `text` from the profile's device to `to`'s devices, saving first, and returns
    /// the message as the node would deliver it.
    async fn send(from: &Profile, to: &UserId, text: &str) -> IncomingMessage {
        let mut locked = from.lock().await.unwrap();
        let me = locked.state.account.user_id.clone();
        let device = locked.state.account.device_id;
        let payload = Payload { to: to.clone(), text: text.into() }.to_bytes().unwrap();
        let mut copies = Vec::new();
        for (user_id, device_id) in locked.state.keys.recipients(to, (&me, device)).unwrap() {
            let body =
                locked.state.keys.encrypt(&user_id, device_id, &payload, &mut UnwrapErr(getrandom::SysRng)).unwrap();
            copies.push(Recipient { user_id, device_id, body });
        }
        let message = Envelope { from_device: device, to: copies }.encode().unwrap();
        locked.save().unwrap();
        IncomingMessage {
            message_id: MessageId::now(),
            sender_id: me,
            receiver_id: to.clone(),
            message,
            timestamp: Timestamp::now(),
        }
    }

    /// Gives `from` a session with `to`'s device, from `to`'s bundle as the node would serve
    /// it (claiming one of its one-time prekeys, or none).
    async fn start_session(from: &Profile, to: &Profile, claim_one_time: bool) {
        let to_state = to.read().unwrap();
        let one_time = claim_one_time
            .then(|| to_state.keys.one_time_prekeys.values().next().map(|k| k.public().clone()))
            .flatten();
        let bundle = PreKeyBundle::new(
            to_state.keys.identity.public().clone(),
            to_state.keys.signed_prekeys[0].key.public().clone(),
            one_time,
        )
        .verify()
        .unwrap();
        let (to_user, to_device) = (to_state.account.user_id.clone(), to_state.account.device_id);
        drop(to_state);
        let mut locked = from.lock().await.unwrap();
        let (me, my_device) = (locked.state.account.user_id.clone(), locked.state.account.device_id);
        locked
            .state
            .keys
            .apply_bundles(
                &to_user,
                (&me, my_device),
                &[(to_device, bundle)],
                Timestamp::now(),
                &mut UnwrapErr(getrandom::SysRng),
            )
            .unwrap();
        locked.save().unwrap();
    }

    fn texts(profile: &Profile, peer: &UserId) -> Vec<String> {
        profile.history(peer).unwrap().iter().map(|e| e.text().unwrap_or("<undecryptable>").to_owned()).collect()
    }

    #[tokio::test]
    async fn a_reloaded_profile_decrypts_the_next_message_and_a_crash_before_saving_loses_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let (alice, bob) = (user("alice@t"), user("bob@t"));
        let (alice_device, bob_device) = (DeviceId(1), DeviceId(2));
        let alice_profile = profile(&temp.path().join("alice"), &alice, alice_device).await;
        let bob_dir = temp.path().join("bob");
        let bob_profile = profile(&bob_dir, &bob, bob_device).await;

        // Alice claims bob's bundle (as from the node) and starts a session.
        start_session(&alice_profile, &bob_profile, true).await;

        let first = send(&alice_profile, &bob, "one").await;
        assert_eq!(store_incoming(&bob_profile, (&bob, bob_device), &first).await.unwrap().len(), 1);

        // Everything in memory is gone; the profile is read from disk again.
        drop(bob_profile);
        let bob_profile = Profile::new(&bob_dir);
        let second = send(&alice_profile, &bob, "two").await;
        let events = store_incoming(&bob_profile, (&bob, bob_device), &second).await.unwrap();
        assert!(matches!(&events[..], [Event::Message(e)] if e.text() == Some("two")), "{events:?}");

        // A crash after the plaintext was written but before the state was saved: the
        // message comes again and decrypts again, from the state saved before it.
        let third = send(&alice_profile, &bob, "three").await;
        let mut locked = bob_profile.lock().await.unwrap();
        let (entry, _) = open(&mut locked.state.keys, (&bob, bob_device), &third);
        assert_eq!(entry.text(), Some("three"));
        locked.append_history(&alice, &entry).unwrap();
        drop(locked);
        let events = store_incoming(&bob_profile, (&bob, bob_device), &third).await.unwrap();
        assert!(matches!(&events[..], [Event::Message(e)] if e.text() == Some("three")), "{events:?}");
        // A redelivery after it was saved is recognised without decrypting.
        assert!(store_incoming(&bob_profile, (&bob, bob_device), &third).await.unwrap().is_empty());

        let fourth = send(&alice_profile, &bob, "four").await;
        store_incoming(&bob_profile, (&bob, bob_device), &fourth).await.unwrap();
        assert_eq!(texts(&bob_profile, &alice), ["one", "two", "three", "four"]);
    }

    #[tokio::test]
    async fn tampered_plain_and_misaddressed_messages_are_reported_not_fatal() {
        let temp = tempfile::tempdir().unwrap();
        let (alice, bob, carol) = (user("alice@t"), user("bob@t"), user("carol@t"));
        let alice_profile = profile(&temp.path().join("alice"), &alice, DeviceId(1)).await;
        let bob_profile = profile(&temp.path().join("bob"), &bob, DeviceId(2)).await;
        start_session(&alice_profile, &bob_profile, false).await;
        let me = (&bob, DeviceId(2));

        let mut tampered = send(&alice_profile, &bob, "tampered").await;
        let Ok(Content::Encrypted(mut envelope)) = envelope::decode(&tampered.message) else { panic!("an envelope") };
        let last = envelope.to[0].body.len() - 1;
        envelope.to[0].body[last] ^= 1;
        tampered.message = envelope.encode().unwrap();
        let plain =
            IncomingMessage { message: "from an old client".into(), message_id: MessageId::now(), ..tampered.clone() };
        let mut misaddressed = send(&alice_profile, &bob, "for bob").await;
        misaddressed.receiver_id = carol.clone();
        misaddressed.message_id = MessageId::now();
        let fine = send(&alice_profile, &bob, "still fine").await;

        for message in [&tampered, &plain, &misaddressed, &fine] {
            store_incoming(&bob_profile, me, message).await.unwrap();
        }
        let history = bob_profile.history(&alice).unwrap();
        assert!(
            matches!(&history[0].body, Body::Undecryptable { reason } if reason.contains("authentication")),
            "{history:?}"
        );
        assert_eq!(history[1].body, Body::Message { text: "from an old client".into(), encrypted: false });
        // The misaddressed one is filed under its sender and says what is wrong.
        assert!(
            matches!(&history[2].body, Body::Undecryptable { reason } if reason.contains("written to bob@t")),
            "{history:?}"
        );
        assert_eq!(history[3].text(), Some("still fine"));
    }
}

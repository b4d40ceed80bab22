//! The end-to-end encrypting client: accounts, keys, sending, receiving, safety numbers.
//!
//! A [`Messenger`] is one device of one user, backed by a [`Profile`]. It encrypts every
//! message for each device of the receiver and each other device of the sender (see
//! [`crate::envelope`]), and decrypts, stores and only then acknowledges what it receives, so a
//! crash never loses a message: one that was not stored is delivered again and decrypts from
//! the state saved before it.
//!
//! One module per flow: `account` (register, log in, open a profile), `link` (adding a device
//! to the account from one it has), `prekeys` (keeping this device's keys published),
//! `devices` (learning users' devices, removing one of ours), `send`, `receive` (with healing
//! sessions that cannot decrypt), and `trust` (safety numbers and accepting changed
//! identities).

mod account;
mod devices;
mod link;
mod prekeys;
mod receive;
mod send;
mod trust;

pub use link::{LINK_WAIT, LinkOffer};

use std::time::Duration;

use kith_proto::{DeviceId, ErrorCode, IdError, MessageId, MessageStatus, ServerFrame, UserId};
use rand_core::UnwrapErr;

use crate::envelope::EnvelopeError;
use crate::history::HistoryEntry;
use crate::profile::{Profile, ProfileError};
use crate::sessions::{Notice, SessionError};
use crate::{Authed, ClientError, Connection};

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
    /// A new profile for an existing account, without a link: the account's other devices and
    /// contacts would not trust it.
    #[error(
        "this device is not linked to {0}: run `kith-chat link` on one of its devices and enter the code here \
         with `kith-chat link accept <code>` (or start over with a new identity: `kith-chat login --new-identity`)"
    )]
    NotLinked(UserId),
    /// Linking failed: a wrong code, an answer that does not fit, or no answer in time.
    #[error("linking failed: {0}")]
    Link(String),
    /// This account has no such device that its identity certified.
    #[error("this account has no device {0} (see `kith-chat devices`)")]
    UnknownDevice(DeviceId),
    /// A device asked to remove itself.
    #[error("a device cannot remove itself: remove it from another device of the account")]
    RemoveSelf,
}

/// What happened, for the user to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message arrived and is stored: decrypted, unencrypted, or undecryptable (see
    /// [`crate::Body`]).
    Message(HistoryEntry),
    /// A user's identity differs from the one this profile trusts: they started over (lost
    /// every device), or someone is in the middle. Nothing is sent to them until
    /// [`Messenger::trust`].
    IdentityChanged {
        /// Whose identity.
        user_id: UserId,
    },
    /// A user this profile talks to (or this user) has a device it had not seen, certified by
    /// their identity (so the safety number is unchanged).
    NewDevice {
        /// Whose device.
        user_id: UserId,
        /// Which.
        device_id: DeviceId,
    },
    /// A device the server lists for a user is not certified by the identity trusted for that
    /// user: nothing is written to it.
    UntrustedDevice {
        /// Whose device it claims to be.
        user_id: UserId,
        /// Which.
        device_id: DeviceId,
        /// Why it is not trusted.
        reason: String,
    },
    /// A user signed the removal of one of their devices: it is not written to any more.
    DeviceRemoved {
        /// Whose device.
        user_id: UserId,
        /// Which.
        device_id: DeviceId,
    },
    /// Messages from a device were lost: they never arrived and can no longer be decrypted
    /// (their keys were evicted or expired).
    MessagesLost {
        /// Whose device.
        user_id: UserId,
        /// Which.
        device_id: DeviceId,
        /// How many.
        count: u64,
    },
    /// A linking message for another device of this account arrived; [`Messenger::link_device`]
    /// and [`Messenger::link`] take them, anything else may ignore it.
    LinkMessage {
        /// The `kith-crypto` link request or response.
        bytes: Vec<u8>,
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
            Notice::IdentityChanged(user_id) => Self::IdentityChanged { user_id },
            Notice::NewDevice(user_id, device_id) => Self::NewDevice { user_id, device_id },
            Notice::UntrustedDevice { user, device, reason } => {
                Self::UntrustedDevice { user_id: user, device_id: device, reason }
            }
            Notice::DeviceRemoved(user_id, device_id) => Self::DeviceRemoved { user_id, device_id },
            Notice::MessagesLost { user, device, count } => {
                Self::MessagesLost { user_id: user, device_id: device, count }
            }
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

/// The safety number of this user with another: one per pair of users, the same whichever
/// devices either links or removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// The other user.
    pub user_id: UserId,
    /// 60 digits in 12 groups of 5; the other user sees the same. While their identity changed
    /// and was not accepted, the number with the new identity (the one to compare before
    /// accepting it).
    pub number: String,
    /// Whether the user's identity changed and was not accepted yet.
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

fn not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, .. })
}

impl Messenger {
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
}

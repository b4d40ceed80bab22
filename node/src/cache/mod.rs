//! Hot state in front of the store: presence, and the newest messages of each conversation
//! (the seed's `user:{id}:status` and `chat:{a}:{b}`).
//!
//! Behind a trait so that one node can run in-process ([`MemoryCache`]) or, scaled out over
//! several instances, on a shared cache. A cache may forget anything at any time; it must never
//! answer with something the store would not.

mod memory;
mod redis;

use async_trait::async_trait;
use kith_proto::{MessageId, MessageStatus, MessageView, PresenceView, Timestamp, UserId};

pub use self::redis::RedisCache;
pub use memory::MemoryCache;

/// How many of a conversation's newest messages the cache keeps.
pub const RECENT_MESSAGES: usize = 50;

/// What the cache knows of a conversation's newest messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// Up to [`RECENT_MESSAGES`] newest messages, oldest first.
    pub messages: Vec<MessageView>,
    /// Whether these are all the conversation's messages (nothing older exists).
    pub whole: bool,
}

/// A presence and when it was observed (when it last changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The presence.
    pub view: PresenceView,
    /// When it was observed.
    pub at: Timestamp,
}

/// Proof that a reader looked at a conversation's version before reading the store; a fill
/// made with a stale token is ignored, so a message recorded meanwhile is never lost from the
/// cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillToken(pub(crate) u64);

/// Presence and recent-message cache.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// Records a user's presence as observed at `at`, unless what it holds was observed later
    /// (news from other nodes may arrive out of order); says whether it recorded it.
    async fn set_presence(&self, presence: PresenceView, at: Timestamp) -> bool;

    /// A user's presence, if known, and when it was observed.
    async fn presence(&self, user: &UserId) -> Option<Observed>;

    /// The newest messages of the conversation between `a` and `b`, if cached.
    async fn recent(&self, a: &UserId, b: &UserId) -> Option<Recent>;

    /// Call before reading the store to [`Cache::fill`] the conversation.
    async fn begin_fill(&self, a: &UserId, b: &UserId) -> FillToken;

    /// Caches what the store returned, unless the conversation changed since `token`.
    async fn fill(&self, a: &UserId, b: &UserId, recent: Recent, token: FillToken);

    /// Records a newly stored message of the conversation between its sender and receiver.
    async fn record_message(&self, message: &MessageView);

    /// Records a message's new status.
    async fn record_status(&self, a: &UserId, b: &UserId, message_id: MessageId, status: MessageStatus);

    /// A shared cache answers again after writes were skipped: drop what they made stale.
    async fn recover(&self) {}
}

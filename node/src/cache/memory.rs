//! The in-process cache: a byte-budgeted LRU of conversations and a map of presence.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use kith_proto::{MessageId, MessageStatus, MessageView, PresenceView, Timestamp, UserId};
use lru::LruCache;

use super::{Cache, FillToken, Observed, RECENT_MESSAGES, Recent};

/// Bytes a cached message costs beyond its content (ids, timestamps, bookkeeping).
const MESSAGE_OVERHEAD: usize = 160;

/// A conversation key: the two user ids in order, so both directions share an entry.
type Conversation = (UserId, UserId);

fn conversation(a: &UserId, b: &UserId) -> Conversation {
    if a <= b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) }
}

/// One conversation's entry.
#[derive(Debug)]
struct Entry {
    /// Bumped on every write; fills check it.
    version: u64,
    /// `None` until a reader fills it: the entry then only tracks the version.
    recent: Option<Recent>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.recent.as_ref().map_or(0, |r| r.messages.iter().map(|m| m.message.len() + MESSAGE_OVERHEAD).sum())
            + MESSAGE_OVERHEAD
    }
}

#[derive(Debug)]
struct Conversations {
    entries: LruCache<Conversation, Entry>,
    bytes: usize,
    budget: usize,
    next_version: u64,
}

impl Conversations {
    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Applies `change` to the conversation's entry (creating a version-only one), keeping the
    /// byte count and the budget.
    fn update(&mut self, key: Conversation, change: impl FnOnce(&mut Entry)) {
        let version = self.bump();
        let before = self.entries.peek(&key).map_or(0, Entry::bytes);
        let entry = self.entries.get_or_insert_mut(key, || Entry { version, recent: None });
        change(entry);
        entry.version = version;
        let after = entry.bytes();
        self.bytes = self.bytes.saturating_sub(before) + after;
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.budget {
            match self.entries.pop_lru() {
                Some((_, entry)) => self.bytes = self.bytes.saturating_sub(entry.bytes()),
                None => break,
            }
        }
    }
}

/// Presence and recent messages in this process's memory.
#[derive(Debug)]
pub struct MemoryCache {
    conversations: Mutex<Conversations>,
    /// Each user's presence and when it was observed.
    presence: Mutex<HashMap<UserId, (PresenceView, Timestamp)>>,
}

impl MemoryCache {
    /// A cache that keeps at most about `budget_bytes` of messages.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            conversations: Mutex::new(Conversations {
                entries: LruCache::unbounded(),
                bytes: 0,
                budget: budget_bytes,
                next_version: 0,
            }),
            presence: Mutex::new(HashMap::new()),
        }
    }

    fn conversations(&self) -> std::sync::MutexGuard<'_, Conversations> {
        self.conversations.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn set_presence(&self, presence: PresenceView, at: Timestamp) -> bool {
        let mut known = self.presence.lock().unwrap_or_else(PoisonError::into_inner);
        if known.get(&presence.user_id).is_some_and(|(_, seen)| *seen > at) {
            return false;
        }
        known.insert(presence.user_id.clone(), (presence, at));
        true
    }

    async fn presence(&self, user: &UserId) -> Option<Observed> {
        let known = self.presence.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(user).map(|(view, at)| Observed { view: view.clone(), at: *at })
    }

    async fn recent(&self, a: &UserId, b: &UserId) -> Option<Recent> {
        self.conversations().entries.get(&conversation(a, b)).and_then(|e| e.recent.clone())
    }

    async fn begin_fill(&self, a: &UserId, b: &UserId) -> FillToken {
        let key = conversation(a, b);
        let mut conversations = self.conversations();
        if let Some(entry) = conversations.entries.peek(&key) {
            return FillToken(entry.version);
        }
        // An entry to watch: a write before the fill bumps its version, and if the entry is
        // evicted meanwhile the fill finds nothing and is dropped.
        conversations.update(key.clone(), |_| {});
        FillToken(conversations.entries.peek(&key).map_or(0, |e| e.version))
    }

    async fn fill(&self, a: &UserId, b: &UserId, recent: Recent, token: FillToken) {
        let key = conversation(a, b);
        let mut conversations = self.conversations();
        if conversations.entries.peek(&key).is_none_or(|e| e.version != token.0) {
            return;
        }
        conversations.update(key, |entry| entry.recent = Some(recent));
    }

    async fn record_message(&self, message: &MessageView) {
        let key = conversation(&message.sender_id, &message.receiver_id);
        self.conversations().update(key, |entry| {
            if let Some(recent) = &mut entry.recent {
                // Ids are time-ordered; a message minted elsewhere may land before the newest.
                let at = recent.messages.partition_point(|m| m.message_id < message.message_id);
                if recent.messages.get(at).is_some_and(|m| m.message_id == message.message_id) {
                    return;
                }
                recent.messages.insert(at, message.clone());
                if recent.messages.len() > RECENT_MESSAGES {
                    recent.messages.remove(0);
                    recent.whole = false;
                }
            }
        });
    }

    async fn record_status(&self, a: &UserId, b: &UserId, message_id: MessageId, status: MessageStatus) {
        self.conversations().update(conversation(a, b), |entry| {
            if let Some(m) =
                entry.recent.as_mut().and_then(|r| r.messages.iter_mut().find(|m| m.message_id == message_id))
            {
                m.status = m.status.max(status);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use kith_proto::Timestamp;

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(&format!("{name}@test")).unwrap()
    }

    fn message(from: &UserId, to: &UserId, text: &str) -> MessageView {
        MessageView {
            message_id: MessageId::now(),
            sender_id: from.clone(),
            receiver_id: to.clone(),
            message: text.into(),
            timestamp: Timestamp::now(),
            status: MessageStatus::Sent,
        }
    }

    #[tokio::test]
    async fn a_fill_that_raced_a_write_is_ignored() {
        let cache = MemoryCache::new(1 << 20);
        let (a, b) = (user("a"), user("b"));
        let token = cache.begin_fill(&a, &b).await;
        cache.record_message(&message(&a, &b, "written while the reader was at the store")).await;
        cache.fill(&a, &b, Recent { messages: vec![], whole: true }, token).await;
        assert_eq!(cache.recent(&a, &b).await, None, "a stale fill must not be cached");

        let token = cache.begin_fill(&b, &a).await;
        cache.fill(&a, &b, Recent { messages: vec![], whole: true }, token).await;
        assert!(cache.recent(&a, &b).await.is_some());
    }

    #[tokio::test]
    async fn a_fill_whose_entry_was_evicted_meanwhile_is_ignored() {
        let cache = MemoryCache::new(10_000);
        let (a, b) = (user("a"), user("b"));
        let token = cache.begin_fill(&a, &b).await;
        cache.record_message(&message(&a, &b, "written while the reader was at the store")).await;
        // Enough other conversations to evict this one.
        for i in 0..100 {
            let (x, y) = (user("x"), user(&format!("y{i}")));
            let t = cache.begin_fill(&x, &y).await;
            cache.fill(&x, &y, Recent { messages: vec![message(&x, &y, &"z".repeat(500))], whole: true }, t).await;
        }
        cache.fill(&a, &b, Recent { messages: vec![], whole: true }, token).await;
        assert_eq!(cache.recent(&a, &b).await, None);
    }

    #[tokio::test]
    async fn keeps_the_newest_messages_in_order_and_knows_when_it_is_not_whole() {
        let cache = MemoryCache::new(1 << 20);
        let (a, b) = (user("a"), user("b"));
        let token = cache.begin_fill(&a, &b).await;
        cache.fill(&a, &b, Recent { messages: vec![], whole: true }, token).await;
        let sent: Vec<_> = (0..RECENT_MESSAGES + 5).map(|i| message(&a, &b, &i.to_string())).collect();
        for m in &sent {
            cache.record_message(m).await;
        }
        let recent = cache.recent(&b, &a).await.unwrap();
        assert!(!recent.whole);
        assert_eq!(recent.messages, sent[5..].to_vec());
    }

    #[tokio::test]
    async fn stays_within_its_byte_budget() {
        let cache = MemoryCache::new(10_000);
        for i in 0..100 {
            let (a, b) = (user("a"), user(&format!("peer{i}")));
            let token = cache.begin_fill(&a, &b).await;
            cache.fill(&a, &b, Recent { messages: vec![message(&a, &b, &"x".repeat(1000))], whole: true }, token).await;
        }
        let conversations = cache.conversations();
        assert!(conversations.bytes <= 10_000, "{} bytes cached", conversations.bytes);
        assert!(conversations.entries.len() < 100);
    }
}

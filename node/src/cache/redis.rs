//! The cache in Redis, shared by a node's instances: the seed's `chat:{a}:{b}` (a
//! conversation's newest messages) and `user:{id}:status` (presence).
//!
//! - `chat:<a>:<b>` (sorted set, `a` ≤ `b`): the newest [`RECENT_MESSAGES`] messages, all of
//!   score 0, so they sort by member; a member is `<messageId>\x1f<status>\x1f<JSON>`, and
//!   message ids are time-ordered text, so members sort by time and a message is found by its
//!   id prefix without decoding anything.
//! - `chat:<a>:<b>:meta` (hash): `v`, the conversation's version, taken from one counter
//!   (`chat:version`) so that no two versions are ever equal; `filled` and `whole`.
//! - Both expire after [`TTL`] without use. Run Redis with `maxmemory-policy volatile-lru`:
//!   only keys with a time-to-live (the cache) may be evicted, never the instances' presence
//!   and hand-off keys.
//!
//! The guarantee is the in-process cache's: a reader takes a version before reading the store
//! and its fill is dropped if any write came between, so a page never misses a committed
//! message. Scripts make each step atomic across instances. When Redis does not answer, reads
//! miss (the store answers) and writes are skipped; a conversation whose write was skipped is
//! dropped from the cache when Redis answers again, so it cannot serve a page missing that
//! write afterwards.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use kith_proto::{MessageId, MessageStatus, MessageView, PresenceStatus, PresenceView, Timestamp, UserId};
use redis::Script;
use tracing::warn;

use super::{Cache, FillToken, Observed, RECENT_MESSAGES, Recent};
use crate::cluster::Cluster;

/// How long an unused conversation or a remote user's presence stays cached, in ms.
const TTL: i64 = 3600 * 1000;

/// Most conversations remembered as skipped while Redis was down; past that, the whole cache
/// is dropped when it answers again.
const MAX_STALE: usize = 10_000;

/// Separates a member's message id, status and JSON.
const SEP: char = '\u{1f}';

const RECORD_MESSAGE: &str = r"
local v = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], 'v', v)
if redis.call('HGET', KEYS[2], 'filled') == '1' then
  local found = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255', 'LIMIT', 0, 1)
  if #found == 0 then
    redis.call('ZADD', KEYS[1], 0, ARGV[2])
    if redis.call('ZCARD', KEYS[1]) > tonumber(ARGV[3]) then
      redis.call('ZREMRANGEBYRANK', KEYS[1], 0, 0)
      redis.call('HSET', KEYS[2], 'whole', '0')
    end
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return v
";

const RECORD_STATUS: &str = r"
local v = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], 'v', v)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local found = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[1], '[' .. ARGV[1] .. '\255', 'LIMIT', 0, 1)
if #found == 1 then
  local rank = { sent = 0, delivered = 1, read = 2 }
  local rest = string.sub(found[1], #ARGV[1] + 1)
  local sep = string.find(rest, '\31', 1, true)
  if sep then
    local old = string.sub(rest, 1, sep - 1)
    if (rank[old] or 0) < tonumber(ARGV[2]) then
      redis.call('ZREM', KEYS[1], found[1])
      redis.call('ZADD', KEYS[1], 0, ARGV[1] .. ARGV[3] .. string.sub(rest, sep))
    end
  end
end
return v
";

const BEGIN_FILL: &str = r"
local v = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'v', v)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return v
";

const FILL: &str = r"
if redis.call('HGET', KEYS[2], 'v') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
end
redis.call('HSET', KEYS[2], 'filled', '1', 'whole', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

const RECENT: &str = r"
local meta = redis.call('HMGET', KEYS[2], 'filled', 'whole')
if meta[1] ~= '1' then
  return {}
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.insert(members, 1, meta[2] or '0')
return members
";

const SET_PRESENCE: &str = r"
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if at > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'at', ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'lastSeen', ARGV[3])
end
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
";

/// The cache in Redis.
pub struct RedisCache {
    cluster: Arc<Cluster>,
    local: kith_proto::ServerName,
    scripts: Scripts,
    /// Conversations whose write was skipped while Redis was down.
    stale: Mutex<HashSet<(UserId, UserId)>>,
    /// More than [`MAX_STALE`] were: drop everything.
    stale_everything: std::sync::atomic::AtomicBool,
}

struct Scripts {
    record_message: Script,
    record_status: Script,
    begin_fill: Script,
    fill: Script,
    recent: Script,
    set_presence: Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisCache")
    }
}

fn ordered<'a>(a: &'a UserId, b: &'a UserId) -> (&'a UserId, &'a UserId) {
    if a <= b { (a, b) } else { (b, a) }
}

/// A member of a conversation's set.
fn member(message: &MessageView) -> String {
    let json = serde_json::to_string(message).unwrap_or_default();
    format!("{}{SEP}{}{SEP}{json}", message.message_id, message.status.as_str())
}

/// Reads a member back.
fn parse_member(member: &str) -> Option<MessageView> {
    let mut parts = member.splitn(3, SEP);
    let (_, status, json) = (parts.next()?, parts.next()?, parts.next()?);
    let mut view: MessageView = serde_json::from_str(json).ok()?;
    view.status = MessageStatus::parse(status)?;
    Some(view)
}

fn rank(status: MessageStatus) -> u8 {
    match status {
        MessageStatus::Sent => 0,
        MessageStatus::Delivered => 1,
        MessageStatus::Read => 2,
    }
}

impl RedisCache {
    /// A cache in the Redis `cluster` shares (which must be shared), for the node `local`.
    pub fn new(cluster: Arc<Cluster>, local: kith_proto::ServerName) -> Self {
        Self {
            cluster,
            local,
            scripts: Scripts {
                record_message: Script::new(RECORD_MESSAGE),
                record_status: Script::new(RECORD_STATUS),
                begin_fill: Script::new(BEGIN_FILL),
                fill: Script::new(FILL),
                recent: Script::new(RECENT),
                set_presence: Script::new(SET_PRESENCE),
            },
            stale: Mutex::default(),
            stale_everything: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn keys(&self, a: &UserId, b: &UserId) -> Option<[String; 3]> {
        let link = self.cluster.link()?;
        let (a, b) = ordered(a, b);
        Some([
            link.key(&["chat", a.as_str(), b.as_str()]),
            link.key(&["chat", a.as_str(), b.as_str(), "meta"]),
            link.key(&["chat", "version"]),
        ])
    }

    /// Remembers a conversation whose write was skipped.
    fn skipped(&self, a: &UserId, b: &UserId) {
        let (a, b) = ordered(a, b);
        let mut stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        if stale.len() < MAX_STALE {
            stale.insert((a.clone(), b.clone()));
        } else {
            self.stale_everything.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Drops from Redis what writes skipped while it was down made stale; what it cannot drop
    /// stays remembered for the next time.
    async fn drop_stale(&self) {
        let Some(link) = self.cluster.link() else {
            return;
        };
        if self.stale_everything.swap(false, std::sync::atomic::Ordering::Relaxed) {
            let pattern = link.key(&["chat", "*"]);
            let dropped: Result<(), _> = link
                .run(|mut c| async move {
                    let mut cursor: u64 = 0;
                    loop {
                        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut c)
                            .await?;
                        if !keys.is_empty() {
                            redis::cmd("UNLINK").arg(&keys).query_async::<()>(&mut c).await?;
                        }
                        if next == 0 {
                            return Ok(());
                        }
                        cursor = next;
                    }
                })
                .await;
            if dropped.is_err() {
                self.stale_everything.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        let stale: Vec<(UserId, UserId)> =
            std::mem::take(&mut *self.stale.lock().unwrap_or_else(PoisonError::into_inner)).into_iter().collect();
        for (a, b) in stale {
            let Some([set, meta, _]) = self.keys(&a, &b) else { return };
            let dropped: Result<(), _> =
                link.run(|mut c| async move { redis::cmd("DEL").arg(&set).arg(&meta).query_async(&mut c).await }).await;
            if dropped.is_err() {
                self.skipped(&a, &b);
            }
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn set_presence(&self, presence: PresenceView, at: Timestamp) -> bool {
        let Some(link) = self.cluster.link() else { return false };
        let key = link.key(&["user", presence.user_id.as_str(), "status"]);
        let status = match presence.status {
            PresenceStatus::Online => "online",
            PresenceStatus::Offline => "offline",
            // A remote user whose home node shares nothing with this node's users.
            PresenceStatus::Unknown => "unknown",
        };
        let last_seen = presence.last_seen.map(|t| t.as_millis().to_string()).unwrap_or_default();
        // Local users' entries are kept by the instances' presence; other nodes' expire.
        let ttl = if presence.user_id.is_on(&self.local) { 0 } else { TTL };
        let set: Result<i64, _> = link
            .run(|mut c| async move {
                self.scripts
                    .set_presence
                    .key(&key)
                    .arg(at.as_millis())
                    .arg(status)
                    .arg(&last_seen)
                    .arg(ttl)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        set.is_ok_and(|n| n == 1)
    }

    async fn presence(&self, user: &UserId) -> Option<Observed> {
        self.cluster.presence(user).await
    }

    async fn recent(&self, a: &UserId, b: &UserId) -> Option<Recent> {
        let link = self.cluster.link()?;
        let [set, meta, _] = self.keys(a, b)?;
        let reply: Vec<String> = link
            .run(|mut c| async move { self.scripts.recent.key(&set).key(&meta).invoke_async(&mut c).await })
            .await
            .ok()?;
        let (whole, members) = reply.split_first()?;
        let messages = members.iter().map(|m| parse_member(m)).collect::<Option<Vec<_>>>()?;
        Some(Recent { messages, whole: whole == "1" })
    }

    async fn begin_fill(&self, a: &UserId, b: &UserId) -> FillToken {
        let Some(link) = self.cluster.link() else { return FillToken(0) };
        let Some([_, meta, version]) = self.keys(a, b) else { return FillToken(0) };
        let token: Result<u64, _> =
            link.run(|mut c| async move {
                self.scripts.begin_fill.key(&meta).key(&version).arg(TTL).invoke_async(&mut c).await
            })
            .await;
        // 0 is never a version: a fill with it is dropped.
        FillToken(token.unwrap_or(0))
    }

    async fn fill(&self, a: &UserId, b: &UserId, recent: Recent, token: FillToken) {
        if token.0 == 0 {
            return;
        }
        let Some(link) = self.cluster.link() else { return };
        let Some([set, meta, _]) = self.keys(a, b) else { return };
        let members: Vec<String> = recent.messages.iter().map(member).collect();
        let _: Result<i64, _> = link
            .run(|mut c| async move {
                let mut invocation = self.scripts.fill.key(&set);
                invocation.key(&meta).arg(token.0.to_string()).arg(if recent.whole { "1" } else { "0" }).arg(TTL);
                for m in &members {
                    invocation.arg(m);
                }
                invocation.invoke_async(&mut c).await
            })
            .await;
    }

    async fn record_message(&self, message: &MessageView) {
        let (a, b) = (&message.sender_id, &message.receiver_id);
        let (Some(link), Some([set, meta, version])) = (self.cluster.link(), self.keys(a, b)) else { return };
        let prefix = format!("{}{SEP}", message.message_id);
        let entry = member(message);
        let recorded: Result<i64, _> = link
            .run(|mut c| async move {
                self.scripts
                    .record_message
                    .key(&set)
                    .key(&meta)
                    .key(&version)
                    .arg(&prefix)
                    .arg(&entry)
                    .arg(RECENT_MESSAGES)
                    .arg(TTL)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if let Err(e) = recorded {
            tracing::debug!(error = %e, "recent message not cached");
            self.skipped(a, b);
        }
    }

    async fn recover(&self) {
        self.drop_stale().await;
    }

    async fn record_status(&self, a: &UserId, b: &UserId, message_id: MessageId, status: MessageStatus) {
        let (Some(link), Some([set, meta, version])) = (self.cluster.link(), self.keys(a, b)) else { return };
        let prefix = format!("{message_id}{SEP}");
        let recorded: Result<i64, _> = link
            .run(|mut c| async move {
                self.scripts
                    .record_status
                    .key(&set)
                    .key(&meta)
                    .key(&version)
                    .arg(&prefix)
                    .arg(rank(status))
                    .arg(status.as_str())
                    .arg(TTL)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        if recorded.is_err() {
            warn!("a status change not cached");
            self.skipped(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_by_id_and_read_back_with_their_status() {
        let view = MessageView {
            message_id: MessageId::now(),
            sender_id: UserId::parse("a@test").unwrap_or_else(|e| panic!("{e}")),
            receiver_id: UserId::parse("b@test").unwrap_or_else(|e| panic!("{e}")),
            message: "hello \u{1f} with the separator inside".into(),
            timestamp: Timestamp::now(),
            status: MessageStatus::Delivered,
        };
        let text = member(&view);
        assert!(text.starts_with(&format!("{}\u{1f}delivered\u{1f}", view.message_id)));
        assert_eq!(parse_member(&text), Some(view.clone()));
        let later = MessageView { message_id: MessageId::now(), ..view };
        assert!(member(&later) > text, "members sort by time");
    }
}

//! Which instances are alive, which hold whose sessions, and presence across them, in Redis:
//!
//! - `instances` (sorted set): instance → its last heartbeat (ms). An instance beats every
//!   [`HEARTBEAT`]; one silent for [`DEAD_AFTER`] is dead.
//! - `instance:<id>:users` (set): users with a session on that instance.
//! - `user:<id>:instances` (set): instances holding the user's sessions.
//! - `user:<id>:status` (hash, the seed's key): `status` (`online`/`offline`), `lastSeen` and
//!   `at` (ms of the last change).
//!
//! A user is online while any instance holds one of their sessions. Transitions are scripts,
//! so instances racing on one user agree. The time-to-live that takes a dead instance's users
//! offline is the instance's heartbeat rather than one key per user: one write per instance
//! every few seconds instead of one per online user, and the reaper that notices a dead
//! instance takes its users offline with `lastSeen` = its last heartbeat, and says so.

use std::time::Duration;

use kith_proto::{PresenceStatus, PresenceView, Timestamp, UserId};
use redis::Script;

use super::link::{Link, LinkError};
use crate::cache::Observed;

/// How often an instance says it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// An instance silent this long is dead, and its users go offline (within one more
/// [`HEARTBEAT`], when the next reaper runs): at most 20 s after it died.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(15);

/// How long an offline user's status is kept (the store keeps `last_seen` for ever).
const OFFLINE_TTL_MS: i64 = 24 * 3600 * 1000;

/// `user` has a session on this instance now (`online`), or no longer (`!online`): returns 1
/// when that changed the user's presence.
const TRANSITION: &str = r"
if ARGV[3] == '1' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PERSIST', KEYS[3])
  if redis.call('HGET', KEYS[3], 'status') ~= 'online' then
    redis.call('HSET', KEYS[3], 'status', 'online', 'at', ARGV[4])
    return 1
  end
  return 0
end
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('SCARD', KEYS[1]) == 0 and redis.call('HGET', KEYS[3], 'status') ~= 'offline' then
  redis.call('HSET', KEYS[3], 'status', 'offline', 'lastSeen', ARGV[4], 'at', ARGV[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  return 1
end
return 0
";

/// Takes a dead instance out: its users lose it, those left with no instance go offline with
/// `lastSeen` = its last heartbeat; returns them. Running twice does nothing the second time.
const REAP: &str = r"
local users = redis.call('SMEMBERS', KEYS[1])
local gone = {}
for _, user in ipairs(users) do
  local instances = ARGV[3] .. 'user:' .. user .. ':instances'
  redis.call('SREM', instances, ARGV[1])
  if redis.call('SCARD', instances) == 0 then
    local status = ARGV[3] .. 'user:' .. user .. ':status'
    if redis.call('HGET', status, 'status') ~= 'offline' then
      redis.call('HSET', status, 'status', 'offline', 'lastSeen', ARGV[2], 'at', ARGV[2])
      redis.call('PEXPIRE', status, ARGV[4])
      table.insert(gone, user)
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[2], ARGV[1])
return gone
";

/// Presence as Redis keeps it.
pub(crate) struct Membership {
    transition: Script,
    reap: Script,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Membership")
    }
}

/// A user a reaper took offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departed {
    /// Who.
    pub user: UserId,
    /// The dead instance's last heartbeat: when the user was last seen.
    pub last_seen: Timestamp,
}

impl Membership {
    pub(crate) fn new() -> Self {
        Self { transition: Script::new(TRANSITION), reap: Script::new(REAP) }
    }

    /// Records whether `instance` holds a session of `user`; the user's new presence when
    /// that changed it.
    pub(crate) async fn transition(
        &self,
        link: &Link,
        instance: &str,
        user: &UserId,
        online_here: bool,
        now: Timestamp,
    ) -> Result<Option<PresenceView>, LinkError> {
        let keys = [
            link.key(&["user", user.as_str(), "instances"]),
            link.key(&["instance", instance, "users"]),
            link.key(&["user", user.as_str(), "status"]),
        ];
        let changed: i64 = link
            .run(|mut c| async move {
                self.transition
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .arg(instance)
                    .arg(user.as_str())
                    .arg(if online_here { "1" } else { "0" })
                    .arg(now.as_millis())
                    .arg(OFFLINE_TTL_MS)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((changed == 1).then(|| PresenceView {
            user_id: user.clone(),
            status: if online_here { PresenceStatus::Online } else { PresenceStatus::Offline },
            last_seen: (!online_here).then_some(now),
        }))
    }

    /// Says `instance` is alive; returns `true` when it was not in the set (it is new, or a
    /// reaper took it for dead: its users must register again).
    pub(crate) async fn heartbeat(&self, link: &Link, instance: &str) -> Result<bool, LinkError> {
        let key = link.key(&["instances"]);
        let added: i64 = link
            .run(|mut c| async move {
                redis::cmd("ZADD").arg(&key).arg(Timestamp::now().as_millis()).arg(instance).query_async(&mut c).await
            })
            .await?;
        Ok(added == 1)
    }

    /// The instances alive now.
    pub(crate) async fn live(&self, link: &Link) -> Result<Vec<String>, LinkError> {
        let key = link.key(&["instances"]);
        let since = Timestamp::now().as_millis() - i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(i64::MAX);
        link.run(|mut c| async move {
            redis::cmd("ZRANGEBYSCORE").arg(&key).arg(since).arg("+inf").query_async(&mut c).await
        })
        .await
    }

    /// Reaps every dead instance; returns the users that took offline.
    pub(crate) async fn reap_dead(&self, link: &Link) -> Result<Vec<Departed>, LinkError> {
        let key = link.key(&["instances"]);
        let before = Timestamp::now().as_millis() - i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(i64::MAX);
        let dead: Vec<(String, i64)> = link
            .run(|mut c| async move {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(before)
                    .arg("WITHSCORES")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut departed = Vec::new();
        for (instance, last_beat) in dead {
            let keys = [
                link.key(&["instance", &instance, "users"]),
                link.key(&["instances"]),
                link.key(&["stream", &instance]),
            ];
            let prefix = link.key(&[]);
            let name = instance.as_str();
            let gone: Vec<String> = link
                .run(|mut c| async move {
                    self.reap
                        .key(&keys[0])
                        .key(&keys[1])
                        .key(&keys[2])
                        .arg(name)
                        .arg(last_beat)
                        .arg(&prefix)
                        .arg(OFFLINE_TTL_MS)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            tracing::info!(instance = %instance, users = gone.len(), "reaped a dead instance");
            departed.extend(
                gone.iter()
                    .filter_map(|u| UserId::parse(u).ok())
                    .map(|user| Departed { user, last_seen: Timestamp::from_millis(last_beat) }),
            );
        }
        Ok(departed)
    }

    /// The users Redis believes have a session on `instance`.
    pub(crate) async fn users_of(&self, link: &Link, instance: &str) -> Result<Vec<UserId>, LinkError> {
        let key = link.key(&["instance", instance, "users"]);
        let users: Vec<String> =
            link.run(|mut c| async move { redis::cmd("SMEMBERS").arg(&key).query_async(&mut c).await }).await?;
        Ok(users.iter().filter_map(|u| UserId::parse(u).ok()).collect())
    }

    /// A user's presence as Redis has it, if it has it, and when it last changed.
    pub(crate) async fn presence(&self, link: &Link, user: &UserId) -> Result<Option<Observed>, LinkError> {
        let key = link.key(&["user", user.as_str(), "status"]);
        let (status, last_seen, at): (Option<String>, Option<i64>, Option<i64>) = link
            .run(|mut c| async move {
                redis::cmd("HMGET").arg(&key).arg("status").arg("lastSeen").arg("at").query_async(&mut c).await
            })
            .await?;
        Ok(status.map(|status| Observed {
            view: PresenceView {
                user_id: user.clone(),
                status: match status.as_str() {
                    "online" => PresenceStatus::Online,
                    "unknown" => PresenceStatus::Unknown,
                    _ => PresenceStatus::Offline,
                },
                last_seen: (status != "online").then(|| last_seen.map(Timestamp::from_millis)).flatten(),
            },
            at: Timestamp::from_millis(at.unwrap_or(0)),
        }))
    }
}

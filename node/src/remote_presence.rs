//! Presence across nodes, as data: which peers watch which users of this node, when each
//! remote user's latest presence was observed (so older news is ignored), and which remote
//! users this node asked to hear about, and when. The flows that use it are in `presence`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kith_proto::{ServerName, Timestamp, UserId};

/// How long a presence subscription at another node is trusted before it is asked for again
/// (the other node keeps subscriptions in memory and forgets them when it restarts).
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(600);

/// Most remote users remembered as subscribed; past that, old entries are forgotten.
const MAX_SUBSCRIBED: usize = 100_000;

/// What this node knows of presence at other nodes, and other nodes of presence here.
#[derive(Debug, Default)]
pub struct RemotePresence {
    /// Users of this node that peers watch, and which peers.
    watchers: Mutex<HashMap<UserId, HashSet<ServerName>>>,
    /// When each remote user's latest presence was observed.
    observed_at: Mutex<HashMap<UserId, Timestamp>>,
    /// Remote users this node asked to hear about, and when.
    subscribed: Mutex<HashMap<UserId, Instant>>,
}

impl RemotePresence {
    /// Records that `peer` watches `users` (users of this node).
    pub fn add_watcher(&self, peer: &ServerName, users: &[UserId]) {
        let mut watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        for user in users {
            watchers.entry(user.clone()).or_default().insert(peer.clone());
        }
    }

    /// The peers watching `user`.
    pub fn watchers_of(&self, user: &UserId) -> Vec<ServerName> {
        let watchers = self.watchers.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.get(user).map(|w| w.iter().cloned().collect()).unwrap_or_default()
    }

    /// Whether presence observed at `at` is newer than what is known of `user`; records it if so.
    pub fn is_newer(&self, user: &UserId, at: Timestamp) -> bool {
        let mut known = self.observed_at.lock().unwrap_or_else(PoisonError::into_inner);
        match known.get(user) {
            Some(seen) if *seen > at => false,
            _ => {
                known.insert(user.clone(), at);
                true
            }
        }
    }

    /// Whether to ask `user`'s node for their presence changes: not if it was asked recently.
    /// Saying yes records the ask.
    pub fn should_subscribe(&self, user: &UserId) -> bool {
        let now = Instant::now();
        let mut subscribed = self.subscribed.lock().unwrap_or_else(PoisonError::into_inner);
        if subscribed.get(user).is_some_and(|at| now.duration_since(*at) < RESUBSCRIBE_AFTER) {
            return false;
        }
        if subscribed.len() >= MAX_SUBSCRIBED {
            subscribed.retain(|_, at| now.duration_since(*at) < RESUBSCRIBE_AFTER);
        }
        if subscribed.len() < MAX_SUBSCRIBED {
            subscribed.insert(user.clone(), now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn older_news_is_ignored() {
        let presence = RemotePresence::default();
        let bob = user("bob@beta");
        assert!(presence.is_newer(&bob, Timestamp::from_millis(10)));
        assert!(!presence.is_newer(&bob, Timestamp::from_millis(9)));
        assert!(presence.is_newer(&bob, Timestamp::from_millis(10)), "the same instant is not older");
        assert!(presence.is_newer(&bob, Timestamp::from_millis(11)));
    }

    #[test]
    fn a_user_is_subscribed_once_until_it_is_due_again() {
        let presence = RemotePresence::default();
        let bob = user("bob@beta");
        assert!(presence.should_subscribe(&bob));
        assert!(!presence.should_subscribe(&bob));
        assert!(presence.should_subscribe(&user("carol@beta")));
    }
}

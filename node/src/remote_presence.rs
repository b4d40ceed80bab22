//! Which remote users this instance asked their nodes to hear about, and when, so that it asks
//! again only when a subscription may have been forgotten. (Which peers watch this node's
//! users is kept by `cluster`, shared by the instances; when a remote user's news was observed
//! by `cache`.) The flows that use it are in `presence`.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kith_proto::UserId;

use crate::audience::Audience;

/// How long a presence subscription at another node is trusted before it is asked for again
/// (the other node keeps subscriptions in memory and forgets them when it restarts).
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(600);

/// Most remote users remembered as subscribed; past that, old entries are forgotten.
const MAX_SUBSCRIBED: usize = 100_000;

/// Remote users this instance subscribed to, and whom of this node's users their home nodes
/// said they share their presence with.
#[derive(Debug, Default)]
pub struct RemotePresence {
    /// Remote users this node asked to hear about, and when.
    subscribed: Mutex<HashMap<UserId, Instant>>,
    /// The audience each remote user's last presence report named (bounded like
    /// `subscribed`: reports come only for users this node subscribed to).
    audiences: Mutex<HashMap<UserId, Audience>>,
}

impl RemotePresence {
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

    /// Who of this node's users may see `user`'s presence, as their node last said; nobody
    /// until it said anything.
    pub fn audience(&self, user: &UserId) -> Audience {
        let audiences = self.audiences.lock().unwrap_or_else(PoisonError::into_inner);
        audiences.get(user).cloned().unwrap_or_else(|| Audience::only(user, []))
    }

    /// Records what `user`'s node said about their audience; returns the one it replaces.
    pub fn set_audience(&self, user: &UserId, audience: Audience) -> Audience {
        let mut audiences = self.audiences.lock().unwrap_or_else(PoisonError::into_inner);
        if audiences.len() >= MAX_SUBSCRIBED && !audiences.contains_key(user) {
            audiences.clear();
        }
        audiences.insert(user.clone(), audience).unwrap_or_else(|| Audience::only(user, []))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap_or_else(|e| panic!("{e}"))
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

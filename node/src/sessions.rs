//! The registry of live sessions on this node: who is connected, where to push their
//! messages, and who watches whose presence.
//!
//! Pushing never waits: each session has a bounded queue, and a session whose queue is full
//! is dropped from the registry (its connection then closes and the client reconnects). Its
//! messages are safe in the store and come again with the replay on the next connect, so a slow
//! client costs only itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kith_client_api::{SessionEvent, SessionId};
use kith_proto::{DeviceId, ServerName, UserId};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::debug;

/// A registered session.
#[derive(Debug)]
struct Entry {
    user: UserId,
    device: DeviceId,
    tx: mpsc::Sender<SessionEvent>,
    /// Users whose presence this session watches.
    watching: HashSet<UserId>,
}

#[derive(Debug, Default)]
struct Registry {
    sessions: HashMap<SessionId, Entry>,
    by_user: HashMap<UserId, Vec<SessionId>>,
    /// Watched user → sessions watching them.
    watchers: HashMap<UserId, HashSet<SessionId>>,
}

impl Registry {
    /// Removes a session; returns whether it was its user's last.
    fn remove(&mut self, id: SessionId) -> Option<(UserId, bool)> {
        let entry = self.sessions.remove(&id)?;
        for watched in &entry.watching {
            if let Some(set) = self.watchers.get_mut(watched) {
                set.remove(&id);
                if set.is_empty() {
                    self.watchers.remove(watched);
                }
            }
        }
        let last = match self.by_user.get_mut(&entry.user) {
            Some(ids) => {
                ids.retain(|s| *s != id);
                ids.is_empty()
            }
            None => true,
        };
        if last {
            self.by_user.remove(&entry.user);
        }
        Some((entry.user, last))
    }
}

/// A user whose last session was dropped while pushing to it, so they may have gone offline.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped(pub UserId);

/// Live sessions of this node.
#[derive(Debug)]
pub struct Sessions {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    /// Pushes one session may have queued before it counts as too slow.
    queue_capacity: usize,
    /// Live sessions one user may have at once.
    max_per_user: usize,
}

impl Sessions {
    /// An empty registry whose sessions queue at most `queue_capacity` pushes, with at most
    /// `max_per_user` live sessions per user.
    pub fn new(queue_capacity: usize, max_per_user: usize) -> Self {
        Self {
            registry: Mutex::default(),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            max_per_user: max_per_user.max(1),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session of `user`'s `device`; says whether it is the user's first (they came
    /// online). `None` when the user has as many live sessions as one user may.
    pub fn register(&self, user: &UserId, device: DeviceId) -> Option<(SessionId, mpsc::Receiver<SessionEvent>, bool)> {
        let mut registry = self.registry();
        if registry.by_user.get(user).is_some_and(|ids| ids.len() >= self.max_per_user) {
            return None;
        }
        let id = SessionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        registry.sessions.insert(id, Entry { user: user.clone(), device, tx, watching: HashSet::new() });
        let ids = registry.by_user.entry(user.clone()).or_default();
        ids.push(id);
        let first = ids.len() == 1;
        Some((id, rx, first))
    }

    /// Ends every session of `user`'s `device` (it was removed); their connections close.
    /// Returns whether that took the user's last session.
    pub fn drop_device(&self, user: &UserId, device: DeviceId) -> bool {
        let mut registry = self.registry();
        let ids: Vec<SessionId> = registry
            .by_user
            .get(user)
            .map(|ids| {
                ids.iter().filter(|id| registry.sessions.get(id).is_some_and(|e| e.device == device)).copied().collect()
            })
            .unwrap_or_default();
        ids.into_iter().filter_map(|id| registry.remove(id)).any(|(_, last)| last)
    }

    /// The users of `server` that some session watches.
    pub fn watched_on(&self, server: &ServerName) -> Vec<UserId> {
        self.registry().watchers.keys().filter(|user| user.is_on(server)).cloned().collect()
    }

    /// Unregisters a session; says whether it was its user's last (they went offline). `None`
    /// if it was already gone.
    pub fn unregister(&self, id: SessionId) -> Option<bool> {
        self.registry().remove(id).map(|(_, last)| last)
    }

    /// Whether `user` has a live session here.
    pub fn is_online(&self, user: &UserId) -> bool {
        self.registry().by_user.contains_key(user)
    }

    /// Pushes `event` to every session of `user` but those of device `except`; returns the
    /// users who lost their last session because it was too slow.
    pub fn push_to_user(&self, user: &UserId, event: &SessionEvent, except: Option<DeviceId>) -> Vec<Dropped> {
        let mut registry = self.registry();
        let Some(ids) = registry.by_user.get(user) else {
            return Vec::new();
        };
        let slow: Vec<SessionId> = ids
            .iter()
            .filter(|id| {
                registry
                    .sessions
                    .get(id)
                    .is_some_and(|entry| Some(entry.device) != except && !try_push(&entry.tx, event))
            })
            .copied()
            .collect();
        drop_slow(&mut registry, slow)
    }

    /// Pushes `event` to every session watching `user`'s presence.
    pub fn push_to_watchers(&self, user: &UserId, event: &SessionEvent) -> Vec<Dropped> {
        let mut registry = self.registry();
        let Some(watchers) = registry.watchers.get(user) else {
            return Vec::new();
        };
        let slow: Vec<SessionId> = watchers
            .iter()
            .filter(|id| registry.sessions.get(id).is_some_and(|entry| !try_push(&entry.tx, event)))
            .copied()
            .collect();
        drop_slow(&mut registry, slow)
    }

    /// Makes session `id` watch `users`' presence. Returns false if the session is gone.
    pub fn watch(&self, id: SessionId, users: &[UserId]) -> bool {
        let mut registry = self.registry();
        let Some(entry) = registry.sessions.get_mut(&id) else {
            return false;
        };
        let added: Vec<UserId> = users.iter().filter(|u| entry.watching.insert((*u).clone())).cloned().collect();
        for user in added {
            registry.watchers.entry(user).or_default().insert(id);
        }
        true
    }

    /// How many users one session watches (to enforce the subscription cap).
    pub fn watch_count(&self, id: SessionId) -> usize {
        self.registry().sessions.get(&id).map_or(0, |e| e.watching.len())
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.registry().sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Queues `event` for a session; false if the session's queue is full (or it is closing).
fn try_push(tx: &mpsc::Sender<SessionEvent>, event: &SessionEvent) -> bool {
    match tx.try_send(event.clone()) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => false,
        // The connection is closing and will unregister itself.
        Err(TrySendError::Closed(_)) => true,
    }
}

fn drop_slow(registry: &mut Registry, slow: Vec<SessionId>) -> Vec<Dropped> {
    slow.into_iter()
        .filter_map(|id| {
            let (user, last) = registry.remove(id)?;
            debug!(%user, session = id.0, "session too slow; dropped");
            last.then_some(Dropped(user))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kith_proto::{PresenceStatus, PresenceView, ServerFrame};

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(&format!("{name}@test")).unwrap()
    }

    fn event(of: &UserId) -> SessionEvent {
        SessionEvent::frame(&ServerFrame::Presence(PresenceView {
            user_id: of.clone(),
            status: PresenceStatus::Online,
            last_seen: None,
        }))
    }

    #[test]
    fn first_and_last_sessions_mark_presence_transitions() {
        let sessions = Sessions::new(4, 16);
        let alice = user("alice");
        let (one, _rx1, first) = sessions.register(&alice, DeviceId(0)).unwrap();
        assert!(first);
        let (two, _rx2, first) = sessions.register(&alice, DeviceId(0)).unwrap();
        assert!(!first);
        assert_eq!(sessions.unregister(one), Some(false));
        assert!(sessions.is_online(&alice));
        assert_eq!(sessions.unregister(two), Some(true));
        assert!(!sessions.is_online(&alice));
        assert_eq!(sessions.unregister(two), None);
    }

    #[test]
    fn a_session_that_does_not_drain_its_queue_is_dropped_alone() {
        let sessions = Sessions::new(2, 16);
        let (alice, bob) = (user("alice"), user("bob"));
        let (_slow, _slow_rx, _) = sessions.register(&alice, DeviceId(0)).unwrap();
        let (_fast, mut fast_rx, _) = sessions.register(&alice, DeviceId(0)).unwrap();
        let (_other, mut bob_rx, _) = sessions.register(&bob, DeviceId(0)).unwrap();
        for _ in 0..2 {
            assert!(sessions.push_to_user(&alice, &event(&bob), None).is_empty());
            fast_rx.try_recv().unwrap();
        }
        // The slow session's queue is full: the third push drops it, not the fast one.
        assert!(sessions.push_to_user(&alice, &event(&bob), None).is_empty());
        assert!(fast_rx.try_recv().is_ok());
        assert!(sessions.is_online(&alice));
        assert_eq!(sessions.len(), 2);
        assert!(sessions.push_to_user(&bob, &event(&alice), None).is_empty());
        assert!(bob_rx.try_recv().is_ok());
    }

    #[test]
    fn watchers_get_presence_and_forget_it_when_they_leave() {
        let sessions = Sessions::new(4, 16);
        let (alice, bob) = (user("alice"), user("bob"));
        let (watcher, mut rx, _) = sessions.register(&alice, DeviceId(0)).unwrap();
        assert!(sessions.watch(watcher, std::slice::from_ref(&bob)));
        sessions.push_to_watchers(&bob, &event(&bob));
        assert!(rx.try_recv().is_ok());
        sessions.unregister(watcher);
        sessions.push_to_watchers(&bob, &event(&bob));
        assert!(sessions.registry().watchers.is_empty());
    }
}

//! The registry of live sessions on this node: who is connected, where to push their
//! messages, and who watches whose presence.
//!
//! Pushing never waits: each session has a bounded queue, and a session whose queue is full
//! is closed (its connection drains what it has, ends with "try again later" and the client
//! reconnects). Its messages are safe in the store and come again with the replay on the next
//! connect, so a slow client costs only itself. A closed session no longer counts as online;
//! its user is reported on a bounded channel so presence is brought up to date at once (by
//! the task that reads it), while the connection may still be draining.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kith_client_api::{SessionEvent, SessionId};
use kith_proto::{DeviceId, ServerName, UserId};
use tokio::sync::mpsc::{self, error::TrySendError};
use tracing::debug;

use crate::audience::Audience;

/// A registered session.
#[derive(Debug)]
struct Entry {
    user: UserId,
    device: DeviceId,
    /// `None` once closed: the connection then ends after what is queued.
    tx: Option<mpsc::Sender<SessionEvent>>,
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

/// Live sessions of this node.
#[derive(Debug)]
pub struct Sessions {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    /// Pushes one session may have queued before it counts as too slow.
    queue_capacity: usize,
    /// Live sessions one user may have at once.
    max_per_user: usize,
    /// Users one of whose sessions was closed here (too slow, or its device removed): their
    /// presence may have changed.
    closed: mpsc::Sender<UserId>,
}

/// How many closed sessions' users may wait for presence to look at them; past that, the
/// connection's end (which also refreshes presence) catches up.
const CLOSED_QUEUED: usize = 1024;

impl Sessions {
    /// An empty registry whose sessions queue at most `queue_capacity` pushes, with at most
    /// `max_per_user` live sessions per user; also returns where users of closed sessions are
    /// reported.
    pub fn new(queue_capacity: usize, max_per_user: usize) -> (Self, mpsc::Receiver<UserId>) {
        let (closed, reports) = mpsc::channel(CLOSED_QUEUED);
        let sessions = Self {
            registry: Mutex::default(),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            max_per_user: max_per_user.max(1),
            closed,
        };
        (sessions, reports)
    }

    /// Reports that a session of `user` was closed.
    fn report_closed(&self, user: &UserId) {
        if self.closed.try_send(user.clone()).is_err() {
            debug!(%user, "closed session not reported; its connection's end will be");
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
        registry.sessions.insert(id, Entry { user: user.clone(), device, tx: Some(tx), watching: HashSet::new() });
        let ids = registry.by_user.entry(user.clone()).or_default();
        ids.push(id);
        let first = ids.len() == 1;
        Some((id, rx, first))
    }

    /// Closes every session of `user`'s `device` (it was removed): their connections end.
    pub fn close_device(&self, user: &UserId, device: DeviceId) {
        let closed = {
            let mut registry = self.registry();
            let Registry { sessions, by_user, .. } = &mut *registry;
            let mut closed = false;
            for id in by_user.get(user).into_iter().flatten() {
                if let Some(entry) = sessions.get_mut(id).filter(|e| e.device == device) {
                    closed |= entry.tx.take().is_some();
                }
            }
            closed
        };
        if closed {
            self.report_closed(user);
        }
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

    /// The users with a live session here.
    pub fn online_users(&self) -> Vec<UserId> {
        self.registry().by_user.keys().cloned().collect()
    }

    /// Whether some session here watches `user`'s presence.
    pub fn is_watched(&self, user: &UserId) -> bool {
        self.registry().watchers.contains_key(user)
    }

    /// Asks every session of `users` (every session, for `None`) to replay what is pending.
    pub fn replay(&self, users: Option<&[UserId]>) {
        let event = SessionEvent::replay();
        let mut registry = self.registry();
        let ids: Vec<SessionId> = match users {
            None => registry.sessions.keys().copied().collect(),
            Some(users) => users.iter().filter_map(|u| registry.by_user.get(u)).flatten().copied().collect(),
        };
        let mut closed = Vec::new();
        for id in ids {
            if let Some(entry) = registry.sessions.get_mut(&id)
                && push(id, entry, &event) == Pushed::Closed
            {
                closed.push(entry.user.clone());
            }
        }
        drop(registry);
        for user in closed {
            self.report_closed(&user);
        }
    }

    /// Whether `user` has a live session here.
    pub fn is_online(&self, user: &UserId) -> bool {
        let registry = self.registry();
        registry
            .by_user
            .get(user)
            .is_some_and(|ids| ids.iter().any(|id| registry.sessions.get(id).is_some_and(|e| e.tx.is_some())))
    }

    /// Pushes `event` to every session of `user` but those of device `except`; a session too
    /// slow to take it is closed. Returns how many sessions it was queued for.
    pub fn push_to_user(&self, user: &UserId, event: &SessionEvent, except: Option<DeviceId>) -> usize {
        let mut registry = self.registry();
        let Registry { sessions, by_user, .. } = &mut *registry;
        let mut queued = 0;
        let mut closed = false;
        for id in by_user.get(user).into_iter().flatten() {
            if let Some(entry) = sessions.get_mut(id).filter(|e| Some(e.device) != except) {
                match push(*id, entry, event) {
                    Pushed::Queued => queued += 1,
                    Pushed::Closed => closed = true,
                    Pushed::Gone => {}
                }
            }
        }
        drop(registry);
        if closed {
            self.report_closed(user);
        }
        queued
    }

    /// Pushes `event` to every session watching `user`'s presence; a session too slow to take
    /// it is closed.
    pub fn push_to_watchers(&self, user: &UserId, event: &SessionEvent, audience: &Audience) {
        let mut registry = self.registry();
        let Registry { sessions, watchers, .. } = &mut *registry;
        let mut closed = Vec::new();
        for id in watchers.get(user).into_iter().flatten() {
            if let Some(entry) = sessions.get_mut(id)
                && audience.admits(&entry.user)
                && push(*id, entry, event) == Pushed::Closed
            {
                closed.push(entry.user.clone());
            }
        }
        drop(registry);
        for user in closed {
            self.report_closed(&user);
        }
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

    /// Whose session `id` is; `None` once it is gone.
    pub fn user_of(&self, id: SessionId) -> Option<UserId> {
        self.registry().sessions.get(&id).map(|e| e.user.clone())
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

/// What pushing to one session did.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// Queued for it.
    Queued,
    /// Its queue was full: the session is closed now.
    Closed,
    /// It was closed or closing already.
    Gone,
}

/// Queues `event` for a session; closes the session if its queue is full.
fn push(id: SessionId, entry: &mut Entry, event: &SessionEvent) -> Pushed {
    let Some(tx) = &entry.tx else {
        return Pushed::Gone;
    };
    match tx.try_send(event.clone()) {
        Ok(()) => Pushed::Queued,
        // A connection that is closing unregisters itself.
        Err(TrySendError::Closed(_)) => Pushed::Gone,
        Err(TrySendError::Full(_)) => {
            debug!(user = %entry.user, session = id.0, "session too slow; closed");
            entry.tx = None;
            Pushed::Closed
        }
    }
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
        let (sessions, _closed) = Sessions::new(4, 16);
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
        let (sessions, mut closed) = Sessions::new(2, 16);
        let (alice, bob) = (user("alice"), user("bob"));
        let (_slow, mut slow_rx, _) = sessions.register(&alice, DeviceId(0)).unwrap();
        let (_fast, mut fast_rx, _) = sessions.register(&alice, DeviceId(0)).unwrap();
        let (_other, mut bob_rx, _) = sessions.register(&bob, DeviceId(0)).unwrap();
        for _ in 0..2 {
            sessions.push_to_user(&alice, &event(&bob), None);
            fast_rx.try_recv().unwrap();
        }
        // The slow session's queue is full: the third push closes it, not the fast one.
        sessions.push_to_user(&alice, &event(&bob), None);
        assert!(fast_rx.try_recv().is_ok());
        assert_eq!(closed.try_recv().ok(), Some(alice.clone()), "presence hears of it");
        assert!(sessions.is_online(&alice), "the fast session still counts");
        sessions.push_to_user(&bob, &event(&alice), None);
        assert!(bob_rx.try_recv().is_ok());
        // The slow one ends after what it had queued; the others stay open.
        assert_eq!((slow_rx.try_recv().is_ok(), slow_rx.try_recv().is_ok()), (true, true));
        assert!(matches!(slow_rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        sessions.push_to_user(&alice, &event(&bob), None);
        assert!(fast_rx.try_recv().is_ok());
        assert!(matches!(fast_rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)));
    }

    #[test]
    fn watchers_get_presence_and_forget_it_when_they_leave() {
        let (sessions, _closed) = Sessions::new(4, 16);
        let (alice, bob) = (user("alice"), user("bob"));
        let (watcher, mut rx, _) = sessions.register(&alice, DeviceId(0)).unwrap();
        assert!(sessions.watch(watcher, std::slice::from_ref(&bob)));
        sessions.push_to_watchers(&bob, &event(&bob), &Audience::only(&bob, []));
        assert!(rx.try_recv().is_err(), "a watcher not admitted hears nothing");
        sessions.push_to_watchers(&bob, &event(&bob), &Audience::only(&bob, [alice.clone()]));
        assert!(rx.try_recv().is_ok());
        sessions.unregister(watcher);
        sessions.push_to_watchers(&bob, &event(&bob), &Audience::Everyone);
        assert!(sessions.registry().watchers.is_empty());
    }
}

//! Which connections are alive. Every connection must show a sign of life (a ping answered, a
//! request or an answer received on it) at least every `dead_after`; one that does not, or
//! whose pings fail, or on which a request timed out, is *condemned*: the network closes it.
//!
//! libp2p's ping never closes a connection by itself, and a half-open TCP connection (a NAT
//! that forgot it, a dead middlebox, a pulled cable) looks open forever: without this, requests
//! would keep going to a connection that eats them.
//!
//! While a condemned connection closes, the request-response behaviour still counts it among
//! the peer's connections and may route new requests to it, so the network holds requests for
//! that peer until it is gone ([`Liveness::closing`]).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// Why a connection was judged dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its pings failed.
    PingsFailed,
    /// Nothing came back on it (no ping answer, no message) for `dead_after`.
    Silent,
    /// A request on it got no answer in time.
    RequestTimedOut,
    /// A new connection to its peer came up while it had missed a ping.
    Superseded,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PingsFailed => "pings failed",
            Self::Silent => "silent",
            Self::RequestTimedOut => "a request timed out",
            Self::Superseded => "quiet while a new connection came up",
        })
    }
}

/// One established connection.
#[derive(Debug)]
struct Link {
    peer: PeerId,
    last_alive: Instant,
    condemned: Option<Verdict>,
}

/// The established connections and when each last showed a sign of life.
#[derive(Debug)]
pub(crate) struct Liveness {
    links: HashMap<ConnectionId, Link>,
    dead_after: Duration,
}

impl Liveness {
    /// No connections yet; a connection silent for `dead_after` is dead.
    pub(crate) fn new(dead_after: Duration) -> Self {
        Self { links: HashMap::new(), dead_after }
    }

    /// A connection to `peer` was established at `now`.
    pub(crate) fn established(&mut self, id: ConnectionId, peer: PeerId, now: Instant) {
        self.links.insert(id, Link { peer, last_alive: now, condemned: None });
    }

    /// The connection showed a sign of life at `now`.
    pub(crate) fn alive(&mut self, id: ConnectionId, now: Instant) {
        if let Some(link) = self.links.get_mut(&id) {
            link.last_alive = now;
        }
    }

    /// Condemns a connection; returns its peer if it was not condemned before (the caller then
    /// closes it).
    pub(crate) fn condemn(&mut self, id: ConnectionId, verdict: Verdict) -> Option<PeerId> {
        let link = self.links.get_mut(&id)?;
        if link.condemned.is_some() {
            return None;
        }
        link.condemned = Some(verdict);
        Some(link.peer)
    }

    /// Forgets a closed connection; returns its peer and, if it was condemned, why.
    pub(crate) fn closed(&mut self, id: ConnectionId) -> Option<(PeerId, Option<Verdict>)> {
        self.links.remove(&id).map(|link| (link.peer, link.condemned))
    }

    /// Connections not yet condemned that showed no sign of life for `dead_after`.
    pub(crate) fn silent(&self, now: Instant) -> Vec<ConnectionId> {
        self.links
            .iter()
            .filter(|(_, link)| link.condemned.is_none() && now.duration_since(link.last_alive) > self.dead_after)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The other connections of `peer`, not yet condemned, that showed no sign of life for
    /// `quiet`: when a new connection comes up, such connections (which missed a ping) are
    /// likely the dead ones it replaces, and would otherwise still get requests until judged
    /// silent.
    pub(crate) fn superseded(
        &self,
        peer: &PeerId,
        by: ConnectionId,
        now: Instant,
        quiet: Duration,
    ) -> Vec<ConnectionId> {
        self.links
            .iter()
            .filter(|(id, link)| {
                **id != by
                    && link.peer == *peer
                    && link.condemned.is_none()
                    && now.duration_since(link.last_alive) > quiet
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether a connection to `peer` is being closed as dead.
    pub(crate) fn closing(&self, peer: &PeerId) -> bool {
        self.links.values().any(|link| link.peer == *peer && link.condemned.is_some())
    }

    /// Whether `peer` has a connection that is not condemned.
    pub(crate) fn healthy(&self, peer: &PeerId) -> bool {
        self.links.values().any(|link| link.peer == *peer && link.condemned.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD_AFTER: Duration = Duration::from_secs(15);

    #[test]
    fn a_connection_without_news_for_dead_after_is_silent() {
        let (peer, id) = (crate::identity::NodeKey::ephemeral().peer_id(), ConnectionId::new_unchecked(1));
        let start = Instant::now();
        let mut liveness = Liveness::new(DEAD_AFTER);
        liveness.established(id, peer, start);
        assert!(liveness.silent(start + DEAD_AFTER).is_empty(), "not before dead_after");
        liveness.alive(id, start + Duration::from_secs(10));
        assert!(liveness.silent(start + Duration::from_secs(20)).is_empty(), "a sign of life restarts the clock");
        assert_eq!(liveness.silent(start + Duration::from_secs(26)), [id]);
        assert!(liveness.healthy(&peer));
    }

    #[test]
    fn a_condemned_connection_is_closing_once_until_it_closes() {
        let (peer, id) = (crate::identity::NodeKey::ephemeral().peer_id(), ConnectionId::new_unchecked(1));
        let other = ConnectionId::new_unchecked(2);
        let now = Instant::now();
        let mut liveness = Liveness::new(DEAD_AFTER);
        liveness.established(id, peer, now);
        liveness.established(other, peer, now);
        assert_eq!(liveness.condemn(id, Verdict::PingsFailed), Some(peer));
        assert_eq!(liveness.condemn(id, Verdict::Silent), None, "closed once");
        assert!(liveness.closing(&peer));
        assert!(liveness.healthy(&peer), "the other connection still counts");
        assert_eq!(liveness.silent(now + DEAD_AFTER * 2), [other], "a condemned one is not judged again");
        assert_eq!(liveness.closed(id), Some((peer, Some(Verdict::PingsFailed))));
        assert!(!liveness.closing(&peer));
        assert_eq!(liveness.closed(id), None);
        assert_eq!(liveness.condemn(ConnectionId::new_unchecked(9), Verdict::Silent), None, "unknown");
    }

    #[test]
    fn a_new_connection_supersedes_quiet_ones_of_its_peer_only() {
        let (peer, stranger) =
            (crate::identity::NodeKey::ephemeral().peer_id(), crate::identity::NodeKey::ephemeral().peer_id());
        let [quiet, lively, other, new] = [1, 2, 3, 4].map(ConnectionId::new_unchecked);
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        let mut liveness = Liveness::new(DEAD_AFTER);
        liveness.established(quiet, peer, start);
        liveness.established(lively, peer, start);
        liveness.established(other, stranger, start);
        liveness.alive(lively, later - Duration::from_secs(2));
        liveness.established(new, peer, later);
        assert_eq!(liveness.superseded(&peer, new, later, Duration::from_millis(7500)), [quiet]);
    }
}

//! A cap on inbound connections still in their handshake per remote IP address.
//!
//! The swarm holds at most a fixed number of inbound connections in their handshake (TCP
//! accepted, Noise and Yamux not done). Without a cap per address, one host opening sockets
//! that never speak fills them all, and a real peer's handshake is closed unanswered until the
//! silent ones time out — and they are re-opened as fast. With this cap, one address holds at
//! most a few of them; the inbound handshake timeout (shorter than a dial's) frees those.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};

/// Why an inbound connection was refused before its handshake.
#[derive(Debug, thiserror::Error)]
#[error("{ip} has {max} inbound connections in their handshake already")]
pub struct TooManyPending {
    /// The remote address.
    pub ip: IpAddr,
    /// The cap.
    pub max: u32,
}

/// Counts inbound connections in their handshake per remote IP address, and refuses one over
/// the cap.
#[derive(Debug)]
pub(crate) struct Behaviour {
    max_per_ip: u32,
    pending: HashMap<ConnectionId, IpAddr>,
    per_ip: HashMap<IpAddr, u32>,
}

impl Behaviour {
    /// At most `max_per_ip` pending inbound connections per address (0: no cap).
    pub(crate) fn new(max_per_ip: u32) -> Self {
        Self { max_per_ip, pending: HashMap::new(), per_ip: HashMap::new() }
    }

    fn release(&mut self, connection: ConnectionId) {
        let Some(ip) = self.pending.remove(&connection) else {
            return;
        };
        if let Some(count) = self.per_ip.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// The IP address a multiaddress starts with, if it does.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote_addr).filter(|_| self.max_per_ip > 0) else {
            return Ok(());
        };
        let count = self.per_ip.entry(ip).or_default();
        if *count >= self.max_per_ip {
            return Err(ConnectionDenied::new(TooManyPending { ip, max: self.max_per_ip }));
        }
        *count += 1;
        self.pending.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(connection_id);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) = event {
            self.release(connection_id);
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _connection: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

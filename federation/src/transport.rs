//! The swarm: TCP with Noise and Yamux, a dial timeout, the kernel's give-up time for
//! unacknowledged data, and the behaviours (connection limits, identify, ping,
//! request-response).

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::core::transport::timeout::TransportTimeout;
use libp2p::core::upgrade::Version;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, Swarm, Transport, connection_limits, identify, noise, ping, tcp, yamux};

use crate::error::FederationError;
use crate::network::NetworkConfig;
use crate::protocol::PROTOCOL;

/// What the swarm runs on every connection.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// First, so that an address over its cap never takes one of the swarm's pending slots.
    pub(crate) pending_per_ip: crate::pending::Behaviour,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) requests: request_response::Behaviour<crate::codec::Codec>,
}

/// Inbound connections in their handshake, from all addresses together.
const MAX_PENDING_INCOMING: u32 = 64;

/// Timeouts on one direction of a transport's connections.
trait DirectedTimeouts: Transport + Sized {
    /// Inbound connections must finish their upgrade within `timeout`.
    fn apply_inbound_timeout(self, timeout: Duration) -> TransportTimeout<Self> {
        TransportTimeout::with_ingoing_timeout(self, timeout)
    }

    /// Dials must finish within `timeout`.
    fn apply_outbound_timeout(self, timeout: Duration) -> TransportTimeout<Self> {
        TransportTimeout::with_outgoing_timeout(self, timeout)
    }
}

impl<T: Transport> DirectedTimeouts for T {}

/// Builds the swarm of `config`.
pub(crate) fn build_swarm(config: &NetworkConfig) -> Result<Swarm<Behaviour>, FederationError> {
    let transport = |e: &dyn std::fmt::Display| FederationError::Transport(e.to_string());
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING));
    let codec = crate::codec::Codec;
    let request_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(config.max_streams_per_peer);
    let (dial_timeout, inbound_timeout, give_up) =
        (config.dial_timeout, config.inbound_handshake_timeout, config.dead_after);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.key.keypair().clone())
        .with_tokio()
        .with_other_transport(|key| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .map(move |stream, _| {
                        give_up_unacknowledged(&stream, give_up);
                        stream
                    })
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default())
                    // Bounds an inbound handshake (Noise, Yamux) tighter than a dial: a socket
                    // that never speaks gives its pending slot back soon.
                    .map(|output, _| output)
                    .apply_inbound_timeout(inbound_timeout)
                    // Bounds a dial (TCP connect, Noise, Yamux): a black-holed address fails in
                    // seconds rather than when the kernel gives up.
                    .apply_outbound_timeout(dial_timeout),
            )
        })
        .map_err(|e| transport(&e))?
        .with_behaviour(|key| Behaviour {
            pending_per_ip: crate::pending::Behaviour::new(config.max_pending_per_ip),
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new("/kith/1".into(), key.public())
                    .with_agent_version(format!("kith/{}", env!("CARGO_PKG_VERSION")))
                    // No address cache: a peer is dialled only at its pinned address, never at
                    // addresses it (or anyone) announces.
                    .with_cache_size(0),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(config.ping_interval).with_timeout(config.dead_after),
            ),
            requests: request_response::Behaviour::with_codec(
                codec,
                [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                request_config,
            ),
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(120))
                .with_per_connection_event_buffer_size(NonZeroUsize::new(64).map_or(7, NonZeroUsize::get))
        })
        .build();
    Ok(swarm)
}

/// Makes the kernel drop a connection whose sent data stays unacknowledged for `after`
/// (`TCP_USER_TIMEOUT`). Without it, closing a connection into a black hole waits for its send
/// buffer to drain, which takes the kernel's retransmission limit (about 15 minutes), and the
/// connection's requests wait with it.
fn give_up_unacknowledged(stream: &tcp::tokio::TcpStream, after: Duration) {
    #[cfg(target_os = "linux")]
    if let Err(e) = socket2::SockRef::from(&stream.0).set_tcp_user_timeout(Some(after)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (stream, after);
}

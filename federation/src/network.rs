//! The network task: one event loop owns the libp2p `Swarm` (TCP, Noise, Yamux, identify,
//! ping, connection limits, request-response); a cloneable [`NetworkHandle`] talks to it over a
//! bounded channel and gets answers on oneshots, keyed by request id.
//!
//! Inbound requests go to the node as [`Inbound`]s on a bounded channel; the node answers on
//! the oneshot it finds inside, and the loop sends that answer back to the peer. Nothing slow
//! (signature checks, storage) runs on the loop itself.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use kith_proto::{ServerName, Timestamp};
use libp2p::core::ConnectedPoint;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, noise, ping, tcp, yamux};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::envelope::Envelope;
use crate::error::FederationError;
use crate::identity::NodeKey;
use crate::peers::Directory;
use crate::protocol::{Ack, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, PROTOCOL, Request, Response};
use crate::record::NodeRecord;

/// Limits and timings of the network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// This node's key.
    pub key: NodeKey,
    /// This node's server name.
    pub server_name: ServerName,
    /// Where to listen (multiaddresses).
    pub listen: Vec<Multiaddr>,
    /// The pinned peers; connections from anyone else are closed at once.
    pub directory: Directory,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// Requests one peer may have open at once on one connection.
    pub max_streams_per_peer: usize,
    /// Connections to all peers together.
    pub max_connections: u32,
    /// Connections to one peer.
    pub max_connections_per_peer: u32,
}

impl NetworkConfig {
    /// Defaults for `key`, `server_name`, `listen` and `directory`.
    pub fn new(key: NodeKey, server_name: ServerName, listen: Vec<Multiaddr>, directory: Directory) -> Self {
        Self {
            key,
            server_name,
            listen,
            directory,
            request_timeout: Duration::from_secs(30),
            max_streams_per_peer: 16,
            max_connections: 256,
            max_connections_per_peer: 2,
        }
    }
}

/// A request from a pinned peer, for the node to answer.
#[derive(Debug)]
pub struct Inbound {
    /// The connection's peer.
    pub peer: PeerId,
    /// The server name pinned to it.
    pub from: ServerName,
    /// What it asks.
    pub request: InboundRequest,
    /// Where the answer goes; dropping it answers `Refused`.
    pub reply: oneshot::Sender<Response>,
}

/// What a peer asks the node.
#[derive(Debug)]
pub enum InboundRequest {
    /// Envelopes to apply.
    Deliver(Vec<Envelope>),
    /// An envelope that expects one back.
    Query(Envelope),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    requests: request_response::cbor::Behaviour<Request, Response>,
}

enum Command {
    Request { to: ServerName, request: Request, reply: oneshot::Sender<Result<Response, FederationError>> },
    ListenAddresses { reply: oneshot::Sender<Vec<Multiaddr>> },
    Shutdown,
}

/// Talks to the network task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    signals: PeerSignals,
    peer_id: PeerId,
}

/// What the network tells the node about pinned peers, on two channels because they differ in
/// rate and in what a missed one costs.
#[derive(Debug, Clone)]
struct PeerSignals {
    /// Signs of life (a connection, an answer, a request): hints to retry now, frequent under
    /// load; missing one only means waiting out a backoff.
    reachable: broadcast::Sender<ServerName>,
    /// New connections: rare, and each may be a peer that restarted and forgot what it kept in
    /// memory for this node, so the frequent hints must never crowd them out.
    connected: broadcast::Sender<ServerName>,
    /// The last connection to a peer broke (not closed for idleness): rare too.
    lost: broadcast::Sender<ServerName>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request { to, .. } => write!(f, "Request to {to}"),
            Self::ListenAddresses { .. } => f.write_str("ListenAddresses"),
            Self::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl NetworkHandle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Sends a request to the pinned peer `to` and waits for its answer.
    ///
    /// # Errors
    /// [`FederationError::UnknownServer`] for an unpinned name; [`FederationError::Request`]
    /// when no answer came (the request may still have been handled).
    pub async fn request(&self, to: &ServerName, request: Request) -> Result<Response, FederationError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request { to: to.clone(), request, reply })
            .await
            .map_err(|_| FederationError::Stopped)?;
        answer.await.map_err(|_| FederationError::Stopped)?
    }

    /// Delivers envelopes to `to`; returns one ack per envelope, in order.
    ///
    /// # Errors
    /// As [`NetworkHandle::request`]; [`FederationError::Refused`] when the peer refused the
    /// whole batch.
    pub async fn deliver(&self, to: &ServerName, envelopes: Vec<Envelope>) -> Result<Vec<Ack>, FederationError> {
        match self.request(to, Request::Deliver(envelopes)).await? {
            Response::Acks(acks) => Ok(acks),
            Response::Refused(reason) => Err(FederationError::Refused { server: to.clone(), reason }),
            _ => Err(FederationError::UnexpectedAnswer(to.clone())),
        }
    }

    /// Sends a query envelope to `to` and returns its answer envelope.
    ///
    /// # Errors
    /// As [`NetworkHandle::deliver`].
    pub async fn query(&self, to: &ServerName, envelope: Envelope) -> Result<Envelope, FederationError> {
        match self.request(to, Request::Query(envelope)).await? {
            Response::Answer(answer) => Ok(answer),
            Response::Refused(reason) => Err(FederationError::Refused { server: to.clone(), reason }),
            _ => Err(FederationError::UnexpectedAnswer(to.clone())),
        }
    }

    /// The addresses the node listens on now.
    pub async fn listen_addresses(&self) -> Vec<Multiaddr> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::ListenAddresses { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Pinned peers that show a sign of life from now on (a connection, an answer, a request):
    /// a good moment to retry what is queued for them. Frequent under load.
    pub fn reachable(&self) -> broadcast::Receiver<ServerName> {
        self.signals.reachable.subscribe()
    }

    /// Pinned peers connected anew from now on, every new connection and not only a first one:
    /// an old connection to a peer that vanished can look open until pings time out. Each may
    /// have restarted and forgotten what it kept in memory for this node (presence
    /// subscriptions).
    pub fn connections(&self) -> broadcast::Receiver<ServerName> {
        self.signals.connected.subscribe()
    }

    /// Pinned peers whose last connection broke from now on: it ended with an error (the peer
    /// crashed or stopped, or the network failed), not for being idle. Whatever the peer said
    /// of its users may no longer hold.
    pub fn lost(&self) -> broadcast::Receiver<ServerName> {
        self.signals.lost.subscribe()
    }

    /// Stops the network task.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// Builds the swarm, starts listening and spawns the network task.
///
/// Returns the handle, the inbound requests for the node to answer, and the task.
///
/// # Errors
/// When the transport cannot be built or an address cannot be listened on.
pub async fn start(
    config: NetworkConfig,
) -> Result<(NetworkHandle, mpsc::Receiver<Inbound>, JoinHandle<()>), FederationError> {
    let mut swarm = build_swarm(&config)?;
    for address in &config.listen {
        swarm
            .listen_on(address.clone())
            .map_err(|e| FederationError::Listen { address: address.to_string(), reason: e.to_string() })?;
    }
    // Wait until every listener is up, so callers can read the addresses.
    let mut listening = 0;
    while listening < config.listen.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, peer_id = %swarm.local_peer_id(), "federation listening");
                listening += 1;
            }
            SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                return Err(FederationError::Listen {
                    address: format!("{:?}", config.listen),
                    reason: error.to_string(),
                });
            }
            _ => {}
        }
    }
    for peer in config.directory.peers() {
        swarm.add_peer_address(peer.peer_id(), peer.address().clone());
        // Say hello at start: a peer that queued envelopes for us while we were down learns at
        // once that we are back, instead of at the end of its backoff.
        let dial = DialOpts::peer_id(peer.peer_id()).addresses(vec![peer.address().clone()]).build();
        if let Err(e) = swarm.dial(dial) {
            debug!(peer = %peer.name(), error = %e, "peer not reachable at start");
        }
    }

    let (commands, command_rx) = mpsc::channel(256);
    let (inbound_tx, inbound_rx) = mpsc::channel(256);
    let signals = PeerSignals {
        reachable: broadcast::channel(64).0,
        connected: broadcast::channel(64).0,
        lost: broadcast::channel(64).0,
    };
    let handle = NetworkHandle { commands, signals: signals.clone(), peer_id: *swarm.local_peer_id() };
    let event_loop = EventLoop {
        swarm,
        key: config.key,
        server_name: config.server_name,
        directory: config.directory,
        commands: command_rx,
        inbound: inbound_tx,
        signals,
        pending: HashMap::new(),
        hellos: HashSet::new(),
        replies: FuturesUnordered::new(),
    };
    Ok((handle, inbound_rx, tokio::spawn(event_loop.run())))
}

fn build_swarm(config: &NetworkConfig) -> Result<Swarm<Behaviour>, FederationError> {
    let transport = |e: &dyn std::fmt::Display| FederationError::Transport(e.to_string());
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_pending_incoming(Some(64));
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_REQUEST_BYTES)
        .set_response_size_maximum(MAX_RESPONSE_BYTES);
    let request_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(config.max_streams_per_peer);
    let swarm = libp2p::SwarmBuilder::with_existing_identity(config.key.keypair().clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| transport(&e))?
        .with_behaviour(|key| Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new("/kith/1".into(), key.public())
                    .with_agent_version(format!("kith/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
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

/// The task that owns the swarm.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    key: NodeKey,
    server_name: ServerName,
    directory: Directory,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    signals: PeerSignals,
    /// Outbound requests awaiting their answer.
    pending: HashMap<OutboundRequestId, (ServerName, oneshot::Sender<Result<Response, FederationError>>)>,
    /// Outbound `Hello`s, whose answers the loop checks itself.
    hellos: HashSet<OutboundRequestId>,
    /// Answers the node is preparing for inbound requests.
    replies: FuturesUnordered<BoxFuture<'static, (ResponseChannel<Response>, Response)>>,
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(command) => self.on_command(command),
                },
                Some((channel, response)) = self.replies.next(), if !self.replies.is_empty() => {
                    if self.swarm.behaviour_mut().requests.send_response(channel, response).is_err() {
                        debug!("peer went away before its answer was sent");
                    }
                }
            }
        }
        for (_, (server, reply)) in self.pending.drain() {
            let _ = reply.send(Err(FederationError::Request { server, reason: "network stopped".into() }));
        }
        debug!("federation network stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request { to, request, reply } => {
                let Some(peer) = self.directory.by_name(&to) else {
                    let _ = reply.send(Err(FederationError::UnknownServer(to)));
                    return;
                };
                let peer_id = peer.peer_id();
                let address = peer.address().clone();
                let id =
                    self.swarm.behaviour_mut().requests.send_request_with_addresses(&peer_id, request, vec![address]);
                self.pending.insert(id, (to, reply));
            }
            Command::ListenAddresses { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Shutdown => {}
        }
    }

    fn own_record(&self) -> Option<NodeRecord> {
        let addresses = self.swarm.listeners().map(ToString::to_string).collect();
        NodeRecord::sign(&self.key, &self.server_name, addresses, Timestamp::now())
            .inspect_err(|e| warn!(error = %e, "cannot sign node record"))
            .ok()
    }

    fn reachable(&self, peer: &PeerId) {
        if let Some(name) = self.directory.name_of(peer) {
            let _ = self.signals.reachable.send(name.clone());
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                if self.directory.name_of(&peer_id).is_none() {
                    warn!(peer = %peer_id, "connection from a peer no operator pinned; closing it");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if matches!(endpoint, ConnectedPoint::Dialer { .. })
                    && let Some(record) = self.own_record()
                {
                    let id = self.swarm.behaviour_mut().requests.send_request(&peer_id, Request::Hello(record));
                    self.hellos.insert(id);
                }
                if let Some(name) = self.directory.name_of(&peer_id) {
                    let _ = self.signals.connected.send(name.clone());
                }
                self.reachable(&peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause: Some(ConnectionError::IO(error)),
                ..
            } => {
                if let Some(name) = self.directory.name_of(&peer_id) {
                    debug!(peer = %name, %error, "lost the connection to a peer");
                    let _ = self.signals.lost.send(name.clone());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Requests(event)) => self.on_request_event(event),
            SwarmEvent::IncomingConnectionError { error, .. } => debug!(%error, "incoming connection failed"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }

    fn on_request_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                self.on_inbound(peer, request, channel);
            }
            Event::Message { peer, message: Message::Response { request_id, response }, .. } => {
                if self.hellos.remove(&request_id) {
                    self.on_hello_answer(peer, response);
                } else if let Some((_, reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
                self.reachable(&peer);
            }
            Event::OutboundFailure { request_id, error, .. } => {
                self.hellos.remove(&request_id);
                if let Some((server, reply)) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(FederationError::Request { server, reason: error.to_string() }));
                }
            }
            Event::InboundFailure { peer, error, .. } => debug!(%peer, %error, "inbound request failed"),
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let Some(from) = self.directory.name_of(&peer).cloned() else {
            let _ =
                self.swarm.behaviour_mut().requests.send_response(channel, Response::Refused("unknown peer".into()));
            return;
        };
        self.reachable(&peer);
        let request = match request {
            Request::Hello(record) => {
                let answer = match record.check(&self.directory, &peer) {
                    Ok(()) => self.own_record().map_or_else(|| Response::Refused("no record".into()), Response::Hello),
                    Err(contradiction) => {
                        warn!(%peer, %contradiction, "peer contradicts its pinned binding; disconnecting");
                        let _ = self.swarm.disconnect_peer_id(peer);
                        Response::Refused(contradiction)
                    }
                };
                let _ = self.swarm.behaviour_mut().requests.send_response(channel, answer);
                return;
            }
            Request::Deliver(envelopes) => InboundRequest::Deliver(envelopes),
            Request::Query(envelope) => InboundRequest::Query(envelope),
        };
        let (reply, answer) = oneshot::channel();
        match self.inbound.try_send(Inbound { peer, from, request, reply }) {
            Ok(()) => self.replies.push(Box::pin(async move {
                let response = answer.await.unwrap_or_else(|_| Response::Refused("not handled".into()));
                (channel, response)
            })),
            Err(_) => {
                // The node is saturated: the peer's outbox will retry.
                let _ = self.swarm.behaviour_mut().requests.send_response(channel, Response::Refused("busy".into()));
            }
        }
    }

    fn on_hello_answer(&mut self, peer: PeerId, response: Response) {
        let verdict = match response {
            Response::Hello(record) => record.check(&self.directory, &peer),
            Response::Refused(reason) => Err(format!("refused our record: {reason}")),
            _ => Err("answered Hello with something else".into()),
        };
        match verdict {
            Ok(()) => debug!(%peer, "peer record matches its pinned binding"),
            Err(contradiction) => {
                warn!(%peer, %contradiction, "peer contradicts its pinned binding; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }
}

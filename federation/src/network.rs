//! The network task: one event loop owns the libp2p `Swarm` ([`crate::transport`]); a
//! cloneable [`NetworkHandle`] talks to it over a bounded channel and gets answers on
//! oneshots, keyed by request id.
//!
//! Inbound requests go to the node as [`Inbound`]s on a bounded channel; the node answers on
//! the oneshot it finds inside, and the loop sends that answer back to the peer. Nothing slow
//! (signature checks, storage) runs on the loop itself.
//!
//! The loop also keeps connections honest ([`crate::liveness`]): a connection that shows no
//! sign of life for [`NetworkConfig::dead_after`], whose pings fail, or on which a request
//! timed out is closed, and the requests on it go out again on another connection or a fresh
//! dial ([`crate::requests`]). [`NetworkHandle::probe`] dials a peer that is not connected, so
//! a node with a backlog notices a healed network within a probe.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use kith_proto::{ServerName, Timestamp};
use libp2p::core::ConnectedPoint;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionError, ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, ping};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::batch::SealedBatch;
use crate::envelope::Envelope;
use crate::error::{FederationError, RequestFailure};
use crate::identity::NodeKey;
use crate::liveness::{Liveness, Verdict};
use crate::peers::Directory;
use crate::protocol::{Ack, Refusal, RefusalReason, Request, Response};
use crate::record::NodeRecord;
use crate::requests::{Next, Outstanding};
use crate::transport::{Behaviour, BehaviourEvent, build_swarm};

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
    /// How long a request may wait for its answer on one connection; past it, that connection
    /// is closed and the request resent on another.
    pub request_timeout: Duration,
    /// Requests one peer may have open at once on one connection.
    pub max_streams_per_peer: usize,
    /// Connections to all peers together.
    pub max_connections: u32,
    /// Connections to one peer.
    pub max_connections_per_peer: u32,
    /// How often every connection is pinged.
    pub ping_interval: Duration,
    /// A connection with no sign of life (ping answer, request, answer) for this long is
    /// closed as dead; the kernel also drops one whose sent data stays unacknowledged this long.
    pub dead_after: Duration,
    /// How long one dial (TCP connect, Noise, Yamux) may take.
    pub dial_timeout: Duration,
    /// How long an inbound connection may take to finish its handshake (Noise, Yamux) once
    /// accepted; a socket that stays silent is closed then.
    pub inbound_handshake_timeout: Duration,
    /// Inbound connections in their handshake one remote address may have at once (0: no
    /// cap), so that one host cannot take every pending slot.
    pub max_pending_per_ip: u32,
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
            ping_interval: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            dial_timeout: Duration::from_secs(5),
            inbound_handshake_timeout: Duration::from_secs(3),
            max_pending_per_ip: 8,
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
    /// Envelopes to apply, each signed alone.
    Deliver(Vec<Envelope>),
    /// An envelope that expects one back.
    Query(Envelope),
    /// Envelopes to apply, signed together.
    DeliverSealed(SealedBatch),
}

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The peer has a live connection: send now.
    Connected,
    /// It had none; a dial is under way (a new connection will be announced on
    /// [`NetworkHandle::connections`]).
    Dialing,
}

enum Command {
    Request { to: ServerName, request: Request, reply: oneshot::Sender<Result<Response, FederationError>> },
    Probe { to: ServerName, reply: oneshot::Sender<Result<Probe, FederationError>> },
    Connected { reply: oneshot::Sender<Vec<ServerName>> },
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
            Self::Probe { to, .. } => write!(f, "Probe {to}"),
            Self::Connected { .. } => f.write_str("Connected"),
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

    /// Sends a request to the pinned peer `to` and waits for its answer. Should its
    /// connection die first (closed, or closed as dead after a timeout), the request goes out
    /// again on another connection, a few times at most.
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
        self.acks(to, Request::Deliver(envelopes)).await
    }

    /// Delivers a sealed batch to `to`; returns one ack per envelope, in order.
    ///
    /// # Errors
    /// As [`NetworkHandle::deliver`].
    pub async fn deliver_sealed(&self, to: &ServerName, batch: SealedBatch) -> Result<Vec<Ack>, FederationError> {
        self.acks(to, Request::DeliverSealed(batch)).await
    }

    /// Sends a delivery and reads its acks.
    async fn acks(&self, to: &ServerName, request: Request) -> Result<Vec<Ack>, FederationError> {
        match self.request(to, request).await? {
            Response::Acks(acks) => Ok(acks),
            Response::Refused(refusal) => Err(FederationError::Refused { server: to.clone(), refusal }),
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
            Response::Refused(refusal) => Err(FederationError::Refused { server: to.clone(), refusal }),
            _ => Err(FederationError::UnexpectedAnswer(to.clone())),
        }
    }

    /// Checks on the pinned peer `to`: connected, or not, in which case one dial starts (none
    /// if one is under way), bounded by [`NetworkConfig::dial_timeout`]. Cheap: a node with a
    /// backlog calls it every few seconds to notice a healed network.
    ///
    /// # Errors
    /// [`FederationError::UnknownServer`] for an unpinned name; [`FederationError::Stopped`].
    pub async fn probe(&self, to: &ServerName) -> Result<Probe, FederationError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Probe { to: to.clone(), reply }).await.map_err(|_| FederationError::Stopped)?;
        answer.await.map_err(|_| FederationError::Stopped)?
    }

    /// The pinned peers with a live connection now.
    pub async fn connected_peers(&self) -> Vec<ServerName> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Connected { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
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

    /// Pinned peers connected anew from now on (dialled by either side), every new connection
    /// and not only a first one: a dead connection is closed only once it is found dead. Each
    /// may have restarted and forgotten what it kept in memory for this node (presence
    /// subscriptions), and each is a moment to send what waits for it.
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
        for address in peer.addresses() {
            swarm.add_peer_address(peer.peer_id(), address.clone());
        }
        // Say hello at start: a peer that queued envelopes for us while we were down learns at
        // once that we are back, instead of at its next probe.
        let dial = dial_any(peer).build();
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
        liveness: Liveness::new(config.dead_after),
        ping_interval: config.ping_interval,
        request_timeout: config.request_timeout,
        pending: HashMap::new(),
        parked: HashMap::new(),
        dial_errors: HashMap::new(),
        hellos: HashSet::new(),
        replies: FuturesUnordered::new(),
    };
    Ok((handle, inbound_rx, tokio::spawn(event_loop.run())))
}

/// How often the loop looks for silent connections and requests parked too long.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The task that owns the swarm.
struct EventLoop {
    swarm: Swarm<Behaviour>,
    key: NodeKey,
    server_name: ServerName,
    directory: Directory,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    signals: PeerSignals,
    /// Established connections and their last sign of life.
    liveness: Liveness,
    /// How often connections are pinged: one quiet for longer missed a ping.
    ping_interval: Duration,
    /// How long a request may wait on one connection (and at most for a dead one to close).
    request_timeout: Duration,
    /// The node's requests on the wire, awaiting their answer.
    pending: HashMap<OutboundRequestId, Outstanding>,
    /// The node's requests waiting for a dead connection of their peer to finish closing.
    parked: HashMap<PeerId, Vec<Outstanding>>,
    /// Why the last dial of a peer failed, to say so when its requests fail.
    dial_errors: HashMap<PeerId, String>,
    /// Outbound `Hello`s, whose answers the loop checks itself.
    hellos: HashSet<OutboundRequestId>,
    /// Answers the node is preparing for inbound requests.
    replies: FuturesUnordered<BoxFuture<'static, (ResponseChannel<Response>, Response)>>,
}

impl EventLoop {
    async fn run(mut self) {
        let mut check = tokio::time::interval(CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = check.tick() => self.check(Instant::now()),
            }
        }
        for (_, request) in self.pending.drain() {
            request.fail(RequestFailure::Stopped);
        }
        for (_, requests) in self.parked.drain() {
            for request in requests {
                request.fail(RequestFailure::Stopped);
            }
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
                self.send(Outstanding::new(to, peer_id, request, reply));
            }
            Command::Probe { to, reply } => {
                let answer = match self.directory.by_name(&to) {
                    None => Err(FederationError::UnknownServer(to)),
                    Some(peer) if self.liveness.healthy(&peer.peer_id()) => Ok(Probe::Connected),
                    Some(peer) => {
                        // `NotDialing` rather than "disconnected": a connection being closed as
                        // dead still counts as one, and must not stop the dial.
                        let dial = dial_any(peer).condition(PeerCondition::NotDialing).build();
                        if let Err(e) = self.swarm.dial(dial) {
                            debug!(peer = %to, error = %e, "probe not dialled");
                        }
                        Ok(Probe::Dialing)
                    }
                };
                let _ = reply.send(answer);
            }
            Command::Connected { reply } => {
                let connected = self
                    .directory
                    .peers()
                    .filter(|peer| self.liveness.healthy(&peer.peer_id()))
                    .map(|peer| peer.name().clone())
                    .collect();
                let _ = reply.send(connected);
            }
            Command::ListenAddresses { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Shutdown => {}
        }
    }

    /// Sends a request, or parks it while a dead connection of its peer closes (the behaviour
    /// might route it there).
    fn send(&mut self, mut request: Outstanding) {
        if self.liveness.closing(&request.peer) {
            request.parked_at.get_or_insert_with(Instant::now);
            self.parked.entry(request.peer).or_default().push(request);
            return;
        }
        let Some(addresses) = self.directory.by_name(&request.server).map(|p| p.addresses().to_vec()) else {
            request.fail(RequestFailure::Unreachable("not pinned".into()));
            return;
        };
        request.parked_at = None;
        request.sends += 1;
        let id = self.swarm.behaviour_mut().requests.send_request_with_addresses(
            &request.peer,
            request.request.clone(),
            addresses,
        );
        self.pending.insert(id, request);
    }

    /// Closes a connection judged dead (once).
    fn condemn(&mut self, connection: ConnectionId, verdict: Verdict) {
        if let Some(peer) = self.liveness.condemn(connection, verdict) {
            let name = self.directory.name_of(&peer).map_or_else(|| peer.to_string(), ToString::to_string);
            info!(peer = %name, %connection, %verdict, "closing a dead connection");
            self.swarm.close_connection(connection);
        }
    }

    /// Closes silent connections; fails requests parked longer than a request may take.
    fn check(&mut self, now: Instant) {
        for connection in self.liveness.silent(now) {
            self.condemn(connection, Verdict::Silent);
        }
        let timeout = self.request_timeout;
        let mut expired = Vec::new();
        for requests in self.parked.values_mut() {
            let (stale, keep) = std::mem::take(requests)
                .into_iter()
                .partition(|r: &Outstanding| r.parked_at.is_some_and(|at| now.duration_since(at) > timeout));
            *requests = keep;
            expired.extend(stale);
        }
        self.parked.retain(|_, requests| !requests.is_empty());
        for request in expired {
            request.fail(RequestFailure::TimedOut);
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
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                if self.directory.name_of(&peer_id).is_none() {
                    warn!(peer = %peer_id, "connection from a peer no operator pinned; closing it");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let now = Instant::now();
                self.liveness.established(connection_id, peer_id, now);
                for quiet in self.liveness.superseded(&peer_id, connection_id, now, self.ping_interval * 3 / 2) {
                    self.condemn(quiet, Verdict::Superseded);
                }
                self.dial_errors.remove(&peer_id);
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
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                let tracked = self.liveness.closed(connection_id);
                if let Some((_, verdict)) = &tracked {
                    debug!(peer = %peer_id, %connection_id, ?verdict, ?cause, "connection closed");
                }
                let verdict = tracked.and_then(|(_, verdict)| verdict);
                // The peer's last connection broke (a reset, or one judged dead), rather than
                // ending quietly: the peer is lost until it connects again.
                let broke = matches!(cause, Some(ConnectionError::IO(_))) || verdict.is_some();
                if num_established == 0
                    && broke
                    && let Some(name) = self.directory.name_of(&peer_id)
                {
                    debug!(peer = %name, "lost the connection to a peer");
                    let _ = self.signals.lost.send(name.clone());
                }
                if !self.liveness.closing(&peer_id)
                    && let Some(requests) = self.parked.remove(&peer_id)
                {
                    for request in requests {
                        self.send(request);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Requests(event)) => self.on_request_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, connection, result })) => match result {
                Ok(_) => self.liveness.alive(connection, Instant::now()),
                // Every kith node answers pings; a connection without them is judged by silence.
                Err(ping::Failure::Unsupported) => debug!(%peer, "peer does not answer pings"),
                Err(_) => self.condemn(connection, Verdict::PingsFailed),
            },
            SwarmEvent::IncomingConnectionError { error, .. } => debug!(%error, "incoming connection failed"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(peer = ?peer_id, %error, "dial failed");
                if let Some(peer) = peer_id {
                    self.dial_errors.insert(peer, dial_error(&error));
                }
            }
            _ => {}
        }
    }

    fn on_request_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, connection_id, message: Message::Request { request, channel, .. } } => {
                self.liveness.alive(connection_id, Instant::now());
                self.on_inbound(peer, request, channel);
            }
            Event::Message { peer, connection_id, message: Message::Response { request_id, response } } => {
                self.liveness.alive(connection_id, Instant::now());
                if self.hellos.remove(&request_id) {
                    self.on_hello_answer(peer, response);
                } else if let Some(request) = self.pending.remove(&request_id) {
                    request.answer(response);
                }
                self.reachable(&peer);
            }
            Event::OutboundFailure { peer, connection_id, request_id, error } => {
                if self.hellos.remove(&request_id) {
                    return;
                }
                let Some(request) = self.pending.remove(&request_id) else {
                    return;
                };
                match request.next(&error, self.dial_errors.get(&peer).map(String::as_str)) {
                    Next::ResendElsewhere => {
                        // It timed out on this connection: close it, and resend once it is gone.
                        self.condemn(connection_id, Verdict::RequestTimedOut);
                        debug!(%peer, %error, "resending a request on another connection");
                        self.send(request);
                    }
                    Next::Resend => {
                        debug!(%peer, %error, "resending a request on another connection");
                        self.send(request);
                    }
                    Next::Fail(failure) => request.fail(failure),
                }
            }
            Event::InboundFailure { peer, error, .. } => debug!(%peer, %error, "inbound request failed"),
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let Some(from) = self.directory.name_of(&peer).cloned() else {
            let _ = self
                .swarm
                .behaviour_mut()
                .requests
                .send_response(channel, Response::Refused(Refusal::new(RefusalReason::UnknownPeer, "unknown peer")));
            return;
        };
        self.reachable(&peer);
        let request = match request {
            Request::Hello(record) => {
                let answer = match record.check(&self.directory, &peer) {
                    Ok(()) => self.own_record().map_or_else(
                        || Response::Refused(Refusal::new(RefusalReason::Unavailable, "no record")),
                        Response::Hello,
                    ),
                    Err(contradiction) => {
                        warn!(%peer, %contradiction, "peer contradicts its pinned binding; disconnecting");
                        let _ = self.swarm.disconnect_peer_id(peer);
                        Response::Refused(Refusal::new(RefusalReason::UnknownPeer, contradiction))
                    }
                };
                let _ = self.swarm.behaviour_mut().requests.send_response(channel, answer);
                return;
            }
            Request::Deliver(envelopes) => InboundRequest::Deliver(envelopes),
            Request::Query(envelope) => InboundRequest::Query(envelope),
            Request::DeliverSealed(batch) => InboundRequest::DeliverSealed(batch),
        };
        let (reply, answer) = oneshot::channel();
        match self.inbound.try_send(Inbound { peer, from, request, reply }) {
            Ok(()) => self.replies.push(Box::pin(async move {
                let response = answer
                    .await
                    .unwrap_or_else(|_| Response::Refused(Refusal::new(RefusalReason::Unavailable, "not handled")));
                (channel, response)
            })),
            Err(_) => {
                // The node is saturated: the peer's outbox will retry.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .requests
                    .send_response(channel, Response::Refused(Refusal::new(RefusalReason::Unavailable, "busy")));
            }
        }
    }

    fn on_hello_answer(&mut self, peer: PeerId, response: Response) {
        let verdict = match response {
            Response::Hello(record) => record.check(&self.directory, &peer),
            Response::Refused(refusal) => Err(format!("refused our record: {refusal}")),
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

/// A dial error in one line, for an operator: the innermost reason per address, not the
/// nesting of transport layers.
/// A dial of `peer` at every pinned address at once: the instances of a node share its peer
/// id, and whichever answers first serves.
fn dial_any(peer: &crate::peers::PinnedPeer) -> libp2p::swarm::dial_opts::WithPeerIdWithAddresses {
    let concurrency = std::num::NonZeroU8::new(u8::try_from(peer.addresses().len()).unwrap_or(u8::MAX))
        .unwrap_or(std::num::NonZeroU8::MIN);
    DialOpts::peer_id(peer.peer_id()).addresses(peer.addresses().to_vec()).override_dial_concurrency_factor(concurrency)
}

fn dial_error(error: &libp2p::swarm::DialError) -> String {
    use libp2p::swarm::DialError;
    match error {
        DialError::Transport(attempts) => attempts
            .iter()
            .map(|(address, e)| {
                let mut reason: &dyn std::error::Error = e;
                while let Some(source) = reason.source() {
                    reason = source;
                }
                format!("{address}: {reason}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

//! The other nodes, as this node reaches them: the libp2p network task, this node's key (which
//! signs every envelope), the pinned directory of peers and the verifier of what they send.
//!
//! What crosses is elsewhere: envelopes queued for peers live in the outbox (`outbox`), those
//! from peers are handled by the federation entry point (`inbound`), and what peers said about
//! presence in `remote_presence`.

use kith_client_api::{RateLimitConfig, RateLimits, ServiceError};
use kith_federation::{
    Directory, Envelope, FederationError, KeysClaimBody, NetworkConfig, NetworkHandle, NodeKey, Payload, RefusalReason,
    Verifier,
};
use kith_proto::keys::KeyBundles;
use kith_proto::{MessageId, ServerName, Timestamp, UserId};
use tracing::info;

use crate::config::FederationConfig;

/// Why federation could not start.
pub type StartError = FederationError;

/// This node's handle on the federation.
#[derive(Debug)]
pub struct Peers {
    /// Talks to the network task.
    pub network: NetworkHandle,
    /// This node's key (signs every envelope).
    pub key: NodeKey,
    /// The pinned peers.
    pub directory: Directory,
    /// Checks inbound envelopes.
    pub verifier: Verifier,
    /// This node's server name (the origin of its envelopes).
    local: ServerName,
    /// Key claims from users of other nodes, per requester.
    pub claim_limits: RateLimits,
}

impl Peers {
    /// Starts the network: listens, and pins the configured peers.
    ///
    /// # Errors
    /// When the key cannot be loaded, two bindings clash, or the address cannot be used.
    pub async fn start(
        key: NodeKey,
        server_name: ServerName,
        config: &FederationConfig,
        rate_limits: RateLimitConfig,
    ) -> Result<(Self, tokio::sync::mpsc::Receiver<kith_federation::Inbound>), StartError> {
        let directory = Directory::new(config.peers.iter().cloned())?;
        let mut network_config =
            NetworkConfig::new(key.clone(), server_name.clone(), vec![config.listen.clone()], directory.clone());
        network_config.inbound_handshake_timeout = config.handshake_timeout;
        network_config.max_pending_per_ip = config.max_pending_per_ip;
        let (network, inbound, _task) = kith_federation::start(network_config).await?;
        for peer in directory.peers() {
            let addresses: Vec<String> = peer.addresses().iter().map(ToString::to_string).collect();
            info!(peer = %peer.name(), peer_id = %peer.peer_id(), addresses = %addresses.join(" "), "pinned peer");
        }
        let peers = Self {
            network,
            key,
            directory,
            verifier: Verifier::new(server_name.clone(), config.replay_window),
            local: server_name,
            claim_limits: RateLimits::new(rate_limits),
        };
        Ok((peers, inbound))
    }

    /// This node's server name (the origin of its envelopes).
    pub fn local_name(&self) -> &ServerName {
        &self.local
    }

    /// Whether `server` is a pinned peer.
    pub fn knows(&self, server: &ServerName) -> bool {
        self.directory.by_name(server).is_some()
    }

    /// The pinned peers' server names.
    pub fn names(&self) -> impl Iterator<Item = ServerName> + '_ {
        self.directory.peers().map(|peer| peer.name().clone())
    }

    /// Signs an envelope from this node to `destination`, sent now.
    ///
    /// # Errors
    /// Only if signing or encoding fails, which is a bug.
    pub fn seal(&self, destination: &ServerName, payload: &Payload) -> Result<Envelope, FederationError> {
        Envelope::seal(&self.key, &MessageId::now().to_string(), &self.local, destination, payload, Timestamp::now())
    }

    /// Claims key bundles of `user`, a user of another node, on behalf of `requester` (with one
    /// one-time prekey per device, or with none when only listing devices).
    ///
    /// # Errors
    /// [`ServiceError::UnknownServer`] for an unpinned server, [`ServiceError::UnknownUser`] when
    /// the peer says the user does not exist; [`ServiceError::Unavailable`] when the peer does
    /// not answer or refuses.
    pub async fn claim_keys(
        &self,
        requester: &UserId,
        user: &UserId,
        one_time: bool,
    ) -> Result<KeyBundles, ServiceError> {
        let server = user.server_name();
        let Some(pinned) = self.directory.by_name(&server) else {
            return Err(ServiceError::UnknownServer(server));
        };
        let claim =
            Payload::KeysClaim(KeysClaimBody { requester_id: requester.clone(), user_id: user.clone(), one_time });
        let envelope = self.seal(&server, &claim).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let answer = match self.network.query(&server, envelope).await {
            Ok(answer) => answer,
            Err(FederationError::Refused { refusal, .. }) if refusal.reason == RefusalReason::UnknownUser => {
                return Err(ServiceError::UnknownUser(user.clone()));
            }
            Err(e) => return Err(ServiceError::Unavailable(e.to_string())),
        };
        let verified = self
            .verifier
            .verify(&self.directory, &pinned.peer_id(), answer, Timestamp::now())
            .map_err(|e| ServiceError::Unavailable(format!("{server} answered with an invalid envelope: {e}")))?;
        match verified.into_payload() {
            Payload::KeysBundles(bundles) if bundles.user_id == *user => Ok(bundles),
            _ => Err(ServiceError::Unavailable(format!("{server} answered a key claim with something else"))),
        }
    }
}

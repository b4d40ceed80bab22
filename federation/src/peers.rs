//! Which node is which: the operator pins each peer's server name to its peer id (and so to
//! its public key) with `--peer NAME=/ip4/…/tcp/…/p2p/<peer id>`. Nothing learned from the
//! network ever overrides a pinned binding.
//!
//! A node of several instances shares one key, and each instance listens on an address of its
//! own: pin the name once per address, with the same peer id, and the directory keeps every
//! address (any instance accepts any envelope, so a connection to any one of them will do).

use std::collections::HashMap;
use std::str::FromStr;

use kith_proto::ServerName;
use libp2p::identity::PublicKey;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::error::FederationError;

/// A peer node as the operator pinned it.
#[derive(Debug, Clone)]
pub struct PinnedPeer {
    name: ServerName,
    peer_id: PeerId,
    public_key: PublicKey,
    /// The same key, decoded once for batch verification.
    verifying_key: ed25519_dalek::VerifyingKey,
    /// Where to dial it: one address per instance of the node.
    addresses: Vec<Multiaddr>,
}

impl PinnedPeer {
    /// The peer's server name.
    pub fn name(&self) -> &ServerName {
        &self.name
    }

    /// The peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The key its envelopes must be signed with.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Where to dial it (without the `/p2p/…` suffix): the first address pinned.
    pub fn address(&self) -> &Multiaddr {
        &self.addresses[0]
    }

    /// Its key as batch verification takes it.
    pub(crate) fn verifying_key(&self) -> &ed25519_dalek::VerifyingKey {
        &self.verifying_key
    }

    /// Every address pinned for it (one per instance of a node of several).
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }
}

impl FromStr for PinnedPeer {
    type Err = FederationError;

    /// Parses `NAME=/ip4/…/tcp/…/p2p/<peer id>`.
    fn from_str(binding: &str) -> Result<Self, Self::Err> {
        let invalid =
            |reason: &str| FederationError::PeerBinding { binding: binding.to_owned(), reason: reason.to_owned() };
        let (name, address) = binding.split_once('=').ok_or_else(|| invalid("expected NAME=MULTIADDR"))?;
        let name = ServerName::parse(name).map_err(|e| invalid(&e.to_string()))?;
        let mut address: Multiaddr = address.parse().map_err(|e: libp2p::multiaddr::Error| invalid(&e.to_string()))?;
        let peer_id = match address.pop() {
            Some(Protocol::P2p(peer_id)) => peer_id,
            _ => return Err(invalid("the address must end in /p2p/<peer id>")),
        };
        let public_key = public_key_of(&peer_id).ok_or_else(|| invalid("the peer id must be an ed25519 key"))?;
        let verifying_key = public_key
            .clone()
            .try_into_ed25519()
            .ok()
            .and_then(|key| ed25519_dalek::VerifyingKey::from_bytes(&key.to_bytes()).ok())
            .ok_or_else(|| invalid("the peer id must be an ed25519 key"))?;
        Ok(Self { name, peer_id, public_key, verifying_key, addresses: vec![address] })
    }
}

/// The public key inlined in an ed25519 peer id.
fn public_key_of(peer_id: &PeerId) -> Option<PublicKey> {
    /// The multihash code of an inlined key.
    const IDENTITY: u64 = 0;
    let multihash = peer_id.as_ref();
    if multihash.code() != IDENTITY {
        return None;
    }
    PublicKey::try_decode_protobuf(multihash.digest()).ok()
}

/// Every pinned peer, by name and by peer id.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    by_name: HashMap<ServerName, PinnedPeer>,
    by_peer: HashMap<PeerId, ServerName>,
}

impl Directory {
    /// A directory of `peers`; bindings of one name to one peer id at several addresses (a
    /// node of several instances) make one peer with every address.
    ///
    /// # Errors
    /// [`FederationError::PeerBinding`] when a name is pinned to two peer ids, or a peer id to
    /// two names.
    pub fn new(peers: impl IntoIterator<Item = PinnedPeer>) -> Result<Self, FederationError> {
        let mut directory = Self::default();
        for peer in peers {
            let clash = |what: &str| FederationError::PeerBinding {
                binding: format!("{}={}/p2p/{}", peer.name, peer.address(), peer.peer_id),
                reason: format!("{what} is pinned to two different peers"),
            };
            if let Some(known) = directory.by_name.get_mut(&peer.name) {
                if known.peer_id != peer.peer_id {
                    return Err(clash("the server name"));
                }
                for address in peer.addresses {
                    if !known.addresses.contains(&address) {
                        known.addresses.push(address);
                    }
                }
                continue;
            }
            if directory.by_peer.contains_key(&peer.peer_id) {
                return Err(clash("the peer id"));
            }
            directory.by_peer.insert(peer.peer_id, peer.name.clone());
            directory.by_name.insert(peer.name.clone(), peer);
        }
        Ok(directory)
    }

    /// The peer pinned to `name`.
    pub fn by_name(&self, name: &ServerName) -> Option<&PinnedPeer> {
        self.by_name.get(name)
    }

    /// The server name pinned to `peer`.
    pub fn name_of(&self, peer: &PeerId) -> Option<&ServerName> {
        self.by_peer.get(peer)
    }

    /// Every pinned peer.
    pub fn peers(&self) -> impl Iterator<Item = &PinnedPeer> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    #[test]
    fn bindings_parse_and_carry_the_key() {
        let key = NodeKey::ephemeral();
        let peer: PinnedPeer = format!("beta=/ip4/127.0.0.1/tcp/4001/p2p/{}", key.peer_id()).parse().unwrap();
        assert_eq!(peer.name().as_str(), "beta");
        assert_eq!(peer.peer_id(), key.peer_id());
        assert_eq!(peer.address().to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(peer.public_key(), &key.keypair().public());
        for bad in ["beta", "beta=/ip4/127.0.0.1/tcp/4001", "Beta=/ip4/127.0.0.1/tcp/1/p2p/x", "beta=nonsense"] {
            let refused = bad.parse::<PinnedPeer>();
            assert!(
                matches!(&refused, Err(FederationError::PeerBinding { binding, .. }) if binding == bad),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_name_or_peer_pinned_to_two_peers_is_refused() {
        let (key, other) = (NodeKey::ephemeral(), NodeKey::ephemeral());
        let a: PinnedPeer = format!("beta=/ip4/127.0.0.1/tcp/1/p2p/{}", key.peer_id()).parse().unwrap();
        let b: PinnedPeer = format!("gamma=/ip4/127.0.0.1/tcp/2/p2p/{}", key.peer_id()).parse().unwrap();
        let refused = Directory::new([a.clone(), b]);
        assert!(
            matches!(&refused, Err(FederationError::PeerBinding { reason, .. }) if reason.contains("the peer id")),
            "one peer id, two names: {refused:?}"
        );
        let c: PinnedPeer = format!("beta=/ip4/127.0.0.1/tcp/3/p2p/{}", other.peer_id()).parse().unwrap();
        let refused = Directory::new([a, c]);
        assert!(
            matches!(&refused, Err(FederationError::PeerBinding { reason, .. }) if reason.contains("the server name")),
            "one name, two peer ids: {refused:?}"
        );
    }

    #[test]
    fn the_instances_of_one_node_are_one_peer_at_several_addresses() {
        let key = NodeKey::ephemeral();
        let bindings: Vec<PinnedPeer> = [1, 2, 1]
            .iter()
            .map(|port| format!("beta=/ip4/127.0.0.{port}/tcp/4001/p2p/{}", key.peer_id()).parse().unwrap())
            .collect();
        let directory = Directory::new(bindings).unwrap();
        let beta = directory.by_name(&ServerName::parse("beta").unwrap()).unwrap();
        let addresses: Vec<String> = beta.addresses().iter().map(ToString::to_string).collect();
        assert_eq!(addresses, ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.2/tcp/4001"]);
        assert_eq!(directory.peers().count(), 1);
    }
}

//! Which node is which: the operator pins each peer's server name to its peer id (and so to
//! its public key) with `--peer NAME=/ip4/…/tcp/…/p2p/<peer id>`. Nothing learned from the
//! network ever overrides a pinned binding.

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
    address: Multiaddr,
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

    /// Where to dial it (without the `/p2p/…` suffix).
    pub fn address(&self) -> &Multiaddr {
        &self.address
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
        Ok(Self { name, peer_id, public_key, address })
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
    /// A directory of `peers`.
    ///
    /// # Errors
    /// [`FederationError::PeerBinding`] when two bindings share a name or a peer id.
    pub fn new(peers: impl IntoIterator<Item = PinnedPeer>) -> Result<Self, FederationError> {
        let mut directory = Self::default();
        for peer in peers {
            let clash = |what: &str| FederationError::PeerBinding {
                binding: format!("{}={}/p2p/{}", peer.name, peer.address, peer.peer_id),
                reason: format!("{what} is pinned twice"),
            };
            if directory.by_name.contains_key(&peer.name) {
                return Err(clash("the server name"));
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
    fn a_name_or_peer_pinned_twice_is_refused() {
        let key = NodeKey::ephemeral();
        let a: PinnedPeer = format!("beta=/ip4/127.0.0.1/tcp/1/p2p/{}", key.peer_id()).parse().unwrap();
        let b: PinnedPeer = format!("gamma=/ip4/127.0.0.1/tcp/2/p2p/{}", key.peer_id()).parse().unwrap();
        let refused = Directory::new([a, b]);
        assert!(
            matches!(&refused, Err(FederationError::PeerBinding { reason, .. }) if reason.contains("the peer id")),
            "{refused:?}"
        );
    }
}

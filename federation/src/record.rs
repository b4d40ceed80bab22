//! The signed node record two nodes exchange when they connect: who they say they are. A
//! record that contradicts the operator's pinned binding ends the connection.

use kith_proto::{ServerName, Timestamp};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::FederationError;
use crate::identity::NodeKey;
use crate::peers::Directory;

/// Domain separation for record signatures.
const SIGNATURE_CONTEXT: &[u8] = b"kith-node-record-v1\0";

/// A node's statement of its name, peer id and addresses at a time, signed by its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The server name the node is home to.
    pub server_name: String,
    /// Its peer id (base58).
    pub peer_id: String,
    /// Where it listens.
    pub addresses: Vec<String>,
    /// When it made the record (milliseconds since the Unix epoch).
    pub at: i64,
    /// Its ed25519 signature over the other fields.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl NodeRecord {
    /// Makes and signs this node's record.
    ///
    /// # Errors
    /// If signing fails (never in practice).
    pub fn sign(
        key: &NodeKey,
        server_name: &ServerName,
        addresses: Vec<String>,
        at: Timestamp,
    ) -> Result<Self, FederationError> {
        let mut record = Self {
            server_name: server_name.to_string(),
            peer_id: key.peer_id().to_base58(),
            addresses,
            at: at.as_millis(),
            signature: Vec::new(),
        };
        record.signature = key.sign(&record.signed_bytes())?;
        Ok(record)
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = SIGNATURE_CONTEXT.to_vec();
        let mut field = |f: &[u8]| {
            bytes.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
            bytes.extend_from_slice(f);
        };
        field(self.server_name.as_bytes());
        field(self.peer_id.as_bytes());
        for address in &self.addresses {
            field(address.as_bytes());
        }
        bytes.extend_from_slice(&self.at.to_be_bytes());
        bytes
    }

    /// Checks a record received on a connection from `peer` against the pinned bindings.
    ///
    /// # Errors
    /// A description of the contradiction.
    pub fn check(&self, directory: &Directory, peer: &PeerId) -> Result<(), String> {
        let pinned_name = directory.name_of(peer).ok_or_else(|| format!("peer {peer} is not pinned"))?;
        let pinned = directory.by_name(pinned_name).ok_or_else(|| format!("peer {peer} is not pinned"))?;
        if self.peer_id != peer.to_base58() {
            return Err(format!("record names peer {} but came from {peer}", self.peer_id));
        }
        if !pinned.public_key().verify(&self.signed_bytes(), &self.signature) {
            return Err(format!("record from {peer} is not signed by its key"));
        }
        if self.server_name != pinned_name.as_str() {
            return Err(format!("peer {peer} says it is {:?} but is pinned as {pinned_name}", self.server_name));
        }
        Ok(())
    }
}

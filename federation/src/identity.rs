//! The node's identity: one ed25519 key, generated into the data directory on first start,
//! that is both its libp2p peer id and the key that signs its envelopes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::error::FederationError;

/// The file in the data directory holding the node's ed25519 secret (32 raw bytes, mode 0600).
pub const NODE_KEY_FILE: &str = "node.key";

/// The node's signing key and peer id.
#[derive(Clone)]
pub struct NodeKey {
    keypair: Keypair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey").field("peer_id", &self.peer_id()).finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Reads the key from `data_dir`, generating and saving a new one if there is none.
    ///
    /// # Errors
    /// [`FederationError::NodeKey`] when the file cannot be read, written or decoded.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, FederationError> {
        Self::load_or_create_file(&data_dir.join(NODE_KEY_FILE))
    }

    /// Reads the key from `path`, generating and saving a new one if there is none. Several
    /// processes starting at once on a new shared file all end up with the first one's key.
    ///
    /// # Errors
    /// [`FederationError::NodeKey`] when the file cannot be read, written or decoded.
    pub fn load_or_create_file(path: &Path) -> Result<Self, FederationError> {
        let failed = |reason: String| FederationError::NodeKey { path: path.display().to_string(), reason };
        match fs::read(path) {
            Ok(mut secret) => {
                let keypair = Keypair::ed25519_from_bytes(&mut secret).map_err(|e| failed(e.to_string()))?;
                Ok(Self { keypair })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
                }
                let keypair = Keypair::generate_ed25519();
                let secret = keypair.clone().try_into_ed25519().map_err(|e| failed(e.to_string()))?.secret();
                match write_new(path, secret.as_ref()) {
                    Ok(()) => Ok(Self { keypair }),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load_or_create_file(path),
                    Err(e) => Err(failed(e.to_string())),
                }
            }
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// A fresh key that is not saved anywhere (for tests and tools).
    pub fn ephemeral() -> Self {
        Self { keypair: Keypair::generate_ed25519() }
    }

    /// The peer id other nodes pin this node's server name to.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The libp2p keypair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// Signs `message`.
    ///
    /// # Errors
    /// [`FederationError::Signing`], which ed25519 never returns in practice.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, FederationError> {
        self.keypair.sign(message).map_err(|e| FederationError::Signing(e.to_string()))
    }
}

/// Writes a new file readable only by its owner, atomically and only if there is none: a
/// crash leaves no file or the whole file, and of processes creating it at once the first
/// wins (the others get `AlreadyExists`).
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_keeps_its_peer_id() {
        let temp = tempfile::tempdir().unwrap();
        // A directory that does not exist yet is created.
        let dir = temp.path().join("data");
        let first = NodeKey::load_or_create(&dir).unwrap();
        let again = NodeKey::load_or_create(&dir).unwrap();
        assert_eq!(first.peer_id(), again.peer_id());
    }
}

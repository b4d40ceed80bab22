//! A node that no operator pinned is closed at once: its requests never reach the node.

use std::time::Duration;

use kith_federation::{Directory, NetworkConfig, NodeKey, PinnedPeer, Request};
use kith_proto::ServerName;

/// Patience for anything the test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_peer_nobody_pinned_is_disconnected_and_never_heard() -> Result<(), Box<dyn std::error::Error>> {
    let (beta_key, mallory_key) = (NodeKey::ephemeral(), NodeKey::ephemeral());
    let (beta, mallory) = (ServerName::parse("beta")?, ServerName::parse("mallory")?);
    // Beta pins someone else entirely.
    let alpha_at: PinnedPeer = format!("alpha=/ip4/127.0.0.1/tcp/1/p2p/{}", NodeKey::ephemeral().peer_id()).parse()?;
    let beta_config = NetworkConfig::new(
        beta_key.clone(),
        beta.clone(),
        vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        Directory::new([alpha_at])?,
    );
    let (beta_network, mut beta_inbound, _beta_task) = kith_federation::start(beta_config).await?;
    let mut beta_connections = beta_network.connections();
    let beta_address = beta_network.listen_addresses().await.into_iter().next().ok_or("beta listens nowhere")?;

    // Mallory pins beta, so it dials it and asks.
    let beta_at: PinnedPeer = format!("beta={beta_address}/p2p/{}", beta_key.peer_id()).parse()?;
    let mut mallory_config =
        NetworkConfig::new(mallory_key, mallory, vec!["/ip4/127.0.0.1/tcp/0".parse()?], Directory::new([beta_at])?);
    mallory_config.request_timeout = Duration::from_secs(2);
    let (mallory_network, _mallory_inbound, _mallory_task) = kith_federation::start(mallory_config).await?;
    let asked = tokio::time::timeout(PATIENCE, mallory_network.request(&beta, Request::Deliver(Vec::new()))).await?;
    assert!(asked.is_err(), "an unpinned peer got an answer: {asked:?}");

    // Beta never handed a request from it to the node, nor announced it as a peer.
    assert!(beta_inbound.try_recv().is_err(), "a request from an unpinned peer reached the node");
    assert!(beta_connections.try_recv().is_err(), "an unpinned peer was announced as connected");
    Ok(())
}

//! A request that times out is resent on a new connection, not the one it timed out on.

use std::time::Duration;

use kith_federation::{Directory, NetworkConfig, NodeKey, PinnedPeer, Request, Response};
use kith_proto::ServerName;

/// Patience for anything the test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_request_that_timed_out_is_answered_over_a_new_connection() -> Result<(), Box<dyn std::error::Error>> {
    let (alpha_key, beta_key) = (NodeKey::ephemeral(), NodeKey::ephemeral());
    let (alpha, beta) = (ServerName::parse("alpha")?, ServerName::parse("beta")?);
    // Beta pins alpha at a closed port, so every connection between them is one alpha dialled.
    let alpha_at: PinnedPeer = format!("alpha=/ip4/127.0.0.1/tcp/1/p2p/{}", alpha_key.peer_id()).parse()?;
    let beta_config = NetworkConfig::new(
        beta_key.clone(),
        beta.clone(),
        vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        Directory::new([alpha_at])?,
    );
    let (beta_network, mut beta_inbound, _beta_task) = kith_federation::start(beta_config).await?;
    let mut beta_connections = beta_network.connections();
    let beta_address = beta_network.listen_addresses().await.into_iter().next().ok_or("beta listens nowhere")?;
    let beta_at: PinnedPeer = format!("beta={beta_address}/p2p/{}", beta_key.peer_id()).parse()?;
    let mut alpha_config =
        NetworkConfig::new(alpha_key, alpha, vec!["/ip4/127.0.0.1/tcp/0".parse()?], Directory::new([beta_at])?);
    alpha_config.request_timeout = Duration::from_secs(2);
    let (alpha_network, _alpha_inbound, _alpha_task) = kith_federation::start(alpha_config).await?;

    // Beta sits on the first request (its connection stays healthy: pings pass) and answers
    // the next.
    let answering = tokio::spawn(async move {
        let first = beta_inbound.recv().await;
        let second = beta_inbound.recv().await.ok_or("no second request")?;
        let _ = second.reply.send(Response::Acks(Vec::new()));
        drop(first);
        Ok::<_, &str>(())
    });
    let answer = tokio::time::timeout(PATIENCE, alpha_network.request(&beta, Request::Deliver(Vec::new()))).await??;
    assert_eq!(answer, Response::Acks(Vec::new()));
    tokio::time::timeout(PATIENCE, answering).await???;

    // Beta saw two connections from alpha: the resend did not use the one that timed out.
    let mut connections = 0;
    while let Ok(Ok(from)) = tokio::time::timeout(Duration::from_millis(100), beta_connections.recv()).await {
        assert_eq!(from.as_str(), "alpha");
        connections += 1;
    }
    assert_eq!(connections, 2, "alpha dialled again after the timeout");
    Ok(())
}

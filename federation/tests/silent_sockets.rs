//! Sockets that open a TCP connection to the federation port and never speak do not keep real
//! peers out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use kith_federation::{Directory, NetworkConfig, NodeKey, PinnedPeer, Request, Response};
use kith_proto::ServerName;
use libp2p::multiaddr::Protocol;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;

/// Patience for anything the test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// How many silent sockets the attacker keeps open at once (more than the swarm's 64 pending
/// slots).
const SILENT: usize = 100;

/// Keeps `SILENT` sockets from `source` open to `target`, re-opening each one the node closes;
/// counts every connection made in `opened`.
async fn keep_silent_sockets(source: Ipv4Addr, target: SocketAddr, opened: tokio::sync::watch::Sender<usize>) {
    let opened = &opened;
    let one = move || async move {
        loop {
            let Ok(socket) = TcpSocket::new_v4() else { return };
            if socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).is_err() {
                return;
            }
            if let Ok(mut stream) = socket.connect(target).await {
                opened.send_modify(|n| *n += 1);
                // Never a byte; just wait for the node to give up on it.
                let mut buffer = [0u8; 64];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    futures_util::future::join_all((0..SILENT).map(|_| one())).await;
}

#[tokio::test]
async fn a_real_peer_connects_and_is_answered_while_silent_sockets_are_open() -> Result<(), Box<dyn std::error::Error>>
{
    let (alpha_key, beta_key) = (NodeKey::ephemeral(), NodeKey::ephemeral());
    let (alpha, beta) = (ServerName::parse("alpha")?, ServerName::parse("beta")?);
    let alpha_at: PinnedPeer = format!("alpha=/ip4/127.0.0.1/tcp/1/p2p/{}", alpha_key.peer_id()).parse()?;
    let beta_config = NetworkConfig::new(
        beta_key.clone(),
        beta.clone(),
        vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        Directory::new([alpha_at])?,
    );
    let (beta_network, mut beta_inbound, _beta_task) = kith_federation::start(beta_config).await?;
    let beta_address = beta_network.listen_addresses().await.into_iter().next().ok_or("beta listens nowhere")?;
    let port = beta_address
        .iter()
        .find_map(|p| if let Protocol::Tcp(port) = p { Some(port) } else { None })
        .ok_or("no tcp port")?;

    // An attacker on another address of the loopback fills beta's pending handshakes.
    let (opened, mut open) = tokio::sync::watch::channel(0);
    let attacker = tokio::spawn(keep_silent_sockets(
        Ipv4Addr::new(127, 0, 0, 77),
        SocketAddr::from(([127, 0, 0, 1], port)),
        opened,
    ));
    // Alpha starts only once all of them are open, so it meets a full pending queue.
    tokio::time::timeout(PATIENCE, open.wait_for(|n| *n >= SILENT))
        .await
        .map_err(|_| "the silent sockets did not all open")??;

    let answering = tokio::spawn(async move {
        while let Some(inbound) = beta_inbound.recv().await {
            let _ = inbound.reply.send(Response::Acks(Vec::new()));
        }
    });
    let beta_at: PinnedPeer = format!("beta={beta_address}/p2p/{}", beta_key.peer_id()).parse()?;
    let alpha_config =
        NetworkConfig::new(alpha_key, alpha, vec!["/ip4/127.0.0.1/tcp/0".parse()?], Directory::new([beta_at])?);
    let (alpha_network, _alpha_inbound, _alpha_task) = kith_federation::start(alpha_config).await?;

    // Alpha gets through and is answered, retrying a failed dial as the outbox would.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let answer = loop {
        match tokio::time::timeout_at(deadline, alpha_network.request(&beta, Request::Deliver(Vec::new()))).await {
            Err(_) => return Err("alpha could not reach beta while the silent sockets were open".into()),
            Ok(Ok(answer)) => break answer,
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(answer, Response::Acks(Vec::new()));
    assert!(!attacker.is_finished(), "the silent sockets were open all along");
    attacker.abort();
    answering.abort();
    Ok(())
}

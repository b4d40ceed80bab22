//! A fault-injecting TCP proxy on loopback, put between nodes so that their federation
//! traffic can be cut, black-holed and healed by the test.
//!
//! - [`FaultProxy::cut`]: every connection through it is closed, and new ones are closed as
//!   soon as they are accepted (a clean partition: both ends see it).
//! - [`FaultProxy::black_hole`]: every connection goes dark — its sockets stay open, but bytes
//!   are read and dropped both ways, and an end closing is not passed on — and so do new ones
//!   (a NAT that forgot the flow, a dead middlebox: neither end can tell).
//! - [`FaultProxy::heal`]: new connections pass again. Connections that went dark stay dark,
//!   as half-open TCP connections do: only a new connection gets through.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What happens to one proxied connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Forwarded both ways.
    Pass,
    /// Read and dropped both ways; the sockets stay open.
    Dark,
    /// Both sockets closed.
    Closed,
}

/// What happens to connections accepted from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Pass,
    Dark,
    Close,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    admit: Mutex<Admit>,
    flows: Mutex<Vec<watch::Sender<Flow>>>,
    accepted: AtomicU64,
}

/// A proxy to one upstream address. Dropping it closes everything it holds.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            admit: Mutex::new(Admit::Pass),
            flows: Mutex::default(),
            accepted: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Closes every connection and every new one.
    pub fn cut(&self) {
        self.set(Admit::Close, Some(Flow::Closed));
    }

    /// Darkens every connection and every new one.
    pub fn black_hole(&self) {
        self.set(Admit::Dark, Some(Flow::Dark));
    }

    /// Lets new connections pass; dark ones stay dark.
    pub fn heal(&self) {
        self.set(Admit::Pass, None);
    }

    fn set(&self, admit: Admit, existing: Option<Flow>) {
        if let Ok(mut current) = self.shared.admit.lock() {
            *current = admit;
        }
        if let (Some(flow), Ok(mut flows)) = (existing, self.shared.flows.lock()) {
            flows.retain(|sender| sender.send(flow).is_ok() && flow != Flow::Closed);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until the proxy is dropped (which drops every connection task too).
async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut links = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                let admit = shared.admit.lock().map_or(Admit::Close, |a| *a);
                let flow = match admit {
                    Admit::Close => continue,
                    Admit::Pass => Flow::Pass,
                    Admit::Dark => Flow::Dark,
                };
                let (sender, receiver) = watch::channel(flow);
                if let Ok(mut flows) = shared.flows.lock() {
                    flows.retain(|s| !s.is_closed());
                    flows.push(sender);
                }
                links.spawn(link(client, shared.upstream, receiver));
            }
            Some(_) = links.join_next(), if !links.is_empty() => {}
        }
    }
}

/// One proxied connection. A dark one never reaches upstream.
async fn link(client: TcpStream, upstream: SocketAddr, mut flow: watch::Receiver<Flow>) {
    let initial = *flow.borrow();
    let server = match initial {
        Flow::Pass => match TcpStream::connect(upstream).await {
            Ok(server) => Some(server),
            Err(_) => return,
        },
        Flow::Dark | Flow::Closed => None,
    };
    let (client_read, client_write) = client.into_split();
    let Some(server) = server else {
        // Nothing to forward to: swallow what the client sends until it is closed.
        let swallow = drain(client_read);
        tokio::select! {
            () = swallow => {}
            _ = flow.wait_for(|f| *f == Flow::Closed) => return,
        }
        let _ = flow.wait_for(|f| *f == Flow::Closed).await;
        drop(client_write);
        return;
    };
    let (server_read, server_write) = server.into_split();
    let (up, down) =
        tokio::join!(pipe(client_read, server_write, flow.clone()), pipe(server_read, client_write, flow.clone()));
    // Both ways ended. A dark connection keeps its sockets open (nobody learns it ended) until
    // it is closed; a passing one is done.
    let dark = *flow.borrow() == Flow::Dark;
    if dark {
        let _ = flow.wait_for(|f| *f == Flow::Closed).await;
    }
    drop((up, down));
}

/// Reads and drops until end of stream.
async fn drain(mut from: OwnedReadHalf) {
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Forwards `from` to `to` while the flow passes, drops bytes while it is dark, and stops when
/// it is closed (returning nothing, so both sockets close) or `from` ends (returning `to`, so
/// the caller decides when it closes).
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut flow: watch::Receiver<Flow>,
) -> Option<OwnedWriteHalf> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = flow.wait_for(|f| *f == Flow::Closed) => return None,
        };
        let passing = *flow.borrow() == Flow::Pass;
        if !passing {
            continue;
        }
        tokio::select! {
            written = to.write_all(&buf[..n]) => if written.is_err() { return None },
            _ = flow.wait_for(|f| *f != Flow::Pass) => {}
        }
    }
    // The end closing is passed on only while the flow passes.
    let passing = *flow.borrow() == Flow::Pass;
    if passing {
        let _ = to.shutdown().await;
    }
    Some(to)
}

#[tokio::test]
async fn the_proxy_passes_cuts_darkens_and_heals() -> Result<()> {
    use std::time::Duration;
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let proxy = FaultProxy::start("127.0.0.1:0".parse()?, upstream.local_addr()?).await?;
    let echo = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = upstream.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0; 64];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let wait = Duration::from_millis(300);
    let echoes = |mut socket: TcpStream| async move {
        socket.write_all(b"ping").await?;
        let mut buf = [0; 4];
        let got = tokio::time::timeout(wait, socket.read_exact(&mut buf)).await;
        anyhow::Ok((socket, matches!(got, Ok(Ok(4)))))
    };

    let (old, passes) = echoes(TcpStream::connect(proxy.addr()).await?).await?;
    assert!(passes, "a healthy proxy passes bytes");
    proxy.black_hole();
    let (old, passes) = echoes(old).await?;
    assert!(!passes, "a dark connection drops them");
    proxy.heal();
    let (_, passes) = echoes(TcpStream::connect(proxy.addr()).await?).await?;
    assert!(passes, "a new connection passes after the heal");
    let (mut old, passes) = echoes(old).await?;
    assert!(!passes, "the dark connection stays dark");
    let mut buf = [0; 1];
    assert!(
        tokio::time::timeout(wait, old.read(&mut buf)).await.is_err(),
        "and open: nothing, not even its end, comes through"
    );
    proxy.cut();
    assert!(matches!(old.read(&mut buf).await, Ok(0) | Err(_)), "a cut closes it");
    let mut new = TcpStream::connect(proxy.addr()).await?;
    assert!(matches!(new.read(&mut buf).await, Ok(0) | Err(_)), "and closes new ones");
    assert_eq!(proxy.accepted(), 3);
    echo.abort();
    Ok(())
}

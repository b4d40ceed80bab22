//! Built-in TLS: with `--tls-cert` and `--tls-key` the node serves `https://` and `wss://`
//! itself, no proxy needed.
//!
//! The certificate chain and key (PEM) are read at start, where a bad file stops the node
//! naming the file, and again on SIGHUP, where a bad file keeps the pair in use and logs why.
//! Handshakes read the current pair from a [`Certificates`] resolver, so a reload reaches the
//! next connection and leaves open ones (and their WebSockets) as they are.
//!
//! Handshakes run on tasks of their own, off the accept loop, each with a deadline
//! (`--tls-handshake-timeout`, [`DEFAULT_HANDSHAKE_TIMEOUT`]) and at most
//! [`MAX_PENDING_HANDSHAKES`] at once: a client that opens
//! a socket and says nothing neither blocks others nor holds its socket for long.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How long a client has to finish the TLS handshake after connecting, unless configured.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; when all are taken, new connections wait in the kernel's
/// accept queue.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Finished handshakes waiting for the HTTP server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The PEM files of the node's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// How long a client has to finish the handshake.
    pub handshake_timeout: Duration,
}

/// Why a certificate or key could not be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate, or a broken one.
    #[error("{}: not a PEM certificate chain ({reason})", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file holds no PEM private key, or a broken one.
    #[error("{}: not a PEM private key ({reason})", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is of a kind TLS cannot use, or does not belong to the certificate.
    #[error("{} does not fit the certificate in {}: {source}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// No TLS configuration can be made with this crypto provider (a bug, not input).
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
}

/// The node's current certificate and key, swapped whole on reload. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<RwLock<Arc<CertifiedKey>>>,
}

impl Certificates {
    /// Reads the certificate and key in `files`.
    ///
    /// # Errors
    /// [`TlsError`] naming the file that is unreadable, not PEM, or a key that does not fit.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = read_pair(&files, &provider)?;
        Ok(Self { files, provider, current: Arc::new(RwLock::new(Arc::new(key))) })
    }

    /// Reads the files again; on success new handshakes use the new pair, on failure the
    /// current pair stays. Connections already open are not touched either way.
    ///
    /// # Errors
    /// [`TlsError`] when the files cannot be used (the current pair is kept).
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = read_pair(&self.files, &self.provider)?;
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(key),
            // A writer never panics while holding the lock; recover the value regardless.
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
        Ok(())
    }

    /// The files this pair comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A TLS acceptor whose handshakes present the current pair (HTTP/1.1 only: the client
    /// API and its WebSocket upgrade).
    ///
    /// # Errors
    /// [`TlsError::Setup`] if the provider offers no safe protocol version (never with ring).
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let bad_cert = |reason: String| TlsError::Certificate { path: files.cert.clone(), reason };
    let chain = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad_cert("no CERTIFICATE section".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| TlsError::Key { path: files.key.clone(), reason: e.to_string() })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        // The PEM held bytes that are no certificate.
        rustls::Error::InvalidCertificate(why) => bad_cert(format!("{why:?}")),
        source => TlsError::Mismatch { cert: files.cert.clone(), key: files.key.clone(), source },
    })
}

/// Until shutdown: reloads `certificates` on every SIGHUP. `hangup` is registered by the
/// caller before the node reports that it listens, so an early SIGHUP never kills it.
pub async fn reload_on_hangup(
    certificates: Certificates,
    mut hangup: tokio::signal::unix::Signal,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        match certificates.reload() {
            Ok(()) => info!(cert = %certificates.files().cert.display(), "TLS certificate reloaded"),
            Err(e) => warn!(error = %e, "TLS certificate not reloaded, keeping the current one"),
        }
    }
}

/// A listener whose connections have finished a TLS handshake: what `axum::serve` (or any
/// accept loop) takes instead of a [`TcpListener`].
#[derive(Debug)]
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts TCP connections on `listener` until `shutdown` and hands over those whose
    /// handshake with `acceptor` succeeds within `handshake_timeout`.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        handshake_timeout: Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (hand_over, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(listener, acceptor, handshake_timeout, hand_over, shutdown));
        Ok(Self { accepted, local })
    }
}

impl TlsListener {
    /// The next connection whose handshake succeeded; `None` once the accept loop has ended
    /// (shutdown).
    pub async fn next(&mut self) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
        self.accepted.recv().await
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    hand_over: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // Never closed; ends the loop if it were.
                Err(_) => return,
            },
        };
        let (socket, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        crate::http::send_without_delay(&socket);
        let acceptor = acceptor.clone();
        let hand_over = hand_over.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => {
                    // Fails only at shutdown, when the stream is no longer wanted.
                    let _ = hand_over.send((stream, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Connection-level errors concern one client; others (out of file descriptors) are waited
/// out for a moment rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind as K;
    if matches!(e.kind(), K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset) {
        return;
    }
    warn!(error = %e, "accepting a client connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = Certificates::load(files(dir.path(), "not pem", "not pem")).unwrap_err();
        assert!(matches!(e, TlsError::Certificate { .. }), "{e:?}");
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let missing = TlsFiles { cert: dir.path().join("absent.pem"), ..files(dir.path(), "x", "y") };
        let e = Certificates::load(missing).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }) && e.to_string().contains("absent.pem"), "{e}");
    }
}

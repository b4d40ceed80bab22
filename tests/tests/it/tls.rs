//! Built-in TLS: a node serving `https://` and `wss://` with a certificate from a CA the test
//! makes; clients that trust that CA chat, clients that do not refuse clearly; SIGHUP swaps
//! the certificate for new connections and leaves open ones up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kith_client::{Client, ClientError, Trust};
use nix::sys::signal::Signal;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

use crate::cli::ChatUser;
use crate::harness::{Backend, PASSWORD, TIMEOUTS, TestNode, message, next_frame};

/// A certificate authority made for one test, and the files a node serves with.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A leaf certificate the CA issued.
struct Issued {
    der: CertificateDer<'static>,
    pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("kith-tls-").tempdir()?;
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "kith test CA");
        let ca = params.self_signed(&ca_key)?;
        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        Ok(Self { dir, ca, ca_key })
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// A certificate for 127.0.0.1 and localhost named `subject`.
    fn issue(&self, subject: &str) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, subject);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        Ok(Issued { der: cert.der().clone(), pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Writes `issued` where the node reads its certificate and key.
    fn install(&self, issued: &Issued) -> Result<()> {
        std::fs::write(self.cert_file(), &issued.pem)?;
        std::fs::write(self.key_file(), &issued.key_pem)?;
        Ok(())
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert_file().display().to_string(),
            "--tls-key".into(),
            self.key_file().display().to_string(),
        ]
    }

    /// A node serving TLS with `issued`.
    async fn node(&self, issued: &Issued) -> Result<TestNode> {
        self.install(issued)?;
        let flags = self.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let node = TestNode::start_with(Backend::Sqlite, &flags).await?;
        if !node.base().starts_with("https://") {
            bail!("the node does not say it serves https: {}", node.base());
        }
        Ok(node)
    }

    /// An SDK client of `node` trusting this CA.
    fn client(&self, node: &TestNode) -> Result<Client> {
        Ok(Client::with_trust(&node.base(), &Trust::CaFile(self.ca_file()))?.timeouts(TIMEOUTS)?)
    }

    /// The certificate a new TLS connection to `addr` is shown (checked against this CA).
    async fn presented(&self, addr: SocketAddr) -> Result<CertificateDer<'static>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio::task::spawn_blocking(move || {
            let mut socket = std::net::TcpStream::connect(addr)?;
            socket.set_read_timeout(Some(crate::harness::PATIENCE))?;
            let name = ServerName::IpAddress(addr.ip().into());
            let mut tls = rustls::ClientConnection::new(Arc::new(config), name)?;
            while tls.is_handshaking() {
                tls.complete_io(&mut socket)?;
            }
            let chain = tls.peer_certificates().context("no certificate shown")?;
            Ok(chain.first().context("an empty chain")?.clone().into_owned())
        })
        .await?
    }
}

#[tokio::test]
async fn kith_chat_users_chat_over_wss() -> Result<()> {
    let pki = Pki::new()?;
    let node = pki.node(&pki.issue("node one")?).await?;
    let alice = ChatUser::new(&node)?.trusting(&pki.ca_file());
    alice.ok(&["register", "alice"]).await?;
    let bob = ChatUser::new(&node)?.trusting(&pki.ca_file());
    bob.ok(&["register", "bob"]).await?;
    // `listen` holds a wss:// connection; the message reaches it live.
    let mut listening = bob.listen().await?;
    alice.send("bob", "hello over TLS").await?;
    let line = listening.next_message().await?;
    assert_eq!(line["text"], "hello over TLS", "{line}");
    listening.kill().await?;
    assert_eq!(alice.history_texts("bob").await?, ["hello over TLS"]);
    Ok(())
}

#[tokio::test]
async fn a_client_without_the_ca_refuses_with_a_clear_message() -> Result<()> {
    let pki = Pki::new()?;
    let node = pki.node(&pki.issue("node one")?).await?;
    let stranger = ChatUser::new(&node)?;
    let done = stranger.run(&["register", "carol"]).await?;
    assert!(!done.success, "registered over an untrusted certificate: {}", done.stdout);
    assert!(done.stderr.contains("certificate is not trusted") && done.stderr.contains("--ca-file"), "{}", done.stderr);
    // The SDK says the same as a typed error, and so does the WebSocket.
    let refused = Client::new(&node.base())?.timeouts(TIMEOUTS)?.register("carol", PASSWORD).await.unwrap_err();
    assert!(matches!(&refused, ClientError::Tls(why) if why.contains("UnknownIssuer")), "{refused:?}");
    let authed = pki.client(&node)?.register("dave", PASSWORD).await?;
    let token = authed.token().to_owned();
    let untrusting = Client::new(&node.base())?.timeouts(TIMEOUTS)?.authed(kith_proto::rest::AuthResponse {
        user_id: authed.user_id().clone(),
        device_id: authed.device_id(),
        token,
    });
    let refused = untrusting.connect().await.unwrap_err();
    assert!(matches!(&refused, ClientError::Tls(_)), "{refused:?}");
    // Plain HTTP to a TLS port gets no answer an HTTP client could mistake for the API.
    assert!(crate::harness::http().get(format!("http://{}/healthz", node.addr)).send().await.is_err());
    Ok(())
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_keeps_open_connections() -> Result<()> {
    let pki = Pki::new()?;
    let first = pki.issue("first")?;
    let node = pki.node(&first).await?;
    assert_eq!(pki.presented(node.addr).await?, first.der);
    let client = pki.client(&node)?;
    let alice = client.register("alice", PASSWORD).await?;
    let bob = client.register("bob", PASSWORD).await?;
    let mut open = alice.connect().await?;

    let second = pki.issue("second")?;
    pki.install(&second)?;
    node.signal(Signal::SIGHUP)?;
    node.log_line("TLS certificate reloaded").await?;
    assert_eq!(pki.presented(node.addr).await?, second.der, "a new connection sees the new certificate");
    // The connection made with the first certificate is still up and delivers.
    bob.send_message(alice.user_id().as_str(), "after the swap", Some("c-1")).await?;
    let frame = next_frame(&mut open).await?;
    assert_eq!(message(frame).map(|m| m.message), Some("after the swap".to_owned()));

    // A broken file on reload: the node keeps the second certificate and says why.
    std::fs::write(pki.cert_file(), "not a certificate")?;
    node.signal(Signal::SIGHUP)?;
    let line = node.log_line("TLS certificate not reloaded").await?;
    assert!(line.contains(&pki.cert_file().display().to_string()), "{line}");
    assert_eq!(pki.presented(node.addr).await?, second.der);
    assert!(alice.connect().await.is_ok(), "new clients still get in");
    Ok(())
}

#[tokio::test]
async fn a_bad_certificate_file_stops_the_start_naming_it() -> Result<()> {
    let pki = Pki::new()?;
    std::fs::write(pki.cert_file(), "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")?;
    std::fs::write(pki.key_file(), pki.issue("unused")?.key_pem)?;
    let flags = pki.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut node = TestNode::prepare("test", Backend::Sqlite, &flags)?;
    let e = node.launch().await.unwrap_err().to_string();
    assert!(e.contains(&pki.cert_file().display().to_string()) && e.contains("not a PEM certificate"), "{e}");
    // A key that belongs to another certificate is refused too, naming both files.
    pki.install(&Issued { key_pem: pki.issue("other")?.key_pem, ..pki.issue("mine")? })?;
    let e = node.launch().await.unwrap_err().to_string();
    assert!(e.contains("does not fit the certificate"), "{e}");
    assert!(e.contains(&pki.key_file().display().to_string()), "{e}");
    Ok(())
}

#[tokio::test]
async fn a_silent_socket_is_closed_after_the_handshake_timeout_while_others_get_in() -> Result<()> {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new()?;
    pki.install(&pki.issue("node one")?)?;
    let mut flags = pki.flags();
    flags.extend(["--tls-handshake-timeout".into(), "300ms".into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let node = TestNode::start_with(Backend::Sqlite, &flags).await?;
    // Sockets that connect and never start a handshake...
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(node.addr).await?);
    }
    // ...do not keep a real client out...
    pki.client(&node)?.register("alice", PASSWORD).await?;
    // ...and are closed by the node once their time is up.
    for socket in &mut silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(crate::harness::PATIENCE, socket.read(&mut byte)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "a silent socket was not closed: {read:?}");
    }
    Ok(())
}

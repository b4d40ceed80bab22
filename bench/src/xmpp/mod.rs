//! The XMPP driver, so the same workload runs against ejabberd and Prosody: a client-to-server
//! stream on a loopback TCP connection (no TLS, as kith's `ws://`), SASL PLAIN, resource
//! binding and initial presence; plain `<message type='chat'>` stanzas between the two
//! accounts of a pair, each asking for a delivery receipt (XEP-0184), which the receiver sends,
//! so the server's path matches kith's (store, push, ack, receipt).
//!
//! Accounts are created by in-band registration (XEP-0077) on short-lived streams, far faster
//! than a server's command line per user; a name that exists already counts as created.
//!
//! Stanzas are read by a small hand-written reader ([`stanza`]) rather than an XML crate: a
//! load test reads a handful of stanza shapes, and the reader is a hundred lines.

pub(crate) mod stanza;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Semaphore;

use self::stanza::{Item, StanzaReader, attr, child_text, name};
use crate::error::BenchError;
use crate::measure::{self, Recorder, Seen};
use crate::roles::{ReceiverJob, Role, SenderJob, Signals, lost_connection, raised, tcp_connect};

/// The resource every load connection binds.
const RESOURCE: &str = "load";

/// An authenticated XMPP client stream.
#[derive(Debug)]
pub(crate) struct Stream {
    reader: StanzaReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
}

fn stream_header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' \
         xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    )
}

impl Stream {
    async fn open(source: IpAddr, target: SocketAddr, domain: &str) -> Result<Self, BenchError> {
        let tcp = tcp_connect(source, target).await?;
        let (read, write) = tcp.into_split();
        let mut stream = Self { reader: StanzaReader::new(read), writer: BufWriter::with_capacity(8 * 1024, write) };
        stream.start(domain).await?;
        Ok(stream)
    }

    /// Sends a stream header and reads the server's header and features.
    async fn start(&mut self, domain: &str) -> Result<String, BenchError> {
        self.write(&stream_header(domain)).await?;
        match self.reader.next().await? {
            Item::StreamStart(_) => {}
            other => {
                return Err(BenchError::Protocol(format!("expected a stream header, got {other:?}")));
            }
        }
        let features = self.stanza().await?;
        if name(&features) != "stream:features" {
            return Err(BenchError::Protocol(format!("expected features, got {features}")));
        }
        Ok(features)
    }

    async fn write(&mut self, text: &str) -> Result<(), BenchError> {
        self.writer.write_all(text.as_bytes()).await.map_err(|e| BenchError::Protocol(format!("writing: {e}")))?;
        self.writer.flush().await.map_err(|e| BenchError::Protocol(format!("writing: {e}")))
    }

    async fn stanza(&mut self) -> Result<String, BenchError> {
        match self.reader.next().await? {
            Item::Stanza(stanza) => Ok(stanza),
            Item::StreamEnd => Err(BenchError::Protocol("the server closed the stream".into())),
            Item::StreamStart(header) => Err(BenchError::Protocol(format!("unexpected stream header {header}"))),
        }
    }

    /// Reads stanzas until an `<iq>` with this id.
    async fn iq_answer(&mut self, id: &str) -> Result<String, BenchError> {
        loop {
            let stanza = self.stanza().await?;
            if name(&stanza) == "iq" && attr(&stanza, "id") == Some(id) {
                return Ok(stanza);
            }
        }
    }

    /// In-band registration (XEP-0077); `Ok` also when the account exists.
    async fn register(&mut self, user: &str, password: &str) -> Result<(), BenchError> {
        self.write(&format!(
            "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>\
             <username>{user}</username><password>{password}</password></query></iq>"
        ))
        .await?;
        let answer = self.iq_answer("reg").await?;
        match attr(&answer, "type") {
            Some("result") => Ok(()),
            _ if answer.contains("<conflict") => Ok(()),
            _ => Err(BenchError::Protocol(format!("registering {user}: {answer}"))),
        }
    }

    /// SASL PLAIN, stream restart, resource binding, initial presence.
    async fn login(&mut self, domain: &str, user: &str, password: &str) -> Result<(), BenchError> {
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.write(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{credentials}</auth>"))
            .await?;
        let answer = self.stanza().await?;
        if name(&answer) != "success" {
            return Err(BenchError::Protocol(format!("SASL PLAIN for {user}: {answer}")));
        }
        self.reader.restart();
        self.start(domain).await?;
        self.write(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{RESOURCE}</resource></bind></iq>"
        ))
        .await?;
        let bound = self.iq_answer("bind").await?;
        if attr(&bound, "type") != Some("result") {
            return Err(BenchError::Protocol(format!("binding a resource for {user}: {bound}")));
        }
        self.write("<presence/>").await
    }
}

/// Opens an authenticated stream for `user@domain` from `source`.
pub(crate) async fn connect(
    source: IpAddr,
    target: SocketAddr,
    domain: &str,
    user: &str,
    password: &str,
) -> Result<Stream, BenchError> {
    let mut stream = Stream::open(source, target, domain).await?;
    stream
        .login(domain, user, password)
        .await
        .map_err(|e| BenchError::Connect { what: format!("{user}@{domain} from {source}"), reason: e.to_string() })?;
    Ok(stream)
}

/// Creates `names` on the server by in-band registration, `concurrency` at a time.
///
/// # Errors
/// The first registration that failed.
pub(crate) async fn register_all(
    target: SocketAddr,
    domain: &str,
    names: &[String],
    password: &str,
    concurrency: usize,
) -> Result<(), BenchError> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(names.len());
    for name in names {
        let gate = gate.clone();
        let (name, domain, password) = (name.clone(), domain.to_owned(), password.to_owned());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let source = IpAddr::from([127, 0, 0, 1]);
            let mut stream = Stream::open(source, target, &domain).await?;
            stream.register(&name, &password).await?;
            let _ = stream.write("</stream:stream>").await;
            Ok::<_, BenchError>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| BenchError::Protocol(format!("registration task: {e}")))??;
    }
    Ok(())
}

/// Runs one connection's role until the run stops it.
pub(crate) async fn drive(stream: Stream, role: Role, recorder: Arc<Recorder>, signals: Signals) {
    match role {
        Role::Idle => idle(stream, &recorder, signals).await,
        Role::Sender(job) => sender(stream, job, &recorder, signals).await,
        Role::Receiver(job) => receiver(stream, job, &recorder, signals).await,
    }
}

async fn close(mut stream: Stream) {
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), stream.write("</stream:stream>")).await;
}

async fn idle(mut stream: Stream, recorder: &Recorder, mut signals: Signals) {
    loop {
        tokio::select! {
            _ = raised(&mut signals.stop) => break,
            item = stream.reader.next() => match item {
                Ok(Item::Stanza(_) | Item::StreamStart(_)) => {}
                Ok(Item::StreamEnd) => return lost_connection(recorder, || "the server closed the stream".into()),
                Err(e) => return lost_connection(recorder, || e.to_string()),
            },
        }
    }
    close(stream).await;
}

async fn sender(mut stream: Stream, job: SenderJob, recorder: &Recorder, mut signals: Signals) {
    let mut pacer: Option<crate::pace::Pacer> = None;
    let mut sending = true;
    let mut seq = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = raised(&mut signals.stop) => break,
            _ = raised(&mut signals.stop_sending), if sending => sending = false,
            item = stream.reader.next() => match item {
                Ok(Item::Stanza(stanza)) => on_sender_stanza(&stanza, recorder),
                Ok(Item::StreamStart(_)) => {}
                Ok(Item::StreamEnd) => return lost_connection(recorder, || "the server closed the stream".into()),
                Err(e) => return lost_connection(recorder, || e.to_string()),
            },
            _ = raised(&mut signals.go), if sending && pacer.is_none() => {
                if job.pair.broken.load(Ordering::Relaxed) {
                    sending = false;
                } else {
                    pacer = Some(job.pacer());
                }
            }
            n = async { match pacer.as_mut() { Some(p) => p.ready(&job.pair).await, None => std::future::pending().await } }, if sending => {
                for _ in 0..n {
                    let sent_ns = recorder.clock.now_ns();
                    let id = measure::client_message_id(seq, sent_ns);
                    let body = measure::message_body(job.index, seq, sent_ns, job.size);
                    seq += 1;
                    let stanza = format!(
                        "<message to='{}' id='{id}' type='chat'><body>{body}</body>\
                         <request xmlns='urn:xmpp:receipts'/></message>",
                        job.to
                    );
                    if let Err(e) = stream.writer.write_all(stanza.as_bytes()).await {
                        return lost_connection(recorder, || format!("sending: {e}"));
                    }
                    job.count_sent(recorder);
                }
                if let Err(e) = stream.writer.flush().await {
                    return lost_connection(recorder, || format!("sending: {e}"));
                }
            },
        }
    }
    close(stream).await;
}

fn on_sender_stanza(stanza: &str, recorder: &Recorder) {
    if attr(stanza, "type") == Some("error") {
        recorder.record_error(|| format!("server answered {stanza}"));
    } else if name(stanza) == "message" && stanza.contains("<received") {
        recorder.receipts.fetch_add(1, Ordering::Relaxed);
    }
}

async fn receiver(mut stream: Stream, job: ReceiverJob, recorder: &Recorder, mut signals: Signals) {
    let mut seen = Seen::default();
    loop {
        let first = tokio::select! {
            _ = raised(&mut signals.stop) => break,
            item = stream.reader.next() => item,
        };
        // Handle this stanza and every one already buffered, then flush their receipts at once.
        let mut item = Some(first);
        let mut answered = false;
        while let Some(next) = item.take() {
            match next {
                Ok(Item::Stanza(stanza)) => {
                    if let Some(receipt) = on_receiver_stanza(&stanza, &job, &mut seen, recorder) {
                        if let Err(e) = stream.writer.write_all(receipt.as_bytes()).await {
                            return lost_connection(recorder, || format!("sending a receipt: {e}"));
                        }
                        answered = true;
                    }
                }
                Ok(Item::StreamStart(_)) => {}
                Ok(Item::StreamEnd) => {
                    return lost_connection(recorder, || "the server closed the stream".into());
                }
                Err(e) => return lost_connection(recorder, || e.to_string()),
            }
            item = stream.reader.buffered().map(Ok);
        }
        if answered && let Err(e) = stream.writer.flush().await {
            return lost_connection(recorder, || format!("sending a receipt: {e}"));
        }
    }
    close(stream).await;
}

/// Records a received stanza; returns the XEP-0184 receipt to send for a message.
fn on_receiver_stanza(stanza: &str, job: &ReceiverJob, seen: &mut Seen, recorder: &Recorder) -> Option<String> {
    if name(stanza) != "message" {
        return None;
    }
    if attr(stanza, "type") == Some("error") {
        recorder.record_error(|| format!("server answered {stanza}"));
        return None;
    }
    let body = child_text(stanza, "body")?;
    match measure::parse_body(body) {
        Some(header) if header.pair == job.index => {
            let new = seen.insert(header.seq);
            recorder.record_received(&job.pair, header.sent_ns, new);
        }
        _ => {
            recorder.unexpected.fetch_add(1, Ordering::Relaxed);
        }
    }
    let from = attr(stanza, "from")?;
    let id = attr(stanza, "id")?;
    stanza
        .contains("urn:xmpp:receipts")
        .then(|| format!("<message to='{from}' id='r{id}'><received xmlns='urn:xmpp:receipts' id='{id}'/></message>"))
}

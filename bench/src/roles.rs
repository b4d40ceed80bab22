//! What each connection of a run does, whatever the protocol: hold still (idle), send its
//! pair's messages, or receive and acknowledge them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::error::BenchError;
use crate::measure::{Pair, Recorder};
use crate::pace::{Pacer, Rate};

/// The run's phases, as seen by every connection.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    /// Becomes true when senders start.
    pub(crate) go: watch::Receiver<bool>,
    /// Becomes true when senders stop (receivers keep reading to drain what is in flight).
    pub(crate) stop_sending: watch::Receiver<bool>,
    /// Becomes true when every connection closes.
    pub(crate) stop: watch::Receiver<bool>,
}

/// What a sender needs.
#[derive(Debug, Clone)]
pub(crate) struct SenderJob {
    /// Its pair's number.
    pub(crate) index: usize,
    /// Its pair's shared progress.
    pub(crate) pair: Arc<Pair>,
    /// The receiver's address (kith user id or bare JID).
    pub(crate) to: String,
    /// The target rate of the whole run.
    pub(crate) rate: Rate,
    /// How many pairs share it.
    pub(crate) pairs: usize,
    /// Messages in flight per pair at `max` rate.
    pub(crate) window: u64,
    /// Message size in bytes.
    pub(crate) size: usize,
}

impl SenderJob {
    pub(crate) fn pacer(&self) -> Pacer {
        Pacer::new(self.rate, self.pairs, self.index, self.window)
    }

    /// Counts a message as handed to the socket.
    pub(crate) fn count_sent(&self, recorder: &Recorder) {
        self.pair.sent.fetch_add(1, Ordering::AcqRel);
        recorder.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a receiver needs.
#[derive(Debug, Clone)]
pub(crate) struct ReceiverJob {
    /// Its pair's number.
    pub(crate) index: usize,
    /// Its pair's shared progress.
    pub(crate) pair: Arc<Pair>,
}

/// A connection's part in the run.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// Holds the connection open and answers pings.
    Idle,
    /// Sends its pair's messages.
    Sender(SenderJob),
    /// Reads and acknowledges its pair's messages.
    Receiver(ReceiverJob),
}

/// Opens a TCP connection to `target` from `source` (any free port), without Nagle's delay.
pub(crate) async fn tcp_connect(source: IpAddr, target: SocketAddr) -> Result<TcpStream, BenchError> {
    let what = || format!("{source} → {target}");
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| BenchError::Connect { what: what(), reason: e.to_string() })?;
    if !source.is_unspecified() {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| BenchError::Connect { what: what(), reason: format!("binding: {e}") })?;
    }
    let stream =
        socket.connect(target).await.map_err(|e| BenchError::Connect { what: what(), reason: e.to_string() })?;
    stream.set_nodelay(true).map_err(|e| BenchError::Connect { what: what(), reason: e.to_string() })?;
    Ok(stream)
}

/// Counts a connection the server ended (or that broke) before the run did.
pub(crate) fn lost_connection(recorder: &Recorder, why: impl FnOnce() -> String) {
    recorder.disconnected.fetch_add(1, Ordering::Relaxed);
    recorder.sample_error(why);
}

/// Resolves once `flag` is true (or its sender is gone, which means the run is over).
pub(crate) async fn raised(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

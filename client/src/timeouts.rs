//! How long the client waits for the node: every wait has a deadline, so a node that stops
//! answering (a crash behind a proxy, a network that drops packets) is an error the caller sees,
//! never a call that hangs.

use std::time::Duration;

/// Deadlines for talking to a node. The defaults suit a phone on a slow network; tests and
/// tools may shorten them with [`Client::timeouts`](crate::Client::timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a TCP connection, and the WebSocket handshake.
    pub connect: Duration,
    /// A whole REST request, from sending it to the end of the answer (registering hashes a
    /// password on purpose slowly, so this is not short).
    pub request: Duration,
    /// Silence on a WebSocket (no frame, ping or pong from the node) after which the client
    /// pings the node; after as long again without a word the connection counts as dead
    /// ([`ClientError::TimedOut`](crate::ClientError::TimedOut)). The node pings every 10 s by
    /// default, so a live connection is never silent that long.
    pub idle: Duration,
    /// Waiting for the node to answer a close.
    pub close: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            close: Duration::from_secs(5),
        }
    }
}

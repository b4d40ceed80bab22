//! Why federation failed.

use kith_proto::ServerName;

/// A federation failure.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The node key file could not be read or written.
    #[error("node key {path}: {reason}")]
    NodeKey {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A `--peer` binding is malformed.
    #[error("peer binding {binding:?}: {reason}")]
    PeerBinding {
        /// The binding as given.
        binding: String,
        /// Why.
        reason: String,
    },
    /// No operator pinned this server name to a peer.
    #[error("server {0} is not a configured peer of this node")]
    UnknownServer(ServerName),
    /// The listen address could not be used.
    #[error("listening on {address}: {reason}")]
    Listen {
        /// The multiaddress.
        address: String,
        /// Why.
        reason: String,
    },
    /// The transport could not be built.
    #[error("building the libp2p transport: {0}")]
    Transport(String),
    /// A request got no answer: the peer is unreachable, timed out, or the connection closed.
    /// The request may or may not have been handled; resend the same envelopes.
    #[error("request to {server} failed: {failure}")]
    Request {
        /// The peer's server name.
        server: ServerName,
        /// Why.
        failure: RequestFailure,
    },
    /// The peer refused the request.
    #[error("{server} refused the request: {refusal}")]
    Refused {
        /// The peer's server name.
        server: ServerName,
        /// Why.
        refusal: crate::protocol::Refusal,
    },
    /// The peer answered with something the protocol does not allow here.
    #[error("unexpected answer from {0}")]
    UnexpectedAnswer(ServerName),
    /// Signing failed (a bug).
    #[error("signing: {0}")]
    Signing(String),
    /// The network task has stopped.
    #[error("the federation network has stopped")]
    Stopped,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    /// No connection could be made (refused, unroutable, or the dial timed out).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer within the request timeout, also after a resend on a fresh connection. It may
    /// still have been handled.
    #[error("no answer in time")]
    TimedOut,
    /// The connection closed (or was closed as dead) before the answer came, also after a
    /// resend on a fresh connection. It may still have been handled.
    #[error("connection lost before the answer")]
    ConnectionLost,
    /// The peer does not speak the protocol.
    #[error("the peer does not speak the federation protocol")]
    Unsupported,
    /// The request's stream failed (too large, reset by the peer).
    #[error("stream failed: {0}")]
    Stream(String),
    /// The network task stopped while the request was open.
    #[error("the network stopped")]
    Stopped,
}

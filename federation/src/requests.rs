//! The node's open requests and what to do when one fails: a request whose connection died
//! (closed, or closed by the network as dead after a timeout) is sent again on another
//! connection, up to [`MAX_SENDS`] times in all; every other failure goes back to the caller.
//!
//! Resending is safe: a `Deliver` carries envelopes the peer deduplicates by `(origin, id)`,
//! and a `Query` (a key claim) that was handled but whose answer was lost is lost either way.

use std::time::Instant;

use kith_proto::ServerName;
use libp2p::PeerId;
use libp2p::request_response::OutboundFailure;
use tokio::sync::oneshot;

use crate::error::{FederationError, RequestFailure};
use crate::protocol::{Request, Response};

/// Most times one request goes out: the first send and two resends on fresh connections. Two
/// resends, because a peer may have two connections (one dialled each way) that died together.
pub(crate) const MAX_SENDS: u32 = 3;

/// A request of the node's, open until answered or given up.
#[derive(Debug)]
pub(crate) struct Outstanding {
    /// Its destination.
    pub(crate) server: ServerName,
    /// The destination's peer id.
    pub(crate) peer: PeerId,
    /// The request, kept to resend.
    pub(crate) request: Request,
    /// Where the answer goes.
    reply: oneshot::Sender<Result<Response, FederationError>>,
    /// Times sent so far.
    pub(crate) sends: u32,
    /// Since when it waits for a connection of its peer to finish closing, if it does.
    pub(crate) parked_at: Option<Instant>,
}

/// What to do after a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send it again once the connection it was on is closed: it timed out there.
    ResendElsewhere,
    /// Send it again now: its connection is already gone.
    Resend,
    /// Give up and tell the caller.
    Fail(RequestFailure),
}

impl Outstanding {
    /// A request not yet sent.
    pub(crate) fn new(
        server: ServerName,
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Result<Response, FederationError>>,
    ) -> Self {
        Self { server, peer, request, reply, sends: 0, parked_at: None }
    }

    /// What to do after it failed with `error`; `dial_error` is why the last dial of its peer
    /// failed, if one did.
    pub(crate) fn next(&self, error: &OutboundFailure, dial_error: Option<&str>) -> Next {
        let again = self.sends < MAX_SENDS;
        match error {
            OutboundFailure::Timeout if again => Next::ResendElsewhere,
            OutboundFailure::Timeout => Next::Fail(RequestFailure::TimedOut),
            OutboundFailure::ConnectionClosed if again => Next::Resend,
            OutboundFailure::ConnectionClosed => Next::Fail(RequestFailure::ConnectionLost),
            OutboundFailure::DialFailure => {
                Next::Fail(RequestFailure::Unreachable(dial_error.unwrap_or("dial failed").to_owned()))
            }
            OutboundFailure::UnsupportedProtocols => Next::Fail(RequestFailure::Unsupported),
            OutboundFailure::Io(e) => Next::Fail(RequestFailure::Stream(e.to_string())),
        }
    }

    /// Hands the answer to the caller.
    pub(crate) fn answer(self, response: Response) {
        let _ = self.reply.send(Ok(response));
    }

    /// Tells the caller it failed.
    pub(crate) fn fail(self, failure: RequestFailure) {
        let server = self.server;
        let _ = self.reply.send(Err(FederationError::Request { server, failure }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    fn outstanding(sends: u32) -> Outstanding {
        let (reply, _) = oneshot::channel();
        let server = ServerName::parse("beta").unwrap();
        let mut out = Outstanding::new(server, NodeKey::ephemeral().peer_id(), Request::Deliver(Vec::new()), reply);
        out.sends = sends;
        out
    }

    #[test]
    fn a_lost_connection_or_a_timeout_resends_until_the_cap() {
        assert_eq!(outstanding(1).next(&OutboundFailure::ConnectionClosed, None), Next::Resend);
        assert_eq!(outstanding(1).next(&OutboundFailure::Timeout, None), Next::ResendElsewhere);
        assert_eq!(
            outstanding(MAX_SENDS).next(&OutboundFailure::ConnectionClosed, None),
            Next::Fail(RequestFailure::ConnectionLost)
        );
        assert_eq!(outstanding(MAX_SENDS).next(&OutboundFailure::Timeout, None), Next::Fail(RequestFailure::TimedOut));
    }

    #[test]
    fn other_failures_go_to_the_caller_with_their_reason() {
        assert_eq!(
            outstanding(1).next(&OutboundFailure::DialFailure, Some("connection refused")),
            Next::Fail(RequestFailure::Unreachable("connection refused".into()))
        );
        assert_eq!(
            outstanding(1).next(&OutboundFailure::UnsupportedProtocols, None),
            Next::Fail(RequestFailure::Unsupported)
        );
        let io = OutboundFailure::Io(std::io::Error::other("too large"));
        assert_eq!(outstanding(1).next(&io, None), Next::Fail(RequestFailure::Stream("too large".into())));
    }
}

//! The client's address, for per-address rate limits and logs: the TCP peer, or, when the
//! peer is a reverse proxy the operator trusts (`--trusted-proxy`), the address the proxy says
//! it serves, from `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is a list each proxy appends its own peer to; only the part appended by
//! trusted proxies can be believed. So it is read from the right, skipping trusted proxies,
//! and the first address that is not one is the client (the "rightmost untrusted hop"). A
//! client that sends the header itself only adds entries to the left of that: it cannot pick
//! its address. From a peer that is not trusted the header is ignored.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The header reverse proxies put the client's address in.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks whose TCP peers are reverse proxies whose `X-Forwarded-For` is believed. Put
/// in the router's extensions (`Router::layer(Extension(Arc<TrustedProxies>))`); without it,
/// no proxy is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A `--trusted-proxy` value that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR (10.0.0.0/8, fd00::/8) or an IP address")]
pub struct NotACidr(pub String);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `::1/128`) or bare addresses (one host each).
    ///
    /// # Errors
    /// [`NotACidr`] naming the first value that is neither.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, NotACidr> {
        values
            .iter()
            .map(|value| {
                let value = value.as_ref().trim();
                IpNet::from_str(value)
                    .or_else(|_| IpAddr::from_str(value).map(IpNet::from))
                    .map_err(|_| NotACidr(value.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client behind `peer`: `peer` itself unless it is trusted and the request carries
    /// `X-Forwarded-For`, then the rightmost address there that is not a trusted proxy (or
    /// the leftmost, if all are). An unreadable entry ends the walk at the hop before it.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(addr) = parse_hop(hop) else { return client };
            client = canonical(addr);
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

/// An entry of `X-Forwarded-For`: an address, possibly with a port (`[::1]:80`, `1.2.3.4:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    IpAddr::from_str(hop).ok().or_else(|| SocketAddr::from_str(hop).ok().map(|s| s.ip()))
}

/// IPv4 addresses as IPv4 even when they arrive mapped into IPv6 (a dual-stack listener).
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client's IP address, for per-address rate limits: the TCP peer, or the address a trusted
/// proxy forwarded. Served without connection info (as in handler tests) every client counts
/// as `0.0.0.0`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
        let client = match parts.extensions.get::<Arc<TrustedProxies>>() {
            Some(trusted) => trusted.client(peer, &parts.headers),
            None => peer,
        };
        Ok(Self(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let proxy = ip("127.0.0.1");
        // The client lied about itself (left), the edge proxy appended its real peer.
        let h = headers(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(trusted.client(proxy, &h), ip("203.0.113.7"));
        // Split over several headers, in order.
        let h = headers(&["6.6.6.6", "203.0.113.7", "10.1.2.3"]);
        assert_eq!(trusted.client(proxy, &h), ip("203.0.113.7"));
        // All trusted: the leftmost.
        assert_eq!(trusted.client(proxy, &headers(&["10.0.0.9, 10.0.0.8"])), ip("10.0.0.9"));
        // No header: the peer; garbage on the right: the hop before it (the peer).
        assert_eq!(trusted.client(proxy, &HeaderMap::new()), proxy);
        assert_eq!(trusted.client(proxy, &headers(&["203.0.113.7, nonsense"])), proxy);
        // Ports and IPv6.
        assert_eq!(trusted.client(proxy, &headers(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(trusted.client(proxy, &headers(&["203.0.113.7:5000"])), ip("203.0.113.7"));
    }

    #[test]
    fn an_untrusted_peer_cannot_pick_its_address() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert_eq!(trusted.client(ip("198.51.100.1"), &headers(&["203.0.113.7"])), ip("198.51.100.1"));
        assert_eq!(TrustedProxies::default().client(ip("127.0.0.1"), &headers(&["1.2.3.4"])), ip("127.0.0.1"));
        // An IPv4 peer seen through a dual-stack socket is still trusted.
        assert_eq!(trusted.client(ip("::ffff:10.0.0.1"), &headers(&["203.0.113.7"])), ip("203.0.113.7"));
    }

    #[test]
    fn bad_cidrs_are_named() {
        assert_eq!(TrustedProxies::parse(&["10.0.0.0/33"]), Err(NotACidr("10.0.0.0/33".into())));
        assert!(TrustedProxies::parse(&["::1", "fd00::/8"]).is_ok());
    }
}

//! Identifiers: who a user is, which node is their home, and which message is which.
//!
//! Every id here is validated when it is built, so holding one is proof that it is
//! well formed; parsing never panics on untrusted input.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::limits::{CLIENT_MESSAGE_ID_MAX_BYTES, HOST_MAX_BYTES, SERVER_NAME_MAX_BYTES, USERNAME_MAX_BYTES};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A username must be 1 to 32 characters of `a-z`, `0-9`, `.`, `_` and `-`.
    #[error("username must be 1 to {max} characters of a-z, 0-9, '.', '_' or '-' (got {got:?})")]
    Username {
        /// The rejected input, cut to a readable length.
        got: String,
        /// The maximum length.
        max: usize,
    },
    /// A username made only of dots (`.`, `..`, …) reads as a path segment in URLs and files.
    #[error("username must not be only dots (got {0:?})")]
    OnlyDots(String),
    /// A server name is a lowercase DNS-like name, optionally with a port.
    #[error("server name must be 1 to {max} characters of a-z, 0-9, '.', '-', with an optional :port (got {got:?})")]
    ServerName {
        /// The rejected input, cut to a readable length.
        got: String,
        /// The maximum length.
        max: usize,
    },
    /// A user id is `name@server`.
    #[error("user id must look like name@server (got {0:?})")]
    UserId(String),
    /// A message id is a UUID as minted by a kith node.
    #[error("message id must be a UUID (got {0:?})")]
    MessageId(String),
    /// A client message id is 1 to 128 bytes of printable ASCII.
    #[error("clientMessageId must be 1 to {max} printable ASCII characters (got {got} bytes)")]
    ClientMessageId {
        /// Length of the rejected input in bytes.
        got: usize,
        /// The maximum length.
        max: usize,
    },
}

/// Cuts untrusted input to a length that is safe to echo in an error message.
fn excerpt(s: &str) -> String {
    s.chars().take(48).collect()
}

/// The local part of a user id: `[a-z0-9._-]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    /// Validates `s` as a username.
    ///
    /// # Errors
    /// [`IdError::Username`] when `s` is empty, too long or has other characters;
    /// [`IdError::OnlyDots`] for `.`, `..` and any other name of dots alone, which would read as
    /// a path segment (`/api/v1/keys/..`) rather than a name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= USERNAME_MAX_BYTES
            && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
        if !ok {
            return Err(IdError::Username { got: excerpt(s), max: USERNAME_MAX_BYTES });
        }
        if s.bytes().all(|b| b == b'.') {
            return Err(IdError::OnlyDots(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name a node is known by; the part after `@` in every user id it is home to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerName(String);

impl ServerName {
    /// Validates `s` as a server name: lowercase letters, digits, dots and dashes (at most 253,
    /// neither first nor last a dot or dash), with an optional `:port` (1-65535, written
    /// without a sign or leading zeros).
    ///
    /// # Errors
    /// [`IdError::ServerName`] for anything else.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        let host_ok = !host.is_empty()
            && host.len() <= HOST_MAX_BYTES
            && host.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
            && !host.starts_with(['.', '-'])
            && !host.ends_with(['.', '-']);
        let port_ok = port.is_none_or(|p| {
            p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0') && p.parse::<u16>().is_ok_and(|n| n > 0)
        });
        if host_ok && port_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::ServerName { got: excerpt(s), max: SERVER_NAME_MAX_BYTES })
        }
    }

    /// The server name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's global id, `name@server`: the server part names the user's home node.
///
/// Stored as its text and the position of the `@`, so it is as cheap to pass around and
/// compare as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    /// `name@server`.
    full: String,
    /// Index of the `@` in `full`.
    at: usize,
}

impl UserId {
    /// Joins a username and its home server into a user id.
    pub fn new(name: Username, server: ServerName) -> Self {
        let at = name.0.len();
        Self { full: format!("{name}@{server}"), at }
    }

    /// Parses `name@server`.
    ///
    /// # Errors
    /// [`IdError::UserId`] without an `@`; the username or server name error otherwise.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (name, server) = s.split_once('@').ok_or_else(|| IdError::UserId(excerpt(s)))?;
        Ok(Self::new(Username::parse(name)?, ServerName::parse(server)?))
    }

    /// Parses `name@server`, or a bare `name` as a user of `home`.
    ///
    /// # Errors
    /// As [`UserId::parse`].
    pub fn parse_or_local(s: &str, home: &ServerName) -> Result<Self, IdError> {
        if s.contains('@') { Self::parse(s) } else { Ok(Self::new(Username::parse(s)?, home.clone())) }
    }

    /// The local part.
    pub fn name(&self) -> &str {
        &self.full[..self.at]
    }

    /// The home server, as text.
    pub fn server(&self) -> &str {
        &self.full[self.at + 1..]
    }

    /// The home server.
    pub fn server_name(&self) -> ServerName {
        ServerName(self.server().to_owned())
    }

    /// Whether `server` is this user's home.
    pub fn is_on(&self, server: &ServerName) -> bool {
        self.server() == server.as_str()
    }

    /// `name@server`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for UserId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A message's id: minted once by the sender's home node, time-ordered (UUIDv7) and kept
/// unchanged everywhere the message travels, so clients deduplicate by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl MessageId {
    /// Mints a new id. Ids minted by one process sort in the order they were minted.
    pub fn now() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the hyphenated form (the only one a node writes; the braced, URN and bare-hex
    /// forms are refused, so an id has one spelling).
    ///
    /// # Errors
    /// [`IdError::MessageId`] when `s` is not a hyphenated UUID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        const HYPHENATED_LEN: usize = 36;
        if s.len() != HYPHENATED_LEN {
            return Err(IdError::MessageId(excerpt(s)));
        }
        Uuid::try_parse(s).map(Self).map_err(|_| IdError::MessageId(excerpt(s)))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for MessageId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One of a user's devices (phone, laptop …), chosen by the client when it logs in; each device
/// has its own keys, its own sessions and its own queue of messages to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(#[serde(deserialize_with = "crate::number::u32_of")] pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The id a client gives a message before sending it, so that a retry after a lost answer is
/// recognised as the same message: `(sender, clientMessageId)` maps to one `messageId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    /// Validates `s`: 1 to 128 bytes of printable ASCII.
    ///
    /// # Errors
    /// [`IdError::ClientMessageId`] otherwise.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty() && s.len() <= CLIENT_MESSAGE_ID_MAX_BYTES && s.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::ClientMessageId { got: s.len(), max: CLIENT_MESSAGE_ID_MAX_BYTES })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_documented_alphabet() {
        for ok in ["a", "bob", "a.b_c-d", "0123456789", &"x".repeat(32)] {
            assert!(Username::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Bob", "a b", "a@b", "é", &"x".repeat(33)] {
            assert!(matches!(Username::parse(bad), Err(IdError::Username { max: 32, .. })), "{bad}");
        }
        for dots in [".", "..", "...", &".".repeat(32)] {
            assert!(matches!(Username::parse(dots), Err(IdError::OnlyDots(_))), "{dots}");
        }
        assert!(Username::parse(".a.").is_ok(), "dots with something else are a name");
    }

    #[test]
    fn user_ids_parse_and_bare_names_are_local() {
        let home = ServerName::parse("alpha.example").unwrap();
        let bob = UserId::parse_or_local("bob", &home).unwrap();
        assert_eq!(bob.as_str(), "bob@alpha.example");
        let remote = UserId::parse_or_local("carol@beta:8443", &home).unwrap();
        assert_eq!(remote.server(), "beta:8443");
        assert_eq!(remote.name(), "carol");
        assert!(bob.is_on(&home));
        // Each refused for the part that is wrong.
        for (bad, part) in [
            ("bob", "user id"),
            ("@", "username"),
            ("@alpha", "username"),
            ("bob@", "server name"),
            ("bob@Alpha", "server name"),
            ("bob@alpha:0", "server name"),
            ("bob@alpha:x", "server name"),
            ("bob@-a", "server name"),
            ("bob@alpha:+80", "server name"),
            ("bob@alpha:080", "server name"),
            ("bob@alpha:65536", "server name"),
        ] {
            let why = match UserId::parse(bad) {
                Err(IdError::UserId(_)) => "user id",
                Err(IdError::Username { .. }) => "username",
                Err(IdError::ServerName { .. }) => "server name",
                other => panic!("{bad}: {other:?}"),
            };
            assert_eq!(why, part, "{bad}");
        }
    }

    #[test]
    fn message_ids_are_time_ordered_and_round_trip() {
        let a = MessageId::now();
        let b = MessageId::now();
        assert!(a < b);
        assert!(a.to_string() < b.to_string(), "text order matches creation order");
        assert_eq!(MessageId::parse(&a.to_string()).unwrap(), a);
        assert_eq!(MessageId::parse("not-a-uuid"), Err(IdError::MessageId("not-a-uuid".into())));
        let simple = a.as_uuid().simple().to_string();
        assert!(MessageId::parse(&simple).is_err(), "one spelling: hyphenated only");
        assert!(MessageId::parse(&format!("{{{a}}}")).is_err());
    }

    #[test]
    fn client_message_ids_are_bounded() {
        assert_eq!(ClientMessageId::parse("c-1").map(|id| id.to_string()), Ok("c-1".to_owned()));
        for (bad, got) in [("", 0), ("has space", 9), (&"x".repeat(129), 129)] {
            assert_eq!(ClientMessageId::parse(bad), Err(IdError::ClientMessageId { got, max: 128 }), "{bad:?}");
        }
    }
}

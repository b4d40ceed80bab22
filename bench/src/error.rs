//! The library's one error type.

use std::path::PathBuf;

/// Why a load run (or a step of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option has a value the run cannot use.
    #[error("invalid option: {0}")]
    Config(String),
    /// A file (users file, token secret, /proc) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `kith user import` could not be run or failed.
    #[error("provisioning users: {0}")]
    Provision(String),
    /// A token could not be minted or obtained.
    #[error("token for {user}: {reason}")]
    Token {
        /// The user.
        user: String,
        /// Why.
        reason: String,
    },
    /// A connection could not be opened or authenticated.
    #[error("connecting {what}: {reason}")]
    Connect {
        /// Which connection (user and address).
        what: String,
        /// Why.
        reason: String,
    },
    /// A server answered outside the protocol, or refused what the workload needs.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Not a single connection could be opened; there is nothing to measure.
    #[error("no connection could be established ({failed} failed; first error: {first})")]
    NoConnections {
        /// How many attempts failed.
        failed: usize,
        /// The first failure.
        first: String,
    },
}

impl BenchError {
    /// An I/O error about `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

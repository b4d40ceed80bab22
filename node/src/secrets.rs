//! Secrets the node generates into its data directory on first start and reads afterwards.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Length of the token-signing secret, in bytes.
pub const TOKEN_SECRET_BYTES: usize = 32;

/// The file holding the token-signing secret (raw bytes, mode 0600).
pub const TOKEN_SECRET_FILE: &str = "token-secret.key";

/// Why a secret could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file exists but does not hold a secret of the right length.
    #[error("{path} holds {got} bytes, expected {expected}; remove it to generate a new one (this logs everyone out)")]
    Length {
        /// The file.
        path: PathBuf,
        /// Its length.
        got: usize,
        /// The expected length.
        expected: usize,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// Reads the token-signing secret from `path`, generating it on first start. Instances of a
/// node share one secret (a token from one is valid at all): several processes starting at
/// once on a new shared file all end up with the first one's.
///
/// # Errors
/// [`SecretError`] when the file cannot be read, created, or holds something else.
pub fn token_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let io_error = |source| SecretError::Io { path: path.to_owned(), source };
    match fs::read(path) {
        Ok(secret) if secret.len() == TOKEN_SECRET_BYTES => return Ok(secret),
        Ok(secret) => {
            return Err(SecretError::Length { path: path.to_owned(), got: secret.len(), expected: TOKEN_SECRET_BYTES });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    let mut secret = vec![0; TOKEN_SECRET_BYTES];
    getrandom::fill(&mut secret).map_err(|e| SecretError::Random(e.to_string()))?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_error)?;
    }
    match write_new(path, &secret) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new token-signing secret");
            Ok(secret)
        }
        // Another instance made it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => token_secret(path),
        Err(e) => Err(io_error(e)),
    }
}

/// Writes `bytes` to a new file readable only by its owner, atomically and only if there is
/// none: a crash leaves no file or the whole file, and of processes creating it at once the
/// first wins (the others get `AlreadyExists`).
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_read_back() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join(TOKEN_SECRET_FILE);
        let first = token_secret(&path).unwrap();
        assert_eq!(first.len(), TOKEN_SECRET_BYTES);
        assert_eq!(token_secret(&path).unwrap(), first);
        fs::write(&path, b"short").unwrap();
        assert!(matches!(token_secret(&path), Err(SecretError::Length { .. })));
    }
}

//! Accounts and tokens for a load run.
//!
//! The fast path (a node's data directory is given): every user is created in one
//! `kith user import` (JSON lines of `{"username", "passwordHash"}`, no hashing per user), and
//! tokens are minted locally as the node mints them, HS256 JWTs signed with the 32 bytes in
//! `<data-dir>/token-secret.key`. Ten thousand users take a few seconds. Without a data
//! directory, each user logs in over HTTP (one argon2id verification each, ~20 ms on the node)
//! and is registered first if the login is refused; that is slow and meant for small runs
//! against a node whose files are out of reach.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::error::BenchError;

/// The password every load-test account has (so the login fallback and the XMPP servers'
/// in-band registration use the same accounts).
pub const PASSWORD: &str = "kith-load-password";

/// The file in a node's data directory that holds its token-signing key.
pub const TOKEN_SECRET_FILE: &str = "token-secret.key";

/// How long minted tokens are valid, in seconds (a day: longer than any run).
const TOKEN_TTL_SECS: u64 = 24 * 3600;

/// How many logins the fallback runs at once (each costs the node an argon2id verification).
const LOGIN_CONCURRENCY: usize = 8;

/// The name of load-test user `index`: `prefix` and a zero-padded number, e.g. `load00042`.
pub fn username(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:05}")
}

/// A node's files, for provisioning users through `kith user import` and minting tokens.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// The node's `--data-dir`.
    pub data_dir: PathBuf,
    /// The node's `--server-name`.
    pub server_name: String,
    /// The node's `--database-url`, when it is not the default SQLite file in the data dir.
    pub database_url: Option<String>,
    /// The node's `--shard` URLs, in order, when it runs on PostgreSQL shards.
    pub shards: Vec<String>,
    /// The node's `--token-secret-file`, when it is not `<data-dir>/token-secret.key` (the
    /// instances of one node share a secret kept outside their data directories).
    pub token_secret_file: Option<PathBuf>,
    /// The `kith` binary that runs `kith user import`.
    pub kith_bin: PathBuf,
}

/// One argon2id PHC string of [`PASSWORD`], shared by all imported users.
fn password_hash() -> Result<String, BenchError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(PASSWORD.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| BenchError::Provision(format!("hashing the shared password: {e}")))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImportLine<'a> {
    username: &'a str,
    password_hash: &'a str,
}

/// Creates `names` on the node with one `kith user import` (existing users are skipped, so
/// repeated runs reuse their accounts).
///
/// # Errors
/// [`BenchError::Provision`] when `kith` cannot be run or fails.
pub async fn import_users(files: &NodeFiles, names: &[String]) -> Result<(), BenchError> {
    let hash = password_hash()?;
    let mut input = String::with_capacity(names.len() * (hash.len() + 48));
    for name in names {
        let line = serde_json::to_string(&ImportLine { username: name, password_hash: &hash })
            .map_err(|e| BenchError::Provision(e.to_string()))?;
        input.push_str(&line);
        input.push('\n');
    }
    let mut command = tokio::process::Command::new(&files.kith_bin);
    command
        .args(["user", "import", "-", "--data-dir"])
        .arg(&files.data_dir)
        .arg("--server-name")
        .arg(&files.server_name);
    if let Some(url) = &files.database_url {
        command.arg("--database-url").arg(url);
    }
    for shard in &files.shards {
        command.arg("--shard").arg(shard);
    }
    let mut child = command
        .env("KITH_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Provision(format!("running {}: {e}", files.kith_bin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .await
            .map_err(|e| BenchError::Provision(format!("writing to kith user import: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| BenchError::Provision(format!("waiting for kith user import: {e}")))?;
    if !output.status.success() {
        return Err(BenchError::Provision(format!(
            "kith user import exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Mints tokens the way a node does, with its key.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    server_name: String,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iss: &'a str,
    iat: u64,
    exp: u64,
}

impl TokenMinter {
    /// Reads the key from `<data_dir>/token-secret.key`.
    ///
    /// # Errors
    /// [`BenchError::Io`] when the file cannot be read; [`BenchError::Config`] when it does not
    /// hold 32 bytes.
    pub fn from_data_dir(data_dir: &Path, server_name: &str) -> Result<Self, BenchError> {
        Self::from_file(&data_dir.join(TOKEN_SECRET_FILE), server_name)
    }

    /// Reads the key from `path` (a node's `--token-secret-file`).
    ///
    /// # Errors
    /// As [`TokenMinter::from_data_dir`].
    pub fn from_file(path: &Path, server_name: &str) -> Result<Self, BenchError> {
        let secret = std::fs::read(path).map_err(BenchError::io(path))?;
        if secret.len() != 32 {
            return Err(BenchError::Config(format!("{} holds {} bytes, expected 32", path.display(), secret.len())));
        }
        Ok(Self { key: EncodingKey::from_secret(&secret), server_name: server_name.to_owned() })
    }

    /// A token for user `name` of this server.
    ///
    /// # Errors
    /// [`BenchError::Token`] if signing fails.
    pub fn mint(&self, name: &str) -> Result<String, BenchError> {
        let now = jsonwebtoken::get_current_timestamp();
        let sub = format!("{name}@{}", self.server_name);
        let claims = Claims { sub: &sub, iss: &self.server_name, iat: now, exp: now + TOKEN_TTL_SECS };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| BenchError::Token { user: sub.clone(), reason: e.to_string() })
    }
}

/// Tokens for `names` by logging each in over HTTP (registering those the node does not know),
/// a few at a time. The slow path: use it only for small runs.
///
/// # Errors
/// [`BenchError::Token`] for the first user who could neither log in nor register.
pub async fn login_all(target: SocketAddr, names: &[String]) -> Result<Vec<String>, BenchError> {
    let gate = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(names.len());
    for name in names {
        let gate = gate.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            login_or_register(target, &name).await
        }));
    }
    let mut tokens = Vec::with_capacity(names.len());
    for task in tasks {
        let token = task.await.map_err(|e| BenchError::Token { user: "?".into(), reason: e.to_string() })??;
        tokens.push(token);
    }
    Ok(tokens)
}

async fn login_or_register(target: SocketAddr, name: &str) -> Result<String, BenchError> {
    let body = serde_json::json!({ "username": name, "password": PASSWORD }).to_string();
    let fail = |reason: String| BenchError::Token { user: name.to_owned(), reason };
    let (status, answer) = post_json(target, "/api/v1/login", &body).await.map_err(|e| fail(e.to_string()))?;
    let (status, answer) = if status == 401 {
        post_json(target, "/api/v1/register", &body).await.map_err(|e| fail(e.to_string()))?
    } else {
        (status, answer)
    };
    if !(200..300).contains(&status) {
        return Err(fail(format!("HTTP {status}: {answer}")));
    }
    let value: serde_json::Value = serde_json::from_str(&answer).map_err(|e| fail(format!("{e}: {answer}")))?;
    value.get("token").and_then(|t| t.as_str()).map(str::to_owned).ok_or_else(|| fail(format!("no token in {answer}")))
}

/// A minimal HTTP/1.1 POST of a JSON body (the node answers with a Content-Length body);
/// returns the status and the body.
async fn post_json(target: SocketAddr, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(target).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_valid_and_sort_by_index() {
        assert_eq!(username("load", 42), "load00042");
        assert!(username("load", 9) < username("load", 10));
    }

    #[test]
    fn minted_tokens_carry_the_node_claims() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        std::fs::write(dir.join(TOKEN_SECRET_FILE), [7u8; 32]).unwrap();
        let minter = TokenMinter::from_data_dir(dir, "alpha").unwrap();
        let token = minter.mint("load00001").unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.set_issuer(&["alpha"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(&[7u8; 32]),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "load00001@alpha");
    }
}

//! Runs the real `kith-chat` binary against a test node: one profile directory per device, the
//! password and the profile's passphrase from the environment, output read line by line with a
//! deadline.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use kith_client::{Account, Profile};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use crate::harness::{PASSWORD, PATIENCE, TestNode};

/// The passphrase every test profile is encrypted with.
pub const PASSPHRASE: &str = "a test passphrase, not a secret";

/// One device of one user, driven through `kith-chat`.
#[derive(Debug)]
pub struct ChatUser {
    server: String,
    profile: tempfile::TempDir,
    /// `--ca-file` (as KITH_CA_FILE), for a node serving TLS with a test CA.
    ca_file: Option<std::path::PathBuf>,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Finished {
    /// Whether it exited with 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ChatUser {
    /// `kith-chat register <name>` in a fresh profile.
    pub async fn register(node: &TestNode, name: &str) -> Result<Self> {
        let user = Self::new(node)?;
        user.ok(&["register", name]).await?;
        Ok(user)
    }

    /// `kith-chat login <name> --new-identity [--device N]` in a fresh profile: the user
    /// starts over with a new identity (with the id of an existing device, a reinstall of it).
    pub async fn start_over(node: &TestNode, name: &str, device: Option<u32>) -> Result<Self> {
        let user = Self::new(node)?;
        let device = device.map(|d| d.to_string());
        let mut args = vec!["login", name, "--new-identity"];
        if let Some(device) = &device {
            args.extend(["--device", device]);
        }
        user.ok(&args).await?;
        Ok(user)
    }

    /// Another device of `existing`'s user: `kith-chat link` on `existing` shows a code,
    /// `kith-chat link accept <code>` in a fresh profile enters it; both must succeed.
    pub async fn link(node: &TestNode, existing: &ChatUser) -> Result<Self> {
        let mut shower =
            existing.command(&["link", "--wait", "60"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let mut out = BufReader::new(shower.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(PATIENCE, out.next_line()).await??.context("link printed nothing")?;
        let code = line.strip_prefix("kith-chat link accept ").with_context(|| format!("not a code: {line}"))?;
        let user = Self::new(node)?;
        user.ok(&["link", "accept", code]).await?;
        let linked = tokio::time::timeout(PATIENCE, out.next_line()).await??.unwrap_or_default();
        let status = tokio::time::timeout(PATIENCE, shower.wait()).await??;
        if !status.success() || !linked.starts_with("linked device") {
            let mut stderr = String::new();
            if let Some(mut e) = shower.stderr.take() {
                tokio::io::AsyncReadExt::read_to_string(&mut e, &mut stderr).await?;
            }
            bail!("kith-chat link said {linked:?} ({status}): {stderr}");
        }
        Ok(user)
    }

    /// A fresh profile for `node`, not registered yet.
    pub fn new(node: &TestNode) -> Result<Self> {
        Ok(Self {
            server: node.base(),
            profile: tempfile::Builder::new().prefix("kith-chat-").tempdir()?,
            ca_file: None,
        })
    }

    /// The same user trusting only the CA certificates in `ca_file` (`--ca-file`).
    #[must_use]
    pub fn trusting(mut self, ca_file: &Path) -> Self {
        self.ca_file = Some(ca_file.to_owned());
        self
    }

    /// The profile directory.
    pub fn profile_dir(&self) -> &Path {
        self.profile.path()
    }

    /// The account the profile holds (token included), for talking to the node directly.
    pub fn account(&self) -> Result<Account> {
        Ok(self.open_profile().account()?)
    }

    /// The profile, opened with its passphrase.
    pub fn open_profile(&self) -> Profile {
        Profile::with_passphrase(self.profile_dir(), Some(PASSPHRASE.into()))
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kith-chat-under-test"));
        command
            .args(args)
            .env("KITH_SERVER", &self.server)
            .env("KITH_PROFILE", self.profile_dir())
            .env("KITH_PASSWORD", PASSWORD)
            .env("KITH_PASSPHRASE", PASSPHRASE)
            .env_remove("KITH_LOG")
            .env_remove("KITH_CA_FILE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(ca_file) = &self.ca_file {
            command.env("KITH_CA_FILE", ca_file);
        }
        command
    }

    /// Runs a command to its end.
    pub async fn run(&self, args: &[&str]) -> Result<Finished> {
        self.finish(self.command(args), args).await
    }

    /// Runs a command to its end against another server than the profile's node.
    pub async fn run_at(&self, server: &str, args: &[&str]) -> Result<Finished> {
        let mut command = self.command(args);
        command.env("KITH_SERVER", server);
        self.finish(command, args).await
    }

    async fn finish(&self, mut command: Command, args: &[&str]) -> Result<Finished> {
        let output: Output = tokio::time::timeout(PATIENCE, command.output())
            .await
            .with_context(|| format!("kith-chat {args:?} did not finish in time"))??;
        Ok(Finished {
            success: output.status.success(),
            stdout: String::from_utf8(output.stdout)?,
            stderr: String::from_utf8(output.stderr)?,
        })
    }

    /// Runs a command that must succeed; returns its standard output.
    pub async fn ok(&self, args: &[&str]) -> Result<String> {
        let done = self.run(args).await?;
        if !done.success {
            bail!("kith-chat {args:?} failed:\n{}{}", done.stdout, done.stderr);
        }
        Ok(done.stdout)
    }

    /// `send <user> <text>`.
    pub async fn send(&self, to: &str, text: &str) -> Result<()> {
        self.ok(&["send", to, text]).await.map(drop)
    }

    /// `history <user> --json`, parsed.
    pub async fn history(&self, peer: &str) -> Result<Vec<Value>> {
        json_lines(&self.ok(&["history", peer, "--json"]).await?)
    }

    /// The texts of `history <user> --json`, `<undecryptable>` for what could not be read.
    pub async fn history_texts(&self, peer: &str) -> Result<Vec<String>> {
        Ok(self.history(peer).await?.iter().map(text_of).collect())
    }

    /// `safety-number <user> --json`: the number of this user with `peer`.
    pub async fn safety_number(&self, peer: &str) -> Result<String> {
        let lines = json_lines(&self.ok(&["safety-number", peer, "--json"]).await?)?;
        let [line] = &lines[..] else { bail!("one line expected: {lines:?}") };
        line["safetyNumber"].as_str().map(str::to_owned).context("safetyNumber")
    }

    /// Starts `chat <peer>` with its standard input and output piped.
    pub fn chat(&self, peer: &str) -> Result<Child> {
        Ok(self.command(&["chat", peer]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
    }

    /// Starts `listen --json` and waits until it has received everything pending.
    pub async fn listen(&self) -> Result<Listener> {
        let mut child = self.command(&["listen", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let (lines_tx, lines) = mpsc::channel(1024);
        let (stderr_tx, stderr) = watch::channel(String::new());
        let stdout = child.stdout.take().context("stdout")?;
        let child_stderr = child.stderr.take().context("stderr")?;
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if lines_tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::new(child_stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                stderr_tx.send_modify(|all| {
                    all.push_str(&line);
                    all.push('\n');
                });
            }
        });
        let mut listener = Listener { child, lines, stderr: Arc::new(stderr), seen: Vec::new() };
        listener.next_where(|line| line["type"] == "caughtUp").await?;
        Ok(listener)
    }
}

/// A running `kith-chat listen --json`.
#[derive(Debug)]
pub struct Listener {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<watch::Receiver<String>>,
    /// Every line read so far, in order.
    pub seen: Vec<Value>,
}

impl Listener {
    /// Waits for the next output line `pick` accepts (lines before it are kept in `seen`).
    pub async fn next_where(&mut self, mut pick: impl FnMut(&Value) -> bool) -> Result<Value> {
        let stderr = self.stderr.clone();
        tokio::time::timeout(PATIENCE, async {
            loop {
                let Some(line) = self.lines.recv().await else {
                    bail!("kith-chat listen exited; stderr:\n{}", stderr.borrow().as_str());
                };
                let value: Value =
                    serde_json::from_str(&line).with_context(|| format!("listen printed a non-JSON line: {line}"))?;
                self.seen.push(value.clone());
                if pick(&value) {
                    return Ok(value);
                }
            }
        })
        .await
        .with_context(|| {
            format!("no such line in time; seen {:?}; stderr:\n{}", self.seen, self.stderr.borrow().as_str())
        })?
    }

    /// Waits for the next message line (decrypted, unencrypted or undecryptable).
    pub async fn next_message(&mut self) -> Result<Value> {
        self.next_where(|line| line["type"] == "message" || line["type"] == "undecryptable").await
    }

    /// Waits until the standard error contains `needle`; returns all of it.
    pub async fn stderr_contains(&self, needle: &str) -> Result<String> {
        let mut stderr = (*self.stderr).clone();
        tokio::time::timeout(PATIENCE, stderr.wait_for(|all| all.contains(needle)))
            .await
            .with_context(|| format!("stderr never said {needle:?}:\n{}", self.stderr.borrow().as_str()))?
            .map(|all| all.clone())
            .map_err(|_| anyhow::anyhow!("stderr closed before saying {needle:?}"))
    }

    /// Kills the process (the device goes offline without a goodbye).
    pub async fn kill(mut self) -> Result<()> {
        tokio::time::timeout(PATIENCE, self.child.kill()).await.context("kith-chat listen did not die")??;
        Ok(())
    }
}

/// Parses JSON lines.
pub fn json_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// The text of a history line, or `<undecryptable>`.
pub fn text_of(line: &Value) -> String {
    match line["type"].as_str() {
        Some("message") => line["text"].as_str().unwrap_or_default().to_owned(),
        _ => "<undecryptable>".to_owned(),
    }
}

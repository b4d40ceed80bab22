//! Federation through network faults: alpha and beta reach each other only through
//! [`FaultProxy`]s (each pins the other at its proxy's address), the test cuts, black-holes and
//! heals them while two users of alpha keep writing to bob@beta, and the backlog must reach bob
//! soon after the heal: none lost, none twice, each conversation in order, and the delivered
//! receipts back.
//!
//! The pumps are configured to back off for 5–10 minutes after a failure
//! (`--outbox-backoff-min/max 10m`), and the test checks alpha's own next attempt time during
//! the fault: delivery within seconds of the heal can only come from the probes and the
//! reaction to new connections, never from waiting out the backoff. That is what lets the cut
//! be short here; `KITH_FAULT_CUT_SECS` sets it (default 21 s: not a multiple of the 2 s probe
//! interval, so that the heal does not fall just before a probe; the scenario is 200).
//! The measured recovery times are printed (and recorded in docs/federation.md).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kith_client::{Authed, Connection};
use kith_proto::{ClientFrame, MessageId, MessageStatus, ServerFrame};
use serde_json::Value;
use tokio::time::Instant;

use crate::fault_proxy::FaultProxy;
use crate::harness::{Backend, PASSWORD, PATIENCE, TestNode, frame_where, send, unique_loopback};

/// Messages each sender queues during a fault.
const PER_SENDER: usize = 100;

/// How long the backlog may take to reach bob after a clean heal, and the receipts after that.
const CLEAN_RECOVERY: Duration = Duration::from_secs(10);

/// How long the backlog may take to reach bob after new connections pass again while the old
/// one stays dark (the dead connection must be found dead first).
const HALF_OPEN_RECOVERY: Duration = Duration::from_secs(30);

/// How long a cut lasts: `KITH_FAULT_CUT_SECS` (seconds, fractions allowed), 21 s by default.
fn cut_length() -> Duration {
    let secs = std::env::var("KITH_FAULT_CUT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(21.0);
    Duration::from_secs_f64(secs)
}

/// `/ip4/A/tcp/P` as a socket address.
fn socket_of(multiaddr: &str) -> Result<SocketAddr> {
    match multiaddr.split('/').collect::<Vec<_>>()[..] {
        ["", "ip4", ip, "tcp", port] => Ok(SocketAddr::new(ip.parse()?, port.parse()?)),
        _ => bail!("not /ip4/…/tcp/…: {multiaddr}"),
    }
}

/// Two nodes whose federation traffic crosses only fault proxies.
struct Pair {
    alpha: TestNode,
    beta: TestNode,
    /// What beta dials to reach alpha.
    to_alpha: FaultProxy,
    /// What alpha dials to reach beta.
    to_beta: FaultProxy,
    /// Alpha's metrics and admin address.
    alpha_admin: SocketAddr,
}

impl Pair {
    async fn start() -> Result<Self> {
        let alpha_admin = SocketAddr::new(unique_loopback().into(), 9100);
        let admin = alpha_admin.to_string();
        let args =
            ["--message-rate", "0", "--outbox-backoff-min", "10m", "--outbox-backoff-max", "10m", "--metrics-listen"];
        let mut alpha = TestNode::prepare("alpha", Backend::Sqlite, &[&args[..], &[admin.as_str()]].concat())?;
        let mut beta = TestNode::prepare("beta", Backend::Sqlite, &args[..args.len() - 1])?;
        let to_alpha =
            FaultProxy::start(SocketAddr::new(unique_loopback().into(), 0), socket_of(&alpha.p2p_address)?).await?;
        let to_beta =
            FaultProxy::start(SocketAddr::new(unique_loopback().into(), 0), socket_of(&beta.p2p_address)?).await?;
        let at = |proxy: &FaultProxy| format!("/ip4/{}/tcp/{}", proxy.addr().ip(), proxy.addr().port());
        alpha.pin_binding(format!("beta={}/p2p/{}", at(&to_beta), beta.peer_id));
        beta.pin_binding(format!("alpha={}/p2p/{}", at(&to_alpha), alpha.peer_id));
        alpha.launch().await?;
        beta.launch().await?;
        Ok(Self { alpha, beta, to_alpha, to_beta, alpha_admin })
    }

    fn cut(&self) {
        self.to_alpha.cut();
        self.to_beta.cut();
    }

    fn black_hole(&self) {
        self.to_alpha.black_hole();
        self.to_beta.black_hole();
    }

    fn heal(&self) {
        self.to_alpha.heal();
        self.to_beta.heal();
    }

    /// `kith federation status --json` against alpha: beta's row.
    async fn beta_status(&self) -> Result<Value> {
        let out = kith(&["federation", "status", "--json", "--metrics-listen", &self.alpha_admin.to_string()]).await?;
        ensure!(out.status.success(), "kith federation status failed: {}", String::from_utf8_lossy(&out.stderr));
        let status: Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
        status["destinations"]
            .as_array()
            .and_then(|all| all.iter().find(|d| d["destination"] == "beta"))
            .cloned()
            .context("no row for beta")
    }

    /// Waits until alpha's pump for beta has failed at least `attempts` times; its status then.
    async fn failed_attempts(&self, attempts: u64) -> Result<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.beta_status().await?;
            if status["attempts"].as_u64().unwrap_or(0) >= attempts {
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "alpha's pump never failed {attempts} time(s): {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Runs the `kith` binary under test.
async fn kith(args: &[&str]) -> Result<std::process::Output> {
    let run = tokio::process::Command::new(TestNode::binary()).args(args).env_remove("KITH_CONFIG").output();
    Ok(tokio::time::timeout(PATIENCE, run).await.context("kith did not finish in time")??)
}

/// Alice and carol on alpha, each with a connection; bob on beta with one.
struct Users {
    senders: Vec<(Authed, Connection)>,
    bob: Authed,
    bob_ws: Connection,
}

impl Users {
    async fn register(pair: &Pair) -> Result<Self> {
        let mut senders = Vec::new();
        for name in ["alice", "carol"] {
            let user = pair.alpha.user(name).await?;
            let ws = user.connect().await?;
            senders.push((user, ws));
        }
        let bob = pair.beta.user("bob").await?;
        let bob_ws = bob.connect().await?;
        Ok(Self { senders, bob, bob_ws })
    }

    /// One message across and its receipt back: the connection between the nodes is up.
    async fn warm_up(&mut self) -> Result<()> {
        let (alice, alice_ws) = &mut self.senders[0];
        let (_, sent) = alice.send_message("bob@beta", "warm-up", None).await?;
        let got = frame_where(&mut self.bob_ws, crate::harness::message).await?;
        ensure!(got.message_id == sent.message_id, "warm-up message");
        self.bob_ws.send(&ClientFrame::Ack { message_id: got.message_id }).await?;
        frame_where(alice_ws, |f| delivered(&f).filter(|id| *id == sent.message_id)).await?;
        Ok(())
    }

    /// Each sender queues [`PER_SENDER`] messages, interleaved; alpha answers `sent` for each.
    /// Returns each sender's message ids in the order sent.
    async fn send_backlog(&mut self) -> Result<Vec<Vec<MessageId>>> {
        for i in 0..PER_SENDER {
            for (s, (_, ws)) in self.senders.iter_mut().enumerate() {
                ws.send(&send(&format!("b-{s}-{i}"), "bob@beta", &format!("backlog {s} {i:03}"))).await?;
            }
        }
        let mut ids = Vec::new();
        for (_, ws) in &mut self.senders {
            let mut by_client_id = HashMap::new();
            while by_client_id.len() < PER_SENDER {
                let (client_id, id) = frame_where(ws, |f| match f {
                    ServerFrame::Sent { client_message_id, message_id, .. } => Some((client_message_id, message_id)),
                    _ => None,
                })
                .await?;
                by_client_id.insert(client_id, id);
            }
            let mut ordered: Vec<(usize, MessageId)> = by_client_id
                .into_iter()
                .map(|(client_id, id)| Ok((client_id.rsplit('-').next().unwrap_or("").parse()?, id)))
                .collect::<Result<_>>()?;
            ordered.sort_unstable();
            ids.push(ordered.into_iter().map(|(_, id)| id).collect());
        }
        Ok(ids)
    }

    /// Reads every connection until `until`; bob must get no message meanwhile. Keeps the
    /// connections answering the node's pings during a long fault.
    async fn quiet_until(&mut self, until: Instant) -> Result<()> {
        let bob = async {
            loop {
                match tokio::time::timeout_at(until, self.bob_ws.next_frame()).await {
                    Err(_) => return Ok(()),
                    Ok(frame) => {
                        if let ServerFrame::Message(m) = frame? {
                            bail!("a message reached bob during the fault: {}", m.message);
                        }
                    }
                }
            }
        };
        let senders = futures_util::future::try_join_all(self.senders.iter_mut().map(|(_, ws)| async move {
            while let Ok(frame) = tokio::time::timeout_at(until, ws.next_frame()).await {
                frame?;
            }
            anyhow::Ok(())
        }));
        tokio::try_join!(bob, senders)?;
        Ok(())
    }

    /// Bob gets every message of `ids`, each conversation in order, none twice, by `deadline`,
    /// acking each; returns when the last arrived.
    async fn receive_backlog(&mut self, ids: &[Vec<MessageId>], deadline: Instant) -> Result<Instant> {
        let mut next = vec![0; ids.len()];
        let mut seen = HashSet::new();
        let total: usize = ids.iter().map(Vec::len).sum();
        while seen.len() < total {
            let frame = tokio::time::timeout_at(deadline, self.bob_ws.next_frame())
                .await
                .with_context(|| format!("bob has {} of {total} messages at the deadline", seen.len()))??;
            let ServerFrame::Message(m) = frame else { continue };
            ensure!(seen.insert(m.message_id), "{} reached bob twice", m.message);
            let s = ids.iter().position(|sent| sent.contains(&m.message_id)).context("a message nobody sent")?;
            ensure!(ids[s][next[s]] == m.message_id, "out of order in conversation {s}: got {}", m.message);
            next[s] += 1;
            self.bob_ws.send(&ClientFrame::Ack { message_id: m.message_id }).await?;
        }
        Ok(Instant::now())
    }

    /// Every sender gets a delivered receipt for each of its `ids` by `deadline`.
    async fn delivered_receipts(&mut self, ids: &[Vec<MessageId>], deadline: Instant) -> Result<Instant> {
        for ((_, ws), ids) in self.senders.iter_mut().zip(ids) {
            let mut waiting: HashSet<MessageId> = ids.iter().copied().collect();
            while !waiting.is_empty() {
                let frame = tokio::time::timeout_at(deadline, ws.next_frame())
                    .await
                    .with_context(|| format!("{} receipts missing at the deadline", waiting.len()))??;
                if let Some(id) = delivered(&frame) {
                    waiting.remove(&id);
                }
            }
        }
        Ok(Instant::now())
    }

    /// Nothing more comes: the next message bob sees is one sent now, and his history holds
    /// each conversation once.
    async fn nothing_else(&mut self) -> Result<()> {
        let (alice, _) = &self.senders[0];
        let (_, marker) = alice.send_message("bob@beta", "after the backlog", None).await?;
        let next = frame_where(&mut self.bob_ws, crate::harness::message).await?;
        ensure!(next.message_id == marker.message_id, "bob got {:?} after the backlog", next.message);
        let mut texts = Vec::new();
        let mut before = None;
        loop {
            let page = self.bob.history("carol@alpha", before, Some(100)).await?;
            texts.splice(0..0, page.messages.into_iter().map(|m| m.message));
            match page.next_before {
                Some(next) if texts.len() <= PER_SENDER => before = Some(next),
                _ => break,
            }
        }
        let expected: Vec<String> = (0..PER_SENDER).map(|i| format!("backlog 1 {i:03}")).collect();
        ensure!(texts == expected, "carol's conversation at bob's: {} messages, not each once in order", texts.len());
        Ok(())
    }
}

fn delivered(frame: &ServerFrame) -> Option<MessageId> {
    match frame {
        ServerFrame::Receipt { message_id, status: MessageStatus::Delivered, .. } => Some(*message_id),
        _ => None,
    }
}

/// Checks, during a fault, that alpha's pump waits on a long backoff: its next attempt by the
/// timer is well after the heal plus the recovery allowed, so meeting it proves the backoff
/// was not waited out.
async fn backoff_outlasts(pair: &Pair, heal_at: Instant) -> Result<()> {
    let status = pair.failed_attempts(1).await?;
    let next = status["nextAttemptInSeconds"].as_f64().context("no next attempt while failing")?;
    let needed = heal_at.saturating_duration_since(Instant::now()) + CLEAN_RECOVERY * 2;
    ensure!(next > needed.as_secs_f64(), "the backoff ({next} s) would end within the recovery allowed: {status}");
    ensure!(status["connected"] == false, "connected during a cut: {status}");
    ensure!(status["depth"].as_u64() == Some(2 * PER_SENDER as u64), "alpha's outbox: {status}");
    Ok(())
}

#[tokio::test]
async fn a_backlog_crosses_a_clean_cut_within_seconds_of_the_heal() -> Result<()> {
    let pair = Pair::start().await?;
    let mut users = Users::register(&pair).await?;
    users.warm_up().await?;

    pair.cut();
    let heal_at = Instant::now() + cut_length();
    let ids = users.send_backlog().await?;
    backoff_outlasts(&pair, heal_at).await?;
    users.quiet_until(heal_at).await?;

    pair.heal();
    let healed = Instant::now();
    let arrived = users.receive_backlog(&ids, healed + CLEAN_RECOVERY).await?;
    let receipts = users.delivered_receipts(&ids, arrived + CLEAN_RECOVERY).await?;
    eprintln!(
        "clean cut of {:?}: backlog at bob {:.2} s after the heal, receipts back {:.2} s after that",
        cut_length(),
        (arrived - healed).as_secs_f64(),
        (receipts - arrived).as_secs_f64()
    );
    users.nothing_else().await
}

#[tokio::test]
async fn a_backlog_crosses_a_cut_during_which_the_receiver_restarts() -> Result<()> {
    let mut pair = Pair::start().await?;
    let mut users = Users::register(&pair).await?;
    users.warm_up().await?;

    pair.cut();
    let heal_at = Instant::now() + cut_length();
    let ids = users.send_backlog().await?;
    backoff_outlasts(&pair, heal_at).await?;
    pair.beta.kill().await?;
    pair.beta.restart().await?;
    users.bob = pair.beta.client().login("bob", PASSWORD).await?;
    users.bob_ws = users.bob.connect().await?;
    users.quiet_until(heal_at).await?;

    pair.heal();
    let healed = Instant::now();
    let arrived = users.receive_backlog(&ids, healed + CLEAN_RECOVERY).await?;
    let receipts = users.delivered_receipts(&ids, arrived + CLEAN_RECOVERY).await?;
    eprintln!(
        "cut of {:?} with beta restarted: backlog at bob {:.2} s after the heal, receipts back {:.2} s after that",
        cut_length(),
        (arrived - healed).as_secs_f64(),
        (receipts - arrived).as_secs_f64()
    );
    users.nothing_else().await
}

#[tokio::test]
async fn a_backlog_leaves_a_black_holed_connection_for_a_new_one() -> Result<()> {
    let pair = Pair::start().await?;
    let mut users = Users::register(&pair).await?;
    users.warm_up().await?;
    let before = pair.to_beta.accepted();

    // The connections go dark (open, every byte dropped); the backlog goes out onto them.
    pair.black_hole();
    let ids = users.send_backlog().await?;
    // New connections pass again at once; the dark ones stay dark. Only a new connection can
    // carry the backlog, so alpha must find its connection dead and dial again.
    pair.heal();
    let healed = Instant::now();
    let arrived = users.receive_backlog(&ids, healed + HALF_OPEN_RECOVERY).await?;
    let receipts = users.delivered_receipts(&ids, arrived + CLEAN_RECOVERY).await?;
    eprintln!(
        "black hole: backlog at bob {:.2} s after new connections passed, receipts back {:.2} s after that",
        (arrived - healed).as_secs_f64(),
        (receipts - arrived).as_secs_f64()
    );
    ensure!(pair.to_beta.accepted() > before, "alpha dialled beta again");
    users.nothing_else().await
}

#[tokio::test]
async fn an_operator_sees_the_outbox_and_makes_it_retry_now() -> Result<()> {
    let pair = Pair::start().await?;
    let mut users = Users::register(&pair).await?;
    users.warm_up().await?;
    pair.cut();
    let (alice, _) = &users.senders[0];
    alice.send_message("bob@beta", "waits", None).await?;

    let status = pair.failed_attempts(1).await?;
    assert_eq!(status["depth"], 1, "{status}");
    assert_eq!(status["connected"], false, "{status}");
    assert_eq!(status["lastError"]["kind"], "unreachable", "{status}");
    let attempts = status["attempts"].as_u64().unwrap_or(0);
    let admin = pair.alpha_admin.to_string();
    let table = kith(&["federation", "status", "--metrics-listen", &admin]).await?;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().any(|l| l.starts_with("beta") && l.contains("down")), "{table}");

    // The backoff is 5–10 minutes and the peer is still cut off, so only the retry makes the
    // next attempt happen now.
    let retried = kith(&["federation", "retry", "beta", "--metrics-listen", &admin]).await?;
    assert!(retried.status.success(), "{}", String::from_utf8_lossy(&retried.stderr));
    assert!(String::from_utf8_lossy(&retried.stdout).contains("beta retries now"));
    pair.failed_attempts(attempts + 1).await?;

    let unknown = kith(&["federation", "retry", "nobody", "--metrics-listen", &admin]).await?;
    let said = format!("{}{}", String::from_utf8_lossy(&unknown.stdout), String::from_utf8_lossy(&unknown.stderr));
    assert!(!unknown.status.success() && said.contains("nobody is not a pinned peer"), "{said}");

    let metrics = crate::harness::http().get(format!("http://{admin}/metrics")).send().await?.text().await?;
    for gauge in [
        "kith_outbox_depth{destination=\"beta\"} 1",
        "kith_federation_connected{destination=\"beta\"} 0",
        "kith_outbox_last_error_timestamp_seconds{destination=\"beta\",kind=\"unreachable\"}",
    ] {
        assert!(metrics.contains(gauge), "{gauge} in\n{metrics}");
    }
    assert!(metrics.contains("kith_outbox_next_attempt_seconds{destination=\"beta\"}"), "{metrics}");

    // After the heal it goes out (a probe finds beta) and the status says so.
    pair.heal();
    let got = frame_where(&mut users.bob_ws, crate::harness::message).await?;
    assert_eq!(got.message, "waits");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = pair.beta_status().await?;
        if status["depth"] == 0 && status["attempts"] == 0 && status["connected"] == true {
            break;
        }
        ensure!(Instant::now() < deadline, "status after the heal: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

//! The chaos soak: three federated nodes (alpha, beta, gamma) whose federation traffic crosses
//! only [`FaultProxy`]s, a user on each sending to a user on each other node (six
//! conversations), while the test SIGKILLs and restarts a node every few seconds, cuts gamma
//! off from both others once and heals it, and gamma's clock runs minutes ahead (libfaketime,
//! preloaded into gamma's process only: the node has no clock knob, and the skew reaches every
//! clock read the node makes, tokens and envelopes included).
//!
//! Senders send one message at a time over REST and retry the same `clientMessageId` until the
//! node acknowledges it (and now and then send an acknowledged one again, which must answer
//! with the same message id); receivers hold a WebSocket, acknowledge every message, and
//! reconnect whenever their node goes away. At the end every conversation must have arrived
//! whole: none lost, none shown twice (one message id per message, the one its sender was
//! given), in the order it was sent. The figures (redeliveries, restarts, recovery after the
//! heal) are printed, and recorded in docs/benchmarks.md.
//!
//! `chaos_soak` is the CI-size run (240 messages, about a minute); `chaos_soak_long` is
//! ignored by default and sends `KITH_SOAK_MESSAGES` (100,000 unless set):
//! `cargo nextest run -p kith-tests --run-ignored only chaos_soak_long --no-capture`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use kith_client::{Client, ClientError, Sent, Timeouts};
use kith_proto::rest::AuthResponse;
use kith_proto::{ClientFrame, MessageId, ServerFrame, UserId};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fault_proxy::FaultProxy;
use crate::harness::{Backend, PASSWORD, TestNode, skip, unique_loopback};

/// The node names; the last one's clock is skewed.
const NODES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Where Debian's `faketime` package puts the library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Deadlines of the soak's clients: short, so that a request to a node that was just killed
/// fails fast and is retried against the restarted one.
const CHAOS_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(3),
    request: Duration::from_secs(5),
    idle: Duration::from_secs(5),
    close: Duration::from_secs(1),
};

/// How often a long soak says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// How long everything may take to arrive once the chaos stops.
const DRAIN: Duration = Duration::from_secs(60);

/// One soak's shape.
#[derive(Debug, Clone)]
struct Plan {
    /// Messages per conversation (six conversations).
    per_conversation: usize,
    /// The least time one conversation's sends are spread over (none: as fast as they go).
    spread: Duration,
    /// Between two kills.
    kill_every: Duration,
    /// When the partition starts, from the start of sending.
    partition_at: Duration,
    /// How long gamma is cut off.
    partition_for: Duration,
    /// gamma's clock offset, in libfaketime's syntax.
    skew: &'static str,
    /// The skew in seconds, for checking that it took.
    skew_secs: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() -> Result<()> {
    let plan = Plan {
        per_conversation: 40,
        spread: Duration::from_secs(30),
        kill_every: Duration::from_secs(2),
        partition_at: Duration::from_secs(8),
        partition_for: Duration::from_secs(10),
        skew: "+180",
        skew_secs: 180,
    };
    soak(plan).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long soak (100,000 messages): run it on purpose"]
async fn chaos_soak_long() -> Result<()> {
    let total: usize = std::env::var("KITH_SOAK_MESSAGES").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let plan = Plan {
        per_conversation: total.div_ceil(6),
        spread: Duration::ZERO,
        kill_every: Duration::from_secs(5),
        partition_at: Duration::from_secs(60),
        partition_for: Duration::from_secs(30),
        skew: "+180",
        skew_secs: 180,
    };
    soak(plan).await
}

/// What a logged-in user needs to talk to whichever port its node has now.
#[derive(Debug, Clone)]
struct Login {
    auth: AuthResponse,
    node: usize,
}

/// A message as a receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: MessageId,
    sender: UserId,
    text: String,
    at: Instant,
}

/// What every task records.
#[derive(Debug, Default)]
struct Record {
    /// `(conversation, index)` → the id its sender was given, and when.
    acked: HashMap<(usize, usize), (MessageId, Instant)>,
    /// Per receiver node: every `message` frame, in arrival order.
    seen: BTreeMap<usize, Vec<Seen>>,
    /// Send attempts that failed and were retried.
    retries: u64,
    /// Receiver reconnects.
    reconnects: u64,
    /// Each restart: which node, and how long until it listened again.
    restarts: Vec<(usize, Duration)>,
    /// When the partition was healed.
    healed: Option<Instant>,
    /// When the partition started.
    cut: Option<Instant>,
}

type Shared = Arc<Mutex<Record>>;

fn record(shared: &Shared) -> std::sync::MutexGuard<'_, Record> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A conversation: from a user of one node to a user of another.
#[derive(Debug, Clone, Copy)]
struct Conversation {
    from: usize,
    to: usize,
}

fn conversations() -> Vec<Conversation> {
    (0..NODES.len())
        .flat_map(|from| (0..NODES.len()).filter(move |&to| to != from).map(move |to| Conversation { from, to }))
        .collect()
}

#[allow(clippy::print_stderr, reason = "a long soak says how far it got")]
async fn soak(plan: Plan) -> Result<()> {
    if !Path::new(LIBFAKETIME).exists() {
        skip(&format!("{LIBFAKETIME} is missing (apt-get install faketime): gamma's clock cannot be skewed"));
        return Ok(());
    }
    let mut nodes = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let mut node = TestNode::prepare(name, Backend::Sqlite, &["--message-rate", "0"])?;
        if i == NODES.len() - 1 {
            node.set_env("LD_PRELOAD", LIBFAKETIME);
            node.set_env("FAKETIME", plan.skew);
            // Timers and timeouts run on the real monotonic clock; only the wall clock is off.
            node.set_env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        nodes.push(node);
    }
    // One proxy per direction: proxies[x][y] is what x dials to reach y.
    let mut proxies: Vec<Vec<Option<FaultProxy>>> = Vec::new();
    for x in 0..NODES.len() {
        let mut row = Vec::new();
        for (y, node) in nodes.iter().enumerate() {
            if x == y {
                row.push(None);
                continue;
            }
            let upstream = socket_of(&node.p2p_address)?;
            row.push(Some(FaultProxy::start(SocketAddr::new(unique_loopback().into(), 0), upstream).await?));
        }
        proxies.push(row);
    }
    for x in 0..NODES.len() {
        for y in 0..NODES.len() {
            if let Some(proxy) = &proxies[x][y] {
                let binding = format!(
                    "{}=/ip4/{}/tcp/{}/p2p/{}",
                    NODES[y],
                    proxy.addr().ip(),
                    proxy.addr().port(),
                    nodes[y].peer_id
                );
                nodes[x].pin_binding(binding);
            }
        }
    }
    for node in &mut nodes {
        node.launch().await?;
    }
    let addrs: Vec<watch::Sender<SocketAddr>> = nodes.iter().map(|n| watch::Sender::new(n.addr)).collect();

    // A sender and a receiver on every node.
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let sender = node.client().timeouts(CHAOS_TIMEOUTS)?.register("sender", PASSWORD).await?;
        let receiver = node.client().timeouts(CHAOS_TIMEOUTS)?.register("receiver", PASSWORD).await?;
        let login = |a: &kith_client::Authed| Login {
            auth: AuthResponse { user_id: a.user_id().clone(), device_id: a.device_id(), token: a.token().to_owned() },
            node: i,
        };
        senders.push(login(&sender));
        receivers.push(login(&receiver));
    }

    let shared: Shared = Arc::default();
    let (stop, stopped) = watch::channel(false);
    let mut receiving = JoinSet::new();
    for login in &receivers {
        receiving.spawn(receive(login.clone(), addrs[login.node].subscribe(), stopped.clone(), shared.clone()));
    }
    let started = Instant::now();
    let mut sending = JoinSet::new();
    for (c, conversation) in conversations().into_iter().enumerate() {
        let login = senders[conversation.from].clone();
        let to = receivers[conversation.to].auth.user_id.to_string();
        sending.spawn(send_all(c, login, to, plan.clone(), addrs[conversation.from].subscribe(), shared.clone()));
    }

    // The chaos, until every message is acknowledged.
    let (senders_done, chaos_result) = {
        let all_sent = async {
            while let Some(result) = sending.join_next().await {
                result.context("a sender panicked")??;
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::pin!(all_sent);
        let mut outcome = None;
        let mut chaos_error = None;
        let mut next_kill = started + plan.kill_every;
        let mut victim = 0;
        let partition_start = started + plan.partition_at;
        let mut partition_end = None;
        let mut partitioned = false;
        let mut last_progress = Instant::now();
        loop {
            let next_event = [Some(next_kill), (!partitioned).then_some(partition_start), partition_end]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_kill);
            tokio::select! {
                result = &mut all_sent => { outcome = Some(result); break; }
                () = tokio::time::sleep_until(next_event) => {}
            }
            let now = Instant::now();
            if !partitioned && now >= partition_start {
                partitioned = true;
                cut_gamma(&proxies, true);
                record(&shared).cut = Some(now);
                partition_end = Some(now + plan.partition_for);
            } else if partition_end.is_some_and(|end| now >= end) {
                cut_gamma(&proxies, false);
                record(&shared).healed = Some(Instant::now());
                partition_end = None;
            } else if now >= next_kill {
                let begun = Instant::now();
                if let Err(e) = nodes[victim].restart().await {
                    chaos_error = Some(e.context(format!("restarting {}", NODES[victim])));
                    break;
                }
                record(&shared).restarts.push((victim, begun.elapsed()));
                addrs[victim].send_replace(nodes[victim].addr);
                victim = (victim + 1) % NODES.len();
                next_kill = Instant::now() + plan.kill_every;
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    let r = record(&shared);
                    eprintln!(
                        "chaos soak after {:?}: {} acknowledged, {} arrived, {} restarts",
                        started.elapsed(),
                        r.acked.len(),
                        arrived(&r),
                        r.restarts.len()
                    );
                }
            }
        }
        (outcome, chaos_error)
    };
    if let Some(e) = chaos_result {
        return Err(e);
    }
    match senders_done {
        Some(result) => result?,
        None => bail!("the senders did not finish"),
    }
    if record(&shared).cut.is_some() && record(&shared).healed.is_none() {
        cut_gamma(&proxies, false);
        record(&shared).healed = Some(Instant::now());
    }
    let sending_took = started.elapsed();

    // Everything must arrive once the chaos is over.
    let expected = plan.per_conversation * conversations().len();
    let drain_started = Instant::now();
    loop {
        let arrived = arrived(&record(&shared));
        if arrived >= expected {
            break;
        }
        ensure!(
            drain_started.elapsed() < DRAIN,
            "{arrived} of {expected} messages arrived {DRAIN:?} after the chaos stopped; logs:\n{}",
            nodes.iter().map(|n| format!("== {}\n{}", n.server_name, n.log_text())).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_in = drain_started.elapsed();
    stop.send_replace(true);
    while let Some(result) = receiving.join_next().await {
        result.context("a receiver panicked")??;
    }

    let record = record(&shared);
    verify(&plan, &record, &senders, &receivers)?;
    report(&plan, &record, sending_took, drained_in);
    Ok(())
}

/// Cuts (or heals) every proxy to and from gamma.
fn cut_gamma(proxies: &[Vec<Option<FaultProxy>>], cut: bool) {
    let gamma = NODES.len() - 1;
    for (x, row) in proxies.iter().enumerate() {
        for (y, proxy) in row.iter().enumerate() {
            if let Some(proxy) = proxy.as_ref().filter(|_| x == gamma || y == gamma) {
                if cut { proxy.cut() } else { proxy.heal() }
            }
        }
    }
}

/// Distinct messages that arrived.
fn arrived(record: &Record) -> usize {
    record.seen.values().flat_map(|seen| seen.iter().map(|s| s.id)).collect::<HashSet<_>>().len()
}

/// `/ip4/A/tcp/P` as a socket address.
fn socket_of(multiaddr: &str) -> Result<SocketAddr> {
    match multiaddr.split('/').collect::<Vec<_>>()[..] {
        ["", "ip4", ip, "tcp", port] => Ok(SocketAddr::new(ip.parse()?, port.parse()?)),
        _ => bail!("not /ip4/…/tcp/…: {multiaddr}"),
    }
}

fn authed(login: &Login, addr: SocketAddr) -> Result<kith_client::Authed> {
    Ok(Client::new(&format!("http://{addr}"))?.timeouts(CHAOS_TIMEOUTS)?.authed(login.auth.clone()))
}

/// One conversation's sender: each message until acknowledged, retrying its
/// `clientMessageId`; every seventh sent once more after its acknowledgement.
async fn send_all(
    conversation: usize,
    login: Login,
    to: String,
    plan: Plan,
    addr: watch::Receiver<SocketAddr>,
    shared: Shared,
) -> Result<()> {
    let pace = plan.spread / u32::try_from(plan.per_conversation).unwrap_or(u32::MAX).max(1);
    let give_up = Duration::from_secs(120);
    // One client (and its connection pool) per address the node has had.
    let mut client: Option<(SocketAddr, kith_client::Authed)> = None;
    for index in 0..plan.per_conversation {
        let next = Instant::now() + pace;
        let client_message_id = format!("c{conversation}-{index}");
        let text = format!("{conversation} {index}");
        let repeats = if index % 7 == 3 { 2 } else { 1 };
        let mut given: Option<MessageId> = None;
        for _ in 0..repeats {
            let trying_since = Instant::now();
            loop {
                let current = *addr.borrow();
                let api = match &client {
                    Some((at, api)) if *at == current => api,
                    _ => &client.insert((current, authed(&login, current)?)).1,
                };
                match api.send_message(&to, &text, Some(&client_message_id)).await {
                    Ok((sent, answer)) => {
                        if let Some(first) = given {
                            ensure!(
                                answer.message_id == first && sent == Sent::Repeat,
                                "{client_message_id} sent again got {sent:?} {}, not a repeat of {first}",
                                answer.message_id
                            );
                        } else {
                            if login.node == NODES.len() - 1 && index == 0 {
                                check_skew(&plan, answer.timestamp.as_millis())?;
                            }
                            given = Some(answer.message_id);
                            record(&shared).acked.insert((conversation, index), (answer.message_id, Instant::now()));
                        }
                        break;
                    }
                    Err(ClientError::Api { status, code, message }) if !matches!(status, 500..|401| 429) => {
                        bail!("{client_message_id} refused: {status} {code:?} {message}")
                    }
                    Err(_) => {
                        record(&shared).retries += 1;
                        ensure!(
                            trying_since.elapsed() < give_up,
                            "{client_message_id} not acknowledged in {give_up:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        tokio::time::sleep_until(next).await;
    }
    Ok(())
}

/// gamma stamps its messages with its own, skewed, clock.
fn check_skew(plan: &Plan, stamped_millis: i64) -> Result<()> {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_millis();
    let ahead = (i128::from(stamped_millis) - i128::try_from(now)?) / 1000;
    ensure!(
        (ahead - i128::from(plan.skew_secs)).abs() < 30,
        "gamma's clock is {ahead} s ahead, not {} s: the skew did not take",
        plan.skew_secs
    );
    Ok(())
}

/// One receiver: holds a WebSocket to its node, acknowledges everything, reconnects when the
/// node goes away, until told to stop.
async fn receive(
    login: Login,
    mut addr: watch::Receiver<SocketAddr>,
    mut stop: watch::Receiver<bool>,
    shared: Shared,
) -> Result<()> {
    let mut first = true;
    while !*stop.borrow() {
        if !first {
            record(&shared).reconnects += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let current = *addr.borrow_and_update();
        let Ok(mut connection) = authed(&login, current)?.connect().await else { continue };
        loop {
            let frame = tokio::select! {
                frame = connection.next_frame() => frame,
                _ = stop.changed() => return Ok(()),
                // The node moved to another port: the old connection is dead or about to be.
                _ = addr.changed() => break,
            };
            let Ok(frame) = frame else { break };
            if let ServerFrame::Message(message) = frame {
                let seen = Seen {
                    id: message.message_id,
                    sender: message.sender_id.clone(),
                    text: message.message.clone(),
                    at: Instant::now(),
                };
                record(&shared).seen.entry(login.node).or_default().push(seen);
                if connection.send(&ClientFrame::Ack { message_id: message.message_id }).await.is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// None lost, none shown twice, each conversation in order.
fn verify(plan: &Plan, record: &Record, senders: &[Login], receivers: &[Login]) -> Result<()> {
    for (c, conversation) in conversations().into_iter().enumerate() {
        let sender = &senders[conversation.from].auth.user_id;
        let seen = record.seen.get(&receivers[conversation.to].node).map(Vec::as_slice).unwrap_or_default();
        let mut first_seen: Vec<usize> = Vec::new();
        let mut ids: HashMap<usize, MessageId> = HashMap::new();
        for s in seen.iter().filter(|s| &s.sender == sender) {
            let index: usize = s
                .text
                .strip_prefix(&format!("{c} "))
                .and_then(|i| i.parse().ok())
                .with_context(|| format!("unexpected text {:?} from {sender}", s.text))?;
            match ids.get(&index) {
                None => {
                    ids.insert(index, s.id);
                    first_seen.push(index);
                }
                Some(id) => ensure!(*id == s.id, "conversation {c} message {index} shown twice: as {id} and {}", s.id),
            }
        }
        let lost: Vec<usize> = (0..plan.per_conversation).filter(|i| !ids.contains_key(i)).collect();
        ensure!(lost.is_empty(), "conversation {c}: {} lost, first {:?}", lost.len(), &lost[..lost.len().min(10)]);
        ensure!(
            first_seen.windows(2).all(|w| w[0] < w[1]),
            "conversation {c} out of order: {:?}",
            first_seen.windows(2).find(|w| w[0] > w[1])
        );
        for (index, id) in &ids {
            let acked = record.acked.get(&(c, *index)).map(|(id, _)| *id);
            ensure!(
                acked == Some(*id),
                "conversation {c} message {index} arrived as {id}, its sender was given {acked:?}"
            );
        }
    }
    Ok(())
}

/// Prints the soak's figures.
#[allow(clippy::print_stderr, reason = "the soak reports its figures")]
fn report(plan: &Plan, record: &Record, sending_took: Duration, drained_in: Duration) {
    let gamma = NODES.len() - 1;
    let total: usize = record.seen.values().map(Vec::len).sum();
    let distinct = arrived(record);
    // After the heal: how long until every message that crossed the cut, acknowledged before
    // the heal, had arrived.
    let recovery = record.healed.map(|healed| {
        let first_arrival: HashMap<MessageId, Instant> =
            record.seen.values().flatten().fold(HashMap::new(), |mut first, s| {
                first.entry(s.id).or_insert(s.at);
                first
            });
        conversations()
            .into_iter()
            .enumerate()
            .filter(|(_, c)| c.from == gamma || c.to == gamma)
            .flat_map(|(c, _)| (0..plan.per_conversation).map(move |i| (c, i)))
            .filter_map(|key| record.acked.get(&key))
            .filter(|(_, acked)| *acked < healed)
            .filter_map(|(id, _)| first_arrival.get(id))
            .map(|arrived| arrived.saturating_duration_since(healed))
            .max()
            .unwrap_or_default()
    });
    let restarts = record.restarts.len();
    let slowest_restart = record.restarts.iter().map(|(_, d)| *d).max().unwrap_or_default();
    eprintln!(
        "chaos soak: {distinct} messages in {} conversations ({} per conversation), 0 lost, 0 shown twice, in order; \
         {total} message frames ({} redeliveries), {} send retries, {} receiver reconnects; \
         {restarts} SIGKILL+restarts (slowest back in {slowest_restart:?}); partition of gamma for {:?}, \
         everything acknowledged before the heal arrived {recovery:?} after it; gamma's clock {} s ahead; \
         sending took {sending_took:?}, the rest arrived {drained_in:?} after the chaos stopped",
        conversations().len(),
        plan.per_conversation,
        total - distinct,
        record.retries,
        record.reconnects,
        plan.partition_for,
        plan.skew_secs,
    );
}

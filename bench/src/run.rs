//! A load run from start to end: accounts, connections, traffic, drain, report.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::error::BenchError;
use crate::measure::{Pair, Recorder, sleep_or_stop};
use crate::pace::Rate;
use crate::provision::{self, NodeFiles, TokenMinter};
use crate::report::{Connections, Progress, Report, ServerUsage};
use crate::roles::{ReceiverJob, Role, SenderJob, Signals};
use crate::system::{self, ProcSample, ProcWatch, RESERVED_FDS};
use crate::{kith, xmpp};

/// A named workload, so figures are comparable across commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Hold N connections; report memory per connection.
    Idle,
    /// The highest durable rate (`max`).
    Throughput,
    /// Latency percentiles at a fixed rate with many clients connected.
    Latency,
    /// Senders on one node, receivers on another.
    Federation,
}

/// A scenario's defaults, where the command line does not say otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// Connections.
    pub connections: usize,
    /// Sender→receiver pairs.
    pub pairs: usize,
    /// Target rate.
    pub rate: Rate,
    /// Seconds of sending (or holding, for `idle`).
    pub duration: Duration,
    /// Seconds of warm-up.
    pub warmup: Duration,
}

impl Scenario {
    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Throughput => "throughput",
            Self::Latency => "latency",
            Self::Federation => "federation",
        }
    }

    /// What a scenario does unless told otherwise. The figures in docs/benchmarks.md come from
    /// these (and the targets of the benchmark issue).
    pub fn defaults(self) -> Defaults {
        let secs = Duration::from_secs;
        match self {
            Self::Idle => {
                Defaults { connections: 1_000, pairs: 0, rate: Rate::Max, duration: secs(10), warmup: secs(0) }
            }
            Self::Throughput => {
                Defaults { connections: 200, pairs: 100, rate: Rate::Max, duration: secs(15), warmup: secs(2) }
            }
            Self::Latency => Defaults {
                connections: 10_000,
                pairs: 1_000,
                rate: Rate::PerSecond(5_000.0),
                duration: secs(20),
                warmup: secs(2),
            },
            Self::Federation => {
                Defaults { connections: 200, pairs: 100, rate: Rate::Max, duration: secs(15), warmup: secs(2) }
            }
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "idle" => Ok(Self::Idle),
            "throughput" => Ok(Self::Throughput),
            "latency" => Ok(Self::Latency),
            "federation" => Ok(Self::Federation),
            _ => Err(format!("unknown scenario {s:?}: idle, throughput, latency or federation")),
        }
    }
}

/// A kith node to drive.
#[derive(Debug, Clone)]
pub struct KithNode {
    /// Its client addresses: one per instance of a node run as several (`--listen` of each).
    /// Connection `i` goes to instance `i % len`, so with two instances every pair's sender and
    /// receiver are on different instances (the cross-instance path).
    pub targets: Vec<SocketAddr>,
    /// Its server name.
    pub server_name: String,
    /// Its files, for fast provisioning and minted tokens; `None` logs users in over HTTP.
    pub files: Option<NodeFiles>,
}

/// An XMPP server to drive.
#[derive(Debug, Clone)]
pub struct XmppServer {
    /// Its client-to-server address.
    pub target: SocketAddr,
    /// The XMPP domain of the accounts.
    pub domain: String,
    /// Whether to create the accounts by in-band registration first.
    pub register: bool,
}

/// What is driven.
#[derive(Debug, Clone)]
pub enum Server {
    /// One kith node, or two for `federation` (senders on the first, receivers on the second).
    Kith {
        /// The senders' node (and the only one outside `federation`).
        senders: KithNode,
        /// The receivers' node, for `federation`.
        receivers: Option<Box<KithNode>>,
    },
    /// An XMPP server.
    Xmpp(XmppServer),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The named workload.
    pub scenario: Scenario,
    /// What is driven.
    pub server: Server,
    /// Connections in all (pairs take two each; the rest are idle).
    pub connections: usize,
    /// Sender→receiver pairs (0 for `idle`).
    pub pairs: usize,
    /// Target rate.
    pub rate: Rate,
    /// How long to send (or hold, for `idle`).
    pub duration: Duration,
    /// Sending before measuring, excluded from latency and throughput.
    pub warmup: Duration,
    /// Message size, bytes.
    pub size: usize,
    /// Messages in flight per pair at `max` rate.
    pub window: u64,
    /// Server processes whose RSS and CPU to report.
    pub pids: Vec<u32>,
    /// How many 127.0.0.x source addresses to spread connections over.
    pub source_addresses: usize,
    /// Connection handshakes at once.
    pub connect_concurrency: usize,
    /// How long to wait after opening connections before measuring memory.
    pub settle: Duration,
    /// After sending stops, how long to keep waiting for messages in flight when none arrives.
    pub drain_timeout: Duration,
    /// User names are this and a number.
    pub user_prefix: String,
}

/// How a run tells its caller what it is doing.
pub trait Observer: Send + Sync {
    /// A step began ("provisioning 10000 users", …).
    fn phase(&self, message: &str);
    /// About once a second while connecting and sending.
    fn progress(&self, progress: &Progress);
}

/// An observer that ignores everything (tests, `--quiet`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {
    fn phase(&self, _: &str) {}
    fn progress(&self, _: &Progress) {}
}

/// How a connection is opened: which server, as whom.
#[derive(Debug, Clone)]
enum Login {
    Kith { target: SocketAddr, token: String },
    Xmpp { target: SocketAddr, domain: String, user: String },
}

impl KithNode {
    /// The instance connection `index` opens its socket to.
    fn instance(&self, index: usize) -> SocketAddr {
        self.targets[index % self.targets.len()]
    }

    fn describe(&self) -> impl Iterator<Item = String> + '_ {
        self.targets.iter().map(|target| format!("http://{target}"))
    }
}

impl Login {
    async fn open(&self, source: IpAddr) -> Result<Link, BenchError> {
        match self {
            Self::Kith { target, token } => kith::connect(source, *target, token).await.map(Link::Kith),
            Self::Xmpp { target, domain, user } => {
                xmpp::connect(source, *target, domain, user, provision::PASSWORD).await.map(Link::Xmpp)
            }
        }
    }
}

/// An open connection of either protocol.
enum Link {
    Kith(kith::Ws),
    Xmpp(xmpp::Stream),
}

/// How long one connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a drain waits for a saturated server's backlog.
const MAX_DRAIN: Duration = Duration::from_secs(300);

/// How often progress is reported and the drain re-checked.
const TICK: Duration = Duration::from_secs(1);

/// Runs a load test; `interrupt` becoming true (Ctrl-C) ends it early with what was measured.
///
/// # Errors
/// [`BenchError`] for invalid options, failed provisioning, or when no connection at all could
/// be opened. Individual connection failures and lost messages are reported, not errors.
pub async fn run(
    options: RunOptions,
    observer: Arc<dyn Observer>,
    mut interrupt: watch::Receiver<bool>,
) -> Result<Report, BenchError> {
    validate(&options)?;
    let mut report = Report {
        scenario: options.scenario.name().to_owned(),
        pairs: options.pairs,
        rate: options.rate.to_string(),
        size: options.size,
        warmup_seconds: options.warmup.as_secs_f64(),
        load_average: [system::load_average(), None],
        ..Report::default()
    };

    let file_limit = system::raise_file_limit()?;
    report.file_limit = Some(file_limit);
    let needed = options.connections as u64 + RESERVED_FDS;
    if file_limit.soft < needed {
        report.warnings.push(format!(
            "the open-file limit is {} (hard {}), so at most about {} connections can be opened; asked for {}",
            file_limit.soft,
            file_limit.hard,
            file_limit.soft.saturating_sub(RESERVED_FDS),
            options.connections
        ));
    }

    let names: Vec<String> = (0..options.connections).map(|i| provision::username(&options.user_prefix, i)).collect();
    observer.phase(&format!("provisioning {} users", names.len()));
    let provision_started = Instant::now();
    let logins = provision_logins(&options, &names, &mut report).await?;
    report.provision_seconds = provision_started.elapsed().as_secs_f64();

    let watch = ProcWatch::new(options.pids.clone());
    let sample = |watch: &ProcWatch| (!watch.is_empty()).then(|| watch.sample()).transpose();
    let before = sample(&watch)?;

    // Connections start their role as soon as they are open (idle ones must answer pings
    // while the rest connect); senders wait for `go`.
    let recorder = Arc::new(Recorder::new());
    let (go_tx, go) = watch::channel(false);
    let (stop_sending_tx, stop_sending) = watch::channel(false);
    let (stop_tx, stop) = watch::channel(false);
    let signals = Signals { go, stop_sending, stop };
    let pairs: Vec<Arc<Pair>> = (0..options.pairs).map(|_| Arc::default()).collect();
    observer.phase(&format!("opening {} connections", options.connections));
    let connect_started = Instant::now();
    let gate = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (index, login) in logins.into_iter().enumerate() {
        let role = role_of(index, &options, &pairs, &names);
        let source = source_address(index, options.source_addresses);
        let (gate, recorder, signals, pairs) = (gate.clone(), recorder.clone(), signals.clone(), pairs.clone());
        let mut stop = signals.stop.clone();
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let opened = tokio::select! {
                opened = tokio::time::timeout(CONNECT_TIMEOUT, login.open(source)) => opened,
                () = crate::roles::raised(&mut stop) => return,
            };
            drop(permit);
            let link = match opened {
                Ok(Ok(link)) => link,
                failure => {
                    let why = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("timed out after {CONNECT_TIMEOUT:?}"),
                    };
                    recorder.failed.fetch_add(1, Ordering::Relaxed);
                    recorder.sample_error(|| why);
                    if let Some(pair) = pair_of(&role).and_then(|i| pairs.get(i)) {
                        pair.broken.store(true, Ordering::Relaxed);
                    }
                    return;
                }
            };
            recorder.established.fetch_add(1, Ordering::Relaxed);
            match link {
                Link::Kith(ws) => kith::drive(ws, role, recorder, signals).await,
                Link::Xmpp(stream) => xmpp::drive(stream, role, recorder, signals).await,
            }
        });
    }
    let total = options.connections as u64;
    let mut interrupted = false;
    let mut ticker = Ticker::new(&recorder, "connect");
    loop {
        let done = Recorder::get(&recorder.established) + Recorder::get(&recorder.failed);
        if done >= total {
            break;
        }
        if sleep_or_stop(Duration::from_millis(100), &mut interrupt).await {
            interrupted = true;
            break;
        }
        ticker.maybe_report(&recorder, observer.as_ref());
    }
    report.connections = Connections {
        requested: options.connections,
        established: Recorder::get(&recorder.established),
        failed: Recorder::get(&recorder.failed),
        disconnected: 0,
        connect_seconds: connect_started.elapsed().as_secs_f64(),
        source_addresses: options.source_addresses,
    };
    if report.connections.established == 0 && !interrupted {
        let _ = stop_tx.send(true);
        return Err(BenchError::NoConnections {
            failed: usize::try_from(report.connections.failed).unwrap_or(usize::MAX),
            first: recorder.error_samples().first().cloned().unwrap_or_default(),
        });
    }

    if !interrupted {
        observer.phase(&format!("settling for {:.0?}", options.settle));
        interrupted = sleep_or_stop(options.settle, &mut interrupt).await;
    }
    let connected = sample(&watch)?;

    // Traffic (or, for idle, holding the connections).
    let mut usage_window = None;
    if !interrupted {
        if options.pairs == 0 {
            observer.phase(&format!("holding the connections for {:.0?}", options.duration));
            let started = Instant::now();
            interrupted = hold(options.duration, &recorder, observer.as_ref(), &mut interrupt).await;
            report.duration_seconds = started.elapsed().as_secs_f64();
        } else {
            let active = pairs.iter().filter(|p| !p.broken.load(Ordering::Relaxed)).count();
            if active < options.pairs {
                report.warnings.push(format!(
                    "{} of {} pairs lost a connection and did not send",
                    options.pairs - active,
                    options.pairs
                ));
            }
            report.pairs = active;
            let traffic_start = (sample(&watch)?, Instant::now());
            observer.phase(&format!(
                "sending: {} pairs at {} for {:.0?} (+{:.0?} warm-up)",
                active, options.rate, options.duration, options.warmup
            ));
            let _ = go_tx.send(true);
            let mut measured_from = (Instant::now(), 0u64);
            if !options.warmup.is_zero() {
                interrupted = sleep_or_stop(options.warmup, &mut interrupt).await;
                recorder.reset_latencies();
                measured_from = (Instant::now(), Recorder::get(&recorder.received));
            }
            let measure_start_ns = recorder.clock.now_ns();
            if !interrupted {
                interrupted = hold(options.duration, &recorder, observer.as_ref(), &mut interrupt).await;
            }
            let _ = stop_sending_tx.send(true);
            report.duration_seconds = measured_from.0.elapsed().as_secs_f64();
            observer.phase("draining messages in flight");
            let drain = if interrupted { Duration::from_secs(2) } else { options.drain_timeout };
            let expect_stored = matches!(options.server, Server::Kith { .. });
            let drained = drain_pairs(&pairs, &recorder, expect_stored, drain).await;
            if !drained {
                report.warnings.push(format!(
                    "messages were still missing when nothing had arrived for {drain:?} (or after {MAX_DRAIN:?}); they count as lost"
                ));
            }
            let traffic_end = (sample(&watch)?, Instant::now());
            let received_measured = Recorder::get(&recorder.received) - measured_from.1;
            let last_ns = Recorder::get(&recorder.last_received_ns);
            let window_s = (last_ns.saturating_sub(measure_start_ns)) as f64 / 1e9;
            report.throughput = if window_s > 0.0 { received_measured as f64 / window_s } else { 0.0 };
            usage_window = Some((traffic_start, traffic_end));
        }
    }
    report.interrupted = interrupted;
    let end = sample(&watch)?;

    // Counts, after the drain.
    report.connections.disconnected = Recorder::get(&recorder.disconnected);
    report.sent = Recorder::get(&recorder.sent);
    report.stored = Recorder::get(&recorder.stored);
    report.received = Recorder::get(&recorder.received);
    report.duplicated = Recorder::get(&recorder.duplicated);
    report.lost = report.sent.saturating_sub(report.received);
    report.receipts = Recorder::get(&recorder.receipts);
    report.errors = Recorder::get(&recorder.errors);
    report.unexpected = Recorder::get(&recorder.unexpected);
    report.latency_ms = recorder.latency();
    report.stored_latency_ms = recorder.stored_latency();
    report.error_samples = recorder.error_samples();
    if report.connections.disconnected > 0 {
        report.warnings.push(format!(
            "{} connections were closed by the server or broke during the run",
            report.connections.disconnected
        ));
    }

    if let (Some(before), Some(connected), Some(end)) = (before, connected, end) {
        report.server = Some(usage(&watch, &report, before, connected, end, usage_window));
    }

    observer.phase("closing connections");
    let _ = stop_tx.send(true);
    let closing = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), closing).await.is_err() {
        tasks.abort_all();
    }
    report.load_average[1] = system::load_average();
    Ok(report)
}

fn validate(options: &RunOptions) -> Result<(), BenchError> {
    let fail = |m: String| Err(BenchError::Config(m));
    if options.connections == 0 {
        return fail("at least one connection is needed".into());
    }
    if options.connections < options.pairs * 2 {
        return fail(format!(
            "{} pairs need {} connections, got {}",
            options.pairs,
            options.pairs * 2,
            options.connections
        ));
    }
    if options.scenario != Scenario::Idle && options.pairs == 0 {
        return fail(format!("scenario {} needs at least one pair", options.scenario.name()));
    }
    if options.source_addresses == 0 || options.source_addresses > 254 {
        return fail(format!("source addresses must be 1–254, got {}", options.source_addresses));
    }
    match &options.server {
        Server::Kith { receivers: None, .. } if options.scenario == Scenario::Federation => {
            fail("federation needs two nodes: the receivers' node with --receiver-target".into())
        }
        Server::Xmpp(_) if options.scenario == Scenario::Federation => fail("federation is a kith scenario".into()),
        _ => Ok(()),
    }
}

/// Connection `index`'s role: pair `i` is connections `2i` (sender) and `2i + 1` (receiver);
/// the rest are idle.
fn role_of(index: usize, options: &RunOptions, pairs: &[Arc<Pair>], names: &[String]) -> Role {
    let pair = index / 2;
    if pair >= options.pairs {
        return Role::Idle;
    }
    if index % 2 == 1 {
        return Role::Receiver(ReceiverJob { index: pair, pair: pairs[pair].clone() });
    }
    let receiver_name = &names[index + 1];
    let to = match &options.server {
        Server::Kith { senders, receivers } => {
            let home = receivers.as_deref().unwrap_or(senders);
            format!("{receiver_name}@{}", home.server_name)
        }
        Server::Xmpp(server) => format!("{receiver_name}@{}", server.domain),
    };
    Role::Sender(SenderJob {
        index: pair,
        pair: pairs[pair].clone(),
        to,
        rate: options.rate,
        pairs: options.pairs,
        window: options.window,
        size: options.size,
    })
}

fn pair_of(role: &Role) -> Option<usize> {
    match role {
        Role::Idle => None,
        Role::Sender(job) => Some(job.index),
        Role::Receiver(job) => Some(job.index),
    }
}

/// The source address of connection `index`: 127.0.0.1, .2, … in turn, so that more
/// connections than one address pair has ports can be opened.
fn source_address(index: usize, count: usize) -> IpAddr {
    let host = u8::try_from(1 + index % count.max(1)).unwrap_or(1);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
}

/// Creates the accounts and returns how each connection logs in.
async fn provision_logins(
    options: &RunOptions,
    names: &[String],
    report: &mut Report,
) -> Result<Vec<Login>, BenchError> {
    match &options.server {
        Server::Kith { senders, receivers } => {
            report.protocol = "kith".into();
            report.targets.extend(senders.describe());
            let sender_tokens = kith_tokens(senders, names).await?;
            let receiver_tokens = match receivers {
                Some(node) => {
                    report.targets.extend(node.describe());
                    Some(kith_tokens(node, names).await?)
                }
                None => None,
            };
            Ok(sender_tokens
                .into_iter()
                .enumerate()
                .map(|(index, token)| {
                    let on_receiver_node = index / 2 < options.pairs && index % 2 == 1;
                    match (&receivers, &receiver_tokens) {
                        (Some(node), Some(tokens)) if on_receiver_node => {
                            Login::Kith { target: node.instance(index), token: tokens[index].clone() }
                        }
                        _ => Login::Kith { target: senders.instance(index), token },
                    }
                })
                .collect())
        }
        Server::Xmpp(server) => {
            report.protocol = "xmpp".into();
            report.targets.push(format!("xmpp://{}", server.target));
            if server.register {
                xmpp::register_all(
                    server.target,
                    &server.domain,
                    names,
                    provision::PASSWORD,
                    options.connect_concurrency.min(64),
                )
                .await?;
            }
            Ok(names
                .iter()
                .map(|name| Login::Xmpp { target: server.target, domain: server.domain.clone(), user: name.clone() })
                .collect())
        }
    }
}

/// Tokens for `names` on `node`: imported and minted with its files, or logged in over HTTP.
async fn kith_tokens(node: &KithNode, names: &[String]) -> Result<Vec<String>, BenchError> {
    match &node.files {
        Some(files) => {
            provision::import_users(files, names).await?;
            let minter = match &files.token_secret_file {
                Some(path) => TokenMinter::from_file(path, &node.server_name)?,
                None => TokenMinter::from_data_dir(&files.data_dir, &node.server_name)?,
            };
            names.iter().map(|name| minter.mint(name)).collect()
        }
        None => provision::login_all(node.instance(0), names).await,
    }
}

/// Waits `duration` (or until interrupted) while reporting progress; true if interrupted.
async fn hold(
    duration: Duration,
    recorder: &Recorder,
    observer: &dyn Observer,
    interrupt: &mut watch::Receiver<bool>,
) -> bool {
    let until = Instant::now() + duration;
    let mut ticker = Ticker::new(recorder, if duration.is_zero() { "hold" } else { "run" });
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if sleep_or_stop(left.min(TICK), interrupt).await {
            return true;
        }
        ticker.maybe_report(recorder, observer);
    }
}

/// Waits until every active pair's receiver has what its sender sent (or the server refused
/// what is missing), and, with `expect_stored`, every sender has its `sent` answers. Gives up
/// when nothing new has arrived for `quiet` (a saturated server still delivering its backlog
/// is waited for, up to [`MAX_DRAIN`]); false if it gave up.
async fn drain_pairs(pairs: &[Arc<Pair>], recorder: &Recorder, expect_stored: bool, quiet: Duration) -> bool {
    let started = Instant::now();
    let progress = || Recorder::get(&recorder.received) + Recorder::get(&recorder.stored);
    let mut last_progress = (Instant::now(), progress());
    loop {
        let outstanding = pairs.iter().any(|pair| pair.outstanding() > 0);
        let sent = Recorder::get(&recorder.sent);
        let errors = Recorder::get(&recorder.errors);
        // Messages the server refused (error answers) will never arrive: nothing to wait for.
        let refused = sent.saturating_sub(Recorder::get(&recorder.received)) <= errors;
        let answered = !expect_stored || Recorder::get(&recorder.stored) + errors >= sent;
        if (!outstanding || refused) && answered {
            return true;
        }
        if progress() > last_progress.1 {
            last_progress = (Instant::now(), progress());
        }
        if last_progress.0.elapsed() >= quiet || started.elapsed() >= MAX_DRAIN {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A sample of the server (if watched) and when it was taken.
type Mark = (Option<ProcSample>, Instant);

fn usage(
    watch: &ProcWatch,
    report: &Report,
    before: ProcSample,
    connected: ProcSample,
    end: ProcSample,
    traffic: Option<(Mark, Mark)>,
) -> ServerUsage {
    let established = report.connections.established;
    let mut usage = ServerUsage {
        pids: watch.pids().to_vec(),
        rss_before_bytes: before.rss_bytes,
        rss_connected_bytes: connected.rss_bytes,
        rss_end_bytes: end.rss_bytes,
        rss_per_connection_bytes: (established > 0)
            .then(|| connected.rss_bytes.saturating_sub(before.rss_bytes) as f64 / established as f64),
        ..ServerUsage::default()
    };
    if let Some(((Some(start), t0), (Some(stop), t1))) = traffic {
        usage.cpu_seconds = watch.seconds(stop.cpu_ticks.saturating_sub(start.cpu_ticks));
        let wall = t1.duration_since(t0).as_secs_f64();
        usage.cpu_cores = if wall > 0.0 { usage.cpu_seconds / wall } else { 0.0 };
        usage.cpu_seconds_per_1000_messages =
            (report.received > 0).then(|| usage.cpu_seconds / (report.received as f64 / 1000.0));
        usage.storage_bytes_per_message = start
            .write_bytes
            .zip(stop.write_bytes)
            .filter(|_| report.received > 0)
            .map(|(a, b)| b.saturating_sub(a) as f64 / report.received as f64);
    }
    usage
}

/// Reports progress about once a second.
struct Ticker {
    phase: &'static str,
    started: Instant,
    last: Instant,
    last_received: u64,
}

impl Ticker {
    fn new(recorder: &Recorder, phase: &'static str) -> Self {
        let now = Instant::now();
        Self { phase, started: now, last: now, last_received: Recorder::get(&recorder.received) }
    }

    fn maybe_report(&mut self, recorder: &Recorder, observer: &dyn Observer) {
        let now = Instant::now();
        let interval = now.duration_since(self.last);
        if interval < TICK {
            return;
        }
        let received = Recorder::get(&recorder.received);
        let rate = (received - self.last_received) as f64 / interval.as_secs_f64();
        self.last = now;
        self.last_received = received;
        observer.progress(&Progress {
            phase: self.phase,
            elapsed_seconds: now.duration_since(self.started).as_secs_f64(),
            established: Recorder::get(&recorder.established),
            failed: Recorder::get(&recorder.failed),
            sent: Recorder::get(&recorder.sent),
            received,
            rate,
            p99_ms: recorder.latency().p99,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_rotate_over_loopback() {
        assert_eq!(source_address(0, 4), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(source_address(5, 4), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(source_address(7, 1), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn scenarios_round_trip_their_names() {
        for s in [Scenario::Idle, Scenario::Throughput, Scenario::Latency, Scenario::Federation] {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
    }
}

//! CI's check of the load generator: a tiny `kith-load` run (a few connections, a second of
//! traffic) against a real node loses nothing and repeats nothing. Benchmarks themselves are
//! commands (`kith-load`, `bench/compare.sh`), not tests.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kith_bench::{KithNode, NodeFiles, Rate, RunOptions, Scenario, Server, Silent};

use crate::harness::{Backend, TestNode};
use crate::instances::TestCluster;

fn smoke_options(node: &TestNode, scenario: Scenario, rate: Rate) -> RunOptions {
    RunOptions {
        scenario,
        server: Server::Kith {
            senders: KithNode {
                targets: vec![node.addr],
                server_name: node.server_name.clone(),
                files: Some(NodeFiles {
                    data_dir: node.data_dir().to_path_buf(),
                    server_name: node.server_name.clone(),
                    database_url: None,
                    shards: Vec::new(),
                    token_secret_file: None,
                    kith_bin: TestNode::binary(),
                }),
            },
            receivers: None,
        },
        connections: 6,
        pairs: 2,
        rate,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        size: 64,
        window: 16,
        pids: vec![],
        source_addresses: 2,
        connect_concurrency: 8,
        settle: Duration::ZERO,
        drain_timeout: Duration::from_secs(10),
        user_prefix: "smoke".into(),
    }
}

#[tokio::test]
async fn a_tiny_load_run_loses_and_repeats_nothing() -> Result<()> {
    let node = TestNode::start_with(Backend::Sqlite, &["--message-rate", "0"]).await?;
    let (_interrupt, interrupted) = tokio::sync::watch::channel(false);
    let report =
        kith_bench::run(smoke_options(&node, Scenario::Throughput, Rate::Max), Arc::new(Silent), interrupted).await?;
    assert_eq!(report.connections.established, 6, "{report}");
    assert_eq!(report.connections.failed, 0, "{report}");
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    assert_eq!(report.received, report.sent, "{report}");
    assert_eq!(report.stored, report.sent, "every send answered by `sent`: {report}");
    assert_eq!(report.errors, 0, "{report}");
    assert!(report.latency_ms.count > 0 && report.throughput > 0.0, "{report}");
    Ok(())
}

#[tokio::test]
async fn a_fixed_rate_run_never_sends_faster_than_asked() -> Result<()> {
    let node = TestNode::start_with(Backend::Sqlite, &["--message-rate", "0"]).await?;
    let (_interrupt, interrupted) = tokio::sync::watch::channel(false);
    let report =
        kith_bench::run(smoke_options(&node, Scenario::Latency, Rate::PerSecond(100.0)), Arc::new(Silent), interrupted)
            .await?;
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    // Never faster than asked for: at most 100/s over the time measured, plus each pair's first
    // tick. (Fewer is no failure: a stalled test process sends late; the pacer's rate itself is
    // a unit test of kith-bench on paused time.)
    let most = 100.0 * report.duration_seconds + 2.0;
    assert!(report.sent > 0 && report.sent as f64 <= most, "at most {most:.0}: {report}");
    Ok(())
}

/// The scale-out figures come from `kith-load` spreading connections over a node's instances;
/// this checks that such a run really crosses instances and keeps every promise: two instances
/// on two shards, every pair's sender on one and receiver on the other.
#[tokio::test]
async fn a_load_run_over_two_instances_loses_and_repeats_nothing() -> Result<()> {
    let Some(mut cluster) = TestCluster::prepare("bench.two", 2).await? else { return Ok(()) };
    for _ in 0..2 {
        cluster.prepare_instance(&["--message-rate", "0", "--metrics-listen", "127.0.0.1:0"])?.launch().await?;
    }
    let mut options = smoke_options(cluster.instance(0), Scenario::Throughput, Rate::Max);
    options.server = Server::Kith {
        senders: KithNode {
            targets: cluster.instances.iter().map(|node| node.addr).collect(),
            server_name: cluster.server_name.clone(),
            files: Some(NodeFiles {
                data_dir: cluster.instance(0).data_dir().to_path_buf(),
                server_name: cluster.server_name.clone(),
                database_url: None,
                shards: cluster.shards.iter().map(|shard| shard.url().to_owned()).collect(),
                token_secret_file: Some(cluster.token_secret_file()),
                kith_bin: TestNode::binary(),
            }),
        },
        receivers: None,
    };
    let (_interrupt, interrupted) = tokio::sync::watch::channel(false);
    let report = kith_bench::run(options, Arc::new(Silent), interrupted).await?;
    assert_eq!(report.targets.len(), 2, "{report}");
    assert_eq!(report.connections.established, 6, "{report}");
    assert!(report.sent > 0, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    assert_eq!(report.received, report.sent, "{report}");
    assert_eq!(report.stored, report.sent, "{report}");
    // Every receiver really was on the other instance: instance 0 took every message in and
    // pushed none (no receiver had a session there); instance 1 pushed every one of them.
    let counter = |metrics: &str, name: &str| -> Result<u64> {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .ok_or_else(|| anyhow::anyhow!("no {name} in\n{metrics}"))?
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))
    };
    let mut metrics = Vec::new();
    for node in &cluster.instances {
        let addr = node.metrics_addr().ok_or_else(|| anyhow::anyhow!("an instance without --metrics-listen"))?;
        metrics.push(crate::harness::http().get(format!("http://{addr}/metrics")).send().await?.text().await?);
    }
    assert_eq!(counter(&metrics[0], "kith_messages_in_total")?, report.sent, "{report}");
    assert_eq!(counter(&metrics[0], "kith_messages_pushed_total")?, 0, "{report}");
    assert_eq!(counter(&metrics[1], "kith_messages_pushed_total")?, report.received, "{report}");
    Ok(())
}

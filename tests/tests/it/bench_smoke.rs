//! CI's check of the load generator: a tiny `kith-load` run (a few connections, a second of
//! traffic) against a real node loses nothing and repeats nothing. Benchmarks themselves are
//! commands (`kith-load`, `bench/compare.sh`), not tests.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use kith_bench::{KithNode, NodeFiles, Rate, RunOptions, Scenario, Server, Silent};

use crate::harness::{Backend, TestNode};

fn smoke_options(node: &TestNode, scenario: Scenario, rate: Rate) -> RunOptions {
    RunOptions {
        scenario,
        server: Server::Kith {
            senders: KithNode {
                target: node.addr,
                server_name: node.server_name.clone(),
                files: Some(NodeFiles {
                    data_dir: node.data_dir().to_path_buf(),
                    server_name: node.server_name.clone(),
                    database_url: None,
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

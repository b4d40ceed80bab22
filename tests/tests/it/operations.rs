//! What an operator meets: `/metrics`, the node-wide connection cap, and stores that really
//! flush their commits.

use std::collections::HashMap;

use anyhow::{Context, Result};
use kith_client::ClientError;
use kith_proto::ErrorCode;

use crate::harness::{Backend, TestNode, eventually, http};

/// A pinned peer that never runs: what is sent to it waits in the outbox.
fn absent_peer(name: &str) -> String {
    let peer_id = kith_federation::NodeKey::ephemeral().peer_id();
    format!("{name}=/ip4/{}/tcp/4001/p2p/{peer_id}", crate::harness::unique_loopback())
}

/// `GET /metrics`, checked to be OpenMetrics text (every sample's family described, `# EOF`
/// last), as sample name (with labels) → value.
async fn metrics(node: &TestNode) -> Result<HashMap<String, f64>> {
    let addr = node.metrics_addr().context("the node logged no metrics address")?;
    let response = http().get(format!("http://{addr}/metrics")).send().await?;
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let text = response.text().await?;
    assert!(text.ends_with("# EOF\n"), "{text}");
    let mut samples = HashMap::new();
    let mut described = Vec::new();
    for line in text.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            described.push(help.split_whitespace().next().unwrap_or_default().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, value) = line.rsplit_once(' ').with_context(|| format!("not a sample: {line}"))?;
            samples.insert(name.to_owned(), value.parse::<f64>().with_context(|| format!("not a number: {line}"))?);
        }
    }
    for name in samples.keys() {
        let sample = name.split('{').next().unwrap_or_default();
        // A counter's samples end in _total, a histogram's in _bucket, _sum and _count, an
        // info's in _info; the family is what is before.
        let family = ["_total", "_bucket", "_sum", "_count", "_info"]
            .iter()
            .find_map(|suffix| sample.strip_suffix(suffix).filter(|f| described.iter().any(|d| d == f)))
            .unwrap_or(sample);
        assert!(described.iter().any(|d| d == family), "{family} has no HELP line:\n{text}");
    }
    Ok(samples)
}

#[tokio::test]
async fn metrics_count_sessions_and_what_waits_for_each_peer_and_only_on_their_own_address() -> Result<()> {
    let mut node = TestNode::prepare("test", Backend::Sqlite, &["--metrics-listen", "127.0.0.1:0"])?;
    node.pin_binding(absent_peer("beta"));
    node.launch().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;

    let idle = metrics(&node).await?;
    assert_eq!(idle.get("kith_sessions"), Some(&0.0), "{idle:?}");
    assert!(!idle.keys().any(|k| k.starts_with("kith_outbox_depth")), "nothing waits yet: {idle:?}");

    let _phone = alice.connect().await?;
    let laptop = alice.connect().await?;
    let _bob_ws = bob.connect().await?;
    for i in 0..3 {
        alice.send_message("carol@beta", &format!("waiting {i}"), None).await?;
    }
    let busy = metrics(&node).await?;
    assert_eq!(busy.get("kith_sessions"), Some(&3.0), "{busy:?}");
    assert_eq!(busy.get("kith_outbox_depth{destination=\"beta\"}"), Some(&3.0), "{busy:?}");
    let age = busy.get("kith_outbox_oldest_age_seconds{destination=\"beta\"}").copied();
    assert!(age.is_some_and(|age| age >= 0.0), "{busy:?}");

    laptop.close().await?;
    eventually("a closed session is no longer counted", async || {
        let now = metrics(&node).await?;
        Ok(if now.get("kith_sessions") == Some(&2.0) { Ok(()) } else { Err(now) })
    })
    .await?;
    // Not on the client API.
    assert_eq!(http().get(node.url("/metrics")).send().await?.status(), 404);
    Ok(())
}

#[tokio::test]
async fn the_node_holds_at_most_max_connections_and_a_freed_slot_is_usable_again() -> Result<()> {
    let node = TestNode::start_with(Backend::Sqlite, &["--max-connections", "2"]).await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let first = alice.connect().await?;
    let _second = bob.connect().await?;
    // Whoever asks: the cap is for the node, not per user.
    for user in [&alice, &bob] {
        let third = user.connect().await;
        assert!(matches!(third, Err(ClientError::Api { status: 503, code: ErrorCode::Unavailable, .. })), "{third:?}");
    }
    // REST is not capped.
    alice.send_message("bob", "still here", None).await?;
    first.close().await?;
    let again = eventually("a slot is free once a connection closed", async || match bob.connect().await {
        Ok(connection) => Ok(Ok(connection)),
        Err(ClientError::Api { status: 503, .. }) => Ok(Err("503")),
        Err(e) => Err(e.into()),
    })
    .await?;
    drop(again);
    Ok(())
}

#[tokio::test]
async fn sqlite_commits_are_flushed_synchronous_full_read_back_over_the_nodes_connection() -> Result<()> {
    let node = TestNode::start().await?;
    let line = node.log_line("listening on").await?;
    assert!(line.contains("(store: sqlite") && line.contains("(synchronous=FULL)"), "{line}");
    Ok(())
}

#[tokio::test]
async fn postgres_commits_wait_for_their_flush_and_a_connection_that_would_not_is_refused() -> Result<()> {
    let Some(backend) = Backend::postgres().await else { return Ok(()) };
    let node = TestNode::start_with(backend.clone(), &[]).await?;
    let line = node.log_line("listening on").await?;
    assert!(line.contains("(store: postgres") && line.contains("(synchronous_commit=on)"), "{line}");
    drop(node);

    // The same database, asked not to wait for the flush: the node will not run on it.
    let mut unsafe_node = TestNode::prepare("test", backend.clone(), &[])?;
    let url = format!("{}&options[synchronous_commit]=off", unsafe_node.database_url());
    unsafe_node.omit_flag("--database-url");
    unsafe_node.set_args(&["--database-url", &url]);
    let refused = unsafe_node.launch().await;
    let error = format!("{:#}", refused.err().context("the node started without durable commits")?);
    assert!(error.contains("synchronous_commit=off"), "{error}");
    assert!(error.contains("could be lost in a power cut"), "{error}");
    Ok(())
}

//! A message the node acknowledged survives anything: SIGKILL right after `sent`, a graceful
//! restart; and a graceful shutdown closes sessions properly.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use kith_client::ClientError;
use kith_proto::{MessageId, ServerFrame};

use crate::harness::{Backend, PASSWORD, PATIENCE, TestNode, closed, frame_where, message, next_any, send};

async fn killed_after_sent_the_message_is_there_after_restart(backend: Backend) -> Result<()> {
    let mut node = TestNode::start_with(backend, &[]).await?;
    let alice = node.user("alice").await?;
    node.user("bob").await?;
    let mut ws = alice.connect().await?;
    ws.send(&send("precious", "bob", "do not lose me")).await?;
    let acked = frame_where(&mut ws, |f| match f {
        ServerFrame::Sent { message_id, .. } => Some(message_id),
        _ => None,
    })
    .await?;
    node.kill().await?;
    node.restart().await?;

    let bob = node.client().login("bob", PASSWORD).await?;
    let history = bob.history("alice", None, None).await?;
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].message_id, acked);
    assert_eq!(history.messages[0].message, "do not lose me");
    // And it is still pending for bob: his first connect delivers it.
    let mut bob_ws = bob.connect().await?;
    assert_eq!(frame_where(&mut bob_ws, message).await?.message_id, acked);
    Ok(())
}

#[tokio::test]
async fn killed_after_sent_the_message_is_there_after_restart_on_sqlite() -> Result<()> {
    killed_after_sent_the_message_is_there_after_restart(Backend::Sqlite).await
}

#[tokio::test]
async fn killed_after_sent_the_message_is_there_after_restart_on_postgres() -> Result<()> {
    match Backend::postgres().await {
        Some(backend) => killed_after_sent_the_message_is_there_after_restart(backend).await,
        None => Ok(()),
    }
}

#[tokio::test]
async fn every_acknowledged_message_of_a_burst_survives_sigkill() -> Result<()> {
    let mut node = TestNode::start_with(Backend::Sqlite, &["--message-rate", "0"]).await?;
    let alice = node.user("alice").await?;
    node.user("bob").await?;
    let mut ws = alice.connect().await?;
    for i in 0..200 {
        ws.send(&send(&format!("c-{i}"), "bob", &format!("burst {i}"))).await?;
    }
    // Kill as soon as half are acknowledged; every acknowledged one must survive.
    let mut acked = Vec::new();
    while acked.len() < 100 {
        acked.push(
            frame_where(&mut ws, |f| match f {
                ServerFrame::Sent { message_id, .. } => Some(message_id),
                _ => None,
            })
            .await?,
        );
    }
    node.kill().await?;
    node.restart().await?;
    let bob = node.client().login("bob", PASSWORD).await?;
    let mut stored = std::collections::HashSet::new();
    let mut before = None;
    loop {
        let page = bob.history("alice", before, Some(100)).await?;
        stored.extend(page.messages.iter().map(|m| m.message_id));
        match page.next_before {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    Ok(())
}

/// Sends a burst of 200 over one socket and stops the node with SIGTERM once a quarter are
/// acknowledged; after a restart, sends all 200 again with the same `clientMessageId`s. Each
/// must be stored exactly once, an acknowledged one under the id it was acknowledged with.
async fn a_burst_cut_by_sigterm_and_sent_again_whole_is_stored_exactly_once(backend: Backend) -> Result<()> {
    const BURST: usize = 200;
    let mut node = TestNode::start_with(backend, &["--message-rate", "0"]).await?;
    let alice = node.user("alice").await?;
    node.user("bob").await?;
    let text = |i: usize| format!("burst {i:03}");
    let mut ws = alice.connect().await?;
    for i in 0..BURST {
        ws.send(&send(&format!("c-{i}"), "bob", &text(i))).await?;
    }
    let mut acked = HashMap::new();
    while acked.len() < BURST / 4 {
        let (client_id, id) = frame_where(&mut ws, sent).await?;
        acked.insert(client_id, id);
    }
    // Keep reading while the node stops, as a live client does: more answers may come first.
    let reading = async {
        loop {
            match tokio::time::timeout(PATIENCE, ws.next_frame()).await {
                Ok(Ok(frame)) => {
                    if let Some((client_id, id)) = sent(frame) {
                        acked.insert(client_id, id);
                    }
                }
                Ok(Err(ClientError::Closed { code, .. })) => return Ok(code),
                Ok(Err(e)) => return Err(anyhow::Error::from(e)),
                Err(_) => anyhow::bail!("no close from the stopping node in {PATIENCE:?}"),
            }
        }
    };
    let (code, exited) = tokio::join!(reading, node.terminate());
    assert!(exited?, "kith exits 0 on SIGTERM");
    assert_eq!(code?, 1001);

    node.restart().await?;
    let alice = node.client().login("alice", PASSWORD).await?;
    let mut ws = alice.connect().await?;
    for i in 0..BURST {
        ws.send(&send(&format!("c-{i}"), "bob", &text(i))).await?;
    }
    let mut answers = HashMap::new();
    while answers.len() < BURST {
        let (client_id, id) = frame_where(&mut ws, sent).await?;
        answers.insert(client_id, id);
    }
    for (client_id, id) in &acked {
        assert_eq!(answers.get(client_id), Some(id), "{client_id} keeps the id it was acknowledged with");
    }

    let bob = node.client().login("bob", PASSWORD).await?;
    let mut stored = Vec::new();
    let mut before = None;
    loop {
        let page = bob.history("alice", before, Some(100)).await?;
        stored.extend(page.messages.iter().map(|m| (m.message_id, m.message.clone())));
        match page.next_before {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    assert_eq!(stored.len(), BURST, "each stored once, none lost");
    let ids: HashSet<_> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, answers.values().copied().collect::<HashSet<_>>(), "what is stored is what was answered");
    let texts: HashSet<_> = stored.iter().map(|(_, text)| text.clone()).collect();
    assert_eq!(texts.len(), BURST, "no text twice");
    Ok(())
}

fn sent(frame: ServerFrame) -> Option<(String, MessageId)> {
    match frame {
        ServerFrame::Sent { client_message_id, message_id, .. } => Some((client_message_id, message_id)),
        _ => None,
    }
}

#[tokio::test]
async fn a_burst_cut_by_sigterm_and_sent_again_whole_is_stored_exactly_once_on_sqlite() -> Result<()> {
    a_burst_cut_by_sigterm_and_sent_again_whole_is_stored_exactly_once(Backend::Sqlite).await
}

#[tokio::test]
async fn a_burst_cut_by_sigterm_and_sent_again_whole_is_stored_exactly_once_on_postgres() -> Result<()> {
    match Backend::postgres().await {
        Some(backend) => a_burst_cut_by_sigterm_and_sent_again_whole_is_stored_exactly_once(backend).await,
        None => Ok(()),
    }
}

#[tokio::test]
async fn graceful_shutdown_closes_sessions_with_1001_and_exits_cleanly() -> Result<()> {
    let mut node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let mut ws = alice.connect().await?;
    assert_eq!(next_any(&mut ws).await?, ServerFrame::Synced);
    // Keep reading while the node stops, as a live client does, so it answers the close.
    let (closed, exited) = tokio::join!(closed(&mut ws), node.terminate());
    assert!(exited?, "kith exits 0 on SIGTERM");
    assert_eq!(closed?.0, 1001, "going away");
    Ok(())
}

#[tokio::test]
async fn health_and_readiness_answer_and_the_openapi_document_lists_every_endpoint() -> Result<()> {
    let node = TestNode::start().await?;
    let http = crate::harness::http();
    for probe in ["/healthz", "/readyz"] {
        let response = http.get(node.url(probe)).send().await?;
        assert_eq!(response.status(), 200, "{probe}");
    }
    let doc: serde_json::Value = http.get(node.url("/api/v1/openapi.json")).send().await?.json().await?;
    let paths = doc["paths"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    for path in [
        "/api/v1/register",
        "/api/v1/login",
        "/api/v1/messages",
        "/api/v1/presence/{userId}",
        "/api/v1/settings/presence",
        "/api/v1/ws",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.iter().any(|p| p == path), "{path} missing from {paths:?}");
    }
    assert!(doc["components"]["schemas"]["ServerFrame"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    Ok(())
}

//! History: pages walk a conversation back in time, with no gaps or repeats.

use std::collections::HashSet;

use anyhow::Result;
use kith_proto::MessageId;

use crate::harness::{Backend, TestNode};

/// Walks `caller`'s conversation with `peer` from the newest page back, returning ids oldest
/// first.
async fn walk(caller: &kith_client::Authed, peer: &str, limit: u32) -> Result<Vec<String>> {
    let mut pages = Vec::new();
    let mut before: Option<MessageId> = None;
    loop {
        let page = caller.history(peer, before, Some(limit)).await?;
        assert!(page.messages.len() <= limit as usize);
        assert!(page.messages.windows(2).all(|w| w[0].message_id < w[1].message_id), "oldest first within a page");
        pages.push(page.messages.iter().map(|m| m.message.clone()).collect::<Vec<_>>());
        match page.next_before {
            Some(cursor) => before = Some(cursor),
            None => break,
        }
    }
    pages.reverse();
    Ok(pages.concat())
}

async fn pagination_walks_a_250_message_conversation(backend: Backend) -> Result<()> {
    let node = TestNode::start_with(backend, &["--message-rate", "0"]).await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let mut expected = Vec::new();
    for i in 0..250 {
        let (from, to) = if i % 3 == 0 { (&bob, "alice") } else { (&alice, "bob") };
        let text = format!("message {i:03}");
        from.send_message(to, &text, None).await?;
        expected.push(text);
    }
    for limit in [50, 100, 7] {
        let walked = walk(&alice, "bob", limit).await?;
        assert_eq!(walked.len(), 250, "no gaps (limit {limit})");
        assert_eq!(walked.iter().collect::<HashSet<_>>().len(), 250, "no repeats (limit {limit})");
        assert_eq!(walked, expected, "in order (limit {limit})");
    }
    // Bob's mailbox holds the same conversation.
    assert_eq!(walk(&bob, "alice", 100).await?, expected);

    // The default page is the newest 50, and the first page ends where the walk started.
    let first = alice.history("bob", None, None).await?;
    assert_eq!(first.messages.len(), 50);
    assert_eq!(first.messages.last().map(|m| m.message.as_str()), Some("message 249"));
    Ok(())
}

#[tokio::test]
async fn pagination_walks_a_250_message_conversation_on_sqlite() -> Result<()> {
    pagination_walks_a_250_message_conversation(Backend::Sqlite).await
}

#[tokio::test]
async fn pagination_walks_a_250_message_conversation_on_postgres() -> Result<()> {
    match Backend::postgres().await {
        Some(backend) => pagination_walks_a_250_message_conversation(backend).await,
        None => Ok(()),
    }
}

#[tokio::test]
async fn a_short_conversation_is_one_page_and_an_empty_one_is_empty() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    let empty = alice.history("bob", None, None).await?;
    assert!(empty.messages.is_empty());
    assert_eq!(empty.next_before, None);
    for i in 0..3 {
        alice.send_message("bob", &i.to_string(), None).await?;
    }
    let page = bob.history("alice", None, None).await?;
    assert_eq!(page.messages.iter().map(|m| m.message.as_str()).collect::<Vec<_>>(), ["0", "1", "2"]);
    assert_eq!(page.next_before, None, "null at the start of the conversation");
    Ok(())
}

//! The store trait's promises, each checked against SQLite and PostgreSQL from one body.

use std::sync::Arc;

use anyhow::Result;
use kith_node::store::{
    self, AppendOutcome, NewMessage, NewUser, Receipt, Store, StoreError, StoreOptions,
};
use kith_proto::{ClientMessageId, MessageId, MessageStatus, Timestamp, UserId};

use crate::harness::Backend;

/// Runs a test body against a fresh SQLite file and a fresh PostgreSQL schema.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() -> anyhow::Result<()> {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite:{}", dir.path().join("kith.db").display());
                super::$name(super::open(&url).await?).await
            }

            #[tokio::test]
            async fn postgres() -> anyhow::Result<()> {
                match crate::harness::Backend::postgres().await {
                    Some(super::Backend::Postgres(url)) => super::$name(super::open(&url).await?).await,
                    _ => Ok(()),
                }
            }
        }
    )*};
}

on_every_store!(
    a_message_is_stored_in_both_mailboxes,
    a_repeated_client_message_id_stores_nothing,
    receipts_only_move_forward_and_only_the_receiver_may_give_them,
    pending_messages_come_in_arrival_order_until_acked,
    history_pages_by_message_id,
    accounts_are_unique_and_imports_skip_existing_ones,
    presence_is_reset_after_a_restart,
    concurrent_writes_commit_together_and_in_order,
);

async fn open(url: &str) -> Result<Arc<dyn Store>> {
    Ok(store::open(url, &StoreOptions::default()).await?)
}

fn user(name: &str) -> UserId {
    UserId::parse(&format!("{name}@test")).unwrap_or_else(|e| panic!("{e}"))
}

fn new_message(from: &UserId, to: &UserId, text: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        message_id: MessageId::now(),
        sender: from.clone(),
        receiver: to.clone(),
        content: text.into(),
        timestamp: Timestamp::now(),
        client_message_id: client_id
            .map(|c| ClientMessageId::parse(c).unwrap_or_else(|e| panic!("{e}"))),
    }
}

async fn append(store: &dyn Store, message: NewMessage) -> Result<AppendOutcome> {
    Ok(store.append_message(message).await?.await?)
}

async fn receipt(
    store: &dyn Store,
    reader: &UserId,
    id: MessageId,
    status: MessageStatus,
) -> Result<Option<MessageStatus>, StoreError> {
    let outcome = store
        .record_receipt(Receipt {
            reader: reader.clone(),
            message_id: id,
            status,
            at: Timestamp::now(),
        })
        .await?
        .await?;
    Ok(outcome.advanced_to)
}

async fn a_message_is_stored_in_both_mailboxes(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob) = (user("alice"), user("bob"));
    let sent = new_message(&alice, &bob, "hello", None);
    let id = sent.message_id;
    assert!(matches!(
        append(store.as_ref(), sent).await?,
        AppendOutcome::Stored { .. }
    ));
    for (owner, peer) in [(&alice, &bob), (&bob, &alice)] {
        let history = store.history(owner, peer, None, 10).await?;
        assert_eq!(history.len(), 1, "{owner}'s mailbox");
        assert_eq!(
            (history[0].message_id, history[0].message.as_str()),
            (id, "hello")
        );
        assert_eq!(history[0].status, MessageStatus::Sent);
    }
    // The sender's copy is not pending for the sender.
    assert!(store.pending(&alice, 0, 10).await?.is_empty());
    assert_eq!(store.pending(&bob, 0, 10).await?.len(), 1);
    store.close().await;
    Ok(())
}

async fn a_repeated_client_message_id_stores_nothing(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob) = (user("alice"), user("bob"));
    let first = append(
        store.as_ref(),
        new_message(&alice, &bob, "once", Some("c1")),
    )
    .await?;
    let again = append(
        store.as_ref(),
        new_message(&alice, &bob, "once", Some("c1")),
    )
    .await?;
    let (
        AppendOutcome::Stored {
            message_id,
            timestamp,
            ..
        },
        AppendOutcome::Duplicate {
            message_id: dup,
            timestamp: dup_ts,
        },
    ) = (first, again)
    else {
        panic!("expected Stored then Duplicate");
    };
    assert_eq!((message_id, timestamp), (dup, dup_ts));
    assert_eq!(store.history(&bob, &alice, None, 10).await?.len(), 1);
    // Same id, other sender: a new message.
    assert!(matches!(
        append(
            store.as_ref(),
            new_message(&bob, &alice, "mine", Some("c1"))
        )
        .await?,
        AppendOutcome::Stored { .. }
    ));
    store.close().await;
    Ok(())
}

async fn receipts_only_move_forward_and_only_the_receiver_may_give_them(
    store: Arc<dyn Store>,
) -> Result<()> {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let message = new_message(&alice, &bob, "hi", None);
    let id = message.message_id;
    append(store.as_ref(), message).await?;

    assert!(matches!(
        receipt(store.as_ref(), &carol, id, MessageStatus::Read).await,
        Err(StoreError::MessageNotFound(_))
    ));
    assert!(matches!(
        receipt(store.as_ref(), &alice, id, MessageStatus::Read).await,
        Err(StoreError::MessageNotFound(_))
    ));

    assert_eq!(
        receipt(store.as_ref(), &bob, id, MessageStatus::Delivered).await?,
        Some(MessageStatus::Delivered)
    );
    assert_eq!(
        receipt(store.as_ref(), &bob, id, MessageStatus::Delivered).await?,
        None
    );
    assert_eq!(
        receipt(store.as_ref(), &bob, id, MessageStatus::Read).await?,
        Some(MessageStatus::Read)
    );
    assert_eq!(
        receipt(store.as_ref(), &bob, id, MessageStatus::Delivered).await?,
        None,
        "never backwards"
    );
    for (owner, peer) in [(&alice, &bob), (&bob, &alice)] {
        assert_eq!(
            store.history(owner, peer, None, 1).await?[0].status,
            MessageStatus::Read
        );
    }
    assert!(store.pending(&bob, 0, 10).await?.is_empty());
    store.close().await;
    Ok(())
}

async fn pending_messages_come_in_arrival_order_until_acked(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let mut ids = Vec::new();
    for i in 0..10 {
        let from = if i % 2 == 0 { &alice } else { &carol };
        let message = new_message(from, &bob, &i.to_string(), None);
        ids.push(message.message_id);
        append(store.as_ref(), message).await?;
    }
    let first = store.pending(&bob, 0, 4).await?;
    let rest = store
        .pending(&bob, first.last().map_or(0, |p| p.seq), 100)
        .await?;
    let order: Vec<_> = first
        .iter()
        .chain(&rest)
        .map(|p| p.message.message_id)
        .collect();
    assert_eq!(order, ids);

    receipt(store.as_ref(), &bob, ids[3], MessageStatus::Delivered).await?;
    let after: Vec<_> = store
        .pending(&bob, 0, 100)
        .await?
        .into_iter()
        .map(|p| p.message.message_id)
        .collect();
    assert_eq!(after.len(), 9);
    assert!(!after.contains(&ids[3]));
    store.close().await;
    Ok(())
}

async fn history_pages_by_message_id(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    let mut ids = Vec::new();
    for i in 0..25 {
        let message = new_message(&alice, &bob, &i.to_string(), None);
        ids.push(message.message_id);
        append(store.as_ref(), message).await?;
    }
    append(
        store.as_ref(),
        new_message(&alice, &carol, "other conversation", None),
    )
    .await?;
    let newest = store.history(&alice, &bob, None, 10).await?;
    assert_eq!(
        newest.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        ids[15..]
    );
    let older = store.history(&alice, &bob, Some(ids[15]), 10).await?;
    assert_eq!(
        older.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        ids[5..15]
    );
    let oldest = store.history(&alice, &bob, Some(ids[5]), 10).await?;
    assert_eq!(
        oldest.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        ids[..5]
    );
    store.close().await;
    Ok(())
}

async fn accounts_are_unique_and_imports_skip_existing_ones(store: Arc<dyn Store>) -> Result<()> {
    let account = |name: &str| NewUser {
        user_id: user(name),
        password_hash: "$argon2id$x".into(),
        created_at: Timestamp::now(),
    };
    store.create_user(account("alice")).await?.await?;
    assert!(matches!(
        store.create_user(account("alice")).await?.await,
        Err(StoreError::UserExists(_))
    ));
    let report = store
        .import_users(vec![account("alice"), account("bob"), account("carol")])
        .await?
        .await?;
    assert_eq!((report.created, report.skipped), (2, 1));
    let bob = store
        .user(&user("bob"))
        .await?
        .ok_or_else(|| anyhow::anyhow!("bob missing"))?;
    assert_eq!(bob.password_hash, "$argon2id$x");
    assert!(store.user(&user("dave")).await?.is_none());
    store.close().await;
    Ok(())
}

async fn presence_is_reset_after_a_restart(store: Arc<dyn Store>) -> Result<()> {
    let account = |name: &str| NewUser {
        user_id: user(name),
        password_hash: "h".into(),
        created_at: Timestamp::now(),
    };
    store
        .import_users(vec![account("alice"), account("bob")])
        .await?
        .await?;
    store
        .set_presence(&user("alice"), true, Timestamp::from_millis(1_000))
        .await?
        .await?;
    store
        .set_presence(&user("bob"), false, Timestamp::from_millis(2_000))
        .await?
        .await?;
    assert_eq!(
        store
            .reset_presence(Timestamp::from_millis(5_000))
            .await?
            .await?,
        1
    );
    let alice = store.user(&user("alice")).await?.and_then(|r| r.last_seen);
    let bob = store.user(&user("bob")).await?.and_then(|r| r.last_seen);
    assert_eq!(
        alice,
        Some(Timestamp::from_millis(5_000)),
        "was online: last seen at the reset"
    );
    assert_eq!(
        bob,
        Some(Timestamp::from_millis(2_000)),
        "was offline: unchanged"
    );
    store.close().await;
    Ok(())
}

async fn concurrent_writes_commit_together_and_in_order(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob) = (user("alice"), user("bob"));
    // Enqueue 500 without waiting, as a busy connection does, then wait for all commits.
    let mut commits = Vec::new();
    let mut ids = Vec::new();
    for i in 0..500 {
        let message = new_message(&alice, &bob, &i.to_string(), Some(&format!("c{i}")));
        ids.push(message.message_id);
        commits.push(store.append_message(message).await?);
    }
    for commit in commits {
        assert!(matches!(commit.await?, AppendOutcome::Stored { .. }));
    }
    let pending: Vec<_> = store
        .pending(&bob, 0, 1000)
        .await?
        .into_iter()
        .map(|p| p.message.message_id)
        .collect();
    assert_eq!(pending, ids, "arrival order is the order of enqueueing");
    store.close().await;
    Ok(())
}

//! The store trait's promises, each checked against SQLite and PostgreSQL from one body.

use std::sync::Arc;

use anyhow::Result;
use kith_node::store::{
    self, AppendOutcome, InboxKey, NewMessage, NewUser, OutboxEntry, PublishedKeys, Receipt, RemoteReceipt, Store,
    StoreError, StoreOptions, TrustOp, TrustOutcome,
};
use kith_proto::{ClientMessageId, DeviceId, MessageId, MessageStatus, Timestamp, UserId};

/// Every test user's one device.
const D0: DeviceId = DeviceId(0);

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
    each_device_has_its_own_queue,
    a_user_has_at_most_five_devices,
    one_time_prekeys_are_claimed_once,
    the_user_identity_is_kept_until_reset_and_removals_are_bounded,
    a_message_to_another_node_is_queued_with_the_senders_copy,
    envelopes_from_another_node_apply_once,
);

/// Opens a store holding the accounts the tests use, each with device 0.
async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let store = store::open(url, &StoreOptions::default()).await?;
    let accounts = ["alice", "bob", "carol"]
        .iter()
        .map(|name| NewUser {
            user_id: user(name),
            password_hash: "h".into(),
            created_at: Timestamp::now(),
            device: D0,
        })
        .collect();
    store.import_users(accounts).await?.await?;
    Ok(store)
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
        client_message_id: client_id.map(|c| ClientMessageId::parse(c).unwrap_or_else(|e| panic!("{e}"))),
        sender_device: Some(D0),
        forward: None,
        received: None,
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
            device: D0,
            message_id: id,
            status,
            at: Timestamp::now(),
            forward: None,
        })
        .await?
        .await?;
    Ok(outcome.advanced_to)
}

async fn a_message_is_stored_in_both_mailboxes(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob) = (user("alice"), user("bob"));
    let sent = new_message(&alice, &bob, "hello", None);
    let id = sent.message_id;
    assert!(matches!(append(store.as_ref(), sent).await?, AppendOutcome::Stored { .. }));
    for (owner, peer) in [(&alice, &bob), (&bob, &alice)] {
        let history = store.history(owner, peer, None, 10).await?;
        assert_eq!(history.len(), 1, "{owner}'s mailbox");
        assert_eq!((history[0].message_id, history[0].message.as_str()), (id, "hello"));
        assert_eq!(history[0].status, MessageStatus::Sent);
    }
    // The sender's copy is not pending for the sender.
    assert!(store.pending(&alice, D0, 0, 10).await?.is_empty());
    assert_eq!(store.pending(&bob, D0, 0, 10).await?.len(), 1);
    store.close().await;
    Ok(())
}

async fn a_repeated_client_message_id_stores_nothing(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob) = (user("alice"), user("bob"));
    let first = append(store.as_ref(), new_message(&alice, &bob, "once", Some("c1"))).await?;
    let again = append(store.as_ref(), new_message(&alice, &bob, "once", Some("c1"))).await?;
    let (
        AppendOutcome::Stored { message_id, timestamp, .. },
        AppendOutcome::Duplicate { message_id: dup, timestamp: dup_ts },
    ) = (first, again)
    else {
        panic!("expected Stored then Duplicate");
    };
    assert_eq!((message_id, timestamp), (dup, dup_ts));
    assert_eq!(store.history(&bob, &alice, None, 10).await?.len(), 1);
    // Same id, other sender: a new message.
    assert!(matches!(
        append(store.as_ref(), new_message(&bob, &alice, "mine", Some("c1"))).await?,
        AppendOutcome::Stored { .. }
    ));
    store.close().await;
    Ok(())
}

async fn receipts_only_move_forward_and_only_the_receiver_may_give_them(store: Arc<dyn Store>) -> Result<()> {
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

    assert_eq!(receipt(store.as_ref(), &bob, id, MessageStatus::Delivered).await?, Some(MessageStatus::Delivered));
    assert_eq!(receipt(store.as_ref(), &bob, id, MessageStatus::Delivered).await?, None);
    assert_eq!(receipt(store.as_ref(), &bob, id, MessageStatus::Read).await?, Some(MessageStatus::Read));
    assert_eq!(receipt(store.as_ref(), &bob, id, MessageStatus::Delivered).await?, None, "never backwards");
    for (owner, peer) in [(&alice, &bob), (&bob, &alice)] {
        assert_eq!(store.history(owner, peer, None, 1).await?[0].status, MessageStatus::Read);
    }
    assert!(store.pending(&bob, D0, 0, 10).await?.is_empty());
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
    let first = store.pending(&bob, D0, 0, 4).await?;
    let rest = store.pending(&bob, D0, first.last().map_or(0, |p| p.seq), 100).await?;
    let order: Vec<_> = first.iter().chain(&rest).map(|p| p.message.message_id).collect();
    assert_eq!(order, ids);

    receipt(store.as_ref(), &bob, ids[3], MessageStatus::Delivered).await?;
    let after: Vec<_> = store.pending(&bob, D0, 0, 100).await?.into_iter().map(|p| p.message.message_id).collect();
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
    append(store.as_ref(), new_message(&alice, &carol, "other conversation", None)).await?;
    let newest = store.history(&alice, &bob, None, 10).await?;
    assert_eq!(newest.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids[15..]);
    let older = store.history(&alice, &bob, Some(ids[15]), 10).await?;
    assert_eq!(older.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids[5..15]);
    let oldest = store.history(&alice, &bob, Some(ids[5]), 10).await?;
    assert_eq!(oldest.iter().map(|m| m.message_id).collect::<Vec<_>>(), ids[..5]);
    store.close().await;
    Ok(())
}

async fn accounts_are_unique_and_imports_skip_existing_ones(store: Arc<dyn Store>) -> Result<()> {
    let account = |name: &str| NewUser {
        user_id: user(name),
        password_hash: "$argon2id$x".into(),
        created_at: Timestamp::now(),
        device: D0,
    };
    store.create_user(account("dave")).await?.await?;
    assert!(matches!(store.create_user(account("dave")).await?.await, Err(StoreError::UserExists(_))));
    let report = store.import_users(vec![account("dave"), account("erin"), account("frank")]).await?.await?;
    assert_eq!((report.created, report.skipped), (2, 1));
    let erin = store.user(&user("erin")).await?.ok_or_else(|| anyhow::anyhow!("erin missing"))?;
    assert_eq!(erin.password_hash, "$argon2id$x");
    assert!(store.user(&user("zoe")).await?.is_none());
    assert_eq!(store.devices(&user("erin")).await?.iter().map(|d| d.device_id).collect::<Vec<_>>(), [D0]);
    store.close().await;
    Ok(())
}

async fn presence_is_reset_after_a_restart(store: Arc<dyn Store>) -> Result<()> {
    store.set_presence(&user("alice"), true, Timestamp::from_millis(1_000)).await?.await?;
    store.set_presence(&user("bob"), false, Timestamp::from_millis(2_000)).await?.await?;
    assert_eq!(store.reset_presence(Timestamp::from_millis(5_000)).await?.await?, 1);
    let alice = store.user(&user("alice")).await?.and_then(|r| r.last_seen);
    let bob = store.user(&user("bob")).await?.and_then(|r| r.last_seen);
    assert_eq!(alice, Some(Timestamp::from_millis(5_000)), "was online: last seen at the reset");
    assert_eq!(bob, Some(Timestamp::from_millis(2_000)), "was offline: unchanged");
    store.close().await;
    Ok(())
}

async fn each_device_has_its_own_queue(store: Arc<dyn Store>) -> Result<()> {
    let (alice, bob) = (user("alice"), user("bob"));
    let (d1, d2) = (DeviceId(1), DeviceId(2));
    store.add_device(&bob, d1, Timestamp::now()).await?.await?;
    store.add_device(&alice, d1, Timestamp::now()).await?.await?;
    // Alice sends from device 0: bob's two devices and alice's other one get it.
    let message = new_message(&alice, &bob, "to every device", None);
    let id = message.message_id;
    append(store.as_ref(), message).await?;
    let pending_ids = |owner: UserId, device: DeviceId| {
        let store = store.clone();
        async move {
            anyhow::Ok(
                store
                    .pending(&owner, device, 0, 10)
                    .await?
                    .into_iter()
                    .map(|p| p.message.message_id)
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(pending_ids(bob.clone(), D0).await?, [id]);
    assert_eq!(pending_ids(bob.clone(), d1).await?, [id]);
    assert_eq!(pending_ids(alice.clone(), d1).await?, [id], "the sender's other device sees the conversation");
    assert!(pending_ids(alice.clone(), D0).await?.is_empty(), "not the device that sent it");

    // One device's ack leaves the other's queue alone.
    assert_eq!(receipt(store.as_ref(), &bob, id, MessageStatus::Delivered).await?, Some(MessageStatus::Delivered));
    assert!(pending_ids(bob.clone(), D0).await?.is_empty());
    assert_eq!(pending_ids(bob.clone(), d1).await?, [id]);
    // The sender's device acks its copy: no status change.
    let ack = Receipt {
        reader: alice.clone(),
        device: d1,
        message_id: id,
        status: MessageStatus::Delivered,
        at: Timestamp::now(),
        forward: None,
    };
    assert_eq!(store.record_receipt(ack).await?.await?.advanced_to, None);
    assert!(pending_ids(alice.clone(), d1).await?.is_empty());
    // A read on any device clears every device of the reader.
    let read = Receipt {
        reader: bob.clone(),
        device: D0,
        message_id: id,
        status: MessageStatus::Read,
        at: Timestamp::now(),
        forward: None,
    };
    assert_eq!(store.record_receipt(read).await?.await?.advanced_to, Some(MessageStatus::Read));
    assert!(pending_ids(bob.clone(), d1).await?.is_empty());

    // A new device only gets what arrives after it was added; removing it drops its queue.
    store.add_device(&bob, d2, Timestamp::now()).await?.await?;
    append(store.as_ref(), new_message(&alice, &bob, "later", None)).await?;
    assert_eq!(pending_ids(bob.clone(), d2).await?.len(), 1);
    assert!(store.remove_device(&bob, d2).await?.await?);
    assert!(pending_ids(bob.clone(), d2).await?.is_empty());
    assert!(!store.remove_device(&bob, d2).await?.await?);
    store.close().await;
    Ok(())
}

async fn a_user_has_at_most_five_devices(store: Arc<dyn Store>) -> Result<()> {
    let alice = user("alice");
    for device in 1..5 {
        store.add_device(&alice, DeviceId(device), Timestamp::now()).await?.await?;
    }
    // Adding an existing one again is fine; a sixth is not.
    store.add_device(&alice, DeviceId(3), Timestamp::now()).await?.await?;
    assert!(matches!(
        store.add_device(&alice, DeviceId(9), Timestamp::now()).await?.await,
        Err(StoreError::TooManyDevices { max: 5 })
    ));
    assert_eq!(store.devices(&alice).await?.len(), 5);
    store.close().await;
    Ok(())
}

async fn one_time_prekeys_are_claimed_once(store: Arc<dyn Store>) -> Result<()> {
    let bob = user("bob");
    let keys = |identity: &[u8], ids: std::ops::Range<u32>| PublishedKeys {
        identity: identity.to_vec(),
        signed_prekey: b"signed".to_vec(),
        one_time: ids.map(|id| (id, format!("otk-{id}").into_bytes())).collect(),
    };
    assert!(store.claim_keys(&bob).await?.await?.is_empty(), "no keys published yet");
    let first = store.publish_keys(&bob, D0, keys(b"id-1", 0..3)).await?.await?;
    assert_eq!((first.identity_changed, first.one_time_prekeys), (false, 3));
    // Re-uploading an id does not duplicate it.
    assert_eq!(store.publish_keys(&bob, D0, keys(b"id-1", 2..4)).await?.await?.one_time_prekeys, 4);
    assert_eq!(store.prekey_count(&bob, D0).await?, 4);

    // Concurrent claims never get the same key.
    let claims: Vec<_> = futures_util::future::join_all((0..6).map(|_| {
        let store = store.clone();
        let bob = bob.clone();
        async move { anyhow::Ok(store.claim_keys(&bob).await?.await?) }
    }))
    .await
    .into_iter()
    .collect::<Result<_>>()?;
    let mut given: Vec<_> = claims.iter().filter_map(|c| c[0].one_time.clone()).collect();
    assert_eq!(given.len(), 4, "four keys, then the signed prekey alone");
    given.sort();
    given.dedup();
    assert_eq!(given.len(), 4, "no key given twice");
    assert!(claims.iter().all(|c| c[0].signed_prekey == b"signed" && c[0].identity == b"id-1"));

    // A new identity makes the old prekeys worthless.
    store.publish_keys(&bob, D0, keys(b"id-1", 10..12)).await?.await?;
    let changed = store.publish_keys(&bob, D0, keys(b"id-2", 20..21)).await?.await?;
    assert_eq!((changed.identity_changed, changed.one_time_prekeys), (true, 1));
    // A device holds at most 500.
    let too_many = store.publish_keys(&bob, D0, keys(b"id-2", 100..600)).await?.await;
    assert!(matches!(too_many, Err(StoreError::TooManyPrekeys { would_hold: 501, max: 500 })), "{too_many:?}");
    assert!(matches!(
        store.publish_keys(&bob, DeviceId(7), keys(b"x", 0..1)).await?.await,
        Err(StoreError::DeviceNotFound(..))
    ));
    store.close().await;
    Ok(())
}

async fn the_user_identity_is_kept_until_reset_and_removals_are_bounded(store: Arc<dyn Store>) -> Result<()> {
    let bob = user("bob");
    let certify = |device: u32, identity: &[u8], reset: bool| TrustOp::Certify {
        user: bob.clone(),
        device: DeviceId(device),
        user_identity: identity.to_vec(),
        certificate: format!("cert-{device}-{}", String::from_utf8_lossy(identity)).into_bytes(),
        reset,
        at: Timestamp::now(),
    };
    assert_eq!(store.trust_records(&bob).await?, store::TrustRecords::default());
    assert_eq!(
        store.trust(certify(0, b"uik-1", false)).await?.await?,
        TrustOutcome::Certified { first: true, changed: false }
    );
    assert_eq!(
        store.trust(certify(1, b"uik-1", false)).await?.await?,
        TrustOutcome::Certified { first: false, changed: false }
    );
    // Another identity is refused unless reset, and changes nothing.
    assert_eq!(store.trust(certify(1, b"uik-2", false)).await?.await?, TrustOutcome::Conflict);
    let records = store.trust_records(&bob).await?;
    assert_eq!(records.user_identity.as_deref(), Some(&b"uik-1"[..]));
    assert_eq!(
        records.certificates,
        [(DeviceId(0), b"cert-0-uik-1".to_vec()), (DeviceId(1), b"cert-1-uik-1".to_vec())]
    );
    assert_eq!(
        store.trust(certify(1, b"uik-2", true)).await?.await?,
        TrustOutcome::Certified { first: false, changed: true }
    );
    assert_eq!(store.trust_records(&bob).await?.user_identity.as_deref(), Some(&b"uik-2"[..]));

    // Removals are kept, the newest 50, each once.
    for i in 0..60u8 {
        let op = TrustOp::Remove {
            user: bob.clone(),
            device: DeviceId(u32::from(i % 3)),
            device_key: vec![i; 32],
            removal: vec![i],
            at: Timestamp::from_millis(1_000 + i64::from(i)),
        };
        assert_eq!(store.trust(op).await?.await?, TrustOutcome::Removed);
    }
    let removals = store.trust_records(&bob).await?.removals;
    assert_eq!(removals.len(), 50);
    assert_eq!(removals[0], [10], "the oldest went first");
    assert_eq!(removals[49], [59]);
    assert_eq!(
        store.trust(TrustOp::Forget { user: bob.clone(), device: DeviceId(1) }).await?.await?,
        TrustOutcome::Forgotten
    );
    assert_eq!(store.trust_records(&bob).await?.certificates.len(), 1);
    assert!(store.trust_records(&user("alice")).await?.removals.is_empty(), "per user");
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
    let pending: Vec<_> = store.pending(&bob, D0, 0, 1000).await?.into_iter().map(|p| p.message.message_id).collect();
    assert_eq!(pending, ids, "arrival order is the order of enqueueing");
    store.close().await;
    Ok(())
}

fn server(name: &str) -> kith_proto::ServerName {
    kith_proto::ServerName::parse(name).unwrap_or_else(|e| panic!("{e}"))
}

async fn a_message_to_another_node_is_queued_with_the_senders_copy(store: Arc<dyn Store>) -> Result<()> {
    let (alice, remote) = (user("alice"), UserId::parse("bob@beta")?);
    let mut message = new_message(&alice, &remote, "to beta", None);
    let id = message.message_id;
    message.forward = Some(OutboxEntry {
        destination: server("beta"),
        envelope_id: id.to_string(),
        kind: "message".into(),
        body: b"{}".to_vec(),
    });
    append(store.as_ref(), message).await?;
    assert_eq!(store.history(&alice, &remote, None, 10).await?.len(), 1, "the sender's copy");
    assert!(store.history(&remote, &alice, None, 10).await?.is_empty(), "no receiver row here");
    let queued = store.outbox_batch(&server("beta"), 10).await?;
    assert_eq!(queued.iter().map(|r| r.envelope_id.clone()).collect::<Vec<_>>(), [id.to_string()]);
    let stats = store.outbox_stats().await?;
    assert_eq!((stats.len(), stats[0].depth), (1, 1));

    // A receipt for it comes back from beta: applied once, forward only.
    let receipt = |status, envelope: &str| RemoteReceipt {
        sender: alice.clone(),
        receiver: remote.clone(),
        message_id: id,
        status,
        received: InboxKey { origin: server("beta"), envelope_id: envelope.into() },
    };
    // Beta speaking for someone who is not the receiver changes nothing.
    let mut impostor = receipt(MessageStatus::Read, "r-0");
    impostor.receiver = UserId::parse("mallory@beta")?;
    assert_eq!(store.apply_remote_receipt(impostor).await?.await?, None);
    assert_eq!(store.history(&alice, &remote, None, 1).await?[0].status, MessageStatus::Sent);
    assert_eq!(
        store.apply_remote_receipt(receipt(MessageStatus::Read, "r-1")).await?.await?,
        Some(MessageStatus::Read)
    );
    assert_eq!(store.apply_remote_receipt(receipt(MessageStatus::Read, "r-1")).await?.await?, None, "a replay");
    assert_eq!(store.apply_remote_receipt(receipt(MessageStatus::Delivered, "r-2")).await?.await?, None, "backwards");
    assert_eq!(store.history(&alice, &remote, None, 1).await?[0].status, MessageStatus::Read);

    store.outbox_remove(&server("beta"), queued.iter().map(|r| r.seq).collect()).await?.await?;
    assert!(store.outbox_batch(&server("beta"), 10).await?.is_empty());
    assert!(store.outbox_stats().await?.is_empty());
    store.close().await;
    Ok(())
}

async fn envelopes_from_another_node_apply_once(store: Arc<dyn Store>) -> Result<()> {
    let (remote, bob) = (UserId::parse("carol@gamma")?, user("bob"));
    let incoming = |envelope: &str| {
        let mut message = new_message(&remote, &bob, "from gamma", None);
        message.sender_device = None;
        message.received = Some(InboxKey { origin: server("gamma"), envelope_id: envelope.into() });
        message
    };
    let first = incoming("e-1");
    let id = first.message_id;
    assert!(matches!(append(store.as_ref(), first).await?, AppendOutcome::Stored { .. }));
    let mut again = incoming("e-1");
    again.message_id = id;
    assert!(matches!(append(store.as_ref(), again).await?, AppendOutcome::Duplicate { .. }));
    assert_eq!(store.pending(&bob, D0, 0, 10).await?.len(), 1);
    assert!(store.history(&remote, &bob, None, 10).await?.is_empty(), "no sender row for a remote sender");

    // Bob reads it: the receipt is queued for gamma in the same transaction.
    let forward: kith_node::store::ForwardReceipt = Arc::new(|sender: &UserId, status, _at| {
        Some(OutboxEntry {
            destination: sender.server_name(),
            envelope_id: format!("receipt-{}", status.as_str()),
            kind: "receipt".into(),
            body: Vec::new(),
        })
    });
    let read = Receipt {
        reader: bob.clone(),
        device: D0,
        message_id: id,
        status: MessageStatus::Read,
        at: Timestamp::now(),
        forward: Some(forward),
    };
    assert_eq!(store.record_receipt(read).await?.await?.advanced_to, Some(MessageStatus::Read));
    let queued = store.outbox_batch(&server("gamma"), 10).await?;
    assert_eq!(queued.iter().map(|r| r.envelope_id.as_str()).collect::<Vec<_>>(), ["receipt-read"]);
    store.close().await;
    Ok(())
}

//! The store trait's promises, each checked against SQLite and PostgreSQL from one body.

use std::sync::Arc;

use anyhow::Result;
use kith_node::store::{
    self, AppendOutcome, InboxKey, Kind, NewMessage, NewUser, OutboxEntry, PublishedKeys, Receipt, Recipient,
    RemoteReceipt, Source, Store, StoreError, StoreOptions, TrustOp, TrustOutcome,
};
use kith_proto::{ClientMessageId, DeviceId, MessageId, MessageStatus, PresenceVisibility, Timestamp, UserId};

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
                    Some(super::Backend::Postgres(schema)) => super::$name(super::open(schema.url()).await?).await,
                    _ => Ok(()),
                }
            }

            /// Four shards: alice, bob and carol each on a shard of their own (3, 2 and 0).
            #[tokio::test]
            async fn postgres_shards() -> anyhow::Result<()> {
                match super::shards(4).await {
                    Some((urls, _schemas)) => {
                        super::$name(super::open_at(kith_node::store::Location::Shards(urls)).await?).await
                    }
                    None => Ok(()),
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
    presence_visibility_defaults_to_contacts_and_is_kept_per_user,
    concurrent_writes_commit_together_and_in_order,
    each_device_has_its_own_queue,
    a_user_has_at_most_five_devices,
    one_time_prekeys_are_claimed_once,
    the_user_identity_is_kept_until_reset_and_removals_are_bounded,
    a_message_to_another_node_is_queued_with_the_senders_copy,
    receipts_from_another_node_queued_together_apply_as_if_one_by_one,
    envelopes_from_another_node_apply_once,
    a_receivers_copy_from_another_shard_applies_once,
    a_message_whose_receivers_copy_exists_stores_only_the_senders,
    a_message_between_shards_is_in_both_mailboxes_and_its_receipts_reach_back,
);

/// Fresh PostgreSQL schemas for `n` shards (kept while the handles live), or `None` (said
/// why) without PostgreSQL.
async fn shards(n: usize) -> Option<(Vec<String>, Vec<std::sync::Arc<crate::harness::PgSchema>>)> {
    let schemas = crate::instances::shards(n).await?;
    Some((schemas.iter().map(|s| s.url().to_owned()).collect(), schemas))
}

/// Opens a store holding the accounts the tests use, each with device 0.
async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_at(store::Location::Single(url.to_owned())).await
}

/// Opens the store at `location` holding the accounts the tests use, each with device 0.
async fn open_at(location: store::Location) -> Result<Arc<dyn Store>> {
    let store = store::open(&location, &StoreOptions::default(), &server("test"), store::Instances::Alone).await?;
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
        from: Source::Device {
            device: D0,
            client_message_id: client_id.map(|c| ClientMessageId::parse(c).unwrap_or_else(|e| panic!("{e}"))),
        },
        to: Recipient::User,
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
        .record_receipt(Receipt { reader: reader.clone(), device: D0, message_id: id, status, at: Timestamp::now() })
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

async fn presence_visibility_defaults_to_contacts_and_is_kept_per_user(store: Arc<dyn Store>) -> Result<()> {
    let visibility = async |name: &str| -> Result<PresenceVisibility> {
        Ok(store.user(&user(name)).await?.map(|r| r.presence_visibility).unwrap_or_else(|| panic!("no {name}")))
    };
    assert_eq!(visibility("alice").await?, PresenceVisibility::Contacts, "the default");
    assert!(store.set_presence_visibility(&user("alice"), PresenceVisibility::Nobody).await?.await?);
    assert!(store.set_presence_visibility(&user("bob"), PresenceVisibility::Everyone).await?.await?);
    assert_eq!(visibility("alice").await?, PresenceVisibility::Nobody);
    assert_eq!(visibility("bob").await?, PresenceVisibility::Everyone);
    assert_eq!(visibility("carol").await?, PresenceVisibility::Contacts, "others unchanged");
    assert!(!store.set_presence_visibility(&user("nobody"), PresenceVisibility::Everyone).await?.await?);
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
    };
    assert_eq!(store.record_receipt(ack).await?.await?.advanced_to, None);
    assert!(pending_ids(alice.clone(), d1).await?.is_empty());
    // A read on any device clears every device of the reader.
    let read =
        Receipt { reader: bob.clone(), device: D0, message_id: id, status: MessageStatus::Read, at: Timestamp::now() };
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
    message.to = Recipient::Peer(OutboxEntry {
        destination: server("beta"),
        envelope_id: id.to_string(),
        kind: Kind::Message,
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
        at: Timestamp::now(),
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

    store.outbox_remove(&server("beta"), queued.iter().map(|r| r.key).collect()).await?.await?;
    assert!(store.outbox_batch(&server("beta"), 10).await?.is_empty());
    assert!(store.outbox_stats().await?.is_empty());
    store.close().await;
    Ok(())
}

/// Receipts from beta queued before any commits (so that they share group commits, as a
/// peer's batch does) decide as if applied one at a time, in order; acks remove exactly the
/// acked envelopes, also beside a send in the same commit.
async fn receipts_from_another_node_queued_together_apply_as_if_one_by_one(store: Arc<dyn Store>) -> Result<()> {
    let (alice, remote) = (user("alice"), UserId::parse("bob@beta")?);
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let mut message = new_message(&alice, &remote, text, None);
        message.to = Recipient::Peer(OutboxEntry {
            destination: server("beta"),
            envelope_id: message.message_id.to_string(),
            kind: Kind::Message,
            body: b"{}".to_vec(),
        });
        ids.push(message.message_id);
        append(store.as_ref(), message).await?;
    }
    let receipt = |n: usize, status, envelope: &str, receiver: &UserId| RemoteReceipt {
        sender: alice.clone(),
        receiver: receiver.clone(),
        message_id: ids[n],
        status,
        at: Timestamp::now(),
        received: InboxKey { origin: server("beta"), envelope_id: envelope.into() },
    };
    let mallory = UserId::parse("mallory@beta")?;
    let receipts = [
        receipt(0, MessageStatus::Delivered, "e-1", &remote),
        receipt(0, MessageStatus::Read, "e-2", &remote),
        receipt(0, MessageStatus::Delivered, "e-3", &remote), // backwards
        receipt(0, MessageStatus::Read, "e-2", &remote),      // a repeat of an envelope
        receipt(1, MessageStatus::Read, "e-4", &mallory),     // not the receiver
        receipt(2, MessageStatus::Sent, "e-5", &remote),      // no news
        receipt(2, MessageStatus::Delivered, "e-6", &remote),
    ];
    let mut commits = Vec::new();
    for r in receipts {
        commits.push(store.apply_remote_receipt(r).await?);
    }
    let mut outcomes = Vec::new();
    for commit in commits {
        outcomes.push(commit.await?);
    }
    use MessageStatus::{Delivered, Read, Sent};
    assert_eq!(outcomes, [Some(Delivered), Some(Read), None, None, None, None, Some(Delivered)]);
    let history = store.history(&alice, &remote, None, 10).await?;
    let status = |n: usize| history.iter().find(|m| m.message_id == ids[n]).map(|m| m.status);
    assert_eq!((status(0), status(1), status(2)), (Some(Read), Some(Sent), Some(Delivered)));

    let queued = store.outbox_batch(&server("beta"), 10).await?;
    assert_eq!(queued.len(), 3);
    // The removal is queued with a send that queues a new envelope, so that they may share a
    // commit (removals ride in the hot path's): each takes effect, the new one queued last.
    let mut later = new_message(&alice, &remote, "four", None);
    later.to = Recipient::Peer(OutboxEntry {
        destination: server("beta"),
        envelope_id: later.message_id.to_string(),
        kind: Kind::Message,
        body: b"{}".to_vec(),
    });
    let removed = store.outbox_remove(&server("beta"), vec![queued[0].key, queued[2].key]).await?;
    let sent = store.append_message(later.clone()).await?;
    removed.await?;
    sent.await?;
    let left = store.outbox_batch(&server("beta"), 10).await?;
    assert_eq!(
        left.iter().map(|r| r.envelope_id.clone()).collect::<Vec<_>>(),
        [queued[1].envelope_id.clone(), later.message_id.to_string()]
    );
    store.close().await;
    Ok(())
}

async fn envelopes_from_another_node_apply_once(store: Arc<dyn Store>) -> Result<()> {
    let (remote, bob) = (UserId::parse("carol@gamma")?, user("bob"));
    let incoming = |envelope: &str| {
        let mut message = new_message(&remote, &bob, "from gamma", None);
        message.from = Source::Peer(InboxKey { origin: server("gamma"), envelope_id: envelope.into() });
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
    let read =
        Receipt { reader: bob.clone(), device: D0, message_id: id, status: MessageStatus::Read, at: Timestamp::now() };
    assert_eq!(store.record_receipt(read).await?.await?.advanced_to, Some(MessageStatus::Read));
    let queued = store.outbox_batch(&server("gamma"), 10).await?;
    let queued: Vec<_> = queued.iter().map(|r| (r.envelope_id.clone(), r.kind)).collect();
    assert_eq!(queued, [(format!("{id}:read"), Kind::Receipt)]);
    store.close().await;
    Ok(())
}

/// A hand-off applied twice (the relay, then a sweep that found its row not yet removed) stores
/// the receiver's copy once, and says the second time that it was there: what keeps the sweep
/// from pushing it again.
async fn a_receivers_copy_from_another_shard_applies_once(store: Arc<dyn Store>) -> Result<()> {
    let (alice, carol) = (user("alice"), user("carol"));
    let mut copy = new_message(&alice, &carol, "across shards", None);
    copy.from = Source::OtherShard;
    let id = copy.message_id;
    assert!(matches!(append(store.as_ref(), copy.clone()).await?, AppendOutcome::Stored { .. }));
    assert!(
        matches!(append(store.as_ref(), copy).await?, AppendOutcome::Duplicate { message_id, .. } if message_id == id)
    );
    let pending = store.pending(&carol, D0, 0, 10).await?;
    assert_eq!(pending.iter().filter(|p| p.message.message_id == id).count(), 1, "{pending:?}");
    store.close().await;
    Ok(())
}

/// A message one of whose copies is stored already (its receiver's, handed over from another
/// shard, then the sender's send arriving): the missing copy is stored, the existing one is
/// not doubled, and the receiver's device has the message queued once.
async fn a_message_whose_receivers_copy_exists_stores_only_the_senders(store: Arc<dyn Store>) -> Result<()> {
    let (alice, carol) = (user("alice"), user("carol"));
    let earlier = new_message(&alice, &carol, "before", None);
    assert!(matches!(append(store.as_ref(), earlier).await?, AppendOutcome::Stored { .. }));
    let sent = new_message(&alice, &carol, "half there", None);
    let id = sent.message_id;
    let mut copy = sent.clone();
    copy.from = Source::OtherShard;
    append(store.as_ref(), copy).await?;
    append(store.as_ref(), sent).await?;
    let ids_of = |rows: Vec<kith_proto::MessageView>| rows.into_iter().map(|m| m.message_id).collect::<Vec<_>>();
    for (owner, peer) in [(&alice, &carol), (&carol, &alice)] {
        let history = ids_of(store.history(owner, peer, None, 10).await?);
        assert_eq!(history.iter().filter(|m| **m == id).count(), 1, "{owner}'s mailbox: {history:?}");
    }
    let pending: Vec<_> = store.pending(&carol, D0, 0, 10).await?.into_iter().map(|p| p.message.message_id).collect();
    assert_eq!(pending.iter().filter(|m| **m == id).count(), 1, "{pending:?}");
    assert_eq!(pending.len(), 2, "the earlier message and this one: {pending:?}");
    store.close().await;
    Ok(())
}

/// alice (shard 3 of 4) and carol (shard 0): on shards, two commits on two databases; on one
/// database, one. Either way both mailboxes hold it once, and receipts reach the sender's copy.
async fn a_message_between_shards_is_in_both_mailboxes_and_its_receipts_reach_back(
    store: Arc<dyn Store>,
) -> Result<()> {
    let (alice, carol) = (user("alice"), user("carol"));
    let mut ids = Vec::new();
    let mut commits = Vec::new();
    for i in 0..50 {
        let message = new_message(&alice, &carol, &i.to_string(), Some(&format!("x{i}")));
        ids.push(message.message_id);
        commits.push(store.append_message(message).await?);
    }
    for commit in commits {
        assert!(matches!(commit.await?, AppendOutcome::Stored { .. }));
    }
    // A resend of the first with its clientMessageId is the same message.
    let again = append(store.as_ref(), new_message(&alice, &carol, "0", Some("x0"))).await?;
    assert!(matches!(again, AppendOutcome::Duplicate { message_id, .. } if message_id == ids[0]));
    let ids_of = |rows: Vec<kith_proto::MessageView>| rows.into_iter().map(|m| m.message_id).collect::<Vec<_>>();
    assert_eq!(ids_of(store.history(&alice, &carol, None, 100).await?), ids, "the sender's copies");
    assert_eq!(ids_of(store.history(&carol, &alice, None, 100).await?), ids, "the receiver's copies");
    let pending: Vec<_> = store.pending(&carol, D0, 0, 100).await?.into_iter().map(|p| p.message.message_id).collect();
    assert_eq!(pending, ids, "pending for the receiver in the order sent");

    assert_eq!(
        receipt(store.as_ref(), &carol, ids[0], MessageStatus::Delivered).await?,
        Some(MessageStatus::Delivered)
    );
    assert_eq!(receipt(store.as_ref(), &carol, ids[1], MessageStatus::Read).await?, Some(MessageStatus::Read));
    let first_two = store.history(&alice, &carol, Some(ids[2]), 2).await?;
    assert_eq!(
        first_two.iter().map(|m| m.status).collect::<Vec<_>>(),
        [MessageStatus::Delivered, MessageStatus::Read],
        "the sender's copies moved too"
    );
    assert!(store.resume_handoffs(std::time::Duration::ZERO).await?.is_empty(), "nothing left half done");
    store.close().await;
    Ok(())
}

/// What an instance killed between the two commits of a cross-shard message leaves: the
/// sender's copy and a hand-off on the sender's shard, nothing on the receiver's. The sweep
/// completes it, once, however often it runs or the hand-off is replayed.
#[tokio::test]
async fn hand_offs_a_crash_left_are_completed_once() -> Result<()> {
    let Some((urls, _schemas)) = shards(4).await else { return Ok(()) };
    let store = open_at(store::Location::Shards(urls.clone())).await?;
    let (alice, carol) = (user("alice"), user("carol"));
    let mut ids = [MessageId::now(), MessageId::now()];
    ids.sort();
    let now = Timestamp::now();
    // alice is on shard 3, carol on shard 0.
    let alice_shard = sqlx::PgPool::connect(&urls[3]).await?;
    let leave_handoff = |id: MessageId| {
        let body = serde_json::json!({
            "kind": "message", "messageId": id, "senderId": alice, "receiverId": carol,
            "content": "left half done", "timestamp": now,
        });
        let alice_shard = &alice_shard;
        async move {
            sqlx::query("INSERT INTO handoffs (handoff_id, target_shard, body, created_at) VALUES ($1, 0, $2, $3)")
                .bind(format!("m:{id}"))
                .bind(serde_json::to_vec(&body)?)
                .bind(now.as_millis() - 60_000)
                .execute(alice_shard)
                .await?;
            anyhow::Ok(())
        }
    };
    for id in ids {
        sqlx::query(
            "INSERT INTO messages (owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status) \
             VALUES ($1, $2, $3, $1, $3, 'left half done', $4, 'sent')",
        )
        .bind(alice.as_str())
        .bind(id.to_string())
        .bind(carol.as_str())
        .bind(now.as_millis())
        .execute(&alice_shard)
        .await?;
        leave_handoff(id).await?;
    }
    assert!(store.history(&carol, &alice, None, 10).await?.is_empty(), "not on carol's shard yet");

    let resumed = store.resume_handoffs(std::time::Duration::from_secs(5)).await?;
    let mut resumed_ids: Vec<MessageId> = resumed
        .iter()
        .map(|r| match r {
            store::Resumed::Message(m) => Ok(m.message_id),
            other => Err(anyhow::anyhow!("not a message: {other:?}")),
        })
        .collect::<Result<_>>()?;
    resumed_ids.sort();
    assert_eq!(resumed_ids, ids, "both completed");
    assert!(store.resume_handoffs(std::time::Duration::ZERO).await?.is_empty(), "each done once, both removed");
    // One hand-off again (a sweep that died after applying, before removing it): no copy.
    leave_handoff(ids[0]).await?;
    store.resume_handoffs(std::time::Duration::ZERO).await?;
    let mut copies: Vec<MessageId> =
        store.history(&carol, &alice, None, 10).await?.iter().map(|m| m.message_id).collect();
    copies.sort();
    assert_eq!(copies, ids, "exactly one copy of each");
    assert_eq!(store.pending(&carol, D0, 0, 10).await?.len(), 2, "each pending once for carol's device");
    alice_shard.close().await;
    store.close().await;
    Ok(())
}

/// A shard list of another size or order than the shards were made with is refused, naming
/// the shard.
#[tokio::test]
async fn a_shard_list_of_another_size_or_order_is_refused() -> Result<()> {
    let Some((urls, _schemas)) = shards(3).await else { return Ok(()) };
    open_at(store::Location::Shards(urls.clone())).await?.close().await;
    let refused = |location| async move {
        match store::open(&location, &StoreOptions::default(), &server("test"), store::Instances::Alone).await {
            Ok(store) => {
                store.close().await;
                anyhow::bail!("opened")
            }
            Err(e) => anyhow::Ok(e),
        }
    };
    let fewer = refused(store::Location::Shards(urls[..2].to_vec())).await?;
    assert!(
        matches!(
            fewer,
            StoreError::ShardMismatch {
                configured_index: 0,
                configured_count: 2,
                recorded_index: 0,
                recorded_count: 3,
                ..
            }
        ),
        "{fewer}"
    );
    assert!(fewer.to_string().contains("shard 0 (postgres"), "{fewer}");
    let swapped = refused(store::Location::Shards(vec![urls[1].clone(), urls[0].clone(), urls[2].clone()])).await?;
    assert!(matches!(swapped, StoreError::ShardMismatch { configured_index: 0, recorded_index: 1, .. }), "{swapped}");
    let alone = refused(store::Location::Single(urls[2].clone())).await?;
    assert!(matches!(alone, StoreError::ShardMismatch { recorded_index: 2, recorded_count: 3, .. }), "{alone}");
    Ok(())
}

/// SQLite's WAL is copied into the database file in the background, while the writer goes on
/// (not inside a commit, and long before the writers' backstop of ~400 MB of WAL): the
/// database file grows within seconds of a burst of messages, and every message reads back.
#[tokio::test]
async fn sqlite_checkpoints_its_wal_in_the_background() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("kith.db");
    let store = open(&format!("sqlite:{}", db.display())).await?;
    let size = || std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let (alice, bob) = (user("alice"), user("bob"));
    let mut commits = Vec::new();
    for n in 0..2_000 {
        commits.push(store.append_message(new_message(&alice, &bob, &format!("burst {n}"), None)).await?);
    }
    for commit in commits {
        commit.await?;
    }
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    while size() <= before {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {before} bytes: the WAL ({} bytes) was never checkpointed",
            std::fs::metadata(dir.path().join("kith.db-wal")).map(|m| m.len()).unwrap_or(0)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pending = store.pending(&bob, D0, 0, 5_000).await?;
    anyhow::ensure!(pending.len() == 2_000, "bob has {} of 2,000 messages pending", pending.len());
    Ok(())
}

/// A statement of SQLite's hot path that fails part-way (here a trigger raising `FAIL` on
/// one message of a group commit, standing in for a full disk or an I/O error) leaves nothing
/// of its batch: the rows it wrote before it stopped are rolled back with the transaction, and
/// each operation is retried alone, so the bad message fails, every other one is stored once
/// and queued for its receiver, in order. (The writer runs those statements `OR FAIL`, without
/// SQLite's statement journal, because it never keeps a transaction a statement failed in.)
#[tokio::test]
async fn sqlite_a_statement_failing_part_way_leaves_nothing_of_its_batch() -> Result<()> {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("kith.db");
    let store = open(&format!("sqlite:{}", db.display())).await?;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display())).await?;
    sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.content = 'poison' \
         BEGIN SELECT RAISE(FAIL, 'poisoned'); END",
    )
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let (mut commits, mut stored) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let text = if i == 150 { "poison".to_owned() } else { format!("m{i}") };
        let message = new_message(&alice, &bob, &text, Some(&format!("c{i}")));
        if i != 150 {
            stored.push(message.message_id);
        }
        commits.push((i, store.append_message(message).await?));
    }
    for (i, commit) in commits {
        let outcome = commit.await;
        if i == 150 {
            anyhow::ensure!(outcome.is_err(), "the poisoned message was answered {outcome:?}");
        } else {
            anyhow::ensure!(matches!(outcome, Ok(AppendOutcome::Stored { .. })), "message {i}: {outcome:?}");
        }
    }
    let pending: Vec<_> = store.pending(&bob, D0, 0, 1000).await?.into_iter().map(|p| p.message.message_id).collect();
    assert_eq!(pending, stored, "bob's queue holds every stored message once, in order");
    let history = store.history(&alice, &bob, None, 1000).await?;
    assert_eq!(history.len(), stored.len(), "alice's copies: one per stored message");
    store.close().await;
    Ok(())
}

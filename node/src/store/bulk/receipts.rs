//! Applying a run of receipts: find the reader's copies, decide each receipt in order as if
//! applied one by one, then clear what stops being pending, move statuses forward, and queue
//! receipts for senders on other nodes.

use std::collections::HashMap;

use kith_proto::{MessageStatus, ServerName};
use sqlx::QueryBuilder;
use tracing::warn;

use super::{chunks, chunks_mut};
use crate::store::engine::engine;
use crate::store::handoff::{Handoff, NewHandoff};
use crate::store::placement::{Placement, shard_of};
use crate::store::rows::parse_user;
use crate::store::status::{advances, push_advances};
use crate::store::writer::{Job, Tx, Writer};
use crate::store::{OutboxEntry, Receipt, ReceiptOutcome, StoreError, envelopes};

/// The reader's copy of a message a receipt is about.
struct Found {
    seq: i64,
    sender: String,
    receiver: String,
    status: String,
}

/// What a chunk of receipts changes, decided before any of it is written.
#[derive(Default)]
struct Changes<'a> {
    /// `(owner, device, seq)`: one device acked its copy.
    clear_device: Vec<(&'a str, i64, i64)>,
    /// `(owner, seq)`: the receiver read it, so no device of theirs needs it.
    clear_all: Vec<(&'a str, i64)>,
    /// The receiver's copies (by `seq`) and their new status.
    receiver_status: HashMap<i64, MessageStatus>,
    /// Senders' copies on this node (`(owner, message id)`) and their new status.
    sender_status: HashMap<(String, String), MessageStatus>,
    /// Receipts for senders on other nodes.
    forwards: Vec<OutboxEntry>,
    /// Receipts for senders of this node whose rows are on other shards.
    handoffs: Vec<NewHandoff>,
}

engine! {
impl<DB> Writer<DB> {
    /// Applies a run of `RecordReceipt` jobs. Returns an error only when it aborts the batch.
    pub(in crate::store) async fn record_receipts(
        tx: &mut Tx<DB>,
        local: &ServerName,
        placement: Placement,
        run: &mut [Job],
    ) -> Result<(), StoreError> {
        for chunk in chunks_mut(run) {
            let receipts: Vec<&Receipt> = chunk
                .iter()
                .filter_map(|job| match job {
                    Job::RecordReceipt(receipt, _) => Some(receipt),
                    _ => None,
                })
                .collect();
            let outcomes = Self::receipt_chunk(tx, local, placement, &receipts).await?;
            let slots = chunk.iter_mut().filter_map(|job| match job {
                Job::RecordReceipt(_, slot) => Some(slot),
                _ => None,
            });
            for (slot, outcome) in slots.zip(outcomes) {
                slot.keep(outcome)?;
            }
        }
        Ok(())
    }

    async fn receipt_chunk(
        tx: &mut Tx<DB>,
        local: &ServerName,
        placement: Placement,
        receipts: &[&Receipt],
    ) -> Result<Vec<Result<ReceiptOutcome, StoreError>>, StoreError> {
        let ids: Vec<String> = receipts.iter().map(|r| r.message_id.to_string()).collect();
        let found = Self::find_readers_copies(tx, receipts, &ids).await?;
        let mut changes = Changes::default();
        let outcomes = decide(local, placement, receipts, &ids, &found, &mut changes)?;
        Self::clear_pending(tx, &changes).await?;
        Self::advance_statuses(tx, &changes).await?;
        Self::insert_outbox_rows(tx, &changes.forwards.iter().collect::<Vec<_>>()).await?;
        Self::insert_handoffs(tx, &changes.handoffs).await?;
        Ok(outcomes)
    }

    /// Step 1. The rows the receipts are about, in their readers' mailboxes, by
    /// `(owner, message id)`.
    async fn find_readers_copies(
        tx: &mut Tx<DB>,
        receipts: &[&Receipt],
        ids: &[String],
    ) -> Result<HashMap<(String, String), Found>, StoreError> {
        let mut query = QueryBuilder::<DB>::new(
            "SELECT m.seq, m.owner_id, m.message_id, m.sender_id, m.receiver_id, m.status FROM messages m JOIN (",
        );
        for (n, (receipt, id)) in receipts.iter().zip(ids).enumerate() {
            query.push(if n == 0 { "SELECT " } else { " UNION ALL SELECT " });
            query.push_bind(receipt.reader.as_str());
            query.push(if n == 0 { " AS owner, " } else { ", " });
            query.push_bind(id.as_str());
            if n == 0 {
                query.push(" AS message_id");
            }
        }
        query.push(") v ON m.owner_id = v.owner AND m.message_id = v.message_id");
        Ok(query
            .build_query_as::<(i64, String, String, String, String, String)>()
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(seq, owner, id, sender, receiver, status)| ((owner, id), Found { seq, sender, receiver, status }))
            .collect())
    }

    /// Step 3. What stops being pending: one device's copy (an ack), or every device's (a read).
    async fn clear_pending(tx: &mut Tx<DB>, changes: &Changes<'_>) -> Result<(), StoreError> {
        for chunk in chunks(&changes.clear_device) {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM device_pending WHERE ");
            for (n, (owner, device, seq)) in chunk.iter().enumerate() {
                query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
                query.push_bind(*owner).push(" AND seq = ").push_bind(*seq);
                query.push(" AND device_id = ").push_bind(*device).push(")");
            }
            query.build().execute(&mut **tx).await?;
        }
        for chunk in chunks(&changes.clear_all) {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM device_pending WHERE ");
            for (n, (owner, seq)) in chunk.iter().enumerate() {
                query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
                query.push_bind(*owner).push(" AND seq = ").push_bind(*seq).push(")");
            }
            query.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Step 4. Statuses, forward only (the SQL guard repeats what was decided).
    async fn advance_statuses(tx: &mut Tx<DB>, changes: &Changes<'_>) -> Result<(), StoreError> {
        for status in [MessageStatus::Delivered, MessageStatus::Read] {
            let seqs: Vec<i64> =
                changes.receiver_status.iter().filter(|(_, s)| **s == status).map(|(seq, _)| *seq).collect();
            for chunk in chunks(&seqs) {
                let mut query = QueryBuilder::<DB>::new("UPDATE messages SET status = ");
                query.push_bind(status.as_str()).push(" WHERE seq IN (");
                let mut list = query.separated(", ");
                for seq in chunk {
                    list.push_bind(*seq);
                }
                query.push(") AND ");
                push_advances(&mut query, status);
                query.build().execute(&mut **tx).await?;
            }
            let copies: Vec<&(String, String)> =
                changes.sender_status.iter().filter(|(_, s)| **s == status).map(|(key, _)| key).collect();
            for chunk in chunks(&copies) {
                let mut query = QueryBuilder::<DB>::new("UPDATE messages SET status = ");
                query.push_bind(status.as_str()).push(" WHERE (");
                for (n, (owner, id)) in chunk.iter().enumerate() {
                    query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
                    query.push_bind(owner.as_str()).push(" AND message_id = ").push_bind(id.as_str()).push(")");
                }
                query.push(") AND ");
                push_advances(&mut query, status);
                query.build().execute(&mut **tx).await?;
            }
        }
        Ok(())
    }
}
}

/// Step 2. Decides each receipt in order, as if applied one by one: only the receiver reads a
/// message (the sender's other devices only acknowledge their copy), a read clears every
/// device of the reader, and a status moves only forward, seeing what earlier receipts of the
/// chunk left.
fn decide<'a>(
    local: &ServerName,
    placement: Placement,
    receipts: &[&'a Receipt],
    ids: &[String],
    found: &HashMap<(String, String), Found>,
    changes: &mut Changes<'a>,
) -> Result<Vec<Result<ReceiptOutcome, StoreError>>, StoreError> {
    let mut outcomes = Vec::with_capacity(receipts.len());
    let mut status_now: HashMap<i64, MessageStatus> = HashMap::new();
    for (receipt, id) in receipts.iter().zip(ids) {
        let reader = receipt.reader.as_str();
        let Some(row) = found.get(&(reader.to_owned(), id.clone())) else {
            outcomes.push(Err(StoreError::MessageNotFound(receipt.message_id)));
            continue;
        };
        let status = match receipt.status {
            MessageStatus::Sent => MessageStatus::Delivered,
            other => other,
        };
        let is_receiver = row.receiver == reader;
        if !is_receiver && status == MessageStatus::Read {
            outcomes.push(Err(StoreError::MessageNotFound(receipt.message_id)));
            continue;
        }
        let sender = parse_user("messages", &row.sender)?;
        if is_receiver && status == MessageStatus::Read {
            changes.clear_all.push((reader, row.seq));
        } else {
            changes.clear_device.push((reader, i64::from(receipt.device.0), row.seq));
        }
        if !is_receiver {
            outcomes.push(Ok(ReceiptOutcome { sender, advanced_to: None }));
            continue;
        }
        let current = match status_now.get(&row.seq) {
            Some(current) => *current,
            None => MessageStatus::parse(&row.status)
                .ok_or_else(|| StoreError::Corrupt { table: "messages", detail: format!("status {:?}", row.status) })?,
        };
        let advanced = advances(current, status);
        if advanced {
            status_now.insert(row.seq, status);
            changes.receiver_status.insert(row.seq, status);
            if !sender.is_on(local) {
                // The sender's copy is on their own node: an envelope carries the receipt.
                match envelopes::receipt(receipt.message_id, &sender, &receipt.reader, status, receipt.at) {
                    Ok(envelope) => changes.forwards.push(envelope),
                    Err(e) => warn!(error = %e, "cannot encode a receipt envelope"),
                }
            } else if row.sender == reader {
                // A note to oneself: its one row moved already.
            } else if placement.holds(&sender) {
                changes.sender_status.insert((row.sender.clone(), id.clone()), status);
            } else {
                changes.handoffs.push(NewHandoff {
                    target_shard: shard_of(&sender, placement.count),
                    handoff: Handoff::Status {
                        message_id: receipt.message_id,
                        sender_id: sender.clone(),
                        receiver_id: receipt.reader.clone(),
                        status,
                        at: receipt.at,
                    },
                });
            }
        }
        outcomes.push(Ok(ReceiptOutcome { sender, advanced_to: advanced.then_some(status) }));
    }
    Ok(outcomes)
}

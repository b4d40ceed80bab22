//! Applying a run of receipts: find the reader's copies, decide each receipt in order as if
//! applied one by one, then clear what stops being pending, move statuses forward, and queue
//! receipts for senders on other nodes.

use std::collections::HashMap;

use kith_proto::{MessageStatus, ServerName};
use tracing::warn;

use super::append::{insert_handoffs, insert_outbox_rows};
use super::statements::Statements;
use super::{apply_in_chunks, chunks};
use crate::store::handoff::{Handoff, NewHandoff};
use crate::store::placement::{Placement, shard_of};
use crate::store::rows::{parse_status, parse_user};
use crate::store::status::advances;
use crate::store::writer::{Job, Slot};
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

/// Applies a run of `RecordReceipt` jobs. Returns an error only when it aborts the batch.
pub(in crate::store) async fn record_receipts<S: Statements>(
    s: &mut S,
    local: &ServerName,
    placement: Placement,
    run: &mut [Job],
) -> Result<(), StoreError> {
    fn parts(job: &mut Job) -> Option<(&Receipt, &mut Slot<ReceiptOutcome>)> {
        match job {
            Job::RecordReceipt(receipt, slot) => Some((receipt, slot)),
            _ => None,
        }
    }
    apply_in_chunks(run, parts, async |receipts: &[&Receipt]| receipt_chunk(s, local, placement, receipts).await).await
}

async fn receipt_chunk<S: Statements>(
    s: &mut S,
    local: &ServerName,
    placement: Placement,
    receipts: &[&Receipt],
) -> Result<Vec<Result<ReceiptOutcome, StoreError>>, StoreError> {
    let ids: Vec<String> = receipts.iter().map(|r| r.message_id.to_string()).collect();
    let found = find_readers_copies(s, receipts, &ids).await?;
    let mut changes = Changes::default();
    let outcomes = decide(local, placement, receipts, &ids, &found, &mut changes)?;
    clear_pending(s, &changes).await?;
    advance_statuses(s, &changes).await?;
    insert_outbox_rows(s, &changes.forwards.iter().collect::<Vec<_>>()).await?;
    insert_handoffs(s, &changes.handoffs).await?;
    Ok(outcomes)
}

/// Step 1. The rows the receipts are about, in their readers' mailboxes, by
/// `(owner, message id)`.
async fn find_readers_copies<S: Statements>(
    s: &mut S,
    receipts: &[&Receipt],
    ids: &[String],
) -> Result<HashMap<(String, String), Found>, StoreError> {
    let keys: Vec<(&str, &str)> = receipts.iter().zip(ids).map(|(r, id)| (r.reader.as_str(), id.as_str())).collect();
    Ok(s.find_copies(&keys)
        .await?
        .into_iter()
        .map(|row| {
            let found = Found { seq: row.seq, sender: row.sender, receiver: row.receiver, status: row.status };
            ((row.owner, row.message_id), found)
        })
        .collect())
}

/// Step 3. What stops being pending: one device's copy (an ack), or every device's (a read).
async fn clear_pending<S: Statements>(s: &mut S, changes: &Changes<'_>) -> Result<(), StoreError> {
    for chunk in chunks(&changes.clear_device) {
        s.clear_device_pending(chunk).await?;
    }
    for chunk in chunks(&changes.clear_all) {
        s.clear_all_pending(chunk).await?;
    }
    Ok(())
}

/// Step 4. Statuses, forward only (the SQL guard repeats what was decided).
async fn advance_statuses<S: Statements>(s: &mut S, changes: &Changes<'_>) -> Result<(), StoreError> {
    for status in [MessageStatus::Delivered, MessageStatus::Read] {
        let seqs: Vec<i64> =
            changes.receiver_status.iter().filter(|(_, st)| **st == status).map(|(seq, _)| *seq).collect();
        for chunk in chunks(&seqs) {
            s.advance_by_seq(status, chunk).await?;
        }
        let copies: Vec<(&str, &str)> = changes
            .sender_status
            .iter()
            .filter(|(_, st)| **st == status)
            .map(|((owner, id), _)| (owner.as_str(), id.as_str()))
            .collect();
        for chunk in chunks(&copies) {
            s.advance_by_id(status, chunk).await?;
        }
    }
    Ok(())
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
            None => parse_status("messages", &row.status)?,
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

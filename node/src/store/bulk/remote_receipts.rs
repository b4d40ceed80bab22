//! Applying a run of receipts from other nodes (their users received or read messages users of
//! this node sent): record each envelope once, find the senders' copies, decide each receipt in
//! order as if applied one by one, then move statuses forward. Three statements per chunk,
//! where one receipt at a time took two each.

use std::collections::{HashMap, HashSet};

use kith_proto::{MessageStatus, Timestamp};

use super::statements::{CopyRow, Statements};
use super::{apply_in_chunks, chunks};
use crate::store::rows::parse_status;
use crate::store::status::advances;
use crate::store::writer::{Job, Slot};
use crate::store::{RemoteReceipt, StoreError};

/// Applies a run of `ApplyRemoteReceipt` jobs; each learns the status its copy moved to, if it
/// moved. Returns an error only when it aborts the batch.
pub(in crate::store) async fn apply_remote_receipts<S: Statements>(
    s: &mut S,
    run: &mut [Job],
) -> Result<(), StoreError> {
    fn parts(job: &mut Job) -> Option<(&RemoteReceipt, &mut Slot<Option<MessageStatus>>)> {
        match job {
            Job::ApplyRemoteReceipt(receipt, slot) => Some((receipt, slot)),
            _ => None,
        }
    }
    apply_in_chunks(run, parts, async |receipts: &[&RemoteReceipt]| remote_chunk(s, receipts).await).await
}

async fn remote_chunk<S: Statements>(
    s: &mut S,
    receipts: &[&RemoteReceipt],
) -> Result<Vec<Result<Option<MessageStatus>, StoreError>>, StoreError> {
    let firsts = first_receipts(s, receipts).await?;
    let ids: Vec<String> = receipts.iter().map(|r| r.message_id.to_string()).collect();
    let keys: Vec<(&str, &str)> = receipts
        .iter()
        .zip(&ids)
        .zip(&firsts)
        .filter(|(_, first)| **first)
        .map(|((r, id), _)| (r.sender.as_str(), id.as_str()))
        .collect();
    let mut rows: Vec<CopyRow> = Vec::new();
    for chunk in chunks(&keys) {
        rows.extend(s.find_copies(chunk).await?);
    }
    let copies: HashMap<(&str, &str), &CopyRow> =
        rows.iter().map(|row| ((row.owner.as_str(), row.message_id.as_str()), row)).collect();
    let mut status_now: HashMap<i64, MessageStatus> = HashMap::new();
    let mut moved: Vec<(i64, MessageStatus)> = Vec::new();
    let mut outcomes = Vec::with_capacity(receipts.len());
    for ((receipt, id), first) in receipts.iter().zip(&ids).zip(firsts) {
        outcomes.push(Ok(decide(receipt, id, first, &copies, &mut status_now, &mut moved)?));
    }
    for status in [MessageStatus::Delivered, MessageStatus::Read] {
        let seqs: Vec<i64> = moved.iter().filter(|(_, st)| *st == status).map(|(seq, _)| *seq).collect();
        for chunk in chunks(&seqs) {
            s.advance_by_seq(status, chunk).await?;
        }
    }
    Ok(outcomes)
}

/// Step 1. Records each receipt's envelope; says, per receipt, whether it is the first with
/// its `(origin, envelope id)` (a repeat, in the store or earlier in the run, changes nothing).
async fn first_receipts<S: Statements>(s: &mut S, receipts: &[&RemoteReceipt]) -> Result<Vec<bool>, StoreError> {
    let keys: Vec<(&str, &str)> =
        receipts.iter().map(|r| (r.received.origin.as_str(), r.received.envelope_id.as_str())).collect();
    let mut inserted: Vec<(String, String)> = Vec::new();
    let now = Timestamp::now().as_millis();
    for chunk in chunks(&keys) {
        inserted.extend(s.insert_inbox(chunk, now).await?);
    }
    let mut new: HashSet<(&str, &str)> = inserted.iter().map(|(origin, id)| (origin.as_str(), id.as_str())).collect();
    Ok(keys.iter().map(|key| new.remove(key)).collect())
}

/// Step 2. One receipt, seeing what earlier ones of the run left: it moves the sender's copy
/// forward only when it is the first of its envelope, names the copy's receiver (only the
/// receiver's node speaks for them), and is news.
fn decide(
    receipt: &RemoteReceipt,
    id: &str,
    first: bool,
    copies: &HashMap<(&str, &str), &CopyRow>,
    status_now: &mut HashMap<i64, MessageStatus>,
    moved: &mut Vec<(i64, MessageStatus)>,
) -> Result<Option<MessageStatus>, StoreError> {
    if !first || receipt.status == MessageStatus::Sent {
        return Ok(None);
    }
    let Some(row) = copies.get(&(receipt.sender.as_str(), id)) else {
        return Ok(None);
    };
    if row.receiver != receipt.receiver.as_str() {
        return Ok(None);
    }
    let current = match status_now.get(&row.seq) {
        Some(current) => *current,
        None => parse_status("messages", &row.status)?,
    };
    if !advances(current, receipt.status) {
        return Ok(None);
    }
    status_now.insert(row.seq, receipt.status);
    moved.push((row.seq, receipt.status));
    Ok(Some(receipt.status))
}

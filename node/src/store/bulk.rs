//! The hot path of the group commit: runs of message appends and of receipts, each applied
//! with a fixed number of multi-row statements per chunk instead of several statements per
//! operation. Every statement is a round trip (to SQLite's worker thread, or to PostgreSQL), so
//! the number of statements per commit, not per message, is what bounds throughput.
//!
//! Outcomes are the same as applying the operations one by one, in order: a repeated
//! `clientMessageId` (or inbox id) later in the same run is a duplicate of the earlier one, and
//! a receipt sees the status an earlier receipt of the run left.

use std::collections::{HashMap, HashSet};

use kith_proto::{DeviceId, MessageStatus, Timestamp};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::rows::{RowsAffected, parse_message_id, parse_user};
use super::writer::{Job, Tx, Writer, keep};
use super::{AppendOutcome, NewMessage, OutboxEntry, Receipt, ReceiptOutcome, StoreError};

/// The row counts a multi-row statement may have: a run is split into chunks of these sizes
/// (largest first, as in binary), so that only a handful of distinct statement texts exist and
/// every one stays in the connection's prepared-statement cache. Preparing a statement of a
/// hundred rows each time cost more than running it. 128 keeps parameters far below the
/// engines' limits (SQLite 32,766; PostgreSQL 65,535).
const CHUNK_SIZES: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// How many rows of `total` the next chunk takes.
fn next_chunk(total: usize) -> usize {
    CHUNK_SIZES.into_iter().find(|&size| size <= total).unwrap_or(total)
}

/// Splits `items` into chunks of the sizes in [`CHUNK_SIZES`].
fn chunks<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let (head, rest) = items.split_at(next_chunk(items.len()));
        out.push(head);
        items = rest;
    }
    out
}

/// Splits `items` into mutable chunks of the sizes in [`CHUNK_SIZES`].
fn chunks_mut<T>(mut items: &mut [T]) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    while !items.is_empty() {
        let (head, rest) = items.split_at_mut(next_chunk(items.len()));
        out.push(head);
        items = rest;
    }
    out
}

/// Whether a message with status `current` moves to `new`.
fn advances(current: MessageStatus, new: MessageStatus) -> bool {
    matches!((current, new), (MessageStatus::Sent, MessageStatus::Delivered | MessageStatus::Read))
        || matches!((current, new), (MessageStatus::Delivered, MessageStatus::Read))
}

/// A mailbox row to insert for a new message.
struct MailboxRow<'a> {
    index: usize,
    owner: &'a str,
    peer: &'a str,
    /// The device that does not need it pushed (the sender's sending device).
    except: Option<DeviceId>,
}

impl<DB> Writer<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    DB::QueryResult: RowsAffected,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Applies a run of `AppendMessage` jobs. Returns an error only when it aborts the batch.
    pub(super) async fn append_messages(tx: &mut Tx<DB>, run: &mut [Job]) -> Result<(), StoreError> {
        for chunk in chunks_mut(run) {
            let messages: Vec<&NewMessage> = chunk
                .iter()
                .filter_map(|job| match job {
                    Job::AppendMessage(message, _) => Some(message),
                    _ => None,
                })
                .collect();
            let outcomes = Self::append_chunk(tx, &messages).await?;
            let slots = chunk.iter_mut().filter_map(|job| match job {
                Job::AppendMessage(_, slot) => Some(slot),
                _ => None,
            });
            for (slot, outcome) in slots.zip(outcomes) {
                if let Some(e) = keep(slot, outcome) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn append_chunk(
        tx: &mut Tx<DB>,
        messages: &[&NewMessage],
    ) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
        let mut outcomes: Vec<Option<AppendOutcome>> = vec![None; messages.len()];
        let duplicate = |m: &NewMessage| AppendOutcome::Duplicate { message_id: m.message_id, timestamp: m.timestamp };

        // 1. Envelopes from other nodes: the first sight of (origin, id) stores, a repeat does not.
        let received: Vec<usize> = (0..messages.len()).filter(|&i| messages[i].received.is_some()).collect();
        if !received.is_empty() {
            let now = Timestamp::now().as_millis();
            let mut inserted: HashSet<(String, String)> = HashSet::new();
            for chunk in chunks(&received) {
                let mut query = QueryBuilder::<DB>::new("INSERT INTO inbox (origin, envelope_id, received_at) ");
                query.push_values(chunk, |mut row, &i| {
                    if let Some(key) = &messages[i].received {
                        row.push_bind(key.origin.as_str()).push_bind(key.envelope_id.as_str()).push_bind(now);
                    }
                });
                query.push(" ON CONFLICT (origin, envelope_id) DO NOTHING RETURNING origin, envelope_id");
                inserted.extend(query.build_query_as::<(String, String)>().fetch_all(&mut **tx).await?);
            }
            let mut first = HashSet::new();
            for i in received {
                if let Some(key) = &messages[i].received {
                    let key = (key.origin.to_string(), key.envelope_id.clone());
                    if !(inserted.contains(&key) && first.insert(key)) {
                        outcomes[i] = Some(duplicate(messages[i]));
                    }
                }
            }
        }

        // 2. Idempotency keys: a key seen before (in the store, or earlier in this chunk) makes
        // the message a repeat of the first one.
        let keyed: Vec<usize> =
            (0..messages.len()).filter(|&i| outcomes[i].is_none() && messages[i].client_message_id.is_some()).collect();
        if !keyed.is_empty() {
            let ids: Vec<(usize, String)> = keyed.iter().map(|&i| (i, messages[i].message_id.to_string())).collect();
            let mut inserted: HashSet<(String, String)> = HashSet::new();
            for chunk in chunks(&ids) {
                let mut query = QueryBuilder::<DB>::new(
                    "INSERT INTO client_message_ids (sender_id, client_message_id, message_id, timestamp) ",
                );
                query.push_values(chunk, |mut row, (i, id)| {
                    let m = &messages[*i];
                    let client_id = m.client_message_id.as_ref().map_or("", |c| c.as_str());
                    row.push_bind(m.sender.as_str())
                        .push_bind(client_id)
                        .push_bind(id.as_str())
                        .push_bind(m.timestamp.as_millis());
                });
                query.push(
                    " ON CONFLICT (sender_id, client_message_id) DO NOTHING RETURNING sender_id, client_message_id",
                );
                inserted.extend(query.build_query_as::<(String, String)>().fetch_all(&mut **tx).await?);
            }
            let mut first: HashMap<(String, String), usize> = HashMap::new();
            for i in keyed {
                let m = &messages[i];
                let key =
                    (m.sender.to_string(), m.client_message_id.as_ref().map_or_else(String::new, |c| c.to_string()));
                if let Some(&j) = first.get(&key) {
                    outcomes[i] = Some(duplicate(messages[j]));
                } else if inserted.contains(&key) {
                    first.insert(key, i);
                } else {
                    outcomes[i] = Some(Self::earlier_send(tx, &key.0, &key.1).await?);
                }
            }
        }

        // 3. Mailbox rows: the sender's copy (when the sender is ours and not also the
        // receiver), the receiver's copy (unless an envelope carries it to another node).
        let ids: Vec<String> = messages.iter().map(|m| m.message_id.to_string()).collect();
        let mut rows = Vec::new();
        let mut outbox: Vec<&OutboxEntry> = Vec::new();
        for (i, m) in messages.iter().enumerate().filter(|(i, _)| outcomes[*i].is_none()) {
            let (sender, receiver) = (m.sender.as_str(), m.receiver.as_str());
            if sender != receiver
                && let Some(device) = m.sender_device
            {
                rows.push(MailboxRow { index: i, owner: sender, peer: receiver, except: Some(device) });
            }
            match &m.forward {
                Some(envelope) => outbox.push(envelope),
                None => {
                    let except = if sender == receiver { m.sender_device } else { None };
                    rows.push(MailboxRow { index: i, owner: receiver, peer: sender, except });
                }
            }
        }
        let mut seqs: HashMap<(String, String), i64> = HashMap::new();
        for chunk in chunks(&rows) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO messages \
                 (owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status) ",
            );
            query.push_values(chunk, |mut row, r| {
                let m = &messages[r.index];
                row.push_bind(r.owner)
                    .push_bind(ids[r.index].as_str())
                    .push_bind(r.peer)
                    .push_bind(m.sender.as_str())
                    .push_bind(m.receiver.as_str())
                    .push_bind(m.content.as_str())
                    .push_bind(m.timestamp.as_millis())
                    .push_bind("sent");
            });
            // A row that exists already was stored by an earlier attempt whose commit answer was
            // lost (a dropped connection after COMMIT): it stands, and its queue rows with it.
            query.push(" ON CONFLICT (owner_id, message_id) DO NOTHING RETURNING seq, owner_id, message_id");
            let returned = query.build_query_as::<(i64, String, String)>().fetch_all(&mut **tx).await?;
            seqs.extend(returned.into_iter().map(|(seq, owner, id)| ((owner, id), seq)));
        }

        // 4. Each new row is pending for each of its owner's devices but the sending one.
        let fresh: Vec<(&MailboxRow<'_>, i64)> = rows
            .iter()
            .filter_map(|r| seqs.get(&(r.owner.to_owned(), ids[r.index].clone())).map(|seq| (r, *seq)))
            .collect();
        for chunk in chunks(&fresh) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO device_pending (owner_id, device_id, seq) \
                 SELECT d.user_id, d.device_id, v.seq FROM devices d JOIN (",
            );
            for (n, (r, seq)) in chunk.iter().enumerate() {
                let seq = *seq;
                query.push(if n == 0 { "SELECT " } else { " UNION ALL SELECT " });
                query.push_bind(r.owner);
                query.push(if n == 0 { " AS owner, " } else { ", " });
                query.push_bind(seq);
                query.push(if n == 0 { " AS seq, " } else { ", " });
                query.push_bind(r.except.map_or(-1, |d| i64::from(d.0)));
                if n == 0 {
                    query.push(" AS except_device");
                }
            }
            query.push(") v ON d.user_id = v.owner WHERE d.device_id <> v.except_device");
            query.build().execute(&mut **tx).await?;
        }

        // 5. Envelopes for receivers on other nodes, in the same transaction.
        Self::insert_outbox_rows(tx, &outbox).await?;

        Ok(messages
            .iter()
            .zip(outcomes)
            .map(|(m, outcome)| {
                Ok(outcome.unwrap_or(AppendOutcome::Stored { message_id: m.message_id, timestamp: m.timestamp }))
            })
            .collect())
    }

    /// The message an earlier send with this idempotency key created.
    async fn earlier_send(tx: &mut Tx<DB>, sender: &str, client_id: &str) -> Result<AppendOutcome, StoreError> {
        let (first_id, first_ts) = sqlx::query_as::<DB, (String, i64)>(
            "SELECT message_id, timestamp FROM client_message_ids WHERE sender_id = $1 AND client_message_id = $2",
        )
        .bind(sender)
        .bind(client_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(AppendOutcome::Duplicate {
            message_id: parse_message_id("client_message_ids", &first_id)?,
            timestamp: Timestamp::from_millis(first_ts),
        })
    }

    /// Queues envelopes for other nodes with one statement.
    pub(super) async fn insert_outbox_rows(tx: &mut Tx<DB>, entries: &[&OutboxEntry]) -> Result<(), StoreError> {
        for chunk in chunks(entries) {
            let now = Timestamp::now().as_millis();
            let mut query =
                QueryBuilder::<DB>::new("INSERT INTO outbox (destination, envelope_id, kind, body, created_at) ");
            query.push_values(chunk, |mut row, entry| {
                row.push_bind(entry.destination.as_str())
                    .push_bind(entry.envelope_id.as_str())
                    .push_bind(entry.kind.as_str())
                    .push_bind(entry.body.as_slice())
                    .push_bind(now);
            });
            query.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Applies a run of `RecordReceipt` jobs. Returns an error only when it aborts the batch.
    pub(super) async fn record_receipts(tx: &mut Tx<DB>, run: &mut [Job]) -> Result<(), StoreError> {
        for chunk in chunks_mut(run) {
            let receipts: Vec<&Receipt> = chunk
                .iter()
                .filter_map(|job| match job {
                    Job::RecordReceipt(receipt, _) => Some(receipt),
                    _ => None,
                })
                .collect();
            let outcomes = Self::receipt_chunk(tx, &receipts).await?;
            let slots = chunk.iter_mut().filter_map(|job| match job {
                Job::RecordReceipt(_, slot) => Some(slot),
                _ => None,
            });
            for (slot, outcome) in slots.zip(outcomes) {
                if let Some(e) = keep(slot, outcome) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn receipt_chunk(
        tx: &mut Tx<DB>,
        receipts: &[&Receipt],
    ) -> Result<Vec<Result<ReceiptOutcome, StoreError>>, StoreError> {
        // 1. The rows the receipts are about, in their readers' mailboxes.
        let ids: Vec<String> = receipts.iter().map(|r| r.message_id.to_string()).collect();
        let mut query = QueryBuilder::<DB>::new(
            "SELECT m.seq, m.owner_id, m.message_id, m.sender_id, m.receiver_id, m.status FROM messages m JOIN (",
        );
        for (n, (receipt, id)) in receipts.iter().zip(&ids).enumerate() {
            query.push(if n == 0 { "SELECT " } else { " UNION ALL SELECT " });
            query.push_bind(receipt.reader.as_str());
            query.push(if n == 0 { " AS owner, " } else { ", " });
            query.push_bind(id.as_str());
            if n == 0 {
                query.push(" AS message_id");
            }
        }
        query.push(") v ON m.owner_id = v.owner AND m.message_id = v.message_id");
        let found: HashMap<(String, String), (i64, String, String, String)> = query
            .build_query_as::<(i64, String, String, String, String, String)>()
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(seq, owner, id, sender, receiver, status)| ((owner, id), (seq, sender, receiver, status)))
            .collect();

        // 2. Decide each receipt in order, as if applied one by one.
        let mut outcomes = Vec::with_capacity(receipts.len());
        let mut status_now: HashMap<i64, MessageStatus> = HashMap::new();
        let mut clear_device: Vec<(&str, i64, i64)> = Vec::new();
        let mut clear_all: Vec<(&str, i64)> = Vec::new();
        let mut receiver_status: HashMap<i64, MessageStatus> = HashMap::new();
        let mut sender_status: HashMap<(String, String), MessageStatus> = HashMap::new();
        let mut forwards: Vec<OutboxEntry> = Vec::new();
        for (receipt, id) in receipts.iter().zip(&ids) {
            let reader = receipt.reader.as_str();
            let Some((seq, sender, receiver, stored)) = found.get(&(reader.to_owned(), id.clone())) else {
                outcomes.push(Err(StoreError::MessageNotFound(receipt.message_id)));
                continue;
            };
            let status = match receipt.status {
                MessageStatus::Sent => MessageStatus::Delivered,
                other => other,
            };
            let is_receiver = receiver == reader;
            // Only the receiver reads a message; the sender's other devices only acknowledge
            // their copy.
            if !is_receiver && status == MessageStatus::Read {
                outcomes.push(Err(StoreError::MessageNotFound(receipt.message_id)));
                continue;
            }
            let sender_id = parse_user("messages", sender)?;
            if is_receiver && status == MessageStatus::Read {
                // Read on one device: no device of the reader needs it pushed again.
                clear_all.push((reader, *seq));
            } else {
                clear_device.push((reader, i64::from(receipt.device.0), *seq));
            }
            if !is_receiver {
                outcomes.push(Ok(ReceiptOutcome { sender: sender_id, advanced_to: None }));
                continue;
            }
            let current = match status_now.get(seq) {
                Some(current) => *current,
                None => MessageStatus::parse(stored)
                    .ok_or_else(|| StoreError::Corrupt { table: "messages", detail: format!("status {stored:?}") })?,
            };
            let advanced = advances(current, status);
            if advanced {
                status_now.insert(*seq, status);
                receiver_status.insert(*seq, status);
                match receipt.forward.as_ref().and_then(|forward| forward(&sender_id, status, receipt.at)) {
                    // The sender's copy is on their own node: an envelope carries the receipt.
                    Some(envelope) => forwards.push(envelope),
                    None if sender != reader => {
                        sender_status.insert((sender.clone(), id.clone()), status);
                    }
                    None => {}
                }
            }
            outcomes.push(Ok(ReceiptOutcome { sender: sender_id, advanced_to: advanced.then_some(status) }));
        }

        // 3. What stops being pending: one device's copy (an ack), or every device's (a read).
        for chunk in chunks(&clear_device) {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM device_pending WHERE ");
            for (n, (owner, device, seq)) in chunk.iter().enumerate() {
                query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
                query.push_bind(*owner).push(" AND seq = ").push_bind(*seq);
                query.push(" AND device_id = ").push_bind(*device).push(")");
            }
            query.build().execute(&mut **tx).await?;
        }
        for chunk in chunks(&clear_all) {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM device_pending WHERE ");
            for (n, (owner, seq)) in chunk.iter().enumerate() {
                query.push(if n == 0 { "(owner_id = " } else { " OR (owner_id = " });
                query.push_bind(*owner).push(" AND seq = ").push_bind(*seq).push(")");
            }
            query.build().execute(&mut **tx).await?;
        }

        // 4. Statuses, forward only (the guard repeats what was decided above).
        for status in [MessageStatus::Delivered, MessageStatus::Read] {
            let seqs: Vec<i64> = receiver_status.iter().filter(|(_, s)| **s == status).map(|(seq, _)| *seq).collect();
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
                sender_status.iter().filter(|(_, s)| **s == status).map(|(key, _)| key).collect();
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

        // 5. Receipts for senders on other nodes.
        Self::insert_outbox_rows(tx, &forwards.iter().collect::<Vec<_>>()).await?;
        Ok(outcomes)
    }
}

/// The forward-only guard for moving to `status`: from `sent` to anything, from `delivered`
/// only to `read`.
pub(super) fn push_advances<DB: Database>(query: &mut QueryBuilder<DB>, status: MessageStatus) {
    match status {
        MessageStatus::Read => query.push("status <> 'read'"),
        _ => query.push("status = 'sent'"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_only_moves_forward() {
        use MessageStatus::{Delivered, Read, Sent};
        assert!(advances(Sent, Delivered) && advances(Sent, Read) && advances(Delivered, Read));
        assert!(!advances(Delivered, Delivered) && !advances(Read, Delivered) && !advances(Read, Read));
        assert!(!advances(Sent, Sent));
    }
}

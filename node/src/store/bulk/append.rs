//! Appending a run of messages: deduplicate what came before, write each new message's
//! mailbox rows (those of owners on this shard), queue them for their owners' devices, and
//! queue what belongs elsewhere: envelopes for other nodes, hand-offs for other shards.

use std::collections::{HashMap, HashSet};

use kith_proto::{ClientMessageId, DeviceId, Timestamp};

use super::statements::{ClientIdRow, HandoffRow, MailboxInsert, QueueRow, Statements};
use super::{apply_in_chunks, chunks};
use crate::store::handoff::{Handoff, NewHandoff};
use crate::store::placement::{Placement, shard_of};
use crate::store::rows::parse_message_id;
use crate::store::writer::{Job, Slot};
use crate::store::{AppendOutcome, InboxKey, NewMessage, OutboxEntry, Recipient, Source, StoreError};

/// A mailbox row to insert for a new message.
struct MailboxRow<'a> {
    /// Which message of the chunk.
    index: usize,
    owner: &'a str,
    peer: &'a str,
    /// The device that does not need it pushed (the sender's sending device).
    except: Option<DeviceId>,
}

/// Each message's outcome as the steps decide it: `None` while it is still new.
type Outcomes = Vec<Option<AppendOutcome>>;

/// A receiver's copy from another shard whose row was there already (the relay and a sweep
/// both applied one hand-off) is a repeat: saying so keeps the sweep from pushing it again.
/// Other messages whose rows exist stay `Stored`: a retried send whose first commit answer was
/// lost still answers `sent`.
fn skip_applied_handoffs(messages: &[&NewMessage], fresh: &[(&MailboxRow<'_>, i64)], outcomes: &mut Outcomes) {
    let written: HashSet<usize> = fresh.iter().map(|(row, _)| row.index).collect();
    for (i, m) in messages.iter().enumerate() {
        if matches!(m.from, Source::OtherShard) && outcomes[i].is_none() && !written.contains(&i) {
            outcomes[i] = Some(duplicate_of(m));
        }
    }
}

fn duplicate_of(m: &NewMessage) -> AppendOutcome {
    AppendOutcome::Duplicate { message_id: m.message_id, timestamp: m.timestamp }
}

/// Applies a run of `AppendMessage` jobs. Returns an error only when it aborts the batch.
pub(in crate::store) async fn append_messages<S: Statements>(
    s: &mut S,
    placement: Placement,
    run: &mut [Job],
) -> Result<(), StoreError> {
    fn parts(job: &mut Job) -> Option<(&NewMessage, &mut Slot<AppendOutcome>)> {
        match job {
            Job::AppendMessage(message, slot) => Some((message, slot)),
            _ => None,
        }
    }
    apply_in_chunks(run, parts, async |messages: &[&NewMessage]| {
        Ok(append_chunk(s, placement, messages).await?.into_iter().map(Ok).collect())
    })
    .await
}

async fn append_chunk<S: Statements>(
    s: &mut S,
    placement: Placement,
    messages: &[&NewMessage],
) -> Result<Vec<AppendOutcome>, StoreError> {
    let mut outcomes: Outcomes = vec![None; messages.len()];
    skip_repeated_envelopes(s, messages, &mut outcomes).await?;
    skip_repeated_client_ids(s, placement, messages, &mut outcomes).await?;
    let Placed { rows, outbox, handoffs } = place(placement, messages, &outcomes);
    let fresh = insert_mailbox_rows(s, messages, &rows).await?;
    skip_applied_handoffs(messages, &fresh, &mut outcomes);
    queue_for_devices(s, &fresh).await?;
    insert_outbox_rows(s, &outbox).await?;
    insert_handoffs(s, &handoffs).await?;
    Ok(messages
        .iter()
        .zip(outcomes)
        .map(|(m, outcome)| {
            outcome.unwrap_or(AppendOutcome::Stored { message_id: m.message_id, timestamp: m.timestamp })
        })
        .collect())
}

/// Step 1. A message from another node stores nothing if its envelope came before (in the
/// store, or earlier in this chunk).
async fn skip_repeated_envelopes<S: Statements>(
    s: &mut S,
    messages: &[&NewMessage],
    outcomes: &mut Outcomes,
) -> Result<(), StoreError> {
    let received: Vec<(usize, &InboxKey)> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| match &m.from {
            Source::Peer(key) => Some((i, key)),
            Source::Device { .. } | Source::OtherShard => None,
        })
        .collect();
    if received.is_empty() {
        return Ok(());
    }
    let now = Timestamp::now().as_millis();
    let mut inserted: HashSet<(String, String)> = HashSet::new();
    for chunk in chunks(&received) {
        let keys: Vec<(&str, &str)> =
            chunk.iter().map(|(_, key)| (key.origin.as_str(), key.envelope_id.as_str())).collect();
        inserted.extend(s.insert_inbox(&keys, now).await?);
    }
    let mut first = HashSet::new();
    for (i, key) in received {
        let key = (key.origin.to_string(), key.envelope_id.clone());
        if !(inserted.contains(&key) && first.insert(key)) {
            outcomes[i] = Some(duplicate_of(messages[i]));
        }
    }
    Ok(())
}

/// Step 2. A `clientMessageId` the sender used before (in the store, or earlier in this
/// chunk) makes the message a repeat of the first one, answered with that one's id. The
/// keys live with the sender's copy, on the sender's shard.
async fn skip_repeated_client_ids<S: Statements>(
    s: &mut S,
    placement: Placement,
    messages: &[&NewMessage],
    outcomes: &mut Outcomes,
) -> Result<(), StoreError> {
    let keyed: Vec<(usize, &ClientMessageId, String)> = messages
        .iter()
        .enumerate()
        .filter(|(i, m)| outcomes[*i].is_none() && placement.holds(&m.sender))
        .filter_map(|(i, m)| match &m.from {
            Source::Device { client_message_id: Some(client_id), .. } => Some((i, client_id, m.message_id.to_string())),
            _ => None,
        })
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    let mut inserted: HashSet<(String, String)> = HashSet::new();
    for chunk in chunks(&keyed) {
        let rows: Vec<ClientIdRow<'_>> = chunk
            .iter()
            .map(|(i, client_id, id)| ClientIdRow {
                sender: messages[*i].sender.as_str(),
                client_message_id: client_id.as_str(),
                message_id: id.as_str(),
                timestamp: messages[*i].timestamp.as_millis(),
            })
            .collect();
        inserted.extend(s.insert_client_ids(&rows).await?);
    }
    let mut first: HashMap<(String, String), usize> = HashMap::new();
    for (i, client_id, _) in keyed {
        let key = (messages[i].sender.to_string(), client_id.to_string());
        if let Some(&j) = first.get(&key) {
            outcomes[i] = Some(duplicate_of(messages[j]));
        } else if inserted.contains(&key) {
            first.insert(key, i);
        } else {
            let (first_id, first_ts) = s.earlier_send(&key.0, &key.1).await?;
            outcomes[i] = Some(AppendOutcome::Duplicate {
                message_id: parse_message_id("client_message_ids", &first_id)?,
                timestamp: Timestamp::from_millis(first_ts),
            });
        }
    }
    Ok(())
}

/// Step 3. Inserts the mailbox rows and returns the ones that are new, with their `seq`. A
/// row that exists already was stored by an earlier attempt whose commit answer was lost (a
/// dropped connection after COMMIT): it stands, and its queue rows with it.
async fn insert_mailbox_rows<'a, S: Statements>(
    s: &mut S,
    messages: &[&NewMessage],
    rows: &'a [MailboxRow<'a>],
) -> Result<Vec<(&'a MailboxRow<'a>, i64)>, StoreError> {
    let ids: Vec<String> = messages.iter().map(|m| m.message_id.to_string()).collect();
    let mut seqs: HashMap<(String, String), i64> = HashMap::new();
    for chunk in chunks(rows) {
        let inserts: Vec<MailboxInsert<'_>> = chunk
            .iter()
            .map(|r| {
                let m = messages[r.index];
                MailboxInsert {
                    owner: r.owner,
                    message_id: ids[r.index].as_str(),
                    peer: r.peer,
                    sender: m.sender.as_str(),
                    receiver: m.receiver.as_str(),
                    content: m.content.as_str(),
                    timestamp: m.timestamp.as_millis(),
                }
            })
            .collect();
        let returned = s.insert_mailbox_rows(&inserts).await?;
        seqs.extend(returned.into_iter().map(|(seq, owner, id)| ((owner, id), seq)));
    }
    Ok(rows.iter().filter_map(|r| seqs.get(&(r.owner.to_owned(), ids[r.index].clone())).map(|seq| (r, *seq))).collect())
}

/// Step 4. Each new row is pending for each of its owner's devices but the sending one.
async fn queue_for_devices<S: Statements>(s: &mut S, fresh: &[(&MailboxRow<'_>, i64)]) -> Result<(), StoreError> {
    for chunk in chunks(fresh) {
        let rows: Vec<QueueRow<'_>> = chunk
            .iter()
            .map(|(r, seq)| QueueRow {
                owner: r.owner,
                seq: *seq,
                except_device: r.except.map_or(-1, |d| i64::from(d.0)),
            })
            .collect();
        s.queue_for_devices(&rows).await?;
    }
    Ok(())
}

/// Step 5 (also used for receipts and presence). Queues envelopes for other nodes with one
/// statement per chunk.
pub(in crate::store) async fn insert_outbox_rows<S: Statements>(
    s: &mut S,
    entries: &[&OutboxEntry],
) -> Result<(), StoreError> {
    for chunk in chunks(entries) {
        s.insert_outbox(chunk, Timestamp::now().as_millis()).await?;
    }
    Ok(())
}

/// Step 6 (also used for receipts). Records what belongs on other shards, with one
/// statement per chunk.
pub(in crate::store) async fn insert_handoffs<S: Statements>(
    s: &mut S,
    handoffs: &[NewHandoff],
) -> Result<(), StoreError> {
    let bodies =
        handoffs.iter().map(|h| Ok((h.handoff.id(), h.handoff.encode()?))).collect::<Result<Vec<_>, StoreError>>()?;
    let rows: Vec<HandoffRow<'_>> = handoffs
        .iter()
        .zip(&bodies)
        .map(|(h, (id, body))| HandoffRow {
            id: id.as_str(),
            target_shard: i64::from(h.target_shard),
            body: body.as_slice(),
        })
        .collect();
    for chunk in chunks(&rows) {
        s.insert_handoffs(chunk, Timestamp::now().as_millis()).await?;
    }
    Ok(())
}

/// Where the new messages of a chunk go.
struct Placed<'a> {
    /// Mailbox rows on this shard.
    rows: Vec<MailboxRow<'a>>,
    /// Envelopes that carry messages to other nodes.
    outbox: Vec<&'a OutboxEntry>,
    /// Receivers' copies that belong on other shards.
    handoffs: Vec<NewHandoff>,
}

/// Decides, for each new message, what this shard writes: the sender's copy when the sender
/// is a user of this node whose rows are here (and not also the receiver), the receiver's
/// copy when the receiver's rows are here; and what goes elsewhere: an envelope for a receiver
/// on another node, a hand-off for a receiver on another shard.
fn place<'a>(placement: Placement, messages: &[&'a NewMessage], outcomes: &Outcomes) -> Placed<'a> {
    let mut placed = Placed { rows: Vec::new(), outbox: Vec::new(), handoffs: Vec::new() };
    for (index, m) in messages.iter().enumerate().filter(|(i, _)| outcomes[*i].is_none()) {
        let (sender, receiver) = (m.sender.as_str(), m.receiver.as_str());
        let sending_device = match &m.from {
            Source::Device { device, .. } if placement.holds(&m.sender) => Some(*device),
            Source::Device { .. } | Source::Peer(_) | Source::OtherShard => None,
        };
        if sender != receiver
            && let Some(device) = sending_device
        {
            placed.rows.push(MailboxRow { index, owner: sender, peer: receiver, except: Some(device) });
        }
        match &m.to {
            Recipient::Peer(envelope) if sending_device.is_some() => placed.outbox.push(envelope),
            Recipient::Peer(_) => {}
            Recipient::User if placement.holds(&m.receiver) => {
                // A note to oneself: one row, not pending for the device that wrote it.
                let except = if sender == receiver { sending_device } else { None };
                placed.rows.push(MailboxRow { index, owner: receiver, peer: sender, except });
            }
            Recipient::User if sending_device.is_some() => placed.handoffs.push(NewHandoff {
                target_shard: shard_of(&m.receiver, placement.count),
                handoff: Handoff::Message {
                    message_id: m.message_id,
                    sender_id: m.sender.clone(),
                    receiver_id: m.receiver.clone(),
                    content: m.content.clone(),
                    timestamp: m.timestamp,
                },
            }),
            Recipient::User => {}
        }
    }
    placed
}

//! The hot path of the group commit: runs of message appends ([`append`]), of receipts
//! ([`receipts`]), of receipts from other nodes ([`remote_receipts`]) and of outbox removals
//! ([`outbox`]), each applied with a fixed number of multi-row statements per chunk instead
//! of several statements per operation. Every statement is a round trip (to SQLite's worker
//! thread, or to PostgreSQL), so the number of statements per commit, not per message, is what
//! bounds throughput.
//!
//! Outcomes are the same as applying the operations one by one, in order: a repeated
//! `clientMessageId` (or inbox id) later in the same run is a duplicate of the earlier one, and
//! a receipt sees the status an earlier receipt of the run left.

mod append;
mod outbox;
mod pg_statements;
mod receipts;
mod remote_receipts;
mod sqlite_statements;
mod sqlx_statements;
mod statements;

pub(in crate::store) use append::{append_messages, insert_outbox_rows};
pub(in crate::store) use outbox::remove_outbox_rows;
pub(in crate::store) use receipts::record_receipts;
pub(in crate::store) use remote_receipts::apply_remote_receipts;
pub(in crate::store) use statements::Statements;

use super::StoreError;
use super::writer::{Job, Slot};

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
pub(in crate::store) fn chunks<T>(mut items: &[T]) -> Vec<&[T]> {
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

/// Applies a run of one kind of job chunk by chunk, the way each hot-path kind is applied:
/// `parts` lends a job's operation and answer slot (`None` for another kind, which the writer
/// never puts in the run), `apply` turns a chunk's operations into their outcomes in order,
/// and each outcome is kept in its job's slot. Returns an error only when it aborts the batch.
async fn apply_in_chunks<Op, T>(
    run: &mut [Job],
    parts: impl Fn(&mut Job) -> Option<(&Op, &mut Slot<T>)>,
    mut apply: impl AsyncFnMut(&[&Op]) -> Result<Vec<Result<T, StoreError>>, StoreError>,
) -> Result<(), StoreError> {
    for chunk in chunks_mut(run) {
        let (ops, slots): (Vec<&Op>, Vec<&mut Slot<T>>) = chunk.iter_mut().filter_map(&parts).unzip();
        let outcomes = apply(&ops).await?;
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            slot.keep(outcome)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_into_the_fixed_sizes() {
        let sizes = |n: usize| chunks(&vec![0; n]).iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(7), [4, 2, 1]);
        assert_eq!(sizes(300), [128, 128, 32, 8, 4]);
    }
}

//! Removals of acked envelopes from the outbox, applied in the hot path's commits: at a steady
//! rate to another node every request the peer acks is one removal, and as a commit of its own
//! it cost the writer a transaction and, on SQLite, an `fsync` per request. Beside the appends
//! and receipts it costs one statement per chunk, and a commit of removals alone does not wait
//! for the disk ([`crate::store::writer::Job::must_reach_disk`]).

use super::chunks;
use super::statements::Statements;
use crate::store::StoreError;
use crate::store::writer::Job;

/// Applies a run of outbox removals: one `DELETE` per chunk of each removal's rows.
pub(in crate::store) async fn remove_outbox_rows<S: Statements>(s: &mut S, run: &mut [Job]) -> Result<(), StoreError> {
    for job in run {
        let Job::OutboxRemove { destination, seqs, slot } = job else { continue };
        for chunk in chunks(seqs) {
            s.delete_outbox(destination, chunk).await?;
        }
        slot.keep(Ok(()))?;
    }
    Ok(())
}

//! Local devices' `delivered` acks wait a moment for company when the writer has time to spare.
//! Which jobs may wait is the writer's to say (`Job::may_wait`); this module only holds them.
//!
//! At low rates every message is a commit of its own, and so is the receiver's ack that comes a
//! moment after it: two wake-ups of the writer and two transactions per message. An ack held
//! until the next operation arrives rides in that operation's commit instead (at 200 messages/s:
//! half the transactions, docs/benchmarks.md). The cost is the sender's `delivered` tick, up to
//! [`ACK_HOLD`] later on an otherwise idle node; a message and its `sent` answer never wait (a
//! batch holding anything else is not held). When the writer is busy ([`Busy`]), acks are not
//! held: the gaps between commits are where their commits cost nothing, and an ack riding in a
//! message's commit would lengthen the commit the message waits for.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a batch of nothing but local devices' `delivered` acks waits for company.
pub(super) const ACK_HOLD: Duration = Duration::from_millis(10);

/// Over how long the writer's busy share is measured.
const WINDOW: Duration = Duration::from_millis(100);

/// Acks are held only while the writer spent less than this share of the last window committing.
const SPARE: f64 = 0.25;

/// How much of the recent past the writer spent in commits.
#[derive(Debug)]
pub(super) struct Busy {
    since: Instant,
    busy: Duration,
    spare: bool,
}

impl Default for Busy {
    /// An idle writer.
    fn default() -> Self {
        Self { since: Instant::now(), busy: Duration::ZERO, spare: true }
    }
}

impl Busy {
    /// Whether the writer has had time to spare over the last full window.
    pub(super) fn has_time_to_spare(&self) -> bool {
        self.spare
    }

    /// Counts a commit (or a stretch of them) that began at `started` and has just ended.
    pub(super) fn record(&mut self, started: Instant) {
        self.busy += started.elapsed();
        let window = self.since.elapsed();
        if window >= WINDOW {
            self.spare = self.busy.as_secs_f64() < window.as_secs_f64() * SPARE;
            self.since = Instant::now();
            self.busy = Duration::ZERO;
        }
    }
}

/// Lets a batch of nothing but jobs that `may_wait` wait for more: until one that may not wait
/// arrives, the batch is full, [`ACK_HOLD`] has passed, or the queue closes (shutdown commits
/// what is held).
pub(super) async fn hold_acks<J>(
    queue: &mut mpsc::Receiver<J>,
    batch: &mut Vec<J>,
    max_batch: usize,
    may_wait: fn(&J) -> bool,
) {
    if !batch.iter().all(may_wait) {
        return;
    }
    let deadline = Instant::now() + ACK_HOLD;
    while batch.len() < max_batch {
        let before = batch.len();
        match tokio::time::timeout_at(deadline, queue.recv_many(batch, max_batch - before)).await {
            Ok(0) | Err(_) => return,
            Ok(_) if !batch[before..].iter().all(may_wait) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the writer's jobs: an ack that may wait, or anything else.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Ack,
        Other,
    }

    fn may_wait(op: &Op) -> bool {
        *op == Op::Ack
    }

    /// Holds `batch` while `late`'s job, if any, is sent after its delay; returns how long the
    /// hold lasted.
    async fn hold_with(
        tx: &mpsc::Sender<Op>,
        rx: &mut mpsc::Receiver<Op>,
        batch: &mut Vec<Op>,
        late: Option<(Duration, Op)>,
    ) -> Duration {
        let feeder = late.map(|(delay, op)| {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(op).await;
            })
        });
        let started = Instant::now();
        hold_acks(rx, batch, 64, may_wait).await;
        let held = started.elapsed();
        if let Some(feeder) = feeder {
            feeder.await.unwrap_or_else(|e| panic!("{e}"));
        }
        held
    }

    #[tokio::test(start_paused = true)]
    async fn acks_alone_wait_for_company_but_never_longer_than_the_hold() {
        let (tx, mut rx) = mpsc::channel(16);
        // Nothing but another ack comes: the acks go after the whole hold, all of them.
        let mut batch = vec![Op::Ack];
        let held = hold_with(&tx, &mut rx, &mut batch, Some((ACK_HOLD / 4, Op::Ack))).await;
        assert_eq!(held, ACK_HOLD, "acks alone are held for the whole hold, not longer");
        assert_eq!(batch, [Op::Ack, Op::Ack], "an ack that came meanwhile joins them");

        // Anything else ends the hold the moment it arrives, and shares the commit.
        let mut batch = vec![Op::Ack];
        let held = hold_with(&tx, &mut rx, &mut batch, Some((ACK_HOLD / 5, Op::Other))).await;
        assert_eq!(held, ACK_HOLD / 5, "what may not wait does not wait");
        assert_eq!(batch, [Op::Ack, Op::Other]);

        // A batch with anything else in it is not held at all.
        let mut batch = vec![Op::Ack, Op::Other];
        assert_eq!(hold_with(&tx, &mut rx, &mut batch, None).await, Duration::ZERO);
        assert_eq!(batch.len(), 2);

        // A full batch goes at once.
        let mut batch = vec![Op::Ack; 64];
        assert_eq!(hold_with(&tx, &mut rx, &mut batch, None).await, Duration::ZERO);

        // Shutdown (the queue closes) ends the hold, and the held acks are still there to commit.
        drop(tx);
        let mut batch = vec![Op::Ack];
        let started = Instant::now();
        hold_acks(&mut rx, &mut batch, 64, may_wait).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(batch, [Op::Ack]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_writer_holds_no_acks_and_an_idle_one_holds_them_again() {
        let mut busy = Busy::default();
        assert!(busy.has_time_to_spare(), "a new writer is idle");
        // Half of every window in commits: no time to spare from the end of the first window.
        for _ in 0..4 {
            let started = Instant::now();
            tokio::time::advance(WINDOW / 2).await;
            busy.record(started);
            tokio::time::advance(WINDOW / 2).await;
        }
        let started = Instant::now();
        busy.record(started);
        assert!(!busy.has_time_to_spare(), "a writer committing half the time is busy");
        // A window of short commits (a tenth of it) gives the time back.
        let started = Instant::now();
        tokio::time::advance(WINDOW / 10).await;
        busy.record(started);
        tokio::time::advance(WINDOW).await;
        let started = Instant::now();
        busy.record(started);
        assert!(busy.has_time_to_spare());
    }
}

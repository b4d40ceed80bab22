//! How a sender paces its messages: a fixed rate spread evenly over the pairs, or as fast as
//! the server takes them with at most a window of messages in flight per pair.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::measure::Pair;

/// The target send rate of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This many messages per second in total, spread evenly over the pairs.
    PerSecond(f64),
    /// As fast as the server moves them, with a bounded window per pair.
    Max,
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Self::Max);
        }
        match s.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(Self::PerSecond(rate)),
            _ => Err(format!("rate must be a positive number of messages/s or `max`, got {s:?}")),
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PerSecond(rate) => write!(f, "{rate}/s"),
            Self::Max => f.write_str("max"),
        }
    }
}

/// Paces one sender.
#[derive(Debug)]
pub(crate) enum Pacer {
    /// One message per tick; missed ticks are caught up so the average rate holds.
    Fixed(Interval),
    /// Up to this many messages sent and not yet received.
    Window(u64),
}

impl Pacer {
    /// The pacer of pair `index` of `pairs`, starting now. Fixed-rate pairs are offset from one
    /// another so their sends interleave instead of coming in bursts.
    pub(crate) fn new(rate: Rate, pairs: usize, index: usize, window: u64) -> Self {
        match rate {
            Rate::Max => Self::Window(window.max(1)),
            Rate::PerSecond(total) => {
                let pairs = pairs.max(1) as f64;
                let period = Duration::from_secs_f64((pairs / total).max(1e-6));
                let offset = period.mul_f64(index as f64 / pairs);
                let mut interval = tokio::time::interval_at(Instant::now() + offset, period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
                Self::Fixed(interval)
            }
        }
    }

    /// Waits until the sender may send; returns how many messages it may send now. Cancel-safe.
    pub(crate) async fn ready(&mut self, pair: &Pair) -> u64 {
        match self {
            Self::Fixed(interval) => {
                interval.tick().await;
                1
            }
            Self::Window(window) => loop {
                let notified = pair.progress.notified();
                let outstanding = pair.outstanding();
                if outstanding < *window {
                    return *window - outstanding;
                }
                notified.await;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("5000".parse::<Rate>(), Ok(Rate::PerSecond(5000.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    /// Ticks of `pacer` until `until`, on paused time.
    async fn ticks_until(pacer: &mut Pacer, pair: &Pair, until: Instant) -> u64 {
        let mut ticks = 0;
        while let Ok(n) = tokio::time::timeout_at(until, pacer.ready(pair)).await {
            ticks += n;
        }
        ticks
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_rate_is_shared_by_the_pairs_and_a_stall_is_caught_up() {
        let pair = Pair::default();
        let start = Instant::now();
        // 100/s over 4 pairs: 25/s each, the first tick at once (offset by the pair's index).
        let mut pacers: Vec<_> = (0..4).map(|i| Pacer::new(Rate::PerSecond(100.0), 4, i, 16)).collect();
        let mut second = 0;
        for pacer in &mut pacers {
            second += ticks_until(pacer, &pair, start + Duration::from_millis(999)).await;
        }
        assert_eq!(second, 100, "a second at 100/s");
        // The first pair stalls for two seconds: the missed ticks come at once, then the pace.
        let pacer = &mut pacers[0];
        tokio::time::advance(Duration::from_secs(2)).await;
        let caught_up = ticks_until(pacer, &pair, Instant::now()).await;
        assert_eq!(caught_up, 50, "two seconds of ticks at 25/s");
    }

    #[tokio::test]
    async fn a_window_opens_as_the_receiver_catches_up() {
        use std::sync::atomic::Ordering;
        let pair = Pair::default();
        let mut pacer = Pacer::new(Rate::Max, 1, 0, 4);
        assert_eq!(pacer.ready(&pair).await, 4);
        pair.sent.store(4, Ordering::Release);
        pair.received.store(3, Ordering::Release);
        pair.progress.notify_one();
        assert_eq!(pacer.ready(&pair).await, 3);
    }
}

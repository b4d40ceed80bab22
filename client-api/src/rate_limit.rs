//! Per-caller rate limits: sends per user, and account requests (register, login) per client
//! address, since password hashing is slow on purpose and must not become a way to stall the
//! node.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use kith_proto::UserId;

use crate::error::ApiError;

/// A sustained rate with a burst allowance. A rate of zero disables the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    fn quota(self) -> Option<Quota> {
        let per_second = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(per_second);
        Some(Quota::per_second(per_second).allow_burst(burst))
    }
}

/// The limits the API enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Messages a user may send (REST and WebSocket together).
    pub messages: Rate,
    /// Register and login requests per client address.
    pub accounts: Rate,
    /// Key bundle claims per caller, so nobody can drain another user's one-time prekeys.
    pub key_claims: Rate,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            messages: Rate { per_second: 100, burst: 200 },
            accounts: Rate { per_second: 5, burst: 20 },
            key_claims: Rate { per_second: 2, burst: 30 },
        }
    }
}

/// One limiter, keyed by caller.
type Limiter<K, C> = RateLimiter<K, DefaultKeyedStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A limiter for `rate`, or none when the rate is zero.
fn limiter<K: std::hash::Hash + Eq + Clone, C: Clock + Clone>(rate: Rate, clock: &C) -> Option<Limiter<K, C>> {
    rate.quota().map(|quota| RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()))
}

/// The limiters' state, on the real clock (or, in tests, on one they move).
#[derive(Debug)]
pub struct RateLimits<C: Clock = DefaultClock> {
    messages: Option<Limiter<UserId, C>>,
    accounts: Option<Limiter<IpAddr, C>>,
    key_claims: Option<Limiter<UserId, C>>,
}

impl RateLimits {
    /// Limiters for `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self::with_clock(config, &DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimits<C> {
    /// Limiters for `config` that tell time by `clock`.
    pub fn with_clock(config: RateLimitConfig, clock: &C) -> Self {
        Self {
            messages: limiter(config.messages, clock),
            accounts: limiter(config.accounts, clock),
            key_claims: limiter(config.key_claims, clock),
        }
    }

    /// Counts one message from `user`.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] when over the limit.
    pub fn check_message(&self, user: &UserId) -> Result<(), ApiError> {
        match &self.messages {
            Some(limiter) => limiter.check_key(user).map_err(|_| ApiError::RateLimited),
            None => Ok(()),
        }
    }

    /// Counts one account request from `addr`.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] when over the limit.
    pub fn check_account(&self, addr: IpAddr) -> Result<(), ApiError> {
        match &self.accounts {
            Some(limiter) => limiter.check_key(&addr).map_err(|_| ApiError::RateLimited),
            None => Ok(()),
        }
    }

    /// Counts one key bundle claim by `user`.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] when over the limit.
    pub fn check_key_claim(&self, user: &UserId) -> Result<(), ApiError> {
        match &self.key_claims {
            Some(limiter) => limiter.check_key(user).map_err(|_| ApiError::RateLimited),
            None => Ok(()),
        }
    }

    /// Forgets callers whose allowance is full again, so the state does not grow without bound.
    /// Run it now and then.
    pub fn prune(&self) {
        if let Some(limiter) = &self.messages {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.accounts {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.key_claims {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(&format!("{name}@test")).unwrap()
    }

    fn limits(messages: Rate, accounts: Rate, clock: &FakeRelativeClock) -> RateLimits<FakeRelativeClock> {
        RateLimits::with_clock(RateLimitConfig { messages, accounts, key_claims: messages }, clock)
    }

    /// How many checks pass before the first refusal.
    fn allowance(mut check: impl FnMut() -> Result<(), ApiError>) -> usize {
        (0..1000).take_while(|_| check().is_ok()).count()
    }

    #[test]
    fn a_burst_then_one_per_refill_period_for_each_caller_on_its_own() {
        let clock = FakeRelativeClock::default();
        let limits = limits(Rate { per_second: 4, burst: 3 }, Rate { per_second: 1, burst: 2 }, &clock);
        let (alice, bob) = (user("alice"), user("bob"));
        assert_eq!(allowance(|| limits.check_message(&alice)), 3, "the burst");
        assert!(matches!(limits.check_message(&alice), Err(ApiError::RateLimited)));
        assert_eq!(allowance(|| limits.check_message(&bob)), 3, "bob has his own");
        assert_eq!(allowance(|| limits.check_key_claim(&alice)), 3, "claims are counted apart from messages");

        // One more every quarter second, not before.
        clock.advance(Duration::from_millis(249));
        assert_eq!(allowance(|| limits.check_message(&alice)), 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(allowance(|| limits.check_message(&alice)), 1);
        clock.advance(Duration::from_millis(500));
        assert_eq!(allowance(|| limits.check_message(&alice)), 2);
        // However long the quiet, the allowance fills up to the burst and no further.
        clock.advance(Duration::from_secs(3600));
        assert_eq!(allowance(|| limits.check_message(&alice)), 3);

        // Per address for accounts.
        let (here, there) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(allowance(|| limits.check_account(here)), 2);
        assert_eq!(allowance(|| limits.check_account(there)), 2);
        clock.advance(Duration::from_secs(1));
        assert_eq!(allowance(|| limits.check_account(here)), 1);
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off_and_a_burst_of_zero_means_the_rate() {
        let clock = FakeRelativeClock::default();
        let limits = limits(Rate { per_second: 0, burst: 5 }, Rate { per_second: 3, burst: 0 }, &clock);
        assert_eq!(allowance(|| limits.check_message(&user("alice"))), 1000, "unlimited");
        assert_eq!(allowance(|| limits.check_account(IpAddr::from([127, 0, 0, 1]))), 3);
    }
}

//! How many of one user's one-time prekeys may be claimed per window, whoever claims them.
//!
//! Claims are rate limited per claimer at the API, but a handful of fresh accounts (or a peer
//! node relaying many claimers) could still empty a user's one-time prekeys in seconds, after
//! which new sessions with them lose the one-time key's forward secrecy until the user's
//! device uploads more. So each user (the "victim") also has a budget: once it is spent,
//! claims are answered with the identity and signed prekey only (what `GET …/devices`
//! serves), which still lets a session start, and the one-time prekeys stay for later.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use kith_proto::UserId;

/// The budget: `claims` one-time prekeys of one user per `window`, refilled evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrekeyBudgetConfig {
    /// Claims of one user's one-time prekeys allowed per window (a burst of that many); 0
    /// turns the budget off.
    pub claims: u32,
    /// Over how long the budget refills.
    pub window: Duration,
}

impl Default for PrekeyBudgetConfig {
    fn default() -> Self {
        Self { claims: 30, window: Duration::from_secs(3600) }
    }
}

/// The budgets' state.
#[derive(Debug)]
pub struct PrekeyBudget {
    limiter: Option<RateLimiter<UserId, DefaultKeyedStateStore<UserId>, DefaultClock>>,
}

impl PrekeyBudget {
    /// Budgets for `config`.
    pub fn new(config: PrekeyBudgetConfig) -> Self {
        let limiter = NonZeroU32::new(config.claims).and_then(|claims| {
            let period = config.window.checked_div(claims.get()).filter(|p| !p.is_zero())?;
            Quota::with_period(period).map(|quota| RateLimiter::keyed(quota.allow_burst(claims)))
        });
        Self { limiter }
    }

    /// Whether a claim may take one of `user`'s one-time prekeys now (and counts it if so).
    pub fn take(&self, user: &UserId) -> bool {
        self.limiter.as_ref().is_none_or(|limiter| limiter.check_key(user).is_ok())
    }

    /// Forgets users whose budget is full again. Run it now and then.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
        }
    }
}

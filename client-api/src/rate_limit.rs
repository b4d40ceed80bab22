//! Per-caller rate limits: sends per user, and account requests (register, login) per client
//! address, since password hashing is slow on purpose and must not become a way to stall the
//! node.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};
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

/// The limiters' state.
#[derive(Debug)]
pub struct RateLimits {
    messages: Option<DefaultKeyedRateLimiter<UserId>>,
    accounts: Option<DefaultKeyedRateLimiter<IpAddr>>,
    key_claims: Option<DefaultKeyedRateLimiter<UserId>>,
}

impl RateLimits {
    /// Limiters for `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            messages: config.messages.quota().map(DefaultKeyedRateLimiter::keyed),
            accounts: config.accounts.quota().map(DefaultKeyedRateLimiter::keyed),
            key_claims: config.key_claims.quota().map(DefaultKeyedRateLimiter::keyed),
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

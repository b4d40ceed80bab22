//! Per-caller rate limits: sends per user, and account requests (register, login) per client
//! address, since password hashing is slow on purpose and must not become a way to stall the
//! node; failed logins per account, with a backoff, since guesses may come from many
//! addresses; WebSocket connection attempts per address and per user.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// WebSocket connection attempts per client address (before the token is checked).
    pub ws_connects_per_address: Rate,
    /// WebSocket connection attempts per user (once the token is checked).
    pub ws_connects_per_user: Rate,
    /// Failed logins of one account before each further attempt waits (a backoff).
    pub login_backoff: LoginBackoffConfig,
}

/// How failed logins of one account slow down further attempts at it, whatever address they
/// come from: after `free_failures` failures in a row, the next attempt must wait one second
/// from the last failure; each further failure doubles the wait, up to `max_wait`. A success
/// resets it. (Refused attempts are not failures: they are not even checked.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginBackoffConfig {
    /// Failures in a row allowed before the backoff starts; 0 turns the backoff off.
    pub free_failures: u32,
    /// The longest wait.
    pub max_wait: Duration,
}

impl Default for LoginBackoffConfig {
    fn default() -> Self {
        Self { free_failures: 5, max_wait: Duration::from_secs(300) }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            messages: Rate { per_second: 100, burst: 200 },
            accounts: Rate { per_second: 5, burst: 20 },
            key_claims: Rate { per_second: 2, burst: 30 },
            ws_connects_per_address: Rate { per_second: 500, burst: 5000 },
            ws_connects_per_user: Rate { per_second: 10, burst: 30 },
            login_backoff: LoginBackoffConfig::default(),
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
    ws_per_address: Option<Limiter<IpAddr, C>>,
    ws_per_user: Option<Limiter<UserId, C>>,
    logins: LoginBackoff,
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
            ws_per_address: limiter(config.ws_connects_per_address, clock),
            ws_per_user: limiter(config.ws_connects_per_user, clock),
            logins: LoginBackoff::new(config.login_backoff),
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

    /// Counts one WebSocket connection attempt from `addr`.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] when over the limit.
    pub fn check_ws_address(&self, addr: IpAddr) -> Result<(), ApiError> {
        match &self.ws_per_address {
            Some(limiter) => limiter.check_key(&addr).map_err(|_| ApiError::RateLimited),
            None => Ok(()),
        }
    }

    /// Counts one WebSocket connection attempt by `user`.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] when over the limit.
    pub fn check_ws_user(&self, user: &UserId) -> Result<(), ApiError> {
        match &self.ws_per_user {
            Some(limiter) => limiter.check_key(user).map_err(|_| ApiError::RateLimited),
            None => Ok(()),
        }
    }

    /// Whether a login of `account` may be tried now.
    ///
    /// # Errors
    /// [`ApiError::LoginBackoff`] with the wait left, while the account's backoff lasts.
    pub fn check_login(&self, account: &str) -> Result<(), ApiError> {
        self.logins.check(account, Instant::now())
    }

    /// Records how a login of `account` went: a failure lengthens its backoff, a success
    /// ends it.
    pub fn login_result(&self, account: &str, succeeded: bool) {
        if succeeded {
            self.logins.succeeded(account);
        } else {
            self.logins.failed(account, Instant::now());
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
        if let Some(limiter) = &self.ws_per_address {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.ws_per_user {
            limiter.retain_recent();
        }
        self.logins.prune(Instant::now());
    }
}

/// Accounts tracked at most by the login backoff; past it, new accounts are not tracked (their
/// guesses are still limited per address) until old entries expire.
const MAX_TRACKED_ACCOUNTS: usize = 100_000;

/// Failed logins per account.
#[derive(Debug)]
struct LoginBackoff {
    config: LoginBackoffConfig,
    accounts: Mutex<HashMap<String, Failures>>,
}

/// An account's failures in a row, and when the last one was.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl LoginBackoff {
    fn new(config: LoginBackoffConfig) -> Self {
        Self { config, accounts: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.accounts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long after its last failure an account with `count` failures must wait.
    fn wait(&self, count: u32) -> Duration {
        match count.checked_sub(self.config.free_failures) {
            None => Duration::ZERO,
            Some(over) => Duration::from_secs(1u64 << over.min(30)).min(self.config.max_wait),
        }
    }

    fn check(&self, account: &str, now: Instant) -> Result<(), ApiError> {
        if self.config.free_failures == 0 {
            return Ok(());
        }
        let Some(failures) = self.lock().get(account).copied() else {
            return Ok(());
        };
        let until = failures.last + self.wait(failures.count);
        if now < until { Err(ApiError::LoginBackoff(until - now)) } else { Ok(()) }
    }

    fn failed(&self, account: &str, now: Instant) {
        if self.config.free_failures == 0 {
            return;
        }
        let mut accounts = self.lock();
        if let Some(failures) = accounts.get_mut(account) {
            *failures = Failures { count: failures.count.saturating_add(1), last: now };
        } else if accounts.len() < MAX_TRACKED_ACCOUNTS {
            accounts.insert(account.to_owned(), Failures { count: 1, last: now });
        }
    }

    fn succeeded(&self, account: &str) {
        self.lock().remove(account);
    }

    /// Forgets accounts whose last failure is longer ago than the longest wait.
    fn prune(&self, now: Instant) {
        let max_wait = self.config.max_wait;
        self.lock().retain(|_, failures| now.saturating_duration_since(failures.last) <= max_wait);
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
        RateLimits::with_clock(
            RateLimitConfig {
                messages,
                accounts,
                key_claims: messages,
                ws_connects_per_address: accounts,
                ws_connects_per_user: messages,
                login_backoff: LoginBackoffConfig::default(),
            },
            clock,
        )
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
    fn failed_logins_of_one_account_back_off_exponentially_up_to_the_cap_and_a_success_resets() {
        let backoff = LoginBackoff::new(LoginBackoffConfig { free_failures: 2, max_wait: Duration::from_secs(5) });
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        backoff.failed("alice", at(0));
        assert!(backoff.check("alice", at(0)).is_ok(), "the first failure is free");
        backoff.failed("alice", at(0));
        let refused = backoff.check("alice", at(0));
        assert!(matches!(refused, Err(ApiError::LoginBackoff(wait)) if wait == Duration::from_secs(1)), "{refused:?}");
        assert!(backoff.check("alice", at(1)).is_ok(), "one second after the second failure");
        backoff.failed("alice", at(1));
        assert!(backoff.check("alice", at(2)).is_err(), "two seconds after the third");
        assert!(backoff.check("alice", at(3)).is_ok());
        for _ in 0..10 {
            backoff.failed("alice", at(3));
        }
        assert!(backoff.check("alice", at(7)).is_err());
        assert!(backoff.check("alice", at(8)).is_ok(), "never more than the cap");
        assert!(backoff.check("bob", at(3)).is_ok(), "per account");
        backoff.succeeded("alice");
        assert!(backoff.check("alice", at(3)).is_ok(), "a success resets");
        backoff.failed("carol", at(0));
        backoff.prune(at(6));
        assert!(backoff.lock().is_empty(), "forgotten after the longest wait");
    }

    #[test]
    fn a_rate_of_zero_turns_the_limit_off_and_a_burst_of_zero_means_the_rate() {
        let clock = FakeRelativeClock::default();
        let limits = limits(Rate { per_second: 0, burst: 5 }, Rate { per_second: 3, burst: 0 }, &clock);
        assert_eq!(allowance(|| limits.check_message(&user("alice"))), 1000, "unlimited");
        assert_eq!(allowance(|| limits.check_account(IpAddr::from([127, 0, 0, 1]))), 3);
    }
}

//! The options of each part of a pipeline, validated once when the pipeline starts.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use stage::{MAX_DEMAND_LIMIT, MAX_PARTITIONS};

use crate::error::ConfigError;
use crate::message::Message;

/// The default `max_demand` of a processor: 10, as in Broadway (small, so that slow messages
/// spread over the processors).
pub const DEFAULT_PROCESSOR_MAX_DEMAND: usize = 10;
/// The default size of a batch: 100.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// The default time a batch may wait for more messages, from its first: one second.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(1);
/// The most stages of one kind a pipeline may have (the partition limit of `stage`).
pub const MAX_CONCURRENCY: usize = MAX_PARTITIONS;
/// The longest wait a pipeline sets a timer for: 365 days. A batch timeout, a rate limit's
/// interval or a backoff's longest wait beyond it is refused when the pipeline is built, and a
/// retry asked for with a longer wait ([`Failure::retry_after`](crate::Failure::retry_after))
/// waits this long.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// A partition function, erased: the hash of the key it returns, or the panic's message.
pub(crate) type Partitioner<T> = Arc<dyn Fn(&Message<T>) -> u64 + Send + Sync>;

/// Hashes `key` the same way in every run (so a key always lands in the same partition).
pub(crate) fn stable_hash<K: Hash>(key: &K) -> u64 {
    let state = ahash::RandomState::with_seeds(0x5eed, 0xca11, 0xf10e, 0x57a6);
    state.hash_one(key)
}

fn partitioner<T, K: Hash>(f: impl Fn(&Message<T>) -> K + Send + Sync + 'static) -> Partitioner<T> {
    Arc::new(move |msg| stable_hash(&f(msg)))
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

/// The processors of a pipeline: how many, how much each asks its producers for, their retry
/// policy, and how messages are partitioned among them.
///
/// # Examples
///
/// ```
/// use ingest::{Message, Processors, RetryPolicy};
///
/// let processors: Processors<String> = Processors::new()
///     .concurrency(4)
///     .max_demand(20)
///     .retry(RetryPolicy::new(3))
///     .partition_by(|msg: &Message<String>| msg.data.len());
/// # let _ = processors;
/// ```
pub struct Processors<T> {
    pub(crate) concurrency: usize,
    pub(crate) max_demand: usize,
    pub(crate) min_demand: Option<usize>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) partition_by: Option<Partitioner<T>>,
}

impl<T> Default for Processors<T> {
    fn default() -> Self {
        Processors {
            concurrency: default_concurrency(),
            max_demand: DEFAULT_PROCESSOR_MAX_DEMAND,
            min_demand: None,
            retry: None,
            partition_by: None,
        }
    }
}

impl<T> Processors<T> {
    /// The defaults: twice as many processors as cores, `max_demand` 10, `min_demand` 5, no
    /// retries, no partitioning.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many processors run (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How many messages a processor asks each producer for at most (default 10).
    pub fn max_demand(mut self, n: usize) -> Self {
        self.max_demand = n;
        self
    }

    /// The credit at which a processor asks for more (default `max_demand / 2`). A processor
    /// handles messages in chunks of at most `max_demand - min_demand`: each chunk is one call
    /// of `prepare_messages` and one settlement.
    pub fn min_demand(mut self, n: usize) -> Self {
        self.min_demand = Some(n);
        self
    }

    /// Retries failed messages in the processors.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sends messages with equal keys to the same processor, which handles them in the order
    /// their producer emitted them. The key is hashed, so any hashable key works; a function
    /// that panics fails that message only.
    pub fn partition_by<K: Hash>(
        mut self,
        key: impl Fn(&Message<T>) -> K + Send + Sync + 'static,
    ) -> Self {
        self.partition_by = Some(partitioner(key));
        self
    }

    /// `(max_demand, min_demand)`, or the rule the options break.
    pub(crate) fn validate(&self) -> Result<(usize, usize), ConfigError> {
        check_concurrency("processors", self.concurrency)?;
        let limits = check_demand("processors", self.max_demand, self.min_demand)?;
        if let Some(retry) = &self.retry {
            retry.validate("processors")?;
        }
        Ok(limits)
    }
}

impl<T> fmt::Debug for Processors<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processors")
            .field("concurrency", &self.concurrency)
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .field("retry", &self.retry)
            .field("partition_by", &self.partition_by.is_some())
            .finish()
    }
}

/// One named batcher: how it groups messages into batches, and the batch processors that handle
/// them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ingest::Batcher;
///
/// let cinema: Batcher<u32> = Batcher::new("cinema")
///     .batch_size(75)
///     .batch_timeout(Duration::from_millis(500))
///     .concurrency(2);
/// assert_eq!(cinema.name(), "cinema");
/// ```
pub struct Batcher<T> {
    pub(crate) name: Cow<'static, str>,
    pub(crate) batch_size: usize,
    pub(crate) batch_timeout: Duration,
    pub(crate) concurrency: usize,
    pub(crate) max_demand: Option<usize>,
    pub(crate) min_demand: Option<usize>,
    pub(crate) key_concurrency: usize,
    pub(crate) max_open_keys: usize,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) partition_by: Option<Partitioner<T>>,
}

impl<T> Batcher<T> {
    /// A batcher with this name: batches of 100, a timeout of one second, one batch processor.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Batcher {
            name: name.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
            concurrency: 1,
            max_demand: None,
            min_demand: None,
            key_concurrency: 1,
            max_open_keys: usize::MAX,
            retry: None,
            partition_by: None,
        }
    }

    /// The batcher's name, which messages are sent to with
    /// [`Message::put_batcher`](crate::Message::put_batcher).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The most messages a batch holds (default 100).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// How long a batch waits for more messages, counted from its first (default one
    /// second). The timer is not reset by later messages.
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = timeout;
        self
    }

    /// How many batch processors handle this batcher's batches (default 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How many messages the batcher asks each processor for at most (default `batch_size`).
    pub fn max_demand(mut self, n: usize) -> Self {
        self.max_demand = Some(n);
        self
    }

    /// The credit at which the batcher asks a processor for more (default `max_demand / 2`).
    pub fn min_demand(mut self, n: usize) -> Self {
        self.min_demand = Some(n);
        self
    }

    /// How many batches of one key (other than the default key) may be handled at once
    /// (default 1: one at a time, in order).
    pub fn key_concurrency(mut self, n: usize) -> Self {
        self.key_concurrency = n;
        self
    }

    /// How many keys may have a batch open at once (default unbounded). Opening one more
    /// sends the oldest open batch on, with [`Trigger::Evicted`](crate::Trigger::Evicted).
    pub fn max_open_keys(mut self, n: usize) -> Self {
        self.max_open_keys = n;
        self
    }

    /// Retries messages that failed in `handle_batch`: they join a later batch.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sends messages with equal keys to the same batch processor, in order. Batches are then
    /// per partition and batch key, and [`BatchInfo::partition`](crate::BatchInfo::partition)
    /// says which.
    pub fn partition_by<K: Hash>(
        mut self,
        key: impl Fn(&Message<T>) -> K + Send + Sync + 'static,
    ) -> Self {
        self.partition_by = Some(partitioner(key));
        self
    }

    /// `(max_demand, min_demand)`, or the rule the options break.
    pub(crate) fn validate(&self) -> Result<(usize, usize), ConfigError> {
        let scope = format!("batcher {:?}", self.name);
        if self.name.is_empty() {
            return Err(ConfigError::new(&scope, "name", "must not be empty", ""));
        }
        check_concurrency(&scope, self.concurrency)?;
        if self.batch_size == 0 {
            let rule = "must be at least 1";
            return Err(ConfigError::new(&scope, "batch_size", rule, 0));
        }
        if self.batch_timeout.is_zero() || self.batch_timeout > MAX_WAIT {
            let rule = "must be more than zero and at most MAX_WAIT (365 days)";
            return Err(ConfigError::new(
                &scope,
                "batch_timeout",
                rule,
                self.batch_timeout,
            ));
        }
        if self.key_concurrency == 0 {
            let rule = "must be at least 1";
            return Err(ConfigError::new(&scope, "key_concurrency", rule, 0));
        }
        if self.max_open_keys == 0 {
            let rule = "must be at least 1";
            return Err(ConfigError::new(&scope, "max_open_keys", rule, 0));
        }
        if let Some(retry) = &self.retry {
            retry.validate(&scope)?;
        }
        let max = self
            .max_demand
            .unwrap_or(self.batch_size.min(MAX_DEMAND_LIMIT));
        check_demand(&scope, max, self.min_demand)
    }
}

impl<T> fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("name", &self.name)
            .field("batch_size", &self.batch_size)
            .field("batch_timeout", &self.batch_timeout)
            .field("concurrency", &self.concurrency)
            .field("max_demand", &self.max_demand)
            .field("key_concurrency", &self.key_concurrency)
            .field("max_open_keys", &self.max_open_keys)
            .field("retry", &self.retry)
            .field("partition_by", &self.partition_by.is_some())
            .finish()
    }
}

fn check_concurrency(scope: &str, n: usize) -> Result<(), ConfigError> {
    if n == 0 || n > MAX_CONCURRENCY {
        let rule = format!("must be between 1 and {MAX_CONCURRENCY}");
        return Err(ConfigError::new(scope, "concurrency", rule, n));
    }
    Ok(())
}

fn check_demand(
    scope: &str,
    max: usize,
    min: Option<usize>,
) -> Result<(usize, usize), ConfigError> {
    if max == 0 || max > MAX_DEMAND_LIMIT {
        let rule = format!("must be between 1 and {MAX_DEMAND_LIMIT}");
        return Err(ConfigError::new(scope, "max_demand", rule, max));
    }
    let min = min.unwrap_or(max / 2);
    if min >= max {
        let rule = format!("must be less than max_demand ({max})");
        return Err(ConfigError::new(scope, "min_demand", rule, min));
    }
    Ok((max, min))
}

/// How a stage retries failed messages: how many attempts in all, and how long to wait
/// before each retry.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ingest::{Backoff, RetryPolicy};
///
/// let policy = RetryPolicy::new(4).backoff(Backoff::exponential(Duration::from_millis(100)).max(Duration::from_secs(1)));
/// assert_eq!(policy.delay(1), Duration::from_millis(100)); // before the second attempt
/// assert_eq!(policy.delay(2), Duration::from_millis(200));
/// assert_eq!(policy.delay(5), Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in all (the first included), with the default backoff:
    /// 100 ms, doubling, at most 30 s.
    pub fn new(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::default(),
        }
    }

    /// The wait before each retry.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The most attempts in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// How long to wait after attempt `attempt` (1 for the first) failed, without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt, 0.0)
    }

    pub(crate) fn validate(&self, scope: &str) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            let rule = "must be at least 1 (the first attempt)";
            return Err(ConfigError::new(scope, "max_attempts", rule, 0));
        }
        self.backoff.validate(scope)
    }
}

/// The wait before a retry: `initial`, multiplied by `multiplier` after each attempt, at most
/// `max`, less a random share of up to `jitter` of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max: Duration,
    jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(100))
    }
}

impl Backoff {
    /// Starts at `initial` and doubles, up to 30 s, no jitter.
    pub fn exponential(initial: Duration) -> Self {
        Backoff {
            initial,
            multiplier: 2.0,
            max: Duration::from_secs(30),
            jitter: 0.0,
        }
    }

    /// Always `delay`.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            multiplier: 1.0,
            max: delay,
            jitter: 0.0,
        }
    }

    /// The factor applied after each attempt (at least 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest wait.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Takes away up to this share of each wait at random (between 0 and 1), so that messages
    /// that failed together do not all come back together.
    pub fn jitter(mut self, share: f64) -> Self {
        self.jitter = share;
        self
    }

    /// The wait after attempt `attempt` failed; `random` in `0..1` picks the jitter.
    pub(crate) fn delay(&self, attempt: u32, random: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        let capped = secs.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::try_from_secs_f64(jittered.max(0.0)).map_or(self.max, |d| d.min(self.max))
    }

    fn validate(&self, scope: &str) -> Result<(), ConfigError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            let rule = "must be a finite number of at least 1";
            return Err(ConfigError::new(scope, "multiplier", rule, self.multiplier));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            let rule = "must be between 0 and 1";
            return Err(ConfigError::new(scope, "jitter", rule, self.jitter));
        }
        if self.max < self.initial {
            let rule = format!("must be at least the initial wait ({:?})", self.initial);
            return Err(ConfigError::new(scope, "max", rule, self.max));
        }
        if self.max > MAX_WAIT {
            let rule = "must be at most MAX_WAIT (365 days)";
            return Err(ConfigError::new(scope, "max", rule, self.max));
        }
        Ok(())
    }
}

/// A rate limit shared by all of a pipeline's producers: at most `allowed` messages asked for
/// per `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// How many messages may be asked for in one interval.
    pub allowed: u64,
    /// The interval.
    pub interval: Duration,
}

impl RateLimit {
    /// At most `allowed` messages per `interval`.
    pub fn new(allowed: u64, interval: Duration) -> Self {
        RateLimit { allowed, interval }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.allowed == 0 {
            return Err(ConfigError::new(
                "rate_limit",
                "allowed",
                "must be at least 1",
                0,
            ));
        }
        if self.interval.is_zero() || self.interval > MAX_WAIT {
            let rule = "must be more than zero and at most MAX_WAIT (365 days)";
            return Err(ConfigError::new(
                "rate_limit",
                "interval",
                rule,
                self.interval,
            ));
        }
        Ok(())
    }
}

/// When a new rate limit takes effect.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Apply {
    /// At the start of the next interval: the current one keeps its budget.
    #[default]
    NextInterval,
    /// Now: a new interval starts with the new budget (which may let more through in the last
    /// moments of the old interval and the first of the new than either limit alone).
    Now,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::exponential(Duration::from_millis(10)).max(Duration::from_millis(50));
        let waits: Vec<_> = (1..=5).map(|a| b.delay(a, 0.0).as_millis()).collect();
        assert_eq!(waits, vec![10, 20, 40, 50, 50]);
        let j = Backoff::fixed(Duration::from_millis(100)).jitter(0.5);
        assert_eq!(j.delay(3, 1.0), Duration::from_millis(50));
        assert_eq!(j.delay(3, 0.0), Duration::from_millis(100));
    }

    #[test]
    fn options_name_what_they_break() {
        let p = Processors::<u8>::new().max_demand(0);
        assert_eq!(p.validate().unwrap_err().option, "max_demand");
        let p = Processors::<u8>::new().max_demand(4).min_demand(4);
        assert_eq!(p.validate().unwrap_err().option, "min_demand");
        let p = Processors::<u8>::new().concurrency(0);
        assert_eq!(p.validate().unwrap_err().option, "concurrency");
        assert_eq!(
            Processors::<u8>::new().max_demand(10).validate(),
            Ok((10, 5))
        );
        let b = Batcher::<u8>::new("x").batch_size(0);
        let err = b.validate().unwrap_err();
        assert_eq!(
            (err.option, err.scope.as_str()),
            ("batch_size", "batcher \"x\"")
        );
        assert_eq!(Batcher::<u8>::new("x").batch_size(7).validate(), Ok((7, 3)));
        let b = Batcher::<u8>::new("x").batch_timeout(Duration::ZERO);
        assert_eq!(b.validate().unwrap_err().option, "batch_timeout");
        let r = RetryPolicy::new(0);
        assert_eq!(r.validate("p").unwrap_err().option, "max_attempts");
        let r = RetryPolicy::new(2).backoff(Backoff::default().multiplier(0.5));
        assert_eq!(r.validate("p").unwrap_err().option, "multiplier");
        assert_eq!(
            RateLimit::new(0, Duration::from_secs(1))
                .validate()
                .unwrap_err()
                .option,
            "allowed"
        );
        let err = Batcher::<u8>::new("x")
            .concurrency(0)
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid option `concurrency` of batcher \"x\""),
            "{err}"
        );
    }
}

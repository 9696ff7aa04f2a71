//! What every stage of one pipeline shares: the handler, the counters, the dead-letter sinks,
//! the rate limiter, the batchers' names, and whether the pipeline is draining.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::handler::Handler;
use crate::limiter::RateLimiter;
use crate::message::{DEFAULT_BATCHER, Message};
use crate::settle::{Sink, Sinks, Stats};

pub(crate) struct Shared<H: Handler> {
    pub(crate) pipeline: Arc<str>,
    pub(crate) handler: H,
    pub(crate) stats: Stats,
    pub(crate) sink_in: Option<Sink<H::In>>,
    pub(crate) sink_out: Option<Sink<H::Out>>,
    pub(crate) limiter: Option<RateLimiter>,
    /// The batchers' names, in the order of their indexes (empty without batchers).
    pub(crate) batchers: Vec<Cow<'static, str>>,
    /// The index of the batcher named [`DEFAULT_BATCHER`], where messages go unless told
    /// otherwise: found once, not by comparing names for every message.
    default_route: Option<usize>,
    draining: AtomicBool,
}

impl<H: Handler> Shared<H> {
    pub(crate) fn new(
        pipeline: Arc<str>,
        handler: H,
        stats: Stats,
        sinks: Option<Sinks<H::In, H::Out>>,
        limiter: Option<RateLimiter>,
        batchers: Vec<Cow<'static, str>>,
    ) -> Self {
        let default_route = batchers.iter().position(|b| b == DEFAULT_BATCHER);
        Shared {
            default_route,
            pipeline,
            handler,
            stats,
            sink_in: sinks.as_ref().map(|s| Arc::clone(&s.input)),
            sink_out: sinks.map(|s| s.output),
            limiter,
            batchers,
            draining: AtomicBool::new(false),
        }
    }

    /// Whether the pipeline is shutting down (retries are handed back to their sources).
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The index of the batcher `msg` goes to, if the pipeline has it.
    pub(crate) fn route_of<T>(&self, msg: &Message<T>) -> Option<usize> {
        match msg.batcher_if_set() {
            None => self.default_route,
            Some(name) => self.route(name),
        }
    }

    /// The index of the batcher called `name`.
    pub(crate) fn route(&self, name: &str) -> Option<usize> {
        if let [only] = self.batchers.as_slice() {
            return (only == name).then_some(0);
        }
        self.batchers.iter().position(|b| b == name)
    }
}

/// A small random number generator for backoff jitter (xorshift): deterministic per stage, so
/// runs on a paused clock repeat exactly.
#[derive(Clone, Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Jitter(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `0..1`.
    pub(crate) fn next(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

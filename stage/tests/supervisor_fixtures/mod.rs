//! Fixtures of the consumer supervisor's tests: children that sleep, fail or panic on a
//! script in virtual time, a probe of what they did, and a capture of the `tracing` output.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use stage::{ChildFailure, SubscribeOptions, SupervisorHandle};
use tokio::time::{Instant, sleep, timeout};

use crate::support::{Ask, Msg, ProducerHandle, Source, demands};

/// What the children of one test did.
#[derive(Debug, Default)]
pub struct Seen {
    running: usize,
    peak: usize,
    /// Events whose child ran to the end, in order.
    finished: Vec<u64>,
    /// Events whose child was dropped before its end (aborted, or panicked).
    interrupted: Vec<u64>,
    /// How many times a child was called for each event.
    calls: HashMap<u64, usize>,
}

/// Shared record of the children of one test.
#[derive(Clone, Debug, Default)]
pub struct Probe(Arc<Mutex<Seen>>);

impl Probe {
    pub fn seen<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.0.lock().unwrap())
    }

    pub fn running(&self) -> usize {
        self.seen(|s| s.running)
    }

    pub fn peak(&self) -> usize {
        self.seen(|s| s.peak)
    }

    pub fn finished(&self) -> Vec<u64> {
        self.seen(|s| s.finished.clone())
    }

    pub fn interrupted(&self) -> Vec<u64> {
        self.seen(|s| s.interrupted.clone())
    }

    /// Counts a call for `event` and returns which call it is (1 for the first).
    pub fn call(&self, event: u64) -> usize {
        let mut seen = self.0.lock().unwrap();
        let n = seen.calls.entry(event).or_default();
        *n += 1;
        *n
    }

    pub fn calls(&self, event: u64) -> usize {
        self.seen(|s| s.calls.get(&event).copied().unwrap_or(0))
    }

    /// Marks a child of `event` as running until the guard is dropped.
    pub fn enter(&self, event: u64) -> Running {
        let mut seen = self.0.lock().unwrap();
        seen.running += 1;
        seen.peak = seen.peak.max(seen.running);
        Running {
            probe: self.clone(),
            event,
            done: false,
        }
    }
}

/// A running child; records how it ended when dropped.
pub struct Running {
    probe: Probe,
    event: u64,
    done: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut seen = self.probe.0.lock().unwrap();
        seen.running -= 1;
        if self.done {
            seen.finished.push(self.event);
        } else {
            seen.interrupted.push(self.event);
        }
    }
}

pub type ChildFuture = BoxFuture<'static, Result<(), String>>;

/// A child that runs for `ms(event)` milliseconds of virtual time, then succeeds.
pub fn sleeper(probe: &Probe, ms: fn(u64) -> u64) -> impl Fn(u64) -> ChildFuture + Send + 'static {
    scripted(probe, move |event, _| Script::Sleep(ms(event)))
}

/// What a child does on one call.
#[derive(Clone, Copy, Debug)]
pub enum Script {
    /// Run this many milliseconds, then succeed.
    Sleep(u64),
    /// Run this many milliseconds, then return an error.
    Fail(u64),
    /// Run this many milliseconds, then panic.
    Panic(u64),
    /// Panic when called, before any future exists (a start failure).
    PanicOnStart,
}

/// A child whose behaviour depends on the event and on how many times it was called for it.
pub fn scripted(
    probe: &Probe,
    script: impl Fn(u64, usize) -> Script + Send + 'static,
) -> impl Fn(u64) -> ChildFuture + Send + 'static {
    let probe = probe.clone();
    move |event| {
        let call = probe.call(event);
        let step = script(event, call);
        if let Script::PanicOnStart = step {
            panic!("cannot start a child for {event}");
        }
        let probe = probe.clone();
        async move {
            let mut running = probe.enter(event);
            match step {
                Script::Sleep(ms) => {
                    sleep(Duration::from_millis(ms)).await;
                    running.done = true;
                    Ok(())
                }
                Script::Fail(ms) => {
                    sleep(Duration::from_millis(ms)).await;
                    running.done = true;
                    Err(format!("child {event} failed on call {call}"))
                }
                Script::Panic(ms) => {
                    sleep(Duration::from_millis(ms)).await;
                    panic!("child {event} panicked on call {call}");
                }
                Script::PanicOnStart => unreachable!(),
            }
        }
        .boxed()
    }
}

/// Fails the test instead of hanging when `f` does not finish within a minute of virtual time.
pub async fn guard<F: Future>(f: F) -> F::Output {
    timeout(Duration::from_secs(60), f)
        .await
        .expect("timed out: the supervisor is stuck")
}

/// Sleeps until `ms` milliseconds after `start` (virtual time).
pub async fn until(start: Instant, ms: u64) {
    tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
}

/// The demands `p` saw since the last look, once everything sent to it so far has arrived.
pub async fn new_demands<T: Send + 'static>(
    p: &ProducerHandle<Source>,
    sup: &SupervisorHandle<T>,
) -> Vec<usize> {
    // The supervisor sends its asks while handling earlier messages: a call to it and then to
    // the producer is a barrier for both.
    let _ = sup.count_children().await;
    demands(&p.call(Ask::Log).await.unwrap())
}

pub fn silent() -> ProducerHandle<Source> {
    stage::producer(Source::silent()).start().unwrap()
}

pub fn emit(p: &ProducerHandle<Source>, events: impl IntoIterator<Item = u64>) {
    p.cast(Msg::Emit(events.into_iter().collect())).unwrap();
}

pub fn opts(max: usize, min: usize) -> SubscribeOptions {
    SubscribeOptions::new().max_demand(max).min_demand(min)
}

/// Captures the `tracing` events of the current thread, formatted as `LEVEL field=value ...`.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(self.clone())
    }
}

struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl tracing::Subscriber for Logs {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The failures a supervisor reported to its `on_failure` callback, in order.
#[derive(Clone, Debug, Default)]
pub struct Failures(Arc<Mutex<Vec<ChildFailure>>>);

impl Failures {
    /// A callback for `ConsumerSupervisor::on_failure` that records into this.
    pub fn callback(&self) -> impl FnMut(ChildFailure) + Send + 'static {
        let all = Arc::clone(&self.0);
        move |failure| all.lock().unwrap().push(failure)
    }

    pub fn all(&self) -> Vec<ChildFailure> {
        self.0.lock().unwrap().clone()
    }

    /// Each failure as `(error text, restarting)`, sorted.
    pub fn texts(&self) -> Vec<(String, bool)> {
        let mut texts: Vec<_> = self
            .all()
            .iter()
            .map(|f| (f.error.to_string(), f.restarting))
            .collect();
        texts.sort();
        texts
    }
}

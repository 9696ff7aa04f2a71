//! What the integration tests share: a scriptable handler that records every call, an
//! acknowledger that records every settlement, and a timeout for anything that could hang.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest::{
    AckError, Acker, Acknowledger, BatchInfo, Context, DeadLetter, DeadLetterSink, Failure,
    Handler, Message, Outcome, Settlement,
};
use tokio::time::Instant;

/// Fails the test if `fut` takes longer than `secs` (on the paused clock too: the clock
/// advances only when every task is idle, so a hang still trips it).
pub async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {secs}s"),
    }
}

type MessageFn = dyn Fn(&mut Message<u64>, &Context) -> Result<u64, Failure> + Send + Sync;
type PrepareFn = dyn Fn(&mut [Message<u64>]) -> Result<(), Failure> + Send + Sync;
type BatchFn = dyn Fn(&mut [Message<u64>], &BatchInfo) -> Result<(), Failure> + Send + Sync;
type FailedFn = dyn Fn(&mut [Message<u64>]) + Send + Sync;
type DelayFn = dyn Fn(u64) -> Duration + Send + Sync;

/// One call a [`Probe`] saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Prepare {
        stage: String,
        data: Vec<u64>,
    },
    Message {
        stage: String,
        data: u64,
        attempt: u32,
        at: Duration,
    },
    Batch {
        stage: String,
        data: Vec<u64>,
        info: BatchInfo,
        start: Duration,
        end: Duration,
    },
    Failed {
        stage: String,
        data: Vec<u64>,
    },
    FailedBatch {
        stage: String,
        data: Vec<u64>,
    },
}

/// A handler of `u64`s whose every callback is a closure (identity and success by default),
/// with optional delays, recording every call with the paused clock's time.
pub struct Probe {
    pub message: Box<MessageFn>,
    pub prepare: Option<Box<PrepareFn>>,
    pub batch: Option<Box<BatchFn>>,
    pub failed: Option<Box<FailedFn>>,
    pub failed_batch: Option<Box<FailedFn>>,
    pub message_delay: Option<Box<DelayFn>>,
    pub batch_delay: Option<Box<DelayFn>>,
    pub calls: Mutex<Vec<Call>>,
    pub start: Instant,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            message: Box::new(|msg, _| Ok(msg.data)),
            prepare: None,
            batch: None,
            failed: None,
            failed_batch: None,
            message_delay: None,
            batch_delay: None,
            calls: Mutex::new(Vec::new()),
            start: Instant::now(),
        }
    }
}

impl Probe {
    pub fn on_message(
        mut self,
        f: impl Fn(&mut Message<u64>, &Context) -> Result<u64, Failure> + Send + Sync + 'static,
    ) -> Self {
        self.message = Box::new(f);
        self
    }

    pub fn on_prepare(
        mut self,
        f: impl Fn(&mut [Message<u64>]) -> Result<(), Failure> + Send + Sync + 'static,
    ) -> Self {
        self.prepare = Some(Box::new(f));
        self
    }

    pub fn on_batch(
        mut self,
        f: impl Fn(&mut [Message<u64>], &BatchInfo) -> Result<(), Failure> + Send + Sync + 'static,
    ) -> Self {
        self.batch = Some(Box::new(f));
        self
    }

    pub fn on_failed(mut self, f: impl Fn(&mut [Message<u64>]) + Send + Sync + 'static) -> Self {
        self.failed = Some(Box::new(f));
        self
    }

    pub fn on_failed_batch(
        mut self,
        f: impl Fn(&mut [Message<u64>]) + Send + Sync + 'static,
    ) -> Self {
        self.failed_batch = Some(Box::new(f));
        self
    }

    pub fn message_delay(mut self, f: impl Fn(u64) -> Duration + Send + Sync + 'static) -> Self {
        self.message_delay = Some(Box::new(f));
        self
    }

    pub fn batch_delay(mut self, f: impl Fn(u64) -> Duration + Send + Sync + 'static) -> Self {
        self.batch_delay = Some(Box::new(f));
        self
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The batches handled so far: (data, info, start, end).
    pub fn batches(&self) -> Vec<(Vec<u64>, BatchInfo, Duration, Duration)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Batch {
                    data,
                    info,
                    start,
                    end,
                    ..
                } => Some((data, info, start, end)),
                _ => None,
            })
            .collect()
    }

    /// The messages handled so far, in call order: (stage, data, attempt, time).
    pub fn messages(&self) -> Vec<(String, u64, u32, Duration)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Message {
                    stage,
                    data,
                    attempt,
                    at,
                } => Some((stage, data, attempt, at)),
                _ => None,
            })
            .collect()
    }
}

fn data(messages: &[Message<u64>]) -> Vec<u64> {
    messages.iter().map(|m| m.data).collect()
}

impl Handler for Probe {
    type In = u64;
    type Out = u64;

    async fn handle_message(&self, msg: &mut Message<u64>, ctx: &Context) -> Result<u64, Failure> {
        self.record(Call::Message {
            stage: ctx.stage().to_string(),
            data: msg.data,
            attempt: msg.attempt(),
            at: self.now(),
        });
        if let Some(delay) = &self.message_delay {
            tokio::time::sleep(delay(msg.data)).await;
        }
        (self.message)(msg, ctx)
    }

    async fn prepare_messages(
        &self,
        msgs: &mut [Message<u64>],
        ctx: &Context,
    ) -> Result<(), Failure> {
        self.record(Call::Prepare {
            stage: ctx.stage().to_string(),
            data: data(msgs),
        });
        match &self.prepare {
            Some(f) => f(msgs),
            None => Ok(()),
        }
    }

    async fn handle_batch(
        &self,
        msgs: &mut [Message<u64>],
        info: &BatchInfo,
        ctx: &Context,
    ) -> Result<(), Failure> {
        let start = self.now();
        if let Some(delay) = &self.batch_delay {
            tokio::time::sleep(delay(msgs[0].data)).await;
        }
        // Recorded even when the closure panics (the panic then goes on to the pipeline).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &self.batch {
            Some(f) => f(msgs, info),
            None => Ok(()),
        }));
        self.record(Call::Batch {
            stage: ctx.stage().to_string(),
            data: data(msgs),
            info: info.clone(),
            start,
            end: self.now(),
        });
        match result {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    async fn handle_failed(&self, msgs: &mut [Message<u64>], ctx: &Context) {
        self.record(Call::Failed {
            stage: ctx.stage().to_string(),
            data: data(msgs),
        });
        if let Some(f) = &self.failed {
            f(msgs);
        }
    }

    async fn handle_failed_batch(&self, msgs: &mut [Message<u64>], ctx: &Context) {
        self.record(Call::FailedBatch {
            stage: ctx.stage().to_string(),
            data: data(msgs),
        });
        if let Some(f) = &self.failed_batch {
            f(msgs);
        }
    }
}

/// An acknowledger that records every call: the settlements it was given, in order.
#[derive(Default)]
pub struct Journal {
    pub calls: Mutex<Vec<Vec<Settlement>>>,
    /// Fail every call (after recording it).
    pub fail: std::sync::atomic::AtomicBool,
    /// Panic in every call (after recording it).
    pub panic: std::sync::atomic::AtomicBool,
}

impl Journal {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn acker(self: &Arc<Self>) -> Acker {
        Acker::new(Arc::clone(self))
    }

    pub fn calls(&self) -> Vec<Vec<Settlement>> {
        self.calls.lock().unwrap().clone()
    }

    /// Every settlement, by tag; panics if a tag was settled twice.
    pub fn by_tag(&self) -> HashMap<u64, Outcome> {
        let mut map = HashMap::new();
        for call in self.calls() {
            for s in call {
                assert!(
                    map.insert(s.tag, s.outcome).is_none(),
                    "tag {} settled twice",
                    s.tag
                );
            }
        }
        map
    }
}

impl Acknowledger for Journal {
    async fn ack(&self, settled: Vec<Settlement>) -> Result<(), AckError> {
        self.calls.lock().unwrap().push(settled);
        if self.panic.load(std::sync::atomic::Ordering::Relaxed) {
            panic!("the journal panics");
        }
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(AckError::new("the journal refuses"));
        }
        Ok(())
    }
}

/// A dead-letter sink that keeps what it is given, and can be told to fail.
#[derive(Default)]
pub struct Morgue {
    pub letters: Mutex<Vec<(u64, String, u32, String)>>,
    pub fail: std::sync::atomic::AtomicBool,
}

impl DeadLetterSink<u64> for Morgue {
    async fn dead_letter(&self, letters: Vec<DeadLetter<u64>>) -> Result<(), AckError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(AckError::new("the morgue is full"));
        }
        let mut kept = self.letters.lock().unwrap();
        for l in letters {
            kept.push((
                l.data,
                l.reason.to_string(),
                l.attempts,
                l.stage.to_string(),
            ));
        }
        Ok(())
    }
}

/// A finite producer of `Message`s made with `acker`, tagged with their data: `data` is
/// emitted as demanded, then the producer finishes.
pub struct Feed {
    pub items: std::collections::VecDeque<u64>,
    pub acker: Acker,
}

impl stage::Producer for Feed {
    type Out = Message<u64>;

    async fn handle_demand(
        &mut self,
        demand: usize,
        ctx: &mut stage::Context<Self>,
    ) -> Vec<Message<u64>> {
        let n = demand.min(self.items.len());
        let out: Vec<_> = self
            .items
            .drain(..n)
            .map(|d| Message::new(d, &self.acker, d))
            .collect();
        if self.items.is_empty() {
            ctx.finish();
        }
        out
    }
}

/// A [`Feed`] group of one producer.
pub fn feed(items: impl IntoIterator<Item = u64>, acker: &Acker) -> ingest::Producers<Feed> {
    ingest::Producers::single(Feed {
        items: items.into_iter().collect(),
        acker: acker.clone(),
    })
}

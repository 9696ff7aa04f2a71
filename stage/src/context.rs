//! What a handler can do besides returning: emit, stop, ask, cancel, reply late, address itself
//! and set timers.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{CallError, Reason};
use crate::handle::StageHandle;
use crate::message::Info;
use crate::options::SubscriptionId;
use crate::producer::Producer;

/// A message for a stage, ready to run against its state: what calls, casts, infos and timers
/// become once their type is known.
pub(crate) type Job<S> = Box<
    dyn for<'a> FnOnce(
            &'a mut S,
            &'a mut Context<S>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>
        + Send,
>;

/// Identifies a timer set with [`Context::send_after`], to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerRef(pub(crate) u64);

/// What a handler asked of the timers.
pub(crate) enum TimerOp<S> {
    Start {
        timer: TimerRef,
        delay: Duration,
        job: Job<S>,
    },
    Cancel(TimerRef),
}

/// Passed to every handler of stage `S`: emit events, stop, ask, cancel, reply after the
/// events are out, address the stage itself, set timers.
///
/// Everything asked through the context happens when the handler returns, in this order:
/// emitted events are dispatched, deferred replies are sent, manual asks and cancels go out,
/// timers are set or cancelled, and then the stage stops if asked to.
pub struct Context<S> {
    /// A `Vec` of the stage's output events, for stages started with a producer side.
    pub(crate) out: Option<Box<dyn Any + Send>>,
    pub(crate) stop: Option<Reason>,
    pub(crate) finish: bool,
    pub(crate) asks: Vec<(SubscriptionId, usize)>,
    pub(crate) cancels: Vec<(SubscriptionId, Reason)>,
    pub(crate) replies: Vec<Box<dyn FnOnce() + Send>>,
    pub(crate) timers: Vec<TimerOp<S>>,
    next_timer: u64,
    pub(crate) me: StageHandle<S>,
    /// Set when the stage stops, so that replies dropped after that say `Closed`.
    pub(crate) exiting: Arc<AtomicBool>,
    /// Events the stage dropped: emitted by a stage started without a producer side, or given
    /// up by one of the crate's own consumers.
    pub(crate) misplaced: u64,
    /// Whether a handler asked for anything since the engine last looked: most handlers ask
    /// for nothing, and then there is nothing to apply.
    pub(crate) dirty: bool,
}

impl<S> fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("stage", &self.me.name())
            .field("stop", &self.stop)
            .field("finish", &self.finish)
            .field("asks", &self.asks)
            .field("cancels", &self.cancels)
            .field("timers", &self.timers.len())
            .finish()
    }
}

impl<S> Context<S> {
    pub(crate) fn new(me: StageHandle<S>, out: Option<Box<dyn Any + Send>>) -> Self {
        Context {
            out,
            stop: None,
            finish: false,
            asks: Vec::new(),
            cancels: Vec::new(),
            replies: Vec::new(),
            timers: Vec::new(),
            next_timer: 0,
            me,
            exiting: Arc::new(AtomicBool::new(false)),
            misplaced: 0,
            dirty: false,
        }
    }

    /// The stage's own handle: to send itself messages, or to give to tasks it starts so that
    /// they can report back. It keeps nothing alive: a stopped stage stops whatever holds it.
    pub fn myself(&self) -> StageHandle<S> {
        self.me.clone()
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        self.me.name()
    }

    /// Stops the stage with `reason` once the handler returns.
    pub fn stop(&mut self, reason: Reason) {
        self.dirty = true;
        self.stop = Some(reason);
    }

    /// Marks a producer as finished: it stops with [`Reason::Normal`] once every event it
    /// emitted that can still reach a consumer has gone out (events held for consumers that
    /// are gone, such as a partition left without its consumer, are dropped and counted), or
    /// at once if all its consumers have left. One that has never had a consumer waits for the
    /// first. A finite source calls this when it runs dry.
    pub fn finish(&mut self) {
        self.dirty = true;
        self.finish = true;
    }

    /// Asks the producer of a [manual](crate::SubscriptionMode::Manual) subscription for `n`
    /// more events. `n == 0` does nothing.
    pub fn ask(&mut self, subscription: SubscriptionId, n: usize) {
        if n > 0 {
            self.dirty = true;
            self.asks.push((subscription, n));
        }
    }

    /// Cancels one of this stage's subscriptions, to a producer or from a consumer.
    pub fn cancel(&mut self, subscription: SubscriptionId, reason: Reason) {
        self.dirty = true;
        self.cancels.push((subscription, reason));
    }

    /// Replies to a call after the events emitted by this handler have been dispatched
    /// (GenStage's `{:reply, reply, events, state}`). [`ReplyTo::send`] replies at once instead.
    pub fn reply<R: Send + 'static>(&mut self, to: ReplyTo<R>, value: R) {
        self.dirty = true;
        self.replies.push(Box::new(move || to.send(value)));
    }

    /// Delivers `msg` to the stage's [`Info::handle_info`] after `delay`, unless cancelled
    /// with [`cancel_timer`](Context::cancel_timer). It runs as soon as the delay is over,
    /// before any event or message that arrives later, and on tokio's clock, so a test on a
    /// paused clock (`tokio::time::pause`, with tokio's `test-util` feature) controls it exactly.
    /// Any delay is accepted: one longer than a year (tokio's timers stop at about two) waits
    /// in legs of a year each.
    pub fn send_after<M>(&mut self, delay: Duration, msg: M) -> TimerRef
    where
        S: Info<M>,
        M: Send + 'static,
    {
        let timer = TimerRef(self.next_timer);
        self.next_timer += 1;
        let job: Job<S> = Box::new(move |stage: &mut S, ctx: &mut Context<S>| {
            Box::pin(stage.handle_info(msg, ctx))
        });
        self.dirty = true;
        self.timers.push(TimerOp::Start { timer, delay, job });
        timer
    }

    /// Cancels a timer set with [`send_after`](Context::send_after). A timer that has already
    /// fired, or was already cancelled, is ignored.
    pub fn cancel_timer(&mut self, timer: TimerRef) {
        self.dirty = true;
        self.timers.push(TimerOp::Cancel(timer));
    }

    pub(crate) fn reply_to<R>(&self, tx: oneshot::Sender<Result<R, CallError>>) -> ReplyTo<R> {
        ReplyTo {
            tx: Some(tx),
            exiting: Arc::clone(&self.exiting),
        }
    }

    /// Counts `n` events the stage dropped on purpose in its final counters' `dropped`.
    pub(crate) fn count_dropped(&mut self, n: usize) {
        self.misplaced += n as u64;
    }

    /// Takes the events emitted since last time.
    pub(crate) fn take_out<O: Send + 'static>(&mut self) -> Vec<O> {
        self.out
            .as_mut()
            .and_then(|out| out.downcast_mut::<Vec<O>>())
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

impl<S: Producer> Context<S> {
    /// Emits events, dispatched after the handler returns (before any events it returns).
    pub fn emit(&mut self, mut events: Vec<S::Out>) {
        if events.is_empty() {
            return;
        }
        self.dirty = true;
        match self
            .out
            .as_mut()
            .and_then(|out| out.downcast_mut::<Vec<S::Out>>())
        {
            Some(out) if out.is_empty() => std::mem::swap(out, &mut events),
            Some(out) => out.append(&mut events),
            None => self.misplace(events.len()),
        }
    }

    /// Emits one event.
    pub fn push(&mut self, event: S::Out) {
        self.dirty = true;
        match self
            .out
            .as_mut()
            .and_then(|out| out.downcast_mut::<Vec<S::Out>>())
        {
            Some(out) => out.push(event),
            None => self.misplace(1),
        }
    }

    fn misplace(&mut self, n: usize) {
        self.misplaced += n as u64;
        tracing::error!(
            stage = %self.me.name(),
            dropped = n,
            "a stage started as a consumer emitted events: start it with producer_consumer; dropped"
        );
    }
}

/// Where the answer to a call goes. Reply with [`send`](ReplyTo::send) (at once) or
/// [`Context::reply`] (after this handler's events are dispatched), now or from a later
/// handler. Dropping it without replying makes the caller's `call` return
/// [`CallError::NoReply`], or [`CallError::Closed`] when it is dropped because the stage
/// stopped or panicked.
pub struct ReplyTo<R> {
    tx: Option<oneshot::Sender<Result<R, CallError>>>,
    exiting: Arc<AtomicBool>,
}

impl<R> ReplyTo<R> {
    /// Sends the reply now. Does nothing if the caller has gone.
    pub fn send(mut self, value: R) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Ok(value));
        }
    }
}

impl<R> Drop for ReplyTo<R> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let closed = std::thread::panicking() || self.exiting.load(Ordering::Acquire);
            let _ = tx.send(Err(if closed {
                CallError::Closed
            } else {
                CallError::NoReply
            }));
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

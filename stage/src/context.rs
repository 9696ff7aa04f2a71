//! What a handler can do besides returning events: emit, stop, ask, cancel, reply late.

use std::convert::Infallible;
use std::fmt;

use tokio::sync::oneshot;

use crate::error::Reason;
use crate::options::SubscriptionId;

/// Passed to every handler: events to emit, requests to stop, manual demand and cancels.
///
/// Everything asked through the context happens when the handler returns, in this order:
/// emitted events are dispatched, deferred replies are sent, manual asks and cancels go out,
/// and then the stage stops if asked to.
pub struct Context<O = Infallible> {
    pub(crate) events: Vec<O>,
    pub(crate) stop: Option<Reason>,
    pub(crate) finish: bool,
    pub(crate) asks: Vec<(SubscriptionId, usize)>,
    pub(crate) cancels: Vec<(SubscriptionId, Reason)>,
    pub(crate) replies: Vec<Box<dyn FnOnce() + Send>>,
}

impl<O> Default for Context<O> {
    fn default() -> Self {
        Context {
            events: Vec::new(),
            stop: None,
            finish: false,
            asks: Vec::new(),
            cancels: Vec::new(),
            replies: Vec::new(),
        }
    }
}

impl<O> fmt::Debug for Context<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("events", &self.events.len())
            .field("stop", &self.stop)
            .field("finish", &self.finish)
            .field("asks", &self.asks)
            .field("cancels", &self.cancels)
            .finish()
    }
}

impl<O> Context<O> {
    /// Emits events, dispatched after the handler returns (before any events it returns).
    pub fn emit(&mut self, mut events: Vec<O>) {
        if self.events.is_empty() {
            std::mem::swap(&mut self.events, &mut events);
        } else {
            self.events.append(&mut events);
        }
    }

    /// Emits one event.
    pub fn push(&mut self, event: O) {
        self.events.push(event);
    }

    /// Stops the stage with `reason` once the handler returns.
    pub fn stop(&mut self, reason: Reason) {
        self.stop = Some(reason);
    }

    /// Marks a producer as finished: it stops with [`Reason::Normal`] once every event it
    /// emitted has been dispatched (its buffer is empty), or at once if all its consumers have
    /// left. One that has never had a consumer waits for the first. A finite source calls this
    /// when it runs dry.
    pub fn finish(&mut self) {
        self.finish = true;
    }

    /// Asks the producer of a [manual](crate::SubscriptionMode::Manual) subscription for `n`
    /// more events. `n == 0` does nothing.
    pub fn ask(&mut self, subscription: SubscriptionId, n: usize) {
        if n > 0 {
            self.asks.push((subscription, n));
        }
    }

    /// Cancels one of this stage's subscriptions, to a producer or from a consumer.
    pub fn cancel(&mut self, subscription: SubscriptionId, reason: Reason) {
        self.cancels.push((subscription, reason));
    }

    /// Replies to a call after the events emitted by this handler have been dispatched
    /// (GenStage's `{:reply, reply, events, state}`). [`ReplyTo::send`] replies at once instead.
    pub fn reply<R: Send + 'static>(&mut self, to: ReplyTo<R>, value: R) {
        self.replies.push(Box::new(move || to.send(value)));
    }
}

/// Where the answer to a call goes. Reply with [`send`](ReplyTo::send) (at once) or
/// [`Context::reply`] (after this handler's events are dispatched), now or from a later handler.
/// Dropping it without replying makes the caller's `call` return
/// [`CallError::NoReply`](crate::CallError::NoReply).
pub struct ReplyTo<R>(pub(crate) oneshot::Sender<R>);

impl<R> ReplyTo<R> {
    /// Sends the reply now. Does nothing if the caller has gone.
    pub fn send(self, value: R) {
        let _ = self.0.send(value);
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

/// Which side of a subscription the other stage is on, for producer-consumers' callbacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The other stage is our producer (we are consuming from it).
    Producer,
    /// The other stage is our consumer (it is consuming from us).
    Consumer,
}

/// How a subscription ended (GenStage's `{:cancel | :down, reason}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancel {
    /// `Cancel` when the other side cancelled, `Down` when it exited.
    pub kind: CancelKind,
    /// The reason given.
    pub reason: Reason,
}

/// Whether a subscription was cancelled or its peer exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelKind {
    /// The subscription was cancelled; the peer may still be running.
    Cancel,
    /// The peer exited.
    Down,
}

//! One engine runs all three stage kinds; `Kind` adapts each user trait to it.
//!
//! The kind is a marker type ([`ProducerStage`], [`ConsumerStage`], [`ProducerConsumerStage`])
//! so that a user type can implement more than one stage trait without the blanket impls
//! overlapping. Users meet the markers only through the handle aliases.

use std::convert::Infallible;
use std::future::Future;

use crate::Reason;
use crate::consumer::Consumer;
use crate::context::{Cancel, Context, Peer, ReplyTo};
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};
use crate::producer::Producer;
use crate::producer_consumer::ProducerConsumer;

mod sealed {
    pub trait Sealed {}
}

/// Marks a stage started with [`producer`](crate::producer).
#[derive(Debug)]
pub struct ProducerStage(());
/// Marks a stage started with [`consumer`](crate::consumer).
#[derive(Debug)]
pub struct ConsumerStage(());
/// Marks a stage started with [`producer_consumer`](crate::producer_consumer).
#[derive(Debug)]
pub struct ProducerConsumerStage(());

impl sealed::Sealed for ProducerStage {}
impl sealed::Sealed for ConsumerStage {}
impl sealed::Sealed for ProducerConsumerStage {}

/// Kinds of stage that emit events (producers and producer-consumers).
pub trait Emits: sealed::Sealed {}
/// Kinds of stage that receive events (consumers and producer-consumers).
pub trait Receives: sealed::Sealed {}
impl Emits for ProducerStage {}
impl Emits for ProducerConsumerStage {}
impl Receives for ConsumerStage {}
impl Receives for ProducerConsumerStage {}

/// How the engine drives a stage `S` of this kind. Sealed: implemented for the three markers.
pub trait Kind<S>: sealed::Sealed + Send + Sync + Sized + 'static {
    /// The events the stage receives (`Infallible` for producers).
    type In: Send + 'static;
    /// The events the stage emits (`Infallible` for consumers).
    type Out: Send + 'static;
    /// The stage's call requests.
    type Call: Send + 'static;
    /// The stage's call replies.
    type Reply: Send + 'static;
    /// The stage's cast and info messages.
    type Msg: Send + 'static;
    /// Whether the stage has a producer side.
    #[doc(hidden)]
    const EMITS: bool;
    /// Whether the stage has a consumer side.
    #[doc(hidden)]
    const RECEIVES: bool;

    #[doc(hidden)]
    fn demand(
        s: &mut S,
        n: usize,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = Vec<Self::Out>> + Send;
    #[doc(hidden)]
    fn events(
        s: &mut S,
        events: Vec<Self::In>,
        id: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = Vec<Self::Out>> + Send;
    #[doc(hidden)]
    fn subscribe(
        s: &mut S,
        peer: Peer,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = SubscriptionMode> + Send;
    #[doc(hidden)]
    fn cancel(
        s: &mut S,
        peer: Peer,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;
    #[doc(hidden)]
    fn call(
        s: &mut S,
        req: Self::Call,
        reply: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;
    #[doc(hidden)]
    fn cast(
        s: &mut S,
        msg: Self::Msg,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;
    #[doc(hidden)]
    fn info(
        s: &mut S,
        msg: Self::Msg,
        ctx: &mut Context<Self::Out>,
    ) -> impl Future<Output = ()> + Send;
    #[doc(hidden)]
    fn discarded(s: &mut S, count: usize) -> bool;
    #[doc(hidden)]
    fn terminate(s: &mut S, reason: &Reason) -> impl Future<Output = ()> + Send;
}

impl<P: Producer> Kind<P> for ProducerStage {
    type In = Infallible;
    type Out = P::Out;
    type Call = P::Call;
    type Reply = P::Reply;
    type Msg = P::Msg;
    const EMITS: bool = true;
    const RECEIVES: bool = false;

    fn demand(
        s: &mut P,
        n: usize,
        ctx: &mut Context<P::Out>,
    ) -> impl Future<Output = Vec<P::Out>> + Send {
        s.handle_demand(n, ctx)
    }
    async fn events(
        _: &mut P,
        events: Vec<Infallible>,
        _: SubscriptionId,
        _: &mut Context<P::Out>,
    ) -> Vec<P::Out> {
        match events.into_iter().next() {
            None => Vec::new(),
            Some(never) => match never {},
        }
    }
    async fn subscribe(
        s: &mut P,
        _: Peer,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<P::Out>,
    ) -> SubscriptionMode {
        s.handle_subscribe(id, opts, ctx).await;
        SubscriptionMode::Automatic
    }
    fn cancel(
        s: &mut P,
        _: Peer,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<P::Out>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_cancel(cancel, id, ctx)
    }
    fn call(
        s: &mut P,
        req: P::Call,
        reply: ReplyTo<P::Reply>,
        ctx: &mut Context<P::Out>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_call(req, reply, ctx)
    }
    fn cast(s: &mut P, msg: P::Msg, ctx: &mut Context<P::Out>) -> impl Future<Output = ()> + Send {
        s.handle_cast(msg, ctx)
    }
    fn info(s: &mut P, msg: P::Msg, ctx: &mut Context<P::Out>) -> impl Future<Output = ()> + Send {
        s.handle_info(msg, ctx)
    }
    fn discarded(s: &mut P, count: usize) -> bool {
        s.format_discarded(count)
    }
    fn terminate(s: &mut P, reason: &Reason) -> impl Future<Output = ()> + Send {
        s.terminate(reason)
    }
}

impl<C: Consumer> Kind<C> for ConsumerStage {
    type In = C::In;
    type Out = Infallible;
    type Call = C::Call;
    type Reply = C::Reply;
    type Msg = C::Msg;
    const EMITS: bool = false;
    const RECEIVES: bool = true;

    async fn demand(_: &mut C, _: usize, _: &mut Context) -> Vec<Infallible> {
        Vec::new()
    }
    async fn events(
        s: &mut C,
        events: Vec<C::In>,
        id: SubscriptionId,
        ctx: &mut Context,
    ) -> Vec<Infallible> {
        s.handle_events(events, id, ctx).await;
        Vec::new()
    }
    fn subscribe(
        s: &mut C,
        _: Peer,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context,
    ) -> impl Future<Output = SubscriptionMode> + Send {
        s.handle_subscribe(id, opts, ctx)
    }
    fn cancel(
        s: &mut C,
        _: Peer,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context,
    ) -> impl Future<Output = ()> + Send {
        s.handle_cancel(cancel, id, ctx)
    }
    fn call(
        s: &mut C,
        req: C::Call,
        reply: ReplyTo<C::Reply>,
        ctx: &mut Context,
    ) -> impl Future<Output = ()> + Send {
        s.handle_call(req, reply, ctx)
    }
    fn cast(s: &mut C, msg: C::Msg, ctx: &mut Context) -> impl Future<Output = ()> + Send {
        s.handle_cast(msg, ctx)
    }
    fn info(s: &mut C, msg: C::Msg, ctx: &mut Context) -> impl Future<Output = ()> + Send {
        s.handle_info(msg, ctx)
    }
    fn discarded(_: &mut C, _: usize) -> bool {
        true
    }
    fn terminate(s: &mut C, reason: &Reason) -> impl Future<Output = ()> + Send {
        s.terminate(reason)
    }
}

impl<S: ProducerConsumer> Kind<S> for ProducerConsumerStage {
    type In = S::In;
    type Out = S::Out;
    type Call = S::Call;
    type Reply = S::Reply;
    type Msg = S::Msg;
    const EMITS: bool = true;
    const RECEIVES: bool = true;

    async fn demand(_: &mut S, _: usize, _: &mut Context<S::Out>) -> Vec<S::Out> {
        Vec::new()
    }
    fn events(
        s: &mut S,
        events: Vec<S::In>,
        id: SubscriptionId,
        ctx: &mut Context<S::Out>,
    ) -> impl Future<Output = Vec<S::Out>> + Send {
        s.handle_events(events, id, ctx)
    }
    fn subscribe(
        s: &mut S,
        peer: Peer,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<S::Out>,
    ) -> impl Future<Output = SubscriptionMode> + Send {
        s.handle_subscribe(peer, id, opts, ctx)
    }
    fn cancel(
        s: &mut S,
        peer: Peer,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<S::Out>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_cancel(peer, cancel, id, ctx)
    }
    fn call(
        s: &mut S,
        req: S::Call,
        reply: ReplyTo<S::Reply>,
        ctx: &mut Context<S::Out>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_call(req, reply, ctx)
    }
    fn cast(s: &mut S, msg: S::Msg, ctx: &mut Context<S::Out>) -> impl Future<Output = ()> + Send {
        s.handle_cast(msg, ctx)
    }
    fn info(s: &mut S, msg: S::Msg, ctx: &mut Context<S::Out>) -> impl Future<Output = ()> + Send {
        s.handle_info(msg, ctx)
    }
    fn discarded(s: &mut S, count: usize) -> bool {
        s.format_discarded(count)
    }
    fn terminate(s: &mut S, reason: &Reason) -> impl Future<Output = ()> + Send {
        s.terminate(reason)
    }
}

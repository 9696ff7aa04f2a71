//! How the engine drives each of the three kinds of stage: one generic engine, three small
//! adapters from its calls to the user's traits. Private: users only see the traits.

use std::convert::Infallible;
use std::future::Future;

use crate::consumer::Consumer;
use crate::context::Context;
use crate::error::{Cancel, Reason};
use crate::handle::Role;
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};
use crate::packet::Packet;
use crate::producer::Producer;

/// The engine's view of a stage `S`.
pub(crate) trait Drive<S>: Send + Sync + 'static {
    /// The events the stage receives (`Infallible` without a consumer side).
    type In: Send + 'static;
    /// The events the stage emits (`Infallible` without a producer side).
    type Out: Send + 'static;
    const ROLE: Role;
    const EMITS: bool;
    const RECEIVES: bool;

    fn demand(
        s: &mut S,
        n: usize,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = Vec<Self::Out>> + Send;
    fn events(
        s: &mut S,
        events: Vec<Self::In>,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send;
    fn packet(
        s: &mut S,
        packet: Packet,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send;
    /// The stage subscribed to a producer.
    fn subscribed_to(
        s: &mut S,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = SubscriptionMode> + Send;
    /// A subscription to a producer ended.
    fn producer_left(
        s: &mut S,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send;
    /// A consumer subscribed to the stage.
    fn consumer_joined(
        s: &mut S,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send;
    /// A consumer's subscription ended.
    fn consumer_left(
        s: &mut S,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send;
    fn start(s: &mut S, ctx: &mut Context<S>) -> impl Future<Output = ()> + Send;
    fn discarded(s: &mut S, count: usize) -> bool;
    fn terminate(s: &mut S, reason: &Reason) -> impl Future<Output = ()> + Send;
}

/// A stage started with [`producer`](crate::producer).
pub(crate) struct AsProducerStage;
/// A stage started with [`consumer`](crate::consumer).
pub(crate) struct AsConsumerStage;
/// A stage started with [`producer_consumer`](crate::producer_consumer).
pub(crate) struct AsProducerConsumerStage;

fn never<T>(events: Vec<Infallible>) -> T {
    match events.into_iter().next() {
        Some(never) => match never {},
        None => unreachable!("a stage without a consumer side received events"),
    }
}

impl<P: Producer> Drive<P> for AsProducerStage {
    type In = Infallible;
    type Out = P::Out;
    const ROLE: Role = Role::Producer;
    const EMITS: bool = true;
    const RECEIVES: bool = false;

    fn demand(
        s: &mut P,
        n: usize,
        ctx: &mut Context<P>,
    ) -> impl Future<Output = Vec<P::Out>> + Send {
        s.handle_demand(n, ctx)
    }
    async fn events(_: &mut P, events: Vec<Infallible>, _: SubscriptionId, _: &mut Context<P>) {
        never(events)
    }
    async fn packet(_: &mut P, _: Packet, _: SubscriptionId, _: &mut Context<P>) {
        unreachable!("a producer received a packet")
    }
    async fn subscribed_to(
        _: &mut P,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<P>,
    ) -> SubscriptionMode {
        SubscriptionMode::Automatic
    }
    async fn producer_left(_: &mut P, _: Cancel, _: SubscriptionId, _: &mut Context<P>) {}
    fn consumer_joined(
        s: &mut P,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<P>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_subscribe(id, opts, ctx)
    }
    fn consumer_left(
        s: &mut P,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<P>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_cancel(cancel, id, ctx)
    }
    fn start(s: &mut P, ctx: &mut Context<P>) -> impl Future<Output = ()> + Send {
        s.handle_start(ctx)
    }
    fn discarded(s: &mut P, count: usize) -> bool {
        s.format_discarded(count)
    }
    fn terminate(s: &mut P, reason: &Reason) -> impl Future<Output = ()> + Send {
        s.terminate(reason)
    }
}

impl<C: Consumer> Drive<C> for AsConsumerStage {
    type In = C::In;
    type Out = Infallible;
    const ROLE: Role = Role::Consumer;
    const EMITS: bool = false;
    const RECEIVES: bool = true;

    async fn demand(_: &mut C, _: usize, _: &mut Context<C>) -> Vec<Infallible> {
        Vec::new()
    }
    fn events(
        s: &mut C,
        events: Vec<C::In>,
        id: SubscriptionId,
        ctx: &mut Context<C>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_events(events, id, ctx)
    }
    fn packet(
        s: &mut C,
        packet: Packet,
        id: SubscriptionId,
        ctx: &mut Context<C>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_packet(packet, id, ctx)
    }
    fn subscribed_to(
        s: &mut C,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<C>,
    ) -> impl Future<Output = SubscriptionMode> + Send {
        s.handle_subscribe(id, opts, ctx)
    }
    fn producer_left(
        s: &mut C,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<C>,
    ) -> impl Future<Output = ()> + Send {
        s.handle_cancel(cancel, id, ctx)
    }
    async fn consumer_joined(
        _: &mut C,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<C>,
    ) {
    }
    async fn consumer_left(_: &mut C, _: Cancel, _: SubscriptionId, _: &mut Context<C>) {}
    fn start(s: &mut C, ctx: &mut Context<C>) -> impl Future<Output = ()> + Send {
        s.handle_start(ctx)
    }
    fn discarded(_: &mut C, _: usize) -> bool {
        true
    }
    fn terminate(s: &mut C, reason: &Reason) -> impl Future<Output = ()> + Send {
        s.terminate(reason)
    }
}

impl<S: Producer + Consumer> Drive<S> for AsProducerConsumerStage {
    type In = <S as Consumer>::In;
    type Out = <S as Producer>::Out;
    const ROLE: Role = Role::ProducerConsumer;
    const EMITS: bool = true;
    const RECEIVES: bool = true;

    async fn demand(_: &mut S, _: usize, _: &mut Context<S>) -> Vec<Self::Out> {
        Vec::new()
    }
    fn events(
        s: &mut S,
        events: Vec<Self::In>,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send {
        Consumer::handle_events(s, events, id, ctx)
    }
    fn packet(
        s: &mut S,
        packet: Packet,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send {
        Consumer::handle_packet(s, packet, id, ctx)
    }
    fn subscribed_to(
        s: &mut S,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = SubscriptionMode> + Send {
        Consumer::handle_subscribe(s, id, opts, ctx)
    }
    fn producer_left(
        s: &mut S,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send {
        Consumer::handle_cancel(s, cancel, id, ctx)
    }
    fn consumer_joined(
        s: &mut S,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send {
        Producer::handle_subscribe(s, id, opts, ctx)
    }
    fn consumer_left(
        s: &mut S,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<S>,
    ) -> impl Future<Output = ()> + Send {
        Producer::handle_cancel(s, cancel, id, ctx)
    }
    async fn start(s: &mut S, ctx: &mut Context<S>) {
        Consumer::handle_start(s, ctx).await;
        Producer::handle_start(s, ctx).await;
    }
    fn discarded(s: &mut S, count: usize) -> bool {
        s.format_discarded(count)
    }
    async fn terminate(s: &mut S, reason: &Reason) {
        Consumer::terminate(s, reason).await;
        Producer::terminate(s, reason).await;
    }
}

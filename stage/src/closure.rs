//! Stages from closures: a consumer, a producer-consumer and a producer, for when a trait impl
//! would be all boilerplate.
//!
//! Each comes in two forms: the plain one takes a closure that does its work at once, the
//! `async_` one a closure that returns a future (clone what it needs into the future: it cannot
//! borrow the closure's own state). Both return the usual builders.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::marker::PhantomData;

use crate::consumer::Consumer;
use crate::context::Context;
use crate::options::SubscriptionId;
use crate::producer::Producer;
use crate::start::{ConsumerBuilder, ProducerBuilder, ProducerConsumerBuilder};

/// A consumer that calls a closure with each batch. Made by [`consumer_fn`] and
/// [`async_consumer_fn`].
pub struct ConsumerFn<T, F> {
    f: F,
    _events: PhantomData<fn(T)>,
}

impl<T, F> fmt::Debug for ConsumerFn<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsumerFn")
    }
}

impl<T, F, Fut> Consumer for ConsumerFn<T, F>
where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    type In = T;

    async fn handle_events(&mut self, events: Vec<T>, _: SubscriptionId, _: &mut Context<Self>) {
        (self.f)(events).await;
    }
}

/// Prepares a consumer that calls `f` with each batch it receives.
///
/// # Examples
///
/// ```
/// use stage::SubscribeOptions;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let numbers = stage::from_iter(1..=100u64).start().unwrap();
/// let mut total = 0;
/// let sum = stage::consumer_fn(move |events: Vec<u64>| {
///     total += events.iter().sum::<u64>();
///     if total == 5050 {
///         println!("all there");
///     }
/// })
/// .subscribe_to(&numbers, SubscribeOptions::new().max_demand(10))
/// .start()
/// .unwrap();
/// assert_eq!(sum.join().await, stage::Reason::Normal);
/// # }
/// ```
pub fn consumer_fn<T, F>(
    mut f: F,
) -> ConsumerBuilder<ConsumerFn<T, impl FnMut(Vec<T>) -> Ready<()> + Send + 'static>>
where
    T: Send + 'static,
    F: FnMut(Vec<T>) + Send + 'static,
{
    async_consumer_fn(move |events| {
        f(events);
        ready(())
    })
}

/// Prepares a consumer that awaits `f(batch)` for each batch it receives. The next batch is
/// asked for only once the future is done, so a slow future slows the producer down.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let seen = Arc::new(AtomicU64::new(0));
/// let count = Arc::clone(&seen);
/// let numbers = stage::from_iter(0..1000u64).start().unwrap();
/// let sink = stage::async_consumer_fn(move |events: Vec<u64>| {
///     let count = Arc::clone(&count);
///     async move {
///         tokio::task::yield_now().await; // stands for a write somewhere
///         count.fetch_add(events.len() as u64, Ordering::Relaxed);
///     }
/// })
/// .subscribe_to(&numbers, Default::default())
/// .start()
/// .unwrap();
/// sink.join().await;
/// assert_eq!(seen.load(Ordering::Relaxed), 1000);
/// # }
/// ```
pub fn async_consumer_fn<T, F, Fut>(f: F) -> ConsumerBuilder<ConsumerFn<T, F>>
where
    T: Send + 'static,
    F: FnMut(Vec<T>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    crate::consumer(ConsumerFn {
        f,
        _events: PhantomData,
    })
}

/// A producer-consumer that turns each batch into the batch it emits with a closure. Made by
/// [`producer_consumer_fn`] and [`async_producer_consumer_fn`].
pub struct ProducerConsumerFn<I, O, F> {
    f: F,
    _events: PhantomData<fn(I) -> O>,
}

impl<I, O, F> fmt::Debug for ProducerConsumerFn<I, O, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProducerConsumerFn")
    }
}

impl<I, O, F, Fut> Producer for ProducerConsumerFn<I, O, F>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(Vec<I>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<O>> + Send,
{
    type Out = O;
}

impl<I, O, F, Fut> Consumer for ProducerConsumerFn<I, O, F>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(Vec<I>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<O>> + Send,
{
    type In = I;

    async fn handle_events(&mut self, events: Vec<I>, _: SubscriptionId, ctx: &mut Context<Self>) {
        let out = (self.f)(events).await;
        ctx.emit(out);
    }
}

/// Prepares a producer-consumer that emits `f(batch)` for each batch it receives: a map, a
/// filter or a flat map over whole batches. The output may be shorter or longer than the input;
/// an empty output emits nothing.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let numbers = stage::from_iter(1..=6u64).start().unwrap();
/// let evens_doubled = stage::producer_consumer_fn(|batch: Vec<u64>| {
///     batch.into_iter().filter(|n| n % 2 == 0).map(|n| n * 2).collect()
/// })
/// .subscribe_to(&numbers, Default::default())
/// .start()
/// .unwrap();
/// let got: Vec<u64> = stage::stream([(&evens_doubled, Default::default())]).unwrap().collect().await;
/// assert_eq!(got, [4, 8, 12]);
/// # }
/// ```
#[allow(clippy::type_complexity)] // the closure's type cannot be named otherwise
pub fn producer_consumer_fn<I, O, F>(
    mut f: F,
) -> ProducerConsumerBuilder<
    ProducerConsumerFn<I, O, impl FnMut(Vec<I>) -> Ready<Vec<O>> + Send + 'static>,
>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(Vec<I>) -> Vec<O> + Send + 'static,
{
    async_producer_consumer_fn(move |events| ready(f(events)))
}

/// Prepares a producer-consumer that emits what `f(batch)` resolves to for each batch it
/// receives. It takes the next batch once the future is done.
pub fn async_producer_consumer_fn<I, O, F, Fut>(
    f: F,
) -> ProducerConsumerBuilder<ProducerConsumerFn<I, O, F>>
where
    I: Send + 'static,
    O: Send + 'static,
    F: FnMut(Vec<I>) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<O>> + Send,
{
    crate::producer_consumer(ProducerConsumerFn {
        f,
        _events: PhantomData,
    })
}

/// A producer that makes events with a closure when consumers ask for them. Made by
/// [`producer_fn`] and [`async_producer_fn`].
pub struct ProducerFn<T, F> {
    f: F,
    _events: PhantomData<fn() -> T>,
}

impl<T, F> fmt::Debug for ProducerFn<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProducerFn")
    }
}

impl<T, F, Fut> Producer for ProducerFn<T, F>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<T>> + Send,
{
    type Out = T;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<T> {
        let mut events = (self.f)(demand).await;
        // A short answer is followed by a call for the rest, until the demand is met or the
        // closure says it is done.
        while !events.is_empty() && events.len() < demand {
            let more = (self.f)(demand - events.len()).await;
            if more.is_empty() {
                ctx.finish();
                break;
            }
            events.extend(more);
        }
        if events.is_empty() {
            ctx.finish();
        }
        events
    }
}

/// Prepares a producer that calls `f(n)` when its consumers ask for events. `f` returns up to
/// `n` events; an empty `Vec` means the source is done, and the producer then finishes once
/// what it emitted is dispatched. A shorter answer is followed at once by a call for the rest.
///
/// So `f` suits sources that can always produce (counters, generators, files); a source that
/// may have nothing for a while is a `Stream` for [`from_stream`](crate::from_stream) or a
/// [`channel`](crate::channel).
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut next = 0u64;
/// let squares = stage::producer_fn(move |n| {
///     let end = (next + n as u64).min(5);
///     let events = (next..end).map(|k| k * k).collect();
///     next = end;
///     events
/// })
/// .start()
/// .unwrap();
/// let got: Vec<u64> = stage::stream([(&squares, Default::default())]).unwrap().collect().await;
/// assert_eq!(got, [0, 1, 4, 9, 16]);
/// # }
/// ```
pub fn producer_fn<T, F>(
    mut f: F,
) -> ProducerBuilder<ProducerFn<T, impl FnMut(usize) -> Ready<Vec<T>> + Send + 'static>>
where
    T: Send + 'static,
    F: FnMut(usize) -> Vec<T> + Send + 'static,
{
    async_producer_fn(move |n| ready(f(n)))
}

/// Prepares a producer that awaits `f(n)` when its consumers ask for events; see
/// [`producer_fn`]. While the future runs the producer handles nothing else (not even a
/// consumer leaving), so keep it short, or feed the producer from a stream instead.
pub fn async_producer_fn<T, F, Fut>(f: F) -> ProducerBuilder<ProducerFn<T, F>>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut + Send + 'static,
    Fut: Future<Output = Vec<T>> + Send,
{
    crate::producer(ProducerFn {
        f,
        _events: PhantomData,
    })
}

//! Failure paths (issue 10): nothing hangs, nothing is lost silently, a panic anywhere ends in
//! an error the caller sees, and options that cannot work are refused with a typed error.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use stage::{
    BroadcastDispatcher, Call, CallError, CancelMode, Consumer, Context, Contract,
    DemandDispatcher, Dispatcher, DispatcherState, Outbox, PartitionDispatcher, Producer, Reason,
    ReplyTo, StartError, SubscribeError, SubscribeOptions, SubscriptionId,
};
use support::{Ask, Msg, Sink, Source, emit, received, settle, within};
use tokio::sync::Semaphore;

/// Asserts that a stage ended with a panic whose message contains `text`.
#[track_caller]
fn assert_panicked(reason: Reason, text: &str) {
    match reason {
        Reason::Panic(msg) => assert!(msg.contains(text), "{msg}"),
        other => panic!("expected a panic with {text:?}, got {other:?}"),
    }
}

/// Records what it receives; each batch waits for a permit of `gate` first.
struct Gated {
    gate: Arc<Semaphore>,
    seen: Vec<u64>,
}

impl Gated {
    fn new(gate: &Arc<Semaphore>) -> Self {
        Gated {
            gate: Arc::clone(gate),
            seen: Vec::new(),
        }
    }
}

impl Consumer for Gated {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        self.gate.acquire().await.expect("open").forget();
        self.seen.extend(events);
    }
}

impl Call<Ask> for Gated {
    type Reply = Vec<u64>;

    async fn handle_call(&mut self, _: Ask, reply: ReplyTo<Vec<u64>>, _: &mut Context<Self>) {
        reply.send(self.seen.clone());
    }
}

#[tokio::test]
async fn a_finishing_partitioned_producer_stops_when_a_partitions_consumer_is_gone() {
    let hash = |e: &u64| Some((e % 2) as usize);
    let p = stage::from_iter(0..20u64)
        .dispatcher(PartitionDispatcher::with_hash(2, hash).unwrap())
        .start()
        .unwrap();
    // `odd` asks for nothing, so its partition's events wait in the producer's queue.
    let (odd, _) = support::manual_sink_with(&p, SubscribeOptions::new().partition(1)).await;
    let even = stage::consumer(Sink::new())
        .subscribe_to(
            &p,
            SubscribeOptions::new()
                .partition(0)
                .max_demand(100)
                .cancel(CancelMode::Temporary),
        )
        .start()
        .unwrap();
    // The iterator is exhausted at the first ask: the producer is finishing, and waits for
    // `odd`, which is alive.
    support::idle(&p).await;
    assert!(p.is_running());
    odd.cast(Msg::Stop(Reason::Shutdown)).unwrap();
    // Before: the producer waited for ever for partition 1's consumer.
    assert_eq!(within(p.join()).await, Reason::Normal);
    assert_eq!(
        received(&even).await,
        (0..20).filter(|e| e % 2 == 0).collect::<Vec<_>>()
    );
    let counters = p.final_counters().expect("exited");
    assert_eq!(
        counters.dropped, 10,
        "the odd events nobody can take: {counters:?}"
    );
}

#[tokio::test]
async fn from_stream_over_a_stream_that_panics_fails_the_producer() {
    let items = futures::stream::iter(0..10u64).map(|x| {
        assert!(x < 5, "the stream broke");
        x
    });
    let p = stage::from_stream(items).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().max_demand(1))
        .start()
        .unwrap();
    assert_panicked(within(p.join()).await, "the stream broke");
    assert!(matches!(within(c.join()).await, Reason::Panic(_)));
}

#[tokio::test]
async fn cancelling_after_the_producer_exited_still_delivers_what_it_sent() {
    for producer_exits in [false, true] {
        let gate = Arc::new(Semaphore::new(0));
        let p = stage::producer(Source::silent()).start().unwrap();
        let c = stage::consumer(Gated::new(&gate)).start().unwrap();
        let opts = SubscribeOptions::new()
            .max_demand(10)
            .cancel(CancelMode::Temporary);
        let id = within(c.subscribe(&p, opts)).await.unwrap();
        emit(&p, vec![1]).await;
        settle().await;
        // `c` is now handling [1], waiting at the gate: what follows queues in its mailbox.
        c.cancel(id, Reason::Normal).unwrap();
        for e in [2, 3, 4] {
            emit(&p, vec![e]).await;
        }
        if producer_exits {
            p.stop(Reason::Normal).unwrap();
            within(p.join()).await;
        }
        gate.add_permits(10);
        assert_eq!(
            within(c.call(Ask::Log)).await.unwrap(),
            vec![1, 2, 3, 4],
            "producer exited first: {producer_exits}"
        );
    }
}

#[tokio::test]
async fn events_in_flight_to_a_consumer_that_stops_go_back_to_the_producer() {
    let gate = Arc::new(Semaphore::new(0));
    let p = stage::producer(Source::silent()).start().unwrap();
    let a = stage::consumer(Gated::new(&gate)).start().unwrap();
    within(a.subscribe(&p, SubscribeOptions::new().max_demand(10)))
        .await
        .unwrap();
    let (b, b_id) = support::manual_sink(&p).await;
    emit(&p, (0..5).collect()).await;
    settle().await;
    // `a` handles 0..5 at the gate; it is told to stop, and 5..10 arrive behind the stop.
    a.stop(Reason::Shutdown).unwrap();
    emit(&p, (5..10).collect()).await;
    gate.add_permits(10);
    assert_eq!(within(a.join()).await, Reason::Shutdown);
    let a_counters = a.final_counters().unwrap();
    assert_eq!(a_counters.returned, 5, "{a_counters:?}");
    // What `a` never handled waits in the producer for its other consumer.
    assert_eq!(within(p.buffered()).await.unwrap(), 5);
    support::ask(&b, b_id, 10, &p).await;
    settle().await;
    assert_eq!(received(&b).await, (5..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_batch_sent_to_a_consumer_that_just_exited_goes_to_the_others() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id) = support::manual_sink(&p).await;
    let (b, b_id) = support::manual_sink(&p).await;
    support::ask(&a, a_id, 5, &p).await;
    // `a` exits, but the producer has not heard yet: what it sends `a` now comes back.
    a.stop(Reason::Shutdown).unwrap();
    within(a.join()).await;
    emit(&p, vec![1, 2, 3]).await;
    support::ask(&b, b_id, 5, &p).await;
    settle().await;
    assert_eq!(received(&b).await, vec![1, 2, 3]);
}

/// A consumer whose `terminate` panics.
struct BadEnd;

impl Consumer for BadEnd {
    type In = u64;

    async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {}

    async fn terminate(&mut self, _: &Reason) {
        panic!("terminate broke");
    }
}

#[tokio::test]
async fn a_panic_in_terminate_makes_the_exit_reason_a_panic() {
    let c = stage::consumer(BadEnd).start().unwrap();
    c.stop(Reason::Normal).unwrap();
    assert_panicked(within(c.join()).await, "terminate broke");
}

/// A stage whose `handle_call` panics.
struct BadCall;

impl Consumer for BadCall {
    type In = u64;

    async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {}
}

impl Call<()> for BadCall {
    type Reply = ();

    async fn handle_call(&mut self, _: (), _: ReplyTo<()>, _: &mut Context<Self>) {
        panic!("call broke");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_into_a_handler_that_panics_always_says_closed() {
    for _ in 0..200 {
        let c = stage::consumer(BadCall).start().unwrap();
        assert_eq!(within(c.call(())).await, Err(CallError::Closed));
    }
}

/// Keeps a reply and drops it when the stage stops.
#[derive(Default)]
struct Holder(Option<ReplyTo<u32>>);

impl Consumer for Holder {
    type In = u64;

    async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {}
}

impl Call<u32> for Holder {
    type Reply = u32;

    async fn handle_call(&mut self, _: u32, reply: ReplyTo<u32>, ctx: &mut Context<Self>) {
        self.0 = Some(reply);
        ctx.stop(Reason::Normal);
    }
}

#[tokio::test]
async fn a_reply_still_held_when_the_stage_stops_says_closed() {
    let c = stage::consumer(Holder::default()).start().unwrap();
    assert_eq!(within(c.call(7)).await, Err(CallError::Closed));
}

#[tokio::test]
async fn demand_beyond_the_limit_is_refused_naming_max_demand() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let huge = SubscribeOptions::new().max_demand(usize::MAX);
    match stage::consumer(Sink::new())
        .subscribe_to(&p, huge.clone())
        .start()
    {
        Err(StartError::Option(e)) => assert_eq!(e.option, "max_demand"),
        other => panic!("expected an option error, got {other:?}"),
    }
    let c = stage::consumer(Sink::new()).start().unwrap();
    match within(c.subscribe(&p, huge)).await {
        Err(SubscribeError::Option(e)) => assert_eq!(e.option, "max_demand"),
        other => panic!("expected an option error, got {other:?}"),
    }
    // Manual asks of usize::MAX saturate instead of overflowing.
    let (m, id) = support::manual_sink(&p).await;
    support::ask(&m, id, usize::MAX, &p).await;
    support::ask(&m, id, usize::MAX, &p).await;
    emit(&p, vec![1, 2]).await;
    settle().await;
    assert_eq!(received(&m).await, vec![1, 2]);
    assert!(p.is_running() && m.is_running());
}

/// A producer that answers every demand with twice as much.
struct Generous {
    next: u64,
}

impl Producer for Generous {
    type Out = u64;

    async fn handle_demand(&mut self, demand: usize, _: &mut Context<Self>) -> Vec<u64> {
        let start = self.next;
        self.next += 2 * demand as u64;
        (start..self.next).collect()
    }
}

/// Counts what it receives.
struct Count(Arc<AtomicUsize>);

impl Consumer for Count {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        self.0.fetch_add(events.len(), Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_broadcast_producer_that_makes_more_than_asked_nets_the_surplus() {
    let p = stage::producer(Generous { next: 0 })
        .dispatcher(BroadcastDispatcher::new())
        .start()
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let _c = stage::consumer(Count(Arc::clone(&seen)))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
        .start()
        .unwrap();
    within(async {
        while seen.load(Ordering::SeqCst) < 50_000 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let counters = p.counters().await.unwrap();
    assert_eq!(counters.dropped, 0, "{counters:?}");
    assert!(counters.buffered <= 200, "{counters:?}");
}

#[tokio::test]
async fn a_stage_that_stops_with_events_buffered_counts_them_as_dropped() {
    let p = stage::producer(Source::silent()).start().unwrap();
    emit(&p, (0..7).collect()).await;
    p.stop(Reason::Normal).unwrap();
    within(p.join()).await;
    assert_eq!(p.final_counters().unwrap().dropped, 7);
    assert!(
        p.counters().await.is_err(),
        "counters of a running stage only"
    );
}

#[tokio::test]
async fn a_consumer_that_stops_mid_message_gives_back_the_rest_of_it() {
    // `c` cuts a message of 10 into batches of 2 and stops after the first.
    struct StopAfterOne;
    impl Consumer for StopAfterOne {
        type In = u64;
        async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, ctx: &mut Context<Self>) {
            ctx.stop(Reason::Normal);
        }
    }
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(StopAfterOne)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(8))
        .start()
        .unwrap();
    settle().await;
    emit(&p, (0..10).collect()).await;
    within(c.join()).await;
    assert_eq!(c.final_counters().unwrap().returned, 8);
    let (m, id) = support::manual_sink(&p).await;
    support::ask(&m, id, 10, &p).await;
    settle().await;
    assert_eq!(received(&m).await, (2..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_partition_hash_that_panics_fails_the_producer_and_downs_its_consumers() {
    let hash = |e: &u64| {
        assert!(*e != 7, "the hash broke");
        Some((e % 2) as usize)
    };
    let p = stage::from_iter(0..20u64)
        .dispatcher(PartitionDispatcher::with_hash(2, hash).unwrap())
        .start()
        .unwrap();
    let consumers: Vec<_> = (0..2)
        .map(|partition| {
            stage::consumer(Sink::new())
                .subscribe_to(&p, SubscribeOptions::new().partition(partition))
                .start()
                .unwrap()
        })
        .collect();
    assert_panicked(within(p.join()).await, "the hash broke");
    for c in &consumers {
        // Each hears of its producer's panic and stops: nobody waits on a stage that is gone.
        assert_panicked(within(c.join()).await, "the hash broke");
    }
}

/// A demand dispatcher whose `state` panics once `armed` is set.
struct BrokenState {
    inner: DemandDispatcher<u64>,
    armed: Arc<AtomicBool>,
}

impl Dispatcher<u64> for BrokenState {
    fn contract(&self) -> Contract {
        Dispatcher::<u64>::contract(&self.inner)
    }
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        out: &mut Outbox<u64>,
    ) -> Result<(), SubscribeError> {
        self.inner.subscribe(id, opts, out)
    }
    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<u64>) {
        self.inner.ask(id, n, out);
    }
    fn cancel(
        &mut self,
        id: SubscriptionId,
        returned: Vec<u64>,
        out: &mut Outbox<u64>,
    ) -> Vec<u64> {
        self.inner.cancel(id, returned, out)
    }
    fn dispatch(&mut self, events: Vec<u64>, out: &mut Outbox<u64>) -> Vec<u64> {
        self.inner.dispatch(events, out)
    }
    fn capacity(&self) -> usize {
        Dispatcher::<u64>::capacity(&self.inner)
    }
    fn hold(&mut self, token: u64) -> bool {
        Dispatcher::<u64>::hold(&mut self.inner, token)
    }
    fn state(&self) -> DispatcherState {
        assert!(!self.armed.load(Ordering::SeqCst), "the state broke");
        Dispatcher::<u64>::state(&self.inner)
    }
}

#[tokio::test]
async fn a_dispatcher_that_panics_while_its_stage_exits_makes_the_exit_a_panic() {
    let armed = Arc::new(AtomicBool::new(false));
    let dispatcher = BrokenState {
        inner: DemandDispatcher::new(),
        armed: Arc::clone(&armed),
    };
    let p = stage::producer(Source::silent())
        .dispatcher(dispatcher)
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    emit(&p, vec![1, 2, 3]).await;
    assert_eq!(received(&c).await, vec![1, 2, 3]);
    armed.store(true, Ordering::SeqCst);
    p.cast(Msg::Stop(Reason::Normal)).unwrap();
    // Before: the stage's task died in its exit, and both ends reported a plain `Shutdown`.
    assert_panicked(within(p.join()).await, "the state broke");
    assert_panicked(within(c.join()).await, "the state broke");
}

/// Emits two events through its context, then panics before returning.
struct EmitsThenPanics;

impl Producer for EmitsThenPanics {
    type Out = u64;

    async fn handle_demand(&mut self, _: usize, ctx: &mut Context<Self>) -> Vec<u64> {
        ctx.emit(vec![1, 2]);
        panic!("the producer broke");
    }
}

#[tokio::test]
async fn events_emitted_by_a_handler_that_panics_are_counted_as_dropped() {
    let p = stage::producer(EmitsThenPanics).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    assert_panicked(within(p.join()).await, "the producer broke");
    assert!(matches!(within(c.join()).await, Reason::Panic(_)));
    let counters = p.final_counters().expect("exited");
    assert_eq!(counters.events_out, 0, "{counters:?}");
    assert_eq!(counters.dropped, 2, "{counters:?}");
}

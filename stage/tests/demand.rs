//! Automatic consumer demand and batching: spec §2.2 (rules 1–4 and the worked examples of
//! rule 3, including the §2.16 "ask 300, not 250" source-over-docs case) and the §1.4 defaults
//! of `max_demand` / `min_demand` as they show in batches and asks.
//!
//! The producer is a silent `Source`: it emits only what a test casts to it, and logs every
//! `handle_demand`, so each ask the consumer sends shows up as one `Demand(n)` entry.

mod support;

use std::sync::{Arc, Mutex};

use stage::{
    Consumer, Context, Contract, Dispatcher, DispatcherState, Outbox, SubscribeError,
    SubscribeOptions, SubscriptionId,
};
use support::{
    Ask, ConsumerHandle, Msg, ProducerHandle, Sink, Source, batch_sizes, batches_of, demand_log,
    events,
};
use tokio::sync::Semaphore;

/// A silent producer and an automatic consumer subscribed to it with `opts`.
async fn pair(
    opts: SubscribeOptions,
) -> (ProducerHandle<Source>, ConsumerHandle<Sink>, SubscriptionId) {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c.subscribe(&p, opts).await.unwrap();
    (p, c, id)
}

/// Barrier: what the producer was sent has been dispatched, the consumer has handled it and
/// sent its asks, and the producer has handled those asks.
async fn flow<S: Consumer>(p: &ProducerHandle<Source>, c: &ConsumerHandle<S>) {
    p.counters().await.unwrap();
    c.counters().await.unwrap();
    p.counters().await.unwrap();
}

#[tokio::test]
async fn subscription_starts_with_an_ask_of_max_demand() {
    let (p, c, id) = pair(SubscribeOptions::new().max_demand(40)).await;
    assert_eq!(demand_log(&p).await, [40]);
    let counters = c.counters().await.unwrap();
    assert_eq!(
        counters.producers,
        [(id, 40)],
        "initial credit is max_demand"
    );
}

#[tokio::test]
async fn defaults_max_1000_min_500_cut_1000_events_into_two_batches_each_asking_500() {
    let (p, c, id) = pair(SubscribeOptions::new()).await;
    assert_eq!(demand_log(&p).await, [1000]);
    p.cast(Msg::Emit((0..1000).collect())).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&log), [500, 500]);
    assert_eq!(batches_of(&log, id).concat(), (0..1000).collect::<Vec<_>>());
    assert_eq!(demand_log(&p).await, [500, 500]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 1000)]);
}

#[tokio::test]
async fn max_100_min_80_gives_batches_of_20_each_asking_20() {
    let (p, c, id) = pair(SubscribeOptions::new().max_demand(100).min_demand(80)).await;
    assert_eq!(demand_log(&p).await, [100]);
    p.cast(Msg::Emit((0..100).collect())).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&log), [20; 5]);
    assert_eq!(batches_of(&log, id).concat(), (0..100).collect::<Vec<_>>());
    assert_eq!(demand_log(&p).await, [20; 5]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 100)]);
}

#[tokio::test]
async fn max_100_min_20_asks_80_then_nothing_then_100_for_a_whole_80_batch() {
    let (p, c, id) = pair(SubscribeOptions::new().max_demand(100).min_demand(20)).await;
    assert_eq!(demand_log(&p).await, [100]);

    p.cast(Msg::Emit((0..100).collect())).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&log), [80, 20]);
    // [0..80) refills (diff 20 <= min) with 80; [80..100) leaves diff 80 > 20: no ask.
    assert_eq!(demand_log(&p).await, [80]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 80)]);

    p.cast(Msg::Emit((100..180).collect())).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batches_of(&log, id), [(100..180).collect::<Vec<_>>()]);
    // One batch of 80: diff 0, so it asks max - 0 = 100.
    assert_eq!(demand_log(&p).await, [100]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 100)]);
}

#[tokio::test]
async fn max_1000_min_750_third_100_event_message_asks_300_not_250() {
    let (p, c, id) = pair(SubscribeOptions::new().max_demand(1000).min_demand(750)).await;
    assert_eq!(demand_log(&p).await, [1000]);
    let mut asks_after = Vec::new();
    for k in 0..4u64 {
        p.cast(Msg::Emit((k * 100..(k + 1) * 100).collect()))
            .unwrap();
        flow(&p, &c).await;
        asks_after.push(demand_log(&p).await);
    }
    let expected: [Vec<usize>; 4] = [vec![], vec![], vec![300], vec![]];
    assert_eq!(asks_after, expected);
    let log = c.call(Ask::Log).await.unwrap();
    // Each 100-event message is a single batch (the batch limit is 250).
    assert_eq!(batch_sizes(&log), [100; 4]);
    assert_eq!(batches_of(&log, id).concat(), (0..400).collect::<Vec<_>>());
}

#[tokio::test]
async fn batches_are_cut_from_the_start_of_each_message_and_never_span_messages() {
    // Batch limit 10 - 4 = 6.
    let (p, c, _) = pair(SubscribeOptions::new().max_demand(10).min_demand(4)).await;
    assert_eq!(demand_log(&p).await, [10]);
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    flow(&p, &c).await;
    p.cast(Msg::Emit(vec![4, 5, 6, 7, 8, 9, 10])).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    // Not [3, 3, 4] or [6, 4]: the second message is cut 6 + 1 from its own start.
    assert_eq!(batch_sizes(&log), [3, 6, 1]);
    assert_eq!(events(&log), (1..=10).collect::<Vec<_>>());
    // [1,2,3]: credit 7 > 4, no ask. [4..=9]: 7 - 6 = 1 <= 4, ask 9. [10]: 9 > 4, no ask.
    assert_eq!(demand_log(&p).await, [9]);
}

#[tokio::test]
async fn small_messages_are_not_aggregated_into_bigger_batches() {
    let (p, c, _) = pair(SubscribeOptions::new()).await;
    assert_eq!(demand_log(&p).await, [1000]);
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.cast(Msg::Emit(vec![4, 5])).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&log), [3, 2]);
    assert_eq!(events(&log), [1, 2, 3, 4, 5]);
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
}

#[tokio::test]
async fn refill_happens_exactly_when_credit_reaches_min_demand() {
    // Batch limit 5; min 5. Messages of 4 then 1: the first leaves credit 6 (> 5), the second 5.
    let (p, c, id) = pair(SubscribeOptions::new().max_demand(10).min_demand(5)).await;
    assert_eq!(demand_log(&p).await, [10]);
    p.cast(Msg::Emit(vec![1, 2, 3, 4])).unwrap();
    flow(&p, &c).await;
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());
    assert_eq!(c.counters().await.unwrap().producers, [(id, 6)]);
    p.cast(Msg::Emit(vec![5])).unwrap();
    flow(&p, &c).await;
    assert_eq!(demand_log(&p).await, [5]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 10)]);
}

#[tokio::test]
async fn default_min_demand_is_half_of_max_rounded_down() {
    // max 7: min 3, batch limit 4.
    let (p, c, id) = pair(SubscribeOptions::new().max_demand(7)).await;
    assert_eq!(demand_log(&p).await, [7]);
    p.cast(Msg::Emit((0..7).collect())).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&log), [4, 3]);
    // [0..4): diff 3 <= 3, ask 4. [4..7): diff 4 > 3, no ask.
    assert_eq!(demand_log(&p).await, [4]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 4)]);
}

#[tokio::test]
async fn max_demand_1_means_min_0_one_event_at_a_time_with_an_ask_after_each() {
    let (p, c, id) = pair(SubscribeOptions::new().max_demand(1)).await;
    assert_eq!(demand_log(&p).await, [1]);
    p.cast(Msg::Emit(vec![10, 11, 12])).unwrap();
    for _ in 0..3 {
        flow(&p, &c).await;
    }
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batches_of(&log, id), [vec![10], vec![11], vec![12]]);
    // Three asks of 1 reached the producer: two drained the buffer, the third found it empty
    // and went to handle_demand.
    assert_eq!(demand_log(&p).await, [1]);
    let pc = p.counters().await.unwrap();
    assert_eq!(pc.buffered, 0);
    assert_eq!(pc.consumers, [(id, 1)]);
}

/// A consumer whose `handle_events` waits for a permit after recording the batch size.
struct Gated {
    gate: Arc<Semaphore>,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Consumer for Gated {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        self.batches.lock().unwrap().push(events.len());
        self.gate.acquire().await.unwrap().forget();
    }
}

#[tokio::test]
async fn ask_is_sent_only_after_the_batch_has_been_handled() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let batches = Arc::new(Mutex::new(Vec::new()));
    let gated = Gated {
        gate: Arc::clone(&gate),
        batches: Arc::clone(&batches),
    };
    let c = stage::consumer(gated).start().unwrap();
    c.subscribe(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .await
        .unwrap();
    assert_eq!(demand_log(&p).await, [10]);

    p.cast(Msg::Emit((0..10).collect())).unwrap();
    support::settle().await;
    assert_eq!(
        *batches.lock().unwrap(),
        [5],
        "first batch is being handled"
    );
    assert_eq!(
        demand_log(&p).await,
        Vec::<usize>::new(),
        "no ask while the batch is still in handle_events"
    );

    gate.add_permits(1);
    support::settle().await;
    assert_eq!(*batches.lock().unwrap(), [5, 5]);
    assert_eq!(
        demand_log(&p).await,
        [5],
        "first batch done: its ask went out"
    );

    gate.add_permits(1);
    support::settle().await;
    assert_eq!(
        demand_log(&p).await,
        [5],
        "second batch done: its ask went out"
    );
}

#[tokio::test]
async fn ask_for_a_single_batch_message_is_sent_only_after_it_has_been_handled() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let batches = Arc::new(Mutex::new(Vec::new()));
    let gated = Gated {
        gate: Arc::clone(&gate),
        batches: Arc::clone(&batches),
    };
    let c = stage::consumer(gated).start().unwrap();
    c.subscribe(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .await
        .unwrap();
    assert_eq!(demand_log(&p).await, [10]);

    // Five events: one batch that brings the credit to min, so it refills with 5.
    p.cast(Msg::Emit((0..5).collect())).unwrap();
    support::settle().await;
    assert_eq!(*batches.lock().unwrap(), [5]);
    assert_eq!(demand_log(&p).await, Vec::<usize>::new());

    gate.add_permits(1);
    support::settle().await;
    assert_eq!(demand_log(&p).await, [5]);
}

/// A dispatcher that ignores demand and sends everything to its first consumer, to make a
/// producer send more than was asked for.
#[derive(Default)]
struct Greedy {
    consumers: Vec<SubscriptionId>,
}

impl Dispatcher<u64> for Greedy {
    fn contract(&self) -> Contract {
        Contract::Any
    }

    fn subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Outbox<u64>,
    ) -> Result<(), SubscribeError> {
        self.consumers.push(id);
        Ok(())
    }

    fn cancel(&mut self, id: SubscriptionId, returned: Vec<u64>, _: &mut Outbox<u64>) -> Vec<u64> {
        self.consumers.retain(|c| *c != id);
        returned
    }

    fn ask(&mut self, _: SubscriptionId, n: usize, out: &mut Outbox<u64>) {
        out.demand(n);
    }

    fn capacity(&self) -> usize {
        0
    }

    fn dispatch(&mut self, events: Vec<u64>, out: &mut Outbox<u64>) -> Vec<u64> {
        match self.consumers.first() {
            Some(&id) => {
                out.send(id, events);
                Vec::new()
            }
            None => events,
        }
    }

    fn hold(&mut self, _: u64) -> bool {
        false
    }

    fn state(&self) -> DispatcherState {
        DispatcherState::default()
    }
}

#[tokio::test]
async fn events_in_excess_of_demand_are_still_handled_but_only_real_credit_counts() {
    let p = stage::producer(Source::silent())
        .dispatcher(Greedy::default())
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c
        .subscribe(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .await
        .unwrap();
    assert_eq!(demand_log(&p).await, [10]);

    // 12 events against a credit of 10: batches 5, 5, 2.
    p.cast(Msg::Emit((0..12).collect())).unwrap();
    flow(&p, &c).await;
    let log = c.call(Ask::Log).await.unwrap();
    assert_eq!(batch_sizes(&log), [5, 5, 2]);
    assert_eq!(batches_of(&log, id).concat(), (0..12).collect::<Vec<_>>());
    // Batches 1 and 2 each refill with 5. Batch 3 is all excess: it counts as 0, leaving the
    // refilled credit of 10 (> min), so no ask; credit never goes negative.
    assert_eq!(demand_log(&p).await, [5, 5]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 10)]);
}

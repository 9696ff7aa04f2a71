//! Subscription lifecycle: spec §2.1 (rules 1, 2, 6, 7, 8 and 9; rules 3–5 are about raw
//! protocol messages the typed Rust API cannot send), the §1.4 subscription options and their
//! validation, the §1.3 `buffer_size` edge case, and §2.16's note that the consumer's
//! `handle_subscribe` has already run when a synchronous subscribe returns.
//!
//! Where the crate deliberately differs (stage/src/lib.rs, "Differences from GenStage"), the
//! crate's documented behaviour is asserted: invalid options are rejected with an
//! [`OptionError`] naming the option (not logged and skipped), subscribing to a stopped producer
//! returns [`SubscribeError::ProducerClosed`] (not `{:ok, ref}`), a refused subscription never
//! stops the consumer, and a buffer size of 0 means "no buffer".

mod support;

use std::sync::{Arc, Mutex};

use stage::{
    Cancel, CancelMode, Consumer, Context, Contract, Dispatcher, DispatcherState, OptionError,
    Outbox, Reason, StartError, SubscribeError, SubscribeOptions, SubscriptionId, SubscriptionMode,
};
use support::{Ask, Msg, Peer, Seen, Sink, Source, Through, batches_of, demands, events};

/// A producer that has already exited.
async fn stopped_producer() -> support::ProducerHandle<Source> {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.stop(Reason::Normal).unwrap();
    assert_eq!(p.join().await, Reason::Normal);
    assert!(!p.is_running());
    p
}

/// Which way a subscription ended, for building expected cancels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CancelKind {
    Cancel,
    Down,
}

fn cancelled(kind: CancelKind, reason: Reason) -> Cancel {
    match kind {
        CancelKind::Cancel => Cancel::Cancelled(reason),
        CancelKind::Down => Cancel::Down(reason),
    }
}

// ----- rule 1: the consumer side of subscribe -----

/// Records, outside the stage, the ids its `handle_subscribe` saw.
struct Witness {
    seen: Arc<Mutex<Vec<SubscriptionId>>>,
}

impl Consumer for Witness {
    type In = u64;

    async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {}

    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) -> SubscriptionMode {
        self.seen.lock().unwrap().push(id);
        SubscriptionMode::Automatic
    }
}

#[tokio::test]
async fn consumer_handle_subscribe_has_run_when_subscribe_returns() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let c = stage::consumer(Witness {
        seen: Arc::clone(&seen),
    })
    .start()
    .unwrap();
    let id = c.subscribe(&p, SubscribeOptions::new()).await.unwrap();
    // Checked without yielding to the stages: it ran before the reply.
    assert_eq!(*seen.lock().unwrap(), [id]);
}

#[tokio::test]
async fn both_sides_see_the_subscription_id_that_subscribe_returns() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c.subscribe(&p, SubscribeOptions::new()).await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(clog, [Seen::Subscribed(Peer::Producer, id)]);
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(plog[0], Seen::Subscribed(Peer::Consumer, id));
}

#[tokio::test]
async fn automatic_subscription_asks_max_demand_immediately() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c
        .subscribe(&p, SubscribeOptions::new().max_demand(25))
        .await
        .unwrap();
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(
        plog,
        [Seen::Subscribed(Peer::Consumer, id), Seen::Demand(25)]
    );
    assert_eq!(p.counters().await.unwrap().consumers, [(id, 25)]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 25)]);
}

#[tokio::test]
async fn subscribe_to_at_start_subscribes_and_asks_max_demand() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().max_demand(8))
        .start()
        .unwrap();
    // The consumer subscribes before it reads its mailbox, so this call follows the ask.
    let clog = c.call(Ask::Log).await.unwrap();
    let [Seen::Subscribed(Peer::Producer, id)] = clog[..] else {
        panic!("expected one subscription, got {clog:?}");
    };
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(
        plog,
        [Seen::Subscribed(Peer::Consumer, id), Seen::Demand(8)]
    );
}

#[tokio::test]
async fn subscribing_to_a_stopped_producer_permanent_fails_and_stops_consumer_with_noproc() {
    let p = stopped_producer().await;
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().cancel(CancelMode::Permanent);
    assert_eq!(
        c.subscribe(&p, opts).await,
        Err(SubscribeError::ProducerClosed)
    );
    assert_eq!(c.join().await, Reason::NoProc);
}

#[tokio::test]
async fn subscribing_to_a_stopped_producer_transient_fails_and_stops_consumer_with_noproc() {
    let p = stopped_producer().await;
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().cancel(CancelMode::Transient);
    assert_eq!(
        c.subscribe(&p, opts).await,
        Err(SubscribeError::ProducerClosed)
    );
    assert_eq!(c.join().await, Reason::NoProc);
}

#[tokio::test]
async fn subscribing_to_a_stopped_producer_temporary_fails_quietly_and_consumer_keeps_running() {
    let p = stopped_producer().await;
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().cancel(CancelMode::Temporary);
    assert_eq!(
        c.subscribe(&p, opts).await,
        Err(SubscribeError::ProducerClosed)
    );
    // Still running, nothing recorded, no handler called.
    assert_eq!(c.call(Ask::Log).await.unwrap(), []);
    assert!(c.counters().await.unwrap().producers.is_empty());
    assert!(c.is_running());
}

#[tokio::test]
async fn subscribing_a_stopped_consumer_returns_consumer_closed() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    c.stop(Reason::Normal).unwrap();
    assert_eq!(c.join().await, Reason::Normal);
    assert_eq!(
        c.subscribe(&p, SubscribeOptions::new()).await,
        Err(SubscribeError::ConsumerClosed)
    );
    assert_eq!(p.call(Ask::Log).await.unwrap(), [], "producer saw nothing");
}

// ----- rule 9: subscribe_to at start -----

#[tokio::test]
async fn start_with_a_stopped_producer_permanent_fails_with_producer_closed() {
    let p = stopped_producer().await;
    let err = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Permanent))
        .start()
        .unwrap_err();
    assert_eq!(err, StartError::ProducerClosed);
}

#[tokio::test]
async fn start_with_a_stopped_producer_transient_fails_with_producer_closed() {
    let p = stopped_producer().await;
    let err = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().cancel(CancelMode::Transient))
        .start()
        .unwrap_err();
    assert_eq!(err, StartError::ProducerClosed);
}

#[tokio::test]
async fn start_with_a_stopped_producer_temporary_succeeds_and_skips_it() {
    let dead = stopped_producer().await;
    let live = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&dead, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .subscribe_to(&live, SubscribeOptions::new().max_demand(3))
        .start()
        .unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(
        clog.len(),
        1,
        "only the live producer was subscribed: {clog:?}"
    );
    let Seen::Subscribed(Peer::Producer, id) = clog[0] else {
        panic!("expected a subscription, got {clog:?}");
    };
    assert_eq!(c.counters().await.unwrap().producers, [(id, 3)]);
    assert!(c.is_running());
}

#[tokio::test]
async fn start_with_an_invalid_subscription_option_fails_naming_the_option() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let err = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().max_demand(5))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(0))
        .start()
        .unwrap_err();
    let StartError::Option(OptionError { option, value, .. }) = err else {
        panic!("expected an option error, got {err:?}");
    };
    assert_eq!((option, value.as_str()), ("max_demand", "0"));
    // Nothing was subscribed, not even the valid entry.
    support::settle().await;
    assert_eq!(p.call(Ask::Log).await.unwrap(), []);
}

#[tokio::test]
async fn start_with_min_demand_not_below_max_fails_naming_min_demand() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let err = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(10))
        .start()
        .unwrap_err();
    assert!(
        matches!(&err, StartError::Option(e) if e.option == "min_demand"),
        "{err:?}"
    );
}

// ----- §1.4: subscription options -----

#[tokio::test]
async fn max_demand_zero_is_rejected_with_an_option_error_naming_max_demand() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let err = c
        .subscribe(&p, SubscribeOptions::new().max_demand(0))
        .await
        .unwrap_err();
    let SubscribeError::Option(e) = &err else {
        panic!("expected an option error, got {err:?}");
    };
    assert_eq!(e.option, "max_demand");
    assert_eq!(e.value, "0");
    assert!(err.to_string().contains("max_demand"), "{err}");
    // The consumer keeps running and the producer never heard of it.
    assert!(c.is_running());
    assert_eq!(c.call(Ask::Log).await.unwrap(), []);
    assert_eq!(p.call(Ask::Log).await.unwrap(), []);
}

#[tokio::test]
async fn min_demand_equal_to_or_above_max_is_rejected_naming_min_demand() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    for (max, min) in [(10, 10), (10, 2000), (1, 1)] {
        let opts = SubscribeOptions::new().max_demand(max).min_demand(min);
        let err = c.subscribe(&p, opts).await.unwrap_err();
        let SubscribeError::Option(e) = &err else {
            panic!("expected an option error for {max}/{min}, got {err:?}");
        };
        assert_eq!(e.option, "min_demand", "{max}/{min}");
        assert_eq!(e.value, min.to_string());
    }
    // The default max 1000 bounds an explicit min too.
    let err = c
        .subscribe(&p, SubscribeOptions::new().min_demand(1000))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SubscribeError::Option(e) if e.option == "min_demand"),
        "{err:?}"
    );
    assert!(c.is_running());
    assert_eq!(p.call(Ask::Log).await.unwrap(), []);
}

#[tokio::test]
async fn options_are_validated_before_the_producer_is_looked_up() {
    // A permanent subscription to a stopped producer with a bad option: the option error wins
    // and the consumer does not stop.
    let p = stopped_producer().await;
    let c = stage::consumer(Sink::new()).start().unwrap();
    let err = c
        .subscribe(&p, SubscribeOptions::new().max_demand(0))
        .await
        .unwrap_err();
    assert!(matches!(err, SubscribeError::Option(_)), "{err:?}");
    assert_eq!(c.call(Ask::Log).await.unwrap(), []);
    assert!(c.is_running());
}

#[test]
fn default_limits_are_max_1000_and_min_half_of_max() {
    assert_eq!(SubscribeOptions::new().limits(), Ok((1000, 500)));
    assert_eq!(SubscribeOptions::new().max_demand(1).limits(), Ok((1, 0)));
    assert_eq!(SubscribeOptions::new().max_demand(9).limits(), Ok((9, 4)));
    assert_eq!(
        SubscribeOptions::new().max_demand(9).min_demand(0).limits(),
        Ok((9, 0))
    );
    assert_eq!(
        SubscribeOptions::new().max_demand(9).min_demand(8).limits(),
        Ok((9, 8))
    );
    assert_eq!(
        SubscribeOptions::new().cancel_mode(),
        CancelMode::Permanent,
        "the default cancel mode is permanent"
    );
}

#[tokio::test]
async fn minimal_valid_limits_max_1_min_0_are_accepted() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c
        .subscribe(&p, SubscribeOptions::new().max_demand(1).min_demand(0))
        .await
        .unwrap();
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), [1]);
    assert_eq!(c.counters().await.unwrap().producers, [(id, 1)]);
}

// ----- §1.3: buffer_size 0 -----

#[tokio::test]
async fn buffer_size_zero_is_accepted_and_means_no_buffer() {
    let p = stage::producer(Source::silent())
        .buffer_size(0)
        .start()
        .unwrap();
    // No consumer: nothing can be dispatched, nothing is kept.
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (0, 3));
    // A consumer that subscribes later receives none of them, only what is emitted with demand.
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c
        .subscribe(&p, SubscribeOptions::new().max_demand(5))
        .await
        .unwrap();
    p.cast(Msg::Emit(vec![4, 5])).unwrap();
    p.counters().await.unwrap();
    assert_eq!(
        batches_of(&c.call(Ask::Log).await.unwrap(), id),
        [vec![4, 5]]
    );
}

// ----- rule 2: the producer side of subscribe -----

/// A dispatcher that refuses every subscription.
struct Refuse;

impl Dispatcher<u64> for Refuse {
    fn contract(&self) -> Contract {
        Contract::Any
    }

    fn subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Outbox<u64>,
    ) -> Result<(), SubscribeError> {
        Err(SubscribeError::Rejected("no consumers wanted".into()))
    }

    fn cancel(&mut self, _: SubscriptionId, returned: Vec<u64>, _: &mut Outbox<u64>) -> Vec<u64> {
        returned
    }

    fn ask(&mut self, _: SubscriptionId, _: usize, _: &mut Outbox<u64>) {}

    fn capacity(&self) -> usize {
        0
    }

    fn dispatch(&mut self, events: Vec<u64>, _: &mut Outbox<u64>) -> Vec<u64> {
        events
    }

    fn hold(&mut self, _: u64) -> bool {
        false
    }

    fn state(&self) -> DispatcherState {
        DispatcherState::default()
    }
}

#[tokio::test]
async fn dispatcher_refusal_is_a_producer_cancel_that_never_stops_the_consumer() {
    let p = stage::producer(Source::silent())
        .dispatcher(Refuse)
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().cancel(CancelMode::Permanent);
    let err = c.subscribe(&p, opts).await.unwrap_err();
    assert_eq!(
        err,
        SubscribeError::Rejected("no consumers wanted".into()),
        "{err}"
    );
    let clog = c.call(Ask::Log).await.unwrap();
    let [
        Seen::Subscribed(Peer::Producer, id),
        Seen::Cancelled(Peer::Producer, ref cancel, cid),
    ] = clog[..]
    else {
        panic!("expected subscribe then cancel, got {clog:?}");
    };
    assert_eq!(id, cid);
    assert!(!cancel.is_down(), "a cancel, not a down: {cancel:?}");
    assert!(matches!(cancel.reason(), Reason::Rejected(_)), "{cancel:?}");
    support::settle().await;
    assert!(
        c.is_running(),
        "a refused permanent subscription does not stop the consumer"
    );
    assert!(c.counters().await.unwrap().producers.is_empty());
    // The producer never accepted it: no handle_subscribe, no demand.
    assert_eq!(p.call(Ask::Log).await.unwrap(), []);
}

#[tokio::test]
async fn producer_consumer_handle_subscribe_sees_both_peers() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let t = stage::producer_consumer(Through::forwarder())
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let up = t.subscribe(&p, SubscribeOptions::new()).await.unwrap();
    let down = c.subscribe(&t, SubscribeOptions::new()).await.unwrap();
    assert_ne!(up, down);
    let tlog = t.call(Ask::Log).await.unwrap();
    assert_eq!(
        tlog,
        [
            Seen::Subscribed(Peer::Producer, up),
            Seen::Subscribed(Peer::Consumer, down)
        ]
    );
}

// ----- rule 6: a peer's exit becomes a cancel of kind Down -----

#[tokio::test]
async fn producer_exit_reaches_consumer_as_a_down_cancel_with_its_reason() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let id = c.subscribe(&p, opts).await.unwrap();
    p.stop(Reason::error("boom")).unwrap();
    assert_eq!(p.join().await, Reason::error("boom"));
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(
        clog.last(),
        Some(&Seen::Cancelled(
            Peer::Producer,
            cancelled(CancelKind::Down, Reason::error("boom")),
            id
        ))
    );
    assert!(c.is_running(), "temporary");
    assert!(c.counters().await.unwrap().producers.is_empty());
}

#[tokio::test]
async fn consumer_exit_reaches_producer_as_a_down_cancel_and_producer_keeps_running() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id = c.subscribe(&p, SubscribeOptions::new()).await.unwrap();
    c.stop(Reason::Shutdown).unwrap();
    assert_eq!(c.join().await, Reason::Shutdown);
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(
        plog.last(),
        Some(&Seen::Cancelled(
            Peer::Consumer,
            cancelled(CancelKind::Down, Reason::Shutdown),
            id
        ))
    );
    assert!(p.is_running());
    assert!(p.counters().await.unwrap().consumers.is_empty());
}

// ----- rule 7: several producers -----

#[tokio::test]
async fn several_producers_get_their_own_demand_and_batching() {
    let p1 = stage::producer(Source::silent()).start().unwrap();
    let p2 = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id1 = c
        .subscribe(&p1, SubscribeOptions::new().max_demand(10).min_demand(5))
        .await
        .unwrap();
    let id2 = c
        .subscribe(&p2, SubscribeOptions::new().max_demand(4).min_demand(2))
        .await
        .unwrap();
    assert_ne!(id1, id2);
    assert_eq!(demands(&p1.call(Ask::Log).await.unwrap()), [10]);
    assert_eq!(demands(&p2.call(Ask::Log).await.unwrap()), [4]);

    p1.cast(Msg::Emit((0..10).collect())).unwrap();
    p2.cast(Msg::Emit((100..104).collect())).unwrap();
    p1.counters().await.unwrap();
    p2.counters().await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(
        batches_of(&clog, id1),
        [vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9]]
    );
    assert_eq!(batches_of(&clog, id2), [vec![100, 101], vec![102, 103]]);
    // Each refill goes to the producer whose events were handled.
    assert_eq!(demands(&p1.call(Ask::Log).await.unwrap()), [5, 5]);
    assert_eq!(demands(&p2.call(Ask::Log).await.unwrap()), [2, 2]);
    let mut expected = vec![(id1, 10), (id2, 4)];
    expected.sort();
    assert_eq!(c.counters().await.unwrap().producers, expected);
}

#[tokio::test]
async fn several_producers_each_apply_their_own_cancel_mode() {
    let p1 = stage::producer(Source::silent()).start().unwrap();
    let p2 = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let id1 = c
        .subscribe(&p1, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .await
        .unwrap();
    let id2 = c
        .subscribe(&p2, SubscribeOptions::new().cancel(CancelMode::Permanent))
        .await
        .unwrap();

    p1.stop(Reason::error("boom")).unwrap();
    p1.join().await;
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(
        clog.last(),
        Some(&Seen::Cancelled(
            Peer::Producer,
            cancelled(CancelKind::Down, Reason::error("boom")),
            id1
        ))
    );
    assert!(
        c.is_running(),
        "the temporary subscription's abnormal end is survived"
    );
    assert_eq!(c.counters().await.unwrap().producers, [(id2, 1000)]);

    p2.stop(Reason::Normal).unwrap();
    assert_eq!(
        c.join().await,
        Reason::Normal,
        "the permanent subscription stops the consumer"
    );
}

// ----- rule 8: the same producer twice -----

#[tokio::test]
async fn same_producer_twice_gives_two_independent_subscriptions() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new().max_demand(5);
    let id1 = c.subscribe(&p, opts.clone()).await.unwrap();
    let id2 = c.subscribe(&p, opts).await.unwrap();
    assert_ne!(id1, id2);
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(
        plog,
        [
            Seen::Subscribed(Peer::Consumer, id1),
            Seen::Demand(5),
            Seen::Subscribed(Peer::Consumer, id2),
            Seen::Demand(5),
        ]
    );
    let mut expected = vec![(id1, 5), (id2, 5)];
    expected.sort();
    assert_eq!(p.counters().await.unwrap().consumers, expected);

    p.cast(Msg::Emit((1..=10).collect())).unwrap();
    p.counters().await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    let (b1, b2) = (batches_of(&clog, id1), batches_of(&clog, id2));
    assert_eq!(b1.concat().len(), 5, "{clog:?}");
    assert_eq!(b2.concat().len(), 5, "{clog:?}");
    let mut all = events(&clog);
    all.sort();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn cancelling_one_of_two_subscriptions_to_a_producer_keeps_the_other() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Sink::new()).start().unwrap();
    let opts = SubscribeOptions::new()
        .max_demand(5)
        .cancel(CancelMode::Temporary);
    let id1 = c.subscribe(&p, opts.clone()).await.unwrap();
    let id2 = c.subscribe(&p, opts).await.unwrap();
    c.call(Ask::Log).await.unwrap();
    p.call(Ask::Log).await.unwrap();

    c.cancel(id1, Reason::Normal).unwrap();
    c.counters().await.unwrap();
    p.counters().await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(
        clog,
        [Seen::Cancelled(
            Peer::Producer,
            cancelled(CancelKind::Cancel, Reason::Normal),
            id1
        )]
    );
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(
        plog,
        [Seen::Cancelled(
            Peer::Consumer,
            cancelled(CancelKind::Cancel, Reason::Normal),
            id1
        )]
    );
    assert_eq!(p.counters().await.unwrap().consumers, [(id2, 5)]);

    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.counters().await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(clog, [Seen::Events(id2, vec![1, 2, 3])]);
    assert!(c.is_running());
}

/// A consumer that is shutting down refuses new subscriptions, so that none keeps its shutdown
/// from completing.
#[tokio::test]
async fn a_subscription_made_during_a_shutdown_does_not_keep_the_stage_alive() {
    tokio::time::pause();
    let p1 = stage::producer(support::Source::silent()).start().unwrap();
    let p2 = stage::producer(support::Source::silent()).start().unwrap();
    let c = stage::consumer(support::Sink::new())
        .subscribe_to(&p1, stage::SubscribeOptions::new())
        .start()
        .unwrap();
    support::settle().await;
    c.shutdown().unwrap();
    let late = c.subscribe(&p2, stage::SubscribeOptions::new()).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), c.join()).await;
    assert!(
        ended.is_ok(),
        "shutdown never completed (late subscribe: {late:?}): {:?}",
        c.counters().await
    );
}

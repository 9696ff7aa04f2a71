//! GenStage §2.11, cancellation, termination and cancel modes: permanent / transient /
//! temporary consumers facing normal and abnormal reasons, both as a cancel and as a producer
//! exit (Down); `handle_cancel` runs first (and its own stop wins); events in flight are processed
//! before the Down; producers never exit because a consumer left; a refused subscription never
//! stops the consumer; shutdown propagates downstream through a producer-consumer once its queued
//! cancel is reached; a panicking handler in any stage kind ends that stage with
//! `Reason::Panic`, its consumers act on their cancel mode, and calls to it fail with a
//! `CallError` instead of hanging.

mod support;

use std::sync::{Arc, Mutex};

use stage::{
    Call, CallError, Cancel, CancelMode, Cast, Consumer, Context, Contract, DemandDispatcher,
    Dispatcher, DispatcherState, Outbox, Producer, Reason, ReplyTo, SubscribeError,
    SubscribeOptions, SubscriptionId,
};
use support::{
    Ask, ConsumerHandle, Msg, Peer, ProducerHandle, Seen, Sink, Source, Through, events, settle,
    within,
};

/// What a [`Recorder`] saw, kept outside the stage so it can be read after the stage exits.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    Events(Vec<u64>),
    Cancelled(Cancel),
    Terminated(Reason),
}

type Journal = Arc<Mutex<Vec<Entry>>>;

fn read(journal: &Journal) -> Vec<Entry> {
    journal.lock().unwrap().clone()
}

/// A consumer that journals events, cancels and its own termination.
#[derive(Debug, Default)]
struct Recorder {
    journal: Journal,
    /// `handle_cancel` stops the stage with this reason.
    stop_in_cancel: Option<Reason>,
    /// `handle_events` panics with "consumer boom".
    panic_on_events: bool,
}

impl Consumer for Recorder {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        if self.panic_on_events {
            panic!("consumer boom");
        }
        self.journal.lock().unwrap().push(Entry::Events(events));
    }

    async fn handle_cancel(&mut self, cancel: Cancel, _: SubscriptionId, ctx: &mut Context<Self>) {
        self.journal.lock().unwrap().push(Entry::Cancelled(cancel));
        if let Some(reason) = self.stop_in_cancel.clone() {
            ctx.stop(reason);
        }
    }

    async fn terminate(&mut self, reason: &Reason) {
        self.journal
            .lock()
            .unwrap()
            .push(Entry::Terminated(reason.clone()));
    }
}

impl Call<()> for Recorder {
    type Reply = ();

    async fn handle_call(&mut self, _: (), reply: ReplyTo<()>, _: &mut Context<Self>) {
        reply.send(());
    }
}

/// Starts a recorder subscribed to `p` with `mode`.
async fn recorder(
    p: &ProducerHandle<impl Producer<Out = u64>>,
    mode: CancelMode,
    stage: Recorder,
) -> (ConsumerHandle<Recorder>, SubscriptionId, Journal) {
    let journal = Arc::clone(&stage.journal);
    let c = stage::consumer(stage).start().unwrap();
    let id = within(c.subscribe(p, SubscribeOptions::new().cancel(mode)))
        .await
        .unwrap();
    settle().await;
    (c, id, journal)
}

/// Which way a subscription ended, for building expected cancels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CancelKind {
    Cancel,
    Down,
}

fn cancel(kind: CancelKind, reason: Reason) -> Cancel {
    match kind {
        CancelKind::Cancel => Cancel::Cancelled(reason),
        CancelKind::Down => Cancel::Down(reason),
    }
}

/// A producer that emits what it is told and panics on request, in a cast or in a call.
#[derive(Debug, Default)]
struct Fragile;

#[derive(Debug)]
enum Order {
    Emit(Vec<u64>),
    Panic,
}

impl Producer for Fragile {
    type Out = u64;

    async fn handle_demand(&mut self, _: usize, _: &mut Context<Self>) -> Vec<u64> {
        Vec::new()
    }
}

impl Call<Order> for Fragile {
    type Reply = ();

    async fn handle_call(&mut self, order: Order, reply: ReplyTo<()>, ctx: &mut Context<Self>) {
        self.handle_cast(order, ctx).await;
        reply.send(());
    }
}

impl Cast<Order> for Fragile {
    async fn handle_cast(&mut self, order: Order, ctx: &mut Context<Self>) {
        match order {
            Order::Emit(events) => ctx.emit(events),
            Order::Panic => panic!("producer boom"),
        }
    }
}

fn boom() -> Reason {
    Reason::error("boom")
}

/// Ends the subscription `id` from the producer's side, as a cancel or by exiting.
fn end(p: &ProducerHandle<Source>, id: SubscriptionId, kind: CancelKind, reason: Reason) {
    match kind {
        CancelKind::Cancel => p.cancel(id, reason).unwrap(),
        CancelKind::Down => p.stop(reason).unwrap(),
    }
}

const REASONS: [fn() -> Reason; 3] = [|| Reason::Normal, || Reason::Shutdown, boom];
const KINDS: [CancelKind; 2] = [CancelKind::Cancel, CancelKind::Down];

/// Runs one producer-side end against a consumer subscribed with `mode` and checks whether the
/// consumer exits, after running `handle_cancel` first.
async fn check_mode(mode: CancelMode, kind: CancelKind, reason: Reason, exits: bool) {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id, journal) = recorder(&p, mode, Recorder::default()).await;
    end(&p, id, kind, reason.clone());
    let what = format!("{mode:?} consumer, {kind:?} with {reason:?}");
    if exits {
        assert_eq!(within(c.join()).await, reason, "{what}");
        assert_eq!(
            read(&journal),
            vec![
                Entry::Cancelled(cancel(kind, reason.clone())),
                Entry::Terminated(reason)
            ],
            "{what}: handle_cancel runs before the exit"
        );
    } else {
        settle().await;
        assert!(c.is_running(), "{what}: must survive");
        assert_eq!(within(c.call(())).await, Ok(()), "{what}");
        assert_eq!(
            read(&journal),
            vec![Entry::Cancelled(cancel(kind, reason))],
            "{what}"
        );
    }
}

// ----- rule 1: cancel modes -----

#[tokio::test]
async fn rule1_permanent_consumer_exits_with_the_producers_reason_whatever_it_is() {
    for kind in KINDS {
        for reason in REASONS {
            check_mode(CancelMode::Permanent, kind, reason(), true).await;
        }
    }
}

#[tokio::test]
async fn rule1_transient_consumer_exits_only_on_an_abnormal_reason() {
    for kind in KINDS {
        check_mode(CancelMode::Transient, kind, Reason::Normal, false).await;
        check_mode(CancelMode::Transient, kind, Reason::Shutdown, false).await;
        check_mode(CancelMode::Transient, kind, boom(), true).await;
    }
}

#[tokio::test]
async fn rule1_temporary_consumer_never_exits() {
    for kind in KINDS {
        for reason in REASONS {
            check_mode(CancelMode::Temporary, kind, reason(), false).await;
        }
    }
}

#[tokio::test]
async fn rule1_consumer_side_cancel_comes_back_as_a_cancel_and_the_mode_applies() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (perm, perm_id, perm_journal) =
        recorder(&p, CancelMode::Permanent, Recorder::default()).await;
    let (temp, temp_id, temp_journal) =
        recorder(&p, CancelMode::Temporary, Recorder::default()).await;
    perm.cancel(perm_id, Reason::Normal).unwrap();
    temp.cancel(temp_id, boom()).unwrap();
    assert_eq!(within(perm.join()).await, Reason::Normal);
    assert_eq!(
        read(&perm_journal),
        vec![
            Entry::Cancelled(cancel(CancelKind::Cancel, Reason::Normal)),
            Entry::Terminated(Reason::Normal)
        ]
    );
    settle().await;
    assert!(temp.is_running());
    assert_eq!(
        read(&temp_journal),
        vec![Entry::Cancelled(cancel(CancelKind::Cancel, boom()))]
    );
}

#[tokio::test]
async fn rule1_handle_cancel_runs_first_and_a_stop_it_asks_for_wins() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let stops = |reason| Recorder {
        stop_in_cancel: Some(reason),
        ..Recorder::default()
    };
    let (perm, _, perm_journal) =
        recorder(&p, CancelMode::Permanent, stops(Reason::error("mine"))).await;
    let (temp, _, temp_journal) =
        recorder(&p, CancelMode::Temporary, stops(Reason::Shutdown)).await;
    p.stop(boom()).unwrap();
    assert_eq!(within(perm.join()).await, Reason::error("mine"));
    assert_eq!(within(temp.join()).await, Reason::Shutdown);
    assert_eq!(
        read(&perm_journal),
        vec![
            Entry::Cancelled(cancel(CancelKind::Down, boom())),
            Entry::Terminated(Reason::error("mine"))
        ]
    );
    assert_eq!(
        read(&temp_journal),
        vec![
            Entry::Cancelled(cancel(CancelKind::Down, boom())),
            Entry::Terminated(Reason::Shutdown)
        ]
    );
}

// ----- rule 2: events in flight -----

#[tokio::test]
async fn rule2_events_in_flight_are_processed_before_the_down() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, _, journal) = recorder(&p, CancelMode::Permanent, Recorder::default()).await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.cast(Msg::Emit(vec![4])).unwrap();
    p.cast(Msg::Stop(boom())).unwrap();
    assert_eq!(within(c.join()).await, boom());
    assert_eq!(
        read(&journal),
        vec![
            Entry::Events(vec![1, 2, 3]),
            Entry::Events(vec![4]),
            Entry::Cancelled(cancel(CancelKind::Down, boom())),
            Entry::Terminated(boom())
        ]
    );
}

// ----- rule 3: producers never exit because a consumer left -----

#[tokio::test]
async fn rule3_a_producer_outlives_consumers_that_cancel_stop_or_panic() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (a, a_id, _) = recorder(&p, CancelMode::Temporary, Recorder::default()).await;
    let (b, _, _) = recorder(&p, CancelMode::Permanent, Recorder::default()).await;
    let (c, _, _) = recorder(
        &p,
        CancelMode::Permanent,
        Recorder {
            panic_on_events: true,
            ..Recorder::default()
        },
    )
    .await;
    p.call(Ask::Log).await.unwrap();

    a.cancel(a_id, Reason::error("bye")).unwrap();
    b.stop(boom()).unwrap();
    assert_eq!(within(b.join()).await, boom());
    p.cast(Msg::Emit(vec![1])).unwrap();
    assert_eq!(
        within(c.join()).await,
        Reason::Panic("consumer boom".into())
    );
    settle().await;

    assert!(p.is_running());
    let cancels: Vec<Cancel> = within(p.call(Ask::Log))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Cancelled(Peer::Consumer, cancel, _) => Some(cancel),
            _ => None,
        })
        .collect();
    assert_eq!(
        cancels,
        vec![
            cancel(CancelKind::Cancel, Reason::error("bye")),
            cancel(CancelKind::Down, boom()),
            cancel(CancelKind::Down, Reason::Panic("consumer boom".into())),
        ]
    );
    assert!(p.counters().await.unwrap().consumers.is_empty());
}

// ----- rule 5: a refused subscription never stops the consumer -----

/// A dispatcher that refuses every subscription.
struct Refuse(DemandDispatcher<u64>);

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
        Err(SubscribeError::Rejected("full".into()))
    }
    fn cancel(
        &mut self,
        id: SubscriptionId,
        returned: Vec<u64>,
        out: &mut Outbox<u64>,
    ) -> Vec<u64> {
        self.0.cancel(id, returned, out)
    }
    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<u64>) {
        self.0.ask(id, n, out)
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn dispatch(&mut self, events: Vec<u64>, out: &mut Outbox<u64>) -> Vec<u64> {
        self.0.dispatch(events, out)
    }
    fn hold(&mut self, token: u64) -> bool {
        self.0.hold(token)
    }
    fn state(&self) -> DispatcherState {
        self.0.state()
    }
}

#[tokio::test]
async fn rule5_a_refused_subscription_runs_handle_cancel_but_never_stops_the_consumer() {
    let p = stage::producer(Source::silent())
        .dispatcher(Refuse(DemandDispatcher::new()))
        .start()
        .unwrap();
    let journal = Journal::default();
    let c = stage::consumer(Recorder {
        journal: Arc::clone(&journal),
        ..Recorder::default()
    })
    .start()
    .unwrap();
    let refused =
        within(c.subscribe(&p, SubscribeOptions::new().cancel(CancelMode::Permanent))).await;
    assert!(
        matches!(refused, Err(SubscribeError::Rejected(_))),
        "{refused:?}"
    );
    settle().await;
    assert!(c.is_running());
    assert_eq!(within(c.call(())).await, Ok(()));
    let seen = read(&journal);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(
            &seen[0],
            Entry::Cancelled(Cancel::Cancelled(Reason::Rejected(_)))
        ),
        "{seen:?}"
    );
}

// ----- rule 6: shutdown propagates downstream -----

#[tokio::test]
async fn rule6_upstream_death_propagates_downstream_through_a_producer_consumer() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&pc, SubscribeOptions::new())
        .start()
        .unwrap();
    settle().await;
    p.stop(boom()).unwrap();
    assert_eq!(within(pc.join()).await, boom());
    assert_eq!(within(c.join()).await, boom());
}

#[tokio::test]
async fn rule6_a_normal_shutdown_reaches_a_transient_consumer_which_survives_it() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&pc, SubscribeOptions::new().cancel(CancelMode::Transient))
        .start()
        .unwrap();
    settle().await;
    p.stop(Reason::Shutdown).unwrap();
    assert_eq!(within(pc.join()).await, Reason::Shutdown);
    settle().await;
    assert!(c.is_running());
    let log = c.call(Ask::Log).await.unwrap();
    assert!(
        log.iter()
            .any(|s| matches!(s, Seen::Cancelled(_, Cancel::Down(Reason::Shutdown), _))),
        "{log:?}"
    );
}

#[tokio::test]
async fn rule6_a_producer_consumer_exits_only_once_its_queued_cancel_is_reached() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::forwarder())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let c = stage::consumer(Sink::manual()).start().unwrap();
    let opts = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let id = within(c.subscribe(&pc, opts)).await.unwrap();
    settle().await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.stop(boom()).unwrap();
    assert_eq!(within(p.join()).await, boom());
    settle().await;
    assert!(
        pc.is_running(),
        "the Down waits behind the queued events until downstream asks"
    );

    c.ask(id, 10).unwrap();
    assert_eq!(within(pc.join()).await, boom());
    settle().await;
    let log: Vec<_> = c
        .call(Ask::Log)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| !matches!(s, Seen::Subscribed(..)))
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        matches!(&log[0], Seen::Events(_, e) if *e == vec![1, 2, 3]),
        "{log:?}"
    );
    assert!(
        matches!(&log[1], Seen::Cancelled(_, Cancel::Down(reason), _) if *reason == boom()),
        "{log:?}"
    );
}

// ----- panics -----

#[tokio::test]
async fn panic_in_a_producer_ends_it_with_reason_panic_and_consumers_follow_their_mode() {
    let p = stage::producer(Fragile).start().unwrap();
    let (perm, _, perm_journal) = recorder(&p, CancelMode::Permanent, Recorder::default()).await;
    let (trans, _, _) = recorder(&p, CancelMode::Transient, Recorder::default()).await;
    let (temp, _, temp_journal) = recorder(&p, CancelMode::Temporary, Recorder::default()).await;
    p.cast(Order::Emit(vec![1])).unwrap();
    p.cast(Order::Panic).unwrap();

    let panic = Reason::Panic("producer boom".into());
    assert_eq!(within(p.join()).await, panic);
    assert_eq!(within(perm.join()).await, panic);
    assert_eq!(within(trans.join()).await, panic);
    settle().await;
    assert!(temp.is_running());
    assert_eq!(
        read(&perm_journal).last(),
        Some(&Entry::Terminated(panic.clone()))
    );
    assert!(
        read(&temp_journal).contains(&Entry::Cancelled(cancel(CancelKind::Down, panic))),
        "{:?}",
        read(&temp_journal)
    );

    assert_eq!(
        within(p.call(Order::Emit(vec![]))).await,
        Err(CallError::Closed)
    );
    assert!(matches!(
        p.cast(Order::Emit(vec![])),
        Err(CallError::Closed)
    ));
    assert!(matches!(p.counters().await, Err(CallError::Closed)));
}

#[tokio::test]
async fn panic_in_a_producers_handle_call_fails_that_call_and_the_calls_queued_behind_it() {
    let p = stage::producer(Fragile).start().unwrap();
    let p2 = p.clone();
    let queued = tokio::spawn(async move { p2.call(Order::Emit(vec![])).await });
    let first = within(p.call(Order::Panic)).await;
    assert_eq!(first, Err(CallError::Closed));
    assert_eq!(within(queued).await.unwrap(), Err(CallError::Closed));
    assert_eq!(
        within(p.join()).await,
        Reason::Panic("producer boom".into())
    );
}

#[tokio::test]
async fn panic_in_a_consumer_ends_it_and_calls_to_it_fail() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, _, journal) = recorder(
        &p,
        CancelMode::Permanent,
        Recorder {
            panic_on_events: true,
            ..Recorder::default()
        },
    )
    .await;
    p.cast(Msg::Emit(vec![1])).unwrap();
    p.counters().await.unwrap();
    let call = within(c.call(())).await;
    assert_eq!(call, Err(CallError::Closed));
    assert_eq!(
        within(c.join()).await,
        Reason::Panic("consumer boom".into())
    );
    assert_eq!(
        read(&journal),
        vec![],
        "terminate is not called after a panic"
    );
    settle().await;
    assert!(p.is_running());
}

#[tokio::test]
async fn panic_in_a_producer_consumer_ends_it_and_its_consumers_follow_their_mode() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through {
        log: Vec::new(),
        f: |_: u64| -> Vec<u64> { panic!("pc boom") },
    })
    .subscribe_to(&p, SubscribeOptions::new())
    .start()
    .unwrap();
    let perm = stage::consumer(Sink::new())
        .subscribe_to(&pc, SubscribeOptions::new())
        .start()
        .unwrap();
    let temp = stage::consumer(Sink::new())
        .subscribe_to(&pc, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .start()
        .unwrap();
    settle().await;
    p.cast(Msg::Emit(vec![1])).unwrap();

    let panic = Reason::Panic("pc boom".into());
    assert_eq!(within(pc.join()).await, panic);
    assert_eq!(within(perm.join()).await, panic);
    settle().await;
    assert!(temp.is_running());
    let log = temp.call(Ask::Log).await.unwrap();
    assert!(events(&log).is_empty());
    assert!(
        log.iter().any(|s| matches!(
            s,
            Seen::Cancelled(_, Cancel::Down(reason), _) if *reason == panic
        )),
        "{log:?}"
    );
    assert_eq!(within(pc.call(Ask::Log)).await, Err(CallError::Closed));

    // Upstream, the producer just loses a consumer.
    assert!(p.is_running());
    let plog = p.call(Ask::Log).await.unwrap();
    assert!(
        plog.iter().any(|s| matches!(
            s,
            Seen::Cancelled(Peer::Consumer, Cancel::Down(reason), _) if *reason == panic
        )),
        "{plog:?}"
    );
}

/// A consumer of packets that stops after the first batch of a message it is cutting.
struct PacketEater;

impl stage::Consumer for PacketEater {
    type In = stage::Packet;

    async fn handle_events(
        &mut self,
        _: Vec<stage::Packet>,
        _: stage::SubscriptionId,
        ctx: &mut stage::Context<Self>,
    ) {
        ctx.stop(stage::Reason::Normal);
    }
}

/// A [`PacketEater`] subscribed to `p` through its erased address, cutting batches of 2
/// (`max_demand` 10, `min_demand` 8).
fn packet_eater_of(p: &stage::StageHandle<support::Source>) -> stage::StageHandle<PacketEater> {
    stage::consumer(PacketEater)
        .subscribe_to(
            &p.producer().erase(),
            stage::SubscribeOptions::new().max_demand(10).min_demand(8),
        )
        .start()
        .unwrap()
}

/// A consumer of packets that stops while cutting a message counts the events it gives back to the
/// producer, not the packets they travel in.
#[tokio::test]
async fn a_consumer_of_packets_counts_returned_events_not_packets() {
    support::within(async {
        let p = stage::producer(support::Source::silent()).start().unwrap();
        let c = packet_eater_of(&p);
        support::settle().await;
        support::emit(&p, (0..10).collect()).await;
        c.join().await;
        support::settle().await;
        let back = p.counters().await.unwrap().buffered;
        assert_eq!(back, 8, "the producer got 8 events back");
        let counters = c.final_counters().unwrap();
        assert_eq!(counters.returned, 8, "{counters:?}");
    })
    .await;
}

/// A consumer of packets whose producer has exited counts the events it could not give back as
/// dropped, in events, not packets.
#[tokio::test]
async fn a_consumer_of_packets_counts_dropped_events_not_packets() {
    support::within(async {
        let p = stage::producer(support::Source::silent()).start().unwrap();
        let c = packet_eater_of(&p);
        support::settle().await;
        // Both in the producer's one turn: the batch is sent, then the producer exits.
        p.cast(support::Msg::Emit((0..10).collect())).unwrap();
        p.stop(stage::Reason::Normal).unwrap();
        p.join().await;
        c.join().await;
        let counters = c.final_counters().unwrap();
        assert_eq!(counters.events_in, 10);
        assert_eq!(
            counters.dropped + counters.returned,
            8,
            "8 events never handled: {counters:?}"
        );
    })
    .await;
}

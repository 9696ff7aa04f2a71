//! GenStage §2.5, the producer buffer: leftovers are buffered (also with no consumer),
//! `buffer_size` with `Keep::First` / `Keep::Last`, drops counted in `counters().dropped` and
//! reported through `format_discarded`, `buffer_size` 0 meaning "no buffer, drop and count",
//! FIFO draining by new demand, info markers held in the buffer, and the crate's fix of rule 6:
//! buffered events go out before newer ones after a consumer reconnects (upstream issue 311).

mod support;

use std::cell::RefCell;
use std::fmt;
use std::sync::Once;

use stage::{Call, Cast, Context, Keep, Producer, Reason, ReplyTo, SubscribeOptions};
use support::{
    Ask, Msg, Sink, Source, Through, ask, batches, demands, events, infos, manual_sink, settle,
    within,
};

/// A producer that emits what it is cast and records each `format_discarded` call.
#[derive(Debug, Default)]
struct Lossy {
    warn: bool,
    discarded: Vec<usize>,
}

impl Producer for Lossy {
    type Out = u64;

    async fn handle_demand(&mut self, _: usize, _: &mut Context<Self>) -> Vec<u64> {
        Vec::new()
    }

    fn format_discarded(&mut self, count: usize) -> bool {
        self.discarded.push(count);
        self.warn
    }
}

impl Call<()> for Lossy {
    type Reply = Vec<usize>;

    async fn handle_call(&mut self, _: (), reply: ReplyTo<Vec<usize>>, _: &mut Context<Self>) {
        reply.send(std::mem::take(&mut self.discarded));
    }
}

impl Cast<Vec<u64>> for Lossy {
    async fn handle_cast(&mut self, events: Vec<u64>, ctx: &mut Context<Self>) {
        ctx.emit(events);
    }
}

/// Captures the WARN events logged on the current thread (the test's current-thread runtime runs
/// every stage on it), each as its message followed by its fields. One global subscriber for the
/// whole binary, so no callsite's interest is cached while no subscriber exists.
struct Warnings;

thread_local! {
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

impl Warnings {
    /// Starts capturing on this thread.
    fn capture() -> Self {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            tracing::subscriber::set_global_default(Global).expect("no other global subscriber");
        });
        tracing::callsite::rebuild_interest_cache();
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        Warnings
    }

    fn matching(&self, needle: &str) -> Vec<String> {
        CAPTURED.with(|c| {
            let all = c.borrow();
            let all = all.as_deref().unwrap_or_default();
            all.iter().filter(|w| w.contains(needle)).cloned().collect()
        })
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

struct Global;

impl tracing::Subscriber for Global {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        CAPTURED.with(|c| {
            if let Some(all) = c.borrow_mut().as_mut() {
                let mut fields = Fields(String::new());
                event.record(&mut fields);
                all.push(fields.0);
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// ----- rule 1: where leftovers go -----

#[tokio::test]
async fn rule1_events_emitted_with_no_consumer_are_buffered() {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!(counters.buffered, 3);
    assert_eq!(counters.dropped, 0);
    assert_eq!(p.buffered().await.unwrap(), 3);

    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 10, &p).await;
    assert_eq!(batches(&c).await, vec![vec![1, 2, 3]]);
    assert_eq!(p.buffered().await.unwrap(), 0);
}

#[tokio::test]
async fn rule1_events_beyond_the_consumers_demand_are_buffered() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 2, &p).await;
    p.cast(Msg::Emit(vec![1, 2, 3, 4, 5])).unwrap();
    assert_eq!(p.buffered().await.unwrap(), 3);
    assert_eq!(batches(&c).await, vec![vec![1, 2]]);

    ask(&c, id, 3, &p).await;
    assert_eq!(batches(&c).await, vec![vec![3, 4, 5]]);
    assert_eq!(p.buffered().await.unwrap(), 0);
}

// ----- rule 2: capacity and keep -----

#[tokio::test]
async fn rule2_keep_last_drops_the_oldest_and_counts_them() {
    let p = stage::producer(Source::silent())
        .buffer_size(3)
        .buffer_keep(Keep::Last)
        .start()
        .unwrap();
    p.cast(Msg::Emit(vec![1, 2])).unwrap();
    p.cast(Msg::Emit(vec![3, 4, 5])).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (3, 2));
    p.cast(Msg::Emit(vec![6])).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (3, 3));

    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 10, &p).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![4, 5, 6]);
}

#[tokio::test]
async fn rule2_keep_last_with_one_store_larger_than_the_buffer_keeps_its_newest() {
    let p = stage::producer(Source::silent())
        .buffer_size(3)
        .start()
        .unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3, 4, 5])).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (3, 2));
    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 10, &p).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![3, 4, 5]);
}

#[tokio::test]
async fn rule2_keep_first_drops_the_new_events_that_do_not_fit() {
    let p = stage::producer(Source::silent())
        .buffer_size(3)
        .buffer_keep(Keep::First)
        .start()
        .unwrap();
    p.cast(Msg::Emit(vec![1, 2])).unwrap();
    p.cast(Msg::Emit(vec![3, 4, 5])).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (3, 2));
    p.cast(Msg::Emit(vec![6])).unwrap();
    assert_eq!(p.counters().await.unwrap().dropped, 3);

    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 10, &p).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 2, 3]);
}

// ----- rule 3: discard reporting -----

#[tokio::test]
async fn rule3_format_discarded_is_called_once_per_store_with_its_excess_and_warns() {
    let warnings = Warnings::capture();
    let p = stage::producer(Lossy {
        warn: true,
        ..Lossy::default()
    })
    .buffer_size(3)
    .start()
    .unwrap();
    p.cast(vec![1, 2, 3, 4, 5]).unwrap();
    p.cast(vec![6, 7]).unwrap();
    p.cast(vec![8]).unwrap();
    p.cast(vec![]).unwrap();
    assert_eq!(p.call(()).await.unwrap(), vec![2, 2, 1], "not cumulative");
    assert_eq!(p.counters().await.unwrap().dropped, 5, "the counter is");
    let discarded = warnings.matching("discarded");
    assert_eq!(discarded.len(), 3, "one warning per store: {discarded:?}");
    assert!(discarded[0].contains("dropped=2"), "{discarded:?}");
}

#[tokio::test]
async fn rule3_format_discarded_returning_false_silences_the_warning_but_drops_still_count() {
    let warnings = Warnings::capture();
    let p = stage::producer(Lossy::default())
        .buffer_size(3)
        .start()
        .unwrap();
    p.cast(vec![1, 2, 3, 4, 5]).unwrap();
    p.cast(vec![6, 7]).unwrap();
    assert_eq!(p.call(()).await.unwrap(), vec![2, 2]);
    assert_eq!(p.counters().await.unwrap().dropped, 4);
    assert_eq!(warnings.matching("discarded"), Vec::<String>::new());
}

#[tokio::test]
async fn rule3_default_format_discarded_warns() {
    let warnings = Warnings::capture();
    let p = stage::producer(Source::silent())
        .buffer_size(1)
        .start()
        .unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    assert_eq!(p.counters().await.unwrap().dropped, 2);
    assert_eq!(warnings.matching("discarded").len(), 1);
}

// ----- buffer_size 0 (crate's documented difference) -----

#[tokio::test]
async fn buffer_size_zero_means_no_buffer_what_cannot_be_dispatched_is_dropped_and_counted() {
    let p = stage::producer(Lossy::default())
        .buffer_size(0)
        .start()
        .unwrap();
    p.cast(vec![1, 2, 3]).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (0, 3));
    assert_eq!(p.call(()).await.unwrap(), vec![3]);

    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 2, &p).await;
    p.cast(vec![4, 5, 6]).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (0, 4));
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![4, 5]);

    let first = stage::producer(Source::silent())
        .buffer_size(0)
        .buffer_keep(Keep::First)
        .start()
        .unwrap();
    first.cast(Msg::Emit(vec![1, 2])).unwrap();
    let counters = first.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (0, 2));
}

// ----- rule 4: draining -----

#[tokio::test]
async fn rule4_the_buffer_drains_fifo_by_new_demand_before_handle_demand() {
    let p = stage::producer(Source {
        counting: Some(100),
        ..Source::default()
    })
    .start()
    .unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3, 4, 5, 6])).unwrap();
    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 2, &p).await;
    ask(&c, id, 3, &p).await;
    ask(&c, id, 4, &p).await;
    assert_eq!(
        batches(&c).await,
        vec![vec![1, 2], vec![3, 4, 5], vec![6], vec![100, 101, 102]]
    );
    let plog = p.call(Ask::Log).await.unwrap();
    assert_eq!(
        demands(&plog),
        vec![3],
        "handle_demand only sees what the buffer could not give"
    );
}

// ----- rule 5: info markers -----

#[tokio::test]
async fn rule5_info_markers_wait_in_the_buffer_until_draining_passes_them_in_fifo_order() {
    let p = stage::producer(Source::silent()).start().unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    p.info(Msg::Tag("a")).unwrap();
    p.info(Msg::Tag("b")).unwrap();
    p.cast(Msg::Emit(vec![4])).unwrap();
    p.info(Msg::Tag("c")).unwrap();
    assert_eq!(p.buffered().await.unwrap(), 4, "markers are not counted");
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![]);

    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 2, &p).await;
    settle().await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![]);
    ask(&c, id, 1, &p).await;
    settle().await;
    assert_eq!(
        infos(&p.call(Ask::Log).await.unwrap()),
        vec![Msg::Tag("a"), Msg::Tag("b")]
    );
    ask(&c, id, 5, &p).await;
    settle().await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![Msg::Tag("c")]);
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn rule5_info_markers_do_not_count_toward_buffer_size() {
    let p = stage::producer(Source::silent())
        .buffer_size(2)
        .buffer_keep(Keep::First)
        .start()
        .unwrap();
    p.cast(Msg::Emit(vec![1])).unwrap();
    p.info(Msg::Tag("m")).unwrap();
    p.cast(Msg::Emit(vec![2])).unwrap();
    let counters = p.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (2, 0));
    p.cast(Msg::Emit(vec![3])).unwrap();
    assert_eq!(p.counters().await.unwrap().dropped, 1);
}

#[tokio::test]
async fn rule5_keep_last_overflow_releases_a_marker_once_the_events_before_it_are_dropped() {
    let p = stage::producer(Source::silent())
        .buffer_size(2)
        .buffer_keep(Keep::Last)
        .start()
        .unwrap();
    p.cast(Msg::Emit(vec![1, 2])).unwrap();
    p.info(Msg::Tag("m")).unwrap();
    p.cast(Msg::Emit(vec![3])).unwrap();
    settle().await;
    assert_eq!(
        infos(&p.call(Ask::Log).await.unwrap()),
        vec![],
        "event 2 is still held before the marker"
    );
    p.cast(Msg::Emit(vec![4])).unwrap();
    settle().await;
    assert_eq!(infos(&p.call(Ask::Log).await.unwrap()), vec![Msg::Tag("m")]);
    let (c, id) = manual_sink(&p).await;
    ask(&c, id, 10, &p).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![3, 4]);
}

// ----- rule 6: the crate fixes the upstream FIFO quirk -----

#[tokio::test]
async fn rule6_fixed_buffered_events_go_before_newer_ones_after_a_consumer_reconnect() {
    let p = stage::producer(Source::silent()).start().unwrap();
    // Consumer A asks 10; the producer emits nothing for it, then A dies: its 10 are pending.
    let a = stage::consumer(Sink::new()).start().unwrap();
    within(a.subscribe(&p, SubscribeOptions::new().max_demand(10)))
        .await
        .unwrap();
    settle().await;
    assert_eq!(demands(&p.call(Ask::Log).await.unwrap()), vec![10]);
    a.stop(Reason::Shutdown).unwrap();
    assert_eq!(within(a.join()).await, Reason::Shutdown);
    settle().await;

    // The producer emits [1, 2, 3] with nobody subscribed: they are buffered.
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    assert_eq!(p.buffered().await.unwrap(), 3);

    // B subscribes and asks 5: the buffered events are delivered, not stranded.
    let b = stage::consumer(Sink::new()).start().unwrap();
    within(b.subscribe(&p, SubscribeOptions::new().max_demand(5)))
        .await
        .unwrap();
    settle().await;
    assert_eq!(
        events(&b.call(Ask::Log).await.unwrap()),
        vec![1, 2, 3],
        "upstream GenStage strands these (issue 311); the crate must not"
    );
    assert_eq!(p.buffered().await.unwrap(), 0);

    // A newer event follows them.
    p.cast(Msg::Emit(vec![4])).unwrap();
    settle().await;
    assert_eq!(events(&b.call(Ask::Log).await.unwrap()), vec![4]);
}

#[tokio::test]
async fn rule6_fixed_newer_events_never_overtake_buffered_ones() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let a = stage::consumer(Sink::manual()).start().unwrap();
    let a_id = within(a.subscribe(&p, SubscribeOptions::new()))
        .await
        .unwrap();
    ask(&a, a_id, 8, &p).await;
    a.stop(Reason::Normal).unwrap();
    within(a.join()).await;
    p.counters().await.unwrap();
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();

    let (b, id) = manual_sink(&p).await;
    ask(&b, id, 2, &p).await;
    p.cast(Msg::Emit(vec![4, 5])).unwrap();
    ask(&b, id, 10, &p).await;
    p.cast(Msg::Emit(vec![6])).unwrap();
    p.counters().await.unwrap();
    assert_eq!(
        events(&b.call(Ask::Log).await.unwrap()),
        vec![1, 2, 3, 4, 5, 6]
    );
}

// ----- the same buffer on a producer-consumer -----

#[tokio::test]
async fn a_producer_consumer_buffer_is_bounded_and_counts_drops_when_configured() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let pc = stage::producer_consumer(Through::doubler())
        .buffer_size(2)
        .buffer_keep(Keep::Last)
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let (c, id) = manual_sink(&pc).await;
    ask(&c, id, 1, &pc).await;
    settle().await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    settle().await;
    let counters = pc.counters().await.unwrap();
    assert_eq!((counters.buffered, counters.dropped), (2, 3));
    ask(&c, id, 10, &pc).await;
    assert_eq!(events(&c.call(Ask::Log).await.unwrap()), vec![1, 3, 3]);
}

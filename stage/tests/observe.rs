//! Seeing into a pipeline: the topology snapshot lists every stage with its subscriptions and
//! matches each edge's two ends by id, with the credit each holds; a stage busy in a handler is
//! listed as unresponsive instead of hanging the snapshot; the stall watchdog warns, on the
//! paused clock, naming the stage, the subscription and the peer, when a consumer stops asking
//! or a producer stops meeting demand, and says when the subscription moves again; every stage
//! logs inside a `stage` span with its name and kind.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stage::{Consumer, Context, Producer, SubscribeOptions, SubscriptionId, SubscriptionMode};

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("timed out: a stage hung")
}

/// Everything the stages log, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Captures what this thread's stages log (a current-thread runtime runs them all here).
fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// Emits `n` events as soon as it starts, whether asked or not.
struct Burst(u64);

impl Producer for Burst {
    type Out = u64;
    async fn handle_start(&mut self, ctx: &mut Context<Self>) {
        ctx.emit((0..self.0).collect());
    }
}

/// Asks for `first` events once, then never again (or again when told).
struct Stuck {
    first: usize,
}

impl Consumer for Stuck {
    type In = u64;
    async fn handle_subscribe(
        &mut self,
        id: SubscriptionId,
        _: &SubscribeOptions,
        ctx: &mut Context<Self>,
    ) -> SubscriptionMode {
        ctx.ask(id, self.first);
        SubscriptionMode::Manual
    }
    async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {}
}

/// Asks its one subscription for `n` more.
struct AskMore(SubscriptionId, usize);

impl stage::Cast<AskMore> for Stuck {
    async fn handle_cast(&mut self, ask: AskMore, ctx: &mut Context<Self>) {
        ctx.ask(ask.0, ask.1);
    }
}

/// Never meets demand: its `handle_demand` returns nothing and forgets the rest.
struct Forgetful;

impl Producer for Forgetful {
    type Out = u64;
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_names_the_stage_and_subscription_of_a_consumer_that_stopped_asking() {
    let (logs, _guard) = capture();
    let source = stage::producer(Burst(1_000))
        .name("source")
        .stall_warning(Duration::from_secs(10))
        .start()
        .unwrap();
    let stuck = stage::consumer(Stuck { first: 10 })
        .name("stuck")
        .start()
        .unwrap();
    let id = within(stuck.subscribe(&source, SubscribeOptions::new()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(logs.lines_with("stalled").is_empty(), "{}", logs.text());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let warned = logs.lines_with("stalled");
    assert_eq!(warned.len(), 1, "{}", logs.text());
    let line = &warned[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("source"), "{line}");
    assert!(line.contains("stuck"), "{line}");
    assert!(line.contains(&id.to_string()), "{line}");
    assert!(line.contains("has not asked"), "{line}");
    // Warned once per stall, and told when it moves again.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(logs.lines_with("stalled").len(), 1, "{}", logs.text());
    stuck.cast(AskMore(id, 100)).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let moving = logs.lines_with("moving again");
    assert_eq!(moving.len(), 1, "{}", logs.text());
    assert!(moving[0].contains(&id.to_string()), "{}", moving[0]);
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_names_a_producer_that_owes_demand_from_both_ends() {
    let (logs, _guard) = capture();
    let lazy = stage::producer(Forgetful)
        .name("lazy")
        .stall_warning(Duration::from_secs(10))
        .start()
        .unwrap();
    let waiting = stage::consumer_fn(|_: Vec<u64>| {})
        .name("waiting")
        .stall_warning(Duration::from_secs(10))
        .start()
        .unwrap();
    let id = within(waiting.subscribe(&lazy, SubscribeOptions::new().max_demand(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let warned = logs.lines_with("stalled");
    assert_eq!(warned.len(), 2, "{}", logs.text());
    let owed = warned
        .iter()
        .find(|l| l.contains("is owed events and the producer"))
        .expect("producer side");
    assert!(
        owed.contains("lazy") && owed.contains("waiting") && owed.contains(&id.to_string()),
        "{owed}"
    );
    assert!(owed.contains("owed=50"), "{owed}");
    let credit = warned
        .iter()
        .find(|l| l.contains("owed events by its producer"))
        .expect("consumer side");
    assert!(
        credit.contains("waiting") && credit.contains("lazy") && credit.contains(&id.to_string()),
        "{credit}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_flowing_pipeline_never_warns() {
    let (logs, _guard) = capture();
    let numbers = stage::from_iter(0..200_000u64)
        .name("numbers")
        .stall_warning(Duration::from_millis(100))
        .start()
        .unwrap();
    let sink = stage::async_consumer_fn(|_: Vec<u64>| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
    })
    .name("sink")
    .stall_warning(Duration::from_millis(100))
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
    .start()
    .unwrap();
    within(sink.join()).await;
    assert!(logs.lines_with("stalled").is_empty(), "{}", logs.text());
}

#[tokio::test]
async fn an_invalid_stall_time_is_a_typed_error() {
    let err = stage::producer(Forgetful)
        .stall_warning(Duration::ZERO)
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("stall_warning"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_topology_matches_both_ends_of_every_edge() {
    let numbers = stage::from_iter(0..u64::MAX)
        .name("topo-numbers")
        .start()
        .unwrap();
    let doubled = stage::producer_consumer_fn(|b: Vec<u64>| b.into_iter().map(|n| n * 2).collect())
        .name("topo-doubled")
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
        .start()
        .unwrap();
    let stuck = stage::consumer(Stuck { first: 10 })
        .name("topo-stuck")
        .start()
        .unwrap();
    let id = within(stuck.subscribe(&doubled, SubscribeOptions::new()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;

    let topology = within(stage::topology()).await;
    let edges: Vec<_> = topology
        .edges()
        .into_iter()
        .filter(|e| e.producer.starts_with("topo-"))
        .collect();
    assert_eq!(edges.len(), 2, "{topology}");
    let last = edges.iter().find(|e| e.subscription == id).unwrap();
    assert_eq!(&*last.producer, "topo-doubled");
    assert_eq!(&*last.consumer, "topo-stuck");
    // The consumer got its 10 and asked for no more: no credit either way, nothing in flight.
    assert_eq!(last.owed, Some(0));
    assert_eq!(last.credit, Some(0));
    assert_eq!(last.in_flight, Some(0));
    let first = edges.iter().find(|e| e.subscription != id).unwrap();
    assert_eq!(&*first.producer, "topo-numbers");
    assert_eq!(&*first.consumer, "topo-doubled");
    let stuck_info = topology.stage("topo-stuck").unwrap();
    assert_eq!(stuck_info.kind, stage::StageKind::Consumer);
    assert_eq!(stuck_info.producers[0].received, 10);
    let text = topology.to_string();
    assert!(text.contains("topo-doubled (producer-consumer)"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_stage_busy_in_a_handler_is_listed_as_unresponsive() {
    let numbers = stage::from_iter(0..u64::MAX)
        .name("busy-numbers")
        .start()
        .unwrap();
    let _busy = stage::async_consumer_fn(|_: Vec<u64>| std::future::pending::<()>())
        .name("busy-consumer")
        .subscribe_to(&numbers, SubscribeOptions::new())
        .start()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let topology = within(stage::topology_within(Duration::from_secs(1))).await;
    assert!(
        topology
            .unresponsive
            .iter()
            .any(|n| &**n == "busy-consumer"),
        "{topology}"
    );
    assert!(topology.stage("busy-numbers").is_some(), "{topology}");
}

#[tokio::test(start_paused = true)]
async fn every_stage_logs_in_a_span_with_its_name_and_kind() {
    let (logs, _guard) = capture();
    let numbers = stage::from_iter(0..10u64).name("spanned").start().unwrap();
    let sink = stage::consumer_fn(|_: Vec<u64>| panic!("boom"))
        .name("spanned-sink")
        .subscribe_to(
            &numbers,
            SubscribeOptions::new().cancel(stage::CancelMode::Temporary),
        )
        .start()
        .unwrap();
    within(sink.join()).await;
    let panicked = logs.lines_with("panicked");
    let line = panicked
        .iter()
        .find(|l| l.contains("stage{"))
        .expect("a line in the span");
    assert!(line.contains("name=spanned-sink"), "{line}");
    assert!(line.contains("kind=\"consumer\""), "{line}");
}

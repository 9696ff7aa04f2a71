//! Telemetry: the running topology by name, `tracing` spans around each processor chunk and
//! each batch, and (with the `metrics` feature) counters and histograms.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest::{Batcher, Pipeline, Processors, TestSource};
use support::{Probe, within};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

#[tokio::test(start_paused = true)]
async fn the_topology_lists_every_stage() {
    let source = TestSource::<u64>::new();
    let pipeline = Pipeline::builder("shop", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(2))
        .batcher(Batcher::new("orders").concurrency(2).batch_size(10))
        .batcher(Batcher::new("refunds"))
        .start()
        .unwrap();
    let topology = pipeline.topology();
    assert_eq!(
        topology.stage_names(),
        [
            "shop.test.0",
            "shop.processor.0",
            "shop.processor.1",
            "shop.batcher.orders",
            "shop.batch_processor.orders.0",
            "shop.batch_processor.orders.1",
            "shop.batcher.refunds",
            "shop.batch_processor.refunds.0",
        ]
    );
    assert_eq!(topology.producers[0].name, "test");
    assert_eq!(topology.batchers[0].batch_size, 10);
    assert_eq!(topology.batchers[1].concurrency, 1);
    let listing = topology.to_string();
    assert!(
        listing.contains("processors x2: shop.processor.0, shop.processor.1"),
        "{listing}"
    );
    assert!(listing.contains("batcher orders (size 10"), "{listing}");
    within(5, pipeline.shutdown(Duration::from_secs(1))).await;
}

/// A span's name and its fields, as `(name, value)` text.
type SpanRecord = (String, Vec<(String, String)>);

/// Records each new span's name and fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRecord>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields));
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<Vec<(String, String)>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(n, _)| n == name).unwrap().1
}

/// A span per processor chunk (with its size), per `handle_message` call, and per batch (with
/// its batcher, key, size and trigger).
#[tokio::test(start_paused = true)]
async fn spans_cover_each_chunk_and_each_batch() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let source = TestSource::new();
    let pipeline = Pipeline::builder("traced", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(10))
        .batcher(Batcher::new("default").batch_size(4))
        .start()
        .unwrap();
    within(5, source.push(0..8).unwrap()).await;
    within(5, pipeline.shutdown(Duration::from_secs(1))).await;
    let chunks = spans.named("ingest.processor");
    assert_eq!(chunks.len(), 2);
    assert_eq!(field(&chunks[0], "messages"), "5");
    assert_eq!(field(&chunks[0], "stage"), "traced.processor.0");
    assert_eq!(field(&chunks[1], "messages"), "3");
    // One TRACE span per handle_message call, inside its chunk's span.
    let messages = spans.named("ingest.message");
    assert_eq!(messages.len(), 8);
    assert!(messages.iter().all(|m| field(m, "attempt") == "1"));
    let batches = spans.named("ingest.batch");
    assert_eq!(batches.len(), 2);
    assert_eq!(field(&batches[0], "batcher"), "default");
    assert_eq!(field(&batches[0], "size"), "4");
    assert_eq!(field(&batches[0], "trigger"), "Size");
}

#[cfg(feature = "metrics")]
mod with_metrics {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ingest::{Batcher, Failure, Pipeline, Processors, TestSource};
    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    use super::support::{Probe, within};

    #[derive(Default)]
    struct Cell(AtomicU64);

    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::Relaxed);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::Relaxed);
        }
    }

    impl HistogramFn for Cell {
        fn record(&self, _: f64) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts each counter's total and each histogram's records, by name and labels.
    #[derive(Default)]
    struct Tally(Mutex<HashMap<String, Arc<Cell>>>);

    impl Tally {
        fn cell(&self, key: &Key) -> Arc<Cell> {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Arc::clone(self.0.lock().unwrap().entry(name).or_default())
        }

        fn get(&self, name: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .map_or(0, |c| c.0.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Tally {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.cell(key))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.cell(key))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counters_and_histograms_go_through_the_facade() {
        let tally = Tally::default();
        let _guard = metrics::set_default_local_recorder(&tally);
        let probe = Probe::default().on_message(|msg, _| {
            if msg.data == 3 {
                return Err(Failure::new("three"));
            }
            Ok(msg.data)
        });
        let source = TestSource::new();
        let pipeline = Pipeline::builder("metered", probe)
            .producer(source.producer())
            .processors(Processors::new().concurrency(1).max_demand(10))
            .batcher(Batcher::new("default").batch_size(3))
            .start()
            .unwrap();
        within(5, source.push(0..7).unwrap()).await;
        within(5, pipeline.shutdown(Duration::from_secs(1))).await;
        assert_eq!(
            tally.get("ingest_messages_processed_total{pipeline=metered}"),
            7
        );
        assert_eq!(
            tally.get("ingest_messages_acked_total{pipeline=metered}"),
            6
        );
        assert_eq!(
            tally.get("ingest_messages_failed_total{pipeline=metered}"),
            1
        );
        assert_eq!(tally.get("ingest_processor_seconds{pipeline=metered}"), 2);
        assert_eq!(
            tally.get("ingest_batch_size{pipeline=metered,batcher=default}"),
            2
        );
        assert_eq!(
            tally.get("ingest_batch_seconds{pipeline=metered,batcher=default}"),
            2
        );
    }
}

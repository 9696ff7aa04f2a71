//! With the `metrics` feature, every stage's counters reach the installed recorder, labelled
//! with the stage's name and kind: what a pipeline moved adds up on both ends of each edge, and
//! what a full buffer dropped is counted.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use stage::{Context, Producer, SubscribeOptions};

/// Emits 100 events at start into a buffer of 40 with nobody asking.
struct Flood;

impl Producer for Flood {
    type Out = u64;
    async fn handle_start(&mut self, ctx: &mut Context<Self>) {
        ctx.emit((0..100).collect());
    }
}

fn counter(snapshot: &[(String, String, u64)], name: &str, stage: &str) -> u64 {
    snapshot
        .iter()
        .filter(|(n, s, _)| n == name && s == stage)
        .map(|(_, _, v)| *v)
        .sum()
}

#[test]
fn every_stage_reports_its_counters_to_the_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let numbers = stage::from_iter(0..10_000u64)
                .name("m-numbers")
                .start()
                .unwrap();
            let doubled =
                stage::producer_consumer_fn(|b: Vec<u64>| b.into_iter().map(|n| n * 2).collect())
                    .name("m-doubled")
                    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100))
                    .start()
                    .unwrap();
            let sink = stage::consumer_fn(|_: Vec<u64>| {})
                .name("m-sink")
                .subscribe_to(&doubled, SubscribeOptions::new().max_demand(50))
                .start()
                .unwrap();
            let flood = stage::producer(Flood)
                .name("m-flood")
                .buffer_size(40)
                .start()
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), sink.join())
                .await
                .unwrap();
            flood.stop(stage::Reason::Shutdown).unwrap();
            flood.join().await;
        });
    });
    let snapshot: Vec<(String, String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let stage = key
                .key()
                .labels()
                .find(|l| l.key() == "stage")?
                .value()
                .to_owned();
            match value {
                DebugValue::Counter(v) => Some((key.key().name().to_owned(), stage, v)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(
        counter(&snapshot, "stage_events_out_total", "m-numbers"),
        10_000
    );
    assert_eq!(
        counter(&snapshot, "stage_events_in_total", "m-doubled"),
        10_000
    );
    assert_eq!(
        counter(&snapshot, "stage_events_out_total", "m-doubled"),
        10_000
    );
    assert_eq!(
        counter(&snapshot, "stage_events_in_total", "m-sink"),
        10_000
    );
    // 60 dropped by the full buffer, the 40 it held when it stopped.
    assert_eq!(
        counter(&snapshot, "stage_events_dropped_total", "m-flood"),
        100
    );
}

//! Stopping a running flow from outside: a spawned flow's handle aborts it (at once, what is in
//! flight dropped) or shuts it down (its sources stop, what is in flight goes through and
//! every window fires `Done`); a cancellation token given to the flow shuts it down whatever
//! runs it; a dropped handle leaves its flow running. No stage, watcher or token task outlives
//! a flow that has stopped.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use flow::{ErrorKind, Flow, Partition};
use support::within;
use tokio_util::sync::CancellationToken;

/// `max_demand` of every layer in these flows.
const MAX_DEMAND: usize = 100;

/// Stages per layer.
const STAGES: usize = 2;

/// What an endless flow lets the test see: events that entered the flow, and events counted
/// by the `Done` triggers of its last layer.
#[derive(Clone, Default)]
struct Seen {
    entered: Arc<AtomicU64>,
    counted: Arc<AtomicU64>,
}

impl Seen {
    fn entered(&self) -> u64 {
        self.entered.load(Ordering::SeqCst)
    }
    fn counted(&self) -> u64 {
        self.counted.load(Ordering::SeqCst)
    }
}

/// An endless source read by a layer of 2 stages, then partitioned over 2 more that count
/// what they get and add their count up at their final trigger.
fn endless(seen: &Seen) -> Flow<u64> {
    let (entered, counted) = (Arc::clone(&seen.entered), Arc::clone(&seen.counted));
    Flow::from_iter(0u64..)
        .stages(STAGES)
        .max_demand(MAX_DEMAND)
        .inspect(move |_| {
            entered.fetch_add(1, Ordering::SeqCst);
        })
        .partition(
            Partition::by_key(|x: &u64| x % 7)
                .stages(STAGES)
                .max_demand(MAX_DEMAND),
        )
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(move |n, _| {
            counted.fetch_add(*n, Ordering::SeqCst);
            Vec::<u64>::new()
        })
}

/// Waits until `seen` shows the flow running (some batches through its first layer).
async fn running(seen: &Seen) {
    within(async {
        while seen.entered() < 10 * MAX_DEMAND as u64 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Waits until the runtime has no more tasks alive than `before`: every stage, watcher and
/// token task of the flow has ended.
async fn no_task_left(before: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    within(async {
        while metrics.num_alive_tasks() > before {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// How many tasks the runtime has alive now, to wait for [`no_task_left`] against.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_every_stage_of_an_endless_flow_within_a_batch() {
    let before = alive_tasks();
    let seen = Seen::default();
    let handle = endless(&seen).spawn();
    running(&seen).await;
    handle.abort();
    let at_abort = seen.entered();
    let joined = within(handle.join()).await;
    assert!(
        matches!(
            joined.as_ref().map_err(|e| e.kind()),
            Err(ErrorKind::Aborted)
        ),
        "{joined:?}"
    );
    // Each stage of the first layer may finish the batch it was handling, no more.
    let after = seen.entered() - at_abort;
    assert!(
        after <= (STAGES * MAX_DEMAND) as u64,
        "{after} events entered after the abort"
    );
    // No `Done` trigger fired: what the windows held was dropped.
    assert_eq!(seen.counted(), 0);
    no_task_left(before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_endless_flow_and_counts_everything_that_entered() {
    let before = alive_tasks();
    let seen = Seen::default();
    let handle = endless(&seen).spawn();
    running(&seen).await;
    handle.shutdown();
    let at_shutdown = seen.entered();
    within(handle.join()).await.unwrap();
    // What was in flight from the source (at most each first-layer stage's demand, plus the
    // batch each was handling) went through; the source read no more.
    let after = seen.entered() - at_shutdown;
    assert!(
        after <= (2 * STAGES * MAX_DEMAND) as u64,
        "{after} events entered after the shutdown"
    );
    assert_eq!(
        seen.counted(),
        seen.entered(),
        "an event in flight was lost"
    );
    no_task_left(before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_shuts_a_flow_down_whatever_runs_it() {
    let before = alive_tasks();
    // A spawned flow.
    let token = CancellationToken::new();
    let seen = Seen::default();
    let handle = endless(&seen).cancel_on(token.clone()).spawn();
    running(&seen).await;
    token.cancel();
    within(handle.join()).await.unwrap();
    assert_eq!(seen.counted(), seen.entered());
    // A collected one, with two tokens (a merge keeps both flows' tokens).
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let seen = Seen::default();
    let left = endless(&seen).cancel_on(first.clone());
    let right = Flow::from_iter(std::iter::empty::<u64>()).cancel_on(second.clone());
    let merged = Flow::merge([left, right]).stages(1);
    assert!(
        merged
            .explain()
            .contains("any of its 2 cancellation tokens")
    );
    let collecting = tokio::spawn(merged.collect());
    running(&seen).await;
    second.cancel();
    assert_eq!(
        within(collecting).await.unwrap().unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(seen.counted(), seen.entered());
    drop(first);
    // The token tasks ended with their flows.
    no_task_left(before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cancelled_before_the_flow_starts_stops_it_at_once() {
    let token = CancellationToken::new();
    token.cancel();
    let seen = Seen::default();
    let got = within(endless(&seen).cancel_on(token).collect()).await;
    assert_eq!(got.unwrap(), Vec::<u64>::new());
    assert_eq!(seen.counted(), seen.entered());
}

/// Blocks the stage that calls it until [`Gate::open`] (bounded, so a broken test fails).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let _ = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(10), |open| !*open)
            .unwrap();
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_collection_source_from_handing_out_more() {
    const LEN: usize = 1_000_000;
    let before = alive_tasks();
    let seen = Seen::default();
    let (entered, counted) = (Arc::clone(&seen.entered), Arc::clone(&seen.counted));
    let gate = Arc::new(Gate::default());
    let first = Arc::new(AtomicBool::new(true));
    let (hold, started) = (Arc::clone(&gate), Arc::new(tokio::sync::Notify::new()));
    let notify = Arc::clone(&started);
    // The stage reading the collection is held on its first event until the shutdown was
    // sent, so that it sees the shutdown after a known number of batches.
    let handle = Flow::from_shared(Arc::new(vec![1u8; LEN]))
        .stages(1)
        .max_demand(MAX_DEMAND)
        .inspect(move |_| {
            entered.fetch_add(1, Ordering::SeqCst);
            if first.swap(false, Ordering::SeqCst) {
                notify.notify_one();
                hold.wait();
            }
        })
        .reduce(|| 0u64, |n, _| *n += 1)
        .on_trigger(move |n, _| {
            counted.fetch_add(*n, Ordering::SeqCst);
            Vec::<u64>::new()
        })
        .spawn();
    within(started.notified()).await;
    handle.shutdown();
    gate.open();
    within(handle.join()).await.unwrap();
    let entered = seen.entered();
    assert!(entered < LEN as u64 / 10, "{entered} of {LEN} events read");
    assert_eq!(seen.counted(), entered);
    no_task_left(before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_handle_leaves_its_flow_running_to_the_end() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let handle = Flow::from_iter(0..10_000u64)
        .stages(1)
        .reduce(|| 0u64, |n, x| *n += x)
        .on_trigger(move |n, _| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(*n);
            }
            Vec::<u64>::new()
        })
        .spawn();
    drop(handle);
    assert_eq!(within(rx).await.unwrap(), (0..10_000u64).sum::<u64>());
}

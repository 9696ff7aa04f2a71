//! A flow whose stage panics reports that panic even when the stage is slow to publish its
//! exit: the finisher must not take the end of its stream for the end of the flow.
//!
//! A stage that exits tells its consumers first (they see their subscription end) and
//! publishes its exit reason on its handle just after. A flow's stream used to end as soon as
//! its last stages had all cancelled, and then read their exit reasons: when the panicking
//! stage had cancelled first, the last cancel (a normal one) gave the stream its reason, and
//! the panicking stage had not yet published its own, the flow returned `Ok` although a stage
//! had panicked. Seen in CI under load; here a tracing layer holds the panicking stage right
//! between the two steps, so the interleaving is forced, not hoped for.
//!
//! This file is its own test binary: it installs a global tracing subscriber.

mod support;

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use flow::Flow;
use support::{assert_panicked, within};
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

const NEEDLE: &str = "boom in the last trigger";

/// Bounds every wait of the gate, so that a broken test fails instead of hanging.
const GATE_LIMIT: Duration = Duration::from_secs(10);

/// Holds the panicking stage inside its exit, after it told its consumers and before it
/// published its reason, until the test releases it.
#[derive(Default)]
struct Gate {
    /// (the stage is held, the test released it)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
}

impl Gate {
    fn hold(&self) {
        // The consumer the stage just woke sits in this worker's LIFO slot, where no other
        // worker can take it: a task spawned here moves it to the worker's run queue, from
        // which an idle worker steals it while this one is held.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async {});
        }
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        let _ = self
            .changed
            .wait_timeout_while(state, GATE_LIMIT, |s| !s.1)
            .unwrap();
    }

    fn wait_held(&self) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, GATE_LIMIT, |s| !s.0)
            .unwrap();
        state.0
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }

    fn reset(&self) {
        *self.state.lock().unwrap() = (false, false);
    }
}

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(Gate::default)
}

/// The message and `reason` field of an event.
#[derive(Default)]
struct Fields {
    message: String,
    reason: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "reason" => self.reason = format!("{value:?}"),
            _ => {}
        }
    }
}

/// Holds the stage whose exit is logged with the panic `NEEDLE` (stage's "stage exited" line,
/// written after its consumers were told and before its handle reports the reason).
struct HoldTheExit;

impl<S: tracing::Subscriber> Layer<S> for HoldTheExit {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "stage exited" && fields.reason.contains(NEEDLE) {
            gate().hold();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_published_after_the_stream_ended_still_fails_the_flow() {
    let subscriber = Registry::default().with(HoldTheExit.with_filter(LevelFilter::INFO));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    // With no input the final trigger fires as soon as the stage starts, and the panicking
    // stage may be gone before the finisher subscribes to it; with some, after.
    for round in 0..6u32 {
        let input = if round % 2 == 0 { 0..100u32 } else { 0..0 };
        gate().reset();
        assert_panicked(held_while_the_stream_ends(input).await, NEEDLE);
    }
}

/// Runs a flow whose partition 1 panics in its final trigger, while partition 0 finishes only
/// once partition 1 is held in its exit (so that the last subscription of the stream to end is
/// a normal one); returns what `collect` returned.
async fn held_while_the_stream_ends(input: std::ops::Range<u32>) -> Result<Vec<u32>, flow::Error> {
    let flow = Flow::from_iter(input)
        .stages(2)
        .reduce(|| 0u32, |s, x| *s += x)
        .on_trigger(|_, t| -> Vec<u32> {
            if t.partition == 1 {
                panic!("{NEEDLE}");
            }
            assert!(gate().wait_held(), "partition 1 never reached its exit");
            vec![]
        });
    let mut collect = tokio::spawn(flow.collect());
    let held = tokio::task::spawn_blocking(|| gate().wait_held());
    assert!(
        within(held).await.unwrap(),
        "partition 1 never reached its exit"
    );
    // While partition 1 is held, the flow must not finish. (Waiting here only gives a wrong
    // finisher the time to return; the finisher is right if it keeps waiting.)
    let early = tokio::time::timeout(Duration::from_millis(200), &mut collect).await;
    gate().release();
    match early {
        Ok(finished) => finished.unwrap(),
        Err(_) => within(collect).await.unwrap(),
    }
}

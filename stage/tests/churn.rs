//! The invariant under churn, by property: consumers that cancel and resubscribe, stop
//! mid-stream, panic, or have their handles dropped, while finite producers run out and exit.
//!
//! Every event is handled exactly once or counted as dropped (the events a stage still held
//! when it exited), never both, never twice; no subscription receives beyond its credit (every
//! dispatcher is wrapped in [`Checked`]); and every stage ends, with no task left running.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use stage::{
    CancelMode, Consumer, Context, Producer, Reason, StageHandle, SubscribeOptions, SubscriptionId,
};
use support::checked::{Checked, Ev};

/// Emits `0..total` tagged with `index`, giving each demand `extra` more than asked.
struct Counted {
    index: usize,
    next: u64,
    total: u64,
    extra: u64,
}

impl Producer for Counted {
    type Out = Ev;

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<Self>) -> Vec<Ev> {
        let end = (self.next + demand as u64 + self.extra).min(self.total);
        let out = (self.next..end).map(|i| (self.index, i)).collect();
        self.next = end;
        if self.next == self.total {
            ctx.finish();
        }
        out
    }
}

/// Records every batch it is handed, then may yield, and panics on its `panic_at`-th batch.
struct Churner {
    seen: Arc<Mutex<Vec<Ev>>>,
    yields: usize,
    batches: usize,
    panic_at: Option<usize>,
}

impl Consumer for Churner {
    type In = Ev;

    async fn handle_events(&mut self, events: Vec<Ev>, _: SubscriptionId, _: &mut Context<Self>) {
        self.seen.lock().unwrap().extend(events);
        self.batches += 1;
        assert!(self.panic_at != Some(self.batches), "churn panic");
        for _ in 0..self.yields {
            tokio::task::yield_now().await;
        }
    }
}

/// One thing the driver does to a consumer, between rounds of letting the stages run.
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Let everything run for a while.
    Wait(usize),
    /// Cancel one of consumer `c`'s subscriptions and subscribe it again.
    Resubscribe(usize),
    /// Stop consumer `c` and start a new one in its place.
    Replace(usize),
    /// Drop the driver's handle to consumer `c` (the stage keeps running).
    DropHandle(usize),
}

#[derive(Clone, Debug)]
struct Case {
    producers: Vec<(u64, u64)>,
    consumers: Vec<((usize, usize), usize, Option<usize>)>,
    acts: Vec<Act>,
}

fn demand() -> impl Strategy<Value = (usize, usize)> {
    (1usize..40).prop_flat_map(|max| (Just(max), 0..max))
}

fn act(consumers: usize) -> impl Strategy<Value = Act> {
    prop_oneof![
        (1usize..30).prop_map(Act::Wait),
        (0..consumers).prop_map(Act::Resubscribe),
        (0..consumers).prop_map(Act::Replace),
        (0..consumers).prop_map(Act::DropHandle),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((0u64..600, 0u64..20), 1..=2),
        prop::collection::vec((demand(), 0usize..3, prop::option::of(1usize..8)), 1..=3),
    )
        .prop_flat_map(|(producers, consumers)| {
            let n = consumers.len();
            (
                Just(producers),
                Just(consumers),
                prop::collection::vec(act(n), 0..12),
            )
        })
        .prop_map(|(producers, consumers, acts)| Case {
            producers,
            consumers,
            acts,
        })
}

/// One slot of the pipeline: the consumer running in it and its subscriptions.
struct Slot {
    handle: Option<StageHandle<Churner>>,
    subs: Vec<(usize, SubscriptionId)>,
}

struct Run {
    producers: Vec<StageHandle<Counted>>,
    opts: Vec<SubscribeOptions>,
    seen: Arc<Mutex<Vec<Ev>>>,
    /// Every consumer ever started, for joining them all at the end.
    all: Vec<StageHandle<Churner>>,
}

impl Run {
    async fn start_consumer(
        &mut self,
        spec: &((usize, usize), usize, Option<usize>),
        panics: bool,
    ) -> Slot {
        let ((max, min), yields, panic_at) = *spec;
        let c = stage::consumer(Churner {
            seen: Arc::clone(&self.seen),
            yields,
            batches: 0,
            panic_at: panic_at.filter(|_| panics),
        })
        .start()
        .unwrap();
        let opts = SubscribeOptions::new()
            .max_demand(max)
            .min_demand(min)
            .cancel(CancelMode::Temporary);
        let mut subs = Vec::new();
        for (i, p) in self.producers.iter().enumerate() {
            if let Ok(id) = c.subscribe(p, opts.clone()).await {
                subs.push((i, id));
            }
        }
        self.opts.push(opts);
        self.all.push(c.clone());
        Slot {
            handle: Some(c),
            subs,
        }
    }
}

/// Runs a case; returns the events handled and the events counted as dropped.
async fn run(case: &Case) -> (Vec<Ev>, u64, usize) {
    let violations = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = case
        .producers
        .iter()
        .enumerate()
        .map(|(index, &(total, extra))| {
            stage::producer(Counted {
                index,
                next: 0,
                total,
                extra,
            })
            .dispatcher(Checked::new(Arc::clone(&violations)))
            .start()
            .unwrap()
        })
        .collect();
    let mut run = Run {
        producers,
        opts: Vec::new(),
        seen: Arc::default(),
        all: Vec::new(),
    };
    let mut slots = Vec::new();
    for spec in &case.consumers {
        // Only the first consumers may panic: a replacement is never the last word.
        let slot = run.start_consumer(spec, true).await;
        slots.push(slot);
    }
    for act in &case.acts {
        match *act {
            Act::Wait(n) => {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
            }
            Act::Resubscribe(c) => {
                let slot = &mut slots[c];
                let (Some(handle), Some(&(p, id))) = (&slot.handle, slot.subs.first()) else {
                    continue;
                };
                let _ = handle.cancel(id, Reason::Normal);
                slot.subs.remove(0);
                let opts = run.opts[c].clone();
                if let Ok(id) = handle.subscribe(&run.producers[p], opts).await {
                    slot.subs.push((p, id));
                }
            }
            Act::Replace(c) => {
                if let Some(handle) = slots[c].handle.take() {
                    let _ = handle.stop(Reason::Shutdown);
                }
                slots[c] = run.start_consumer(&case.consumers[c], false).await;
            }
            Act::DropHandle(c) => {
                slots[c].handle = None;
            }
        }
    }
    // Keep one consumer that cannot panic, so that every producer runs out.
    let keeper = run
        .start_consumer(&((16, 8), 0, None), false)
        .await
        .handle
        .unwrap();
    for p in &run.producers {
        tokio::time::timeout(Duration::from_secs(20), p.join())
            .await
            .expect("every producer runs out");
    }
    drop(keeper);
    for c in &run.all {
        let _ = c.stop(Reason::Shutdown);
        tokio::time::timeout(Duration::from_secs(20), c.join())
            .await
            .expect("every consumer ends");
    }
    let dropped: u64 = run
        .producers
        .iter()
        .chain(std::iter::empty())
        .map(|p| p.final_counters().unwrap().dropped)
        .sum::<u64>()
        + run
            .all
            .iter()
            .map(|c| c.final_counters().unwrap().dropped)
            .sum::<u64>();
    let seen = run.seen.lock().unwrap().clone();
    (seen, dropped, violations.load(Ordering::Relaxed))
}

fn check(case: &Case, seen: &[Ev], dropped: u64, violations: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(violations, 0, "a subscription received beyond its credit");
    let mut sorted = seen.to_vec();
    sorted.sort_unstable();
    let before = sorted.len();
    sorted.dedup();
    prop_assert_eq!(sorted.len(), before, "an event was handled twice");
    let total: u64 = case.producers.iter().map(|p| p.0).sum();
    prop_assert_eq!(
        seen.len() as u64 + dropped,
        total,
        "handled {} + dropped {} != produced {}",
        seen.len(),
        dropped,
        total
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn every_event_is_handled_once_or_counted_under_churn(case in case(), multi in any::<bool>()) {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let (seen, dropped, violations) = rt.block_on(run(&case));
        check(&case, &seen, dropped, violations)?;
        rt.block_on(async {
            let metrics = tokio::runtime::Handle::current().metrics();
            tokio::time::timeout(Duration::from_secs(5), async {
                while metrics.num_alive_tasks() > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .expect("no task is left running");
        });
    }
}

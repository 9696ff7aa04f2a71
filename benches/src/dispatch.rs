//! Broadcast and partition fan-out: ours (a producer with a `BroadcastDispatcher` or a
//! `PartitionDispatcher` feeding two consumers) beside hand-written tokio channel fan-outs.

use stage::{BroadcastDispatcher, DemandMode, PartitionDispatcher, SubscribeOptions};
use tokio::sync::mpsc;

use crate::{Counter, Sum, Summed};

/// How events are routed to the two consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanOut {
    /// Every consumer gets every event.
    Broadcast,
    /// Each event goes to one consumer, by a hash of it.
    Partition,
}

/// The hash both the partition dispatcher and the baseline route by (ahash, fixed seeds).
pub fn hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x5eed, 0xca11, 0xf10e, 0x57a6)
}

/// Runs `0..total` through a producer with the fan-out's dispatcher into two summing
/// consumers subscribed before anything flows (the producer starts accumulating demand).
/// Returns what each consumer summed.
pub async fn run_stages(total: u64, fan_out: FanOut) -> [Summed; 2] {
    let builder = stage::producer(Counter::new(total)).demand(DemandMode::Accumulate);
    let producer = match fan_out {
        FanOut::Broadcast => builder.dispatcher(BroadcastDispatcher::new()).start(),
        FanOut::Partition => builder
            .dispatcher(PartitionDispatcher::<u64>::new(2).expect("2 partitions"))
            .start(),
    }
    .expect("a runtime");
    let mut results = Vec::new();
    for partition in 0..2 {
        let (sum, done) = Sum::new();
        let consumer = stage::consumer(sum).start().expect("a runtime");
        let mut opts = SubscribeOptions::new();
        if fan_out == FanOut::Partition {
            opts = opts.partition(partition);
        }
        consumer
            .subscribe(&producer, opts)
            .await
            .expect("subscribed");
        results.push(done);
    }
    producer.set_demand(DemandMode::Forward).expect("running");
    let mut sums = [Summed { sum: 0, batches: 0 }; 2];
    for (slot, done) in sums.iter_mut().zip(results) {
        *slot = done.await.expect("the consumer reports");
    }
    sums
}

/// The same work hand-written: a task makes batches of `batch` and sends them (a copy to
/// each, or split by the hash) over two bounded channels of `capacity` batches to two summing
/// tasks.
pub async fn run_baseline(
    total: u64,
    fan_out: FanOut,
    batch: usize,
    capacity: usize,
) -> [Summed; 2] {
    let (tx0, rx0) = mpsc::channel::<Vec<u64>>(capacity);
    let (tx1, rx1) = mpsc::channel::<Vec<u64>>(capacity);
    let producer = tokio::spawn(async move {
        let hash = hasher();
        let mut next = 0;
        while next < total {
            let end = total.min(next + batch as u64);
            let events: Vec<u64> = (next..end).collect();
            next = end;
            match fan_out {
                FanOut::Broadcast => {
                    if tx0.send(events.clone()).await.is_err() || tx1.send(events).await.is_err() {
                        return;
                    }
                }
                FanOut::Partition => {
                    let (mut a, mut b) = (Vec::with_capacity(batch), Vec::with_capacity(batch));
                    for e in events {
                        if hash.hash_one(e).is_multiple_of(2) {
                            a.push(e);
                        } else {
                            b.push(e);
                        }
                    }
                    if tx0.send(a).await.is_err() || tx1.send(b).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let sum = |mut rx: mpsc::Receiver<Vec<u64>>| {
        tokio::spawn(async move {
            let mut s = Summed { sum: 0, batches: 0 };
            while let Some(events) = rx.recv().await {
                s.sum += events.iter().sum::<u64>();
                s.batches += 1;
            }
            s
        })
    };
    let (a, b) = (sum(rx0), sum(rx1));
    producer.await.expect("the producer task");
    [
        a.await.expect("a summing task"),
        b.await.expect("a summing task"),
    ]
}

/// Checks what the two consumers summed.
pub fn check(total: u64, fan_out: FanOut, sums: [Summed; 2]) {
    let all = total * total.saturating_sub(1) / 2;
    match fan_out {
        FanOut::Broadcast => assert!(sums.iter().all(|s| s.sum == all), "{sums:?}"),
        FanOut::Partition => assert_eq!(sums[0].sum + sums[1].sum, all),
    }
}

//! The channel benchmark's payload: `SENDERS` tasks each push `per_sender` numbers one at a
//! time into a bounded channel of `CAPACITY`, and one consumer sums them. Ours is
//! `stage::channel` feeding a `stage::consumer_fn`; the baselines are a tokio `mpsc` channel of
//! the same capacity drained by a task with `recv` (item by item) or `recv_many` (in batches).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stage::SubscribeOptions;
use tokio::sync::mpsc;

/// The capacity of every channel in the benchmark.
pub const CAPACITY: usize = 1024;

/// How many events one run moves, over all senders.
pub const CHANNEL_EVENTS: u64 = 2_000_000;

/// The sum of every sender's numbers: each sends `0..per_sender`.
pub fn expected(senders: u64, per_sender: u64) -> u64 {
    senders * (per_sender * per_sender.saturating_sub(1) / 2)
}

/// `stage::channel(CAPACITY)` into a summing consumer with the default demand.
pub async fn run_channel(senders: u64, per_sender: u64) -> u64 {
    let (tx, builder) = stage::channel::<u64>(CAPACITY);
    let producer = builder.start().expect("inside a runtime");
    let total = Arc::new(AtomicU64::new(0));
    let sum = Arc::clone(&total);
    let mut acc = 0u64;
    let consumer = stage::consumer_fn(move |events: Vec<u64>| {
        acc += events.iter().sum::<u64>();
        sum.store(acc, Ordering::Relaxed);
    })
    .subscribe_to(&producer, SubscribeOptions::new())
    .start()
    .expect("inside a runtime");
    for _ in 0..senders {
        let tx = tx.clone();
        tokio::spawn(async move {
            for n in 0..per_sender {
                if tx.send(n).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    consumer.join().await;
    total.load(Ordering::Relaxed)
}

/// A tokio `mpsc::channel(CAPACITY)` drained by a task, with `recv` or `recv_many`.
pub async fn run_mpsc(senders: u64, per_sender: u64, many: bool) -> u64 {
    let (tx, mut rx) = mpsc::channel::<u64>(CAPACITY);
    let summing = tokio::spawn(async move {
        let mut sum = 0u64;
        if many {
            let mut buf = Vec::with_capacity(CAPACITY);
            while rx.recv_many(&mut buf, CAPACITY).await > 0 {
                sum += buf.iter().sum::<u64>();
                buf.clear();
            }
        } else {
            while let Some(n) = rx.recv().await {
                sum += n;
            }
        }
        sum
    });
    for _ in 0..senders {
        let tx = tx.clone();
        tokio::spawn(async move {
            for n in 0..per_sender {
                if tx.send(n).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    summing.await.expect("the summing task")
}

//! The join benchmark (`benches/join.rs`): an inner join of two sides of [`SIDE`] events each
//! over [`KEYS`] keys, as a flow (`Flow::bounded_join`) and as a hand-written rayon hash join
//! over `HashMap`s, both with ahash and both folding the pairs into a [`Joined`] checksum.
//!
//! Every key has `SIDE / KEYS` events on each side, so the join makes
//! `KEYS * (SIDE / KEYS)^2` pairs (100 M with the defaults): the work is the pairing, as in
//! any join whose keys repeat on both sides.

use std::collections::HashMap;
use std::sync::Arc;

use flow::{Flow, JoinKind};
use rayon::prelude::*;

/// How many events each side has.
pub const SIDE: u64 = 1_000_000;

/// How many keys the events of each side spread over.
pub const KEYS: u64 = 10_000;

/// An event of either side: its key and its value.
pub type Event = (u64, u64);

/// The two sides, built once outside any timing: left event `i` is `(i % KEYS, i)`, right
/// event `j` is `(j * 7919 % KEYS, j)` (7919 is prime to `KEYS`: each key gets the same
/// number of events, in another order than on the left).
pub fn sides() -> (Arc<Vec<Event>>, Arc<Vec<Event>>) {
    let left = (0..SIDE).map(|i| (i % KEYS, i)).collect();
    let right = (0..SIDE).map(|j| (j * 7919 % KEYS, j)).collect();
    (Arc::new(left), Arc::new(right))
}

/// How many pairs [`sides`] join into.
pub fn expected_pairs() -> u64 {
    KEYS * (SIDE / KEYS) * (SIDE / KEYS)
}

/// What a run of the join returns: how many pairs it made and a checksum of them that does
/// not depend on their order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Joined {
    /// Pairs made.
    pub pairs: u64,
    /// The wrapping sum of [`mix`] over the pairs.
    pub checksum: u64,
}

impl Joined {
    fn add(&mut self, value: u64) {
        self.pairs += 1;
        self.checksum = self.checksum.wrapping_add(value);
    }

    fn merge(self, other: Joined) -> Joined {
        Joined {
            pairs: self.pairs + other.pairs,
            checksum: self.checksum.wrapping_add(other.checksum),
        }
    }
}

/// What the join makes of a pair: a value that depends on both events.
pub fn mix(left: &Event, right: &Event) -> u64 {
    left.1.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ right.1
}

/// The join as a flow: both sides read from their `Vec`s by the sides' stages, partitioned
/// by key over the join's stages (default: one per core), each stage folding its pairs.
///
/// # Panics
///
/// If the flow fails.
pub async fn flow_join(left: Arc<Vec<Event>>, right: Arc<Vec<Event>>) -> Joined {
    Flow::bounded_join(
        JoinKind::Inner,
        Flow::from_shared(left),
        Flow::from_shared(right),
        |l: &Event| l.0,
        |r: &Event| r.0,
        |l, r| match (l, r) {
            (Some(l), Some(r)) => mix(l, r),
            _ => unreachable!("an inner join pairs both sides"),
        },
    )
    .reduce(Joined::default, |acc, value| acc.add(value))
    .emit_state()
    .collect()
    .await
    .expect("the join flow failed")
    .into_iter()
    .fold(Joined::default(), Joined::merge)
}

/// The join by hand on the rayon pool: the right side grouped by key into an ahash `HashMap`
/// (a fold per thread, then merged), then the left side probing it in parallel.
pub fn rayon_join(pool: &rayon::ThreadPool, left: &[Event], right: &[Event]) -> Joined {
    type Table = HashMap<u64, Vec<Event>, ahash::RandomState>;
    pool.install(|| {
        let table: Table = right
            .par_iter()
            .fold(Table::default, |mut table, r| {
                table.entry(r.0).or_default().push(*r);
                table
            })
            .reduce(Table::default, |mut a, b| {
                for (key, mut events) in b {
                    a.entry(key).or_default().append(&mut events);
                }
                a
            });
        left.par_iter()
            .fold(Joined::default, |mut acc, l| {
                for r in table.get(&l.0).into_iter().flatten() {
                    acc.add(mix(l, r));
                }
                acc
            })
            .reduce(Joined::default, Joined::merge)
    })
}

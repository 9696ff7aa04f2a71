//! How `Flow::partition` routes events.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use stage::{Dispatcher, PartitionDispatcher};

/// Makes the dispatcher that routes events over `n >= 2` stages.
pub(crate) type Route<T> = Arc<dyn Fn(usize) -> Box<dyn Dispatcher<T>> + Send + Sync>;

/// Routes `T`s by a hash of `key_fn(event)` over `n >= 2` stages, with the hash every run
/// shares (so that equal keys meet whatever flow they come from).
pub(crate) fn route_by_key<T, K>(key_fn: impl Fn(&T) -> K + Send + Sync + 'static) -> Route<T>
where
    T: Send + 'static,
    K: Hash,
{
    let state = seeded();
    route_by_hash(move |e: &T| state.hash_one(key_fn(e)) as usize)
}

fn route_by_hash<T: Send + 'static>(
    hash_fn: impl Fn(&T) -> usize + Send + Sync + 'static,
) -> Route<T> {
    let hash_fn = Arc::new(hash_fn);
    // The dispatcher is generic over this closure: the per-event hash is inlined into its
    // routing loop, with no indirect call per event.
    Arc::new(move |n| {
        let hash_fn = Arc::clone(&hash_fn);
        let routing = PartitionDispatcher::with_hash(n, move |e: &T| Some(hash_fn(e) % n))
            .expect("the layer's options are checked first: 2 to MAX_STAGES partitions")
            // The next layer's stages ask for what they can hold: nothing to drop.
            .queue_limit(usize::MAX);
        Box::new(routing)
    })
}

/// Routes the events of a flow to the stages of its next layer (Flow's `partition` options).
///
/// Events with equal keys always reach the same stage. The hash is the same in every run.
///
/// # Examples
///
/// ```
/// use flow::Partition;
///
/// let by_len = Partition::by_key(|w: &String| w.len()).stages(4).max_demand(500);
/// # let _ = by_len;
/// ```
pub struct Partition<T> {
    pub(crate) route: Route<T>,
    /// How it routes, for the plan.
    pub(crate) by: &'static str,
    pub(crate) stages: Option<usize>,
    pub(crate) max_demand: Option<usize>,
    pub(crate) min_demand: Option<usize>,
}

impl<T> fmt::Debug for Partition<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition")
            .field("by", &self.by)
            .field("stages", &self.stages)
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .finish_non_exhaustive()
    }
}

fn seeded() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x0f10, 0x3a7e, 0x9b21, 0x44c5)
}

impl<T: Hash + Send + 'static> Partition<T> {
    /// Routes by a hash of the whole event.
    pub fn new() -> Self {
        let state = seeded();
        Partition {
            by: "by a hash of the event",
            ..Partition::by_hash(move |e: &T| state.hash_one(e) as usize)
        }
    }
}

impl<T: Hash + Send + 'static> Default for Partition<T> {
    fn default() -> Self {
        Partition::new()
    }
}

impl<T: Send + 'static> Partition<T> {
    /// Routes by a hash of `key_fn(event)`.
    pub fn by_key<K: Hash>(key_fn: impl Fn(&T) -> K + Send + Sync + 'static) -> Self {
        Partition {
            route: route_by_key(key_fn),
            by: "by key",
            stages: None,
            max_demand: None,
            min_demand: None,
        }
    }

    /// Routes event `e` to stage `hash_fn(e) % stages`.
    pub fn by_hash(hash_fn: impl Fn(&T) -> usize + Send + Sync + 'static) -> Self {
        Partition {
            route: route_by_hash(hash_fn),
            by: "by hash",
            stages: None,
            max_demand: None,
            min_demand: None,
        }
    }

    /// How many stages the new layer runs (default: the number of cores). With 1 there is no
    /// hashing at all.
    pub fn stages(mut self, stages: usize) -> Self {
        self.stages = Some(stages);
        self
    }

    /// The new layer's `max_demand` (default 1000).
    pub fn max_demand(mut self, max: usize) -> Self {
        self.max_demand = Some(max);
        self
    }

    /// The new layer's `min_demand` (default `max_demand / 2`).
    pub fn min_demand(mut self, min: usize) -> Self {
        self.min_demand = Some(min);
        self
    }
}

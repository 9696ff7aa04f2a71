//! What a stage reports about itself.

use crate::options::SubscriptionId;

/// A snapshot of a stage's counters, from [`StageHandle::counters`](crate::StageHandle::counters)
/// (or, once it has exited, [`StageHandle::final_counters`](crate::StageHandle::final_counters)).
///
/// When a pipeline stalls, `consumers` and `producers` show which edge holds no credit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Events received from producers.
    pub events_in: u64,
    /// Events sent to consumers.
    pub events_out: u64,
    /// Events waiting in the buffer (and in the dispatcher's own queues).
    pub buffered: usize,
    /// Events dropped since the stage started: by a full buffer or queue, by a partition hash,
    /// and, once the stage has exited, the events it still held then.
    pub dropped: u64,
    /// Events given back to this stage's producers because it never handled them (it stopped
    /// with them in its mailbox or inbox).
    pub returned: u64,
    /// Upstream messages a producer-consumer holds while downstream has no demand.
    pub inbox: usize,
    /// For each consumer of this stage, the demand it has asked for and not yet received.
    pub consumers: Vec<(SubscriptionId, usize)>,
    /// For each producer of this stage, the events asked for and not yet received.
    pub producers: Vec<(SubscriptionId, usize)>,
}

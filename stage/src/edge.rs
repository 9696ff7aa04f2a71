//! The two queues of one subscription: batches from the producer to the consumer, asks from
//! the consumer to the producer.
//!
//! A message in the peer's mailbox is a wake-up, sent only when a queue goes from empty to
//! non-empty: batches (or asks) that arrive while the peer has not yet got to the first wait
//! behind it, in order, and are handled together when it does. Every batch is still its own
//! message to the consumer and every ask its own `handle_demand` to the producer; what is
//! saved is a mailbox message, and usually a task wake, for each one that finds its queue
//! busy.

use std::collections::VecDeque;

// parking_lot's lock rather than std's: nothing runs user code under it, so there is no
// poisoning to check, and its uncontended lock and unlock are shorter. It is taken once per
// batch or ask, never per event.
use parking_lot::{Mutex, MutexGuard};

/// Items waiting for one side of a subscription, and whether that side still takes them.
#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// A queue one side pushes to and the other drains, with the wake-up rule above.
#[derive(Debug)]
pub(crate) struct Edge<T>(Mutex<Queue<T>>);

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The queue was empty: wake the other side.
    Wake,
    /// The other side has a wake-up on its way already.
    Queued,
}

impl<T> Default for Edge<T> {
    fn default() -> Self {
        Edge(Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
        }))
    }
}

impl<T> Edge<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.0.lock()
    }

    /// Queues `item`; gives it back once the other side has closed the queue.
    pub(crate) fn push(&self, item: T) -> Result<Pushed, T> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(item);
        }
        queue.items.push_back(item);
        Ok(if queue.items.len() == 1 {
            Pushed::Wake
        } else {
            Pushed::Queued
        })
    }

    /// The oldest item.
    pub(crate) fn pop(&self) -> Option<T> {
        self.lock().items.pop_front()
    }

    /// Moves every item into `into`, which must be empty: the two queues swap, so that no
    /// item is moved and each keeps its allocation for the next time.
    pub(crate) fn take_into(&self, into: &mut VecDeque<T>) {
        debug_assert!(into.is_empty(), "taking into a queue that holds items");
        std::mem::swap(&mut self.lock().items, into);
    }

    /// Stops taking items and returns those still queued.
    pub(crate) fn close(&self) -> Vec<T> {
        let mut queue = self.lock();
        queue.closed = true;
        queue.items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_push_into_an_empty_queue_wakes() {
        let e = Edge::default();
        assert_eq!(e.push(1), Ok(Pushed::Wake));
        assert_eq!(e.push(2), Ok(Pushed::Queued));
        assert_eq!(e.pop(), Some(1));
        assert_eq!(e.push(3), Ok(Pushed::Queued), "2 still waits");
        let mut all = VecDeque::new();
        e.take_into(&mut all);
        assert_eq!(all, [2, 3]);
        assert_eq!(e.push(4), Ok(Pushed::Wake), "empty again");
    }

    #[test]
    fn taking_everything_empties_the_queue_so_that_the_next_push_wakes() {
        let e = Edge::default();
        e.push(1).unwrap();
        e.push(2).unwrap();
        let mut taken = VecDeque::new();
        e.take_into(&mut taken);
        assert_eq!(taken, [1, 2]);
        assert_eq!(e.push(3), Ok(Pushed::Wake));
        taken.clear();
        e.take_into(&mut taken);
        assert_eq!(taken, [3]);
    }

    #[test]
    fn a_closed_queue_gives_items_back() {
        let e = Edge::default();
        e.push(1).unwrap();
        assert_eq!(e.close(), [1]);
        assert_eq!(e.push(2), Err(2));
        assert_eq!(e.pop(), None);
    }
}

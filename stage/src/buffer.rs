//! The producer buffer (`docs/semantics.md`, *Buffers*): bounded, keeps first or last, counts what it drops,
//! and holds info markers at the positions they were queued. Pure.

use std::collections::VecDeque;

use crate::options::{BufferSize, Keep};

/// Events a producer emitted that no consumer could take yet, plus info markers.
#[derive(Debug)]
pub(crate) struct Buffer<T, M> {
    events: VecDeque<T>,
    /// Markers with the absolute position (events ever removed from the front) they wait for.
    markers: VecDeque<(i64, M)>,
    /// Events ever removed from the front, by draining or by dropping, less those put back.
    head: i64,
    size: BufferSize,
    keep: Keep,
}

/// What one store did: how many events it dropped and which markers it passed.
#[derive(Debug)]
pub(crate) struct Stored<M> {
    pub(crate) dropped: usize,
    pub(crate) released: Vec<M>,
}

impl<T, M> Buffer<T, M> {
    pub(crate) fn new(size: BufferSize, keep: Keep) -> Self {
        Buffer {
            events: VecDeque::new(),
            markers: VecDeque::new(),
            head: 0,
            size,
            keep,
        }
    }

    /// Buffered events (markers not counted).
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no events are held (markers may be).
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// True when neither events nor markers are held.
    pub(crate) fn is_idle(&self) -> bool {
        self.events.is_empty() && self.markers.is_empty()
    }

    /// Appends `events`, dropping as `keep` says when they do not fit.
    pub(crate) fn push(&mut self, events: Vec<T>) -> Stored<M> {
        let cap = match self.size {
            BufferSize::Bounded(cap) => cap,
            BufferSize::Unbounded => usize::MAX,
        };
        let room = cap - self.events.len().min(cap);
        let dropped;
        match self.keep {
            Keep::First => {
                dropped = events.len().saturating_sub(room);
                self.events.extend(events.into_iter().take(room));
            }
            Keep::Last => {
                let incoming = events.len();
                if incoming > cap {
                    // Only the newest `cap` of the new events survive; everything held goes.
                    dropped = self.events.len() + (incoming - cap);
                    self.head += dropped as i64;
                    self.events.clear();
                    self.events.extend(events.into_iter().skip(incoming - cap));
                } else {
                    let evict = incoming.saturating_sub(room);
                    self.events.drain(..evict);
                    self.head += evict as i64;
                    dropped = evict;
                    self.events.extend(events);
                }
            }
        }
        Stored {
            dropped,
            released: self.release(),
        }
    }

    /// Puts events back at the front (a dispatcher could not take all it was offered).
    pub(crate) fn push_front(&mut self, events: Vec<T>) {
        self.head -= events.len() as i64;
        for e in events.into_iter().rev() {
            self.events.push_front(e);
        }
    }

    /// Queues a marker behind every event held now. Returns it back when nothing is held,
    /// so the caller can deliver it at once.
    pub(crate) fn push_marker(&mut self, marker: M) -> Option<M> {
        if self.is_idle() {
            return Some(marker);
        }
        let at = self.head + self.events.len() as i64;
        self.markers.push_back((at, marker));
        None
    }

    /// Takes up to `n` events from the front, stopping at the next marker, with the markers
    /// that taking them reaches.
    pub(crate) fn take(&mut self, n: usize) -> (Vec<T>, Vec<M>) {
        let mut n = n.min(self.events.len());
        if let Some((at, _)) = self.markers.front() {
            n = n.min((*at - self.head) as usize);
        }
        let events: Vec<T> = self.events.drain(..n).collect();
        self.head += n as i64;
        (events, self.release())
    }

    fn release(&mut self) -> Vec<M> {
        let mut out = Vec::new();
        while self.markers.front().is_some_and(|(at, _)| *at <= self.head) {
            out.push(self.markers.pop_front().expect("front exists").1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(size: usize, keep: Keep) -> Buffer<u32, &'static str> {
        Buffer::new(BufferSize::Bounded(size), keep)
    }

    #[test]
    fn keep_last_drops_the_oldest() {
        let mut b = buf(3, Keep::Last);
        assert_eq!(b.push(vec![1, 2]).dropped, 0);
        assert_eq!(b.push(vec![3, 4, 5]).dropped, 2);
        assert_eq!(b.take(10).0, vec![3, 4, 5]);
    }

    #[test]
    fn keep_last_with_more_new_events_than_room() {
        let mut b = buf(3, Keep::Last);
        b.push(vec![1]);
        assert_eq!(b.push(vec![2, 3, 4, 5, 6]).dropped, 3);
        assert_eq!(b.take(10).0, vec![4, 5, 6]);
    }

    #[test]
    fn keep_first_drops_the_new() {
        let mut b = buf(3, Keep::First);
        b.push(vec![1, 2]);
        assert_eq!(b.push(vec![3, 4, 5]).dropped, 2);
        assert_eq!(b.take(10).0, vec![1, 2, 3]);
    }

    #[test]
    fn size_zero_drops_everything() {
        let mut b = buf(0, Keep::Last);
        assert_eq!(b.push(vec![1, 2]).dropped, 2);
        assert_eq!(b.len(), 0);
        let mut b = buf(0, Keep::First);
        assert_eq!(b.push(vec![1, 2]).dropped, 2);
    }

    #[test]
    fn unbounded_never_drops() {
        let mut b: Buffer<u32, ()> = Buffer::new(BufferSize::Unbounded, Keep::Last);
        assert_eq!(b.push((0..100_000).collect()).dropped, 0);
        assert_eq!(b.len(), 100_000);
    }

    #[test]
    fn take_is_fifo_and_push_front_restores_order() {
        let mut b = buf(10, Keep::Last);
        b.push(vec![1, 2, 3, 4]);
        let (first, _) = b.take(3);
        assert_eq!(first, vec![1, 2, 3]);
        b.push_front(vec![2, 3]);
        assert_eq!(b.take(10).0, vec![2, 3, 4]);
    }

    #[test]
    fn markers_wait_for_the_events_before_them() {
        let mut b = buf(10, Keep::Last);
        assert_eq!(b.push_marker("now"), Some("now"));
        b.push(vec![1, 2, 3]);
        assert_eq!(b.push_marker("d"), None);
        assert_eq!(b.push_marker("e"), None);
        b.push(vec![4]);
        assert_eq!(b.push_marker("f"), None);
        assert!(!b.is_idle());
        let (ev, m) = b.take(2);
        assert_eq!((ev, m), (vec![1, 2], vec![]));
        let (ev, m) = b.take(5);
        assert_eq!(
            (ev, m),
            (vec![3], vec!["d", "e"]),
            "taking stops at a marker"
        );
        let (ev, m) = b.take(5);
        assert_eq!((ev, m), (vec![4], vec!["f"]));
        assert!(b.is_idle());
    }

    #[test]
    fn markers_are_released_when_overflow_displaces_the_events_before_them() {
        let mut b = buf(2, Keep::Last);
        b.push(vec![1, 2]);
        b.push_marker("m");
        let stored = b.push(vec![3, 4]);
        assert_eq!(stored.dropped, 2);
        assert_eq!(stored.released, vec!["m"]);
    }

    #[test]
    fn markers_do_not_count_toward_size() {
        let mut b = buf(2, Keep::First);
        b.push(vec![1]);
        b.push_marker("m");
        assert_eq!(b.push(vec![2]).dropped, 0);
        assert_eq!(b.len(), 2);
    }
}

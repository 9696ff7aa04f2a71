//! Sources that the first layer's stages read themselves ([`Flow::from_vec`],
//! [`Flow::from_shared`]): each stage takes its next batch straight from the collection when it
//! has room for more, so no producer stage copies the events one by one and no message carries
//! them. Taking a batch costs one lock or one atomic add, never anything per event.
//!
//! [`Flow::from_vec`]: crate::Flow::from_vec
//! [`Flow::from_shared`]: crate::Flow::from_shared

use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use stage::Packet;

/// A collection the stages of one layer share out in batches: whichever stage asks takes the
/// next batch, as a demand dispatcher would hand it out.
pub(crate) trait Chunks: Send + Sync {
    /// One stage's reader of the collection, for batches of at most `max` events (`max > 0`).
    fn reader(self: Arc<Self>, max: usize) -> Box<dyn Reader>;
}

/// One stage's end of a [`Chunks`].
pub(crate) trait Reader: Send {
    /// The stage's next batch, or `None` once everything was taken.
    fn next(&mut self) -> Option<Packet>;
}

/// How many batches a stage claims at once from a [`Shared`] slice: one atomic add per this
/// many batches, so the stages do not take turns on the cursor's cache line for each batch.
const CLAIM: usize = 8;

/// A stage's claimed run of a [`Shared`] slice, served in batches of `max`.
struct Claimed<S: ?Sized, T> {
    shared: Arc<Shared<S, T>>,
    max: usize,
    run: std::ops::Range<usize>,
}

impl<S, T> Reader for Claimed<S, T>
where
    S: AsRef<[T]> + Send + Sync + ?Sized,
    T: Clone + Send + 'static,
{
    fn next(&mut self) -> Option<Packet> {
        if self.run.is_empty() {
            self.run = self.shared.claim(self.max.saturating_mul(CLAIM))?;
        }
        let end = self.run.end.min(self.run.start.saturating_add(self.max));
        let all = (*self.shared.data).as_ref();
        let batch = all[self.run.start..end].to_vec();
        self.run.start = end;
        Some(Packet::new(batch))
    }
}

/// An owned `Vec`, moved out batch by batch.
pub(crate) struct Owned<T>(Mutex<std::vec::IntoIter<T>>);

impl<T> Owned<T> {
    pub(crate) fn new(events: Vec<T>) -> Self {
        Owned(Mutex::new(events.into_iter()))
    }
}

impl<T: Send + 'static> Chunks for Owned<T> {
    fn reader(self: Arc<Self>, max: usize) -> Box<dyn Reader> {
        Box::new(OwnedReader { owned: self, max })
    }
}

/// Takes one batch per lock of an [`Owned`] `Vec`.
struct OwnedReader<T> {
    owned: Arc<Owned<T>>,
    max: usize,
}

impl<T: Send + 'static> Reader for OwnedReader<T> {
    fn next(&mut self) -> Option<Packet> {
        let mut events = self.owned.0.lock().unwrap_or_else(PoisonError::into_inner);
        let batch: Vec<T> = events.by_ref().take(self.max).collect();
        (!batch.is_empty()).then(|| Packet::new(batch))
    }
}

/// A shared slice, cloned batch by batch (a `memcpy` for `Copy` events); the data is left as
/// it was.
pub(crate) struct Shared<S: ?Sized, T> {
    next: Padded,
    _events: PhantomData<fn() -> T>,
    data: Arc<S>,
}

/// The cursor every stage writes, alone on its cache lines so that reading `data` stays
/// local to each core.
#[repr(align(128))]
struct Padded(AtomicUsize);

impl<S: ?Sized, T> Shared<S, T> {
    pub(crate) fn new(data: Arc<S>) -> Self {
        Shared {
            next: Padded(AtomicUsize::new(0)),
            _events: PhantomData,
            data,
        }
    }
}

impl<S, T> Chunks for Shared<S, T>
where
    S: AsRef<[T]> + Send + Sync + ?Sized + 'static,
    T: Clone + Send + 'static,
{
    fn reader(self: Arc<Self>, max: usize) -> Box<dyn Reader> {
        Box::new(Claimed {
            shared: self,
            max,
            run: 0..0,
        })
    }
}

impl<S, T> Shared<S, T>
where
    S: AsRef<[T]> + ?Sized,
{
    /// The next `n` indexes not taken yet (fewer at the end), or `None` once all are taken.
    fn claim(&self, n: usize) -> Option<std::ops::Range<usize>> {
        let len = (*self.data).as_ref().len();
        // Each stage stops claiming after its first `None`, so the cursor overshoots the end
        // by at most one claim per stage.
        let start = self.next.0.fetch_add(n, Ordering::Relaxed);
        (start < len).then(|| start..len.min(start.saturating_add(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(reader: &mut dyn Reader) -> Vec<Vec<u32>> {
        std::iter::from_fn(|| reader.next())
            .map(|p| p.downcast::<u32>().expect("u32 batches"))
            .collect()
    }

    #[test]
    fn an_owned_vec_is_moved_out_in_batches_of_at_most_max() {
        let batches = drain(&mut *Arc::new(Owned::new((0..10u32).collect())).reader(4));
        assert_eq!(batches, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    }

    #[test]
    fn a_shared_slice_is_cloned_in_batches_and_left_intact() {
        let data: Arc<Vec<u32>> = Arc::new((0..5).collect());
        let mut reader = Arc::new(Shared::new(Arc::clone(&data))).reader(2);
        assert_eq!(drain(&mut *reader), [vec![0, 1], vec![2, 3], vec![4]]);
        assert!(reader.next().is_none(), "stays exhausted");
        assert_eq!(*data, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn readers_of_a_shared_slice_claim_runs_and_share_every_event_once() {
        let shared = Arc::new(Shared::new(Arc::new((0..100u32).collect::<Vec<_>>())));
        let mut a = Arc::clone(&shared).reader(3);
        let mut b = Arc::clone(&shared).reader(3);
        let mut seen = Vec::new();
        let (mut a_done, mut b_done) = (false, false);
        while !(a_done && b_done) {
            for (reader, done) in [(&mut a, &mut a_done), (&mut b, &mut b_done)] {
                match reader.next() {
                    Some(p) => {
                        let batch = p.downcast::<u32>().expect("u32 batches");
                        assert!(!batch.is_empty() && batch.len() <= 3);
                        seen.extend(batch);
                    }
                    None => *done = true,
                }
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn empty_sources_have_no_batch() {
        assert!(
            Arc::new(Owned::<u32>::new(Vec::new()))
                .reader(3)
                .next()
                .is_none()
        );
        let empty: Arc<[u32]> = Arc::from(Vec::new());
        assert!(Arc::new(Shared::new(empty)).reader(3).next().is_none());
    }
}

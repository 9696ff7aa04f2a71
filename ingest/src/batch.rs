//! The batcher's rules as a pure state machine: open batches per key, closed by size, by
//! timeout (counted from the first message), by a flush, by eviction or at the drain; and
//! closed batches held back while their key already has as many in flight as it may.
//!
//! The shell ([`crate::batcher`]) sets the timers (a batch's timer is the shell's business:
//! [`Effect::Opened`] asks for one) and sends the batches on ([`Effect::Emit`]).

use std::collections::VecDeque;

use stage::TimerRef;
use tokio::time::Instant;

use crate::handler::Trigger;
use crate::message::{BatchKey, Message};

/// The maps of a batcher, by slot: hashed with ahash, as they are looked up for every run of
/// messages.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// The time of a run of messages, read from the clock only if a batch opens or closes (most
/// runs do neither).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now(Option<Instant>);

impl Now {
    /// Reads the clock when first asked.
    pub(crate) fn lazy() -> Self {
        Now(None)
    }

    /// This instant.
    pub(crate) fn at(at: Instant) -> Self {
        Now(Some(at))
    }

    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// Where a batch belongs: its key, and its partition when the batcher partitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    pub(crate) key: BatchKey,
    pub(crate) partition: Option<usize>,
}

/// A batch that is complete, for a batch processor.
#[derive(Debug)]
pub(crate) struct Closed<T> {
    pub(crate) slot: Slot,
    pub(crate) serial: u64,
    pub(crate) messages: Vec<Message<T>>,
    pub(crate) trigger: Trigger,
    pub(crate) opened_at: Instant,
    pub(crate) closed_at: Instant,
    /// The batch's timer, to cancel (if it has not fired).
    pub(crate) timer: Option<TimerRef>,
}

/// What the shell must do.
#[derive(Debug)]
pub(crate) enum Effect<T> {
    /// A batch opened: set its timer and hand it over with [`Batches::set_timer`].
    Opened { slot: Slot, serial: u64 },
    /// Send this batch to a batch processor.
    Emit(Closed<T>),
}

struct Open<T> {
    messages: Vec<Message<T>>,
    serial: u64,
    opened_at: Instant,
    timer: Option<TimerRef>,
}

/// Every open and held batch of one batcher.
pub(crate) struct Batches<T> {
    size: usize,
    key_concurrency: usize,
    max_open_keys: usize,
    open: HashMap<Slot, Open<T>>,
    /// Open batches in the order they opened (entries of batches closed since are skipped).
    order: VecDeque<(Slot, u64)>,
    /// Batches emitted and not done, per slot.
    busy: HashMap<Slot, usize>,
    busy_total: usize,
    /// Closed batches waiting for their key to be free, per slot, in order.
    waiting: HashMap<Slot, VecDeque<Closed<T>>>,
    waiting_messages: usize,
    open_messages: usize,
    next_serial: u64,
}

impl<T> Batches<T> {
    pub(crate) fn new(size: usize, key_concurrency: usize, max_open_keys: usize) -> Self {
        Batches {
            size,
            key_concurrency,
            max_open_keys,
            open: HashMap::default(),
            order: VecDeque::new(),
            busy: HashMap::default(),
            busy_total: 0,
            waiting: HashMap::default(),
            waiting_messages: 0,
            open_messages: 0,
            next_serial: 0,
        }
    }

    /// Adds a run of messages of one slot, in order.
    pub(crate) fn push_run(
        &mut self,
        slot: &Slot,
        run: impl IntoIterator<Item = Message<T>>,
        now: &mut Now,
        out: &mut Vec<Effect<T>>,
    ) {
        let mut run = run.into_iter().peekable();
        while run.peek().is_some() {
            // One lookup while the slot's batch is open; a second after opening it.
            let Some(open) = self.open.get_mut(slot) else {
                self.open_slot(slot, now, out);
                continue;
            };
            let room = self.size - open.messages.len();
            let before = open.messages.len();
            open.messages.extend(run.by_ref().take(room));
            self.open_messages += open.messages.len() - before;
            if open.messages.len() == self.size {
                self.close(slot, Trigger::Size, now, out);
            }
        }
    }

    /// Adds messages of one slot that came together, in order, as [`push_run`](Self::push_run)
    /// does. Most often they fit in the slot's open batch without filling it, and move into it
    /// in one go.
    pub(crate) fn push_all(
        &mut self,
        slot: &Slot,
        mut messages: Vec<Message<T>>,
        now: &mut Now,
        out: &mut Vec<Effect<T>>,
    ) {
        if let Some(open) = self.open.get_mut(slot) {
            if messages.len() < self.size - open.messages.len() {
                self.open_messages += messages.len();
                open.messages.append(&mut messages);
                return;
            }
        }
        self.push_run(slot, messages, now, out);
    }

    /// Closes the slot's batch, if it has one open: a run with a message in flush mode has
    /// gone in.
    pub(crate) fn flush(&mut self, slot: &Slot, now: &mut Now, out: &mut Vec<Effect<T>>) {
        self.close(slot, Trigger::Flush, now, out);
    }

    fn open_slot(&mut self, slot: &Slot, now: &mut Now, out: &mut Vec<Effect<T>>) {
        while self.open.len() >= self.max_open_keys {
            let Some((oldest, serial)) = self.order.pop_front() else {
                break;
            };
            if self.open.get(&oldest).is_some_and(|o| o.serial == serial) {
                self.close(&oldest, Trigger::Evicted, now, out);
            }
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.open.insert(
            slot.clone(),
            Open {
                messages: Vec::with_capacity(self.size.min(1024)),
                serial,
                opened_at: now.get(),
                timer: None,
            },
        );
        if self.max_open_keys != usize::MAX {
            // Entries of batches closed since (by size, timeout or flush) are skipped when
            // evicting; dropped here once they outnumber the open batches, so that the queue
            // stays as long as what is open, give or take, however many batches close.
            if self.order.len() >= 2 * self.open.len() + 16 {
                let open = &self.open;
                self.order
                    .retain(|(slot, serial)| open.get(slot).is_some_and(|o| o.serial == *serial));
            }
            self.order.push_back((slot.clone(), serial));
        }
        out.push(Effect::Opened {
            slot: slot.clone(),
            serial,
        });
    }

    /// The timer the shell set for batch `serial` of `slot`.
    pub(crate) fn set_timer(&mut self, slot: &Slot, serial: u64, timer: TimerRef) {
        if let Some(open) = self.open.get_mut(slot).filter(|o| o.serial == serial) {
            open.timer = Some(timer);
        }
    }

    /// Batch `serial` of `slot` timed out (ignored if it has closed since).
    pub(crate) fn timeout(
        &mut self,
        slot: &Slot,
        serial: u64,
        now: Instant,
        out: &mut Vec<Effect<T>>,
    ) {
        if self.open.get(slot).is_some_and(|o| o.serial == serial) {
            if let Some(open) = self.open.get_mut(slot) {
                // It has fired: nothing to cancel.
                open.timer = None;
            }
            self.close(slot, Trigger::Timeout, &mut Now::at(now), out);
        }
    }

    /// Closes every open batch, oldest first.
    pub(crate) fn drain(&mut self, now: Instant, out: &mut Vec<Effect<T>>) {
        let mut slots: Vec<(u64, Slot)> = self
            .open
            .iter()
            .map(|(slot, open)| (open.serial, slot.clone()))
            .collect();
        slots.sort_by_key(|(serial, _)| *serial);
        let mut now = Now::at(now);
        for (_, slot) in slots {
            self.close(&slot, Trigger::Drain, &mut now, out);
        }
    }

    fn close(&mut self, slot: &Slot, trigger: Trigger, now: &mut Now, out: &mut Vec<Effect<T>>) {
        let Some(open) = self.open.remove(slot) else {
            return;
        };
        if open.messages.is_empty() {
            return;
        }
        self.open_messages -= open.messages.len();
        let closed = Closed {
            slot: slot.clone(),
            serial: open.serial,
            messages: open.messages,
            trigger,
            opened_at: open.opened_at,
            closed_at: now.get(),
            timer: open.timer,
        };
        self.release(closed, out);
    }

    /// Emits a closed batch, or holds it while its key has as many batches in flight as it
    /// may (the default key is never held).
    fn release(&mut self, closed: Closed<T>, out: &mut Vec<Effect<T>>) {
        let busy = self.busy.entry(closed.slot.clone()).or_insert(0);
        if !closed.slot.key.is_default() && *busy >= self.key_concurrency {
            self.waiting_messages += closed.messages.len();
            self.waiting
                .entry(closed.slot.clone())
                .or_default()
                .push_back(closed);
            return;
        }
        *busy += 1;
        self.busy_total += 1;
        out.push(Effect::Emit(closed));
    }

    /// A batch of `slot` has been handled: the next one held for its key goes.
    pub(crate) fn done(&mut self, slot: &Slot, out: &mut Vec<Effect<T>>) {
        match self.busy.get_mut(slot) {
            Some(busy) if *busy > 0 => {
                *busy -= 1;
                self.busy_total -= 1;
                if *busy == 0 {
                    self.busy.remove(slot);
                }
            }
            _ => return,
        }
        let next = self.waiting.get_mut(slot).and_then(VecDeque::pop_front);
        if self.waiting.get(slot).is_some_and(VecDeque::is_empty) {
            self.waiting.remove(slot);
        }
        if let Some(closed) = next {
            self.waiting_messages -= closed.messages.len();
            self.release(closed, out);
        }
    }

    /// Messages in open batches.
    #[cfg(test)]
    fn open_messages(&self) -> usize {
        self.open_messages
    }

    /// Messages in closed batches held back for their key.
    pub(crate) fn waiting_messages(&self) -> usize {
        self.waiting_messages
    }

    /// Batches emitted and not done.
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.busy_total
    }

    /// Whether a batch is open.
    pub(crate) fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Whether nothing is open, held or in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.open.is_empty() && self.waiting.is_empty() && self.busy_total == 0
    }

    /// Everything open or held, to settle when the batcher is stopped without a drain.
    pub(crate) fn take_all(&mut self) -> Vec<Message<T>> {
        let mut all = Vec::new();
        for (_, open) in self.open.drain() {
            all.extend(open.messages);
        }
        for (_, queue) in self.waiting.drain() {
            for closed in queue {
                all.extend(closed.messages);
            }
        }
        self.open_messages = 0;
        self.waiting_messages = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slot(key: impl Into<BatchKey>) -> Slot {
        Slot {
            key: key.into(),
            partition: None,
        }
    }

    fn default_slot() -> Slot {
        Slot {
            key: BatchKey::Default,
            partition: None,
        }
    }

    fn msgs(range: std::ops::Range<u32>) -> Vec<Message<u32>> {
        range.map(Message::unacked).collect()
    }

    /// The emitted batches as (data, trigger).
    fn emitted(out: &mut Vec<Effect<u32>>) -> Vec<(Vec<u32>, Trigger)> {
        out.drain(..)
            .filter_map(|e| match e {
                Effect::Emit(c) => {
                    Some((c.messages.into_iter().map(|m| m.data).collect(), c.trigger))
                }
                Effect::Opened { .. } => None,
            })
            .collect()
    }

    #[test]
    fn batches_close_when_full_and_one_run_can_fill_several() {
        let mut b = Batches::new(3, 1, usize::MAX);
        let now = Instant::now();
        let mut out = Vec::new();
        b.push_run(&default_slot(), msgs(0..7), &mut Now::at(now), &mut out);
        let opened = out
            .iter()
            .filter(|e| matches!(e, Effect::Opened { .. }))
            .count();
        assert_eq!(opened, 3);
        assert_eq!(
            emitted(&mut out),
            vec![
                (vec![0, 1, 2], Trigger::Size),
                (vec![3, 4, 5], Trigger::Size)
            ]
        );
        assert_eq!(b.open_messages(), 1);
    }

    #[test]
    fn pushing_all_at_once_makes_the_same_batches_as_a_run() {
        let now = Instant::now();
        let (mut a, mut b) = (
            Batches::new(3, 1, usize::MAX),
            Batches::new(3, 1, usize::MAX),
        );
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        a.push_run(&default_slot(), msgs(0..2), &mut Now::at(now), &mut out_a);
        b.push_all(&default_slot(), msgs(0..2), &mut Now::at(now), &mut out_b);
        a.push_run(&default_slot(), msgs(2..10), &mut Now::at(now), &mut out_a);
        b.push_all(&default_slot(), msgs(2..10), &mut Now::at(now), &mut out_b);
        // Into the open batch of one: a run that fits without filling it, then one that fills it.
        for run in [10..11, 11..12] {
            a.push_run(
                &default_slot(),
                msgs(run.clone()),
                &mut Now::at(now),
                &mut out_a,
            );
            b.push_all(&default_slot(), msgs(run), &mut Now::at(now), &mut out_b);
        }
        let (batches_a, batches_b) = (emitted(&mut out_a), emitted(&mut out_b));
        assert_eq!(batches_a, batches_b);
        assert_eq!(batches_b.len(), 4);
        assert_eq!((a.open_messages(), b.open_messages()), (0, 0));
    }

    #[test]
    fn a_timeout_closes_only_the_batch_it_was_set_for() {
        let mut b = Batches::new(2, 1, usize::MAX);
        let t0 = Instant::now();
        let mut out = Vec::new();
        b.push_run(&default_slot(), msgs(0..1), &mut Now::at(t0), &mut out);
        let Effect::Opened { serial, .. } = out.remove(0) else {
            panic!("expected an opened batch")
        };
        b.push_run(&default_slot(), msgs(1..3), &mut Now::at(t0), &mut out);
        let later = t0 + Duration::from_millis(5);
        // The first batch closed full; its timer firing late does nothing to the next one.
        b.timeout(&default_slot(), serial, later, &mut out);
        assert_eq!(emitted(&mut out), vec![(vec![0, 1], Trigger::Size)]);
        assert_eq!(b.open_messages(), 1);
        b.timeout(&default_slot(), serial + 1, later, &mut out);
        let closed: Vec<_> = out
            .drain(..)
            .filter_map(|e| match e {
                Effect::Emit(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].trigger, Trigger::Timeout);
        assert_eq!(closed[0].opened_at, t0);
        assert_eq!(closed[0].closed_at, later);
    }

    #[test]
    fn a_flush_closes_the_run_with_what_it_holds() {
        // Upstream's rule: a flush message sends on its key's pending batch with the rest of
        // its run, so the batch may hold earlier bulk messages too.
        let mut b = Batches::new(10, 1, usize::MAX);
        let now = Instant::now();
        let mut out = Vec::new();
        b.push_run(&slot(1u64), msgs(10..11), &mut Now::at(now), &mut out);
        b.push_run(&slot(1u64), msgs(11..12), &mut Now::at(now), &mut out);
        b.flush(&slot(1u64), &mut Now::at(now), &mut out);
        assert_eq!(emitted(&mut out), vec![(vec![10, 11], Trigger::Flush)]);
    }

    #[test]
    fn batches_of_one_key_wait_for_the_one_in_flight() {
        let mut b = Batches::new(1, 1, usize::MAX);
        let now = Instant::now();
        let mut out = Vec::new();
        b.push_run(&slot("a"), msgs(0..3), &mut Now::at(now), &mut out);
        b.push_run(&slot("b"), msgs(3..4), &mut Now::at(now), &mut out);
        assert_eq!(
            emitted(&mut out),
            vec![(vec![0], Trigger::Size), (vec![3], Trigger::Size)]
        );
        assert_eq!(b.waiting_messages(), 2);
        b.done(&slot("a"), &mut out);
        assert_eq!(emitted(&mut out), vec![(vec![1], Trigger::Size)]);
        b.done(&slot("a"), &mut out);
        b.done(&slot("b"), &mut out);
        assert_eq!(emitted(&mut out), vec![(vec![2], Trigger::Size)]);
        b.done(&slot("a"), &mut out);
        assert!(b.is_idle());
    }

    #[test]
    fn the_default_key_is_never_held() {
        let mut b = Batches::new(1, 1, usize::MAX);
        let mut out = Vec::new();
        b.push_run(
            &default_slot(),
            msgs(0..3),
            &mut Now::at(Instant::now()),
            &mut out,
        );
        assert_eq!(emitted(&mut out).len(), 3);
        assert_eq!(b.busy(), 3);
    }

    #[test]
    fn key_concurrency_allows_that_many_at_once() {
        let mut b = Batches::new(1, 2, usize::MAX);
        let mut out = Vec::new();
        b.push_run(
            &slot(7u64),
            msgs(0..3),
            &mut Now::at(Instant::now()),
            &mut out,
        );
        assert_eq!(emitted(&mut out).len(), 2);
        assert_eq!(b.waiting_messages(), 1);
    }

    #[test]
    fn opening_one_key_too_many_evicts_the_oldest() {
        let mut b = Batches::new(10, 1, 2);
        let now = Instant::now();
        let mut out = Vec::new();
        b.push_run(&slot("a"), msgs(0..1), &mut Now::at(now), &mut out);
        b.push_run(&slot("b"), msgs(1..2), &mut Now::at(now), &mut out);
        b.push_run(&slot("a"), msgs(2..3), &mut Now::at(now), &mut out);
        assert!(emitted(&mut out).is_empty());
        b.push_run(&slot("c"), msgs(3..4), &mut Now::at(now), &mut out);
        assert_eq!(emitted(&mut out), vec![(vec![0, 2], Trigger::Evicted)]);
    }

    #[test]
    fn batches_that_close_by_size_do_not_pile_up_in_the_eviction_order() {
        let mut b = Batches::new(2, usize::MAX, 4);
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..1000 {
            b.push_run(
                &slot("a"),
                msgs(2 * i..2 * i + 2),
                &mut Now::at(now),
                &mut out,
            );
        }
        assert_eq!(emitted(&mut out).len(), 1000);
        assert!(b.order.len() <= 2 * b.open.len() + 16, "{}", b.order.len());
        // Eviction still finds the oldest open batch.
        b.push_run(&slot("b"), msgs(0..1), &mut Now::at(now), &mut out);
        for key in ["c", "d", "e", "f"] {
            b.push_run(&slot(key), msgs(1..2), &mut Now::at(now), &mut out);
        }
        assert_eq!(emitted(&mut out), vec![(vec![0], Trigger::Evicted)]);
    }

    #[test]
    fn the_drain_closes_everything_oldest_first() {
        let mut b = Batches::new(10, 1, usize::MAX);
        let now = Instant::now();
        let mut out = Vec::new();
        b.push_run(&slot("b"), msgs(0..2), &mut Now::at(now), &mut out);
        b.push_run(&slot("a"), msgs(2..3), &mut Now::at(now), &mut out);
        b.drain(now, &mut out);
        assert_eq!(
            emitted(&mut out),
            vec![(vec![0, 1], Trigger::Drain), (vec![2], Trigger::Drain)]
        );
        assert_eq!(b.open_messages(), 0);
    }
}

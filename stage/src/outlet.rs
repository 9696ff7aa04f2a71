//! The producer side of a stage as a pure state machine: buffer, dispatcher, accumulated demand,
//! info markers and a producer-consumer's pull counter. No async, no I/O: the engine feeds it
//! what happened (a consumer subscribed, asked, left; the handler emitted events; an info
//! arrived) and carries out what it asks for (batches to send, demand to pass to
//! `handle_demand`, infos to run).

use std::collections::{HashMap, VecDeque};

use crate::buffer::Buffer;
use crate::dispatcher::{Dispatcher, DispatcherState, Outbox};
use crate::error::SubscribeError;
use crate::options::{DemandMode, SubscribeOptions, SubscriptionId};

/// What an accumulating producer logs instead of acting, replayed in order when it forwards
/// again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Logged<T> {
    /// Demand for `handle_demand`.
    Demand(usize),
    /// Events a handler emitted.
    Events(Vec<T>),
}

/// What an outlet holds and has done when its stage exits, from [`Outlet::last_figures`].
#[derive(Debug)]
pub(crate) struct LastFigures {
    /// The dispatcher's state, with the buffer's drops added.
    pub(crate) state: DispatcherState,
    /// Events in the buffer and the dispatcher's queues.
    pub(crate) buffered: usize,
    /// Every event still held: buffered, queued or logged.
    pub(crate) held: usize,
}

/// The producer side of one stage. `M` is the info message type (opaque here).
pub(crate) struct Outlet<T, M> {
    buffer: Buffer<T, M>,
    dispatcher: Box<dyn Dispatcher<T>>,
    out: Outbox<T>,
    mode: DemandMode,
    log: VecDeque<Logged<T>>,
    /// For a producer-consumer: downstream demand not yet used. It pulls from its inbox while
    /// this is positive and never calls `handle_demand`.
    counter: Option<usize>,
    /// Infos the buffer has released, not yet offered to the dispatcher's hold.
    due: VecDeque<M>,
    /// Infos the dispatcher holds behind its own queues, by token.
    held: HashMap<u64, M>,
    next_token: u64,
    /// Infos ready to run, in order.
    ready: VecDeque<M>,
    /// Demand to pass to `handle_demand`, taken by the engine after each step.
    produce: usize,
    /// Events the buffer dropped and not yet reported (for `format_discarded`).
    discarded: usize,
    /// Events the buffer dropped since the start.
    dropped: u64,
}

impl<T: Send + 'static, M> Outlet<T, M> {
    /// A producer side; `pull` for producer-consumers.
    pub(crate) fn new(
        buffer: Buffer<T, M>,
        dispatcher: Box<dyn Dispatcher<T>>,
        mode: DemandMode,
        pull: bool,
    ) -> Self {
        Outlet {
            buffer,
            dispatcher,
            out: Outbox::new(),
            mode,
            log: VecDeque::new(),
            counter: pull.then_some(0),
            due: VecDeque::new(),
            held: HashMap::new(),
            next_token: 0,
            ready: VecDeque::new(),
            produce: 0,
            discarded: 0,
            dropped: 0,
        }
    }

    // ----- inputs -----

    /// A consumer subscribed.
    pub(crate) fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        self.dispatcher.subscribe(id, opts, &mut self.out)?;
        self.settle();
        Ok(())
    }

    /// A consumer asked for `n` more events.
    pub(crate) fn ask(&mut self, id: SubscriptionId, n: usize) {
        self.dispatcher.ask(id, n, &mut self.out);
        self.settle();
    }

    /// A consumer left, or is gone, with events it never handled. What the dispatcher does not
    /// keep or discard goes back to the front of the buffer.
    pub(crate) fn cancel(&mut self, id: SubscriptionId, returned: Vec<T>) {
        let requeue = self.dispatcher.cancel(id, returned, &mut self.out);
        if !requeue.is_empty() {
            self.buffer.push_front(requeue);
        }
        self.settle();
    }

    /// A handler emitted `events`: dispatched after what the buffer holds, or logged while
    /// accumulating.
    pub(crate) fn emit(&mut self, events: Vec<T>) {
        if events.is_empty() {
            return;
        }
        if self.mode == DemandMode::Accumulate {
            self.log.push_back(Logged::Events(events));
            return;
        }
        if self.buffer.is_empty() {
            let left = self.dispatch(events);
            if !left.is_empty() {
                self.store(left);
            }
        } else {
            self.store(events);
            self.drain();
        }
        self.settle();
    }

    /// An info that must run after the events held now have gone out.
    pub(crate) fn info(&mut self, msg: M) {
        if let Some(msg) = self.buffer.push_marker(msg) {
            self.due.push_back(msg);
        }
        self.settle();
    }

    /// Switches the demand mode. Returns `true` when the log must now be replayed with
    /// [`replay`](Outlet::replay).
    pub(crate) fn set_mode(&mut self, mode: DemandMode) -> bool {
        let replay = self.mode == DemandMode::Accumulate && mode == DemandMode::Forward;
        self.mode = mode;
        replay && !self.log.is_empty()
    }

    /// Replays the next logged entry (forwarding again): demand goes through the buffer and
    /// then to [`take_produce`](Outlet::take_produce), events are dispatched. `false` once the
    /// log is empty.
    pub(crate) fn replay(&mut self) -> bool {
        match self.log.pop_front() {
            Some(Logged::Demand(n)) => {
                self.demand_arrived(n);
                self.settle();
                true
            }
            Some(Logged::Events(events)) => {
                self.emit(events);
                true
            }
            None => false,
        }
    }

    // ----- outputs -----

    /// The batches to send now, in order.
    pub(crate) fn sends(&mut self) -> std::vec::Drain<'_, (SubscriptionId, Vec<T>)> {
        self.out.drain_sends()
    }

    /// Demand to pass to `handle_demand` (0: none).
    pub(crate) fn take_produce(&mut self) -> usize {
        std::mem::take(&mut self.produce)
    }

    /// The next info to run.
    pub(crate) fn next_info(&mut self) -> Option<M> {
        self.ready.pop_front()
    }

    /// Events the buffer dropped since last asked.
    pub(crate) fn take_discarded(&mut self) -> usize {
        std::mem::take(&mut self.discarded)
    }

    /// A producer-consumer's unused downstream demand (0 for producers).
    pub(crate) fn counter(&self) -> usize {
        self.counter.unwrap_or(0)
    }

    /// Whether everything that can still reach a consumer has gone out: nothing buffered or
    /// logged, no info pending, and what the dispatcher queues is only for consumers that are
    /// gone.
    pub(crate) fn is_drained(&self) -> bool {
        let state = self.dispatcher.state();
        self.buffer.is_idle()
            && self.log.is_empty()
            && self.due.is_empty()
            && self.ready.is_empty()
            && state.queued == state.stranded
    }

    /// What the dispatcher says of itself, read once.
    pub(crate) fn dispatcher_state(&self) -> DispatcherState {
        self.dispatcher.state()
    }

    /// The figures an exit reports, from one reading of the dispatcher's state; `None` when
    /// the dispatcher cannot be asked (it panicked): then only what the outlet keeps itself
    /// (its buffer, its log, the buffer's drops) is counted.
    pub(crate) fn last_figures(&self, dispatcher: Option<DispatcherState>) -> LastFigures {
        let mut state = dispatcher.unwrap_or_default();
        let buffered = self.buffer.len() + state.queued;
        let logged: usize = self
            .log
            .iter()
            .map(|l| match l {
                Logged::Events(e) => e.len(),
                Logged::Demand(_) => 0,
            })
            .sum();
        state.dropped += self.dropped;
        LastFigures {
            state,
            buffered,
            held: buffered + logged,
        }
    }

    /// Buffered events (the buffer and the dispatcher's queues).
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.len() + self.dispatcher.state().queued
    }

    /// The dispatcher's state, with the buffer's drops added.
    pub(crate) fn state(&self) -> DispatcherState {
        let mut state = self.dispatcher.state();
        state.dropped += self.dropped;
        state
    }

    // ----- internals -----

    /// Acts on what the dispatcher asked for until nothing changes: released infos become
    /// ready, new upstream demand drains the buffer and then goes to `handle_demand`, and
    /// capacity regained without demand (a consumer's pending demand netted) drains the buffer.
    #[inline]
    fn settle(&mut self) {
        // Most often (events dispatched straight from a handler) there is nothing to act on:
        // checked inline, so that the common step does not pay for the loop's call.
        if self.out.has_released()
            || !self.due.is_empty()
            || self.out.has_demand()
            || !self.buffer.is_empty()
        {
            self.settle_all();
        }
    }

    /// [`settle`](Outlet::settle)'s loop.
    fn settle_all(&mut self) {
        loop {
            if self.out.has_released() {
                for token in self.out.take_released() {
                    if let Some(msg) = self.held.remove(&token) {
                        self.ready.push_back(msg);
                    }
                }
            }
            while let Some(msg) = self.due.pop_front() {
                let token = self.next_token;
                self.next_token += 1;
                if self.dispatcher.hold(token) {
                    self.held.insert(token, msg);
                } else {
                    self.ready.push_back(msg);
                }
            }
            let demand = self.out.take_demand();
            if demand > 0 {
                self.demand_arrived(demand);
                continue;
            }
            if !self.buffer.is_empty() && self.dispatcher.capacity() > 0 && self.drain() > 0 {
                continue;
            }
            // Draining may have passed markers or let the dispatcher release held infos.
            if self.due.is_empty() && !self.out.has_released() {
                break;
            }
        }
    }

    /// New upstream demand: the buffer first, then `handle_demand` (or the log, or a
    /// producer-consumer's counter) for what it did not cover.
    fn demand_arrived(&mut self, demand: usize) {
        if let Some(counter) = &mut self.counter {
            *counter = counter.saturating_add(demand);
            self.drain();
            return;
        }
        let taken = self.drain();
        let rest = demand.saturating_sub(taken);
        if rest == 0 {
            return;
        }
        match self.mode {
            DemandMode::Accumulate => self.log.push_back(Logged::Demand(rest)),
            DemandMode::Forward => self.produce = self.produce.saturating_add(rest),
        }
    }

    /// Dispatches from the buffer while the dispatcher has room. Returns how many went out.
    #[inline]
    fn drain(&mut self) -> usize {
        if self.buffer.is_empty() {
            return 0;
        }
        self.drain_buffer()
    }

    /// [`drain`](Outlet::drain) of a buffer that holds something.
    fn drain_buffer(&mut self) -> usize {
        let mut delivered = 0;
        while !self.buffer.is_empty() {
            let n = self.dispatcher.capacity();
            if n == 0 {
                break;
            }
            // `take` stops at the next info marker, so events on either side of an info
            // travel in separate batches.
            let (events, released) = self.buffer.take(n);
            let passed_marker = !released.is_empty();
            self.due.extend(released);
            if events.is_empty() {
                if passed_marker {
                    continue;
                }
                break;
            }
            let offered = events.len();
            let left = self.dispatch(events);
            delivered += offered - left.len();
            if !left.is_empty() {
                self.buffer.push_front(left);
                break;
            }
        }
        delivered
    }

    /// Offers events to the dispatcher; returns what it could not place.
    fn dispatch(&mut self, events: Vec<T>) -> Vec<T> {
        let offered = events.len();
        let left = self.dispatcher.dispatch(events, &mut self.out);
        if let Some(counter) = &mut self.counter {
            *counter = counter.saturating_sub(offered - left.len());
        }
        left
    }

    fn store(&mut self, events: Vec<T>) {
        let stored = self.buffer.push(events);
        self.discarded += stored.dropped;
        self.dropped += stored.dropped as u64;
        self.due.extend(stored.released);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::{BroadcastDispatcher, DemandDispatcher, PartitionDispatcher};
    use crate::options::{BufferSize, Keep};

    type Sends = Vec<(SubscriptionId, Vec<u32>)>;

    fn id(n: u64) -> SubscriptionId {
        SubscriptionId::from_raw(n)
    }

    fn outlet(dispatcher: impl Dispatcher<u32>, size: usize) -> Outlet<u32, &'static str> {
        Outlet::new(
            Buffer::new(BufferSize::Bounded(size), Keep::Last),
            Box::new(dispatcher),
            DemandMode::Forward,
            false,
        )
    }

    fn demand() -> Outlet<u32, &'static str> {
        let mut o = outlet(DemandDispatcher::new(), 10);
        o.subscribe(id(1), &SubscribeOptions::new()).unwrap();
        o
    }

    fn sent(o: &mut Outlet<u32, &'static str>) -> Sends {
        o.sends().collect()
    }

    #[test]
    fn demand_goes_to_handle_demand_and_what_it_returns_to_the_consumer() {
        let mut o = demand();
        o.ask(id(1), 5);
        assert_eq!(o.take_produce(), 5);
        o.emit(vec![1, 2, 3]);
        assert_eq!(sent(&mut o), vec![(id(1), vec![1, 2, 3])]);
        o.emit(vec![4, 5, 6]);
        assert_eq!(sent(&mut o), vec![(id(1), vec![4, 5])]);
        assert_eq!(o.buffered(), 1, "the surplus is buffered");
    }

    #[test]
    fn buffered_surplus_is_netted_against_the_next_demand() {
        let mut o = demand();
        o.ask(id(1), 2);
        o.take_produce();
        o.emit(vec![1, 2, 3, 4, 5]);
        assert_eq!(sent(&mut o), vec![(id(1), vec![1, 2])]);
        o.ask(id(1), 4);
        assert_eq!(sent(&mut o), vec![(id(1), vec![3, 4, 5])]);
        assert_eq!(o.take_produce(), 1, "only what the buffer did not cover");
    }

    #[test]
    fn the_buffer_is_drained_before_newer_events_overtake_it() {
        // GenStage issue 311: a consumer that leaves with demand, buffered events, and a new
        // consumer whose ask is netted against the pending demand still gets the buffer first.
        let mut o = demand();
        o.ask(id(1), 10);
        assert_eq!(o.take_produce(), 10);
        o.cancel(id(1), Vec::new());
        o.emit(vec![1, 2, 3]);
        o.subscribe(id(2), &SubscribeOptions::new()).unwrap();
        o.ask(id(2), 5);
        assert_eq!(o.take_produce(), 0, "netted against the 10 pending");
        assert_eq!(sent(&mut o), vec![(id(2), vec![1, 2, 3])]);
        o.emit(vec![4]);
        assert_eq!(sent(&mut o), vec![(id(2), vec![4])]);
    }

    #[test]
    fn events_a_leaving_consumer_returns_go_to_the_others_first() {
        let mut o = demand();
        o.subscribe(id(2), &SubscribeOptions::new()).unwrap();
        o.ask(id(1), 3);
        o.take_produce();
        o.emit(vec![1, 2, 3]);
        assert_eq!(sent(&mut o), vec![(id(1), vec![1, 2, 3])]);
        o.cancel(id(1), vec![2, 3]);
        assert!(sent(&mut o).is_empty(), "nobody has asked yet");
        o.ask(id(2), 5);
        assert_eq!(sent(&mut o), vec![(id(2), vec![2, 3])]);
        assert_eq!(
            o.take_produce(),
            3,
            "the two returned cover two of the five"
        );
    }

    #[test]
    fn a_full_buffer_drops_and_reports_it_once() {
        let mut o = outlet(DemandDispatcher::new(), 2);
        o.emit(vec![1, 2, 3]);
        assert_eq!(o.take_discarded(), 1);
        assert_eq!(o.take_discarded(), 0);
        assert_eq!(o.state().dropped, 1);
        assert_eq!(o.last_figures(Some(o.dispatcher_state())).held, 2);
    }

    #[test]
    fn without_its_dispatcher_an_outlet_still_counts_what_it_keeps_itself() {
        let mut o = outlet(DemandDispatcher::new(), 2);
        o.emit(vec![1, 2, 3]);
        o.set_mode(DemandMode::Accumulate);
        o.emit(vec![4]);
        let last = o.last_figures(None);
        assert_eq!(last.state.dropped, 1, "the buffer's drop");
        assert_eq!(last.buffered, 2);
        assert_eq!(last.held, 3, "the buffer's two and the logged one");
    }

    #[test]
    fn accumulate_logs_demand_and_events_and_replays_them_in_order() {
        let mut o = demand();
        o.set_mode(DemandMode::Accumulate);
        o.ask(id(1), 2);
        o.emit(vec![7]);
        o.ask(id(1), 3);
        assert_eq!(o.take_produce(), 0);
        assert!(sent(&mut o).is_empty());
        assert!(o.set_mode(DemandMode::Forward));
        assert!(o.replay());
        assert_eq!(o.take_produce(), 2);
        assert!(o.replay());
        assert_eq!(sent(&mut o), vec![(id(1), vec![7])]);
        assert!(o.replay());
        assert_eq!(o.take_produce(), 3, "asks are not merged");
        assert!(!o.replay());
    }

    #[test]
    fn an_info_runs_once_the_events_before_it_have_gone_out() {
        let mut o = demand();
        o.info("now");
        assert_eq!(o.next_info(), Some("now"), "nothing buffered: at once");
        o.emit(vec![1, 2]);
        o.info("after two");
        assert_eq!(o.next_info(), None);
        o.ask(id(1), 1);
        assert_eq!(o.next_info(), None);
        o.ask(id(1), 1);
        assert_eq!(o.next_info(), Some("after two"));
        assert_eq!(sent(&mut o), vec![(id(1), vec![1]), (id(1), vec![2])]);
    }

    #[test]
    fn partition_queues_hold_infos_and_strand_events_of_gone_consumers() {
        let d = PartitionDispatcher::with_hash(2, |e: &u32| Some((e % 2) as usize)).unwrap();
        let mut o = outlet(d, 10);
        o.subscribe(id(1), &SubscribeOptions::new().partition(0))
            .unwrap();
        o.subscribe(id(2), &SubscribeOptions::new().partition(1))
            .unwrap();
        o.ask(id(2), 4);
        o.take_produce();
        o.emit(vec![1, 2, 3]);
        assert_eq!(sent(&mut o), vec![(id(2), vec![1, 3])]);
        o.info("behind 2");
        assert_eq!(o.next_info(), None, "2 waits in partition 0");
        assert!(!o.is_drained());
        o.cancel(id(1), Vec::new());
        assert!(
            o.is_drained(),
            "what is left is for a consumer that is gone"
        );
        assert_eq!(o.last_figures(Some(o.dispatcher_state())).held, 1);
    }

    #[test]
    fn a_producer_consumer_counts_downstream_demand_instead_of_producing() {
        let mut o: Outlet<u32, ()> = Outlet::new(
            Buffer::new(BufferSize::Unbounded, Keep::Last),
            Box::new(DemandDispatcher::new()),
            DemandMode::Forward,
            true,
        );
        o.subscribe(id(1), &SubscribeOptions::new()).unwrap();
        o.ask(id(1), 5);
        assert_eq!((o.counter(), o.take_produce()), (5, 0));
        o.emit(vec![1, 2, 3]);
        assert_eq!(o.counter(), 2);
        o.emit(vec![4, 5, 6, 7]);
        assert_eq!((o.counter(), o.buffered()), (0, 2));
        o.ask(id(1), 1);
        assert_eq!((o.counter(), o.buffered()), (0, 1));
    }

    #[test]
    fn broadcast_surplus_is_not_produced_again() {
        // A producer that answers each ask with twice as much must not make its buffer grow:
        // the buffered surplus covers the next ask.
        let mut o = outlet(BroadcastDispatcher::new(), 1000);
        o.subscribe(id(1), &SubscribeOptions::new()).unwrap();
        let mut produced = 0;
        for _ in 0..50 {
            o.ask(id(1), 10);
            let n = o.take_produce();
            produced += 2 * n;
            o.emit((0..2 * n as u32).collect());
            sent(&mut o);
        }
        assert_eq!(o.state().dropped, 0);
        assert!(o.buffered() <= 20, "buffered {}", o.buffered());
        assert!(produced <= 520, "produced {produced} for 500 asked");
    }
}

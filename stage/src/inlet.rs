//! The consumer side of a stage as a pure state machine: its subscriptions with their demand
//! (automatic, cut into batches of `max - min`, or manual credit), and a producer-consumer's
//! inbox of upstream messages waiting for downstream demand. No async, no I/O.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;

use crate::address::{Asks, ProducerRef};
use crate::demand::{Batch as Cut, Demand, Message};
use crate::edge::{Edge, Pushed};
use crate::error::{Cancel, Reason};
use crate::options::{CancelMode, SubscriptionId};
use crate::packet::Packet;

/// A batch as it arrives: events, or one packet of erased events (for consumers of packets).
pub(crate) enum Batch<I> {
    Events(Vec<I>),
    Packet(Packet),
}

impl<I: Send + 'static> Batch<I> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Batch::Events(events) => events.len(),
            Batch::Packet(packet) => packet.len(),
        }
    }

    /// Keeps the first `at` events and returns the rest.
    pub(crate) fn split_off(&mut self, at: usize) -> Batch<I> {
        match self {
            Batch::Events(events) => Batch::Events(events.split_off(at)),
            Batch::Packet(packet) => Batch::Packet(packet.split_off(at)),
        }
    }

    /// The batch as events of the consumer's input type (a packet only reaches consumers of
    /// packets, whose input type is `Packet`).
    pub(crate) fn into_events(self) -> Vec<I> {
        match self {
            Batch::Events(events) => events,
            Batch::Packet(packet) => {
                let wrapped: Box<dyn Any> = Box::new(vec![packet]);
                *wrapped
                    .downcast::<Vec<I>>()
                    .expect("packets only reach consumers of packets")
            }
        }
    }
}

/// How a subscription asks for events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asking {
    /// The consumer asks itself; `credit` is what it asked for and has not received.
    Manual { credit: usize },
    /// The stage asks, refilling between `min` and `max`.
    Automatic(Demand),
}

/// One of the stage's subscriptions to a producer.
pub(crate) struct Upstream<I> {
    pub(crate) id: SubscriptionId,
    pub(crate) producer: ProducerRef<I>,
    pub(crate) cancel: CancelMode,
    /// Where the producer's batches wait.
    pub(crate) queue: Arc<Edge<Batch<I>>>,
    /// Where the asks wait for the producer.
    pub(crate) asks: Asks,
    asking: Asking,
    /// Events received on this subscription, for the stall watchdog.
    pub(crate) received: u64,
}

impl<I> Upstream<I> {
    /// What it has asked for and not received.
    pub(crate) fn credit(&self) -> usize {
        match self.asking {
            Asking::Manual { credit } => credit,
            Asking::Automatic(demand) => demand.credit(),
        }
    }
}

impl<I> Upstream<I> {
    /// Asks the producer for `n` more: queued, with a wake-up if its queue was empty.
    /// `false` if the producer is gone.
    pub(crate) fn ask(&self, n: usize) -> bool {
        match self.asks.push(n) {
            Ok(Pushed::Wake) => self.producer.wake(self.id),
            Ok(Pushed::Queued) => true,
            Err(_) => false,
        }
    }
}

/// What arriving events are, for the stage.
pub(crate) enum Arrival {
    /// No such subscription (any more).
    Unknown,
    /// A manual subscription: handle the batch whole.
    Whole,
    /// An automatic subscription: cut the batch with [`Inlet::next_cut`].
    Cut(Message),
}

/// Why a manual ask was not sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AskRefused {
    Unknown,
    Automatic,
}

/// What a producer-consumer's inbox holds while it has no downstream demand.
pub(crate) enum Inbound<I, M> {
    Events(SubscriptionId, Batch<I>),
    Cancel(SubscriptionId, Cancel),
    Info(M),
}

/// The consumer side of one stage. `M` is the info message type (opaque here).
pub(crate) struct Inlet<I, M> {
    /// Few in practice: a linear search beats hashing.
    upstreams: Vec<Upstream<I>>,
    inbox: VecDeque<Inbound<I, M>>,
    events_in: u64,
}

impl<I: Send + 'static, M> Default for Inlet<I, M> {
    fn default() -> Self {
        Inlet {
            upstreams: Vec::new(),
            inbox: VecDeque::new(),
            events_in: 0,
        }
    }
}

impl<I: Send + 'static, M> Inlet<I, M> {
    fn find(&self, id: SubscriptionId) -> Option<usize> {
        self.upstreams.iter().position(|u| u.id == id)
    }

    // ----- subscriptions -----

    /// Records a subscription, manual until [`automatic`](Inlet::automatic) says otherwise:
    /// it exists before the consumer's `handle_subscribe` runs, so that the asks that handler
    /// makes reach the producer after the subscription itself.
    pub(crate) fn add(
        &mut self,
        id: SubscriptionId,
        producer: ProducerRef<I>,
        cancel: CancelMode,
        queue: Arc<Edge<Batch<I>>>,
        asks: Asks,
    ) {
        self.upstreams.push(Upstream {
            id,
            producer,
            cancel,
            queue,
            asks,
            asking: Asking::Manual { credit: 0 },
            received: 0,
        });
    }

    /// Makes a subscription automatic. Returns it, to ask for `max`.
    pub(crate) fn automatic(
        &mut self,
        id: SubscriptionId,
        max: usize,
        min: usize,
    ) -> Option<&Upstream<I>> {
        let i = self.find(id)?;
        let up = &mut self.upstreams[i];
        up.asking = Asking::Automatic(Demand::new(max, min));
        Some(up)
    }

    /// A subscription, if it exists.
    pub(crate) fn get(&self, id: SubscriptionId) -> Option<&Upstream<I>> {
        self.find(id).map(|i| &self.upstreams[i])
    }

    /// Forgets a subscription.
    pub(crate) fn remove(&mut self, id: SubscriptionId) -> Option<Upstream<I>> {
        self.find(id).map(|i| self.upstreams.swap_remove(i))
    }

    /// Whether the stage has no subscription left.
    pub(crate) fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    /// Every subscription.
    pub(crate) fn upstreams(&self) -> &[Upstream<I>] {
        &self.upstreams
    }

    /// Every subscription, forgotten (when the stage exits).
    pub(crate) fn take_all(&mut self) -> Vec<Upstream<I>> {
        std::mem::take(&mut self.upstreams)
    }

    /// A manual ask of `n`: returns the subscription to send it on.
    pub(crate) fn manual_ask(
        &mut self,
        id: SubscriptionId,
        n: usize,
    ) -> Result<&Upstream<I>, AskRefused> {
        let i = self.find(id).ok_or(AskRefused::Unknown)?;
        let up = &mut self.upstreams[i];
        match &mut up.asking {
            Asking::Manual { credit } => {
                *credit = credit.saturating_add(n);
                Ok(up)
            }
            Asking::Automatic(_) => Err(AskRefused::Automatic),
        }
    }

    // ----- events -----

    /// `len` events arrived on `id`.
    pub(crate) fn arrive(&mut self, id: SubscriptionId, len: usize) -> Arrival {
        let Some(i) = self.find(id) else {
            return Arrival::Unknown;
        };
        self.events_in += len as u64;
        self.upstreams[i].received += len as u64;
        match &mut self.upstreams[i].asking {
            Asking::Manual { credit } => {
                *credit = credit.saturating_sub(len);
                Arrival::Whole
            }
            Asking::Automatic(demand) => Arrival::Cut(demand.message(len)),
        }
    }

    /// The next batch of an automatic subscription's message, with the ask to send once it
    /// has been handled; `None` once the message is done (or the subscription is gone).
    pub(crate) fn next_cut(&mut self, id: SubscriptionId, message: &mut Message) -> Option<Cut> {
        let i = self.find(id)?;
        match &mut self.upstreams[i].asking {
            Asking::Automatic(demand) => demand.next_batch(message),
            Asking::Manual { .. } => None,
        }
    }

    /// Counts events handled whole for a subscription that is gone (a producer-consumer's
    /// queued events of a subscription removed since).
    pub(crate) fn count_orphans(&mut self, len: usize) {
        self.events_in += len as u64;
    }

    /// Events received since the start.
    pub(crate) fn events_in(&self) -> u64 {
        self.events_in
    }

    /// Each subscription's credit: what it has asked for and not received.
    pub(crate) fn credits(&self) -> Vec<(SubscriptionId, usize)> {
        let mut credits: Vec<_> = self.upstreams.iter().map(|u| (u.id, u.credit())).collect();
        credits.sort();
        credits
    }

    // ----- a producer-consumer's inbox -----

    /// Whether an upstream message must wait in the inbox: while there is no downstream demand
    /// to process it with, or while older messages wait (messages keep their order, so a
    /// cancel or an info never overtakes events queued before it).
    pub(crate) fn must_wait(&self, downstream_demand: usize) -> bool {
        downstream_demand == 0 || !self.inbox.is_empty()
    }

    /// Queues an upstream message.
    pub(crate) fn wait(&mut self, item: Inbound<I, M>) {
        self.inbox.push_back(item);
    }

    /// The oldest queued message.
    pub(crate) fn next_waiting(&mut self) -> Option<Inbound<I, M>> {
        self.inbox.pop_front()
    }

    /// Whether nothing waits in the inbox.
    pub(crate) fn inbox_is_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    /// How many messages wait in the inbox.
    pub(crate) fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// The reason of the first producer's end waiting in the inbox that stops or finishes the
    /// stage once handled (its subscription's cancel mode exits on it), if any.
    pub(crate) fn waiting_end(&self) -> Option<&Reason> {
        self.inbox.iter().find_map(|item| match item {
            Inbound::Cancel(id, cancel) => {
                let reason = cancel.reason();
                let up = self.get(*id)?;
                up.cancel.exits_on(reason).then_some(reason)
            }
            _ => None,
        })
    }

    /// Empties the inbox (when the stage exits): the events, by subscription, in order.
    pub(crate) fn take_waiting_events(&mut self) -> Vec<(SubscriptionId, Batch<I>)> {
        self.inbox
            .drain(..)
            .filter_map(|item| match item {
                Inbound::Events(id, batch) => Some((id, batch)),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::ProducerRef;

    fn producer() -> ProducerRef<u32> {
        ProducerRef::not_a_producer("test".into())
    }

    fn add(i: &mut Inlet<u32, &'static str>, n: u64) {
        i.add(
            id(n),
            producer(),
            CancelMode::Permanent,
            Arc::default(),
            Arc::default(),
        );
    }

    fn id(n: u64) -> SubscriptionId {
        SubscriptionId::from_raw(n)
    }

    fn inlet() -> Inlet<u32, &'static str> {
        Inlet::default()
    }

    #[test]
    fn automatic_subscriptions_cut_messages_and_ask_after_each_batch() {
        let mut i = inlet();
        add(&mut i, 1);
        assert!(i.automatic(id(1), 10, 5).is_some());
        let Arrival::Cut(mut message) = i.arrive(id(1), 10) else {
            panic!("automatic");
        };
        let cuts: Vec<_> = std::iter::from_fn(|| i.next_cut(id(1), &mut message))
            .map(|c| (c.len, c.ask))
            .collect();
        assert_eq!(cuts, [(5, 5), (5, 5)]);
        assert_eq!(i.credits(), [(id(1), 10)]);
        assert_eq!(i.events_in(), 10);
    }

    #[test]
    fn manual_subscriptions_take_batches_whole_and_count_credit() {
        let mut i = inlet();
        add(&mut i, 1);
        assert!(i.manual_ask(id(1), 7).is_ok());
        assert!(matches!(i.arrive(id(1), 3), Arrival::Whole));
        assert_eq!(i.credits(), [(id(1), 4)]);
        i.automatic(id(1), 10, 5);
        assert_eq!(i.manual_ask(id(1), 1).err(), Some(AskRefused::Automatic));
        assert_eq!(i.manual_ask(id(2), 1).err(), Some(AskRefused::Unknown));
    }

    #[test]
    fn events_of_an_unknown_subscription_are_not_counted() {
        let mut i = inlet();
        assert!(matches!(i.arrive(id(9), 3), Arrival::Unknown));
        assert_eq!(i.events_in(), 0);
        i.count_orphans(3);
        assert_eq!(i.events_in(), 3);
    }

    #[test]
    fn the_inbox_keeps_order_once_anything_waits() {
        let mut i = inlet();
        assert!(i.must_wait(0), "no downstream demand");
        assert!(!i.must_wait(5));
        i.wait(Inbound::Events(id(1), Batch::Events(vec![1, 2])));
        assert!(
            i.must_wait(5),
            "older messages wait: nothing overtakes them"
        );
        i.wait(Inbound::Info("after"));
        i.wait(Inbound::Events(id(1), Batch::Events(vec![3])));
        assert_eq!(i.inbox_len(), 3);
        assert!(matches!(i.next_waiting(), Some(Inbound::Events(_, _))));
        let waiting = i.take_waiting_events();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].1.len(), 1);
        assert!(i.inbox_is_empty());
    }

    #[test]
    fn batches_of_packets_split_by_events() {
        let mut b: Batch<Packet> = Batch::Packet(Packet::new(vec![1u8, 2, 3]));
        let rest = b.split_off(1);
        assert_eq!((b.len(), rest.len()), (1, 2));
        let events = rest.into_events();
        assert_eq!(events.len(), 1, "one packet");
        assert_eq!(events[0].len(), 2, "of two events");
    }
}

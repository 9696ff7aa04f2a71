//! Batches whose event type is erased, for stages that take producers of types they cannot name.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::context::Cancel;
use crate::mailbox::{Ack, Downstream, ProducerRef, Upstream};
use crate::options::{SubscribeOptions, SubscriptionId};

/// A batch of events whose type is erased: one `Packet` carries a whole `Vec<T>`.
///
/// Made by [`ProducerRef::erase`]. A consumer of packets receives each batch its producer sends
/// as one packet, so it must subscribe in [manual](crate::SubscriptionMode::Manual) mode and
/// count demand in events itself ([`Packet::len`]), for example with [`crate::demand::Demand`].
/// This is how `flow` builds stages whose input type is only known where the flow starts.
///
/// # Examples
///
/// ```
/// use stage::Packet;
///
/// let mut p = Packet::new(vec![1u8, 2, 3]);
/// let rest = p.split_off(1);
/// assert_eq!((p.len(), rest.len()), (1, 2));
/// assert_eq!(rest.downcast::<u8>().unwrap(), vec![2, 3]);
/// assert!(p.downcast::<u16>().is_err());
/// ```
pub struct Packet(Box<dyn ErasedVec>);

trait ErasedVec: Send {
    fn len(&self) -> usize;
    fn split_off(&mut self, at: usize) -> Box<dyn ErasedVec>;
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    fn type_name(&self) -> &'static str;
}

impl<T: Send + 'static> ErasedVec for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn split_off(&mut self, at: usize) -> Box<dyn ErasedVec> {
        Box::new(Vec::split_off(self, at))
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

impl Packet {
    /// Wraps a batch.
    pub fn new<T: Send + 'static>(events: Vec<T>) -> Self {
        Packet(Box::new(events))
    }

    /// How many events the packet holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the packet holds no events.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Keeps the first `at` events and returns the rest as another packet.
    ///
    /// # Panics
    ///
    /// If `at` is greater than [`len`](Packet::len).
    pub fn split_off(&mut self, at: usize) -> Packet {
        Packet(self.0.split_off(at))
    }

    /// The events, if they are `T`s; the packet back otherwise.
    ///
    /// # Errors
    ///
    /// The packet itself when its events are not `T`s.
    pub fn downcast<T: Send + 'static>(self) -> Result<Vec<T>, Packet> {
        if self.0.type_name() != std::any::type_name::<T>() {
            return Err(self);
        }
        match self.0.into_any().downcast::<Vec<T>>() {
            Ok(events) => Ok(*events),
            Err(_) => unreachable!("type names matched"),
        }
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packet<{}>({} events)", self.0.type_name(), self.len())
    }
}

/// A consumer of packets, as a producer of `T` holds it.
struct PacketSink(Box<dyn Downstream<Packet>>);

impl<T: Send + 'static> Downstream<T> for PacketSink {
    fn events(&self, id: SubscriptionId, events: Vec<T>) -> bool {
        self.0.events(id, vec![Packet::new(events)])
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool {
        self.0.cancel(id, cancel)
    }
}

/// A producer of `T` seen as a producer of packets.
struct Erased<T>(Arc<dyn Upstream<T>>);

impl<T: Send + 'static> Upstream<Packet> for Erased<T> {
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<Packet>>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool {
        self.0.subscribe(id, Box::new(PacketSink(sink)), opts, ack)
    }
    fn ask(&self, id: SubscriptionId, n: usize) -> bool {
        self.0.ask(id, n)
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool {
        self.0.cancel(id, cancel)
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<T: Send + 'static> ProducerRef<T> {
    /// The same producer, seen as a producer of [`Packet`]s: each batch it sends arrives as one
    /// packet. Demand is still counted in events: ask for `n` and up to `n` events arrive.
    pub fn erase(&self) -> ProducerRef<Packet> {
        ProducerRef(Arc::new(Erased(Arc::clone(&self.0))))
    }
}

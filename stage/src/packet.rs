//! Batches whose event type is erased, for stages that take producers of types they cannot name.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

use crate::address::{Ack, Asks, Downstream, ProducerRef, Upstream};
use crate::error::{Cancel, SubscribeError};
use crate::options::{SubscribeOptions, SubscriptionId};

/// A batch of events whose type is erased: one `Packet` carries a whole `Vec<T>`.
///
/// Made by [`ProducerRef::erase`]. A consumer of packets (`type In = Packet`) receives each
/// batch its producer sends as one packet, through
/// [`Consumer::handle_packet`](crate::Consumer::handle_packet). Demand is still counted in
/// events: an automatic subscription cuts packets with [`split_off`](Packet::split_off)
/// exactly as it cuts batches of events. This is how `flow` builds stages whose input type is
/// only known where the flow starts.
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
    fn event_type(&self) -> TypeId;
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
    fn event_type(&self) -> TypeId {
        TypeId::of::<T>()
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
        if self.0.event_type() != TypeId::of::<T>() {
            return Err(self);
        }
        match self.0.into_any().downcast::<Vec<T>>() {
            Ok(events) => Ok(*events),
            Err(_) => unreachable!("the event types matched"),
        }
    }

    /// Whether the packet holds `T`s.
    pub fn holds<T: 'static>(&self) -> bool {
        self.0.event_type() == TypeId::of::<T>()
    }
}

impl fmt::Debug for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packet<{}>({} events)", self.0.type_name(), self.len())
    }
}

/// A consumer of packets, as a producer of `T` holds it: each batch goes as one packet.
struct PacketSink(Box<dyn Downstream<Packet>>);

impl<T: Send + 'static> Downstream<T> for PacketSink {
    fn events(&self, id: SubscriptionId, events: Vec<T>) -> Result<(), Vec<T>> {
        self.0
            .packet(id, Packet::new(events))
            .map_err(|packet| packet.downcast().expect("the packet just made"))
    }
    fn packet(&self, id: SubscriptionId, packet: Packet) -> Result<(), Packet> {
        self.0.packet(id, packet)
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool {
        self.0.cancel(id, cancel)
    }
    fn name(&self) -> &str {
        self.0.name()
    }
}

/// Events of the type `T` from packets that hold them; others are counted in `lost`.
fn unpack<T: Send + 'static>(packets: Vec<Packet>, lost: &mut usize) -> Vec<T> {
    let mut events = Vec::new();
    for packet in packets {
        match packet.downcast::<T>() {
            Ok(mut more) if events.is_empty() => std::mem::swap(&mut events, &mut more),
            Ok(mut more) => events.append(&mut more),
            Err(packet) => *lost += packet.len(),
        }
    }
    events
}

/// A producer of `T` seen as a producer of packets.
struct Erased<T>(Arc<dyn Upstream<T>>);

impl<T: Send + 'static> Upstream<Packet> for Erased<T> {
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<Packet>>,
        asks: Asks,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool {
        self.0
            .subscribe(id, Box::new(PacketSink(sink)), asks, opts, ack)
    }
    fn wake(&self, id: SubscriptionId) -> bool {
        self.0.wake(id)
    }
    fn cancel(
        &self,
        id: SubscriptionId,
        cancel: Cancel,
        returned: Vec<Packet>,
    ) -> Result<(), Vec<Packet>> {
        let mut lost = 0;
        let events = unpack::<T>(returned, &mut lost);
        if lost > 0 {
            tracing::error!(%id, lost, "events of another type returned to a producer were dropped");
        }
        self.0
            .cancel(id, cancel, events)
            .map_err(|events| vec![Packet::new(events)])
    }
    fn check(&self, opts: &SubscribeOptions) -> Result<(), SubscribeError> {
        self.0.check(opts)
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn name(&self) -> Arc<str> {
        self.0.name()
    }
}

impl<T: Send + 'static> ProducerRef<T> {
    /// The same producer, seen as a producer of [`Packet`]s: each batch it sends arrives as one
    /// packet. Demand is still counted in events: ask for `n` and up to `n` events arrive.
    pub fn erase(&self) -> ProducerRef<Packet> {
        ProducerRef(Arc::new(Erased(Arc::clone(&self.0))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacking_keeps_order_and_counts_strangers() {
        let mut lost = 0;
        let packets = vec![
            Packet::new(vec![1u8, 2]),
            Packet::new(vec!["x"]),
            Packet::new(vec![3u8]),
        ];
        assert_eq!(unpack::<u8>(packets, &mut lost), vec![1, 2, 3]);
        assert_eq!(lost, 1);
    }

    #[test]
    fn downcast_is_by_type_not_by_name() {
        mod a {
            pub(crate) struct Same;
        }
        mod b {
            pub(crate) struct Same;
        }
        let p = Packet::new(vec![a::Same]);
        assert!(p.holds::<a::Same>());
        assert!(p.downcast::<b::Same>().is_err());
    }
}

//! A running stage's one mailbox, and the addresses built on it.

use std::sync::Arc;

use super::mail;
use crate::address::{Ack, Asks, Downstream, Upstream};
use crate::dispatcher::Contract;
use crate::edge::{Edge, Pushed};
use crate::error::{Cancel, SubscribeError};
use crate::handle::{Control, ControlTx};
use crate::inlet::Batch;
use crate::options::{SubscribeOptions, SubscriptionId};
use crate::packet::Packet;

/// Everything a stage `S` with input `I` and output `O` can be sent. One channel for all, so
/// that messages from a peer and from a handle keep the order they were sent in (a call is a
/// barrier for everything sent before it).
///
/// Batches and asks wait in their subscription's queues ([`Edge`]); the mailbox only carries
/// the wake-up for a queue that was empty. The rare messages are boxed, so that each slot of
/// the channel, copied in and out for every message, stays small.
pub(crate) enum Envelope<S, O> {
    // From our producers.
    /// Batches wait in the subscription's queue.
    Batches(SubscriptionId),
    ProducerCancel(SubscriptionId, Box<Cancel>),
    // From our consumers.
    Subscribe(Box<Subscription<O>>),
    /// Asks wait in the subscription's queue.
    Asks(SubscriptionId),
    /// A consumer cancelled or exited, giving back the events it never handled.
    ConsumerCancel(Box<(SubscriptionId, Cancel, Vec<O>)>),
    // From handles and the stage itself.
    Control(Box<Control<S>>),
}

/// A consumer subscribing.
pub(crate) struct Subscription<O> {
    pub(crate) id: SubscriptionId,
    pub(crate) sink: Box<dyn Downstream<O>>,
    pub(crate) asks: Asks,
    pub(crate) opts: SubscribeOptions,
    pub(crate) ack: Option<Ack>,
}

/// The sending side of a stage's mailbox.
pub(crate) struct Mailbox<S, O>(pub(crate) mail::Sender<Envelope<S, O>>);

impl<S, O> Clone for Mailbox<S, O> {
    fn clone(&self) -> Self {
        Mailbox(self.0.clone())
    }
}

impl<S, O> Mailbox<S, O> {
    pub(crate) fn send(&self, envelope: Envelope<S, O>) -> bool {
        self.0.send(envelope).is_ok()
    }
}

impl<S: Send + 'static, O: Send + 'static> ControlTx<S> for Mailbox<S, O> {
    fn send(&self, control: Control<S>) -> Result<(), Control<S>> {
        self.0
            .send(Envelope::Control(Box::new(control)))
            .map_err(|e| match e {
                Envelope::Control(control) => *control,
                _ => unreachable!("sent a control"),
            })
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A consumer's end of one subscription: the queue its batches wait in, and its mailbox for
/// the wake-up.
pub(crate) struct Inbox<S, I, O> {
    pub(crate) mailbox: Mailbox<S, O>,
    pub(crate) queue: std::sync::Arc<Edge<Batch<I>>>,
    /// The consumer's name.
    pub(crate) name: Arc<str>,
}

impl<S: Send + 'static, I: Send + 'static, O: Send + 'static> Inbox<S, I, O> {
    fn push(&self, id: SubscriptionId, batch: Batch<I>) -> Result<(), Batch<I>> {
        if self.queue.push(batch)? == Pushed::Wake {
            // A consumer that is exiting finds the batch in its queue when it closes it.
            self.mailbox.send(Envelope::Batches(id));
        }
        Ok(())
    }
}

impl<S: Send + 'static, I: Send + 'static, O: Send + 'static> Downstream<I> for Inbox<S, I, O> {
    fn events(&self, id: SubscriptionId, events: Vec<I>) -> Result<(), Vec<I>> {
        self.push(id, Batch::Events(events))
            .map_err(|batch| batch.into_events())
    }
    fn packet(&self, id: SubscriptionId, packet: Packet) -> Result<(), Packet> {
        self.push(id, Batch::Packet(packet))
            .map_err(|batch| match batch {
                Batch::Packet(packet) => packet,
                Batch::Events(_) => unreachable!("pushed a packet"),
            })
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool {
        self.mailbox
            .send(Envelope::ProducerCancel(id, Box::new(cancel)))
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// A stage's address as a producer: its mailbox and what its dispatcher accepts.
pub(crate) struct ProducerAddress<S, O> {
    pub(crate) mailbox: Mailbox<S, O>,
    pub(crate) contract: Contract,
    pub(crate) name: Arc<str>,
}

impl<S: Send + 'static, O: Send + 'static> Upstream<O> for ProducerAddress<S, O> {
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<O>>,
        asks: Asks,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool {
        self.mailbox
            .send(Envelope::Subscribe(Box::new(Subscription {
                id,
                sink,
                asks,
                opts,
                ack,
            })))
    }
    fn wake(&self, id: SubscriptionId) -> bool {
        self.mailbox.send(Envelope::Asks(id))
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel, returned: Vec<O>) -> Result<(), Vec<O>> {
        self.mailbox
            .0
            .send(Envelope::ConsumerCancel(Box::new((id, cancel, returned))))
            .map_err(|e| match e {
                Envelope::ConsumerCancel(cancel) => cancel.2,
                _ => unreachable!("sent a cancel"),
            })
    }
    fn check(&self, opts: &SubscribeOptions) -> Result<(), SubscribeError> {
        self.contract.check::<O>(opts)
    }
    fn is_closed(&self) -> bool {
        self.mailbox.0.is_closed()
    }
    fn name(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }
}

//! A running stage's one mailbox, and the addresses built on it.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::address::{Ack, Downstream, Upstream};
use crate::dispatcher::Contract;
use crate::error::{Cancel, SubscribeError};
use crate::handle::{Control, ControlTx};
use crate::options::{SubscribeOptions, SubscriptionId};
use crate::packet::Packet;

/// Everything a stage `S` with input `I` and output `O` can be sent. One channel for all, so
/// that messages from a peer and from a handle keep the order they were sent in (a call is a
/// barrier for everything sent before it).
///
/// The messages sent per batch (events, asks) are small; the rare ones are boxed, so that each
/// slot of the channel, copied in and out for every message, stays 40 bytes.
pub(crate) enum Envelope<S, I, O> {
    // From our producers.
    Events(SubscriptionId, Vec<I>),
    Packet(SubscriptionId, Packet),
    ProducerCancel(SubscriptionId, Box<Cancel>),
    // From our consumers.
    Subscribe(Box<Subscription<O>>),
    Ask(SubscriptionId, usize),
    /// A consumer cancelled or exited, giving back the events it never handled.
    ConsumerCancel(Box<(SubscriptionId, Cancel, Vec<O>)>),
    // From handles and the stage itself.
    Control(Box<Control<S>>),
}

/// A consumer subscribing.
pub(crate) struct Subscription<O> {
    pub(crate) id: SubscriptionId,
    pub(crate) sink: Box<dyn Downstream<O>>,
    pub(crate) opts: SubscribeOptions,
    pub(crate) ack: Option<Ack>,
}

/// The sending side of a stage's mailbox.
pub(crate) struct Mailbox<S, I, O>(pub(crate) mpsc::UnboundedSender<Envelope<S, I, O>>);

impl<S, I, O> Clone for Mailbox<S, I, O> {
    fn clone(&self) -> Self {
        Mailbox(self.0.clone())
    }
}

impl<S, I, O> Mailbox<S, I, O> {
    pub(crate) fn send(&self, envelope: Envelope<S, I, O>) -> bool {
        self.0.send(envelope).is_ok()
    }
}

impl<S: Send + 'static, I: Send + 'static, O: Send + 'static> ControlTx<S> for Mailbox<S, I, O> {
    fn send(&self, control: Control<S>) -> Result<(), Control<S>> {
        self.0
            .send(Envelope::Control(Box::new(control)))
            .map_err(|e| match e.0 {
                Envelope::Control(control) => *control,
                _ => unreachable!("sent a control"),
            })
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<S: Send + 'static, I: Send + 'static, O: Send + 'static> Downstream<I> for Mailbox<S, I, O> {
    fn events(&self, id: SubscriptionId, events: Vec<I>) -> Result<(), Vec<I>> {
        self.0
            .send(Envelope::Events(id, events))
            .map_err(|e| match e.0 {
                Envelope::Events(_, events) => events,
                _ => unreachable!("sent events"),
            })
    }
    fn packet(&self, id: SubscriptionId, packet: Packet) -> Result<(), Packet> {
        self.0
            .send(Envelope::Packet(id, packet))
            .map_err(|e| match e.0 {
                Envelope::Packet(_, packet) => packet,
                _ => unreachable!("sent a packet"),
            })
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel) -> bool {
        self.0
            .send(Envelope::ProducerCancel(id, Box::new(cancel)))
            .is_ok()
    }
}

/// A stage's address as a producer: its mailbox and what its dispatcher accepts.
pub(crate) struct ProducerAddress<S, I, O> {
    pub(crate) mailbox: Mailbox<S, I, O>,
    pub(crate) contract: Contract,
    pub(crate) name: Arc<str>,
}

impl<S: Send + 'static, I: Send + 'static, O: Send + 'static> Upstream<O>
    for ProducerAddress<S, I, O>
{
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<O>>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool {
        self.mailbox.send(Envelope::Subscribe(Box::new(Subscription {
            id,
            sink,
            opts,
            ack,
        })))
    }
    fn ask(&self, id: SubscriptionId, n: usize) -> bool {
        self.mailbox.send(Envelope::Ask(id, n))
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel, returned: Vec<O>) -> Result<(), Vec<O>> {
        self.mailbox
            .0
            .send(Envelope::ConsumerCancel(Box::new((id, cancel, returned))))
            .map_err(|e| match e.0 {
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

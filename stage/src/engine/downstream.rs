//! The producer side of the shell: consumers subscribing, asking and leaving, and carrying out
//! what the [`Outlet`](crate::outlet::Outlet) decides.

use std::sync::Arc;

use tracing::{debug, trace, warn};

use super::drive::Drive;
use super::{Engine, Sink};
use crate::address::Ack;
use crate::error::{Cancel, Reason};
use crate::handle::Role;
use crate::options::{DemandMode, SubscribeOptions, SubscriptionId};

impl<S: Send + 'static, D: Drive<S>> Engine<S, D> {
    pub(super) async fn consumer_subscribed(
        &mut self,
        sink: Sink<D::Out>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) {
        let id = sink.id;
        if !D::EMITS {
            sink.downstream.cancel(
                id,
                Cancel::Cancelled(Reason::Rejected(Arc::from("the stage is not a producer"))),
            );
            return;
        }
        if let Err(err) = self.outlet.subscribe(id, &opts) {
            let reason = Reason::Rejected(Arc::from(err.to_string()));
            sink.downstream.cancel(id, Cancel::Cancelled(reason));
            if let Some(ack) = ack {
                let _ = ack.send(Err(err));
            }
            return;
        }
        self.sinks.push(sink);
        self.had_consumers = true;
        if let Some(ack) = ack {
            let _ = ack.send(Ok(id));
        }
        D::consumer_joined(&mut self.stage, id, &opts, &mut self.ctx).await;
        self.apply();
    }

    /// Asks wait in a consumer's queue: each is its own ask, in order, with its own
    /// `handle_demand`.
    pub(super) async fn asks_arrived(&mut self, id: SubscriptionId) {
        let Some(sink) = self.sinks.iter_mut().find(|s| s.id == id) else {
            debug!(stage = %self.name, %id, "asks for an unknown subscription ignored");
            return;
        };
        let mut asks = std::mem::take(&mut self.asks);
        sink.asks.take_into(&mut asks);
        sink.asked = asks
            .iter()
            .fold(sink.asked, |total, &n| total.saturating_add(n as u64));
        for n in asks.drain(..) {
            if self.halted() {
                // The rest are never answered: the stage is stopping.
                break;
            }
            trace!(stage = %self.name, subscription = %id, demand = n, "asked");
            self.outlet.ask(id, n);
            self.produce().await;
        }
        self.asks = asks;
    }

    /// Calls `handle_demand` with the demand the outlet has for it, if any.
    pub(super) async fn produce(&mut self) {
        let demand = if self.shutting {
            0
        } else {
            self.outlet.take_produce()
        };
        if demand > 0 {
            let events = D::demand(&mut self.stage, demand, &mut self.ctx).await;
            self.apply();
            self.emit(events);
        }
    }

    pub(super) async fn consumer_cancelled(
        &mut self,
        id: SubscriptionId,
        cancel: Cancel,
        returned: Vec<D::Out>,
    ) {
        let Some(at) = self.sinks.iter().position(|s| s.id == id) else {
            // Forgotten after a failed send; what it gives back still counts.
            if !returned.is_empty() {
                self.outlet.cancel(id, returned);
            }
            return;
        };
        // What the consumer was sent goes before the confirmation.
        self.deliver();
        let sink = self.sinks.swap_remove(at);
        if !cancel.is_down() {
            sink.downstream.cancel(id, cancel.clone());
        }
        // The dispatcher forgets the consumer before `handle_cancel` runs, so that events the
        // handler emits go to the consumers that remain (upstream routes them to the one that
        // left, and they are lost).
        self.outlet.cancel(id, returned);
        D::consumer_left(&mut self.stage, cancel, id, &mut self.ctx).await;
        self.apply();
    }

    /// Dispatches `events` a handler produced.
    pub(super) fn emit(&mut self, events: Vec<D::Out>) {
        if !events.is_empty() {
            self.outlet.emit(events);
        }
    }

    /// Sends what the outlet decided to send since the last time, one message per batch the
    /// dispatcher made. The stage calls this before it waits for its next message, every few
    /// messages of a burst, and before anything that can be seen from outside (a reply, a
    /// call or cast, its counters, a cancel, its exit). A consumer whose mailbox is closed is
    /// gone: the dispatcher forgets it and gets its batch back, to give to the others.
    pub(super) fn deliver(&mut self) {
        if !D::EMITS {
            return;
        }
        loop {
            let mut failed = Vec::new();
            let Engine {
                outlet,
                sinks,
                events_out,
                meter,
                ..
            } = self;
            for (id, batch) in outlet.sends() {
                let n = batch.len() as u64;
                let Some(sink) = sinks.iter_mut().find(|s| s.id == id) else {
                    failed.push((id, batch));
                    continue;
                };
                match sink.downstream.events(id, batch) {
                    Ok(()) => {
                        trace!(subscription = %id, events = n, "dispatched");
                        sink.sent += n;
                        *events_out += n;
                        meter.sent(n);
                    }
                    Err(batch) => failed.push((id, batch)),
                }
            }
            if failed.is_empty() {
                break;
            }
            // Each give-back goes to the front of the buffer: a consumer's failed batches go
            // back as one, in the order they were made, and the consumer that failed last goes
            // back first, so that older events stay in front of newer ones.
            while let Some(&(id, _)) = failed.last() {
                let mut events = Vec::new();
                failed.retain_mut(|(other, batch)| {
                    if *other != id {
                        return true;
                    }
                    events.append(batch);
                    false
                });
                debug!(stage = %self.name, %id, "consumer gone; its batches go back");
                self.outlet.cancel(id, events);
            }
        }
        // Reading the dispatcher's queue length costs a virtual call: only with the feature.
        #[cfg(feature = "metrics")]
        self.meter.buffered(self.outlet.buffered());
        let discarded = self.outlet.take_discarded();
        if discarded > 0 {
            self.meter.discarded(discarded);
        }
        if discarded > 0 && D::discarded(&mut self.stage, discarded) {
            warn!(stage = %self.name, dropped = discarded, "producer has discarded events from buffer");
        }
    }

    pub(super) async fn set_demand(&mut self, mode: DemandMode) {
        if D::ROLE != Role::Producer {
            warn!(stage = %self.name, "demand mode can only be set for producers");
            return;
        }
        if !self.outlet.set_mode(mode) {
            return;
        }
        while self.stop.is_none() && self.outlet.replay() {
            // The logged events still go out; the logged demand, like any demand, is not
            // produced by a stage that is shutting down.
            let demand = if self.shutting {
                0
            } else {
                self.outlet.take_produce()
            };
            if demand > 0 {
                let events = D::demand(&mut self.stage, demand, &mut self.ctx).await;
                self.apply();
                self.emit(events);
            }
        }
    }
}

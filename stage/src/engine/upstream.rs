//! The consumer side of the shell: subscribing to producers, receiving their events in
//! batches, asking for more, and their cancels.

use tracing::{debug, error, info, warn};

use std::sync::Arc;

use super::Engine;
use super::drive::Drive;
use super::mailbox::{Envelope, Inbox};
use crate::address::{Ack, Downstream, ProducerRef};
use crate::context::Job;
use crate::error::{Cancel, Reason, SubscribeError};
use crate::inlet::{Arrival, AskRefused, Batch, Inbound};
use crate::options::{CancelMode, SubscribeOptions, SubscriptionId, SubscriptionMode};

impl<S: Send + 'static, D: Drive<S>> Engine<S, D> {
    pub(super) async fn subscribe_to(
        &mut self,
        producer: ProducerRef<D::In>,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) {
        if self.shutting {
            // A shutdown waits for every producer to end: a new one would keep it waiting.
            debug!(stage = %self.name, "subscription refused: the stage is shutting down");
            if let Some(ack) = ack {
                let _ = ack.send(Err(SubscribeError::ShuttingDown));
            }
            return;
        }
        let (max, min) = match opts.limits() {
            Ok(limits) => limits,
            Err(err) => {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(err.into()));
                }
                return;
            }
        };
        if producer.is_closed() {
            self.no_producer(opts.cancel_mode(), ack);
            return;
        }
        let id = SubscriptionId::next();
        let queue = Arc::default();
        let asks = Arc::default();
        let sink: Box<dyn Downstream<D::In>> = Box::new(Inbox {
            mailbox: self.me.clone(),
            queue: Arc::clone(&queue),
            name: Arc::clone(&self.name),
        });
        self.inlet.add(
            id,
            producer.clone(),
            opts.cancel_mode(),
            queue,
            Arc::clone(&asks),
        );
        if !producer.0.subscribe(id, sink, asks, opts.clone(), ack) {
            // The producer exited in between: it is down.
            self.producer_down(id);
        }
        let mode = D::subscribed_to(&mut self.stage, id, &opts, &mut self.ctx).await;
        if mode == SubscriptionMode::Automatic {
            if let Some(up) = self.inlet.automatic(id, max, min) {
                if !up.ask(max) {
                    self.producer_down(id);
                }
            }
        }
        self.apply();
    }

    fn no_producer(&mut self, cancel: CancelMode, ack: Option<Ack>) {
        if cancel != CancelMode::Temporary {
            info!(stage = %self.name, "could not subscribe: the producer is not running; stopping");
            self.stop.get_or_insert(Reason::NoProc);
        }
        if let Some(ack) = ack {
            let _ = ack.send(Err(SubscribeError::ProducerClosed));
        }
    }

    /// The producer of `id` is gone: its cancel goes through the mailbox, behind the events it
    /// sent before it exited, which are all in the mailbox already.
    fn producer_down(&self, id: SubscriptionId) {
        self.me.send(Envelope::ProducerCancel(
            id,
            Box::new(Cancel::Down(Reason::NoProc)),
        ));
    }

    pub(super) fn ask_upstream(&mut self, id: SubscriptionId, n: usize) {
        match self.inlet.manual_ask(id, n) {
            Ok(up) => {
                if !up.ask(n) {
                    self.producer_down(id);
                }
            }
            Err(AskRefused::Automatic) => {
                warn!(stage = %self.name, %id, "ask on an automatic subscription ignored");
            }
            Err(AskRefused::Unknown) => {}
        }
    }

    fn send_ask(&self, id: SubscriptionId, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(up) = self.inlet.get(id) {
            if !up.ask(n) {
                self.producer_down(id);
            }
        }
    }

    /// The batches waiting in subscription `id`'s queue, each as one message, in order. They
    /// are taken from the queue in one go, so batches that arrive while the stage handles them
    /// find it empty and send their own wake-up: they are handled after the messages that
    /// reached the mailbox in between (a stop, say) instead of before them. Until its turn, a
    /// taken batch waits in `arrived`, where an exit finds it to give it back.
    pub(super) async fn batches_arrived(&mut self, id: SubscriptionId) {
        let Some(up) = self.inlet.get(id) else {
            return;
        };
        up.queue.take_into(&mut self.arrived);
        self.arrived_from = id;
        while let Some(batch) = self.arrived.pop_front() {
            if let Some(batch) = self.events_arrived(id, batch) {
                self.consume(id, batch, false).await;
            }
            if self.halted() {
                // What is left is given back to the producer when the stage exits.
                return;
            }
        }
    }

    /// Events that arrived: a producer-consumer without downstream demand (or with older
    /// messages waiting) queues them; returns them when they are to be handled now.
    pub(super) fn events_arrived(
        &mut self,
        id: SubscriptionId,
        batch: Batch<D::In>,
    ) -> Option<Batch<D::In>> {
        if D::EMITS && self.inlet.must_wait(self.outlet.counter()) {
            self.inlet.wait(Inbound::Events(id, batch));
            None
        } else {
            Some(batch)
        }
    }

    pub(super) async fn producer_cancel_arrived(&mut self, id: SubscriptionId, cancel: Cancel) {
        // The producer sent what is still in the queue before it cancelled.
        while !self.halted() {
            let Some(batch) = self.inlet.get(id).and_then(|up| up.queue.pop()) else {
                break;
            };
            if let Some(batch) = self.events_arrived(id, batch) {
                self.consume(id, batch, false).await;
            }
        }
        if D::EMITS && !self.inlet.inbox_is_empty() {
            self.inlet.wait(Inbound::Cancel(id, cancel));
        } else {
            self.producer_cancelled(id, cancel).await;
        }
    }

    pub(super) async fn info_arrived(&mut self, job: Job<S>) {
        if !D::EMITS {
            self.run_job(job).await;
        } else if !self.inlet.inbox_is_empty() {
            self.inlet.wait(Inbound::Info(job));
        } else {
            self.outlet.info(job);
        }
    }

    /// A queued upstream message of a producer-consumer, now that it has downstream demand.
    pub(super) async fn inbound(&mut self, item: Inbound<D::In, Job<S>>) {
        match item {
            Inbound::Events(id, batch) => self.consume(id, batch, true).await,
            Inbound::Cancel(id, cancel) => self.producer_cancelled(id, cancel).await,
            Inbound::Info(job) => self.outlet.info(job),
        }
    }

    /// Handles one message of events from a producer: whole (manual), or cut into batches of
    /// at most `max - min` with an ask after each (automatic).
    pub(super) async fn consume(
        &mut self,
        id: SubscriptionId,
        mut batch: Batch<D::In>,
        queued: bool,
    ) {
        let len = batch.len();
        if len == 0 {
            return;
        }
        self.meter.received(len);
        let mut message = match self.inlet.arrive(id, len) {
            Arrival::Cut(message) => message,
            Arrival::Whole => {
                self.handle_batch(batch, id).await;
                return;
            }
            Arrival::Unknown if queued => {
                // Queued events of a subscription removed since are handled whole.
                self.inlet.count_orphans(len);
                self.handle_batch(batch, id).await;
                return;
            }
            Arrival::Unknown => {
                warn!(stage = %self.name, %id, dropped = len, "events for an unknown subscription dropped");
                self.dropped += len as u64;
                return;
            }
        };
        loop {
            let Some(cut) = self.inlet.next_cut(id, &mut message) else {
                return;
            };
            if cut.excess > 0 {
                error!(stage = %self.name, %id, excess = cut.excess, "consumer received events in excess of its demand");
            }
            // The rest waits in `unhandled` while the handler runs: if it panics, the stage
            // gives it back to the producer when it exits.
            let more = cut.len < batch.len();
            if more {
                let rest = batch.split_off(cut.len);
                self.unhandled.push((id, rest));
            }
            self.handle_batch(batch, id).await;
            self.send_ask(id, cut.ask);
            if !more {
                return;
            }
            let (_, rest) = self.unhandled.pop().expect("pushed before the handler ran");
            if self.halted() {
                // Never handled: given back to the producer when the stage exits.
                self.unhandled.push((id, rest));
                return;
            }
            batch = rest;
        }
    }

    async fn handle_batch(&mut self, batch: Batch<D::In>, id: SubscriptionId) {
        match batch {
            Batch::Events(events) => D::events(&mut self.stage, events, id, &mut self.ctx).await,
            Batch::Packet(packet) => D::packet(&mut self.stage, packet, id, &mut self.ctx).await,
        }
        self.apply();
    }

    pub(super) async fn producer_cancelled(&mut self, id: SubscriptionId, cancel: Cancel) {
        let Some(up) = self.inlet.remove(id) else {
            return;
        };
        let reason = cancel.reason().clone();
        D::producer_left(&mut self.stage, cancel, id, &mut self.ctx).await;
        self.apply();
        if self.shutting {
            self.shutdown_progress();
        } else if self.stop.is_none() && up.cancel.exits_on(&reason) {
            if D::EMITS && reason.is_normal() {
                // Upstream ended normally: send on what this stage still holds, then stop.
                debug!(stage = %self.name, %id, %reason, "producer-consumer finishing after its producer ended");
                self.finishing.get_or_insert(reason);
            } else {
                info!(stage = %self.name, %id, %reason, "consumer stopping after its producer cancelled");
                self.stop = Some(reason);
            }
        }
    }

    /// Cancels one of the stage's subscriptions, whichever side it is on.
    pub(super) async fn cancel(&mut self, id: SubscriptionId, reason: Reason) {
        if let Some(up) = self.inlet.get(id) {
            if up
                .producer
                .cancel(id, Cancel::Cancelled(reason), Vec::new())
                .is_err()
            {
                self.producer_down(id);
            }
        } else if self.sinks.iter().any(|s| s.id == id) {
            self.consumer_cancelled(id, Cancel::Cancelled(reason), Vec::new())
                .await;
        }
    }
}

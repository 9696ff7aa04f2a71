//! The stage every layer of a flow runs: packets in, its layer's logic, events out.

use std::collections::HashMap;

use stage::demand::Demand;
use stage::{
    Cancel, Context, Packet, Peer, ProducerConsumer, Reason, SubscribeOptions, SubscriptionId,
    SubscriptionMode,
};

use crate::logic::{Logic, Position};
use crate::trigger::{Trigger, TriggerName, Window};

/// What a flow tells its stages.
#[derive(Debug)]
pub(crate) enum Control {
    /// The stage's initial subscriptions are made (finish at once if there are none).
    Started,
}

/// One stage of a layer. It subscribes to its inputs in manual mode and counts demand itself,
/// exactly as an automatic consumer would (batches of `max - min`, refill at `min`).
pub(crate) struct FlowStage<O> {
    pos: Position,
    max: usize,
    min: usize,
    demands: HashMap<SubscriptionId, Demand>,
    consumers: usize,
    started: bool,
    finished: bool,
    logic: Box<dyn Logic<O>>,
}

impl<O: Send + 'static> FlowStage<O> {
    pub(crate) fn new(pos: Position, max: usize, min: usize, logic: Box<dyn Logic<O>>) -> Self {
        FlowStage {
            pos,
            max,
            min,
            demands: HashMap::new(),
            consumers: 0,
            started: false,
            finished: false,
            logic,
        }
    }

    fn finish(&mut self, ctx: &mut Context<O>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let done = Trigger {
            partition: self.pos.index,
            partitions: self.pos.count,
            window: Window::Global,
            name: TriggerName::Done,
        };
        ctx.emit(self.logic.trigger(&done));
        ctx.finish();
    }

    /// Cuts one packet into batches of at most `max - min`, processing each and asking for
    /// what it used.
    fn cut(&mut self, packet: Packet, id: SubscriptionId, ctx: &mut Context<O>, out: &mut Vec<O>) {
        let Some(demand) = self.demands.get_mut(&id) else {
            append(out, self.logic.process(packet));
            return;
        };
        let mut message = demand.message(packet.len());
        let mut rest = Some(packet);
        while let Some(batch) = demand.next_batch(&mut message) {
            let Some(mut chunk) = rest.take() else {
                break;
            };
            if batch.len < chunk.len() {
                rest = Some(chunk.split_off(batch.len));
            }
            append(out, self.logic.process(chunk));
            ctx.ask(id, batch.ask);
        }
    }
}

fn append<O>(out: &mut Vec<O>, mut more: Vec<O>) {
    if out.is_empty() {
        std::mem::swap(out, &mut more);
    } else {
        out.append(&mut more);
    }
}

impl<O: Send + 'static> ProducerConsumer for FlowStage<O> {
    type In = Packet;
    type Out = O;
    type Call = ();
    type Reply = ();
    type Msg = Control;

    async fn handle_subscribe(
        &mut self,
        peer: Peer,
        id: SubscriptionId,
        _: &SubscribeOptions,
        ctx: &mut Context<O>,
    ) -> SubscriptionMode {
        match peer {
            Peer::Producer => {
                self.demands.insert(id, Demand::new(self.max, self.min));
                ctx.ask(id, self.max);
                SubscriptionMode::Manual
            }
            Peer::Consumer => {
                self.consumers += 1;
                SubscriptionMode::Automatic
            }
        }
    }

    async fn handle_events(
        &mut self,
        packets: Vec<Packet>,
        id: SubscriptionId,
        ctx: &mut Context<O>,
    ) -> Vec<O> {
        let mut out = Vec::new();
        for packet in packets {
            self.cut(packet, id, ctx, &mut out);
        }
        out
    }

    async fn handle_cancel(
        &mut self,
        peer: Peer,
        cancel: Cancel,
        id: SubscriptionId,
        ctx: &mut Context<O>,
    ) {
        match peer {
            Peer::Producer => {
                if self.demands.remove(&id).is_none() {
                    return;
                }
                if !cancel.reason.is_normal() {
                    ctx.stop(cancel.reason);
                } else if self.demands.is_empty() && self.started {
                    self.finish(ctx);
                }
            }
            Peer::Consumer => {
                self.consumers -= 1;
                if self.consumers == 0 && !self.finished {
                    // Whoever read this flow is gone: stop the stages feeding it too.
                    ctx.stop(Reason::Shutdown);
                }
            }
        }
    }

    async fn handle_cast(&mut self, control: Control, ctx: &mut Context<O>) {
        match control {
            Control::Started => {
                self.started = true;
                if self.demands.is_empty() {
                    self.finish(ctx);
                }
            }
        }
    }
}

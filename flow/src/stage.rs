//! The stage every layer of a flow runs: packets in, its layer's logic, events out.

use std::collections::HashMap;

use stage::demand::Demand;
use stage::{
    Cancel, Context, Packet, Peer, ProducerConsumer, Reason, SubscribeOptions, SubscriptionId,
    SubscriptionMode,
};

use crate::logic::{Logic, Position};
use crate::trigger::{Trigger, TriggerName, WindowKind};

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
    /// Fire an `Every(n)` trigger each `n` input events.
    every: Option<usize>,
    /// Input events since the last `Every` trigger.
    since: usize,
    demands: HashMap<SubscriptionId, Demand>,
    consumers: usize,
    started: bool,
    finished: bool,
    logic: Box<dyn Logic<O>>,
}

impl<O: Send + 'static> FlowStage<O> {
    pub(crate) fn new(
        pos: Position,
        max: usize,
        min: usize,
        every: Option<usize>,
        logic: Box<dyn Logic<O>>,
    ) -> Self {
        FlowStage {
            pos,
            max,
            min,
            every,
            since: 0,
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
        let done = self.trigger(TriggerName::Done);
        ctx.emit(self.logic.trigger(&done));
        ctx.finish();
    }

    fn trigger(&self, name: TriggerName) -> Trigger {
        Trigger {
            partition: self.pos.index,
            partitions: self.pos.count,
            kind: WindowKind::Global,
            window: 0,
            name,
        }
    }

    /// Processes one batch, split where count triggers fire (Flow rule T1).
    fn process(&mut self, mut batch: Packet, out: &mut Vec<O>) {
        let Some(every) = self.every else {
            append(out, self.logic.process(batch));
            return;
        };
        loop {
            let room = every - self.since;
            if batch.len() < room {
                self.since += batch.len();
                append(out, self.logic.process(batch));
                return;
            }
            let rest = batch.split_off(room);
            append(out, self.logic.process(batch));
            self.since = 0;
            let trigger = self.trigger(TriggerName::Every(every));
            append(out, self.logic.trigger(&trigger));
            if rest.is_empty() {
                return;
            }
            batch = rest;
        }
    }

    /// Cuts one packet into batches of at most `max - min`, processing each and asking for
    /// what it used.
    fn cut(&mut self, packet: Packet, id: SubscriptionId, ctx: &mut Context<O>, out: &mut Vec<O>) {
        let Some(&demand) = self.demands.get(&id) else {
            self.process(packet, out);
            return;
        };
        let mut demand = demand;
        let mut message = demand.message(packet.len());
        let mut rest = Some(packet);
        while let Some(batch) = demand.next_batch(&mut message) {
            let Some(mut chunk) = rest.take() else {
                break;
            };
            if batch.len < chunk.len() {
                rest = Some(chunk.split_off(batch.len));
            }
            self.process(chunk, out);
            ctx.ask(id, batch.ask);
        }
        if let Some(d) = self.demands.get_mut(&id) {
            *d = demand;
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

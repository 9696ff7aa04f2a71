//! Handles, addresses, streams and errors cross threads: what a user keeps in shared state or
//! moves into a task is `Send` and `Sync` (or `Send` where it is a stream or a builder).

use stage::{
    CallError, Cancel, ConsumerBuilder, ConsumerStream, Context, Counters, IterProducer, Packet,
    ProducerBuilder, ProducerRef, Reason, ReplyTo, StageHandle, StartError, SubscribeError,
    SubscribeOptions, SupervisorHandle,
};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

/// A stage type that is neither `Sync` nor `Clone`: its handle is `Send + Sync` anyway.
struct NotSync(std::cell::Cell<u8>);

impl stage::Consumer for NotSync {
    type In = u8;

    async fn handle_events(&mut self, _: Vec<u8>, _: stage::SubscriptionId, _: &mut Context<Self>) {
        self.0.set(1);
    }
}

#[test]
fn handles_and_addresses_are_send_and_sync() {
    send_sync::<StageHandle<NotSync>>();
    send_sync::<StageHandle<IterProducer<std::ops::Range<u64>>>>();
    send_sync::<ProducerRef<String>>();
    send_sync::<SupervisorHandle<String>>();
    send_sync::<SubscribeOptions>();
    send_sync::<Counters>();
    send_sync::<Reason>();
    send_sync::<Cancel>();
    send_sync::<CallError>();
    send_sync::<SubscribeError>();
    send_sync::<StartError>();
}

#[test]
fn streams_builders_packets_and_replies_can_move_to_another_task() {
    send::<ConsumerStream<String>>();
    send::<ProducerBuilder<IterProducer<std::vec::IntoIter<u8>>>>();
    send::<ConsumerBuilder<NotSync>>();
    send::<Packet>();
    send::<ReplyTo<Vec<u8>>>();
    send::<Context<NotSync>>();
}

//! Flows, their streams, handles and errors cross threads.

use flow::{Error, Flow, FlowHandle, FlowStream, LateEvents, Partition, Window};

fn send_sync<T: Send + Sync>() {}
fn send<T: Send>() {}

#[test]
fn flows_and_what_runs_them_can_move_to_another_task() {
    send::<Flow<String>>();
    send::<FlowStream<String>>();
    send::<FlowHandle>();
    send_sync::<Error>();
    send_sync::<LateEvents<u64>>();
    send_sync::<Partition<u64>>();
    send_sync::<Window<u64>>();
}

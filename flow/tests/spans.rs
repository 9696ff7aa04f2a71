//! Every stage of a flow logs inside a `flow` span with its layer and index, and carries a
//! name that says the same (`flow.L1.s0`: stage 0 of the node `explain` numbers [1]), so two
//! layers' logs can be told apart.

mod support;

use std::io;
use std::sync::{Arc, Mutex};

use flow::{Flow, Partition};
use support::within;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn two_layers_log_under_their_own_names() {
    // A current-thread runtime runs every stage on this thread, where the capture is.
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let flow = Flow::from_iter(0..20u32)
        .stages(1)
        .map(|x| {
            tracing::info!(x, "first layer");
            x
        })
        .partition(Partition::by_hash(|x: &u32| *x as usize).stages(2))
        .map(|x| {
            tracing::info!(x, "second layer");
            x
        });
    let plan = flow.explain();
    assert!(plan.starts_with("[0] from_iter"), "{plan}");
    assert!(plan.contains("[1] layer: 2 stages"), "{plan}");
    let got = within(flow.collect()).await.unwrap();
    assert_eq!(got.len(), 20);

    let first = logs.lines_with("first layer");
    assert_eq!(first.len(), 20);
    for line in &first {
        assert!(line.contains("flow{layer=0 index=0}"), "{line}");
        assert!(line.contains("name=flow.L0.s0"), "{line}");
    }
    let second = logs.lines_with("second layer");
    assert_eq!(second.len(), 20);
    for index in 0..2 {
        let span = format!("flow{{layer=1 index={index}}}");
        let name = format!("name=flow.L1.s{index}");
        let ours: Vec<_> = second.iter().filter(|l| l.contains(&span)).collect();
        assert_eq!(ours.len(), 10, "stage {index} of layer 1: {second:#?}");
        assert!(ours.iter().all(|l| l.contains(&name)), "{ours:#?}");
    }
}

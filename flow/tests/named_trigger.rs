//! Named triggers sent to a running flow from outside (Flow's `{:trigger, name}`), through
//! its stream or its handle.

mod support;

use std::time::Duration;

use flow::{Flow, Partition, Trigger, TriggerName, Window};
use futures::StreamExt;
use support::timed;

fn flush() -> TriggerName {
    TriggerName::Custom("flush".into())
}

/// On the global window: `on_trigger` runs in every stage with the name given; what it
/// returns is emitted, and the accumulator it leaves goes on.
#[tokio::test(start_paused = true)]
async fn a_named_trigger_fires_on_every_stage_of_a_running_flow() {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let source = tokio_stream_from(rx);
    let mut stream = Flow::from_stream(source)
        .partition(Partition::by_hash(|x: &u64| *x as usize).stages(2))
        .reduce(|| 0u64, |sum, x| *sum += x)
        .on_trigger(|sum, t: &Trigger| vec![(t.partition, t.name.clone(), std::mem::take(sum))])
        .into_stream()
        .unwrap();
    for x in [1u64, 2, 3, 4] {
        tx.send(x).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        stream.trigger("flush"),
        2,
        "both partitions (the source feeds them directly)"
    );
    let mut fired = vec![stream.next().await.unwrap(), stream.next().await.unwrap()];
    fired.sort_by_key(|f| f.0);
    assert_eq!(fired, [(0, flush(), 2 + 4), (1, flush(), 1 + 3)]);
    tx.send(10).unwrap();
    drop(tx);
    let rest: Vec<_> = stream.collect().await;
    let mut rest = rest;
    rest.sort_by_key(|f| f.0);
    assert_eq!(
        rest,
        [(0, TriggerName::Done, 10), (1, TriggerName::Done, 0)]
    );
}

/// On fixed windows: every window a stage holds fires; on a count window, the current one.
#[tokio::test(start_paused = true)]
async fn a_named_trigger_fires_on_the_windows_held() {
    let source = timed(vec![(0, 0u64), (0, 1500)], Some(1000));
    let running = Flow::from_stream(source)
        .stages(1)
        .window(Window::fixed(Duration::from_secs(1), |t: &u64| *t))
        .reduce(Vec::new, |v: &mut Vec<u64>, t| v.push(t))
        .on_trigger(|v, t: &Trigger| {
            if t.name == flush() {
                vec![(t.window, v.clone())]
            } else {
                Vec::new()
            }
        })
        .into_stream()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(running.trigger("flush"), 1);
    let got: Vec<_> = running.collect().await;
    assert_eq!(got, [(1000, vec![1500])], "window 0 was done already");

    let source = timed(vec![(0, 1u64), (0, 2), (0, 3)], Some(1000));
    let running = Flow::from_stream(source)
        .stages(1)
        .window(Window::count(2))
        .reduce(Vec::new, |v: &mut Vec<u64>, t| v.push(t))
        .on_trigger(|v, t: &Trigger| vec![(t.window, t.name.clone(), v.clone())])
        .into_stream()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.trigger("flush");
    let got: Vec<_> = running.collect().await;
    assert_eq!(
        got,
        [
            (0, TriggerName::Done, vec![1, 2]),
            (1, flush(), vec![3]),
            (1, TriggerName::Done, vec![3]),
        ]
    );
}

/// Through the handle of a spawned flow; a finished flow takes no more triggers.
#[tokio::test(start_paused = true)]
async fn a_spawned_flow_takes_named_triggers_until_it_finishes() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let source = timed(vec![(0, 5u64), (100, 7)], Some(200));
    let running = Flow::from_stream(source)
        .stages(1)
        .reduce(|| 0u64, |sum, x| *sum += x)
        .on_trigger(move |sum, t: &Trigger| {
            let _ = tx.send((t.name.clone(), *sum));
            Vec::<u64>::new()
        })
        .spawn();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(running.trigger("flush") > 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(running.trigger("flush") > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(running.trigger("flush"), 0, "finished");
    running.join().await.unwrap();
    let mut seen = Vec::new();
    while let Ok(s) = rx.try_recv() {
        seen.push(s);
    }
    assert_eq!(seen, [(flush(), 5), (flush(), 12), (TriggerName::Done, 12)]);
}

/// A stream of what an unbounded receiver gets (tokio's receiver is not a `Stream` itself).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

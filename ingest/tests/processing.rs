//! One processor step: chunks, the order of the callbacks, what fails and what is forwarded,
//! and user code that errs or panics (Broadway's rules for processors).

mod support;

use std::sync::Arc;
use std::time::Duration;

use ingest::{Batcher, Failure, Outcome, Pipeline, Processors, TestSource};
use support::{Call, Journal, Probe, feed, within};

fn one_processor() -> Processors<u64> {
    Processors::new().concurrency(1).max_demand(10)
}

/// Upstream's probe: 23 messages under the default demand (max 10, min 5) are handled and
/// acked in chunks of 5, 5, 5, 5 and 3: one `prepare_messages` call and one ack call each.
#[tokio::test(start_paused = true)]
async fn a_chunk_is_max_minus_min_messages_prepared_and_acked_together() {
    let journal = Journal::new();
    let pipeline = Pipeline::builder("chunks", Probe::default())
        .producer(feed(0..23, &journal.acker()))
        .processors(one_processor())
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!((report.processed, report.acked), (23, 23));
    let sizes: Vec<usize> = journal.calls().iter().map(Vec::len).collect();
    assert_eq!(sizes, [5, 5, 5, 5, 3]);
    let prepared: Vec<usize> = pipeline
        .handler()
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Prepare { data, .. } => Some(data.len()),
            _ => None,
        })
        .collect();
    assert_eq!(prepared, [5, 5, 5, 5, 3]);
    assert_eq!(journal.by_tag().len(), 23);
}

/// `prepare_messages` runs first, then `handle_message` for each message in order.
#[tokio::test(start_paused = true)]
async fn prepare_then_each_message_in_order() {
    let source = TestSource::new();
    let pipeline = Pipeline::builder("order", Probe::default())
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(4).min_demand(0))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([7, 8, 9]).unwrap()).await;
    assert_eq!(outcomes, vec![Outcome::Ack; 3]);
    let calls: Vec<String> = pipeline
        .handler()
        .calls()
        .into_iter()
        .map(|c| match c {
            Call::Prepare { data, .. } => format!("prepare {data:?}"),
            Call::Message { data, .. } => format!("message {data}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        calls,
        ["prepare [7, 8, 9]", "message 7", "message 8", "message 9"]
    );
}

/// A panic, an `Err`, or a message failed in place each fail that message only: the others
/// succeed, the processor keeps running, and each failure says what happened.
#[tokio::test(start_paused = true)]
async fn user_errors_fail_their_message_not_the_stage() {
    let probe = Probe::default().on_message(|msg, _| match msg.data {
        3 => panic!("three is cursed"),
        4 => Err(Failure::new("four is wrong")),
        5 => {
            msg.fail("five failed in place");
            Ok(5)
        }
        n => Ok(n),
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("errors", probe)
        .producer(source.producer())
        .processors(one_processor())
        .start()
        .unwrap();
    let outcomes = within(5, source.push(1..=6).unwrap()).await;
    let rejected = Outcome::Nack { requeue: false };
    assert_eq!(
        outcomes,
        [
            Outcome::Ack,
            Outcome::Ack,
            rejected.clone(),
            rejected.clone(),
            rejected,
            Outcome::Ack
        ]
    );
    // The same stage goes on handling messages after the panic.
    let more = within(5, source.push([10]).unwrap()).await;
    assert_eq!(more, [Outcome::Ack]);
    source.finish().unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!((report.processed, report.acked, report.failed), (7, 4, 3));
    assert!(report.stopped.is_empty(), "{:?}", report.stopped);
    assert!(report.adds_up());
}

/// The failures `handle_failed` sees carry their reasons; a panic's reason says it panicked.
#[tokio::test(start_paused = true)]
async fn handle_failed_sees_each_failure_with_its_reason() {
    let reasons = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&reasons);
    let probe = Probe::default()
        .on_message(|msg, _| match msg.data {
            1 => panic!("boom"),
            2 => Err(Failure::new("bad input")),
            n => Ok(n),
        })
        .on_failed(move |msgs| {
            let mut seen = seen.lock().unwrap();
            for m in msgs.iter() {
                let f = m.failure().unwrap();
                seen.push((m.data, f.reason().to_string(), f.is_panic()));
            }
        });
    let source = TestSource::new();
    let _pipeline = Pipeline::builder("reasons", probe)
        .producer(source.producer())
        .processors(one_processor())
        .start()
        .unwrap();
    within(5, source.push([1, 2, 3]).unwrap()).await;
    assert_eq!(
        *reasons.lock().unwrap(),
        [
            (1, "panicked: boom".to_string(), true),
            (2, "bad input".to_string(), false)
        ]
    );
}

/// A `prepare_messages` that panics or errs fails its whole chunk, and `handle_message` is not
/// called for it; the next chunk is handled as usual.
#[tokio::test(start_paused = true)]
async fn a_failing_prepare_fails_its_whole_chunk() {
    let probe = Probe::default().on_prepare(|msgs| match msgs[0].data {
        0 => panic!("prepare panics"),
        10 => Err(Failure::new("prepare refuses")),
        _ => Ok(()),
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("prepare", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).max_demand(2).min_demand(0))
        .start()
        .unwrap();
    let panicked = within(5, source.push([0, 1]).unwrap()).await;
    let refused = within(5, source.push([10, 11]).unwrap()).await;
    let fine = within(5, source.push([20, 21]).unwrap()).await;
    let rejected = Outcome::Nack { requeue: false };
    assert_eq!(panicked, [rejected.clone(), rejected.clone()]);
    assert_eq!(refused, [rejected.clone(), rejected]);
    assert_eq!(fine, [Outcome::Ack, Outcome::Ack]);
    let handled: Vec<u64> = pipeline
        .handler()
        .messages()
        .into_iter()
        .map(|m| m.1)
        .collect();
    assert_eq!(handled, [20, 21]);
}

/// Unlike upstream, a message `prepare_messages` fails does not go on to `handle_message`.
#[tokio::test(start_paused = true)]
async fn a_message_failed_in_prepare_skips_handle_message() {
    let probe = Probe::default().on_prepare(|msgs| {
        for m in msgs.iter_mut().filter(|m| m.data % 2 == 1) {
            m.fail("odd");
        }
        Ok(())
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("skip", probe)
        .producer(source.producer())
        .processors(one_processor())
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1, 2, 3, 4]).unwrap()).await;
    let rejected = Outcome::Nack { requeue: false };
    assert_eq!(
        outcomes,
        [rejected.clone(), Outcome::Ack, rejected, Outcome::Ack]
    );
    let handled: Vec<u64> = pipeline
        .handler()
        .messages()
        .into_iter()
        .map(|m| m.1)
        .collect();
    assert_eq!(handled, [2, 4]);
}

/// With batchers, a processor settles only what failed; what succeeded is settled after its
/// batch, and a failed message is never forwarded, whatever its batcher.
#[tokio::test(start_paused = true)]
async fn with_batchers_a_processor_settles_only_failures_and_forwards_the_rest() {
    let journal = Journal::new();
    let probe = Probe::default().on_message(|msg, _| {
        if msg.data == 2 {
            return Err(Failure::new("two"));
        }
        Ok(msg.data)
    });
    let pipeline = Pipeline::builder("forward", probe)
        .producer(feed([1, 2, 3], &journal.acker()))
        .processors(one_processor())
        .batcher(Batcher::new("default").batch_size(10))
        .start()
        .unwrap();
    let report = within(5, pipeline.join()).await;
    assert_eq!((report.acked, report.failed), (2, 1));
    let calls = journal.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].iter().map(|s| s.tag).collect::<Vec<_>>(), [2]);
    assert_eq!(calls[1].iter().map(|s| s.tag).collect::<Vec<_>>(), [1, 3]);
    let batches = pipeline.handler().batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, [1, 3]);
}

/// An `Ok` message sent to a batcher the pipeline does not have fails, naming the batchers;
/// a message that failed anyway fails with its own reason (the batcher is not checked).
#[tokio::test(start_paused = true)]
async fn a_message_for_an_unknown_batcher_fails() {
    let reasons = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&reasons);
    let probe = Probe::default()
        .on_message(|msg, _| {
            match msg.data {
                1 => msg.put_batcher("nowhere"),
                2 => {
                    msg.put_batcher("nowhere");
                    return Err(Failure::new("failed first"));
                }
                _ => msg.put_batcher("b"),
            }
            Ok(msg.data)
        })
        .on_failed(move |msgs| {
            seen.lock().unwrap().extend(
                msgs.iter()
                    .map(|m| m.failure().unwrap().reason().to_string()),
            );
        });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("route", probe)
        .producer(source.producer())
        .processors(one_processor())
        .batcher(Batcher::new("a"))
        .batcher(Batcher::new("b").batch_size(1))
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1, 2, 3]).unwrap()).await;
    let rejected = Outcome::Nack { requeue: false };
    assert_eq!(outcomes, [rejected.clone(), rejected, Outcome::Ack]);
    let reasons = reasons.lock().unwrap().clone();
    assert_eq!(reasons.len(), 2);
    assert!(
        reasons[0].contains("unknown batcher \"nowhere\""),
        "{}",
        reasons[0]
    );
    assert!(reasons[0].contains("a, b"), "{}", reasons[0]);
    assert_eq!(reasons[1], "failed first");
    let batches = pipeline.handler().batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(&*batches[0].1.batcher, "b");
}

/// Without batchers, a message's batcher is ignored.
#[tokio::test(start_paused = true)]
async fn without_batchers_the_batcher_is_ignored() {
    let probe = Probe::default().on_message(|msg, _| {
        msg.put_batcher("nowhere");
        Ok(msg.data)
    });
    let source = TestSource::new();
    let _pipeline = Pipeline::builder("ignore", probe)
        .producer(source.producer())
        .processors(one_processor())
        .start()
        .unwrap();
    let outcomes = within(5, source.push([1]).unwrap()).await;
    assert_eq!(outcomes, [Outcome::Ack]);
}

/// Several processors share the work: each message is handled by exactly one of them.
#[tokio::test(start_paused = true)]
async fn messages_spread_over_the_processors() {
    let probe = Probe::default().message_delay(|_| Duration::from_millis(10));
    let journal = Journal::new();
    let pipeline = Pipeline::builder("spread", probe)
        .producer(feed(0..40, &journal.acker()))
        .processors(Processors::new().concurrency(4).max_demand(2).min_demand(1))
        .start()
        .unwrap();
    let report = within(10, pipeline.join()).await;
    assert_eq!(report.acked, 40);
    let messages = pipeline.handler().messages();
    let mut stages: Vec<&str> = messages.iter().map(|m| m.0.as_str()).collect();
    stages.sort();
    stages.dedup();
    assert_eq!(stages.len(), 4, "{stages:?}");
    let mut handled: Vec<u64> = messages.iter().map(|m| m.1).collect();
    handled.sort();
    assert_eq!(handled, (0..40).collect::<Vec<_>>());
}

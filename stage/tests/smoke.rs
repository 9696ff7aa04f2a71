//! Smoke tests of the fixtures and the basic pipeline.

mod support;

use stage::{CancelMode, Reason, SubscribeOptions};
use support::{Ask, Msg, Sink, Source, Through, batch_sizes, demands, events, settle};

#[tokio::test]
async fn counter_to_sink_with_defaults() {
    let p = stage::producer(Source::counter(0)).start().unwrap();
    let c = stage::consumer(Sink::new())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    settle().await;
    let plog = p.call(Ask::Log).await.unwrap();
    let clog = c.call(Ask::Log).await.unwrap();
    assert_eq!(demands(&plog)[0], 1000);
    assert_eq!(batch_sizes(&clog)[..2], [500, 500]);
    let got = events(&clog);
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn cast_events_reach_a_forwarder_and_sink() {
    let p = stage::producer(Source::silent()).start().unwrap();
    let f = stage::producer_consumer(Through::doubler())
        .subscribe_to(&p, SubscribeOptions::new())
        .start()
        .unwrap();
    let opts = SubscribeOptions::new().cancel(CancelMode::Temporary);
    let c = stage::consumer(Sink::new())
        .subscribe_to(&f, opts)
        .start()
        .unwrap();
    settle().await;
    p.cast(Msg::Emit(vec![1, 2, 3])).unwrap();
    settle().await;
    assert_eq!(
        events(&c.call(Ask::Log).await.unwrap()),
        vec![1, 1, 2, 2, 3, 3]
    );
    p.stop(Reason::Shutdown).unwrap();
    assert_eq!(f.join().await, Reason::Shutdown);
    settle().await;
    assert!(c.is_running(), "a temporary subscriber survives");
}

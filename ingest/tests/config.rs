//! Options are checked once, when the pipeline starts, and a bad one is a typed error that
//! names it and its rule (upstream accepts `max_demand: 0` and then never processes anything).

mod support;

use std::time::Duration;

use ingest::{
    Backoff, Batcher, BuildError, ConfigError, Pipeline, Processors, Producers, RateLimit,
    RetryPolicy, TestSource,
};
use support::Probe;

fn config_error(result: Result<Pipeline<Probe>, BuildError>) -> ConfigError {
    match result {
        Err(BuildError::Config(err)) => err,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("expected a config error, the pipeline started"),
    }
}

fn with_source() -> ingest::Builder<Probe> {
    Pipeline::builder("config", Probe::default()).producer(TestSource::new().producer())
}

#[tokio::test]
async fn each_bad_option_is_named_with_its_rule() {
    let cases: Vec<(ingest::Builder<Probe>, &str, &str, &str)> = vec![
        (
            with_source().processors(Processors::new().max_demand(0)),
            "processors",
            "max_demand",
            "must be between 1",
        ),
        (
            with_source().processors(Processors::new().max_demand(4).min_demand(4)),
            "processors",
            "min_demand",
            "less than max_demand (4)",
        ),
        (
            with_source().processors(Processors::new().concurrency(0)),
            "processors",
            "concurrency",
            "between 1",
        ),
        (
            with_source().processors(Processors::new().retry(RetryPolicy::new(0))),
            "processors",
            "max_attempts",
            "at least 1",
        ),
        (
            with_source().processors(
                Processors::new()
                    .retry(RetryPolicy::new(2).backoff(Backoff::default().jitter(2.0))),
            ),
            "processors",
            "jitter",
            "between 0 and 1",
        ),
        (
            with_source().batcher(Batcher::new("b").batch_size(0)),
            "batcher \"b\"",
            "batch_size",
            "at least 1",
        ),
        (
            with_source().batcher(Batcher::new("b").batch_timeout(Duration::ZERO)),
            "batcher \"b\"",
            "batch_timeout",
            "more than zero",
        ),
        (
            with_source().batcher(Batcher::new("b").concurrency(0)),
            "batcher \"b\"",
            "concurrency",
            "between 1",
        ),
        (
            with_source().batcher(Batcher::new("b").max_demand(3).min_demand(5)),
            "batcher \"b\"",
            "min_demand",
            "less than max_demand (3)",
        ),
        (
            with_source().batcher(Batcher::new("b").key_concurrency(0)),
            "batcher \"b\"",
            "key_concurrency",
            "at least 1",
        ),
        (
            with_source().batcher(Batcher::new("b").max_open_keys(0)),
            "batcher \"b\"",
            "max_open_keys",
            "at least 1",
        ),
        (
            with_source()
                .batcher(Batcher::new("b"))
                .batcher(Batcher::new("b")),
            "batcher \"b\"",
            "name",
            "must differ",
        ),
        (
            with_source().batcher(Batcher::new("")),
            "batcher \"\"",
            "name",
            "must not be empty",
        ),
        (
            with_source().rate_limit(RateLimit::new(0, Duration::from_secs(1))),
            "rate_limit",
            "allowed",
            "at least 1",
        ),
        (
            with_source().rate_limit(RateLimit::new(1, Duration::ZERO)),
            "rate_limit",
            "interval",
            "more than zero",
        ),
        (
            with_source().batcher(Batcher::new("b").batch_timeout(Duration::MAX)),
            "batcher \"b\"",
            "batch_timeout",
            "at most MAX_WAIT",
        ),
        (
            with_source().rate_limit(RateLimit::new(1, Duration::MAX)),
            "rate_limit",
            "interval",
            "at most MAX_WAIT",
        ),
        (
            with_source().processors(
                Processors::new().retry(
                    RetryPolicy::new(2)
                        .backoff(Backoff::exponential(Duration::from_secs(1)).max(Duration::MAX)),
                ),
            ),
            "processors",
            "max",
            "at most MAX_WAIT",
        ),
        (
            Pipeline::builder("config", Probe::default()),
            "pipeline",
            "producer",
            "at least one",
        ),
        (
            Pipeline::builder("config", Probe::default())
                .producer(Producers::single(ingest::TestProducer::<u64>::default()).concurrency(2)),
            "producer \"producer\"",
            "concurrency",
            "must be 1 for a single producer",
        ),
        (
            with_source().producer(TestSource::<u64>::new().producer()),
            "producer \"test\"",
            "name",
            "must differ",
        ),
    ];
    for (builder, scope, option, rule) in cases {
        let err = config_error(builder.start());
        assert_eq!((err.scope.as_str(), err.option), (scope, option), "{err}");
        assert!(err.rule.contains(rule), "{err}");
        let text = err.to_string();
        assert!(text.contains(option) && text.contains(scope), "{text}");
    }
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let result = with_source().start();
    assert!(
        matches!(result, Err(BuildError::NoRuntime)),
        "{:?}",
        result.err()
    );
}

/// Durations nobody can wait for are no reason to panic: a shutdown without a deadline, and a
/// retry asked for with the longest wait there is (it waits `MAX_WAIT`, and the shutdown hands
/// it back to its source).
#[tokio::test(start_paused = true)]
async fn endless_durations_do_not_panic() {
    let probe = Probe::default().on_message(|msg, _| {
        if msg.attempt() == 1 {
            return Err(ingest::Failure::new("later").retry_after(Duration::MAX));
        }
        Ok(msg.data)
    });
    let source = TestSource::new();
    let pipeline = Pipeline::builder("endless", probe)
        .producer(source.producer())
        .processors(Processors::new().concurrency(1).retry(RetryPolicy::new(3)))
        .start()
        .unwrap();
    let outcomes = source.push([1]).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = support::within(5, pipeline.shutdown(Duration::MAX)).await;
    assert!(report.adds_up() && !report.timed_out, "{report:?}");
    let outcomes = support::within(1, outcomes).await;
    let [ingest::Outcome::Retry { after }] = outcomes.as_slice() else {
        panic!("{outcomes:?}")
    };
    assert_eq!(*after, ingest::MAX_WAIT - Duration::from_secs(1));
}

/// Errors name the option in a sentence a user can act on.
#[tokio::test]
async fn the_message_reads_well() {
    let err = config_error(
        with_source()
            .processors(Processors::new().max_demand(0))
            .start(),
    );
    assert_eq!(
        err.to_string(),
        "invalid option `max_demand` of processors: must be between 1 and 1073741824, got 0"
    );
}

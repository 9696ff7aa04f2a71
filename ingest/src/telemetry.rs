//! Counters and latency histograms through the `metrics` facade (the `metrics` feature).
//!
//! Every name is prefixed `ingest_` and labelled with the pipeline (`pipeline`); batch
//! histograms also with the batcher (`batcher`). Handles are made once per pipeline or stage,
//! so recording costs one call per chunk or batch.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `ingest_messages_processed_total` | counter | messages that entered the processors |
//! | `ingest_messages_acked_total` | counter | settled as successful |
//! | `ingest_messages_failed_total` | counter | settled with another outcome |
//! | `ingest_messages_retried_total` | counter | retries in the pipeline |
//! | `ingest_messages_abandoned_total` | counter | given back unhandled at a shutdown's deadline |
//! | `ingest_messages_dead_lettered_total` | counter | taken by the dead-letter sink |
//! | `ingest_ack_errors_total` | counter | acknowledger calls that failed |
//! | `ingest_dead_letter_errors_total` | counter | dead-letter sink calls that failed |
//! | `ingest_processor_seconds` | histogram | one processor chunk, from `prepare_messages` to its settlement |
//! | `ingest_batch_seconds` | histogram | one batch, from `handle_batch` to its settlement |
//! | `ingest_batch_size` | histogram | messages per batch |
//! | `ingest_batch_age_seconds` | histogram | from a batch's first message to its closing |

use metrics::{Counter, Histogram, Label, counter, histogram};

/// The pipeline-wide handles.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) processed: Counter,
    pub(crate) acked: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) abandoned: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) ack_errors: Counter,
    pub(crate) dead_letter_errors: Counter,
    pub(crate) processor_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new(pipeline: &str) -> Self {
        let labels = vec![Label::new("pipeline", pipeline.to_string())];
        Metrics {
            processed: counter!("ingest_messages_processed_total", labels.clone()),
            acked: counter!("ingest_messages_acked_total", labels.clone()),
            failed: counter!("ingest_messages_failed_total", labels.clone()),
            retried: counter!("ingest_messages_retried_total", labels.clone()),
            abandoned: counter!("ingest_messages_abandoned_total", labels.clone()),
            dead_lettered: counter!("ingest_messages_dead_lettered_total", labels.clone()),
            ack_errors: counter!("ingest_ack_errors_total", labels.clone()),
            dead_letter_errors: counter!("ingest_dead_letter_errors_total", labels.clone()),
            processor_seconds: histogram!("ingest_processor_seconds", labels),
        }
    }
}

/// One batcher's handles.
#[derive(Debug)]
pub(crate) struct BatchMetrics {
    pub(crate) seconds: Histogram,
    pub(crate) size: Histogram,
    pub(crate) age: Histogram,
}

impl BatchMetrics {
    pub(crate) fn new(pipeline: &str, batcher: &str) -> Self {
        let labels = vec![
            Label::new("pipeline", pipeline.to_string()),
            Label::new("batcher", batcher.to_string()),
        ];
        BatchMetrics {
            seconds: histogram!("ingest_batch_seconds", labels.clone()),
            size: histogram!("ingest_batch_size", labels.clone()),
            age: histogram!("ingest_batch_age_seconds", labels),
        }
    }
}

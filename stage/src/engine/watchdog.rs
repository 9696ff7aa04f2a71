//! The stall watchdog: a periodic look at the stage's subscriptions that warns, naming the
//! stage and the subscription, when one makes no progress for too long.
//!
//! It reads counters the engine keeps anyway (per consumer: what it asked for and what was
//! sent to it; per producer: what was received), so it costs nothing between its ticks.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tracing::{info, warn};

use super::Sink;
use crate::inlet::Upstream;
use crate::options::SubscriptionId;

/// How many looks per stall time: a stall is reported at most a quarter late.
const LOOKS: u32 = 4;

pub(crate) struct Watchdog {
    after: Duration,
    period: Duration,
    sleep: Pin<Box<Sleep>>,
    consumers: Vec<ConsumerWatch>,
    producers: Vec<ProducerWatch>,
}

/// What the watchdog last saw of one of the stage's consumers.
struct ConsumerWatch {
    id: SubscriptionId,
    asked: u64,
    sent: u64,
    /// Since when events have waited and the consumer has not asked.
    quiet_since: Option<Instant>,
    /// Since when the consumer has been owed events and none were sent to it.
    unmet_since: Option<Instant>,
    warned: bool,
}

/// What the watchdog last saw of one of the stage's producers.
struct ProducerWatch {
    id: SubscriptionId,
    received: u64,
    since: Option<Instant>,
    warned: bool,
}

impl Watchdog {
    pub(crate) fn new(after: Duration) -> Self {
        let period = (after / LOOKS).max(Duration::from_millis(1));
        Watchdog {
            after,
            period,
            sleep: Box::pin(tokio::time::sleep(period)),
            consumers: Vec::new(),
            producers: Vec::new(),
        }
    }

    /// Looks at the stage's consumers: `buffered` events wait in its buffer, `owed` is each
    /// consumer's unmet demand.
    pub(crate) fn look_at_consumers<T>(
        &mut self,
        stage: &str,
        buffered: usize,
        sinks: &[Sink<T>],
        owed: &[(SubscriptionId, usize)],
    ) {
        let now = Instant::now();
        self.consumers
            .retain(|w| sinks.iter().any(|sink| sink.id == w.id));
        for sink in sinks {
            let at = match self.consumers.iter().position(|w| w.id == sink.id) {
                Some(at) => at,
                None => {
                    self.consumers.push(ConsumerWatch {
                        id: sink.id,
                        asked: sink.asked,
                        sent: sink.sent,
                        quiet_since: None,
                        unmet_since: None,
                        warned: false,
                    });
                    self.consumers.len() - 1
                }
            };
            let w = &mut self.consumers[at];
            let owed = owed
                .iter()
                .find(|(id, _)| *id == sink.id)
                .map_or(0, |(_, n)| *n);
            let asked = sink.asked != w.asked;
            let sent = sink.sent != w.sent;
            w.asked = sink.asked;
            w.sent = sink.sent;
            w.quiet_since =
                (buffered > 0 && owed == 0 && !asked).then(|| w.quiet_since.unwrap_or(now));
            w.unmet_since = (owed > 0 && !sent).then(|| w.unmet_since.unwrap_or(now));
            let stalled = [w.quiet_since, w.unmet_since]
                .into_iter()
                .flatten()
                .min()
                .filter(|since| now - *since >= self.after);
            let Some(since) = stalled else {
                if std::mem::take(&mut w.warned) {
                    info!(stage, subscription = %sink.id, consumer = sink.downstream.name(), "subscription moving again");
                }
                continue;
            };
            if std::mem::replace(&mut w.warned, true) {
                continue;
            }
            let stalled_for = now - since;
            let consumer = sink.downstream.name();
            let subscription = sink.id;
            if owed == 0 {
                warn!(stage, %subscription, consumer, buffered, ?stalled_for,
                    "stalled: events wait in the buffer but this consumer has not asked for more");
            } else if buffered > 0 {
                warn!(stage, %subscription, consumer, owed, buffered, ?stalled_for,
                    "stalled: the consumer is owed events and none were sent to it, although events wait in the buffer (the dispatcher holds them for other consumers)");
            } else {
                warn!(stage, %subscription, consumer, owed, ?stalled_for,
                    "stalled: the consumer is owed events and the producer has emitted none (a producer whose handle_demand returns fewer events than asked must emit the rest later)");
            }
        }
    }

    /// Looks at the stage's producers: one that owes it events and sends none is stalled.
    pub(crate) fn look_at_producers<I>(&mut self, stage: &str, upstreams: &[Upstream<I>]) {
        let now = Instant::now();
        self.producers
            .retain(|w| upstreams.iter().any(|up| up.id == w.id));
        for up in upstreams {
            let at = match self.producers.iter().position(|w| w.id == up.id) {
                Some(at) => at,
                None => {
                    self.producers.push(ProducerWatch {
                        id: up.id,
                        received: up.received,
                        since: None,
                        warned: false,
                    });
                    self.producers.len() - 1
                }
            };
            let w = &mut self.producers[at];
            let credit = up.credit();
            let received = up.received != w.received;
            w.received = up.received;
            w.since = (credit > 0 && !received).then(|| w.since.unwrap_or(now));
            match w.since.filter(|since| now - *since >= self.after) {
                Some(since) if !w.warned => {
                    w.warned = true;
                    warn!(stage, subscription = %up.id, producer = %up.producer.name(), credit, stalled_for = ?(now - since),
                        "stalled: this stage is owed events by its producer and has received none");
                }
                Some(_) => {}
                None => {
                    if std::mem::take(&mut w.warned) {
                        info!(stage, subscription = %up.id, producer = %up.producer.name(), "subscription moving again");
                    }
                }
            }
        }
    }
}

/// Waits for the watchdog's next look, and sets the one after.
pub(crate) async fn tick(watchdog: Option<&mut Watchdog>) {
    let Some(watchdog) = watchdog else {
        return std::future::pending().await;
    };
    watchdog.sleep.as_mut().await;
    let next = Instant::now() + watchdog.period;
    watchdog.sleep.as_mut().reset(next);
}

//! Seeing into a running pipeline: a snapshot of every stage of the process and of the
//! subscriptions between them, with the credit each side holds.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::counters::Counters;
use crate::handle::{Role, StageHandle};
use crate::options::SubscriptionId;

/// How long [`topology`] waits for each stage to answer.
pub const DEFAULT_TOPOLOGY_WAIT: Duration = Duration::from_secs(1);

/// What kind of stage a [`StageInfo`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StageKind {
    /// Emits events, receives none.
    Producer,
    /// Receives events, emits none.
    Consumer,
    /// Receives events and emits events.
    ProducerConsumer,
}

impl From<Role> for StageKind {
    fn from(role: Role) -> Self {
        match role {
            Role::Producer => StageKind::Producer,
            Role::Consumer => StageKind::Consumer,
            Role::ProducerConsumer => StageKind::ProducerConsumer,
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StageKind::Producer => "producer",
            StageKind::Consumer => "consumer",
            StageKind::ProducerConsumer => "producer-consumer",
        })
    }
}

/// One of a stage's consumers, as the stage (the producer) sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerLink {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The consumer's name.
    pub consumer: Arc<str>,
    /// Demand the consumer has asked for and not been sent yet.
    pub owed: usize,
    /// Events the consumer has asked for since it subscribed.
    pub asked: u64,
    /// Events sent to the consumer since it subscribed.
    pub sent: u64,
}

/// One of a stage's producers, as the stage (the consumer) sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerLink {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The producer's name.
    pub producer: Arc<str>,
    /// Events the stage has asked for and not received yet.
    pub credit: usize,
    /// Events received since it subscribed.
    pub received: u64,
}

/// One running stage: its counters and its subscriptions on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageInfo {
    /// The stage's name.
    pub name: Arc<str>,
    /// What kind of stage it is.
    pub kind: StageKind,
    /// Its counters, including what it buffers.
    pub counters: Counters,
    /// Its consumers.
    pub consumers: Vec<ConsumerLink>,
    /// Its producers.
    pub producers: Vec<ProducerLink>,
}

/// One subscription, seen from both ends where both answered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EdgeInfo {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The producer's name.
    pub producer: Arc<str>,
    /// The consumer's name.
    pub consumer: Arc<str>,
    /// Demand the producer owes the consumer (`None`: the producer did not answer).
    pub owed: Option<usize>,
    /// Credit the consumer holds: asked for and not received (`None`: it did not answer).
    pub credit: Option<usize>,
    /// Events sent and not yet received: on their way, or waiting in the consumer's queue
    /// (`None` unless both ends answered).
    pub in_flight: Option<u64>,
}

/// A snapshot of every running stage of the process, from [`topology`].
///
/// The stages answer one by one, so the snapshot is not taken at one instant: an edge's two
/// ends may differ by what moved in between.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Topology {
    /// Every stage that answered.
    pub stages: Vec<StageInfo>,
    /// Stages that did not answer in time: each is busy in a handler (or its mailbox is long).
    pub unresponsive: Vec<Arc<str>>,
}

impl Topology {
    /// The stage named `name`, if one is (the first, if several are).
    pub fn stage(&self, name: &str) -> Option<&StageInfo> {
        self.stages.iter().find(|s| &*s.name == name)
    }

    /// Every subscription, matched by its id between the producer's and the consumer's view.
    pub fn edges(&self) -> Vec<EdgeInfo> {
        let mut edges: Vec<EdgeInfo> = Vec::new();
        for stage in &self.stages {
            for c in &stage.consumers {
                edges.push(EdgeInfo {
                    subscription: c.subscription,
                    producer: Arc::clone(&stage.name),
                    consumer: Arc::clone(&c.consumer),
                    owed: Some(c.owed),
                    credit: None,
                    in_flight: None,
                });
            }
        }
        for stage in &self.stages {
            for p in &stage.producers {
                let sent = self.stages.iter().find_map(|s| {
                    s.consumers
                        .iter()
                        .find(|c| c.subscription == p.subscription)
                        .map(|c| c.sent)
                });
                match edges.iter_mut().find(|e| e.subscription == p.subscription) {
                    Some(edge) => {
                        edge.credit = Some(p.credit);
                        edge.in_flight = sent.map(|sent| sent.saturating_sub(p.received));
                    }
                    None => edges.push(EdgeInfo {
                        subscription: p.subscription,
                        producer: Arc::clone(&p.producer),
                        consumer: Arc::clone(&stage.name),
                        owed: None,
                        credit: Some(p.credit),
                        in_flight: None,
                    }),
                }
            }
        }
        edges.sort_by_key(|e| e.subscription);
        edges
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for stage in &self.stages {
            let c = &stage.counters;
            writeln!(
                f,
                "{} ({}): in {}, out {}, buffered {}, inbox {}, dropped {}",
                stage.name, stage.kind, c.events_in, c.events_out, c.buffered, c.inbox, c.dropped
            )?;
            for p in &stage.producers {
                writeln!(
                    f,
                    "  <- {} {}: credit {}, received {}",
                    p.producer, p.subscription, p.credit, p.received
                )?;
            }
            for k in &stage.consumers {
                writeln!(
                    f,
                    "  -> {} {}: owed {}, asked {}, sent {}",
                    k.consumer, k.subscription, k.owed, k.asked, k.sent
                )?;
            }
        }
        for name in &self.unresponsive {
            writeln!(f, "{name}: did not answer (busy in a handler?)")?;
        }
        Ok(())
    }
}

/// A running stage, as the registry holds it.
pub(crate) trait Probe: Send + Sync {
    fn name(&self) -> Arc<str>;
    fn is_running(&self) -> bool;
    /// Asks the stage for its snapshot; `None` if it has exited.
    fn snapshot(&self) -> Option<oneshot::Receiver<StageInfo>>;
}

/// Every stage started in this process that may still run.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    stages: Vec::new(),
    pruned_at: 0,
});

struct Registry {
    stages: Vec<Weak<dyn Probe>>,
    /// How many entries there were after the last pruning.
    pruned_at: usize,
}

impl Registry {
    fn prune(&mut self) {
        self.stages
            .retain(|probe| probe.upgrade().is_some_and(|p| p.is_running()));
        self.pruned_at = self.stages.len();
    }
}

/// Adds a stage that has just started to the registry.
pub(crate) fn register<S: Send + 'static>(stage: &StageHandle<S>) {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    // Pruning when the registry has doubled keeps it proportional to the running stages.
    if registry.stages.len() >= 64 && registry.stages.len() >= 2 * registry.pruned_at {
        registry.prune();
    }
    registry.stages.push(stage.probe());
}

/// A snapshot of every running stage of the process and of the subscriptions between them,
/// waiting at most [`DEFAULT_TOPOLOGY_WAIT`] for each stage to answer.
///
/// Each stage answers between two of its messages, after sending what it has produced. Use it
/// when a pipeline stalls: an edge whose consumer has no `credit` and a producer with events
/// `buffered` is a consumer that stopped asking; an edge the producer `owes` and has sent
/// nothing on is a producer that is not meeting demand.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use stage::SubscribeOptions;
///
/// let numbers = stage::from_iter(0..u64::MAX).name("numbers").start().unwrap();
/// let mut events = stage::stream([(&numbers, SubscribeOptions::new().max_demand(10))]).unwrap();
/// let _ = futures::StreamExt::next(&mut events).await;
/// let topology = stage::topology().await;
/// let edge = topology.edges().into_iter().find(|e| &*e.producer == "numbers").unwrap();
/// assert_eq!(&*edge.consumer, "stage::stream");
/// println!("{topology}");
/// # }
/// ```
pub async fn topology() -> Topology {
    topology_within(DEFAULT_TOPOLOGY_WAIT).await
}

/// [`topology`], waiting at most `wait` for each stage to answer.
pub async fn topology_within(wait: Duration) -> Topology {
    let probes: Vec<Arc<dyn Probe>> = {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.prune();
        registry.stages.iter().filter_map(Weak::upgrade).collect()
    };
    let asked = probes
        .iter()
        .map(|probe| async move {
            let name = probe.name();
            match probe.snapshot() {
                None => Err(None),
                Some(reply) => match tokio::time::timeout(wait, reply).await {
                    Ok(Ok(info)) => Ok(info),
                    // It exited meanwhile.
                    Ok(Err(_)) => Err(None),
                    Err(_) => Err(Some(name)),
                },
            }
        })
        .collect::<Vec<_>>();
    let mut topology = Topology::default();
    for answer in futures::future::join_all(asked).await {
        match answer {
            Ok(info) => topology.stages.push(info),
            Err(Some(name)) => topology.unresponsive.push(name),
            Err(None) => {}
        }
    }
    topology
}

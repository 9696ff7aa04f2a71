//! A flow's plan as data: its nodes (sources and layers), what feeds each layer and how, and
//! what each layer runs. Every operator adds to the plan as the flow is built; a finisher
//! validates the whole plan in one pass and then materialises it into stages;
//! [`Flow::explain`](crate::Flow::explain) prints it.
//!
//! The plan holds descriptions only. What runs (the fused operators, the sources) is kept by
//! the typed parts of [`Flow`](crate::Flow), which look their node up here when they start.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stage::{OptionError, SubscribeOptions};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::flow::MAX_STAGES;
use crate::join::JoinKind;

/// Identifies a node, unique in the process and increasing downstream (a node is always made
/// after the nodes it reads), so the plans of several flows merge without renumbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NodeId(usize);

impl NodeId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NodeId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An operation fused into a layer's stages, in the order written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    MapBatch,
    Map,
    Filter,
    Reject,
    FilterMap,
    FlatMap,
    Inspect,
    Uniq,
    Reduce,
    EmitAndReduce,
    OnTrigger,
    EmitEvents,
    EmitState,
    EmitNothing,
    /// The first `n` of every trigger, for `take_sort`.
    TakeSort,
    /// Tags what a stage emits with its partition and window, for a departition.
    Tag,
    /// Marks events as one side of a join.
    JoinSide(JoinSideName),
    /// The join itself: pairs events of both sides.
    Join,
}

/// Which side of a join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinSideName {
    Left,
    Right,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::MapBatch => "map_batch",
            Op::Map => "map",
            Op::Filter => "filter",
            Op::Reject => "reject",
            Op::FilterMap => "filter_map",
            Op::FlatMap => "flat_map",
            Op::Inspect => "inspect",
            Op::Uniq => "uniq",
            Op::Reduce => "reduce",
            Op::EmitAndReduce => "emit_and_reduce",
            Op::OnTrigger => "on_trigger",
            Op::EmitEvents => "emit_events",
            Op::EmitState => "emit_state",
            Op::EmitNothing => "emit_nothing",
            Op::TakeSort => "take_sort",
            Op::Tag => "tag for departition",
            Op::JoinSide(JoinSideName::Left) => "left side",
            Op::JoinSide(JoinSideName::Right) => "right side",
            Op::Join => "join",
        }
    }
}

/// What sort of producers a source starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// `from_iter` / `from_iters`: one producer per iterator.
    Iters,
    /// `from_stream` / `from_streams`: one producer per stream.
    Streams,
    /// `from_stages`: producers that are already running.
    Stages,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::Iters => "from_iters",
            SourceKind::Streams => "from_streams",
            SourceKind::Stages => "from_stages",
        }
    }

    /// Whether its producers are the flow's own (they can take any dispatcher).
    fn owned(self) -> bool {
        self != SourceKind::Stages
    }
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// Producers; without operations they feed the next layer directly.
    Source { kind: SourceKind, producers: usize },
    /// A layer of stages reading a source's producers itself (a source with operations).
    ReadsProducers { kind: SourceKind, producers: usize },
    /// A layer of stages that read a collection themselves (`from_vec`, `from_shared`).
    Local { what: &'static str },
    /// A layer fed by other layers or sources (`partition`, `shuffle`, `merge`, ...).
    Layer,
    /// The single stage of a departition.
    Departition,
    /// A layer joining two flows.
    Join(JoinKind),
}

/// How a layer's stages take their inputs' events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Routing {
    /// Whichever stage asks (a demand dispatcher upstream).
    Demand,
    /// Stage `i` gets partition `i` of a partition dispatcher upstream, routing as described.
    Partition(&'static str),
}

/// A layer's demand and stage options.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) stages: usize,
    /// Whether `stages` was given (a bare source then runs as a layer of that many stages).
    pub(crate) stages_given: bool,
    pub(crate) max_demand: usize,
    pub(crate) min_demand: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stages: crate::flow::default_stages(),
            stages_given: false,
            max_demand: stage::DEFAULT_MAX_DEMAND,
            min_demand: None,
        }
    }
}

impl Options {
    /// The subscription limits `(max, min)` the options give, or the error naming the option
    /// that breaks its rule.
    pub(crate) fn limits(&self) -> Result<(usize, usize), Error> {
        if self.stages == 0 {
            return Err(OptionError::new("stages", "must be at least 1", 0).into());
        }
        if self.stages > MAX_STAGES {
            let rule = format!("must be at most {MAX_STAGES}");
            return Err(OptionError::new("stages", rule, self.stages).into());
        }
        let mut opts = SubscribeOptions::new().max_demand(self.max_demand);
        if let Some(min) = self.min_demand {
            opts = opts.min_demand(min);
        }
        Ok(opts.limits()?)
    }
}

/// A window as the plan shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WindowKind {
    Global,
    Count(usize),
    Periodic(Duration),
    Fixed {
        duration_ms: u64,
        lateness: Duration,
        idle: Option<Duration>,
    },
}

/// A layer's window and triggers, as the plan shows and checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WindowInfo {
    pub(crate) kind: WindowKind,
    pub(crate) every: Option<usize>,
    pub(crate) periodically: Vec<Duration>,
    pub(crate) custom: bool,
    pub(crate) on_late: bool,
    /// An option that breaks its rule, reported when the flow starts.
    pub(crate) invalid: Option<(&'static str, String)>,
}

impl Default for WindowInfo {
    fn default() -> Self {
        WindowInfo {
            kind: WindowKind::Global,
            every: None,
            periodically: Vec::new(),
            custom: false,
            on_late: false,
            invalid: None,
        }
    }
}

impl WindowInfo {
    pub(crate) fn is_fixed(&self) -> bool {
        matches!(self.kind, WindowKind::Fixed { .. })
    }

    fn describe(&self) -> String {
        let mut s = match &self.kind {
            WindowKind::Global => "global".to_owned(),
            WindowKind::Count(n) => format!("count of {n} events"),
            WindowKind::Periodic(d) => format!("periodic, every {}", ms(*d)),
            WindowKind::Fixed {
                duration_ms,
                lateness,
                idle,
            } => {
                let mut s = format!("fixed, {duration_ms} ms of event time");
                if !lateness.is_zero() {
                    let _ = write!(s, ", allowed lateness {}", ms(*lateness));
                }
                if let Some(idle) = idle {
                    let _ = write!(s, ", idle inputs left out after {}", ms(*idle));
                }
                s
            }
        };
        let mut triggers = Vec::new();
        if let Some(n) = self.every {
            triggers.push(format!("every {n} events"));
        }
        for d in &self.periodically {
            triggers.push(format!("every {} of processing time", ms(*d)));
        }
        if self.custom {
            triggers.push("custom".to_owned());
        }
        if !triggers.is_empty() {
            let _ = write!(s, "; triggers: {}", triggers.join(", "));
        }
        if self.on_late {
            s.push_str("; late events reported");
        }
        s
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// One node of a plan.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) kind: NodeKind,
    /// The nodes this one reads, in order.
    pub(crate) inputs: Vec<NodeId>,
    pub(crate) routing: Routing,
    pub(crate) options: Options,
    pub(crate) window: WindowInfo,
    pub(crate) ops: Vec<Op>,
}

impl Node {
    pub(crate) fn new(kind: NodeKind) -> Self {
        Node {
            kind,
            inputs: Vec::new(),
            routing: Routing::Demand,
            options: Options::default(),
            window: WindowInfo::default(),
            ops: Vec::new(),
        }
    }

    /// Whether this node, reading `input`, routes its events by key (so `input`'s producers
    /// must run a partition dispatcher).
    pub(crate) fn routes(&self) -> bool {
        matches!(self.routing, Routing::Partition(_)) && self.options.stages > 1
    }
}

/// Whether a bare source whose producers feed `consumer` gets a relay stage per producer: when
/// `consumer` follows event time (each producer's watermark must reach every stage), or routes
/// by key over producers that are not the flow's own.
pub(crate) fn relayed(kind: SourceKind, consumer: &Node) -> bool {
    consumer.window.is_fixed() || (consumer.routes() && !kind.owned())
}

/// Every node of a flow, upstream first, and the tokens that stop it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    nodes: BTreeMap<NodeId, Node>,
    /// Cancelling any of these stops the flow gracefully ([`Flow::cancel_on`](crate::Flow::cancel_on)).
    pub(crate) cancel: Vec<CancellationToken>,
}

impl Plan {
    /// A plan of one node.
    pub(crate) fn with(node: Node) -> (Self, NodeId) {
        let mut plan = Plan::default();
        let id = plan.add(node);
        (plan, id)
    }

    pub(crate) fn add(&mut self, node: Node) -> NodeId {
        let id = NodeId::next();
        self.nodes.insert(id, node);
        id
    }

    /// Takes in another flow's nodes (for a layer reading several flows).
    pub(crate) fn absorb(&mut self, other: Plan) {
        self.nodes.extend(other.nodes);
        self.cancel.extend(other.cancel);
    }

    /// The node's number, as [`explain`](Plan::explain) prints it and stage names show it.
    pub(crate) fn index(&self, id: NodeId) -> usize {
        self.nodes.range(..id).count()
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("a node of this plan")
    }

    /// The node that reads `id`, if any has been added yet.
    pub(crate) fn consumer(&self, id: NodeId) -> Option<&Node> {
        self.nodes.values().find(|n| n.inputs.contains(&id))
    }

    /// Checks every node, upstream first: the first option that breaks its rule is the error.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for node in self.nodes.values() {
            node.options.limits()?;
            if let Some((option, rule)) = &node.window.invalid {
                return Err(OptionError::new(option, rule.clone(), "the window given").into());
            }
        }
        Ok(())
    }

    /// The plan as text: one block per node, upstream first.
    pub(crate) fn explain(&self) -> String {
        let index: BTreeMap<NodeId, usize> = self
            .nodes
            .keys()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let names = |ids: &[NodeId]| {
            ids.iter()
                .map(|id| format!("[{}]", index[id]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        for (id, node) in &self.nodes {
            let i = index[id];
            let consumer = self.consumer(*id);
            let stages = |n: usize| {
                if n == 1 {
                    "1 stage".to_owned()
                } else {
                    format!("{n} stages")
                }
            };
            let _ = match &node.kind {
                NodeKind::Source { kind, producers } => {
                    let relay = consumer.is_some_and(|c| relayed(*kind, c));
                    let relay = if relay {
                        ", each relayed by a stage of its own"
                    } else {
                        ""
                    };
                    writeln!(
                        out,
                        "[{i}] {}: {producers} producer{}{relay}",
                        kind.name(),
                        plural(*producers)
                    )
                }
                NodeKind::ReadsProducers { kind, producers } => writeln!(
                    out,
                    "[{i}] {}: {}, reading {producers} producer{}",
                    kind.name(),
                    stages(node.options.stages),
                    plural(*producers)
                ),
                NodeKind::Local { what } => {
                    writeln!(out, "[{i}] {what}: {}", stages(node.options.stages))
                }
                NodeKind::Layer => {
                    let how = match node.routing {
                        Routing::Demand => "",
                        Routing::Partition(_) => " by partition",
                    };
                    writeln!(
                        out,
                        "[{i}] layer: {}, reading {}{how}",
                        stages(node.options.stages),
                        names(&node.inputs)
                    )
                }
                NodeKind::Departition => writeln!(
                    out,
                    "[{i}] departition: 1 stage, reading {}",
                    names(&node.inputs)
                ),
                NodeKind::Join(kind) => writeln!(
                    out,
                    "[{i}] {} join: {}, reading {} by key",
                    kind.name(),
                    stages(node.options.stages),
                    names(&node.inputs)
                ),
            };
            if !matches!(node.kind, NodeKind::Source { .. }) {
                let min = node
                    .options
                    .min_demand
                    .unwrap_or(node.options.max_demand / 2);
                let _ = writeln!(
                    out,
                    "    demand: max {}, min {min}",
                    node.options.max_demand
                );
                let _ = writeln!(out, "    window: {}", node.window.describe());
                if !node.ops.is_empty() {
                    let ops: Vec<&str> = node.ops.iter().map(|op| op.name()).collect();
                    let _ = writeln!(out, "    ops: {}", ops.join(", "));
                }
            }
            let _ = match consumer {
                None => writeln!(out, "    emits to the finisher"),
                Some(c) => {
                    let at = self
                        .nodes
                        .iter()
                        .find(|(_, n)| std::ptr::eq(*n, c))
                        .map(|(id, _)| index[id])
                        .expect("the consumer is a node");
                    let how = match (&c.routing, c.routes()) {
                        (Routing::Partition(by), true) => format!(
                            "partition dispatcher ({by}, {} partitions)",
                            c.options.stages
                        ),
                        _ => "demand dispatcher".to_owned(),
                    };
                    let marks = if c.window.is_fixed() {
                        ", with watermarks"
                    } else {
                        ""
                    };
                    writeln!(out, "    emits to [{at}] through a {how}{marks}")
                }
            };
        }
        if !self.cancel.is_empty() {
            let n = self.cancel.len();
            let _ = writeln!(
                out,
                "stops gracefully when {} cancelled",
                if n == 1 {
                    "its cancellation token is".to_owned()
                } else {
                    format!("any of its {n} cancellation tokens is")
                }
            );
        }
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_increase() {
        let a = NodeId::next();
        let b = NodeId::next();
        assert!(a < b);
    }

    #[test]
    fn validation_reports_the_first_node_upstream() {
        let mut first = Node::new(NodeKind::Layer);
        first.options.max_demand = 0;
        let mut second = Node::new(NodeKind::Layer);
        second.options.stages = 0;
        let mut plan = Plan::default();
        let a = plan.add(first);
        second.inputs.push(a);
        plan.add(second);
        match plan.validate().unwrap_err().into_kind() {
            crate::ErrorKind::Option(e) => assert_eq!(e.option, "max_demand"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relays_only_where_needed() {
        let mut partitioned = Node::new(NodeKind::Layer);
        partitioned.routing = Routing::Partition("by key");
        partitioned.options.stages = 2;
        assert!(!relayed(SourceKind::Iters, &partitioned));
        assert!(relayed(SourceKind::Stages, &partitioned));
        partitioned.options.stages = 1;
        assert!(!relayed(SourceKind::Stages, &partitioned));
        let mut fixed = Node::new(NodeKind::Layer);
        fixed.window.kind = WindowKind::Fixed {
            duration_ms: 10,
            lateness: Duration::ZERO,
            idle: None,
        };
        assert!(relayed(SourceKind::Iters, &fixed));
    }
}

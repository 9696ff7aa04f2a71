//! Joins of two flows (Flow's `bounded_join` and `window_join`): both sides are partitioned by
//! their key over the join's stages, and each stage pairs the events of equal keys it holds.

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use stage::Packet;

use crate::flow::{Built, Flow};
use crate::logic::{Factory, Logic};
use crate::materialise::{Feed, Input};
use crate::partition::route_by_key;
use crate::plan::{JoinSideName, Node, NodeKind, Op, Plan, Routing};
use crate::trigger::Trigger;
use crate::window::Window;

/// Which events a join emits besides the pairs of events with equal keys.
///
/// | kind | also emits, at each window's `Done` |
/// |---|---|
/// | `Inner` | nothing |
/// | `LeftOuter` | `join_op(Some(l), None)` for each left event whose key the right side never had in the window |
/// | `RightOuter` | `join_op(None, Some(r))` for each right event whose key the left side never had |
/// | `FullOuter` | both |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JoinKind {
    /// Only pairs.
    Inner,
    /// Pairs, and left events without a partner.
    LeftOuter,
    /// Pairs, and right events without a partner.
    RightOuter,
    /// Pairs, and events of either side without a partner.
    FullOuter,
}

impl JoinKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            JoinKind::Inner => "inner",
            JoinKind::LeftOuter => "left outer",
            JoinKind::RightOuter => "right outer",
            JoinKind::FullOuter => "full outer",
        }
    }

    fn keeps_left(self) -> bool {
        matches!(self, JoinKind::LeftOuter | JoinKind::FullOuter)
    }

    fn keeps_right(self) -> bool {
        matches!(self, JoinKind::RightOuter | JoinKind::FullOuter)
    }
}

/// An event of one side of a join, as it enters the join's stages: what a join's window reads
/// (see [`Flow::window_join`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side<L, R> {
    /// An event of the left flow.
    Left(L),
    /// An event of the right flow.
    Right(R),
}

impl<L, R> Side<L, R> {
    /// Applies `left_op` to a left event or `right_op` to a right one: handy for a fixed
    /// window's `by` over both sides.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::Side;
    ///
    /// let time = |e: &Side<(u64, char), u64>| e.either(|l| l.0, |r| *r);
    /// assert_eq!(time(&Side::Left((5, 'x'))), 5);
    /// assert_eq!(time(&Side::Right(7)), 7);
    /// ```
    pub fn either<U>(&self, left_op: impl FnOnce(&L) -> U, right_op: impl FnOnce(&R) -> U) -> U {
        match self {
            Side::Left(l) => left_op(l),
            Side::Right(r) => right_op(r),
        }
    }
}

/// What every stage of a join shares: the key functions and the join function.
struct Keys<LK, RK, J> {
    left_key: LK,
    right_key: RK,
    join_op: J,
}

/// One window of one join stage: every event of each side so far, by key.
struct Join<L, R, K, O, LK, RK, J> {
    kind: JoinKind,
    keys: Arc<Keys<LK, RK, J>>,
    left: HashMap<K, Vec<L>, ahash::RandomState>,
    right: HashMap<K, Vec<R>, ahash::RandomState>,
    _out: PhantomData<fn() -> O>,
}

impl<L, R, K, O, LK, RK, J> Logic<O> for Join<L, R, K, O, LK, RK, J>
where
    L: Send + 'static,
    R: Send + 'static,
    K: Hash + Eq + Send + 'static,
    O: Send + 'static,
    LK: Fn(&L) -> K + Send + Sync + 'static,
    RK: Fn(&R) -> K + Send + Sync + 'static,
    J: Fn(Option<&L>, Option<&R>) -> O + Send + Sync + 'static,
{
    /// Each arriving event is paired at once with every event of the other side stored under
    /// its key, in their arrival order, and then stored itself.
    fn process(&mut self, batch: Packet) -> Vec<O> {
        let Ok(events) = batch.downcast::<Side<L, R>>() else {
            unreachable!("flow wiring: a join reads the events of its sides");
        };
        let keys = &*self.keys;
        let mut out = Vec::new();
        for event in events {
            match event {
                Side::Left(l) => {
                    let key = (keys.left_key)(&l);
                    if let Some(rights) = self.right.get(&key) {
                        out.extend(rights.iter().map(|r| (keys.join_op)(Some(&l), Some(r))));
                    }
                    self.left.entry(key).or_default().push(l);
                }
                Side::Right(r) => {
                    let key = (keys.right_key)(&r);
                    if let Some(lefts) = self.left.get(&key) {
                        out.extend(lefts.iter().map(|l| (keys.join_op)(Some(l), Some(&r))));
                    }
                    self.right.entry(key).or_default().push(r);
                }
            }
        }
        out
    }

    /// Only a window's `Done` emits the events without a partner (for outer joins) and ends
    /// what the window holds; other triggers keep it.
    fn trigger(&mut self, trigger: &Trigger) -> Vec<O> {
        if !trigger.is_done() {
            return Vec::new();
        }
        let keys = &*self.keys;
        let mut out = Vec::new();
        let left = std::mem::take(&mut self.left);
        let right = std::mem::take(&mut self.right);
        if self.kind.keeps_left() {
            for (key, lefts) in &left {
                if !right.contains_key(key) {
                    out.extend(lefts.iter().map(|l| (keys.join_op)(Some(l), None)));
                }
            }
        }
        if self.kind.keeps_right() {
            for (key, rights) in &right {
                if !left.contains_key(key) {
                    out.extend(rights.iter().map(|r| (keys.join_op)(None, Some(r))));
                }
            }
        }
        out
    }
}

impl<O: Send + 'static> Flow<O> {
    /// Joins two flows over the whole of their input (Flow's `bounded_join`): a
    /// [`window_join`](Flow::window_join) with the global window. Both sides are partitioned
    /// by their key (`left_key`, `right_key`) over the join's stages; each stage pairs every
    /// left and right event of equal keys with `join_op(Some(l), Some(r))` as soon as the
    /// second of them arrives, and outer joins add the events without a partner at the end.
    /// The join holds both sides in memory. Operations written after it run in the join's
    /// stages; [`stages`](Flow::stages) after it sets their number.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, JoinKind};
    ///
    /// let orders = Flow::from_iter([(1, "tea"), (2, "cake"), (1, "jam")]);
    /// let customers = Flow::from_iter([(1, "ann"), (3, "bob")]);
    /// let mut got = Flow::bounded_join(
    ///     JoinKind::LeftOuter,
    ///     orders,
    ///     customers,
    ///     |o: &(u32, &str)| o.0,
    ///     |c: &(u32, &str)| c.0,
    ///     |o, c| (o.map(|o| o.1), c.map(|c| c.1)),
    /// )
    /// .stages(2)
    /// .collect_blocking()
    /// .unwrap();
    /// got.sort();
    /// assert_eq!(got, [(Some("cake"), None), (Some("jam"), Some("ann")), (Some("tea"), Some("ann"))]);
    /// ```
    pub fn bounded_join<L, R, K, LK, RK, J>(
        kind: JoinKind,
        left: Flow<L>,
        right: Flow<R>,
        left_key: LK,
        right_key: RK,
        join_op: J,
    ) -> Flow<O>
    where
        L: Send + 'static,
        R: Send + 'static,
        K: Hash + Eq + Send + 'static,
        LK: Fn(&L) -> K + Send + Sync + 'static,
        RK: Fn(&R) -> K + Send + Sync + 'static,
        J: Fn(Option<&L>, Option<&R>) -> O + Send + Sync + 'static,
    {
        Flow::window_join(
            kind,
            left,
            right,
            Window::global(),
            left_key,
            right_key,
            join_op,
        )
    }

    /// Joins two flows window by window (Flow's `window_join`): as
    /// [`bounded_join`](Flow::bounded_join), but each stage pairs only the events of one
    /// window, and a window's `Done` (for fixed windows: once both sides have moved past it)
    /// emits its unpaired events for outer joins and forgets it. The window reads the events
    /// of both sides as they enter the join, as [`Side`]s: a fixed window's `by` applies to
    /// the raw event, not to its key.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, JoinKind, Side, Window};
    /// use std::time::Duration;
    ///
    /// // Clicks and views at a time (ms), joined per second.
    /// let clicks = Flow::from_iter([(1u32, 100u64), (1, 1200)]);
    /// let views = Flow::from_iter([(1u32, 50u64), (1, 2500)]);
    /// let window = Window::fixed(Duration::from_secs(1), |e: &Side<(u32, u64), (u32, u64)>| {
    ///     e.either(|c| c.1, |v| v.1)
    /// });
    /// let mut got = Flow::window_join(
    ///     JoinKind::Inner,
    ///     clicks,
    ///     views,
    ///     window,
    ///     |c: &(u32, u64)| c.0,
    ///     |v: &(u32, u64)| v.0,
    ///     |c, v| (c.unwrap().1, v.unwrap().1),
    /// )
    /// .stages(1)
    /// .collect_blocking()
    /// .unwrap();
    /// got.sort();
    /// assert_eq!(got, [(100, 50)], "only the first second has both");
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn window_join<L, R, K, LK, RK, J>(
        kind: JoinKind,
        left: Flow<L>,
        right: Flow<R>,
        window: Window<Side<L, R>>,
        left_key: LK,
        right_key: RK,
        join_op: J,
    ) -> Flow<O>
    where
        L: Send + 'static,
        R: Send + 'static,
        K: Hash + Eq + Send + 'static,
        LK: Fn(&L) -> K + Send + Sync + 'static,
        RK: Fn(&R) -> K + Send + Sync + 'static,
        J: Fn(Option<&L>, Option<&R>) -> O + Send + Sync + 'static,
    {
        let left = left.map_as(Op::JoinSide(JoinSideName::Left), Side::<L, R>::Left);
        let right = right.map_as(Op::JoinSide(JoinSideName::Right), Side::<L, R>::Right);
        let keys = Arc::new(Keys {
            left_key,
            right_key,
            join_op,
        });
        let routing_keys = Arc::clone(&keys);
        let route = route_by_key(move |e: &Side<L, R>| match e {
            Side::Left(l) => (routing_keys.left_key)(l),
            Side::Right(r) => (routing_keys.right_key)(r),
        });
        let mut plan = Plan::default();
        let mut node = Node::new(NodeKind::Join(kind));
        node.routing = Routing::Partition("by key");
        let mut inputs = Vec::with_capacity(2);
        for side in [left, right] {
            let Built { plan: theirs, open } = match side.into_built() {
                Ok(built) => built,
                Err(e) => return Flow::failed(e),
            };
            plan.absorb(theirs);
            node.inputs.push(open.node());
            inputs.push(Input::flow(open, Some(route.clone())));
        }
        let logic: Factory<O> = Arc::new(move |_| {
            Box::new(Join {
                kind,
                keys: Arc::clone(&keys),
                left: HashMap::default(),
                right: HashMap::default(),
                _out: PhantomData,
            })
        });
        let flow = Flow::layer(plan, node, Feed::Inputs(inputs), logic);
        let mut layered = match flow.into_layered() {
            Ok(layered) => layered,
            Err(e) => return Flow::failed(e),
        };
        layered.set_window(window);
        layered.plan.node_mut(layered.layer.node).ops.push(Op::Join);
        layered.layer.has_ops = true;
        layered.into_flow()
    }
}

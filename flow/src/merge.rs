//! Layer boundaries: `partition`, `shuffle` and `merge` start a layer reading one or several
//! flows; `departition` and `take_sort` gather a layer into one stage.

use std::sync::Arc;

use stage::OptionError;

use crate::error::Error;
use crate::flow::{Built, Flow, Layered};
use crate::logic::{Departition, Input as InputLogic, Tag, TopN};
use crate::materialise::{Feed, Input, Open};
use crate::partition::{Partition, Route};
use crate::plan::{Node, NodeKind, Op, Options, Plan, Routing};

impl<T: Send + 'static> Flow<T> {
    /// Starts a new layer whose stage `i` receives exactly the events that `partition` routes
    /// to `i`: events with equal keys always meet in the same stage.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Partition};
    ///
    /// // Count words per stage, partitioned so each word is counted in one place.
    /// let mut counts = Flow::from_iter(["a", "b", "a", "c", "a"])
    ///     .partition(Partition::by_key(|w: &&str| w.to_string()).stages(2))
    ///     .reduce(std::collections::HashMap::new, |acc, w| *acc.entry(w).or_insert(0) += 1)
    ///     .emit_events()
    ///     .collect_blocking()
    ///     .unwrap();
    /// counts.sort();
    /// assert_eq!(counts, [("a", 3), ("b", 1), ("c", 1)]);
    /// ```
    pub fn partition(self, partition: Partition<T>) -> Flow<T> {
        Flow::merge_partitioned([self], partition)
    }

    /// Starts a new layer fed by whichever of its stages asks (no routing by key).
    ///
    /// # Examples
    ///
    /// ```
    /// let n = flow::Flow::from_iter(0..100).shuffle().stages(3).collect_blocking().unwrap().len();
    /// assert_eq!(n, 100);
    /// ```
    pub fn shuffle(self) -> Flow<T> {
        Flow::merge([self])
    }

    /// Starts a new layer that reads every one of `flows` (Flow's `merge`, or `shuffle` of a
    /// list of flows): each batch of any of them goes to whichever stage of the layer asks.
    /// An empty list is an error when the flow starts.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::Flow;
    ///
    /// let evens = Flow::from_iter((0..10).filter(|x| x % 2 == 0));
    /// let odds = Flow::from_iter((0..10).filter(|x| x % 2 == 1)).map(|x| x * 100);
    /// let mut all = Flow::merge([evens, odds]).stages(2).collect_blocking().unwrap();
    /// all.sort();
    /// assert_eq!(all, [0, 2, 4, 6, 8, 100, 300, 500, 700, 900]);
    /// ```
    pub fn merge(flows: impl IntoIterator<Item = Flow<T>>) -> Flow<T> {
        Flow::reading(flows, None, Options::default(), Routing::Demand)
    }

    /// Starts a new layer that reads every one of `flows`, routed by `partition` (Flow's
    /// `partition` of a list of flows): equal keys meet in one stage, whichever flow they
    /// come from. An empty list is an error when the flow starts.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Partition};
    ///
    /// let shop = Flow::from_iter([("apples", 3), ("pears", 1)]);
    /// let market = Flow::from_iter([("apples", 2)]);
    /// let mut totals = Flow::merge_partitioned([shop, market], Partition::by_key(|(k, _): &(&str, i32)| *k).stages(2))
    ///     .reduce(std::collections::HashMap::new, |m, (k, n)| *m.entry(k).or_insert(0) += n)
    ///     .emit_events()
    ///     .collect_blocking()
    ///     .unwrap();
    /// totals.sort();
    /// assert_eq!(totals, [("apples", 5), ("pears", 1)]);
    /// ```
    pub fn merge_partitioned(
        flows: impl IntoIterator<Item = Flow<T>>,
        partition: Partition<T>,
    ) -> Flow<T> {
        let defaults = Options::default();
        let options = Options {
            stages: partition.stages.unwrap_or(defaults.stages),
            stages_given: true,
            max_demand: partition.max_demand.unwrap_or(defaults.max_demand),
            min_demand: partition.min_demand,
        };
        Flow::reading(
            flows,
            Some(partition.route),
            options,
            Routing::Partition(partition.by),
        )
    }

    /// A new layer reading `flows`, each through `route` (or by demand).
    fn reading(
        flows: impl IntoIterator<Item = Flow<T>>,
        route: Option<Route<T>>,
        options: Options,
        routing: Routing,
    ) -> Flow<T> {
        let mut plan = Plan::default();
        let mut inputs = Vec::new();
        let mut node = Node::new(NodeKind::Layer);
        for flow in flows {
            let Built { plan: theirs, open } = match flow.into_built() {
                Ok(built) => built,
                Err(e) => return Flow::failed(e),
            };
            plan.absorb(theirs);
            node.inputs.push(open.node());
            inputs.push(Input::flow(open, route.clone()));
        }
        if inputs.is_empty() {
            return Flow::failed(Error::misuse("merge needs at least one flow"));
        }
        node.routing = routing;
        node.options = options;
        Flow::layer(plan, node, Feed::Inputs(inputs), InputLogic::factory())
    }

    /// Merges what every stage of the current layer emits into one stage, window by window:
    /// each stage's output is folded into `init()` with `merge`, and once every stage has
    /// finished the window, `done` turns the result into one event.
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::Flow;
    ///
    /// let total = Flow::from_iter(1..=100u64)
    ///     .stages(4)
    ///     .reduce(|| 0u64, |sum, x| *sum += x)
    ///     .emit_state()
    ///     .departition(|| 0u64, |total, sums| *total += sums.iter().sum::<u64>(), |total| total)
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(total, [5050]);
    /// ```
    pub fn departition<A, R, I, M, D>(self, init: I, merge: M, done: D) -> Flow<R>
    where
        A: Send + 'static,
        R: Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        M: Fn(&mut A, Vec<T>) + Send + Sync + 'static,
        D: Fn(A) -> R + Send + Sync + 'static,
    {
        self.departition_with_window(init, merge, move |acc, _| done(acc))
    }

    /// [`departition`](Flow::departition) whose `done` also gets the window it finishes, as
    /// [`Trigger::window`](crate::Trigger::window) reports it (0 for the global window, the
    /// index of a count or periodic window, the start in ms of a fixed window).
    ///
    /// # Examples
    ///
    /// ```
    /// use flow::{Flow, Window};
    ///
    /// let per_window = Flow::from_iter(1..=6u64)
    ///     .stages(2)
    ///     .window(Window::count(2))
    ///     .reduce(|| 0u64, |sum, x| *sum += x)
    ///     .emit_state()
    ///     .departition_with_window(|| 0u64, |t, sums| *t += sums.iter().sum::<u64>(), |t, window| (window, t))
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(per_window.iter().map(|(_, t)| t).sum::<u64>(), 21);
    /// assert_eq!(per_window.iter().map(|(w, _)| *w).max(), Some(per_window.len() as u64 - 1));
    /// ```
    pub fn departition_with_window<A, R, I, M, D>(self, init: I, merge: M, done: D) -> Flow<R>
    where
        A: Send + 'static,
        R: Send + 'static,
        I: Fn() -> A + Send + Sync + 'static,
        M: Fn(&mut A, Vec<T>) + Send + Sync + 'static,
        D: Fn(A, u64) -> R + Send + Sync + 'static,
    {
        let layered = match self.into_layered() {
            Ok(layered) => layered,
            Err(e) => return Flow::failed(e),
        };
        let partitions = layered.plan.node(layered.layer.node).options.stages;
        let logic = Tag::factory(Arc::clone(&layered.layer.logic));
        let reduced = layered.layer.reduced;
        let Layered { plan, layer } = layered.with_logic(Op::Tag, logic, reduced);
        let mut node = Node::new(NodeKind::Departition);
        node.inputs.push(layer.node);
        node.options.stages = 1;
        Flow::layer(
            plan,
            node,
            Feed::Inputs(vec![Input::flow(Open::Layer(layer), None)]),
            Departition::factory(partitions, Arc::new(init), Arc::new(merge), Arc::new(done)),
        )
    }

    /// The `n` first events in `cmp` order, as one sorted list per window, gathered from every
    /// stage of the layer (after a reduce: of what its triggers emit).
    ///
    /// # Examples
    ///
    /// ```
    /// let top = flow::Flow::from_iter([5, 1, 9, 3, 7])
    ///     .take_sort(3, |a: &i32, b: &i32| b.cmp(a))
    ///     .collect_blocking()
    ///     .unwrap();
    /// assert_eq!(top, [vec![9, 7, 5]]);
    /// ```
    pub fn take_sort<C>(self, n: usize, cmp: C) -> Flow<Vec<T>>
    where
        C: Fn(&T, &T) -> std::cmp::Ordering + Send + Sync + 'static,
    {
        if n == 0 {
            return Flow::failed(
                OptionError::new("n", "take_sort needs n of at least 1", 0).into(),
            );
        }
        let layered = match self.into_layered() {
            Ok(layered) => layered,
            Err(e) => return Flow::failed(e),
        };
        let cmp = Arc::new(cmp);
        let merge_cmp = Arc::clone(&cmp);
        let logic = TopN::factory(Arc::clone(&layered.layer.logic), n, cmp);
        layered
            .with_logic(Op::TakeSort, logic, true)
            .into_flow()
            .departition(
                Vec::new,
                move |acc: &mut Vec<T>, lists: Vec<Vec<T>>| {
                    for list in lists {
                        merge_sorted(acc, list, n, &*merge_cmp);
                    }
                },
                |acc| acc,
            )
    }
}

/// Merges a sorted `list` into the sorted `acc`, keeping the first `n`; ties favour `list`.
fn merge_sorted<T>(
    acc: &mut Vec<T>,
    list: Vec<T>,
    n: usize,
    cmp: &dyn Fn(&T, &T) -> std::cmp::Ordering,
) {
    let old = std::mem::take(acc);
    let mut a = old.into_iter().peekable();
    let mut b = list.into_iter().peekable();
    while acc.len() < n {
        let take_b = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => cmp(y, x) != std::cmp::Ordering::Greater,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => break,
        };
        let next = if take_b { b.next() } else { a.next() };
        acc.extend(next);
    }
}

#[cfg(test)]
mod tests {
    use super::merge_sorted;

    #[test]
    fn merge_sorted_keeps_n_and_favours_the_arriving_list_on_ties() {
        let mut acc = vec![(1, 'a'), (3, 'a'), (5, 'a')];
        merge_sorted(
            &mut acc,
            vec![(3, 'b'), (4, 'b')],
            4,
            &|x: &(i32, char), y| x.0.cmp(&y.0),
        );
        assert_eq!(acc, [(1, 'a'), (3, 'b'), (3, 'a'), (4, 'b')]);
    }
}

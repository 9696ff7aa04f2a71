//! The consumer behind a [`ConsumerSupervisor`](super::ConsumerSupervisor): one tokio task per
//! event, children reporting back to the stage through its own handle.
//!
//! Stopping is the supervisor's own business. When a subscription's cancel mode says so, or
//! on [`Shutdown`], it *drains*: it cancels its subscriptions, asks for nothing more, and stops
//! once its last child has ended, or when the grace runs out (a timer), aborting the rest. A
//! stop from outside (`stop`, the restart intensity) goes through the engine instead, and
//! `terminate` gives the children what is left of the grace. Either way the final counts are
//! published before the stage exits.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::report::OnFailure;
use super::slots::{Intensity, Slots};
use super::subscription::Modes;
use super::{ChildError, ChildFailure, ChildId, ChildState, Children, StartChildError};
use crate::consumer::Consumer;
use crate::context::{Context, ReplyTo};
use crate::error::{Cancel, Reason, panic_message};
use crate::handle::StageHandle;
use crate::message::{Call, Cast, Info};
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};

/// The child function, with its error already turned into a message.
pub(super) type ChildFn<T> = Box<dyn Fn(T) -> BoxFuture<'static, Result<(), Arc<str>>> + Send>;

/// How one run of a child ended.
type Outcome = Result<(), ChildError>;

/// Counts the children (`count_children`).
pub(super) struct CountChildren;
/// Lists the children (`which_children`).
pub(super) struct WhichChildren;
/// Starts a child outside any subscription (`start_child`).
pub(super) struct StartChild<T>(pub(super) T);
/// Aborts a child (`terminate_child`).
pub(super) struct TerminateChild(pub(super) ChildId);
/// Stops taking events and stops once the children are done (`shutdown`).
pub(super) struct Shutdown;

/// A child's run ended.
struct Exited(ChildId, Outcome);
/// Try again to restart a child whose restart failed.
struct Retry(ChildId);
/// The shutdown grace of a drain is over.
struct GraceOver;

struct Child<T> {
    /// The subscription whose slot the child holds; `None` for `start_child`.
    origin: Option<SubscriptionId>,
    /// Kept for restarts (transient children only).
    event: Option<T>,
    /// `None` while restarting.
    task: Option<JoinHandle<Outcome>>,
}

/// A supervisor waiting for its children before it stops.
struct Drain {
    /// The reason it stops with.
    reason: Reason,
    /// When the children still running are aborted; `None` waits for them.
    deadline: Option<Instant>,
}

/// How a [`Supervisor`] is configured.
pub(super) struct Config<T> {
    pub(super) name: Arc<str>,
    pub(super) child: ChildFn<T>,
    /// `Some` when children are restarted.
    pub(super) cloner: Option<fn(&T) -> T>,
    pub(super) intensity: Intensity,
    /// How long children get to finish once the supervisor stops; `None`: as long as they take.
    pub(super) grace: Option<Duration>,
    pub(super) on_failure: Option<OnFailure>,
}

/// The consumer behind [`ConsumerSupervisor`](super::ConsumerSupervisor).
pub(super) struct Supervisor<T: Send + 'static> {
    config: Config<T>,
    producers: HashMap<SubscriptionId, Slots>,
    /// The cancel mode the user gave each subscription.
    modes: Modes,
    children: HashMap<ChildId, Child<T>>,
    next_id: u64,
    stats: Children,
    draining: Option<Drain>,
    /// The final counts, for the handles, once the supervisor has stopped.
    finals: watch::Sender<Option<Children>>,
}

impl<T: Send + 'static> Supervisor<T> {
    pub(super) fn new(
        config: Config<T>,
        modes: Modes,
        finals: watch::Sender<Option<Children>>,
    ) -> Self {
        Supervisor {
            config,
            producers: HashMap::new(),
            modes,
            children: HashMap::new(),
            next_id: 0,
            stats: Children::default(),
            draining: None,
            finals,
        }
    }

    /// Calls the child function and spawns its future; the panic message if the call panicked.
    fn launch(
        &self,
        id: ChildId,
        event: T,
        me: StageHandle<Self>,
    ) -> Result<JoinHandle<Outcome>, Arc<str>> {
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| (self.config.child)(event)))
            .map_err(|payload| panic_message(&*payload))?;
        Ok(tokio::spawn(run_child(id, run, me)))
    }

    /// Starts a new child for `event`, holding a slot of `origin`; the panic message if the
    /// child function panicked.
    fn start(
        &mut self,
        event: T,
        origin: Option<SubscriptionId>,
        ctx: &Context<Self>,
    ) -> Result<ChildId, Arc<str>> {
        self.next_id += 1;
        let id = ChildId(self.next_id);
        let kept = self.config.cloner.map(|clone| clone(&event));
        match self.launch(id, event, ctx.myself()) {
            Ok(task) => {
                let child = Child {
                    origin,
                    event: kept,
                    task: Some(task),
                };
                self.children.insert(id, child);
                self.stats.started += 1;
                Ok(id)
            }
            Err(msg) => {
                let name = &self.config.name;
                error!(supervisor = %name, child = %id, error = %msg, "child failed to start");
                self.stats.failed += 1;
                self.report(id, ChildError::Panic(Arc::clone(&msg)), false);
                Err(msg)
            }
        }
    }

    fn exited(&mut self, id: ChildId, outcome: Outcome, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(&id) else {
            // Terminated since.
            return;
        };
        // Its run is over (and counted below): a child left with a task has not been heard of.
        child.task = None;
        match outcome {
            Ok(()) => {
                self.stats.completed += 1;
                self.remove(id, ctx);
            }
            Err(error) => self.failed(id, error, false, ctx),
        }
    }

    /// A run of child `id` failed, or (`at_start`) its restart did: reports it, then restarts
    /// the child in its slot, forgets it, or stops the supervisor if that is one restart too
    /// many.
    fn failed(&mut self, id: ChildId, error: ChildError, at_start: bool, ctx: &mut Context<Self>) {
        self.stats.failed += 1;
        let restartable = self.children.get(&id).is_some_and(|c| c.event.is_some());
        let restarting = restartable && self.config.intensity.record(Instant::now());
        let name = Arc::clone(&self.config.name);
        if at_start {
            error!(supervisor = %name, child = %id, %error, retrying = restarting, "child failed to restart");
        } else {
            error!(supervisor = %name, child = %id, %error, restarting, "child failed");
        }
        // The callback runs once the child's state says what happens to it (a child still
        // held has work left), in case it panics.
        if !restarting {
            self.remove(id, ctx);
            if restartable {
                error!(supervisor = %name, child = %id, "reached the maximum restart intensity; shutting down");
                ctx.stop(Reason::Shutdown);
            }
            self.report(id, error, false);
        } else if at_start {
            // Through the mailbox: a child that keeps panicking when called does not hold
            // the stage in a loop.
            let _ = ctx.myself().cast(Retry(id));
            self.report(id, error, true);
        } else {
            // Reported before the new run starts, so that a failure to start it comes after.
            self.report(id, error, true);
            self.relaunch(id, ctx);
        }
    }

    /// Runs a failed child again, in its slot, with a clone of its event.
    fn relaunch(&mut self, id: ChildId, ctx: &mut Context<Self>) {
        let (Some(clone), Some(event)) = (
            self.config.cloner,
            self.children.get(&id).and_then(|c| c.event.as_ref()),
        ) else {
            return;
        };
        let launched = self.launch(id, clone(event), ctx.myself());
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        match launched {
            Ok(task) => {
                child.task = Some(task);
                self.stats.restarted += 1;
            }
            Err(msg) => {
                child.task = None;
                self.failed(id, ChildError::Panic(msg), true, ctx);
            }
        }
    }

    /// Forgets a child and frees its slot; stops a draining supervisor after its last child.
    fn remove(&mut self, id: ChildId, ctx: &mut Context<Self>) {
        let Some(child) = self.children.remove(&id) else {
            return;
        };
        if let Some(sub) = child.origin {
            if let Some(slots) = self.producers.get_mut(&sub) {
                let n = slots.freed();
                self.ask(sub, n, ctx);
            }
        }
        self.stop_if_drained(ctx);
    }

    /// Asks for `n` events, unless the supervisor is draining.
    fn ask(&self, sub: SubscriptionId, n: usize, ctx: &mut Context<Self>) {
        if self.draining.is_none() {
            ctx.ask(sub, n);
        }
    }

    /// Stops taking events and stops with `reason` once the children are done, or at the end
    /// of the grace. A supervisor already draining keeps its first reason and deadline.
    fn drain(&mut self, reason: Reason, ctx: &mut Context<Self>) {
        if self.draining.is_some() {
            return;
        }
        let name = &self.config.name;
        let children = self.children.len();
        match self.config.grace {
            Some(grace) => {
                info!(supervisor = %name, %reason, children, ?grace, "stopping once its children are done, within the grace");
                ctx.send_after(grace, GraceOver);
            }
            None => {
                info!(supervisor = %name, %reason, children, "stopping once its children are done")
            }
        }
        for &sub in self.producers.keys() {
            ctx.cancel(sub, reason.clone());
        }
        let deadline = self.config.grace.map(|grace| Instant::now() + grace);
        self.draining = Some(Drain { reason, deadline });
        self.stop_if_drained(ctx);
    }

    fn stop_if_drained(&self, ctx: &mut Context<Self>) {
        if let Some(drain) = &self.draining {
            if self.children.is_empty() {
                ctx.stop(drain.reason.clone());
            }
        }
    }

    /// Waits for the running children until `deadline` (`None`: as long as they take), then
    /// aborts those still running and counts them as cancelled. Forgets every child.
    async fn wind_up(&mut self, deadline: Option<Instant>) {
        let mut ids: Vec<ChildId> = self.children.keys().copied().collect();
        ids.sort_unstable();
        let mut cancelled = Vec::new();
        for id in ids {
            let Some(child) = self.children.remove(&id) else {
                continue;
            };
            let Some(mut task) = child.task else {
                // Waiting to restart: its work is not done.
                cancelled.push(id);
                continue;
            };
            let joined = match deadline {
                // A task that has ended is seen as ended even after the deadline.
                Some(deadline) => match tokio::time::timeout_at(deadline, &mut task).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        task.abort();
                        task.await
                    }
                },
                None => task.await,
            };
            if self.ended(id, joined) {
                cancelled.push(id);
            }
        }
        if !cancelled.is_empty() {
            let name = &self.config.name;
            let n = cancelled.len();
            warn!(supervisor = %name, cancelled = n, "children still running at the end of the shutdown grace were cancelled");
        }
        for id in cancelled {
            self.stats.cancelled += 1;
            self.report(id, ChildError::Cancelled, false);
        }
    }

    /// Counts how a child's task ended while the supervisor stops, without restarting it.
    /// `true` if it was aborted.
    fn ended(&mut self, id: ChildId, joined: Result<Outcome, JoinError>) -> bool {
        match joined {
            Ok(Ok(())) => self.stats.completed += 1,
            Ok(Err(error)) => {
                let name = &self.config.name;
                error!(supervisor = %name, child = %id, %error, restarting = false, "child failed");
                self.stats.failed += 1;
                self.report(id, error, false);
            }
            Err(_) => return true,
        }
        false
    }

    fn report(&mut self, child: ChildId, error: ChildError, restarting: bool) {
        if let Some(OnFailure(on_failure)) = &mut self.config.on_failure {
            on_failure(ChildFailure {
                child,
                error,
                restarting,
            });
        }
    }

    fn snapshot(&self) -> Children {
        let active = self.children.values().filter(|c| c.task.is_some()).count();
        Children {
            active,
            restarting: self.children.len() - active,
            ..self.stats.clone()
        }
    }
}

/// Runs one child's future and reports how it ended, to the stage and as the task's output
/// (which the stage reads instead when it is stopping).
async fn run_child<T: Send + 'static>(
    id: ChildId,
    run: BoxFuture<'static, Result<(), Arc<str>>>,
    me: StageHandle<Supervisor<T>>,
) -> Outcome {
    let outcome = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err(ChildError::Err(msg)),
        Err(payload) => Err(ChildError::Panic(panic_message(&*payload))),
    };
    let _ = me.cast(Exited(id, outcome.clone()));
    outcome
}

impl<T: Send + 'static> Consumer for Supervisor<T> {
    type In = T;

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        opts: &SubscribeOptions,
        ctx: &mut Context<Self>,
    ) -> SubscriptionMode {
        if let Ok((max, min)) = opts.limits() {
            self.producers.insert(sub, Slots::new(max, min));
            match &self.draining {
                Some(drain) => ctx.cancel(sub, drain.reason.clone()),
                None => ctx.ask(sub, max),
            }
        }
        SubscriptionMode::Manual
    }

    async fn handle_events(
        &mut self,
        events: Vec<T>,
        sub: SubscriptionId,
        ctx: &mut Context<Self>,
    ) {
        let n = events.len();
        let mut failed = 0;
        // Events that arrive while draining were sent before the cancel: they are started too.
        for event in events {
            if self.start(event, Some(sub), ctx).is_err() {
                failed += 1;
            }
        }
        if let Some(slots) = self.producers.get_mut(&sub) {
            let (excess, ask) = slots.arrived(n, failed);
            if excess > 0 {
                let name = &self.config.name;
                warn!(supervisor = %name, %sub, excess, "consumer supervisor received events in excess");
            }
            self.ask(sub, ask, ctx);
        }
        self.stop_if_drained(ctx);
    }

    async fn handle_cancel(
        &mut self,
        cancel: Cancel,
        sub: SubscriptionId,
        ctx: &mut Context<Self>,
    ) {
        self.producers.remove(&sub);
        let mode = self.modes.take(sub).unwrap_or_default();
        let reason = cancel.into_reason();
        let name = &self.config.name;
        if mode.exits_on(&reason) {
            info!(supervisor = %name, %sub, %reason, "its producer ended");
            self.drain(reason, ctx);
        } else {
            debug!(supervisor = %name, %sub, %reason, "subscription ended; its children keep running");
        }
    }

    /// Gives running children what is left of the grace, aborts the rest, and publishes the
    /// final counts.
    async fn terminate(&mut self, reason: &Reason) {
        let deadline = match &self.draining {
            Some(drain) => drain.deadline,
            None => self.config.grace.map(|grace| Instant::now() + grace),
        };
        let name = &self.config.name;
        let children = self.children.len();
        debug!(supervisor = %name, %reason, children, "supervisor stopping");
        self.wind_up(deadline).await;
        self.finals.send_replace(Some(self.snapshot()));
    }
}

impl<T: Send + 'static> Cast<Exited> for Supervisor<T> {
    async fn handle_cast(&mut self, Exited(id, outcome): Exited, ctx: &mut Context<Self>) {
        self.exited(id, outcome, ctx);
    }
}

impl<T: Send + 'static> Cast<Retry> for Supervisor<T> {
    async fn handle_cast(&mut self, Retry(id): Retry, ctx: &mut Context<Self>) {
        if self.children.get(&id).is_some_and(|c| c.task.is_none()) {
            self.relaunch(id, ctx);
        }
    }
}

impl<T: Send + 'static> Cast<Shutdown> for Supervisor<T> {
    async fn handle_cast(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.drain(Reason::Shutdown, ctx);
    }
}

impl<T: Send + 'static> Info<GraceOver> for Supervisor<T> {
    async fn handle_info(&mut self, _: GraceOver, ctx: &mut Context<Self>) {
        let Some(reason) = self.draining.as_ref().map(|d| d.reason.clone()) else {
            return;
        };
        self.wind_up(Some(Instant::now())).await;
        ctx.stop(reason);
    }
}

impl<T: Send + 'static> Call<CountChildren> for Supervisor<T> {
    type Reply = Children;

    async fn handle_call(
        &mut self,
        _: CountChildren,
        reply: ReplyTo<Children>,
        _: &mut Context<Self>,
    ) {
        reply.send(self.snapshot());
    }
}

impl<T: Send + 'static> Call<WhichChildren> for Supervisor<T> {
    type Reply = Vec<(ChildId, ChildState)>;

    async fn handle_call(
        &mut self,
        _: WhichChildren,
        reply: ReplyTo<Self::Reply>,
        _: &mut Context<Self>,
    ) {
        let mut which: Vec<_> = self
            .children
            .iter()
            .map(|(id, c)| {
                let state = match c.task {
                    Some(_) => ChildState::Running,
                    None => ChildState::Restarting,
                };
                (*id, state)
            })
            .collect();
        which.sort_unstable_by_key(|(id, _)| *id);
        reply.send(which);
    }
}

impl<T: Send + 'static> Call<StartChild<T>> for Supervisor<T> {
    type Reply = Result<ChildId, StartChildError>;

    async fn handle_call(
        &mut self,
        StartChild(event): StartChild<T>,
        reply: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self>,
    ) {
        if self.draining.is_some() {
            reply.send(Err(StartChildError::ShuttingDown));
            return;
        }
        reply.send(
            self.start(event, None, ctx)
                .map_err(StartChildError::Panicked),
        );
    }
}

impl<T: Send + 'static> Call<TerminateChild> for Supervisor<T> {
    type Reply = bool;

    async fn handle_call(
        &mut self,
        TerminateChild(id): TerminateChild,
        reply: ReplyTo<bool>,
        ctx: &mut Context<Self>,
    ) {
        let Some(child) = self.children.get_mut(&id) else {
            reply.send(false);
            return;
        };
        if let Some(task) = child.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.remove(id, ctx);
        reply.send(true);
    }
}

impl<T: Send + 'static> Drop for Supervisor<T> {
    /// After a panic, or if the runtime shuts down, children do not outlive their supervisor:
    /// they are aborted and counted as cancelled in the final counts.
    fn drop(&mut self) {
        let published = self.finals.borrow().is_some();
        let mut cancelled = 0;
        for child in self.children.values_mut() {
            match child.task.take() {
                // Ended, and the stage never handled the news: its task has the outcome.
                Some(mut task) if task.is_finished() => match (&mut task).now_or_never() {
                    Some(Ok(Ok(()))) => self.stats.completed += 1,
                    Some(Ok(Err(_))) => self.stats.failed += 1,
                    _ => cancelled += 1,
                },
                Some(task) => {
                    task.abort();
                    cancelled += 1;
                }
                None => cancelled += 1,
            }
        }
        if published {
            return;
        }
        if cancelled > 0 {
            let name = &self.config.name;
            warn!(supervisor = %name, cancelled, "supervisor ended abruptly; its children were cancelled");
        }
        self.stats.cancelled += cancelled;
        let finals = Children {
            active: 0,
            restarting: 0,
            ..self.stats.clone()
        };
        self.finals.send_replace(Some(finals));
    }
}

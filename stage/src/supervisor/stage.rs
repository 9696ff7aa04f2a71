//! The consumer behind a [`ConsumerSupervisor`](super::ConsumerSupervisor): one tokio task per
//! event, children reporting back to the stage through its own handle.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::slots::{Intensity, Slots};
use super::{ChildId, ChildState, Children};
use crate::consumer::Consumer;
use crate::context::{Context, ReplyTo};
use crate::error::{Cancel, Reason, panic_message};
use crate::handle::StageHandle;
use crate::message::{Call, Cast};
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};

/// The child function, with its error already turned into a message.
pub(super) type ChildFn<T> = Box<dyn Fn(T) -> BoxFuture<'static, Result<(), Arc<str>>> + Send>;

/// Counts the children (`count_children`).
pub(super) struct CountChildren;
/// Lists the children (`which_children`).
pub(super) struct WhichChildren;
/// Starts a child outside any subscription (`start_child`).
pub(super) struct StartChild<T>(pub(super) T);
/// Aborts a child (`terminate_child`).
pub(super) struct TerminateChild(pub(super) ChildId);

/// A child's run ended: `Ok`, or the error or panic message.
struct Exited(ChildId, Result<(), Arc<str>>);
/// Try again to restart a child whose restart failed.
struct Retry(ChildId);

struct Child<T> {
    /// The subscription whose slot the child holds; `None` for `start_child`.
    origin: Option<SubscriptionId>,
    /// Kept for restarts (transient children only).
    event: Option<T>,
    /// `None` while restarting.
    task: Option<JoinHandle<()>>,
}

/// The consumer behind [`ConsumerSupervisor`](super::ConsumerSupervisor).
pub(super) struct Supervisor<T: Send + 'static> {
    pub(super) name: Arc<str>,
    pub(super) child: ChildFn<T>,
    /// `Some` when children are restarted.
    pub(super) cloner: Option<fn(&T) -> T>,
    pub(super) intensity: Intensity,
    pub(super) shutdown: Duration,
    pub(super) producers: HashMap<SubscriptionId, Slots>,
    children: HashMap<ChildId, Child<T>>,
    next_id: u64,
    stats: Children,
}

impl<T: Send + 'static> Supervisor<T> {
    pub(super) fn new(
        name: Arc<str>,
        child: ChildFn<T>,
        cloner: Option<fn(&T) -> T>,
        intensity: Intensity,
        shutdown: Duration,
    ) -> Self {
        Supervisor {
            name,
            child,
            cloner,
            intensity,
            shutdown,
            producers: HashMap::new(),
            children: HashMap::new(),
            next_id: 0,
            stats: Children::default(),
        }
    }

    /// Calls the child function and spawns its future; the panic message if the call panicked.
    fn launch(
        &self,
        id: ChildId,
        event: T,
        me: StageHandle<Self>,
    ) -> Result<JoinHandle<()>, Arc<str>> {
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| (self.child)(event)))
            .map_err(|payload| panic_message(&*payload))?;
        Ok(tokio::spawn(run_child(id, run, me)))
    }

    /// Starts a new child for `event`, holding a slot of `origin`.
    fn start(
        &mut self,
        event: T,
        origin: Option<SubscriptionId>,
        ctx: &Context<Self>,
    ) -> Result<ChildId, Arc<str>> {
        self.next_id += 1;
        let id = ChildId(self.next_id);
        let kept = self.cloner.map(|clone| clone(&event));
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
                error!(supervisor = %self.name, child = %id, error = %msg, "child failed to start");
                self.stats.failed += 1;
                Err(msg)
            }
        }
    }

    fn exited(&mut self, id: ChildId, outcome: Result<(), Arc<str>>, ctx: &mut Context<Self>) {
        let Some(child) = self.children.get(&id) else {
            // Terminated since.
            return;
        };
        let restartable = child.event.is_some();
        match outcome {
            Ok(()) => {
                self.stats.completed += 1;
                self.remove(id, ctx);
            }
            Err(msg) => {
                error!(supervisor = %self.name, child = %id, error = %msg, "child failed");
                self.stats.failed += 1;
                if restartable {
                    self.restart(id, ctx);
                } else {
                    self.remove(id, ctx);
                }
            }
        }
    }

    /// Restarts a failed child in its slot, or stops the supervisor if that is one restart too
    /// many.
    fn restart(&mut self, id: ChildId, ctx: &mut Context<Self>) {
        if !self.intensity.record(Instant::now()) {
            error!(supervisor = %self.name, child = %id, "reached the maximum restart intensity; shutting down");
            self.remove(id, ctx);
            ctx.stop(Reason::Shutdown);
            return;
        }
        let (Some(clone), Some(event)) = (
            self.cloner,
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
                error!(supervisor = %self.name, child = %id, error = %msg, "child failed to restart; retrying");
                self.stats.failed += 1;
                let _ = ctx.myself().cast(Retry(id));
            }
        }
    }

    /// Forgets a child and frees its slot.
    fn remove(&mut self, id: ChildId, ctx: &mut Context<Self>) {
        let Some(child) = self.children.remove(&id) else {
            return;
        };
        let Some(sub) = child.origin else {
            return;
        };
        if let Some(slots) = self.producers.get_mut(&sub) {
            ctx.ask(sub, slots.freed());
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

/// Runs one child's future and reports how it ended.
async fn run_child<T: Send + 'static>(
    id: ChildId,
    run: BoxFuture<'static, Result<(), Arc<str>>>,
    me: StageHandle<Supervisor<T>>,
) {
    let outcome = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(payload) => Err(Arc::from(format!("panicked: {}", panic_message(&*payload)))),
    };
    let _ = me.cast(Exited(id, outcome));
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
            ctx.ask(sub, max);
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
        for event in events {
            if self.start(event, Some(sub), ctx).is_err() {
                failed += 1;
            }
        }
        let Some(slots) = self.producers.get_mut(&sub) else {
            return;
        };
        let (excess, ask) = slots.arrived(n, failed);
        if excess > 0 {
            warn!(supervisor = %self.name, %sub, excess, "consumer supervisor received events in excess");
        }
        ctx.ask(sub, ask);
    }

    async fn handle_cancel(&mut self, cancel: Cancel, sub: SubscriptionId, _: &mut Context<Self>) {
        debug!(supervisor = %self.name, %sub, reason = %cancel.reason(), "subscription ended; its children keep running");
        self.producers.remove(&sub);
    }

    /// Gives running children the shutdown grace, then aborts the rest.
    async fn terminate(&mut self, reason: &Reason) {
        let tasks: Vec<_> = self
            .children
            .drain()
            .filter_map(|(_, child)| child.task)
            .collect();
        debug!(supervisor = %self.name, %reason, children = tasks.len(), "supervisor stopping");
        if tasks.is_empty() {
            return;
        }
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        let mut all = std::pin::pin!(futures::future::join_all(tasks));
        if tokio::time::timeout(self.shutdown, all.as_mut())
            .await
            .is_err()
        {
            for abort in &aborts {
                abort.abort();
            }
            all.await;
        }
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
            self.restart(id, ctx);
        }
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
    type Reply = Result<ChildId, Arc<str>>;

    async fn handle_call(
        &mut self,
        StartChild(event): StartChild<T>,
        reply: ReplyTo<Self::Reply>,
        ctx: &mut Context<Self>,
    ) {
        reply.send(self.start(event, None, ctx));
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
    /// After a panic, or if the runtime shuts down, children do not outlive their supervisor.
    fn drop(&mut self) {
        for child in self.children.values() {
            if let Some(task) = &child.task {
                task.abort();
            }
        }
    }
}

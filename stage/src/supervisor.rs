//! A consumer that runs one tokio task per event: GenStage's `ConsumerSupervisor` (§1.7, §2.15).
//!
//! The stage subscribes in manual mode and keeps, per subscription, how many children it has
//! running (`count`) and how many freed slots it has not asked for yet (`pending`). That
//! bookkeeping ([`Slots`]) and the restart intensity ([`Intensity`]) are pure and tested here;
//! the stage around them only starts tasks and turns their ends into asks.
//!
//! Children report back through the supervisor's own mailbox. A handler cannot name its stage's
//! handle, so [`ConsumerSupervisor::start`] casts the stage a clone of it first (`Msg::Init`),
//! before any event can arrive: the first asks wait for it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::Consumer;
use crate::context::{Cancel, Context, ReplyTo};
use crate::error::{CallError, OptionError, Reason, StartError, SubscribeError, panic_message};
use crate::handle::{ConsumerHandle, Counters};
use crate::mailbox::{AsProducer, ProducerRef};
use crate::options::{SubscribeOptions, SubscriptionId, SubscriptionMode};

/// The default [`ConsumerSupervisor::max_restarts`], as in GenStage.
const DEFAULT_MAX_RESTARTS: usize = 3;
/// The default [`ConsumerSupervisor::max_seconds`], as in GenStage.
const DEFAULT_MAX_SECONDS: Duration = Duration::from_secs(5);
/// The default [`ConsumerSupervisor::shutdown`], as in GenStage (5000 ms).
const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

/// The child function, with its error already turned into a message.
type ChildFn<T> = Box<dyn Fn(T) -> BoxFuture<'static, Result<(), Arc<str>>> + Send>;

/// When a child that has ended is started again (GenStage's `restart` of the child spec).
///
/// There is no `Permanent` variant: a child that is restarted even after it succeeded would hold
/// its demand slot for ever. Upstream rejects `restart: :permanent` when the supervisor starts;
/// here it cannot be written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Restart {
    /// Never restarted: a child that fails is reported, counted and forgotten (the default).
    #[default]
    Temporary,
    /// Restarted, with a clone of its event, when it fails (returns `Err` or panics); a child
    /// that returns `Ok` is done.
    Transient,
}

/// Identifies one child of a [`ConsumerSupervisor`]. A restarted child keeps its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(u64);

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "child#{}", self.0)
    }
}

/// Whether a child is running or waiting to be started again, from
/// [`SupervisorHandle::which_children`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChildState {
    /// The child's task is running.
    Running,
    /// The child failed and its restart failed too (its function panicked): it is retried.
    Restarting,
}

/// A snapshot of a supervisor's children, from [`SupervisorHandle::count_children`]
/// (GenStage's `count_children`, plus counters since the start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Children {
    /// Children whose task is running.
    pub active: usize,
    /// Children waiting to be started again after a failed restart. They keep their demand slot.
    pub restarting: usize,
    /// Children started, from events or [`SupervisorHandle::start_child`] (restarts not counted).
    pub started: u64,
    /// Child runs that returned `Ok`.
    pub completed: u64,
    /// Child runs that returned `Err` or panicked, and child functions that panicked when called.
    pub failed: u64,
    /// Children started again after a failure.
    pub restarted: u64,
}

/// Why [`SupervisorHandle::start_child`] did not start a child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartChildError {
    /// The supervisor is not running.
    #[error("the supervisor is not running")]
    Closed,
    /// The child function panicked when called (GenStage's start function raising).
    #[error("the child panicked while starting: {0}")]
    Panicked(Arc<str>),
}

/// Why [`SupervisorHandle::terminate_child`] did not terminate a child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TerminateChildError {
    /// The supervisor has no such child (it has ended, or was never started).
    #[error("no child {0}")]
    NotFound(ChildId),
    /// The supervisor is not running.
    #[error("the supervisor is not running")]
    Closed,
}

/// Configures a consumer that starts one tokio task, a *child*, per event it receives
/// (GenStage's `ConsumerSupervisor`). [`start`](ConsumerSupervisor::start) spawns it.
///
/// The child is a function from the event to a future returning `Result<(), E>`; an `Err` (its
/// `Display` text) or a panic is a failure, reported through `tracing` and counted, and a
/// [`Restart::Transient`] child that fails is run again with a clone of its event.
///
/// # Back-pressure
///
/// Demand is the number of children: on each subscription the supervisor asks for `max_demand`
/// events, so at most `max_demand` children from that producer run at once. A child that ends
/// without being restarted frees its slot; once `min_demand` slots are free (with `min_demand`
/// 0, at once) the supervisor asks for that many events. A child being restarted keeps its slot.
/// Children keep running, and are still counted, after their producer ends; if the
/// subscription's cancel mode stops the supervisor, they get [`shutdown`] to finish.
///
/// [`shutdown`]: ConsumerSupervisor::shutdown
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use stage::{ConsumerSupervisor, Reason, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let total = Arc::new(AtomicU64::new(0));
/// let sum = Arc::clone(&total);
/// let numbers = stage::from_iter(1..=10u64).start().unwrap();
/// // At most two children run at once, each adding its number.
/// let sup = ConsumerSupervisor::new(move |n: u64| {
///     let sum = Arc::clone(&sum);
///     async move {
///         sum.fetch_add(n, Ordering::SeqCst);
///         Ok::<(), std::convert::Infallible>(())
///     }
/// })
/// .subscribe_to(&numbers, SubscribeOptions::new().max_demand(2))
/// .start()
/// .unwrap();
/// // The producer finishes and its permanent subscriber stops, once its children are done.
/// assert_eq!(sup.join().await, Reason::Normal);
/// assert_eq!(total.load(Ordering::SeqCst), 55);
/// # }
/// ```
#[must_use = "a supervisor does nothing until it is started"]
pub struct ConsumerSupervisor<T> {
    child: ChildFn<T>,
    restart: Restart,
    cloner: Option<fn(&T) -> T>,
    max_restarts: usize,
    max_seconds: Duration,
    shutdown: Duration,
    name: Option<Arc<str>>,
    subscriptions: Vec<(ProducerRef<T>, SubscribeOptions)>,
}

impl<T> fmt::Debug for ConsumerSupervisor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerSupervisor")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("max_restarts", &self.max_restarts)
            .field("max_seconds", &self.max_seconds)
            .field("shutdown", &self.shutdown)
            .field("subscriptions", &self.subscriptions.len())
            .finish()
    }
}

impl<T: Send + 'static> ConsumerSupervisor<T> {
    /// Prepares a supervisor whose children run `child(event)`: temporary children, at most 3
    /// restarts in 5 seconds, 5 seconds to finish on shutdown, no subscriptions.
    pub fn new<F, Fut, E>(child: F) -> Self
    where
        F: Fn(T) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let child: ChildFn<T> = Box::new(move |event| {
            let run = child(event);
            async move { run.await.map_err(|e| Arc::from(e.to_string())) }.boxed()
        });
        ConsumerSupervisor {
            child,
            restart: Restart::Temporary,
            cloner: None,
            max_restarts: DEFAULT_MAX_RESTARTS,
            max_seconds: DEFAULT_MAX_SECONDS,
            shutdown: DEFAULT_SHUTDOWN,
            name: None,
            subscriptions: Vec::new(),
        }
    }

    /// Whether failed children are restarted (default [`Restart::Temporary`]: never). A
    /// restarted child runs again with a clone of its event, hence `T: Clone`.
    pub fn restart(mut self, restart: Restart) -> Self
    where
        T: Clone,
    {
        self.restart = restart;
        self.cloner = Some(T::clone);
        self
    }

    /// How many restarts are allowed within [`max_seconds`](ConsumerSupervisor::max_seconds)
    /// (default 3). One more stops the supervisor with [`Reason::Shutdown`].
    pub fn max_restarts(mut self, max: usize) -> Self {
        self.max_restarts = max;
        self
    }

    /// The window in which [`max_restarts`](ConsumerSupervisor::max_restarts) is counted
    /// (default 5 seconds). Must not be zero.
    pub fn max_seconds(mut self, window: Duration) -> Self {
        self.max_seconds = window;
        self
    }

    /// How long running children get to finish when the supervisor stops, before they are
    /// aborted (default 5 seconds; zero aborts them at once).
    pub fn shutdown(mut self, grace: Duration) -> Self {
        self.shutdown = grace;
        self
    }

    /// A name for logs and `Debug` output (default `ConsumerSupervisor`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Subscribes to `producer` as soon as the supervisor starts. `max_demand` is the most
    /// children from this producer that run at once.
    pub fn subscribe_to(mut self, producer: &impl AsProducer<T>, opts: SubscribeOptions) -> Self {
        self.subscriptions.push((producer.as_producer(), opts));
        self
    }

    /// Spawns the supervisor on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::Option`] naming `max_seconds` when it is zero or an invalid subscription
    /// option, [`StartError::ProducerClosed`] when a producer to subscribe to with a permanent
    /// or transient cancel mode is not running, [`StartError::NoRuntime`] outside a runtime.
    pub fn start(self) -> Result<SupervisorHandle<T>, StartError> {
        if self.max_seconds.is_zero() {
            let rule = "must be greater than zero";
            return Err(OptionError::new("max_seconds", rule, self.max_seconds).into());
        }
        let name = self.name.unwrap_or_else(|| Arc::from("ConsumerSupervisor"));
        let stage = Stage {
            name: Arc::clone(&name),
            child: self.child,
            cloner: self.cloner.filter(|_| self.restart == Restart::Transient),
            intensity: Intensity::new(self.max_restarts, self.max_seconds),
            shutdown: self.shutdown,
            me: None,
            deferred: Vec::new(),
            producers: HashMap::new(),
            children: HashMap::new(),
            next_id: 0,
            stats: Children::default(),
        };
        let mut builder = crate::consumer(stage).name(name);
        for (producer, opts) in &self.subscriptions {
            builder = builder.subscribe_to(producer, opts.clone());
        }
        let inner = builder.start()?;
        // The first message the stage handles: no event can come before its first ask.
        let _ = inner.cast(Msg::Init(inner.clone()));
        Ok(SupervisorHandle { inner })
    }
}

/// A handle to a running [`ConsumerSupervisor`]: subscribe, start and terminate children,
/// count them, stop, join. Cheap to clone.
///
/// Like any stage handle, every method fails with a `Closed` error (or returns the exit reason)
/// once the supervisor has exited, and dropping every handle does not stop it.
pub struct SupervisorHandle<T: Send + 'static> {
    inner: ConsumerHandle<Stage<T>>,
}

impl<T: Send + 'static> Clone for SupervisorHandle<T> {
    fn clone(&self) -> Self {
        SupervisorHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + 'static> fmt::Debug for SupervisorHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorHandle")
            .field("name", &self.inner.name())
            .field("running", &self.inner.is_running())
            .finish()
    }
}

impl<T: Send + 'static> SupervisorHandle<T> {
    /// The name given when the supervisor was started.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Whether the supervisor is still running.
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// Subscribes the supervisor to `producer` and returns the subscription's id once the
    /// producer has accepted it. `max_demand` is the most children from this producer that run
    /// at once.
    ///
    /// # Errors
    ///
    /// As [`StageHandle::subscribe`](crate::StageHandle::subscribe).
    ///
    /// # Back-pressure
    ///
    /// The supervisor asks for `max_demand` events at once, then as its children end (§2.15).
    pub async fn subscribe(
        &self,
        producer: &impl AsProducer<T>,
        opts: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        self.inner.subscribe(producer, opts).await
    }

    /// Cancels a subscription. The children it started keep running; cancelling a permanent
    /// subscription stops the supervisor.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub fn cancel(&self, subscription: SubscriptionId, reason: Reason) -> Result<(), CallError> {
        self.inner.cancel(subscription, reason)
    }

    /// Asks the supervisor to stop with `reason`. Running children get the
    /// [`shutdown`](ConsumerSupervisor::shutdown) grace to finish, then are aborted.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub fn stop(&self, reason: Reason) -> Result<(), CallError> {
        self.inner.stop(reason)
    }

    /// Waits until the supervisor has exited (its children finished or aborted) and returns why.
    pub async fn join(&self) -> Reason {
        self.inner.join().await
    }

    /// The exit reason, if the supervisor has exited.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.inner.exit_reason()
    }

    /// The stage's counters; `producers` shows, per subscription, the events asked for and not
    /// yet received.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub async fn counters(&self) -> Result<Counters, CallError> {
        self.inner.counters().await
    }

    /// How many children are running and restarting, and what happened to them so far
    /// (GenStage's `count_children`).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub async fn count_children(&self) -> Result<Children, CallError> {
        match self.inner.call(Request::Count).await? {
            Response::Count(children) => Ok(children),
            _ => Err(CallError::NoReply),
        }
    }

    /// Every child and its state, by id (GenStage's `which_children`).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub async fn which_children(&self) -> Result<Vec<(ChildId, ChildState)>, CallError> {
        match self.inner.call(Request::Which).await? {
            Response::Which(children) => Ok(children),
            _ => Err(CallError::NoReply),
        }
    }

    /// Starts a child for `event` outside any subscription (GenStage's `start_child`). It
    /// follows the restart policy like any child.
    ///
    /// # Errors
    ///
    /// [`StartChildError::Panicked`] if the child function panicked when called,
    /// [`StartChildError::Closed`] if the supervisor is not running.
    ///
    /// # Back-pressure
    ///
    /// None: the child takes no demand slot, and its end asks for nothing.
    pub async fn start_child(&self, event: T) -> Result<ChildId, StartChildError> {
        match self.inner.call(Request::Start(event)).await {
            Ok(Response::Started(Ok(id))) => Ok(id),
            Ok(Response::Started(Err(msg))) => Err(StartChildError::Panicked(msg)),
            _ => Err(StartChildError::Closed),
        }
    }

    /// Aborts a child and forgets it (GenStage's `terminate_child`). Once this returns, the
    /// child's future has been dropped. It is not restarted, and counts neither as completed
    /// nor as failed.
    ///
    /// # Errors
    ///
    /// [`TerminateChildError::NotFound`] if there is no such child,
    /// [`TerminateChildError::Closed`] if the supervisor is not running.
    ///
    /// # Back-pressure
    ///
    /// Frees the child's demand slot, like a child that ends.
    pub async fn terminate_child(&self, child: ChildId) -> Result<(), TerminateChildError> {
        match self.inner.call(Request::Terminate(child)).await {
            Ok(Response::Terminated(true)) => Ok(()),
            Ok(Response::Terminated(false)) => Err(TerminateChildError::NotFound(child)),
            _ => Err(TerminateChildError::Closed),
        }
    }
}

// ----- pure bookkeeping -----

/// Demand accounting of one subscription (§2.15): children running from it, freed slots not
/// yet asked for, and the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slots {
    count: usize,
    pending: usize,
    min: usize,
    max: usize,
}

impl Slots {
    fn new(max: usize, min: usize) -> Self {
        Slots {
            count: 0,
            pending: 0,
            min,
            max,
        }
    }

    /// `events` arrived, of which `failed` could not start. Returns the excess over `max` and
    /// the demand to ask for.
    fn arrived(&mut self, events: usize, failed: usize) -> (usize, usize) {
        let excess = (self.count + events).saturating_sub(self.max);
        self.count = (self.count + events).saturating_sub(failed);
        (excess, self.free(failed))
    }

    /// A child from this subscription ended without a restart. Returns the demand to ask for.
    fn freed(&mut self) -> usize {
        self.count = self.count.saturating_sub(1);
        self.free(1)
    }

    fn free(&mut self, n: usize) -> usize {
        self.pending += n;
        if self.pending > 0 && self.pending >= self.min {
            std::mem::take(&mut self.pending)
        } else {
            0
        }
    }
}

/// The restart intensity: at most `max` restarts within any `period`.
#[derive(Debug)]
struct Intensity {
    max: usize,
    period: Duration,
    restarts: VecDeque<Instant>,
}

impl Intensity {
    fn new(max: usize, period: Duration) -> Self {
        Intensity {
            max,
            period,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now`. Returns `false` if that exceeds the intensity.
    fn record(&mut self, now: Instant) -> bool {
        self.restarts.push_back(now);
        while let Some(&then) = self.restarts.front() {
            if now.duration_since(then) <= self.period {
                break;
            }
            self.restarts.pop_front();
        }
        self.restarts.len() <= self.max
    }
}

// ----- the stage -----

/// What the handle asks the stage.
enum Request<T> {
    Count,
    Which,
    Start(T),
    Terminate(ChildId),
}

/// What the stage answers.
enum Response {
    Count(Children),
    Which(Vec<(ChildId, ChildState)>),
    Started(Result<ChildId, Arc<str>>),
    Terminated(bool),
}

/// What the stage is cast: its own handle, and news from its children.
enum Msg<T: Send + 'static> {
    /// The stage's own handle, for its children and its asks.
    Init(ConsumerHandle<Stage<T>>),
    /// A child's run ended: `Ok`, or the error or panic message.
    Exited(ChildId, Result<(), Arc<str>>),
    /// Try again to restart a child whose restart failed.
    Retry(ChildId),
}

struct Child<T> {
    /// The subscription whose slot the child holds; `None` for `start_child`.
    origin: Option<SubscriptionId>,
    /// Kept for restarts (transient children only).
    event: Option<T>,
    /// `None` while restarting.
    task: Option<JoinHandle<()>>,
}

/// The consumer behind [`ConsumerSupervisor`].
struct Stage<T: Send + 'static> {
    name: Arc<str>,
    child: ChildFn<T>,
    /// `Some` when children are restarted.
    cloner: Option<fn(&T) -> T>,
    intensity: Intensity,
    shutdown: Duration,
    me: Option<ConsumerHandle<Stage<T>>>,
    /// Initial asks made before `me` arrived.
    deferred: Vec<(SubscriptionId, usize)>,
    producers: HashMap<SubscriptionId, Slots>,
    children: HashMap<ChildId, Child<T>>,
    next_id: u64,
    stats: Children,
}

impl<T: Send + 'static> Stage<T> {
    /// Calls the child function and spawns its future; the panic message if the call panicked.
    fn launch(&self, id: ChildId, event: T) -> Result<JoinHandle<()>, Arc<str>> {
        let Some(me) = self.me.clone() else {
            return Err(Arc::from("the supervisor is not initialized"));
        };
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| (self.child)(event)))
            .map_err(|payload| panic_message(&*payload))?;
        Ok(tokio::spawn(run_child(id, run, me)))
    }

    /// Starts a new child for `event`, holding a slot of `origin`.
    fn start(&mut self, event: T, origin: Option<SubscriptionId>) -> Result<ChildId, Arc<str>> {
        self.next_id += 1;
        let id = ChildId(self.next_id);
        let kept = self.cloner.map(|clone| clone(&event));
        match self.launch(id, event) {
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

    fn exited(&mut self, id: ChildId, outcome: Result<(), Arc<str>>, ctx: &mut Context) {
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
    fn restart(&mut self, id: ChildId, ctx: &mut Context) {
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
        let launched = self.launch(id, clone(event));
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
                if let Some(me) = &self.me {
                    let _ = me.cast(Msg::Retry(id));
                }
            }
        }
    }

    /// Forgets a child and frees its slot (§2.15 rule 3).
    fn remove(&mut self, id: ChildId, ctx: &mut Context) {
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

    async fn terminate_child(&mut self, id: ChildId, ctx: &mut Context) -> bool {
        let Some(child) = self.children.get_mut(&id) else {
            return false;
        };
        if let Some(task) = child.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.remove(id, ctx);
        true
    }

    fn snapshot(&self) -> Children {
        let active = self.children.values().filter(|c| c.task.is_some()).count();
        Children {
            active,
            restarting: self.children.len() - active,
            ..self.stats.clone()
        }
    }

    fn which(&self) -> Vec<(ChildId, ChildState)> {
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
        which
    }

    fn ask_later(&mut self, sub: SubscriptionId, n: usize) {
        match &self.me {
            // Handlers' asks for a subscription still being made are lost: go through the
            // mailbox, which the engine reads once the subscription is recorded.
            Some(me) => {
                let _ = me.ask(sub, n);
            }
            None => self.deferred.push((sub, n)),
        }
    }
}

/// Runs one child's future and reports how it ended.
async fn run_child<T: Send + 'static>(
    id: ChildId,
    run: BoxFuture<'static, Result<(), Arc<str>>>,
    me: ConsumerHandle<Stage<T>>,
) {
    let outcome = match AssertUnwindSafe(run).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(payload) => Err(Arc::from(format!("panicked: {}", panic_message(&*payload)))),
    };
    let _ = me.cast(Msg::Exited(id, outcome));
}

impl<T: Send + 'static> Consumer for Stage<T> {
    type In = T;
    type Call = Request<T>;
    type Reply = Response;
    type Msg = Msg<T>;

    async fn handle_subscribe(
        &mut self,
        sub: SubscriptionId,
        opts: &SubscribeOptions,
        _: &mut Context,
    ) -> SubscriptionMode {
        if let Ok((max, min)) = opts.limits() {
            self.producers.insert(sub, Slots::new(max, min));
            self.ask_later(sub, max);
        }
        SubscriptionMode::Manual
    }

    async fn handle_events(&mut self, events: Vec<T>, sub: SubscriptionId, ctx: &mut Context) {
        let n = events.len();
        let mut failed = 0;
        for event in events {
            if self.start(event, Some(sub)).is_err() {
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

    async fn handle_cancel(&mut self, cancel: Cancel, sub: SubscriptionId, _: &mut Context) {
        debug!(supervisor = %self.name, %sub, reason = %cancel.reason, "subscription ended; its children keep running");
        self.producers.remove(&sub);
        self.deferred.retain(|(s, _)| *s != sub);
    }

    async fn handle_call(
        &mut self,
        request: Request<T>,
        reply: ReplyTo<Response>,
        ctx: &mut Context,
    ) {
        let response = match request {
            Request::Count => Response::Count(self.snapshot()),
            Request::Which => Response::Which(self.which()),
            Request::Start(event) => Response::Started(self.start(event, None)),
            Request::Terminate(id) => Response::Terminated(self.terminate_child(id, ctx).await),
        };
        reply.send(response);
    }

    async fn handle_cast(&mut self, msg: Msg<T>, ctx: &mut Context) {
        match msg {
            Msg::Init(me) => {
                for (sub, n) in self.deferred.drain(..) {
                    let _ = me.ask(sub, n);
                }
                self.me = Some(me);
            }
            Msg::Exited(id, outcome) => self.exited(id, outcome, ctx),
            Msg::Retry(id) => {
                if self.children.get(&id).is_some_and(|c| c.task.is_none()) {
                    self.restart(id, ctx);
                }
            }
        }
    }

    async fn handle_info(&mut self, _: Msg<T>, _: &mut Context) {}

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
        // Our own handle would keep the mailbox open for nothing.
        self.me = None;
    }
}

impl<T: Send + 'static> Drop for Stage<T> {
    /// After a panic, or if the runtime shuts down, children do not outlive their supervisor.
    fn drop(&mut self) {
        for child in self.children.values() {
            if let Some(task) = &child.task {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribing_asks_max_and_each_freed_slot_waits_for_min() {
        // max 3 / min 2: one child exits (no ask), a second exits (ask 2) (§2.15 rule 5).
        let mut slots = Slots::new(3, 2);
        assert_eq!(slots.arrived(3, 0), (0, 0));
        assert_eq!(slots.freed(), 0);
        assert_eq!(slots.freed(), 2);
        assert_eq!(slots.count, 1);
        assert_eq!(slots.pending, 0);
    }

    #[test]
    fn min_zero_asks_one_per_freed_slot() {
        let mut slots = Slots::new(1, 0);
        assert_eq!(slots.arrived(1, 0), (0, 0));
        assert_eq!(slots.freed(), 1);
        assert_eq!(slots.arrived(1, 0), (0, 0));
        assert_eq!(slots.freed(), 1);
    }

    #[test]
    fn children_that_fail_to_start_free_their_slot_at_once() {
        let mut slots = Slots::new(4, 1);
        assert_eq!(slots.arrived(4, 2), (0, 2));
        assert_eq!(slots.count, 2);
    }

    #[test]
    fn events_beyond_max_are_reported_as_excess() {
        let mut slots = Slots::new(2, 1);
        assert_eq!(slots.arrived(2, 0), (0, 0));
        assert_eq!(slots.arrived(3, 0), (3, 0));
        assert_eq!(slots.count, 5);
    }

    #[test]
    fn intensity_counts_restarts_within_the_window() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut intensity = Intensity::new(2, Duration::from_secs(5));
        assert!(intensity.record(at(0)));
        assert!(intensity.record(at(1)));
        assert!(!intensity.record(at(5)), "three restarts within 5 seconds");
        let mut intensity = Intensity::new(2, Duration::from_secs(5));
        assert!(intensity.record(at(0)));
        assert!(intensity.record(at(1)));
        assert!(
            intensity.record(at(6)),
            "the first restart has left the window"
        );
    }

    #[test]
    fn zero_restarts_allowed_means_the_first_one_stops() {
        let mut intensity = Intensity::new(0, Duration::from_secs(5));
        assert!(!intensity.record(Instant::now()));
    }
}

//! A consumer that runs one tokio task per event: GenStage's `ConsumerSupervisor`.
//!
//! The stage subscribes in manual mode and keeps, per subscription, how many children it has
//! running and how many freed slots it has not asked for yet. That bookkeeping and the restart
//! intensity are pure (`slots.rs`); the stage around them (`stage.rs`) only starts tasks, turns
//! their ends into asks, and drains its children before it stops. How it subscribes, so that
//! the engine leaves stopping to it, is in `subscription.rs`; what it reports, in `report.rs`.
//! Children report back through the stage's own handle.

mod error;
mod report;
mod slots;
mod stage;
mod subscription;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::address::{AsProducer, ProducerRef};
use crate::counters::Counters;
use crate::error::{CallError, OptionError, Reason, StartError, SubscribeError};
use crate::handle::StageHandle;
use crate::options::{CancelMode, SubscribeOptions, SubscriptionId};
pub use error::{StartChildError, TerminateChildError};
use report::OnFailure;
pub use report::{ChildError, ChildFailure, Children, SupervisorReport};
use slots::Intensity;
use stage::{
    ChildFn, Config, CountChildren, Shutdown, StartChild, Supervisor, TerminateChild, WhichChildren,
};
use subscription::Modes;

/// The default [`ConsumerSupervisor::max_restarts`], as in GenStage.
const DEFAULT_MAX_RESTARTS: usize = 3;
/// The default [`ConsumerSupervisor::max_seconds`], as in GenStage.
const DEFAULT_MAX_SECONDS: Duration = Duration::from_secs(5);

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
pub struct ChildId(pub(crate) u64);

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

/// Configures a consumer that starts one tokio task, a *child*, per event it receives
/// (GenStage's `ConsumerSupervisor`). [`start`](ConsumerSupervisor::start) spawns it.
///
/// The child is a function from the event to a future returning `Result<(), E>`. An `Err` (its
/// `Display` text) or a panic is a failure: logged at ERROR, counted in [`Children::failed`],
/// passed to the [`on_failure`](ConsumerSupervisor::on_failure) callback, and, for a
/// [`Restart::Transient`] child, followed by a run with a clone of its event.
///
/// # Back-pressure
///
/// Demand is the number of children: on each subscription the supervisor asks for `max_demand`
/// events, so at most `max_demand` children from that producer run at once. A child that ends
/// without being restarted frees its slot; once `min_demand` slots are free the supervisor asks
/// for that many events. A child being restarted keeps its slot.
///
/// Unlike other consumers (and GenStage's supervisor), a supervisor's `min_demand` defaults to
/// **0**: each freed slot is asked for again at once, so `max_demand` children keep running
/// while the producer has work, as with a `JoinSet` bounded by a semaphore. Waiting for
/// `max_demand / 2` free slots, the usual default, leaves up to half the slots idle: 60 jobs of
/// 10 to 50 ms, 10 at once, take a fifth longer that way (0.24 s against 0.20 s). The cost of
/// 0 is one ask per child instead of one per `max_demand / 2` children, nothing next to
/// starting a task. Set `min_demand` to batch the asks anyway.
///
/// # Stopping
///
/// A supervisor stops when a subscription's cancel mode says so (a permanent subscription
/// whose producer ends, or a transient one whose producer fails), on
/// [`SupervisorHandle::shutdown`], and on [`SupervisorHandle::stop`]. In the first two cases
/// it stops taking events (it cancels its subscriptions; events already on their way still
/// start children), lets its running children finish, and stops once the last has ended.
/// By default it waits as long as they take; [`shutdown`](ConsumerSupervisor::shutdown)
/// bounds the wait, and children still running at its end are aborted, counted in
/// [`Children::cancelled`], logged at WARN and passed to `on_failure` as
/// [`ChildError::Cancelled`]. A [`stop`](SupervisorHandle::stop) handles nothing more, and
/// gives the running children what is left of the same grace. [`SupervisorHandle::join_report`]
/// returns the exit reason with the final counts.
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
/// let report = sup.join_report().await;
/// assert_eq!(report.reason, Reason::Normal);
/// assert_eq!(report.children.completed, 10);
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
    grace: Option<Duration>,
    name: Option<Arc<str>>,
    on_failure: Option<OnFailure>,
    subscriptions: Vec<(ProducerRef<T>, SubscribeOptions)>,
    cancel_on: Option<tokio_util::sync::CancellationToken>,
}

impl<T> fmt::Debug for ConsumerSupervisor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerSupervisor")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("max_restarts", &self.max_restarts)
            .field("max_seconds", &self.max_seconds)
            .field("shutdown", &self.grace)
            .field("on_failure", &self.on_failure.is_some())
            .field("subscriptions", &self.subscriptions.len())
            .finish()
    }
}

impl<T: Send + 'static> ConsumerSupervisor<T> {
    /// Prepares a supervisor whose children run `child(event)`: temporary children, at most 3
    /// restarts in 5 seconds, children waited for as long as they take when it stops, no
    /// failure callback, no subscriptions.
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
            grace: None,
            name: None,
            on_failure: None,
            subscriptions: Vec::new(),
            cancel_on: None,
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

    /// Bounds how long running children get to finish once the supervisor stops (see
    /// [Stopping](ConsumerSupervisor#stopping)); those still running after `grace` are
    /// aborted and counted as cancelled. Zero aborts them at once.
    ///
    /// By default there is no bound: the supervisor waits for its children as long as they
    /// take (GenStage's `shutdown: :infinity`; GenStage's own default is 5 seconds).
    pub fn shutdown(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// Calls `on_failure` with every child that fails, once per failure: a run that returns
    /// `Err` or panics (a restarted child can fail again, under the same id), a child function
    /// that panics when called, and a child cancelled at the end of the
    /// [`shutdown`](ConsumerSupervisor::shutdown) grace. Without it failures are only logged
    /// and counted.
    ///
    /// The callback runs in the supervisor's task, before the supervisor goes on: keep it
    /// short, and send the failure to a channel for anything slow. A panic in it stops the
    /// supervisor like a panic in any stage's handler.
    ///
    /// # Examples
    ///
    /// ```
    /// use stage::{ConsumerSupervisor, SubscribeOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (failures, mut failed) = tokio::sync::mpsc::unbounded_channel();
    /// let numbers = stage::from_iter(1..=4u64).start().unwrap();
    /// let sup = ConsumerSupervisor::new(|n: u64| async move {
    ///     if n % 2 == 0 { Err(format!("{n} is even")) } else { Ok(()) }
    /// })
    /// .on_failure(move |failure| {
    ///     let _ = failures.send(failure);
    /// })
    /// .subscribe_to(&numbers, SubscribeOptions::new())
    /// .start()
    /// .unwrap();
    /// let report = sup.join_report().await;
    /// assert_eq!((report.children.completed, report.children.failed), (2, 2));
    /// let mut errors = Vec::new();
    /// while let Ok(failure) = failed.try_recv() {
    ///     errors.push(failure.error.to_string());
    /// }
    /// errors.sort();
    /// assert_eq!(errors, ["2 is even", "4 is even"]);
    /// # }
    /// ```
    pub fn on_failure(mut self, on_failure: impl FnMut(ChildFailure) + Send + 'static) -> Self {
        self.on_failure = Some(OnFailure(Box::new(on_failure)));
        self
    }

    /// A name for logs and `Debug` output (default `ConsumerSupervisor`).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Subscribes to `producer` as soon as the supervisor starts. `max_demand` is the most
    /// children from this producer that run at once; `min_demand` defaults to 0 (see
    /// [Back-pressure](ConsumerSupervisor#back-pressure)); the cancel mode decides whether
    /// the producer's end stops the supervisor (see [Stopping](ConsumerSupervisor#stopping)).
    pub fn subscribe_to(mut self, producer: &impl AsProducer<T>, opts: SubscribeOptions) -> Self {
        self.subscriptions.push((producer.as_producer(), opts));
        self
    }

    /// Shuts the supervisor down gracefully ([`SupervisorHandle::shutdown`]) when `token` is
    /// cancelled: it takes no more events and lets its children finish within the grace.
    pub fn cancel_on(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.cancel_on = Some(token);
        self
    }

    /// Spawns the supervisor on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`StartError::Option`] naming `max_seconds` when it is zero or an invalid subscription
    /// option, [`StartError::Refused`] when a producer's dispatcher does not accept a
    /// subscription's options, [`StartError::ProducerClosed`] when a producer to subscribe to
    /// with a permanent or transient cancel mode is not running, [`StartError::NoRuntime`]
    /// outside a runtime.
    pub fn start(self) -> Result<SupervisorHandle<T>, StartError> {
        if self.max_seconds.is_zero() {
            let rule = "must be greater than zero";
            return Err(OptionError::new("max_seconds", rule, self.max_seconds).into());
        }
        let modes = Modes::default();
        let mut subscriptions = Vec::with_capacity(self.subscriptions.len());
        for (producer, opts) in self.subscriptions {
            let mode = opts.cancel_mode();
            let prepared = subscription::prepare(producer.clone(), opts, &modes)?;
            if producer.is_closed() {
                if mode != CancelMode::Temporary {
                    return Err(StartError::ProducerClosed);
                }
                continue;
            }
            subscriptions.push(prepared);
        }
        let name = self.name.unwrap_or_else(|| Arc::from("ConsumerSupervisor"));
        let config = Config {
            name: Arc::clone(&name),
            child: self.child,
            cloner: self.cloner.filter(|_| self.restart == Restart::Transient),
            intensity: Intensity::new(self.max_restarts, self.max_seconds),
            grace: self.grace,
            on_failure: self.on_failure,
        };
        let (publish, finals) = watch::channel(None);
        let stage = Supervisor::new(config, modes.clone(), publish);
        let mut builder = crate::consumer(stage).name(name);
        for (producer, opts) in &subscriptions {
            builder = builder.subscribe_to(producer, opts.clone());
        }
        let inner = builder.start()?;
        let handle = SupervisorHandle {
            inner,
            modes,
            finals,
        };
        if let Some(token) = self.cancel_on {
            let supervisor = handle.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = token.cancelled() => {
                        let _ = supervisor.shutdown();
                    }
                    _ = supervisor.join() => {}
                }
            });
        }
        Ok(handle)
    }
}

/// A handle to a running [`ConsumerSupervisor`]: subscribe, start and terminate children,
/// count them, shut down, stop, join. Cheap to clone.
///
/// Like any stage handle, every method that talks to the supervisor fails with a `Closed`
/// error once it has exited, and dropping every handle does not stop it. What it did stays
/// readable: [`join_report`](SupervisorHandle::join_report) and
/// [`final_report`](SupervisorHandle::final_report).
pub struct SupervisorHandle<T: Send + 'static> {
    inner: StageHandle<Supervisor<T>>,
    modes: Modes,
    finals: watch::Receiver<Option<Children>>,
}

impl<T: Send + 'static> Clone for SupervisorHandle<T> {
    fn clone(&self) -> Self {
        SupervisorHandle {
            inner: self.inner.clone(),
            modes: self.modes.clone(),
            finals: self.finals.clone(),
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
    /// producer has accepted it. As for
    /// [`ConsumerSupervisor::subscribe_to`]: `max_demand` is the most children from this
    /// producer that run at once, `min_demand` defaults to 0, and the cancel mode decides
    /// whether the producer's end stops the supervisor, once its children are done.
    ///
    /// # Errors
    ///
    /// As [`StageHandle::subscribe`](crate::StageHandle::subscribe). A supervisor whose
    /// permanent or transient subscription finds its producer not running stops, once its
    /// children are done, with [`Reason::NoProc`].
    ///
    /// # Back-pressure
    ///
    /// The supervisor asks for `max_demand` events at once, then as its children end.
    pub async fn subscribe(
        &self,
        producer: &impl AsProducer<T>,
        opts: SubscribeOptions,
    ) -> Result<SubscriptionId, SubscribeError> {
        let (producer, opts) = subscription::prepare(producer.as_producer(), opts, &self.modes)?;
        self.inner.subscribe(&producer, opts).await
    }

    /// Cancels a subscription. The children it started keep running; cancelling a permanent
    /// subscription stops the supervisor once its children are done.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub fn cancel(&self, subscription: SubscriptionId, reason: Reason) -> Result<(), CallError> {
        self.inner.cancel(subscription, reason)
    }

    /// Shuts the supervisor down gracefully: it stops taking events (it cancels its
    /// subscriptions; events already on their way still start children), refuses
    /// [`start_child`](SupervisorHandle::start_child), lets its running children finish, and
    /// exits with [`Reason::Shutdown`] once the last has ended, or at the end of the
    /// [`shutdown`](ConsumerSupervisor::shutdown) grace, aborting the rest. It answers
    /// calls meanwhile; [`join_report`](SupervisorHandle::join_report) waits for the end.
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub fn shutdown(&self) -> Result<(), CallError> {
        self.inner.cast(Shutdown)
    }

    /// Stops the supervisor with `reason` once it has handled the messages sent before this
    /// one: it handles nothing more, and its running children get what is left of the
    /// [`shutdown`](ConsumerSupervisor::shutdown) grace (by default, as long as they take),
    /// then are aborted and counted as cancelled. See [`shutdown`](SupervisorHandle::shutdown)
    /// for a stop that keeps answering calls while it waits.
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

    /// Waits until the supervisor has exited and returns why, with its children's final
    /// counts.
    pub async fn join_report(&self) -> SupervisorReport {
        let reason = self.inner.join().await;
        let mut finals = self.finals.clone();
        // Published when it stops, or at the latest when its state is dropped (after a panic).
        let published = finals.wait_for(Option::is_some).await.map(|c| c.clone());
        let children = published.unwrap_or_else(|_| finals.borrow().clone());
        SupervisorReport {
            reason,
            children: children.unwrap_or_default(),
        }
    }

    /// The exit reason and the children's final counts, if the supervisor has exited.
    pub fn final_report(&self) -> Option<SupervisorReport> {
        let reason = self.inner.exit_reason()?;
        let children = self.finals.borrow().clone()?;
        Some(SupervisorReport { reason, children })
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
    /// [`CallError::Closed`] if the supervisor is not running (see
    /// [`final_report`](SupervisorHandle::final_report)).
    pub async fn count_children(&self) -> Result<Children, CallError> {
        self.inner.call(CountChildren).await
    }

    /// Every child and its state, by id (GenStage's `which_children`).
    ///
    /// # Errors
    ///
    /// [`CallError::Closed`] if the supervisor is not running.
    pub async fn which_children(&self) -> Result<Vec<(ChildId, ChildState)>, CallError> {
        self.inner.call(WhichChildren).await
    }

    /// Starts a child for `event` outside any subscription (GenStage's `start_child`). It
    /// follows the restart policy like any child.
    ///
    /// # Errors
    ///
    /// [`StartChildError::Panicked`] if the child function panicked when called,
    /// [`StartChildError::ShuttingDown`] if the supervisor is waiting for its children to
    /// stop, [`StartChildError::Closed`] if it is not running.
    ///
    /// # Back-pressure
    ///
    /// None: the child takes no demand slot, and its end asks for nothing.
    pub async fn start_child(&self, event: T) -> Result<ChildId, StartChildError> {
        match self.inner.call(StartChild(event)).await {
            Ok(started) => started,
            Err(_) => Err(StartChildError::Closed),
        }
    }

    /// Aborts a child and forgets it (GenStage's `terminate_child`). Once this returns, the
    /// child's future has been dropped. It is not restarted, and counts neither as completed
    /// nor as failed nor as cancelled.
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
        match self.inner.call(TerminateChild(child)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(TerminateChildError::NotFound(child)),
            Err(_) => Err(TerminateChildError::Closed),
        }
    }
}

//! A consumer that runs one tokio task per event: GenStage's `ConsumerSupervisor`.
//!
//! The stage subscribes in manual mode and keeps, per subscription, how many children it has
//! running and how many freed slots it has not asked for yet. That bookkeeping and the restart
//! intensity are pure (`slots.rs`); the stage around them (`stage.rs`) only starts tasks and
//! turns their ends into asks. Children report back through the stage's own handle.

mod error;
mod slots;
mod stage;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use crate::address::{AsProducer, ProducerRef};
use crate::counters::Counters;
use crate::error::{CallError, OptionError, Reason, StartError, SubscribeError};
use crate::handle::StageHandle;
use crate::options::{SubscribeOptions, SubscriptionId};
pub use error::{StartChildError, TerminateChildError};
use slots::Intensity;
use stage::{ChildFn, CountChildren, StartChild, Supervisor, TerminateChild, WhichChildren};

/// The default [`ConsumerSupervisor::max_restarts`], as in GenStage.
const DEFAULT_MAX_RESTARTS: usize = 3;
/// The default [`ConsumerSupervisor::max_seconds`], as in GenStage.
const DEFAULT_MAX_SECONDS: Duration = Duration::from_secs(5);
/// The default [`ConsumerSupervisor::shutdown`], as in GenStage (5000 ms).
const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);

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
        let stage = Supervisor::new(
            Arc::clone(&name),
            self.child,
            self.cloner.filter(|_| self.restart == Restart::Transient),
            Intensity::new(self.max_restarts, self.max_seconds),
            self.shutdown,
        );
        let mut builder = crate::consumer(stage).name(name);
        for (producer, opts) in &self.subscriptions {
            builder = builder.subscribe_to(producer, opts.clone());
        }
        let inner = builder.start()?;
        Ok(SupervisorHandle { inner })
    }
}

/// A handle to a running [`ConsumerSupervisor`]: subscribe, start and terminate children,
/// count them, stop, join. Cheap to clone.
///
/// Like any stage handle, every method fails with a `Closed` error (or returns the exit reason)
/// once the supervisor has exited, and dropping every handle does not stop it.
pub struct SupervisorHandle<T: Send + 'static> {
    inner: StageHandle<Supervisor<T>>,
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
    /// The supervisor asks for `max_demand` events at once, then as its children end.
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
    /// [`StartChildError::Closed`] if the supervisor is not running.
    ///
    /// # Back-pressure
    ///
    /// None: the child takes no demand slot, and its end asks for nothing.
    pub async fn start_child(&self, event: T) -> Result<ChildId, StartChildError> {
        match self.inner.call(StartChild(event)).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(msg)) => Err(StartChildError::Panicked(msg)),
            Err(_) => Err(StartChildError::Closed),
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
        match self.inner.call(TerminateChild(child)).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(TerminateChildError::NotFound(child)),
            Err(_) => Err(TerminateChildError::Closed),
        }
    }
}

//! Settling messages with their source: the [`Acknowledger`] trait, the [`Acker`] handle
//! messages carry, and the guard that settles a message dropped on the way.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use tokio::runtime::Id as RuntimeId;
use tokio::sync::Notify;
use tracing::{error, warn};

/// How a message was settled with its source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It was handled: the source may forget it.
    Ack,
    /// It was rejected: the source delivers it again (`requeue`) or drops it.
    Nack {
        /// Whether the source should deliver it again.
        requeue: bool,
    },
    /// The source should deliver it again after `after` (a pipeline with a retry policy retries
    /// in the pipeline; this is what is left when retries are not the pipeline's job).
    Retry {
        /// How long the source should wait.
        after: Duration,
    },
    /// It was given up on, and went to the dead-letter sink if the pipeline has one.
    DeadLetter {
        /// Why it was given up on.
        reason: Arc<str>,
    },
}

impl Outcome {
    /// Whether this is [`Outcome::Ack`].
    pub fn is_ack(&self) -> bool {
        matches!(self, Outcome::Ack)
    }
}

/// One message's settlement, as its [`Acknowledger`] receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The tag the message was made with ([`Message::new`](crate::Message::new)).
    pub tag: u64,
    /// How it was settled.
    pub outcome: Outcome,
    /// Why it failed, for any outcome but [`Outcome::Ack`].
    pub reason: Option<Arc<str>>,
}

/// An acknowledger's failure to settle messages with its source.
///
/// The pipeline never swallows one: it is logged, counted in the stage's and the pipeline's
/// statistics ([`Report::ack_errors`](crate::Report::ack_errors)), and the messages count as
/// settled (the acknowledger was called once for each, and is not called again).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AckError {
    message: Arc<str>,
}

impl AckError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        AckError {
            message: Arc::from(message.to_string()),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Settles messages with their source (a broker, a queue, a test).
///
/// The pipeline calls [`ack`](Acknowledger::ack) once for each group of messages that end
/// together (a processor's chunk, a batch), with the messages of this acknowledger in the order
/// they were handled. Each message appears in exactly one call, once. Calls for different
/// acknowledgers are independent: one that fails or panics does not delay or skip another.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use ingest::{AckError, Acker, Acknowledger, Outcome, Settlement};
///
/// /// Remembers what it was told.
/// #[derive(Default)]
/// struct Journal(Mutex<Vec<(u64, Outcome)>>);
///
/// impl Acknowledger for Journal {
///     async fn ack(&self, settled: Vec<Settlement>) -> Result<(), AckError> {
///         let mut journal = self.0.lock().unwrap();
///         journal.extend(settled.into_iter().map(|s| (s.tag, s.outcome)));
///         Ok(())
///     }
/// }
///
/// let journal = Arc::new(Journal::default());
/// let acker = Acker::new(Arc::clone(&journal));
/// # let _ = acker;
/// ```
pub trait Acknowledger: Send + Sync + 'static {
    /// Settles `settled` with the source.
    ///
    /// # Errors
    ///
    /// Whatever stopped the source from hearing of them; see [`AckError`].
    fn ack(&self, settled: Vec<Settlement>) -> impl Future<Output = Result<(), AckError>> + Send;
}

impl<A: Acknowledger> Acknowledger for Arc<A> {
    fn ack(&self, settled: Vec<Settlement>) -> impl Future<Output = Result<(), AckError>> + Send {
        (**self).ack(settled)
    }
}

type AckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), AckError>> + Send + 'a>>;

/// An acknowledger behind a pointer.
trait ErasedAck: Send + Sync + 'static {
    fn ack_boxed(&self, settled: Vec<Settlement>) -> AckFuture<'_>;
}

impl<A: Acknowledger> ErasedAck for A {
    fn ack_boxed(&self, settled: Vec<Settlement>) -> AckFuture<'_> {
        Box::pin(self.ack(settled))
    }
}

/// Acknowledges nothing.
struct Noop;

impl Acknowledger for Noop {
    async fn ack(&self, _: Vec<Settlement>) -> Result<(), AckError> {
        Ok(())
    }
}

struct Inner<A: ?Sized> {
    noop: bool,
    orphans: Mutex<Orphans>,
    errors: AtomicU64,
    orphaned: AtomicU64,
    acker: A,
}

/// Messages of one acker dropped unsettled, waiting to be settled by a task.
#[derive(Default)]
struct Orphans {
    queue: Vec<Settlement>,
    /// The runtime each queued message was dropped on, in the queue's order.
    runtimes: Vec<RuntimeId>,
    scheduled: bool,
}

/// The handle a message carries to its [`Acknowledger`]. Cheap to clone (one reference count).
///
/// Two handles are the same acknowledger when one is a clone of the other: the pipeline groups
/// messages by that, so a source makes one `Acker` and gives every message a clone of it.
#[derive(Clone)]
pub struct Acker(Arc<Inner<dyn ErasedAck>>);

impl Acker {
    /// A handle to `acker`.
    pub fn new(acker: impl Acknowledger) -> Self {
        Acker(Arc::new(Inner {
            noop: false,
            orphans: Mutex::default(),
            errors: AtomicU64::new(0),
            orphaned: AtomicU64::new(0),
            acker,
        }))
    }

    /// The acknowledger that tells nobody (shared by every message made with
    /// [`Message::unacked`](crate::Message::unacked)).
    pub fn noop() -> Self {
        static NOOP: OnceLock<Acker> = OnceLock::new();
        NOOP.get_or_init(|| {
            Acker(Arc::new(Inner {
                noop: true,
                orphans: Mutex::default(),
                errors: AtomicU64::new(0),
                orphaned: AtomicU64::new(0),
                acker: Noop,
            }))
        })
        .clone()
    }

    /// Whether `self` and `other` are the same acknowledger.
    pub fn same(&self, other: &Acker) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether this is [`Acker::noop`].
    pub fn is_noop(&self) -> bool {
        self.0.noop
    }

    /// How many calls to this acknowledger have failed (returned an error or panicked).
    pub fn errors(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    /// How many of its messages were dropped unsettled and settled by their guard.
    pub fn orphaned(&self) -> u64 {
        self.0.orphaned.load(Ordering::Relaxed)
    }

    /// Calls the acknowledger, turning a panic into an error, and counts failures.
    pub(crate) async fn ack(&self, settled: Vec<Settlement>) -> Result<(), AckError> {
        if self.0.noop || settled.is_empty() {
            return Ok(());
        }
        // The call is made inside the guarded future: an acknowledger may panic before it
        // returns its future.
        let result = match AssertUnwindSafe(async { self.0.acker.ack_boxed(settled).await })
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(payload) => Err(AckError::new(format_args!(
                "the acknowledger panicked: {}",
                crate::guard::panic_message(&*payload)
            ))),
        };
        if result.is_err() {
            self.0.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Queues the settlement of a message dropped unsettled, for a task to pass on.
    fn orphan(&self, tag: u64) {
        self.0.orphaned.fetch_add(1, Ordering::Relaxed);
        if self.0.noop {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            error!(
                tag,
                "a message was dropped unsettled outside a tokio runtime; its acknowledger cannot be called"
            );
            return;
        };
        let settlement = Settlement {
            tag,
            outcome: Outcome::Nack { requeue: true },
            reason: Some(Arc::from("dropped before it was settled")),
        };
        let id = runtime.id();
        ORPHANS.add(id);
        let spawn = {
            let mut orphans = self.0.orphans.lock().unwrap_or_else(|e| e.into_inner());
            orphans.queue.push(settlement);
            orphans.runtimes.push(id);
            !std::mem::replace(&mut orphans.scheduled, true)
        };
        if spawn {
            runtime.spawn(settle_orphans(self.clone()));
        }
    }
}

/// Settles an acker's orphans until none are left (they are queued by `Drop`, which cannot
/// wait).
async fn settle_orphans(acker: Acker) {
    loop {
        // Messages are usually dropped many at a time: let the rest of them join the queue.
        tokio::task::yield_now().await;
        let (batch, runtimes) = {
            let mut orphans = acker.0.orphans.lock().unwrap_or_else(|e| e.into_inner());
            if orphans.queue.is_empty() {
                orphans.scheduled = false;
                return;
            }
            (
                std::mem::take(&mut orphans.queue),
                std::mem::take(&mut orphans.runtimes),
            )
        };
        let n = batch.len();
        warn!(
            messages = n,
            "settling messages dropped before they were settled (requeue)"
        );
        if let Err(err) = acker.ack(batch).await {
            error!(messages = n, %err, "the acknowledger failed to settle dropped messages");
        }
        ORPHANS.settled(&runtimes);
    }
}

/// Orphans queued or being settled, counted by the runtime they were dropped on: a pipeline
/// waits for its own runtime's orphans only, so that pipelines on other runtimes (or a
/// paused clock beside a busy one) never hold its shutdown up.
struct OrphanCount {
    /// `(runtime, orphans pending)`, only for runtimes with some pending. Orphans are the
    /// failure path and few runtimes have them at once: a short list under a lock.
    pending: Mutex<Vec<(RuntimeId, usize)>>,
    /// Told whenever some runtime's count falls to zero.
    idle: Notify,
}

static ORPHANS: OrphanCount = OrphanCount {
    pending: Mutex::new(Vec::new()),
    idle: Notify::const_new(),
};

impl OrphanCount {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(RuntimeId, usize)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, id: RuntimeId) {
        let mut pending = self.lock();
        match pending.iter_mut().find(|(r, _)| *r == id) {
            Some((_, n)) => *n += 1,
            None => pending.push((id, 1)),
        }
    }

    /// One orphan of each runtime in `runtimes` has been passed to its acknowledger.
    fn settled(&self, runtimes: &[RuntimeId]) {
        let mut idle = false;
        {
            let mut pending = self.lock();
            for id in runtimes {
                if let Some(at) = pending.iter().position(|(r, _)| r == id) {
                    pending[at].1 -= 1;
                    if pending[at].1 == 0 {
                        pending.swap_remove(at);
                        idle = true;
                    }
                }
            }
        }
        if idle {
            self.idle.notify_waiters();
        }
    }

    fn pending(&self, id: RuntimeId) -> usize {
        self.lock()
            .iter()
            .find(|(r, _)| *r == id)
            .map_or(0, |(_, n)| *n)
    }
}

/// Waits until every message dropped unsettled so far on the current runtime has been passed
/// to its acknowledger.
pub(crate) async fn orphans_settled() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let id = runtime.id();
    loop {
        let idle = ORPHANS.idle.notified();
        if ORPHANS.pending(id) == 0 {
            return;
        }
        idle.await;
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acker")
            .field("at", &Arc::as_ptr(&self.0).cast::<()>())
            .field("noop", &self.0.noop)
            .finish()
    }
}

/// A message's link to its acknowledger, settled at most once; dropping it unsettled settles
/// the message as `Nack { requeue: true }` through a task.
pub(crate) struct AckSlot(Slot);

/// The two spent states share one variant, so that the slot fits in the acknowledger's own
/// pointer niche: 24 bytes instead of 32, which keeps a `Message<u64>` within the 128 bytes
/// that a move copies inline rather than through `memcpy`.
enum Slot {
    Pending(Acker, u64),
    Spent(Spent),
}

enum Spent {
    /// Settled early, by `ack_now`: as `Ack`.
    Early,
    /// Taken by the pipeline to settle.
    Taken,
}

/// What [`AckSlot::take`] found.
pub(crate) enum Taken {
    Pending(Acker, u64),
    /// Already settled with `ack_now`.
    Early,
    /// Already taken (a bug in the pipeline if it happens).
    Gone,
}

impl AckSlot {
    pub(crate) fn pending(acker: Acker, tag: u64) -> Self {
        AckSlot(Slot::Pending(acker, tag))
    }

    pub(crate) fn is_pending(&self) -> bool {
        matches!(self.0, Slot::Pending(..))
    }

    /// Takes the acknowledger to settle the message; the slot is spent.
    pub(crate) fn take(&mut self) -> Taken {
        match std::mem::replace(&mut self.0, Slot::Spent(Spent::Taken)) {
            Slot::Pending(acker, tag) => Taken::Pending(acker, tag),
            Slot::Spent(Spent::Early) => Taken::Early,
            Slot::Spent(Spent::Taken) => Taken::Gone,
        }
    }

    pub(crate) async fn settle_now(&mut self) -> Result<(), AckError> {
        let Slot::Pending(acker, tag) = std::mem::replace(&mut self.0, Slot::Spent(Spent::Early))
        else {
            return Ok(());
        };
        let settled = vec![Settlement {
            tag,
            outcome: Outcome::Ack,
            reason: None,
        }];
        acker.ack(settled).await
    }
}

impl Drop for AckSlot {
    // Inline, so that dropping a message whose slot is known to be spent costs nothing.
    #[inline]
    fn drop(&mut self) {
        if let Slot::Pending(acker, tag) = &self.0 {
            acker.orphan(*tag);
        }
    }
}

impl fmt::Debug for AckSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Slot::Pending(_, tag) => write!(f, "pending({tag})"),
            Slot::Spent(Spent::Early) => f.write_str("acked early"),
            Slot::Spent(Spent::Taken) => f.write_str("settled"),
        }
    }
}

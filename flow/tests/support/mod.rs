//! Helpers shared by the flow integration tests: timeouts instead of hangs, error kinds,
//! task ids to see which stage ran a closure.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow::{Error, ErrorKind};

/// How long any one flow may take before a test calls it hung.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Runs `f` (typically a `collect_blocking`) on its own thread and fails the test if it has
/// not returned within [`LIMIT`].
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .expect("the flow hung (or the closure panicked)")
}

/// Awaits `fut`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("the flow hung")
}

/// The kind of the error a flow returned, failing the test if it succeeded.
pub fn err_kind<T: std::fmt::Debug>(result: Result<T, Error>) -> ErrorKind {
    match result {
        Ok(v) => panic!("expected the flow to fail, it returned {v:?}"),
        Err(e) => e.into_kind(),
    }
}

/// The option an [`ErrorKind::Option`] names, failing the test for any other kind.
pub fn option_name<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
    match err_kind(result) {
        ErrorKind::Option(e) => e.option,
        other => panic!("expected an option error, got {other:?}"),
    }
}

/// Asserts the flow failed with [`ErrorKind::Misuse`].
pub fn assert_misuse<T: std::fmt::Debug>(result: Result<T, Error>) {
    match err_kind(result) {
        ErrorKind::Misuse(_) => {}
        other => panic!("expected a misuse error, got {other:?}"),
    }
}

/// Asserts the flow failed because a closure panicked with a message containing `needle`.
pub fn assert_panicked<T: std::fmt::Debug>(result: Result<T, Error>, needle: &str) {
    match err_kind(result) {
        ErrorKind::Failed(stage::Reason::Panic(msg)) => {
            assert!(
                msg.contains(needle),
                "panic message {msg:?} lacks {needle:?}"
            )
        }
        other => panic!("expected Failed(Panic(..)), got {other:?}"),
    }
}

/// The id of the tokio task (the stage) running the caller.
pub fn task() -> tokio::task::Id {
    tokio::task::try_id().expect("closures of a flow run inside a stage task")
}

/// Records, per key, the task that ran a closure.
#[derive(Clone, Default)]
pub struct Tasks<K>(Arc<Mutex<HashMap<K, tokio::task::Id>>>);

impl<K: std::hash::Hash + Eq + Clone + std::fmt::Debug> Tasks<K> {
    pub fn new() -> Self {
        Tasks(Arc::new(Mutex::new(HashMap::new())))
    }

    /// Records that `key` was seen by the current task (asserting it was not seen twice).
    pub fn record(&self, key: K) {
        let old = self.0.lock().unwrap().insert(key.clone(), task());
        assert!(old.is_none(), "{key:?} seen twice");
    }

    pub fn get(&self) -> HashMap<K, tokio::task::Id> {
        self.0.lock().unwrap().clone()
    }

    pub fn distinct(&self) -> HashSet<tokio::task::Id> {
        self.0.lock().unwrap().values().copied().collect()
    }
}

/// Sorts a vector, for comparing multi-stage output as a multiset.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// An iterator that tells when it is dropped (its producer stage has exited).
pub struct Watched<I> {
    pub inner: I,
    pub dropped: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<I> Watched<I> {
    pub fn new(inner: I) -> (Self, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Watched {
                inner,
                dropped: Some(tx),
            },
            rx,
        )
    }
}

impl<I: Iterator> Iterator for Watched<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        self.inner.next()
    }
}

impl<I> Drop for Watched<I> {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.take() {
            let _ = tx.send(());
        }
    }
}

/// A stream yielding each `(at_ms, event)` at virtual time `at_ms` (counted from the call),
/// then ending at `end_ms`, or right after the last event when `end_ms` is `None`. For tests
/// on tokio's paused clock.
pub fn timed<T: Send + 'static>(
    events: Vec<(u64, T)>,
    end_ms: Option<u64>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    let start = tokio::time::Instant::now();
    futures::stream::unfold(events.into_iter(), move |mut rest| async move {
        let (item, deadline) = match rest.next() {
            Some((at, e)) => (Some(e), start + Duration::from_millis(at)),
            None => (None, start + Duration::from_millis(end_ms.unwrap_or(0))),
        };
        if tokio::time::Instant::now() < deadline {
            tokio::time::sleep_until(deadline).await;
        }
        item.map(|e| (e, rest))
    })
}

/// Milliseconds of virtual time since `start`.
pub fn since(start: tokio::time::Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

//! Running user code so that a panic fails the work instead of the stage, and so that a stage
//! past its shutdown deadline can abandon a call that does not return.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;

/// Tells one stage to give up on the user call it is waiting for.
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl KillSwitch {
    /// Makes the stage's pending (and later) user calls return [`Guarded::Killed`].
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}

/// How a guarded call ended.
#[derive(Debug)]
pub(crate) enum Guarded<T> {
    Done(T),
    /// It panicked, with this message.
    Panicked(String),
    /// The stage was killed while it waited for it (or before it started).
    Killed,
}

/// Makes the future with `call` and runs it, catching a panic in the call itself (a user
/// method may do its work before it returns its future, as a plain `fn -> impl Future` can) or
/// in any poll, and giving up on it when `kill` is thrown. A call that finishes on its first
/// poll costs one flag load more than a plain call.
pub(crate) async fn guarded<F: Future>(
    call: impl FnOnce() -> F,
    kill: &KillSwitch,
) -> Guarded<F::Output> {
    if kill.is_killed() {
        return Guarded::Killed;
    }
    let fut = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(fut) => fut,
        Err(payload) => return Guarded::Panicked(panic_message(&*payload)),
    };
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Guarded::Done(value)),
            Ok(Poll::Pending) => {
                kill.waker.register(cx.waker());
                if kill.is_killed() {
                    Poll::Ready(Guarded::Killed)
                } else {
                    Poll::Pending
                }
            }
            Err(payload) => Poll::Ready(Guarded::Panicked(panic_message(&*payload))),
        },
    )
    .await
}

/// Runs a plain closure, catching a panic.
pub(crate) fn guarded_sync<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_caught() {
        let kill = KillSwitch::default();
        let out = guarded(|| async { panic!("boom") }, &kill).await;
        assert!(
            matches!(out, Guarded::Panicked(ref m) if m == "boom"),
            "{out:?}"
        );
        let out: Guarded<u32> = guarded(|| async { 3 }, &kill).await;
        assert!(matches!(out, Guarded::Done(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_call_is_abandoned() {
        let kill = std::sync::Arc::new(KillSwitch::default());
        let killer = std::sync::Arc::clone(&kill);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            killer.kill();
        });
        let out = guarded(std::future::pending::<()>, &kill).await;
        assert!(matches!(out, Guarded::Killed));
        let out = guarded(|| async { 1 }, &kill).await;
        assert!(matches!(out, Guarded::Killed));
    }
}

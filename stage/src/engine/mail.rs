//! The channel under a stage's mailbox: unbounded, any number of senders, one receiver that
//! takes everything waiting in one go.
//!
//! A stage handles its mail in bursts, so the receiving side is built for that: a send locks
//! the shared queue once and wakes the receiver only when the queue was empty; the receiver
//! swaps the whole shared queue for its own empty one under one lock and then pops from its
//! private copy without touching shared memory. Checking for mail is one atomic load. Order is
//! the order in which sends took the lock, so that what one sender sends arrives in the order
//! it was sent, and a message is a barrier for everything sent before it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
// As in `edge.rs`: nothing runs user code under the lock, so a lock without poisoning.
use parking_lot::{Mutex, MutexGuard};

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing waits now.
    Empty,
    /// Nothing waits, and every sender is gone.
    Disconnected,
}

#[derive(Debug)]
struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    /// Whether `queue` holds items: set by the send that finds it empty, cleared by the
    /// receiver when it takes them. Read without the lock.
    ready: AtomicBool,
    /// Set by the receiver under the lock, so that a send that holds the lock sees it; read
    /// without the lock by `is_closed`.
    closed: AtomicBool,
    senders: AtomicUsize,
    waker: AtomicWaker,
}

/// How many messages in a row [`Receiver::poll_recv`] returns before it yields once, so that
/// a stage whose mail never runs dry still lets the other tasks of its worker run. tokio's own
/// channels do the same through its task budget, which is also 128.
const STREAK: u32 = 128;

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        self.queue.lock()
    }
}

/// The sending side; clone it for more senders.
#[derive(Debug)]
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The receiving side.
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// What was taken from the shared queue and not yet returned.
    taken: VecDeque<T>,
    /// Messages `poll_recv` returned since it last returned `Pending`.
    streak: u32,
}

/// A new, empty channel.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        ready: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        senders: AtomicUsize::new(1),
        waker: AtomicWaker::new(),
    });
    let receiver = Receiver {
        shared: Arc::clone(&shared),
        taken: VecDeque::new(),
        streak: 0,
    };
    (Sender(shared), receiver)
}

impl<T> Sender<T> {
    /// Queues `item`; gives it back once the receiver has closed the channel.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut queue = self.0.lock();
        if self.0.closed.load(Ordering::Relaxed) {
            return Err(item);
        }
        let was_empty = queue.is_empty();
        queue.push_back(item);
        if was_empty {
            // Seen by a receiver that registers after the wake below: `AtomicWaker` orders its
            // `register` and `wake`, and this store comes before the wake.
            self.0.ready.store(true, Ordering::Release);
        }
        drop(queue);
        if was_empty {
            // A receiver that found the queue empty is waiting, or about to look again.
            self.0.waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver has closed the channel (or is gone).
    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Sender(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The oldest message, if one waits.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        if self.taken.is_empty() && !self.take() {
            if self.shared.senders.load(Ordering::Acquire) > 0 {
                return Err(TryRecvError::Empty);
            }
            // Every sender is gone, the last one after its last send: look once more.
            if !self.take() {
                return Err(TryRecvError::Disconnected);
            }
        }
        Ok(self.taken.pop_front().expect("took a non-empty queue"))
    }

    /// Moves what waits in the shared queue into `taken` (empty when called); whether there
    /// was anything.
    fn take(&mut self) -> bool {
        if !self.shared.ready.load(Ordering::Acquire) {
            return false;
        }
        let mut queue = self.shared.lock();
        std::mem::swap(&mut *queue, &mut self.taken);
        // Set and cleared only under the lock.
        self.shared.ready.store(false, Ordering::Relaxed);
        drop(queue);
        !self.taken.is_empty()
    }

    /// The next message, or `None` once every sender is gone and nothing waits. After
    /// [`STREAK`] messages in a row it yields once (wakes itself and returns `Pending`).
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.streak >= STREAK {
            self.streak = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let mut received = self.try_recv();
        if matches!(received, Err(TryRecvError::Empty)) {
            self.shared.waker.register(cx.waker());
            // A send between the first look and the registration woke nobody.
            received = self.try_recv();
            if matches!(received, Err(TryRecvError::Empty)) {
                self.streak = 0;
                return Poll::Pending;
            }
        }
        self.streak += 1;
        // `Disconnected` is the end.
        Poll::Ready(received.ok())
    }

    /// Waits for the next message; `None` once every sender is gone and nothing waits.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Refuses further sends; what was sent before can still be received.
    pub(crate) fn close(&mut self) {
        let _queue = self.shared.lock();
        self.shared.closed.store(true, Ordering::Release);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
        // Dropped outside the lock: a message's drop may send to this very channel.
        let left = std::mem::take(&mut *self.shared.lock());
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_in_order_across_takes() {
        let (tx, mut rx) = channel();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(rx.try_recv(), Ok(1));
        tx.send(3).unwrap();
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_closed_channel_refuses_sends_and_keeps_what_it_has() {
        let (tx, mut rx) = channel();
        tx.send(1).unwrap();
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.send(2), Err(2));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn the_receiver_is_disconnected_once_every_sender_is_gone() {
        let (tx, mut rx) = channel();
        let tx2 = tx.clone();
        tx2.send(7).unwrap();
        drop(tx);
        drop(tx2);
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_dropped_receiver_closes_the_channel() {
        let (tx, rx) = channel::<u8>();
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(1), Err(1));
    }

    #[tokio::test]
    async fn recv_waits_for_a_send_and_ends_when_senders_are_gone() {
        let (tx, mut rx) = channel();
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(n) = rx.recv().await {
                got.push(n);
            }
            got
        });
        tokio::task::yield_now().await;
        for n in 0..5 {
            tx.send(n).unwrap();
            tokio::task::yield_now().await;
        }
        drop(tx);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("recv ends")
            .unwrap();
        assert_eq!(got, [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_receiver_whose_mail_never_runs_dry_yields_to_other_tasks() {
        let (tx, mut rx) = channel();
        for n in 0..STREAK * 3 {
            tx.send(n).unwrap();
        }
        let ran = Arc::new(AtomicBool::new(false));
        let other = tokio::spawn({
            let ran = Arc::clone(&ran);
            async move { ran.store(true, Ordering::Relaxed) }
        });
        let mut polls = 0;
        let mut got = 0;
        std::future::poll_fn(|cx| {
            polls += 1;
            while got < STREAK * 3 {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(_)) => got += 1,
                    Poll::Ready(None) => unreachable!("a sender is alive"),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(())
        })
        .await;
        assert_eq!(got, STREAK * 3);
        assert_eq!(polls, 3, "one yield per {STREAK} messages");
        assert!(
            ran.load(Ordering::Relaxed),
            "the other task ran while the receiver yielded"
        );
        other.await.unwrap();
    }

    #[test]
    fn many_senders_on_threads_lose_nothing_and_keep_each_senders_order() {
        const PER: u64 = 20_000;
        let (tx, mut rx) = channel::<(u64, u64)>();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        tx.send((t, i)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut next = [0u64; 4];
        rt.block_on(async {
            while let Some((t, i)) = rx.recv().await {
                assert_eq!(next[t as usize], i, "sender {t} out of order");
                next[t as usize] += 1;
            }
        });
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(next, [PER; 4]);
    }
}

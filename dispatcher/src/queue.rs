//! A queue between tasks, for what every trigger holds several of (its fanout queue, its
//! completions, its redrive requests). A tokio channel costs 1.3–2 KB before its first message
//! (its shared state is padded to cache lines, and its first block has room for 32 messages);
//! with 10,000 triggers that was 50 MB. This one is a single allocation of about 100 bytes,
//! its buffer grows only with what is queued, and waiting on it adds one pointer to the
//! waiter's future (a `Notify` wait adds about 80 bytes to every trigger's parked worker).
//!
//! One receiver, any number of senders. The receiver sees the queue closed once every sender
//! is gone and it is drained; a sender sees it closed once the receiver is gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Slots a drained queue keeps; a larger buffer (a burst) is given back.
const KEPT_SLOTS: usize = 32;

/// A queue that holds at most `capacity` items.
pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), receiving: true, waiting: None }),
        senders: AtomicUsize::new(1),
        capacity,
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

/// A queue without a bound.
pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    bounded(usize::MAX)
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Counted outside the lock: a sender is cloned and dropped for every delivery. Read under
    /// the lock, after finding the queue empty, so that a last send is never missed.
    senders: AtomicUsize,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    receiving: bool,
    /// The receiver, when it found the queue empty: woken by the next send, or when the last
    /// sender goes. Set under the same lock as the look, so no send falls in between.
    waiting: Option<Waker>,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_receiver(&self) {
        let waiting = self.state().waiting.take();
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

/// Why nothing was received.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing queued now.
    Empty,
    /// Nothing queued, and every sender is gone.
    Disconnected,
}

pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item`, or hands it back when the queue is full or its receiver is gone.
    pub(crate) fn try_send(&self, item: T) -> Result<(), T> {
        let waiting = {
            let mut state = self.shared.state();
            if !state.receiving || state.items.len() >= self.shared.capacity {
                return Err(item);
            }
            state.items.push_back(item);
            state.waiting.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `item` (in an unbounded queue), or hands it back when the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        self.try_send(item)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Sender { shared: self.shared.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake_receiver();
        }
    }
}

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; `None` once every sender is gone and the queue is
    /// drained. Cancel-safe: an item is taken only when this returns it.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.take(Some(cx)) {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    /// The next item if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.take(None)
    }

    /// The next item; when there is none, `cx`'s task is woken by the next send.
    fn take(&mut self, cx: Option<&mut Context<'_>>) -> Result<T, TryRecvError> {
        let mut state = self.shared.state();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > KEPT_SLOTS {
                    state.items.shrink_to(KEPT_SLOTS);
                }
                Ok(item)
            }
            None if self.shared.senders.load(Ordering::Acquire) == 0 => Err(TryRecvError::Disconnected),
            None => {
                if let Some(cx) = cx {
                    if !state.waiting.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                        state.waiting = Some(cx.waker().clone());
                    }
                }
                Err(TryRecvError::Empty)
            }
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (items, waker) = {
            let mut state = self.shared.state();
            state.receiving = false;
            (std::mem::take(&mut state.items), state.waiting.take())
        };
        // Dropped outside the lock: an item's drop may do anything.
        drop((items, waker));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bounded_queue_refuses_past_its_capacity_and_keeps_the_order() {
        let (tx, mut rx) = bounded(2);
        assert_eq!((tx.try_send(1), tx.try_send(2), tx.try_send(3)), (Ok(()), Ok(()), Err(3)));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!((rx.try_recv(), rx.try_recv(), rx.try_recv()), (Ok(2), Ok(4), Err(TryRecvError::Empty)));
    }

    #[test]
    fn the_receiver_sees_it_closed_only_once_every_sender_is_gone_and_it_is_drained() {
        let (tx, mut rx) = unbounded();
        let other = tx.clone();
        tx.send("a").unwrap();
        drop(tx);
        other.send("b").unwrap();
        drop(other);
        assert_eq!(rx.try_recv(), Ok("a"));
        assert_eq!(rx.try_recv(), Ok("b"));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_sender_is_refused_once_the_receiver_is_gone_and_what_was_queued_is_dropped() {
        let item = Arc::new(());
        let (tx, rx) = unbounded();
        tx.send(item.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1);
        assert!(tx.send(item).is_err());
    }

    #[test]
    fn a_drained_queue_gives_back_a_burst_s_buffer() {
        let (tx, mut rx) = unbounded();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.shared.state().items.capacity() <= KEPT_SLOTS);
    }

    #[tokio::test(start_paused = true)]
    async fn recv_waits_for_a_send_or_for_the_last_sender_to_go() {
        let (tx, mut rx) = unbounded();
        let receiving = tokio::spawn(async move {
            let first = rx.recv().await;
            let second = rx.recv().await;
            (first, second)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(7).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(tx);
        assert_eq!(receiving.await.unwrap(), (Some(7), None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_recv_cancelled_after_a_send_loses_nothing() {
        let (tx, mut rx) = unbounded();
        // Wake the receiver's wait and drop it before it runs again, as a `select!` does.
        {
            let waiting = rx.recv();
            tokio::pin!(waiting);
            assert!(futures_poll_once(waiting.as_mut()).await.is_none());
            tx.send(1).unwrap();
        }
        let next = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        assert_eq!(next, Ok(Some(1)));
    }

    /// Polls a future once, returning its output if it was ready.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}

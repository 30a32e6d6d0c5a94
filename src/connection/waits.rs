//! What the actor waits on besides traffic, set up once per connection.
//!
//! The actor's loop turns once per burst of deliveries, which under fan-out
//! is once per delivery. A wait created at every turn registers with its
//! source and deregisters when dropped, and even a wait kept across turns
//! takes its source's lock each time it is polled; at one turn per delivery
//! either cost more than the delivery itself (callgrind, see
//! `BENCHMARKS.md`). So the rare events (shutdown, overflow, an
//! administrator's close, a policy change) sit behind one [`Gated`] wait
//! ([`Sources::wait`]) that looks at them only after one of them woke the
//! task, and the session's timer is one [`SessionTimer`] moved only when the
//! deadline changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::registry::{CloseOrder, CloseSlot};
use crate::rules::Policy;

/// A future polled only when it asked to be: its source's wake-up sets a
/// flag and wakes the task; a turn of the loop woken by anything else sees
/// the flag down and returns at once, without touching the source.
pub(super) struct Gated<F> {
    future: F,
    flag: Arc<WakeFlag>,
    /// Wakes `flag`: what the inner future registers with its source.
    waker: Waker,
}

struct WakeFlag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> Gated<F> {
    pub(super) fn new(future: F) -> Self {
        // Raised: the first poll registers the future with its source.
        let flag = Arc::new(WakeFlag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        let waker = Waker::from(flag.clone());
        Self { future, flag, waker }
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is looked at: a wake-up in between raises it for this poll.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker))
    }
}

/// Why the connection must end, from outside its traffic.
pub(super) enum Signal {
    /// The server is shutting down.
    Shutdown,
    /// The outbound queue overflowed (slow consumer).
    Overflow,
    /// An administrator closed the connection.
    Close(CloseOrder),
}

/// What comes to a connection from outside its traffic.
pub(super) enum Outside {
    /// It must end.
    Ending(Signal),
    /// The node published a new policy; the receiver waits for the next one.
    Policy(Arc<Policy>, watch::Receiver<Arc<Policy>>),
    /// The node's policy handle is gone (it is shutting down).
    PolicyGone,
}

/// A boxed wait (one allocation per connection, and one per policy change).
pub(super) type Wait<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The sources of [`Outside`] events, kept to wait on them again after a policy change.
pub(super) struct Sources {
    pub(super) shutdown: CancellationToken,
    pub(super) overflow: CancellationToken,
    pub(super) close_slot: Arc<CloseSlot>,
}

impl Sources {
    /// The first of shutdown, overflow, an administrator's close and (while
    /// `policy` is given) the next policy, in that order of precedence: one
    /// gated wait for all four keeps an idle connection's memory down.
    pub(super) fn wait(&self, policy: Option<watch::Receiver<Arc<Policy>>>) -> Gated<Wait<Outside>> {
        let (shutdown, overflow, close_slot) = (self.shutdown.clone(), self.overflow.clone(), self.close_slot.clone());
        Gated::new(Box::pin(async move {
            let next_policy = async move {
                let Some(mut policy) = policy else { return std::future::pending().await };
                match policy.changed().await {
                    Ok(()) => {
                        let current = policy.borrow_and_update().clone();
                        Outside::Policy(current, policy)
                    }
                    Err(_) => Outside::PolicyGone,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => Outside::Ending(Signal::Shutdown),
                () = overflow.cancelled() => Outside::Ending(Signal::Overflow),
                order = close_slot.recv() => Outside::Ending(Signal::Close(order)),
                outside = next_policy => outside,
            }
        }))
    }
}

/// The session's next deadline as one timer that lives as long as the
/// connection: moved only when the deadline changes.
pub(super) struct SessionTimer {
    sleep: Pin<Box<Sleep>>,
    /// The deadline it is set to (server clock, ms), if any.
    armed: Option<u64>,
}

impl SessionTimer {
    pub(super) fn new() -> Self {
        Self { sleep: Box::pin(sleep_until(Instant::now())), armed: None }
    }

    /// Sets the timer to `deadline` (`at` turns it into an instant) unless it is set to it already.
    pub(super) fn arm(&mut self, deadline: Option<u64>, at: impl FnOnce(u64) -> Instant) {
        if deadline != self.armed {
            if let Some(deadline) = deadline {
                self.sleep.as_mut().reset(at(deadline));
            }
            self.armed = deadline;
        }
    }

    pub(super) fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// After it fired: the next turn sets it again, even to the same deadline.
    pub(super) fn disarm(&mut self) {
        self.armed = None;
    }

    pub(super) async fn fired(&mut self) {
        self.sleep.as_mut().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gated_wait_sees_a_signal_that_comes_while_it_is_not_looking() {
        let notify = Arc::new(tokio::sync::Notify::new());
        let waiting = notify.clone();
        let mut gated = Gated::new(Box::pin(async move { waiting.notified().await }) as Wait<()>);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending(), "registered on the first poll");
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending(), "not woken: not looked at");
        notify.notify_waiters();
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready(), "woken: looked at, and ready");
    }

    #[tokio::test]
    async fn a_gated_wait_wakes_its_task() {
        let token = CancellationToken::new();
        let gated = Gated::new(Box::pin(token.clone().cancelled_owned()));
        let task = tokio::spawn(gated);
        tokio::task::yield_now().await;
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}

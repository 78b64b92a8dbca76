//! The rendezvous between one refresh and every caller waiting for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::sync::Mutex;

/// Waiters learn only that the refresh ended; they then ask the machine again, which answers
/// with the new token, the shared error of the negative cache, or re-authorization.
#[derive(Default)]
struct State {
    done: bool,
    waiters: Vec<Option<Waker>>,
    free: Vec<usize>,
}

/// One refresh's completion cell. Completed exactly once by the engine's refresh task.
#[derive(Default)]
pub(crate) struct FlightCell {
    state: Mutex<State>,
}

impl FlightCell {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(FlightCell::default())
    }

    pub(crate) fn complete(&self) {
        let wakers: Vec<Waker> = {
            let mut s = self.state.lock();
            if s.done {
                return;
            }
            s.done = true;
            s.free.clear();
            s.waiters.drain(..).flatten().collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn wait(self: &Arc<Self>) -> FlightWait {
        FlightWait {
            cell: self.clone(),
            slot: None,
        }
    }
}

/// A waiter's future; dropping it only removes the waiter, never the refresh.
pub(crate) struct FlightWait {
    cell: Arc<FlightCell>,
    slot: Option<usize>,
}

impl Future for FlightWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut s = this.cell.state.lock();
        if s.done {
            this.slot = None;
            return Poll::Ready(());
        }
        match this.slot {
            Some(i) => match s.waiters.get_mut(i) {
                Some(w) => {
                    if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *w = Some(cx.waker().clone());
                    }
                }
                None => this.slot = None,
            },
            None => {
                let waker = Some(cx.waker().clone());
                let i = match s.free.pop() {
                    Some(i) => {
                        s.waiters[i] = waker;
                        i
                    }
                    None => {
                        s.waiters.push(waker);
                        s.waiters.len() - 1
                    }
                };
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for FlightWait {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut s = self.cell.state.lock();
            if !s.done && i < s.waiters.len() {
                s.waiters[i] = None;
                s.free.push(i);
            }
        }
    }
}

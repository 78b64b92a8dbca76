//! The pool's one timer: a heap of deadlines for all its credentials and the task that sleeps
//! until the earliest, so that a million credentials cost one task and one timer, not a
//! million.
//!
//! A credential reports its next tick deadline whenever it may have changed
//! ([`credential::Scheduler`]); the report pushes a heap entry, O(log n). Entries are never
//! removed in place: the credential keeps the one deadline that counts
//! ([`Credential::pooled_wake`]), and an entry holding another deadline is stale and skipped
//! when it reaches the top (lazy deletion). The heap is rebuilt without stale entries when
//! they outnumber the live ones.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::task::{Context, Poll, Waker};

use crate::credential::{Credential, Rescheduled, WeakCredential, NO_WAKE};
use crate::runtime::MonoTime;
use crate::sync::Mutex;

use super::Shared;

/// How many due credentials one round ticks before the heap lock is let go.
pub(super) const BATCH: usize = 1024;

/// Stale entries tolerated beyond the live ones before the heap is rebuilt.
const SLACK: usize = 1024;

/// The deadlines of every pooled credential.
#[derive(Default)]
pub(super) struct Timers {
    state: Mutex<State>,
}

struct State {
    heap: BinaryHeap<Due>,
    /// Credentials with a deadline (entries that are not stale), or more: a credential dropped
    /// outside the pool is counted until its entry is popped or the heap is rebuilt.
    scheduled: usize,
    /// What the task sleeps until; an earlier deadline wakes it.
    armed: MonoTime,
    /// An earlier deadline arrived while the task slept (or was about to).
    notified: bool,
    waker: Option<Waker>,
    /// Whether the task is alive (it is started on first need and again if it died).
    running: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            heap: BinaryHeap::new(),
            scheduled: 0,
            armed: MonoTime::MAX,
            notified: false,
            waker: None,
            running: false,
        }
    }
}

/// One heap entry: ordered by deadline, earliest first.
struct Due {
    at: MonoTime,
    credential: WeakCredential,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // BinaryHeap is a max-heap: the earliest deadline must compare greatest.
        other.at.cmp(&self.at)
    }
}

impl Timers {
    /// Records `credential`'s next deadline; O(log n).
    pub(super) fn reschedule(
        &self,
        credential: WeakCredential,
        wake: &AtomicU64,
        at: Option<MonoTime>,
    ) -> Rescheduled {
        let new = at.map_or(NO_WAKE, |t| t.as_nanos().min(NO_WAKE - 1));
        let mut s = self.state.lock();
        let old = wake.swap(new, Ordering::AcqRel);
        let mut out = Rescheduled::default();
        if old == new {
            return out;
        }
        match (old == NO_WAKE, new == NO_WAKE) {
            (true, false) => s.scheduled += 1,
            (false, true) => s.scheduled = s.scheduled.saturating_sub(1),
            _ => {}
        }
        if new == NO_WAKE {
            return out;
        }
        let at = MonoTime::from_nanos(new);
        s.heap.push(Due { at, credential });
        if at < s.armed {
            s.armed = at;
            s.notified = true;
            out.waker = s.waker.take();
        }
        if s.heap.len() > 2 * s.scheduled + SLACK {
            out.garbage = compact(&mut s);
        }
        if !s.running {
            s.running = true;
            out.start = true;
        }
        out
    }

    /// Claims the task slot if no task runs (the pool needs one for idle eviction alone).
    pub(super) fn claim_task(&self) -> bool {
        let mut s = self.state.lock();
        !std::mem::replace(&mut s.running, true)
    }

    /// The task ended (or was dropped before it ran): the next report starts another.
    pub(super) fn task_ended(&self) {
        self.state.lock().running = false;
    }

    /// Pops up to [`BATCH`] credentials due at `now`, and arms the task for the next deadline
    /// (or `also`, whichever is earlier). Stale entries are dropped on the way. Returns the due
    /// credentials and whether more are due already.
    pub(super) fn take_due(
        &self,
        now: MonoTime,
        also: Option<MonoTime>,
    ) -> (Vec<Credential>, Option<MonoTime>) {
        let mut due = Vec::new();
        // Handles of stale entries, dropped after the lock: dropping a last handle runs the
        // credential's listeners' destructors, which are not to run under this lock.
        let mut stale = Vec::new();
        let mut s = self.state.lock();
        while due.len() < BATCH {
            match s.heap.peek() {
                Some(top) if top.at <= now => {}
                _ => break,
            }
            let Some(entry) = s.heap.pop() else { break };
            let Some(credential) = entry.credential.upgrade() else {
                continue;
            };
            let current = credential
                .pooled_wake()
                .is_some_and(|w| consume(w, entry.at));
            if current {
                s.scheduled = s.scheduled.saturating_sub(1);
                due.push(credential);
            } else {
                stale.push(credential);
            }
        }
        let next = s.heap.peek().map(|d| d.at);
        let wake_at = match (next, also) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        s.armed = wake_at.unwrap_or(MonoTime::MAX);
        s.notified = false;
        drop(s);
        drop(stale);
        (due, wake_at)
    }

    /// The number of heap entries, stale ones included.
    pub(super) fn heap_len(&self) -> usize {
        self.state.lock().heap.len()
    }
}

/// Takes the deadline `at` out of `wake` if it still holds it (the entry is current).
fn consume(wake: &AtomicU64, at: MonoTime) -> bool {
    wake.compare_exchange(at.as_nanos(), NO_WAKE, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Rebuilds the heap with its current entries only: O(n), done when stale entries outnumber
/// live ones, so O(1) amortized per report. Returns the handles it upgraded, to drop unlocked.
fn compact(s: &mut State) -> Vec<Credential> {
    let entries = std::mem::take(&mut s.heap).into_vec();
    let mut kept = Vec::with_capacity(entries.len() / 2 + 1);
    let mut handles = Vec::new();
    for e in entries {
        if let Some(c) = e.credential.upgrade() {
            let current = c
                .pooled_wake()
                .is_some_and(|w| w.load(Ordering::Acquire) == e.at.as_nanos());
            if current {
                kept.push(e);
            }
            handles.push(c);
        }
    }
    s.scheduled = kept.len();
    s.heap = BinaryHeap::from(kept);
    handles
}

/// Completes when a report brought a deadline earlier than the one the task sleeps until, or
/// when the pool is gone.
pub(super) struct Notified {
    pub(super) shared: Weak<Shared>,
}

impl Future for Notified {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(shared) = self.shared.upgrade() else {
            return Poll::Ready(());
        };
        let mut s = shared.timers.state.lock();
        if std::mem::take(&mut s.notified) {
            return Poll::Ready(());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Timers {
    /// Wakes the task so that it notices the pool is gone.
    pub(super) fn close(&self) {
        let waker = self.state.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

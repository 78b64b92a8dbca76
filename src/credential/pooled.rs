//! The seam between a credential and a [`CredentialPool`](crate::pool::CredentialPool)'s
//! scheduler, so that a pool of a million credentials runs one timer task instead of a million.
//!
//! A standalone credential runs its own timer task ([`engine::timer_loop`](super::engine)). A
//! pooled one starts none: it is built with [`Timer::Pooled`], reports its next tick deadline
//! ([`Machine::next_tick`](crate::machine::Machine::next_tick)) to the pool's [`Scheduler`]
//! wherever the standalone credential would start or nudge its timer, and the scheduler ticks
//! it ([`Credential::scheduled_tick`]) when that deadline comes.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::task::Waker;

use futures::channel::mpsc;

use super::engine::Inner;
use super::Credential;
use crate::runtime::MonoTime;
use crate::sync::Mutex;

/// Who wakes a credential when time alone can start a refresh (eager mode, keep-alive, the
/// retry after an ambiguous answer).
pub(crate) enum Timer {
    /// Its own timer task, started when first needed; the sender nudges it after the machine
    /// changed, and dropping the sender ends it.
    /// Boxed: pooled credentials, many more, keep one word for this variant.
    Own(Box<Mutex<Option<mpsc::UnboundedSender<()>>>>),
    /// A pool's scheduler ([`Common::scheduler`](super::engine::Common)), no task of its own.
    /// The deadline the scheduler holds for this credential, in nanoseconds ([`NO_WAKE`]:
    /// none); owned by the scheduler, kept here so that it can tell a current heap entry from a
    /// stale one in O(1) without a map of its own.
    Pooled(AtomicU64),
}

impl Timer {
    pub(crate) fn own() -> Self {
        Timer::Own(Box::new(Mutex::new(None)))
    }

    pub(crate) fn pooled() -> Self {
        Timer::Pooled(AtomicU64::new(NO_WAKE))
    }
}

/// [`Timer::Pooled`] when nothing is scheduled.
pub(crate) const NO_WAKE: u64 = u64::MAX;

/// A pool's scheduler, as its credentials see it.
pub(crate) trait Scheduler: Send + Sync + 'static {
    /// `credential`'s next tick is now `at` (`None`: time alone will start nothing).
    ///
    /// Called with the credential's engine lock held, so that the reports of one credential
    /// arrive in order: it must not call back into any credential, nor start or wake a task;
    /// what it returns does that once the lock is released. `wake` is the credential's
    /// deadline in [`Timer::Pooled`].
    fn reschedule(
        &self,
        credential: WeakCredential,
        wake: &AtomicU64,
        at: Option<MonoTime>,
    ) -> Rescheduled;

    /// Starts the scheduler's task (when a report said it does not run).
    fn start(&self);
}

/// What a report leaves to do once the engine lock is released.
#[must_use]
#[derive(Default)]
pub(crate) struct Rescheduled {
    /// The scheduler's task, to wake: the deadline is earlier than the one it sleeps until.
    pub(crate) waker: Option<Waker>,
    /// The scheduler's task does not run and must be started.
    pub(crate) start: bool,
    /// Handles the scheduler picked up (rebuilding its heap), to drop: dropping a last handle
    /// runs the credential's destructors, its listeners' among them.
    pub(crate) garbage: Vec<Credential>,
}

/// A credential as a scheduler holds it: it does not keep the credential alive.
#[derive(Clone)]
pub(crate) struct WeakCredential(pub(super) Weak<Inner>);

impl WeakCredential {
    /// The credential, if a handle to it is still held somewhere.
    pub(crate) fn upgrade(&self) -> Option<Credential> {
        self.0.upgrade().map(|inner| Credential { inner })
    }
}

impl Inner {
    /// Tells the pool's scheduler the next tick deadline (pooled credentials only).
    pub(crate) fn report_tick(self: &Arc<Self>) {
        let Timer::Pooled(wake) = &self.timer else {
            return;
        };
        let Some(scheduler) = self.common.scheduler.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        let done = {
            let core = self.core.lock();
            let at = core.machine.next_tick(self.common.rt.now());
            // Under the engine lock: a report computed before a flight ended cannot overtake
            // the one the flight's end makes.
            scheduler.reschedule(WeakCredential(Arc::downgrade(self)), wake, at)
        };
        if done.start {
            scheduler.start();
        }
        if let Some(w) = done.waker {
            w.wake();
        }
        drop(done.garbage);
    }
}

impl Credential {
    /// The deadline its scheduler holds for a pooled credential (`None` for a standalone one).
    pub(crate) fn pooled_wake(&self) -> Option<&AtomicU64> {
        match &self.inner.timer {
            Timer::Pooled(wake) => Some(wake),
            Timer::Own(_) => None,
        }
    }

    /// Ticks the machine (time passed: an eager refresh or keep-alive may be due), then reports
    /// the next deadline. Called by the pool's scheduler.
    pub(crate) fn scheduled_tick(&self) {
        self.inner.tick();
        self.inner.report_tick();
    }

    /// A handle that does not keep the credential alive (for a scheduler's heap, or a listener:
    /// the credential owns its listeners).
    pub(crate) fn weak(&self) -> WeakCredential {
        WeakCredential(Arc::downgrade(&self.inner))
    }

    /// How many handles to this credential exist, counting the engine's own tasks (a refresh
    /// in flight, a save being retried): 1 means only the caller's handle.
    pub(crate) fn handle_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

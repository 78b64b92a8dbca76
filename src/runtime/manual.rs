//! A hand-driven clock, timer and task queue, so tests decide exactly when time passes.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::task::{waker_ref, ArcWake};
use parking_lot::Mutex;
use time::OffsetDateTime;

use super::{Clock, MonoTime, Sleep, Spawn};

/// A clock that moves only when told to, with timers and a task queue that follow it.
///
/// Cloning gives another handle to the same clock. Monotonic time starts at zero; wall time
/// starts at 2026-01-01T00:00:00Z and follows monotonic time, except that
/// [`ManualClock::jump_wall`] can step it (an NTP step or a suspend) without moving
/// monotonic time.
///
/// ```
/// use keepfresh::runtime::{Clock, ManualClock, MonoTime, Sleep};
/// use futures::FutureExt;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let mut timer = clock.sleep_until(MonoTime::from_duration(Duration::from_secs(5)));
/// clock.advance(Duration::from_secs(4));
/// assert!((&mut timer).now_or_never().is_none());
/// clock.advance(Duration::from_secs(1));
/// assert!(timer.now_or_never().is_some());
///
/// let before = clock.wall();
/// clock.jump_wall(time::Duration::hours(-1));
/// assert_eq!(clock.wall(), before - time::Duration::hours(1));
/// assert_eq!(clock.monotonic().as_duration(), Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    shared: Arc<Shared>,
}

struct Shared {
    now: AtomicU64,
    wall_offset: Mutex<time::Duration>,
    timers: Mutex<BTreeMap<(MonoTime, u64), Waker>>,
    next_timer: AtomicU64,
    ready: Mutex<VecDeque<Arc<Task>>>,
}

struct Task {
    future: Mutex<Option<BoxFuture<'static, ()>>>,
    queued: AtomicBool,
    shared: std::sync::Weak<Shared>,
}

impl ArcWake for Task {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if !arc_self.queued.swap(true, Ordering::AcqRel)
            && let Some(shared) = arc_self.shared.upgrade()
        {
            shared.ready.lock().push_back(arc_self.clone());
        }
    }
}

/// The wall-clock time a new [`ManualClock`] starts at.
const WALL_EPOCH: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

impl ManualClock {
    /// A clock at monotonic zero and wall time 2026-01-01T00:00:00Z.
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// assert_eq!(ManualClock::new().now().as_nanos(), 0);
    /// ```
    pub fn new() -> Self {
        ManualClock {
            shared: Arc::new(Shared {
                now: AtomicU64::new(0),
                wall_offset: Mutex::new(time::Duration::ZERO),
                timers: Mutex::new(BTreeMap::new()),
                next_timer: AtomicU64::new(0),
                ready: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The current monotonic time.
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// # use std::time::Duration;
    /// let c = ManualClock::new();
    /// c.advance(Duration::from_millis(3));
    /// assert_eq!(c.now().as_duration(), Duration::from_millis(3));
    /// ```
    pub fn now(&self) -> MonoTime {
        MonoTime::from_nanos(self.shared.now.load(Ordering::Acquire))
    }

    /// The current wall-clock time.
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// assert_eq!(ManualClock::new().wall_now().year(), 2026);
    /// ```
    pub fn wall_now(&self) -> OffsetDateTime {
        let base = OffsetDateTime::from_unix_timestamp(WALL_EPOCH).expect("constant epoch");
        base + time::Duration::nanoseconds(self.now().as_nanos() as i64)
            + *self.shared.wall_offset.lock()
    }

    /// Steps the wall clock by `delta` (positive or negative) without moving monotonic time.
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// let c = ManualClock::new();
    /// let w = c.wall_now();
    /// c.jump_wall(time::Duration::minutes(5));
    /// assert_eq!(c.wall_now() - w, time::Duration::minutes(5));
    /// ```
    pub fn jump_wall(&self, delta: time::Duration) {
        *self.shared.wall_offset.lock() += delta;
    }

    /// Moves time forward by `d`, firing every timer that falls due on the way (in deadline
    /// order, running spawned tasks in between) and then running tasks until none is ready.
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// # use std::time::Duration;
    /// let c = ManualClock::new();
    /// c.advance(Duration::from_secs(1));
    /// c.advance(Duration::from_secs(1));
    /// assert_eq!(c.now().as_duration(), Duration::from_secs(2));
    /// ```
    pub fn advance(&self, d: Duration) {
        let target = self.now().saturating_add(d);
        loop {
            self.run_until_stalled();
            let next = {
                let timers = self.shared.timers.lock();
                timers.keys().next().map(|(t, _)| *t)
            };
            match next {
                Some(t) if t <= target => {
                    self.set_now(t.max(self.now()));
                    self.fire_due();
                }
                _ => break,
            }
        }
        self.set_now(target.max(self.now()));
        self.fire_due();
        self.run_until_stalled();
    }

    /// Moves time to the next pending timer (if any), fires it, and runs ready tasks. Returns
    /// whether a timer was pending.
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// let c = ManualClock::new();
    /// assert!(!c.advance_to_next_timer());
    /// ```
    pub fn advance_to_next_timer(&self) -> bool {
        self.run_until_stalled();
        let next = self.shared.timers.lock().keys().next().map(|(t, _)| *t);
        match next {
            Some(t) => {
                self.set_now(t.max(self.now()));
                self.fire_due();
                self.run_until_stalled();
                true
            }
            None => false,
        }
    }

    /// The number of timers still waiting.
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// assert_eq!(ManualClock::new().pending_timers(), 0);
    /// ```
    pub fn pending_timers(&self) -> usize {
        self.shared.timers.lock().len()
    }

    /// Polls tasks spawned on this clock's queue until none is ready. Tasks spawned through
    /// another spawner (tokio, say) are not affected.
    ///
    /// ```
    /// # use keepfresh::runtime::{ManualClock, Spawn};
    /// # use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// let c = ManualClock::new();
    /// let n = Arc::new(AtomicU32::new(0));
    /// let m = n.clone();
    /// c.spawner().spawn(Box::pin(async move { m.fetch_add(1, Ordering::SeqCst); }));
    /// c.run_until_stalled();
    /// assert_eq!(n.load(Ordering::SeqCst), 1);
    /// ```
    pub fn run_until_stalled(&self) {
        loop {
            let task = self.shared.ready.lock().pop_front();
            let Some(task) = task else { break };
            task.queued.store(false, Ordering::Release);
            let mut slot = task.future.lock();
            if let Some(fut) = slot.as_mut() {
                let waker = waker_ref(&task);
                let mut cx = Context::from_waker(&waker);
                if fut.as_mut().poll(&mut cx).is_ready() {
                    *slot = None;
                }
            }
        }
    }

    /// A [`Spawn`] that queues tasks on this clock, run by [`ManualClock::run_until_stalled`].
    ///
    /// ```
    /// # use keepfresh::runtime::ManualClock;
    /// let spawner = ManualClock::new().spawner();
    /// # let _ = spawner;
    /// ```
    pub fn spawner(&self) -> ManualSpawner {
        ManualSpawner {
            shared: Arc::downgrade(&self.shared),
        }
    }

    fn set_now(&self, t: MonoTime) {
        self.shared.now.store(t.as_nanos(), Ordering::Release);
    }

    fn fire_due(&self) {
        let now = self.now();
        let due: Vec<Waker> = {
            let mut timers = self.shared.timers.lock();
            let later = timers.split_off(&(now.saturating_add(Duration::from_nanos(1)), 0));
            std::mem::replace(&mut *timers, later)
                .into_values()
                .collect()
        };
        for w in due {
            w.wake();
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .field("pending_timers", &self.pending_timers())
            .finish()
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> MonoTime {
        self.now()
    }
    fn wall(&self) -> OffsetDateTime {
        self.wall_now()
    }
}

impl Sleep for ManualClock {
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        let shared = self.shared.clone();
        let id = shared.next_timer.fetch_add(1, Ordering::Relaxed);
        Box::pin(ManualSleep {
            shared,
            key: (deadline, id),
        })
    }
}

struct ManualSleep {
    shared: Arc<Shared>,
    key: (MonoTime, u64),
}

impl std::future::Future for ManualSleep {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = MonoTime::from_nanos(self.shared.now.load(Ordering::Acquire));
        // Wakers are cloned and dropped outside the lock: a waker may run arbitrary code (a
        // loom waker is a scheduling point), which must never happen while the lock is held.
        let (ready, replaced) = if now >= self.key.0 {
            (true, self.shared.timers.lock().remove(&self.key))
        } else {
            let waker = cx.waker().clone();
            (false, self.shared.timers.lock().insert(self.key, waker))
        };
        drop(replaced);
        if ready {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        let removed = self.shared.timers.lock().remove(&self.key);
        drop(removed);
    }
}

/// Spawner of a [`ManualClock`]; see [`ManualClock::spawner`].
#[derive(Clone, Debug)]
pub struct ManualSpawner {
    shared: std::sync::Weak<Shared>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ManualClock")
    }
}

impl Spawn for ManualSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        let task = Arc::new(Task {
            future: Mutex::new(Some(task)),
            queued: AtomicBool::new(false),
            shared: self.shared.clone(),
        });
        ArcWake::wake(task);
    }
}

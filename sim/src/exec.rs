//! A deterministic single-threaded executor with virtual time, so the real engine runs on
//! simulated clocks and one seed fixes every interleaving.
//!
//! Discrete-event: when no task is ready, time jumps to the earliest pending timer. Ready tasks
//! run in an order drawn from the seed, so different seeds explore different interleavings and
//! the same seed replays the same one. The engine sees only its runtime traits ([`Clock`],
//! [`Sleep`], [`Spawn`]): [`ExecHandle::runtime`] builds a [`Runtime`] for one simulated process,
//! whose tasks carry the process's group so that a crash kills all of them at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::task::{waker_ref, ArcWake};
use keepfresh::runtime::{Clock, MonoTime, Runtime, Sleep, Spawn};
use parking_lot::Mutex;
use time::OffsetDateTime;

use crate::rng::SimRng;

/// Wall-clock time at monotonic zero: 2026-01-01T00:00:00Z.
pub const WALL_EPOCH_UNIX: i64 = 1_767_225_600;

/// A group of tasks that live and die together (one simulated process, or the world itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group(pub u32);

impl Group {
    /// The world's own tasks (director, oracles); never killed.
    pub const WORLD: Group = Group(0);
}

/// Why [`Executor::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Nothing ready and no timer pending.
    Idle,
    /// The next timer lies beyond the horizon; time stopped at the horizon.
    Horizon,
    /// The step cap was reached.
    StepCap,
}

/// Counters of what the executor did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Task polls.
    pub polls: u64,
    /// Timers fired.
    pub timer_fires: u64,
    /// Tasks spawned.
    pub spawns: u64,
}

impl ExecStats {
    /// Discrete events processed: task polls plus timer firings.
    pub fn events(&self) -> u64 {
        self.polls + self.timer_fires
    }
}

/// The deterministic executor. Dropping it drops every task still alive.
pub struct Executor {
    shared: Arc<Shared>,
}

// Every structure sits behind an uncontended lock (the executor runs on one thread; the
// runtime traits only require `Send + Sync`). Hot-path costs per event: one timer-heap entry
// of plain integers (no allocation per sleep: timer slots live in a slab and are reused), one
// ready-queue push, one task poll.
struct Shared {
    now: AtomicU64,
    ready: Arc<ReadyQueue>,
    tasks: Mutex<Tasks>,
    timers: Mutex<Timers>,
    rng: Mutex<SimRng>,
    polls: AtomicU64,
    timer_fires: AtomicU64,
    spawns: AtomicU64,
}

/// Tasks woken and not yet polled, as `(slot, generation)`. Wakers hold this queue, not the
/// executor, so a waker that outlives the executor keeps nothing else alive.
type ReadyQueue = Mutex<Vec<(usize, u32)>>;

struct Tasks {
    slots: Vec<Slot>,
    free: Vec<usize>,
    dead: Vec<bool>,
}

impl Tasks {
    fn is_dead(&self, group: Group) -> bool {
        self.dead.get(group.0 as usize).copied().unwrap_or(false)
    }
}

struct Slot {
    fut: Option<BoxFuture<'static, ()>>,
    waker: Option<Arc<TaskWaker>>,
    group: Group,
    gen: u32,
    live: bool,
}

struct TaskWaker {
    id: usize,
    gen: u32,
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        if !arc_self.queued.swap(true, Ordering::AcqRel) {
            arc_self.ready.lock().push((arc_self.id, arc_self.gen));
        }
    }
}

/// Pending timers: a heap of `(deadline, registration order, slot, slot generation)` over a
/// slab of slots holding the wakers. A cancelled or completed timer frees its slot (bumping the
/// generation); its heap entry is then stale and skipped when it reaches the top.
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(u64, u64, u32, u32)>>,
    slots: Vec<TimerSlot>,
    free: Vec<u32>,
    seq: u64,
}

#[derive(Default)]
struct TimerSlot {
    gen: u32,
    waker: Option<Waker>,
}

impl Timers {
    fn register(&mut self, at: u64, waker: Waker) -> (u32, u32) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(TimerSlot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[idx as usize];
        slot.waker = Some(waker);
        let gen = slot.gen;
        let seq = self.seq;
        self.seq += 1;
        self.heap.push(Reverse((at, seq, idx, gen)));
        (idx, gen)
    }

    /// Frees slot `idx` if it still belongs to generation `gen`; returns its waker.
    fn release(&mut self, idx: u32, gen: u32) -> Option<Waker> {
        let slot = &mut self.slots[idx as usize];
        if slot.gen != gen {
            return None;
        }
        slot.gen = slot.gen.wrapping_add(1);
        self.free.push(idx);
        slot.waker.take()
    }

    fn is_live(&self, idx: u32, gen: u32) -> bool {
        self.slots[idx as usize].gen == gen
    }
}

impl Executor {
    /// An executor at monotonic zero whose scheduling order is drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Executor {
            shared: Arc::new(Shared {
                now: AtomicU64::new(0),
                ready: Arc::new(Mutex::new(Vec::new())),
                tasks: Mutex::new(Tasks {
                    slots: Vec::new(),
                    free: Vec::new(),
                    dead: vec![false],
                }),
                timers: Mutex::new(Timers::default()),
                rng: Mutex::new(SimRng::new(seed)),
                polls: AtomicU64::new(0),
                timer_fires: AtomicU64::new(0),
                spawns: AtomicU64::new(0),
            }),
        }
    }

    /// A cheap handle for spawning, sleeping and reading time from inside tasks.
    pub fn handle(&self) -> ExecHandle {
        ExecHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until idle, until time would pass `horizon`, or until `max_steps` events.
    pub fn run(&self, horizon: MonoTime, max_steps: u64) -> RunEnd {
        let s = &self.shared;
        let start = s.polls.load(Ordering::Relaxed) + s.timer_fires.load(Ordering::Relaxed);
        let mut rng = s.rng.lock();
        loop {
            let steps =
                s.polls.load(Ordering::Relaxed) + s.timer_fires.load(Ordering::Relaxed) - start;
            if steps >= max_steps {
                return RunEnd::StepCap;
            }
            let next = {
                let mut ready = s.ready.lock();
                if ready.is_empty() {
                    None
                } else {
                    let i = rng.below(ready.len());
                    Some(ready.swap_remove(i))
                }
            };
            if let Some((id, gen)) = next {
                self.poll_task(id, gen);
                continue;
            }
            match self.fire_next_timers(horizon) {
                Some(true) => {}
                Some(false) => return RunEnd::Horizon,
                None => return RunEnd::Idle,
            }
        }
    }

    /// Fires every live timer at the earliest pending deadline. `None` when no timer is
    /// pending; `Some(false)` when the earliest lies beyond `horizon` (time is then moved to it).
    fn fire_next_timers(&self, horizon: MonoTime) -> Option<bool> {
        let s = &self.shared;
        let mut first: Option<Waker> = None;
        let mut more: Vec<Waker> = Vec::new();
        let mut fired = 0u64;
        {
            let mut timers = s.timers.lock();
            let mut at = None;
            while let Some(&Reverse((t, _, idx, gen))) = timers.heap.peek() {
                if !timers.is_live(idx, gen) {
                    timers.heap.pop();
                    continue;
                }
                match at {
                    None => {
                        if t > horizon.as_nanos() {
                            let h = horizon.as_nanos().max(s.now.load(Ordering::Relaxed));
                            s.now.store(h, Ordering::Release);
                            return Some(false);
                        }
                        at = Some(t);
                    }
                    Some(a) if t != a => break,
                    Some(_) => {}
                }
                timers.heap.pop();
                if let Some(w) = timers.release(idx, gen) {
                    fired += 1;
                    if first.is_none() {
                        first = Some(w);
                    } else {
                        more.push(w);
                    }
                }
            }
            let at = at?;
            if at > s.now.load(Ordering::Relaxed) {
                s.now.store(at, Ordering::Release);
            }
        }
        s.timer_fires.fetch_add(fired, Ordering::Relaxed);
        if let Some(w) = first {
            w.wake();
        }
        for w in more {
            w.wake();
        }
        Some(true)
    }

    fn poll_task(&self, id: usize, gen: u32) {
        let s = &self.shared;
        let (mut fut, waker, group) = {
            let mut tasks = s.tasks.lock();
            let Some(slot) = tasks.slots.get_mut(id) else {
                return;
            };
            if slot.gen != gen || !slot.live {
                return;
            }
            let Some(fut) = slot.fut.take() else { return };
            let waker = slot.waker.clone().expect("live slot has a waker");
            (fut, waker, slot.group)
        };
        waker.queued.store(false, Ordering::Release);
        s.polls.fetch_add(1, Ordering::Relaxed);
        let done = {
            let w = waker_ref(&waker);
            let mut cx = Context::from_waker(&w);
            fut.as_mut().poll(&mut cx).is_ready()
        };
        let mut tasks = s.tasks.lock();
        if done || tasks.is_dead(group) {
            let slot = &mut tasks.slots[id];
            slot.live = false;
            slot.waker = None;
            tasks.free.push(id);
            drop(tasks);
            drop(fut);
        } else {
            tasks.slots[id].fut = Some(fut);
        }
    }

    /// The current monotonic time.
    pub fn now(&self) -> MonoTime {
        MonoTime::from_nanos(self.shared.now.load(Ordering::Acquire))
    }

    /// What the executor did so far.
    pub fn stats(&self) -> ExecStats {
        ExecStats {
            polls: self.shared.polls.load(Ordering::Relaxed),
            timer_fires: self.shared.timer_fires.load(Ordering::Relaxed),
            spawns: self.shared.spawns.load(Ordering::Relaxed),
        }
    }

    /// How many tasks are alive.
    pub fn live_tasks(&self) -> usize {
        let t = self.shared.tasks.lock();
        t.slots.len() - t.free.len()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Tasks hold runtime handles that point back here: break the cycle.
        let futs: Vec<_> = {
            let mut t = self.shared.tasks.lock();
            t.slots.iter_mut().filter_map(|s| s.fut.take()).collect()
        };
        drop(futs);
        let wakers: Vec<_> = {
            let mut t = self.shared.timers.lock();
            t.heap.clear();
            t.slots.iter_mut().filter_map(|s| s.waker.take()).collect()
        };
        drop(wakers);
        self.shared.ready.lock().clear();
    }
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("now", &self.now())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A handle on the executor for use inside tasks: spawn, sleep, read time, kill groups.
#[derive(Clone)]
pub struct ExecHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for ExecHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecHandle")
            .field("now", &self.now())
            .finish()
    }
}

impl ExecHandle {
    /// The current monotonic time.
    #[inline]
    pub fn now(&self) -> MonoTime {
        MonoTime::from_nanos(self.shared.now.load(Ordering::Acquire))
    }

    /// A new group (a simulated process) whose tasks can be killed together.
    pub fn new_group(&self) -> Group {
        let mut tasks = self.shared.tasks.lock();
        tasks.dead.push(false);
        Group((tasks.dead.len() - 1) as u32)
    }

    /// Spawns `fut` in `group`. Spawning into a dead group drops the task at once.
    pub fn spawn_in(&self, group: Group, fut: impl Future<Output = ()> + Send + 'static) {
        self.spawn_boxed(group, Box::pin(fut));
    }

    fn spawn_boxed(&self, group: Group, fut: BoxFuture<'static, ()>) {
        let s = &self.shared;
        let (id, gen) = {
            let mut tasks = s.tasks.lock();
            if tasks.is_dead(group) {
                drop(tasks);
                return;
            }
            s.spawns.fetch_add(1, Ordering::Relaxed);
            let id = match tasks.free.pop() {
                Some(id) => id,
                None => {
                    tasks.slots.push(Slot {
                        fut: None,
                        waker: None,
                        group,
                        gen: 0,
                        live: false,
                    });
                    tasks.slots.len() - 1
                }
            };
            let slot = &mut tasks.slots[id];
            slot.gen = slot.gen.wrapping_add(1);
            slot.group = group;
            slot.live = true;
            slot.fut = Some(fut);
            slot.waker = Some(Arc::new(TaskWaker {
                id,
                gen: slot.gen,
                queued: AtomicBool::new(true),
                ready: s.ready.clone(),
            }));
            (id, slot.gen)
        };
        s.ready.lock().push((id, gen));
    }

    /// Kills every task of `group` (a process crash): their futures are dropped without being
    /// polled again, and later spawns into the group are ignored.
    pub fn kill(&self, group: Group) {
        let s = &self.shared;
        let futs: Vec<_> = {
            let mut tasks = s.tasks.lock();
            if let Some(d) = tasks.dead.get_mut(group.0 as usize) {
                *d = true;
            }
            let mut out = Vec::new();
            let mut freed = Vec::new();
            for (id, slot) in tasks.slots.iter_mut().enumerate() {
                if slot.live && slot.group == group {
                    if let Some(f) = slot.fut.take() {
                        out.push(f);
                        slot.live = false;
                        slot.waker = None;
                        freed.push(id);
                    }
                }
            }
            tasks.free.extend(freed);
            out
        };
        drop(futs);
    }

    /// A future that completes at `deadline`.
    pub fn sleep_until(&self, deadline: MonoTime) -> SimSleep {
        SimSleep {
            shared: self.shared.clone(),
            deadline: deadline.as_nanos(),
            slot: None,
        }
    }

    /// A future that completes after `d`.
    pub fn sleep(&self, d: Duration) -> SimSleep {
        self.sleep_until(self.now().saturating_add(d))
    }

    /// A [`Runtime`] for one simulated process: its tasks belong to `group`, and its wall clock
    /// is offset by `wall_offset` (nanoseconds, shared so that the world can step it).
    pub fn runtime(&self, group: Group, wall_offset: Arc<AtomicI64>) -> Runtime {
        let clock = Arc::new(SimClock {
            shared: self.shared.clone(),
            wall_offset,
        });
        Runtime::new(
            clock,
            Arc::new(SimTimer {
                shared: self.shared.clone(),
            }),
            Arc::new(SimSpawner {
                handle: self.clone(),
                group,
            }),
        )
    }

    /// A clock following this executor, with the given wall-clock offset.
    pub fn clock(&self, wall_offset: Arc<AtomicI64>) -> SimClock {
        SimClock {
            shared: self.shared.clone(),
            wall_offset,
        }
    }

    /// The true wall-clock time (no offset).
    pub fn true_wall(&self) -> OffsetDateTime {
        wall_at(self.now(), 0)
    }
}

/// Wall-clock time at monotonic `now` for a clock offset by `offset_nanos`.
pub fn wall_at(now: MonoTime, offset_nanos: i64) -> OffsetDateTime {
    let base = OffsetDateTime::from_unix_timestamp(WALL_EPOCH_UNIX).expect("constant epoch");
    base + time::Duration::nanoseconds(now.as_nanos() as i64 + offset_nanos)
}

/// A timer future of the executor.
pub struct SimSleep {
    shared: Arc<Shared>,
    deadline: u64,
    /// Timer slot and generation once registered.
    slot: Option<(u32, u32)>,
}

impl fmt::Debug for SimSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimSleep")
            .field("deadline", &MonoTime::from_nanos(self.deadline))
            .finish()
    }
}

impl Future for SimSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.now.load(Ordering::Acquire) >= self.deadline {
            if let Some((idx, gen)) = self.slot.take() {
                let w = self.shared.timers.lock().release(idx, gen);
                drop(w);
            }
            return Poll::Ready(());
        }
        match self.slot {
            Some((idx, gen)) => {
                let mut timers = self.shared.timers.lock();
                let slot = &mut timers.slots[idx as usize];
                let old = match &slot.waker {
                    _ if slot.gen != gen => None,
                    Some(old) if old.will_wake(cx.waker()) => None,
                    _ => slot.waker.replace(cx.waker().clone()),
                };
                drop(timers);
                // Dropped outside the lock: a waker's drop may run arbitrary code.
                drop(old);
            }
            None => {
                let waker = cx.waker().clone();
                let reg = self.shared.timers.lock().register(self.deadline, waker);
                self.slot = Some(reg);
            }
        }
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some((idx, gen)) = self.slot.take() {
            // A cancelled timer no longer counts as scheduled work (deadlock detection).
            let w = self.shared.timers.lock().release(idx, gen);
            drop(w);
        }
    }
}

/// The engine's [`Clock`] on virtual time, with a per-process wall-clock offset.
#[derive(Clone)]
pub struct SimClock {
    shared: Arc<Shared>,
    wall_offset: Arc<AtomicI64>,
}

impl fmt::Debug for SimClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimClock")
            .field("offset_ns", &self.wall_offset.load(Ordering::Relaxed))
            .finish()
    }
}

impl Clock for SimClock {
    #[inline]
    fn monotonic(&self) -> MonoTime {
        MonoTime::from_nanos(self.shared.now.load(Ordering::Acquire))
    }
    fn wall(&self) -> OffsetDateTime {
        wall_at(self.monotonic(), self.wall_offset.load(Ordering::Relaxed))
    }
}

struct SimTimer {
    shared: Arc<Shared>,
}

impl Sleep for SimTimer {
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        Box::pin(SimSleep {
            shared: self.shared.clone(),
            deadline: deadline.as_nanos(),
            slot: None,
        })
    }
}

struct SimSpawner {
    handle: ExecHandle,
    group: Group,
}

impl Spawn for SimSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.handle.spawn_boxed(self.group, task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_jumps_to_the_next_timer_and_order_follows_the_seed() {
        fn order(seed: u64) -> Vec<u32> {
            let ex = Executor::new(seed);
            let h = ex.handle();
            let log = Arc::new(Mutex::new(Vec::new()));
            for i in 0..8u32 {
                let (h2, log) = (h.clone(), log.clone());
                h.spawn_in(Group::WORLD, async move {
                    h2.sleep(Duration::from_secs(10)).await;
                    log.lock().push(i);
                });
            }
            assert_eq!(ex.run(MonoTime::MAX, 1_000), RunEnd::Idle);
            assert_eq!(ex.now(), MonoTime::from_duration(Duration::from_secs(10)));
            let v = log.lock().clone();
            v
        }
        assert_eq!(order(1), order(1));
        assert!((2..20).any(|s| order(s) != order(1)));
    }

    #[test]
    fn killed_groups_stop_and_cancelled_timers_do_not_count() {
        let ex = Executor::new(3);
        let h = ex.handle();
        let g = h.new_group();
        let hit = Arc::new(AtomicBool::new(false));
        let (h2, hit2) = (h.clone(), hit.clone());
        h.spawn_in(g, async move {
            h2.sleep(Duration::from_secs(5)).await;
            hit2.store(true, Ordering::SeqCst);
        });
        let one = MonoTime::from_duration(Duration::from_secs(1));
        assert_eq!(ex.run(one, 100), RunEnd::Horizon);
        h.kill(g);
        assert_eq!(ex.run(MonoTime::MAX, 100), RunEnd::Idle);
        assert!(!hit.load(Ordering::SeqCst));
        assert_eq!(ex.now(), one);
        assert_eq!(ex.live_tasks(), 0);
    }
}

//! A deterministic single-threaded executor with virtual time, so the real engine runs on
//! simulated clocks and one seed fixes every interleaving.
//!
//! Discrete-event: when no task is ready, time jumps to the earliest pending timer. Ready tasks
//! run in an order drawn from the seed, so different seeds explore different interleavings and
//! the same seed replays the same one. The engine sees only its runtime traits ([`Clock`],
//! [`Sleep`], [`Spawn`]): [`ExecHandle::runtime`] builds a [`Runtime`] for one simulated process,
//! whose tasks carry the process's group so that a crash kills all of them at once.

use std::cell::RefCell;
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
    shared: CoreRef,
}

/// The executor's state: ready queue, tasks, timers, scheduling generator and counters.
///
/// A world runs on one thread, but the engine's runtime traits (and wakers) require
/// `Send + Sync`, which would put every structure behind an atomic lock: two locked
/// instructions per critical section, about a dozen sections per caller request. Instead the
/// state lives in a thread-local table (a `RefCell`, no atomics, no `unsafe`) and handles name
/// it by slot and identity: using a handle on another thread panics (or, for a wake, is
/// ignored — the simulation never wakes across threads), and re-entrant access panics where a
/// mutex would deadlock.
struct Core {
    id: u64,
    /// Virtual time, nanoseconds.
    now: u64,
    ready: Vec<(usize, u32)>,
    tasks: Tasks,
    timers: Timers,
    rng: SimRng,
    polls: u64,
    timer_fires: u64,
    spawns: u64,
}

thread_local! {
    static CORES: RefCell<Vec<Option<Core>>> = const { RefCell::new(Vec::new()) };
}

static NEXT_CORE_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone, Copy, Debug)]
struct CoreRef {
    slot: usize,
    id: u64,
}

impl CoreRef {
    fn create(seed: u64) -> CoreRef {
        let id = NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed);
        let core = Core {
            id,
            now: 0,
            ready: Vec::new(),
            tasks: Tasks {
                slots: Vec::new(),
                free: Vec::new(),
                dead: vec![false],
            },
            timers: Timers::default(),
            rng: SimRng::new(seed),
            polls: 0,
            timer_fires: 0,
            spawns: 0,
        };
        CORES.with(|c| {
            let mut c = c.borrow_mut();
            let slot = match c.iter().position(Option::is_none) {
                Some(i) => {
                    c[i] = Some(core);
                    i
                }
                None => {
                    c.push(Some(core));
                    c.len() - 1
                }
            };
            CoreRef { slot, id }
        })
    }

    /// Runs `f` on the executor's state, if it is alive on this thread.
    #[inline]
    fn try_with<R>(self, f: impl FnOnce(&mut Core) -> R) -> Option<R> {
        CORES
            .try_with(|c| {
                let mut c = c.borrow_mut();
                match c.get_mut(self.slot) {
                    Some(Some(core)) if core.id == self.id => Some(f(core)),
                    _ => None,
                }
            })
            .ok()
            .flatten()
    }

    /// Runs `f` on the executor's state.
    ///
    /// # Panics
    /// On another thread than the executor's, or after the executor was dropped.
    #[inline]
    fn with<R>(self, f: impl FnOnce(&mut Core) -> R) -> R {
        self.try_with(f).expect(
            "simulation executor used from another thread than the one that created it, or after it was dropped",
        )
    }

    /// The executor's virtual time.
    ///
    /// # Panics
    /// As [`CoreRef::with`].
    #[inline]
    fn now(self) -> u64 {
        self.with(|c| c.now)
    }

    fn remove(self) -> Option<Core> {
        CORES
            .try_with(|c| {
                let mut c = c.borrow_mut();
                match c.get_mut(self.slot) {
                    Some(slot) if slot.as_ref().is_some_and(|k| k.id == self.id) => slot.take(),
                    _ => None,
                }
            })
            .ok()
            .flatten()
    }
}

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
    /// Already in the ready queue (only touched on the executor's thread; an atomic for
    /// `Sync`, read and written with plain loads and stores).
    queued: AtomicBool,
    core: CoreRef,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.core.try_with(|c| {
            if !arc_self.queued.load(Ordering::Relaxed) {
                arc_self.queued.store(true, Ordering::Relaxed);
                c.ready.push((arc_self.id, arc_self.gen));
            }
        });
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

    /// Frees slot `idx` if it still belongs to generation `gen`; returns its waker (to be
    /// dropped or woken outside the executor's state).
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

enum Next {
    StepCap,
    Stale,
    Timers,
    Poll {
        id: usize,
        gen: u32,
        fut: BoxFuture<'static, ()>,
        waker: Arc<TaskWaker>,
        group: Group,
    },
}

impl Executor {
    /// An executor at monotonic zero whose scheduling order is drawn from `seed`. It and its
    /// handles must be used on the thread that created it.
    pub fn new(seed: u64) -> Self {
        Executor {
            shared: CoreRef::create(seed),
        }
    }

    /// A cheap handle for spawning, sleeping and reading time from inside tasks.
    pub fn handle(&self) -> ExecHandle {
        ExecHandle {
            shared: self.shared,
        }
    }

    /// Runs until idle, until time would pass `horizon`, or until `max_steps` events.
    pub fn run(&self, horizon: MonoTime, max_steps: u64) -> RunEnd {
        let core = self.shared;
        let start = core.with(|c| c.polls + c.timer_fires);
        loop {
            let next = core.with(|c| {
                if c.polls + c.timer_fires - start >= max_steps {
                    return Next::StepCap;
                }
                if c.ready.is_empty() {
                    return Next::Timers;
                }
                let i = c.rng.below(c.ready.len());
                let (id, gen) = c.ready.swap_remove(i);
                let Some(slot) = c.tasks.slots.get_mut(id) else {
                    return Next::Stale;
                };
                if slot.gen != gen || !slot.live {
                    return Next::Stale;
                }
                let Some(fut) = slot.fut.take() else {
                    return Next::Stale;
                };
                // Moved out and back rather than cloned: no reference counting per poll.
                let waker = slot.waker.take().expect("live slot has a waker");
                let group = slot.group;
                waker.queued.store(false, Ordering::Relaxed);
                c.polls += 1;
                Next::Poll {
                    id,
                    gen,
                    fut,
                    waker,
                    group,
                }
            });
            match next {
                Next::StepCap => return RunEnd::StepCap,
                Next::Stale => {}
                Next::Poll {
                    id,
                    gen,
                    mut fut,
                    waker,
                    group,
                } => {
                    let done = {
                        let w = waker_ref(&waker);
                        let mut cx = Context::from_waker(&w);
                        fut.as_mut().poll(&mut cx).is_ready()
                    };
                    let finished = core.with(move |c| {
                        let dead = c.tasks.is_dead(group);
                        let slot = &mut c.tasks.slots[id];
                        if done || dead {
                            if slot.gen == gen && slot.live {
                                slot.live = false;
                                c.tasks.free.push(id);
                            }
                            Some((fut, waker))
                        } else {
                            slot.fut = Some(fut);
                            slot.waker = Some(waker);
                            None
                        }
                    });
                    // A finished task's future is dropped outside the executor's state.
                    drop(finished);
                }
                Next::Timers => match self.fire_next_timers(horizon) {
                    Some(true) => {}
                    Some(false) => return RunEnd::Horizon,
                    None => return RunEnd::Idle,
                },
            }
        }
    }

    /// Fires every live timer at the earliest pending deadline. `None` when no timer is
    /// pending; `Some(false)` when the earliest lies beyond `horizon` (time is then moved to it).
    fn fire_next_timers(&self, horizon: MonoTime) -> Option<bool> {
        enum Fire {
            Idle,
            Horizon,
            Fired(Option<Waker>, Vec<Waker>),
        }
        let fire = self.shared.with(|c| {
            let mut first: Option<Waker> = None;
            let mut more: Vec<Waker> = Vec::new();
            let mut fired = 0u64;
            let timers = &mut c.timers;
            let mut at = None;
            while let Some(&Reverse((t, _, idx, gen))) = timers.heap.peek() {
                if !timers.is_live(idx, gen) {
                    timers.heap.pop();
                    continue;
                }
                match at {
                    None => {
                        if t > horizon.as_nanos() {
                            c.now = horizon.as_nanos().max(c.now);
                            return Fire::Horizon;
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
            let Some(at) = at else { return Fire::Idle };
            if at > c.now {
                c.now = at;
            }
            c.timer_fires += fired;
            Fire::Fired(first, more)
        });
        match fire {
            Fire::Idle => None,
            Fire::Horizon => Some(false),
            Fire::Fired(first, more) => {
                // Woken outside the executor's state: a wake re-enters it.
                if let Some(w) = first {
                    w.wake();
                }
                for w in more {
                    w.wake();
                }
                Some(true)
            }
        }
    }

    /// The current monotonic time.
    pub fn now(&self) -> MonoTime {
        MonoTime::from_nanos(self.shared.now())
    }

    /// What the executor did so far.
    pub fn stats(&self) -> ExecStats {
        self.shared.with(|c| ExecStats {
            polls: c.polls,
            timer_fires: c.timer_fires,
            spawns: c.spawns,
        })
    }

    /// How many tasks are alive.
    pub fn live_tasks(&self) -> usize {
        self.shared
            .with(|c| c.tasks.slots.len() - c.tasks.free.len())
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let core = self.shared;
        // Tasks hold runtime handles that point back here: break the cycle. Futures are
        // dropped outside the executor's state (their drops cancel timers, wake, spawn).
        loop {
            let futs: Vec<_> = core
                .try_with(|c| {
                    c.tasks
                        .slots
                        .iter_mut()
                        .filter_map(|s| s.fut.take())
                        .collect()
                })
                .unwrap_or_default();
            if futs.is_empty() {
                break;
            }
            drop(futs);
        }
        let wakers: Vec<_> = core
            .try_with(|c| {
                c.timers.heap.clear();
                c.timers
                    .slots
                    .iter_mut()
                    .filter_map(|s| s.waker.take())
                    .collect()
            })
            .unwrap_or_default();
        drop(wakers);
        let rest = core.remove();
        drop(rest);
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
    shared: CoreRef,
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
        MonoTime::from_nanos(self.shared.now())
    }

    /// A new group (a simulated process) whose tasks can be killed together.
    pub fn new_group(&self) -> Group {
        self.shared.with(|c| {
            c.tasks.dead.push(false);
            Group((c.tasks.dead.len() - 1) as u32)
        })
    }

    /// Spawns `fut` in `group`. Spawning into a dead group drops the task at once.
    pub fn spawn_in(&self, group: Group, fut: impl Future<Output = ()> + Send + 'static) {
        self.spawn_boxed(group, Box::pin(fut));
    }

    fn spawn_boxed(&self, group: Group, fut: BoxFuture<'static, ()>) {
        let core = self.shared;
        let refused = core.with(move |c| {
            if c.tasks.is_dead(group) {
                return Some(fut);
            }
            c.spawns += 1;
            let tasks = &mut c.tasks;
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
                core,
            }));
            let gen = slot.gen;
            c.ready.push((id, gen));
            None
        });
        // Dropped outside the executor's state.
        drop(refused);
    }

    /// Kills every task of `group` (a process crash): their futures are dropped without being
    /// polled again, and later spawns into the group are ignored.
    pub fn kill(&self, group: Group) {
        let futs: Vec<_> = self.shared.with(|c| {
            let tasks = &mut c.tasks;
            if let Some(d) = tasks.dead.get_mut(group.0 as usize) {
                *d = true;
            }
            let mut out = Vec::new();
            let mut freed = Vec::new();
            for (id, slot) in tasks.slots.iter_mut().enumerate() {
                if slot.live && slot.group == group {
                    if let Some(f) = slot.fut.take() {
                        out.push((f, slot.waker.take()));
                        slot.live = false;
                        freed.push(id);
                    }
                }
            }
            tasks.free.extend(freed);
            out
        });
        drop(futs);
    }

    /// A future that completes at `deadline`.
    pub fn sleep_until(&self, deadline: MonoTime) -> SimSleep {
        SimSleep {
            shared: self.shared,
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
            shared: self.shared,
            wall_offset,
        });
        Runtime::new(
            clock,
            Arc::new(SimTimer {
                shared: self.shared,
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
            shared: self.shared,
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
    shared: CoreRef,
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
        if self.shared.now() >= self.deadline {
            if let Some((idx, gen)) = self.slot.take() {
                let w = self.shared.try_with(|c| c.timers.release(idx, gen));
                drop(w);
            }
            return Poll::Ready(());
        }
        match self.slot {
            Some((idx, gen)) => {
                let old = self.shared.with(|c| {
                    let slot = &mut c.timers.slots[idx as usize];
                    match &slot.waker {
                        _ if slot.gen != gen => None,
                        Some(old) if old.will_wake(cx.waker()) => None,
                        _ => slot.waker.replace(cx.waker().clone()),
                    }
                });
                // Dropped outside the executor's state: a waker's drop may run arbitrary code.
                drop(old);
            }
            None => {
                let waker = cx.waker().clone();
                let deadline = self.deadline;
                let reg = self.shared.with(|c| c.timers.register(deadline, waker));
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
            let w = self.shared.try_with(|c| c.timers.release(idx, gen));
            drop(w);
        }
    }
}

/// Where the engine's monotonic clock reads when virtual time is zero: like the system clock's
/// (`keepfresh::runtime::SystemClock`), far enough from zero that tokens issued before the run
/// started (aged logins, restored stores) keep their true issue time on the engine's clock.
pub const ENGINE_CLOCK_OFFSET: Duration = Duration::from_secs(1_000 * 86_400);

/// The engine's [`Clock`] on virtual time, with a per-process wall-clock offset. Its monotonic
/// readings are virtual time plus [`ENGINE_CLOCK_OFFSET`].
#[derive(Clone)]
pub struct SimClock {
    shared: CoreRef,
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
        MonoTime::from_nanos(self.shared.now()).saturating_add(ENGINE_CLOCK_OFFSET)
    }
    fn wall(&self) -> OffsetDateTime {
        wall_at(
            MonoTime::from_nanos(self.shared.now()),
            self.wall_offset.load(Ordering::Relaxed),
        )
    }
}

struct SimTimer {
    shared: CoreRef,
}

impl Sleep for SimTimer {
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        Box::pin(SimSleep {
            shared: self.shared,
            deadline: deadline.saturating_sub(ENGINE_CLOCK_OFFSET).as_nanos(),
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
    use parking_lot::Mutex;

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

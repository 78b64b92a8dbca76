//! A deterministic single-threaded executor with virtual time, so the real engine runs on
//! simulated clocks and one seed fixes every interleaving.
//!
//! Discrete-event: when no task is ready, time jumps to the earliest pending timer. Ready tasks
//! run in an order drawn from the seed, so different seeds explore different interleavings and
//! the same seed replays the same one. The engine sees only its runtime traits ([`Clock`],
//! [`Sleep`], [`Spawn`]): [`ExecHandle::runtime`] builds a [`Runtime`] for one simulated process,
//! whose tasks carry the process's group so that a crash kills all of them at once, and a
//! suspend of its host freezes all of them at once ([`ExecHandle::freeze`]) while its
//! [`HostClock`] stops. A task of a process that dies of an [`InjectedPanic`] is dropped, as a
//! host's runtime drops a task that panicked; any other panic ends the run.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Once};
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
    /// Process tasks dropped because they died of an [`InjectedPanic`].
    pub injected_panics: u64,
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
    injected_panics: u64,
    /// Ready tasks of frozen groups, put back in the ready queue when their group thaws.
    parked: Vec<(usize, u32, Group)>,
    /// The task being polled: its slot, generation and the address of its waker's data, so
    /// a timer registered with that waker is kept as [`TimerWake::Task`]. `None` between polls.
    polling: Option<(usize, u32, usize)>,
}

thread_local! {
    static CORES: RefCell<Vec<Option<Core>>> = const { RefCell::new(Vec::new()) };
    /// `(core id, virtual time)` of the executor that last moved its clock on this thread: reading
    /// the time (the engine's clock reads it several times per caller request) is then one
    /// thread-local load and a comparison, not a visit to the executor's state. Every change of
    /// an executor's time writes it here ([`Core::set_now`]), so when the id matches, the time is
    /// current; ids are never reused, and a dropped executor's entry is cleared.
    static NOW: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
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
                frozen: vec![false],
                any_frozen: 0,
            },
            timers: Timers::default(),
            rng: SimRng::new(seed),
            polls: 0,
            timer_fires: 0,
            spawns: 0,
            injected_panics: 0,
            parked: Vec::new(),
            polling: None,
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
        let (id, now) = NOW.with(Cell::get);
        if id == self.id {
            return now;
        }
        let now = self.with(|c| c.now);
        NOW.with(|n| n.set((self.id, now)));
        now
    }

    fn remove(self) -> Option<Core> {
        NOW.with(|n| {
            if n.get().0 == self.id {
                n.set((0, 0));
            }
        });
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
    frozen: Vec<bool>,
    /// How many groups are frozen (the common case, none, costs one comparison per poll).
    any_frozen: usize,
}

impl Tasks {
    fn is_dead(&self, group: Group) -> bool {
        self.dead.get(group.0 as usize).copied().unwrap_or(false)
    }

    #[inline]
    fn is_frozen(&self, group: Group) -> bool {
        self.any_frozen > 0 && self.frozen.get(group.0 as usize).copied().unwrap_or(false)
    }
}

struct Slot {
    fut: Option<BoxFuture<'static, ()>>,
    waker: Option<Arc<TaskWaker>>,
    group: Group,
    generation: u32,
    live: bool,
    /// The live task is in the ready queue (or parked): woken once until polled. Kept here,
    /// beside what a wake reads anyway, rather than behind the waker's pointer; a task's
    /// [`TaskWaker::queued`] takes it over when the task ends ([`Slot::retire`]).
    queued: bool,
}

impl Slot {
    /// Ends the live task of this slot: from now on its waker's own flag says whether it
    /// is queued.
    fn retire(&mut self, waker: Option<&Arc<TaskWaker>>) {
        self.live = false;
        if let Some(w) = waker.or(self.waker.as_ref()) {
            w.queued.store(self.queued, Ordering::Relaxed);
        }
    }
}

struct TaskWaker {
    id: usize,
    generation: u32,
    /// Once its task has ended: already in the ready queue (only touched on the executor's
    /// thread; an atomic for `Sync`, read and written with plain loads and stores). While
    /// the task lives, [`Slot::queued`] says it.
    queued: AtomicBool,
    core: CoreRef,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.core.try_with(|c| {
            Core::wake_task(
                &mut c.tasks,
                &mut c.ready,
                arc_self.id,
                arc_self.generation,
                Some(&arc_self.queued),
            );
        });
    }
}

/// Pending timers: a min-heap of packed `(deadline, registration order, slot)` keys over a slab
/// of slots holding the wakers. Each slot remembers the registration order of the timer it
/// holds; a cancelled or completed timer frees its slot, and its heap entry, whose order the
/// slot no longer holds, is then stale and skipped when it reaches the top.
///
/// A key is one `u128`: the deadline in the high 64 bits, then the registration order
/// ([`SEQ_BITS`] bits), then the slot ([`IDX_BITS`] bits). Registration orders are unique, so
/// comparing keys is comparing `(deadline, registration order)`, the timers' firing order; a
/// 16-byte key with a two-word comparison keeps the heap's sifting cheap.
#[derive(Default)]
struct Timers {
    heap: MinHeap4<u128>,
    slots: Vec<TimerSlot>,
    free: Vec<u32>,
    seq: u64,
}

/// A min-heap of distinct keys with four children per node: half the depth of a binary heap,
/// and a node's children share a cache line, so a pop (every timer event, every caller
/// request) walks half as many dependent loads. Keys are distinct, so the order in which they
/// come out is the same as any other priority queue's.
#[derive(Debug)]
pub(crate) struct MinHeap4<K> {
    v: Vec<K>,
}

impl<K> Default for MinHeap4<K> {
    fn default() -> Self {
        MinHeap4 { v: Vec::new() }
    }
}

impl<K: Copy + Ord> MinHeap4<K> {
    /// An empty heap with room for `n` keys.
    pub(crate) fn with_capacity(n: usize) -> Self {
        MinHeap4 {
            v: Vec::with_capacity(n),
        }
    }

    /// The least key.
    #[inline]
    pub(crate) fn peek(&self) -> Option<K> {
        self.v.first().copied()
    }

    /// Adds `key` (distinct from every key held).
    pub(crate) fn push(&mut self, key: K) {
        let mut i = self.v.len();
        self.v.push(key);
        while i > 0 {
            let parent = (i - 1) / 4;
            let p = self.v[parent];
            if p <= key {
                break;
            }
            self.v[i] = p;
            i = parent;
        }
        self.v[i] = key;
    }

    /// Takes the least key out.
    pub(crate) fn pop(&mut self) -> Option<K> {
        let last = self.v.pop()?;
        if self.v.is_empty() {
            return Some(last);
        }
        let top = self.v[0];
        self.sift_down(last);
        Some(top)
    }

    /// Takes the least key out and adds `key` (distinct from every key held), in one pass
    /// down the heap: `pop` then `push`, without the `push`. `None` (and `key` is added) if
    /// the heap was empty.
    pub(crate) fn replace_top(&mut self, key: K) -> Option<K> {
        let Some(&top) = self.v.first() else {
            self.v.push(key);
            return None;
        };
        self.sift_down(key);
        Some(top)
    }

    /// Fills the root with `key`, moved down to its place (the root's key is overwritten).
    #[inline]
    fn sift_down(&mut self, key: K) {
        let n = self.v.len();
        let mut i = 0;
        loop {
            let first = 4 * i + 1;
            if first >= n {
                break;
            }
            let (m, mk) = if let Some(&[a, b, c, d]) = self.v.get(first..first + 4) {
                // A full node: the least child by a tournament of selects, not by branches
                // on random keys (mispredicted about every other level).
                let (x, xi) = if b < a { (b, 1) } else { (a, 0) };
                let (y, yi) = if d < c { (d, 3) } else { (c, 2) };
                if y < x {
                    (first + yi, y)
                } else {
                    (first + xi, x)
                }
            } else {
                let mut m = first;
                let mut mk = self.v[first];
                for c in first + 1..n {
                    let k = self.v[c];
                    if k < mk {
                        m = c;
                        mk = k;
                    }
                }
                (m, mk)
            };
            if mk >= key {
                break;
            }
            self.v[i] = mk;
            i = m;
        }
        self.v[i] = key;
    }

    fn clear(&mut self) {
        self.v.clear();
    }
}

/// Bits of a timer key for the slot: up to 16,777,216 timers pending at once.
const IDX_BITS: u32 = 24;
/// Bits of a timer key for the registration order: 2⁴⁰ (about 10¹²) timers per executor.
const SEQ_BITS: u32 = 64 - IDX_BITS;

/// A free timer slot's registration order.
const FREE: u64 = u64::MAX;

struct TimerSlot {
    /// Registration order of the timer held, or [`FREE`].
    seq: u64,
    wake: TimerWake,
}

/// What a timer wakes when it fires.
///
/// Nearly every timer is registered by a task's own future with the waker the executor
/// polls it with (a process's caller loop, the engine's refresh-ahead sleep). Such a timer
/// names the task by slot and generation and is woken inside the executor's state: no
/// waker clone and drop (two atomic reference-count updates) and no separate visit to the
/// state per fired timer. The task is woken exactly as its waker would wake it. Any other
/// waker (a combinator's, a waker from outside the executor) is kept as it is.
enum TimerWake {
    /// A free slot, or a timer already fired or cancelled.
    Empty,
    /// The task polled when the timer was registered, by slot and generation.
    Task(usize, u32),
    /// Any other waker.
    Waker(Waker),
}

impl TimerWake {
    fn take(&mut self) -> TimerWake {
        std::mem::replace(self, TimerWake::Empty)
    }
}

#[inline]
fn timer_key(at: u64, seq: u64, idx: u32) -> u128 {
    (u128::from(at) << 64) | u128::from(seq << IDX_BITS | u64::from(idx))
}

/// `(deadline, registration order, slot)` of a timer key.
#[inline]
fn timer_parts(key: u128) -> (u64, u64, u32) {
    let low = key as u64;
    (
        (key >> 64) as u64,
        low >> IDX_BITS,
        (low & ((1 << IDX_BITS) - 1)) as u32,
    )
}

impl Timers {
    /// Registers a timer at `at`: its slot and registration order.
    fn register(&mut self, at: u64, wake: TimerWake) -> (u32, u64) {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(TimerSlot {
                    seq: FREE,
                    wake: TimerWake::Empty,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let seq = self.seq;
        assert!(
            seq < 1 << SEQ_BITS && idx < 1 << IDX_BITS,
            "simulation executor: more than 2^{SEQ_BITS} timers, or 2^{IDX_BITS} at once"
        );
        self.seq += 1;
        let slot = &mut self.slots[idx as usize];
        slot.wake = wake;
        slot.seq = seq;
        self.heap.push(timer_key(at, seq, idx));
        (idx, seq)
    }

    /// Frees slot `idx` if it still holds the timer registered `seq`th; returns what it wakes
    /// (a [`TimerWake::Waker`] is to be dropped or woken outside the executor's state).
    fn release(&mut self, idx: u32, seq: u64) -> Option<TimerWake> {
        let slot = &mut self.slots[idx as usize];
        if slot.seq != seq {
            return None;
        }
        slot.seq = FREE;
        self.free.push(idx);
        Some(slot.wake.take())
    }

    fn is_live(&self, idx: u32, seq: u64) -> bool {
        self.slots[idx as usize].seq == seq
    }
}

enum Next {
    StepCap,
    Stale,
    /// A task found dead when it was to be put back: its future, to drop.
    Dead(BoxFuture<'static, ()>, Arc<TaskWaker>),
    /// Timers fired at the earliest deadline whose wakes must happen outside the executor's
    /// state, in this order (the ones before them were woken inside it).
    Fired(Vec<TimerWake>),
    Horizon,
    Idle,
    Poll {
        id: usize,
        generation: u32,
        fut: BoxFuture<'static, ()>,
        waker: Arc<TaskWaker>,
        group: Group,
    },
}

/// A task polled to `Pending`, to be put back into its slot at the next visit to the
/// executor's state (unless its group died meanwhile).
struct Carry {
    id: usize,
    generation: u32,
    fut: BoxFuture<'static, ()>,
    waker: Arc<TaskWaker>,
    group: Group,
}

impl Core {
    /// Moves virtual time to `now` (see [`NOW`]).
    #[inline]
    fn set_now(&mut self, now: u64) {
        self.now = now;
        NOW.with(|n| n.set((self.id, now)));
    }

    /// Puts a task polled to `Pending` back into its slot; its future and waker if its group
    /// died (the future is then to be dropped outside the executor's state).
    #[inline]
    fn put_back(&mut self, t: Carry) -> Option<(BoxFuture<'static, ()>, Arc<TaskWaker>)> {
        let dead = self.tasks.is_dead(t.group);
        let slot = &mut self.tasks.slots[t.id];
        if dead {
            if slot.generation == t.generation && slot.live {
                slot.retire(Some(&t.waker));
                self.tasks.free.push(t.id);
            }
            Some((t.fut, t.waker))
        } else {
            slot.fut = Some(t.fut);
            slot.waker = Some(t.waker);
            None
        }
    }

    /// The next step of [`Executor::run`]: the ready task to poll (drawn from the seed), or,
    /// with none ready, the timers at the earliest pending deadline (time moves to it; to
    /// `horizon` if that lies beyond). Timers that wake their own task are woken here and the
    /// step goes on to the pick, as the visit after their firing would.
    #[inline]
    fn next(&mut self, start: u64, max_steps: u64, horizon: MonoTime) -> Next {
        self.polling = None;
        loop {
            if self.polls + self.timer_fires - start >= max_steps {
                return Next::StepCap;
            }
            if !self.ready.is_empty() {
                return self.pick();
            }
            match self.fire_timers(horizon) {
                Next::Fired(outside) if outside.is_empty() => {}
                other => return other,
            }
        }
    }

    /// Takes a ready task to poll, drawn from the seed.
    #[inline]
    fn pick(&mut self) -> Next {
        let len = self.ready.len();
        // `below(1)` is always 0: the draw is still made (the generator moves on exactly as
        // before), without the 64-bit division.
        let i = if len == 1 {
            self.rng.next_u64();
            0
        } else {
            self.rng.below(len)
        };
        let (id, generation) = self.ready.swap_remove(i);
        let frozen = self.tasks.any_frozen > 0;
        let Some(slot) = self.tasks.slots.get_mut(id) else {
            return Next::Stale;
        };
        if slot.generation != generation || !slot.live {
            return Next::Stale;
        }
        if frozen && self.tasks.frozen.get(slot.group.0 as usize).copied() == Some(true) {
            // The host is suspended: the task runs when it resumes.
            self.parked.push((id, generation, slot.group));
            return Next::Stale;
        }
        let Some(fut) = slot.fut.take() else {
            return Next::Stale;
        };
        // Moved out and back rather than cloned: no reference counting per poll.
        let waker = slot.waker.take().expect("live slot has a waker");
        let group = slot.group;
        slot.queued = false;
        self.polls += 1;
        // The data of the waker `run` builds with `waker_ref` is the `TaskWaker` itself.
        self.polling = Some((id, generation, Arc::as_ptr(&waker) as usize));
        Next::Poll {
            id,
            generation,
            fut,
            waker,
            group,
        }
    }

    /// What a timer registered now with `waker` is to wake: the task being polled if `waker`
    /// is its own, else a clone of `waker`.
    #[inline]
    fn timer_wake(&self, waker: &Waker) -> TimerWake {
        match self.polling {
            Some((id, generation, data)) if waker.data() as usize == data => {
                TimerWake::Task(id, generation)
            }
            _ => TimerWake::Waker(waker.clone()),
        }
    }

    /// Wakes task `id` of `generation`: a live task is queued once until polled (its slot's
    /// flag). A task that ended is queued, to be skipped when drawn, unless its waker's own
    /// flag (`retired`, [`Slot::retire`]) says it already is; a timer, which has no waker,
    /// passes `None` and always queues it.
    #[inline]
    fn wake_task(
        tasks: &mut Tasks,
        ready: &mut Vec<(usize, u32)>,
        id: usize,
        generation: u32,
        retired: Option<&AtomicBool>,
    ) {
        if let Some(slot) = tasks.slots.get_mut(id)
            && slot.generation == generation
            && slot.live
        {
            if !slot.queued {
                slot.queued = true;
                ready.push((id, generation));
            }
            return;
        }
        if retired.is_some_and(|flag| flag.swap(true, Ordering::Relaxed)) {
            return;
        }
        ready.push((id, generation));
    }

    /// Takes every live timer at the earliest pending deadline. Timers that wake a task are
    /// woken here, in firing order, until the first that holds another waker; from that one
    /// on, they are returned to be woken in order outside the executor's state. `Idle` when
    /// no timer is pending; `Horizon` when the earliest lies beyond `horizon` (time is then
    /// moved to it).
    fn fire_timers(&mut self, horizon: MonoTime) -> Next {
        let mut outside: Vec<TimerWake> = Vec::new();
        let mut fired = 0u64;
        let timers = &mut self.timers;
        let mut at = None;
        while let Some(key) = timers.heap.peek() {
            let (t, seq, idx) = timer_parts(key);
            if !timers.is_live(idx, seq) {
                timers.heap.pop();
                continue;
            }
            match at {
                None => {
                    if t > horizon.as_nanos() {
                        self.set_now(horizon.as_nanos().max(self.now));
                        return Next::Horizon;
                    }
                    at = Some(t);
                }
                Some(a) if t != a => break,
                Some(_) => {}
            }
            timers.heap.pop();
            if let Some(wake) = timers.release(idx, seq) {
                fired += 1;
                match wake {
                    TimerWake::Task(id, generation) if outside.is_empty() => {
                        Self::wake_task(&mut self.tasks, &mut self.ready, id, generation, None);
                    }
                    TimerWake::Empty => {}
                    other => outside.push(other),
                }
            }
        }
        let Some(at) = at else { return Next::Idle };
        if at > self.now {
            self.set_now(at);
        }
        self.timer_fires += fired;
        Next::Fired(outside)
    }
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
        // A task polled to `Pending` goes back into its slot in the same visit to the
        // executor's state that picks the next step (nothing runs in between).
        let mut carry: Option<Carry> = None;
        loop {
            let next = core.with(|c| {
                if let Some(t) = carry.take()
                    && let Some((fut, waker)) = c.put_back(t)
                {
                    return Next::Dead(fut, waker);
                }
                c.next(start, max_steps, horizon)
            });
            match next {
                Next::StepCap => return RunEnd::StepCap,
                Next::Stale => {}
                // A dead task's future is dropped outside the executor's state, before the
                // next step is picked.
                Next::Dead(fut, waker) => drop((fut, waker)),
                Next::Poll {
                    id,
                    generation,
                    mut fut,
                    waker,
                    group,
                } => {
                    let done = {
                        let w = waker_ref(&waker);
                        debug_assert_eq!(w.data(), Arc::as_ptr(&waker).cast::<()>());
                        let mut cx = Context::from_waker(&w);
                        if group == Group::WORLD {
                            fut.as_mut().poll(&mut cx).is_ready()
                        } else {
                            match poll_catching_injected(fut.as_mut(), &mut cx) {
                                Some(p) => p.is_ready(),
                                None => {
                                    // Like a host runtime, drop the task that panicked and
                                    // keep the process's other tasks running.
                                    core.with(|c| {
                                        c.polling = None;
                                        c.injected_panics += 1;
                                    });
                                    true
                                }
                            }
                        }
                    };
                    if done {
                        core.with(|c| {
                            c.polling = None;
                            let slot = &mut c.tasks.slots[id];
                            if slot.generation == generation && slot.live {
                                slot.retire(Some(&waker));
                                c.tasks.free.push(id);
                            }
                        });
                        // A finished task's future is dropped outside the executor's state.
                        drop((fut, waker));
                    } else {
                        carry = Some(Carry {
                            id,
                            generation,
                            fut,
                            waker,
                            group,
                        });
                    }
                }
                Next::Fired(outside) => {
                    // Woken outside the executor's state: a wake re-enters it.
                    for wake in outside {
                        match wake {
                            TimerWake::Task(id, generation) => core.with(|c| {
                                Core::wake_task(&mut c.tasks, &mut c.ready, id, generation, None);
                            }),
                            TimerWake::Waker(w) => w.wake(),
                            TimerWake::Empty => {}
                        }
                    }
                }
                Next::Horizon => return RunEnd::Horizon,
                Next::Idle => return RunEnd::Idle,
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
            injected_panics: c.injected_panics,
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
                c.timers.slots.iter_mut().map(|s| s.wake.take()).collect()
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
            c.tasks.frozen.push(false);
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
                        generation: 0,
                        live: false,
                        queued: false,
                    });
                    tasks.slots.len() - 1
                }
            };
            let slot = &mut tasks.slots[id];
            slot.generation = slot.generation.wrapping_add(1);
            slot.group = group;
            slot.live = true;
            slot.queued = true;
            slot.fut = Some(fut);
            slot.waker = Some(Arc::new(TaskWaker {
                id,
                generation: slot.generation,
                queued: AtomicBool::new(true),
                core,
            }));
            let generation = slot.generation;
            c.ready.push((id, generation));
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
            c.parked.retain(|p| p.2 != group);
            let mut out = Vec::new();
            let mut freed = Vec::new();
            for (id, slot) in tasks.slots.iter_mut().enumerate() {
                if slot.live
                    && slot.group == group
                    && let Some(f) = slot.fut.take()
                {
                    slot.retire(None);
                    out.push((f, slot.waker.take()));
                    freed.push(id);
                }
            }
            tasks.free.extend(freed);
            out
        });
        drop(futs);
    }

    /// Freezes `group` (its host is suspended): none of its tasks is polled until
    /// [`ExecHandle::thaw`]; wakes and timers that fire meanwhile take effect then. Freezing a
    /// frozen group does nothing.
    pub fn freeze(&self, group: Group) {
        self.shared.with(|c| {
            if let Some(f) = c.tasks.frozen.get_mut(group.0 as usize)
                && !*f
            {
                *f = true;
                c.tasks.any_frozen += 1;
            }
        });
    }

    /// Lets a frozen group run again: its tasks that became ready meanwhile are queued.
    pub fn thaw(&self, group: Group) {
        self.shared.with(|c| {
            if let Some(f) = c.tasks.frozen.get_mut(group.0 as usize)
                && *f
            {
                *f = false;
                c.tasks.any_frozen -= 1;
            }
            let mut i = 0;
            while i < c.parked.len() {
                if c.parked[i].2 == group {
                    let (id, generation, _) = c.parked.remove(i);
                    c.ready.push((id, generation));
                } else {
                    i += 1;
                }
            }
        });
    }

    /// Whether `group` is frozen.
    pub fn is_frozen(&self, group: Group) -> bool {
        self.shared.with(|c| c.tasks.is_frozen(group))
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

    /// A future that completes when `host`'s monotonic clock reads `deadline`: a sleep that
    /// spans a suspend of the host ends that much later in virtual time.
    pub fn sleep_until_on<'a>(&self, host: &'a HostClock, deadline: MonoTime) -> HostSleep<'a> {
        HostSleep {
            inner: host_sleep_start(self.shared, host, deadline),
            deadline,
            host,
        }
    }

    /// A future that completes after `d` of `host`'s monotonic time.
    pub fn sleep_on<'a>(&self, host: &'a HostClock, d: Duration) -> HostSleep<'a> {
        self.sleep_until_on(host, host.mono_at(self.now()).saturating_add(d))
    }

    /// A [`Runtime`] for one simulated process: its tasks belong to `group`, its wall clock is
    /// offset by `wall_offset` (nanoseconds, shared so that the world can step it), and its
    /// monotonic clock and timers follow `host` (which stops while the host is suspended).
    pub fn runtime(
        &self,
        group: Group,
        wall_offset: Arc<AtomicI64>,
        host: Arc<HostClock>,
    ) -> Runtime {
        self.runtime_with(group, wall_offset, host, false)
    }

    /// Like [`ExecHandle::runtime`], for the models of other clients: they trust the process's
    /// monotonic clock alone (as `Instant`, Go's monotonic reading and `performance.now()` do),
    /// so the runtime is told the clock counts suspend and never corrects it with the wall
    /// clock. keepfresh's engine gets [`ExecHandle::runtime`].
    pub fn monotonic_only_runtime(
        &self,
        group: Group,
        wall_offset: Arc<AtomicI64>,
        host: Arc<HostClock>,
    ) -> Runtime {
        self.runtime_with(group, wall_offset, host, true)
    }

    fn runtime_with(
        &self,
        group: Group,
        wall_offset: Arc<AtomicI64>,
        host: Arc<HostClock>,
        trusted: bool,
    ) -> Runtime {
        let clock = Arc::new(SimClock {
            shared: self.shared,
            wall_offset,
            host: Some(host.clone()),
            trusted,
        });
        Runtime::new(
            clock,
            Arc::new(SimTimer {
                shared: self.shared,
                host,
            }),
            Arc::new(SimSpawner {
                handle: self.clone(),
                group,
            }),
        )
    }

    /// A clock following this executor, with the given wall-clock offset (and a monotonic clock
    /// that never stops: a store's or the network's, not a suspended host's).
    pub fn clock(&self, wall_offset: Arc<AtomicI64>) -> SimClock {
        SimClock {
            shared: self.shared,
            wall_offset,
            host: None,
            trusted: false,
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

/// A host's monotonic clock: virtual time minus the time the host spent suspended. Like
/// `CLOCK_MONOTONIC` on Linux and macOS during a laptop sleep, it stands still while the host is
/// suspended, so after a resume it reads less than virtual time by the suspended time.
///
/// Shared (like a process's wall-clock offset) by every instance of one simulated process, so a
/// restart keeps the host's clock.
#[derive(Debug)]
pub struct HostClock {
    /// Nanoseconds lost to finished suspends.
    lost: AtomicU64,
    /// Virtual time (ns) at which the current suspend began, or [`HostClock::RUNNING`].
    since: AtomicU64,
}

impl Default for HostClock {
    fn default() -> Self {
        HostClock::new()
    }
}

impl HostClock {
    const RUNNING: u64 = u64::MAX;

    /// A running host that was never suspended: its clock reads virtual time.
    pub fn new() -> Self {
        HostClock {
            lost: AtomicU64::new(0),
            since: AtomicU64::new(Self::RUNNING),
        }
    }

    /// The host's monotonic time at virtual time `now`.
    #[inline]
    pub fn mono_at(&self, now: MonoTime) -> MonoTime {
        let since = self.since.load(Ordering::Relaxed);
        let t = if since == Self::RUNNING {
            now.as_nanos()
        } else {
            since.min(now.as_nanos())
        };
        MonoTime::from_nanos(t.saturating_sub(self.lost.load(Ordering::Relaxed)))
    }

    /// The virtual time at which the host's clock reads `mono`, if the host runs from `now` on
    /// (a suspended host counts as resuming at `now`).
    #[inline]
    pub fn virtual_at(&self, mono: MonoTime, now: MonoTime) -> MonoTime {
        let since = self.since.load(Ordering::Relaxed);
        let ongoing = if since == Self::RUNNING {
            0
        } else {
            now.as_nanos().saturating_sub(since)
        };
        MonoTime::from_nanos(
            mono.as_nanos()
                .saturating_add(self.lost.load(Ordering::Relaxed))
                .saturating_add(ongoing),
        )
    }

    /// Suspends the host at virtual time `now`; `false` (and nothing changes) if it already is.
    pub fn suspend(&self, now: MonoTime) -> bool {
        if self.since.load(Ordering::Relaxed) != Self::RUNNING {
            return false;
        }
        self.since.store(now.as_nanos(), Ordering::Relaxed);
        true
    }

    /// Resumes the host at virtual time `now`; returns how long the suspend lasted (`None` if
    /// the host was running).
    pub fn resume(&self, now: MonoTime) -> Option<Duration> {
        let since = self.since.load(Ordering::Relaxed);
        if since == Self::RUNNING {
            return None;
        }
        let d = now.as_nanos().saturating_sub(since);
        self.lost.fetch_add(d, Ordering::Relaxed);
        self.since.store(Self::RUNNING, Ordering::Relaxed);
        Some(Duration::from_nanos(d))
    }

    /// Whether the host was ever suspended (its clock may lag virtual time).
    #[inline]
    pub fn ever_suspended(&self) -> bool {
        self.lost.load(Ordering::Relaxed) != 0
            || self.since.load(Ordering::Relaxed) != Self::RUNNING
    }

    /// When the current suspend began, if the host is suspended.
    pub fn suspended_since(&self) -> Option<MonoTime> {
        let since = self.since.load(Ordering::Relaxed);
        (since != Self::RUNNING).then(|| MonoTime::from_nanos(since))
    }

    /// Time the host's clock has lost to suspends by virtual time `now`.
    pub fn lost(&self, now: MonoTime) -> Duration {
        now.saturating_duration_since(self.mono_at(now))
    }
}

/// The payload of a panic the simulator injects into a process (a host's callback that panics).
/// The executor drops the task it unwinds, as a host's runtime drops a panicked task; a panic
/// with any other payload is a crash of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedPanic;

/// Polls `fut`, catching an [`InjectedPanic`]: `None` when the poll unwound with one. Any
/// other panic continues to unwind.
pub fn poll_catching_injected<F: Future + ?Sized>(
    fut: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Option<Poll<F::Output>> {
    match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
        Ok(p) => Some(p),
        Err(payload) if payload.is::<InjectedPanic>() => None,
        Err(payload) => resume_unwind(payload),
    }
}

/// Keeps injected panics out of the panic output (the process-wide hook is wrapped once; every
/// other panic is reported by the previous hook as before).
pub fn silence_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<InjectedPanic>() {
                previous(info);
            }
        }));
    });
}

/// A timer future of the executor, at a virtual time.
pub struct SimSleep {
    shared: CoreRef,
    deadline: u64,
    /// Timer slot and registration order once registered.
    slot: Option<(u32, u64)>,
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
        let this = &mut *self;
        let deadline = this.deadline;
        if this.shared.now() >= deadline {
            // Time only moves by firing every timer at the new time, and a timer is only
            // registered for a later time: a timer of this sleep has fired and freed its slot.
            if let Some((_idx, _seq)) = this.slot.take() {
                #[cfg(debug_assertions)]
                {
                    let live = this.shared.try_with(|c| c.timers.is_live(_idx, _seq));
                    debug_assert_ne!(live, Some(true), "a timer due was not fired");
                }
            }
            return Poll::Ready(());
        }
        let slot = &mut this.slot;
        // One visit to the executor's state to (re)register the timer.
        let old = this.shared.with(|c| match *slot {
            Some((idx, seq)) => {
                if c.timers.slots[idx as usize].seq != seq {
                    return None;
                }
                let same = match &c.timers.slots[idx as usize].wake {
                    TimerWake::Task(id, generation) => c.polling.is_some_and(|(i, g, data)| {
                        (i, g) == (*id, *generation) && cx.waker().data() as usize == data
                    }),
                    TimerWake::Waker(old) => old.will_wake(cx.waker()),
                    TimerWake::Empty => false,
                };
                if same {
                    return None;
                }
                let wake = c.timer_wake(cx.waker());
                Some(std::mem::replace(
                    &mut c.timers.slots[idx as usize].wake,
                    wake,
                ))
            }
            None => {
                let wake = c.timer_wake(cx.waker());
                *slot = Some(c.timers.register(deadline, wake));
                None
            }
        });
        // Dropped outside the executor's state: a waker's drop may run arbitrary code.
        drop(old);
        Poll::Pending
    }
}

impl Drop for SimSleep {
    fn drop(&mut self) {
        if let Some((idx, seq)) = self.slot.take() {
            // A cancelled timer no longer counts as scheduled work (deadlock detection).
            let w = self.shared.try_with(|c| c.timers.release(idx, seq));
            drop(w);
        }
    }
}

/// A sleep until `host`'s clock reads `deadline`: the virtual-time sleep `inner` (to the
/// deadline's virtual time when it was made), followed by more if a suspend of the host moved
/// the deadline meanwhile. A host never suspended costs no more than the virtual-time sleep.
fn poll_host_sleep(
    inner: &mut SimSleep,
    host: &HostClock,
    deadline: MonoTime,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        if Pin::new(&mut *inner).poll(cx).is_pending() {
            return Poll::Pending;
        }
        if !host.ever_suspended() {
            return Poll::Ready(());
        }
        let shared = inner.shared;
        let now = MonoTime::from_nanos(shared.now());
        let target = host.virtual_at(deadline, now);
        if now >= target {
            return Poll::Ready(());
        }
        *inner = SimSleep {
            shared,
            deadline: target.as_nanos(),
            slot: None,
        };
    }
}

/// The virtual-time sleep to `deadline` on `host`'s clock, as far as is known now.
fn host_sleep_start(shared: CoreRef, host: &HostClock, deadline: MonoTime) -> SimSleep {
    let target = if host.ever_suspended() {
        host.virtual_at(deadline, MonoTime::from_nanos(shared.now()))
    } else {
        deadline
    };
    SimSleep {
        shared,
        deadline: target.as_nanos(),
        slot: None,
    }
}

/// The engine's timer future: at a time of its host's monotonic clock, so a sleep that spans
/// a suspend ends that much later in virtual time.
struct EngineSleep {
    inner: SimSleep,
    deadline: MonoTime,
    host: Arc<HostClock>,
}

impl Future for EngineSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        poll_host_sleep(&mut this.inner, &this.host, this.deadline, cx)
    }
}

/// A timer future on a host's monotonic clock, borrowing the host (the world's sleeps for a
/// process: its callers' timeouts and I/O).
pub struct HostSleep<'a> {
    inner: SimSleep,
    deadline: MonoTime,
    host: &'a HostClock,
}

impl fmt::Debug for HostSleep<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSleep")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Future for HostSleep<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        poll_host_sleep(&mut this.inner, this.host, this.deadline, cx)
    }
}

/// Where the engine's monotonic clock reads when virtual time is zero: like the system clock's
/// (`keepfresh::runtime::SystemClock`), far enough from zero that tokens issued before the run
/// started (aged logins, restored stores) keep their true issue time on the engine's clock.
pub const ENGINE_CLOCK_OFFSET: Duration = Duration::from_secs(1_000 * 86_400);

/// The engine's [`Clock`] on virtual time, with a per-process wall-clock offset. Its monotonic
/// readings are its host's monotonic time (virtual time less the time the host spent
/// suspended) plus [`ENGINE_CLOCK_OFFSET`]; its wall clock reads true wall time plus the
/// offset, suspended or not.
#[derive(Clone)]
pub struct SimClock {
    shared: CoreRef,
    wall_offset: Arc<AtomicI64>,
    host: Option<Arc<HostClock>>,
    /// Whether the runtime trusts the monotonic clock as is (the models of other clients).
    trusted: bool,
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
        let now = MonoTime::from_nanos(self.shared.now());
        let mono = match &self.host {
            None => now,
            Some(h) => h.mono_at(now),
        };
        mono.saturating_add(ENGINE_CLOCK_OFFSET)
    }
    fn wall(&self) -> OffsetDateTime {
        wall_at(
            MonoTime::from_nanos(self.shared.now()),
            self.wall_offset.load(Ordering::Relaxed),
        )
    }
    fn counts_suspend(&self) -> bool {
        self.trusted
    }
    #[inline]
    fn wall_unix_nanos(&self) -> i128 {
        i128::from(WALL_EPOCH_UNIX) * 1_000_000_000
            + i128::from(self.shared.now())
            + i128::from(self.wall_offset.load(Ordering::Relaxed))
    }
}

struct SimTimer {
    shared: CoreRef,
    host: Arc<HostClock>,
}

impl Sleep for SimTimer {
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        let deadline = deadline.saturating_sub(ENGINE_CLOCK_OFFSET);
        Box::pin(EngineSleep {
            inner: host_sleep_start(self.shared, &self.host, deadline),
            deadline,
            host: self.host.clone(),
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

            log.lock().clone()
        }
        assert_eq!(order(1), order(1));
        assert!((2..20).any(|s| order(s) != order(1)));
    }

    #[test]
    fn the_timer_heap_pops_in_the_order_of_a_binary_heap() {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut rng = SimRng::new(7);
        let mut ours = MinHeap4::default();
        let mut std_heap = BinaryHeap::new();
        let mut seq = 0u64;
        for round in 0..20_000u64 {
            if rng.below(3) < 2 || std_heap.is_empty() {
                // Distinct keys, many sharing a deadline (ties broken by the order).
                let key = timer_key(
                    round / 4 + rng.below(50) as u64,
                    seq,
                    rng.below(1000) as u32,
                );
                seq += 1;
                ours.push(key);
                std_heap.push(Reverse(key));
            } else if rng.below(2) == 0 {
                assert_eq!(ours.pop(), std_heap.pop().map(|Reverse(k)| k));
            } else {
                // A later key in place of the least one, as a caller queue does.
                let key = timer_key(round / 4 + 50 + rng.below(50) as u64, seq, 0);
                seq += 1;
                let top = std_heap.pop().map(|Reverse(k)| k);
                std_heap.push(Reverse(key));
                assert_eq!(ours.replace_top(key), top);
            }
            assert_eq!(ours.peek(), std_heap.peek().map(|&Reverse(k)| k));
        }
        while let Some(Reverse(k)) = std_heap.pop() {
            assert_eq!(ours.pop(), Some(k));
        }
        assert_eq!(ours.pop(), None);
        assert_eq!(timer_parts(timer_key(5, 6, 7)), (5, 6, 7));
    }

    #[test]
    fn a_timer_wakes_the_task_that_last_polled_it_whatever_its_waker() {
        use futures::stream::{FuturesUnordered, StreamExt};
        let ex = Executor::new(11);
        let h = ex.handle();
        let log = Arc::new(Mutex::new(Vec::new()));
        let secs = |s: u64| Duration::from_secs(s);
        // Polled with the task's own waker.
        let (h1, l1) = (h.clone(), log.clone());
        h.spawn_in(Group::WORLD, async move {
            h1.sleep(secs(3)).await;
            l1.lock().push(("direct", h1.now()));
        });
        // Polled with a combinator's waker, at the same deadline as another task's own.
        let (h2, l2) = (h.clone(), log.clone());
        h.spawn_in(Group::WORLD, async move {
            let mut set: FuturesUnordered<_> = (1..=3u64).map(|k| h2.sleep(secs(k))).collect();
            while set.next().await.is_some() {}
            l2.lock().push(("combinator", h2.now()));
        });
        // Registered by one task, then handed to another that polls it: the second wakes.
        let (tx, rx) = futures::channel::oneshot::channel::<SimSleep>();
        let (h3, l3) = (h.clone(), log.clone());
        h.spawn_in(Group::WORLD, async move {
            let mut sleep = h3.sleep(secs(5));
            let mut once = false;
            futures::future::poll_fn(|cx| {
                if !once {
                    once = true;
                    assert!(Pin::new(&mut sleep).poll(cx).is_pending());
                }
                Poll::Ready(())
            })
            .await;
            tx.send(sleep).expect("receiver alive");
            l3.lock().push(("handed over", h3.now()));
        });
        let (h4, l4) = (h.clone(), log.clone());
        h.spawn_in(Group::WORLD, async move {
            let sleep = rx.await.expect("sender sends");
            sleep.await;
            l4.lock().push(("received", h4.now()));
        });
        assert_eq!(ex.run(MonoTime::MAX, 1_000), RunEnd::Idle);
        assert_eq!(ex.live_tasks(), 0);
        let mut got = log.lock().clone();
        got.sort_by_key(|&(name, _)| name);
        let at = |s: u64| MonoTime::from_duration(secs(s));
        assert_eq!(
            got,
            vec![
                ("combinator", at(3)),
                ("direct", at(3)),
                ("handed over", at(0)),
                ("received", at(5)),
            ]
        );
    }

    #[test]
    fn the_step_cap_counts_every_poll_and_timer_fire() {
        for cap in [1, 2, 5, 9, 17] {
            let ex = Executor::new(4);
            let h = ex.handle();
            for i in 0..8u64 {
                let h2 = h.clone();
                h.spawn_in(Group::WORLD, async move {
                    for k in 0..3 {
                        h2.sleep(Duration::from_secs(1 + (i + k) % 2)).await;
                    }
                });
            }
            assert_eq!(ex.run(MonoTime::MAX, cap), RunEnd::StepCap, "cap {cap}");
            let events = ex.stats().events();
            // Timers at one deadline fire together, so a cap may be passed by the rest of them.
            assert!(
                events >= cap && events < cap + 8,
                "cap {cap}: {events} events"
            );
            assert_eq!(ex.run(MonoTime::MAX, 1_000), RunEnd::Idle);
            // 8 first polls, then 3 timers and 3 polls per task.
            assert_eq!(ex.stats().events(), 8 + 8 * 6);
        }
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

    #[test]
    fn a_suspended_host_stops_its_clock_and_its_tasks_and_its_timers_move_later() {
        let secs = |s: u64| MonoTime::from_duration(Duration::from_secs(s));
        let ex = Executor::new(5);
        let h = ex.handle();
        let g = h.new_group();
        let host = Arc::new(HostClock::new());
        let rt = h.runtime(g, Arc::new(AtomicI64::new(0)), host.clone());
        // The host's raw monotonic clock, as the OS would read it (the engine's runtime adds the
        // suspend back from the wall clock).
        let raw = SimClock {
            shared: h.shared,
            wall_offset: Arc::new(AtomicI64::new(0)),
            host: Some(host.clone()),
            trusted: true,
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let (h2, log2, rt2) = (h.clone(), log.clone(), rt.clone());
        h.spawn_in(g, async move {
            // A 100 s sleep on the host's clock, across a 50 s suspend: ends at 150 s.
            let until = rt2.now().saturating_add(Duration::from_secs(100));
            rt2.sleep_until(until).await;
            log2.lock().push(("engine timer", h2.now()));
        });
        let (h3, log3) = (h.clone(), log.clone());
        h.spawn_in(g, async move {
            // A world-time sleep in the frozen group: its task runs only at the resume.
            h3.sleep(Duration::from_secs(20)).await;
            log3.lock().push(("world timer", h3.now()));
        });
        assert_eq!(ex.run(secs(10), 1_000), RunEnd::Horizon);
        let before = raw.monotonic();
        assert!(host.suspend(secs(10)));
        assert!(!host.suspend(secs(10)));
        h.freeze(g);
        assert!(h.is_frozen(g));
        assert_eq!(ex.run(secs(60), 1_000), RunEnd::Horizon);
        assert!(log.lock().is_empty(), "nothing of a frozen group runs");
        assert_eq!(raw.monotonic(), before, "the monotonic clock stands still");
        assert_eq!(
            rt.now(),
            before.saturating_add(Duration::from_secs(50)),
            "the engine's runtime counts the suspend"
        );
        assert_eq!(rt.wall(), wall_at(secs(60), 0), "the wall clock runs on");
        assert_eq!(host.resume(secs(60)), Some(Duration::from_secs(50)));
        h.thaw(g);
        assert_eq!(host.lost(secs(60)), Duration::from_secs(50));
        assert_eq!(ex.run(MonoTime::MAX, 1_000), RunEnd::Idle);
        assert_eq!(
            *log.lock(),
            vec![("world timer", secs(60)), ("engine timer", secs(150))]
        );
        assert_eq!(
            raw.monotonic(),
            secs(100).saturating_add(ENGINE_CLOCK_OFFSET),
            "after the resume the host's clock reads true time less the suspend"
        );
    }

    #[test]
    fn an_injected_panic_drops_only_the_task_it_unwinds() {
        silence_injected_panics();
        let ex = Executor::new(9);
        let h = ex.handle();
        let g = h.new_group();
        let done = Arc::new(AtomicBool::new(false));
        h.spawn_in(g, async { std::panic::panic_any(InjectedPanic) });
        let (h2, done2) = (h.clone(), done.clone());
        h.spawn_in(g, async move {
            h2.sleep(Duration::from_secs(1)).await;
            done2.store(true, Ordering::SeqCst);
        });
        assert_eq!(ex.run(MonoTime::MAX, 1_000), RunEnd::Idle);
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(ex.stats().injected_panics, 1);
        // Any other panic still ends the run.
        h.spawn_in(g, async { panic!("a real bug") });
        let r = catch_unwind(AssertUnwindSafe(|| ex.run(MonoTime::MAX, 1_000)));
        assert!(r.is_err());
    }
}

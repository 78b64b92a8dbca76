//! The shell that feeds the [`Machine`], publishes its answers for lock-free readers and applies
//! what refresh flights report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::StreamExt;
use time::OffsetDateTime;

use super::cell::FlightCell;
use super::handle::Snapshot;
use super::pooled::{Scheduler, Timer};
use crate::error::Error;
use crate::event::{Event, Listeners};
use crate::flight::Replaced;
use crate::machine::{Action, FlightId, Grant, Input, Machine, Phase, Refusal};
use crate::policy::{JitterRng, RefreshPolicy};
use crate::refresher::{RefreshError, Refresher};
use crate::runtime::{MonoTime, Runtime};
use crate::secret::RefreshToken;
use crate::store::{TokenStore, Version};
use crate::sync::{Loaded, Mutex, Published};
use crate::token::TokenSet;

/// Gives every credential an identity for [`Snapshot::owner`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) published: Published<Snapshot>,
    pub(crate) core: Mutex<Core>,
    /// What it shares with the credentials built alike (one copy for a pool's credentials).
    pub(crate) common: Arc<Common>,
    pub(crate) store: Option<Arc<dyn TokenStore>>,
    pub(crate) listeners: Listeners,
    /// Its own timer task, or its deadline in the pool scheduler that ticks it.
    pub(crate) timer: Timer,
    /// Tokens handed out past their refresh point since the metrics listener last looked.
    #[cfg(feature = "metrics")]
    pub(crate) stale_served: AtomicU64,
    pub(crate) name: Arc<String>,
}

/// The part of a credential that does not depend on its tokens, store or name: a pool's
/// credentials that use one refresher and an equal policy share one copy (88 bytes each saved,
/// measured by the pool bench).
pub(crate) struct Common {
    pub(crate) rt: Runtime,
    pub(crate) refresher: Arc<dyn Refresher>,
    pub(crate) policy: Arc<RefreshPolicy>,
    /// The pool scheduler that ticks these credentials (`None`: each runs its own timer task).
    /// Weak: a credential handed out by a pool that is then dropped keeps working on demand,
    /// but is no longer refreshed in the background.
    pub(crate) scheduler: Option<Weak<dyn Scheduler>>,
    /// Starts the worker for a flight (the driver's entry point, given by the builder so that
    /// this module does not depend on the driver, which depends on it).
    pub(crate) spawn_job: fn(&Arc<Inner>, Job),
}

/// The one refresh worker of a credential: idle, or running plans one after another (boxed:
/// an idle credential keeps one word for it).
#[derive(Default)]
pub(crate) enum Driver {
    #[default]
    Idle,
    Busy(Box<Busy>),
}

pub(crate) struct Busy {
    /// The next flight, started by the machine while a plan was still finishing.
    pub(crate) queued: Option<Job>,
    /// Completed (and replaced) when a job is queued: wakes a plan waiting to retry a save.
    pub(crate) wake: Arc<FlightCell>,
    /// Completed when the driver goes idle (shutdown waits for it).
    pub(crate) idle: Arc<FlightCell>,
}

/// A flight the machine started, for the driver to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) flight: FlightId,
    pub(crate) epoch: u64,
    pub(crate) attempt: u32,
}

pub(crate) struct Core {
    pub(crate) machine: Machine,
    /// The current token set.
    pub(crate) tokens: Option<Arc<TokenSet>>,
    /// The store version this process's lineage expects: where the current set was read or
    /// written, or — while it is not durable — where its durable parent is.
    pub(crate) version: Option<Version>,
    /// Bumped by every login: flights started before it are cancelled.
    pub(crate) epoch: u64,
    /// What it keeps only while it refreshes, saves, fails or knows a refresh token alone.
    pub(super) active: Option<Box<Active>>,
    pub(crate) rng: JitterRng,
    /// The sets this process held and knows to be older than the set held, oldest first (at
    /// most [`REPLACED_KEPT`]): a store that shows one again is behind this process (see
    /// [`Start::replaced`]).
    ///
    /// [`Start::replaced`]: crate::flight::Start::replaced
    pub(crate) replaced: Vec<Replaced>,
}

/// How many replaced sets a credential remembers: further back than a lagging replica or a
/// run of lost saves plausibly reaches.
const REPLACED_KEPT: usize = 16;

/// What a credential keeps only while it refreshes, saves, fails or is known by a refresh
/// token alone: boxed, so that an idle credential keeps one word for it (72 bytes saved per
/// idle credential, measured by the pool bench), and freed by [`Core::settle`] once it is all
/// empty again.
#[derive(Default)]
pub(crate) struct Active {
    /// A refresh token known without a token set (built from a refresh token alone).
    pub(crate) refresh_only: Option<RefreshToken>,
    /// The machine's flight and the cell its waiters wait on.
    pub(crate) flight: Option<(FlightId, Arc<FlightCell>)>,
    /// The error of the last failed refresh, while the machine backs off or waits for a login.
    pub(crate) last_error: Option<RefreshError>,
    /// The one refresh worker.
    pub(crate) driver: Driver,
    /// The generation whose save is owed.
    pub(crate) persist_pending: Option<u64>,
}

impl Active {
    fn is_empty(&self) -> bool {
        self.refresh_only.is_none()
            && self.flight.is_none()
            && self.last_error.is_none()
            && matches!(self.driver, Driver::Idle)
            && self.persist_pending.is_none()
    }
}

/// [`Core::driver`] of a credential with nothing active.
static IDLE: Driver = Driver::Idle;

impl Core {
    pub(crate) fn new(policy: &Arc<RefreshPolicy>) -> Self {
        Core {
            machine: Machine::shared(policy.clone()),
            tokens: None,
            version: None,
            epoch: 0,
            active: None,
            rng: policy.rng(),
            replaced: Vec::new(),
        }
    }

    /// The active part, allocated when first written.
    pub(crate) fn active_mut(&mut self) -> &mut Active {
        self.active.get_or_insert_with(Box::default)
    }

    /// Frees the active part once nothing in it is left (call after a change that can empty
    /// it: a flight's end, a save's end, the driver going idle, a login).
    pub(crate) fn settle(&mut self) {
        if self.active.as_deref().is_some_and(Active::is_empty) {
            self.active = None;
        }
    }

    /// Whether the active part is allocated (tests: an idle credential must not keep it).
    #[cfg(test)]
    pub(crate) fn has_active(&self) -> bool {
        self.active.is_some()
    }

    pub(crate) fn refresh_only(&self) -> Option<&RefreshToken> {
        self.active.as_deref()?.refresh_only.as_ref()
    }

    pub(crate) fn flight(&self) -> Option<&(FlightId, Arc<FlightCell>)> {
        self.active.as_deref()?.flight.as_ref()
    }

    pub(crate) fn take_flight(&mut self) -> Option<(FlightId, Arc<FlightCell>)> {
        self.active.as_deref_mut()?.flight.take()
    }

    pub(crate) fn last_error(&self) -> Option<&RefreshError> {
        self.active.as_deref()?.last_error.as_ref()
    }

    pub(crate) fn persist_pending(&self) -> Option<u64> {
        self.active.as_deref()?.persist_pending
    }

    pub(crate) fn take_persist_pending(&mut self) -> Option<u64> {
        self.active.as_deref_mut()?.persist_pending.take()
    }

    pub(crate) fn driver(&self) -> &Driver {
        self.active.as_deref().map_or(&IDLE, |a| &a.driver)
    }

    /// Clears what a new token set makes moot: the refresh token known alone, an owed save and
    /// the last error.
    pub(crate) fn clear_for_new_set(&mut self) {
        if let Some(a) = self.active.as_deref_mut() {
            a.refresh_only = None;
            a.persist_pending = None;
            a.last_error = None;
        }
    }

    /// Makes `set` the current token set. With `newer` — the provider's answer to a refresh of
    /// the current set, or a login — the set it replaces is known to be older and remembered
    /// as replaced. A set adopted from the store is not known to be newer (a stale replica can
    /// hand out an older one): remembering the set it replaces would then make the store's
    /// true, newer set look older, and the process would refuse it.
    pub(crate) fn install(&mut self, set: Arc<TokenSet>, newer: bool) {
        let new_access = set.access_token();
        self.replaced.retain(|r| !r.has_access_token(new_access));
        if let Some(old) = self.tokens.replace(set)
            && newer
            && self.tokens.as_deref() != Some(&*old)
        {
            self.retire(old);
        }
    }

    /// Remembers `set` as older than anything this process holds from now on.
    pub(crate) fn retire(&mut self, set: Arc<TokenSet>) {
        let set = Replaced::of(&set);
        if self.replaced.contains(&set) {
            return;
        }
        if self.replaced.len() == REPLACED_KEPT {
            // Sixteen of 24 bytes: shifting them is cheaper than a ring buffer's extra word.
            self.replaced.remove(0);
        }
        // Exact: a credential that refreshed once keeps 24 bytes, not a first growth to four.
        self.replaced.reserve_exact(1);
        self.replaced.push(set);
    }
}

/// What a caller does after asking the machine.
pub(crate) enum Step {
    Serve(Loaded<Snapshot>),
    Wait(Arc<FlightCell>),
    Fail(Error),
}

/// Work to do after the core lock is released: spawn the driver, wake waiters, emit events.
#[derive(Default)]
pub(crate) struct After {
    pub(crate) events: Vec<Event>,
    pub(crate) spawn: Option<Job>,
    pub(crate) complete: Vec<Arc<FlightCell>>,
    /// Whether the input started a flight.
    pub(crate) started: bool,
}

impl Inner {
    /// Feeds one input, starting the flight it asks for; returns the decision's action.
    pub(crate) fn feed(
        self: &Arc<Self>,
        core: &mut Core,
        input: Input,
        after: &mut After,
    ) -> Action {
        let now = input.now();
        let d = core.machine.handle(input);
        if let Some(id) = d.start_refresh {
            self.begin_flight(core, id, now, after);
        }
        self.publish_locked(core, &mut after.events);
        d.action
    }

    /// Spawns (before emitting: a panicking listener must not keep a flight from running),
    /// wakes waiters, then emits.
    pub(crate) fn run_after(self: &Arc<Self>, after: After) {
        if let Some(job) = after.spawn {
            (self.common.spawn_job)(self, job);
        }
        for cell in after.complete {
            cell.complete();
        }
        self.listeners.emit(after.events);
    }

    pub(crate) fn demand(self: &Arc<Self>) -> Step {
        let mut after = After::default();
        let step = {
            let mut core = self.core.lock();
            let now = self.common.rt.now();
            let action = self.feed(&mut core, Input::Demand { now }, &mut after);
            match action {
                Action::Serve => Step::Serve(self.published.load()),
                Action::Wait => match core.flight() {
                    Some((_, cell)) => Step::Wait(cell.clone()),
                    None => Step::Fail(Error::timeout()),
                },
                Action::Fail(refusal) => Step::Fail(refusal_error(&core, refusal)),
                _ => Step::Fail(Error::not_authorized()),
            }
        };
        self.run_after(after);
        step
    }

    pub(crate) fn invalidate(self: &Arc<Self>, generation: u64) -> bool {
        let mut after = After::default();
        {
            let mut core = self.core.lock();
            let now = self.common.rt.now();
            self.feed(&mut core, Input::Invalidate { now, generation }, &mut after);
            after.events.push(Event::Invalidated {
                at: now,
                generation,
                refresh_started: after.started,
            });
        }
        let started = after.started;
        self.run_after(after);
        started
    }

    pub(crate) fn tick(self: &Arc<Self>) {
        let mut after = After::default();
        {
            let mut core = self.core.lock();
            let now = self.common.rt.now();
            self.feed(&mut core, Input::Tick { now }, &mut after);
        }
        self.run_after(after);
    }

    /// Starts the timer task unless it runs (or the credential is shut down). A pooled
    /// credential starts none: it reports its next deadline to the pool's scheduler instead.
    pub(crate) fn start_timer(self: &Arc<Self>) {
        let Timer::Own(timer) = &self.timer else {
            self.report_tick();
            return;
        };
        if self.core.lock().machine.is_closed() {
            return;
        }
        let mut timer = timer.lock();
        if timer.is_some() {
            return;
        }
        let (tx, rx) = mpsc::unbounded();
        *timer = Some(tx);
        drop(timer);
        let weak = Arc::downgrade(self);
        self.common
            .rt
            .spawn(Box::pin(timer_loop(weak, self.common.rt.clone(), rx)));
    }

    /// Tells the timer the machine changed, so it re-reads the next deadline.
    pub(crate) fn nudge(self: &Arc<Self>) {
        match &self.timer {
            Timer::Own(timer) => {
                if let Some(tx) = timer.lock().as_ref() {
                    let _ = tx.unbounded_send(());
                }
            }
            Timer::Pooled(_) => self.report_tick(),
        }
    }

    /// Stops the timer for good (shutdown): the task ends, or the scheduler forgets the
    /// credential.
    pub(crate) fn stop_timer(self: &Arc<Self>) {
        match &self.timer {
            Timer::Own(timer) => drop(timer.lock().take()),
            // Closed: the machine reports no deadline any more.
            Timer::Pooled(_) => self.report_tick(),
        }
    }

    fn begin_flight(&self, core: &mut Core, id: FlightId, now: MonoTime, after: &mut After) {
        let cell = FlightCell::new();
        core.active_mut().flight = Some((id, cell));
        after.started = true;
        let job = Job {
            flight: id,
            epoch: core.epoch,
            attempt: core.machine.failed_attempts() + 1,
        };
        after.events.push(Event::RefreshStarted {
            at: now,
            flight: id,
            refresh_token: current_refresh_token(core).map(|r| r.fingerprint()),
        });
        let active = core.active_mut();
        match &mut active.driver {
            Driver::Idle => {
                active.driver = Driver::Busy(Box::new(Busy {
                    queued: None,
                    wake: FlightCell::new(),
                    idle: FlightCell::new(),
                }));
                after.spawn = Some(job);
            }
            Driver::Busy(busy) => {
                // The running plan is finishing an older flight (or waiting to retry its save);
                // it hands over to this one.
                busy.queued = Some(job);
                after
                    .complete
                    .push(std::mem::replace(&mut busy.wake, FlightCell::new()));
            }
        }
    }

    /// Publishes the current token and fast-path deadline for lock-free readers, and turns the
    /// machine's transitions into events. Called after every input, with the core locked.
    pub(crate) fn publish_locked(&self, core: &mut Core, events: &mut Vec<Event>) {
        let key = (core.machine.generation(), core.machine.fast_path_until());
        let current = self.published.load();
        // The first snapshot (owner 0) is a placeholder, always replaced.
        if current.owner != self.id || (current.generation, current.fast_until) != key {
            drop(current);
            self.published.store(Snapshot {
                owner: self.id,
                set: core.tokens.clone(),
                generation: key.0,
                fast_until: key.1,
                #[cfg(feature = "metrics")]
                stale_from: match core.machine.timing() {
                    Some(t) if key.1 > t.refresh_at => t.refresh_at,
                    _ => MonoTime::MAX,
                },
            });
        }
        for t in core.machine.take_transitions() {
            if let Phase::ReauthRequired { reason } = t.to {
                events.push(Event::Transition(t.clone()));
                events.push(Event::ReauthRequired { at: t.at, reason });
            } else {
                events.push(Event::Transition(t));
            }
        }
    }

    /// Installs a set from outside a refresh (a login, the store at build time, a newer set a
    /// plan found in the store): it supersedes the flight in flight, whose waiters are woken.
    /// With `login`, the set replaced is remembered as older (see [`Core::install`]).
    pub(crate) fn authorize_locked(
        &self,
        core: &mut Core,
        set: Arc<TokenSet>,
        version: Option<Version>,
        login: bool,
        after: &mut After,
    ) {
        let now = self.common.rt.now();
        let grant = grant_for(&set, now, self.common.rt.wall());
        core.install(set, login);
        if version.is_some() {
            core.version = version;
        }
        core.clear_for_new_set();
        core.machine.handle(Input::Authorize { now, grant });
        if let Some((_, cell)) = core.take_flight() {
            after.complete.push(cell);
        }
        core.settle();
        self.publish_locked(core, &mut after.events);
    }

    /// Wakes the waiters of `flight` once the machine has its result.
    pub(crate) fn end_flight(&self, core: &mut Core, flight: FlightId, after: &mut After) {
        if core.flight().is_some_and(|(f, _)| *f == flight)
            && let Some((_, cell)) = core.take_flight()
        {
            after.complete.push(cell);
        }
        core.settle();
    }

    /// Fails `flight` because its task could not run or died; callers get an error instead of
    /// waiting forever.
    pub(crate) fn abort_flight(
        self: &Arc<Self>,
        flight: FlightId,
        after: &mut After,
        core: &mut Core,
    ) {
        let now = self.common.rt.now();
        if core.machine.flight() == Some(flight) {
            let error = RefreshError::transient("the refresh task ended without a result");
            after.events.push(Event::FlightAborted { at: now, flight });
            core.machine.handle(Input::RefreshFailed {
                now,
                flight,
                class: error.class(),
                retry_after: None,
            });
            core.active_mut().last_error = Some(error);
        }
        self.end_flight(core, flight, after);
    }
}

pub(crate) fn current_refresh_token(core: &Core) -> Option<&RefreshToken> {
    core.tokens
        .as_deref()
        .and_then(|t| t.refresh_token())
        .or(core.refresh_only())
}

pub(crate) fn refusal_error(core: &Core, refusal: Refusal) -> Error {
    match refusal {
        Refusal::NotAuthorized => Error::not_authorized(),
        Refusal::Reauth(reason) => Error::reauth(reason),
        Refusal::BackingOff { until, last_error } => {
            let error = core
                .last_error()
                .cloned()
                .unwrap_or_else(|| RefreshError::new(last_error, "refresh failed"));
            Error::refresh(error, Some(until))
        }
        Refusal::Closed => Error::closed(),
    }
}

/// Places a token set on the monotonic clock, keeping its absolute (wall-clock) expiry: the one
/// function that does so, for sets read from a store, given by a login or adopted.
pub(crate) fn grant_for(set: &TokenSet, now: MonoTime, wall: OffsetDateTime) -> Grant {
    let to_std = |d: time::Duration| Duration::try_from(d).unwrap_or(Duration::ZERO);
    let age = to_std(wall - set.issued_at());
    let lifetime = to_std(set.lifetime());
    let has_rt = set.refresh_token().is_some();
    let since_origin = now.as_duration();
    if age <= since_origin {
        Grant::new(now.saturating_sub(age), lifetime, has_rt)
    } else {
        // Issued before this clock's origin: shorten the lifetime so the expiry stays put.
        Grant::new(
            MonoTime::ZERO,
            lifetime.saturating_sub(age - since_origin),
            has_rt,
        )
    }
}

/// The credential's timer: ticks the machine at its next deadline (eager refresh, keep-alive,
/// the retry after an ambiguous answer). Ends when the credential is dropped or shut down.
pub(crate) async fn timer_loop(
    weak: Weak<Inner>,
    rt: Runtime,
    mut nudges: mpsc::UnboundedReceiver<()>,
) {
    // The sleep in progress and its deadline. A nudge (the machine changed) keeps it when it
    // fires no later than the new deadline: waking early is harmless (the tick re-checks), and
    // keeping it spares the timer one entry per refresh.
    let mut current: Option<(MonoTime, futures::future::BoxFuture<'static, ()>)> = None;
    loop {
        let deadline = {
            let Some(inner) = weak.upgrade() else { return };
            let now = rt.now();
            let core = inner.core.lock();
            if core.machine.is_closed() {
                return;
            }
            core.machine.next_tick(now)
        };
        match (deadline, &current) {
            (Some(d), Some((at, _))) if *at <= d => {}
            (Some(d), _) => current = Some((d, rt.sleep_until(d))),
            (None, _) => {}
        }
        match current.as_mut() {
            Some((_, sleep)) => match select(sleep, nudges.next()).await {
                Either::Left(_) => {
                    current = None;
                    let Some(inner) = weak.upgrade() else { return };
                    inner.tick();
                }
                Either::Right((None, _)) => return,
                Either::Right((Some(()), _)) => {}
            },
            None => {
                if nudges.next().await.is_none() {
                    return;
                }
            }
        }
    }
}

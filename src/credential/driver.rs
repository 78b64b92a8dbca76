//! The refresh worker: carries out the effects of one [`Plan`] after another. It decides
//! nothing itself; every rule lives in the plan.
//!
//! One worker per credential runs at a time. A flight the machine starts while a plan is still
//! waiting to retry a save it owes is handed that plan's lease ([`Plan::hand_over`]), so the set
//! that is not yet durable always has exactly one owner.

use std::sync::Arc;

use futures::future::select;

use super::engine::{After, Driver, Inner, Job};
use super::store_io::{self, Called};
use crate::event::Event;
use crate::flight::{Carry, Effect, Feedback, Plan, Start};

/// Starts the worker for `job`. If the runtime cannot run it (no runtime, a dropped runtime),
/// the task is dropped unpolled and its guard fails the flight.
pub(crate) fn spawn(inner: &Arc<Inner>, job: Job) {
    let guard = Guard {
        inner: inner.clone(),
        current: Some(job),
    };
    let task = async move {
        let mut guard = guard;
        work(&mut guard, job).await;
        guard.current = None;
    };
    #[cfg(feature = "tracing")]
    let task = {
        use tracing::Instrument;
        let span = tracing::info_span!("keepfresh.refresh", credential = %inner.name);
        task.instrument(span)
    };
    inner.common.rt.spawn(Box::pin(task));
}

/// Fails the flight in hand and frees the worker slot if the task dies (a panic, a dropped
/// runtime, a task never polled).
struct Guard {
    inner: Arc<Inner>,
    current: Option<Job>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(job) = self.current.take() else {
            return;
        };
        let mut after = After::default();
        {
            let mut core = self.inner.core.lock();
            self.inner.abort_flight(job.flight, &mut after, &mut core);
            let driver = std::mem::take(&mut core.active_mut().driver);
            if let Driver::Busy(busy) = driver {
                if let Some(q) = busy.queued {
                    self.inner.abort_flight(q.flight, &mut after, &mut core);
                }
                after.complete.push(busy.idle);
            }
            core.settle();
            let mut events = std::mem::take(&mut after.events);
            self.inner.publish_locked(&mut core, &mut events);
            after.events = events;
        }
        // No spawning from here: only wake and tell.
        after.spawn = None;
        self.inner.run_after(after);
    }
}

async fn work(guard: &mut Guard, first: Job) {
    let inner = guard.inner.clone();
    let mut next = Some((first, None::<Carry>));
    while let Some((job, carry)) = next.take() {
        guard.current = Some(job);
        let start = {
            let mut core = inner.core.lock();
            if job.epoch != core.epoch || core.machine.flight() != Some(job.flight) {
                None
            } else {
                let poll_seed = core.rng.next_u64();
                let mut start = Start::new(
                    job.flight,
                    inner.common.rt.now(),
                    core.tokens.clone(),
                    core.version,
                )
                .with_attempt(job.attempt, poll_seed)
                .with_replaced(core.replaced.iter().copied());
                if let Some(rt) = core.refresh_only() {
                    start = start.with_refresh_token(rt.clone());
                }
                if let Some(c) = carry.clone() {
                    start = start.with_carry(c);
                }
                Some(start)
            }
        };
        match start {
            Some(start) => {
                let plan = Plan::new(inner.common.policy.clone(), inner.store.is_some(), start);
                next = run_plan(&inner, &job, plan).await;
            }
            None => {
                // Superseded before it ran (a login). A lease handed over with it is given
                // back: the set it protected was superseded too.
                if let (Some(store), Some(lease)) = (&inner.store, carry.and_then(|c| c.lease)) {
                    let limit = inner.common.policy.store_timeout();
                    let _ = store_io::store_op(&inner.common.rt, limit, store.release(lease)).await;
                }
            }
        }
        if next.is_none() {
            let mut after = After::default();
            {
                let mut core = inner.core.lock();
                let queued = match core.active.as_deref_mut().map(|a| &mut a.driver) {
                    Some(Driver::Busy(busy)) => busy.queued.take(),
                    _ => None,
                };
                match queued {
                    Some(q) => next = Some((q, None)),
                    None => {
                        if let Driver::Busy(busy) = std::mem::take(&mut core.active_mut().driver) {
                            after.complete.push(busy.idle);
                        }
                        core.settle();
                        // The flight in hand is over; nothing to fail on the way out.
                        guard.current = None;
                    }
                }
            }
            inner.run_after(after);
        }
    }
}

/// Runs `plan` to its end; returns the next job when the plan handed over to it.
async fn run_plan(inner: &Arc<Inner>, job: &Job, mut plan: Plan) -> Option<(Job, Option<Carry>)> {
    let rt = &inner.common.rt;
    let limit = inner.common.policy.store_timeout();
    let mut feedback = Feedback::Start;
    loop {
        if inner.core.lock().epoch != job.epoch {
            plan.cancel();
        }
        let effect = plan.step(rt.now(), feedback);
        feedback = match effect {
            Effect::Done => return None,
            Effect::Report(report) => {
                inner.apply(job, report);
                Feedback::Ack
            }
            Effect::Sleep { until } => {
                if let Some(next) = take_over(inner, &mut plan) {
                    return Some(next);
                }
                let wake = match inner.core.lock().driver() {
                    Driver::Busy(busy) if plan.can_hand_over() => Some(busy.wake.clone()),
                    _ => None,
                };
                let sleep = rt.sleep_until(until);
                match (wake, inner.store.as_ref()) {
                    (Some(wake), _) => {
                        let _ = select(sleep, wake.wait()).await;
                    }
                    (None, Some(store)) if plan.is_polling_lease() => {
                        let changed = std::pin::pin!(store_io::watch(store.as_ref()));
                        let _ = select(sleep, changed).await;
                    }
                    (None, _) => sleep.await,
                }
                if let Some(next) = take_over(inner, &mut plan) {
                    return Some(next);
                }
                Feedback::Slept
            }
            Effect::TryLease { ttl } => {
                let store = inner.store.as_ref()?;
                Feedback::Lease(store_io::store_op(rt, limit, store.try_lease(ttl)).await)
            }
            Effect::Load => {
                let store = inner.store.as_ref()?;
                Feedback::Loaded(store_io::store_op(rt, limit, store.load()).await)
            }
            Effect::Renew { lease, ttl } => {
                let store = inner.store.as_ref()?;
                Feedback::Renewed(
                    store_io::store_op(rt, limit, store.renew_lease(&lease, ttl)).await,
                )
            }
            Effect::Save { expected, set } => {
                let store = inner.store.as_ref()?;
                Feedback::Saved(store_io::store_op(rt, limit, store.save(expected, &set)).await)
            }
            Effect::Clear { expected } => {
                let store = inner.store.as_ref()?;
                Feedback::Cleared(store_io::store_op(rt, limit, store.clear(expected)).await)
            }
            Effect::Release { lease } => {
                if let Some(store) = &inner.store {
                    let _ = store_io::store_op(rt, limit, store.release(lease)).await;
                }
                Feedback::Released
            }
            Effect::Call(request) => {
                let issued = rt.now();
                let issued_wall = rt.wall();
                let timeout = inner.common.policy.refresh_timeout();
                let result =
                    match store_io::call(rt, timeout, inner.common.refresher.as_ref(), request)
                        .await
                    {
                        Called::Answer(r) => r,
                        Called::Panicked => {
                            inner.listeners.emit(vec![Event::RefresherPanicked {
                                at: rt.now(),
                                flight: job.flight,
                            }]);
                            Err(crate::RefreshError::transient("the refresher panicked"))
                        }
                    };
                Feedback::Called {
                    result,
                    issued,
                    issued_wall,
                }
            }
        };
    }
}

/// Hands the plan's lease to a queued flight, if one is waiting and the plan may hand over.
fn take_over(inner: &Arc<Inner>, plan: &mut Plan) -> Option<(Job, Option<Carry>)> {
    if !plan.can_hand_over() {
        return None;
    }
    let mut core = inner.core.lock();
    let Some(Driver::Busy(busy)) = core.active.as_deref_mut().map(|a| &mut a.driver) else {
        return None;
    };
    let job = busy.queued.take()?;
    let carry = plan.hand_over();
    Some((job, carry))
}

//! The plan's state and its public face; the rules it follows are in `rules.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Carry, Effect, Feedback, Report, Start};
use crate::machine::FlightId;
use crate::policy::{JitterRng, RefreshPolicy};
use crate::refresher::RefreshError;
use crate::runtime::MonoTime;
use crate::store::{Lease, LeaseOutcome, Version};
use crate::token::TokenSet;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Stage {
    Begin,
    /// Renewing a lease carried from the previous flight before relying on it.
    RenewCarried,
    Leasing,
    PollLoad,
    PollSleep,
    Reread,
    Calling,
    RenewBeforeSave,
    Saving,
    InvalidGrantLoad {
        error: RefreshError,
    },
    Clearing {
        error: RefreshError,
    },
    /// Waiting to retry a save that failed (`attempt` failures so far).
    RetryWait,
    RetryRenew,
    /// Reports queued, then release, then done.
    Finishing,
    Done,
}

/// Why the plan is saving.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Saving {
    /// A new set from the provider, not yet reported.
    Refreshed {
        issued: MonoTime,
        lifetime: Duration,
        rotated: bool,
    },
    /// A kept rotated refresh token from a failed refresh, not yet reported.
    Kept { error: RefreshError },
    /// Already reported; a save is owed.
    Owed,
}

/// One refresh flight as a pure state machine. See the [module docs](crate::flight).
#[derive(Clone)]
pub struct Plan {
    pub(super) policy: Arc<RefreshPolicy>,
    pub(super) has_store: bool,
    pub(super) start: Start,
    pub(super) stage: Stage,
    pub(super) lease: Option<Lease>,
    /// Whether a successful lease-and-re-read (or fail-open) cleared the way to the provider.
    pub(super) give_up: MonoTime,
    pub(super) polls: u32,
    pub(super) announced_busy: bool,
    pub(super) rng: JitterRng,
    /// The set being saved and why.
    pub(super) pending: Option<(Arc<TokenSet>, Saving)>,
    pub(super) expected: Option<Version>,
    pub(super) parent_rewrites: u32,
    pub(super) save_attempts: u32,
    pub(super) outbox: std::collections::VecDeque<Report>,
    /// The effect to return once the outbox is flushed.
    pub(super) held: Option<Effect>,
    /// A set whose save an earlier plan owed, carried over.
    pub(super) owed: Option<Arc<TokenSet>>,
    pub(super) now: MonoTime,
    pub(super) cancelled: bool,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("flight", &self.start.flight)
            .field("stage", &self.stage)
            .field("lease", &self.lease)
            .field("expected", &self.expected)
            .field("owes_save", &self.owes_save())
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// A plan for `start` under `policy`; `has_store` says whether a store is configured.
    ///
    /// See the [module example](crate::flight).
    pub fn new(policy: Arc<RefreshPolicy>, has_store: bool, start: Start) -> Self {
        let lease = start.carried.as_ref().and_then(|c| c.lease.clone());
        let owed = start.carried.as_ref().and_then(|c| c.owed.clone());
        let expected = match &start.carried {
            Some(c) if c.owed.is_some() => c.expected,
            _ => start.expected,
        };
        Plan {
            give_up: start.now.saturating_add(policy.lease_ttl()),
            rng: JitterRng::new(start.poll_seed),
            expected,
            policy,
            has_store,
            stage: Stage::Begin,
            lease,
            polls: 0,
            announced_busy: false,
            pending: None,
            parent_rewrites: 0,
            save_attempts: 0,
            outbox: Default::default(),
            held: None,
            owed,
            now: start.now,
            cancelled: false,
            start,
        }
    }

    /// The flight this plan carries out.
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert_eq!(p.flight(), FlightId(4));
    /// ```
    pub fn flight(&self) -> FlightId {
        self.start.flight
    }

    /// The token set this flight refreshes from.
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert!(p.base().is_none());
    /// ```
    pub fn base(&self) -> Option<&TokenSet> {
        self.start.base.as_deref()
    }

    /// The lease the plan holds.
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert!(p.lease().is_none());
    /// ```
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Whether a save is owed: a new set was reported but is not durable yet.
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert!(!p.owes_save());
    /// ```
    pub fn owes_save(&self) -> bool {
        matches!(&self.pending, Some((_, Saving::Owed)))
    }

    /// Whether the plan is over.
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert!(!p.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Whether the plan may hand over to a newer flight now: it waits to retry a save it owes.
    /// The newer flight refreshes from the set this plan could not save, so this one's save is
    /// superseded and must never be written.
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert!(!p.can_hand_over());
    /// ```
    pub fn can_hand_over(&self) -> bool {
        self.stage == Stage::RetryWait && self.outbox.is_empty() && self.held.is_none()
    }

    /// Whether the plan is sleeping between polls of a lease another holder has: a store that
    /// can tell when it changes ([`TokenStore::changed`](crate::store::TokenStore::changed))
    /// may cut that sleep short. Other sleeps (backoff before a save is retried) run their
    /// full length.
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert!(!p.is_polling_lease());
    /// ```
    pub fn is_polling_lease(&self) -> bool {
        self.stage == Stage::PollSleep
    }

    /// Ends this plan without writing anything more and gives its lease to the next flight.
    /// `None` unless [`Plan::can_hand_over`].
    ///
    /// ```
    /// # use keepfresh::flight::{Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let mut p = Plan::new(Default::default(), false, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// assert!(p.hand_over().is_none());
    /// ```
    pub fn hand_over(&mut self) -> Option<Carry> {
        if !self.can_hand_over() {
            return None;
        }
        self.stage = Stage::Done;
        let owed = self.pending.take().map(|(set, _)| set);
        Some(Carry {
            lease: self.lease.take(),
            owed,
            expected: self.expected,
        })
    }

    /// A login superseded this flight: from now on the plan reports nothing and writes
    /// nothing; it only gives its lease back.
    ///
    /// ```
    /// # use keepfresh::flight::{Effect, Feedback, Plan, Start};
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let mut p = Plan::new(Default::default(), true, Start::new(FlightId(4), MonoTime::ZERO, None, None));
    /// p.cancel();
    /// assert_eq!(p.step(MonoTime::ZERO, Feedback::Start), Effect::Done);
    /// ```
    pub fn cancel(&mut self) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        self.pending = None;
        self.owed = None;
        self.outbox.clear();
        // An effect queued behind the dropped reports: only a release still matters.
        if let Some(Effect::Release { lease }) = self.held.take() {
            self.lease = Some(lease);
        }
        if self.stage != Stage::Done || self.lease.is_some() {
            self.stage = Stage::Finishing;
        }
    }

    /// Feeds the result of the last effect (or [`Feedback::Start`]) and returns the next
    /// effect. Feedback that does not fit the stage is treated as a failure of that stage;
    /// the plan never panics.
    ///
    /// See the [module example](crate::flight).
    pub fn step(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        self.now = self.now.max(now);
        if let Feedback::Ack = feedback {
            if let Some(r) = self.outbox.pop_front() {
                return Effect::Report(r);
            }
            if let Some(e) = self.held.take() {
                return e;
            }
        }
        let effect = self.advance(now, feedback);
        match self.outbox.pop_front() {
            Some(r) => {
                self.held = Some(effect);
                Effect::Report(r)
            }
            None => effect,
        }
    }

    fn advance(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        if self.cancelled {
            // The effect in progress when the plan was cancelled may have handed it a lease.
            match feedback {
                Feedback::Lease(Ok(LeaseOutcome::Acquired(lease))) => self.lease = Some(lease),
                Feedback::Renewed(Ok(false)) => self.lease = None,
                _ => {}
            }
            return self.finish();
        }
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Begin => self.begin(),
            Stage::RenewCarried => self.on_carried_renewed(feedback),

            Stage::Leasing => self.on_lease(now, feedback),
            Stage::PollLoad => match feedback {
                Feedback::Loaded(Ok(Some(stored))) if self.is_newer(&stored) => {
                    self.finish_with(Report::Adopted(stored))
                }
                _ => self.poll_sleep(now),
            },
            Stage::PollSleep => {
                self.stage = Stage::Leasing;
                self.try_lease()
            }
            Stage::Reread => self.on_reread(feedback),
            Stage::Calling => self.on_called(now, feedback),
            Stage::RenewBeforeSave | Stage::RetryRenew => {
                self.on_renewed(feedback);
                self.save()
            }
            Stage::Saving => self.on_saved(now, feedback),
            Stage::InvalidGrantLoad { error } => match feedback {
                Feedback::Loaded(Ok(Some(stored))) => {
                    if self.is_newer(&stored) {
                        // Another process rotated the token: ours was stale, theirs is live.
                        self.finish_with(Report::Adopted(stored))
                    } else if stored.tokens.refresh_token().is_some()
                        && stored.tokens.refresh_token() == self.refresh_token()
                    {
                        self.stage = Stage::Clearing { error };
                        Effect::Clear {
                            expected: stored.version,
                        }
                    } else {
                        // Our own older set (its successor's save is owed) or a set without a
                        // refresh token: dead too, and neither adopted nor cleared.
                        self.fail(error)
                    }
                }
                _ => self.fail(error),
            },
            Stage::Clearing { error } => {
                if let Feedback::Cleared(Ok(true)) = feedback {
                    self.outbox.push_back(Report::Cleared);
                }
                self.fail(error)
            }
            Stage::RetryWait => {
                if self.lease.is_some() {
                    self.stage = Stage::RetryRenew;
                    self.renew()
                } else {
                    self.save()
                }
            }
            Stage::Finishing => self.finish(),
            Stage::Done => Effect::Done,
        }
    }
}

//! One refresh flight as a pure plan: the rules that decide who refreshes, what is saved and
//! when the cross-process lease is given back, with no I/O.
//!
//! A [`Plan`] answers every [`Feedback`] with the next [`Effect`] for the shell to carry out:
//! take the lease, re-read the store, call the provider, save with an expected version, clear,
//! renew or release the lease, sleep, or [`Report`] something to the credential. The shell
//! (`Credential`) only interprets effects; proptest, the fuzzer and the simulator drive the
//! plan directly. The rules it keeps:
//!
//! - **fail closed**: with a store that offers leases, the provider is called only after the
//!   lease was taken and the store re-read successfully; a lease or load error is a transient
//!   failure ([`RefreshPolicy::fail_open`] switches this off);
//! - **adopt**: a set in the store that is not the one this flight started from was written by
//!   another process (or a login) and is adopted instead of refreshing;
//! - **persist, then publish**: a new set is reported only after its first save attempt;
//! - **CAS follows lineage**: a save overwrites only the version this flight started from (or
//!   the same parent set rewritten); a newer set found in the store is adopted, never
//!   overwritten, and a superseded plan never writes;
//! - **the lease belongs to the oldest set not yet durable**: it is renewed before every save
//!   and kept until the set is durable, and handed to the next flight of this process when
//!   that one starts first ([`Plan::hand_over`]);
//! - **keep the rotated refresh token**, even from an answer without an access token;
//! - **clear only what failed**: after `invalid_grant` the store is cleared only if it still
//!   holds the refresh token that failed, else its newer set is adopted.
//!
//! ```
//! use keepfresh::flight::{Effect, Feedback, Plan, Report, Start};
//! use keepfresh::machine::FlightId;
//! use keepfresh::runtime::MonoTime;
//! use keepfresh::store::{LeaseOutcome, SaveOutcome, Version};
//! use keepfresh::{AccessToken, RefreshPolicy, RefreshToken, TokenResponse, TokenSet};
//! use std::sync::Arc;
//!
//! let wall = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
//! let base = TokenSet::new(AccessToken::new("a1"), Some(RefreshToken::new("r1")), wall, wall);
//! let mut plan = Plan::new(
//!     Arc::new(RefreshPolicy::default()),
//!     true,
//!     Start::new(FlightId(1), MonoTime::ZERO, Some(Arc::new(base)), Some(Version(1))),
//! );
//! let now = MonoTime::ZERO;
//! assert!(matches!(plan.step(now, Feedback::Start), Effect::TryLease { .. }));
//! let lease = keepfresh::store::Lease { id: 7 };
//! assert_eq!(plan.step(now, Feedback::Lease(Ok(LeaseOutcome::Acquired(lease)))), Effect::Load);
//! # let stored = keepfresh::store::Stored { version: Version(1), tokens: plan.base().unwrap().clone() };
//! let Effect::Call(request) = plan.step(now, Feedback::Loaded(Ok(Some(stored)))) else { panic!() };
//! assert_eq!(request.refresh_token.unwrap().expose_secret(), "r1");
//! let answer = TokenResponse::new(AccessToken::new("a2"))
//!     .with_refresh_token(RefreshToken::new("r2"))
//!     .with_expires_in(3600);
//! // The lease is renewed before the save, and the save expects the version we started from.
//! assert!(matches!(plan.step(now, Feedback::Called { result: Ok(answer), issued: now, issued_wall: wall }), Effect::Renew { .. }));
//! let Effect::Save { expected, .. } = plan.step(now, Feedback::Renewed(Ok(true))) else { panic!() };
//! assert_eq!(expected, Some(Version(1)));
//! let Effect::Report(Report::Refreshed { version, .. }) = plan.step(now, Feedback::Saved(Ok(SaveOutcome::Saved(Version(2))))) else { panic!() };
//! assert_eq!(version, Some(Version(2)));
//! assert!(matches!(plan.step(now, Feedback::Ack), Effect::Release { .. }));
//! assert_eq!(plan.step(now, Feedback::Released), Effect::Done);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::machine::FlightId;
use crate::policy::{JitterRng, LifetimeAdjustment, RefreshPolicy};
use crate::refresher::{ErrorClass, RefreshError, RefreshRequest};
use crate::runtime::MonoTime;
use crate::secret::RefreshToken;
use crate::store::{Lease, LeaseOutcome, SaveOutcome, StoreError, Stored, Version};
use crate::token::{TokenResponse, TokenSet};

/// Saves redone because the store held this flight's parent set at another version.
const MAX_PARENT_REWRITES: u32 = 3;
/// First and longest pause between looks at the store while another process holds the lease.
const LEASE_POLL_FIRST: Duration = Duration::from_millis(10);
const LEASE_POLL_MAX: Duration = Duration::from_millis(250);

/// What a new plan starts from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Start {
    /// The machine's flight this plan carries out.
    pub flight: FlightId,
    /// When it starts.
    pub now: MonoTime,
    /// The token set being refreshed (`None`: only a refresh token is known, or nothing).
    pub base: Option<Arc<TokenSet>>,
    /// A refresh token known without a token set (a credential built from a refresh token).
    pub refresh_token: Option<RefreshToken>,
    /// The store version this flight's lineage expects: the version `base` was read or written
    /// at, or — while `base` is not yet durable — the version of its durable parent.
    pub expected: Option<Version>,
    /// What an earlier plan of this process handed over (its lease).
    pub carried: Option<Carry>,
    /// Seed of the lease-polling jitter (drawn per flight by the host, so that processes do not
    /// poll in lockstep).
    pub poll_seed: u64,
    /// Consecutive failed attempts before this one (sent to the refresher).
    pub attempt: u32,
}

impl Start {
    /// A start with no carried lease, refresh token from `base`, poll seed 0 and attempt 1.
    ///
    /// See the [module example](self).
    pub fn new(
        flight: FlightId,
        now: MonoTime,
        base: Option<Arc<TokenSet>>,
        expected: Option<Version>,
    ) -> Self {
        Start {
            flight,
            now,
            base,
            refresh_token: None,
            expected,
            carried: None,
            poll_seed: 0,
            attempt: 1,
        }
    }

    /// With a refresh token known without a token set.
    ///
    /// ```
    /// # use keepfresh::flight::Start;
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime, RefreshToken};
    /// let s = Start::new(FlightId(1), MonoTime::ZERO, None, None).with_refresh_token(RefreshToken::new("r"));
    /// assert!(s.refresh_token.is_some());
    /// ```
    pub fn with_refresh_token(mut self, refresh_token: RefreshToken) -> Self {
        self.refresh_token = Some(refresh_token);
        self
    }

    /// With what an earlier plan handed over.
    ///
    /// See [`Plan::hand_over`].
    pub fn with_carry(mut self, carry: Carry) -> Self {
        self.carried = Some(carry);
        self
    }

    /// With a lease-polling seed and the attempt number.
    ///
    /// ```
    /// # use keepfresh::flight::Start;
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime};
    /// let s = Start::new(FlightId(1), MonoTime::ZERO, None, None).with_attempt(3, 42);
    /// assert_eq!((s.attempt, s.poll_seed), (3, 42));
    /// ```
    pub fn with_attempt(mut self, attempt: u32, poll_seed: u64) -> Self {
        self.attempt = attempt;
        self.poll_seed = poll_seed;
        self
    }
}

/// What a plan that is waiting to retry a save hands to the next flight of its process: the
/// lease of the set that is not yet durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carry {
    /// The lease, if the plan still holds one.
    pub lease: Option<Lease>,
    /// The set whose save is owed. The next plan refreshes from it; should that refresh fail,
    /// the next plan goes on saving it.
    pub owed: Option<Arc<TokenSet>>,
    /// The store version the owed save expects (the lineage's durable parent).
    pub expected: Option<Version>,
}

/// What the shell must do next.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Effect {
    /// Ask the store for the lease; answer with [`Feedback::Lease`].
    TryLease {
        /// Its time-to-live.
        ttl: Duration,
    },
    /// Read the store; answer with [`Feedback::Loaded`].
    Load,
    /// Wait until `until`; answer with [`Feedback::Slept`].
    Sleep {
        /// The monotonic deadline.
        until: MonoTime,
    },
    /// Call the provider with this request; answer with [`Feedback::Called`].
    Call(RefreshRequest),
    /// Extend the lease; answer with [`Feedback::Renewed`].
    Renew {
        /// The lease held.
        lease: Lease,
        /// The new time-to-live.
        ttl: Duration,
    },
    /// Compare-and-swap save; answer with [`Feedback::Saved`].
    Save {
        /// The version the store must be at (`None`: empty).
        expected: Option<Version>,
        /// What to write.
        set: Arc<TokenSet>,
    },
    /// Empty the store if still at `expected`; answer with [`Feedback::Cleared`].
    Clear {
        /// The version read.
        expected: Version,
    },
    /// Give the lease back; answer with [`Feedback::Released`].
    Release {
        /// The lease.
        lease: Lease,
    },
    /// Tell the credential; answer with [`Feedback::Ack`].
    Report(Report),
    /// The plan is over; nothing more to do.
    Done,
}

/// What the plan tells the credential.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Report {
    /// Another process holds the lease; this one waits for its result (reported once).
    LeaseBusy,
    /// The provider issued a new set, and its first save attempt is over: `version` is where it
    /// landed, `None` when it is not durable yet (the plan keeps retrying) or there is no store.
    Refreshed {
        /// The new set.
        set: Arc<TokenSet>,
        /// When the request was sent (the lifetime counts from here).
        issued: MonoTime,
        /// The validated lifetime.
        lifetime: Duration,
        /// Whether the provider rotated the refresh token.
        rotated: bool,
        /// The store version it was saved at.
        version: Option<Version>,
        /// Whether a save is still owed.
        pending: bool,
    },
    /// The store held a newer set (another process refreshed, or a login): use it.
    Adopted(Stored),
    /// The refresh failed.
    Failed {
        /// Why.
        error: RefreshError,
        /// A set that keeps a rotated refresh token from a malformed answer (the old one is
        /// spent): same access token, new refresh token.
        kept: Option<Arc<TokenSet>>,
        /// Whether a save of `kept` is still owed.
        pending: bool,
    },
    /// A save that was owed has landed.
    Durable {
        /// The store version.
        version: Version,
    },
    /// A save that was owed is given up because the store now holds another lineage's set
    /// (`Some`: adopt it) or was emptied (`None`: serve from memory, never resurrect it).
    Superseded(Option<Stored>),
    /// A save attempt failed; the plan retries.
    SaveFailed {
        /// The attempt that failed (1 = the first save).
        attempt: u32,
        /// The store's error.
        error: StoreError,
    },
    /// A save found the store at another version than expected.
    Conflict,
    /// The store was emptied because it held the refresh token the provider refused.
    Cleared,
    /// Renewing the lease failed or the store said it is no longer ours.
    LeaseLost,
    /// The provider's `expires_in` was replaced.
    LifetimeAdjusted {
        /// What was wrong.
        adjustment: LifetimeAdjustment,
        /// The lifetime used.
        used: Duration,
    },
    /// A credential known only by its refresh token got a rotated one in an answer without an
    /// access token: the new refresh token replaces the old (which may be spent).
    RefreshTokenRotated(RefreshToken),
    /// A 2xx answer without an access token.
    Malformed {
        /// Whether a rotated refresh token in it was kept.
        kept_refresh_token: bool,
    },
}

/// The result of the last effect.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Feedback {
    /// The first step: no effect has run yet.
    Start,
    /// Answer to [`Effect::TryLease`].
    Lease(Result<LeaseOutcome, StoreError>),
    /// Answer to [`Effect::Load`].
    Loaded(Result<Option<Stored>, StoreError>),
    /// Answer to [`Effect::Sleep`].
    Slept,
    /// Answer to [`Effect::Call`]: the provider's answer, and when the request was sent.
    Called {
        /// The answer (a timeout or panic is an error too).
        result: Result<TokenResponse, RefreshError>,
        /// Send time, monotonic.
        issued: MonoTime,
        /// Send time, wall clock.
        issued_wall: OffsetDateTime,
    },
    /// Answer to [`Effect::Renew`].
    Renewed(Result<bool, StoreError>),
    /// Answer to [`Effect::Save`].
    Saved(Result<SaveOutcome, StoreError>),
    /// Answer to [`Effect::Clear`].
    Cleared(Result<bool, StoreError>),
    /// Answer to [`Effect::Release`].
    Released,
    /// Answer to [`Effect::Report`].
    Ack,
}

#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Begin,
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
enum Saving {
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

/// One refresh flight as a pure state machine. See the [module docs](self).
#[derive(Clone)]
pub struct Plan {
    policy: Arc<RefreshPolicy>,
    has_store: bool,
    start: Start,
    stage: Stage,
    lease: Option<Lease>,
    /// Whether a successful lease-and-re-read (or fail-open) cleared the way to the provider.
    give_up: MonoTime,
    polls: u32,
    announced_busy: bool,
    rng: JitterRng,
    /// The set being saved and why.
    pending: Option<(Arc<TokenSet>, Saving)>,
    expected: Option<Version>,
    parent_rewrites: u32,
    save_attempts: u32,
    outbox: std::collections::VecDeque<Report>,
    /// The effect to return once the outbox is flushed.
    held: Option<Effect>,
    /// A set whose save an earlier plan owed, carried over.
    owed: Option<Arc<TokenSet>>,
    now: MonoTime,
    cancelled: bool,
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
    /// See the [module example](self).
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
    /// See the [module example](self).
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
                        self.finish_with(failed(error, None, false))
                    }
                }
                _ => self.finish_with(failed(error, None, false)),
            },
            Stage::Clearing { error } => {
                if let Feedback::Cleared(Ok(true)) = feedback {
                    self.outbox.push_back(Report::Cleared);
                }
                self.finish_with(failed(error, None, false))
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

    fn begin(&mut self) -> Effect {
        if !self.has_store {
            self.stage = Stage::Calling;
            return Effect::Call(self.request());
        }
        if self.lease.is_some() {
            // Carried from the plan whose set is not yet durable: the lease is this process's.
            self.stage = Stage::Reread;
            return Effect::Load;
        }
        self.stage = Stage::Leasing;
        self.try_lease()
    }

    fn try_lease(&mut self) -> Effect {
        Effect::TryLease {
            ttl: self.policy.lease_ttl(),
        }
    }

    fn on_lease(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        match feedback {
            Feedback::Lease(Ok(LeaseOutcome::Acquired(lease))) => {
                self.lease = Some(lease);
                self.stage = Stage::Reread;
                Effect::Load
            }
            Feedback::Lease(Ok(LeaseOutcome::Unsupported)) => {
                self.stage = Stage::Reread;
                Effect::Load
            }
            Feedback::Lease(Ok(LeaseOutcome::Held)) => {
                if !self.announced_busy {
                    self.announced_busy = true;
                    self.outbox.push_back(Report::LeaseBusy);
                }
                if now >= self.give_up {
                    return self.poll_sleep(now);
                }
                self.stage = Stage::PollLoad;
                Effect::Load
            }
            Feedback::Lease(Err(e)) if !self.policy.fail_open() => self.finish_with(failed(
                RefreshError::transient(format!("the store's refresh lease failed: {e}")),
                None,
                false,
            )),
            Feedback::Lease(Err(_)) => {
                self.stage = Stage::Reread;
                Effect::Load
            }
            _ => self.finish_with(failed(
                RefreshError::transient("unexpected answer to a lease request"),
                None,
                false,
            )),
        }
    }

    fn poll_sleep(&mut self, now: MonoTime) -> Effect {
        if now >= self.give_up {
            return self.finish_with(failed(
                RefreshError::transient(
                    "another process holds the refresh lease and produced no tokens in time",
                ),
                None,
                false,
            ));
        }
        // The holder usually finishes within one provider round trip: poll soon, then less and
        // less often (10 ms doubling to 250 ms), jittered so waiting processes do not align.
        let ceiling = LEASE_POLL_FIRST
            .saturating_mul(1 << self.polls.min(5))
            .min(LEASE_POLL_MAX);
        self.polls += 1;
        let pause = ceiling.mul_f64(0.5 + 0.5 * self.rng.unit());
        self.stage = Stage::PollSleep;
        Effect::Sleep {
            until: now.saturating_add(pause).min(self.give_up),
        }
    }

    fn on_reread(&mut self, feedback: Feedback) -> Effect {
        match feedback {
            Feedback::Loaded(Ok(Some(stored))) => {
                if self.is_newer(&stored) {
                    return self.finish_with(Report::Adopted(stored));
                }
                // Our own set (or our durable parent): refresh from it, expecting its version.
                self.expected = Some(stored.version);
            }
            Feedback::Loaded(Ok(None)) => {
                // Emptied by someone (or never written): a save must expect an empty store.
                self.expected = None;
            }
            Feedback::Loaded(Err(e)) => {
                if !self.policy.fail_open() {
                    return self.finish_with(failed(
                        RefreshError::transient(format!(
                            "the store could not be re-read before refreshing: {e}"
                        )),
                        None,
                        false,
                    ));
                }
            }
            _ => {
                return self.finish_with(failed(
                    RefreshError::transient("unexpected answer to a store read"),
                    None,
                    false,
                ))
            }
        }
        self.stage = Stage::Calling;
        Effect::Call(self.request())
    }

    fn on_called(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        let Feedback::Called {
            result,
            issued,
            issued_wall,
        } = feedback
        else {
            return self.finish_with(failed(
                RefreshError::ambiguous("the provider call produced no answer"),
                None,
                false,
            ));
        };
        match result {
            Ok(response) => self.accept(now, response, issued, issued_wall),
            Err(error) if error.class() == ErrorClass::InvalidGrant && self.has_store => {
                // The refresh token we started from is dead, owed or not.
                self.owed = None;
                self.stage = Stage::InvalidGrantLoad { error };
                Effect::Load
            }
            Err(error) => self.finish_with(failed(error, None, false)),
        }
    }

    /// Turns the provider's answer into the new set: keeps the old refresh token when none is
    /// sent, keeps a rotated one even from an answer without an access token, keeps the scope
    /// when none is sent, and validates the lifetime.
    fn accept(
        &mut self,
        now: MonoTime,
        response: TokenResponse,
        issued: MonoTime,
        issued_wall: OffsetDateTime,
    ) -> Effect {
        let old_rt = self.refresh_token().cloned();
        let (access, new_rt, expires_in, scope) = response.into_parts();
        let rotated = new_rt.as_ref().is_some_and(|n| Some(n) != old_rt.as_ref());
        let refresh_token = new_rt.or(old_rt);
        let scope = scope.or_else(|| self.base().and_then(|b| b.scope()).map(str::to_owned));
        if access.is_empty() {
            let error =
                RefreshError::transient("the token endpoint answered without an access token");
            let kept = match (rotated, self.start.base.as_deref()) {
                (true, Some(base)) => {
                    let mut set = base.clone();
                    set.set_refresh_token(refresh_token.clone());
                    Some(Arc::new(set))
                }
                _ => None,
            };
            let kept_alone = match (&kept, rotated, self.start.base.is_none()) {
                (None, true, true) => refresh_token.clone(),
                _ => None,
            };
            self.outbox.push_back(Report::Malformed {
                kept_refresh_token: kept.is_some() || kept_alone.is_some(),
            });
            if let Some(rt) = kept_alone {
                // Only a refresh token was known: keep the rotated one in its place (in memory;
                // a store holds whole token sets, and there is no access token to save).
                self.outbox.push_back(Report::RefreshTokenRotated(rt));
            }
            return match kept {
                Some(set) if self.has_store => {
                    self.pending = Some((set, Saving::Kept { error }));
                    self.before_save()
                }
                kept => self.finish_with(failed(error, kept, false)),
            };
        }
        let (lifetime, adjustment) = self.policy.lifetime(expires_in);
        if let Some(adjustment) = adjustment {
            self.outbox.push_back(Report::LifetimeAdjusted {
                adjustment,
                used: lifetime,
            });
        }
        let expires_at = time::Duration::try_from(lifetime)
            .ok()
            .and_then(|l| issued_wall.checked_add(l));
        let Some(expires_at) = expires_at else {
            return self.finish_with(failed(
                RefreshError::transient("the token's expiry is out of the calendar's range"),
                None,
                false,
            ));
        };
        let mut set = TokenSet::new(access, refresh_token, issued_wall, expires_at);
        if let Some(scope) = scope {
            set = set.with_scope(scope);
        }
        self.pending = Some((
            Arc::new(set),
            Saving::Refreshed {
                issued,
                lifetime,
                rotated,
            },
        ));
        if !self.has_store {
            return self.report_saved(now, None, false);
        }
        self.before_save()
    }

    fn before_save(&mut self) -> Effect {
        if self.lease.is_some() {
            self.stage = Stage::RenewBeforeSave;
            return self.renew();
        }
        self.save()
    }

    fn renew(&mut self) -> Effect {
        match &self.lease {
            Some(lease) => Effect::Renew {
                lease: lease.clone(),
                ttl: self.policy.lease_ttl(),
            },
            None => self.save(),
        }
    }

    fn on_renewed(&mut self, feedback: Feedback) {
        match feedback {
            Feedback::Renewed(Ok(true)) => {}
            // The store no longer knows the lease: another process may take it. Save anyway (the
            // compare-and-swap protects the store), but there is nothing left to release.
            Feedback::Renewed(Ok(false)) => {
                self.lease = None;
                self.outbox.push_back(Report::LeaseLost);
            }
            // Unknown: the lease may still be ours; keep it and renew again before the next save.
            _ => self.outbox.push_back(Report::LeaseLost),
        }
    }

    fn save(&mut self) -> Effect {
        let Some((set, _)) = &self.pending else {
            return self.finish();
        };
        let effect = Effect::Save {
            expected: self.expected,
            set: set.clone(),
        };
        self.stage = Stage::Saving;
        effect
    }

    fn on_saved(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        let Some((set, _)) = &self.pending else {
            return self.finish();
        };
        let set = set.clone();
        match feedback {
            Feedback::Saved(Ok(SaveOutcome::Saved(v))) => self.report_saved(now, Some(v), false),
            Feedback::Saved(Ok(SaveOutcome::Conflict(held))) => {
                self.outbox.push_back(Report::Conflict);
                match held {
                    // Our own write landed although its answer was lost.
                    Some(h) if h.tokens == *set => self.report_saved(now, Some(h.version), false),
                    // Our parent, rewritten at another version: still ours to replace.
                    Some(h)
                        if self.base().is_some_and(|b| h.tokens == *b)
                            && self.parent_rewrites < MAX_PARENT_REWRITES =>
                    {
                        self.parent_rewrites += 1;
                        self.expected = Some(h.version);
                        self.save()
                    }
                    // Another lineage's set (a login, another process) or an emptied store:
                    // never overwrite it.
                    other => self.superseded(other),
                }
            }
            Feedback::Saved(Err(error)) => {
                self.save_attempts += 1;
                self.outbox.push_back(Report::SaveFailed {
                    attempt: self.save_attempts,
                    error,
                });
                self.report_saved(now, None, true)
            }
            _ => {
                self.save_attempts += 1;
                self.outbox.push_back(Report::SaveFailed {
                    attempt: self.save_attempts,
                    error: StoreError::new(
                        crate::store::StoreErrorKind::Io,
                        "unexpected answer to a save",
                    ),
                });
                self.report_saved(now, None, true)
            }
        }
    }

    /// Reports the first save's result (or, for an owed save, its landing), then either
    /// finishes or waits to retry.
    fn report_saved(&mut self, now: MonoTime, version: Option<Version>, owed: bool) -> Effect {
        let Some((set, saving)) = self.pending.take() else {
            return self.finish();
        };
        if !matches!(saving, Saving::Kept { .. }) {
            self.owed = None;
        }
        if let Some(v) = version {
            self.expected = Some(v);
        }
        match saving {
            Saving::Refreshed {
                issued,
                lifetime,
                rotated,
            } => self.outbox.push_back(Report::Refreshed {
                set: set.clone(),
                issued,
                lifetime,
                rotated,
                version,
                pending: owed,
            }),
            Saving::Kept { error } => self
                .outbox
                .push_back(failed(error, Some(set.clone()), owed)),
            Saving::Owed => {
                if let Some(v) = version {
                    self.outbox.push_back(Report::Durable { version: v });
                }
            }
        }
        if !owed {
            return self.finish();
        }
        self.pending = Some((set, Saving::Owed));
        self.stage = Stage::RetryWait;
        let mut delay = self
            .policy
            .backoff_delay(self.save_attempts, None, &mut self.rng);
        if self.lease.is_some() {
            // Renewed before every retry: keep the waits well inside its time-to-live.
            delay = delay.min(self.policy.lease_ttl() / 3);
        }
        Effect::Sleep {
            until: now.saturating_add(delay),
        }
    }

    fn superseded(&mut self, held: Option<Stored>) -> Effect {
        let Some((set, saving)) = self.pending.take() else {
            return self.finish();
        };
        match (saving, held) {
            (Saving::Owed, held) => self.outbox.push_back(Report::Superseded(held)),
            (_, Some(h)) => self.outbox.push_back(Report::Adopted(h)),
            // The store was emptied under a first save: serve the new set from memory, but do
            // not resurrect the store's content (a logout, or another process's invalid_grant).
            (
                Saving::Refreshed {
                    issued,
                    lifetime,
                    rotated,
                },
                None,
            ) => {
                self.outbox.push_back(Report::Refreshed {
                    set,
                    issued,
                    lifetime,
                    rotated,
                    version: None,
                    pending: false,
                });
                self.outbox.push_back(Report::Superseded(None));
            }
            (Saving::Kept { error }, None) => {
                self.outbox.push_back(failed(error, Some(set), false));
                self.outbox.push_back(Report::Superseded(None));
            }
        }
        self.finish()
    }

    fn finish_with(&mut self, report: Report) -> Effect {
        let failed = matches!(report, Report::Failed { .. });
        if !failed {
            // A new set (or the store's) supersedes a carried owed save.
            self.owed = None;
        }
        self.outbox.push_back(report);
        if let (true, Some(owed), None) = (failed, self.owed.take(), &self.pending) {
            // This refresh failed, but the set it started from is still not durable: go on
            // saving it (and keep the lease until it lands).
            self.pending = Some((owed, Saving::Owed));
            self.stage = Stage::RetryWait;
            return Effect::Sleep { until: self.now };
        }
        self.finish()
    }

    /// Releases the lease, then is done (queued reports go out first, see `step`).
    fn finish(&mut self) -> Effect {
        if let Some(lease) = self.lease.take() {
            self.stage = Stage::Finishing;
            return Effect::Release { lease };
        }
        self.stage = Stage::Done;
        Effect::Done
    }

    fn request(&self) -> RefreshRequest {
        let mut r = RefreshRequest::new(self.refresh_token().cloned());
        r.scope = self.base().and_then(|b| b.scope()).map(str::to_owned);
        r.attempt = self.start.attempt;
        r
    }

    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.start
            .base
            .as_deref()
            .and_then(|b| b.refresh_token())
            .or(self.start.refresh_token.as_ref())
    }

    /// Whether the store holds a set of another lineage than the one this flight started from:
    /// not at a version this flight expects, and not its base set.
    fn is_newer(&self, stored: &Stored) -> bool {
        if Some(stored.version) == self.expected || Some(stored.version) == self.start.expected {
            return false;
        }
        match self.start.base.as_deref() {
            None => true,
            Some(ours) => {
                ours.refresh_token() != stored.tokens.refresh_token()
                    || ours.access_token() != stored.tokens.access_token()
            }
        }
    }
}

fn failed(error: RefreshError, kept: Option<Arc<TokenSet>>, pending: bool) -> Report {
    Report::Failed {
        error,
        kept,
        pending,
    }
}

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
//!   failure ([`RefreshPolicy::fail_open`](crate::RefreshPolicy::fail_open) switches this off);
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
//!   holds the refresh token that failed, else its newer set is adopted;
//! - **never go back**: a stored set this process knows to be older than the set held
//!   ([`Start::replaced`]: it refreshed from it, or a login replaced it) — left by a save the
//!   store acknowledged and lost, or read from a lagging replica — is never adopted, its refresh
//!   token (spent) is never sent, and a save writes over it.
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

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::machine::FlightId;
use crate::policy::LifetimeAdjustment;
use crate::refresher::{RefreshError, RefreshRequest};
use crate::runtime::MonoTime;
use crate::secret::RefreshToken;
use crate::store::{Lease, LeaseOutcome, SaveOutcome, StoreError, Stored, Version};
use crate::token::{TokenResponse, TokenSet};

mod plan;
mod replaced;
mod rules;

pub use plan::Plan;
pub use replaced::Replaced;

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
    /// Token sets this process held and knows to be older than `base` (it refreshed from them,
    /// or a login replaced them), oldest first. A stored set with one of their access tokens,
    /// or with one of their refresh tokens that `base` no longer carries, is older than `base`,
    /// whatever its version says. Remembered as keyed hashes ([`Replaced`]), not as the sets.
    pub replaced: Vec<Replaced>,
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
            replaced: Vec::new(),
        }
    }

    /// With the token sets this process held and knows to be older than the base, oldest
    /// first.
    ///
    /// ```
    /// # use keepfresh::flight::Start;
    /// # use keepfresh::{machine::FlightId, runtime::MonoTime, AccessToken, TokenSet};
    /// # use std::sync::Arc;
    /// let wall = time::OffsetDateTime::UNIX_EPOCH;
    /// let old = Arc::new(TokenSet::new(AccessToken::new("a0"), None, wall, wall));
    /// let s = Start::new(FlightId(1), MonoTime::ZERO, None, None).with_replaced(vec![old]);
    /// assert_eq!(s.replaced.len(), 1);
    /// ```
    pub fn with_replaced<R: Into<Replaced>>(
        mut self,
        replaced: impl IntoIterator<Item = R>,
    ) -> Self {
        self.replaced = replaced.into_iter().map(Into::into).collect();
        self
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
    /// The store answered with a set this process had replaced (it lost an acknowledged save,
    /// a read came from a lagging replica, or another writer rewrote it while a save was owed):
    /// ignored, and written over by the next save.
    StoreBehind,
    /// The provider answered a refresh of this set, but the flight ends adopting the store's
    /// set instead of its answer (reported next): this set is older than anything the process
    /// holds from now on (see [`Start::replaced`]). [`Report::Refreshed`] and a kept set in
    /// [`Report::Failed`] say as much of the set they replace.
    RefreshedFrom(Arc<TokenSet>),
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

//! The credential's life as a pure state machine: inputs and the current time in, decisions out.
//!
//! [`Machine`] does no I/O, reads no clock, spawns nothing and never awaits. The concurrent
//! shell ([`Credential`](crate::Credential)) feeds it [`Input`]s and carries out the
//! [`Decision`]s; proptest, the fuzzer and the simulator drive it directly.
//!
//! ```
//! use keepfresh::machine::{Action, Grant, Input, Machine, Phase};
//! use keepfresh::runtime::MonoTime;
//! use keepfresh::RefreshPolicy;
//! use std::time::Duration;
//!
//! let secs = |s| MonoTime::from_duration(Duration::from_secs(s));
//! let policy = RefreshPolicy::builder().jitter_seed(1).build().unwrap();
//! let mut m = Machine::new(policy);
//! assert_eq!(m.phase(), &Phase::Empty);
//!
//! m.handle(Input::Authorize { now: secs(0), grant: Grant::new(secs(0), Duration::from_secs(3600), true) });
//! assert_eq!(m.phase(), &Phase::Fresh);
//! assert_eq!(m.handle(Input::Demand { now: secs(10) }).action, Action::Serve);
//!
//! // Inside the refresh window: the caller is served at once and one refresh starts.
//! let d = m.handle(Input::Demand { now: secs(3100) });
//! assert_eq!(d.action, Action::Serve);
//! let flight = d.start_refresh.expect("one refresh");
//! // A second caller joins nothing new.
//! assert!(m.handle(Input::Demand { now: secs(3101) }).start_refresh.is_none());
//! m.handle(Input::RefreshSucceeded { now: secs(3102), flight, grant: Grant::new(secs(3100), Duration::from_secs(3600), true) });
//! assert_eq!(m.phase(), &Phase::Fresh);
//! assert_eq!(m.generation(), 2);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{JitterRng, RefreshPolicy, TokenTiming};
use crate::refresher::ErrorClass;
use crate::runtime::MonoTime;

/// Why a credential can no longer refresh on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReauthReason {
    /// The provider issued no refresh token; raised at the refresh point, before expiry.
    NoRefreshToken,
    /// The provider answered `invalid_grant` (revoked, expired or replayed refresh token).
    InvalidGrant,
    /// A refresh response was lost and the retry with the same refresh token was refused: the
    /// provider had rotated it.
    ResponseLost,
    /// The client credentials were refused repeatedly (`invalid_client`).
    InvalidClient,
    /// A configuration error (`invalid_scope`, `unsupported_grant_type`, …).
    Configuration,
    /// The resource server rejected a token that cannot be refreshed.
    TokenRejected,
}

impl fmt::Display for ReauthReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReauthReason::NoRefreshToken => "no refresh token was issued",
            ReauthReason::InvalidGrant => "the refresh token was rejected (invalid_grant)",
            ReauthReason::ResponseLost => "refresh response lost and the refresh token was rotated",
            ReauthReason::InvalidClient => "the client credentials were rejected (invalid_client)",
            ReauthReason::Configuration => "the token request is misconfigured",
            ReauthReason::TokenRejected => "the token was rejected and cannot be refreshed",
        })
    }
}

/// The observable phase of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Never authorized: no token, no refresh in flight.
    Empty,
    /// A valid token before its refresh point.
    Fresh,
    /// A valid token inside its jittered refresh window; served while a refresh is started.
    RefreshDue,
    /// A refresh is in flight.
    Refreshing {
        /// Whether a still-valid token is being served meanwhile.
        serving: bool,
    },
    /// The token is expired (or was rejected) and no refresh is running: callers must wait.
    Expired,
    /// The last refresh failed; the next one waits until `until`. A still-valid token is served.
    BackingOff {
        /// When the next refresh may start.
        until: MonoTime,
        /// Consecutive failed attempts.
        attempts: u32,
        /// The class of the last failure.
        last_error: ErrorClass,
    },
    /// The credential needs a new authorization; terminal until [`Input::Authorize`]. A token
    /// that is still valid keeps being served.
    ReauthRequired {
        /// Why.
        reason: ReauthReason,
    },
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Empty => f.write_str("empty"),
            Phase::Fresh => f.write_str("fresh"),
            Phase::RefreshDue => f.write_str("refresh-due"),
            Phase::Refreshing { serving: true } => f.write_str("refreshing (serving)"),
            Phase::Refreshing { serving: false } => f.write_str("refreshing"),
            Phase::Expired => f.write_str("expired"),
            Phase::BackingOff {
                until,
                attempts,
                last_error,
            } => write!(
                f,
                "backing-off until {until} after {attempts} {last_error} failure(s)"
            ),
            Phase::ReauthRequired { reason } => write!(f, "reauth-required: {reason}"),
        }
    }
}

/// A new token set as the machine sees it: timing only, no secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// When it was issued (the refresh request's send time), on the monotonic clock.
    pub issued: MonoTime,
    /// Its validated lifetime (see [`RefreshPolicy::lifetime`]).
    pub lifetime: Duration,
    /// Whether a refresh token is available for the next refresh.
    pub has_refresh_token: bool,
}

impl Grant {
    /// A grant issued at `issued` living `lifetime`.
    ///
    /// ```
    /// # use keepfresh::machine::Grant;
    /// # use keepfresh::runtime::MonoTime;
    /// let g = Grant::new(MonoTime::ZERO, std::time::Duration::from_secs(60), true);
    /// assert!(g.has_refresh_token);
    /// ```
    pub fn new(issued: MonoTime, lifetime: Duration, has_refresh_token: bool) -> Self {
        Grant {
            issued,
            lifetime,
            has_refresh_token,
        }
    }
}

/// Identifies one refresh started by the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlightId(pub u64);

/// What moves the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A caller needs a token (the lock-free fast path could not serve it).
    Demand {
        /// The current monotonic time.
        now: MonoTime,
    },
    /// A resource server rejected the token of `generation` (HTTP 401).
    Invalidate {
        /// The current monotonic time.
        now: MonoTime,
        /// The generation of the rejected token.
        generation: u64,
    },
    /// The refresh `flight` produced a new token set (from the provider, or adopted from the
    /// store because another process refreshed first).
    RefreshSucceeded {
        /// The current monotonic time.
        now: MonoTime,
        /// The refresh that finished.
        flight: FlightId,
        /// The new token set.
        grant: Grant,
    },
    /// The refresh `flight` failed.
    RefreshFailed {
        /// The current monotonic time.
        now: MonoTime,
        /// The refresh that finished.
        flight: FlightId,
        /// The failure's class.
        class: ErrorClass,
        /// The provider's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// New tokens from outside a refresh: an initial load, a login, a change seen in the store.
    Authorize {
        /// The current monotonic time.
        now: MonoTime,
        /// The new token set.
        grant: Grant,
    },
    /// Time passed (a timer fired); in eager mode this may start a refresh.
    Tick {
        /// The current monotonic time.
        now: MonoTime,
    },
    /// The host is shutting down: no refresh starts from now on. A valid token is still served.
    Close {
        /// The current monotonic time.
        now: MonoTime,
    },
}

impl Input {
    /// The time carried by the input.
    ///
    /// ```
    /// # use keepfresh::machine::Input;
    /// # use keepfresh::runtime::MonoTime;
    /// assert_eq!(Input::Tick { now: MonoTime::ZERO }.now(), MonoTime::ZERO);
    /// ```
    pub fn now(&self) -> MonoTime {
        match self {
            Input::Demand { now }
            | Input::Invalidate { now, .. }
            | Input::RefreshSucceeded { now, .. }
            | Input::RefreshFailed { now, .. }
            | Input::Authorize { now, .. }
            | Input::Tick { now }
            | Input::Close { now } => *now,
        }
    }
}

/// Why a caller cannot be given a token now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// No token and no way to get one: never authorized.
    NotAuthorized,
    /// The token is unusable and the last refresh failed; retry is not before `until`.
    BackingOff {
        /// When the next refresh may start.
        until: MonoTime,
        /// The class of the last failure.
        last_error: ErrorClass,
    },
    /// Re-authorization is required.
    Reauth(ReauthReason),
    /// The credential was shut down and starts no refresh.
    Closed,
}

/// What the shell should do with the caller behind an input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Hand out the current token.
    Serve,
    /// Wait for the refresh in flight.
    Wait,
    /// Answer with this refusal.
    Fail(Refusal),
    /// Nothing for a caller (results, ticks, ignored invalidations).
    None,
}

/// The machine's answer to one input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// What to do with the caller.
    pub action: Action,
    /// Start this refresh (at most one is ever in flight).
    pub start_refresh: Option<FlightId>,
}

impl Decision {
    fn act(action: Action) -> Self {
        Decision {
            action,
            start_refresh: None,
        }
    }
}

/// A phase change, with the time it was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// When the change was observed.
    pub at: MonoTime,
    /// The phase before.
    pub from: Phase,
    /// The phase after.
    pub to: Phase,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Current {
    generation: u64,
    /// When this set was installed (on the machine's clock): the keep-alive period counts from
    /// here.
    installed: MonoTime,
    timing: TokenTiming,
    has_refresh_token: bool,
    rejected: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    until: MonoTime,
    attempts: u32,
    last_error: ErrorClass,
}

/// The pure token-lifecycle state machine. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Machine {
    policy: Arc<RefreshPolicy>,
    rng: JitterRng,
    generation: u64,
    current: Option<Current>,
    flight: Option<FlightId>,
    next_flight: u64,
    backoff: Option<Backoff>,
    reauth: Option<ReauthReason>,
    invalid_client_streak: u32,
    after_ambiguous: bool,
    closed: bool,
    /// The time of the last input.
    last_now: MonoTime,
    phase: Phase,
    transitions: Vec<Transition>,
}

impl Machine {
    /// A machine in [`Phase::Empty`] with the given policy (its jitter RNG is seeded from the
    /// policy).
    ///
    /// See the [module example](self).
    pub fn new(policy: RefreshPolicy) -> Self {
        Self::shared(Arc::new(policy))
    }

    /// Like [`Machine::new`], sharing a policy with its owner instead of copying it.
    ///
    /// ```
    /// # use keepfresh::machine::Machine;
    /// # use std::sync::Arc;
    /// let policy = Arc::new(keepfresh::RefreshPolicy::default());
    /// let m = Machine::shared(policy.clone());
    /// assert!(std::ptr::eq(m.policy(), &*policy));
    /// ```
    pub fn shared(policy: Arc<RefreshPolicy>) -> Self {
        let rng = policy.rng();
        Machine {
            policy,
            rng,
            generation: 0,
            current: None,
            flight: None,
            next_flight: 1,
            backoff: None,
            reauth: None,
            invalid_client_streak: 0,
            after_ambiguous: false,
            closed: false,
            last_now: MonoTime::ZERO,
            phase: Phase::Empty,
            transitions: Vec::new(),
        }
    }

    /// The phase as of the last input.
    ///
    /// See the [module example](self).
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The generation of the current token set: 0 before the first, +1 for each new one.
    ///
    /// See the [module example](self).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether [`Input::Close`] was received: no refresh starts any more.
    ///
    /// ```
    /// # use keepfresh::machine::{Input, Machine};
    /// # use keepfresh::runtime::MonoTime;
    /// let mut m = Machine::new(Default::default());
    /// m.handle(Input::Close { now: MonoTime::ZERO });
    /// assert!(m.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The refresh in flight, if any.
    ///
    /// ```
    /// # use keepfresh::machine::Machine;
    /// assert!(Machine::new(Default::default()).flight().is_none());
    /// ```
    pub fn flight(&self) -> Option<FlightId> {
        self.flight
    }

    /// Consecutive failed refreshes since the last success (0 when the last refresh succeeded).
    ///
    /// ```
    /// # use keepfresh::machine::Machine;
    /// assert_eq!(Machine::new(Default::default()).failed_attempts(), 0);
    /// ```
    pub fn failed_attempts(&self) -> u32 {
        self.backoff.map_or(0, |b| b.attempts)
    }

    /// The policy the machine follows.
    ///
    /// ```
    /// # use keepfresh::machine::Machine;
    /// assert!(Machine::new(Default::default()).policy().serve_stale());
    /// ```
    pub fn policy(&self) -> &RefreshPolicy {
        &self.policy
    }

    /// The timing of the current token, if any.
    ///
    /// ```
    /// # use keepfresh::machine::Machine;
    /// assert!(Machine::new(Default::default()).timing().is_none());
    /// ```
    pub fn timing(&self) -> Option<TokenTiming> {
        self.current.as_ref().map(|c| c.timing)
    }

    /// Whether the current token may be handed out at `now`: it exists, was not rejected by a
    /// resource server, and `now` is before its serving deadline.
    ///
    /// ```
    /// # use keepfresh::machine::Machine;
    /// # use keepfresh::runtime::MonoTime;
    /// assert!(!Machine::new(Default::default()).token_valid_at(MonoTime::ZERO));
    /// ```
    pub fn token_valid_at(&self, now: MonoTime) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| !c.rejected && now < c.timing.usable_until)
    }

    /// Whether the current token is past its serving deadline but not past the expiry the
    /// provider stated (and not rejected): inside the skew allowance. Such a token is served
    /// only when the alternative is an error (refreshes failing, re-authorization pending).
    ///
    /// ```
    /// # use keepfresh::machine::{Grant, Input, Machine};
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// let mut m = Machine::new(Default::default());
    /// let at = |s| MonoTime::from_duration(Duration::from_secs(s));
    /// m.handle(Input::Authorize { now: at(0), grant: Grant::new(at(0), Duration::from_secs(3600), true) });
    /// assert!(!m.token_in_grace_at(at(3000)));
    /// assert!(m.token_in_grace_at(at(3580))); // the last 30 s: the default skew allowance
    /// assert!(!m.token_in_grace_at(at(3600)));
    /// ```
    pub fn token_in_grace_at(&self, now: MonoTime) -> bool {
        self.current.as_ref().is_some_and(|c| {
            !c.rejected && now >= c.timing.usable_until && now < c.timing.expires_at
        })
    }

    /// Until when the shell may hand out the current token without consulting the machine:
    /// the refresh point while fresh; the serving deadline while a refresh runs (with
    /// serve-stale), while backing off, or after re-authorization became necessary. Callers
    /// arriving later must send [`Input::Demand`]. [`MonoTime::ZERO`] when there is nothing to
    /// serve.
    ///
    /// ```
    /// # use keepfresh::machine::{Grant, Input, Machine};
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// let mut m = Machine::new(Default::default());
    /// assert_eq!(m.fast_path_until(), MonoTime::ZERO);
    /// m.handle(Input::Authorize { now: MonoTime::ZERO, grant: Grant::new(MonoTime::ZERO, Duration::from_secs(100), true) });
    /// assert_eq!(m.fast_path_until(), m.timing().unwrap().refresh_at);
    /// ```
    pub fn fast_path_until(&self) -> MonoTime {
        let Some(c) = &self.current else {
            return MonoTime::ZERO;
        };
        if c.rejected {
            return MonoTime::ZERO;
        }
        let stale_ok = self.policy.serve_stale();
        let deadline = c.timing.usable_until;
        if self.reauth.is_some() || (self.flight.is_some() && stale_ok) {
            deadline
        } else if let (Some(b), true, None) =
            (self.backoff_active(self.last_now), stale_ok, self.flight)
        {
            b.until.min(deadline)
        } else {
            c.timing.refresh_at
        }
    }

    /// The next instant at which time alone changes something (a refresh point, a backoff end,
    /// an expiry), for the shell's timer. `None` when nothing is pending.
    ///
    /// ```
    /// # use keepfresh::machine::{Grant, Input, Machine};
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// let mut m = Machine::new(Default::default());
    /// assert_eq!(m.next_deadline(MonoTime::ZERO), None);
    /// m.handle(Input::Authorize { now: MonoTime::ZERO, grant: Grant::new(MonoTime::ZERO, Duration::from_secs(100), true) });
    /// assert_eq!(m.next_deadline(MonoTime::ZERO), Some(m.timing().unwrap().refresh_at));
    /// ```
    pub fn next_deadline(&self, now: MonoTime) -> Option<MonoTime> {
        let mut next: Option<MonoTime> = None;
        let mut consider = |t: MonoTime| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(c) = &self.current {
            consider(c.timing.refresh_at);
            consider(c.timing.usable_until);
            if let (Some(k), true) = (self.policy.keep_alive(), c.has_refresh_token) {
                consider(c.installed.saturating_add(k));
            }
        }
        if let Some(b) = self.backoff {
            consider(b.until);
        }
        next
    }

    /// The next instant at which a [`Input::Tick`] could start a refresh without a caller: the
    /// refresh point in eager mode, the end of a backoff after an ambiguous answer, the
    /// keep-alive point. `None` when time alone will start nothing. The shell's timer sleeps
    /// until then (phase changes such as `Fresh` → `RefreshDue` need no tick: they are observed
    /// with the next input).
    ///
    /// ```
    /// # use keepfresh::machine::{Grant, Input, Machine};
    /// # use keepfresh::runtime::MonoTime;
    /// # use keepfresh::RefreshPolicy;
    /// # use std::time::Duration;
    /// let lazy = RefreshPolicy::builder().keep_alive(None).build().unwrap();
    /// let mut m = Machine::new(lazy);
    /// m.handle(Input::Authorize { now: MonoTime::ZERO, grant: Grant::new(MonoTime::ZERO, Duration::from_secs(100), true) });
    /// assert_eq!(m.next_tick(MonoTime::ZERO), None);
    /// let mut m = Machine::new(RefreshPolicy::builder().eager(true).build().unwrap());
    /// m.handle(Input::Authorize { now: MonoTime::ZERO, grant: Grant::new(MonoTime::ZERO, Duration::from_secs(100), true) });
    /// assert_eq!(m.next_tick(MonoTime::ZERO), Some(m.timing().unwrap().refresh_at));
    /// ```
    pub fn next_tick(&self, now: MonoTime) -> Option<MonoTime> {
        if self.closed || self.reauth.is_some() {
            return None;
        }
        let c = self.current.as_ref().filter(|c| c.has_refresh_token)?;
        let mut next: Option<MonoTime> = None;
        let mut consider = |t: MonoTime| {
            let t = t.max(now);
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        let backoff_end = self.backoff.map(|b| b.until);
        if self.policy.eager() {
            // A rejected token is due at once (after any backoff).
            let due = if c.rejected { now } else { c.timing.refresh_at };
            consider(due.max(backoff_end.unwrap_or(MonoTime::ZERO)));
        }
        if let (true, Some(end)) = (self.after_ambiguous, backoff_end) {
            consider(end);
        }
        if let Some(k) = self.policy.keep_alive() {
            consider(
                c.installed
                    .saturating_add(k)
                    .max(backoff_end.unwrap_or(MonoTime::ZERO)),
            );
        }
        next.filter(|t| *t > now || self.flight.is_none())
    }

    /// Takes the phase changes recorded since the last call.
    ///
    /// ```
    /// # use keepfresh::machine::{Grant, Input, Machine, Phase};
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// let mut m = Machine::new(Default::default());
    /// m.handle(Input::Authorize { now: MonoTime::ZERO, grant: Grant::new(MonoTime::ZERO, Duration::from_secs(100), true) });
    /// let t = m.take_transitions();
    /// assert_eq!((t[0].from.clone(), t[0].to.clone()), (Phase::Empty, Phase::Fresh));
    /// assert!(m.take_transitions().is_empty());
    /// ```
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.transitions)
    }

    /// Feeds one input and returns the decision. Inputs are expected to carry non-decreasing
    /// times; the machine never panics when they do not.
    ///
    /// See the [module example](self).
    pub fn handle(&mut self, input: Input) -> Decision {
        let now = input.now();
        self.last_now = self.last_now.max(now);
        let decision = match input {
            Input::Demand { now } => self.on_demand(now),
            Input::Invalidate { now, generation } => self.on_invalidate(now, generation),
            Input::RefreshSucceeded { flight, grant, .. } => {
                if self.flight != Some(flight) {
                    Decision::act(Action::None)
                } else {
                    self.flight = None;
                    self.backoff = None;
                    self.invalid_client_streak = 0;
                    self.after_ambiguous = false;
                    self.reauth = None;
                    self.install(now, grant);
                    Decision::act(Action::None)
                }
            }
            Input::RefreshFailed {
                now,
                flight,
                class,
                retry_after,
            } => {
                if self.flight == Some(flight) {
                    self.flight = None;
                    self.on_failure(now, class, retry_after);
                }
                Decision::act(Action::None)
            }
            Input::Authorize { grant, .. } => {
                // A login (or a change adopted from outside a refresh) supersedes the refresh in
                // flight: that refresh started from older tokens, and its result must never
                // replace these.
                self.flight = None;
                self.backoff = None;
                self.invalid_client_streak = 0;
                self.after_ambiguous = false;
                self.reauth = None;
                self.install(now, grant);
                Decision::act(Action::None)
            }
            Input::Tick { now } => self.on_tick(now),
            Input::Close { .. } => {
                self.closed = true;
                Decision::act(Action::None)
            }
        };
        let decision = self.refuse_when_closed(now, decision);
        self.update_phase(now);
        decision
    }

    /// After [`Input::Close`], a flight the rules would start is not started: its caller gets
    /// the valid token, or a refusal.
    fn refuse_when_closed(&mut self, now: MonoTime, mut decision: Decision) -> Decision {
        if !self.closed {
            return decision;
        }
        if let Some(id) = decision.start_refresh.take() {
            if self.flight == Some(id) {
                self.flight = None;
                self.next_flight -= 1;
            }
            if decision.action == Action::Wait {
                decision.action = if self.token_valid_at(now) || self.token_in_grace_at(now) {
                    Action::Serve
                } else {
                    Action::Fail(Refusal::Closed)
                };
            }
        }
        decision
    }

    fn install(&mut self, now: MonoTime, grant: Grant) {
        self.generation += 1;
        let timing = self
            .policy
            .timing(grant.issued, grant.lifetime, &mut self.rng);
        self.current = Some(Current {
            generation: self.generation,
            installed: now,
            timing,
            has_refresh_token: grant.has_refresh_token,
            rejected: false,
        });
    }

    fn start_flight(&mut self) -> FlightId {
        debug_assert!(self.flight.is_none());
        let id = FlightId(self.next_flight);
        self.next_flight += 1;
        self.flight = Some(id);
        id
    }

    fn backoff_active(&self, now: MonoTime) -> Option<Backoff> {
        self.backoff.filter(|b| now < b.until)
    }

    /// Raises re-authorization for a token without refresh token at its refresh point.
    fn note_time(&mut self, now: MonoTime) {
        if self.reauth.is_none()
            && let Some(c) = &self.current
            && !c.has_refresh_token
            && (now >= c.timing.refresh_at || c.rejected)
        {
            self.reauth = Some(if c.rejected {
                ReauthReason::TokenRejected
            } else {
                ReauthReason::NoRefreshToken
            });
        }
    }

    fn on_demand(&mut self, now: MonoTime) -> Decision {
        self.note_time(now);
        let valid = self.token_valid_at(now);
        let last_resort = valid || self.token_in_grace_at(now);
        if let Some(reason) = self.reauth {
            return Decision::act(if last_resort {
                Action::Serve
            } else {
                Action::Fail(Refusal::Reauth(reason))
            });
        }
        let Some(c) = &self.current else {
            return Decision::act(if self.flight.is_some() {
                Action::Wait
            } else {
                Action::Fail(Refusal::NotAuthorized)
            });
        };
        let before_refresh_point = now < c.timing.refresh_at;
        let stale_ok = self.policy.serve_stale();
        if self.flight.is_some() {
            return Decision::act(if valid && (stale_ok || before_refresh_point) {
                Action::Serve
            } else {
                Action::Wait
            });
        }
        if valid && before_refresh_point {
            return Decision::act(Action::Serve);
        }
        if let Some(b) = self.backoff_active(now) {
            // Refreshing is failing: a token that is still valid — or, as a last resort, not
            // yet past its stated expiry — beats an error.
            return Decision::act(if last_resort {
                Action::Serve
            } else {
                Action::Fail(Refusal::BackingOff {
                    until: b.until,
                    last_error: b.last_error,
                })
            });
        }
        let flight = self.start_flight();
        Decision {
            action: if valid && stale_ok {
                Action::Serve
            } else {
                Action::Wait
            },
            start_refresh: Some(flight),
        }
    }

    fn on_invalidate(&mut self, now: MonoTime, generation: u64) -> Decision {
        let Some(c) = self.current.as_mut() else {
            return Decision::act(Action::None);
        };
        if c.generation != generation || c.rejected {
            return Decision::act(Action::None);
        }
        // What time alone already decided (re-authorization at the refresh point of a token
        // without a refresh token) comes before the rejection.
        self.note_time(now);
        let Some(c) = self.current.as_mut() else {
            return Decision::act(Action::None);
        };
        c.rejected = true;
        let has_rt = c.has_refresh_token;
        self.note_time(now);
        if self.flight.is_some() || self.reauth.is_some() || !has_rt {
            return Decision::act(Action::None);
        }
        if self.backoff_active(now).is_some() {
            return Decision::act(Action::None);
        }
        Decision {
            action: Action::None,
            start_refresh: Some(self.start_flight()),
        }
    }

    fn on_failure(&mut self, now: MonoTime, class: ErrorClass, retry_after: Option<Duration>) {
        let terminal = match class {
            ErrorClass::InvalidGrant => Some(if self.after_ambiguous {
                ReauthReason::ResponseLost
            } else {
                ReauthReason::InvalidGrant
            }),
            ErrorClass::Configuration => Some(ReauthReason::Configuration),
            ErrorClass::InvalidClient => {
                self.invalid_client_streak += 1;
                (self.invalid_client_streak >= self.policy.invalid_client_threshold())
                    .then_some(ReauthReason::InvalidClient)
            }
            ErrorClass::Transient | ErrorClass::Ambiguous => None,
        };
        if class != ErrorClass::InvalidClient {
            self.invalid_client_streak = 0;
        }
        if let Some(reason) = terminal {
            self.reauth = Some(reason);
            self.backoff = None;
            return;
        }
        if class == ErrorClass::Ambiguous {
            self.after_ambiguous = true;
        }
        let attempts = self.backoff.map_or(0, |b| b.attempts) + 1;
        let delay = self
            .policy
            .backoff_delay(attempts, retry_after, &mut self.rng);
        self.backoff = Some(Backoff {
            until: now.saturating_add(delay),
            attempts,
            last_error: class,
        });
    }

    fn on_tick(&mut self, now: MonoTime) -> Decision {
        self.note_time(now);
        if self.flight.is_some() || self.reauth.is_some() || self.backoff_active(now).is_some() {
            return Decision::act(Action::None);
        }
        let due = match &self.current {
            Some(c) if c.has_refresh_token => {
                let refresh_point = now >= c.timing.refresh_at || c.rejected;
                // Eager mode refreshes at the refresh point whether or not anyone asks; after an
                // ambiguous failure the retry runs on the timer too (the provider may hold a
                // rotation only for its grace window); and an idle credential is refreshed once
                // per keep-alive period so that a refresh token that expires after inactivity
                // stays alive.
                (self.policy.eager() && refresh_point)
                    || (self.after_ambiguous && self.backoff.is_some())
                    || self
                        .policy
                        .keep_alive()
                        .is_some_and(|k| now >= c.installed.saturating_add(k))
            }
            _ => false,
        };
        if due {
            Decision {
                action: Action::None,
                start_refresh: Some(self.start_flight()),
            }
        } else {
            Decision::act(Action::None)
        }
    }

    fn compute_phase(&self, now: MonoTime) -> Phase {
        if let Some(reason) = self.reauth {
            return Phase::ReauthRequired { reason };
        }
        let valid = self.token_valid_at(now);
        if self.flight.is_some() {
            return Phase::Refreshing {
                serving: valid && self.policy.serve_stale(),
            };
        }
        let Some(c) = &self.current else {
            return Phase::Empty;
        };
        if let Some(b) = self.backoff_active(now) {
            return Phase::BackingOff {
                until: b.until,
                attempts: b.attempts,
                last_error: b.last_error,
            };
        }
        if !valid {
            Phase::Expired
        } else if now >= c.timing.refresh_at {
            Phase::RefreshDue
        } else {
            Phase::Fresh
        }
    }

    fn update_phase(&mut self, now: MonoTime) {
        self.note_time(now);
        let next = self.compute_phase(now);
        if next != self.phase {
            let from = std::mem::replace(&mut self.phase, next.clone());
            self.transitions.push(Transition {
                at: now,
                from,
                to: next,
            });
        }
    }
}

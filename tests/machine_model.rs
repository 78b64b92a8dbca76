//! State-machine tests of the pure [`Machine`] against a reference model written from the
//! engine's rules (not from the machine's code), compared after every input; plus property tests
//! of the policy's timing and of the token-response parsers on arbitrary input.
//!
//! The rules the model follows, in brief (the numbers are referred to below):
//!
//! 1. Every `Authorize` and accepted `RefreshSucceeded` installs a new set, generation + 1, with
//!    timing from `policy.timing` drawn from the policy-seeded jitter RNG (one draw per install,
//!    one `backoff_delay` draw per failure that backs off, in input order).
//! 2. At most one flight. A valid token before its refresh point is served and starts nothing;
//!    at/after it (or with an invalid token), with no flight and no active backoff, one flight
//!    starts and the caller is served (valid and serve-stale) or waits. During a flight: served
//!    if valid and (serve-stale or before the refresh point), else waits. No token: wait for a
//!    flight, else `NotAuthorized`.
//! 3. `Invalidate` of the current, not yet rejected generation rejects it and starts a flight
//!    when there is a refresh token, no flight, no re-authorization and no active backoff.
//! 4. `RefreshSucceeded` of the current flight installs its grant and clears backoff, the
//!    `invalid_client` streak, re-authorization and the after-ambiguous flag; other ids are
//!    ignored.
//! 5. `RefreshFailed` of the current flight: `invalid_grant` → re-authorization (`ResponseLost`
//!    after an ambiguous failure since the last install), configuration → re-authorization,
//!    `invalid_client` → re-authorization at the threshold of consecutive ones, else backoff;
//!    transient/ambiguous → backoff `now + backoff_delay(attempts, retry_after)`, attempts
//!    counted since the last install. Non-`invalid_client` failures reset the streak;
//!    re-authorization clears the backoff.
//! 6. `Authorize` drops the flight (its result is ignored later) and clears backoff, streak,
//!    re-authorization and the flag before installing.
//! 7. While backing off (`now < until`): nothing starts; valid, or as a last resort in-skew-band,
//!    tokens are served; else `BackingOff`.
//! 8. Re-authorization: valid or in-skew-band tokens are served, else `Reauth(reason)`; nothing
//!    starts. A token without refresh token raises it at its refresh point (`NoRefreshToken`),
//!    or when rejected (`TokenRejected`).
//! 9. `Tick` starts a flight (refresh token, no flight, no re-authorization, no active backoff)
//!    when eager and due (or rejected), after an ambiguous failure with a backoff recorded, or
//!    when the keep-alive period since the install has passed.
//! 10. After `Close` nothing starts; a caller that would have waited for the flight it would
//!     have started is served a valid/in-skew-band token, else `Closed`.
//! 11. `next_deadline`: the earliest future refresh point, serving deadline, install +
//!     keep-alive (with a refresh token) or backoff end.
//! 12. `fast_path_until`: see [`Model::fast_path_until`].
//! 13. Phase precedence: reauth > refreshing > empty > backing off > expired > due > fresh.

use std::collections::BTreeSet;
use std::time::Duration;

use keepfresh::machine::{Action, FlightId, Grant, Input, Machine, Phase, Refusal};
use keepfresh::oauth::{parse_retry_after, parse_token_response, HttpAnswer};
use keepfresh::policy::{JitterRng, TokenTiming};
use keepfresh::runtime::MonoTime;
use keepfresh::{ErrorClass, ReauthReason, RefreshPolicy};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const SEC: u64 = 1_000_000_000;

/// Which flight id a result names.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The flight in progress (a stale id when there is none).
    Current,
    /// A flight that is not in progress: an earlier one (picked by index) or one never started.
    Stale(u8),
}

/// An instant of the current state that time can jump to.
#[derive(Clone, Copy, Debug)]
enum Landmark {
    RefreshPoint,
    UsableUntil,
    ExpiresAt,
    BackoffEnd,
    KeepAlive,
    NextDeadline,
}

#[derive(Clone, Debug)]
enum Op {
    /// Let this many milliseconds pass.
    Advance(u64),
    /// Move the clock to a landmark plus `offset_ns` (-1, 0 or +1; never backwards).
    Jump {
        to: Landmark,
        offset_ns: i8,
    },
    Demand,
    /// Invalidate the current generation minus `back` (-1: a generation not issued yet).
    Invalidate {
        back: i64,
    },
    Succeed {
        expires_in: Option<i64>,
        has_rt: bool,
        target: Target,
    },
    Fail {
        class: ErrorClass,
        retry_after: Option<u64>,
        target: Target,
    },
    /// A login or tokens from outside a refresh, issued `ago_ms` before now.
    Authorize {
        expires_in: Option<i64>,
        has_rt: bool,
        ago_ms: u64,
    },
    Tick,
    Close,
}

fn class() -> impl Strategy<Value = ErrorClass> {
    prop_oneof![
        3 => Just(ErrorClass::Transient),
        1 => Just(ErrorClass::InvalidGrant),
        2 => Just(ErrorClass::InvalidClient),
        1 => Just(ErrorClass::Configuration),
        4 => Just(ErrorClass::Ambiguous),
    ]
}

fn expires_in() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        (-100_000i64..0).prop_map(Some),
        (1i64..120).prop_map(Some),
        (120i64..100_000).prop_map(Some),
        Just(Some(i64::from(i32::MAX) + 1)),
        Just(Some(i64::MAX)),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        9 => Just(Target::Current),
        1 => any::<u8>().prop_map(Target::Stale),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => prop_oneof![
            0u64..2_000,
            0u64..120_000,
            0u64..4_000_000,
        ].prop_map(Op::Advance),
        8 => (
            prop_oneof![
                Just(Landmark::RefreshPoint),
                Just(Landmark::UsableUntil),
                Just(Landmark::ExpiresAt),
                Just(Landmark::BackoffEnd),
                Just(Landmark::KeepAlive),
                Just(Landmark::NextDeadline),
            ],
            -1i8..=1,
        )
            .prop_map(|(to, offset_ns)| Op::Jump { to, offset_ns }),
        14 => Just(Op::Demand),
        3 => (-1i64..3).prop_map(|back| Op::Invalidate { back }),
        5 => (expires_in(), proptest::bool::weighted(0.9), target())
            .prop_map(|(expires_in, has_rt, target)| Op::Succeed { expires_in, has_rt, target }),
        6 => (class(), proptest::option::weighted(0.3, 0u64..4_000), target())
            .prop_map(|(class, retry_after, target)| Op::Fail { class, retry_after, target }),
        3 => (
            expires_in(),
            proptest::bool::weighted(0.85),
            prop_oneof![3 => Just(0u64), 1 => 0u64..200_000_000],
        )
            .prop_map(|(expires_in, has_rt, ago_ms)| Op::Authorize { expires_in, has_rt, ago_ms }),
        5 => Just(Op::Tick),
    ]
}

/// A run: mostly starting with a login, then random inputs, with `Close` inserted at
/// `close_at` (when that is within the run).
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let login = (expires_in(), proptest::bool::weighted(0.9)).prop_map(|(expires_in, has_rt)| {
        Op::Authorize {
            expires_in,
            has_rt,
            ago_ms: 0,
        }
    });
    (
        proptest::option::weighted(0.9, login),
        proptest::collection::vec(op(), 1..160),
        proptest::option::weighted(0.25, 0usize..160),
    )
        .prop_map(|(login, mut ops, close_at)| {
            if let Some(at) = close_at {
                ops.insert(at.min(ops.len()), Op::Close);
            }
            if let Some(login) = login {
                ops.insert(0, login);
            }
            ops
        })
}

#[derive(Clone, Debug)]
struct PolicyParams {
    seed: u64,
    eager: bool,
    serve_stale: bool,
    invalid_client_threshold: u32,
    window: (f64, f64),
    keep_alive: Option<Duration>,
}

fn keep_alive() -> impl Strategy<Value = Option<Duration>> {
    prop_oneof![
        Just(None),
        // Short: a few short lifetimes (the minimum is 30 s).
        (30u64..600).prop_map(|s| Some(Duration::from_secs(s))),
        // A few default (1 h) lifetimes.
        (600u64..20_000).prop_map(|s| Some(Duration::from_secs(s))),
    ]
}

fn policy_params() -> impl Strategy<Value = PolicyParams> {
    (
        any::<u64>(),
        any::<bool>(),
        proptest::bool::weighted(0.7),
        1u32..4,
        (0.05f64..0.95, 0.0f64..1.0),
        keep_alive(),
    )
        .prop_map(
            |(seed, eager, serve_stale, threshold, (lo, f), keep_alive)| {
                let hi = lo + (0.99 - lo) * f;
                PolicyParams {
                    seed,
                    eager,
                    serve_stale,
                    invalid_client_threshold: threshold,
                    window: (lo, hi),
                    keep_alive,
                }
            },
        )
}

impl PolicyParams {
    fn build(&self) -> RefreshPolicy {
        RefreshPolicy::builder()
            .jitter_seed(self.seed)
            .eager(self.eager)
            .serve_stale(self.serve_stale)
            .invalid_client_threshold(self.invalid_client_threshold)
            .refresh_window(self.window.0, self.window.1)
            .keep_alive(self.keep_alive)
            .build()
            .expect("valid policy")
    }
}

/// The current token set as the model sees it.
#[derive(Clone, Debug)]
struct Tok {
    generation: u64,
    /// When it was installed (the input's time): keep-alive counts from here.
    installed: MonoTime,
    timing: TokenTiming,
    has_rt: bool,
    rejected: bool,
}

#[derive(Clone, Copy, Debug)]
struct Backoff {
    until: MonoTime,
    attempts: u32,
    last_error: ErrorClass,
}

/// The reference model: the rules, written plainly.
#[derive(Debug)]
struct Model {
    policy: RefreshPolicy,
    /// The jitter RNG, seeded like the machine's and drawn in the same order (rule 1).
    rng: JitterRng,
    generation: u64,
    tok: Option<Tok>,
    flight: Option<FlightId>,
    backoff: Option<Backoff>,
    reauth: Option<ReauthReason>,
    invalid_client_streak: u32,
    after_ambiguous: bool,
    closed: bool,
}

impl Model {
    fn new(policy: RefreshPolicy, seed: u64) -> Self {
        Model {
            policy,
            rng: JitterRng::new(seed),
            generation: 0,
            tok: None,
            flight: None,
            backoff: None,
            reauth: None,
            invalid_client_streak: 0,
            after_ambiguous: false,
            closed: false,
        }
    }

    /// Not rejected and before the serving deadline.
    fn valid(&self, now: MonoTime) -> bool {
        self.tok
            .as_ref()
            .is_some_and(|t| !t.rejected && now < t.timing.usable_until)
    }

    /// Inside the skew band: past the serving deadline, before the stated expiry, not rejected.
    fn in_skew_band(&self, now: MonoTime) -> bool {
        self.tok.as_ref().is_some_and(|t| {
            !t.rejected && now >= t.timing.usable_until && now < t.timing.expires_at
        })
    }

    /// What rules 7, 8 and 10 serve when the alternative is an error.
    fn last_resort(&self, now: MonoTime) -> bool {
        self.valid(now) || self.in_skew_band(now)
    }

    /// Rule 7: backing off means `now < until`.
    fn backing_off(&self, now: MonoTime) -> Option<Backoff> {
        self.backoff.filter(|b| now < b.until)
    }

    /// Rule 8: a token without refresh token needs re-authorization from its refresh point on,
    /// or from its rejection on. Time-driven: checked at every input.
    fn raise_time_reauth(&mut self, now: MonoTime) {
        if self.reauth.is_some() {
            return;
        }
        if let Some(t) = &self.tok {
            if !t.has_rt && t.rejected {
                self.reauth = Some(ReauthReason::TokenRejected);
            } else if !t.has_rt && now >= t.timing.refresh_at {
                self.reauth = Some(ReauthReason::NoRefreshToken);
            }
        }
    }

    /// Rule 1.
    fn install(&mut self, now: MonoTime, grant: Grant) {
        self.generation += 1;
        let timing = self
            .policy
            .timing(grant.issued, grant.lifetime, &mut self.rng);
        self.tok = Some(Tok {
            generation: self.generation,
            installed: now,
            timing,
            has_rt: grant.has_refresh_token,
            rejected: false,
        });
    }

    /// Rules 2, 7, 8, 10: the caller's answer, and whether a flight starts.
    fn demand(&mut self, now: MonoTime) -> (Action, bool) {
        let valid = self.valid(now);
        if let Some(reason) = self.reauth {
            return if self.last_resort(now) {
                (Action::Serve, false)
            } else {
                (Action::Fail(Refusal::Reauth(reason)), false)
            };
        }
        let Some(t) = &self.tok else {
            return if self.flight.is_some() {
                (Action::Wait, false)
            } else {
                (Action::Fail(Refusal::NotAuthorized), false)
            };
        };
        let before_refresh_point = now < t.timing.refresh_at;
        let serve_stale = self.policy.serve_stale();
        if self.flight.is_some() {
            let serve = valid && (serve_stale || before_refresh_point);
            return (if serve { Action::Serve } else { Action::Wait }, false);
        }
        if valid && before_refresh_point {
            return (Action::Serve, false);
        }
        if let Some(b) = self.backing_off(now) {
            return if self.last_resort(now) {
                (Action::Serve, false)
            } else {
                (
                    Action::Fail(Refusal::BackingOff {
                        until: b.until,
                        last_error: b.last_error,
                    }),
                    false,
                )
            };
        }
        // A flight would start here.
        let serve = valid && serve_stale;
        if self.closed {
            // Rule 10: nothing starts; the caller that would have waited gets what there is.
            return if self.last_resort(now) {
                (Action::Serve, false)
            } else {
                (Action::Fail(Refusal::Closed), false)
            };
        }
        (if serve { Action::Serve } else { Action::Wait }, true)
    }

    /// Rule 3: whether a flight starts.
    fn invalidate(&mut self, now: MonoTime, generation: u64) -> bool {
        let Some(t) = self.tok.as_mut() else {
            return false;
        };
        if t.generation != generation || t.rejected {
            return false;
        }
        t.rejected = true;
        let has_rt = t.has_rt;
        self.raise_time_reauth(now);
        has_rt
            && self.flight.is_none()
            && self.reauth.is_none()
            && self.backing_off(now).is_none()
            && !self.closed
    }

    /// Rule 9: whether a flight starts.
    fn tick(&self, now: MonoTime) -> bool {
        let Some(t) = &self.tok else {
            return false;
        };
        if !t.has_rt
            || self.flight.is_some()
            || self.reauth.is_some()
            || self.backing_off(now).is_some()
            || self.closed
        {
            return false;
        }
        let eager_due = self.policy.eager() && (now >= t.timing.refresh_at || t.rejected);
        let ambiguous_retry = self.after_ambiguous && self.backoff.is_some();
        let keep_alive = self
            .policy
            .keep_alive()
            .is_some_and(|k| now >= t.installed.saturating_add(k));
        eager_due || ambiguous_retry || keep_alive
    }

    /// Rule 4: whether the result is accepted.
    fn succeed(&mut self, now: MonoTime, flight: FlightId, grant: Grant) -> bool {
        if self.flight != Some(flight) {
            return false;
        }
        self.flight = None;
        self.backoff = None;
        self.invalid_client_streak = 0;
        self.reauth = None;
        self.after_ambiguous = false;
        self.install(now, grant);
        true
    }

    /// Rule 5: whether the result is accepted.
    fn fail(
        &mut self,
        now: MonoTime,
        flight: FlightId,
        class: ErrorClass,
        retry_after: Option<Duration>,
    ) -> bool {
        if self.flight != Some(flight) {
            return false;
        }
        self.flight = None;
        if class == ErrorClass::InvalidClient {
            self.invalid_client_streak += 1;
        } else {
            self.invalid_client_streak = 0;
        }
        let reauth = match class {
            ErrorClass::InvalidGrant if self.after_ambiguous => Some(ReauthReason::ResponseLost),
            ErrorClass::InvalidGrant => Some(ReauthReason::InvalidGrant),
            ErrorClass::Configuration => Some(ReauthReason::Configuration),
            ErrorClass::InvalidClient
                if self.invalid_client_streak >= self.policy.invalid_client_threshold() =>
            {
                Some(ReauthReason::InvalidClient)
            }
            _ => None,
        };
        if class == ErrorClass::Ambiguous {
            self.after_ambiguous = true;
        }
        match reauth {
            Some(reason) => {
                self.reauth = Some(reason);
                self.backoff = None;
            }
            None => {
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
        }
        true
    }

    /// Rule 6.
    fn authorize(&mut self, now: MonoTime, grant: Grant) {
        self.flight = None;
        self.backoff = None;
        self.invalid_client_streak = 0;
        self.reauth = None;
        self.after_ambiguous = false;
        self.install(now, grant);
    }

    /// Rule 13.
    fn phase(&self, now: MonoTime) -> Phase {
        if let Some(reason) = self.reauth {
            return Phase::ReauthRequired { reason };
        }
        let valid = self.valid(now);
        if self.flight.is_some() {
            return Phase::Refreshing {
                serving: valid && self.policy.serve_stale(),
            };
        }
        let Some(t) = &self.tok else {
            return Phase::Empty;
        };
        if let Some(b) = self.backing_off(now) {
            return Phase::BackingOff {
                until: b.until,
                attempts: b.attempts,
                last_error: b.last_error,
            };
        }
        if !valid {
            Phase::Expired
        } else if now >= t.timing.refresh_at {
            Phase::RefreshDue
        } else {
            Phase::Fresh
        }
    }

    /// Rule 12: the refresh point while fresh; the serving deadline while a flight runs with
    /// serve-stale, or under re-authorization; the earlier of the backoff end and the serving
    /// deadline while backing off with serve-stale and no flight; zero with no token or a
    /// rejected one. Only instants after `now` matter (the fast path is used from now on), so
    /// the comparison maps every instant at or before `now` to zero.
    fn fast_path_until(&self, now: MonoTime) -> MonoTime {
        let Some(t) = &self.tok else {
            return MonoTime::ZERO;
        };
        if t.rejected {
            return MonoTime::ZERO;
        }
        let serve_stale = self.policy.serve_stale();
        let until = if self.reauth.is_some() || (self.flight.is_some() && serve_stale) {
            t.timing.usable_until
        } else if let (Some(b), true, None) = (self.backing_off(now), serve_stale, self.flight) {
            b.until.min(t.timing.usable_until)
        } else {
            t.timing.refresh_at
        };
        future_only(until, now)
    }

    /// Rule 11.
    fn next_deadline(&self, now: MonoTime) -> Option<MonoTime> {
        let mut candidates = Vec::new();
        if let Some(t) = &self.tok {
            candidates.push(t.timing.refresh_at);
            candidates.push(t.timing.usable_until);
            if let (Some(k), true) = (self.policy.keep_alive(), t.has_rt) {
                candidates.push(t.installed.saturating_add(k));
            }
        }
        if let Some(b) = self.backoff {
            candidates.push(b.until);
        }
        candidates.into_iter().filter(|&t| t > now).min()
    }
}

/// An instant that only matters if it lies after `now`.
fn future_only(t: MonoTime, now: MonoTime) -> MonoTime {
    if t > now {
        t
    } else {
        MonoTime::ZERO
    }
}

struct Harness {
    machine: Machine,
    model: Model,
    now: MonoTime,
    /// When the flight in progress started (a success's grant is issued then).
    flight_started: MonoTime,
    /// Every flight id the machine ever started.
    started: BTreeSet<FlightId>,
}

impl Harness {
    fn new(params: &PolicyParams) -> Self {
        let policy = params.build();
        Harness {
            machine: Machine::new(policy.clone()),
            model: Model::new(policy, params.seed),
            now: MonoTime::ZERO,
            flight_started: MonoTime::ZERO,
            started: BTreeSet::new(),
        }
    }

    fn grant(&self, issued: MonoTime, expires_in: Option<i64>, has_rt: bool) -> Grant {
        let (lifetime, _) = self.model.policy.lifetime(expires_in);
        Grant::new(issued, lifetime, has_rt)
    }

    fn landmark(&self, to: Landmark) -> Option<MonoTime> {
        let t = self.model.tok.as_ref();
        match to {
            Landmark::RefreshPoint => t.map(|t| t.timing.refresh_at),
            Landmark::UsableUntil => t.map(|t| t.timing.usable_until),
            Landmark::ExpiresAt => t.map(|t| t.timing.expires_at),
            Landmark::BackoffEnd => self.model.backoff.map(|b| b.until),
            Landmark::KeepAlive => {
                let k = self.model.policy.keep_alive()?;
                t.map(|t| t.installed.saturating_add(k))
            }
            Landmark::NextDeadline => self.model.next_deadline(self.now),
        }
    }

    /// The id a result names.
    fn pick(&self, target: Target) -> FlightId {
        match (target, self.model.flight) {
            (Target::Current, Some(id)) => id,
            // Right after an `Authorize`, the flight it dropped.
            (Target::Current, None) => self.stale_flight(u8::MAX - 1),
            (Target::Stale(i), _) => self.stale_flight(i),
        }
    }

    /// A flight id that is not in progress: an earlier flight's, or one never started.
    fn stale_flight(&self, i: u8) -> FlightId {
        let earlier: Vec<FlightId> = self
            .started
            .iter()
            .copied()
            .filter(|&id| Some(id) != self.model.flight)
            .collect();
        if earlier.is_empty() || i == u8::MAX {
            FlightId(u64::MAX)
        } else if i == u8::MAX - 1 {
            earlier[earlier.len() - 1]
        } else {
            earlier[usize::from(i) % earlier.len()]
        }
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Advance(ms) => {
                self.now = now.saturating_add(Duration::from_millis(*ms));
                return;
            }
            Op::Jump { to, offset_ns } => {
                if let Some(at) = self.landmark(*to) {
                    let at = match offset_ns {
                        -1 => at.saturating_sub(Duration::from_nanos(1)),
                        1 => at.saturating_add(Duration::from_nanos(1)),
                        _ => at,
                    };
                    self.now = self.now.max(at);
                }
                return;
            }
            _ => {}
        }
        // Rule 8 is time-driven: a token without refresh token reaches re-authorization at its
        // refresh point whatever the input.
        self.model.raise_time_reauth(now);
        let before_flight = self.machine.flight();
        // A timer that fires and starts nothing is unobservable: the same input after such a
        // `Tick` at the same instant must have the same outcome.
        let mut ticked = self.machine.clone();
        let ticked = ticked
            .handle(Input::Tick { now })
            .start_refresh
            .is_none()
            .then_some(ticked);
        let mut expected_action = Action::None;
        let mut expected_start = false;

        let input = match op {
            Op::Advance(_) | Op::Jump { .. } => unreachable!(),
            Op::Demand => {
                (expected_action, expected_start) = self.model.demand(now);
                Input::Demand { now }
            }
            Op::Invalidate { back } => {
                let generation = self.model.generation.saturating_add_signed(-back);
                expected_start = self.model.invalidate(now, generation);
                Input::Invalidate { now, generation }
            }
            Op::Tick => {
                expected_start = self.model.tick(now);
                Input::Tick { now }
            }
            Op::Close => {
                self.model.closed = true;
                Input::Close { now }
            }
            Op::Succeed {
                expires_in,
                has_rt,
                target,
            } => {
                let flight = self.pick(*target);
                let grant = self.grant(self.flight_started, *expires_in, *has_rt);
                self.model.succeed(now, flight, grant);
                Input::RefreshSucceeded { now, flight, grant }
            }
            Op::Fail {
                class,
                retry_after,
                target,
            } => {
                let flight = self.pick(*target);
                let retry_after = retry_after.map(Duration::from_secs);
                if self.model.fail(now, flight, *class, retry_after)
                    && let Some(b) = self.model.backoff
                {
                    check_backoff_delay(
                        b.attempts,
                        retry_after,
                        b.until.saturating_duration_since(now),
                    );
                }
                Input::RefreshFailed {
                    now,
                    flight,
                    class: *class,
                    retry_after,
                }
            }
            Op::Authorize {
                expires_in,
                has_rt,
                ago_ms,
            } => {
                let issued = now.saturating_sub(Duration::from_millis(*ago_ms));
                let grant = self.grant(issued, *expires_in, *has_rt);
                self.model.authorize(now, grant);
                Input::Authorize { now, grant }
            }
        };
        let decision = self.machine.handle(input.clone());
        self.model.raise_time_reauth(now);

        // At most one flight, with a fresh id, started exactly when the rules say so.
        assert_eq!(
            decision.start_refresh.is_some(),
            expected_start,
            "start_refresh after {op:?} at {now:?}: {decision:?}"
        );
        if let Some(id) = decision.start_refresh {
            assert!(
                before_flight.is_none(),
                "refresh {id:?} started while {before_flight:?} in flight"
            );
            assert!(self.started.insert(id), "flight id {id:?} reused");
            self.model.flight = Some(id);
            self.flight_started = now;
        }
        assert_eq!(
            decision.action, expected_action,
            "action after {op:?} at {now:?}"
        );

        // Model-independent: what is served is servable, a waiter has a flight to wait for.
        match &decision.action {
            Action::Serve => assert!(
                self.machine.token_valid_at(now) || self.machine.token_in_grace_at(now),
                "served an unusable token"
            ),
            Action::Wait => assert!(self.machine.flight().is_some(), "wait without a flight"),
            _ => {}
        }

        if let Some(mut ticked) = ticked {
            let d = ticked.handle(input);
            assert_eq!(d, decision, "a Tick that started nothing changed {op:?}");
            assert_eq!(
                ticked.phase(),
                self.machine.phase(),
                "a Tick that started nothing changed the phase after {op:?}"
            );
        }
        self.compare(op);
        self.check_fast_path();
        self.check_next_tick();
    }

    /// Every observable of the machine against the model.
    fn compare(&self, op: &Op) {
        let now = self.now;
        let m = &self.machine;
        let model = &self.model;
        assert_eq!(m.generation(), model.generation, "generation after {op:?}");
        assert_eq!(m.flight(), model.flight, "flight after {op:?}");
        assert_eq!(
            m.timing(),
            model.tok.as_ref().map(|t| t.timing),
            "timing after {op:?}"
        );
        assert_eq!(
            m.failed_attempts(),
            model.backoff.map_or(0, |b| b.attempts),
            "failed attempts after {op:?}"
        );
        assert_eq!(
            m.phase(),
            &model.phase(now),
            "phase after {op:?} at {now:?}"
        );
        assert_eq!(
            future_only(m.fast_path_until(), now),
            model.fast_path_until(now),
            "fast_path_until after {op:?} at {now:?}"
        );
        assert_eq!(
            m.next_deadline(now),
            model.next_deadline(now),
            "next_deadline after {op:?} at {now:?}"
        );
    }

    /// The shell serves without asking the machine until `fast_path_until`; the machine must
    /// agree with every such answer, and never past the token's serving deadline.
    fn check_fast_path(&self) {
        let until = self.machine.fast_path_until();
        if until <= self.now {
            return;
        }
        let t = self.model.tok.as_ref().expect("fast path without a token");
        assert!(
            until <= t.timing.usable_until,
            "fast path {until:?} beyond the serving deadline {:?}",
            t.timing.usable_until
        );
        for at in [self.now, MonoTime::from_nanos(until.as_nanos() - 1)] {
            let mut probe = self.machine.clone();
            let d = probe.handle(Input::Demand { now: at });
            assert_eq!(d.action, Action::Serve, "fast path disagrees at {at:?}");
            assert!(d.start_refresh.is_none(), "fast path skips a due refresh");
        }
    }
}

impl Harness {
    /// The shell's timer sleeps until `next_tick`: no tick before it may start a refresh (the
    /// timer would miss it), probed at every landmark between now and ten days on.
    fn check_next_tick(&self) {
        let now = self.now;
        let next = self.machine.next_tick(now);
        let mut probes = vec![now, now.saturating_add(Duration::from_secs(10 * 86_400))];
        if let Some(t) = &self.model.tok {
            probes.extend([
                t.timing.refresh_at,
                t.timing.usable_until,
                t.timing.expires_at,
            ]);
        }
        if let Some(b) = self.model.backoff {
            probes.push(b.until);
        }
        if let Some(d) = self.machine.next_deadline(now) {
            probes.push(d);
        }
        if let Some(n) = next {
            probes.push(MonoTime::from_nanos(n.as_nanos().saturating_sub(1)));
        }
        for at in probes.into_iter().filter(|t| *t >= now) {
            if next.is_some_and(|n| at >= n) {
                continue;
            }
            let mut probe = self.machine.clone();
            let d = probe.handle(Input::Tick { now: at });
            assert!(
                d.start_refresh.is_none(),
                "a tick at {at:?} starts a refresh but the timer sleeps until {next:?} (now {now:?})"
            );
        }
    }
}

/// Full jitter below the exponential ceiling (default policy backoff: 1 s base, 5 min cap), but
/// never below the honoured `Retry-After`.
fn check_backoff_delay(attempts: u32, retry_after: Option<Duration>, delay: Duration) {
    let floor = retry_after
        .map(|ra| ra.min(Duration::from_secs(3600)))
        .unwrap_or_default();
    let ceiling = Duration::from_secs(1)
        .checked_mul(1u32 << attempts.saturating_sub(1).min(31))
        .unwrap_or(Duration::MAX)
        .min(Duration::from_secs(300));
    assert!(
        delay >= floor,
        "Retry-After {floor:?} not honoured: {delay:?}"
    );
    assert!(
        delay <= ceiling.max(floor),
        "backoff {delay:?} above {ceiling:?} (attempt {attempts})"
    );
}

/// `cases` unless `PROPTEST_CASES` asks for another number (for a longer soak).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/machine_model.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn machine_follows_model(params in policy_params(), ops in ops()) {
        let mut h = Harness::new(&params);
        for op in &ops {
            h.step(op);
        }
    }

    #[test]
    fn timing_within_bounds(
        params in policy_params(),
        issued in 0u64..1_000_000 * SEC,
        expires_in in expires_in(),
        draws in 1usize..8,
    ) {
        let policy = params.build();
        let (lifetime, _) = policy.lifetime(expires_in);
        match expires_in {
            // Zero and negative lifetimes are raised to the minimum; missing ones defaulted.
            Some(sent) if sent <= 0 => prop_assert_eq!(lifetime, Duration::from_secs(30)),
            None => prop_assert_eq!(lifetime, Duration::from_secs(3600)),
            Some(sent) => prop_assert_eq!(lifetime, Duration::from_secs(sent as u64).min(Duration::from_secs(400 * 86_400))),
        }
        let issued = MonoTime::from_nanos(issued);
        let mut rng = JitterRng::new(params.seed);
        let (lo, hi) = params.window;
        let slack = Duration::from_micros(1);
        for _ in 0..draws {
            let t = policy.timing(issued, lifetime, &mut rng);
            let skew = policy.effective_skew(lifetime);
            prop_assert!(skew <= lifetime / 2);
            prop_assert_eq!(t.usable_until, issued + (lifetime - skew));
            prop_assert!(t.refresh_at <= t.usable_until);
            let earliest = issued + lifetime.mul_f64(lo);
            let latest = issued + lifetime.mul_f64(hi) + slack;
            prop_assert!(t.refresh_at + slack >= earliest.min(t.usable_until),
                "refresh {:?} before the window start {:?}", t.refresh_at, earliest);
            prop_assert!(t.refresh_at <= latest, "refresh {:?} after the window end {:?}", t.refresh_at, latest);
            // The floor margin is kept whenever the window allows it.
            let margin_point = t.usable_until.saturating_sub(Duration::from_secs(60));
            if margin_point >= earliest {
                prop_assert!(t.refresh_at <= margin_point);
            }
        }
    }

    #[test]
    fn backoff_within_bounds(seed: u64, attempt in 0u32..100, retry_after in proptest::option::of(0u64..u64::MAX)) {
        let policy = RefreshPolicy::default();
        let mut rng = JitterRng::new(seed);
        let ra = retry_after.map(Duration::from_secs);
        let d = policy.backoff_delay(attempt, ra, &mut rng);
        let floor = ra.map(|r| r.min(Duration::from_secs(3600))).unwrap_or_default();
        prop_assert!(d >= floor);
        prop_assert!(d <= floor.max(Duration::from_secs(300)));
    }

    #[test]
    fn parse_token_response_never_panics(
        status in prop_oneof![Just(200u16), Just(400), Just(401), Just(429), Just(503), any::<u16>()],
        form: bool,
        retry_after in proptest::option::of(0u64..10_000),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            json_ish().prop_map(String::into_bytes),
        ],
    ) {
        let answer = HttpAnswer {
            status,
            content_type: Some(if form { "application/x-www-form-urlencoded" } else { "application/json" }),
            retry_after: retry_after.map(Duration::from_secs),
            body: &body,
        };
        match parse_token_response(answer) {
            Ok(r) => {
                // An empty access token only marks a 2xx that carried a (rotated) refresh token,
                // which the engine keeps.
                prop_assert!(!r.access_token().is_empty() || r.refresh_token().is_some());
                prop_assert!((200..300).contains(&status));
            }
            Err(e) => {
                // The message never echoes the body's secrets.
                prop_assert!(!e.to_string().contains("SECRET-AT"));
                prop_assert!(!e.to_string().contains("SECRET-RT"));
            }
        }
    }

    #[test]
    fn parse_retry_after_never_panics(value in ".{0,64}", bytes in proptest::collection::vec(any::<u8>(), 0..64), at in -4_000_000_000i64..4_000_000_000) {
        let now = time::OffsetDateTime::from_unix_timestamp(at.clamp(-377_705_116_800, 253_402_300_799)).unwrap();
        let _ = parse_retry_after(&value, now);
        let _ = parse_retry_after(&String::from_utf8_lossy(&bytes), now);
        let _ = parse_retry_after(&format!("{}", at.unsigned_abs()), now);
    }
}

/// Token-endpoint-like JSON with odd field types and values.
fn json_ish() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("\"SECRET-AT\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("{\"code\":\"invalid_grant\"}".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("18446744073709551616".to_owned()),
        "[0-9]{1,30}".prop_map(|s| format!("\"{s}\"")),
        "[ -~]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    let key = prop_oneof![
        Just("access_token"),
        Just("refresh_token"),
        Just("expires_in"),
        Just("error"),
        Just("error_description"),
        Just("ok"),
        Just("scope"),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
        let inner: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| {
                // The secrets sit where providers put them: in the token fields.
                let v = match (k, v.as_str()) {
                    ("refresh_token", "\"SECRET-AT\"") => "\"SECRET-RT\"".to_owned(),
                    (_, "\"SECRET-AT\"") if k != "access_token" => "\"plain\"".to_owned(),
                    _ => v,
                };
                format!("\"{k}\":{v}")
            })
            .collect();
        format!("{{{}}}", inner.join(","))
    })
}

#[test]
fn ambiguous_then_invalid_grant_is_response_lost_once() {
    let policy = RefreshPolicy::builder().jitter_seed(1).build().unwrap();
    let mut m = Machine::new(policy);
    let s = |n: u64| MonoTime::from_nanos(n * SEC);
    m.handle(Input::Authorize {
        now: s(0),
        grant: Grant::new(s(0), Duration::ZERO, true),
    });
    let flight = m.handle(Input::Demand { now: s(1) }).start_refresh.unwrap();
    m.handle(Input::RefreshFailed {
        now: s(2),
        flight,
        class: ErrorClass::Ambiguous,
        retry_after: None,
    });
    let mut later = s(1_000);
    let flight = loop {
        if let Some(f) = m.handle(Input::Demand { now: later }).start_refresh {
            break f;
        }
        later = later + Duration::from_secs(60);
    };
    m.take_transitions();
    m.handle(Input::RefreshFailed {
        now: later,
        flight,
        class: ErrorClass::InvalidGrant,
        retry_after: None,
    });
    let reauths: Vec<_> = m
        .take_transitions()
        .into_iter()
        .filter(|t| matches!(t.to, Phase::ReauthRequired { .. }))
        .collect();
    assert_eq!(reauths.len(), 1);
    assert_eq!(
        reauths[0].to,
        Phase::ReauthRequired {
            reason: ReauthReason::ResponseLost
        }
    );
    // Terminal: no further refresh however often callers ask.
    for n in 0..10 {
        let d = m.handle(Input::Demand {
            now: later + Duration::from_secs(n * 1000),
        });
        assert!(d.start_refresh.is_none());
        assert_eq!(
            d.action,
            Action::Fail(Refusal::Reauth(ReauthReason::ResponseLost))
        );
    }
    assert!(m
        .take_transitions()
        .iter()
        .all(|t| !matches!(t.to, Phase::ReauthRequired { .. })));
}

// Minimal reproductions of the rule violations the model test finds. They fail until the
// machine is fixed.

/// Rule 8: a token without refresh token needs re-authorization from its refresh point on,
/// with reason `NoRefreshToken`; `TokenRejected` only if it was rejected before that. A 401
/// arriving after the refresh point must not change the reason — and whether a timer fired at
/// the refresh point must not matter.
#[test]
fn no_refresh_token_reason_does_not_depend_on_a_timer() {
    let policy = RefreshPolicy::builder()
        .jitter_seed(0)
        .refresh_window(0.05, 0.05)
        .build()
        .unwrap();
    let run = |tick: bool| {
        let mut m = Machine::new(policy.clone());
        m.handle(Input::Authorize {
            now: MonoTime::ZERO,
            grant: Grant::new(MonoTime::ZERO, Duration::from_secs(3600), false),
        });
        let after_refresh_point = m.timing().unwrap().refresh_at + Duration::from_secs(1);
        if tick {
            m.handle(Input::Tick {
                now: after_refresh_point,
            });
        }
        m.handle(Input::Invalidate {
            now: after_refresh_point,
            generation: 1,
        });
        m.phase().clone()
    };
    let expected = Phase::ReauthRequired {
        reason: ReauthReason::NoRefreshToken,
    };
    assert_eq!(run(true), expected);
    assert_eq!(run(false), expected, "the reason depends on a timer tick");
}

/// Rule 12: once a backoff is over (rule 7: backing off means `now < until`), a fresh token's
/// fast path runs to its refresh point again, not to the past backoff end.
#[test]
fn fast_path_resumes_after_the_backoff() {
    let policy = RefreshPolicy::builder()
        .jitter_seed(0)
        .keep_alive(Some(Duration::from_secs(30)))
        .build()
        .unwrap();
    let s = |n: u64| MonoTime::from_nanos(n * SEC);
    let mut m = Machine::new(policy);
    m.handle(Input::Authorize {
        now: s(0),
        grant: Grant::new(s(0), Duration::from_secs(3600), true),
    });
    // The keep-alive refresh fails once; its backoff (at most 1 s) is over at 40 s.
    let flight = m.handle(Input::Tick { now: s(30) }).start_refresh.unwrap();
    m.handle(Input::RefreshFailed {
        now: s(30),
        flight,
        class: ErrorClass::Transient,
        retry_after: None,
    });
    assert_eq!(m.handle(Input::Demand { now: s(40) }).action, Action::Serve);
    assert_eq!(m.phase(), &Phase::Fresh);
    assert_eq!(m.fast_path_until(), m.timing().unwrap().refresh_at);
}

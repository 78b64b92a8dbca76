//! State-machine tests of the pure [`Machine`] against a small reference model, with the
//! engine's invariants checked after every step; plus property tests of the policy's timing and
//! of the token-response parsers on arbitrary input.

use std::time::Duration;

use keepfresh::machine::{Action, FlightId, Grant, Input, Machine, Phase, Refusal};
use keepfresh::oauth::{parse_retry_after, parse_token_response, HttpAnswer};
use keepfresh::policy::JitterRng;
use keepfresh::runtime::MonoTime;
use keepfresh::{ErrorClass, ReauthReason, RefreshPolicy};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const SEC: u64 = 1_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    /// Let this many milliseconds pass.
    Advance(u64),
    Demand,
    /// Invalidate the current generation minus `back` (0: the current one).
    Invalidate {
        back: u64,
    },
    /// The flight in progress (or, with `stale`, a flight that is not) succeeded.
    Succeed {
        expires_in: Option<i64>,
        has_rt: bool,
        stale: bool,
    },
    Fail {
        class: ErrorClass,
        retry_after: Option<u64>,
        stale: bool,
    },
    Authorize {
        expires_in: Option<i64>,
        has_rt: bool,
    },
    Tick,
}

fn class() -> impl Strategy<Value = ErrorClass> {
    prop_oneof![
        3 => Just(ErrorClass::Transient),
        1 => Just(ErrorClass::InvalidGrant),
        1 => Just(ErrorClass::InvalidClient),
        1 => Just(ErrorClass::Configuration),
        2 => Just(ErrorClass::Ambiguous),
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

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![
            0u64..2_000,
            0u64..120_000,
            0u64..4_000_000,
        ].prop_map(Op::Advance),
        5 => Just(Op::Demand),
        2 => (0u64..3).prop_map(|back| Op::Invalidate { back }),
        3 => (expires_in(), proptest::bool::weighted(0.85), proptest::bool::weighted(0.1))
            .prop_map(|(expires_in, has_rt, stale)| Op::Succeed { expires_in, has_rt, stale }),
        3 => (class(), proptest::option::weighted(0.3, 0u64..4_000), proptest::bool::weighted(0.1))
            .prop_map(|(class, retry_after, stale)| Op::Fail { class, retry_after, stale }),
        1 => (expires_in(), proptest::bool::weighted(0.8))
            .prop_map(|(expires_in, has_rt)| Op::Authorize { expires_in, has_rt }),
        2 => Just(Op::Tick),
    ]
}

#[derive(Clone, Debug)]
struct PolicyParams {
    seed: u64,
    eager: bool,
    serve_stale: bool,
    invalid_client_threshold: u32,
    window: (f64, f64),
}

fn policy_params() -> impl Strategy<Value = PolicyParams> {
    (
        any::<u64>(),
        any::<bool>(),
        proptest::bool::weighted(0.8),
        1u32..4,
        (0.05f64..0.95, 0.0f64..1.0),
    )
        .prop_map(|(seed, eager, serve_stale, threshold, (lo, f))| {
            let hi = lo + (0.99 - lo) * f;
            PolicyParams {
                seed,
                eager,
                serve_stale,
                invalid_client_threshold: threshold,
                window: (lo, hi),
            }
        })
}

impl PolicyParams {
    fn build(&self) -> RefreshPolicy {
        RefreshPolicy::builder()
            .jitter_seed(self.seed)
            .eager(self.eager)
            .serve_stale(self.serve_stale)
            .invalid_client_threshold(self.invalid_client_threshold)
            .refresh_window(self.window.0, self.window.1)
            .build()
            .expect("valid policy")
    }
}

/// The current token as the model sees it.
#[derive(Clone, Debug)]
struct Tok {
    generation: u64,
    issued: MonoTime,
    lifetime: Duration,
    refresh_at: MonoTime,
    usable_until: MonoTime,
    has_rt: bool,
    rejected: bool,
}

#[derive(Clone, Copy, Debug)]
struct Backoff {
    until: MonoTime,
    attempts: u32,
    class: ErrorClass,
}

/// The reference model: what the engine's rules say should happen, written plainly.
#[derive(Debug)]
struct Model {
    policy: RefreshPolicy,
    generation: u64,
    tok: Option<Tok>,
    flight: Option<(FlightId, MonoTime)>,
    last_flight: Option<FlightId>,
    backoff: Option<Backoff>,
    reauth: Option<ReauthReason>,
    invalid_client_streak: u32,
    after_ambiguous: bool,
}

impl Model {
    fn new(policy: RefreshPolicy) -> Self {
        Model {
            policy,
            generation: 0,
            tok: None,
            flight: None,
            last_flight: None,
            backoff: None,
            reauth: None,
            invalid_client_streak: 0,
            after_ambiguous: false,
        }
    }

    fn valid(&self, now: MonoTime) -> bool {
        self.tok
            .as_ref()
            .is_some_and(|t| !t.rejected && now < t.usable_until)
    }

    /// Past the serving deadline but before the stated expiry: served only as a last resort.
    fn in_grace(&self, now: MonoTime) -> bool {
        self.tok.as_ref().is_some_and(|t| {
            !t.rejected && now >= t.usable_until && now < t.issued.saturating_add(t.lifetime)
        })
    }

    fn backoff_active(&self, now: MonoTime) -> Option<Backoff> {
        self.backoff.filter(|b| now < b.until)
    }

    /// A token without refresh token needs re-authorization from its refresh point on (or
    /// once rejected): surfaced before it expires.
    fn note_time(&mut self, now: MonoTime) {
        if self.reauth.is_some() {
            return;
        }
        if let Some(t) = &self.tok {
            if !t.has_rt && t.rejected {
                self.reauth = Some(ReauthReason::TokenRejected);
            } else if !t.has_rt && now >= t.refresh_at {
                self.reauth = Some(ReauthReason::NoRefreshToken);
            }
        }
    }

    /// Expected (action, whether a refresh starts) for a caller at `now`.
    fn demand(&mut self, now: MonoTime) -> (Action, bool) {
        self.note_time(now);
        let valid = self.valid(now);
        let last_resort = valid || self.in_grace(now);
        if let Some(reason) = self.reauth {
            return if last_resort {
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
        let before_refresh_point = now < t.refresh_at;
        let stale_ok = self.policy.serve_stale();
        let serve_or_wait = |serve: bool| if serve { Action::Serve } else { Action::Wait };
        if self.flight.is_some() {
            return (
                serve_or_wait(valid && (stale_ok || before_refresh_point)),
                false,
            );
        }
        if valid && before_refresh_point {
            return (Action::Serve, false);
        }
        if let Some(b) = self.backoff_active(now) {
            return if last_resort {
                (Action::Serve, false)
            } else {
                (
                    Action::Fail(Refusal::BackingOff {
                        until: b.until,
                        last_error: b.class,
                    }),
                    false,
                )
            };
        }
        (serve_or_wait(valid && stale_ok), true)
    }

    fn invalidate(&mut self, now: MonoTime, generation: u64) -> bool {
        let Some(t) = self.tok.as_mut() else {
            return false;
        };
        if t.generation != generation || t.rejected {
            return false;
        }
        t.rejected = true;
        let has_rt = t.has_rt;
        self.note_time(now);
        has_rt
            && self.flight.is_none()
            && self.reauth.is_none()
            && self.backoff_active(now).is_none()
    }

    fn tick(&mut self, now: MonoTime) -> bool {
        self.note_time(now);
        if !self.policy.eager()
            || self.flight.is_some()
            || self.reauth.is_some()
            || self.backoff_active(now).is_some()
        {
            return false;
        }
        self.tok
            .as_ref()
            .is_some_and(|t| t.has_rt && (now >= t.refresh_at || t.rejected))
    }

    /// Expected terminal reason, if the failure is terminal.
    fn fail(&mut self, class: ErrorClass) -> Option<ReauthReason> {
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
            _ => None,
        };
        if class != ErrorClass::InvalidClient {
            self.invalid_client_streak = 0;
        }
        if class == ErrorClass::Ambiguous {
            self.after_ambiguous = true;
        }
        if let Some(reason) = terminal {
            self.reauth = Some(reason);
            self.backoff = None;
        }
        terminal
    }

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
        if let Some(b) = self.backoff_active(now) {
            return Phase::BackingOff {
                until: b.until,
                attempts: b.attempts,
                last_error: b.class,
            };
        }
        if !valid {
            Phase::Expired
        } else if now >= t.refresh_at {
            Phase::RefreshDue
        } else {
            Phase::Fresh
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Checks a freshly installed token's timing against the policy's rules.
fn check_timing(policy: &RefreshPolicy, issued: MonoTime, lifetime: Duration, tok: &Tok) {
    let slack = Duration::from_micros(1);
    let expected_until = issued.saturating_add(lifetime - policy.effective_skew(lifetime));
    assert_eq!(tok.usable_until, expected_until, "serving deadline");
    assert_eq!(tok.issued, issued);
    assert!(tok.refresh_at <= tok.usable_until, "refresh after expiry");
    assert!(tok.refresh_at >= issued, "refresh before issue");
    // Never a refresh loop: the refresh point is a real fraction of the lifetime away (the
    // window starts at 5 % or later in these tests).
    assert!(
        tok.refresh_at.saturating_duration_since(issued) + slack >= lifetime.mul_f64(0.05),
        "refresh point {:?} too close to issue {issued:?} for a {}s lifetime",
        tok.refresh_at,
        secs(lifetime)
    );
}

struct Harness {
    machine: Machine,
    model: Model,
    now: MonoTime,
    /// Refresh starts not caused by an invalidation and not following a failure.
    loop_guard: Vec<(MonoTime, MonoTime, Duration)>,
    last_outcome_failed: bool,
    was_reauth: Option<ReauthReason>,
}

impl Harness {
    fn new(params: &PolicyParams) -> Self {
        let policy = params.build();
        Harness {
            machine: Machine::new(policy.clone()),
            model: Model::new(policy),
            now: MonoTime::ZERO,
            loop_guard: Vec::new(),
            last_outcome_failed: false,
            was_reauth: None,
        }
    }

    fn grant(&self, issued: MonoTime, expires_in: Option<i64>, has_rt: bool) -> Grant {
        let (lifetime, _) = self.model.policy.lifetime(expires_in);
        Grant::new(issued, lifetime, has_rt)
    }

    fn install(&mut self, grant: Grant) {
        self.model.generation += 1;
        let timing = self.machine.timing().expect("a token after install");
        let tok = Tok {
            generation: self.model.generation,
            issued: grant.issued,
            lifetime: grant.lifetime,
            refresh_at: timing.refresh_at,
            usable_until: timing.usable_until,
            has_rt: grant.has_refresh_token,
            rejected: false,
        };
        check_timing(&self.model.policy, grant.issued, grant.lifetime, &tok);
        self.model.tok = Some(tok);
    }

    fn step(&mut self, op: &Op) {
        let now = self.now;
        let before_flight = self.machine.flight();
        let before_generation = self.machine.generation();
        let before_phase = self.machine.phase().clone();
        let mut expected_start = false;
        let mut invalidation = false;
        let mut expected_action = Action::None;
        let mut installed = None;
        let mut failed = None;

        let decision = match op {
            Op::Advance(ms) => {
                self.now = now.saturating_add(Duration::from_millis(*ms));
                return;
            }
            Op::Demand => {
                let (action, start) = self.model.demand(now);
                expected_action = action;
                expected_start = start;
                self.machine.handle(Input::Demand { now })
            }
            Op::Invalidate { back } => {
                let generation = self.model.generation.saturating_sub(*back);
                expected_start = self.model.invalidate(now, generation);
                invalidation = true;
                self.machine.handle(Input::Invalidate { now, generation })
            }
            Op::Tick => {
                expected_start = self.model.tick(now);
                self.machine.handle(Input::Tick { now })
            }
            Op::Succeed {
                expires_in,
                has_rt,
                stale,
            } => {
                let (flight, issued, accepted) = match (self.model.flight, stale) {
                    (Some((id, started)), false) => (id, started, true),
                    _ => (self.stale_flight(), now, false),
                };
                let grant = self.grant(issued, *expires_in, *has_rt);
                let d = self
                    .machine
                    .handle(Input::RefreshSucceeded { now, flight, grant });
                if accepted {
                    self.model.flight = None;
                    self.model.backoff = None;
                    self.model.invalid_client_streak = 0;
                    self.model.after_ambiguous = false;
                    self.model.reauth = None;
                    installed = Some(grant);
                    self.last_outcome_failed = false;
                }
                d
            }
            Op::Fail {
                class,
                retry_after,
                stale,
            } => {
                let retry_after = retry_after.map(Duration::from_secs);
                let (flight, accepted) = match (self.model.flight, stale) {
                    (Some((id, _)), false) => (id, true),
                    _ => (self.stale_flight(), false),
                };
                let d = self.machine.handle(Input::RefreshFailed {
                    now,
                    flight,
                    class: *class,
                    retry_after,
                });
                if accepted {
                    self.model.flight = None;
                    failed = Some((*class, retry_after));
                    self.last_outcome_failed = true;
                }
                d
            }
            Op::Authorize { expires_in, has_rt } => {
                let grant = self.grant(now, *expires_in, *has_rt);
                self.model.backoff = None;
                self.model.invalid_client_streak = 0;
                self.model.after_ambiguous = false;
                self.model.reauth = None;
                installed = Some(grant);
                self.last_outcome_failed = false;
                self.machine.handle(Input::Authorize { now, grant })
            }
        };

        // Generation: +1 exactly when a token set is installed.
        if let Some(grant) = installed {
            assert_eq!(self.machine.generation(), before_generation + 1);
            self.install(grant);
        } else {
            assert_eq!(
                self.machine.generation(),
                before_generation,
                "generation moved without a new token"
            );
        }

        if let Some((class, retry_after)) = failed {
            let previous_attempts = self.model.backoff.map_or(0, |b| b.attempts);
            let terminal = self.model.fail(class);
            if terminal.is_none() {
                let attempts = previous_attempts + 1;
                let until = match self.machine.phase() {
                    Phase::BackingOff {
                        until,
                        attempts: a,
                        last_error,
                    } => {
                        assert_eq!(*a, attempts);
                        assert_eq!(*last_error, class);
                        *until
                    }
                    // Re-authorization hides the backoff (and stays until a new
                    // authorization, which clears it): nothing to check.
                    Phase::ReauthRequired { .. } => {
                        assert_eq!(self.machine.failed_attempts(), attempts);
                        now.saturating_add(Duration::from_secs(u64::MAX / 4))
                    }
                    // A zero delay: the backoff is already over.
                    _ => now,
                };
                if !matches!(self.machine.phase(), Phase::ReauthRequired { .. }) {
                    self.check_backoff_delay(
                        attempts,
                        retry_after,
                        until.saturating_duration_since(now),
                    );
                }
                self.model.backoff = Some(Backoff {
                    until,
                    attempts,
                    class,
                });
            }
        }

        // At most one flight; a refresh starts only when none is in flight.
        if let Some(id) = decision.start_refresh {
            assert!(
                before_flight.is_none(),
                "refresh started while {before_flight:?} in flight"
            );
            assert_eq!(self.machine.flight(), Some(id));
            if let Some(last) = self.model.last_flight {
                assert!(id > last, "flight ids must be fresh");
            }
            self.model.last_flight = Some(id);
            self.model.flight = Some((id, now));
            // Backoff honoured.
            if let Some(b) = self.model.backoff {
                assert!(
                    now >= b.until,
                    "refresh at {now:?} before backoff end {:?}",
                    b.until
                );
            }
            // Re-authorization is terminal: no refresh while it is required.
            assert!(
                !matches!(before_phase, Phase::ReauthRequired { .. }),
                "refresh started in {before_phase:?}"
            );
            // No refresh loop: without a 401 or a failure, a refresh starts only at or after
            // the token's refresh point, or when there is no usable token.
            if !invalidation && !self.last_outcome_failed {
                if let Some(t) = &self.model.tok {
                    assert!(
                        t.rejected || now >= t.refresh_at,
                        "refresh at {now:?} before the refresh point {:?}",
                        t.refresh_at
                    );
                    self.loop_guard.push((now, t.issued, t.lifetime));
                }
            }
        }
        assert_eq!(
            decision.start_refresh.is_some(),
            expected_start,
            "start_refresh after {op:?}"
        );
        if decision.start_refresh.is_none() && !matches!(op, Op::Succeed { .. } | Op::Fail { .. }) {
            assert_eq!(self.machine.flight(), before_flight);
        }

        // The caller's answer.
        assert_eq!(decision.action, expected_action, "action after {op:?}");
        let valid = self.model.valid(now);
        match &decision.action {
            Action::Serve => {
                // Past the serving deadline only as a last resort, and never past the stated
                // expiry or after a rejection.
                let last_resort =
                    self.model.reauth.is_some() || self.model.backoff_active(now).is_some();
                assert!(
                    valid || (last_resort && self.model.in_grace(now)),
                    "served an expired or rejected token"
                );
                assert!(self.machine.token_valid_at(now) || self.machine.token_in_grace_at(now));
            }
            Action::Fail(_) => {
                let servable = valid
                    && (self.model.policy.serve_stale()
                        || self.model.tok.as_ref().is_some_and(|t| now < t.refresh_at));
                assert!(!servable, "failed a caller while a servable token exists");
            }
            Action::Wait => assert!(self.machine.flight().is_some(), "wait without a flight"),
            _ => {}
        }

        // Phase consistent with state.
        self.model.note_time(now);
        let phase = self.machine.phase().clone();
        assert_eq!(phase, self.model.phase(now), "phase after {op:?}");

        // Re-authorization is terminal until a new authorization (or the success of a refresh
        // that was already running when it was raised).
        if let Some(reason) = self.was_reauth {
            if !matches!(phase, Phase::ReauthRequired { .. }) {
                assert!(
                    matches!(op, Op::Authorize { .. })
                        || (matches!(op, Op::Succeed { stale: false, .. }) && installed.is_some()),
                    "left re-authorization ({reason}) on {op:?}"
                );
            }
        }
        self.was_reauth = match phase {
            Phase::ReauthRequired { reason } => Some(reason),
            _ => None,
        };

        self.check_fast_path();
        self.check_no_loop();
    }

    fn stale_flight(&self) -> FlightId {
        match self.model.last_flight {
            Some(FlightId(n)) if n > 1 => FlightId(n - 1),
            _ => FlightId(u64::MAX),
        }
    }

    fn check_backoff_delay(&self, attempts: u32, retry_after: Option<Duration>, delay: Duration) {
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

    /// The shell serves without asking the machine until `fast_path_until`; the machine must
    /// agree with every such answer, and never past the token's serving deadline.
    fn check_fast_path(&self) {
        let until = self.machine.fast_path_until();
        if until <= self.now {
            return;
        }
        let t = self.model.tok.as_ref().expect("fast path without a token");
        assert!(
            until <= t.usable_until,
            "fast path {until:?} beyond the serving deadline {:?}",
            t.usable_until
        );
        for at in [self.now, MonoTime::from_nanos(until.as_nanos() - 1)] {
            let mut probe = self.machine.clone();
            let d = probe.handle(Input::Demand { now: at });
            assert_eq!(d.action, Action::Serve, "fast path disagrees at {at:?}");
            assert!(d.start_refresh.is_none(), "fast path skips a due refresh");
        }
    }

    /// Refresh starts not caused by a 401 or a failure are at least a fraction of the
    /// refreshed token's lifetime apart.
    fn check_no_loop(&self) {
        for pair in self.loop_guard.windows(2) {
            let (a, b) = (pair[0].0.as_nanos(), pair[1].0.as_nanos());
            let min_gap = pair[1].2.mul_f64(0.05).as_nanos() as u64;
            // Only successive refreshes of tokens issued after the previous start count.
            if pair[1].1.as_nanos() >= a {
                assert!(b - a >= min_gap, "refresh loop: starts at {a} and {b} ns");
            }
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/machine_model.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn machine_follows_model(params in policy_params(), ops in proptest::collection::vec(op(), 1..160)) {
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
                prop_assert!(!r.access_token().is_empty());
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

//! Property tests of the pure refresh-flight plan ([`keepfresh::flight::Plan`]): a driver answers
//! every effect with scripted, random feedback from the store and the provider, and checks the
//! plan's rules over the whole run (written from the rules in the module docs, not from the
//! plan's code):
//!
//! - **fail closed**: with a store and `fail_open` off, the provider is called only after the
//!   lease was taken (or the store has no leases, or a lease was carried in) and the last store
//!   read before the call succeeded;
//! - **no overwrite**: a save after a conflict only rewrites the plan's own base set, at the
//!   version the conflict reported; never after a conflict with another set or an empty store;
//! - **persist, then publish**: a new set is reported only after a save was attempted (with a
//!   store), and is `pending` exactly when that save failed;
//! - **lease**: released only when no save is owed, exactly once per lease held, never after a
//!   hand-over, and never left held at `Done`;
//! - **termination**: once the store stops failing, the plan is done within a bounded number of
//!   steps;
//! - **keep the rotated refresh token** from a 2xx answer without an access token;
//! - **cancel**: after `cancel()` only the lease's release and `Done` follow;
//! - **never go back**: a set this process replaced, shown by a store that lost a save or
//!   read from a lagging replica, is never adopted and its refresh token never sent; a save may
//!   write over it after a conflict.
//!
//! A run is one plan, or — when the plan hands over while it owes a save — that plan and the
//! next one, started with the carried lease.

use std::sync::Arc;

use keepfresh::flight::{Carry, Effect, Feedback, Plan, Report, Start};
use keepfresh::machine::FlightId;
use keepfresh::runtime::MonoTime;
use keepfresh::store::{
    Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, Version,
};
use keepfresh::{
    AccessToken, ErrorClass, RefreshError, RefreshPolicy, RefreshToken, TokenResponse, TokenSet,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use time::OffsetDateTime;

/// No run may take more effects than this (the scripted failures are bounded by the budget).
const MAX_STEPS: usize = 2_000;

#[derive(Clone, Copy, Debug)]
enum LeaseAns {
    Acquired,
    Held,
    Unsupported,
    Err,
}

#[derive(Clone, Copy, Debug)]
enum LoadAns {
    /// The set this lineage left in the store, at the version the plan started from.
    Lineage,
    /// The plan's base set, rewritten at another version.
    BaseElsewhere,
    /// A set of another lineage (a login, another process).
    Newer,
    /// The last set this plan tried to save (its write landed), or the base before any save.
    Own,
    /// A set this process replaced before the plan started (a lost save, a stale replica).
    Replaced,
    Empty,
    Err,
}

#[derive(Clone, Copy, Debug)]
enum Rotation {
    /// No refresh token in the answer.
    Absent,
    /// The refresh token that was sent, echoed back.
    Same,
    /// A new refresh token.
    New,
}

#[derive(Clone, Debug)]
enum CallAns {
    Tokens {
        rotation: Rotation,
        expires_in: Option<i64>,
    },
    /// 2xx without an access token.
    NoAccessToken {
        rotation: Rotation,
    },
    Err(ErrorClass),
}

#[derive(Clone, Copy, Debug)]
enum RenewAns {
    Renewed,
    Lost,
    Err,
}

#[derive(Clone, Copy, Debug)]
enum SaveAns {
    Saved,
    /// The store holds the set this save wrote (its answer was lost).
    ConflictOwn,
    /// The store holds the plan's base set at another version.
    ConflictBase,
    /// The store holds another lineage's set.
    ConflictForeign,
    /// The store was emptied.
    ConflictNone,
    /// The store holds a set this process replaced (it lost an acknowledged save).
    ConflictReplaced,
    Err,
}

#[derive(Clone, Copy, Debug)]
enum ClearAns {
    Cleared,
    NotCleared,
    Err,
}

/// How the first plan starts.
#[derive(Clone, Copy, Debug)]
enum BaseKind {
    /// A set with a refresh token.
    Set,
    /// A set without one.
    SetWithoutRefreshToken,
    /// No set, only a refresh token (a credential built from a refresh token).
    RefreshTokenOnly,
}

#[derive(Clone, Copy, Debug)]
enum CarryKind {
    /// An earlier plan's lease and the set whose save it owed (the base).
    LeaseAndOwed,
    /// An earlier plan's owed set, its lease lost.
    OwedOnly,
}

#[derive(Clone, Debug)]
struct Script {
    has_store: bool,
    fail_open: bool,
    base: BaseKind,
    /// The version the lineage expects (`None`: the store was empty).
    expected: Option<u64>,
    carry: Option<CarryKind>,
    poll_seed: u64,
    lease: Vec<LeaseAns>,
    load: Vec<LoadAns>,
    /// One answer per plan of the run.
    call: Vec<CallAns>,
    renew: Vec<RenewAns>,
    save: Vec<SaveAns>,
    clear: Vec<ClearAns>,
    /// Store answers that are failures (or not the happy path) before the store heals.
    budget: u32,
    /// Cancel the plan before answering this effect (counted over the run).
    cancel_at: Option<usize>,
    /// Hand over at the n-th chance (a plan waiting to retry an owed save).
    hand_over_at: Option<u8>,
    /// Another process holds the lease and never lets go: every lease request is answered
    /// `Held`, whatever the budget.
    stuck_holder: bool,
}

fn expires_in() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        Just(Some(-5)),
        (1i64..100_000).prop_map(Some),
        Just(Some(i64::MAX)),
    ]
}

fn rotation() -> impl Strategy<Value = Rotation> {
    prop_oneof![
        1 => Just(Rotation::Absent),
        1 => Just(Rotation::Same),
        3 => Just(Rotation::New),
    ]
}

fn call_ans() -> impl Strategy<Value = CallAns> {
    prop_oneof![
        6 => (rotation(), expires_in())
            .prop_map(|(rotation, expires_in)| CallAns::Tokens { rotation, expires_in }),
        3 => rotation().prop_map(|rotation| CallAns::NoAccessToken { rotation }),
        1 => Just(CallAns::Err(ErrorClass::Transient)),
        1 => Just(CallAns::Err(ErrorClass::Ambiguous)),
        2 => Just(CallAns::Err(ErrorClass::InvalidGrant)),
        1 => Just(CallAns::Err(ErrorClass::InvalidClient)),
        1 => Just(CallAns::Err(ErrorClass::Configuration)),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    let lease = prop_oneof![
        4 => Just(LeaseAns::Acquired),
        3 => Just(LeaseAns::Held),
        2 => Just(LeaseAns::Unsupported),
        2 => Just(LeaseAns::Err),
    ];
    let load = prop_oneof![
        4 => Just(LoadAns::Lineage),
        1 => Just(LoadAns::BaseElsewhere),
        2 => Just(LoadAns::Newer),
        2 => Just(LoadAns::Own),
        2 => Just(LoadAns::Replaced),
        1 => Just(LoadAns::Empty),
        2 => Just(LoadAns::Err),
    ];
    let renew = prop_oneof![
        4 => Just(RenewAns::Renewed),
        1 => Just(RenewAns::Lost),
        1 => Just(RenewAns::Err),
    ];
    let save = prop_oneof![
        3 => Just(SaveAns::Saved),
        1 => Just(SaveAns::ConflictOwn),
        2 => Just(SaveAns::ConflictBase),
        1 => Just(SaveAns::ConflictForeign),
        1 => Just(SaveAns::ConflictNone),
        1 => Just(SaveAns::ConflictReplaced),
        3 => Just(SaveAns::Err),
    ];
    let clear = prop_oneof![
        Just(ClearAns::Cleared),
        Just(ClearAns::NotCleared),
        Just(ClearAns::Err),
    ];
    let base = prop_oneof![
        6 => Just(BaseKind::Set),
        1 => Just(BaseKind::SetWithoutRefreshToken),
        2 => Just(BaseKind::RefreshTokenOnly),
    ];
    let carry = proptest::option::weighted(
        0.2,
        prop_oneof![Just(CarryKind::LeaseAndOwed), Just(CarryKind::OwedOnly)],
    );
    (
        (
            proptest::bool::weighted(0.85),
            proptest::bool::weighted(0.15),
            base,
            proptest::option::weighted(0.85, 1u64..4),
            carry,
            any::<u64>(),
        ),
        (
            proptest::collection::vec(lease, 0..6),
            proptest::collection::vec(load, 0..6),
            proptest::collection::vec(call_ans(), 2),
            proptest::collection::vec(renew, 0..4),
            proptest::collection::vec(save, 0..8),
            proptest::collection::vec(clear, 0..2),
        ),
        (
            0u32..12,
            proptest::option::weighted(0.15, 0usize..40),
            proptest::option::weighted(0.4, 0u8..3),
            proptest::bool::weighted(0.03),
        ),
    )
        .prop_map(
            |(
                (has_store, fail_open, base, expected, carry, poll_seed),
                (lease, load, call, renew, save, clear),
                (budget, cancel_at, hand_over_at, stuck_holder),
            )| Script {
                has_store,
                fail_open,
                base,
                expected,
                // Without a store there is no lease and no owed save to carry.
                carry: carry.filter(|_| has_store),
                poll_seed,
                lease,
                load,
                call,
                renew,
                save,
                clear,
                budget,
                cancel_at,
                hand_over_at,
                stuck_holder,
            },
        )
}

fn wall(now: MonoTime) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000) + now.as_duration()
}

fn set(access: &str, refresh: Option<&str>) -> TokenSet {
    let at = wall(MonoTime::ZERO);
    TokenSet::new(
        AccessToken::new(access),
        refresh.map(RefreshToken::new),
        at,
        at + time::Duration::hours(1),
    )
}

/// The set this process held before the run's base, and replaced.
fn replaced_set() -> TokenSet {
    set("replaced", Some("r-replaced"))
}

fn store_error() -> StoreError {
    StoreError::new(StoreErrorKind::Io, "scripted store failure")
}

/// What the driver saw one plan do, for the rules that span several effects.
#[derive(Debug, Default)]
struct PlanObs {
    /// The last lease request was answered `Acquired` or `Unsupported` (or a lease was carried).
    lease_cleared: bool,
    /// The last store read succeeded.
    last_load_ok: Option<bool>,
    /// The lease the plan holds, as the driver knows it.
    lease: Option<Lease>,
    releases: u32,
    saves: u32,
    /// The answer to the last save.
    last_save: Option<Result<SaveOutcome, ()>>,
    /// A conflict with another lineage's set or an empty store was answered.
    foreign_conflict: bool,
    /// The last save met the base or a replaced set (older than ours): rewritten at once, or,
    /// past the rewrite bound, retried after a back-off like a failed save.
    last_conflict_older: bool,
    refreshed: u32,
    /// A malformed 2xx carried this rotated refresh token.
    rotated_in_malformed: Option<String>,
    /// A `Failed` report kept a set with that refresh token.
    kept_reported: bool,
    /// A set of another lineage was adopted after the kept set's save met it.
    adopted_instead_of_kept: bool,
    cancelled: bool,
}

struct Driver {
    script: Script,
    policy: Arc<RefreshPolicy>,
    now: MonoTime,
    /// Effects over the whole run.
    steps: usize,
    /// Scripted store failures answered so far.
    failures: u32,
    next_version: u64,
    next_lease: u64,
    next_token: u64,
    /// Cursors into the script's answer lists.
    at: [usize; 6],
    hand_over_chances: u8,
    /// The set this lineage left in the store at `expected`.
    lineage: Option<Stored>,
    /// The sets the process knows to be older than the first plan's base.
    older: Vec<Arc<TokenSet>>,
}

impl Driver {
    fn new(script: Script) -> Self {
        let policy = RefreshPolicy::builder()
            .jitter_seed(1)
            .fail_open(script.fail_open)
            .build()
            .expect("valid policy");
        Driver {
            script,
            policy: Arc::new(policy),
            now: MonoTime::from_nanos(1_000_000_000),
            steps: 0,
            failures: 0,
            next_version: 100,
            next_lease: 1,
            next_token: 1,
            at: [0; 6],
            hand_over_chances: 0,
            lineage: None,
            older: Vec::new(),
        }
    }

    fn healed(&self) -> bool {
        self.failures >= self.script.budget
    }

    /// The next scripted answer of list `i`, or `None` once the list is used up.
    fn next<T: Clone>(at: &mut [usize; 6], i: usize, list: &[T]) -> Option<T> {
        let a = list.get(at[i]).cloned();
        at[i] += 1;
        a
    }

    fn version(&mut self) -> Version {
        self.next_version += 1;
        Version(self.next_version)
    }

    fn token(&mut self, prefix: &str) -> String {
        self.next_token += 1;
        format!("{prefix}-{}", self.next_token)
    }

    /// The first plan's start.
    fn first_start(&mut self) -> Start {
        let expected = self.script.expected.map(Version);
        let base = match self.script.base {
            BaseKind::Set => Some(set("a0", Some("r0"))),
            BaseKind::SetWithoutRefreshToken => Some(set("a0", None)),
            BaseKind::RefreshTokenOnly => None,
        };
        // What the store holds for this lineage: the base, or — while the base is owed — its
        // durable parent.
        let durable = match (self.script.carry, &base) {
            (Some(_), _) => Some(set("p0", Some("rp0"))),
            (None, b) => b.clone(),
        };
        // The sets the process knows to be older: one it replaced earlier, and — while the base
        // is owed — its durable parent, which the base was refreshed from.
        self.older = vec![Arc::new(replaced_set())];
        if self.script.carry.is_some() {
            self.older.push(Arc::new(set("p0", Some("rp0"))));
        }
        self.lineage = expected
            .zip(durable)
            .map(|(version, tokens)| Stored { version, tokens });
        let base = base.map(Arc::new);
        let mut start = Start::new(FlightId(1), self.now, base.clone(), expected)
            .with_attempt(1, self.script.poll_seed)
            .with_replaced(self.older.clone());
        if let BaseKind::RefreshTokenOnly = self.script.base {
            start = start.with_refresh_token(RefreshToken::new("r0"));
        }
        if let Some(kind) = self.script.carry {
            let lease = match kind {
                CarryKind::LeaseAndOwed => Some(Lease {
                    id: self.next_lease_id(),
                }),
                CarryKind::OwedOnly => None,
            };
            start = start.with_carry(Carry {
                lease,
                owed: base,
                expected,
            });
        }
        start
    }

    fn next_lease_id(&mut self) -> u64 {
        self.next_lease += 1;
        self.next_lease
    }

    /// Runs the whole run: the first plan, and the next one if the first hands over.
    fn run(&mut self) {
        let start = self.first_start();
        let mut plan_no = 0;
        let mut next = Some(start);
        while let Some(start) = next.take() {
            let carried_lease = start.carried.as_ref().and_then(|c| c.lease.clone());
            let base = start.base.clone();
            let rt = start
                .base
                .as_deref()
                .and_then(|b| b.refresh_token())
                .or(start.refresh_token.as_ref())
                .map(|r| r.expose_secret().to_owned());
            let expected = start.expected;
            let plan = Plan::new(self.policy.clone(), self.script.has_store, start);
            let carry = self.drive(plan, plan_no, carried_lease, rt);
            plan_no += 1;
            if let Some(carry) = carry {
                // The next flight refreshes from the set whose save is owed, with the lineage's
                // durable version, and the lease.
                let owed = carry.owed.clone();
                assert!(owed.is_some(), "a hand-over without an owed set");
                // The owed set was refreshed from this plan's base: older from now on, as the
                // credential records it.
                if let Some(b) = &base
                    && owed.as_ref() != Some(b)
                {
                    self.older.push(b.clone());
                }
                next = Some(
                    Start::new(FlightId(plan_no + 1), self.now, owed.or(base), expected)
                        .with_carry(carry)
                        .with_attempt(2, self.script.poll_seed ^ 1)
                        .with_replaced(self.older.clone()),
                );
            }
        }
    }

    /// Drives one plan to its end; returns what it handed over, if it did.
    fn drive(
        &mut self,
        mut plan: Plan,
        plan_no: u64,
        carried_lease: Option<Lease>,
        refresh_token: Option<String>,
    ) -> Option<Carry> {
        let mut obs = PlanObs {
            lease_cleared: carried_lease.is_some(),
            lease: carried_lease,
            ..PlanObs::default()
        };
        let base = plan.base().cloned();
        let has_store = self.script.has_store;
        let fail_closed = has_store && !self.script.fail_open;
        let mut last_attempted: Option<Arc<TokenSet>> = None;
        let mut feedback = Feedback::Start;
        // Steps since the store healed.
        let mut healed_steps = 0usize;
        loop {
            self.steps += 1;
            assert!(self.steps <= MAX_STEPS, "no end after {MAX_STEPS} effects");
            if self.healed() && !self.script.stuck_holder {
                healed_steps += 1;
                assert!(
                    healed_steps <= 200,
                    "the store healed but the plan is not done after 200 effects"
                );
            }
            let effect = plan.step(self.now, feedback);
            if obs.cancelled {
                // Cancelled: give the lease back, then done; nothing else.
                match &effect {
                    Effect::Release { .. } | Effect::Done => {}
                    other => panic!("{other:?} after cancel"),
                }
            }
            feedback = match effect {
                Effect::TryLease { .. } => {
                    assert!(has_store, "lease without a store");
                    let ans = match Self::next(&mut self.at, 0, &self.script.lease) {
                        _ if self.script.stuck_holder => LeaseAns::Held,
                        Some(a) if !self.healed() => a,
                        _ => LeaseAns::Acquired,
                    };
                    obs.lease_cleared = matches!(ans, LeaseAns::Acquired | LeaseAns::Unsupported);
                    Feedback::Lease(match ans {
                        LeaseAns::Acquired => {
                            assert!(obs.lease.is_none(), "a second lease while holding one");
                            let lease = Lease {
                                id: self.next_lease_id(),
                            };
                            obs.lease = Some(lease.clone());
                            Ok(LeaseOutcome::Acquired(lease))
                        }
                        LeaseAns::Held => {
                            self.failures += 1;
                            Ok(LeaseOutcome::Held)
                        }
                        LeaseAns::Unsupported => Ok(LeaseOutcome::Unsupported),
                        LeaseAns::Err => {
                            self.failures += 1;
                            Err(store_error())
                        }
                    })
                }
                Effect::Load => {
                    assert!(has_store, "load without a store");
                    let ans = match Self::next(&mut self.at, 1, &self.script.load) {
                        Some(a) if !self.healed() => a,
                        _ => LoadAns::Lineage,
                    };
                    obs.last_load_ok = Some(!matches!(ans, LoadAns::Err));
                    Feedback::Loaded(match ans {
                        LoadAns::Lineage => Ok(self.lineage.clone()),
                        LoadAns::BaseElsewhere => {
                            self.failures += 1;
                            let version = self.version();
                            Ok(base.clone().map(|tokens| Stored { version, tokens }))
                        }
                        LoadAns::Newer => {
                            self.failures += 1;
                            let version = self.version();
                            Ok(Some(Stored {
                                version,
                                tokens: set("foreign", Some("rf")),
                            }))
                        }
                        LoadAns::Own => {
                            self.failures += 1;
                            let version = self.version();
                            let tokens = last_attempted.as_deref().or(base.as_ref()).cloned();
                            Ok(tokens.map(|tokens| Stored { version, tokens }))
                        }
                        LoadAns::Replaced => {
                            self.failures += 1;
                            let version = self.version();
                            Ok(Some(Stored {
                                version,
                                tokens: replaced_set(),
                            }))
                        }
                        LoadAns::Empty => {
                            self.failures += 1;
                            Ok(None)
                        }
                        LoadAns::Err => {
                            self.failures += 1;
                            Err(store_error())
                        }
                    })
                }
                Effect::Sleep { until } => {
                    self.now = self.now.max(until);
                    if plan.can_hand_over() {
                        if self.script.hand_over_at == Some(self.hand_over_chances) && plan_no == 0
                        {
                            assert!(plan.owes_save(), "hand-over without an owed save");
                            let held = plan.lease().cloned();
                            let carry = plan.hand_over().expect("hand-over offered");
                            assert_eq!(carry.lease, held, "the lease handed over");
                            assert_eq!(carry.lease, obs.lease, "the lease handed over");
                            // Over: nothing more, in particular no release.
                            assert_eq!(plan.step(self.now, Feedback::Slept), Effect::Done);
                            assert!(plan.is_done());
                            return Some(carry);
                        }
                        self.hand_over_chances += 1;
                    }
                    Feedback::Slept
                }
                Effect::Call(request) => {
                    if fail_closed {
                        assert!(
                            obs.lease_cleared,
                            "provider called without the lease (fail closed)"
                        );
                        assert_eq!(
                            obs.last_load_ok,
                            Some(true),
                            "provider called without a successful re-read (fail closed)"
                        );
                    }
                    assert_eq!(
                        request.refresh_token.as_ref().map(|r| r.expose_secret()),
                        refresh_token.as_deref(),
                        "the request redeems the lineage's refresh token"
                    );
                    let ans = self.script.call[plan_no as usize % self.script.call.len()].clone();
                    let issued = self.now;
                    let rotated = self.token("r");
                    let rt = |rotation: Rotation| match rotation {
                        Rotation::Absent => None,
                        Rotation::Same => refresh_token.clone().map(RefreshToken::new),
                        Rotation::New => Some(RefreshToken::new(rotated.clone())),
                    };
                    let result = match ans {
                        CallAns::Tokens {
                            rotation,
                            expires_in,
                        } => {
                            let mut r = TokenResponse::new(AccessToken::new(self.token("a")));
                            if let Some(rt) = rt(rotation) {
                                r = r.with_refresh_token(rt);
                            }
                            if let Some(e) = expires_in {
                                r = r.with_expires_in(e);
                            }
                            Ok(r)
                        }
                        CallAns::NoAccessToken { rotation } => {
                            let mut r = TokenResponse::new(AccessToken::new(""));
                            if let Some(rt) = rt(rotation) {
                                if matches!(rotation, Rotation::New) {
                                    obs.rotated_in_malformed = Some(rt.expose_secret().to_owned());
                                }
                                r = r.with_refresh_token(rt);
                            }
                            Ok(r.with_expires_in(3600))
                        }
                        CallAns::Err(class) => Err(RefreshError::new(class, "scripted")),
                    };
                    Feedback::Called {
                        result,
                        issued,
                        issued_wall: wall(issued),
                    }
                }
                Effect::Renew { lease, .. } => {
                    assert!(has_store, "renew without a store");
                    assert_eq!(
                        Some(&lease),
                        obs.lease.as_ref(),
                        "renewing a lease not held"
                    );
                    let ans = match Self::next(&mut self.at, 3, &self.script.renew) {
                        Some(a) if !self.healed() => a,
                        _ => RenewAns::Renewed,
                    };
                    Feedback::Renewed(match ans {
                        RenewAns::Renewed => Ok(true),
                        RenewAns::Lost => {
                            self.failures += 1;
                            obs.lease = None;
                            Ok(false)
                        }
                        RenewAns::Err => {
                            self.failures += 1;
                            Err(store_error())
                        }
                    })
                }
                Effect::Save { expected, set } => {
                    assert!(has_store, "save without a store");
                    // No overwrite: after a conflict, only the plan's own base set (its parent,
                    // rewritten elsewhere) or a set it had replaced is written over, at the
                    // version the conflict reported.
                    assert!(
                        !obs.foreign_conflict,
                        "save after a conflict with another lineage's set or an empty store"
                    );
                    if let Some(Ok(SaveOutcome::Conflict(held))) = &obs.last_save {
                        let h = held.as_ref().expect("save after a conflict with nothing");
                        assert!(
                            Some(&h.tokens) == base.as_ref() || h.tokens == replaced_set(),
                            "save after a conflict with a set other than the base or a replaced one"
                        );
                        assert_eq!(
                            expected,
                            Some(h.version),
                            "rewrite of the base at another version than the one held"
                        );
                    }
                    obs.saves += 1;
                    last_attempted = Some(set.clone());
                    let ans = match Self::next(&mut self.at, 4, &self.script.save) {
                        Some(a) if !self.healed() => a,
                        _ => SaveAns::Saved,
                    };
                    if !matches!(ans, SaveAns::Saved) {
                        self.failures += 1;
                    }
                    let outcome = match ans {
                        SaveAns::Saved => Ok(SaveOutcome::Saved(self.version())),
                        SaveAns::ConflictOwn => Ok(SaveOutcome::Conflict(Some(Stored {
                            version: self.version(),
                            tokens: (*set).clone(),
                        }))),
                        SaveAns::ConflictBase => {
                            let version = self.version();
                            Ok(SaveOutcome::Conflict(
                                base.clone().map(|tokens| Stored { version, tokens }),
                            ))
                        }
                        SaveAns::ConflictForeign => Ok(SaveOutcome::Conflict(Some(Stored {
                            version: self.version(),
                            tokens: self::set("foreign-2", Some("rf2")),
                        }))),
                        SaveAns::ConflictNone => Ok(SaveOutcome::Conflict(None)),
                        SaveAns::ConflictReplaced => Ok(SaveOutcome::Conflict(Some(Stored {
                            version: self.version(),
                            tokens: replaced_set(),
                        }))),
                        SaveAns::Err => Err(store_error()),
                    };
                    obs.last_conflict_older = matches!(&outcome, Ok(SaveOutcome::Conflict(Some(h)))
                        if h.tokens != *set
                            && (Some(&h.tokens) == base.as_ref() || h.tokens == replaced_set()));
                    if let Ok(SaveOutcome::Conflict(held)) = &outcome {
                        let ours = held.as_ref().is_some_and(|h| {
                            h.tokens == *set
                                || Some(&h.tokens) == base.as_ref()
                                || h.tokens == replaced_set()
                        });
                        if !ours {
                            obs.foreign_conflict = true;
                        }
                    }
                    obs.last_save = Some(outcome.clone().map_err(|_| ()));
                    Feedback::Saved(outcome)
                }
                Effect::Clear { .. } => {
                    assert!(has_store, "clear without a store");
                    let ans = match Self::next(&mut self.at, 5, &self.script.clear) {
                        Some(a) if !self.healed() => a,
                        _ => ClearAns::Cleared,
                    };
                    Feedback::Cleared(match ans {
                        ClearAns::Cleared => Ok(true),
                        ClearAns::NotCleared => Ok(false),
                        ClearAns::Err => {
                            self.failures += 1;
                            Err(store_error())
                        }
                    })
                }
                Effect::Release { lease } => {
                    assert!(!plan.owes_save(), "lease released while a save is owed");
                    assert_eq!(
                        Some(&lease),
                        obs.lease.as_ref(),
                        "releasing a lease not held (or released twice)"
                    );
                    obs.lease = None;
                    obs.releases += 1;
                    Feedback::Released
                }
                Effect::Report(report) => {
                    // Never go back: not to the set this plan refreshes from, nor to one the
                    // process knows to be older.
                    if let Report::Adopted(h) | Report::Superseded(Some(h)) = &report {
                        assert!(
                            Some(&h.tokens) != base.as_ref(),
                            "went back to the set it refreshed from"
                        );
                        assert!(
                            !self.older.iter().any(|o| **o == h.tokens),
                            "went back to a set it had replaced"
                        );
                    }
                    self.check_report(&report, &mut obs, has_store);
                    Feedback::Ack
                }
                Effect::Done => {
                    assert!(plan.is_done());
                    assert!(
                        obs.lease.is_none(),
                        "done while holding {:?} (owes a save: {})",
                        obs.lease,
                        plan.owes_save()
                    );
                    assert!(plan.lease().is_none(), "done while holding a lease");
                    assert!(obs.releases <= 1, "more than one release");
                    // Persist, then publish: at most one new set per plan.
                    assert!(obs.refreshed <= 1, "reported two new sets");
                    // Keep the rotated refresh token: reported in a kept set — unless saving that
                    // set met another lineage's newer set in the store, which the plan adopts
                    // instead (the adopt rule: a newer set is adopted, never overwritten).
                    if let (Some(rt), false) = (&obs.rotated_in_malformed, obs.cancelled) {
                        assert!(
                            obs.kept_reported || obs.adopted_instead_of_kept,
                            "the rotated refresh token {rt} of a malformed answer was not kept"
                        );
                    }
                    // Done stays done.
                    assert_eq!(plan.step(self.now, Feedback::Ack), Effect::Done);
                    return None;
                }
                other => panic!("an effect this driver does not know: {other:?}"),
            };
            if self.script.cancel_at == Some(self.steps) && !obs.cancelled {
                plan.cancel();
                obs.cancelled = true;
                // A cancelled plan still reads the answer in hand for its lease: a lease just
                // acquired is released, one the store says is lost is not.
            }
        }
    }

    fn check_report(&self, report: &Report, obs: &mut PlanObs, has_store: bool) {
        match report {
            Report::Refreshed {
                version, pending, ..
            } => {
                obs.refreshed += 1;
                if has_store {
                    // Persist, then publish.
                    assert!(obs.saves >= 1, "a new set reported before any save");
                    let failed = matches!(obs.last_save, Some(Err(()))) || obs.last_conflict_older;
                    assert_eq!(*pending, failed, "pending iff the save failed");
                    let landed = match &obs.last_save {
                        Some(Ok(SaveOutcome::Saved(v))) => Some(*v),
                        Some(Ok(SaveOutcome::Conflict(Some(h)))) if !obs.last_conflict_older => {
                            Some(h.version)
                        }
                        _ => None,
                    };
                    assert_eq!(*version, landed, "the version the new set landed at");
                } else {
                    assert!(!*pending && version.is_none());
                }
            }
            Report::Failed {
                kept: Some(kept),
                pending,
                ..
            } => {
                let rt = kept.refresh_token().map(|r| r.expose_secret().to_owned());
                assert!(rt.is_some(), "a kept set without a refresh token");
                assert_eq!(
                    rt, obs.rotated_in_malformed,
                    "the kept set carries the rotated refresh token"
                );
                obs.kept_reported = true;
                if has_store {
                    assert!(obs.saves >= 1, "a kept set reported before any save");
                    let failed = matches!(obs.last_save, Some(Err(()))) || obs.last_conflict_older;
                    assert_eq!(*pending, failed, "kept set pending iff its save failed");
                } else {
                    assert!(!*pending);
                }
            }
            Report::RefreshTokenRotated(rt) => {
                assert_eq!(
                    Some(rt.expose_secret().to_owned()),
                    obs.rotated_in_malformed,
                    "the rotated refresh token kept alone"
                );
                obs.kept_reported = true;
            }
            Report::Adopted(_)
                if obs.rotated_in_malformed.is_some()
                    && matches!(obs.last_save, Some(Ok(SaveOutcome::Conflict(Some(_))))) =>
            {
                obs.adopted_instead_of_kept = true;
            }
            _ => {}
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/flight_model.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn plan_keeps_its_rules(script in script()) {
        Driver::new(script).run();
    }
}

// Minimal reproductions of the rule violations the property test finds (see each test's
// comment). They fail until the plan is fixed.

fn plan_with_store(start: Start) -> Plan {
    Plan::new(Arc::new(RefreshPolicy::default()), true, start)
}

fn base_set() -> Arc<TokenSet> {
    Arc::new(set("a0", Some("r0")))
}

/// Fail closed: a plan that carries an owed set but no lease (the earlier plan lost it) takes a
/// fresh lease, cannot re-read the store, and calls the provider anyway.
#[test]
fn fail_closed_when_the_reread_fails_after_an_owed_set_without_lease() {
    let t0 = MonoTime::ZERO;
    let base = base_set();
    let start =
        Start::new(FlightId(2), t0, Some(base.clone()), Some(Version(1))).with_carry(Carry {
            lease: None,
            owed: Some(base),
            expected: Some(Version(1)),
        });
    let mut plan = plan_with_store(start);
    assert!(matches!(
        plan.step(t0, Feedback::Start),
        Effect::TryLease { .. }
    ));
    let lease = Lease { id: 1 };
    assert_eq!(
        plan.step(t0, Feedback::Lease(Ok(LeaseOutcome::Acquired(lease)))),
        Effect::Load
    );
    let next = plan.step(t0, Feedback::Loaded(Err(store_error())));
    assert!(
        !matches!(next, Effect::Call(_)),
        "provider called after a failed re-read"
    );
}

/// Fail closed: the same with the earlier plan's lease carried in (the module docs allow no
/// exception). The carried lease is renewed first (the cross-process model check found a
/// flight relying on a carried lease that had run out and been taken).
#[test]
fn fail_closed_when_the_reread_fails_with_a_carried_lease() {
    let t0 = MonoTime::ZERO;
    let base = base_set();
    let start =
        Start::new(FlightId(2), t0, Some(base.clone()), Some(Version(1))).with_carry(Carry {
            lease: Some(Lease { id: 1 }),
            owed: Some(base),
            expected: Some(Version(1)),
        });
    let mut plan = plan_with_store(start);
    assert!(matches!(
        plan.step(t0, Feedback::Start),
        Effect::Renew { .. }
    ));
    assert_eq!(plan.step(t0, Feedback::Renewed(Ok(true))), Effect::Load);
    let next = plan.step(t0, Feedback::Loaded(Err(store_error())));
    assert!(
        !matches!(next, Effect::Call(_)),
        "provider called after a failed re-read"
    );
}

/// Keep the rotated refresh token: a credential that knows only a refresh token loses the
/// rotated one when the provider answers 2xx without an access token.
#[test]
fn rotated_refresh_token_kept_without_a_base_set() {
    let t0 = MonoTime::ZERO;
    let start = Start::new(FlightId(1), t0, None, None).with_refresh_token(RefreshToken::new("r0"));
    let mut plan = Plan::new(Arc::new(RefreshPolicy::default()), false, start);
    assert!(matches!(plan.step(t0, Feedback::Start), Effect::Call(_)));
    let answer = TokenResponse::new(AccessToken::new(""))
        .with_refresh_token(RefreshToken::new("r1"))
        .with_expires_in(3600);
    let mut feedback = Feedback::Called {
        result: Ok(answer),
        issued: t0,
        issued_wall: wall(t0),
    };
    let mut kept = None;
    loop {
        match plan.step(t0, feedback) {
            Effect::Report(Report::Failed { kept: k, .. }) => {
                kept = k.and_then(|k| k.refresh_token().cloned()).or(kept)
            }
            Effect::Report(Report::RefreshTokenRotated(rt)) => kept = Some(rt),
            Effect::Report(_) => {}
            Effect::Done => break,
            other => panic!("unexpected {other:?}"),
        }
        feedback = Feedback::Ack;
    }
    assert_eq!(
        kept.as_ref().map(|r| r.expose_secret()),
        Some("r1"),
        "the rotated refresh token was dropped"
    );
}

/// Cancel: cancelling while a report is being delivered drops the release queued behind it;
/// the lease stays taken in the store until its time-to-live runs out.
#[test]
fn cancel_during_a_report_still_releases_the_lease() {
    let t0 = MonoTime::ZERO;
    let base = base_set();
    let mut plan = plan_with_store(Start::new(
        FlightId(1),
        t0,
        Some(base.clone()),
        Some(Version(1)),
    ));
    assert!(matches!(
        plan.step(t0, Feedback::Start),
        Effect::TryLease { .. }
    ));
    let lease = Lease { id: 1 };
    plan.step(
        t0,
        Feedback::Lease(Ok(LeaseOutcome::Acquired(lease.clone()))),
    );
    let stored = Stored {
        version: Version(1),
        tokens: (*base).clone(),
    };
    assert!(matches!(
        plan.step(t0, Feedback::Loaded(Ok(Some(stored)))),
        Effect::Call(_)
    ));
    let failed = plan.step(
        t0,
        Feedback::Called {
            result: Err(RefreshError::transient("503")),
            issued: t0,
            issued_wall: wall(t0),
        },
    );
    assert!(matches!(failed, Effect::Report(Report::Failed { .. })));
    // A login supersedes the flight while the report is being applied.
    plan.cancel();
    assert_eq!(plan.step(t0, Feedback::Ack), Effect::Release { lease });
}

/// Cancel: a plan whose last store operation is over but whose reports are still queued
/// ignores `cancel()` and reports the superseded set.
#[test]
fn cancel_with_reports_queued_reports_nothing() {
    let t0 = MonoTime::ZERO;
    let start = Start::new(FlightId(1), t0, Some(base_set()), None);
    let mut plan = Plan::new(Arc::new(RefreshPolicy::default()), false, start);
    assert!(matches!(plan.step(t0, Feedback::Start), Effect::Call(_)));
    // No `expires_in`: a `LifetimeAdjusted` report goes out first, `Refreshed` is queued.
    let answer =
        TokenResponse::new(AccessToken::new("a1")).with_refresh_token(RefreshToken::new("r1"));
    let first = plan.step(
        t0,
        Feedback::Called {
            result: Ok(answer),
            issued: t0,
            issued_wall: wall(t0),
        },
    );
    assert!(matches!(
        first,
        Effect::Report(Report::LifetimeAdjusted { .. })
    ));
    plan.cancel();
    assert_eq!(plan.step(t0, Feedback::Ack), Effect::Done);
}

// A store that lies: it lost a save it acknowledged, or a read came from a lagging replica, and
// it shows a set this process had replaced. The plan knows the sets it replaced
// (`Start::replaced`); before it did, it adopted the older set and the next flight sent its
// spent refresh token (`tests/flight_rules.rs`, defect 9).

/// The set held (`a1`/`r1`, saved at version 2) and the one it replaced (`a0`/`r0`, version 1).
fn behind_start() -> (Start, Stored) {
    let held = Arc::new(set("a1", Some("r1")));
    let replaced = Arc::new(set("a0", Some("r0")));
    let start = Start::new(FlightId(2), MonoTime::ZERO, Some(held), Some(Version(2)))
        .with_replaced(vec![replaced.clone()]);
    let stored = Stored {
        version: Version(1),
        tokens: (*replaced).clone(),
    };
    (start, stored)
}

/// Steps with `feedback`, acknowledging reports: the reports, then the next other effect.
fn until_effect(plan: &mut Plan, feedback: Feedback) -> (Vec<Report>, Effect) {
    let t0 = MonoTime::ZERO;
    let mut reports = Vec::new();
    let mut effect = plan.step(t0, feedback);
    while let Effect::Report(r) = effect {
        reports.push(r);
        effect = plan.step(t0, Feedback::Ack);
    }
    (reports, effect)
}

fn leased(plan: &mut Plan) {
    let t0 = MonoTime::ZERO;
    assert!(matches!(
        plan.step(t0, Feedback::Start),
        Effect::TryLease { .. }
    ));
    let lease = Lease { id: 1 };
    assert_eq!(
        plan.step(t0, Feedback::Lease(Ok(LeaseOutcome::Acquired(lease)))),
        Effect::Load
    );
}

fn rotated(to: &str) -> Feedback {
    let t0 = MonoTime::ZERO;
    Feedback::Called {
        result: Ok(TokenResponse::new(AccessToken::new(format!("a-{to}")))
            .with_refresh_token(RefreshToken::new(to))
            .with_expires_in(3600)),
        issued: t0,
        issued_wall: wall(t0),
    }
}

/// A stale read shows the replaced set: it is not adopted, the provider gets the held set's
/// refresh token, and the save expects the version the lineage wrote (the store is really
/// there).
#[test]
fn a_stale_read_of_a_replaced_set_is_neither_adopted_nor_refreshed_from() {
    let (start, stale) = behind_start();
    let mut plan = plan_with_store(start);
    leased(&mut plan);
    let (reports, effect) = until_effect(&mut plan, Feedback::Loaded(Ok(Some(stale))));
    assert_eq!(reports, [Report::StoreBehind]);
    let Effect::Call(request) = effect else {
        panic!("{effect:?}")
    };
    assert_eq!(request.refresh_token.unwrap().expose_secret(), "r1");
    assert!(matches!(
        plan.step(MonoTime::ZERO, rotated("r2")),
        Effect::Renew { .. }
    ));
    let Effect::Save { expected, set } = plan.step(MonoTime::ZERO, Feedback::Renewed(Ok(true)))
    else {
        panic!()
    };
    assert_eq!(expected, Some(Version(2)));
    assert_eq!(set.refresh_token().unwrap().expose_secret(), "r2");
}

/// A lost save left the replaced set in the store: the save of the next set meets it in a
/// conflict and writes over it (it is older than ours), instead of adopting it.
#[test]
fn a_save_that_meets_a_replaced_set_writes_over_it() {
    let (start, lost) = behind_start();
    let mut plan = plan_with_store(start);
    leased(&mut plan);
    let (_, effect) = until_effect(&mut plan, Feedback::Loaded(Ok(Some(lost.clone()))));
    assert!(matches!(effect, Effect::Call(_)), "{effect:?}");
    plan.step(MonoTime::ZERO, rotated("r2"));
    let Effect::Save { expected, .. } = plan.step(MonoTime::ZERO, Feedback::Renewed(Ok(true)))
    else {
        panic!()
    };
    assert_eq!(expected, Some(Version(2)));
    let (reports, effect) = until_effect(
        &mut plan,
        Feedback::Saved(Ok(SaveOutcome::Conflict(Some(lost)))),
    );
    assert_eq!(reports, [Report::Conflict, Report::StoreBehind]);
    let Effect::Save { expected, set } = effect else {
        panic!("{effect:?}")
    };
    assert_eq!(expected, Some(Version(1)));
    assert_eq!(set.refresh_token().unwrap().expose_secret(), "r2");
    let (reports, _) = until_effect(
        &mut plan,
        Feedback::Saved(Ok(SaveOutcome::Saved(Version(2)))),
    );
    assert!(
        matches!(
            &reports[..],
            [Report::Refreshed {
                version: Some(Version(2)),
                pending: false,
                ..
            }]
        ),
        "{reports:?}"
    );
}

/// Without rotation the refresh token stays the same: the replaced set is known by its access
/// token, and the older access token is not adopted either.
#[test]
fn a_replaced_set_with_the_same_refresh_token_is_not_adopted() {
    let held = Arc::new(set("a1", Some("r")));
    let replaced = Arc::new(set("a0", Some("r")));
    let start = Start::new(FlightId(2), MonoTime::ZERO, Some(held), Some(Version(2)))
        .with_replaced(vec![replaced.clone()]);
    let mut plan = plan_with_store(start);
    leased(&mut plan);
    let stale = Stored {
        version: Version(1),
        tokens: (*replaced).clone(),
    };
    let (reports, effect) = until_effect(&mut plan, Feedback::Loaded(Ok(Some(stale))));
    assert_eq!(reports, [Report::StoreBehind]);
    assert!(matches!(effect, Effect::Call(_)), "{effect:?}");
}

/// A set this process never held is still another process's newer one: adopted. And a
/// waiter polling the lease of another process does not take the replaced set for its result.
#[test]
fn only_replaced_sets_are_taken_for_older() {
    let (start, stale) = behind_start();
    let mut plan = plan_with_store(start.clone());
    leased(&mut plan);
    let other = Stored {
        version: Version(3),
        tokens: set("a9", Some("r9")),
    };
    let (reports, _) = until_effect(&mut plan, Feedback::Loaded(Ok(Some(other.clone()))));
    assert_eq!(reports, [Report::Adopted(other)]);

    let mut waiter = plan_with_store(start);
    assert!(matches!(
        waiter.step(MonoTime::ZERO, Feedback::Start),
        Effect::TryLease { .. }
    ));
    let (_, effect) = until_effect(&mut waiter, Feedback::Lease(Ok(LeaseOutcome::Held)));
    assert_eq!(effect, Effect::Load);
    let (reports, effect) = until_effect(&mut waiter, Feedback::Loaded(Ok(Some(stale))));
    assert!(
        !reports.iter().any(|r| matches!(r, Report::Adopted(_))),
        "{reports:?}"
    );
    assert!(matches!(effect, Effect::Sleep { .. }), "{effect:?}");
}

//! A simulated world — one provider, credentials each shared by several processes through one
//! store, callers, a resource server, faults and a director — and the invariant oracles that
//! watch it after every event.
//!
//! The world is independent of the client under test: processes run whatever
//! [`ClientStrategy`] is given (see [`crate::strategy`]), and every oracle observes the
//! provider, the store and the callers only.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use keepfresh::oauth::{classify_resource_answer, ResourceVerdict};
use keepfresh::runtime::MonoTime;
use keepfresh::store::{MemoryStore, Stored, TokenStore};
use keepfresh::{AccessToken, RefreshPolicy, RefreshToken, TokenSet};
use parking_lot::Mutex;
use serde::Serialize;

use crate::client::ProviderClient;
use crate::exec::{
    poll_catching_injected, silence_injected_panics, wall_at, ExecHandle, Executor, Group,
    HostClock, InjectedPanic, RunEnd,
};
use crate::provider::{FamilyId, IssueOrder, Profile, Provider, ResourceAnswer, SECRET_MARKER};
use crate::rng::{derive, SimRng};
use crate::store::FaultyStore;
use crate::strategy::{
    ClientError, ClientStrategy, ListenerPanics, LogLine, LogSink, ProcessClient, ProcessContext,
};

/// Transport, store and host faults, active until the world heals.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Faults {
    /// Token-endpoint latency range, milliseconds.
    pub latency_ms: (u64, u64),
    /// Probability that a call takes ten times longer.
    pub latency_tail: f64,
    /// The request never reaches the provider.
    pub p_not_delivered: f64,
    /// 5xx with an HTML body.
    pub p_5xx: f64,
    /// 429 with `Retry-After`.
    pub p_429: f64,
    /// 503 with `Retry-After`.
    pub p_503: f64,
    /// One spurious `invalid_client`.
    pub p_invalid_client: f64,
    /// HTTP 200 with an HTML body after the provider committed.
    pub p_malformed: f64,
    /// The answer is lost after the provider committed (reset or hang).
    pub p_lost: f64,
    /// `Retry-After` as an HTTP date rather than seconds.
    pub retry_after_date: bool,
    /// `Retry-After` value.
    pub retry_after_secs: u64,
    /// A store write fails.
    pub store_write_fail: f64,
    /// A store write hangs (bounded by the engine's store timeout).
    pub store_hang: f64,
    /// Store operation latency range, milliseconds (0, 0: instant).
    pub store_latency_ms: (u64, u64),
    /// A lease operation (`try_lease`, `renew_lease`, `release`) fails with an I/O error.
    pub lease_fail: f64,
    /// A lease operation hangs (bounded by the engine's store timeout).
    pub lease_hang: f64,
    /// A store read fails with an I/O error.
    pub load_fail: f64,
    /// A store read hangs (bounded by the engine's store timeout). Separate from
    /// [`Faults::store_hang`], which stays a write fault so that existing worlds replay.
    pub load_hang: f64,
    /// The store lies about a save: it answers `Saved` at the version the save would have had
    /// and persists nothing, and the next write that lands gets that version again (a Redis
    /// failover that lost an acknowledged write with its version counter, a disk that
    /// acknowledged an fsync and lost the data). Only a save whose compare-and-swap matches is
    /// lost (a mismatch is still reported as a conflict), and never the first save into an
    /// empty store.
    pub save_lost: f64,
    /// The store lies about a read: it answers with one of the (up to three) sets it held
    /// before its latest write, at that set's version (a read from a lagging Redis replica, a
    /// cached file).
    pub stale_read: f64,
    /// An event listener of the host's, registered in every process's client, panics on an
    /// event with this probability.
    pub listener_panics: f64,
}

impl Faults {
    /// No faults, 20–200 ms latency.
    pub fn none() -> Faults {
        Faults {
            latency_ms: (20, 200),
            latency_tail: 0.0,
            p_not_delivered: 0.0,
            p_5xx: 0.0,
            p_429: 0.0,
            p_503: 0.0,
            p_invalid_client: 0.0,
            p_malformed: 0.0,
            p_lost: 0.0,
            retry_after_date: false,
            retry_after_secs: 30,
            store_write_fail: 0.0,
            store_hang: 0.0,
            store_latency_ms: (0, 0),
            lease_fail: 0.0,
            lease_hang: 0.0,
            load_fail: 0.0,
            load_hang: 0.0,
            save_lost: 0.0,
            stale_read: 0.0,
            listener_panics: 0.0,
        }
    }

    /// Every fault rate with its name, as [`Faults::active`] and [`Faults::disable`] name them.
    fn rates(&self) -> [(&'static str, f64); 16] {
        [
            ("not_delivered", self.p_not_delivered),
            ("5xx", self.p_5xx),
            ("429", self.p_429),
            ("503", self.p_503),
            ("invalid_client", self.p_invalid_client),
            ("malformed", self.p_malformed),
            ("lost", self.p_lost),
            ("store_write_fail", self.store_write_fail),
            ("store_hang", self.store_hang),
            ("lease_fail", self.lease_fail),
            ("lease_hang", self.lease_hang),
            ("load_fail", self.load_fail),
            ("load_hang", self.load_hang),
            ("save_lost", self.save_lost),
            ("stale_read", self.stale_read),
            ("listener_panics", self.listener_panics),
        ]
    }

    /// Names of the fault kinds that are switched on (for shrinking and reports).
    pub fn active(&self) -> Vec<&'static str> {
        self.rates()
            .into_iter()
            .filter(|(_, p)| *p > 0.0)
            .map(|(name, _)| name)
            .collect()
    }

    /// Switches one fault kind off by name.
    pub fn disable(&mut self, name: &str) {
        match name {
            "not_delivered" => self.p_not_delivered = 0.0,
            "5xx" => self.p_5xx = 0.0,
            "429" => self.p_429 = 0.0,
            "503" => self.p_503 = 0.0,
            "invalid_client" => self.p_invalid_client = 0.0,
            "malformed" => self.p_malformed = 0.0,
            "lost" => self.p_lost = 0.0,
            "store_write_fail" => self.store_write_fail = 0.0,
            "store_hang" => self.store_hang = 0.0,
            "lease_fail" => self.lease_fail = 0.0,
            "lease_hang" => self.lease_hang = 0.0,
            "load_fail" => self.load_fail = 0.0,
            "load_hang" => self.load_hang = 0.0,
            "save_lost" => self.save_lost = 0.0,
            "stale_read" => self.stale_read = 0.0,
            "listener_panics" => self.listener_panics = 0.0,
            _ => {}
        }
    }
}

/// When callers make requests.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum Pattern {
    /// Each caller wakes at independent intervals drawn uniformly in `[mean/2, 3*mean/2]`.
    Steady {
        /// Mean interval between two requests of one caller.
        mean: Duration,
    },
    /// Every caller requests at the same instants, every `every`, starting at `first`.
    Bursts {
        /// First burst.
        first: Duration,
        /// Interval between bursts.
        every: Duration,
    },
}

/// The tokens each credential starts with.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Initial {
    /// Just issued at time zero (every credential minted together).
    Fresh,
    /// Issued at a random earlier time within the lifetime.
    Aged,
    /// Expired just before time zero.
    Expired,
}

/// Something the director does at a given time.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum Action {
    /// Kills a process and restarts it after a delay (it reloads the store).
    Crash {
        /// Global process index.
        proc: usize,
        /// Down time.
        restart_after: Duration,
    },
    /// The next save of this process kills it (after the provider answered), then it restarts.
    CrashOnNextSave {
        /// Global process index.
        proc: usize,
        /// Down time.
        restart_after: Duration,
    },
    /// The provider revokes a credential's family (user or admin action).
    Revoke {
        /// Credential index.
        cred: usize,
    },
    /// An unrelated writer rewrites the credential's store content (same tokens, new version).
    Overwrite {
        /// Credential index.
        cred: usize,
    },
    /// Steps a process's wall clock (NTP step, suspend/resume).
    JumpWall {
        /// Global process index.
        proc: usize,
        /// Signed seconds.
        secs: i64,
    },
    /// A clean shutdown of a process, which is then restarted after a delay.
    Shutdown {
        /// Global process index.
        proc: usize,
        /// Down time.
        restart_after: Duration,
    },
    /// Every operation on the credential's store (read, save, clear, lease) fails with an I/O
    /// error for `duration` (a network store unreachable, a file system gone read-only), or
    /// until the world heals.
    StoreOutage {
        /// Credential index.
        cred: usize,
        /// Length of the outage.
        duration: Duration,
    },
    /// The process's host sleeps (a laptop lid closed) for `duration`, or until the world
    /// heals: none of its tasks runs and no caller of it is issued, wall time runs on, and its
    /// monotonic clock stands still, so after the resume it reads `duration` less than true
    /// time; its timers fire by that clock.
    Suspend {
        /// Global process index.
        proc: usize,
        /// Length of the suspend.
        duration: Duration,
    },
    /// The user logs in again in this process: the provider authorizes a new grant and the
    /// process's client installs its tokens. Oracles: from then on the process serves only
    /// tokens of that grant (or a later one), and the store never again holds an older grant.
    Login {
        /// Global process index.
        proc: usize,
    },
    /// Another writer — a host sharing the grant whose lease request failed open, say —
    /// redeems the provider's newest refresh token and stores the answer, at the first moment
    /// (checked every 100 ms, until the world heals) when a rotation of the credential is not
    /// yet durable and no token-endpoint call is in flight: it lands during a save retry.
    WriteNewer {
        /// Credential index.
        cred: usize,
    },
}

impl Action {
    /// The fault kind a scheduled action belongs to, for shrinking (`None`: not a fault).
    pub fn fault_kind(&self) -> Option<&'static str> {
        match self {
            Action::StoreOutage { .. } => Some("store_outage"),
            Action::Suspend { .. } => Some("suspend"),
            Action::Login { .. } => Some("login"),
            Action::WriteNewer { .. } => Some("newer_write"),
            Action::Crash { .. }
            | Action::CrashOnNextSave { .. }
            | Action::Revoke { .. }
            | Action::Overwrite { .. }
            | Action::JumpWall { .. }
            | Action::Shutdown { .. } => None,
        }
    }
}

/// The fault kinds that are scheduled actions rather than rates in [`Faults`].
pub const ACTION_FAULTS: [&str; 4] = ["store_outage", "suspend", "login", "newer_write"];

/// What a scenario expects about re-authorization.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub enum ReauthExpect {
    /// Never: any re-authorization is a failure.
    Never,
    /// Allowed (a scenario that revokes or replays on purpose).
    Allowed,
    /// Required, with this reason, reported exactly once by each process instance that
    /// reports it, and by at least one.
    ExactlyOnce(String),
}

/// A fully resolved world: everything one run needs besides the seed and the strategy.
#[derive(Clone, Debug, Serialize)]
pub struct WorldConfig {
    /// Scenario name.
    pub scenario: String,
    /// Provider behaviour.
    pub profile: Profile,
    /// Independent credentials (each with its own family and store).
    pub credentials: usize,
    /// Processes per credential sharing its store.
    pub processes: usize,
    /// Callers per process.
    pub callers: usize,
    /// Request pattern.
    pub pattern: Pattern,
    /// How long callers keep making requests.
    pub duration: Duration,
    /// Faults stop at this time (`None`: at the end of the workload).
    pub heal_at: Option<Duration>,
    /// Time after the workload ends for the engine to settle before the liveness probe.
    pub settle: Duration,
    /// Starting tokens.
    pub initial: Initial,
    /// Faults.
    pub faults: Faults,
    /// Scheduled actions.
    pub schedule: Vec<(Duration, Action)>,
    /// Refresh-ahead jitter on (off: every token refreshes at 75 % of its life).
    pub jitter: bool,
    /// Refresh on a timer even without demand.
    pub eager: bool,
    /// The engine's wait timeout for callers.
    pub wait_timeout: Duration,
    /// Provider clock skew, seconds.
    pub provider_skew_secs: i64,
    /// Each process's wall clock is off by up to this many seconds (either way).
    pub process_skew_secs: i64,
    /// Callers check each token against the resource server (and handle a 401).
    pub resource_server: bool,
    /// Every n-th resource request needs a scope the grant lacks: the resource server answers
    /// 403 `insufficient_scope` (0: never). Callers must treat it as a step-up, not a refresh.
    pub step_up_every: u64,
    /// Time a caller spends using the token before the resource server sees it.
    pub io_time: Duration,
    /// Callers abandon their request after this long (cancellation).
    pub caller_timeout: Option<Duration>,
    /// Re-authorization expectation.
    pub reauth: ReauthExpect,
    /// Replays of rotated refresh tokens and family revocations are expected (a scenario that
    /// revokes or replays on purpose).
    pub allow_revoked_family: bool,
    /// Exactly this many token-endpoint calls per credential, if set.
    pub exact_calls_per_credential: Option<u64>,
    /// At most this many token-endpoint calls per credential, if set.
    pub max_calls_per_credential: Option<u64>,
    /// The store converges to the provider's newest refresh token at the end.
    pub check_convergence: bool,
    /// The provider states the true lifetime, so serving past it is a failure (off when the
    /// provider omits or garbles `expires_in` and the engine must assume one).
    pub lifetime_known: bool,
    /// Cap on executor steps.
    pub max_steps: u64,
    /// Run the credentials in independent shards of this many (0: all in one world).
    ///
    /// Credentials share nothing in the model — each has its own family at the provider, its
    /// own store, processes and callers — so a large world with no scheduled actions can run
    /// as a sequence of smaller worlds, each on its own executor with a seed derived from the
    /// run's seed, with every oracle running in each. What is lost is only the interleaving of
    /// events of unrelated credentials on one executor; what is gained is a working set that
    /// stays in the CPU caches (the fleet run is dominated by cache misses otherwise).
    pub shard_credentials: usize,
    /// Threads that run shards at once (0 or 1: one after the other). Results do not depend
    /// on it: shards are merged in order, and a failure stops the shards after it.
    #[serde(skip)]
    pub shard_jobs: usize,
    /// Observe only: keep running after an invariant breaks, to the end of the world (the
    /// comparison mode runs other clients' behaviours, which break invariants by design, and
    /// reports what happened next).
    pub keep_going: bool,
}

impl WorldConfig {
    /// A small default world of `profile` with no faults.
    pub fn base(scenario: &str, profile: Profile) -> WorldConfig {
        WorldConfig {
            scenario: scenario.into(),
            profile,
            credentials: 1,
            processes: 1,
            callers: 10,
            pattern: Pattern::Steady {
                mean: Duration::from_secs(60),
            },
            duration: Duration::from_secs(4 * 3600),
            heal_at: None,
            settle: Duration::from_secs(600),
            initial: Initial::Fresh,
            faults: Faults::none(),
            schedule: Vec::new(),
            jitter: true,
            eager: false,
            wait_timeout: Duration::from_secs(30),
            provider_skew_secs: 0,
            process_skew_secs: 0,
            resource_server: true,
            step_up_every: 0,
            io_time: Duration::ZERO,
            caller_timeout: None,
            reauth: ReauthExpect::Never,
            allow_revoked_family: false,
            exact_calls_per_credential: None,
            max_calls_per_credential: None,
            check_convergence: true,
            lifetime_known: true,
            max_steps: 200_000_000,
            shard_credentials: 0,
            shard_jobs: 1,
            keep_going: false,
        }
    }

    fn heal_time(&self) -> Duration {
        self.heal_at.unwrap_or(self.duration)
    }

    /// Names of the fault kinds that are on: the rates of [`Faults::active`] and the kinds of
    /// the scheduled fault actions ([`ACTION_FAULTS`]).
    pub fn active_faults(&self) -> Vec<&'static str> {
        let mut v = self.faults.active();
        for kind in ACTION_FAULTS {
            if self
                .schedule
                .iter()
                .any(|(_, a)| a.fault_kind() == Some(kind))
            {
                v.push(kind);
            }
        }
        v
    }

    /// Switches one fault kind off by name: a rate ([`Faults::disable`]) or every scheduled
    /// action of that kind.
    pub fn disable_fault(&mut self, name: &str) {
        self.faults.disable(name);
        self.schedule.retain(|(_, a)| a.fault_kind() != Some(name));
    }

    /// Checks the configuration for contradictions and impossible values.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in self.faults.rates() {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "fault rate {name} = {p} is not a probability in [0, 1]"
                ));
            }
        }
        if self.credentials == 0 || self.processes == 0 {
            return Err("a world needs at least one credential and one process".into());
        }
        if self.faults.latency_ms.0 > self.faults.latency_ms.1 {
            return Err("latency range is reversed (min > max)".into());
        }
        if self.duration.is_zero() {
            return Err("duration must be positive".into());
        }
        let (Pattern::Steady { mean } | Pattern::Bursts { every: mean, .. }) = &self.pattern;
        if mean.is_zero() {
            return Err("request interval must be positive".into());
        }
        let procs = self.credentials * self.processes;
        for (_, a) in &self.schedule {
            let (p, c) = match a {
                Action::Crash { proc, .. }
                | Action::CrashOnNextSave { proc, .. }
                | Action::JumpWall { proc, .. }
                | Action::Shutdown { proc, .. }
                | Action::Suspend { proc, .. }
                | Action::Login { proc } => (Some(*proc), None),
                Action::Revoke { cred }
                | Action::Overwrite { cred }
                | Action::StoreOutage { cred, .. }
                | Action::WriteNewer { cred } => (None, Some(*cred)),
            };
            if p.is_some_and(|p| p >= procs) || c.is_some_and(|c| c >= self.credentials) {
                return Err(format!(
                    "scheduled action {a:?} names a process or credential that does not exist"
                ));
            }
        }
        Ok(())
    }

    /// The engine policy this world runs with.
    pub fn policy(&self, seed: u64) -> Result<RefreshPolicy, String> {
        let mut b = RefreshPolicy::builder()
            .jitter_seed(seed)
            .eager(self.eager)
            .wait_timeout(self.wait_timeout);
        if !self.jitter {
            b = b.refresh_window(0.75, 0.75);
        }
        b.build().map_err(|e| e.to_string())
    }
}

/// How a run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailureKind {
    /// An invariant was broken.
    Correctness,
    /// Something never happened: a deadlock, a waiter past its deadline, no recovery.
    Liveness,
    /// The simulated code panicked.
    Crash,
}

impl FailureKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            FailureKind::Correctness => 10,
            FailureKind::Liveness => 11,
            FailureKind::Crash => 12,
        }
    }
}

/// The first invariant violation of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// Kind.
    pub kind: FailureKind,
    /// What went wrong (never contains a secret).
    pub message: String,
    /// Simulated time of detection, seconds.
    pub at_secs: f64,
}

/// Log2 histogram of durations.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: [u64; 65],
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; 65],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Records one duration in nanoseconds.
    #[inline]
    pub fn record(&mut self, nanos: u64) {
        self.buckets[(64 - nanos.leading_zeros()) as usize] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
    }

    /// Upper bound of the bucket holding quantile `q`, in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return if i == 0 {
                    0
                } else {
                    (1u64 << (i - 1)).saturating_mul(2).min(self.max)
                };
            }
        }
        self.max
    }

    /// Largest value.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Counters the oracles and reports use.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Token-endpoint call start times (ns).
    pub token_calls: Vec<u64>,
    /// Caller requests.
    pub requests: u64,
    /// Tokens served.
    pub served: u64,
    /// Caller errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Caller waits.
    pub waits: Histogram,
    /// Served with less than 60 s of true life left.
    pub near_expiry: u64,
    /// Served after the provider's true expiry where the provider did not state it.
    pub served_past_true_expiry: u64,
    /// Resource-server 401s seen by callers.
    pub rs_unauthorized: u64,
    /// 401s again after the one retry.
    pub rs_unauthorized_after_retry: u64,
    /// Resource requests checked by the resource server.
    pub rs_requests: u64,
    /// Resource-server 403 `insufficient_scope` answers (step-ups; never a refresh).
    pub rs_step_up: u64,
    /// Re-authorization signals.
    pub reauths: u64,
    /// Persist failures signalled.
    pub persist_failures: u64,
    /// Requests abandoned by callers (cancellation).
    pub abandoned: u64,
    /// Per time bucket: (token calls, max caller wait ns).
    pub series: Vec<(u64, u64)>,
    /// Width of a series bucket, ns.
    pub bucket_ns: u64,
    /// Largest time between a provider commit and the next successful store write, ns.
    pub max_unsaved_window_ns: u64,
    /// Caller requests that did not get a token at once (waited at all).
    pub blocked: u64,
    /// Waits of the blocked requests.
    pub blocked_waits: Histogram,
    /// Blocked requests that started while an access token the credential had received was
    /// still valid at the resource server.
    pub blocked_while_valid: u64,
    /// Caller errors while an access token the credential had received was still valid.
    pub errors_while_valid: u64,
    /// Token-endpoint calls that started while another call for the same credential was in
    /// flight, or within [`DUPLICATE_WINDOW`] of a refresh answer delivered for it.
    pub duplicate_calls: u64,
    /// Replays of rotated refresh tokens outside any grace window whose rotation answer had
    /// reached the client (not excused by a lost answer).
    pub unexcused_replays: u64,
    /// Credentials whose family the provider revoked for refresh-token reuse.
    pub families_revoked_by_reuse: u64,
    /// Process instances that reported that re-authorization is required.
    pub reauth_processes: u64,
    /// Of those, instances started after a crash or restart.
    pub reauth_after_restart: u64,
    /// Rotated refresh tokens a process had received but not stored when it stopped.
    pub tokens_lost: u64,
    /// Event-listener panics injected into processes.
    pub listener_panics: u64,
    /// Lies the store told: saves it acknowledged and lost, reads it answered with an older set.
    pub store_lies: u64,
    /// Replays of rotated refresh tokens that a lie of the store hid from the process that
    /// replayed (excused: the store's failure, not the engine's).
    pub replays_blamed_on_store: u64,
}

impl Metrics {
    /// Adds the figures of an independent shard of the same world.
    fn absorb(&mut self, o: Metrics) {
        self.token_calls.extend(o.token_calls);
        self.requests += o.requests;
        self.served += o.served;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.waits.merge(&o.waits);
        self.near_expiry += o.near_expiry;
        self.served_past_true_expiry += o.served_past_true_expiry;
        self.rs_unauthorized += o.rs_unauthorized;
        self.rs_unauthorized_after_retry += o.rs_unauthorized_after_retry;
        self.rs_requests += o.rs_requests;
        self.rs_step_up += o.rs_step_up;
        self.reauths += o.reauths;
        self.persist_failures += o.persist_failures;
        self.abandoned += o.abandoned;
        if self.series.len() < o.series.len() {
            self.series.resize(o.series.len(), (0, 0));
        }
        for (a, b) in self.series.iter_mut().zip(o.series.iter()) {
            a.0 += b.0;
            a.1 = a.1.max(b.1);
        }
        self.bucket_ns = self.bucket_ns.max(o.bucket_ns);
        self.max_unsaved_window_ns = self.max_unsaved_window_ns.max(o.max_unsaved_window_ns);
        self.blocked += o.blocked;
        self.blocked_waits.merge(&o.blocked_waits);
        self.blocked_while_valid += o.blocked_while_valid;
        self.errors_while_valid += o.errors_while_valid;
        self.duplicate_calls += o.duplicate_calls;
        self.unexcused_replays += o.unexcused_replays;
        self.families_revoked_by_reuse += o.families_revoked_by_reuse;
        self.reauth_processes += o.reauth_processes;
        self.reauth_after_restart += o.reauth_after_restart;
        self.tokens_lost += o.tokens_lost;
        self.listener_panics += o.listener_panics;
        self.store_lies += o.store_lies;
        self.replays_blamed_on_store += o.replays_blamed_on_store;
    }
}

/// A refresh of the same credential starting this soon after a delivered refresh answer counts
/// as a duplicate refresh.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10);

/// A refresh answer (or the login) that reached a process: what the credential holds.
#[derive(Clone, Debug)]
pub(crate) struct Delivered {
    pub(crate) at: MonoTime,
    pub(crate) proc: usize,
    pub(crate) access: String,
    pub(crate) refresh: Option<String>,
    /// The provider's record of `access` when it was delivered: its family and true expiry
    /// (`None`: a token the provider never issued, never valid).
    pub(crate) record: Option<(FamilyId, MonoTime)>,
}

const DELIVERED_KEPT: usize = 8;

/// Trace ring, determinism hash and secret scan.
#[derive(Debug)]
pub struct Trace {
    ring: VecDeque<(MonoTime, String)>,
    /// FNV-1a over every traced line and serve.
    pub hash: u64,
    /// Lines traced.
    pub lines: u64,
    print: bool,
}

impl Trace {
    fn new(print: bool) -> Self {
        Trace {
            ring: VecDeque::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            print,
        }
    }

    #[inline]
    fn mix(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.hash ^= *b as u64;
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The last lines with their simulated timestamps.
    pub fn tail(&self) -> Vec<String> {
        self.ring
            .iter()
            .map(|(t, l)| format!("{:>12.3}s  {l}", t.as_duration().as_secs_f64()))
            .collect()
    }
}

const RING: usize = 40;

/// The world's shared mutable state (one lock; the executor is single-threaded).
#[derive(Debug)]
pub struct State {
    pub(crate) provider: Provider,
    pub(crate) rng: SimRng,
    pub(crate) faults: Faults,
    pub(crate) healed: bool,
    pub(crate) inflight: Vec<u32>,
    /// Per process: token-endpoint calls in flight.
    pub(crate) proc_inflight: Vec<u32>,
    pub(crate) metrics: Metrics,
    pub(crate) trace: Trace,
    pub(crate) failure: Option<Failure>,
    pub(crate) last_committed: Vec<Option<String>>,
    pub(crate) crash_on_save: Vec<bool>,
    families: Vec<FamilyId>,
    /// Per process: the generation last served, its access token's true expiry and grant.
    gen_cache: Vec<(u64, MonoTime, FamilyId)>,
    skew_tolerance: Duration,
    pending_callers: u64,
    reauth_reports: BTreeMap<(usize, u32), Vec<String>>,
    instance: Vec<u32>,
    replays_checked: usize,
    allow_revoked: bool,
    reauth_never: bool,
    pub(crate) unsaved_since: Vec<Option<MonoTime>>,
    /// Per credential: the latest answers delivered to processes (and the login).
    pub(crate) delivered: Vec<VecDeque<Delivered>>,
    /// Per credential: when the latest refresh answer reached a process.
    pub(crate) last_delivered: Vec<Option<MonoTime>>,
    failure_tail: Option<Vec<String>>,
    lifetime_known: bool,
    /// Per credential: its store fails every operation before this time (an outage).
    outage_until: Vec<MonoTime>,
    /// Per credential: the newest grant its store ever held.
    store_family: Vec<Option<FamilyId>>,
    /// Per process: the grant of the last login it installed; it serves no older grant since.
    login_floor: Vec<Option<FamilyId>>,
    /// Per credential: the sets its store held before its latest writes, newest last (at most
    /// [`STALE_DEPTH`]; kept only when stale reads are on): what a stale read answers with.
    pub(crate) store_history: Vec<VecDeque<Stored>>,
    /// Refresh tokens whose rotation a lost save hid: the one it left in the store, and those
    /// between it and the lost set's. A process holding one cannot know it is spent.
    pub(crate) left_by_lost_save: HashSet<String>,
    /// Per credential: a lost save dropped a set of a newer grant (a login) from the store, so
    /// the store may hand the older grant to a process again.
    pub(crate) lost_grant: Vec<bool>,
    /// Per process instance: a store read of it was answered with an older set (a stale
    /// read). What it decides from then on may rest on that lie: a set it adopted from the
    /// stale read, a set refreshed from that one, and so on, with no way for it to tell.
    pub(crate) misled: Vec<bool>,
    /// Per process instance: refresh tokens whose rotation answer reached it. It knows they are
    /// spent; sending one again is its own replay, whatever the store says.
    pub(crate) seen_rotated: Vec<HashSet<String>>,
    /// Per process instance: the access tokens it served, as (grant, issue order), first
    /// serving first.
    served_sets: Vec<Vec<(FamilyId, u64)>>,
}

/// How many earlier sets of a store a stale read can answer with.
pub(crate) const STALE_DEPTH: usize = 3;

impl State {
    /// Records the set a write that landed in credential `cred`'s store replaced, for stale
    /// reads.
    pub(crate) fn remember_replaced(&mut self, cred: usize, prior: Option<Stored>) {
        if self.faults.stale_read <= 0.0 {
            return;
        }
        if let Some(p) = prior {
            let h = &mut self.store_history[cred];
            if h.len() == STALE_DEPTH {
                h.pop_front();
            }
            h.push_back(p);
        }
    }

    /// Whether process `proc`'s use of refresh token `rt` may rest on a lie of the store: it
    /// was answered a stale read, or a lost save left `rt` in the store after its rotation.
    pub(crate) fn store_misled(&self, proc: usize, rt: &str) -> bool {
        self.misled[proc] || self.left_by_lost_save.contains(rt)
    }

    /// The going-back oracle, run when process `proc` serves a new generation whose access
    /// token is of `family` at issue order `seq`: a process never serves again an access token
    /// it had served before a newer one of the same grant. The store's content only moves
    /// forward (the store oracle checks every write that lands, and a lost save writes
    /// nothing), so only a stale read can show a process an older set it cannot tell from
    /// another process's newer one: the oracle holds for processes never answered a stale
    /// read; the others are held to the refresh-token oracle (never send a refresh token whose
    /// rotation answer you received).
    fn check_not_back(&mut self, proc: usize, family: FamilyId, seq: u64, now: MonoTime) {
        let served = &self.served_sets[proc];
        let again = served.contains(&(family, seq));
        if !again {
            self.served_sets[proc].push((family, seq));
            return;
        }
        if !self.misled[proc] && served.iter().any(|&(f, q)| f == family && q > seq) {
            self.violate_correctness(
                now,
                format!("p{proc} went back to an access token it had served before a newer one of the same grant (an older set it had replaced)"),
            );
        }
    }

    /// Whether credential `cred`'s store is in an outage at `now`.
    pub(crate) fn store_out(&self, cred: usize, now: MonoTime) -> bool {
        now < self.outage_until[cred]
    }

    /// The store oracle, run on every write that landed in credential `cred`'s store: the
    /// written set must not be older, in the provider's issue order, than the set it replaced
    /// (a save must never write a set over a newer one), and never of an older grant than the
    /// store ever held (a login is never overwritten by the grant it replaced).
    pub(crate) fn check_store_write(
        &mut self,
        cred: usize,
        prior: Option<&TokenSet>,
        written: &TokenSet,
        writer: &str,
        now: MonoTime,
    ) {
        let order = |s: &State, t: &TokenSet| -> Option<IssueOrder> {
            s.provider.issue_order(
                t.access_token().expose_secret(),
                t.refresh_token().map(|r| r.expose_secret()),
            )
        };
        let Some(new) = order(self, written) else {
            return;
        };
        if let Some(newest) = self.store_family[cred] {
            if new.family < newest {
                self.violate_correctness(
                    now,
                    format!(
                        "c{cred}: {writer} wrote a token set of grant {} over the store of the newer grant {newest} (a login was overwritten)",
                        new.family
                    ),
                );
                return;
            }
        }
        self.store_family[cred] = Some(new.family.max(self.store_family[cred].unwrap_or(0)));
        let Some(old) = prior.and_then(|p| order(self, p)) else {
            return;
        };
        if old.family != new.family {
            return;
        }
        let older = match (new.refresh, old.refresh) {
            (Some(n), Some(o)) if n != o => n < o,
            (Some(_), None) | (None, Some(_)) => false,
            _ => new.access < old.access,
        };
        if older {
            self.violate_correctness(
                now,
                format!(
                    "c{cred}: {writer} wrote an older token set over a newer one of the same grant ({})",
                    if new.refresh != old.refresh { "older refresh token" } else { "older access token" }
                ),
            );
        }
    }

    pub(crate) fn trace_line(&mut self, at: MonoTime, line: String) {
        if line.contains(SECRET_MARKER) {
            // Report the leak without the secret itself.
            let shown: String = line
                .split(SECRET_MARKER)
                .next()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect();
            self.violate_correctness(
                at,
                format!("a secret appeared in a log line: {shown}<secret…>"),
            );
            return;
        }
        self.trace.mix(&at.as_nanos().to_le_bytes());
        self.trace.mix(line.as_bytes());
        self.trace.lines += 1;
        if self.trace.print {
            println!("{:>12.3}s  {line}", at.as_duration().as_secs_f64());
        }
        if self.trace.ring.len() == RING {
            self.trace.ring.pop_front();
        }
        self.trace.ring.push_back((at, line));
        self.check_replays(at);
    }

    fn check_replays(&mut self, at: MonoTime) {
        while self.replays_checked < self.provider.replays.len() {
            let r = self.provider.replays[self.replays_checked].clone();
            self.replays_checked += 1;
            if !r.excused && !self.allow_revoked {
                self.violate_correctness(
                    at,
                    format!(
                        "a rotated refresh token of family {} was replayed outside the grace window{}",
                        r.family,
                        if r.revoked_family { " and the provider revoked the family" } else { "" }
                    ),
                );
            }
        }
    }

    pub(crate) fn violate_correctness(&mut self, at: MonoTime, message: String) {
        self.violate(FailureKind::Correctness, at, message);
    }

    pub(crate) fn violate(&mut self, kind: FailureKind, at: MonoTime, message: String) {
        if self.failure.is_none() {
            self.failure_tail = Some(self.trace.tail());
            self.failure = Some(Failure {
                kind,
                message,
                at_secs: at.as_duration().as_secs_f64(),
            });
        }
    }

    /// Records a refresh answer that reached process `proc` of credential `cred`.
    pub(crate) fn record_delivered(
        &mut self,
        cred: usize,
        proc: usize,
        at: MonoTime,
        access: String,
        refresh: Option<String>,
    ) {
        let record = self
            .provider
            .access_record(&access)
            .map(|r| (r.family, r.expires));
        let d = &mut self.delivered[cred];
        if d.len() == DELIVERED_KEPT {
            d.pop_front();
        }
        d.push_back(Delivered {
            at,
            proc,
            access,
            refresh,
            record,
        });
        self.last_delivered[cred] = Some(at);
    }

    /// Whether an access token the credential had received by `t` is valid at `t`.
    pub(crate) fn valid_token_at(&self, cred: usize, t: MonoTime) -> bool {
        // Newest first: usually the first one answers. While the provider never revoked an
        // access token of the family, `check_resource` reduces to the recorded expiry (an
        // issued token's expiry never changes once delivered), which saves a string-keyed
        // lookup per caller request.
        self.delivered[cred].iter().rev().any(|d| {
            d.at <= t
                && match d.record {
                    None => false,
                    Some((family, expires)) if !self.provider.family_access_revoked(family) => {
                        t < expires
                    }
                    Some(_) => self.provider.check_resource(&d.access, t) == ResourceAnswer::Ok,
                }
        })
    }

    fn series_add(&mut self, at: MonoTime, call: bool, wait: u64) {
        let b = (at.as_nanos() / self.metrics.bucket_ns.max(1)) as usize;
        if let Some(slot) = self.metrics.series.get_mut(b) {
            if call {
                slot.0 += 1;
            }
            slot.1 = slot.1.max(wait);
        }
    }
}

/// Everything one run produced.
#[derive(Debug)]
pub struct Outcome {
    /// The first failure, if any.
    pub failure: Option<Failure>,
    /// Metrics.
    pub metrics: Metrics,
    /// Determinism hash of the trace.
    pub trace_hash: u64,
    /// Last trace lines.
    pub tail: Vec<String>,
    /// Calls by outcome.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Discrete events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// Wall time of the run.
    pub wall: Duration,
    /// Trace lines.
    pub trace_lines: u64,
}

struct Proc {
    cred: usize,
    group: Mutex<Group>,
    client: Mutex<Option<Arc<dyn ProcessClient>>>,
    offset: Arc<AtomicI64>,
    /// The host's monotonic clock (stops while the host is suspended).
    host: Arc<HostClock>,
}

struct Shared {
    cfg: WorldConfig,
    seed: u64,
    exec: ExecHandle,
    state: Arc<Mutex<State>>,
    strategy: Arc<dyn ClientStrategy>,
    stores: Vec<MemoryStore>,
    /// Per credential: the tokens of its latest login (what a process starting on an empty
    /// store installs).
    logins: Mutex<Vec<TokenSet>>,
    procs: Vec<Proc>,
    policy: RefreshPolicy,
}

/// Runs one world to the end and checks every invariant.
///
/// A world with [`WorldConfig::shard_credentials`] set and no scheduled actions runs as
/// independent shards of that many credentials, one after the other: shard `k` is the world
/// with credentials `k * shard ..` (local indices in its trace and messages) and seed
/// `derive(seed, SHARD_SEED + k)` and its own step cap of `max_steps`. Figures are summed
/// (maxima for maxima), the trace hash is FNV-1a over the shards' hashes in order, and the
/// first failing shard's failure is the run's (named with its shard and credential range), so
/// a failing seed replays exactly. [`WorldConfig::shard_jobs`] threads run shards at once.
pub fn run(
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
    print_trace: bool,
) -> Outcome {
    let shard = cfg.shard_credentials;
    if shard == 0 || cfg.credentials <= shard || !cfg.schedule.is_empty() {
        return run_one(cfg, seed, strategy, print_trace);
    }
    let started = Instant::now();
    let shards = cfg.credentials.div_ceil(shard);
    let range = |k: usize| (k * shard, shard.min(cfg.credentials - k * shard));
    let run_shard = |k: usize| {
        let (lo, n) = range(k);
        let mut sub = cfg.clone();
        sub.credentials = n;
        sub.shard_credentials = 0;
        if print_trace {
            println!(
                "--- shard {k}: credentials c{lo}..c{} as c0..c{}",
                lo + n - 1,
                n - 1
            );
        }
        let mut out = run_one(
            &sub,
            derive(seed, SHARD_SEED + k as u64),
            strategy.clone(),
            print_trace,
        );
        if let Some(f) = &mut out.failure {
            f.message = format!(
                "shard {k} (credentials c{lo}..c{}, indices local to the shard): {}",
                lo + n - 1,
                f.message
            );
        }
        out
    };
    let stops = |out: &Outcome| out.failure.is_some() && !cfg.keep_going;
    // Shards are claimed in order, so when shard k ran, every shard before it ran too; a
    // failure stops claiming, and only shards up to the first failing one are merged: the
    // result does not depend on the number of threads.
    let jobs = if print_trace {
        1
    } else {
        cfg.shard_jobs.clamp(1, shards)
    };
    let results: Vec<Option<Outcome>> = if jobs == 1 {
        let mut v = Vec::with_capacity(shards);
        for k in 0..shards {
            let out = run_shard(k);
            let stop = stops(&out);
            v.push(Some(out));
            if stop {
                break;
            }
        }
        v
    } else {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let slots: Vec<Mutex<Option<Outcome>>> = (0..shards).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| loop {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::AcqRel);
                    if k >= shards {
                        break;
                    }
                    let out = run_shard(k);
                    if stops(&out) {
                        stop.store(true, Ordering::Release);
                    }
                    *slots[k].lock() = Some(out);
                });
            }
        });
        slots.into_iter().map(Mutex::into_inner).collect()
    };
    let mut trace = Trace::new(false);
    let mut merged: Option<Outcome> = None;
    for out in results.into_iter().map_while(|o| o) {
        trace.mix(&out.trace_hash.to_le_bytes());
        let stop = stops(&out);
        merged = Some(match merged {
            None => out,
            Some(mut m) => {
                m.metrics.absorb(out.metrics);
                for (k, v) in out.outcomes {
                    *m.outcomes.entry(k).or_default() += v;
                }
                if m.failure.is_none() {
                    m.failure = out.failure;
                    m.tail = out.tail;
                }
                m.events += out.events;
                m.sim_time = m.sim_time.max(out.sim_time);
                m.trace_lines += out.trace_lines;
                m
            }
        });
        if stop {
            break;
        }
    }
    let mut out = merged.expect("at least one shard");
    out.trace_hash = trace.hash;
    out.wall = started.elapsed();
    out
}

/// Seed label of the first shard of a sharded world.
const SHARD_SEED: u64 = 9_000_000;

fn run_one(
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
    print_trace: bool,
) -> Outcome {
    let started = Instant::now();
    let exec = Executor::new(derive(seed, 1));
    let h = exec.handle();
    let mut rng = SimRng::new(derive(seed, 2));
    let procs_total = cfg.credentials * cfg.processes;
    let horizon = cfg.duration.max(cfg.heal_time())
        + cfg.settle
        + cfg.wait_timeout * 2
        + Duration::from_secs(60);
    let buckets = 200u64;
    let mut provider = Provider::new(
        cfg.profile.clone(),
        derive(seed, 3),
        cfg.provider_skew_secs * 1_000_000_000,
    );
    let zero = Arc::new(AtomicI64::new(0));
    let mut families = Vec::new();
    let mut logins = Vec::new();
    let mut stores = Vec::new();
    let mut delivered_logins = Vec::new();
    for _ in 0..cfg.credentials {
        let (family, at, rt, _) = provider.login(MonoTime::ZERO);
        let life = cfg.profile.at_lifetime;
        let age = match cfg.initial {
            Initial::Fresh => Duration::ZERO,
            Initial::Aged => {
                Duration::from_millis(rng.range(0, (life.as_millis() as u64) * 9 / 10))
            }
            Initial::Expired => life + Duration::from_secs(10),
        };
        provider.age_access_token(&at, age);
        let record = provider.access_record(&at).map(|r| (r.family, r.expires));
        delivered_logins.push(VecDeque::from([Delivered {
            at: MonoTime::ZERO,
            proc: usize::MAX,
            access: at.clone(),
            refresh: rt.clone(),
            record,
        }]));
        let issued = wall_at(MonoTime::ZERO, 0) - age;
        logins.push(TokenSet::new(
            AccessToken::new(at),
            rt.map(RefreshToken::new),
            issued,
            issued + life,
        ));
        families.push(family);
        stores.push(MemoryStore::with_clock(Arc::new(h.clock(zero.clone()))));
    }
    let state = Arc::new(Mutex::new(State {
        provider,
        rng: SimRng::new(derive(seed, 4)),
        faults: cfg.faults.clone(),
        healed: false,
        inflight: vec![0; cfg.credentials],
        proc_inflight: vec![0; procs_total],
        metrics: Metrics {
            series: vec![(0, 0); buckets as usize + 1],
            bucket_ns: (horizon.as_nanos() as u64 / buckets).max(1),
            ..Metrics::default()
        },
        trace: Trace::new(print_trace),
        failure: None,
        last_committed: vec![None; procs_total],
        crash_on_save: vec![false; procs_total],
        families,
        gen_cache: vec![(u64::MAX, MonoTime::ZERO, 0); procs_total],
        skew_tolerance: Duration::from_secs(cfg.process_skew_secs.unsigned_abs())
            + Duration::from_millis(1),
        pending_callers: 0,
        reauth_reports: BTreeMap::new(),
        instance: vec![0; procs_total],
        replays_checked: 0,
        allow_revoked: cfg.allow_revoked_family,
        reauth_never: cfg.reauth == ReauthExpect::Never,
        unsaved_since: vec![None; cfg.credentials],
        delivered: delivered_logins,
        last_delivered: vec![None; cfg.credentials],
        failure_tail: None,
        lifetime_known: cfg.lifetime_known,
        outage_until: vec![MonoTime::ZERO; cfg.credentials],
        store_family: vec![None; cfg.credentials],
        login_floor: vec![None; procs_total],
        store_history: vec![VecDeque::new(); cfg.credentials],
        left_by_lost_save: HashSet::new(),
        lost_grant: vec![false; cfg.credentials],
        misled: vec![false; procs_total],
        seen_rotated: vec![HashSet::new(); procs_total],
        served_sets: vec![Vec::new(); procs_total],
    }));
    if cfg.faults.listener_panics > 0.0 {
        silence_injected_panics();
    }
    let policy = match cfg.policy(derive(seed, 5)) {
        Ok(p) => p,
        Err(e) => {
            state.lock().violate(
                FailureKind::Crash,
                MonoTime::ZERO,
                format!("bad policy: {e}"),
            );
            RefreshPolicy::default()
        }
    };
    let mut procs = Vec::new();
    for i in 0..procs_total {
        let skew = if cfg.process_skew_secs == 0 {
            0
        } else {
            let s = cfg.process_skew_secs.unsigned_abs();
            rng.range(0, 2 * s) as i64 - s as i64
        };
        procs.push(Proc {
            cred: i / cfg.processes,
            group: Mutex::new(Group::WORLD),
            client: Mutex::new(None),
            offset: Arc::new(AtomicI64::new(skew * 1_000_000_000)),
            host: Arc::new(HostClock::new()),
        });
    }
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        seed,
        exec: h.clone(),
        state: state.clone(),
        strategy,
        stores,
        logins: Mutex::new(logins),
        procs,
        policy,
    });
    for i in 0..procs_total {
        start_process(&shared, i);
    }
    h.spawn_in(Group::WORLD, director(shared.clone()));

    let mut end = RunEnd::Idle;
    let horizon_t = MonoTime::from_duration(horizon);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
        end = exec.run(horizon_t, 10_000);
        if (state.lock().failure.is_some() && !cfg.keep_going) || end != RunEnd::StepCap {
            break;
        }
        if exec.stats().events() >= cfg.max_steps {
            break;
        }
    }));
    let now = exec.now();
    {
        let mut s = state.lock();
        if let Err(p) = caught {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| {
                    p.is::<InjectedPanic>()
                        .then(|| "an injected listener panic reached a world task".to_string())
                })
                .unwrap_or_else(|| "unknown panic".into());
            s.violate(FailureKind::Crash, now, format!("panic: {msg}"));
        }
        if end == RunEnd::StepCap && s.failure.is_none() {
            s.violate(
                FailureKind::Liveness,
                now,
                format!("step cap of {} events reached", cfg.max_steps),
            );
        }
        if end == RunEnd::Idle && s.pending_callers > 0 {
            let n = s.pending_callers;
            s.violate(
                FailureKind::Liveness,
                now,
                format!("deadlock: {n} caller(s) still waiting and nothing scheduled"),
            );
        }
    }
    final_checks(&shared, now);
    let events = exec.stats().events();
    for p in &shared.procs {
        p.client.lock().take();
    }
    drop(exec);
    let mut s = state.lock();
    end_of_run_metrics(&mut s, cfg.credentials);
    let outcomes = s
        .provider
        .outcomes
        .iter()
        .map(|(k, v)| (k.name(), *v))
        .collect();
    Outcome {
        failure: s.failure.clone(),
        metrics: std::mem::take(&mut s.metrics),
        trace_hash: s.trace.hash,
        tail: s.failure_tail.clone().unwrap_or_else(|| s.trace.tail()),
        outcomes,
        events,
        sim_time: now.as_duration(),
        wall: started.elapsed(),
        trace_lines: s.trace.lines,
    }
}

/// The comparison figures that are read off the provider and the reports at the end.
fn end_of_run_metrics(s: &mut State, credentials: usize) {
    s.metrics.unexcused_replays = s.provider.replays.iter().filter(|r| !r.excused).count() as u64;
    s.metrics.replays_blamed_on_store =
        s.provider.replays.iter().filter(|r| r.store_lie).count() as u64;
    s.metrics.families_revoked_by_reuse = (0..credentials)
        .filter(|&c| s.provider.family_revoked(s.families[c]) == Some("refresh token reuse"))
        .count() as u64;
    s.metrics.reauth_processes = s.reauth_reports.len() as u64;
    s.metrics.reauth_after_restart = s
        .reauth_reports
        .keys()
        .filter(|(_, inst)| *inst > 1)
        .count() as u64;
}

fn final_checks(w: &Arc<Shared>, now: MonoTime) {
    let cfg = &w.cfg;
    let mut s = w.state.lock();
    if s.failure.is_some() {
        return;
    }
    // Token-endpoint budgets per credential.
    let mut per_cred = vec![0u64; cfg.credentials];
    let _ = &mut per_cred;
    if let Some(exact) = cfg.exact_calls_per_credential {
        let total = s.metrics.token_calls.len() as u64;
        if total != exact * cfg.credentials as u64 {
            s.violate_correctness(
                now,
                format!(
                    "expected exactly {exact} token-endpoint call(s) per credential, saw {total} for {} credential(s)",
                    cfg.credentials
                ),
            );
            return;
        }
    }
    if let Some(max) = cfg.max_calls_per_credential {
        let total = s.metrics.token_calls.len() as u64;
        if total > max * cfg.credentials as u64 {
            s.violate_correctness(
                now,
                format!(
                    "at most {max} token-endpoint call(s) per credential expected, saw {total} for {} credential(s): a refresh loop or extra refreshes",
                    cfg.credentials
                ),
            );
            return;
        }
    }
    match &cfg.reauth {
        ReauthExpect::ExactlyOnce(reason) => {
            if s.reauth_reports.is_empty() {
                s.violate_correctness(
                    now,
                    format!("re-authorization ({reason}) was never reported"),
                );
                return;
            }
            let bad = s
                .reauth_reports
                .iter()
                .find(|(_, v)| v.len() != 1 || &v[0] != reason)
                .map(|(k, v)| (*k, v.clone()));
            if let Some(((p, _), v)) = bad {
                s.violate_correctness(
                    now,
                    format!("process p{p} reported re-authorization {v:?}, expected {reason:?} exactly once"),
                );
                return;
            }
        }
        ReauthExpect::Never | ReauthExpect::Allowed => {}
    }
    if !s.allow_revoked {
        for c in 0..cfg.credentials {
            let f = s.families[c];
            let excused = s
                .provider
                .replays
                .iter()
                .any(|r| r.excused && r.family == f);
            if let Some(why) = s.provider.family_revoked(f).filter(|_| !excused) {
                s.violate_correctness(now, format!("credential c{c}'s family was revoked: {why}"));
                return;
            }
        }
    }
    if cfg.check_convergence && cfg.reauth == ReauthExpect::Never && !s.allow_revoked {
        for c in 0..cfg.credentials {
            let f = s.families[c];
            if s.provider.family_revoked(f).is_some() {
                continue;
            }
            let newest = s.provider.current_refresh_token(f).map(str::to_owned);
            let stored = w.stores[c].snapshot().and_then(|st| {
                st.tokens
                    .refresh_token()
                    .map(|r| r.expose_secret().to_owned())
            });
            if newest.is_some() && stored != newest {
                if stored
                    .as_ref()
                    .is_some_and(|r| s.left_by_lost_save.contains(r))
                {
                    // The newest set's save was acknowledged and lost: the store's failure.
                    continue;
                }
                if s.unsaved_since[c]
                    .is_some_and(|t| now.saturating_duration_since(t) < w.policy.store_timeout())
                {
                    // The world ends while the newest rotation's first save is on its way.
                    continue;
                }
                s.violate_correctness(
                    now,
                    format!("credential c{c}: the store does not hold the provider's newest refresh token at the end"),
                );
                return;
            }
        }
    }
}

fn start_process(w: &Arc<Shared>, i: usize) {
    let group = w.exec.new_group();
    if w.procs[i].host.suspended_since().is_some() {
        // Restarted while its host sleeps: it runs when the host resumes.
        w.exec.freeze(group);
    }
    *w.procs[i].group.lock() = group;
    let instance = {
        let mut s = w.state.lock();
        s.instance[i] += 1;
        s.gen_cache[i] = (u64::MAX, MonoTime::ZERO, 0);
        // A new instance knows nothing of what the one before it saw.
        s.seen_rotated[i].clear();
        s.served_sets[i].clear();
        s.misled[i] = false;
        s.instance[i]
    };
    let w2 = w.clone();
    w.exec.spawn_in(group, async move {
        let p = &w2.procs[i];
        let runtime = if w2.strategy.name() == "keepfresh" {
            w2.exec.runtime(group, p.offset.clone(), p.host.clone())
        } else {
            w2.exec
                .monotonic_only_runtime(group, p.offset.clone(), p.host.clone())
        };
        let store: Arc<dyn TokenStore> = Arc::new(FaultyStore {
            inner: w2.stores[p.cred].clone(),
            state: w2.state.clone(),
            exec: w2.exec.clone(),
            cred: p.cred,
            proc: i,
            group,
        });
        let refresher = Arc::new(ProviderClient {
            state: w2.state.clone(),
            exec: w2.exec.clone(),
            cred: p.cred,
            proc: i,
        });
        let st = w2.state.clone();
        let ex = w2.exec.clone();
        let cred = p.cred;
        let log = LogSink::new(move |line| {
            let mut s = st.lock();
            let now = ex.now();
            match line {
                LogLine::Text(t) => s.trace_line(now, format!("p{i} {t}")),
                LogLine::Reauth { reason } => {
                    s.metrics.reauths += 1;
                    // A re-authorization after a replay the client could not avoid (its
                    // rotation answer was lost, or died with a crashed process) is correct.
                    let fam = s.families[cred];
                    let excused = s
                        .provider
                        .replays
                        .iter()
                        .any(|r| r.excused && r.family == fam);
                    if s.reauth_never && !excused {
                        s.violate_correctness(
                            now,
                            format!("process p{i} requires re-authorization ({reason})"),
                        );
                    }
                    s.reauth_reports
                        .entry((i, instance))
                        .or_default()
                        .push(reason);
                }
                LogLine::Persisted => {
                    if let Some(since) = s.unsaved_since[cred].take() {
                        let d = now.saturating_duration_since(since).as_nanos() as u64;
                        s.metrics.max_unsaved_window_ns = s.metrics.max_unsaved_window_ns.max(d);
                    }
                }
                LogLine::PersistFailed => s.metrics.persist_failures += 1,
            }
        });
        let listener_panics = (w2.cfg.faults.listener_panics > 0.0).then(|| {
            let st = w2.state.clone();
            let ex = w2.exec.clone();
            ListenerPanics::new(move |kind| {
                let mut s = st.lock();
                let p = s.faults.listener_panics;
                if s.healed || !s.rng.chance(p) {
                    return false;
                }
                s.metrics.listener_panics += 1;
                let now = ex.now();
                s.trace_line(now, format!("p{i} an event listener panics on {kind}"));
                true
            })
        });
        let initial = w2.logins.lock()[p.cred].clone();
        let ctx = ProcessContext {
            runtime,
            store,
            refresher,
            initial: Some(initial),
            // Each process (and each restart of it) draws its own refresh points, as replicas
            // seeded from entropy would; a shared seed would make jitter spread nothing.
            policy: w2.policy.clone().with_jitter_seed(derive(
                w2.seed,
                5_000_000 + i as u64 * 7919 + instance as u64,
            )),
            seed: derive(w2.seed, 1000 + i as u64 * 7919 + instance as u64),
            log,
            label: format!("c{}/p{i}", p.cred),
            listener_panics,
        };
        match w2.strategy.start(ctx).await {
            Ok(client) => {
                *p.client.lock() = Some(client.clone());
                drive_callers(w2.clone(), i, group, client).await;
            }
            Err(e) => {
                // A host restarts a process that failed to start (its store timed out, say).
                let now = w2.exec.now();
                w2.state
                    .lock()
                    .trace_line(now, format!("p{i} failed to start ({e}); restarting in 5s"));
                w2.exec.sleep(Duration::from_secs(5)).await;
                start_process(&w2, i);
                w2.exec.kill(group);
            }
        }
    });
}

/// Counts a caller request as pending until it resolves or is dropped (process crash).
struct Pending<'a> {
    state: &'a Mutex<State>,
    armed: bool,
}

impl Pending<'_> {
    /// The request resolved: stop counting it (under the caller's lock of the state).
    fn resolve(&mut self, s: &mut State) {
        if std::mem::take(&mut self.armed) {
            s.pending_callers -= 1;
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.state.lock().pending_callers -= 1;
        }
    }
}

async fn drive_callers(w: Arc<Shared>, i: usize, group: Group, client: Arc<dyn ProcessClient>) {
    let cfg = &w.cfg;
    let end = MonoTime::from_duration(cfg.duration);
    let mut rng = SimRng::new(derive(w.seed, 50_000 + i as u64));
    let caller = Arc::new(Caller {
        w: w.clone(),
        client,
    });
    // Request times are on the host's monotonic clock, like a host's timers: a suspend delays
    // them. The host's clock never runs ahead of virtual time, so a virtual-time sleep to a
    // request time wakes at it or before; a host that was ever suspended then sleeps on by its
    // clock (the common case costs one virtual-time sleep). The workload still ends at `end`
    // in true time: a request time past `end` on the host's clock is past it in true time too,
    // and after a suspend the true time is checked on waking.
    let host = w.procs[i].host.clone();
    match &cfg.pattern {
        Pattern::Steady { mean } => {
            let mean_ns = mean.as_nanos() as u64;
            let now = host.mono_at(w.exec.now()).as_nanos();
            // Callers by next request time, ties by caller index. Packed into one u64 per
            // caller (time above the index bits) when every time fits, which halves the heap
            // and its comparisons; the order is the same as the `(time, caller)` heap.
            let bits = u64::BITS - (cfg.callers.max(1) as u64 - 1).leading_zeros();
            let latest = end
                .as_nanos()
                .saturating_add(mean_ns.saturating_mul(3) / 2)
                .saturating_add(1);
            if bits < 64 && latest.leading_zeros() >= bits {
                let mask = (1u64 << bits) - 1;
                let mut heap = BinaryHeap::with_capacity(cfg.callers);
                for c in 0..cfg.callers as u64 {
                    heap.push(Reverse((now + rng.range(0, mean_ns)) << bits | c));
                }
                while let Some(Reverse(key)) = heap.pop() {
                    let (t, c) = (key >> bits, key & mask);
                    if t >= end.as_nanos() {
                        break;
                    }
                    w.exec.sleep_until(MonoTime::from_nanos(t)).await;
                    if host.ever_suspended() {
                        w.exec.sleep_until_on(&host, MonoTime::from_nanos(t)).await;
                        if w.exec.now() >= end {
                            break;
                        }
                    }
                    issue(&caller, i, group).await;
                    let next = t + rng.range(mean_ns / 2, mean_ns * 3 / 2);
                    heap.push(Reverse(next << bits | c));
                }
                return;
            }
            let mut heap = BinaryHeap::new();
            for c in 0..cfg.callers {
                heap.push(Reverse((now + rng.range(0, mean_ns), c)));
            }
            while let Some(Reverse((t, c))) = heap.pop() {
                if t >= end.as_nanos() {
                    break;
                }
                w.exec.sleep_until(MonoTime::from_nanos(t)).await;
                if host.ever_suspended() {
                    w.exec.sleep_until_on(&host, MonoTime::from_nanos(t)).await;
                    if w.exec.now() >= end {
                        break;
                    }
                }
                issue(&caller, i, group).await;
                heap.push(Reverse((t + rng.range(mean_ns / 2, mean_ns * 3 / 2), c)));
            }
        }
        Pattern::Bursts { first, every } => {
            let mut t = MonoTime::from_duration(*first).max(host.mono_at(w.exec.now()));
            while t < end {
                w.exec.sleep_until(t).await;
                if host.ever_suspended() {
                    w.exec.sleep_until_on(&host, t).await;
                    if w.exec.now() >= end {
                        break;
                    }
                }
                for _ in 0..cfg.callers {
                    issue(&caller, i, group).await;
                }
                t = t.saturating_add(*every);
            }
        }
    }
}

/// What a process's caller requests share (one reference count per request, not two).
struct Caller {
    w: Arc<Shared>,
    client: Arc<dyn ProcessClient>,
}

async fn issue(caller: &Arc<Caller>, i: usize, group: Group) {
    let mut fut = Box::pin(request(caller.clone(), i));
    let first =
        futures::future::poll_fn(|cx| Poll::Ready(poll_catching_injected(fut.as_mut(), cx))).await;
    match first {
        Some(Poll::Pending) => caller.w.exec.spawn_in(group, fut),
        Some(Poll::Ready(())) => {}
        // A callback panicked inside this request: like a host's request task, the request is
        // gone, and the process's other requests go on.
        None => {}
    }
}

/// Runs `f` to completion unless it unwinds with an [`InjectedPanic`] (`None`).
async fn catching_injected<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    futures::future::poll_fn(|cx| match poll_catching_injected(f.as_mut(), cx) {
        None => Poll::Ready(None),
        Some(Poll::Ready(v)) => Poll::Ready(Some(v)),
        Some(Poll::Pending) => Poll::Pending,
    })
    .await
}

async fn request(caller: Arc<Caller>, i: usize) {
    let (w, client) = (&caller.w, &caller.client);
    let host = &w.procs[i].host;
    let start = w.exec.now();
    // Waits are measured on the host's clock: a caller does not wait while its host sleeps.
    let start_mono = host.mono_at(start);
    let (mut pending, valid_at_start) = {
        let mut s = w.state.lock();
        s.pending_callers += 1;
        s.metrics.requests += 1;
        let valid = s.valid_token_at(w.procs[i].cred, start);
        let pending = Pending {
            state: &w.state,
            armed: true,
        };
        (pending, valid)
    };
    let result = match w.cfg.caller_timeout {
        None => client.token().await,
        Some(limit) => {
            let t = std::pin::pin!(client.token());
            match select(t, w.exec.sleep_on(host, limit)).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => {
                    w.state.lock().metrics.abandoned += 1;
                    return;
                }
            }
        }
    };
    // Without a resource server the request ends with its answer: resolved under the same
    // lock as the serving checks.
    let last = !w.cfg.resource_server;
    let token = match served(w, i, start_mono, valid_at_start, result, &mut pending, last) {
        Some(t) => t,
        None => return,
    };
    if !w.cfg.resource_server {
        return;
    }
    if !w.cfg.io_time.is_zero() {
        w.exec.sleep_on(host, w.cfg.io_time).await;
    }
    // The resource server answers with a status and an RFC 6750 challenge; the caller acts on
    // the engine's reading of it, as a host would.
    let (status, challenge) = {
        let mut s = w.state.lock();
        let answer = s
            .provider
            .check_resource(token.access.expose_secret(), w.exec.now());
        s.metrics.rs_requests += 1;
        let every = w.cfg.step_up_every;
        let step_up = every > 0 && s.metrics.rs_requests % every == 0;
        match answer {
            ResourceAnswer::Unauthorized => (401, r#"Bearer error="invalid_token""#),
            ResourceAnswer::Forbidden => (403, r#"Bearer error="insufficient_scope""#),
            ResourceAnswer::Ok if step_up => (
                403,
                r#"Bearer error="insufficient_scope", scope="admin:org""#,
            ),
            ResourceAnswer::Ok => (200, ""),
        }
    };
    match classify_resource_answer(status, Some(challenge).filter(|c| !c.is_empty())) {
        ResourceVerdict::InvalidToken => {}
        ResourceVerdict::InsufficientScope { .. } => {
            w.state.lock().metrics.rs_step_up += 1;
            return;
        }
        _ => return,
    }
    w.state.lock().metrics.rs_unauthorized += 1;
    client.unauthorized(&token);
    let retry_start = w.exec.now();
    let retry_valid = w.state.lock().valid_token_at(w.procs[i].cred, retry_start);
    let retry_mono = host.mono_at(retry_start);
    let again = client.token().await;
    if let Some(t2) = served(w, i, retry_mono, retry_valid, again, &mut pending, false) {
        let mut s = w.state.lock();
        let now = w.exec.now();
        if s.provider.check_resource(t2.access.expose_secret(), now) == ResourceAnswer::Unauthorized
        {
            s.metrics.rs_unauthorized_after_retry += 1;
        }
    }
}

/// Records a caller's result and checks the serving invariants.
///
/// `start_mono` is when the request started on the host's monotonic clock. With `last`, or when
/// nothing is served, the request resolves here (`pending`).
fn served(
    w: &Arc<Shared>,
    i: usize,
    start_mono: MonoTime,
    valid_at_start: bool,
    result: Result<crate::strategy::ServedToken, ClientError>,
    pending: &mut Pending<'_>,
    last: bool,
) -> Option<crate::strategy::ServedToken> {
    let now = w.exec.now();
    let wait = w.procs[i]
        .host
        .mono_at(now)
        .saturating_duration_since(start_mono);
    let mut s = w.state.lock();
    if last || result.is_err() {
        pending.resolve(&mut s);
    }
    s.metrics.waits.record(wait.as_nanos() as u64);
    if !wait.is_zero() {
        s.series_add(now, false, wait.as_nanos() as u64);
        s.metrics.blocked += 1;
        s.metrics.blocked_waits.record(wait.as_nanos() as u64);
        if valid_at_start {
            s.metrics.blocked_while_valid += 1;
        }
    }
    if result.is_err() && s.valid_token_at(w.procs[i].cred, now) {
        s.metrics.errors_while_valid += 1;
    }
    // The engine bounds every wait by its wait timeout (plus the one refresh round it may
    // follow); a caller waiting longer was forgotten.
    if wait > w.cfg.wait_timeout + w.cfg.wait_timeout / 2 {
        s.violate(
            FailureKind::Liveness,
            now,
            format!(
                "p{i}: a caller waited {:.3}s, past its deadline",
                wait.as_secs_f64()
            ),
        );
    }
    match result {
        Ok(t) => {
            s.metrics.served += 1;
            let known = if s.gen_cache[i].0 == t.generation {
                Some((s.gen_cache[i].1, s.gen_cache[i].2))
            } else {
                let rec = s.provider.access_record(t.access.expose_secret());
                if let Some(r) = rec {
                    s.gen_cache[i] = (t.generation, r.expires, r.family);
                    s.check_not_back(i, r.family, r.seq, now);
                }
                rec.map(|r| (r.expires, r.family))
            };
            let Some((expires, family)) = known else {
                s.violate_correctness(
                    now,
                    format!("p{i} served an access token the provider never issued"),
                );
                return None;
            };
            if now > expires.saturating_add(s.skew_tolerance) && !s.lifetime_known {
                s.metrics.served_past_true_expiry += 1;
            } else if now > expires.saturating_add(s.skew_tolerance) {
                let late = now.saturating_duration_since(expires);
                s.violate_correctness(
                    now,
                    format!(
                        "p{i} served an access token {:.3}s after it expired",
                        late.as_secs_f64()
                    ),
                );
            } else if expires.saturating_duration_since(now) < Duration::from_secs(60) {
                s.metrics.near_expiry += 1;
            }
            let cred = w.procs[i].cred;
            // A store that lost the login's save, or a stale read, can hand the older grant
            // back: the store's failure.
            let store_lied = s.misled[i] || s.lost_grant[cred];
            if let Some(login) = s.login_floor[i].filter(|&l| family < l && !store_lied) {
                s.violate_correctness(
                    now,
                    format!(
                        "p{i} served a token of grant {family} after its login installed grant {login} (the login was overwritten)"
                    ),
                );
            }
            let h = t.generation ^ (i as u64) << 40 ^ now.as_nanos().rotate_left(17);
            s.trace.mix(&h.to_le_bytes());
            Some(t)
        }
        Err(e) => {
            let key = match &e {
                ClientError::Reauth(r) => format!("reauth:{r}"),
                ClientError::Timeout => "timeout".into(),
                ClientError::Refresh(c) => format!("refresh:{c}"),
                ClientError::Other(o) => format!("other:{o}"),
            };
            if key.contains(SECRET_MARKER) {
                s.violate_correctness(now, "a secret appeared in an error message".into());
            }
            *s.metrics.errors.entry(key.clone()).or_default() += 1;
            s.trace.mix(key.as_bytes());
            None
        }
    }
}

async fn director(w: Arc<Shared>) {
    let cfg = w.cfg.clone();
    let mut plan: Vec<(Duration, Option<Action>)> = cfg
        .schedule
        .iter()
        .map(|(t, a)| (*t, Some(a.clone())))
        .collect();
    plan.push((cfg.heal_time(), None));
    plan.sort_by_key(|(t, _)| *t);
    for (t, action) in plan {
        w.exec.sleep_until(MonoTime::from_duration(t)).await;
        let now = w.exec.now();
        match action {
            None => {
                {
                    let mut s = w.state.lock();
                    s.healed = true;
                    s.trace_line(now, "faults healed".into());
                }
                // Suspended hosts wake with the heal, as outages end.
                for p in 0..w.procs.len() {
                    resume_host(&w, p);
                }
            }
            Some(a) => {
                w.state.lock().trace_line(now, format!("director: {a:?}"));
                perform(&w, a).await;
            }
        }
    }
    // Liveness: after the faults healed and the workload ended, every process must hand out
    // a token again (unless the scenario ends in re-authorization).
    let probe_at = MonoTime::from_duration(cfg.duration.max(cfg.heal_time()) + cfg.settle);
    w.exec.sleep_until(probe_at).await;
    if cfg.reauth != ReauthExpect::Never || cfg.allow_revoked_family {
        return;
    }
    for i in 0..w.procs.len() {
        {
            let s = w.state.lock();
            let fam = s.families[w.procs[i].cred];
            if s.provider.family_revoked(fam).is_some() {
                continue;
            }
        }
        let client = w.procs[i].client.lock().clone();
        let Some(client) = client else { continue };
        let start = w.exec.now();
        let r = client.token().await;
        let now = w.exec.now();
        let mut s = w.state.lock();
        match r {
            Ok(_) => {}
            Err(e) => {
                s.violate(
                    FailureKind::Liveness,
                    now,
                    format!(
                        "p{i} did not recover after faults healed: {e:?} (phase {}), asked at {:.3}s",
                        client.health().phase,
                        start.as_duration().as_secs_f64()
                    ),
                );
                return;
            }
        }
        if client.health().persist_pending {
            s.violate(
                FailureKind::Liveness,
                now,
                format!("p{i} still has an unsaved token set after faults healed"),
            );
        }
    }
}

async fn perform(w: &Arc<Shared>, action: Action) {
    match action {
        Action::Crash {
            proc,
            restart_after,
        } => {
            kill(w, proc);
            w.exec.sleep(restart_after).await;
            start_process(w, proc);
        }
        Action::CrashOnNextSave {
            proc,
            restart_after,
        } => {
            w.state.lock().crash_on_save[proc] = true;
            let w2 = w.clone();
            w.exec.spawn_in(Group::WORLD, async move {
                // Wait for the crash to happen (the process's group dies), then restart.
                loop {
                    w2.exec.sleep(Duration::from_secs(1)).await;
                    if !w2.state.lock().crash_on_save[proc] {
                        break;
                    }
                }
                w2.exec.sleep(restart_after).await;
                w2.procs[proc].client.lock().take();
                start_process(&w2, proc);
            });
        }
        Action::Revoke { cred } => {
            let mut s = w.state.lock();
            let f = s.families[cred];
            s.provider.revoke_family(f, "revoked by the user");
        }
        Action::Overwrite { cred } => {
            if let Some(st) = w.stores[cred].snapshot() {
                w.stores[cred].overwrite(Some(st.tokens.clone()));
                w.state.lock().remember_replaced(cred, Some(st));
            }
        }
        Action::JumpWall { proc, secs } => {
            w.procs[proc]
                .offset
                .fetch_add(secs * 1_000_000_000, Ordering::Relaxed);
            // Stored tokens are placed on the clock by wall time: a stepped clock shifts them.
            w.state.lock().skew_tolerance += Duration::from_secs(secs.unsigned_abs());
        }
        Action::Shutdown {
            proc,
            restart_after,
        } => {
            let client = w.procs[proc].client.lock().clone();
            if let Some(c) = client {
                if catching_injected(c.shutdown()).await.is_none() {
                    let now = w.exec.now();
                    w.state
                        .lock()
                        .trace_line(now, format!("p{proc} panicked while shutting down"));
                }
            }
            kill(w, proc);
            w.exec.sleep(restart_after).await;
            start_process(w, proc);
        }
        Action::StoreOutage { cred, duration } => {
            let now = w.exec.now();
            let mut s = w.state.lock();
            if s.healed {
                s.trace_line(now, format!("c{cred} store outage skipped: healed"));
                return;
            }
            let until = now.saturating_add(duration);
            s.outage_until[cred] = s.outage_until[cred].max(until);
            let line = format!(
                "c{cred} store outage until {:.3}s: every operation fails",
                s.outage_until[cred].as_duration().as_secs_f64()
            );
            s.trace_line(now, line);
        }
        Action::Suspend { proc, duration } => suspend(w, proc, duration),
        Action::Login { proc } => login(w, proc),
        Action::WriteNewer { cred } => {
            let w2 = w.clone();
            w.exec.spawn_in(Group::WORLD, async move {
                while !write_newer(&w2, cred) {
                    w2.exec.sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }
}

/// Suspends process `proc`'s host for `duration` (until the world heals at the latest): its
/// group stops running and its monotonic clock stands still.
///
/// The model has no network that outlives a sleeping host (a request the provider commits
/// while the host sleeps, its answer lost at resume): a suspend due while the process has a
/// token-endpoint call in flight starts as soon as the call ends.
fn suspend(w: &Arc<Shared>, proc: usize, duration: Duration) {
    let w2 = w.clone();
    w.exec.spawn_in(Group::WORLD, async move {
        while w2.state.lock().proc_inflight[proc] > 0 {
            w2.exec.sleep(Duration::from_millis(10)).await;
        }
        let now = w2.exec.now();
        {
            let mut s = w2.state.lock();
            if s.healed || !w2.procs[proc].host.suspend(now) {
                s.trace_line(
                    now,
                    format!("p{proc} suspend skipped: healed or already asleep"),
                );
                return;
            }
            s.trace_line(now, format!("p{proc} host suspended"));
        }
        w2.exec.freeze(*w2.procs[proc].group.lock());
        w2.exec.sleep(duration).await;
        // Only this suspend: the heal may have ended it already.
        if w2.procs[proc].host.suspended_since() == Some(now) {
            resume_host(&w2, proc);
        }
    });
}

/// Resumes process `proc`'s host if it is suspended.
fn resume_host(w: &Arc<Shared>, proc: usize) {
    let now = w.exec.now();
    let Some(slept) = w.procs[proc].host.resume(now) else {
        return;
    };
    w.exec.thaw(*w.procs[proc].group.lock());
    w.state.lock().trace_line(
        now,
        format!(
            "p{proc} host resumed after {:.3}s; its monotonic clock lost that much",
            slept.as_secs_f64()
        ),
    );
}

/// A new login in process `proc`: the provider authorizes a new grant for the process's
/// credential, and the process's client installs its tokens (in the process, so a crash or a
/// suspend of the process delays or loses the installation with it).
fn login(w: &Arc<Shared>, proc: usize) {
    let now = w.exec.now();
    let cred = w.procs[proc].cred;
    let client = w.procs[proc].client.lock().clone();
    let Some(client) = client else {
        w.state
            .lock()
            .trace_line(now, format!("p{proc} login skipped: the process is down"));
        return;
    };
    let offset = w.procs[proc].offset.load(Ordering::Relaxed);
    let (family, set) = {
        let mut s = w.state.lock();
        let (family, at, rt, _) = s.provider.login(now);
        s.families[cred] = family;
        s.record_delivered(cred, proc, now, at.clone(), rt.clone());
        s.trace_line(
            now,
            format!("c{cred} provider: login in p{proc}, grant {family}"),
        );
        // The process reads the answer's lifetime on its own wall clock.
        let issued = wall_at(now, offset);
        let life = w.cfg.profile.at_lifetime;
        let set = TokenSet::new(
            AccessToken::new(at),
            rt.map(RefreshToken::new),
            issued,
            issued + life,
        );
        (family, set)
    };
    w.logins.lock()[cred] = set.clone();
    let w2 = w.clone();
    let group = *w.procs[proc].group.lock();
    w.exec.spawn_in(group, async move {
        let r = client.login(set).await;
        let now = w2.exec.now();
        let mut s = w2.state.lock();
        match r {
            Ok(()) => {
                s.login_floor[proc] = Some(family);
                s.trace_line(
                    now,
                    format!("p{proc} installed the login of grant {family}"),
                );
            }
            Err(e) => s.trace_line(now, format!("p{proc} login not installed: {e:?}")),
        }
    });
}

/// [`Action::WriteNewer`]'s writer: when a rotation of credential `cred` is not yet durable and
/// no token-endpoint call is in flight, redeems the provider's newest refresh token and stores
/// the answer by compare-and-swap. Returns whether it is done (written, or given up at the
/// heal).
fn write_newer(w: &Arc<Shared>, cred: usize) -> bool {
    let now = w.exec.now();
    let mut s = w.state.lock();
    if s.healed {
        s.trace_line(now, format!("c{cred} newer write skipped: healed"));
        return true;
    }
    let family = s.families[cred];
    if s.unsaved_since[cred].is_none()
        || s.inflight[cred] > 0
        || s.provider.family_revoked(family).is_some()
    {
        return false;
    }
    let Some(rt) = s.provider.current_refresh_token(family).map(str::to_owned) else {
        return false;
    };
    let answer = s.provider.refresh(now, Some(&rt));
    let parsed = keepfresh::oauth::parse_token_response(keepfresh::oauth::HttpAnswer {
        status: answer.status,
        content_type: Some(answer.content_type),
        retry_after: None,
        body: &answer.body,
    });
    let Ok(r) = parsed else {
        s.trace_line(now, format!("c{cred} another writer's refresh failed"));
        return true;
    };
    let access = r.access_token().expose_secret().to_owned();
    let refresh = r
        .refresh_token()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or(rt);
    let issued = wall_at(now, 0);
    let set = TokenSet::new(
        AccessToken::new(access.clone()),
        Some(RefreshToken::new(refresh.clone())),
        issued,
        issued + w.cfg.profile.at_lifetime,
    );
    let store = &w.stores[cred];
    let prior = store.snapshot();
    let expected = prior.as_ref().map(|p| p.version);
    // The memory store answers at once.
    let saved = futures::FutureExt::now_or_never(store.save(expected, &set));
    if let Some(Ok(keepfresh::store::SaveOutcome::Saved(_))) = saved {
        s.remember_replaced(cred, prior.clone());
        s.check_store_write(
            cred,
            prior.as_ref().map(|p| &p.tokens),
            &set,
            "another writer",
            now,
        );
        // The credential's newest rotation is durable now; the one being retried is older.
        if let Some(since) = s.unsaved_since[cred].take() {
            let d = now.saturating_duration_since(since).as_nanos() as u64;
            s.metrics.max_unsaved_window_ns = s.metrics.max_unsaved_window_ns.max(d);
        }
    }
    s.record_delivered(cred, usize::MAX, now, access, Some(refresh));
    s.trace_line(
        now,
        format!("c{cred} another writer redeemed the newest refresh token and stored the answer during a save retry"),
    );
    true
}

fn kill(w: &Arc<Shared>, proc: usize) {
    let group = *w.procs[proc].group.lock();
    let cred = w.procs[proc].cred;
    // A rotation the dying process received but had not saved is lost with it.
    {
        let mut s = w.state.lock();
        let now = w.exec.now();
        let f = s.families[cred];
        let newest = s.provider.current_refresh_token(f).map(str::to_owned);
        let stored = w.stores[cred].snapshot().and_then(|st| {
            st.tokens
                .refresh_token()
                .map(|r| r.expose_secret().to_owned())
        });
        if let Some(newest) = &newest {
            // A rotation this process received that the store does not hold dies with it.
            let received = s.delivered[cred]
                .iter()
                .any(|d| d.proc == proc && d.refresh.as_ref() == Some(newest));
            if received && stored.as_ref() != Some(newest) {
                s.metrics.tokens_lost += 1;
            }
        }
        if let (Some(stored), Some(newest)) = (stored, newest) {
            if stored != newest {
                s.provider.mark_undelivered(&stored, now);
            }
        }
    }
    w.exec.kill(group);
    w.procs[proc].client.lock().take();
}

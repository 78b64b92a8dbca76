//! What a world is made of: its faults, callers' patterns, scheduled actions and the whole
//! configuration a scenario draws from its seed.

use super::*;

/// Transport, store and host faults, active until the world heals.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
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

    /// The rate of a fault kind that is a rate (`None` for scheduled kinds).
    fn rate_mut(&mut self, kind: FaultKind) -> Option<&mut f64> {
        Some(match kind {
            FaultKind::NotDelivered => &mut self.p_not_delivered,
            FaultKind::Http5xx => &mut self.p_5xx,
            FaultKind::Http429 => &mut self.p_429,
            FaultKind::Http503 => &mut self.p_503,
            FaultKind::InvalidClient => &mut self.p_invalid_client,
            FaultKind::Malformed => &mut self.p_malformed,
            FaultKind::Lost => &mut self.p_lost,
            FaultKind::StoreWriteFail => &mut self.store_write_fail,
            FaultKind::StoreHang => &mut self.store_hang,
            FaultKind::LeaseFail => &mut self.lease_fail,
            FaultKind::LeaseHang => &mut self.lease_hang,
            FaultKind::LoadFail => &mut self.load_fail,
            FaultKind::LoadHang => &mut self.load_hang,
            FaultKind::SaveLost => &mut self.save_lost,
            FaultKind::StaleRead => &mut self.stale_read,
            FaultKind::ListenerPanics => &mut self.listener_panics,
            FaultKind::StoreOutage
            | FaultKind::Suspend
            | FaultKind::Login
            | FaultKind::NewerWrite => return None,
        })
    }

    /// Sets the rate of a fault kind that is a rate; `false` (and nothing changes) for a
    /// scheduled kind.
    pub fn set_rate(&mut self, kind: FaultKind, p: f64) -> bool {
        match self.rate_mut(kind) {
            Some(r) => {
                *r = p;
                true
            }
            None => false,
        }
    }

    /// Every fault rate with its kind.
    pub(crate) fn rates(&self) -> Vec<(FaultKind, f64)> {
        // A copy of plain numbers, so that the kind-to-field match lives once (`rate_mut`).
        let mut me = *self;
        FaultKind::ALL
            .into_iter()
            .filter_map(|k| me.rate_mut(k).map(|p| (k, *p)))
            .collect()
    }

    /// The fault kinds whose rate is above zero (for shrinking and reports).
    pub fn active(&self) -> Vec<FaultKind> {
        self.rates()
            .into_iter()
            .filter(|(_, p)| *p > 0.0)
            .map(|(kind, _)| kind)
            .collect()
    }

    /// Switches one fault kind off (nothing for a scheduled kind: see
    /// [`WorldConfig::disable_fault`]).
    pub fn disable(&mut self, kind: FaultKind) {
        if let Some(p) = self.rate_mut(kind) {
            *p = 0.0;
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
    /// The provider revokes the credential's live access tokens (an admin action, a password
    /// change): the resource server rejects a token the client still thinks valid.
    RevokeAccess {
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
    pub fn fault_kind(&self) -> Option<FaultKind> {
        match self {
            Action::StoreOutage { .. } => Some(FaultKind::StoreOutage),
            Action::Suspend { .. } => Some(FaultKind::Suspend),
            Action::Login { .. } => Some(FaultKind::Login),
            Action::WriteNewer { .. } => Some(FaultKind::NewerWrite),
            Action::Crash { .. }
            | Action::CrashOnNextSave { .. }
            | Action::Revoke { .. }
            | Action::RevokeAccess { .. }
            | Action::Overwrite { .. }
            | Action::JumpWall { .. }
            | Action::Shutdown { .. } => None,
        }
    }
}

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

/// The executor events after which a run stops with a liveness failure (an event storm or a
/// livelock), unless a world sets its own [`WorldConfig::max_steps`].
pub const DEFAULT_MAX_STEPS: u64 = 200_000_000;

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
    /// The world rejects tokens at the resource server (revoked access tokens): at least one
    /// 401 must happen, and every retry after a 401 must be served a token the resource server
    /// accepts.
    pub check_unauthorized_retries: bool,
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
            check_unauthorized_retries: false,
            check_convergence: true,
            lifetime_known: true,
            max_steps: DEFAULT_MAX_STEPS,
            shard_credentials: 0,
            shard_jobs: 1,
            keep_going: false,
        }
    }

    pub(crate) fn heal_time(&self) -> Duration {
        self.heal_at.unwrap_or(self.duration)
    }

    /// Names of the fault kinds that are on: the rates of [`Faults::active`] and the kinds of
    /// the scheduled fault actions ([`FaultKind::is_rate`] false).
    pub fn active_faults(&self) -> Vec<FaultKind> {
        let mut v = self.faults.active();
        for kind in FaultKind::ALL.into_iter().filter(|k| !k.is_rate()) {
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

    /// Switches one fault kind off: a rate ([`Faults::disable`]) or every scheduled action of
    /// that kind.
    pub fn disable_fault(&mut self, kind: FaultKind) {
        self.faults.disable(kind);
        self.schedule.retain(|(_, a)| a.fault_kind() != Some(kind));
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
                | Action::RevokeAccess { cred }
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

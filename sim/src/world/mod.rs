//! A simulated world — one provider, credentials each shared by several processes through one
//! store, callers, a resource server, faults and a director — and the invariant oracles that
//! watch it after every event.
//!
//! The world is independent of the client under test: processes run whatever
//! [`ClientStrategy`] is given (see [`crate::strategy`]), and every oracle observes the
//! provider, the store and the callers only.

use std::collections::{BTreeMap, HashSet, VecDeque};
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

use crate::exec::{
    poll_catching_injected, silence_injected_panics, wall_at, ExecHandle, Executor, Group,
    HostClock, InjectedPanic, RunEnd,
};
use crate::provider::{FamilyId, IssueOrder, Profile, Provider, ResourceAnswer, SECRET_MARKER};
use crate::rng::{derive, SimRng};
use crate::strategy::{
    ClientError, ClientStrategy, ListenerPanics, LogLine, LogSink, ProcessClient, ProcessContext,
};
use faulty_store::{Backing, FaultyStore, HostStore};
use network::ProviderClient;

mod callers;
mod config;
mod director;
mod fault;
pub mod faulty_store;
mod metrics;
pub mod network;
mod oracle;
mod process;

use callers::*;
pub use config::*;
use director::*;
pub use fault::FaultKind;
pub use metrics::*;
pub use oracle::*;
use process::*;

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
    stores: Vec<Backing>,
    /// The first panic or stuck operation of a host's store (the lab), not yet reported.
    incident: Arc<Mutex<Option<String>>>,
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
/// (maxima for maxima), the trace hash mixes the shards' hashes in order, and the
/// first failing shard's failure is the run's (named with its shard and credential range), so
/// a failing seed replays exactly. [`WorldConfig::shard_jobs`] threads run shards at once.
pub fn run(
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
    print_trace: bool,
) -> Outcome {
    run_with(cfg, seed, strategy, print_trace, &HostParts::default())
}

/// A store factory of a host: one store per credential (see [`crate::lab::StoreSeat`]).
pub(crate) type StoreFactory =
    Arc<dyn Fn(&crate::lab::StoreSeat) -> Arc<dyn TokenStore> + Send + Sync>;

/// A host's policy: the engine policy for a run's seed.
pub(crate) type PolicyFactory = Arc<dyn Fn(u64) -> RefreshPolicy + Send + Sync>;

/// A run's progress report: the fraction of its simulated time done, from 0 to 1, in order.
pub type Progress = Arc<dyn Fn(f64) + Send + Sync>;

/// [`run`], reporting progress to `progress` as the run goes (after every 10,000 executor
/// events; a sharded world reports its shards' progress as one). The report does not change
/// the run.
pub fn run_with_progress(
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
    print_trace: bool,
    progress: Progress,
) -> Outcome {
    let parts = HostParts {
        progress: Some(progress),
        ..HostParts::default()
    };
    run_with(cfg, seed, strategy, print_trace, &parts)
}

/// What a host ([`crate::lab`]) puts into a world in place of the simulator's own parts.
#[derive(Clone, Default)]
pub(crate) struct HostParts {
    /// The stores behind the fault layer (default: the simulator's memory store).
    pub(crate) store: Option<StoreFactory>,
    /// The engine's policy (default: [`WorldConfig::policy`]).
    pub(crate) policy: Option<PolicyFactory>,
    /// Real time one operation of a host's store may take before it is reported as stuck.
    pub(crate) op_limit: Duration,
    /// Where the run reports its progress (see [`run_with_progress`]).
    pub(crate) progress: Option<Progress>,
    /// The runtime whose context the host's store operations run in (see
    /// [`crate::lab::Lab::tokio`]).
    #[cfg(feature = "load")]
    pub(crate) tokio: Option<tokio::runtime::Handle>,
}

/// [`run`] with a host's parts.
pub(crate) fn run_with(
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
    print_trace: bool,
    parts: &HostParts,
) -> Outcome {
    let shard = cfg.shard_credentials;
    if shard == 0 || cfg.credentials <= shard || !cfg.schedule.is_empty() {
        return run_one(cfg, seed, strategy, print_trace, parts);
    }
    let started = Instant::now();
    let shards = cfg.credentials.div_ceil(shard);
    let range = |k: usize| (k * shard, shard.min(cfg.credentials - k * shard));
    // Shards run one after the other report their own progress within their share; shards on
    // several threads report as each one ends.
    let jobs = if print_trace {
        1
    } else {
        cfg.shard_jobs.clamp(1, shards)
    };
    let sequential = jobs == 1;
    let shards_done = std::sync::atomic::AtomicUsize::new(0);
    let run_shard = |k: usize| {
        let (lo, n) = range(k);
        let mut shard_parts = parts.clone();
        if let Some(p) = &parts.progress {
            shard_parts.progress = sequential.then(|| {
                let p = p.clone();
                Arc::new(move |f: f64| p((k as f64 + f) / shards as f64)) as Progress
            });
        }
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
            &shard_parts,
        );
        if !sequential && let Some(p) = &parts.progress {
            let done = shards_done.fetch_add(1, Ordering::Relaxed) + 1;
            p(done as f64 / shards as f64);
        }
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
    let results: Vec<Option<Outcome>> = if sequential {
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
    parts: &HostParts,
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
    let incident = Arc::new(Mutex::new(None));
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for cred in 0..cfg.credentials {
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
        let clock = Arc::new(h.clock(zero.clone()));
        stores.push(match &parts.store {
            None => Backing::Memory(MemoryStore::with_clock(clock)),
            Some(make) => Backing::Host(HostStore {
                store: make(&crate::lab::StoreSeat::new(cred, seed, clock)),
                incident: incident.clone(),
                broken: broken.clone(),
                op_limit: parts.op_limit,
                #[cfg(feature = "load")]
                tokio: parts.tokio.clone(),
            }),
        });
    }
    let delivered_valid = delivered_logins.iter().map(delivered_span).collect();
    let state = Arc::new(Mutex::new(State {
        provider,
        rng: SimRng::new(derive(seed, 4)),
        faults: cfg.faults,
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
        delivered_valid,
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
        reported_rejected: vec![HashSet::new(); procs_total],
        served_sets: vec![Vec::new(); procs_total],
    }));
    if cfg.faults.listener_panics > 0.0 {
        silence_injected_panics();
    }
    let policy = match parts
        .policy
        .as_ref()
        .map_or_else(|| cfg.policy(derive(seed, 5)), |make| Ok(make(seed)))
    {
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
        incident,
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
        flush_incident(&shared, exec.now());
        if let Some(p) = &parts.progress {
            p((exec.now().as_nanos() as f64 / horizon_t.as_nanos().max(1) as f64).min(1.0));
        }
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
    flush_incident(&shared, now);
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

/// Turns the first panic or stuck operation of a host's store into the run's failure.
fn flush_incident(w: &Shared, now: MonoTime) {
    if let Some(msg) = w.incident.lock().take() {
        w.state.lock().violate(FailureKind::Crash, now, msg);
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

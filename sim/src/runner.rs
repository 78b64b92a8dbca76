//! Running scenarios: single runs with overrides, the determinism self-check, sweeps over many
//! seeds on threads, and shrinking a failure to a smaller world.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::rng::SimRng;
use crate::scenario::{self, Scenario};
use crate::strategy::{ClientStrategy, Keepfresh};
use crate::world::{self, FaultKind, Outcome, WorldConfig};

/// Changes applied to a scenario's drawn world (from the command line or by shrinking).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Callers per process.
    pub callers: Option<usize>,
    /// Workload duration, seconds.
    pub duration_secs: Option<u64>,
    /// Credentials.
    pub credentials: Option<usize>,
    /// Fault kinds switched off.
    pub disable_faults: Vec<FaultKind>,
}

impl Overrides {
    /// The command-line flags that reproduce these overrides.
    pub fn flags(&self) -> String {
        let mut s = String::new();
        if let Some(c) = self.callers {
            s.push_str(&format!(" --callers {c}"));
        }
        if let Some(d) = self.duration_secs {
            s.push_str(&format!(" --duration-secs {d}"));
        }
        if let Some(c) = self.credentials {
            s.push_str(&format!(" --credentials {c}"));
        }
        for f in &self.disable_faults {
            s.push_str(&format!(" --disable-fault {f}"));
        }
        s
    }
}

/// Resolves the world of `scenario` for `seed` with `overrides`.
///
/// # Errors
/// A message when the overrides make the world invalid.
pub fn resolve(
    scenario: &Scenario,
    seed: u64,
    overrides: &Overrides,
) -> Result<WorldConfig, String> {
    let mut rng = SimRng::new(seed);
    let mut cfg = scenario.build(&mut rng);
    if let Some(c) = overrides.callers {
        cfg.callers = c;
    }
    if let Some(d) = overrides.duration_secs {
        cfg.duration = Duration::from_secs(d);
        if let Some(h) = cfg.heal_at {
            cfg.heal_at = Some(h.min(cfg.duration));
        }
    }
    if let Some(c) = overrides.credentials {
        cfg.credentials = c;
    }
    for f in &overrides.disable_faults {
        cfg.disable_fault(*f);
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The strategy called `name`.
///
/// # Errors
/// The list of known strategies.
pub fn strategy(name: &str) -> Result<Arc<dyn ClientStrategy>, String> {
    crate::clients::by_name(name)
}

/// Runs one resolved world.
pub fn run_world(
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
    trace: bool,
) -> Outcome {
    world::run(cfg, seed, strategy, trace)
}

/// [`run_world`], reporting the fraction of simulated time done to `progress` as it goes
/// (see [`world::run_with_progress`]).
pub fn run_world_with_progress(
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
    trace: bool,
    progress: world::Progress,
) -> Outcome {
    world::run_with_progress(cfg, seed, strategy, trace, progress)
}

/// The command that replays a run of `client` (a strategy name: `keepfresh` or the model of
/// another client), exactly: the client is named unless it is keepfresh, the default.
pub fn replay_command(
    scenario: &Scenario,
    seed: u64,
    overrides: &Overrides,
    client: &str,
) -> String {
    let client = if client == Keepfresh.name() {
        String::new()
    } else {
        format!(" --client {client}")
    };
    format!(
        "cargo run --release -p keepfresh-sim -- replay {} --seed {seed}{client}{}",
        scenario.selector(),
        overrides.flags()
    )
}

/// Runs a seed twice with `strategy` and compares trace hashes.
///
/// # Errors
/// Both hashes when they differ.
pub fn determinism_check(
    scenario: &Scenario,
    seed: u64,
    overrides: &Overrides,
    strategy: Arc<dyn ClientStrategy>,
) -> Result<u64, String> {
    let cfg = resolve(scenario, seed, overrides)?;
    let a = run_world(&cfg, seed, strategy.clone(), false);
    let b = run_world(&cfg, seed, strategy, false);
    if a.trace_hash == b.trace_hash && a.events == b.events {
        Ok(a.trace_hash)
    } else {
        Err(format!(
            "non-deterministic: {} seed {seed} gave trace hashes {:016x} ({} events) and {:016x} ({} events)",
            scenario.name, a.trace_hash, a.events, b.trace_hash, b.events
        ))
    }
}

/// One failing seed of a sweep.
#[derive(Clone, Debug)]
pub struct SweepFailure {
    /// Scenario.
    pub scenario: Scenario,
    /// Seed.
    pub seed: u64,
    /// The failure.
    pub failure: world::Failure,
}

/// What a sweep found.
#[derive(Clone, Debug, Default)]
pub struct SweepResult {
    /// Runs done.
    pub runs: u64,
    /// Failures.
    pub failures: Vec<SweepFailure>,
    /// Events processed in all runs.
    pub events: u64,
    /// Summed wall time of all runs.
    pub busy: Duration,
}

/// Runs `seeds` seeds (from `start`) of each scenario on `jobs` threads, calling `progress`
/// after each run with (done, total).
pub fn sweep(
    scenarios: &[Scenario],
    start: u64,
    seeds: u64,
    jobs: usize,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> SweepResult {
    sweep_with(scenarios, start, seeds, jobs, Arc::new(Keepfresh), progress)
}

/// [`sweep`] with another client strategy than keepfresh.
pub fn sweep_with(
    scenarios: &[Scenario],
    start: u64,
    seeds: u64,
    jobs: usize,
    strategy: Arc<dyn ClientStrategy>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> SweepResult {
    let work: Vec<(Scenario, u64)> = scenarios
        .iter()
        .flat_map(|s| (start..start + seeds).map(move |seed| (*s, seed)))
        .collect();
    let total = work.len() as u64;
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let result = Mutex::new(SweepResult::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((sc, seed)) = work.get(i) else { break };
                let out = match resolve(sc, *seed, &Overrides::default()) {
                    Ok(cfg) => run_world(&cfg, *seed, strategy.clone(), false),
                    Err(e) => panic!("scenario {} does not build: {e}", sc.name),
                };
                {
                    let mut r = result.lock();
                    r.runs += 1;
                    r.events += out.events;
                    r.busy += out.wall;
                    if let Some(f) = out.failure {
                        r.failures.push(SweepFailure {
                            scenario: *sc,
                            seed: *seed,
                            failure: f,
                        });
                    }
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(d, total);
            });
        }
    });
    let mut r = result.into_inner();
    r.failures.sort_by_key(|f| (f.scenario.name, f.seed));
    r
}

/// Lowers callers, duration and fault kinds while the same kind of failure of `strategy` still
/// reproduces. Returns the smallest overrides found and their failure.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
) -> Option<(Overrides, world::Failure)> {
    let fails = |o: &Overrides| -> Option<world::Failure> {
        let cfg = resolve(scenario, seed, o).ok()?;
        run_world(&cfg, seed, strategy.clone(), false).failure
    };
    let mut best = Overrides::default();
    let first = fails(&best)?;
    let mut best_failure = first.clone();
    let base = resolve(scenario, seed, &best).ok()?;
    let mut callers = base.callers;
    while callers > 1 {
        let mut o = best.clone();
        o.callers = Some(callers / 2);
        match fails(&o) {
            Some(f) if f.kind == first.kind => {
                best = o;
                best_failure = f;
                callers /= 2;
            }
            _ => break,
        }
    }
    let mut dur = base.duration.as_secs();
    while dur > 60 {
        let mut o = best.clone();
        o.duration_secs = Some(dur / 2);
        match fails(&o) {
            Some(f) if f.kind == first.kind => {
                best = o;
                best_failure = f;
                dur /= 2;
            }
            _ => break,
        }
    }
    for kind in base.active_faults() {
        let mut o = best.clone();
        o.disable_faults.push(kind);
        if let Some(f) = fails(&o)
            && f.kind == first.kind
        {
            best = o;
            best_failure = f;
        }
    }
    Some((best, best_failure))
}

/// Every scenario of the default suite.
pub fn suite() -> Vec<Scenario> {
    scenario::all().into_iter().filter(|s| s.in_suite).collect()
}

//! The `keepfresh-sim` command line: run the default suite, one scenario, replays, sweeps and
//! shrinks, with readable or JSON reports and exit codes that tell failure kinds apart.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use keepfresh_sim::report;
use keepfresh_sim::runner::{self, Overrides};
use keepfresh_sim::scenario::{self, Scenario, ScenarioArgs};
use keepfresh_sim::scenario_file::ScenarioFile;
use keepfresh_sim::world::FailureKind;

/// Deterministic simulation of the keepfresh token-refresh engine.
///
/// Exit codes: 0 all invariants held; 10 correctness failure; 11 liveness failure (deadlock,
/// waiter past its deadline, no recovery); 12 crash (panic); 2 bad command line.
#[derive(Parser, Debug)]
#[command(name = "keepfresh-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the default suite, or one scenario with --scenario.
    Run(RunArgs),
    /// List the scenarios.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Replay one seed with its full trace.
    Replay(RunArgs),
    /// Run many seeds in parallel and list the failing ones.
    Sweep(SweepArgs),
    /// Shrink a failing seed: fewer callers, shorter duration, fewer fault kinds.
    Shrink {
        /// The scenario: `--scenario NAME` or `--scenario-file PATH`.
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Seed.
        #[arg(long)]
        seed: u64,
        /// Client strategy whose failure is shrunk (`keepfresh`, or a model of another client).
        #[arg(long = "client", alias = "strategy", default_value = "keepfresh")]
        client: String,
    },
    /// Scenario files: print a built-in scenario as a file to start from, or check a file.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Run every client strategy (keepfresh and the models of other clients) on the identical
    /// world and print one comparison table.
    Compare(keepfresh_sim::compare::CompareArgs),
    /// Load mode: concurrent bursts of callers through real engines over HTTP, against the
    /// built-in mock provider or any RFC 6749 token endpoint (--token-url).
    #[cfg(feature = "load")]
    Load(keepfresh_sim::load::LoadArgs),
    /// Find out what a token endpoint does with refresh tokens (rotation, reuse, grace window,
    /// access-token lifetime, concurrent refreshes) by spending a budget of them.
    #[cfg(feature = "load")]
    Probe(keepfresh_sim::probe::ProbeArgs),
    /// Serve the mock provider alone over HTTP on a loopback port until Ctrl-C.
    #[cfg(feature = "load")]
    Serve(keepfresh_sim::http::ServeArgs),
    /// One worker process of `load --os-processes` (started by it; not for direct use).
    #[cfg(feature = "load")]
    #[command(hide = true)]
    LoadWorker(keepfresh_sim::load::processes::WorkerArgs),
}

#[derive(Subcommand, Debug)]
enum ScenarioCommand {
    /// Print the world a built-in scenario draws for a seed, as a scenario file (TOML).
    Show {
        /// Scenario name (see `list`).
        name: String,
        /// The seed whose draws are written out.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Check a scenario file and print the world it describes.
    Check {
        /// The file.
        path: std::path::PathBuf,
    },
}

#[derive(Args, Debug, Default)]
struct RunArgs {
    /// The scenario (`--scenario NAME` or `--scenario-file PATH`); without one, the default
    /// suite.
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// Seed (default: 1 for the suite's first seed, otherwise required for replay).
    #[arg(long)]
    seed: Option<u64>,
    /// Seeds per scenario for the default suite.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Print every trace line with its simulated timestamp.
    #[arg(long)]
    trace: bool,
    /// JSON report.
    #[arg(long)]
    json: bool,
    /// Client strategy (`keepfresh`, or a model of another client: see `compare`).
    #[arg(long = "client", alias = "strategy", default_value = "keepfresh")]
    strategy: String,
    /// Override: callers per process.
    #[arg(long)]
    callers: Option<usize>,
    /// Override: workload duration in simulated seconds.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Override: number of credentials.
    #[arg(long)]
    credentials: Option<usize>,
    /// Override: switch a fault kind off (repeatable).
    #[arg(long)]
    disable_fault: Vec<keepfresh_sim::world::FaultKind>,
    /// Run the seed twice and compare trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Write an SVG plot of token-endpoint calls and caller waits here.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// Threads for a world that runs in shards of independent credentials (the fleet); the
    /// results do not depend on it.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

#[derive(Args, Debug)]
struct SweepArgs {
    /// Seeds per scenario.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Only this scenario (`--scenario NAME` or `--scenario-file PATH`; default: the whole
    /// suite).
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// JSON report.
    #[arg(long)]
    json: bool,
    /// Client strategy (`keepfresh`, or a model of another client: see `compare`).
    #[arg(long = "client", alias = "strategy", default_value = "keepfresh")]
    client: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command.unwrap_or(Command::Run(RunArgs {
        seeds: 3,
        strategy: "keepfresh".into(),
        ..RunArgs::default()
    })) {
        Command::Run(a) => run(a, false),
        Command::Replay(a) => run(a, true),
        Command::List { json } => list(json),
        Command::Sweep(a) => sweep(a),
        Command::Shrink {
            scenario,
            seed,
            client,
        } => shrink(&scenario, seed, &client),
        Command::Scenario(c) => scenario_command(c),
        Command::Compare(a) => keepfresh_sim::compare::main(a),
        #[cfg(feature = "load")]
        Command::Load(a) => return keepfresh_sim::load::run_load(a),
        #[cfg(feature = "load")]
        Command::Probe(a) => return keepfresh_sim::probe::run_probe(a),
        #[cfg(feature = "load")]
        Command::Serve(a) => return keepfresh_sim::http::run_serve(a),
        #[cfg(feature = "load")]
        Command::LoadWorker(a) => return keepfresh_sim::load::run_worker(a),
    };
    ExitCode::from(code as u8)
}

fn usage(msg: &str) -> i32 {
    eprintln!("error: {msg}");
    2
}

fn list(json: bool) -> i32 {
    let all = scenario::all();
    if json {
        let v: Vec<_> = all
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "reference": s.reference, "summary": s.summary, "in_suite": s.in_suite}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        for s in all {
            println!(
                "{:<26} {:<9} {}{}",
                s.name,
                s.reference,
                s.summary,
                if s.in_suite {
                    ""
                } else {
                    " (not in the default suite)"
                }
            );
        }
    }
    0
}

fn overrides(a: &RunArgs) -> Overrides {
    Overrides {
        callers: a.callers,
        duration_secs: a.duration_secs,
        credentials: a.credentials,
        disable_faults: a.disable_fault.clone(),
    }
}

/// A progress bar on stderr for one run of `simulated` simulated time, redrawn when the
/// percentage moves.
fn progress_bar(simulated: std::time::Duration) -> keepfresh_sim::world::Progress {
    let shown = std::sync::atomic::AtomicU64::new(u64::MAX);
    std::sync::Arc::new(move |done: f64| {
        let pct = (done.clamp(0.0, 1.0) * 100.0) as u64;
        if shown.swap(pct, std::sync::atomic::Ordering::Relaxed) == pct {
            return;
        }
        draw_bar(
            pct,
            100,
            format_args!(
                "{pct:>3}% of {} simulated",
                humantime::format_duration(simulated)
            ),
        );
    })
}

/// Redraws a 40-column bar, `done` of `total` full, on stderr's current line, followed by
/// `tail`.
fn draw_bar(done: u64, total: u64, tail: std::fmt::Arguments<'_>) {
    const WIDTH: usize = 40;
    let filled = (done.min(total) * WIDTH as u64 / total.max(1)) as usize;
    eprint!(
        "\r[{}{}] {tail}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    );
    let _ = std::io::stderr().flush();
}

fn run(a: RunArgs, replay: bool) -> i32 {
    let strategy = match runner::strategy(&a.strategy) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let ov = overrides(&a);
    let sc = match a.scenario.pick() {
        Ok(Some(sc)) => sc,
        Ok(None) => {
            if replay {
                return usage(
                    "replay needs --scenario NAME (or --scenario-file PATH) and --seed N",
                );
            }
            if a.trace || a.svg.is_some() {
                return usage("--trace and --svg need --scenario or --scenario-file");
            }
            return suite(&a, strategy);
        }
        Err(e) => return usage(&e),
    };
    let seed = match (a.seed, replay) {
        (Some(s), _) => s,
        (None, true) => return usage("replay needs --seed N"),
        (None, false) => 1,
    };
    let mut cfg = match runner::resolve(&sc, seed, &ov) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    if a.jobs == 0 {
        return usage("--jobs must be at least 1");
    }
    cfg.shard_jobs = a.jobs;
    if !a.json {
        println!(
            "keepfresh-sim {} seed {seed} strategy {}",
            sc.name,
            strategy.name()
        );
        println!("config {}", serde_json::to_string(&cfg).expect("json"));
    }
    let strategy_name = strategy.name();
    let tracing = a.trace || replay;
    // A live bar on a terminal (a run of a large world takes seconds); nothing in a log, and
    // nothing under a trace, which prints to the same terminal.
    let out = if !tracing && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let out = runner::run_world_with_progress(
            &cfg,
            seed,
            strategy.clone(),
            false,
            progress_bar(cfg.duration + cfg.settle),
        );
        eprint!("\r\x1b[K");
        out
    } else {
        runner::run_world(&cfg, seed, strategy.clone(), tracing)
    };
    let figures = report::figures(&cfg, seed, &out);
    if let Some(path) = &a.svg
        && let Err(e) = std::fs::write(path, report::svg(&cfg, seed, &out))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return 1;
    }
    if a.json {
        let mut f = figures.clone();
        f["config"] = serde_json::to_value(&cfg).expect("json");
        f["replay"] = runner::replay_command(&sc, seed, &ov, strategy_name).into();
        println!("{}", serde_json::to_string_pretty(&f).expect("json"));
    } else {
        print!("{}", report::readable(&figures));
    }
    let mut code = 0;
    if let Some(f) = &out.failure {
        if !a.json {
            print_failure(&sc, seed, &ov, strategy_name, f, &out.tail);
        }
        code = f.kind.exit_code();
    }
    if a.check_determinism && code == 0 {
        match runner::determinism_check(&sc, seed, &ov, strategy) {
            Ok(h) => {
                if !a.json {
                    println!("determinism: same seed twice gave trace hash {h:016x}");
                }
            }
            Err(e) => {
                eprintln!("{e}");
                code = FailureKind::Correctness.exit_code();
            }
        }
    }
    code
}

fn print_failure(
    sc: &Scenario,
    seed: u64,
    ov: &Overrides,
    client: &str,
    f: &keepfresh_sim::world::Failure,
    tail: &[String],
) {
    println!("FAILURE ({:?}) at {:.3}s: {}", f.kind, f.at_secs, f.message);
    println!("last trace events:");
    for l in tail {
        println!("  {l}");
    }
    println!("replay: {}", runner::replay_command(sc, seed, ov, client));
}

fn suite(a: &RunArgs, strategy: Arc<dyn keepfresh_sim::strategy::ClientStrategy>) -> i32 {
    let first = a.seed.unwrap_or(1);
    let scenarios = runner::suite();
    let ov = overrides(a);
    if !a.json {
        println!(
            "keepfresh-sim default suite: {} scenarios x {} seeds from seed {first}, strategy {}",
            scenarios.len(),
            a.seeds,
            strategy.name()
        );
    }
    let mut rows = Vec::new();
    let mut code = 0;
    let (mut events, mut wall) = (0u64, 0f64);
    for sc in &scenarios {
        let mut status = "ok".to_string();
        for seed in first..first + a.seeds {
            let cfg = match runner::resolve(sc, seed, &ov) {
                Ok(c) => c,
                Err(e) => return usage(&e),
            };
            let out = runner::run_world(&cfg, seed, strategy.clone(), false);
            events += out.events;
            wall += out.wall.as_secs_f64();
            let f = report::figures(&cfg, seed, &out);
            if let Some(fail) = &out.failure {
                if !a.json {
                    print_failure(sc, seed, &ov, strategy.name(), fail, &out.tail);
                }
                status = format!("FAIL seed {seed}: {}", fail.message);
                if code == 0 {
                    code = fail.kind.exit_code();
                }
            }
            rows.push(f);
        }
        if !a.json {
            println!("  {:<26} {:<9} {status}", sc.name, sc.reference);
        }
    }
    let det = runner::determinism_check(&scenarios[0], first, &ov, strategy.clone());
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"runs": rows, "determinism": det.as_ref().map(|h| format!("{h:016x}")).map_err(|e| e.clone())})).expect("json")
        );
    } else {
        println!(
            "{} runs, {events} events in {wall:.2}s of run time ({:.0} events/s)",
            rows.len(),
            events as f64 / wall.max(1e-9)
        );
        match &det {
            Ok(h) => println!(
                "determinism: {} seed {first} twice gave trace hash {h:016x}",
                scenarios[0].name
            ),
            Err(e) => println!("{e}"),
        }
    }
    if det.is_err() && code == 0 {
        code = FailureKind::Correctness.exit_code();
    }
    code
}

fn sweep(a: SweepArgs) -> i32 {
    if a.jobs == 0 || a.seeds == 0 {
        return usage("--jobs and --seeds must be at least 1");
    }
    let scenarios: Vec<Scenario> = match a.scenario.pick() {
        Ok(Some(s)) => vec![s],
        Ok(None) => runner::suite(),
        Err(e) => return usage(&e),
    };
    let started = std::time::Instant::now();
    // A live bar on a terminal; a line per tenth of the sweep when stderr is a log.
    let live = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = |done: u64, total: u64| {
        if !live {
            if done == total || done.is_multiple_of((total / 10).max(1)) {
                eprintln!("{done}/{total} runs");
            }
            return;
        }
        if done.is_multiple_of(10) || done == total {
            draw_bar(done, total, format_args!("{done}/{total}"));
            if done == total {
                eprintln!();
            }
        }
    };
    let strategy = match runner::strategy(&a.client) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let r = runner::sweep_with(&scenarios, a.start, a.seeds, a.jobs, strategy, &progress);
    let wall = started.elapsed().as_secs_f64();
    if a.json {
        let fails: Vec<_> = r
            .failures
            .iter()
            .map(|f| serde_json::json!({"scenario": f.scenario.name, "seed": f.seed, "kind": f.failure.kind, "message": f.failure.message, "replay": runner::replay_command(&f.scenario, f.seed, &Overrides::default(), &a.client)}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"runs": r.runs, "events": r.events, "wall_secs": wall, "events_per_busy_sec": r.events as f64 / r.busy.as_secs_f64().max(1e-9), "failures": fails})).expect("json"));
    } else {
        println!(
            "{} runs, {} failing, {} events, {wall:.1}s wall, {:.0} events/s per thread",
            r.runs,
            r.failures.len(),
            r.events,
            r.events as f64 / r.busy.as_secs_f64().max(1e-9)
        );
        for f in &r.failures {
            println!(
                "  {} seed {} ({:?}): {}\n    replay: {}",
                f.scenario.name,
                f.seed,
                f.failure.kind,
                f.failure.message,
                runner::replay_command(&f.scenario, f.seed, &Overrides::default(), &a.client)
            );
        }
    }
    r.failures.first().map_or(0, |f| f.failure.kind.exit_code())
}

fn shrink(choice: &ScenarioArgs, seed: u64, client: &str) -> i32 {
    let sc = match choice.pick() {
        Ok(Some(s)) => s,
        Ok(None) => return usage("shrink needs --scenario NAME or --scenario-file PATH"),
        Err(e) => return usage(&e),
    };
    let name = sc.name;
    let strategy = match runner::strategy(client) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    match runner::shrink(&sc, seed, strategy) {
        None => {
            println!("{name} seed {seed} does not fail: nothing to shrink");
            0
        }
        Some((ov, f)) => {
            println!("smallest failing world: {name} seed {seed}{}", ov.flags());
            println!("failure ({:?}): {}", f.kind, f.message);
            println!("replay: {}", runner::replay_command(&sc, seed, &ov, client));
            f.kind.exit_code()
        }
    }
}

fn scenario_command(c: ScenarioCommand) -> i32 {
    match c {
        ScenarioCommand::Show { name, seed } => {
            let sc = match scenario::by_name(&name) {
                Ok(s) => s,
                Err(e) => return usage(&e),
            };
            let world = match runner::resolve(&sc, seed, &Overrides::default()) {
                Ok(w) => w,
                Err(e) => return usage(&e),
            };
            let file = ScenarioFile::from_world(&world, sc.summary);
            match file.to_toml() {
                Ok(text) => {
                    println!(
                        "# keepfresh-sim scenario file: the world the built-in scenario `{}` ({})\n# draws for seed {seed}. Run it with: keepfresh-sim run --scenario-file FILE --seed N\n",
                        sc.name, sc.reference
                    );
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        ScenarioCommand::Check { path } => match ScenarioFile::load(&path) {
            Ok(file) => {
                let w = file.world();
                println!(
                    "{}: ok: {} credential(s) × {} process(es) × {} caller(s), {} of workload, {} scheduled action(s), faults: {}",
                    path.display(),
                    w.credentials,
                    w.processes,
                    w.callers,
                    humantime::format_duration(w.duration),
                    w.schedule.len(),
                    if w.active_faults().is_empty() {
                        "none".to_string()
                    } else {
                        w.active_faults().iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", ")
                    }
                );
                0
            }
            Err(e) => usage(&e.to_string()),
        },
    }
}

//! Comparison mode: every client strategy on the identical seeded world, one table.
//!
//! `keepfresh-sim compare --scenario NAME --seed N [--seeds K]` resolves the scenario's world
//! for each seed once, runs it with every strategy of [`crate::clients`] (keepfresh and the
//! models of other clients), and prints one row per strategy. The world runs in observe-only
//! mode ([`WorldConfig::keep_going`]): an invariant broken by another client's behaviour is
//! recorded, and the world keeps going to its end so that what happens *next* (a revoked
//! grant, a re-authorization, callers stuck behind a lock) is counted too.
//!
//! Every figure is the world's own observation of the provider, the store and the callers
//! ([`crate::world::Metrics`]), never a strategy's internals:
//!
//! | column | meaning |
//! |---|---|
//! | token-endpoint calls | calls that reached the simulated network |
//! | duplicate refreshes | calls started while another call for the same credential was in flight, or within 10 s of a delivered refresh answer |
//! | replays | rotated refresh tokens presented again outside the grace window, although their rotation answer had been delivered |
//! | grants revoked | credentials whose whole family the provider revoked for refresh-token reuse |
//! | errors while valid | caller requests that got an error while an access token the credential had received was still valid |
//! | blocked | caller requests that did not get a token at once; `(valid)`: of those, requests that started while a received token was still valid |
//! | wait p99 / max | waits of the blocked requests (p99 is the upper bound of its log2 bucket; over a seed sweep, the worst seed's) |
//! | re-auth | process instances that reported that a new login is required; `after restart`: of those, instances started after a crash or restart |
//! | tokens lost | rotated refresh tokens a process had received but not stored when it stopped |
//! | invariants | `ok`, or the first invariant the run broke (listed under the table) |
//!
//! `--json` prints the same figures; `--svg PATH` writes a bar chart of the main columns
//! ([`chart`]: labelled bars on logarithmic axes).

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::clients;
use crate::plot::{BarChart, Bars};
use crate::runner::{self, Overrides};
use crate::scenario::{self, Scenario};
use crate::strategy::ClientStrategy;
use crate::world::WorldConfig;

/// Command-line arguments of `keepfresh-sim compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The scenario: `--scenario NAME` or `--scenario-file PATH` (one is required).
    #[command(flatten)]
    pub scenario: scenario::ScenarioArgs,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of seeds from --seed (figures are summed over them).
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Only these clients (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Override: callers per process.
    #[arg(long)]
    pub callers: Option<usize>,
    /// Override: workload duration in simulated seconds.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG bar chart here.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
}

/// One strategy's figures over the compared seeds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Row {
    /// Strategy name.
    pub client: String,
    /// Runs summed.
    pub runs: u64,
    /// Caller requests.
    pub requests: u64,
    /// Tokens served.
    pub served: u64,
    /// Caller errors of any kind.
    pub errors: u64,
    /// Token-endpoint calls.
    pub token_calls: u64,
    /// Duplicate refreshes.
    pub duplicate_refreshes: u64,
    /// Unexcused replays of rotated refresh tokens.
    pub replays: u64,
    /// Grants (token families) revoked by reuse detection.
    pub grants_revoked: u64,
    /// Caller errors while a received token was still valid.
    pub errors_while_valid: u64,
    /// Caller requests that waited.
    pub blocked: u64,
    /// Of those, requests that started while a received token was still valid.
    pub blocked_while_valid: u64,
    /// p99 wait of the blocked requests, ms (worst seed).
    pub blocked_p99_ms: f64,
    /// Longest wait, ms.
    pub blocked_max_ms: f64,
    /// Process instances that required re-authorization.
    pub reauth: u64,
    /// Of those, instances started after a restart.
    pub reauth_after_restart: u64,
    /// Rotated refresh tokens lost with a stopping process.
    pub tokens_lost: u64,
    /// Resource-server 401s seen by callers.
    pub unauthorized_401: u64,
    /// The first broken invariant of each failing seed (`seed N: message`).
    pub invariants_broken: Vec<String>,
}

/// The comparison of every strategy on one scenario and seed range.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Scenario name.
    pub scenario: String,
    /// First seed.
    pub seed: u64,
    /// Number of seeds.
    pub seeds: u64,
    /// The command that reproduces it.
    pub command: String,
    /// One row per strategy.
    pub rows: Vec<Row>,
}

impl Comparison {
    /// The row of `client`.
    pub fn row(&self, client: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.client == client)
    }
}

/// Runs one strategy on `scenario`'s world for `seed` and adds its figures to `row`.
///
/// # Errors
/// A message when the overrides make the world invalid.
pub fn run_into(
    row: &mut Row,
    scenario: &Scenario,
    seed: u64,
    overrides: &Overrides,
    strategy: Arc<dyn ClientStrategy>,
) -> Result<(), String> {
    let cfg = runner::resolve(scenario, seed, overrides)?;
    run_config_into(row, &cfg, seed, strategy);
    Ok(())
}

/// Runs one strategy on the world `cfg` (in observe-only mode) for `seed` and adds its
/// figures to `row`.
pub fn run_config_into(
    row: &mut Row,
    cfg: &WorldConfig,
    seed: u64,
    strategy: Arc<dyn ClientStrategy>,
) {
    let mut cfg = cfg.clone();
    cfg.keep_going = true;
    let out = runner::run_world(&cfg, seed, strategy, false);
    let m = &out.metrics;
    let ms = |n: u64| n as f64 / 1e6;
    row.runs += 1;
    row.requests += m.requests;
    row.served += m.served;
    row.errors += m.errors.values().sum::<u64>();
    row.token_calls += m.token_calls.len() as u64;
    row.duplicate_refreshes += m.duplicate_calls;
    row.replays += m.unexcused_replays;
    row.grants_revoked += m.families_revoked_by_reuse;
    row.errors_while_valid += m.errors_while_valid;
    row.blocked += m.blocked;
    row.blocked_while_valid += m.blocked_while_valid;
    row.blocked_p99_ms = row.blocked_p99_ms.max(ms(m.blocked_waits.quantile(0.99)));
    row.blocked_max_ms = row.blocked_max_ms.max(ms(m.blocked_waits.max()));
    row.reauth += m.reauth_processes;
    row.reauth_after_restart += m.reauth_after_restart;
    row.tokens_lost += m.tokens_lost;
    row.unauthorized_401 += m.rs_unauthorized;
    if let Some(f) = &out.failure {
        row.invariants_broken
            .push(format!("seed {seed}: {}", f.message));
    }
}

/// Runs every strategy of `strategies` on the world `cfg` for `seeds` seeds from `seed`.
pub fn compare_world(
    cfg: &WorldConfig,
    seed: u64,
    seeds: u64,
    strategies: &[Arc<dyn ClientStrategy>],
) -> Comparison {
    let rows = strategies
        .iter()
        .map(|s| {
            let mut row = Row {
                client: s.name().to_owned(),
                ..Row::default()
            };
            for k in seed..seed + seeds {
                run_config_into(&mut row, cfg, k, s.clone());
            }
            row
        })
        .collect();
    Comparison {
        scenario: cfg.scenario.clone(),
        seed,
        seeds,
        command: String::new(),
        rows,
    }
}

/// Runs every strategy in `strategies` on `seeds` seeds from `seed` of `scenario`.
///
/// # Errors
/// A message when the overrides make the world invalid.
pub fn compare(
    scenario: &Scenario,
    seed: u64,
    seeds: u64,
    overrides: &Overrides,
    strategies: &[Arc<dyn ClientStrategy>],
) -> Result<Comparison, String> {
    let mut rows = Vec::new();
    for s in strategies {
        let mut row = Row {
            client: s.name().to_owned(),
            ..Row::default()
        };
        for k in seed..seed + seeds {
            run_into(&mut row, scenario, k, overrides, s.clone())?;
        }
        rows.push(row);
    }
    Ok(Comparison {
        scenario: scenario.name.to_owned(),
        seed,
        seeds,
        command: command(scenario, seed, seeds, overrides),
        rows,
    })
}

/// The command line that reproduces a comparison.
pub fn command(scenario: &Scenario, seed: u64, seeds: u64, overrides: &Overrides) -> String {
    let mut c = format!(
        "cargo run --release -p keepfresh-sim -- compare {} --seed {seed}",
        scenario.selector()
    );
    if seeds != 1 {
        let _ = write!(c, " --seeds {seeds}");
    }
    c.push_str(&overrides.flags());
    c
}

fn fmt_ms(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v < 10.0 {
        format!("{v:.1} ms")
    } else if v < 10_000.0 {
        format!("{v:.0} ms")
    } else {
        format!("{:.0} s", v / 1000.0)
    }
}

/// The comparison as a Markdown table, with the broken invariants listed under it.
pub fn table(c: &Comparison) -> String {
    let head = [
        "client",
        "token-endpoint calls",
        "duplicate refreshes",
        "replays",
        "grants revoked",
        "errors while valid",
        "blocked (valid)",
        "wait p99 / max",
        "re-auth (after restart)",
        "tokens lost",
        "invariants",
    ];
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    let mut notes = String::new();
    for r in &c.rows {
        let inv = if r.invariants_broken.is_empty() {
            "ok".to_string()
        } else {
            let n = r.invariants_broken.len();
            let _ = writeln!(notes, "- {}: {}", r.client, r.invariants_broken[0]);
            format!("broken in {n}/{}", r.runs)
        };
        lines.push(vec![
            r.client.clone(),
            r.token_calls.to_string(),
            r.duplicate_refreshes.to_string(),
            r.replays.to_string(),
            r.grants_revoked.to_string(),
            r.errors_while_valid.to_string(),
            format!("{} ({})", r.blocked, r.blocked_while_valid),
            format!(
                "{} / {}",
                fmt_ms(r.blocked_p99_ms),
                fmt_ms(r.blocked_max_ms)
            ),
            format!("{} ({})", r.reauth, r.reauth_after_restart),
            r.tokens_lost.to_string(),
            inv,
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "scenario {}, seed{} {}{}, {} requests per client",
        c.scenario,
        if c.seeds == 1 { "" } else { "s" },
        c.seed,
        if c.seeds == 1 {
            String::new()
        } else {
            format!("..{}", c.seed + c.seeds - 1)
        },
        c.rows.first().map_or(0, |r| r.requests)
    );
    s.push('\n');
    for (k, l) in lines.iter().enumerate() {
        s.push('|');
        for (i, cell) in l.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i == 0 {
                let _ = write!(s, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(s, " {}{cell} |", " ".repeat(pad));
            }
        }
        s.push('\n');
        if k == 0 {
            s.push('|');
            for (i, w) in widths.iter().enumerate() {
                if i == 0 {
                    let _ = write!(s, "{}|", "-".repeat(w + 2));
                } else {
                    let _ = write!(s, "{}:|", "-".repeat(w + 1));
                }
            }
            s.push('\n');
        }
    }
    if !notes.is_empty() {
        s.push_str("\nfirst invariant broken (seed: message):\n");
        s.push_str(&notes);
    }
    s
}

/// The comparison as a chart: one panel per main column, one bar per client (colours named
/// in the legend), every bar labelled with its exact figure, on logarithmic axes so a count of
/// 1 next to one of 906 is a visible bar.
///
/// ```
/// use keepfresh_sim::compare::{chart, Comparison, Row};
/// let row = |client: &str, token_calls| Row { client: client.into(), token_calls, ..Row::default() };
/// let c = Comparison {
///     scenario: "demo".into(), seed: 1, seeds: 1, command: String::new(),
///     rows: vec![row("keepfresh", 1), row("no-dedup", 906)],
/// };
/// let svg = chart(&c).to_svg().unwrap();
/// assert!(svg.contains("\n906\n") && svg.contains("\n1\n") && svg.contains("no-dedup"));
/// ```
pub fn chart(c: &Comparison) -> BarChart {
    type Pick = fn(&Row) -> f64;
    let measures: [(&str, &str, Pick); 9] = [
        ("token-endpoint calls", "calls", |r| r.token_calls as f64),
        ("duplicate refreshes", "calls", |r| {
            r.duplicate_refreshes as f64
        }),
        ("replays of rotated refresh tokens", "calls", |r| {
            r.replays as f64
        }),
        ("grants revoked", "grants", |r| r.grants_revoked as f64),
        ("errors while a token was valid", "requests", |r| {
            r.errors_while_valid as f64
        }),
        ("blocked while a token was valid", "requests", |r| {
            r.blocked_while_valid as f64
        }),
        ("longest caller wait", "ms", |r| r.blocked_max_ms),
        ("re-authorizations", "process instances", |r| {
            r.reauth as f64
        }),
        ("rotated refresh tokens lost", "tokens", |r| {
            r.tokens_lost as f64
        }),
    ];
    let seeds = if c.seeds == 1 {
        format!("seed {}", c.seed)
    } else {
        format!("seeds {}..{} (summed)", c.seed, c.seed + c.seeds - 1)
    };
    let mut chart = BarChart::new(
        format!("keepfresh-sim compare: {}, {seeds}", c.scenario),
        c.rows.iter().map(|r| r.client.clone()).collect(),
    );
    for (caption, unit, pick) in measures {
        chart = chart.measure(Bars::new(caption, unit, c.rows.iter().map(pick).collect()));
    }
    chart
}

/// The SVG of [`chart`] (what `compare --svg` writes); a document saying why if it cannot be
/// drawn.
///
/// See [`chart`].
pub fn svg(c: &Comparison) -> String {
    chart(c)
        .to_svg()
        .unwrap_or_else(|e| crate::plot::message_svg(&e.to_string()))
}

/// The `compare` subcommand; returns the process exit code (0, or 2 on bad input).
pub fn main(a: CompareArgs) -> i32 {
    let fail = |m: String| {
        eprintln!("error: {m}");
        2
    };
    let sc = match a.scenario.pick() {
        Ok(Some(s)) => s,
        Ok(None) => return fail("compare needs --scenario NAME or --scenario-file PATH".into()),
        Err(e) => return fail(e),
    };
    if a.seeds == 0 {
        return fail("--seeds must be at least 1".into());
    }
    let strategies: Vec<Arc<dyn ClientStrategy>> = if a.clients.is_empty() {
        clients::all()
    } else {
        match a.clients.iter().map(|n| clients::by_name(n)).collect() {
            Ok(v) => v,
            Err(e) => return fail(e),
        }
    };
    let ov = Overrides {
        callers: a.callers,
        duration_secs: a.duration_secs,
        ..Overrides::default()
    };
    let c = match compare(&sc, a.seed, a.seeds, &ov, &strategies) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(path) = &a.svg
        && let Err(e) = std::fs::write(path, svg(&c))
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return 1;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&c).expect("json"));
    } else {
        println!("$ {}", c.command);
        print!("{}", table(&c));
    }
    0
}

//! Turning a run's outcome into the figures people and CI read: a readable summary, JSON with
//! the same figures, and a timeline of the run ([`timeline`], drawn by [`crate::plot`]):
//! token-endpoint calls and caller waits over simulated time, with faults and phases.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::plot::{Figure, Panel, Scale, Series};
use crate::world::{Action, Outcome, WorldConfig};

/// The figures of one run.
pub fn figures(cfg: &WorldConfig, seed: u64, out: &Outcome) -> Value {
    let m = &out.metrics;
    let mut per_sec = std::collections::HashMap::new();
    for t in &m.token_calls {
        *per_sec.entry(t / 1_000_000_000).or_insert(0u64) += 1;
    }
    let peak = per_sec.values().copied().max().unwrap_or(0);
    let wall = out.wall.as_secs_f64().max(1e-9);
    let ms = |n: u64| n as f64 / 1e6;
    json!({
        "scenario": cfg.scenario,
        "seed": seed,
        "status": match &out.failure { None => "ok".to_string(), Some(f) => format!("{:?}", f.kind).to_lowercase() },
        "failure": out.failure.as_ref().map(|f| json!({"kind": f.kind, "message": f.message, "at_secs": f.at_secs})),
        "trace_hash": format!("{:016x}", out.trace_hash),
        "refreshes": out.outcomes.get("ok").copied().unwrap_or(0) + out.outcomes.get("ok_grace").copied().unwrap_or(0),
        "provider_calls": m.token_calls.len(),
        "provider_calls_by_outcome": out.outcomes,
        "peak_token_endpoint_calls_per_sec": peak,
        "requests": m.requests,
        "served": m.served,
        "errors": m.errors,
        "abandoned": m.abandoned,
        "caller_wait_ms": {
            "p50": ms(m.waits.quantile(0.5)),
            "p90": ms(m.waits.quantile(0.9)),
            "p99": ms(m.waits.quantile(0.99)),
            "max": ms(m.waits.max()),
        },
        "served_near_expiry": m.near_expiry,
        "served_past_unstated_expiry": m.served_past_true_expiry,
        "resource_server_401": m.rs_unauthorized,
        "resource_server_401_after_retry": m.rs_unauthorized_after_retry,
        "resource_server_401_after_retry_unreported": m.rs_retry_revoked_unreported,
        "resource_server_requests": m.rs_requests,
        "resource_server_403_step_up": m.rs_step_up,
        "reauth_signals": m.reauths,
        "persist_failures": m.persist_failures,
        "max_unsaved_window_ms": ms(m.max_unsaved_window_ns),
        "store_lies": m.store_lies,
        "replays_blamed_on_store": m.replays_blamed_on_store,
        "events": out.events,
        "events_per_sec": out.events as f64 / wall,
        "simulated_secs": out.sim_time.as_secs_f64(),
        "simulated_secs_per_wall_sec": out.sim_time.as_secs_f64() / wall,
        "wall_secs": out.wall.as_secs_f64(),
        "trace_lines": out.trace_lines,
    })
}

/// The readable summary of [`figures`].
pub fn readable(f: &Value) -> String {
    let mut s = String::new();
    let g = |k: &str| f.get(k).cloned().unwrap_or(Value::Null);
    let _ = writeln!(
        s,
        "scenario {} seed {}: {}",
        g("scenario").as_str().unwrap_or(""),
        g("seed"),
        g("status").as_str().unwrap_or("")
    );
    let _ = writeln!(
        s,
        "  refreshes {}  provider calls {}  peak {} calls/s",
        g("refreshes"),
        g("provider_calls"),
        g("peak_token_endpoint_calls_per_sec")
    );
    let _ = writeln!(s, "  calls by outcome {}", g("provider_calls_by_outcome"));
    let w = g("caller_wait_ms");
    let _ = writeln!(
        s,
        "  requests {}  served {}  near expiry {}  errors {}",
        g("requests"),
        g("served"),
        g("served_near_expiry"),
        g("errors")
    );
    let _ = writeln!(
        s,
        "  caller wait ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        w["p50"].as_f64().unwrap_or(0.0),
        w["p90"].as_f64().unwrap_or(0.0),
        w["p99"].as_f64().unwrap_or(0.0),
        w["max"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        s,
        "  401s {} (after retry {})  reauth signals {}  persist failures {}  max unsaved window {:.1} ms",
        g("resource_server_401"), g("resource_server_401_after_retry"), g("reauth_signals"), g("persist_failures"), g("max_unsaved_window_ms").as_f64().unwrap_or(0.0)
    );
    if g("store_lies").as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            s,
            "  store lies {} (lost saves and stale reads)  replays blamed on the store {}",
            g("store_lies"),
            g("replays_blamed_on_store")
        );
    }
    let _ = writeln!(
        s,
        "  {} events in {:.3}s wall: {:.0} events/s, {:.0} simulated s per wall s; trace {}",
        g("events"),
        g("wall_secs").as_f64().unwrap_or(0.0),
        g("events_per_sec").as_f64().unwrap_or(0.0),
        g("simulated_secs_per_wall_sec").as_f64().unwrap_or(0.0),
        g("trace_hash").as_str().unwrap_or("")
    );
    s
}

/// The unit of a timeline's x axis: seconds for runs up to 10 minutes, minutes up to 10
/// hours, hours beyond.
fn time_unit(horizon_secs: f64) -> (f64, &'static str) {
    if horizon_secs <= 600.0 {
        (1.0, "s")
    } else if horizon_secs <= 36_000.0 {
        (60.0, "min")
    } else {
        (3600.0, "h")
    }
}

/// The timeline of one run over simulated time, as a [`Figure`]: token-endpoint calls per
/// time bucket; the longest caller wait and the mean wait of blocked requests per bucket;
/// blocked and failed caller requests per bucket. Shaded: the window in which the world's
/// rate faults are on (to the heal time), store outages, suspends and processes down after a
/// crash or shutdown. Marked: the other scheduled actions, the end of the workload, the heal
/// time, the liveness probe and the first broken invariant.
///
/// ```
/// use std::sync::Arc;
/// use keepfresh_sim::{report, runner, scenario, strategy::Keepfresh};
/// let sc = scenario::by_name("store-outage").unwrap();
/// let cfg = runner::resolve(&sc, 1, &runner::Overrides::default()).unwrap();
/// let out = runner::run_world(&cfg, 1, Arc::new(Keepfresh), false);
/// let svg = report::timeline(&cfg, 1, &out).to_svg().unwrap();
/// assert!(svg.contains("token-endpoint calls") && svg.contains("store outage"));
/// ```
pub fn timeline(cfg: &WorldConfig, seed: u64, out: &Outcome) -> Figure {
    let m = &out.metrics;
    let bucket_s = m.bucket_ns as f64 / 1e9;
    let horizon_s = (m.series.len() as f64 * bucket_s).max(out.sim_time.as_secs_f64());
    let (unit_s, unit) = time_unit(horizon_s);
    let t = |secs: f64| secs / unit_s;
    let d = |x: std::time::Duration| t(x.as_secs_f64());
    let bucket = bucket_s / unit_s;
    let bucket_desc = if bucket_s < 60.0 {
        format!("{} s", crate::plot::number_text(bucket_s))
    } else {
        format!("{} min", crate::plot::number_text(bucket_s / 60.0))
    };
    let at = |i: usize| i as f64 * bucket;
    let calls: Vec<(f64, f64)> = m
        .series
        .iter()
        .enumerate()
        .map(|(i, b)| (at(i), b.0 as f64))
        .collect();
    let longest: Vec<(f64, f64)> = m
        .series
        .iter()
        .enumerate()
        .filter(|(_, b)| b.1 > 0)
        .map(|(i, b)| (at(i) + bucket / 2.0, b.1 as f64 / 1e6))
        .collect();
    let mean: Vec<(f64, f64)> = m
        .caller_series
        .iter()
        .enumerate()
        .filter(|(_, b)| b.blocked > 0)
        .map(|(i, b)| {
            (
                at(i) + bucket / 2.0,
                b.blocked_wait_ns as f64 / b.blocked as f64 / 1e6,
            )
        })
        .collect();
    let failed: Vec<(f64, f64)> = m
        .caller_series
        .iter()
        .enumerate()
        .map(|(i, b)| (at(i), b.errors as f64))
        .collect();
    let blocked: Vec<(f64, f64)> = m
        .caller_series
        .iter()
        .enumerate()
        .filter(|(_, b)| b.blocked > 0)
        .map(|(i, b)| (at(i) + bucket / 2.0, b.blocked as f64))
        .collect();
    let status = match &out.failure {
        None => "ok".to_string(),
        Some(f) => format!("{:?}", f.kind).to_lowercase(),
    };
    let mut fig = Figure::new(
        format!(
            "{} seed {seed}: {status}, {} token-endpoint calls, {} caller requests",
            cfg.scenario,
            m.token_calls.len(),
            m.requests
        ),
        format!("simulated time ({unit})"),
    )
    .x_span(0.0, t(horizon_s))
    .panel(
        Panel::new(format!("token-endpoint calls per {bucket_desc}"), "calls")
            .scale(Scale::Auto)
            .series(Series::bars("token-endpoint calls", bucket, calls)),
    )
    .panel(
        Panel::new(format!("caller waits per {bucket_desc}"), "wait (ms)")
            .scale(Scale::Auto)
            .series(Series::points("longest wait", longest))
            .series(Series::crosses("mean wait (blocked)", mean)),
    )
    .panel(
        Panel::new(
            format!("caller requests that waited or failed, per {bucket_desc}"),
            "requests",
        )
        .scale(Scale::Auto)
        .series(Series::bars("failed requests", bucket, failed))
        .series(Series::points("blocked requests", blocked)),
    );
    let heal = cfg.heal_time();
    let active = cfg.faults.active();
    if !active.is_empty() {
        let mut names: Vec<&str> = active.iter().map(|k| k.name()).take(3).collect();
        if active.len() > 3 {
            names.push("…");
        }
        fig = fig.shade(
            format!("rate faults on ({})", names.join(", ")),
            0.0,
            d(heal),
        );
    }
    // Outages and suspends last their duration or until the world heals.
    let until_heal = |from: std::time::Duration, len: std::time::Duration| {
        if from < heal {
            (from + len).min(heal)
        } else {
            from
        }
    };
    for (when, action) in &cfg.schedule {
        let w = *when;
        fig = match action {
            Action::StoreOutage { duration, .. } => {
                fig.shade("store outage", d(w), d(until_heal(w, *duration)))
            }
            Action::Suspend { duration, .. } => {
                fig.shade("host suspended", d(w), d(until_heal(w, *duration)))
            }
            Action::Crash { restart_after, .. } => {
                fig.shade("process down (crash)", d(w), d(w + *restart_after))
            }
            Action::Shutdown { restart_after, .. } => {
                fig.shade("process down (shutdown)", d(w), d(w + *restart_after))
            }
            Action::CrashOnNextSave { .. } => fig.mark("crash at next save armed", d(w)),
            Action::Revoke { .. } => fig.mark("grant revoked", d(w)),
            Action::RevokeAccess { .. } => fig.mark("access tokens revoked", d(w)),
            Action::Overwrite { .. } => fig.mark("store rewritten by another writer", d(w)),
            Action::JumpWall { .. } => fig.mark("wall clock step", d(w)),
            Action::Login { .. } => fig.mark("login", d(w)),
            Action::WriteNewer { .. } => fig.mark("newer set written (armed)", d(w)),
        };
    }
    fig = fig.mark("workload end", d(cfg.duration));
    if cfg.heal_at.is_some() {
        fig = fig.mark("faults healed", d(heal));
    }
    fig = fig.mark("liveness probe", d(cfg.duration.max(heal) + cfg.settle));
    if let Some(f) = &out.failure {
        fig = fig.mark("first invariant broken", t(f.at_secs));
    }
    fig
}

/// The SVG of [`timeline`] (the chart `run --svg` writes). Never empty: a panel with nothing
/// to draw says "no data", and a figure that cannot be drawn becomes a document saying why.
///
/// ```
/// use std::sync::Arc;
/// use keepfresh_sim::{report, runner, scenario, strategy::Keepfresh};
/// let sc = scenario::by_name("outage-5xx").unwrap();
/// let cfg = runner::resolve(&sc, 3, &runner::Overrides::default()).unwrap();
/// let out = runner::run_world(&cfg, 3, Arc::new(Keepfresh), false);
/// let svg = report::svg(&cfg, 3, &out);
/// assert!(svg.contains("11 token-endpoint calls"));
/// assert_eq!(svg.matches("no data").count(), 2, "the calls panel has bars; nobody waited");
/// ```
pub fn svg(cfg: &WorldConfig, seed: u64, out: &Outcome) -> String {
    timeline(cfg, seed, out)
        .to_svg()
        .unwrap_or_else(|e| crate::plot::message_svg(&e.to_string()))
}

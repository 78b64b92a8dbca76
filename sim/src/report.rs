//! Turning a run's outcome into the figures people and CI read: a readable summary, JSON with
//! the same figures, and an SVG plot of token-endpoint calls and caller waits over time.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::world::{Outcome, WorldConfig};

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

/// An SVG with two panels: token-endpoint calls per time bucket, and the longest caller wait
/// per time bucket, over simulated time.
pub fn svg(cfg: &WorldConfig, seed: u64, out: &Outcome) -> String {
    let series = &out.metrics.series;
    let bucket_s = out.metrics.bucket_ns as f64 / 1e9;
    let (w, ph, left, top) = (900.0, 200.0, 60.0, 40.0);
    let n = series.len().max(1) as f64;
    let bw = (w - left - 20.0) / n;
    let max_calls = series.iter().map(|b| b.0).max().unwrap_or(0).max(1) as f64;
    let max_wait = series.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="12">"#,
        top * 2.0 + ph * 2.0 + 60.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20">{} seed {} — bucket {:.1} s</text>"#,
        cfg.scenario, seed, bucket_s
    );
    for (panel, (title, max, pick, color)) in [
        (
            "token-endpoint calls per bucket",
            max_calls,
            0usize,
            "#1f77b4",
        ),
        (
            "longest caller wait per bucket (ms)",
            max_wait / 1e6,
            1,
            "#d62728",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let y0 = top + panel as f64 * (ph + 50.0);
        let _ = writeln!(
            s,
            r##"<text x="{left}" y="{}">{title} (max {max:.1})</text>"##,
            y0 + 12.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#000"/>"##,
            y0 + ph,
            w - 20.0,
            y0 + ph
        );
        for (i, b) in series.iter().enumerate() {
            let v = if pick == 0 {
                b.0 as f64 / max_calls
            } else {
                b.1 as f64 / max_wait
            };
            if v <= 0.0 {
                continue;
            }
            let h = v * (ph - 20.0);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{color}"/>"#,
                left + i as f64 * bw,
                y0 + ph - h,
                bw.max(0.5),
                h
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0} s</text>"#,
            w - 20.0,
            y0 + ph + 15.0,
            n * bucket_s
        );
        let _ = writeln!(s, r#"<text x="{left}" y="{}">0 s</text>"#, y0 + ph + 15.0);
    }
    s.push_str("</svg>\n");
    s
}

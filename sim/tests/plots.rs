//! The charts draw the data.
//!
//! - The per-run timeline (`run --svg`): on several scenarios and seeds, one visible bar per
//!   time bucket with token-endpoint calls (and as many as there are such buckets), one point
//!   per bucket in which a caller waited, one bar per bucket with failed requests, a shade per
//!   scheduled outage or suspend; an empty run still gives a valid chart that says "no data".
//! - The comparison chart (`compare --svg`): a count of 1 next to one of 906 is a visible bar
//!   with its number, on a synthetic comparison and on a real one (stampede).
//!
//! The checks read the SVG itself: bars are `<rect>` elements filled in the series' colour
//! (legend swatches are polygons, so they do not count), points are `<circle>` elements.
//! Series colours run over the figure's panels in order (Okabe–Ito): calls, longest wait, mean
//! wait, failed requests, blocked requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keepfresh_sim::compare::{self, Comparison, Row};
use keepfresh_sim::runner::{self, Overrides};
use keepfresh_sim::scenario;
use keepfresh_sim::strategy::Keepfresh;
use keepfresh_sim::world::{Action, Metrics, Outcome, WorldConfig};
use keepfresh_sim::{clients, report};

/// Token-endpoint calls (the first series of the timeline).
const CALLS: &str = "#0072B2";
/// Longest caller wait per bucket (the second series).
const LONGEST_WAIT: &str = "#D55E00";
/// Failed caller requests per bucket (the fourth series).
const FAILED: &str = "#CC79A7";
/// The shade of the first kind of shaded range in a figure.
const FIRST_SHADE: &str = "#E65050";

/// The attribute `name` of every `<tag>` element filled with `color`.
fn attrs(svg: &str, tag: &str, color: &str, name: &str) -> Vec<f64> {
    svg.split(&format!("<{tag} "))
        .skip(1)
        .map(|r| &r[..r.find("/>").unwrap_or(r.len())])
        .filter(|r| r.contains(&format!("fill=\"{color}\"")))
        .map(|r| {
            let v = r
                .split(&format!(" {name}=\""))
                .nth(1)
                .unwrap_or_else(|| panic!("a {tag} without {name}: {r}"));
            v[..v.find('"').unwrap()].parse::<f64>().unwrap()
        })
        .collect()
}

/// The trimmed contents of the `<text>` elements.
fn texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim())
        })
        .collect()
}

/// Heights of the bars filled with `color`, in pixels.
fn bar_heights(svg: &str, color: &str) -> Vec<f64> {
    attrs(svg, "rect", color, "height")
}

fn run(name: &str, seed: u64) -> (WorldConfig, Outcome) {
    let sc = scenario::by_name(name).unwrap();
    let cfg = runner::resolve(&sc, seed, &Overrides::default()).unwrap();
    let out = runner::run_world(&cfg, seed, Arc::new(Keepfresh), false);
    (cfg, out)
}

/// Distinct time buckets (of the run's series width) of `times` (ns).
fn buckets(m: &Metrics, times: impl Iterator<Item = u64>) -> usize {
    let w = m.bucket_ns.max(1);
    let mut b: Vec<u64> = times.map(|t| t / w).collect();
    b.sort_unstable();
    b.dedup();
    b.len()
}

/// Checks the timeline of one run; returns the number of token-endpoint calls.
fn assert_timeline_draws(name: &str, seed: u64) -> usize {
    let (cfg, out) = run(name, seed);
    let m = &out.metrics;
    let svg = report::svg(&cfg, seed, &out);
    let what = format!("{name} seed {seed}");
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{what}"
    );

    // The metrics behind the calls panel count every call.
    let in_series: u64 = m.series.iter().map(|b| b.0).sum();
    assert_eq!(
        in_series,
        m.token_calls.len() as u64,
        "{what}: the series lost calls"
    );
    let want = buckets(m, m.token_calls.iter().copied());
    let bars = bar_heights(&svg, CALLS);
    assert_eq!(
        bars.len(),
        want,
        "{what}: {} calls in {want} buckets, but {} call bars",
        m.token_calls.len(),
        bars.len()
    );
    assert!(
        bars.iter().all(|h| *h >= 1.0),
        "{what}: a call bar is under a pixel high: {bars:?}"
    );

    let waited = m.series.iter().filter(|b| b.1 > 0).count();
    assert_eq!(
        attrs(&svg, "circle", LONGEST_WAIT, "r").len(),
        waited + 1,
        "{what}: one point per bucket in which a caller waited, and one in the legend"
    );

    let errors: u64 = m.errors.values().sum();
    let failed: u64 = m.caller_series.iter().map(|b| b.errors).sum();
    assert_eq!(failed, errors, "{what}: the series lost failed requests");
    let failed_buckets = m.caller_series.iter().filter(|b| b.errors > 0).count();
    assert_eq!(
        bar_heights(&svg, FAILED).len(),
        failed_buckets,
        "{what}: one bar per bucket with failed requests"
    );

    let first_shaded = cfg.schedule.iter().find_map(|(_, a)| match a {
        Action::StoreOutage { .. } => Some("store outage"),
        Action::Suspend { .. } => Some("host suspended"),
        _ => None,
    });
    if cfg.faults.active().is_empty() {
        if let Some(label) = first_shaded {
            let n = cfg
                .schedule
                .iter()
                .filter(|(_, a)| match a {
                    Action::StoreOutage { .. } => label == "store outage",
                    Action::Suspend { .. } => label == "host suspended",
                    _ => false,
                })
                .count();
            assert!(svg.contains(label), "{what}: no legend entry {label}");
            // Every panel shades every range once.
            assert_eq!(
                bar_heights(&svg, FIRST_SHADE).len(),
                3 * n,
                "{what}: {n} {label}s, shaded in 3 panels"
            );
        }
    } else {
        assert!(
            svg.contains("rate faults on"),
            "{what}: rate faults unmarked"
        );
    }
    assert!(svg.contains("workload end") && svg.contains("liveness probe"));
    m.token_calls.len()
}

/// The known bug: 11 token-endpoint calls, an empty chart (before the fix, `Metrics::series`
/// counted no call at all and no caller waited in this run).
#[test]
fn outage_5xx_seed_3_draws_its_calls() {
    assert_eq!(assert_timeline_draws("outage-5xx", 3), 11);
}

#[test]
fn timelines_of_several_scenarios_and_seeds_draw_their_data() {
    for name in [
        "stampede",
        "outage-5xx",
        "store-outage",
        "suspend",
        "crash-before-save",
        "invalid-grant",
        "lost-response-no-grace",
        "shutdown-mid-refresh",
        "clock-jump",
        "engine-owns-retries",
    ] {
        for seed in 1..=4 {
            assert!(assert_timeline_draws(name, seed) > 0, "{name} seed {seed}");
        }
    }
}

#[test]
fn an_empty_run_gives_a_chart_that_says_no_data() {
    let sc = scenario::by_name("stampede").unwrap();
    let cfg = runner::resolve(&sc, 1, &Overrides::default()).unwrap();
    let out = Outcome {
        failure: None,
        metrics: Metrics::default(),
        trace_hash: 0,
        tail: Vec::new(),
        outcomes: BTreeMap::new(),
        events: 0,
        sim_time: Duration::ZERO,
        wall: Duration::ZERO,
        trace_lines: 0,
    };
    let svg = report::svg(&cfg, 1, &out);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("no data").count(), 3, "one per panel");
    assert!(bar_heights(&svg, CALLS).is_empty());
}

fn row(client: &str, token_calls: u64, duplicate_refreshes: u64) -> Row {
    Row {
        client: client.into(),
        runs: 1,
        token_calls,
        duplicate_refreshes,
        ..Row::default()
    }
}

/// Colours of a comparison's clients, in row order (Okabe–Ito).
const CLIENT_COLORS: [&str; 2] = ["#0072B2", "#D55E00"];

/// The bars of the first panel (token-endpoint calls) of each of two clients: each client's
/// colour fills one bar per non-zero measure, in panel order.
fn first_bars(svg: &str) -> (f64, f64) {
    let a = bar_heights(svg, CLIENT_COLORS[0]);
    let b = bar_heights(svg, CLIENT_COLORS[1]);
    (a[0], b[0])
}

#[test]
fn a_comparison_shows_1_next_to_906() {
    let c = Comparison {
        scenario: "synthetic".into(),
        seed: 1,
        seeds: 1,
        command: String::new(),
        rows: vec![row("keepfresh", 1, 0), row("no-dedup", 906, 905)],
    };
    let svg = compare::svg(&c);
    let (one, many) = first_bars(&svg);
    assert!(one >= 5.0, "the bar of 1 is {one} px high");
    assert!(many > one, "906 ({many} px) above 1 ({one} px)");
    let t = texts(&svg);
    for label in [
        "1",
        "906",
        "905",
        "0",
        "keepfresh",
        "no-dedup",
        "calls (log scale)",
    ] {
        assert!(t.contains(&label), "{label} missing in {t:?}");
    }
    // Zeros draw no bar: the first client has one bar (its one call), the second two.
    assert_eq!(bar_heights(&svg, CLIENT_COLORS[0]).len(), 1);
    assert_eq!(bar_heights(&svg, CLIENT_COLORS[1]).len(), 2);
}

#[test]
fn a_real_comparison_shows_one_call_next_to_hundreds() {
    let sc = scenario::by_name("stampede").unwrap();
    let strategies = vec![
        clients::by_name("keepfresh").unwrap(),
        clients::by_name("no-dedup").unwrap(),
    ];
    let c = compare::compare(&sc, 1, 1, &Overrides::default(), &strategies).unwrap();
    let (k, n) = (&c.rows[0], &c.rows[1]);
    assert_eq!(k.token_calls, 1);
    assert!(n.token_calls > 100, "{n:?}");
    let svg = compare::svg(&c);
    let (one, many) = first_bars(&svg);
    assert!(one >= 5.0 && many > one, "{one} px, {many} px");
    assert!(texts(&svg).contains(&n.token_calls.to_string().as_str()));
}

#[test]
fn an_empty_comparison_is_still_a_chart() {
    let c = Comparison {
        scenario: "none".into(),
        seed: 1,
        seeds: 1,
        command: String::new(),
        rows: Vec::new(),
    };
    let svg = compare::svg(&c);
    assert!(svg.starts_with("<svg") && svg.contains("token-endpoint calls"));
}

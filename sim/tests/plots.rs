//! The charts draw the data: the per-run timeline (`run --svg`) draws one visible bar per
//! time bucket with token-endpoint calls, on several scenarios and seeds, and the comparison
//! chart (`compare --svg`) draws a visible bar for a count of 1 next to one of 906.
//!
//! The checks read the SVG itself: bars are `<rect>` elements in the series' colour whose
//! height is at least one pixel.

use std::sync::Arc;

use keepfresh_sim::report;
use keepfresh_sim::runner::{self, Overrides};
use keepfresh_sim::scenario;
use keepfresh_sim::strategy::Keepfresh;
use keepfresh_sim::world::Outcome;

/// The colour of the token-endpoint calls bars (the first series of the first panel).
const CALLS: &str = "#0072B2";

/// Heights of the `<rect>` elements filled with `color`, in pixels.
fn rect_heights(svg: &str, color: &str) -> Vec<f64> {
    svg.split("<rect")
        .skip(1)
        .map(|r| &r[..r.find("/>").unwrap_or(r.len())])
        .filter(|r| r.contains(&format!("fill=\"{color}\"")))
        .map(|r| {
            let h = r.split("height=\"").nth(1).expect("a rect has a height");
            h[..h.find('"').unwrap()].parse::<f64>().unwrap()
        })
        .collect()
}

fn run(name: &str, seed: u64) -> (keepfresh_sim::world::WorldConfig, Outcome) {
    let sc = scenario::by_name(name).unwrap();
    let cfg = runner::resolve(&sc, seed, &Overrides::default()).unwrap();
    let out = runner::run_world(&cfg, seed, Arc::new(Keepfresh), false);
    (cfg, out)
}

/// Time buckets (of the run's series width) holding at least one token-endpoint call.
fn call_buckets(out: &Outcome) -> usize {
    let w = out.metrics.bucket_ns.max(1);
    let mut b: Vec<u64> = out.metrics.token_calls.iter().map(|t| t / w).collect();
    b.sort_unstable();
    b.dedup();
    b.len()
}

fn assert_calls_drawn(name: &str, seed: u64) {
    let (cfg, out) = run(name, seed);
    let svg = report::svg(&cfg, seed, &out);
    let want = call_buckets(&out);
    assert!(want > 0, "{name} seed {seed}: the run made no token-endpoint call");
    let bars = rect_heights(&svg, CALLS)
        .into_iter()
        .filter(|h| *h >= 1.0)
        .count();
    assert!(
        bars >= want,
        "{name} seed {seed}: {} calls in {want} buckets, but {bars} visible call bars",
        out.metrics.token_calls.len()
    );
}

/// The known bug: 11 token-endpoint calls, an empty chart.
#[test]
fn outage_5xx_seed_3_draws_its_calls() {
    assert_calls_drawn("outage-5xx", 3);
}

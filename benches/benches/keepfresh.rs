//! keepfresh's benchmarks, one binary: criterion micro-benchmarks of the hot path against its
//! baselines, then one-shot scenario runs (burst, steady state, failing refresh, sizes) that
//! print a report checked against the targets and write it to
//! `<target dir>/keepfresh-bench-report.txt`.
//!
//! `cargo bench -p keepfresh-benches` runs everything; a filter argument selects benchmarks
//! and scenarios whose name contains it (`cargo bench -p keepfresh-benches -- burst`;
//! `-- hot_path_held` for the held-token benchmarks alone, `-- hot_path` for every hot-path
//! benchmark; `-- store` for store latency, `-- middleware` for the HTTP middleware's overhead,
//! `-- handoff` for the cross-process hand-off; `-- pool` for the credential pool: token()
//! pooled against single, reschedule cost, memory).
//! Without `--bench` (`cargo test --benches`, or `-- --test`) every part runs once, scaled down.

mod alloc;
mod burst;
mod contenders;
mod failing;
mod hot_path;
mod middleware;
mod pool;
mod report;
mod sizes;
mod steady;
mod stores;

use std::time::Duration;

use criterion::Criterion;

use report::Report;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Criterion's options that take a value, to tell them from the filter.
const VALUED: [&str; 16] = [
    "--baseline",
    "--baseline-lenient",
    "--color",
    "--confidence-level",
    "--format",
    "--load-baseline",
    "--measurement-time",
    "--noise-threshold",
    "--nresamples",
    "--output-format",
    "--plotting-backend",
    "--profile-time",
    "--sample-size",
    "--save-baseline",
    "--significance-level",
    "--warm-up-time",
];

struct Args {
    filter: Option<String>,
    test: bool,
    list: bool,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            filter: None,
            // Like criterion: without `--bench` (as under `cargo test --benches`) it is a test run.
            test: true,
            list: false,
        };
        let (mut bench, mut test) = (false, false);
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--test" => test = true,
                "--bench" => bench = true,
                "--list" => args.list = true,
                a if VALUED.contains(&a) => {
                    it.next();
                }
                a if a.starts_with('-') => {}
                a => args.filter = Some(a.to_owned()),
            }
        }
        args.test = test || !bench;
        args
    }

    fn selects(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
}

fn main() {
    if stores::holder_main() {
        return;
    }
    let args = Args::parse();
    let mut criterion = Criterion::default().configure_from_args();
    hot_path::bench_all(&mut criterion);
    pool::bench_all(&mut criterion);
    stores::bench_all(&mut criterion);
    middleware::bench_all(&mut criterion);
    criterion.final_summary();
    if args.list {
        return;
    }

    let mut report = Report::default();
    report.note(&format!(
        "keepfresh benchmark report, {} ({} CPUs){}",
        time::OffsetDateTime::now_utc().date(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.test {
            ", --test: scaled down"
        } else {
            ""
        }
    ));
    if !args.test {
        hot_path::report(&mut report, |group| args.selects(group));
        middleware::report(&mut report, |group| args.selects(group));
    }
    if args.selects("burst") {
        let sizes: &[usize] = if args.test {
            &[1_000]
        } else {
            &[1_000, 10_000, 100_000]
        };
        burst::run(&mut report, sizes);
    }
    if args.selects("steady") {
        let secs = if args.test { 1 } else { 5 };
        steady::run(&mut report, Duration::from_secs(secs));
    }
    if args.selects("failing") {
        failing::run(&mut report);
    }
    if args.selects("sizes") {
        sizes::run(&mut report);
    }
    if args.selects("middleware") {
        middleware::run(&mut report, args.test);
    }
    if args.selects("pool") {
        let sizes: &[usize] = if args.test {
            &[1_000]
        } else {
            &[10_000, 100_000]
        };
        pool::run(&mut report, sizes);
    }
    if args.selects("handoff") {
        stores::run(&mut report, if args.test { 20 } else { 500 });
    }
    report.finish();
}

//! `Credential::token()` on a fresh token against its baselines, on one thread and on two
//! threads at once.
//!
//! Every contender returns its token to the caller (a guard or an `Arc` clone, dropped inside
//! the timed loop) after checking it against a monotonic clock. Async contenders are polled
//! with [`poll_ready`]: once, as `now_or_never` would, when nothing contends.

use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use keepfresh::{AccessToken, Credential, RefreshPolicy, TokenResponse};

use crate::contenders::{self, AwsLazyCache, Floor, MutexCache, RwLockCache, Snap};
use crate::report::{Report, Target};

/// Criterion group names; the report reads their estimates back by these names.
pub(crate) const GROUPS: [&str; 2] = ["hot_path_1_thread", "hot_path_2_threads"];
/// Criterion function names, floor first.
pub(crate) const CONTENDERS: [&str; 6] = [
    "floor_arcswap_instant",
    "keepfresh",
    "keepfresh_try_token",
    "parking_lot_rwlock",
    "tokio_mutex_golang",
    "aws_lazy_cache",
];

/// Everything under measurement, each holding a fresh token.
pub(crate) struct Contenders {
    pub(crate) floor: Floor,
    pub(crate) keepfresh: Credential,
    pub(crate) rwlock: RwLockCache,
    pub(crate) mutex: MutexCache,
    pub(crate) aws: AwsLazyCache,
}

impl Contenders {
    /// Builds and warms every contender; call inside `rt`'s context.
    pub(crate) fn new(rt: &tokio::runtime::Runtime) -> Self {
        let keepfresh = rt.block_on(contenders::credential(
            time::Duration::hours(1),
            time::Duration::ZERO,
            RefreshPolicy::default(),
            Duration::ZERO,
            Arc::new(AtomicU32::new(0)),
            |_| Ok(TokenResponse::new(AccessToken::new("unused")).with_expires_in(3600)),
        ));
        let mutex = MutexCache::new(
            Some(Snap::new("mutex", Duration::from_secs(3600))),
            Duration::from_secs(10),
            Box::new(|| Box::pin(async { Err("never called: the token is fresh".to_owned()) })),
        );
        let aws = AwsLazyCache::new(contenders::aws_identity());
        let _guard = rt.enter();
        rt.block_on(aws.token()).expect("aws cache primed");
        Contenders {
            floor: Floor::new(),
            keepfresh,
            rwlock: RwLockCache::new(),
            mutex,
            aws,
        }
    }
}

/// Polls `fut` until it is ready, with a no-op waker. A fresh token is ready at the first poll
/// (this is then `now_or_never`); under two-thread contention a lock-based contender may be
/// pending for a moment, and is polled again in a spin loop rather than parked, so no executor
/// cost is added to any contender.
#[inline]
pub(crate) fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::hint::spin_loop();
    }
}

/// Calls `$visit($($arg,)* name, closure)` once per contender, floor first, where the
/// closure makes one call and drops its result. A macro rather than a list of `dyn Fn`, so that
/// each contender's call is monomorphized and inlined into its timed loop like user code.
macro_rules! each_contender {
    ($c:expr, $visit:ident $(, $arg:expr)*) => {{
        let c: &Contenders = $c;
        $visit($($arg,)* "floor_arcswap_instant", || {
            black_box(c.floor.get().expect("fresh"));
        });
        $visit($($arg,)* "keepfresh", || {
            black_box(poll_ready(c.keepfresh.token()).expect("fresh"));
        });
        $visit($($arg,)* "keepfresh_try_token", || {
            black_box(c.keepfresh.try_token().expect("fresh"));
        });
        $visit($($arg,)* "parking_lot_rwlock", || {
            black_box(c.rwlock.get().expect("fresh"));
        });
        $visit($($arg,)* "tokio_mutex_golang", || {
            black_box(poll_ready(c.mutex.token()).expect("fresh"));
        });
        $visit($($arg,)* "aws_lazy_cache", || {
            black_box(poll_ready(c.aws.token()).expect("fresh"));
        });
    }};
}
pub(crate) use each_contender;

/// Registers the one- and two-thread hot-path benchmarks.
pub(crate) fn bench_all(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();
    let contenders = Contenders::new(&rt);
    let handle = rt.handle().clone();

    let mut one = c.benchmark_group(GROUPS[0]);
    one.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    each_contender!(&contenders, one_thread, &mut one);
    one.finish();

    let mut two = c.benchmark_group(GROUPS[1]);
    two.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    each_contender!(&contenders, two_threads, &mut two, &handle);
    two.finish();
}

fn one_thread<F: Fn()>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, call: F) {
    g.bench_function(name, |b| b.iter(&call));
}

/// Two threads call the same contender `iters` times each, starting together; the time of the
/// slower thread is reported, so the figure is the per-call latency under two-way contention.
fn two_threads<F: Fn() + Sync>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Handle,
    name: &str,
    call: F,
) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(2);
            std::thread::scope(|s| {
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        s.spawn(|| {
                            let _guard = rt.enter();
                            start.wait();
                            let t0 = Instant::now();
                            for _ in 0..iters {
                                call();
                            }
                            t0.elapsed()
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().expect("bench thread"))
                    .max()
                    .unwrap_or_default()
            })
        })
    });
}

/// Adds the hot-path ratios to the report, from the estimates criterion just wrote
/// (`<target>/criterion/<group>/<function>/new/estimates.json`; `$CRITERION_HOME` if set).
pub(crate) fn report(report: &mut Report) {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::report::target_dir().join("criterion"));
    report.section("Hot path: token() on a fresh token (criterion, this run)");
    for group in GROUPS {
        let medians: Vec<Option<f64>> = CONTENDERS
            .iter()
            .map(|f| median_ns(&root.join(group).join(f).join("new/estimates.json")))
            .collect();
        let [Some(floor), Some(kf), Some(kf_sync), Some(rw), Some(mx), Some(aws)] = medians[..]
        else {
            report.note(&format!(
                "{group}: no estimates under {} (filtered out, or --test/--list run)",
                root.display()
            ));
            continue;
        };
        for (name, ns) in CONTENDERS.iter().zip([floor, kf, kf_sync, rw, mx, aws]) {
            report.figure(&format!("{group}: {name} median"), ns, "ns", Target::Info);
        }
        report.figure(
            &format!("{group}: keepfresh / floor"),
            kf / floor,
            "x",
            Target::AtMost(1.2),
        );
        report.figure(
            &format!("{group}: keepfresh_try_token (sync fast path) / floor"),
            kf_sync / floor,
            "x",
            Target::AtMost(1.2),
        );
        report.figure(
            &format!("{group}: aws_lazy_cache / keepfresh"),
            aws / kf,
            "x",
            Target::AtLeast(6.0),
        );
        report.figure(
            &format!("{group}: parking_lot_rwlock / keepfresh"),
            rw / kf,
            "x",
            Target::Info,
        );
        report.figure(
            &format!("{group}: tokio_mutex_golang / keepfresh"),
            mx / kf,
            "x",
            Target::Info,
        );
    }
}

fn median_ns(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

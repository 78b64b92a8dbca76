//! `Credential::token()` on a fresh token against its baselines, on one thread and on two
//! threads at once; then again with tokens held ([`HELD_GROUPS`]).
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

/// Criterion group names of the held-token benchmarks: each call is made while the calling
/// thread holds tokens from its earlier calls, as a worker thread does whose tasks keep their
/// tokens across their I/O.
pub(crate) const HELD_GROUPS: [&str; 2] = ["hot_path_held_1_thread", "hot_path_held_2_threads"];
/// How many tokens each thread holds while it makes a call: more than arc-swap's 8 debt slots
/// per thread, beyond which a load cannot take a slot and takes arc-swap's fallback instead (the
/// guard then holds a reference count on the shared `Arc`).
pub(crate) const HELD: [usize; 2] = [16, 32];
/// Criterion function names of the held-token benchmarks, floor first; each is suffixed with
/// `_held_<n>`, `n` from [`HELD`].
pub(crate) const HELD_CONTENDERS: [&str; 4] = [
    "floor_arcswap_load_instant",
    "floor_arcswap_load_full_instant",
    "keepfresh_token",
    "keepfresh_try_token",
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
    ($c:expr_2021, $visit:ident $(, $arg:expr_2021)*) => {{
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

    for (threads, group) in [1, 2].into_iter().zip(HELD_GROUPS) {
        let mut g = c.benchmark_group(group);
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        let c = &contenders;
        for held in HELD {
            let [floor, floor_full, kf, kf_sync] = HELD_CONTENDERS;
            holding(&mut g, &handle, threads, held, floor, || {
                c.floor.get().expect("fresh")
            });
            holding(&mut g, &handle, threads, held, floor_full, || {
                c.floor.get_full().expect("fresh")
            });
            holding(&mut g, &handle, threads, held, kf, || {
                poll_ready(c.keepfresh.token()).expect("fresh")
            });
            holding(&mut g, &handle, threads, held, kf_sync, || {
                c.keepfresh.try_token().expect("fresh")
            });
        }
        g.finish();
    }
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

/// `threads` threads each make `iters` calls while holding the `held` tokens of their previous
/// calls: a call's token replaces the oldest one held, which is then dropped, so every call is
/// made with `held` tokens alive on its thread (the first `held` calls, before the clock starts,
/// fill the ring). The time of the slower thread is reported, so the figure is one call plus
/// one drop of an older token.
fn holding<T, F: Fn() -> T + Sync>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Handle,
    threads: usize,
    held: usize,
    name: &str,
    call: F,
) {
    g.bench_function(format!("{name}_held_{held}"), |b| {
        b.iter_custom(|iters| {
            let start = Barrier::new(threads);
            std::thread::scope(|s| {
                let threads: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let _guard = rt.enter();
                            let mut tokens: Vec<T> = (0..held).map(|_| call()).collect();
                            start.wait();
                            let t0 = Instant::now();
                            let mut oldest = 0;
                            for _ in 0..iters {
                                let token = black_box(call());
                                drop(std::mem::replace(&mut tokens[oldest], token));
                                oldest += 1;
                                if oldest == held {
                                    oldest = 0;
                                }
                            }
                            let elapsed = t0.elapsed();
                            drop(tokens);
                            elapsed
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
/// Only the groups `selected` accepts are read, so that a filtered run does not report the
/// estimates an earlier run left behind.
pub(crate) fn report(report: &mut Report, selected: impl Fn(&str) -> bool) {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::report::target_dir().join("criterion"));
    let groups: Vec<&str> = GROUPS.into_iter().filter(|g| selected(g)).collect();
    if !groups.is_empty() {
        report.section("Hot path: token() on a fresh token (criterion, this run)");
    }
    for group in groups {
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
    report_held(report, &root, &selected);
}

/// The held-token figures: each median, and keepfresh against the floor held the same way.
fn report_held(report: &mut Report, root: &Path, selected: impl Fn(&str) -> bool) {
    let groups: Vec<&str> = HELD_GROUPS.into_iter().filter(|g| selected(g)).collect();
    if groups.is_empty() {
        return;
    }
    report.section(&format!(
        "Hot path with tokens held: each call made while its thread holds {HELD:?} earlier \
         tokens (arc-swap has 8 debt slots per thread); one call + one drop (criterion, this run)"
    ));
    for group in groups {
        for held in HELD {
            let medians: Vec<Option<f64>> = HELD_CONTENDERS
                .iter()
                .map(|f| {
                    let function = format!("{f}_held_{held}");
                    median_ns(&root.join(group).join(function).join("new/estimates.json"))
                })
                .collect();
            let [Some(floor), Some(floor_full), Some(kf), Some(kf_sync)] = medians[..] else {
                report.note(&format!(
                    "{group}, {held} held: no estimates under {} (filtered out, or --test/--list \
                     run)",
                    root.display()
                ));
                continue;
            };
            for (name, ns) in HELD_CONTENDERS.iter().zip([floor, floor_full, kf, kf_sync]) {
                let figure = format!("{group}: {name}_held_{held} median");
                report.figure(&figure, ns, "ns", Target::Info);
            }
            for (name, ns) in [("keepfresh_token", kf), ("keepfresh_try_token", kf_sync)] {
                report.figure(
                    &format!("{group}: {name}_held_{held} / floor_held_{held}"),
                    ns / floor,
                    "x",
                    Target::Info,
                );
            }
        }
    }
}

pub(crate) fn median_ns(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

//! N tasks ask for a token at once while none is valid: how many refreshes, how long each
//! caller waits. keepfresh runs next to the other caches, to the least a single-flight can
//! cost on this runtime (`OnceCell`), which separates the engine's cost from the scheduler's,
//! and to the single-flight cache one writes by hand: an `ArcSwap` or `RwLock` check of the
//! cached token, then one refresh behind a `tokio::sync::Mutex` (waiters let through one by
//! one) or a `Notify` (waiters woken all at once).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keepfresh::{AccessToken, RefreshPolicy, TokenResponse};

use crate::contenders::{
    self, ArcSwapSlot, AwsLazyCache, MutexSingleFlight, NotifySingleFlight, OnceCellIdeal,
    RefreshFn, RwLockSlot, SlowResolver, Source,
};
use crate::report::{ms, percentile, Report, Target};

/// The refresher's latency.
const REFRESH_LATENCY: Duration = Duration::from_millis(50);
const LIFETIME: Duration = Duration::from_secs(3600);
/// How long before its end the caches refresh a token (the golang and AWS default).
const MARGIN: Duration = Duration::from_secs(10);

pub(crate) fn run(report: &mut Report, sizes: &[usize]) {
    report.section(&format!(
        "Burst: N tasks parked on a start signal, then all call at once with no valid token; \
         refresher latency {} ms (multi-thread tokio, {} workers, real time). \
         wait = one call's latency",
        REFRESH_LATENCY.as_millis(),
        workers()
    ));
    for &n in sizes {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let stats = on_fresh_runtime(n, move || async move {
            contenders::credential(
                time::Duration::hours(1),
                time::Duration::hours(2),
                RefreshPolicy::default(),
                REFRESH_LATENCY,
                counter,
                |n| {
                    Ok(TokenResponse::new(AccessToken::new(format!("fresh-{n}")))
                        .with_expires_in(3600))
                },
            )
            .await
        });
        let budget = ms(REFRESH_LATENCY) + 5.0;
        let name = format!("N={n}: keepfresh");
        stats.report(report, &name, calls.load(Ordering::SeqCst), Some(budget));

        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let stats = on_fresh_runtime(n, move || async move {
            OnceCellIdeal::new(REFRESH_LATENCY, counter)
        });
        let name = format!("N={n}: once_cell_ideal");
        stats.report(report, &name, calls.load(Ordering::SeqCst), None);

        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let stats = on_fresh_runtime(n, move || async move {
            contenders::slow_mutex_cache(REFRESH_LATENCY, LIFETIME, MARGIN, counter)
        });
        let name = format!("N={n}: tokio_mutex_golang");
        stats.report(report, &name, calls.load(Ordering::SeqCst), None);

        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let stats = on_fresh_runtime(n, move || async move {
            AwsLazyCache::new(SlowResolver {
                calls: counter,
                latency: REFRESH_LATENCY,
                lifetime: LIFETIME,
            })
        });
        let name = format!("N={n}: aws_lazy_cache");
        stats.report(report, &name, calls.load(Ordering::SeqCst), None);

        // Hand-written single-flight caches: a lock-free (ArcSwap) or read-locked (RwLock)
        // check of the cached token, then one refresh that the other callers wait for.
        single_flight(report, n, "arcswap_single_flight_mutex", |refresh| {
            MutexSingleFlight::<ArcSwapSlot>::new(MARGIN, refresh)
        });
        single_flight(report, n, "rwlock_single_flight_mutex", |refresh| {
            MutexSingleFlight::<RwLockSlot>::new(MARGIN, refresh)
        });
        single_flight(report, n, "arcswap_single_flight_notify", |refresh| {
            NotifySingleFlight::<ArcSwapSlot>::new(MARGIN, refresh)
        });
        single_flight(report, n, "rwlock_single_flight_notify", |refresh| {
            NotifySingleFlight::<RwLockSlot>::new(MARGIN, refresh)
        });
    }
}

/// Runs the burst on the hand-written cache `make` builds around the slow refresher.
fn single_flight<S: Source>(
    report: &mut Report,
    n: usize,
    name: &str,
    make: impl FnOnce(RefreshFn) -> S,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let refresh = contenders::slow_refresh(REFRESH_LATENCY, LIFETIME, calls.clone());
    let stats = on_fresh_runtime(n, move || async move { make(refresh) });
    let name = format!("N={n}: {name}");
    stats.report(report, &name, calls.load(Ordering::SeqCst), None);
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

struct Stats {
    waits: Vec<Duration>,
    served: usize,
    makespan: Duration,
}

impl Stats {
    fn report(&self, report: &mut Report, name: &str, refreshes: u32, budget_ms: Option<f64>) {
        let n = self.waits.len();
        let checked = |t| {
            if budget_ms.is_some() {
                t
            } else {
                Target::Info
            }
        };
        report.figure(
            &format!("{name}: refresher calls"),
            f64::from(refreshes),
            "",
            checked(Target::Exactly(1.0)),
        );
        report.figure(
            &format!("{name}: callers served"),
            self.served as f64,
            "",
            checked(Target::Exactly(n as f64)),
        );
        let p50 = ms(percentile(&self.waits, 50.0));
        let p99 = ms(percentile(&self.waits, 99.0));
        let max = ms(self.waits.last().copied().unwrap_or_default());
        report.figure(&format!("{name}: p50 wait"), p50, "ms", Target::Info);
        let p99_target = budget_ms.map_or(Target::Info, Target::AtMost);
        report.figure(&format!("{name}: p99 wait"), p99, "ms", p99_target);
        report.figure(&format!("{name}: max wait"), max, "ms", Target::Info);
        report.figure(
            &format!("{name}: start signal to last caller served"),
            ms(self.makespan),
            "ms",
            Target::Info,
        );
    }
}

/// Builds the source with `make` on a new runtime, then runs the burst of `n` callers on it.
fn on_fresh_runtime<S, F, Fut>(n: usize, make: F) -> Stats
where
    S: Source,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let source = Arc::new(make().await);
        burst(source, n).await
    })
}

async fn burst<S: Source>(source: Arc<S>, n: usize) -> Stats {
    // Every task is spawned and parked on the start signal first, so the N calls are
    // concurrent rather than spread over the time it takes to spawn N tasks.
    let (go, start) = tokio::sync::watch::channel(false);
    let parked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let source = source.clone();
            let mut start = start.clone();
            let parked = parked.clone();
            tokio::spawn(async move {
                parked.fetch_add(1, Ordering::SeqCst);
                start.wait_for(|go| *go).await.expect("start signal");
                let t0 = Instant::now();
                let ok = source.get().await;
                (t0.elapsed(), ok)
            })
        })
        .collect();
    while parked.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t0 = Instant::now();
    go.send(true).expect("tasks listening");
    let mut waits = Vec::with_capacity(n);
    let mut served = 0usize;
    for task in tasks {
        let (waited, ok) = task.await.expect("task");
        waits.push(waited);
        served += usize::from(ok);
    }
    let makespan = t0.elapsed();
    waits.sort_unstable();
    Stats {
        waits,
        served,
        makespan,
    }
}

//! Many tasks keep asking for a short-lived token: does anyone ever wait for a refresh?

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keepfresh::{AccessToken, RefreshPolicy, TokenResponse};

use crate::contenders::{self, AwsLazyCache, MutexCache, SlowResolver, Snap, Source};
use crate::report::{ms, percentile, Report, Target};

const TASKS: usize = 100;
const LIFETIME: Duration = Duration::from_secs(1);
const REFRESH_LATENCY: Duration = Duration::from_millis(50);
/// A call slower than this counts as blocked: it waited for a refresh.
const BLOCKED: Duration = Duration::from_millis(1);
/// Each task's pause between calls, standing for the request it makes with the token.
const PACE: Duration = Duration::from_millis(1);
/// How long a token is not served before its stated expiry, for every contender.
const SKEW: Duration = Duration::from_millis(50);

/// The policy for 1 s tokens: the default skew allowance (30 s, capped at half the lifetime)
/// would leave half of each token unused, and the 60 s floor margin does not apply to such
/// short lifetimes. Refresh at 60–85 % of the lifetime, at least 200 ms before the token stops
/// being served at 950 ms: that leaves a 50 ms refresh 150 ms of slack.
pub(crate) fn policy() -> RefreshPolicy {
    RefreshPolicy::builder()
        .skew_allowance(SKEW)
        .floor_margin(Duration::from_millis(200))
        .jitter_seed(42)
        .build()
        .expect("valid policy")
}

struct Stats {
    calls: usize,
    failed: usize,
    blocked: usize,
    p99: Duration,
    max: Duration,
}

pub(crate) fn run(report: &mut Report, duration: Duration) {
    report.section(&format!(
        "Steady state: {TASKS} tasks calling for {} s, {} ms token lifetime, \
         refresher latency {} ms, a call counts as blocked above {} ms",
        duration.as_secs_f64(),
        LIFETIME.as_millis(),
        REFRESH_LATENCY.as_millis(),
        BLOCKED.as_millis()
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let calls = Arc::new(AtomicU32::new(0));
    let credential = rt.block_on(contenders::credential(
        time::Duration::try_from(LIFETIME).expect("lifetime"),
        time::Duration::ZERO,
        policy(),
        REFRESH_LATENCY,
        calls.clone(),
        |n| Ok(TokenResponse::new(AccessToken::new(format!("access-{n}"))).with_expires_in(1)),
    ));
    let stats = rt.block_on(drive(Arc::new(credential), duration));
    let refreshes = calls.load(Ordering::SeqCst);
    report.figure(
        "keepfresh: refresher calls",
        f64::from(refreshes),
        "",
        Target::Info,
    );
    report.figure("keepfresh: calls", stats.calls as f64, "", Target::Info);
    report.figure(
        "keepfresh: failed calls",
        stats.failed as f64,
        "",
        Target::Exactly(0.0),
    );
    report.figure(
        "keepfresh: blocked calls",
        stats.blocked as f64,
        "",
        Target::Exactly(0.0),
    );
    report.figure("keepfresh: p99 latency", ms(stats.p99), "ms", Target::Info);
    // "Far below the refresher's latency": a tenth of it.
    report.figure(
        "keepfresh: max latency",
        ms(stats.max),
        "ms",
        Target::AtMost(ms(REFRESH_LATENCY) / 10.0),
    );

    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let mutex = MutexCache::new(
        Some(Snap::new("mutex", LIFETIME)),
        SKEW,
        Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(REFRESH_LATENCY).await;
                Ok(Snap::new("mutex", LIFETIME))
            })
        }),
    );
    let stats = rt.block_on(drive(Arc::new(mutex), duration));
    contrast(
        report,
        "tokio_mutex_golang",
        &stats,
        calls.load(Ordering::SeqCst),
    );

    let calls = Arc::new(AtomicU32::new(0));
    let aws = {
        let _guard = rt.enter();
        AwsLazyCache::with_buffer_time(
            SlowResolver {
                calls: calls.clone(),
                latency: REFRESH_LATENCY,
                lifetime: LIFETIME,
            },
            SKEW,
        )
    };
    let stats = rt.block_on(async {
        let aws = Arc::new(aws);
        aws.get().await;
        drive(aws, duration).await
    });
    contrast(
        report,
        "aws_lazy_cache",
        &stats,
        calls.load(Ordering::SeqCst),
    );
}

fn contrast(report: &mut Report, name: &str, stats: &Stats, refreshes: u32) {
    report.figure(
        &format!("{name}: refresher calls"),
        f64::from(refreshes),
        "",
        Target::Info,
    );
    report.figure(
        &format!("{name}: calls"),
        stats.calls as f64,
        "",
        Target::Info,
    );
    report.figure(
        &format!("{name}: failed calls"),
        stats.failed as f64,
        "",
        Target::Info,
    );
    report.figure(
        &format!("{name}: blocked calls"),
        stats.blocked as f64,
        "",
        Target::Info,
    );
    report.figure(
        &format!("{name}: p99 latency"),
        ms(stats.p99),
        "ms",
        Target::Info,
    );
    report.figure(
        &format!("{name}: max latency"),
        ms(stats.max),
        "ms",
        Target::Info,
    );
}

async fn drive<S: Source>(source: Arc<S>, duration: Duration) -> Stats {
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failed = 0usize;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let ok = source.get().await;
                    latencies.push(t0.elapsed());
                    failed += usize::from(!ok);
                    tokio::time::sleep(PACE).await;
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let (latencies, f) = task.await.expect("task");
        all.extend(latencies);
        failed += f;
    }
    all.sort_unstable();
    Stats {
        calls: all.len(),
        failed,
        blocked: all.iter().filter(|d| **d > BLOCKED).count(),
        p99: percentile(&all, 99.0),
        max: all.last().copied().unwrap_or_default(),
    }
}

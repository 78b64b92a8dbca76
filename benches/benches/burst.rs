//! N tasks ask for a token at once while it is expired: how many refreshes, how long each
//! caller waits.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keepfresh::{AccessToken, RefreshPolicy, TokenResponse};

use crate::contenders;
use crate::report::{ms, percentile, Report, Target};

/// The refresher's latency.
const REFRESH_LATENCY: Duration = Duration::from_millis(50);

pub(crate) fn run(report: &mut Report, sizes: &[usize]) {
    report.section(&format!(
        "Burst: N tasks on an expired token, refresher latency {} ms \
         (multi-thread tokio, {} workers, real time)",
        REFRESH_LATENCY.as_millis(),
        workers()
    ));
    for &n in sizes {
        one(report, n);
    }
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn one(report: &mut Report, n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let calls = Arc::new(AtomicU32::new(0));
    let (waits, served, makespan) = rt.block_on(async {
        let credential =
            contenders::credential(
                time::Duration::hours(1),
                time::Duration::hours(2),
                RefreshPolicy::default(),
                REFRESH_LATENCY,
                calls.clone(),
                |n| {
                    Ok(TokenResponse::new(AccessToken::new(format!("fresh-{n}")))
                        .with_expires_in(3600))
                },
            )
            .await;
        // Every task is spawned and parked on the start signal first, so the N calls are
        // concurrent rather than spread over the time it takes to spawn N tasks.
        let (go, start) = tokio::sync::watch::channel(false);
        let parked = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let credential = credential.clone();
                let mut start = start.clone();
                let parked = parked.clone();
                tokio::spawn(async move {
                    parked.fetch_add(1, Ordering::SeqCst);
                    start.wait_for(|go| *go).await.expect("start signal");
                    let t0 = Instant::now();
                    let token = credential.token().await;
                    let waited = t0.elapsed();
                    (waited, token.is_ok_and(|t| t.secret() == "fresh-1"))
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
        (waits, served, t0.elapsed())
    });
    let mut waits = waits;
    waits.sort_unstable();
    let p99 = percentile(&waits, 99.0);
    let budget = ms(REFRESH_LATENCY) + 5.0;
    report.figure(
        &format!("N={n}: refresher calls"),
        f64::from(calls.load(Ordering::SeqCst)),
        "",
        Target::Exactly(1.0),
    );
    report.figure(
        &format!("N={n}: callers served the new token"),
        served as f64,
        "",
        Target::Exactly(n as f64),
    );
    report.figure(
        &format!("N={n}: p50 wait"),
        ms(percentile(&waits, 50.0)),
        "ms",
        Target::Info,
    );
    report.figure(
        &format!("N={n}: p99 wait"),
        ms(p99),
        "ms",
        Target::AtMost(budget),
    );
    report.figure(
        &format!("N={n}: max wait"),
        ms(waits.last().copied().unwrap_or_default()),
        "ms",
        Target::Info,
    );
    report.figure(
        &format!("N={n}: start signal to last caller served"),
        ms(makespan),
        "ms",
        Target::Info,
    );
}

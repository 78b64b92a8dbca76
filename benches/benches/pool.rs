//! The credential pool: `token()` on a pooled credential against a standalone one (and with the
//! pool lookup in front), the scheduler's reschedule cost with 100,000 entries, and heap bytes
//! per idle pooled credential.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use keepfresh::pool::{CredentialKey, CredentialPool};
use keepfresh::runtime::{ManualClock, MonoTime, Runtime};
use keepfresh::{
    refresher_fn, AccessToken, Credential, RefreshError, RefreshToken, Refresher, TokenSet,
};

use crate::alloc;
use crate::hot_path::poll_ready;
use crate::report::{Report, Target};

/// Criterion group of the `token()` comparison.
const TOKEN_GROUP: &str = "pool_token";
/// Criterion group of the reschedule cost.
const RESCHEDULE_GROUP: &str = "pool_reschedule";
/// Entries in the pool whose reschedule cost is measured.
const RESCHEDULE_ENTRIES: [usize; 2] = [1_000, 100_000];

fn key(i: usize) -> CredentialKey {
    CredentialKey::new("https://auth.example.com", "mcp-server-client")
        .resource("https://mcp.example.com/")
        .scopes(["files:read", "files:write"])
        .subject(format!("user-{i:08}"))
}

fn token_set(i: usize) -> TokenSet {
    let now = time::OffsetDateTime::now_utc();
    TokenSet::new(
        AccessToken::new(format!("access-token-{i:020}")),
        Some(RefreshToken::new(format!("refresh-token-{i:020}"))),
        now,
        now + time::Duration::hours(1),
    )
}

/// One refresher for every user, as a server shares its HTTP refresher.
fn shared_refresher() -> Arc<dyn Refresher> {
    Arc::new(refresher_fn(|_| async {
        Err(RefreshError::transient(
            "never called: the tokens are fresh",
        ))
    }))
}

/// A pool on `rt` holding `n` idle credentials (default policy: each has a keep-alive
/// deadline in the scheduler's heap).
fn filled_pool(rt: Runtime, n: usize) -> (CredentialPool, Vec<CredentialKey>) {
    let pool = CredentialPool::builder().runtime(rt).build();
    let refresher = shared_refresher();
    let keys: Vec<CredentialKey> = (0..n).map(key).collect();
    futures::executor::block_on(async {
        for (i, k) in keys.iter().enumerate() {
            let b = Credential::builder(refresher.clone()).tokens(token_set(i));
            pool.get_or_build(k, || async { Ok(b) })
                .await
                .expect("builds");
        }
    });
    (pool, keys)
}

/// A standalone credential and a pooled one (in a pool of 1,000), both fresh on the tokio
/// runtime's real clock.
struct Pair {
    single: Credential,
    pool: CredentialPool,
    key: CredentialKey,
    pooled: Credential,
}

impl Pair {
    fn new(rt: &tokio::runtime::Runtime) -> Self {
        // The same runtime for both, so that only pooling differs.
        let runtime = Runtime::tokio_with_handle(rt.handle().clone());
        let single = rt
            .block_on(
                Credential::builder(shared_refresher())
                    .runtime(runtime.clone())
                    .tokens(token_set(0))
                    .build(),
            )
            .expect("builds");
        let (pool, keys) = filled_pool(runtime, 1_000);
        let key = keys[500].clone();
        let pooled = pool.get(&key).expect("pooled");
        Pair {
            single,
            pool,
            key,
            pooled,
        }
    }
}

/// Registers the `token()` comparison and the reschedule benchmarks.
pub(crate) fn bench_all(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();
    let pair = Pair::new(&rt);
    let mut g = c.benchmark_group(TOKEN_GROUP);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("single_token", |b| {
        b.iter(|| black_box(poll_ready(pair.single.token()).expect("fresh")))
    });
    g.bench_function("pooled_token", |b| {
        b.iter(|| black_box(poll_ready(pair.pooled.token()).expect("fresh")))
    });
    g.bench_function("pool_get_then_token", |b| {
        b.iter(|| {
            let c = pair.pool.get(&pair.key).expect("pooled");
            black_box(poll_ready(c.token()).expect("fresh"))
        })
    });
    g.finish();

    let mut g = c.benchmark_group(RESCHEDULE_GROUP);
    g.warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in RESCHEDULE_ENTRIES {
        // Filled only when selected. A manual clock: the scheduler task is queued and never
        // run, so only the heap work is measured.
        let mut filled = None;
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut i = 0;
        g.bench_function(format!("reschedule_{n}_entries"), |b| {
            let (pool, credentials) = filled.get_or_insert_with(|| {
                let (pool, keys) = filled_pool(Runtime::manual(&ManualClock::new()), n);
                let credentials: Vec<Credential> =
                    keys.iter().map(|k| pool.get(k).unwrap()).collect();
                (pool, credentials)
            });
            b.iter(|| {
                i = (i + 1) % n;
                // A deadline somewhere in the next day, different each time: every call
                // pushes an entry and leaves a stale one (rebuilds included, amortized).
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = MonoTime::from_nanos(1 + rng % 86_400_000_000_000);
                pool.bench_reschedule(&credentials[i], at);
            })
        });
    }
    g.finish();
}

/// The scenario figures: heap bytes per idle pooled credential, and pooled against single
/// `token()` timed in this run.
pub(crate) fn run(report: &mut Report, sizes: &[usize]) {
    report.section("Pool");
    for &n in sizes {
        memory(report, n);
    }
    token_ratio(report);
    reschedule(report);
}

/// Live heap bytes per idle pooled credential, everything the pool keeps for it included (its
/// map entry and key, its heap entry, the credential), less its token strings, which are
/// allocated before counting starts.
fn memory(report: &mut Report, n: usize) {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let refresher = shared_refresher();
    let keys: Vec<CredentialKey> = (0..n).map(key).collect();
    let mut sets: Vec<TokenSet> = (0..n).map(token_set).collect();
    let ((), counts) = alloc::measure(|| {
        futures::executor::block_on(async {
            // `drain` keeps the Vec's buffer, allocated before counting, out of the count.
            for (k, set) in keys.iter().zip(sets.drain(..)) {
                let b = Credential::builder(refresher.clone()).tokens(set);
                pool.get_or_build(k, || async { Ok(b) })
                    .await
                    .expect("builds");
            }
        })
    });
    assert_eq!(pool.len(), n);
    let per = counts.live_bytes as f64 / n as f64;
    let token_set_alloc =
        (std::mem::size_of::<TokenSet>() + 2 * std::mem::size_of::<usize>()) as f64;
    // The target counts what keepfresh adds to the user's tokens: their strings and the
    // `Arc<TokenSet>` holding them are the tokens' own bytes.
    report.figure(
        &format!("idle pooled credential, heap bytes beyond its tokens ({n})"),
        per - token_set_alloc,
        "bytes",
        Target::AtMost(512.0),
    );
    report.figure(
        &format!("  with its Arc<TokenSet> counted too ({n})"),
        per,
        "bytes",
        Target::Info,
    );
    report.figure(
        &format!("  heap allocations per credential ({n})"),
        counts.allocations as f64 / n as f64,
        "",
        Target::Info,
    );
    report.figure(
        &format!("  scheduler heap entries ({n})"),
        pool.scheduled_entries() as f64,
        "",
        Target::Info,
    );
    report.figure(
        &format!("  1,000,000 credentials at this size ({n})"),
        per * 1e6 / (1024.0 * 1024.0),
        "MiB",
        Target::Info,
    );
    drop(pool);
}

/// `token()` on the pooled credential against the standalone one, interleaved in this run:
/// the best of five rounds each.
fn token_ratio(report: &mut Report) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();
    let pair = Pair::new(&rt);
    const CALLS: u32 = 2_000_000;
    let time = |f: &dyn Fn()| {
        let t0 = Instant::now();
        for _ in 0..CALLS {
            f();
        }
        t0.elapsed().as_nanos() as f64 / f64::from(CALLS)
    };
    let (mut single, mut pooled, mut lookup) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..5 {
        single = single.min(time(&|| {
            black_box(poll_ready(pair.single.token()).expect("fresh"));
        }));
        pooled = pooled.min(time(&|| {
            black_box(poll_ready(pair.pooled.token()).expect("fresh"));
        }));
        lookup = lookup.min(time(&|| {
            let c = pair.pool.get(&pair.key).expect("pooled");
            black_box(poll_ready(c.token()).expect("fresh"));
        }));
    }
    report.figure("token(): single credential", single, "ns", Target::Info);
    report.figure("token(): pooled credential", pooled, "ns", Target::Info);
    report.figure(
        "token(): pooled / single",
        pooled / single,
        "x",
        Target::AtMost(1.5),
    );
    report.figure(
        "pool.get(key) + token() (lookup included)",
        lookup,
        "ns",
        Target::Info,
    );
}

/// The reschedule cost, read back from criterion's estimates of this run.
fn reschedule(report: &mut Report) {
    let root = crate::report::target_dir().join("criterion");
    for n in RESCHEDULE_ENTRIES {
        let path = root
            .join(RESCHEDULE_GROUP)
            .join(format!("reschedule_{n}_entries"))
            .join("new/estimates.json");
        match crate::hot_path::median_ns(&path) {
            Some(ns) => report.figure(
                &format!("reschedule with {n} entries (criterion median, amortized)"),
                ns,
                "ns",
                Target::Info,
            ),
            None => report.note(&format!(
                "reschedule with {n} entries: no estimate (filtered out, or --test run)"
            )),
        }
    }
}

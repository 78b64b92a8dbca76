//! Token stores: load and save latency per store (criterion), and the cross-process hand-off:
//! from another process releasing the lease after its save to a waiting process serving the new
//! token, as a multiple of one store round trip measured in the same run.
//!
//! The hand-off's other process is this benchmark binary re-executed as a lease holder
//! (`KEEPFRESH_BENCH_HOLDER=<store spec>`), steered over its standard input and output.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use keepfresh::event::Event;
use keepfresh::store::spec::StoreSpec;
use keepfresh::store::{FileStore, LeaseOutcome, MemoryStore, SaveOutcome, TokenStore};
use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, RefreshToken, TokenSet};

use crate::report::{ms, percentile, Report, Target};

/// A throwaway `redis-server`, shared with keepfresh's tests.
#[path = "../../tests/common/redis.rs"]
mod redis_server;
use redis_server::RedisServer;

const HOLDER_ENV: &str = "KEEPFRESH_BENCH_HOLDER";

fn set(n: u64) -> TokenSet {
    let now = time::OffsetDateTime::now_utc();
    TokenSet::new(
        AccessToken::new(format!("at-{n}")),
        Some(RefreshToken::new(format!("rt-{n}"))),
        now,
        now + time::Duration::hours(1),
    )
}

/// A private temporary directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("keepfresh-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Nanoseconds on the system-wide monotonic clock, comparable between processes.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Criterion: load and compare-and-swap save, memory and file.
pub(crate) fn bench_all(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = Dir::new("criterion");
    let stores: Vec<(&str, Arc<dyn TokenStore>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        (
            "file",
            Arc::new(FileStore::open(dir.0.join("t.json")).expect("file store")),
        ),
    ];
    let mut group = c.benchmark_group("store");
    for (name, store) in &stores {
        let SaveOutcome::Saved(mut version) = rt.block_on(store.save(None, &set(0))).expect("save")
        else {
            panic!("empty store")
        };
        group.bench_function(format!("{name}_load"), |b| {
            b.iter(|| rt.block_on(store.load()).expect("load"))
        });
        let tokens = set(1);
        group.bench_function(format!("{name}_save"), |b| {
            b.iter(|| {
                match rt
                    .block_on(store.save(Some(version), &tokens))
                    .expect("save")
                {
                    SaveOutcome::Saved(v) => version = v,
                    SaveOutcome::Conflict(_) => panic!("conflict"),
                }
            })
        });
    }
    group.finish();
}

/// The holder process: takes the lease when told, saves the next set and releases when told,
/// and says when it released.
pub(crate) fn holder_main() -> bool {
    let Ok(spec) = std::env::var(HOLDER_ENV) else {
        return false;
    };
    let spec: StoreSpec = spec.parse().expect("holder store spec");
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut lease = None;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = spec.open().await.expect("holder store");
        for line in stdin.lock().lines() {
            match line.expect("stdin").as_str() {
                "hold" => {
                    loop {
                        if let LeaseOutcome::Acquired(l) = store
                            .try_lease(Duration::from_secs(60))
                            .await
                            .expect("lease")
                        {
                            lease = Some(l);
                            break;
                        }
                    }
                    writeln!(out, "held")
                        .and_then(|()| out.flush())
                        .expect("stdout");
                }
                "go" => {
                    let stored = store.load().await.expect("load").expect("tokens");
                    let n = stored.version.0 + 1;
                    store
                        .save(Some(stored.version), &set(n))
                        .await
                        .expect("save");
                    let t = mono_ns();
                    store
                        .release(lease.take().expect("held"))
                        .await
                        .expect("release");
                    writeln!(out, "released {t}")
                        .and_then(|()| out.flush())
                        .expect("stdout");
                }
                "ping" => {
                    let t = mono_ns();
                    writeln!(out, "pong {t}")
                        .and_then(|()| out.flush())
                        .expect("stdout");
                }
                _ => return,
            }
        }
    });
    true
}

/// The hand-off scenario, for every store this machine can run.
pub(crate) fn run(report: &mut Report, rounds: usize) {
    let dir = Dir::new("handoff");
    let file = format!("file:{}", dir.0.join("t.json").display());
    handoff_of(report, "file store", &file, rounds);
    match RedisServer::try_launch(&[], false) {
        Some(redis) => {
            let spec = format!("redis://127.0.0.1:{}/bench", redis.port);
            handoff_of(report, "Redis store", &spec, rounds);
        }
        None => report.note("(Redis hand-off not measured: no redis-server on the PATH)"),
    }
}

fn handoff_of(report: &mut Report, name: &str, spec: &str, rounds: usize) {
    report.section(&format!("Cross-process hand-off ({name})"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let spec: StoreSpec = spec.parse().expect("spec");
    let (handoffs, round_trip, wake, refreshes) = rt.block_on(handoff(&spec, rounds));
    let mut sorted = handoffs.clone();
    sorted.sort();
    let p50 = percentile(&sorted, 50.0);
    let p99 = percentile(&sorted, 99.0);
    let rt_ms = ms(round_trip);
    report.figure("store round trip (load, p50)", rt_ms, "ms", Target::Info);
    report.figure("hand-off p50", ms(p50), "ms", Target::Info);
    report.figure("hand-off p99", ms(p99), "ms", Target::Info);
    report.figure(
        "hand-off p50 in store round trips",
        ms(p50) / rt_ms,
        "trips",
        Target::Info,
    );
    report.figure(
        "hand-off p99 in store round trips",
        ms(p99) / rt_ms,
        "trips",
        Target::AtMost(3.0),
    );
    report.figure(
        "hand-off p50 in cross-process wake-ups",
        ms(p50) / ms(wake),
        "wakes",
        Target::Info,
    );
    report.figure(
        "refreshes by the waiting process (it must adopt)",
        refreshes as f64,
        "calls",
        Target::Exactly(0.0),
    );
}

async fn handoff(spec: &StoreSpec, rounds: usize) -> (Vec<Duration>, Duration, Duration, u64) {
    let store = spec.open().await.expect("store");
    store.save(None, &set(1)).await.expect("seed");
    // One store round trip: the median of plain loads.
    let mut loads = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = std::time::Instant::now();
        store.load().await.expect("load");
        loads.push(t.elapsed());
    }
    loads.sort();
    let round_trip = percentile(&loads, 50.0);

    let refreshes = Arc::new(AtomicU64::new(0));
    let counter = refreshes.clone();
    let credential = Credential::builder(refresher_fn(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        async {
            Err(RefreshError::transient(
                "the waiting process must not refresh",
            ))
        }
    }))
    .store(spec.open().await.expect("store"))
    .build()
    .await
    .expect("credential");
    let mut events = credential.subscribe();

    let mut holder = Command::new(std::env::current_exe().expect("exe"))
        .env(HOLDER_ENV, spec.expose_spec())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder process");
    let mut to_holder = holder.stdin.take().expect("stdin");
    let mut from_holder = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    let mut say = |word: &str| {
        writeln!(to_holder, "{word}")
            .and_then(|()| to_holder.flush())
            .expect("to holder");
    };

    // The floor: one message from the other process, sent and woken up for.
    let mut wakes = Vec::with_capacity(200);
    for _ in 0..200 {
        say("ping");
        let line = from_holder.next().expect("holder").expect("line");
        let now = mono_ns();
        let sent: u64 = line
            .strip_prefix("pong ")
            .and_then(|t| t.parse().ok())
            .expect("pong <ns>");
        wakes.push(Duration::from_nanos(now.saturating_sub(sent)));
    }
    wakes.sort();
    let wake = percentile(&wakes, 50.0);

    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        say("hold");
        assert_eq!(from_holder.next().expect("holder").expect("line"), "held");
        let token = credential.token().await.expect("token");
        credential.invalidate(&token);
        let waiter = credential.clone();
        let served = tokio::spawn(async move {
            let t = waiter.token().await;
            (mono_ns(), t.map(|t| t.secret().to_owned()))
        });
        // The waiting flight found the lease taken.
        loop {
            use futures::StreamExt;
            if let Some(Event::LeaseBusy { .. }) = events.next().await {
                break;
            }
        }
        say("go");
        let line = from_holder.next().expect("holder").expect("line");
        let released: u64 = line
            .strip_prefix("released ")
            .and_then(|t| t.parse().ok())
            .expect("released <ns>");
        let (at, secret) = served.await.expect("waiter");
        let secret = secret.expect("the waiter got no token");
        assert_ne!(secret, token.secret(), "the waiter served the stale token");
        samples.push(Duration::from_nanos(at.saturating_sub(released)));
    }
    drop(to_holder);
    let _ = holder.wait();
    let _ = credential.shutdown().await;
    (samples, round_trip, wake, refreshes.load(Ordering::Relaxed))
}

//! The credential pool: single-flight building, one scheduler for every pooled credential,
//! scope isolation, idle eviction. Time is a `ManualClock` and tasks run on its queue, so every
//! test is deterministic: nothing waits on real time.

mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::*;
use futures::future::{BoxFuture, FutureExt};
use keepfresh::pool::{CredentialKey, CredentialPool};
use keepfresh::runtime::{ManualClock, Runtime, Spawn};
use keepfresh::store::MemoryStore;
use keepfresh::{
    refresher_fn, AccessToken, Credential, CredentialBuilder, Error, RefreshPolicy, RefreshToken,
    TokenResponse,
};

/// Counts the tasks the engine spawns, and queues them on the manual clock.
struct CountingSpawn {
    inner: keepfresh::runtime::ManualSpawner,
    spawned: Arc<AtomicUsize>,
}

impl Spawn for CountingSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.spawned.fetch_add(1, Ordering::SeqCst);
        self.inner.spawn(task);
    }
}

/// A manual runtime whose spawns are counted.
fn counted(clock: &ManualClock) -> (Runtime, Arc<AtomicUsize>) {
    let spawned = Arc::new(AtomicUsize::new(0));
    let spawn = CountingSpawn {
        inner: clock.spawner(),
        spawned: spawned.clone(),
    };
    let rt = Runtime::new(
        Arc::new(clock.clone()),
        Arc::new(clock.clone()),
        Arc::new(spawn),
    );
    (rt, spawned)
}

/// Polls `fut` to completion, running the clock's tasks between polls (no time passes).
fn drive<F: Future>(clock: &ManualClock, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        clock.run_until_stalled();
    }
    panic!("the future made no progress");
}

fn key(subject: &str) -> CredentialKey {
    CredentialKey::new("https://auth.example", "client")
        .resource("https://mcp.example/")
        .scopes(["read"])
        .subject(subject)
}

/// A refresher that always rotates and counts its calls.
fn counting_refresher(calls: Arc<AtomicUsize>) -> impl keepfresh::Refresher {
    refresher_fn(move |_| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            Ok(TokenResponse::new(AccessToken::new(format!("access-{n}")))
                .with_refresh_token(RefreshToken::new(format!("refresh-{n}")))
                .with_expires_in(3600))
        }
    })
}

fn eager() -> RefreshPolicy {
    RefreshPolicy::builder()
        .jitter_seed(7)
        .eager(true)
        // Every credential is due at the same instant: a burst.
        .refresh_window(0.5, 0.5)
        .build()
        .unwrap()
}

/// 100 first requests for one key, all polled before the build can finish: one build, and
/// every caller gets its credential.
#[test]
fn concurrent_first_requests_build_once() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let builds = AtomicUsize::new(0);
    let (open, gate) = futures::channel::oneshot::channel::<()>();
    let gate = gate.shared();
    let k = key("alice");
    let build = || {
        let gate = gate.clone();
        let builds = &builds;
        let clock = &clock;
        async move {
            builds.fetch_add(1, Ordering::SeqCst);
            let _ = gate.await;
            Ok(Credential::builder(counting_refresher(Default::default())).tokens(fresh(clock)))
        }
    };
    let callers = futures::future::join_all((0..100).map(|_| pool.get_or_build(&k, build)));
    let release = async move {
        open.send(()).unwrap();
    };
    let (results, ()) = futures::executor::block_on(async { futures::join!(callers, release) });
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(results.len(), 100);
    let gens: Vec<u64> = results
        .into_iter()
        .map(|c| c.expect("built").status().generation)
        .collect();
    assert!(gens.iter().all(|g| *g == 1));
    assert_eq!(pool.len(), 1);
}

/// The same on a multi-threaded runtime: 100 tasks race for one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_tasks_build_once() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder().runtime(runtime(&clock)).build();
    let builds = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (pool, builds, start, clock) =
                (pool.clone(), builds.clone(), start.clone(), clock.clone());
            tokio::spawn(async move {
                start.wait().await;
                pool.get_or_build(&key("bob"), || async move {
                    builds.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Ok(Credential::builder(counting_refresher(Default::default()))
                        .tokens(fresh(&clock)))
                })
                .await
                .map(|c| c.status().access_token)
            })
        })
        .collect();
    let mut fingerprints = Vec::new();
    for t in tasks {
        fingerprints.push(t.await.unwrap().expect("built"));
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert!(fingerprints.windows(2).all(|w| w[0] == w[1]));
}

/// A failed build reaches every caller that waited for it, and is not kept: the next request
/// builds again.
#[test]
fn failed_build_is_shared_then_forgotten() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let builds = AtomicUsize::new(0);
    let (open, gate) = futures::channel::oneshot::channel::<()>();
    let gate = gate.shared();
    let k = key("carol");
    let failing = || {
        let gate = gate.clone();
        let builds = &builds;
        async move {
            builds.fetch_add(1, Ordering::SeqCst);
            let _ = gate.await;
            Err::<CredentialBuilder, _>(Error::not_authorized())
        }
    };
    let callers = futures::future::join_all((0..10).map(|_| pool.get_or_build(&k, failing)));
    let release = async move {
        open.send(()).unwrap();
    };
    let (results, ()) = futures::executor::block_on(async { futures::join!(callers, release) });
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert!(results
        .iter()
        .all(|r| r.as_ref().is_err_and(Error::is_not_authorized)));
    assert!(pool.is_empty());

    let ok = futures::executor::block_on(pool.get_or_build(&k, || async {
        builds.fetch_add(1, Ordering::SeqCst);
        Ok(Credential::builder(counting_refresher(Default::default())).tokens(fresh(&clock)))
    }));
    assert!(ok.is_ok());
    assert_eq!(
        builds.load(Ordering::SeqCst),
        2,
        "the failure was not cached"
    );
}

/// The caller that builds is cancelled: a caller that waited builds in its place.
#[test]
fn cancelled_build_hands_over_to_a_waiter() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let k = key("dave");
    let mut cx = Context::from_waker(Waker::noop());
    let mut first = Box::pin(pool.get_or_build(&k, futures::future::pending));
    assert!(first.as_mut().poll(&mut cx).is_pending());
    let built_by_second = AtomicUsize::new(0);
    let mut second = Box::pin(pool.get_or_build(&k, || async {
        built_by_second.fetch_add(1, Ordering::SeqCst);
        Ok(Credential::builder(counting_refresher(Default::default())).tokens(fresh(&clock)))
    }));
    assert!(
        second.as_mut().poll(&mut cx).is_pending(),
        "waits for the first"
    );
    assert_eq!(built_by_second.load(Ordering::SeqCst), 0);
    drop(first);
    match second.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(_)) => {}
        other => panic!("expected the second caller to build, got {other:?}"),
    }
    assert_eq!(built_by_second.load(Ordering::SeqCst), 1);
    assert_eq!(pool.len(), 1);
}

/// Two keys that differ only in scopes get two credentials: each refresh carries its own
/// scope, and refreshing one does not refresh the other.
#[test]
fn scope_sets_never_share_a_refresh() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let base = CredentialKey::new("https://auth.example", "client").subject("erin");
    let read = base.clone().scopes(["read"]);
    let write = base.clone().scopes(["read", "write"]);
    let build = |scope: &'static str| {
        let seen = seen.clone();
        let clock = clock.clone();
        move || async move {
            let refresher = refresher_fn(move |req| {
                seen.lock().unwrap().push(req.scope.clone());
                async move {
                    Ok(TokenResponse::new(AccessToken::new(format!("for {scope}")))
                        .with_scope(scope)
                        .with_expires_in(3600))
                }
            });
            Ok(Credential::builder(refresher).tokens(expired(&clock).with_scope(scope)))
        }
    };
    let r = drive(&clock, pool.get_or_build(&read, build("read")));
    let w = drive(&clock, pool.get_or_build(&write, build("read write")));
    let (r, w) = (r.unwrap(), w.unwrap());
    let (tr, tw) = drive(&clock, async { futures::join!(r.token(), w.token()) });
    assert_eq!(tr.unwrap().secret(), "for read");
    assert_eq!(tw.unwrap().secret(), "for read write");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![Some("read".to_owned()), Some("read write".to_owned())]
    );
    assert_eq!(pool.len(), 2);
}

/// Builds `n` eager credentials in `pool`, each with a fresh one-hour token.
fn fill(
    pool: &CredentialPool,
    clock: &ManualClock,
    n: usize,
    calls: &Arc<AtomicUsize>,
) -> Vec<CredentialKey> {
    (0..n)
        .map(|i| {
            let k = key(&format!("user-{i}"));
            let calls = calls.clone();
            let c = drive(
                clock,
                pool.get_or_build(&k, || async move {
                    Ok(Credential::builder(counting_refresher(calls))
                        .policy(eager())
                        .tokens(fresh(clock)))
                }),
            );
            c.expect("built");
            k
        })
        .collect()
}

/// Eager pooled credentials are refreshed at their refresh point by the pool's one scheduler:
/// no credential spawns a timer task (a standalone eager credential spawns one each).
#[test]
fn one_scheduler_refreshes_due_eager_credentials() {
    let clock = ManualClock::new();
    let (rt, spawned) = counted(&clock);
    let pool = CredentialPool::builder().runtime(rt).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = fill(&pool, &clock, 100, &calls);
    clock.run_until_stalled();
    assert_eq!(spawned.load(Ordering::SeqCst), 1, "only the scheduler task");
    assert_eq!(clock.pending_timers(), 1, "one timer for 100 credentials");
    assert_eq!(pool.scheduled_entries(), 100);

    clock.advance(Duration::from_secs(1700));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing due yet");
    clock.advance(Duration::from_secs(200));
    assert_eq!(calls.load(Ordering::SeqCst), 100);
    // The scheduler task and one refresh worker per refresh; no timer task per credential.
    assert_eq!(spawned.load(Ordering::SeqCst), 1 + 100);
    for k in &keys {
        let c = pool.get(k).unwrap();
        assert_eq!(c.status().generation, 2, "refreshed");
        assert!(c.try_token().unwrap().secret().starts_with("access-"));
    }
    // Their next refresh points are scheduled again, on the same one timer.
    assert_eq!(clock.pending_timers(), 1);
    assert_eq!(pool.scheduled_entries(), 100);
}

/// 100,000 pooled credentials (10,000 in a debug build; `.ci/test-all` runs this file in
/// release too) due at the same instant: the one scheduler refreshes them all, with one
/// worker per refresh and no timer task per credential.
#[test]
fn burst_of_expiries_is_handled_by_the_one_scheduler() {
    const N: usize = if cfg!(debug_assertions) {
        10_000
    } else {
        100_000
    };
    let clock = ManualClock::new();
    let (rt, spawned) = counted(&clock);
    let pool = CredentialPool::builder().runtime(rt).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = fill(&pool, &clock, N, &calls);
    clock.run_until_stalled();
    assert_eq!(spawned.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(1800));
    assert_eq!(calls.load(Ordering::SeqCst), N);
    assert_eq!(spawned.load(Ordering::SeqCst), 1 + N);
    assert!(keys
        .iter()
        .all(|k| pool.get(k).unwrap().status().generation == 2));
    assert_eq!(clock.pending_timers(), 1);
}

/// Idle entries go (and are shut down); entries in use, held elsewhere, or still owing a save
/// stay until that is over.
#[test]
fn idle_entries_are_evicted() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .idle_timeout(Duration::from_secs(600))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let plain = |clock: &ManualClock, calls: &Arc<AtomicUsize>| {
        Credential::builder(counting_refresher(calls.clone()))
            .policy(policy())
            .tokens(fresh(clock))
    };
    let (idle, used, held) = (key("idle"), key("used"), key("held"));
    for k in [&idle, &used, &held] {
        let b = plain(&clock, &calls);
        drive(&clock, pool.get_or_build(k, || async { Ok(b) })).unwrap();
    }
    let holding = pool.get(&held).unwrap();
    for _ in 0..9 {
        clock.advance(Duration::from_secs(100));
        assert!(pool.get(&used).is_some());
    }
    assert!(pool.get(&idle).is_none(), "idle for 900 s");
    assert!(pool.get(&used).is_some());
    assert!(pool.get(&held).is_some(), "a handle is held");
    assert_eq!(pool.len(), 2);

    // Once its handle is gone (and a lookup no longer refreshes its stamp), it goes too.
    drop(holding);
    clock.advance(Duration::from_secs(900));
    assert!(pool.is_empty());
}

/// A credential that owes a save (the store failed after a rotation) is not evicted until the
/// save lands; then it is.
#[test]
fn eviction_waits_for_an_owed_save() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .idle_timeout(Duration::from_secs(600))
        .build();
    let store = FlakyStore::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let provider = Provider::rotating("refresh-0");
    let k = key("frank");
    let c = drive(
        &clock,
        pool.get_or_build(&k, || {
            let b = Credential::builder(provider.clone())
                .policy(policy())
                .store(store.clone())
                .tokens(expired(&clock));
            async { Ok(b) }
        }),
    )
    .unwrap();
    store.set_failing(true);
    assert_eq!(drive(&clock, c.token()).unwrap().secret(), "access-1");
    assert!(c.status().persist_pending);
    drop(c);
    clock.advance(Duration::from_secs(1200));
    assert_eq!(pool.len(), 1, "the owed save keeps it");
    assert_eq!(stored_rt(&store.inner), Some("refresh-0".to_owned()));

    store.set_failing(false);
    clock.advance(Duration::from_secs(1200));
    assert_eq!(
        stored_rt(&store.inner),
        Some("refresh-1".to_owned()),
        "the save landed"
    );
    assert!(pool.is_empty(), "then it went");
}

/// Reports that only move deadlines leave stale heap entries behind; the heap is rebuilt
/// before they outnumber the live ones.
#[test]
fn stale_heap_entries_stay_bounded() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = fill(&pool, &clock, 200, &calls);
    // Each refresh moves every credential's deadline: the old entries go stale.
    for _ in 0..30 {
        for k in &keys {
            let c = pool.get(k).unwrap();
            let t = c.try_token().expect("fresh");
            c.invalidate(&t);
        }
        clock.run_until_stalled();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 200 * 30);
    let entries = pool.scheduled_entries();
    assert!(entries <= 2 * 200 + 1024, "{entries} heap entries");
}

/// Dropping the pool ends its scheduler task; credentials still held keep working on demand.
#[test]
fn dropping_the_pool_stops_the_scheduler() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = fill(&pool, &clock, 1, &calls);
    let c = pool.get(&keys[0]).unwrap();
    clock.run_until_stalled();
    assert_eq!(clock.pending_timers(), 1);
    drop(pool);
    clock.run_until_stalled();
    assert_eq!(clock.pending_timers(), 0, "the scheduler's sleep is gone");
    clock.advance(Duration::from_secs(3000));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no background refresh any more"
    );
    // A caller still gets its token, and starts the refresh that is due.
    assert_eq!(drive(&clock, c.token()).unwrap().secret(), "access-0");
    clock.run_until_stalled();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.try_token().unwrap().secret(), "access-1");
}

/// Shutting the pool down shuts every credential down and empties it.
#[test]
fn shutdown_closes_every_credential() {
    let clock = ManualClock::new();
    let pool = CredentialPool::builder()
        .runtime(Runtime::manual(&clock))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let keys = fill(&pool, &clock, 3, &calls);
    let held: Vec<Credential> = keys.iter().map(|k| pool.get(k).unwrap()).collect();
    drive(&clock, pool.shutdown()).unwrap();
    assert!(pool.is_empty());
    assert!(held.iter().all(|c| c.status().closed));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

//! Loom models of the concurrent shell: single-flight, invalidation racing a refresh, the
//! leader's future dropped mid-refresh, and persist-before-publish.
//!
//! Run with `RUSTFLAGS="--cfg keepfresh_loom" cargo test --release --test loom`.
//!
//! The credential's lock and its published snapshot are loom types under this cfg
//! (`src/sync.rs`); refreshes run on loom threads; time never advances, so every deadline in
//! the engine stays pending and only the interleavings matter.
#![cfg(keepfresh_loom)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use keepfresh::runtime::{ManualClock, Runtime, Spawn};
use keepfresh::store::{MemoryStore, SaveOutcome, StoreError, Stored, TokenStore, Version};
use keepfresh::{
    AccessToken, Credential, RefreshError, RefreshRequest, RefreshToken, Refresher, TokenResponse,
    TokenSet,
};

/// Spawns every engine task on its own loom thread and keeps the handles, so the model can
/// join them all (loom reports a deadlock if one never finishes).
#[derive(Clone, Default)]
struct LoomSpawner {
    handles: Arc<std::sync::Mutex<Vec<loom::thread::JoinHandle<()>>>>,
}

impl Spawn for LoomSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        let handle = loom::thread::spawn(move || loom::future::block_on(task));
        self.handles.lock().unwrap().push(handle);
    }
}

impl LoomSpawner {
    /// Joins every spawned task, including tasks spawned by those tasks.
    fn join_all(&self) {
        loop {
            let next = self.handles.lock().unwrap().pop();
            match next {
                Some(h) => h.join().unwrap(),
                None => return,
            }
        }
    }
}

/// A provider that rotates: call `n` answers `access-n` / `refresh-n` and records the refresh
/// token it was given.
#[derive(Clone, Default)]
struct Rotating {
    calls: Arc<AtomicUsize>,
    used: Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait]
impl Refresher for Rotating {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let rt = request
            .refresh_token
            .map(|r| r.expose_secret().to_owned())
            .unwrap_or_default();
        self.used.lock().unwrap().push(rt);
        // A scheduling point inside the refresher, so callers can interleave with it.
        loom::thread::yield_now();
        Ok(TokenResponse::new(AccessToken::new(format!("access-{n}")))
            .with_refresh_token(RefreshToken::new(format!("refresh-{n}")))
            .with_expires_in(3600))
    }
}

/// A store that records every access token it durably saved, with a scheduling point inside
/// `save` so that a publish racing the write would be observable.
#[derive(Clone)]
struct Recording {
    inner: MemoryStore,
    saved: Arc<std::sync::Mutex<Vec<String>>>,
}

#[async_trait]
impl TokenStore for Recording {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        self.inner.load().await
    }
    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        loom::thread::yield_now();
        let out = self.inner.save(expected, tokens).await?;
        if let SaveOutcome::Saved(_) = out {
            self.saved
                .lock()
                .unwrap()
                .push(tokens.access_token().expose_secret().to_owned());
        }
        Ok(out)
    }
    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        self.inner.clear(expected).await
    }
}

struct World {
    clock: ManualClock,
    spawner: LoomSpawner,
    refresher: Rotating,
    store: Recording,
    credential: Credential,
}

/// A credential holding `access-0` / `refresh-0`, issued now with a one-hour lifetime, on a
/// loom runtime with a shared recording store. With `expired`, the token is an hour older, so
/// the first caller must wait for a refresh.
fn world(expired: bool) -> World {
    let clock = ManualClock::new();
    let spawner = LoomSpawner::default();
    let rt = Runtime::new(
        Arc::new(clock.clone()),
        Arc::new(clock.clone()),
        Arc::new(spawner.clone()),
    );
    let refresher = Rotating::default();
    let store = Recording {
        inner: MemoryStore::with_clock(Arc::new(clock.clone())),
        saved: Default::default(),
    };
    let wall = clock.wall_now();
    let issued = if expired {
        wall - time::Duration::hours(2)
    } else {
        wall
    };
    let set = TokenSet::new(
        AccessToken::new("access-0"),
        Some(RefreshToken::new("refresh-0")),
        issued,
        issued + time::Duration::hours(1),
    );
    let credential = loom::future::block_on(
        Credential::builder(refresher.clone())
            .runtime(rt)
            .policy(
                keepfresh::RefreshPolicy::builder()
                    .jitter_seed(7)
                    .build()
                    .unwrap(),
            )
            .store(store.clone())
            .tokens(set)
            .build(),
    )
    .expect("build");
    store.saved.lock().unwrap().clear();
    World {
        clock,
        spawner,
        refresher,
        store,
        credential,
    }
}

/// Explores the model's interleavings (preemption bound 3) and returns how many there were.
fn model(f: impl Fn() + Sync + Send + 'static) -> usize {
    model_bounded(3, f)
}

fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) -> usize {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f()
    });
    let runs = runs.load(Ordering::Relaxed);
    eprintln!("explored {runs} interleavings");
    // A model that explores a single schedule checks nothing about concurrency.
    assert!(runs > 1, "the model found no interleavings to explore");
    runs
}

fn stored_access(store: &Recording) -> String {
    store
        .inner
        .snapshot()
        .expect("the store holds tokens")
        .tokens
        .access_token()
        .expose_secret()
        .to_owned()
}

fn stored_refresh(store: &Recording) -> String {
    store
        .inner
        .snapshot()
        .expect("the store holds tokens")
        .tokens
        .refresh_token()
        .expect("a refresh token")
        .expose_secret()
        .to_owned()
}

/// Two concurrent callers on an expired token: exactly one refresher call, both get its token.
#[test]
fn single_flight_on_expired_token() {
    model(|| single_flight(2));
}

/// Three callers, with a smaller preemption bound to keep the model small.
#[test]
fn single_flight_three_callers() {
    model_bounded(1, || single_flight(3));
}

fn single_flight(callers: usize) {
    {
        let w = world(true);
        let callers: Vec<_> = (0..callers)
            .map(|_| {
                let c = w.credential.clone();
                loom::thread::spawn(move || {
                    let t = loom::future::block_on(c.token()).expect("a token");
                    t.secret().to_owned()
                })
            })
            .collect();
        for h in callers {
            assert_eq!(h.join().unwrap(), "access-1");
        }
        w.spawner.join_all();
        assert_eq!(w.refresher.calls.load(Ordering::SeqCst), 1);
        assert_eq!(*w.refresher.used.lock().unwrap(), ["refresh-0"]);
        assert_eq!(stored_refresh(&w.store), "refresh-1");
    }
}

/// A caller inside the refresh window and an `invalidate` of the token it holds race a
/// refresh: at most one extra refresh, never one redeeming a refresh token already rotated.
#[test]
fn invalidate_racing_refresh() {
    model(|| {
        let w = world(false);
        let old = loom::future::block_on(w.credential.token()).expect("fresh token");
        assert_eq!(old.generation(), 1);
        // Into the refresh window (60-85 % of the lifetime), before expiry.
        w.clock.advance(Duration::from_secs(3200));

        let c = w.credential.clone();
        let caller = loom::thread::spawn(move || {
            let t = loom::future::block_on(c.token()).expect("a token");
            t.secret().to_owned()
        });
        let c = w.credential.clone();
        let invalidator = loom::thread::spawn(move || {
            c.invalidate(&old);
        });
        let served = caller.join().unwrap();
        invalidator.join().unwrap();
        w.spawner.join_all();

        let calls = w.refresher.calls.load(Ordering::SeqCst);
        assert!((1..=2).contains(&calls), "{calls} refreshes");
        let used = w.refresher.used.lock().unwrap().clone();
        let expected: Vec<String> = (0..calls).map(|i| format!("refresh-{i}")).collect();
        assert_eq!(used, expected, "a rotated refresh token was replayed");
        assert!(served == "access-0" || served == "access-1", "{served}");
        let after = loom::future::block_on(w.credential.token()).expect("a token");
        assert_eq!(after.secret(), format!("access-{calls}"));
        assert_eq!(stored_refresh(&w.store), format!("refresh-{calls}"));
    });
}

/// Two concurrent `invalidate`s of the same valid token: one refresh.
#[test]
fn concurrent_invalidations_one_refresh() {
    model(|| {
        let w = world(false);
        let old = Arc::new(loom::future::block_on(w.credential.token()).expect("fresh token"));
        let started: Vec<_> = (0..2)
            .map(|_| {
                let c = w.credential.clone();
                let old = old.clone();
                loom::thread::spawn(move || c.invalidate(&old))
            })
            .collect();
        let started: usize = started
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum();
        w.spawner.join_all();
        assert_eq!(started, 1);
        assert_eq!(w.refresher.calls.load(Ordering::SeqCst), 1);
        let t = loom::future::block_on(w.credential.token()).expect("a token");
        assert_eq!(t.secret(), "access-1");
    });
}

/// The caller that started the refresh drops its future right after the first poll: the
/// refresh still completes, is persisted, and the other caller gets its token.
#[test]
fn leader_dropped_mid_refresh() {
    model(|| {
        let w = world(true);
        let c = w.credential.clone();
        let leader = loom::thread::spawn(move || {
            let mut fut = Box::pin(c.token());
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(r) => {
                    // The other caller's refresh already finished.
                    assert_eq!(r.expect("a token").secret(), "access-1");
                }
                Poll::Pending => drop(fut),
            }
        });
        let c = w.credential.clone();
        let follower = loom::thread::spawn(move || {
            let t = loom::future::block_on(c.token()).expect("a token");
            t.secret().to_owned()
        });
        leader.join().unwrap();
        assert_eq!(follower.join().unwrap(), "access-1");
        w.spawner.join_all();
        assert_eq!(w.refresher.calls.load(Ordering::SeqCst), 1);
        assert_eq!(stored_access(&w.store), "access-1");
        assert_eq!(stored_refresh(&w.store), "refresh-1");
        assert_eq!(w.credential.status().generation, 2);
        assert!(!w.credential.status().persist_pending);
    });
}

/// The only caller drops its future after starting the refresh, and nobody else asks: the
/// engine finishes, persists and publishes the refresh on its own.
#[test]
fn lone_leader_dropped_refresh_completes() {
    model(|| {
        let w = world(true);
        let c = w.credential.clone();
        let leader = loom::thread::spawn(move || {
            let mut fut = Box::pin(c.token());
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        });
        leader.join().unwrap();
        w.spawner.join_all();
        assert_eq!(w.refresher.calls.load(Ordering::SeqCst), 1);
        assert_eq!(stored_refresh(&w.store), "refresh-1");
        let t = loom::future::block_on(w.credential.token()).expect("a token");
        assert_eq!(t.secret(), "access-1");
        assert_eq!(w.refresher.calls.load(Ordering::SeqCst), 1);
    });
}

/// No caller ever holds the new access token before the store does.
#[test]
fn persist_before_publish() {
    model(|| {
        let w = world(true);
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let c = w.credential.clone();
                let saved = w.store.saved.clone();
                loom::thread::spawn(move || {
                    let t = loom::future::block_on(c.token()).expect("a token");
                    let saved = saved.lock().unwrap();
                    assert!(
                        saved.iter().any(|s| s == t.secret()),
                        "{} handed out before it was saved ({saved:?})",
                        t.secret()
                    );
                })
            })
            .collect();
        for h in callers {
            h.join().unwrap();
        }
        w.spawner.join_all();
        assert_eq!(*w.store.saved.lock().unwrap(), ["access-1"]);
    });
}

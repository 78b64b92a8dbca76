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
    /// Offer the memory store's leases (off: a store without leases).
    leases: Arc<std::sync::atomic::AtomicBool>,
    /// Saves that fail before the next one succeeds.
    failing_saves: Arc<AtomicUsize>,
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
        let failing = self.failing_saves.load(Ordering::SeqCst);
        if failing > 0 {
            self.failing_saves.store(failing - 1, Ordering::SeqCst);
            return Err(StoreError::new(
                keepfresh::store::StoreErrorKind::Io,
                "disk full",
            ));
        }
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
    async fn try_lease(&self, ttl: Duration) -> Result<keepfresh::store::LeaseOutcome, StoreError> {
        if !self.leases.load(Ordering::SeqCst) {
            return Ok(keepfresh::store::LeaseOutcome::Unsupported);
        }
        self.inner.try_lease(ttl).await
    }
    async fn renew_lease(
        &self,
        lease: &keepfresh::store::Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.renew_lease(lease, ttl).await
    }
    async fn release(&self, lease: keepfresh::store::Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
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
    world_with(expired, false, 0)
}

/// Like [`world`], with the store's leases on or off and a number of saves that fail first.
fn world_with(expired: bool, leases: bool, failing_saves: usize) -> World {
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
        leases: Arc::new(std::sync::atomic::AtomicBool::new(leases)),
        failing_saves: Arc::new(AtomicUsize::new(0)),
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
                    // No timer task: time never advances in these models.
                    .keep_alive(None)
                    .build()
                    .unwrap(),
            )
            .store(store.clone())
            .tokens(set)
            .build(),
    )
    .expect("build");
    store.saved.lock().unwrap().clear();
    store.failing_saves.store(failing_saves, Ordering::SeqCst);
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

/// Two callers with a store that hands out leases: one refresher call, and the lease is free
/// again once the rotated set is durable.
#[test]
fn leasing_store_single_flight_and_release() {
    model_bounded(2, || {
        let w = world_with(true, true, 0);
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let c = w.credential.clone();
                loom::thread::spawn(move || {
                    loom::future::block_on(c.token())
                        .expect("a token")
                        .secret()
                        .to_owned()
                })
            })
            .collect();
        for h in callers {
            assert_eq!(h.join().unwrap(), "access-1");
        }
        w.spawner.join_all();
        assert_eq!(w.refresher.calls.load(Ordering::SeqCst), 1);
        assert_eq!(stored_refresh(&w.store), "refresh-1");
        let lease = loom::future::block_on(w.store.inner.try_lease(Duration::from_secs(60)));
        assert!(
            matches!(lease, Ok(keepfresh::store::LeaseOutcome::Acquired(_))),
            "the lease was not released: {lease:?}"
        );
    });
}

/// The first save fails: the caller is served from memory, the save is retried on the timer,
/// and the rotated refresh token ends up in the store; the lease is kept until then.
#[test]
fn failing_save_is_retried_until_durable() {
    model_bounded(2, || {
        let w = world_with(true, true, 1);
        let c = w.credential.clone();
        let caller = loom::thread::spawn(move || {
            loom::future::block_on(c.token())
                .expect("served from memory")
                .secret()
                .to_owned()
        });
        assert_eq!(caller.join().unwrap(), "access-1");
        // Wait for the refresh task to reach its retry timer, then let the timer fire.
        while w.clock.pending_timers() == 0 {
            loom::thread::yield_now();
        }
        let held = loom::future::block_on(w.store.inner.try_lease(Duration::from_secs(60)));
        assert_eq!(
            held,
            Ok(keepfresh::store::LeaseOutcome::Held),
            "the lease was released before the set was durable"
        );
        w.clock.advance(Duration::from_secs(30));
        w.spawner.join_all();
        assert_eq!(stored_refresh(&w.store), "refresh-1");
        assert!(!w.credential.status().persist_pending);
        assert_eq!(w.refresher.calls.load(Ordering::SeqCst), 1);
    });
}

/// A login races a refresh: whatever the interleaving, the login is what is served and stored
/// at the end; the refresh never overwrites it.
#[test]
fn set_tokens_during_a_flight() {
    model_bounded(2, || {
        let w = world(true);
        let c = w.credential.clone();
        let caller = loom::thread::spawn(move || {
            let t = loom::future::block_on(c.token()).expect("a token");
            t.secret().to_owned()
        });
        let c = w.credential.clone();
        let wall = w.clock.wall_now();
        let login = loom::thread::spawn(move || {
            let set = TokenSet::new(
                AccessToken::new("login"),
                Some(RefreshToken::new("login-refresh")),
                wall,
                wall + time::Duration::hours(1),
            );
            loom::future::block_on(c.set_tokens(set)).expect("saved");
        });
        let served = caller.join().unwrap();
        login.join().unwrap();
        w.spawner.join_all();
        assert!(served == "access-1" || served == "login", "{served}");
        let t = loom::future::block_on(w.credential.token()).expect("a token");
        assert_eq!(t.secret(), "login");
        assert_eq!(stored_access(&w.store), "login");
        assert_eq!(stored_refresh(&w.store), "login-refresh");
    });
}

/// Shutdown races a caller on an expired token: the caller gets the refreshed token or a
/// `closed` error, never hangs; a refresh that ran is durable.
#[test]
fn shutdown_racing_a_caller() {
    model_bounded(2, || {
        let w = world(true);
        let c = w.credential.clone();
        let caller = loom::thread::spawn(move || {
            loom::future::block_on(c.token()).map(|t| t.secret().to_owned())
        });
        let c = w.credential.clone();
        let closer = loom::thread::spawn(move || loom::future::block_on(c.shutdown()));
        let served = caller.join().unwrap();
        closer.join().unwrap().expect("nothing left unsaved");
        w.spawner.join_all();
        match served {
            Ok(s) => {
                assert_eq!(s, "access-1");
                assert_eq!(stored_refresh(&w.store), "refresh-1");
            }
            Err(e) => assert!(e.is_closed(), "{e}"),
        }
        assert!(w.refresher.calls.load(Ordering::SeqCst) <= 1);
        assert!(w.credential.status().closed);
    });
}

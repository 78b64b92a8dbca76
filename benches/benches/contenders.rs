//! The caches keepfresh is measured against, built the way their users build them.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use aws_smithy_async::rt::sleep::TokioSleep;
use aws_smithy_async::time::SystemTimeSource;
use aws_smithy_runtime::client::identity::IdentityCache;
use aws_smithy_runtime_api::client::identity::{
    Identity, IdentityFuture, ResolveCachedIdentity, ResolveIdentity, SharedIdentityCache,
    SharedIdentityResolver,
};
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;
use futures::future::BoxFuture;
use keepfresh::{
    refresher_fn, AccessToken, Credential, RefreshError, RefreshPolicy, RefreshToken,
    TokenResponse, TokenSet,
};

/// A cached token and the instant it stops being served.
pub(crate) struct Snap {
    pub(crate) token: Arc<str>,
    pub(crate) valid_until: Instant,
}

impl Snap {
    pub(crate) fn new(token: &str, valid_for: Duration) -> Self {
        Snap {
            token: token.into(),
            valid_until: Instant::now() + valid_for,
        }
    }
}

/// The floor: one `ArcSwap::load` and one monotonic clock read, nothing else.
pub(crate) struct Floor(ArcSwap<Snap>);

impl Floor {
    pub(crate) fn new() -> Self {
        Floor(ArcSwap::from_pointee(Snap::new(
            "floor",
            Duration::from_secs(3600),
        )))
    }

    #[inline]
    pub(crate) fn get(&self) -> Option<Guard<Arc<Snap>>> {
        let snap = self.0.load();
        (Instant::now() < snap.valid_until).then_some(snap)
    }

    /// Like [`Floor::get`], but the token comes out as an `Arc` (`ArcSwap::load_full`): a
    /// reference count instead of a debt slot, whatever else the thread holds.
    #[inline]
    pub(crate) fn get_full(&self) -> Option<Arc<Snap>> {
        let snap = self.0.load_full();
        (Instant::now() < snap.valid_until).then_some(snap)
    }
}

/// The classic read-mostly cache: `parking_lot::RwLock<Arc<_>>`, read lock + clone.
pub(crate) struct RwLockCache(parking_lot::RwLock<Arc<Snap>>);

impl RwLockCache {
    pub(crate) fn new() -> Self {
        RwLockCache(parking_lot::RwLock::new(Arc::new(Snap::new(
            "rwlock",
            Duration::from_secs(3600),
        ))))
    }

    #[inline]
    pub(crate) fn get(&self) -> Option<Arc<Snap>> {
        let snap = self.0.read();
        (Instant::now() < snap.valid_until).then(|| snap.clone())
    }
}

pub(crate) type RefreshFn = Box<dyn Fn() -> BoxFuture<'static, Result<Snap, String>> + Send + Sync>;

/// golang's `oauth2.ReuseTokenSource` in Rust: a `tokio::sync::Mutex<Option<token>>`; a caller
/// that finds the token within `margin` of its end refreshes while holding the lock, and a
/// failed refresh is returned to that caller (nothing is cached, the next caller tries again).
pub(crate) struct MutexCache {
    slot: tokio::sync::Mutex<Option<Arc<Snap>>>,
    margin: Duration,
    refresh: RefreshFn,
}

impl MutexCache {
    pub(crate) fn new(initial: Option<Snap>, margin: Duration, refresh: RefreshFn) -> Self {
        MutexCache {
            slot: tokio::sync::Mutex::new(initial.map(Arc::new)),
            margin,
            refresh,
        }
    }

    pub(crate) async fn token(&self) -> Result<Arc<Snap>, String> {
        let mut slot = self.slot.lock().await;
        if let Some(snap) = slot.as_ref() {
            if Instant::now() + self.margin < snap.valid_until {
                return Ok(snap.clone());
            }
        }
        let fresh = Arc::new((self.refresh)().await?);
        *slot = Some(fresh.clone());
        Ok(fresh)
    }
}

/// The AWS SDK's default identity cache (`IdentityCache::lazy()`), called the way the SDK's
/// orchestrator calls it for every request.
pub(crate) struct AwsLazyCache {
    cache: SharedIdentityCache,
    resolver: SharedIdentityResolver,
    components: RuntimeComponents,
    config: ConfigBag,
}

impl AwsLazyCache {
    /// A lazy cache with its defaults, over `resolver`. The lazy cache reads only the time
    /// source and the sleep impl from the runtime components; the other components are the
    /// SDK's test stubs, never called here.
    pub(crate) fn new(resolver: impl ResolveIdentity + 'static) -> Self {
        Self::with_cache(resolver, IdentityCache::lazy().build())
    }

    /// Like [`AwsLazyCache::new`], but an identity is reloaded once within `buffer_time` of its
    /// expiry (10 s by default, too long for short-lived tokens).
    pub(crate) fn with_buffer_time(
        resolver: impl ResolveIdentity + 'static,
        buffer_time: Duration,
    ) -> Self {
        Self::with_cache(
            resolver,
            IdentityCache::lazy().buffer_time(buffer_time).build(),
        )
    }

    fn with_cache(resolver: impl ResolveIdentity + 'static, cache: SharedIdentityCache) -> Self {
        let components = RuntimeComponentsBuilder::for_tests()
            .with_time_source(Some(SystemTimeSource::new()))
            .with_sleep_impl(Some(TokioSleep::new()))
            .build()
            .expect("runtime components");
        AwsLazyCache {
            cache,
            resolver: SharedIdentityResolver::new(resolver),
            components,
            config: ConfigBag::base(),
        }
    }

    /// Must run inside a tokio runtime context (the SDK's `TokioSleep` builds a tokio timer for
    /// the load timeout on every call).
    pub(crate) fn token(&self) -> IdentityFuture<'_> {
        self.cache
            .resolve_cached_identity(self.resolver.clone(), &self.components, &self.config)
    }
}

/// An identity valid for an hour, the AWS resolver of the hot-path benchmark.
pub(crate) fn aws_identity() -> Identity {
    let expires = SystemTime::now() + Duration::from_secs(3600);
    Identity::new("aws-token".to_owned(), Some(expires))
}

/// A keepfresh credential holding a token set issued now for `lifetime`, with `refresh_token`
/// and a refresher that sleeps `latency` (tokio timer) and then answers with `answer`.
pub(crate) async fn credential(
    lifetime: time::Duration,
    issued_ago: time::Duration,
    policy: RefreshPolicy,
    latency: Duration,
    calls: Arc<AtomicU32>,
    answer: fn(u32) -> Result<TokenResponse, RefreshError>,
) -> Credential {
    let refresher = refresher_fn(move |_req| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            tokio::time::sleep(latency).await;
            answer(n)
        }
    });
    let issued = time::OffsetDateTime::now_utc() - issued_ago;
    let set = TokenSet::new(
        AccessToken::new("initial-access"),
        Some(RefreshToken::new("refresh-0")),
        issued,
        issued + lifetime,
    );
    Credential::builder(refresher)
        .policy(policy)
        .tokens(set)
        .build()
        .await
        .expect("credential builds")
}

/// Something callers get a token from, for the scenario runs.
pub(crate) trait Source: Send + Sync + 'static {
    /// Whether a valid token was handed out.
    fn get(&self) -> impl Future<Output = bool> + Send;
}

impl Source for Credential {
    async fn get(&self) -> bool {
        self.token().await.is_ok()
    }
}

impl Source for MutexCache {
    async fn get(&self) -> bool {
        self.token().await.is_ok()
    }
}

impl Source for AwsLazyCache {
    async fn get(&self) -> bool {
        self.token().await.is_ok()
    }
}

/// The least a single-flight cache can do: `tokio::sync::OnceCell::get_or_init` (no expiry,
/// no timeout, no error handling). A yardstick for the burst: what remains is the runtime's
/// cost of waking N tasks.
pub(crate) struct OnceCellIdeal {
    cell: tokio::sync::OnceCell<Arc<str>>,
    calls: Arc<AtomicU32>,
    latency: Duration,
}

impl OnceCellIdeal {
    pub(crate) fn new(latency: Duration, calls: Arc<AtomicU32>) -> Self {
        OnceCellIdeal {
            cell: tokio::sync::OnceCell::new(),
            calls,
            latency,
        }
    }
}

impl Source for OnceCellIdeal {
    async fn get(&self) -> bool {
        let token = self
            .cell
            .get_or_init(|| async {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.latency).await;
                Arc::from("ideal")
            })
            .await;
        !token.is_empty()
    }
}

/// An AWS identity resolver that answers after `latency` with an identity valid for
/// `lifetime`, counting its calls.
#[derive(Debug)]
pub(crate) struct SlowResolver {
    pub(crate) calls: Arc<AtomicU32>,
    pub(crate) latency: Duration,
    pub(crate) lifetime: Duration,
}

impl ResolveIdentity for SlowResolver {
    fn resolve_identity<'a>(
        &'a self,
        _components: &'a RuntimeComponents,
        _config: &'a ConfigBag,
    ) -> IdentityFuture<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        IdentityFuture::new(async {
            tokio::time::sleep(self.latency).await;
            let expires = SystemTime::now() + self.lifetime;
            Ok(Identity::new("aws".to_owned(), Some(expires)))
        })
    }
}

/// A golang-style mutex cache whose refresh takes `latency` and yields a token valid for
/// `lifetime`, refreshed `margin` before its end; starts empty.
pub(crate) fn slow_mutex_cache(
    latency: Duration,
    lifetime: Duration,
    margin: Duration,
    calls: Arc<AtomicU32>,
) -> MutexCache {
    MutexCache::new(None, margin, slow_refresh(latency, lifetime, calls))
}

/// Where a hand-written cache keeps its token; read on every call without the refresh lock.
pub(crate) trait Slot: Send + Sync + 'static {
    fn empty() -> Self;
    /// The cached token, if it stays valid for more than `margin`.
    fn fresh(&self, margin: Duration) -> Option<Arc<Snap>>;
    fn put(&self, snap: Arc<Snap>);
}

/// `ArcSwapOption<token>`: a lock-free load, the token cloned out when it is fresh.
pub(crate) struct ArcSwapSlot(ArcSwapOption<Snap>);

impl Slot for ArcSwapSlot {
    fn empty() -> Self {
        ArcSwapSlot(ArcSwapOption::empty())
    }

    #[inline]
    fn fresh(&self, margin: Duration) -> Option<Arc<Snap>> {
        let snap = self.0.load();
        snap.as_ref()
            .filter(|s| Instant::now() + margin < s.valid_until)
            .cloned()
    }

    fn put(&self, snap: Arc<Snap>) {
        self.0.store(Some(snap));
    }
}

/// `parking_lot::RwLock<Option<token>>`: a read lock, the token cloned out when it is fresh.
pub(crate) struct RwLockSlot(parking_lot::RwLock<Option<Arc<Snap>>>);

impl Slot for RwLockSlot {
    fn empty() -> Self {
        RwLockSlot(parking_lot::RwLock::new(None))
    }

    #[inline]
    fn fresh(&self, margin: Duration) -> Option<Arc<Snap>> {
        self.0
            .read()
            .as_ref()
            .filter(|s| Instant::now() + margin < s.valid_until)
            .cloned()
    }

    fn put(&self, snap: Arc<Snap>) {
        *self.0.write() = Some(snap);
    }
}

/// The usual hand-written single-flight cache: a caller that finds no fresh token in `slot`
/// takes a `tokio::sync::Mutex`, checks again (another caller may have refreshed while it
/// waited) and refreshes if still needed. Waiters queue on the mutex and are let through one at
/// a time (tokio's mutex is FIFO), each reading the refreshed token from the slot.
pub(crate) struct MutexSingleFlight<S> {
    slot: S,
    refresh_lock: tokio::sync::Mutex<()>,
    margin: Duration,
    refresh: RefreshFn,
}

impl<S: Slot> MutexSingleFlight<S> {
    pub(crate) fn new(margin: Duration, refresh: RefreshFn) -> Self {
        MutexSingleFlight {
            slot: S::empty(),
            refresh_lock: tokio::sync::Mutex::new(()),
            margin,
            refresh,
        }
    }

    pub(crate) async fn token(&self) -> Result<Arc<Snap>, String> {
        if let Some(snap) = self.slot.fresh(self.margin) {
            return Ok(snap);
        }
        let _refreshing = self.refresh_lock.lock().await;
        if let Some(snap) = self.slot.fresh(self.margin) {
            return Ok(snap);
        }
        let snap = Arc::new((self.refresh)().await?);
        self.slot.put(snap.clone());
        Ok(snap)
    }
}

impl<S: Slot> Source for MutexSingleFlight<S> {
    async fn get(&self) -> bool {
        self.token().await.is_ok()
    }
}

/// A single-flight cache that wakes all its waiters at once, like `OnceCell` but with expiry:
/// a caller that finds no fresh token either becomes the one refreshing (an atomic flag) or
/// waits on a `tokio::sync::Notify`; the refreshing caller stores the token and calls
/// `notify_waiters`, and every waiter reads the slot again. A failed refresh is returned to
/// the caller that ran it; its waiters retry.
pub(crate) struct NotifySingleFlight<S> {
    slot: S,
    refreshing: AtomicBool,
    done: tokio::sync::Notify,
    margin: Duration,
    refresh: RefreshFn,
}

impl<S: Slot> NotifySingleFlight<S> {
    pub(crate) fn new(margin: Duration, refresh: RefreshFn) -> Self {
        NotifySingleFlight {
            slot: S::empty(),
            refreshing: AtomicBool::new(false),
            done: tokio::sync::Notify::new(),
            margin,
            refresh,
        }
    }

    pub(crate) async fn token(&self) -> Result<Arc<Snap>, String> {
        loop {
            if let Some(snap) = self.slot.fresh(self.margin) {
                return Ok(snap);
            }
            // Registered before the second look, so a refresh ending in between is not missed.
            let mut done = pin!(self.done.notified());
            done.as_mut().enable();
            if let Some(snap) = self.slot.fresh(self.margin) {
                return Ok(snap);
            }
            if !self.refreshing.swap(true, Ordering::AcqRel) {
                let _release = Release(self);
                // The previous refresh may have ended between the second look and the flag.
                if let Some(snap) = self.slot.fresh(self.margin) {
                    return Ok(snap);
                }
                let snap = Arc::new((self.refresh)().await?);
                self.slot.put(snap.clone());
                return Ok(snap);
            }
            done.await;
        }
    }
}

/// Ends a refresh of a [`NotifySingleFlight`] however it ends (answer, error, cancellation).
struct Release<'a, S>(&'a NotifySingleFlight<S>);

impl<S> Drop for Release<'_, S> {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
        self.0.done.notify_waiters();
    }
}

impl<S: Slot> Source for NotifySingleFlight<S> {
    async fn get(&self) -> bool {
        self.token().await.is_ok()
    }
}

/// A refresh that takes `latency` and yields a token valid for `lifetime`, counting its calls.
pub(crate) fn slow_refresh(
    latency: Duration,
    lifetime: Duration,
    calls: Arc<AtomicU32>,
) -> RefreshFn {
    Box::new(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(Snap::new("single-flight", lifetime))
        })
    })
}

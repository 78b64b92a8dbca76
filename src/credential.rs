//! The concurrent shell around the [`Machine`]: a lock-free hot path, single-flight refreshes
//! owned by the engine, persist-then-publish, cross-process leases and the eager timer.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::{FutureExt, StreamExt};
use time::OffsetDateTime;

use crate::error::Error;
use crate::event::{Event, Listeners};
use crate::flight::FlightCell;
use crate::machine::{Action, FlightId, Grant, Input, Machine, Phase, Refusal};
use crate::policy::{JitterRng, RefreshPolicy};
use crate::refresher::{RefreshError, RefreshRequest, Refresher};
use crate::runtime::{MonoTime, Runtime};
use crate::secret::{AccessToken, Fingerprint, RefreshToken};
use crate::store::{
    Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore, Version,
};
use crate::sync::{Loaded, Mutex, Published};
use crate::token::{TokenResponse, TokenSet};

/// How many times one caller follows a finished refresh with another before giving up.
const MAX_ROUNDS: u32 = 4;
/// Conflicting writes redone before a save counts as failed.
const MAX_CAS_RETRIES: u32 = 3;
/// First and longest pause between looks at the store while another process holds the lease.
const LEASE_POLL_FIRST: Duration = Duration::from_millis(10);
const LEASE_POLL_MAX: Duration = Duration::from_millis(250);

/// A credential: hands out valid access tokens to any number of concurrent callers and keeps
/// them fresh.
///
/// Cloning is cheap and gives another handle to the same credential. The credential's
/// background work (a refresh in flight, a save being retried) keeps running while any handle
/// or that work itself is alive.
///
/// # Examples
/// ```
/// use keepfresh::{refresher_fn, AccessToken, Credential, RefreshToken, TokenResponse};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), keepfresh::Error> {
/// let calls = Arc::new(AtomicU32::new(0));
/// let counter = calls.clone();
/// let refresher = refresher_fn(move |req| {
///     let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
///     async move {
///         assert!(req.refresh_token.is_some());
///         Ok(TokenResponse::new(AccessToken::new(format!("access-{n}")))
///             .with_refresh_token(RefreshToken::new(format!("refresh-{n}")))
///             .with_expires_in(3600))
///     }
/// });
///
/// let credential = Credential::builder(refresher)
///     .refresh_token(RefreshToken::new("refresh-0"))
///     .build()
///     .await?;
///
/// // 100 concurrent callers, one refresh.
/// let tasks: Vec<_> = (0..100)
///     .map(|_| {
///         let c = credential.clone();
///         tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
///     })
///     .collect();
/// for t in tasks {
///     assert_eq!(t.await.unwrap()?, "access-1");
/// }
/// assert_eq!(calls.load(Ordering::SeqCst), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Credential {
    inner: Arc<Inner>,
}

/// An access token handed out by [`Credential::token`].
///
/// Holding it is cheap and never blocks the credential from publishing newer tokens. Pass it
/// to [`Credential::invalidate`] when a resource server rejects it.
pub struct Token {
    snap: Loaded<Snapshot>,
}

struct Snapshot {
    set: Option<Arc<TokenSet>>,
    generation: u64,
    fast_until: MonoTime,
    /// `fast_until` on the standard library's clock, when the runtime's clock is the system
    /// clock: the hot path then compares two `Instant`s instead of converting one.
    fast_until_instant: Option<Instant>,
}

impl Token {
    fn set(&self) -> &TokenSet {
        // A Token is only built from a snapshot the machine allowed to serve, which always
        // holds a token set.
        self.snap
            .set
            .as_deref()
            .expect("a served snapshot holds a token set")
    }

    /// The access token.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, Credential, TokenSet};
    /// # let set = TokenSet::new(AccessToken::new("at"), None, time::OffsetDateTime::now_utc(), time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).tokens(set).build().await.unwrap();
    /// let token = c.token().await.unwrap();
    /// assert_eq!(token.access_token().expose_secret(), "at");
    /// # });
    /// ```
    pub fn access_token(&self) -> &AccessToken {
        self.set().access_token()
    }

    /// The access token's value, for an `Authorization: Bearer` header.
    ///
    /// See the [`Credential` example](Credential#examples).
    pub fn secret(&self) -> &str {
        self.set().access_token().expose_secret()
    }

    /// The whole token set this token belongs to.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, Credential, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// # let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1)).with_scope("read");
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).tokens(set).build().await.unwrap();
    /// let token = c.token().await.unwrap();
    /// assert_eq!(token.token_set().scope(), Some("read"));
    /// # });
    /// ```
    pub fn token_set(&self) -> &TokenSet {
        self.set()
    }

    /// The generation of the token set (1 for the first, +1 for each new one).
    ///
    /// ```
    /// # use keepfresh::{AccessToken, Credential, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// # let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1));
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).tokens(set).build().await.unwrap();
    /// assert_eq!(c.token().await.unwrap().generation(), 1);
    /// # });
    /// ```
    pub fn generation(&self) -> u64 {
        self.snap.generation
    }

    /// When the access token expires (wall clock).
    ///
    /// See [`TokenSet::expires_at`].
    pub fn expires_at(&self) -> OffsetDateTime {
        self.set().expires_at()
    }

    /// A short hash of the access token for logs.
    ///
    /// See [`AccessToken::fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        self.set().access_token().fingerprint()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.snap.generation)
            .field("access_token", self.access_token())
            .finish()
    }
}

/// A summary of a credential's state, without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The current phase (as of the last event the credential processed).
    pub phase: Phase,
    /// The current generation (0: never had a token).
    pub generation: u64,
    /// Expiry of the current access token.
    pub expires_at: Option<OffsetDateTime>,
    /// Fingerprint of the current access token.
    pub access_token: Option<Fingerprint>,
    /// Fingerprint of the current refresh token.
    pub refresh_token: Option<Fingerprint>,
    /// Whether the current token set is not yet durable in the store (a save is being retried).
    pub persist_pending: bool,
    /// The store version last read or written.
    pub store_version: Option<Version>,
}

struct Inner {
    published: Published<Snapshot>,
    core: Mutex<Core>,
    rt: Runtime,
    refresher: Arc<dyn Refresher>,
    store: Option<Arc<dyn TokenStore>>,
    policy: Arc<RefreshPolicy>,
    listeners: Listeners,
    nudge: Mutex<Option<mpsc::UnboundedSender<()>>>,
    name: Arc<str>,
}

struct Core {
    machine: Machine,
    tokens: Option<Arc<TokenSet>>,
    version: Option<Version>,
    flight: Option<(FlightId, Arc<FlightCell>)>,
    last_error: Option<RefreshError>,
    persist_pending: Option<u64>,
    persist_rng: JitterRng,
    published_key: (u64, MonoTime),
    /// The cross-process lease, kept after a refresh whose save failed: until the rotated set
    /// is durable, no other process may refresh (it would replay the old refresh token).
    held_lease: Option<Lease>,
}

/// Everything a refresh task needs, captured when the machine starts it.
struct FlightJob {
    id: FlightId,
    cell: Arc<FlightCell>,
    tokens: Option<Arc<TokenSet>>,
    version: Option<Version>,
    attempt: u32,
    /// The lease this process still holds from an earlier refresh whose save failed.
    held_lease: Option<Lease>,
}

/// The outcome of a save: the store's new version (`None` without a store) or the failure.
type Saved = Result<Option<Version>, StoreError>;

enum FlightResult {
    Refreshed {
        set: Arc<TokenSet>,
        issued: MonoTime,
        lifetime: Duration,
        saved: Saved,
        rotated: bool,
    },
    Adopted(Stored),
    Failed {
        error: RefreshError,
        kept_refresh_token: Option<(Arc<TokenSet>, Saved)>,
    },
}

enum Step {
    Serve(Loaded<Snapshot>),
    Wait(Arc<FlightCell>),
    Fail(Error),
}

/// Builder of a [`Credential`].
///
/// # Default
/// | setting | default |
/// |---|---|
/// | [`runtime`](CredentialBuilder::runtime) | [`Runtime::tokio`] with the `tokio` feature; required without it |
/// | [`policy`](CredentialBuilder::policy) | [`RefreshPolicy::default`] |
/// | [`store`](CredentialBuilder::store) | none: tokens live in memory only |
/// | [`tokens`](CredentialBuilder::tokens) / [`refresh_token`](CredentialBuilder::refresh_token) | none: the store's content, or [`Phase::Empty`] |
/// | [`name`](CredentialBuilder::name) | `"credential"` (used in tracing spans) |
pub struct CredentialBuilder {
    refresher: Arc<dyn Refresher>,
    runtime: Option<Runtime>,
    policy: RefreshPolicy,
    store: Option<Arc<dyn TokenStore>>,
    initial: Option<TokenSet>,
    name: String,
}

impl fmt::Debug for CredentialBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialBuilder")
            .field("policy", &self.policy)
            .field("has_store", &self.store.is_some())
            .field("initial", &self.initial)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CredentialBuilder {
    /// The runtime to run on (clock, timers, spawning).
    ///
    /// See [`Runtime`] for building one; the [default](CredentialBuilder#default) is tokio.
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// The refresh policy.
    ///
    /// See [`RefreshPolicy`].
    pub fn policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The store tokens are loaded from at build time and saved to after every refresh.
    ///
    /// See [`TokenStore`].
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Initial tokens (from a login). A token set already in the store wins over these, since
    /// it may hold a newer, rotated refresh token.
    ///
    /// See the [`Token::access_token`] example.
    pub fn tokens(mut self, tokens: TokenSet) -> Self {
        self.initial = Some(tokens);
        self
    }

    /// Start from a refresh token alone; the first caller triggers a refresh.
    ///
    /// See the [`Credential` example](Credential#examples).
    pub fn refresh_token(mut self, refresh_token: RefreshToken) -> Self {
        let epoch = OffsetDateTime::UNIX_EPOCH;
        self.initial = Some(TokenSet::new(
            AccessToken::new(""),
            Some(refresh_token),
            epoch,
            epoch,
        ));
        self
    }

    /// A name for tracing spans and `Debug` output.
    ///
    /// ```
    /// # let b = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) }));
    /// let b = b.name("github");
    /// assert!(format!("{b:?}").contains("github"));
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Builds the credential, loading the store first.
    ///
    /// # Errors
    /// A configuration error when no runtime is available, a store error when the store cannot
    /// be read (a corrupt store is left untouched).
    ///
    /// # Cancel safety
    /// Cancelling drops the half-built credential; at most an initial token set was written to
    /// an empty store.
    ///
    /// See the [`Credential` example](Credential#examples).
    pub async fn build(self) -> Result<Credential, Error> {
        let rt = match self.runtime {
            Some(rt) => rt,
            None => default_runtime()?,
        };
        let policy = Arc::new(self.policy);
        let core = Core {
            machine: Machine::shared(policy.clone()),
            tokens: None,
            version: None,
            flight: None,
            last_error: None,
            persist_pending: None,
            persist_rng: policy.rng(),
            published_key: (0, MonoTime::ZERO),
            held_lease: None,
        };
        let inner = Arc::new(Inner {
            published: Published::new(Snapshot {
                set: None,
                generation: 0,
                fast_until: MonoTime::ZERO,
                fast_until_instant: None,
            }),
            core: Mutex::new(core),
            rt,
            refresher: self.refresher,
            store: self.store,
            policy,
            listeners: Listeners::default(),
            nudge: Mutex::new(None),
            name: self.name.into(),
        });
        let mut initial = self.initial.map(Arc::new);
        let mut version = None;
        if let Some(store) = &inner.store {
            match inner.store_op(store.load()).await? {
                Some(stored) => {
                    version = Some(stored.version);
                    initial = Some(Arc::new(stored.tokens));
                }
                None => {
                    if let Some(set) = &initial {
                        if let SaveOutcome::Saved(v) = inner.store_op(store.save(None, set)).await?
                        {
                            version = Some(v);
                        }
                    }
                }
            }
        }
        if let Some(set) = initial {
            let mut events = Vec::new();
            {
                let mut core = inner.core.lock();
                core.version = version;
                inner.authorize_locked(&mut core, set, &mut events);
            }
            inner.listeners.emit(events);
        }
        if inner.policy.eager() {
            let (tx, rx) = mpsc::unbounded();
            *inner.nudge.lock() = Some(tx);
            let weak = Arc::downgrade(&inner);
            inner
                .rt
                .spawn(Box::pin(eager_loop(weak, inner.rt.clone(), rx)));
        }
        Ok(Credential { inner })
    }
}

#[cfg(feature = "tokio")]
fn default_runtime() -> Result<Runtime, Error> {
    Ok(Runtime::tokio())
}

#[cfg(not(feature = "tokio"))]
fn default_runtime() -> Result<Runtime, Error> {
    Err(Error::config(
        "no runtime: enable the `tokio` feature or call CredentialBuilder::runtime",
    ))
}

impl Credential {
    /// Starts building a credential that refreshes with `refresher`.
    ///
    /// See the [type-level example](Credential#examples) and the builder's
    /// [defaults](CredentialBuilder#default).
    pub fn builder(refresher: impl Refresher) -> CredentialBuilder {
        CredentialBuilder {
            refresher: Arc::new(refresher),
            runtime: None,
            policy: RefreshPolicy::default(),
            store: None,
            initial: None,
            name: "credential".into(),
        }
    }

    /// A valid access token.
    ///
    /// A fresh token is returned without locks or allocation. Inside the refresh window the
    /// current token is returned at once and one background refresh is started. When no valid
    /// token exists, the caller waits for the single refresh in flight (all concurrent callers
    /// share it and its outcome), bounded by the policy's wait timeout.
    ///
    /// # Errors
    /// - [`Error::is_not_authorized`]: never authorized;
    /// - [`Error::is_reauth_required`]: the refresh token is dead (see [`Error::reauth_reason`]);
    /// - [`Error::refresh_error`]: the last refresh failed and the engine is backing off (the
    ///   same error is returned to every caller until the backoff ends);
    /// - [`Error::is_timeout`]: the wait timeout passed first.
    ///
    /// # Cancel safety
    /// Cancel safe. The refresh belongs to the engine, not to the caller that triggered it:
    /// dropping this future never aborts or loses a refresh, whose result is published and
    /// persisted for everyone.
    ///
    /// See the [type-level example](Credential#examples).
    pub fn token(&self) -> TokenFuture<'_> {
        TokenFuture {
            credential: self,
            slow: None,
        }
    }

    /// The current token if it can be handed out right now without waiting and without the
    /// engine's attention — the lock-free fast path of [`Credential::token`], usable from
    /// synchronous code (building a request header in a sync client, say). `None` means: call
    /// [`Credential::token`], which also starts the refresh that may be due.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, Credential, TokenSet};
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let now = time::OffsetDateTime::now_utc();
    /// let fresh = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1));
    /// let c = Credential::builder(keepfresh::refresher_fn(|_| async {
    ///     Err(keepfresh::RefreshError::transient("offline"))
    /// }))
    /// .tokens(fresh)
    /// .build()
    /// .await
    /// .unwrap();
    /// assert_eq!(c.try_token().unwrap().secret(), "at");
    /// # });
    /// ```
    #[inline]
    pub fn try_token(&self) -> Option<Token> {
        let snap = self.inner.published.load();
        let fresh = match snap.fast_until_instant {
            Some(until) => Instant::now() < until,
            None => self.inner.rt.now() < snap.fast_until,
        };
        fresh.then_some(Token { snap })
    }

    /// Reports that a resource server rejected `token` (HTTP 401). If it is still the current
    /// token, it stops being served and one refresh starts; if a newer token was published in
    /// the meantime, nothing happens. Returns whether a refresh was started.
    ///
    /// Any number of concurrent calls for the same token start at most one refresh.
    ///
    /// ```
    /// # use keepfresh::{refresher_fn, AccessToken, Credential, RefreshToken, TokenResponse, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// # let set = TokenSet::new(AccessToken::new("at-1"), Some(RefreshToken::new("rt")), now, now + time::Duration::hours(1));
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let c = Credential::builder(refresher_fn(|_| async {
    ///     Ok(TokenResponse::new(AccessToken::new("at-2")).with_expires_in(3600))
    /// }))
    /// .tokens(set)
    /// .build()
    /// .await
    /// .unwrap();
    /// let rejected = c.token().await.unwrap();
    /// assert!(c.invalidate(&rejected));
    /// assert!(!c.invalidate(&rejected)); // already handled
    /// assert_eq!(c.token().await.unwrap().secret(), "at-2");
    /// # });
    /// ```
    pub fn invalidate(&self, token: &Token) -> bool {
        self.inner.invalidate(token.generation())
    }

    /// The current phase.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let c = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async {
    ///     Err(keepfresh::RefreshError::transient("unused"))
    /// })).build().await.unwrap();
    /// assert_eq!(c.phase(), keepfresh::Phase::Empty);
    /// # });
    /// ```
    pub fn phase(&self) -> Phase {
        self.inner.core.lock().machine.phase().clone()
    }

    /// A summary of the credential's state, without secrets.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).build().await.unwrap();
    /// let s = c.status();
    /// assert_eq!(s.generation, 0);
    /// assert!(!s.persist_pending);
    /// # });
    /// ```
    pub fn status(&self) -> Status {
        let core = self.inner.core.lock();
        let set = core.tokens.as_deref();
        Status {
            phase: core.machine.phase().clone(),
            generation: core.machine.generation(),
            expires_at: set.map(|s| s.expires_at()),
            access_token: set.map(|s| s.access_token().fingerprint()),
            refresh_token: set.and_then(|s| s.refresh_token()).map(|r| r.fingerprint()),
            persist_pending: core.persist_pending.is_some(),
            store_version: core.version,
        }
    }

    /// Calls `listener` for every [`Event`], in order, on the task that caused it, with no
    /// engine lock held. Keep it short; it must not block.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).build().await.unwrap();
    /// c.on_event(|e| println!("{e:?}"));
    /// # });
    /// ```
    pub fn on_event(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner.listeners.add(Arc::new(listener));
    }

    /// A stream of every [`Event`] from now on.
    ///
    /// ```
    /// # use futures::StreamExt;
    /// # use keepfresh::{AccessToken, TokenSet, Phase};
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).build().await.unwrap();
    /// let mut events = c.subscribe();
    /// let now = time::OffsetDateTime::now_utc();
    /// c.set_tokens(TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1))).await.unwrap();
    /// let first = events.next().await.unwrap();
    /// assert_eq!(first.new_phase(), Some(&Phase::Fresh));
    /// # });
    /// ```
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event> {
        self.inner.listeners.stream()
    }

    /// Installs a new token set (after a login): saved to the store first, then published.
    /// Leaves re-authorization and backoff.
    ///
    /// # Errors
    /// A store error if the set could not be saved; it is then not installed either.
    ///
    /// # Cancel safety
    /// Cancelling may leave the set saved but not yet published; it is adopted at the next
    /// refresh, which re-reads the store.
    ///
    /// See the [`subscribe`](Credential::subscribe) example.
    pub async fn set_tokens(&self, tokens: TokenSet) -> Result<(), Error> {
        let set = Arc::new(tokens);
        let expected = self.inner.core.lock().version;
        let version = match &self.inner.store {
            Some(store) => self
                .inner
                .save_cas(store.as_ref(), expected, &set)
                .await
                .map_err(Error::store)?,
            None => None,
        };
        let mut events = Vec::new();
        {
            let mut core = self.inner.core.lock();
            if version.is_some() {
                core.version = version;
            }
            self.inner.authorize_locked(&mut core, set, &mut events);
        }
        self.inner.listeners.emit(events);
        self.inner.nudge();
        Ok(())
    }

    /// Waits for the refresh in flight (if any) to finish and be persisted, then tries once
    /// more to save a token set whose save is still pending. Call before exiting so that no
    /// rotated refresh token is lost.
    ///
    /// # Errors
    /// A store error if the current token set could still not be saved.
    ///
    /// # Cancel safety
    /// Cancel safe: the refresh and the pending save go on in the background.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).build().await.unwrap();
    /// c.shutdown().await.unwrap();
    /// # });
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        let cell = self
            .inner
            .core
            .lock()
            .flight
            .as_ref()
            .map(|(_, c)| c.clone());
        if let Some(cell) = cell {
            cell.wait().await;
        }
        let pending = {
            let core = self.inner.core.lock();
            core.persist_pending
                .and_then(|g| core.tokens.clone().map(|t| (g, t, core.version)))
        };
        if let (Some(store), Some((generation, set, expected))) = (&self.inner.store, pending) {
            let v = self
                .inner
                .save_cas(store.as_ref(), expected, &set)
                .await
                .map_err(Error::store)?;
            let lease = {
                let mut core = self.inner.core.lock();
                if core.machine.generation() == generation {
                    core.persist_pending = None;
                    if v.is_some() {
                        core.version = v;
                    }
                }
                core.held_lease.take()
            };
            self.inner.release(store.as_ref(), lease).await;
        }
        Ok(())
    }
}

/// The future returned by [`Credential::token`].
///
/// Its first poll serves a fresh token without locks or allocation; only when that is not
/// possible does it box the engine's slow path (joining or starting a refresh), so the future
/// itself stays two words and is cheap to create, move and drop.
#[must_use = "futures do nothing unless polled"]
pub struct TokenFuture<'a> {
    credential: &'a Credential,
    slow: Option<SlowPath<'a>>,
}

type SlowPath<'a> = Pin<Box<dyn Future<Output = Result<Token, Error>> + Send + 'a>>;

impl Future for TokenFuture<'_> {
    type Output = Result<Token, Error>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(slow) = self.slow.as_mut() {
            return slow.as_mut().poll(cx);
        }
        if let Some(token) = self.credential.try_token() {
            return Poll::Ready(Ok(token));
        }
        let mut slow: SlowPath<'_> = Box::pin(self.credential.inner.token_slow());
        let poll = slow.as_mut().poll(cx);
        if poll.is_pending() {
            self.slow = Some(slow);
        }
        poll
    }
}

impl fmt::Debug for TokenFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFuture")
            .field("waiting", &self.slow.is_some())
            .finish()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.inner.name)
            .field("status", &self.status())
            .finish()
    }
}

impl Inner {
    async fn token_slow(self: &Arc<Self>) -> Result<Token, Error> {
        let deadline = self.rt.now().saturating_add(self.policy.wait_timeout());
        for _ in 0..MAX_ROUNDS {
            match self.demand() {
                Step::Serve(snap) => return Ok(Token { snap }),
                Step::Fail(e) => return Err(e),
                Step::Wait(cell) => {
                    let timer = self.rt.sleep_until(deadline);
                    if let Either::Right(_) = select(cell.wait(), timer).await {
                        self.listeners
                            .emit(vec![Event::WaitTimedOut { at: self.rt.now() }]);
                        return Err(Error::timeout());
                    }
                }
            }
        }
        Err(Error::refresh(
            RefreshError::transient(
                "refreshed tokens were unusable on arrival (lifetime shorter than the refresh latency)",
            ),
            None,
        ))
    }

    fn demand(self: &Arc<Self>) -> Step {
        let mut events = Vec::new();
        let (step, job) = {
            let mut core = self.core.lock();
            let now = self.rt.now();
            let d = core.machine.handle(Input::Demand { now });
            let job = d
                .start_refresh
                .map(|id| self.begin_flight(&mut core, id, now, &mut events));
            self.publish_locked(&mut core, &mut events);
            let step = match d.action {
                Action::Serve => Step::Serve(self.published.load()),
                Action::Wait => match &core.flight {
                    Some((_, cell)) => Step::Wait(cell.clone()),
                    None => Step::Fail(Error::timeout()),
                },
                Action::Fail(refusal) => Step::Fail(self.refusal_error(&core, refusal)),
                _ => Step::Fail(Error::not_authorized()),
            };
            (step, job)
        };
        self.listeners.emit(events);
        if let Some(job) = job {
            self.spawn_flight(job);
        }
        step
    }

    fn refusal_error(&self, core: &Core, refusal: Refusal) -> Error {
        match refusal {
            Refusal::NotAuthorized => Error::not_authorized(),
            Refusal::Reauth(reason) => Error::reauth(reason),
            Refusal::BackingOff { until, last_error } => {
                let error = core
                    .last_error
                    .clone()
                    .unwrap_or_else(|| RefreshError::new(last_error, "refresh failed"));
                Error::refresh(error, Some(until))
            }
        }
    }

    fn invalidate(self: &Arc<Self>, generation: u64) -> bool {
        let mut events = Vec::new();
        let job = {
            let mut core = self.core.lock();
            let now = self.rt.now();
            let d = core.machine.handle(Input::Invalidate { now, generation });
            let job = d
                .start_refresh
                .map(|id| self.begin_flight(&mut core, id, now, &mut events));
            events.push(Event::Invalidated {
                at: now,
                generation,
                refresh_started: job.is_some(),
            });
            self.publish_locked(&mut core, &mut events);
            job
        };
        self.listeners.emit(events);
        let started = job.is_some();
        if let Some(job) = job {
            self.spawn_flight(job);
        }
        started
    }

    fn tick(self: &Arc<Self>) {
        let mut events = Vec::new();
        let job = {
            let mut core = self.core.lock();
            let now = self.rt.now();
            let d = core.machine.handle(Input::Tick { now });
            let job = d
                .start_refresh
                .map(|id| self.begin_flight(&mut core, id, now, &mut events));
            self.publish_locked(&mut core, &mut events);
            job
        };
        self.listeners.emit(events);
        if let Some(job) = job {
            self.spawn_flight(job);
        }
    }

    fn nudge(&self) {
        if let Some(tx) = self.nudge.lock().as_ref() {
            let _ = tx.unbounded_send(());
        }
    }

    fn begin_flight(
        &self,
        core: &mut Core,
        id: FlightId,
        now: MonoTime,
        events: &mut Vec<Event>,
    ) -> FlightJob {
        let cell = FlightCell::new();
        core.flight = Some((id, cell.clone()));
        let attempt = core.machine.failed_attempts() + 1;
        events.push(Event::RefreshStarted {
            at: now,
            flight: id,
            refresh_token: core
                .tokens
                .as_deref()
                .and_then(|t| t.refresh_token())
                .map(|r| r.fingerprint()),
        });
        FlightJob {
            id,
            cell,
            tokens: core.tokens.clone(),
            version: core.version,
            attempt,
            held_lease: core.held_lease.take(),
        }
    }

    /// Publishes the current token and fast-path deadline for lock-free readers, and turns the
    /// machine's transitions into events. Called after every input, with the core locked.
    fn publish_locked(&self, core: &mut Core, events: &mut Vec<Event>) {
        let key = (core.machine.generation(), core.machine.fast_path_until());
        if key != core.published_key {
            core.published_key = key;
            self.published.store(Snapshot {
                set: core.tokens.clone(),
                generation: key.0,
                fast_until: key.1,
                fast_until_instant: self.rt.instant_of(key.1),
            });
        }
        for t in core.machine.take_transitions() {
            if let Phase::ReauthRequired { reason } = t.to {
                events.push(Event::Transition(t.clone()));
                events.push(Event::ReauthRequired { at: t.at, reason });
            } else {
                events.push(Event::Transition(t));
            }
        }
    }

    fn authorize_locked(&self, core: &mut Core, set: Arc<TokenSet>, events: &mut Vec<Event>) {
        let now = self.rt.now();
        let grant = grant_for(&set, now, self.rt.wall());
        core.tokens = Some(set);
        core.persist_pending = None;
        core.last_error = None;
        core.machine.handle(Input::Authorize { now, grant });
        self.publish_locked(core, events);
    }

    fn spawn_flight(self: &Arc<Self>, job: FlightJob) {
        let inner = self.clone();
        let mut job = job;
        let task = async move {
            let id = job.id;
            let cell = job.cell.clone();
            let (result, kept_lease) = inner.perform(&mut job).await;
            inner.finish_flight(id, result, kept_lease);
            cell.complete();
        };
        #[cfg(feature = "tracing")]
        let task = {
            use tracing::Instrument;
            let span = tracing::info_span!("keepfresh.refresh", credential = %self.name);
            task.instrument(span)
        };
        self.rt.spawn(Box::pin(task));
    }

    async fn store_op<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.timeout(self.policy.store_timeout(), op).await {
            Some(r) => r,
            None => Err(StoreError::new(
                StoreErrorKind::Timeout,
                format!("no answer within {:?}", self.policy.store_timeout()),
            )),
        }
    }

    async fn timeout<F: Future>(&self, limit: Duration, fut: F) -> Option<F::Output> {
        let deadline = self.rt.now().saturating_add(limit);
        let fut = std::pin::pin!(fut);
        match select(fut, self.rt.sleep_until(deadline)).await {
            Either::Left((out, _)) => Some(out),
            Either::Right(_) => None,
        }
    }

    /// Runs one refresh: lease, re-read, call the refresher, validate, persist. No engine lock is
    /// held across any of it.
    ///
    /// Returns the lease when the new set could not be saved: it is kept until a save retry
    /// lands, so that no other process refreshes with the refresh token this one just spent.
    async fn perform(&self, job: &mut FlightJob) -> (FlightResult, Option<Lease>) {
        let mut lease = job.held_lease.take();
        if let Some(store) = &self.store {
            if lease.is_none() {
                match self.acquire_lease(store.as_ref(), job).await {
                    LeaseStep::Proceed(l) => lease = l,
                    LeaseStep::Adopt(stored) => return (FlightResult::Adopted(stored), None),
                    LeaseStep::GaveUp => {
                        let error = RefreshError::transient(
                            "another process holds the refresh lease and produced no tokens in time",
                        );
                        let result = FlightResult::Failed {
                            error,
                            kept_refresh_token: None,
                        };
                        return (result, None);
                    }
                }
            }
            if let Ok(Some(stored)) = self.store_op(store.load()).await {
                if is_newer(job, &stored) {
                    self.release(store.as_ref(), lease).await;
                    return (FlightResult::Adopted(stored), None);
                }
            }
        }
        let result = self.call_refresher(job).await;
        let out = match result {
            (Ok(response), issued_mono, issued_wall) => {
                self.accept(job, response, issued_mono, issued_wall).await
            }
            (Err(error), _, _) if error.class() == crate::ErrorClass::InvalidGrant => {
                self.on_invalid_grant(job, error).await
            }
            (Err(error), _, _) => FlightResult::Failed {
                error,
                kept_refresh_token: None,
            },
        };
        let save_failed = matches!(
            &out,
            FlightResult::Refreshed { saved: Err(_), .. }
                | FlightResult::Failed {
                    kept_refresh_token: Some((_, Err(_))),
                    ..
                }
        );
        if save_failed {
            return (out, lease);
        }
        if let Some(store) = &self.store {
            self.release(store.as_ref(), lease).await;
        }
        (out, None)
    }

    async fn release(&self, store: &dyn TokenStore, lease: Option<Lease>) {
        if let Some(lease) = lease {
            let _ = self.store_op(store.release(lease)).await;
        }
    }

    async fn acquire_lease(&self, store: &dyn TokenStore, job: &FlightJob) -> LeaseStep {
        let give_up = self.rt.now().saturating_add(self.policy.refresh_timeout());
        let mut announced = false;
        let mut polls = 0u32;
        let mut rng = JitterRng::new(job.id.0);
        loop {
            match self
                .store_op(store.try_lease(self.policy.lease_ttl()))
                .await
            {
                Ok(LeaseOutcome::Acquired(l)) => return LeaseStep::Proceed(Some(l)),
                Ok(LeaseOutcome::Unsupported) | Err(_) => return LeaseStep::Proceed(None),
                Ok(LeaseOutcome::Held) => {}
            }
            if !announced {
                announced = true;
                self.listeners
                    .emit(vec![Event::LeaseBusy { at: self.rt.now() }]);
            }
            if let Ok(Some(stored)) = self.store_op(store.load()).await {
                if is_newer(job, &stored) {
                    return LeaseStep::Adopt(stored);
                }
            }
            let now = self.rt.now();
            if now >= give_up {
                return LeaseStep::GaveUp;
            }
            // The holder usually finishes within one provider round trip: poll soon, then less
            // and less often (10 ms doubling to 250 ms), jittered so waiting processes do not
            // align.
            let ceiling = LEASE_POLL_FIRST
                .saturating_mul(1 << polls.min(5))
                .min(LEASE_POLL_MAX);
            polls += 1;
            let pause = ceiling.mul_f64(0.5 + 0.5 * rng.unit());
            self.rt
                .sleep_until(now.saturating_add(pause).min(give_up))
                .await;
        }
    }

    async fn call_refresher(
        &self,
        job: &FlightJob,
    ) -> (
        Result<TokenResponse, RefreshError>,
        MonoTime,
        OffsetDateTime,
    ) {
        let request = RefreshRequest {
            refresh_token: job
                .tokens
                .as_deref()
                .and_then(|t| t.refresh_token())
                .cloned(),
            scope: job
                .tokens
                .as_deref()
                .and_then(|t| t.scope())
                .map(str::to_owned),
            attempt: job.attempt,
        };
        let issued_mono = self.rt.now();
        let issued_wall = self.rt.wall();
        let call = AssertUnwindSafe(self.refresher.refresh(request)).catch_unwind();
        let result = match self.timeout(self.policy.refresh_timeout(), call).await {
            Some(Ok(r)) => r,
            Some(Err(_panic)) => {
                self.listeners.emit(vec![Event::RefresherPanicked {
                    at: self.rt.now(),
                    flight: job.id,
                }]);
                Err(RefreshError::transient("the refresher panicked"))
            }
            None => Err(RefreshError::ambiguous(format!(
                "no answer within the refresh timeout of {:?}",
                self.policy.refresh_timeout()
            ))),
        };
        (result, issued_mono, issued_wall)
    }

    async fn accept(
        &self,
        job: &FlightJob,
        response: TokenResponse,
        issued_mono: MonoTime,
        issued_wall: OffsetDateTime,
    ) -> FlightResult {
        let old = job.tokens.as_deref();
        let old_rt = old.and_then(|t| t.refresh_token()).cloned();
        let (access, new_rt, expires_in, scope) = response.into_parts();
        let rotated = new_rt.as_ref().is_some_and(|n| Some(n) != old_rt.as_ref());
        let refresh_token = new_rt.or(old_rt);
        let scope = scope.or_else(|| old.and_then(|t| t.scope()).map(str::to_owned));
        if access.is_empty() {
            let now = self.rt.now();
            let error =
                RefreshError::transient("the token endpoint answered without an access token");
            // Keep a rotated refresh token even from a malformed answer: the old one is dead.
            let kept = match (rotated, old) {
                (true, Some(old)) => {
                    let mut set = old.clone();
                    set.set_refresh_token(refresh_token);
                    let set = Arc::new(set);
                    let saved = self.persist(job.version, &set).await;
                    Some((set, saved))
                }
                _ => None,
            };
            self.listeners.emit(vec![Event::MalformedResponse {
                at: now,
                kept_refresh_token: kept.is_some(),
            }]);
            return FlightResult::Failed {
                error,
                kept_refresh_token: kept,
            };
        }
        let (lifetime, adjustment) = self.policy.lifetime(expires_in);
        if let Some(adjustment) = adjustment {
            self.listeners.emit(vec![Event::LifetimeAdjusted {
                at: self.rt.now(),
                adjustment,
                used: lifetime,
            }]);
        }
        let expires_at = issued_wall + lifetime;
        let mut set = TokenSet::new(access, refresh_token, issued_wall, expires_at);
        if let Some(scope) = scope {
            set = set.with_scope(scope);
        }
        let set = Arc::new(set);
        // Persist, then publish: the set is durable (or its save is known to have failed)
        // before any caller can see the new access token.
        let saved = self.persist(job.version, &set).await;
        FlightResult::Refreshed {
            set,
            issued: issued_mono,
            lifetime,
            saved,
            rotated,
        }
    }

    async fn persist(&self, expected: Option<Version>, set: &Arc<TokenSet>) -> Saved {
        match &self.store {
            Some(store) => self.save_cas(store.as_ref(), expected, set).await,
            None => Ok(None),
        }
    }

    /// Compare-and-swap save that redoes the write when another writer changed the store in
    /// between: the set in hand is the newest the provider issued, so it must land.
    async fn save_cas(
        &self,
        store: &dyn TokenStore,
        mut expected: Option<Version>,
        set: &Arc<TokenSet>,
    ) -> Result<Option<Version>, StoreError> {
        for _ in 0..=MAX_CAS_RETRIES {
            match self.store_op(store.save(expected, set)).await? {
                SaveOutcome::Saved(v) => return Ok(Some(v)),
                SaveOutcome::Conflict(held) => {
                    if let Some(h) = &held {
                        if h.tokens == **set {
                            return Ok(Some(h.version));
                        }
                    }
                    self.listeners
                        .emit(vec![Event::StoreConflict { at: self.rt.now() }]);
                    expected = held.map(|h| h.version);
                }
            }
        }
        Err(StoreError::new(
            StoreErrorKind::Io,
            "the store kept changing under the write",
        ))
    }

    async fn on_invalid_grant(&self, job: &FlightJob, error: RefreshError) -> FlightResult {
        if let Some(store) = &self.store {
            let used = job.tokens.as_deref().and_then(|t| t.refresh_token());
            if let Ok(Some(stored)) = self.store_op(store.load()).await {
                if is_newer(job, &stored) {
                    // Another process rotated the token: ours was stale, theirs is live.
                    return FlightResult::Adopted(stored);
                }
                // A different refresh token at the version we started from is our own older
                // set whose successor's save is still pending: dead too, and not to be adopted.
                if stored.tokens.refresh_token() == used {
                    if let Ok(true) = self.store_op(store.clear(stored.version)).await {
                        self.listeners
                            .emit(vec![Event::StoreCleared { at: self.rt.now() }]);
                    }
                }
            }
        }
        FlightResult::Failed {
            error,
            kept_refresh_token: None,
        }
    }

    fn finish_flight(
        self: &Arc<Self>,
        id: FlightId,
        result: FlightResult,
        kept_lease: Option<Lease>,
    ) {
        let mut events = Vec::new();
        let mut retry_persist = None;
        {
            let mut core = self.core.lock();
            if kept_lease.is_some() {
                core.held_lease = kept_lease;
            }
            let now = self.rt.now();
            match result {
                FlightResult::Refreshed {
                    set,
                    issued,
                    lifetime,
                    saved,
                    rotated,
                } => {
                    let grant = Grant::new(issued, lifetime, set.refresh_token().is_some());
                    core.tokens = Some(set.clone());
                    core.last_error = None;
                    core.machine.handle(Input::RefreshSucceeded {
                        now,
                        flight: id,
                        grant,
                    });
                    let generation = core.machine.generation();
                    events.push(Event::Refreshed {
                        at: now,
                        flight: id,
                        generation,
                        access_token: set.access_token().fingerprint(),
                        refresh_token: set.refresh_token().map(|r| r.fingerprint()),
                        rotated,
                        lifetime,
                    });
                    self.note_saved(
                        &mut core,
                        generation,
                        saved,
                        now,
                        &mut events,
                        &mut retry_persist,
                    );
                }
                FlightResult::Adopted(stored) => {
                    let set = Arc::new(stored.tokens);
                    let grant = grant_for(&set, now, self.rt.wall());
                    core.tokens = Some(set.clone());
                    core.version = Some(stored.version);
                    core.last_error = None;
                    core.persist_pending = None;
                    core.machine.handle(Input::RefreshSucceeded {
                        now,
                        flight: id,
                        grant,
                    });
                    events.push(Event::Adopted {
                        at: now,
                        generation: core.machine.generation(),
                        access_token: set.access_token().fingerprint(),
                    });
                }
                FlightResult::Failed {
                    error,
                    kept_refresh_token,
                } => {
                    if let Some((set, saved)) = kept_refresh_token {
                        core.tokens = Some(set);
                        let generation = core.machine.generation();
                        self.note_saved(
                            &mut core,
                            generation,
                            saved,
                            now,
                            &mut events,
                            &mut retry_persist,
                        );
                    }
                    events.push(Event::RefreshFailed {
                        at: now,
                        flight: id,
                        class: error.class(),
                        retry_after: error.retry_after(),
                    });
                    core.machine.handle(Input::RefreshFailed {
                        now,
                        flight: id,
                        class: error.class(),
                        retry_after: error.retry_after(),
                    });
                    core.last_error = Some(error);
                }
            }
            if core.flight.as_ref().is_some_and(|(f, _)| *f == id) {
                core.flight = None;
            }
            self.publish_locked(&mut core, &mut events);
        }
        self.listeners.emit(events);
        self.nudge();
        if let Some(generation) = retry_persist {
            let inner = self.clone();
            self.rt.spawn(Box::pin(
                async move { inner.persist_retry(generation).await },
            ));
        }
    }

    fn note_saved(
        &self,
        core: &mut Core,
        generation: u64,
        saved: Saved,
        now: MonoTime,
        events: &mut Vec<Event>,
        retry: &mut Option<u64>,
    ) {
        match saved {
            Ok(Some(version)) => {
                core.version = Some(version);
                core.persist_pending = None;
                events.push(Event::Persisted {
                    at: now,
                    generation,
                    version,
                });
            }
            Ok(None) => core.persist_pending = None,
            Err(error) => {
                core.persist_pending = Some(generation);
                *retry = Some(generation);
                events.push(Event::PersistFailed {
                    at: now,
                    generation,
                    attempt: 1,
                    error,
                });
            }
        }
    }

    /// Retries saving generation `generation` with backoff until it lands or a newer
    /// generation supersedes it. The token keeps being served from memory meanwhile, and the old
    /// refresh token is never used again.
    async fn persist_retry(self: Arc<Self>, generation: u64) {
        let Some(store) = self.store.clone() else {
            return;
        };
        self.persist_until_durable(store.as_ref(), generation).await;
        // Durable (or superseded): other processes may refresh again.
        let lease = self.core.lock().held_lease.take();
        self.release(store.as_ref(), lease).await;
    }

    async fn persist_until_durable(&self, store: &dyn TokenStore, generation: u64) {
        let mut attempt = 1u32;
        let ttl = self.policy.lease_ttl();
        loop {
            let (mut delay, lease) = {
                let mut core = self.core.lock();
                let delay = self
                    .policy
                    .backoff_delay(attempt, None, &mut core.persist_rng);
                (delay, core.held_lease.clone())
            };
            if let Some(lease) = lease {
                // Keep the lease alive until the set is durable: renewed before every wait,
                // and the waits kept well inside its time-to-live.
                let _ = self.store_op(store.renew_lease(&lease, ttl)).await;
                delay = delay.min(ttl / 3);
            }
            let wake = self.rt.now().saturating_add(delay);
            self.rt.sleep_until(wake).await;
            let (set, expected) = {
                let core = self.core.lock();
                if core.machine.generation() != generation
                    || core.persist_pending != Some(generation)
                {
                    return;
                }
                match &core.tokens {
                    Some(t) => (t.clone(), core.version),
                    None => return,
                }
            };
            attempt += 1;
            let saved = self.save_cas(store, expected, &set).await;
            let mut events = Vec::new();
            let mut again = None;
            {
                let mut core = self.core.lock();
                if core.machine.generation() != generation {
                    return;
                }
                let now = self.rt.now();
                match saved {
                    Ok(v) => {
                        self.note_saved(&mut core, generation, Ok(v), now, &mut events, &mut again)
                    }
                    Err(error) => events.push(Event::PersistFailed {
                        at: now,
                        generation,
                        attempt,
                        error,
                    }),
                }
            }
            let done = !events
                .iter()
                .any(|e| matches!(e, Event::PersistFailed { .. }));
            self.listeners.emit(events);
            if done {
                return;
            }
        }
    }
}

enum LeaseStep {
    Proceed(Option<Lease>),
    Adopt(Stored),
    GaveUp,
}

/// Whether the store holds tokens other than those the refresh started from.
fn is_newer(job: &FlightJob, stored: &Stored) -> bool {
    if Some(stored.version) == job.version {
        return false;
    }
    match job.tokens.as_deref() {
        None => true,
        Some(ours) => {
            ours.refresh_token() != stored.tokens.refresh_token()
                || ours.access_token() != stored.tokens.access_token()
        }
    }
}

/// Places a stored token set on the monotonic clock, keeping its absolute expiry.
fn grant_for(set: &TokenSet, now: MonoTime, wall: OffsetDateTime) -> Grant {
    let to_std = |d: time::Duration| Duration::try_from(d).unwrap_or(Duration::ZERO);
    let age = to_std(wall - set.issued_at());
    let lifetime = to_std(set.lifetime());
    let has_rt = set.refresh_token().is_some();
    let since_origin = now.as_duration();
    if age <= since_origin {
        Grant::new(now.saturating_sub(age), lifetime, has_rt)
    } else {
        // Issued before this clock's origin: shorten the lifetime so the expiry stays put.
        Grant::new(
            MonoTime::ZERO,
            lifetime.saturating_sub(age - since_origin),
            has_rt,
        )
    }
}

async fn eager_loop(weak: Weak<Inner>, rt: Runtime, mut nudges: mpsc::UnboundedReceiver<()>) {
    loop {
        let deadline = {
            let Some(inner) = weak.upgrade() else { return };
            let now = rt.now();
            let core = inner.core.lock();
            core.machine.next_deadline(now)
        };
        match deadline {
            Some(at) => {
                if let Either::Right((None, _)) = select(rt.sleep_until(at), nudges.next()).await {
                    return;
                }
            }
            None => {
                if nudges.next().await.is_none() {
                    return;
                }
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        inner.tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}

    /// Tokens and `token()` futures cross threads: hosts hold a token across their own I/O and
    /// spawn callers on multi-threaded executors.
    #[test]
    fn tokens_and_futures_are_send() {
        let clock = crate::runtime::ManualClock::new();
        let c = futures::executor::block_on(
            Credential::builder(crate::refresher_fn(|_| async {
                Err(RefreshError::transient("unused"))
            }))
            .runtime(Runtime::manual(&clock))
            .build(),
        )
        .expect("builds");
        is_send_sync(&c);
        let fut = c.token();
        is_send(&fut);
        drop(fut);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Token>();
    }

    /// A caller waiting for a refresh holds the two-word `TokenFuture` plus the boxed slow
    /// path; together they stay within the 256-byte budget.
    #[test]
    fn a_waiting_token_future_is_small() {
        let clock = crate::runtime::ManualClock::new();
        let c = futures::executor::block_on(
            Credential::builder(crate::refresher_fn(|_| async {
                Err(RefreshError::transient("unused"))
            }))
            .runtime(Runtime::manual(&clock))
            .build(),
        )
        .expect("builds");
        let inline = std::mem::size_of::<TokenFuture<'_>>();
        let boxed = std::mem::size_of_val(&c.inner.token_slow());
        println!("waiting token(): {inline} B inline + {boxed} B boxed");
        assert!(inline + boxed <= 256, "{inline} + {boxed} bytes");
    }
}

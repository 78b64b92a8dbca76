//! The concurrent shell around the [`Machine`](crate::machine::Machine): a lock-free hot path,
//! single-flight refreshes carried out by one worker per credential, persist-then-publish,
//! cross-process leases and the timer.
//!
//! - `handle`: what callers hold ([`Token`], [`Status`]) and the published snapshot;
//! - `future`: [`TokenFuture`], the hot path and the slow path;
//! - `builder`: [`CredentialBuilder`];
//! - `engine`: feeds the machine, publishes, applies what flights report;
//! - `report`: applies what a flight reports;
//! - `driver`: the worker that interprets a [`flight::Plan`](crate::flight::Plan)'s effects;
//! - `store_io`: every store and refresher call, with its timeout and panic shield;
//! - `pooled`: the seam through which a pool's one scheduler times its credentials;
//! - `cell`: the rendezvous between a flight and its waiters.

mod builder;
mod cell;
mod driver;
mod engine;
mod future;
mod handle;
mod pooled;
mod report;
mod store_io;

use std::fmt;
use std::sync::Arc;

use futures::channel::mpsc;

use crate::error::Error;
use crate::event::Event;
use crate::machine::{Input, Phase};
use crate::store::SaveOutcome;
use crate::token::TokenSet;

pub(crate) use builder::{common as credential_common, PoolParts};
pub use builder::{CredentialBuilder, Precedence};
pub(crate) use engine::Common;
pub use future::TokenFuture;
pub use handle::{Status, Token};
pub(crate) use pooled::{Rescheduled, Scheduler, WeakCredential, NO_WAKE};

use engine::{After, Driver, Inner};

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

impl Credential {
    /// Starts building a credential that refreshes with `refresher`. An `Arc<dyn Refresher>`
    /// is shared as it is, so many credentials can use one refresher (an HTTP client, say)
    /// without a copy or an extra allocation each.
    ///
    /// See the [type-level example](Credential#examples) and the builder's
    /// [defaults](CredentialBuilder#default).
    pub fn builder(refresher: impl crate::Refresher) -> CredentialBuilder {
        CredentialBuilder::new(shared_refresher(refresher))
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
            inner: &self.inner,
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
        self.inner.try_fast()
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
        // A token of another credential says nothing about this one's (generations collide).
        if token.owner() != self.inner.id {
            return false;
        }
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
            refresh_token: engine::current_refresh_token(&core).map(|r| r.fingerprint()),
            persist_pending: core.persist_pending().is_some(),
            store_version: core.version,
            closed: core.machine.is_closed(),
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

    /// Installs a new token set (after a login or a step-up): saved to the store first, then
    /// published. A login always wins: it overwrites whatever the store holds, and a refresh
    /// that started before it is cancelled — its result is never installed or saved. Leaves
    /// re-authorization and backoff.
    ///
    /// # Errors
    /// A store error if the set could not be saved; it is then not installed either, and a
    /// refresh in flight goes on.
    ///
    /// # Cancel safety
    /// Cancelling may leave the set saved but not yet published; it is adopted at the next
    /// refresh, which re-reads the store.
    ///
    /// See the [`subscribe`](Credential::subscribe) example.
    pub async fn set_tokens(&self, tokens: TokenSet) -> Result<(), Error> {
        let set = Arc::new(tokens);
        let version = match &self.inner.store {
            Some(store) => self.inner.save_login(store.as_ref(), &set).await?,
            None => None,
        };
        let mut after = After::default();
        {
            let mut core = self.inner.core.lock();
            core.epoch += 1;
            self.inner
                .authorize_locked(&mut core, set, version, true, &mut after);
        }
        self.inner.run_after(after);
        self.inner.nudge();
        Ok(())
    }

    /// Shuts the credential down: no refresh starts from now on, the timer stops, and the
    /// call waits — at most the lease's time-to-live — for the refresh in flight and any owed
    /// save to finish, so that no rotated refresh token is lost. Tokens that are still valid
    /// keep being served; later callers that would need a refresh get
    /// [`Error::is_closed`].
    ///
    /// # Errors
    /// A store error when a rotated set is still not durable (the store failed or the wait
    /// ran out): it then exists only in memory.
    ///
    /// # Cancel safety
    /// Cancel safe: the refresh and the owed save go on in the background.
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).build().await.unwrap();
    /// c.shutdown().await.unwrap();
    /// assert!(c.status().closed);
    /// # });
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        let mut after = After::default();
        let idle = {
            let mut core = self.inner.core.lock();
            let now = self.inner.common.rt.now();
            self.inner.feed(&mut core, Input::Close { now }, &mut after);
            match core.driver() {
                Driver::Busy(busy) => Some(busy.idle.clone()),
                Driver::Idle => None,
            }
        };
        self.inner.run_after(after);
        self.inner.stop_timer();
        if let Some(idle) = idle {
            let limit = self.inner.common.policy.lease_ttl();
            let _ = store_io::timeout(&self.inner.common.rt, limit, idle.wait()).await;
        }
        let core = self.inner.core.lock();
        if core.persist_pending().is_some() {
            return Err(Error::store(crate::store::StoreError::new(
                crate::store::StoreErrorKind::Io,
                "shut down with a rotated token set that could not be saved",
            )));
        }
        Ok(())
    }
}

/// What the metrics listener reads besides events.
#[cfg(feature = "metrics")]
impl Credential {
    /// Tokens handed out past their refresh point since the last call.
    pub(crate) fn take_stale_served(&self) -> u64 {
        self.inner
            .stale_served
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }

    /// How long the current token is valid after `at` (zero once expired).
    pub(crate) fn expires_in(&self, at: crate::runtime::MonoTime) -> Option<std::time::Duration> {
        let core = self.inner.core.lock();
        let timing = core.machine.timing()?;
        Some(timing.expires_at.saturating_duration_since(at))
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

/// The refresher as the credential keeps it. An `Arc<dyn Refresher>` (one refresher shared by
/// many credentials, as in a pool) is kept as it is rather than wrapped in another `Arc`.
fn shared_refresher(refresher: impl crate::Refresher) -> Arc<dyn crate::Refresher> {
    let mut given = Some(refresher);
    let any: &mut dyn std::any::Any = &mut given;
    match any.downcast_mut::<Option<Arc<dyn crate::Refresher>>>() {
        Some(shared) => shared.take().expect("just given"),
        None => Arc::new(given.take().expect("just given")),
    }
}

impl Inner {
    /// Saves a login's set: it wins over whatever the store holds, so a conflict is redone
    /// against the version found (a bounded number of times).
    async fn save_login(
        &self,
        store: &dyn crate::store::TokenStore,
        set: &Arc<TokenSet>,
    ) -> Result<Option<crate::store::Version>, Error> {
        const MAX_ROUNDS: u32 = 4;
        let limit = self.common.policy.store_timeout();
        let mut expected = self.core.lock().version;
        for _ in 0..MAX_ROUNDS {
            match store_io::store_op(&self.common.rt, limit, store.save(expected, set)).await? {
                SaveOutcome::Saved(v) => return Ok(Some(v)),
                SaveOutcome::Conflict(held) => {
                    if let Some(h) = &held
                        && h.tokens == **set
                    {
                        return Ok(Some(h.version));
                    }
                    self.listeners.emit(vec![Event::StoreConflict {
                        at: self.common.rt.now(),
                    }]);
                    expected = held.map(|h| h.version);
                }
            }
        }
        Err(Error::store(crate::store::StoreError::new(
            crate::store::StoreErrorKind::Io,
            "the store kept changing under the login's write",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresher::RefreshError;
    use crate::runtime::{ManualClock, Runtime};

    fn is_send_sync<T: Send + Sync>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}

    fn credential(clock: &ManualClock) -> Credential {
        futures::executor::block_on(
            Credential::builder(crate::refresher_fn(|_| async {
                Err(RefreshError::transient("unused"))
            }))
            .runtime(Runtime::manual(clock))
            .build(),
        )
        .expect("builds")
    }

    /// Tokens and `token()` futures cross threads: hosts hold a token across their own I/O and
    /// spawn callers on multi-threaded executors.
    #[test]
    fn tokens_and_futures_are_send() {
        let clock = ManualClock::new();
        let c = credential(&clock);
        is_send_sync(&c);
        let fut = c.token();
        is_send(&fut);
        drop(fut);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Token>();
    }

    /// A refresher shared as `Arc<dyn Refresher>` is kept as it is: credentials sharing one
    /// (a pool's, say) do not each wrap it in an `Arc` of their own.
    #[test]
    fn a_shared_refresher_is_not_wrapped_again() {
        let clock = ManualClock::new();
        let shared: Arc<dyn crate::Refresher> = Arc::new(crate::refresher_fn(|_| async {
            Err(RefreshError::transient("unused"))
        }));
        let c = futures::executor::block_on(
            Credential::builder(shared.clone())
                .runtime(Runtime::manual(&clock))
                .build(),
        )
        .expect("builds");
        assert!(Arc::ptr_eq(&c.inner.common.refresher, &shared));
    }

    /// A caller waiting for a refresh holds the two-word `TokenFuture` plus the boxed slow
    /// path; together they stay within the 256-byte budget.
    #[test]
    fn a_waiting_token_future_is_small() {
        let clock = ManualClock::new();
        let c = credential(&clock);
        let inline = std::mem::size_of::<TokenFuture<'_>>();
        let boxed = std::mem::size_of_val(&c.inner.token_slow());
        println!("waiting token(): {inline} B inline + {boxed} B boxed");
        assert!(inline + boxed <= 256, "{inline} + {boxed} bytes");
    }

    /// Polls `fut` to completion, running the clock's tasks between polls (no time passes).
    fn drive<F: std::future::Future>(clock: &ManualClock, fut: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            clock.run_until_stalled();
        }
        panic!("the future made no progress");
    }

    /// What a credential keeps while it refreshes, saves or is known by a refresh token alone
    /// is freed once all of that is over: an idle pooled credential must not carry it.
    #[test]
    fn an_idle_credential_frees_its_active_part() {
        use crate::{AccessToken, RefreshToken, TokenResponse};
        let clock = ManualClock::new();
        let refresher = crate::refresher_fn(|_| async {
            Ok(TokenResponse::new(AccessToken::new("a1"))
                .with_refresh_token(RefreshToken::new("r1"))
                .with_expires_in(3600))
        });
        let c = drive(
            &clock,
            Credential::builder(refresher)
                .refresh_token(RefreshToken::new("r0"))
                .store(crate::store::MemoryStore::new())
                .runtime(Runtime::manual(&clock))
                .build(),
        )
        .expect("builds");
        assert!(
            c.inner.core.lock().has_active(),
            "known by a refresh token alone"
        );
        let token = drive(&clock, c.token()).expect("refreshed");
        assert_eq!(token.secret(), "a1");
        clock.run_until_stalled();
        let core = c.inner.core.lock();
        assert_eq!(core.persist_pending(), None, "saved");
        assert!(!core.has_active(), "the active part outlived the refresh");
    }
}

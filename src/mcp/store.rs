//! rmcp's `CredentialStore` over any keepfresh [`TokenStore`], for clients that keep rmcp's
//! own `AuthorizationManager` but want keepfresh's stores: the file shared by a user's
//! processes, the OS keyring, Redis shared by replicas.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::channel::oneshot;
use futures::future::{select, Either};
use oauth2::basic::BasicTokenType;
use oauth2::TokenResponse as _;
use parking_lot::Mutex;
use rmcp::transport::auth::{
    AuthError, CredentialRefreshGuard, CredentialStore, OAuthTokenResponse, StoredCredentials,
    VendorExtraTokenFields,
};
use time::OffsetDateTime;

use crate::secret::{AccessToken, RefreshToken};
use crate::store::{Lease, LeaseOutcome, SaveOutcome, StoreError, TokenStore, Version};
use crate::token::TokenSet;

/// How many times a save outside a refresh (a login) re-reads a store that changed under it.
const SAVE_ATTEMPTS: usize = 3;

/// rmcp's [`CredentialStore`] over a keepfresh [`TokenStore`], with
/// [`acquire_refresh_guard`](CredentialStore::acquire_refresh_guard) as the store's
/// cross-process lease.
///
/// - `load` reads the token set and remembers its version; `save` is a compare-and-swap on
///   that version. A save made **while the refresh guard is held** (rmcp's refresh) never
///   overwrites a newer set another writer put there: it fails with
///   `AuthError::CredentialStoreError` instead, and the store keeps the newer set. A save
///   **outside the guard** (the first tokens after an authorization) re-reads and
///   overwrites: a new login wins over older tokens.
/// - `acquire_refresh_guard` waits for the store's lease ([`TokenStore::try_lease`]), woken
///   by [`TokenStore::changed`], for at most [`lease_wait`](RmcpStore::lease_wait); renews it
///   while the guard is held; releases it when the guard is dropped. A store without leases
///   gives no guard.
/// - `clear` empties the store only if it still holds the set last read;
///   `on_refresh_token_rejected` clears only if the store still holds that refresh token, so
///   a rejection seen by one process never wipes tokens another has just refreshed.
/// - The set is bound to one client and issuer: credentials saved for another `client_id`,
///   or another issuer than the one configured, are refused.
///
/// This keeps rmcp's refresh logic, with its limits: waiters for the guard refresh again
/// after it (they do not re-check whether the tokens changed), and one manager holds one
/// credential. With the lease those extra refreshes are sequential and use the newest
/// refresh token, so a rotating provider sees no replay; but for one refresh per token
/// generation use [`CredentialHttpClient`](super::CredentialHttpClient) with a
/// [`Credential`](crate::Credential) instead.
///
/// Only the `Debug` of the configuration is shown; tokens never are. rmcp's credential types
/// hold the tokens as plain `String`s, which are not zeroed when dropped (keepfresh's own
/// copies are).
///
/// # Examples
/// ```
/// use keepfresh::mcp::RmcpStore;
/// use keepfresh::store::MemoryStore;
/// use rmcp::transport::auth::{CredentialStore, StoredCredentials};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let shared = MemoryStore::new(); // clones share content and lease, like two processes' stores
/// let first = RmcpStore::new(shared.clone(), "my-client").issuer("https://auth.example.com");
/// let second = RmcpStore::new(shared, "my-client")
///     .lease_wait(std::time::Duration::from_millis(20));
/// assert!(first.load().await.unwrap().is_none());
///
/// // The refresh guard is the store's lease: while one holds it, the other waits (here, gives up).
/// let guard = first.acquire_refresh_guard().await.unwrap();
/// assert!(guard.is_some());
/// assert!(second.acquire_refresh_guard().await.is_err());
/// # }
/// ```
pub struct RmcpStore<S> {
    store: Arc<S>,
    client_id: Arc<str>,
    issuer: Option<Arc<str>>,
    lease_ttl: Duration,
    lease_wait: Duration,
    default_lifetime: Duration,
    state: Arc<Mutex<State>>,
}

/// What the adapter remembers between rmcp's calls.
#[derive(Default)]
struct State {
    /// The version of the last set read or written (`None`: empty, or never read).
    version: Option<Version>,
    /// Whether `version` is known (a load or a save happened).
    known: bool,
    /// Whether a refresh guard is held (a save is then a refresh's save).
    guarded: bool,
}

impl<S> fmt::Debug for RmcpStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RmcpStore")
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .field("lease_ttl", &self.lease_ttl)
            .field("lease_wait", &self.lease_wait)
            .finish_non_exhaustive()
    }
}

impl<S: TokenStore> RmcpStore<S> {
    /// rmcp credentials of the client `client_id` in `store`.
    ///
    /// # Default
    /// | setting | default |
    /// |---|---|
    /// | [`issuer`](RmcpStore::issuer) | none (not checked, not reported) |
    /// | [`lease_ttl`](RmcpStore::lease_ttl) | 30 s, renewed every third of it while the guard is held |
    /// | [`lease_wait`](RmcpStore::lease_wait) | 60 s |
    /// | [`default_lifetime`](RmcpStore::default_lifetime) | 1 h |
    ///
    /// See the [type-level example](RmcpStore#examples).
    pub fn new(store: S, client_id: impl Into<String>) -> Self {
        RmcpStore {
            store: Arc::new(store),
            client_id: client_id.into().into(),
            issuer: None,
            lease_ttl: Duration::from_secs(30),
            lease_wait: Duration::from_secs(60),
            default_lifetime: Duration::from_secs(3600),
            state: Arc::default(),
        }
    }

    /// The authorization server the credentials belong to: reported in every load, and a
    /// save for another issuer is refused (credentials are bound to their issuer).
    ///
    /// See the [type-level example](RmcpStore#examples).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into().into());
        self
    }

    /// How long the lease lasts without renewal. Keep it above the token request's own
    /// timeout plus a margin: the guard renews it every third of it, and a process that
    /// stops renewing loses it after this long.
    ///
    /// ```
    /// # use keepfresh::mcp::RmcpStore;
    /// # use keepfresh::store::MemoryStore;
    /// let store = RmcpStore::new(MemoryStore::new(), "cid").lease_ttl(std::time::Duration::from_secs(60));
    /// ```
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long `acquire_refresh_guard` waits for a lease another process holds before it
    /// fails with `AuthError::CredentialStoreError`.
    ///
    /// ```
    /// # use keepfresh::mcp::RmcpStore;
    /// # use keepfresh::store::MemoryStore;
    /// let store = RmcpStore::new(MemoryStore::new(), "cid").lease_wait(std::time::Duration::from_secs(5));
    /// ```
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// The lifetime assumed for an access token saved without `expires_in`.
    ///
    /// ```
    /// # use keepfresh::mcp::RmcpStore;
    /// # use keepfresh::store::MemoryStore;
    /// let store = RmcpStore::new(MemoryStore::new(), "cid").default_lifetime(std::time::Duration::from_secs(600));
    /// ```
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// The keepfresh store underneath.
    ///
    /// ```
    /// # use keepfresh::mcp::RmcpStore;
    /// # use keepfresh::store::MemoryStore;
    /// let store = RmcpStore::new(MemoryStore::new(), "cid");
    /// let _inner: &MemoryStore = store.store();
    /// ```
    pub fn store(&self) -> &S {
        &self.store
    }

    fn remember(&self, version: Option<Version>) {
        let mut state = self.state.lock();
        state.version = version;
        state.known = true;
    }

    /// The rmcp view of a stored set.
    fn credentials(&self, set: &TokenSet) -> StoredCredentials {
        let mut response = OAuthTokenResponse::new(
            oauth2::AccessToken::new(set.access_token().expose_secret().to_owned()),
            BasicTokenType::Bearer,
            VendorExtraTokenFields::default(),
        );
        response.set_refresh_token(
            set.refresh_token()
                .map(|rt| oauth2::RefreshToken::new(rt.expose_secret().to_owned())),
        );
        let lifetime = Duration::try_from(set.lifetime()).unwrap_or_default();
        response.set_expires_in(Some(&lifetime));
        let scopes: Vec<String> = set
            .scope()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !scopes.is_empty() {
            response.set_scopes(Some(
                scopes.iter().cloned().map(oauth2::Scope::new).collect(),
            ));
        }
        let received = u64::try_from(set.issued_at().unix_timestamp()).ok();
        let mut credentials =
            StoredCredentials::new(self.client_id.to_string(), Some(response), scopes, received);
        credentials.issuer = self.issuer.as_deref().map(str::to_owned);
        credentials
    }

    /// The keepfresh view of rmcp's credentials.
    fn token_set(&self, credentials: &StoredCredentials) -> Result<TokenSet, AuthError> {
        if credentials.client_id != *self.client_id {
            return Err(refused(format!(
                "credentials of client {:?} cannot be saved for client {:?}",
                credentials.client_id, self.client_id
            )));
        }
        if let (Some(theirs), Some(ours)) = (&credentials.issuer, &self.issuer)
            && theirs.as_str() != &**ours
        {
            return Err(refused(format!(
                "credentials issued by {theirs:?} cannot be saved for issuer {ours:?}"
            )));
        }
        let Some(response) = &credentials.token_response else {
            return Err(refused("credentials without a token response".to_owned()));
        };
        let issued_at = credentials
            .token_received_at
            .and_then(|s| i64::try_from(s).ok())
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .unwrap_or_else(OffsetDateTime::now_utc);
        let lifetime = response.expires_in().unwrap_or(self.default_lifetime);
        let lifetime = time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX);
        let expires_at = issued_at.checked_add(lifetime).unwrap_or(issued_at);
        let set = TokenSet::new(
            AccessToken::new(response.access_token().secret().as_str()),
            response
                .refresh_token()
                .map(|rt| RefreshToken::new(rt.secret().as_str())),
            issued_at,
            expires_at,
        );
        let scope = match response.scopes() {
            Some(scopes) if !scopes.is_empty() => scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => credentials.granted_scopes.join(" "),
        };
        Ok(if scope.is_empty() {
            set
        } else {
            set.with_scope(scope)
        })
    }
}

/// A store failure in rmcp's words (a store error never contains token material).
fn store_error(error: StoreError) -> AuthError {
    AuthError::CredentialStoreError(error.to_string())
}

fn refused(message: String) -> AuthError {
    AuthError::CredentialStoreError(message)
}

#[async_trait]
impl<S: TokenStore> CredentialStore for RmcpStore<S> {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let stored = self.store.load().await.map_err(store_error)?;
        self.remember(stored.as_ref().map(|s| s.version));
        Ok(stored.map(|s| self.credentials(&s.tokens)))
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        let set = self.token_set(&credentials)?;
        let (mut expected, known, guarded) = {
            let state = self.state.lock();
            (state.version, state.known, state.guarded)
        };
        if !known {
            expected = self
                .store
                .load()
                .await
                .map_err(store_error)?
                .map(|s| s.version);
        }
        for _ in 0..SAVE_ATTEMPTS {
            match self.store.save(expected, &set).await.map_err(store_error)? {
                SaveOutcome::Saved(version) => {
                    self.remember(Some(version));
                    return Ok(());
                }
                SaveOutcome::Conflict(current) => {
                    let current = current.map(|s| s.version);
                    self.remember(current);
                    if guarded {
                        return Err(refused(
                            "the store holds newer credentials than the ones this refresh \
                             started from; they were kept, the refreshed ones not saved"
                                .to_owned(),
                        ));
                    }
                    expected = current;
                }
            }
        }
        Err(refused(format!(
            "the store kept changing during {SAVE_ATTEMPTS} save attempts"
        )))
    }

    async fn clear(&self) -> Result<(), AuthError> {
        let (version, known) = {
            let state = self.state.lock();
            (state.version, state.known)
        };
        let version = match (version, known) {
            (Some(v), true) => v,
            (None, true) => return Ok(()),
            (_, false) => match self.store.load().await.map_err(store_error)? {
                Some(stored) => stored.version,
                None => return Ok(()),
            },
        };
        if self.store.clear(version).await.map_err(store_error)? {
            self.remember(None);
        }
        Ok(())
    }

    async fn on_refresh_token_rejected(
        &self,
        credentials: &StoredCredentials,
    ) -> Result<(), AuthError> {
        let rejected = credentials
            .token_response
            .as_ref()
            .and_then(|r| r.refresh_token())
            .map(|rt| RefreshToken::new(rt.secret().as_str()));
        let Some(rejected) = rejected else {
            return Ok(());
        };
        let Some(stored) = self.store.load().await.map_err(store_error)? else {
            return Ok(());
        };
        if stored.tokens.refresh_token() == Some(&rejected)
            && self
                .store
                .clear(stored.version)
                .await
                .map_err(store_error)?
        {
            self.remember(None);
        }
        Ok(())
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let deadline = tokio::time::Instant::now() + self.lease_wait;
        let mut pause = Duration::from_millis(10);
        loop {
            match self
                .store
                .try_lease(self.lease_ttl)
                .await
                .map_err(store_error)?
            {
                LeaseOutcome::Unsupported => return Ok(None),
                LeaseOutcome::Acquired(lease) => {
                    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                        // Nothing could renew or release it: give it back at once.
                        let _ = self.store.release(lease).await;
                        return Err(refused(
                            "the refresh guard needs a tokio runtime to renew its lease".to_owned(),
                        ));
                    };
                    self.state.lock().guarded = true;
                    return Ok(Some(CredentialRefreshGuard::new(LeaseGuard::start(
                        &runtime,
                        self.store.clone(),
                        lease,
                        self.lease_ttl,
                        self.state.clone(),
                    ))));
                }
                LeaseOutcome::Held => {
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return Err(refused(format!(
                            "another process held the refresh lease for more than {:?}",
                            self.lease_wait
                        )));
                    }
                    let sleep = tokio::time::sleep(pause.min(deadline - now));
                    let changed = self.store.changed();
                    futures::pin_mut!(sleep, changed);
                    // A failure to watch only means the full pause is slept.
                    let _ = select(sleep, changed).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
            }
        }
    }
}

/// The lease behind a refresh guard: renewed by a task until the guard is dropped, then
/// released by that task.
struct LeaseGuard {
    stop: Option<oneshot::Sender<()>>,
    state: Arc<Mutex<State>>,
}

impl LeaseGuard {
    fn start<S: TokenStore>(
        runtime: &tokio::runtime::Handle,
        store: Arc<S>,
        lease: Lease,
        ttl: Duration,
        state: Arc<Mutex<State>>,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        runtime.spawn(async move {
            let mut stopped = stopped;
            loop {
                let tick = tokio::time::sleep(ttl / 3);
                futures::pin_mut!(tick);
                match select(tick, &mut stopped).await {
                    Either::Left(_) => match store.renew_lease(&lease, ttl).await {
                        Ok(true) => {}
                        // Gone (ran out, taken by another process) or unreachable: nothing
                        // left to renew or release; the store's CAS still guards the save.
                        Ok(false) | Err(_) => return,
                    },
                    Either::Right(_) => break,
                }
            }
            // Released late is harmless: the lease runs out by itself.
            let _ = store.release(lease).await;
        });
        LeaseGuard {
            stop: Some(stop),
            state,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.state.lock().guarded = false;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

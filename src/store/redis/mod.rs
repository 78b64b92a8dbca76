//! [`RedisStore`]: a token store that replicas of a service share through Redis, so that one of
//! them refreshes at a time and the others adopt its tokens.

mod error;
mod scripts;
mod watch;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisResult, Value};
use async_trait::async_trait;
use futures::future::{select, Either};
use parking_lot::Mutex;
use zeroize::Zeroizing;

use self::error::Target;
use self::scripts::{ACQUIRE_SCRIPT, CLEAR_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT, SAVE_SCRIPT};
use self::watch::{AbortOnDrop, Watcher};
use super::Version;
use super::{Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore};
use crate::token::TokenSet;

const DEFAULT_NAMESPACE: &str = "keepfresh";
const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Reconnection attempts behind one command, and their first and longest pause: a command
/// waits for a short reconnection, then fails with an I/O error; the next command tries again.
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(25);
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(250);

/// One credential's token set in Redis, shared by any number of processes (replicas).
///
/// Every write is a compare-and-swap run as a Lua script, a refresh lease makes one replica
/// refresh at a time, and replicas waiting for the lease holder hear of its result over
/// pub/sub. Give each replica's [`Credential`](crate::Credential) its own `RedisStore`; several
/// credentials can share one connection through [`RedisStore::for_key`].
///
/// # Keys
/// With the namespace `keepfresh` (the [default](RedisStoreBuilder#default)) and the credential
/// key `github`, the store uses:
///
/// | key | type | holds |
/// |---|---|---|
/// | `{keepfresh:github}:state` | hash | `version` (an integer that only grows) and `tokens` (the token set as JSON, exactly as [`TokenSet`] serializes) |
/// | `{keepfresh:github}:lease` | string, with a TTL | the refresh lease: `<owner>:<fence>` |
/// | `{keepfresh:github}:fence` | integer | incremented on every lease acquisition |
/// | `{keepfresh:github}:changed` | pub/sub channel | a message after every save, clear and release |
///
/// The braces are a hash tag: a Redis Cluster keeps one credential's keys in one slot, which its
/// multi-key scripts need. A clear deletes the tokens but keeps incrementing the version, so a
/// version number is never reused; the first version is the server's clock in milliseconds, so
/// a server restarted without its data still hands out versions above the old ones, and a
/// replica never takes a new set for the one it read before the restart.
///
/// # Leases and fencing
/// A lease is acquired with the equivalent of `SET lease <owner>:<fence> NX PX ttl` together
/// with `INCR fence`, as one script; the owner is a random 128-bit id drawn for each
/// `RedisStore` value, the fence the counter's new value (it is also the [`Lease::id`]). Renewal
/// and release compare the whole value first. A lease that ran out is renewed only if nobody
/// acquired the lease since (as [`MemoryStore`](super::MemoryStore) does); otherwise
/// [`renew_lease`](TokenStore::renew_lease) answers `false`.
///
/// While this store holds a lease, [`save`](TokenStore::save) and [`clear`](TokenStore::clear)
/// also check that nobody acquired the lease since: a replica that paused past its lease's TTL
/// while another took over cannot write. Such a **fenced** write is refused with a
/// [`StoreErrorKind::Io`] error (not a [`SaveOutcome::Conflict`]: the version matched, and the
/// engine must not adopt the old set as if it were newer); the engine keeps its new tokens,
/// renews (learning that the lease is gone) and retries the save. After the refusal the store
/// no longer counts the lease as held, so the retry is a plain compare-and-swap: it lands if
/// the new holder has not saved yet, and conflicts with the new holder's set otherwise. The
/// version is checked first, so a version mismatch is still reported as a conflict.
///
/// # Waiting
/// [`changed`](TokenStore::changed) listens on the credential's channel through one extra
/// pub/sub connection per opened server (started by the first call), and also compares the
/// version and the lease every [`poll_interval`](RedisStoreBuilder::poll_interval), so a lost
/// message (a reconnection, a lease that simply ran out) only delays a waiter. It compares
/// against what this store saw last (its last load, lease request or save), so a change made
/// between the caller's last look and the start of the wait wakes it at once.
///
/// # Failures
/// Every operation is bounded by the [operation timeout](RedisStoreBuilder::op_timeout): an
/// unreachable server is a [`StoreErrorKind::Io`] error (connection refused) or a
/// [`StoreErrorKind::Timeout`], never a panic or a hang. The connection (a multiplexed
/// [`ConnectionManager`]) reconnects by itself once the server is back; a server restarted
/// without persistence simply appears empty. A wrong password or a refused command is
/// [`StoreErrorKind::Config`]; a key holding something that is not this store's data is
/// [`StoreErrorKind::Corrupt`]. Error messages and `Debug` show the server's address with `***`
/// in place of the password, and never token material.
///
/// # Runtime and server
/// The store needs a tokio runtime: it is opened inside one, and runs its I/O on that runtime
/// whichever executor polls its futures. It needs Redis 5.0 or later (its scripts replicate
/// their effects; tested with 7.0) reached through one endpoint: a standalone server or a
/// proxy. The key layout is ready for Redis Cluster, but the connection is not a cluster client
/// (no `MOVED` redirection), and Sentinel is not supported.
///
/// # Authentication and TLS
/// Both come from the URL: `redis://:password@host:6379/0`, `redis://user:password@host/0`
/// (ACL users), `rediss://host:6380` (TLS; needs the `redis-tls` feature, which uses rustls with
/// the platform's root certificates; see
/// [`tls_root_certificate`](RedisStoreBuilder::tls_root_certificate) for a private CA).
///
/// # Examples
/// ```no_run
/// use keepfresh::store::RedisStore;
/// use keepfresh::Credential;
/// # async fn run(refresher: impl keepfresh::Refresher) -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::open("redis://:s3cret@redis.internal:6379/0", "github").await?;
/// let credential = Credential::builder(refresher).store(store).build().await?;
/// let token = credential.token().await?;
/// # let _ = token;
/// # Ok(())
/// # }
/// ```
pub struct RedisStore {
    server: Arc<Server>,
    keys: Arc<Keys>,
    owner: String,
    /// The fence of the lease this store believes it holds.
    held: Mutex<Option<u64>>,
    /// What this store last saw of the version and the lease: a `changed` call waits for
    /// something else, so that a change made between the caller's last look and the
    /// subscription is not missed.
    seen: Mutex<Observed>,
}

/// The version field and the lease value, as one store last saw them (`None`: absent).
type Observed = (Option<i64>, Option<String>);

/// One opened server: the command connection, the change watcher and the settings, shared by
/// the stores made with [`RedisStore::for_key`].
struct Server {
    conn: ConnectionManager,
    client: ::redis::Client,
    rt: tokio::runtime::Handle,
    target: Target,
    namespace: String,
    op_timeout: Duration,
    poll_interval: Duration,
    watcher: OnceLock<Watcher>,
}

/// The names of one credential's keys.
struct Keys {
    key: String,
    state: String,
    lease: String,
    fence: String,
    channel: String,
}

impl Keys {
    fn new(namespace: &str, key: &str) -> Result<Self, StoreError> {
        for (what, name) in [("namespace", namespace), ("key", key)] {
            if name.is_empty() || name.contains(['{', '}']) {
                return Err(StoreError::new(
                    StoreErrorKind::Config,
                    format!("a RedisStore {what} must be non-empty and without braces: {name:?}"),
                ));
            }
        }
        let tag = format!("{{{namespace}:{key}}}");
        Ok(Keys {
            key: key.to_owned(),
            state: format!("{tag}:state"),
            lease: format!("{tag}:lease"),
            fence: format!("{tag}:fence"),
            channel: format!("{tag}:changed"),
        })
    }
}

/// Builder of a [`RedisStore`].
///
/// # Default
/// | setting | default |
/// |---|---|
/// | [`namespace`](RedisStoreBuilder::namespace) | `"keepfresh"` |
/// | [`op_timeout`](RedisStoreBuilder::op_timeout) | 2 s |
/// | [`poll_interval`](RedisStoreBuilder::poll_interval) | 250 ms |
/// | [`tls_root_certificate`](RedisStoreBuilder::tls_root_certificate) | the platform's roots (`redis-tls` feature) |
///
/// ```no_run
/// use keepfresh::store::RedisStore;
/// use std::time::Duration;
/// # async fn run() -> Result<(), keepfresh::store::StoreError> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379")
///     .namespace("billing-service")
///     .op_timeout(Duration::from_secs(1))
///     .open("github")
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
pub struct RedisStoreBuilder {
    client: Result<::redis::Client, StoreError>,
    url: Zeroizing<String>,
    namespace: String,
    op_timeout: Duration,
    poll_interval: Duration,
    root_certificate: Option<Vec<u8>>,
}

impl RedisStoreBuilder {
    /// Prefixes every key: stores with different namespaces never see each other's credentials.
    ///
    /// See the [builder example](RedisStoreBuilder).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The longest any single operation (a command, a connection attempt) may take before it
    /// fails with [`StoreErrorKind::Timeout`]. Keep it below the refresh policy's
    /// [`store_timeout`](crate::RefreshPolicy::store_timeout), so the store's own error, which
    /// says more, comes first.
    ///
    /// See the [builder example](RedisStoreBuilder).
    pub fn op_timeout(mut self, limit: Duration) -> Self {
        self.op_timeout = limit.max(Duration::from_millis(1));
        self
    }

    /// How often a waiting [`changed`](TokenStore::changed) compares the version and the lease
    /// itself, in case a pub/sub message was lost.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keepfresh::store::StoreError> {
    /// let store = keepfresh::store::RedisStore::builder("redis://127.0.0.1")
    ///     .poll_interval(std::time::Duration::from_millis(100))
    ///     .open("github")
    ///     .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Trusts this PEM root certificate (a private CA) for `rediss://` connections instead of
    /// the platform's roots. Takes effect with the `redis-tls` feature; without it a
    /// `rediss://` URL is refused as [`StoreErrorKind::Config`].
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read("/etc/redis/ca.pem")?;
    /// let store = keepfresh::store::RedisStore::builder("rediss://redis.internal:6380")
    ///     .tls_root_certificate(ca)
    ///     .open("github")
    ///     .await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificate = Some(pem.into());
        self
    }

    /// Connects and returns the store of the credential `key`.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for an invalid URL, namespace or key (empty, or holding a
    /// brace), a rejected password, or when called outside a tokio runtime;
    /// [`StoreErrorKind::Io`] or [`StoreErrorKind::Timeout`] when the server cannot be reached.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped call leaves nothing behind.
    ///
    /// See the [builder example](RedisStoreBuilder).
    pub async fn open(self, key: &str) -> Result<RedisStore, StoreError> {
        let client = self.client?;
        let client = with_root_certificate(client, &self.url, self.root_certificate)?;
        let keys = Keys::new(&self.namespace, key)?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::new(
                StoreErrorKind::Config,
                "RedisStore must be opened inside a tokio runtime",
            )
        })?;
        let target = Target::new(client.get_connection_info());
        let limit = self.op_timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(limit))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let connect = ConnectionManager::new_with_config(client.clone(), config);
        let conn = bounded(&rt, &target, limit, "connecting to Redis", connect).await?;
        RedisStore::handle(
            Arc::new(Server {
                conn,
                client,
                rt,
                target,
                namespace: self.namespace,
                op_timeout: limit,
                poll_interval: self.poll_interval,
                watcher: OnceLock::new(),
            }),
            keys,
        )
    }
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &error::redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("op_timeout", &self.op_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("tls_root_certificate", &self.root_certificate.is_some())
            .finish()
    }
}

#[cfg(feature = "redis-tls")]
fn with_root_certificate(
    client: ::redis::Client,
    url: &str,
    pem: Option<Vec<u8>>,
) -> Result<::redis::Client, StoreError> {
    let Some(pem) = pem else {
        return Ok(client);
    };
    let certs = ::redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    ::redis::Client::build_with_tls(client.get_connection_info().clone(), certs)
        .map_err(|e| error::bad_url(url, &e))
}

#[cfg(not(feature = "redis-tls"))]
fn with_root_certificate(
    client: ::redis::Client,
    url: &str,
    pem: Option<Vec<u8>>,
) -> Result<::redis::Client, StoreError> {
    match pem {
        None => Ok(client),
        Some(_) => Err(StoreError::new(
            StoreErrorKind::Config,
            format!(
                "a TLS root certificate was given for {} but keepfresh was built without the \
                 `redis-tls` feature",
                error::redact_url(url)
            ),
        )),
    }
}

/// A random 128-bit lease owner, in hex.
fn new_owner() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Io,
            format!("no randomness for the lease owner: {e}"),
        )
    })?;
    Ok(format!("{:032x}", u128::from_le_bytes(bytes)))
}

/// Runs `op` on the store's runtime, bounded by `limit`.
async fn bounded<T: Send + 'static>(
    rt: &tokio::runtime::Handle,
    target: &Target,
    limit: Duration,
    what: &str,
    op: impl Future<Output = RedisResult<T>> + Send + 'static,
) -> Result<T, StoreError> {
    let task = AbortOnDrop(rt.spawn(tokio::time::timeout(limit, op)));
    match task.await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(target.error(what, &e)),
        Ok(Err(_elapsed)) => Err(StoreError::new(
            StoreErrorKind::Timeout,
            format!("{what} at {}: no answer within {limit:?}", target.shown()),
        )),
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Io,
            format!(
                "{what} at {}: the tokio runtime the store was opened in has shut down",
                target.shown()
            ),
        )),
    }
}

impl RedisStore {
    /// Connects to the server at `url` and returns the store of the credential `key`, in the
    /// default namespace (`keepfresh`). See [`RedisStore::builder`] for the other settings.
    ///
    /// # Errors
    /// See [`RedisStoreBuilder::open`].
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// See the [type-level example](RedisStore).
    pub async fn open(url: &str, key: &str) -> Result<RedisStore, StoreError> {
        Self::builder(url).open(key).await
    }

    /// A builder for a store at `url` (`redis://`, `rediss://`, `redis+unix://`; the password,
    /// if any, in the URL). The URL is parsed here; an invalid one is reported by
    /// [`open`](RedisStoreBuilder::open).
    ///
    /// See the [builder example](RedisStoreBuilder).
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder {
            client: ::redis::Client::open(url).map_err(|e| error::bad_url(url, &e)),
            url: Zeroizing::new(url.to_owned()),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            poll_interval: DEFAULT_POLL_INTERVAL,
            root_certificate: None,
        }
    }

    /// The store of another credential, `key`, over the same connection and namespace. It has
    /// its own lease owner: `store.for_key(store.key())` behaves as another replica would.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] for an empty key or one holding a brace.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), keepfresh::store::StoreError> {
    /// let github = keepfresh::store::RedisStore::open("redis://127.0.0.1", "github").await?;
    /// let gitlab = github.for_key("gitlab")?;
    /// assert_eq!(gitlab.key(), "gitlab");
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_key(&self, key: &str) -> Result<RedisStore, StoreError> {
        let keys = Keys::new(&self.server.namespace, key)?;
        RedisStore::handle(self.server.clone(), keys)
    }

    /// A new handle (with its own lease owner) on `keys` of `server`.
    fn handle(server: Arc<Server>, keys: Keys) -> Result<RedisStore, StoreError> {
        Ok(RedisStore {
            server,
            keys: Arc::new(keys),
            owner: new_owner()?,
            held: Mutex::new(None),
            seen: Mutex::new((None, None)),
        })
    }

    /// The credential key this store was opened for.
    ///
    /// See [`RedisStore::for_key`].
    pub fn key(&self) -> &str {
        &self.keys.key
    }

    /// Runs one command or script, bounded by the operation timeout.
    async fn run<T: Send + 'static, F>(
        &self,
        what: &str,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>> + Send + 'static,
    {
        self.server.run(&self.keys, what, op).await
    }

    /// The fence of the lease this store holds, with the lease value (`<owner>:<fence>`) and
    /// the fence as script arguments; empty strings without a lease (the scripts then skip
    /// the fencing check).
    fn fence_args(&self) -> (Option<u64>, String, String) {
        let held = *self.held.lock();
        match held {
            Some(fence) => (held, format!("{}:{fence}", self.owner), fence.to_string()),
            None => (None, String::new(), String::new()),
        }
    }

    fn saw_version(&self, version: Option<i64>) {
        self.seen.lock().0 = version;
    }

    fn saw_lease(&self, value: Option<String>) {
        self.seen.lock().1 = value;
    }

    fn lease_value(&self, lease: &Lease) -> String {
        format!("{}:{}", self.owner, lease.id)
    }

    /// The error for a write refused because the lease `fence` was taken over, which this store
    /// then no longer holds: the refusal is said once, and a retry is a plain compare-and-swap.
    fn fenced(&self, what: &str, fence: Option<u64>) -> StoreError {
        let mut held = self.held.lock();
        if *held == fence {
            *held = None;
        }
        StoreError::new(
            StoreErrorKind::Io,
            format!(
                "redis {what} of {} refused: another holder acquired the refresh lease this \
                 store held (fenced)",
                self.keys.key
            ),
        )
    }

    fn corrupt(&self, detail: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "redis key {} at {}: {detail}",
                self.keys.state,
                self.server.target.shown()
            ),
        )
    }

    fn parse_tokens(&self, bytes: &[u8]) -> Result<TokenSet, StoreError> {
        // serde_json's messages may quote the offending value; say only where it is.
        serde_json::from_slice(bytes).map_err(|e| {
            self.corrupt(&format!(
                "the stored token set is not valid ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })
    }

    fn stored(&self, version: i64, bytes: &[u8]) -> Result<Stored, StoreError> {
        let version = u64::try_from(version)
            .map_err(|_| self.corrupt(&format!("negative version {version}")))?;
        Ok(Stored {
            version: Version(version),
            tokens: self.parse_tokens(bytes)?,
        })
    }
}

impl Server {
    /// Runs one command or script on `keys`, bounded by the operation timeout.
    async fn run<T: Send + 'static, F>(
        &self,
        keys: &Keys,
        what: &str,
        op: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>> + Send + 'static,
    {
        let what = format!("redis {what} of {}", keys.key);
        bounded(
            &self.rt,
            &self.target,
            self.op_timeout,
            &what,
            op(self.conn.clone()),
        )
        .await
    }

    /// The version and the lease value, which a change of content or lease changes.
    async fn probe(&self, keys: &Keys) -> Result<Observed, StoreError> {
        let state = keys.state.clone();
        let lease = keys.lease.clone();
        self.run(keys, "probe", move |mut conn| async move {
            ::redis::pipe()
                .cmd("HGET")
                .arg(state)
                .arg("version")
                .cmd("GET")
                .arg(lease)
                .query_async(&mut conn)
                .await
        })
        .await
    }

    /// Resolves on a message on the credential's channel, or when a look at the version and
    /// the lease finds them different from `seen` (what the caller saw last). Returns what it
    /// saw, if it looked.
    async fn wait_for_change(
        &self,
        keys: &Keys,
        seen: Observed,
    ) -> Result<Option<Observed>, StoreError> {
        let watcher = self
            .watcher
            .get_or_init(|| Watcher::start(self.client.clone(), &self.rt, self.op_timeout));
        let mut rx = watcher.subscribe(&keys.channel, self.op_timeout).await;
        let mut heard = *rx.borrow_and_update();
        // From here on a change sends a message (or, before the watcher has subscribed, shows
        // in the look it asks for once subscribed); a change made before shows in this look.
        let mut now = self.probe(keys).await?;
        let mut listening = true;
        while now == seen {
            let tick = tokio::time::sleep(self.poll_interval);
            if listening {
                let woke = match select(std::pin::pin!(rx.changed()), std::pin::pin!(tick)).await {
                    Either::Left((result, _)) => Some(result.is_ok()),
                    Either::Right(_) => None,
                };
                match woke {
                    Some(true) => {
                        let signal = *rx.borrow_and_update();
                        if signal.messages != heard.messages {
                            // What the message changed, for the next wait's comparison.
                            return Ok(self.probe(keys).await.ok());
                        }
                        // (Re)subscribed: messages may have been lost meanwhile; look.
                        heard = signal;
                    }
                    // The watcher is gone (never while a store lives): poll alone.
                    Some(false) => {
                        listening = false;
                        continue;
                    }
                    None => {}
                }
            } else {
                tick.await;
            }
            now = self.probe(keys).await?;
        }
        Ok(Some(now))
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.server.target.shown())
            .field("namespace", &self.server.namespace)
            .field("key", &self.keys.key)
            .field("holds_lease", &self.held.lock().is_some())
            .finish()
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64)
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        let state = self.keys.state.clone();
        let (version, tokens): (Option<i64>, Option<Vec<u8>>) = self
            .run("load", move |mut conn| async move {
                ::redis::cmd("HMGET")
                    .arg(state)
                    .arg("version")
                    .arg("tokens")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        self.saw_version(version);
        let Some(tokens) = tokens.map(Zeroizing::new) else {
            return Ok(None);
        };
        let version = version.ok_or_else(|| self.corrupt("token set without a version"))?;
        self.stored(version, &tokens).map(Some)
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        let doc = Zeroizing::new(serde_json::to_vec(tokens).map_err(|_| {
            StoreError::new(
                StoreErrorKind::Corrupt,
                "the token set cannot be serialized (a date outside the years 0 to 9999?)",
            )
        })?);
        let expected = expected.map_or_else(String::new, |v| v.0.to_string());
        let (held, lease_value, fence) = self.fence_args();
        let keys = [
            self.keys.state.clone(),
            self.keys.lease.clone(),
            self.keys.fence.clone(),
        ];
        let channel = self.keys.channel.clone();
        let mut reply: Vec<Value> = self
            .run("save", move |mut conn| async move {
                SAVE_SCRIPT
                    .key(&keys[..])
                    .arg(expected)
                    .arg(doc.as_slice())
                    .arg(lease_value)
                    .arg(fence)
                    .arg(channel)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match reply.as_mut_slice() {
            [status, version] if int(status) == Some(1) => {
                let version = int(version)
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| self.corrupt("unexpected version in the save reply"))?;
                self.saw_version(Some(version));
                Ok(SaveOutcome::Saved(Version(version.unsigned_abs())))
            }
            [status] if int(status) == Some(0) => Ok(SaveOutcome::Conflict(None)),
            [status, version, Value::BulkString(held)] if int(status) == Some(0) => {
                let held = Zeroizing::new(std::mem::take(held));
                let version =
                    int(version).ok_or_else(|| self.corrupt("unexpected version in the reply"))?;
                self.saw_version(Some(version));
                Ok(SaveOutcome::Conflict(Some(self.stored(version, &held)?)))
            }
            [status] if int(status) == Some(-1) => Err(self.fenced("save", held)),
            _ => Err(self.corrupt("unexpected reply to the save script")),
        }
    }

    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        let (held, lease_value, fence) = self.fence_args();
        let keys = [
            self.keys.state.clone(),
            self.keys.lease.clone(),
            self.keys.fence.clone(),
        ];
        let channel = self.keys.channel.clone();
        let reply: i64 = self
            .run("clear", move |mut conn| async move {
                CLEAR_SCRIPT
                    .key(&keys[..])
                    .arg(expected.0)
                    .arg(lease_value)
                    .arg(fence)
                    .arg(channel)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match reply {
            -1 => Err(self.fenced("clear", held)),
            0 => Ok(false),
            version => {
                self.saw_version(Some(version));
                Ok(true)
            }
        }
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        let keys = [self.keys.lease.clone(), self.keys.fence.clone()];
        let owner = self.owner.clone();
        let reply: Vec<Value> = self
            .run("lease", move |mut conn| async move {
                ACQUIRE_SCRIPT
                    .key(&keys[..])
                    .arg(owner)
                    .arg(ttl_millis(ttl))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [status, fence] if int(status) == Some(1) => {
                let id = int(fence)
                    .and_then(|f| u64::try_from(f).ok())
                    .ok_or_else(|| self.corrupt("unexpected fence in the lease reply"))?;
                *self.held.lock() = Some(id);
                self.saw_lease(Some(self.lease_value(&Lease { id })));
                Ok(LeaseOutcome::Acquired(Lease { id }))
            }
            [status, Value::BulkString(holder)] if int(status) == Some(0) => {
                self.saw_lease(Some(String::from_utf8_lossy(holder).into_owned()));
                Ok(LeaseOutcome::Held)
            }
            _ => Err(self.corrupt("unexpected reply to the lease script")),
        }
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        {
            // Given back whatever the answer: if the release is lost, the lease runs out, and
            // this store must not keep fencing its writes with it.
            let mut held = self.held.lock();
            if *held == Some(lease.id) {
                *held = None;
            }
        }
        let lease_key = self.keys.lease.clone();
        let value = self.lease_value(&lease);
        let channel = self.keys.channel.clone();
        let released: i64 = self
            .run("release", move |mut conn| async move {
                RELEASE_SCRIPT
                    .key(lease_key)
                    .arg(value)
                    .arg(channel)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if released == 1 {
            self.saw_lease(None);
        }
        Ok(())
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let keys = [self.keys.lease.clone(), self.keys.fence.clone()];
        let value = self.lease_value(lease);
        let fence = lease.id;
        let renewed: i64 = self
            .run("lease renewal", move |mut conn| async move {
                RENEW_SCRIPT
                    .key(&keys[..])
                    .arg(value)
                    .arg(fence)
                    .arg(ttl_millis(ttl))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if renewed == 1 {
            self.saw_lease(Some(self.lease_value(lease)));
            return Ok(true);
        }
        let mut held = self.held.lock();
        if *held == Some(lease.id) {
            *held = None;
        }
        Ok(false)
    }

    async fn changed(&self) -> Result<(), StoreError> {
        let server = self.server.clone();
        let keys = self.keys.clone();
        let seen = self.seen.lock().clone();
        let wait = async move { server.wait_for_change(&keys, seen).await };
        match AbortOnDrop(self.server.rt.spawn(wait)).await {
            Ok(Ok(looked)) => {
                if let Some(now) = looked {
                    *self.seen.lock() = now;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::new(
                StoreErrorKind::Io,
                format!(
                    "watching {} at {}: the tokio runtime the store was opened in has shut down",
                    self.keys.key,
                    self.server.target.shown()
                ),
            )),
        }
    }
}

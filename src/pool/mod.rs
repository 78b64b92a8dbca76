//! Many credentials, one per (issuer, client, resource, scopes, subject), so that a
//! multi-tenant server can hold one upstream grant per user: tokens minted for one resource or
//! scope set are never handed out for another, and a refresh token is never sent to an issuer
//! other than the one that issued it.
//!
//! - `key`: [`CredentialKey`];
//! - `builder`: [`CredentialPoolBuilder`];
//! - `scheduler`: the one timer heap and task that refreshes every pooled credential in the
//!   background, and evicts idle ones.

mod builder;
mod key;
mod scheduler;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};

use crate::credential::{
    credential_common, Common, Credential, CredentialBuilder, PoolParts, Rescheduled, Scheduler,
    WeakCredential,
};
use crate::error::Error;
use crate::runtime::{MonoTime, Runtime};
use crate::sync::Mutex;

pub use builder::CredentialPoolBuilder;
pub use key::CredentialKey;

use key::Binding;
use scheduler::{Notified, Timers, BATCH};

/// The map is split in shards so that lookups for different keys rarely meet on one lock.
const SHARDS: usize = 16;

/// At most this many distinct (refresher, policy) pairs are shared; a pool whose credentials
/// use more gives the others a copy each.
const SHARED_COMMONS: usize = 16;

/// Credentials by [`CredentialKey`], built once per key and refreshed in the background by one
/// scheduler for the whole pool.
///
/// - **Single-flight building**: concurrent first requests for one key run one build; the
///   others wait for it and share its credential, or its error (a failed build is not kept:
///   the next request builds again).
/// - **One scheduler**: credentials built by the pool start no timer task of their own. The
///   pool keeps one heap of deadlines (O(log n) per reschedule) and one task that sleeps until
///   the earliest, then ticks the credentials that are due (eager refreshes, keep-alive, the
///   retry after an ambiguous answer).
/// - **Idle eviction** ([`CredentialPoolBuilder::idle_timeout`]): an entry that has not been
///   looked up for that long, and whose credential nobody else holds and that has no refresh
///   or save in progress, is removed and shut down.
/// - Keys that differ in any part, scopes included, never share a credential, so never a
///   refresh.
///
/// Cloning is cheap and gives another handle to the same pool. Dropping the last handle stops
/// the scheduler: credentials still held elsewhere keep working, refreshing when called.
///
/// # Examples
/// ```
/// use keepfresh::pool::{CredentialKey, CredentialPool};
/// use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, TokenSet};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), keepfresh::Error> {
/// let pool = CredentialPool::new();
/// let read = CredentialKey::new("https://auth.example", "cid").scopes(["read"]);
/// let write = CredentialKey::new("https://auth.example", "cid").scopes(["write"]);
/// let builder = |scope: &'static str| async move {
///     let now = time::OffsetDateTime::now_utc();
///     let set = TokenSet::new(AccessToken::new(scope), None, now, now + time::Duration::hours(1));
///     Ok(Credential::builder(refresher_fn(|_| async { Err(RefreshError::transient("offline")) }))
///         .tokens(set))
/// };
/// let r = pool.get_or_build(&read, || builder("read-token")).await?;
/// let w = pool.get_or_build(&write, || builder("write-token")).await?;
/// assert_eq!(r.token().await?.secret(), "read-token");
/// assert_eq!(w.token().await?.secret(), "write-token");
/// // The same key gives the same credential; the builder is not called again.
/// let again = pool.get_or_build(&read, || async { unreachable!() }).await?;
/// assert_eq!(again.token().await?.secret(), "read-token");
/// // The issuer moved: every credential bound to the old one is dropped.
/// assert_eq!(pool.remove_issuer("https://auth.example"), 2);
/// assert!(pool.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CredentialPool {
    shared: Arc<Shared>,
}

/// What every handle of a pool shares.
pub(crate) struct Shared {
    /// Itself, for the scheduler task and the credentials' hooks (weak: neither keeps the pool
    /// alive).
    me: Weak<Shared>,
    shards: [Mutex<Shard>; SHARDS],
    /// One copy of each key's issuer, client, resource and scopes, shared by every subject.
    bindings: Mutex<HashSet<Arc<Binding>>>,
    /// One copy of the part its credentials share, per refresher and policy they use.
    commons: Mutex<Vec<Arc<Common>>>,
    runtime: Option<Runtime>,
    idle_timeout: Option<Duration>,
    timers: Timers,
    next_build: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::SubjectLabel>,
}

/// One shard of the map.
#[derive(Default)]
struct Shard {
    ready: HashMap<CredentialKey, Entry>,
    /// Keys whose first request is building them; later requests wait.
    building: HashMap<CredentialKey, Building>,
}

struct Entry {
    credential: Credential,
    /// When the entry was last looked up, in whole seconds of the pool's clock.
    last_used: u32,
}

struct Building {
    /// Tells this build from a later one for the same key.
    id: u64,
    waiters: Vec<oneshot::Sender<Result<Credential, Error>>>,
}

/// What a lookup found.
enum Lookup {
    Ready(Credential),
    Wait(oneshot::Receiver<Result<Credential, Error>>),
    /// The caller builds: the key is claimed with this build id.
    Build(u64),
}

impl Default for CredentialPool {
    fn default() -> Self {
        Self::new()
    }
}

impl CredentialPool {
    /// An empty pool with the [defaults](CredentialPoolBuilder#default).
    ///
    /// See the [type-level example](CredentialPool#examples).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a pool.
    ///
    /// See [`CredentialPoolBuilder`].
    pub fn builder() -> CredentialPoolBuilder {
        CredentialPoolBuilder::new()
    }

    /// The credential for `key`, if present (counts as a use for idle eviction).
    ///
    /// ```
    /// # use keepfresh::pool::{CredentialKey, CredentialPool};
    /// assert!(CredentialPool::new().get(&CredentialKey::new("iss", "cid")).is_none());
    /// ```
    pub fn get(&self, key: &CredentialKey) -> Option<Credential> {
        let now = stamp(self.shared.now());
        let mut shard = self.shared.shard(key).lock();
        let entry = shard.ready.get_mut(key)?;
        entry.last_used = now;
        Some(entry.credential.clone())
    }

    /// The credential for `key`, built from the [`CredentialBuilder`] that `build` returns if
    /// the pool has none.
    ///
    /// The credential is built on the pool's runtime (a runtime set on the builder is not
    /// used: the pool's one scheduler reads one clock), starts no timer task of its own, and
    /// shares one copy of its policy with every pooled credential whose policy is equal. Leave
    /// the policy's jitter seed unset outside tests: a fixed seed gives every credential the
    /// same refresh point within its lifetime, and credentials built together then refresh
    /// together.
    ///
    /// Concurrent calls for one key build once: the first caller runs `build`, the others wait
    /// for it and get the same credential, or the same error. A failed build leaves nothing
    /// behind; the next call builds again.
    ///
    /// # Errors
    /// Whatever `build` or [`CredentialBuilder::build`] returns, to the caller that built and
    /// to every caller that waited for it; a configuration error when the pool has no runtime.
    ///
    /// # Cancel safety
    /// Cancel safe. When the caller that is building is cancelled, nothing is inserted and one
    /// of the callers waiting for it (if any) builds in its place with its own `build`.
    ///
    /// # Panics
    /// When `build` panics, the panic goes to the caller that built; the callers waiting for it
    /// are not affected: one of them builds in its place.
    ///
    /// ```
    /// use keepfresh::pool::{CredentialKey, CredentialPool};
    /// use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, TokenSet};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = CredentialPool::new();
    /// let key = CredentialKey::new("https://auth.example", "cid").subject("alice");
    /// let builds = AtomicU32::new(0);
    /// let build = || async {
    ///     builds.fetch_add(1, Ordering::SeqCst);
    ///     let now = time::OffsetDateTime::now_utc();
    ///     let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1));
    ///     Ok(Credential::builder(refresher_fn(|_| async { Err(RefreshError::transient("x")) }))
    ///         .tokens(set))
    /// };
    /// // Ten first requests at once: one build, one credential.
    /// let all = futures::future::join_all((0..10).map(|_| pool.get_or_build(&key, build))).await;
    /// assert!(all.iter().all(|c| c.is_ok()));
    /// assert_eq!(builds.load(Ordering::SeqCst), 1);
    /// # }
    /// ```
    pub async fn get_or_build<F, Fut>(
        &self,
        key: &CredentialKey,
        build: F,
    ) -> Result<Credential, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CredentialBuilder, Error>>,
    {
        let rt = self.shared.runtime()?;
        let id = loop {
            let wait = match self.shared.lookup_or_claim(key) {
                Lookup::Ready(c) => return Ok(c),
                Lookup::Build(id) => break id,
                Lookup::Wait(rx) => rx,
            };
            if let Ok(result) = wait.await {
                return result;
            }
            // The build we waited for was abandoned (its caller was cancelled): try again,
            // perhaps as the one who builds.
        };
        let claim = Claim {
            shared: &self.shared,
            key,
            id,
            done: false,
        };
        let result = async {
            let builder = build().await?;
            let parts = self.shared.parts(&builder, rt);
            builder.build_pooled(parts).await
        }
        .await;
        #[cfg(feature = "metrics")]
        if let (Ok(c), Some(subject)) = (&result, self.shared.metrics) {
            crate::metrics::install(c, crate::metrics::Labels::from_key(key, subject));
        }
        claim.finish(result)
    }

    /// Removes the credential for `key` and returns it (a credential still being built is not
    /// removed). It is not shut down: handles still held keep working.
    ///
    /// ```
    /// # use keepfresh::pool::{CredentialKey, CredentialPool};
    /// assert!(CredentialPool::new().remove(&CredentialKey::new("iss", "cid")).is_none());
    /// ```
    pub fn remove(&self, key: &CredentialKey) -> Option<Credential> {
        let removed = self.shared.shard(key).lock().ready.remove(key);
        removed.map(|e| e.credential)
    }

    /// Removes every credential bound to `issuer` (the authorization server changed: its
    /// refresh tokens must never be sent to the new one). Returns how many were removed.
    ///
    /// See the [type-level example](CredentialPool#examples).
    pub fn remove_issuer(&self, issuer: &str) -> usize {
        let mut removed = 0;
        for shard in &self.shared.shards {
            let mut shard = shard.lock();
            let before = shard.ready.len();
            shard.ready.retain(|k, _| k.issuer() != issuer);
            removed += before - shard.ready.len();
        }
        self.shared.forget_unused_bindings();
        removed
    }

    /// The number of credentials (those still being built are not counted).
    ///
    /// ```
    /// assert_eq!(keepfresh::pool::CredentialPool::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.shared
            .shards
            .iter()
            .map(|s| s.lock().ready.len())
            .sum()
    }

    /// Whether the pool holds no credential.
    ///
    /// See the [type-level example](CredentialPool#examples).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every credential and shuts each down ([`Credential::shutdown`]), so that owed
    /// saves land before the process exits.
    ///
    /// # Errors
    /// The first shutdown error (a rotated token set that could not be saved); every
    /// credential is shut down regardless.
    ///
    /// # Cancel safety
    /// Cancel safe: the credentials not yet shut down are dropped, their refreshes and owed
    /// saves go on in the background.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = keepfresh::pool::CredentialPool::new();
    /// pool.shutdown().await.unwrap();
    /// assert!(pool.is_empty());
    /// # }
    /// ```
    pub async fn shutdown(&self) -> Result<(), Error> {
        let mut all = Vec::new();
        for shard in &self.shared.shards {
            all.extend(shard.lock().ready.drain().map(|(_, e)| e.credential));
        }
        let mut first = Ok(());
        for c in all {
            let r = c.shutdown().await;
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// The number of entries in the scheduler's heap, stale ones included (for tests and
    /// benchmarks).
    #[doc(hidden)]
    pub fn scheduled_entries(&self) -> usize {
        self.shared.timers.heap_len()
    }

    /// For benchmarks: records `at` as the next deadline of `credential` (one of this pool's),
    /// as the credential does when its machine changes. Harmless: at `at` the scheduler ticks
    /// it, and it reports its real deadline again.
    #[doc(hidden)]
    pub fn bench_reschedule(&self, credential: &Credential, at: MonoTime) {
        if let Some(wake) = credential.pooled_wake() {
            let done = self
                .shared
                .timers
                .reschedule(credential.weak(), wake, Some(at));
            if done.start {
                self.shared.spawn_task();
            }
            if let Some(w) = done.waker {
                w.wake();
            }
            drop(done.garbage);
        }
    }
}

impl fmt::Debug for CredentialPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialPool")
            .field("len", &self.len())
            .field("idle_timeout", &self.shared.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// The claim of the caller that builds: unless finished, dropping it (cancellation, a panic in
/// the build) frees the key, and the waiters, whose channels close, try again.
struct Claim<'a> {
    shared: &'a Shared,
    key: &'a CredentialKey,
    id: u64,
    done: bool,
}

impl Claim<'_> {
    fn finish(mut self, result: Result<Credential, Error>) -> Result<Credential, Error> {
        self.done = true;
        let now = stamp(self.shared.now());
        let waiters = {
            let mut shard = self.shared.shard(self.key).lock();
            // Only the claim removes its own building entry, so it is there; checked anyway.
            let ours = shard
                .building
                .get(self.key)
                .is_some_and(|b| b.id == self.id);
            let Some((key, building)) = ours
                .then(|| shard.building.remove_entry(self.key))
                .flatten()
            else {
                return result;
            };
            if let Ok(credential) = &result {
                let entry = Entry {
                    credential: credential.clone(),
                    last_used: now,
                };
                shard.ready.insert(key, entry);
            }
            building.waiters
        };
        if result.is_err() {
            self.shared.forget_unused_bindings();
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
        if result.is_ok() {
            self.shared.start_sweeping();
        }
        result
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut shard = self.shared.shard(self.key).lock();
        if shard
            .building
            .get(self.key)
            .is_some_and(|b| b.id == self.id)
        {
            shard.building.remove(self.key);
        }
    }
}

impl Shared {
    fn shard(&self, key: &CredentialKey) -> &Mutex<Shard> {
        let h = key.shard_hint();
        // Fold the high bits in: FNV's low bits alone spread poorly.
        &self.shards[((h ^ (h >> 32)) as usize) % SHARDS]
    }

    fn now(&self) -> MonoTime {
        self.runtime.as_ref().map_or(MonoTime::ZERO, Runtime::now)
    }

    fn runtime(&self) -> Result<Runtime, Error> {
        self.runtime.clone().ok_or_else(|| {
            Error::config(
                "no runtime: enable the `tokio` feature or call CredentialPoolBuilder::runtime",
            )
        })
    }

    fn lookup_or_claim(&self, key: &CredentialKey) -> Lookup {
        let now = stamp(self.now());
        let mut shard = self.shard(key).lock();
        if let Some(entry) = shard.ready.get_mut(key) {
            entry.last_used = now;
            return Lookup::Ready(entry.credential.clone());
        }
        if let Some(b) = shard.building.get_mut(key) {
            let (tx, rx) = oneshot::channel();
            b.waiters.push(tx);
            return Lookup::Wait(rx);
        }
        let id = self.next_build.fetch_add(1, Ordering::Relaxed);
        let building = Building {
            id,
            waiters: Vec::new(),
        };
        shard.building.insert(self.intern(key), building);
        Lookup::Build(id)
    }

    /// `key` with its binding replaced by the pool's shared copy.
    fn intern(&self, key: &CredentialKey) -> CredentialKey {
        let mut key = key.clone();
        let mut bindings = self.bindings.lock();
        match bindings.get(&*key.binding) {
            Some(shared) => key.binding = shared.clone(),
            None => {
                bindings.insert(key.binding.clone());
            }
        }
        key
    }

    /// The shared part for a credential built by `builder`: the copy of an earlier credential
    /// with the same refresher and an equal policy, else a new one (kept for sharing while
    /// fewer than [`SHARED_COMMONS`] are).
    fn parts(&self, builder: &CredentialBuilder, runtime: Runtime) -> PoolParts {
        let same_refresher = |c: &Common| {
            // The data pointers: vtable pointers of one type may differ between codegen units.
            std::ptr::eq(
                Arc::as_ptr(&c.refresher).cast::<()>(),
                Arc::as_ptr(builder.refresher_ref()).cast::<()>(),
            )
        };
        let mut commons = self.commons.lock();
        if let Some(c) = commons
            .iter()
            .find(|c| same_refresher(c) && *c.policy == *builder.policy_ref())
        {
            return PoolParts { common: c.clone() };
        }
        // An equal policy kept for another refresher is shared too.
        let policy = commons
            .iter()
            .find(|c| *c.policy == *builder.policy_ref())
            .map_or_else(
                || Arc::new(builder.policy_ref().clone()),
                |c| c.policy.clone(),
            );
        let scheduler: Weak<dyn Scheduler> = self.me.clone();
        let common = Arc::new(credential_common(
            runtime,
            builder.refresher_ref().clone(),
            policy,
            Some(scheduler),
        ));
        if commons.len() < SHARED_COMMONS {
            commons.push(common.clone());
        }
        PoolParts { common }
    }

    /// Drops the shared bindings no key uses any more (evicted, removed, or left by a failed
    /// build); O(distinct bindings), which are few.
    fn forget_unused_bindings(&self) {
        self.bindings.lock().retain(|b| Arc::strong_count(b) > 1);
    }

    /// Starts the scheduler task if idle eviction needs it and it does not run.
    fn start_sweeping(&self) {
        if self.idle_timeout.is_some() && self.timers.claim_task() {
            self.spawn_task();
        }
    }

    fn spawn_task(&self) {
        match &self.runtime {
            Some(rt) => rt.spawn(Box::pin(run(self.me.clone(), rt.clone()))),
            None => self.timers.task_ended(),
        }
    }

    /// How often idle entries are looked for: a quarter of the idle timeout (at least a
    /// second), so an entry goes at most 25 % later than its timeout.
    fn sweep_interval(&self) -> Option<Duration> {
        self.idle_timeout
            .map(|t| (t / 4).max(Duration::from_secs(1)))
    }

    /// Removes the idle entries and returns their credentials, to be shut down.
    fn evict_idle(&self, now: MonoTime) -> Vec<Credential> {
        let Some(idle) = self.idle_timeout else {
            return Vec::new();
        };
        let now = u64::from(stamp(now));
        let idle = idle.as_secs().max(1);
        let mut evicted = Vec::new();
        for shard in &self.shards {
            let mut shard = shard.lock();
            let gone = shard.ready.extract_if(|_, e| {
                // Nobody else holds it, and no refresh or owed save is running (those hold it
                // too).
                now.saturating_sub(u64::from(e.last_used)) >= idle
                    && e.credential.handle_count() == 1
            });
            evicted.extend(gone.map(|(_, e)| e.credential));
        }
        self.forget_unused_bindings();
        evicted
    }
}

impl Scheduler for Shared {
    fn reschedule(
        &self,
        credential: WeakCredential,
        wake: &AtomicU64,
        at: Option<MonoTime>,
    ) -> Rescheduled {
        self.timers.reschedule(credential, wake, at)
    }

    fn start(&self) {
        self.spawn_task();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.timers.close();
    }
}

/// A time in whole seconds, for idle eviction (136 years fit).
fn stamp(t: MonoTime) -> u32 {
    u32::try_from(t.as_nanos() / 1_000_000_000).unwrap_or(u32::MAX)
}

/// Frees the task slot when the task ends, however it ends (a task dropped unpolled too).
struct Running(Weak<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.timers.task_ended();
        }
    }
}

/// The pool's one scheduler task: ticks the credentials that are due, evicts idle ones, sleeps
/// until the earliest deadline or an earlier report. Ends when the pool is dropped.
async fn run(pool: Weak<Shared>, rt: Runtime) {
    let _running = Running(pool.clone());
    let mut next_sweep: Option<MonoTime> = None;
    loop {
        let Some(shared) = pool.upgrade() else { return };
        let now = rt.now();
        let mut evicted = Vec::new();
        if let Some(every) = shared.sweep_interval() {
            match next_sweep {
                Some(t) if t > now => {}
                Some(_) => {
                    evicted = shared.evict_idle(now);
                    next_sweep = Some(now + every);
                }
                None => next_sweep = Some(now + every),
            }
        }
        let (due, wake_at) = shared.timers.take_due(now, next_sweep);
        drop(shared);
        let full = due.len() == BATCH;
        for c in due {
            c.scheduled_tick();
        }
        for c in evicted {
            // Nothing is in flight (the credential had no other handle), so this closes it at
            // once; an error would mean an unsaved set, which an idle credential cannot have.
            let _ = c.shutdown().await;
        }
        if full {
            // More are due: go on after letting other tasks run.
            yield_now().await;
            continue;
        }
        let sleep = match wake_at {
            Some(t) => Either::Left(rt.sleep_until(t)),
            None => Either::Right(futures::future::pending::<()>()),
        };
        let notified = Notified {
            shared: pool.clone(),
        };
        let _ = select(sleep, notified).await;
    }
}

/// Yields once to the executor.
async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

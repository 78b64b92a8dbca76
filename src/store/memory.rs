//! An in-process store; clones share it, which is how tests and the simulator model several
//! processes sharing one store.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{Lease, LeaseOutcome, SaveOutcome, StoreError, Stored, TokenStore, Version};
use crate::runtime::{Clock, MonoTime, SystemClock};
use crate::token::TokenSet;

/// A token store in memory, with versions and leases. Clones share the same content.
///
/// Lease expiry follows the clock given to [`MemoryStore::with_clock`] (the system clock by
/// default).
///
/// ```
/// use keepfresh::store::{LeaseOutcome, MemoryStore, TokenStore};
/// use std::time::Duration;
///
/// # futures::executor::block_on(async {
/// let a = MemoryStore::new();
/// let b = a.clone(); // "another process"
/// let LeaseOutcome::Acquired(lease) = a.try_lease(Duration::from_secs(30)).await.unwrap() else { panic!() };
/// assert_eq!(b.try_lease(Duration::from_secs(30)).await.unwrap(), LeaseOutcome::Held);
/// a.release(lease).await.unwrap();
/// assert!(matches!(b.try_lease(Duration::from_secs(30)).await.unwrap(), LeaseOutcome::Acquired(_)));
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct State {
    version: u64,
    tokens: Option<TokenSet>,
    lease: Option<(u64, MonoTime)>,
    next_lease: u64,
    writes: u64,
}

impl MemoryStore {
    /// An empty store whose leases follow the system clock.
    ///
    /// See the [type-level example](MemoryStore).
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose leases follow `clock`.
    ///
    /// ```
    /// use keepfresh::runtime::ManualClock;
    /// use keepfresh::store::MemoryStore;
    /// use std::sync::Arc;
    /// let store = MemoryStore::with_clock(Arc::new(ManualClock::new()));
    /// # let _ = store;
    /// ```
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            shared: Arc::new(Mutex::new(State::default())),
            clock,
        }
    }

    /// The token set held now, if any (for tests and the simulator's oracles).
    ///
    /// ```
    /// assert!(keepfresh::store::MemoryStore::new().snapshot().is_none());
    /// ```
    pub fn snapshot(&self) -> Option<Stored> {
        let s = self.shared.lock();
        s.tokens.clone().map(|tokens| Stored {
            version: Version(s.version),
            tokens,
        })
    }

    /// How many successful writes (saves and clears) the store has seen.
    ///
    /// ```
    /// assert_eq!(keepfresh::store::MemoryStore::new().writes(), 0);
    /// ```
    pub fn writes(&self) -> u64 {
        self.shared.lock().writes
    }

    /// Replaces the content unconditionally, as an unrelated writer would (a user editing the
    /// file, another tool). Returns the new version.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, TokenSet};
    /// let store = keepfresh::store::MemoryStore::new();
    /// let now = time::OffsetDateTime::now_utc();
    /// let v = store.overwrite(Some(TokenSet::new(AccessToken::new("x"), None, now, now)));
    /// assert_eq!(store.snapshot().unwrap().version, v);
    /// ```
    pub fn overwrite(&self, tokens: Option<TokenSet>) -> Version {
        let mut s = self.shared.lock();
        s.version += 1;
        s.writes += 1;
        s.tokens = tokens;
        Version(s.version)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("MemoryStore")
            .field("version", &s.version)
            .field("has_tokens", &s.tokens.is_some())
            .field("leased", &s.lease.is_some())
            .finish()
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        Ok(self.snapshot())
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        let mut s = self.shared.lock();
        let current = s.tokens.as_ref().map(|_| Version(s.version));
        if current != expected {
            let held = s.tokens.clone().map(|tokens| Stored {
                version: Version(s.version),
                tokens,
            });
            return Ok(SaveOutcome::Conflict(held));
        }
        s.version += 1;
        s.writes += 1;
        s.tokens = Some(tokens.clone());
        Ok(SaveOutcome::Saved(Version(s.version)))
    }

    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        let mut s = self.shared.lock();
        if s.tokens.is_none() || s.version != expected.0 {
            return Ok(false);
        }
        s.version += 1;
        s.writes += 1;
        s.tokens = None;
        Ok(true)
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        let now = self.clock.monotonic();
        let mut s = self.shared.lock();
        if let Some((_, until)) = s.lease
            && now < until
        {
            return Ok(LeaseOutcome::Held);
        }
        s.next_lease += 1;
        let id = s.next_lease;
        s.lease = Some((id, now.saturating_add(ttl)));
        Ok(LeaseOutcome::Acquired(Lease { id }))
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        let mut s = self.shared.lock();
        if s.lease.is_some_and(|(id, _)| id == lease.id) {
            s.lease = None;
        }
        Ok(())
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.monotonic();
        let mut s = self.shared.lock();
        match s.lease {
            // Still ours, even if it ran out, as long as nobody else took it meanwhile.
            Some((id, _)) if id == lease.id => {
                s.lease = Some((id, now.saturating_add(ttl)));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

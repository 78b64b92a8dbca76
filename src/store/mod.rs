//! Where token sets live between refreshes and across processes: versioned load,
//! compare-and-swap save, and an optional lease so that only one process refreshes at a time.

#[cfg(feature = "contract")]
pub mod contract;
#[cfg(feature = "encrypted")]
pub(crate) mod encrypted;
#[cfg(feature = "file")]
mod file;
#[cfg(feature = "keyring")]
mod keyring;
#[cfg(feature = "file")]
pub(crate) mod local;
mod memory;
#[cfg(feature = "redis")]
mod redis;
pub mod spec;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::token::TokenSet;

#[cfg(feature = "redis")]
pub use self::redis::{RedisStore, RedisStoreBuilder};
#[cfg(feature = "encrypted")]
pub use encrypted::{EncryptedFileStore, Key, KeyId};
#[cfg(feature = "file")]
pub use file::FileStore;
#[cfg(feature = "keyring")]
pub use keyring::{KeyringStore, KeyringStoreBuilder};
/// The keyring API that [`KeyringStore`] is built on, re-exported so that a program names the
/// same version: its stores ([`keyring_core::mock`] for tests), `CredentialStore`,
/// `set_default_store`.
#[cfg(feature = "keyring")]
pub use keyring_core;
pub use memory::MemoryStore;

/// A store's version stamp of its content; changes on every write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

/// A token set together with the version it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The version read.
    pub version: Version,
    /// The token set.
    pub tokens: TokenSet,
}

/// The result of a compare-and-swap save.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Written; the store is now at this version.
    Saved(Version),
    /// Not written: the store was not at the expected version. Carries what it holds now.
    Conflict(Option<Stored>),
}

/// A cross-process refresh lease held by this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Identifies the holder; the store releases only a lease with a matching id.
    pub id: u64,
}

/// The answer to a lease request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The lease is ours until released or until its time-to-live runs out.
    Acquired(Lease),
    /// Another holder has it.
    Held,
    /// This store has no leases (single-process use); refresh without one.
    Unsupported,
}

/// What went wrong in a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// An I/O failure (disk, network); may succeed when retried.
    Io,
    /// The stored data could not be understood; it is left untouched.
    Corrupt,
    /// The store did not answer within the policy's store timeout.
    Timeout,
    /// The store is misconfigured or refuses access (permissions, credentials).
    Config,
}

/// A store failure. Never contains token material.
///
/// ```
/// use keepfresh::store::{StoreError, StoreErrorKind};
/// let e = StoreError::new(StoreErrorKind::Corrupt, "tokens.json: expected value at line 1");
/// assert_eq!(e.kind(), StoreErrorKind::Corrupt);
/// assert_eq!(e.to_string(), "token store corrupt: tokens.json: expected value at line 1");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: Arc<str>,
}

impl StoreError {
    /// A store error of the given kind.
    ///
    /// See the [type-level example](StoreError).
    pub fn new(kind: StoreErrorKind, message: impl Into<Arc<str>>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    ///
    /// See the [type-level example](StoreError).
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            StoreErrorKind::Io => "I/O error",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::Timeout => "timed out",
            StoreErrorKind::Config => "misconfigured",
        };
        write!(f, "token store {kind}: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

/// Persistent storage for one credential's token set.
///
/// Every write is a compare-and-swap on the [`Version`] last read, so two processes never
/// overwrite each other blindly; `clear` is a compare-and-swap too, so an `invalid_grant` seen by
/// one process never wipes newer tokens written by another. Stores shared by processes offer a
/// lease ([`TokenStore::try_lease`]) so that one refresh runs per credential across them.
///
/// # Examples
/// ```
/// use keepfresh::store::{MemoryStore, SaveOutcome, TokenStore};
/// use keepfresh::{AccessToken, TokenSet};
///
/// # futures::executor::block_on(async {
/// let store = MemoryStore::new();
/// let now = time::OffsetDateTime::now_utc();
/// let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1));
/// let SaveOutcome::Saved(v1) = store.save(None, &set).await.unwrap() else { panic!() };
/// // A second writer that still expects an empty store loses.
/// assert!(matches!(store.save(None, &set).await.unwrap(), SaveOutcome::Conflict(Some(_))));
/// assert_eq!(store.load().await.unwrap().unwrap().version, v1);
/// # });
/// ```
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Reads the current token set and its version; `None` when the store is empty.
    ///
    /// # Errors
    /// [`StoreErrorKind::Corrupt`] when the content cannot be parsed (it must then be left in
    /// place), [`StoreErrorKind::Io`] for transient failures.
    async fn load(&self) -> Result<Option<Stored>, StoreError>;

    /// Writes `tokens` if the store is still at `expected` (`None`: still empty). The write
    /// must be atomic: a reader sees the old or the new set, never a mix.
    ///
    /// # Errors
    /// I/O failures; a version mismatch is not an error but [`SaveOutcome::Conflict`].
    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError>;

    /// Empties the store if it is still at `expected`; returns whether it did.
    ///
    /// # Errors
    /// I/O failures.
    async fn clear(&self, expected: Version) -> Result<bool, StoreError>;

    /// Asks for the cross-process refresh lease for `ttl`. The default has no leases.
    ///
    /// # Errors
    /// I/O failures. The engine then does not refresh (a transient failure, backed off):
    /// without the lease another process might refresh with the same refresh token. See
    /// [`RefreshPolicy::fail_open`](crate::RefreshPolicy::fail_open) for the opposite choice.
    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        let _ = ttl;
        Ok(LeaseOutcome::Unsupported)
    }

    /// Gives the lease back.
    ///
    /// # Errors
    /// I/O failures (the lease then simply runs out).
    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        let _ = lease;
        Ok(())
    }

    /// Extends a lease this process holds to `ttl` from now; returns whether it is still ours
    /// (`false`: it ran out and may be someone else's). The engine renews its lease before
    /// every save and while a rotated token set is not yet durable, so that no other process
    /// refreshes with the spent refresh token in the meantime, and checks the answer.
    ///
    /// Stores that hand out leases must implement it. The default (for stores without
    /// leases, where it is never called) answers with a [`StoreErrorKind::Config`] error, so a
    /// store that forgot it is reported ([`Event::LeaseLost`](crate::Event::LeaseLost)) instead
    /// of silently losing its lease.
    ///
    /// # Errors
    /// I/O failures.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let _ = (lease, ttl);
        Err(StoreError::new(
            StoreErrorKind::Config,
            "this store hands out leases but does not implement renew_lease",
        ))
    }

    /// Resolves when the store's content or its lease may have changed since the call began
    /// (another process saved, cleared or released). While another holder has the lease, the
    /// engine races this with its poll sleep, so a waiting process is told of the new tokens
    /// instead of finding them at its next poll. Waking without a change is allowed (the
    /// engine re-checks); the future may be dropped at any time.
    ///
    /// The default never resolves: the engine then polls (10 ms doubling to 250 ms, jittered).
    ///
    /// # Errors
    /// A failure to watch; the engine then sleeps its full poll interval.
    async fn changed(&self) -> Result<(), StoreError> {
        futures::future::pending::<()>().await;
        Ok(())
    }
}

#[async_trait]
impl<S: TokenStore + ?Sized> TokenStore for Arc<S> {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        (**self).load().await
    }
    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        (**self).save(expected, tokens).await
    }
    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        (**self).clear(expected).await
    }
    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        (**self).try_lease(ttl).await
    }
    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        (**self).release(lease).await
    }
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        (**self).renew_lease(lease, ttl).await
    }
    async fn changed(&self) -> Result<(), StoreError> {
        (**self).changed().await
    }
}

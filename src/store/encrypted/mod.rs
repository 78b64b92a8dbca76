//! Tokens in a private file, sealed with a key kept elsewhere: for machines where a readable
//! file is not private enough (backups, shared home directories, synced folders).

mod key;
mod seal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::local;
use super::{
    FileStore, Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore,
    Version,
};
use crate::token::TokenSet;

#[cfg(feature = "keyring")]
pub(crate) use key::decode_text;
pub use key::{Key, KeyId};
pub(crate) use seal::Sealer;

/// A [`FileStore`] whose document is encrypted: everything the file store promises (private
/// permissions, atomic durable replace, compare-and-swap, the refresh lease, change notices),
/// and the file's bytes are useless without the [`Key`].
///
/// - **Cipher:** XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) with a random 24-byte
///   nonce drawn from the OS on every write; a 192-bit nonce makes random nonces safe for any
///   number of writes under one key.
/// - **Header:** magic `KFSEAL`, a format version, the key's [`KeyId`] and a tag of the
///   credential's identity, all authenticated. A failure says which it is: not a sealed file
///   (plain JSON, say), a format this version does not read, truncated, sealed with another
///   key, sealed for another credential, or changed bytes.
/// - **Identity:** the `identity` you give (for example `"github/alice"`) and the file's name
///   are bound as associated data, so a file copied or swapped from another credential's store
///   fails to open instead of handing over the other user's tokens.
/// - **Errors:** every such failure is a [`StoreErrorKind::Corrupt`] error, never garbage
///   tokens, and the file is left untouched (a save over it is refused too).
///
/// # Key rotation
/// [`rekey`](EncryptedFileStore::rekey) reads the document with the current key and writes it
/// with the new one under the store's write lock, so no save is lost in between. Other
/// processes that still hold the old key then fail to read with a `Corrupt` error that names
/// both key ids ("sealed with another key"): give them the new key (restart them) before or
/// right after rotating. Keep the new key durable *before* calling `rekey`, and the old one until
/// it returns: a crash in between leaves the file sealed with one of the two.
///
/// ```
/// use keepfresh::store::{EncryptedFileStore, Key, SaveOutcome, TokenStore};
/// use keepfresh::{AccessToken, RefreshToken, TokenSet};
///
/// # futures::executor::block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// # use std::os::unix::fs::PermissionsExt;
/// # std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
/// let path = dir.path().join("alice.sealed");
/// let key = Key::generate().unwrap();
/// let store = EncryptedFileStore::open(&path, "github/alice", key.clone()).unwrap();
/// let now = time::OffsetDateTime::now_utc();
/// let set = TokenSet::new(AccessToken::new("at"), Some(RefreshToken::new("rt-secret")), now, now + time::Duration::hours(1));
/// let SaveOutcome::Saved(v1) = store.save(None, &set).await.unwrap() else { panic!() };
///
/// // The bytes on disk do not show the tokens.
/// let raw = std::fs::read(&path).unwrap();
/// assert!(raw.starts_with(b"KFSEAL"));
/// assert!(!raw.windows(9).any(|w| w == b"rt-secret"));
///
/// // Another process with the same key, path and identity reads them.
/// let other = EncryptedFileStore::open(&path, "github/alice", key).unwrap();
/// assert_eq!(other.load().await.unwrap().unwrap().version, v1);
///
/// // With another key: a typed error, not garbage.
/// let wrong = EncryptedFileStore::open(&path, "github/alice", Key::generate().unwrap()).unwrap();
/// let e = wrong.load().await.unwrap_err();
/// assert_eq!(e.kind(), keepfresh::store::StoreErrorKind::Corrupt);
/// assert!(e.to_string().contains("sealed with another key"));
/// # });
/// ```
#[derive(Clone)]
pub struct EncryptedFileStore {
    file: FileStore,
    sealer: Arc<Sealer>,
    identity: Arc<str>,
}

impl fmt::Debug for EncryptedFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedFileStore")
            .field("path", &self.file.path())
            .field("identity", &self.identity)
            .field("key", &self.sealer.key_id())
            .finish()
    }
}

impl EncryptedFileStore {
    /// A sealed store in the file at `path` for the credential named `identity`, with `key`.
    /// The directory is created (mode `0700`) when missing; the file by the first save.
    /// `identity` is any stable name of the credential (`"github/alice"`); it is not secret
    /// and not stored in clear, but a file only opens under the identity and file name it was
    /// written with.
    ///
    /// See the [type-level example](EncryptedFileStore).
    ///
    /// # Errors
    /// As [`FileStore::open`]: [`StoreErrorKind::Config`] when the path names no file or fails
    /// the permission checks, [`StoreErrorKind::Io`] when the directory cannot be created. A
    /// wrong key shows at the first load, as a [`StoreErrorKind::Corrupt`] error.
    pub fn open(
        path: impl Into<PathBuf>,
        identity: &str,
        key: Key,
    ) -> Result<EncryptedFileStore, StoreError> {
        let path: PathBuf = path.into();
        let Some(file_name) = path.file_name() else {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                format!("{} does not name a file", path.display()),
            ));
        };
        let sealer = Arc::new(Sealer::new(
            path.display().to_string(),
            identity,
            file_name.as_encoded_bytes(),
            key,
        ));
        let file = FileStore::with_codec(path, Box::new(Arc::clone(&sealer)))?;
        Ok(EncryptedFileStore {
            file,
            sealer,
            identity: identity.into(),
        })
    }

    /// The sealed file's path.
    ///
    /// ```
    /// # use keepfresh::store::{EncryptedFileStore, Key};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # use std::os::unix::fs::PermissionsExt;
    /// # std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    /// let store = EncryptedFileStore::open(dir.path().join("t.sealed"), "me", Key::generate().unwrap()).unwrap();
    /// assert!(store.path().ends_with("t.sealed"));
    /// ```
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The fingerprint of the key this handle seals with.
    ///
    /// See [`rekey`](EncryptedFileStore::rekey).
    pub fn key_id(&self) -> KeyId {
        self.sealer.key_id()
    }

    /// Seals the stored document with `new_key` from now on: under the write lock, reads it
    /// with the current key and writes it, unchanged (same version), with the new one. This
    /// handle and its clones switch keys; other handles and processes with the old key get
    /// [`StoreErrorKind::Corrupt`] ("sealed with another key") until they are given the new one.
    /// An empty store only switches keys.
    ///
    /// ```
    /// use keepfresh::store::{EncryptedFileStore, Key, TokenStore};
    /// # use keepfresh::{AccessToken, TokenSet};
    /// # futures::executor::block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # use std::os::unix::fs::PermissionsExt;
    /// # std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    /// # let path = dir.path().join("t.sealed");
    /// # let now = time::OffsetDateTime::now_utc();
    /// # let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1));
    /// let (old, new) = (Key::generate().unwrap(), Key::generate().unwrap());
    /// let store = EncryptedFileStore::open(&path, "me", old.clone()).unwrap();
    /// store.save(None, &set).await.unwrap();
    ///
    /// store.rekey(new.clone()).await.unwrap();
    /// assert_eq!(store.key_id(), new.id());
    /// assert!(store.load().await.unwrap().is_some());
    /// let stale = EncryptedFileStore::open(&path, "me", old).unwrap();
    /// assert!(stale.load().await.is_err());
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`StoreErrorKind::Corrupt`] when the current content cannot be opened with the current
    /// key (nothing is written); I/O failures. On any error the file and this handle keep the
    /// old key.
    ///
    /// # Cancel safety
    /// The rewrite runs on a blocking thread and completes even if this future is dropped.
    pub async fn rekey(&self, new_key: Key) -> Result<(), StoreError> {
        let sealer = Arc::clone(&self.sealer);
        local::unblock(self.file.local(), move |l| {
            let mut switched = false;
            let result = l.reseal(|| {
                sealer.begin_rotation(new_key);
                switched = true;
            });
            if switched {
                sealer.end_rotation(result.is_ok());
            }
            result
        })
        .await
    }
}

#[async_trait]
impl TokenStore for EncryptedFileStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        self.file.load().await
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.file.save(expected, tokens).await
    }

    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        self.file.clear(expected).await
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        self.file.try_lease(ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.file.renew_lease(lease, ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        self.file.release(lease).await
    }

    async fn changed(&self) -> Result<(), StoreError> {
        self.file.changed().await
    }
}

//! Tokens in the operating system's keyring (Secret Service, macOS Keychain, Windows
//! Credential Manager), where the desktop already keeps the user's secrets.

mod blob;
mod platform;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyring_core::{CredentialStore, Entry};
use parking_lot::Mutex;
use zeroize::Zeroizing;

use self::blob::{Fallback, KeyringBlob};
use super::encrypted::{decode_text, Key};
use super::local::{self, fsx, Local, Plain};
use super::{
    Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore, Version,
};
use crate::token::TokenSet;

/// A token store in one entry of the OS keyring, shared by every process of the user that opens
/// the same service and account.
///
/// The entry holds the same versioned document as a [`FileStore`](super::FileStore), so
/// compare-and-swap, the refresh lease and change notices work the same way: the lease and the
/// write lock are advisory locks on two files in a private runtime directory
/// (`$XDG_RUNTIME_DIR/keepfresh/`, else `<temp>/keepfresh-<uid>/`, created `0700`; or the
/// directory you give to [`KeyringStoreBuilder::lock_dir`]).
///
/// **Which keyring:** the store `keyring_core` was told to use by default
/// ([`keyring_core::set_default_store`]), else the platform's: Secret Service over D-Bus on
/// Linux and the BSDs (GNOME Keyring, KWallet, KeePassXC), the login Keychain on macOS, the
/// Credential Manager on Windows. Or any store you pass to
/// [`KeyringStoreBuilder::credential_store`], such as the kernel keyutils store or
/// [`keyring_core::mock`] in tests. Secrets cross the D-Bus session to the Secret Service
/// encrypted (the spec's Diffie-Hellman session).
///
/// **Too big for the keyring:** Windows caps a secret at 2,560 bytes
/// ([`KeyringStore::PLATFORM_MAX_SECRET`]); a token set with a large JWT access token and an ID
/// token can exceed it. A save that does not fit writes the document to an
/// [`EncryptedFileStore`](super::EncryptedFileStore)-format file instead, sealed with a random
/// key kept in the keyring (account `<account>#keepfresh-file-key`), and leaves a pointer to
/// the file in the entry; when the tokens fit again they move back and the file is removed.
/// The file is `<data dir>/keepfresh/<service>-<account>-<hash>.sealed` (`$XDG_DATA_HOME` or
/// `~/.local/share` on Linux, `~/Library/Application Support` on macOS, `%LOCALAPPDATA%` on
/// Windows) unless you choose it ([`KeyringStoreBuilder::fallback_file`]) or turn the fallback
/// off ([`KeyringStoreBuilder::without_fallback`]), in which case such a save fails with a
/// [`StoreErrorKind::Config`] error that says to use the encrypted file store.
///
/// The keyring API blocks (D-Bus round trips, and the OS may show an unlock prompt): every
/// call runs on the blocking thread pool, never on the async executor's threads.
/// [`KeyringStore::open`] itself blocks briefly; call it at startup.
///
/// ```
/// use keepfresh::store::keyring_core::{mock, CredentialStore};
/// use keepfresh::store::{KeyringStore, SaveOutcome, TokenStore};
/// use keepfresh::{AccessToken, RefreshToken, TokenSet};
/// use std::sync::Arc;
///
/// # futures::executor::block_on(async {
/// # let dir = tempfile::tempdir().unwrap();
/// # use std::os::unix::fs::PermissionsExt;
/// # std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
/// // In a program: `KeyringStore::open("my-app", "github/alice")` uses the OS keyring.
/// let keyring: Arc<CredentialStore> = mock::Store::new().unwrap();
/// let open = || {
///     KeyringStore::builder("my-app", "github/alice")
///         .credential_store(keyring.clone())
///         .lock_dir(dir.path().join("locks"))
///         .fallback_file(dir.path().join("alice.sealed"))
///         .open()
///         .unwrap()
/// };
/// let store = open();
/// let now = time::OffsetDateTime::now_utc();
/// let set = TokenSet::new(AccessToken::new("at"), Some(RefreshToken::new("rt")), now, now + time::Duration::hours(1));
/// let SaveOutcome::Saved(v1) = store.save(None, &set).await.unwrap() else { panic!() };
/// assert_eq!(open().load().await.unwrap().unwrap().version, v1);
/// # });
/// ```
#[derive(Clone)]
pub struct KeyringStore {
    local: Arc<Local>,
    service: Arc<str>,
    account: Arc<str>,
    fallback: Option<Arc<Path>>,
}

impl fmt::Debug for KeyringStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringStore")
            .field("service", &self.service)
            .field("account", &self.account)
            .field("fallback", &self.fallback)
            .finish()
    }
}

/// Settings for a [`KeyringStore`]; made by [`KeyringStore::builder`].
///
/// # Default
/// - credential store: `keyring_core`'s default store if the program set one, else the
///   platform's keyring;
/// - lock directory: `$XDG_RUNTIME_DIR/keepfresh`, else `<temp>/keepfresh-<uid>`;
/// - fallback file: `<data dir>/keepfresh/<service>-<account>-<hash>.sealed`;
/// - largest secret: [`KeyringStore::PLATFORM_MAX_SECRET`].
#[derive(Clone)]
pub struct KeyringStoreBuilder {
    service: String,
    account: String,
    store: Option<Arc<CredentialStore>>,
    lock_dir: Option<PathBuf>,
    fallback: FallbackChoice,
    max_secret: usize,
}

#[derive(Clone, Debug)]
enum FallbackChoice {
    Default,
    File(PathBuf),
    Off,
}

impl fmt::Debug for KeyringStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringStoreBuilder")
            .field("service", &self.service)
            .field("account", &self.account)
            .field("lock_dir", &self.lock_dir)
            .field("fallback", &self.fallback)
            .field("max_secret", &self.max_secret)
            .finish_non_exhaustive()
    }
}

impl KeyringStore {
    /// The largest document this platform's keyring takes in one secret before the store
    /// falls back to the encrypted file: 2,560 bytes on Windows, 32 KiB elsewhere.
    pub const PLATFORM_MAX_SECRET: usize = platform::MAX_SECRET;

    /// The store in the keyring entry `service`/`account`, with every default (see
    /// [`KeyringStoreBuilder`]).
    ///
    /// See the [type-level example](KeyringStore).
    ///
    /// # Errors
    /// As [`KeyringStoreBuilder::open`].
    pub fn open(service: &str, account: &str) -> Result<KeyringStore, StoreError> {
        Self::builder(service, account).open()
    }

    /// Settings for the store in the keyring entry `service`/`account`.
    ///
    /// See the [type-level example](KeyringStore).
    pub fn builder(service: &str, account: &str) -> KeyringStoreBuilder {
        KeyringStoreBuilder {
            service: service.to_owned(),
            account: account.to_owned(),
            store: None,
            lock_dir: None,
            fallback: FallbackChoice::Default,
            max_secret: platform::MAX_SECRET,
        }
    }

    /// The entry's service name.
    ///
    /// ```
    /// # use keepfresh::store::{keyring_core::mock, KeyringStore};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # use std::os::unix::fs::PermissionsExt;
    /// # std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    /// let store = KeyringStore::builder("my-app", "alice")
    ///     .credential_store(mock::Store::new().unwrap())
    ///     .lock_dir(dir.path())
    ///     .without_fallback()
    ///     .open()
    ///     .unwrap();
    /// assert_eq!((store.service(), store.account()), ("my-app", "alice"));
    /// assert_eq!(store.fallback_file(), None);
    /// ```
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The entry's account name.
    ///
    /// See [`service`](KeyringStore::service).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Where the tokens go when they are too big for the keyring; `None` when the fallback is
    /// off.
    ///
    /// See [`service`](KeyringStore::service).
    pub fn fallback_file(&self) -> Option<&Path> {
        self.fallback.as_deref()
    }
}

impl KeyringStoreBuilder {
    /// The keyring to use instead of the default: another platform store (the kernel keyutils
    /// store, say) or [`keyring_core::mock`] in tests.
    ///
    /// See the [`KeyringStore`] example.
    pub fn credential_store(mut self, store: Arc<CredentialStore>) -> KeyringStoreBuilder {
        self.store = Some(store);
        self
    }

    /// The directory for the lock files (created `0700`; refused if group or others can access
    /// it or another user owns it). Every process sharing the entry must use the same one.
    ///
    /// See the [`KeyringStore`] example.
    pub fn lock_dir(mut self, dir: impl Into<PathBuf>) -> KeyringStoreBuilder {
        self.lock_dir = Some(dir.into());
        self
    }

    /// The encrypted file for token sets too big for the keyring. Every process sharing the
    /// entry must use the same one.
    ///
    /// See the [`KeyringStore`] example.
    pub fn fallback_file(mut self, path: impl Into<PathBuf>) -> KeyringStoreBuilder {
        self.fallback = FallbackChoice::File(path.into());
        self
    }

    /// No fallback file: a token set too big for the keyring fails to save with a
    /// [`StoreErrorKind::Config`] error.
    ///
    /// See [`KeyringStore::service`].
    pub fn without_fallback(mut self) -> KeyringStoreBuilder {
        self.fallback = FallbackChoice::Off;
        self
    }

    /// The largest document put in the keyring entry itself (default
    /// [`KeyringStore::PLATFORM_MAX_SECRET`]); bigger ones go to the fallback file. Lower it
    /// for a keyring with a smaller limit.
    ///
    /// ```
    /// # use keepfresh::store::{keyring_core::mock, KeyringStore, TokenStore};
    /// # use keepfresh::{AccessToken, TokenSet};
    /// # futures::executor::block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # use std::os::unix::fs::PermissionsExt;
    /// # std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    /// let store = KeyringStore::builder("my-app", "alice")
    ///     .credential_store(mock::Store::new().unwrap())
    ///     .lock_dir(dir.path().join("locks"))
    ///     .fallback_file(dir.path().join("alice.sealed"))
    ///     .max_secret_len(256)
    ///     .open()
    ///     .unwrap();
    /// let now = time::OffsetDateTime::now_utc();
    /// let big = TokenSet::new(AccessToken::new("x".repeat(1000)), None, now, now + time::Duration::hours(1));
    /// store.save(None, &big).await.unwrap();
    /// assert!(dir.path().join("alice.sealed").exists());
    /// assert_eq!(store.load().await.unwrap().unwrap().tokens, big);
    /// # });
    /// ```
    pub fn max_secret_len(mut self, bytes: usize) -> KeyringStoreBuilder {
        self.max_secret = bytes;
        self
    }

    /// Opens the store: finds the keyring, makes the entry and the lock directory. Nothing is
    /// written to the keyring until the first save.
    ///
    /// See the [`KeyringStore`] example.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] when there is no keyring (no D-Bus session or Secret Service
    /// on Linux: the message says how to start one), the keyring refuses the service or
    /// account, the lock directory fails the permission checks, or no data directory is known
    /// for the default fallback file; [`StoreErrorKind::Io`] when the lock directory cannot be
    /// created.
    pub fn open(self) -> Result<KeyringStore, StoreError> {
        let KeyringStoreBuilder {
            service,
            account,
            store,
            lock_dir,
            fallback,
            max_secret,
        } = self;
        let store = match store {
            Some(s) => s,
            None => platform::default_store()?,
        };
        let name = format!("keyring entry {service}/{account}");
        let entry = Entry::new_in_store(&store, &service, &account)
            .map_err(|e| keyring_error(&name, "cannot open", e))?;
        let lock_dir = lock_dir.unwrap_or_else(platform::runtime_dir);
        fsx::ensure_private_dir(&lock_dir)?;
        let stem = platform::stem(&service, &account);
        let fallback_path = match fallback {
            FallbackChoice::Off => None,
            FallbackChoice::File(path) => Some(path),
            FallbackChoice::Default => Some(
                platform::data_dir()
                    .ok_or_else(|| {
                        StoreError::new(
                            StoreErrorKind::Config,
                            "no data directory for the keyring store's fallback file (HOME is not set): \
                             choose one with KeyringStoreBuilder::fallback_file, or turn it off with without_fallback",
                        )
                    })?
                    .join(format!("{stem}.sealed")),
            ),
        };
        if let Some(path) = &fallback_path
            && path.file_name().is_none()
        {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                format!("{} does not name a file", path.display()),
            ));
        }
        let blob = KeyringBlob {
            entry,
            name: name.clone(),
            max_secret,
            fallback: fallback_path.clone().map(|path| Fallback {
                path,
                identity: format!("keyring {service}/{account}"),
                key_store: Arc::clone(&store),
                key_service: service.clone(),
                key_account: format!("{account}#keepfresh-file-key"),
                lock_dir: lock_dir.clone(),
                sealer: Mutex::new(None),
            }),
        };
        let local = Local::new(Box::new(blob), Box::new(Plain), &lock_dir.join(&stem), name);
        Ok(KeyringStore {
            local: Arc::new(local),
            service: service.into(),
            account: account.into(),
            fallback: fallback_path.map(Into::into),
        })
    }
}

impl Key {
    /// The key in the OS keyring entry `service`/`account` (the default keyring, as for
    /// [`KeyringStore::open`]); when the entry does not exist, a random key is created and
    /// stored there (base64 text). Creation takes a lock file in the private runtime directory,
    /// so two processes starting at once agree on one key.
    ///
    /// Blocks on the keyring (and possibly an unlock prompt): call it at startup.
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] when there is no keyring or it refuses access;
    /// [`StoreErrorKind::Corrupt`] when the entry holds something that is not a key (it is
    /// left as it is); [`StoreErrorKind::Io`] for keyring failures.
    pub fn from_keyring(service: &str, account: &str) -> Result<Key, StoreError> {
        let store = platform::default_store()?;
        Key::from_keyring_in(&store, service, account)
    }

    /// As [`Key::from_keyring`], in the given keyring.
    ///
    /// ```
    /// use keepfresh::store::{keyring_core::{mock, CredentialStore}, Key};
    /// use std::sync::Arc;
    ///
    /// let keyring: Arc<CredentialStore> = mock::Store::new().unwrap();
    /// let first = Key::from_keyring_in(&keyring, "my-app", "store-key").unwrap(); // created
    /// let again = Key::from_keyring_in(&keyring, "my-app", "store-key").unwrap(); // read back
    /// assert_eq!(first.id(), again.id());
    /// ```
    ///
    /// # Errors
    /// As [`Key::from_keyring`].
    pub fn from_keyring_in(
        store: &Arc<CredentialStore>,
        service: &str,
        account: &str,
    ) -> Result<Key, StoreError> {
        let lock_dir = platform::runtime_dir();
        fsx::ensure_private_dir(&lock_dir)?;
        load_key(store, service, account, Some(&lock_dir))
    }
}

/// The key in `service`/`account`; when missing, created under a lock file in `create_in`, or
/// with `None` reported as a [`StoreErrorKind::Corrupt`] error (a sealed file whose key is gone).
fn load_key(
    store: &Arc<CredentialStore>,
    service: &str,
    account: &str,
    create_in: Option<&Path>,
) -> Result<Key, StoreError> {
    let name = format!("keyring entry {service}/{account}");
    let entry = Entry::new_in_store(store, service, account)
        .map_err(|e| keyring_error(&name, "cannot open", e))?;
    let read = |entry: &Entry| match entry.get_password() {
        Ok(text) => {
            let text = Zeroizing::new(text);
            decode_text(text.as_bytes()).map(Some).ok_or_else(|| {
                StoreError::new(
                    StoreErrorKind::Corrupt,
                    format!("{name} does not hold a keepfresh key (32 bytes in base64); it is left as it is"),
                )
            })
        }
        Err(keyring_core::Error::NoEntry) => Ok(None),
        Err(keyring_core::Error::BadEncoding(bytes)) => {
            drop(Zeroizing::new(bytes));
            Err(StoreError::new(
                StoreErrorKind::Corrupt,
                format!("{name} does not hold a keepfresh key (not text); it is left as it is"),
            ))
        }
        Err(e) => Err(keyring_error(&name, "cannot read", e)),
    };
    if let Some(key) = read(&entry)? {
        return Ok(key);
    }
    let Some(lock_dir) = create_in else {
        return Err(StoreError::new(
            StoreErrorKind::Corrupt,
            format!("{name}, the key of the encrypted fallback file, is missing from the keyring: the file cannot be opened; it is left as it is"),
        ));
    };
    let lock_path = lock_dir.join(format!("{}.keygen.lock", platform::stem(service, account)));
    let lock = fsx::open_lock_file(&lock_path)?;
    lock.lock()
        .map_err(|e| local::io_error(&lock_path, "cannot lock", &e))?;
    // Another process may have created it while this one waited for the lock.
    if let Some(key) = read(&entry)? {
        return Ok(key);
    }
    let key = Key::generate()?;
    entry
        .set_password(&key.to_base64())
        .map_err(|e| keyring_error(&name, "cannot store the new key in", e))?;
    Ok(key)
}

/// A keyring failure as a store error, without the secret bytes some errors carry.
fn keyring_error(name: &str, doing: &str, e: keyring_core::Error) -> StoreError {
    use keyring_core::Error as E;
    let (kind, detail) = match e {
        E::PlatformFailure(err) => (StoreErrorKind::Io, format!("the keyring failed: {err}")),
        E::NoStorageAccess(err) => (
            StoreErrorKind::Config,
            format!("the keyring is locked or refuses access: {err}"),
        ),
        E::NoEntry => (StoreErrorKind::Io, "the entry vanished".to_owned()),
        E::BadEncoding(bytes) | E::BadDataFormat(bytes, _) => {
            drop(Zeroizing::new(bytes));
            (
                StoreErrorKind::Corrupt,
                "the keyring returned data in an unexpected format; it is left as it is".to_owned(),
            )
        }
        E::BadStoreFormat(reason) => (
            StoreErrorKind::Corrupt,
            format!("the keyring's own data is malformed: {reason}"),
        ),
        E::TooLong(what, limit) => (
            StoreErrorKind::Config,
            format!("the {what} is longer than this keyring's limit of {limit}"),
        ),
        E::Invalid(what, reason) => (
            StoreErrorKind::Config,
            format!("the keyring refuses the {what}: {reason}"),
        ),
        E::Ambiguous(entries) => (
            StoreErrorKind::Config,
            format!(
                "{} keyring items match this service and account; remove the extra ones",
                entries.len()
            ),
        ),
        E::NoDefaultStore => (
            StoreErrorKind::Config,
            "no keyring is configured".to_owned(),
        ),
        E::NotSupportedByStore(reason) => (
            StoreErrorKind::Config,
            format!("the keyring does not support this: {reason}"),
        ),
        other => (StoreErrorKind::Io, format!("the keyring failed: {other}")),
    };
    StoreError::new(kind, format!("{doing} {name}: {detail}"))
}

#[async_trait]
impl TokenStore for KeyringStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        local::unblock(&self.local, |l| l.load()).await
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        let tokens = tokens.clone();
        local::unblock(&self.local, move |l| l.save(expected, &tokens)).await
    }

    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        local::unblock(&self.local, move |l| l.clear(expected)).await
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        local::unblock(&self.local, move |l| l.try_lease(ttl)).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.local.renew_lease(lease, ttl))
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        self.local.release(&lease);
        Ok(())
    }

    async fn changed(&self) -> Result<(), StoreError> {
        self.local.locks().changed().await;
        Ok(())
    }
}

//! Tokens in a private file on this machine, shared safely by every process of the user that
//! opens the same path.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::local::{self, fsx, io_error, Blob, Codec, Local, Plain, MAX_DOCUMENT};
use super::Version;
use super::{Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore};
use crate::token::TokenSet;

/// A token store in one file, for a desktop tool or an MCP server started several times on one
/// machine.
///
/// - **Private:** the directory is created `0700` and the file `0600`. A file or directory that
///   group or others can access, a symbolic link, or a file owned by another user is refused
///   with an error that says how to fix it (as ssh does).
/// - **Atomic and durable:** every save writes a new file beside the old one, syncs it, renames
///   it over the old one and syncs the directory: a crash at any point leaves the old or the
///   new token set, never a torn file.
/// - **Compare-and-swap:** the file carries a version; a save that expected another version
///   writes nothing and returns [`SaveOutcome::Conflict`] with what the file holds, so a process
///   never overwrites tokens another process just rotated.
/// - **One refresh at a time across processes:** the refresh lease is an advisory lock on the
///   sidecar `<file>.lease` (the data file itself is replaced on every save, so it is never
///   locked). The OS drops the lock when its holder exits or crashes. Credentials in one
///   process on the same path exclude each other in the same way. A process waiting for the
///   lease is woken when it is given back ([`TokenStore::changed`]) and then reads the new
///   tokens instead of refreshing again.
/// - **Bad content** (truncated, not JSON, another format, over 1 MiB) is a
///   [`StoreErrorKind::Corrupt`] error, and the file is left untouched for you to inspect.
///
/// File I/O runs on a small blocking thread pool (the `blocking` crate), never on the async
/// executor's threads. On non-Unix systems the permission checks are skipped: protect the
/// directory with the platform's ACLs.
///
/// ```
/// use keepfresh::store::{FileStore, SaveOutcome, TokenStore};
/// use keepfresh::{AccessToken, RefreshToken, TokenSet};
///
/// # futures::executor::block_on(async {
/// let dir = std::env::temp_dir().join(format!("keepfresh-doc-{}", std::process::id()));
/// let store = FileStore::open(dir.join("github.json")).unwrap();
/// let now = time::OffsetDateTime::now_utc();
/// let set = TokenSet::new(AccessToken::new("at"), Some(RefreshToken::new("rt")), now, now + time::Duration::hours(1));
/// let SaveOutcome::Saved(v1) = store.save(None, &set).await.unwrap() else { panic!() };
///
/// // Another process (here: another handle) opening the same file sees the same tokens.
/// let other = FileStore::open(dir.join("github.json")).unwrap();
/// assert_eq!(other.load().await.unwrap().unwrap().version, v1);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct FileStore {
    local: Arc<Local>,
    path: Arc<Path>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

impl FileStore {
    /// A store in the file at `path`, creating its directory (mode `0700`) when missing. The
    /// file itself is created by the first save.
    ///
    /// See the [type-level example](FileStore).
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] when the path has no file name, or its directory or an
    /// existing file fails the permission checks; [`StoreErrorKind::Io`] when the directory
    /// cannot be created.
    pub fn open(path: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let path: PathBuf = path.into();
        Self::with_codec(path, Box::new(Plain))
    }

    /// A file store whose content is sealed by `codec` (the encrypted file store).
    pub(crate) fn with_codec(
        path: PathBuf,
        codec: Box<dyn Codec>,
    ) -> Result<FileStore, StoreError> {
        if path.file_name().is_none() {
            return Err(StoreError::new(
                StoreErrorKind::Config,
                format!("{} does not name a file", path.display()),
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fsx::ensure_private_dir(&dir)?;
        // Check an existing file now, so a misconfiguration shows at startup.
        drop(fsx::open_private(&path)?);
        let blob = FileBlob::new(path.clone());
        let name = path.display().to_string();
        let local = Local::new(Box::new(blob), codec, &path, name);
        remove_stale_temporaries(&local, &dir, &path)?;
        Ok(FileStore {
            local: Arc::new(local),
            path: path.into(),
        })
    }

    /// The token file's path.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("keepfresh-doc-path-{}", std::process::id()));
    /// let store = keepfresh::store::FileStore::open(dir.join("t.json")).unwrap();
    /// assert!(store.path().ends_with("t.json"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared store machinery, for the stores built on a file store.
    #[cfg(feature = "encrypted")]
    pub(crate) fn local(&self) -> &Arc<Local> {
        &self.local
    }
}

#[async_trait]
impl TokenStore for FileStore {
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

/// Removes the temporary files of writers that died between creating and renaming theirs
/// (`atomic-write-file` names them `.<file>.XXXXXX`). Under the write lock no writer is
/// between those steps, so every such file is a leftover.
fn remove_stale_temporaries(local: &Local, dir: &Path, path: &Path) -> Result<(), StoreError> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let prefix = format!(".{name}.");
    let _write = local.write_lock()?;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(suffix) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let is_temporary = suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
        if is_temporary && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The data file: read through the permission checks, replaced atomically.
pub(crate) struct FileBlob {
    path: PathBuf,
}

impl FileBlob {
    /// The blob in the file at `path`; its directory must exist.
    pub(crate) fn new(path: PathBuf) -> FileBlob {
        FileBlob { path }
    }
}

impl Blob for FileBlob {
    fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let Some(file) = fsx::open_private(&self.path)? else {
            return Ok(None);
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
        // One byte over the cap tells an oversized file from one exactly at it.
        file.take(MAX_DOCUMENT as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&self.path, "cannot read", &e))?;
        Ok(Some(bytes))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut options = atomic_write_file::OpenOptions::new();
        #[cfg(unix)]
        {
            use atomic_write_file::unix::OpenOptionsExt as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            options
                .mode(0o600)
                .preserve_mode(false)
                .preserve_owner(false);
        }
        let mut file = options
            .open(&self.path)
            .map_err(|e| io_error(&self.path, "cannot write", &e))?;
        file.write_all(bytes)
            .map_err(|e| io_error(&self.path, "cannot write", &e))?;
        // Syncs the new file, renames it over the old one and syncs the directory.
        file.commit()
            .map_err(|e| io_error(&self.path, "cannot replace", &e))
    }
}

//! The machinery shared by stores that live on this machine (a file, an encrypted file, the OS
//! keyring): a versioned document, compare-and-swap under a short write lock, and the refresh
//! lease as an advisory lock on a sidecar file, so processes and credentials of one process
//! coordinate the same way.

pub(crate) mod fsx;
mod locks;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, Version};
use crate::token::TokenSet;

pub(crate) use locks::Locks;

/// The format number written into every document; a reader refuses any other.
const FORMAT: u32 = 1;

/// The largest document a local store reads; anything bigger is refused as corrupt. A token set
/// is a few kilobytes at most, so a bigger file is not ours (or is an attack on memory).
pub(crate) const MAX_DOCUMENT: usize = crate::limits::MAX_STORE_DOCUMENT_BYTES;

/// Where a local store keeps the bytes of its document. Every method blocks; the store calls
/// them on a blocking thread.
pub(crate) trait Blob: Send + Sync + 'static {
    /// The stored bytes, `None` when nothing was ever written.
    fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// Replaces the bytes atomically and durably: a reader sees the old or the new bytes.
    fn write(&self, bytes: &[u8]) -> Result<(), StoreError>;
}

/// How the document's bytes are sealed at rest.
pub(crate) trait Codec: Send + Sync + 'static {
    /// Seals the serialized document.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Opens sealed bytes; a wrong key or tampered bytes are an error, never garbage.
    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError>;
}

/// Stores the document as it is (the file's permissions protect it).
pub(crate) struct Plain;

impl Codec for Plain {
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(plain.to_vec())
    }
    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        Ok(Zeroizing::new(sealed.to_vec()))
    }
}

/// What a local store writes: the version lives with the tokens, so compare-and-swap needs no
/// second file. A cleared store keeps its version (`tokens: null`), so versions never repeat.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    keepfresh_store: u32,
    version: u64,
    tokens: Option<TokenSet>,
}

/// One local store: the document's blob and codec, and the locks beside it.
pub(crate) struct Local {
    blob: Box<dyn Blob>,
    codec: Box<dyn Codec>,
    locks: Locks,
    /// Names the store in error messages (a path, a keyring entry); never secret.
    name: String,
}

impl fmt::Debug for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local").field("name", &self.name).finish()
    }
}

impl Local {
    /// A store over `blob`, sealed by `codec`, whose locks are `<lock_base>.lease` and
    /// `<lock_base>.lock`.
    pub(crate) fn new(
        blob: Box<dyn Blob>,
        codec: Box<dyn Codec>,
        lock_base: &Path,
        name: String,
    ) -> Local {
        Local {
            blob,
            codec,
            locks: Locks::new(lock_base),
            name,
        }
    }

    /// Reads and decodes the document; `None` when nothing was written.
    fn read(&self) -> Result<Option<Document>, StoreError> {
        let Some(sealed) = self.blob.read()? else {
            return Ok(None);
        };
        if sealed.len() > MAX_DOCUMENT {
            return Err(self.corrupt(format_args!(
                "{} bytes, more than the {} a token set can take",
                sealed.len(),
                MAX_DOCUMENT
            )));
        }
        let plain = self.codec.open(&sealed)?;
        let doc: Document = serde_json::from_slice(&plain).map_err(|e| {
            // serde_json's message names a position and what it expected, never the content.
            self.corrupt(format_args!(
                "not a keepfresh token document ({}: line {}, column {})",
                category(&e),
                e.line(),
                e.column()
            ))
        })?;
        if doc.keepfresh_store != FORMAT {
            return Err(self.corrupt(format_args!(
                "written in format {}; this keepfresh reads format {FORMAT} (a newer keepfresh wrote it?)",
                doc.keepfresh_store
            )));
        }
        Ok(Some(doc))
    }

    fn write(&self, version: u64, tokens: Option<&TokenSet>) -> Result<(), StoreError> {
        #[derive(Serialize)]
        struct DocumentRef<'a> {
            keepfresh_store: u32,
            version: u64,
            tokens: Option<&'a TokenSet>,
        }
        let plain = Zeroizing::new(
            serde_json::to_vec(&DocumentRef {
                keepfresh_store: FORMAT,
                version,
                tokens,
            })
            .map_err(|_| StoreError::new(StoreErrorKind::Io, "could not serialize the tokens"))?,
        );
        let sealed = self.codec.seal(&plain)?;
        self.blob.write(&sealed)
    }

    fn corrupt(&self, detail: fmt::Arguments<'_>) -> StoreError {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!("{}: {detail}; it is left as it is", self.name),
        )
    }

    /// [`TokenStore::load`](super::TokenStore::load), blocking.
    pub(crate) fn load(&self) -> Result<Option<Stored>, StoreError> {
        Ok(self.read()?.and_then(|doc| {
            doc.tokens.map(|tokens| Stored {
                version: Version(doc.version),
                tokens,
            })
        }))
    }

    /// [`TokenStore::save`](super::TokenStore::save), blocking.
    pub(crate) fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        let _write = self.locks.write_lock()?;
        let doc = self.read()?;
        let (version, current) = match doc {
            Some(doc) => (doc.version, doc.tokens),
            None => (0, None),
        };
        let holds = current.as_ref().map(|_| Version(version));
        if holds != expected {
            return Ok(SaveOutcome::Conflict(current.map(|tokens| Stored {
                version: Version(version),
                tokens,
            })));
        }
        let next = version + 1;
        self.write(next, Some(tokens))?;
        self.locks.notify();
        Ok(SaveOutcome::Saved(Version(next)))
    }

    /// [`TokenStore::clear`](super::TokenStore::clear), blocking.
    pub(crate) fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        let _write = self.locks.write_lock()?;
        match self.read()? {
            Some(doc) if doc.tokens.is_some() && doc.version == expected.0 => {
                self.write(doc.version + 1, None)?;
                self.locks.notify();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Writes the document again under the write lock, unchanged (same version, same tokens),
    /// after `between` switched how it is sealed: the encrypted store's key rotation. An empty
    /// store has nothing to rewrite; bad content is refused before `between` runs.
    #[cfg(feature = "encrypted")]
    pub(crate) fn reseal(&self, between: impl FnOnce()) -> Result<(), StoreError> {
        let _write = self.locks.write_lock()?;
        let doc = self.read()?;
        between();
        if let Some(doc) = doc {
            self.write(doc.version, doc.tokens.as_ref())?;
            self.locks.notify();
        }
        Ok(())
    }

    pub(crate) fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        self.locks.try_lease(ttl)
    }

    pub(crate) fn renew_lease(&self, lease: &Lease, ttl: Duration) -> bool {
        self.locks.renew(lease, ttl)
    }

    pub(crate) fn release(&self, lease: &Lease) {
        self.locks.release(lease);
    }

    pub(crate) fn write_lock(&self) -> Result<locks::WriteGuard, StoreError> {
        self.locks.write_lock()
    }

    pub(crate) fn locks(&self) -> &Locks {
        &self.locks
    }
}

/// serde_json's error category in words.
fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "unexpected fields or values",
        serde_json::error::Category::Eof => "truncated",
    }
}

/// An I/O error on `what` as a store error; permission problems are configuration errors.
pub(crate) fn io_error(what: &Path, doing: &str, e: &io::Error) -> StoreError {
    let kind = match e.kind() {
        io::ErrorKind::PermissionDenied => StoreErrorKind::Config,
        _ => StoreErrorKind::Io,
    };
    StoreError::new(kind, format!("{doing} {}: {e}", what.display()))
}

/// Runs blocking store work off the async executor's threads.
pub(crate) async fn unblock<T: Send + 'static>(
    local: &Arc<Local>,
    work: impl FnOnce(&Local) -> T + Send + 'static,
) -> T {
    let local = Arc::clone(local);
    blocking::unblock(move || work(&local)).await
}

/// `<path><suffix>` (a sidecar beside a file).
pub(crate) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

//! The keyring entry as the place where a local store's document lives, with the encrypted
//! file beside it for documents bigger than the platform lets one secret be.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{keyring_error, load_key};
use crate::store::encrypted::Sealer;
use crate::store::file::FileBlob;
use crate::store::local::{fsx, Blob};
use crate::store::{StoreError, StoreErrorKind};

/// What the entry holds while the document is in the fallback file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pointer {
    keepfresh_fallback: u32,
    file: String,
}

const POINTER_FORMAT: u32 = 1;
const POINTER_PREFIX: &[u8] = b"{\"keepfresh_fallback\"";

/// How often a read follows a pointer to a file that a concurrent writer just removed (it moved
/// the document back into the entry) before calling the store corrupt.
const POINTER_RETRIES: usize = 3;

pub(super) struct KeyringBlob {
    pub(super) entry: Entry,
    /// Names the entry in messages: `keyring entry <service>/<account>`.
    pub(super) name: String,
    pub(super) max_secret: usize,
    pub(super) fallback: Option<Fallback>,
}

/// The encrypted file for documents too big for the entry, and where its key comes from.
pub(super) struct Fallback {
    pub(super) path: PathBuf,
    pub(super) identity: String,
    pub(super) key_store: Arc<CredentialStore>,
    pub(super) key_service: String,
    pub(super) key_account: String,
    pub(super) lock_dir: PathBuf,
    /// Made at the first use: a store whose tokens fit the entry never creates the key.
    pub(super) sealer: Mutex<Option<Arc<Sealer>>>,
}

impl Fallback {
    /// The file's sealer; its key is created only for a write (`create`): a read of a file
    /// whose key is gone reports that instead of making a new key.
    fn sealer(&self, create: bool) -> Result<Arc<Sealer>, StoreError> {
        let mut slot = self.sealer.lock();
        if let Some(s) = &*slot {
            return Ok(Arc::clone(s));
        }
        let key = load_key(
            &self.key_store,
            &self.key_service,
            &self.key_account,
            create.then_some(self.lock_dir.as_path()),
        )?;
        let file_name = self.path.file_name().unwrap_or_default();
        let sealer = Arc::new(Sealer::new(
            self.path.display().to_string(),
            &self.identity,
            file_name.as_encoded_bytes(),
            key,
        ));
        *slot = Some(Arc::clone(&sealer));
        Ok(sealer)
    }

    fn pointer(&self) -> Vec<u8> {
        // Serializing a struct of a number and a string cannot fail.
        serde_json::to_vec(&Pointer {
            keepfresh_fallback: POINTER_FORMAT,
            file: self.path.to_string_lossy().into_owned(),
        })
        .unwrap_or_default()
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }
}

impl KeyringBlob {
    fn get(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.entry.get_secret() {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(keyring_error(&self.name, "cannot read", e)),
        }
    }

    fn set(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.entry
            .set_secret(bytes)
            .map_err(|e| keyring_error(&self.name, "cannot write", e))
    }

    fn corrupt(&self, detail: std::fmt::Arguments<'_>) -> StoreError {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!("{}: {detail}; it is left as it is", self.name),
        )
    }

    fn config(&self, detail: std::fmt::Arguments<'_>) -> StoreError {
        StoreError::new(StoreErrorKind::Config, format!("{}: {detail}", self.name))
    }

    /// The fallback that `pointer` names, if it is this store's.
    fn follow(&self, bytes: &[u8]) -> Result<&Fallback, StoreError> {
        let pointer: Pointer = serde_json::from_slice(bytes).map_err(|_| {
            self.corrupt(format_args!("holds a malformed pointer to a fallback file"))
        })?;
        if pointer.keepfresh_fallback != POINTER_FORMAT {
            return Err(self.corrupt(format_args!(
                "points to a fallback file in format {}; this keepfresh reads format {POINTER_FORMAT}",
                pointer.keepfresh_fallback
            )));
        }
        let Some(fallback) = &self.fallback else {
            return Err(self.config(format_args!(
                "the tokens are in the encrypted file {} (they were too big for the keyring), but this store was opened without a fallback file",
                pointer.file
            )));
        };
        if Path::new(&pointer.file) != fallback.path {
            return Err(self.config(format_args!(
                "the tokens are in the encrypted file {}, but this store's fallback file is {}: open it with that fallback file",
                pointer.file,
                fallback.path.display()
            )));
        }
        Ok(fallback)
    }
}

impl Blob for KeyringBlob {
    fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        for _ in 0..POINTER_RETRIES {
            let Some(bytes) = self.get()? else {
                return Ok(None);
            };
            if !bytes.starts_with(POINTER_PREFIX) {
                return Ok(Some(bytes));
            }
            let fallback = self.follow(&bytes)?;
            let file = FileBlob::new(fallback.path.clone());
            if let Some(sealed) = file.read()? {
                return fallback.sealer(false)?.open(&sealed).map(Some);
            }
            // The file is gone: a writer moved the tokens back into the entry after we read
            // the pointer. Read the entry again.
        }
        Err(self.corrupt(format_args!(
            "points to an encrypted fallback file that does not exist"
        )))
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() <= self.max_secret {
            self.set(bytes)?;
            if let Some(fallback) = &self.fallback {
                // The tokens moved back into the entry: the file holds spent ones. The save
                // has happened, so a failure to remove it is not the save's failure.
                let _ = std::fs::remove_file(&fallback.path);
            }
            return Ok(());
        }
        let Some(fallback) = &self.fallback else {
            return Err(self.config(format_args!(
                "the token set takes {} bytes, more than the {} this keyring holds in one secret: \
                 open the store with a fallback file, or use EncryptedFileStore with Key::from_keyring",
                bytes.len(),
                self.max_secret
            )));
        };
        // The file first, then the pointer: a crash in between leaves the entry as it was.
        fsx::ensure_private_dir(fallback.dir())?;
        let sealed = fallback.sealer(true)?.seal(bytes)?;
        FileBlob::new(fallback.path.clone()).write(&sealed)?;
        self.set(&fallback.pointer())
    }
}

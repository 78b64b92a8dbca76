//! What differs between operating systems: which keyring, how big a secret it takes, and where
//! the lock files and the fallback file live.

use std::path::PathBuf;
use std::sync::Arc;

use keyring_core::CredentialStore;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::store::{StoreError, StoreErrorKind};

/// The largest secret the platform keyring takes: Windows Credential Manager caps a credential
/// blob at 2,560 bytes (`CRED_MAX_CREDENTIAL_BLOB_SIZE`).
#[cfg(windows)]
pub(super) const MAX_SECRET: usize = 2560;

/// The largest secret put in the platform keyring. Secret Service and the macOS Keychain take
/// more, but the kernel keyutils store (which a program may plug in) stops at 32,767 bytes,
/// and a token set over 32 KiB is unusual enough to go to the fallback file.
#[cfg(not(windows))]
pub(super) const MAX_SECRET: usize = 32 * 1024;

/// The platform keyring, made once per process.
static NATIVE: Mutex<Option<Arc<CredentialStore>>> = Mutex::new(None);

/// `keyring_core`'s default store when the program set one, else the platform's keyring.
pub(super) fn default_store() -> Result<Arc<CredentialStore>, StoreError> {
    if let Some(store) = keyring_core::get_default_store() {
        return Ok(store);
    }
    let mut cached = NATIVE.lock();
    if let Some(store) = &*cached {
        return Ok(Arc::clone(store));
    }
    let store = native()?;
    *cached = Some(Arc::clone(&store));
    Ok(store)
}

#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
fn native() -> Result<Arc<CredentialStore>, StoreError> {
    match dbus_secret_service_keyring_store::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(StoreError::new(
            StoreErrorKind::Config,
            format!(
                "no Secret Service keyring ({e}): on a desktop, start GNOME Keyring or KWallet; \
                 headless, run under `dbus-run-session` with `gnome-keyring-daemon --unlock --components=secrets`, \
                 or use EncryptedFileStore with a key from a file or the environment"
            ),
        )),
    }
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
fn native() -> Result<Arc<CredentialStore>, StoreError> {
    match apple_native_keyring_store::keychain::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(StoreError::new(
            StoreErrorKind::Config,
            format!("the login keychain is not available: {e}"),
        )),
    }
}

#[cfg(windows)]
fn native() -> Result<Arc<CredentialStore>, StoreError> {
    match windows_native_keyring_store::Store::new() {
        Ok(store) => Ok(store),
        Err(e) => Err(StoreError::new(
            StoreErrorKind::Config,
            format!("the Windows Credential Manager is not available: {e}"),
        )),
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos",
    target_os = "ios",
    windows
)))]
fn native() -> Result<Arc<CredentialStore>, StoreError> {
    Err(StoreError::new(
        StoreErrorKind::Config,
        "keepfresh knows no keyring on this platform: give one with KeyringStoreBuilder::credential_store",
    ))
}

/// A private directory for lock files that vanishes at logout or reboot: `$XDG_RUNTIME_DIR`
/// when set, else a per-user directory in the temporary directory (checked for its owner and
/// mode before use, so a directory planted by another user is refused).
pub(super) fn runtime_dir() -> PathBuf {
    #[cfg(unix)]
    {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
        {
            return dir.join("keepfresh");
        }
        let uid = rustix::process::geteuid().as_raw();
        std::env::temp_dir().join(format!("keepfresh-{uid}"))
    }
    #[cfg(not(unix))]
    {
        std::env::temp_dir().join("keepfresh")
    }
}

/// The per-user directory for application data, `keepfresh` inside it.
pub(super) fn data_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|d| d.is_absolute())
    };
    let base = if cfg!(windows) {
        var("LOCALAPPDATA")
    } else if cfg!(any(target_os = "macos", target_os = "ios")) {
        var("HOME").map(|h| h.join("Library/Application Support"))
    } else {
        var("XDG_DATA_HOME").or_else(|| var("HOME").map(|h| h.join(".local/share")))
    };
    base.map(|b| b.join("keepfresh"))
}

/// A file-name stem for one keyring entry: readable, and unique through a hash of the exact
/// service and account.
pub(super) fn stem(service: &str, account: &str) -> String {
    let readable = |s: &str| -> String {
        s.chars()
            .take(32)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut hash = Sha256::new();
    for part in [service, account] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{tag}", readable(service), readable(account))
}

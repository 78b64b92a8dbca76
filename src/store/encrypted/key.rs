//! The 32-byte key that seals an encrypted store, where it comes from, and the fingerprint that
//! names it without revealing it.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::store::local::{fsx, io_error};
use crate::store::{StoreError, StoreErrorKind};

/// The key length: XChaCha20-Poly1305 takes 256-bit keys.
pub(crate) const KEY_LEN: usize = 32;

/// A 32-byte key for [`EncryptedFileStore`](super::EncryptedFileStore).
///
/// The bytes are zeroized when the last clone is dropped and appear in no `Debug` output, no
/// error and no log; only the key's [`KeyId`] (a one-way fingerprint) does.
///
/// Where a key can come from:
///
/// | constructor | source | format |
/// |---|---|---|
/// | [`Key::generate`] | the OS random source | — |
/// | [`Key::from_env`] | an environment variable | base64 (standard alphabet, padding optional) or hex, 64 digits |
/// | [`Key::from_file`] | a private file (`0600`, owned by this user, not a symlink) | 32 raw bytes, or base64 or hex text |
/// | `Key::from_keyring` (feature `keyring`) | the OS keyring; a random key is created on first use | base64 text |
/// | [`Key::from_bytes`] | your own secret manager | 32 bytes |
///
/// ```standalone_crate
/// use keepfresh::store::Key;
///
/// let key = Key::generate().unwrap();
/// // Hand it to another process, for example in an environment variable.
/// // SAFETY: this example runs alone in its own process (`standalone_crate`), on one thread:
/// // nothing reads or writes the environment concurrently.
/// unsafe { std::env::set_var("KEEPFRESH_DOC_KEY", key.to_base64().as_str()) };
/// let same = Key::from_env("KEEPFRESH_DOC_KEY").unwrap();
/// assert_eq!(same.id(), key.id());
/// // Debug shows the fingerprint only.
/// assert_eq!(format!("{key:?}"), format!("Key {{ id: {} }}", key.id()));
/// ```
#[derive(Clone)]
pub struct Key {
    bytes: Arc<Zeroizing<[u8; KEY_LEN]>>,
    id: KeyId,
}

/// A key's fingerprint: the first 8 bytes of a domain-separated SHA-256 of the key. Written in
/// the header of every sealed file, so that a wrong key is told apart from tampered bytes.
/// Safe to log: it reveals nothing about the key.
///
/// ```
/// # use keepfresh::store::Key;
/// let key = Key::from_bytes([7; 32]);
/// assert_eq!(key.id().to_string().len(), 16); // 16 hex digits
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key {{ id: {} }}", self.id)
    }
}

impl Key {
    /// A new random key from the operating system's random source.
    ///
    /// See the [type-level example](Key).
    ///
    /// # Errors
    /// [`StoreErrorKind::Io`] when the OS random source fails (it practically never does).
    pub fn generate() -> Result<Key, StoreError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random(&mut bytes[..])?;
        Ok(Key::from_zeroizing(bytes))
    }

    /// The key with these bytes (from your own secret manager). The caller's copy is not
    /// zeroized by this call.
    ///
    /// ```
    /// # use keepfresh::store::Key;
    /// let a = Key::from_bytes([1; 32]);
    /// let b = Key::from_bytes([2; 32]);
    /// assert_ne!(a.id(), b.id());
    /// ```
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key::from_zeroizing(Zeroizing::new(bytes))
    }

    /// The key in the environment variable `var`: base64 (standard or URL-safe alphabet,
    /// padding optional, 43 or 44 characters) or hex (64 digits, either case). Surrounding
    /// whitespace is ignored. Make one with `head -c 32 /dev/urandom | base64` or
    /// [`Key::to_base64`].
    ///
    /// See the [type-level example](Key).
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] when the variable is unset, not Unicode, or does not hold 32
    /// bytes in one of these formats. The message names the variable, never its value.
    pub fn from_env(var: &str) -> Result<Key, StoreError> {
        let value = match std::env::var(var) {
            Ok(v) => Zeroizing::new(v),
            Err(std::env::VarError::NotPresent) => {
                return Err(config(format!(
                    "the environment variable {var} that should hold the store key is not set"
                )))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(config(format!(
                    "the environment variable {var} does not hold text; {KEY_FORMATS}"
                )))
            }
        };
        decode_text(value.as_bytes())
            .ok_or_else(|| config(format!("the environment variable {var}: {KEY_FORMATS}")))
    }

    /// The key in the file at `path`: 32 raw bytes, or base64 or hex text as for
    /// [`Key::from_env`]. The file is checked like a token file: a symbolic link, a file that
    /// group or others can access, or one owned by another user is refused.
    ///
    /// ```
    /// # use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    /// # use std::io::Write;
    /// use keepfresh::store::Key;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("store.key");
    /// let key = Key::generate().unwrap();
    /// let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
    /// file.write_all(key.to_base64().as_bytes()).unwrap();
    /// assert_eq!(Key::from_file(&path).unwrap().id(), key.id());
    ///
    /// // A key file others can read is refused, with the fix.
    /// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    /// assert!(Key::from_file(&path).unwrap_err().to_string().contains("chmod 600"));
    /// ```
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] when the file is missing, fails the permission checks, or
    /// does not hold a key in one of these formats; [`StoreErrorKind::Io`] when it cannot be
    /// read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Key, StoreError> {
        let path = path.as_ref();
        let Some(file) = fsx::open_private(path)? else {
            return Err(config(format!(
                "the key file {} does not exist",
                path.display()
            )));
        };
        let mut bytes = Zeroizing::new(Vec::with_capacity(128));
        // A key file is under 100 bytes; reading a little more tells a wrong file from a key.
        file.take(1024)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(path, "cannot read", &e))?;
        if let Ok(raw) = <[u8; KEY_LEN]>::try_from(&bytes[..]) {
            return Ok(Key::from_zeroizing(Zeroizing::new(raw)));
        }
        decode_text(&bytes).ok_or_else(|| {
            config(format!(
                "the key file {}: it must hold 32 raw bytes, or {KEY_FORMATS}",
                path.display()
            ))
        })
    }

    /// The key as base64 text (standard alphabet, padded), for [`Key::from_env`] or a key
    /// file. Handle the result as the secret it is.
    ///
    /// See the [type-level example](Key).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&self.bytes[..]))
    }

    /// The key's fingerprint, safe to log.
    ///
    /// See the [type-level example](Key).
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    pub(crate) fn from_zeroizing(bytes: Zeroizing<[u8; KEY_LEN]>) -> Key {
        let digest = Sha256::new()
            .chain_update(b"keepfresh key id v1\0")
            .chain_update(&bytes[..])
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Key {
            bytes: Arc::new(bytes),
            id: KeyId(id),
        }
    }
}

const KEY_FORMATS: &str =
    "a key is 32 bytes in base64 (44 characters) or hex (64 digits), for example from `head -c 32 /dev/urandom | base64`";

/// Base64 (standard or URL-safe, padded or not) or hex text of exactly 32 bytes.
pub(crate) fn decode_text(text: &[u8]) -> Option<Key> {
    let text = text.trim_ascii();
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if text.len() == 2 * KEY_LEN {
        for (i, pair) in text.chunks_exact(2).enumerate() {
            out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        return Some(Key::from_zeroizing(out));
    }
    // Room for a decoder that writes a few bytes past 32 before it sees the length is wrong.
    let mut buf = Zeroizing::new([0u8; KEY_LEN + 16]);
    let unpadded = text.strip_suffix(b"=").unwrap_or(text);
    let engines = [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    for engine in engines {
        if let Ok(KEY_LEN) = engine.decode_slice(unpadded, &mut buf[..]) {
            out.copy_from_slice(&buf[..KEY_LEN]);
            return Some(Key::from_zeroizing(out));
        }
    }
    None
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Fills `buf` from the OS random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(|e| {
        StoreError::new(
            StoreErrorKind::Io,
            format!("the OS random source failed: {e}"),
        )
    })
}

fn config(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Config, message)
}

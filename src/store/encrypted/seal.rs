//! The sealed format: a short header, then the document encrypted with XChaCha20-Poly1305, the
//! header and the credential's identity authenticated with it.
//!
//! ```text
//! offset  length  field
//!      0       6  magic "KFSEAL"
//!      6       1  format version (1)
//!      7       8  key id: SHA-256("keepfresh key id v1\0" ‖ key)[..8]
//!     15       8  identity tag: SHA-256("keepfresh identity v1\0" ‖ identity ‖ file name)[..8]
//!     23      24  nonce, random per write
//!     47     n+16 ciphertext and Poly1305 tag
//! ```
//!
//! The associated data is a domain string, the first 23 bytes (magic, version, key id, identity
//! tag) and the full identity and file name, each length-prefixed. The key id and the identity
//! tag only let a failure be named (wrong key, another credential's file); the decision rests
//! on the tag alone.

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::key::{random, Key, KeyId};
use crate::store::local::Codec;
use crate::store::{StoreError, StoreErrorKind};

const MAGIC: &[u8; 6] = b"KFSEAL";
const VERSION: u8 = 1;
const KEY_ID: std::ops::Range<usize> = 7..15;
const IDENTITY_TAG: std::ops::Range<usize> = 15..23;
const NONCE: std::ops::Range<usize> = 23..47;
const HEADER_LEN: usize = 47;
const TAG_LEN: usize = 16;
const AD_DOMAIN: &[u8] = b"keepfresh sealed store v1\0";

/// Seals documents for one credential and one file name with the current key. Shared between
/// a store's handles in this process (clones), so that a key rotation switches them all.
pub(crate) struct Sealer {
    /// Names the store in error messages (a path).
    name: String,
    identity_tag: [u8; 8],
    /// The length-prefixed identity and file name, the tail of the associated data.
    bound: Vec<u8>,
    keys: RwLock<Keys>,
}

struct Keys {
    /// Seals and opens.
    current: Key,
    /// Opens too, while a rotation rewrites the file: a concurrent read of the old file still
    /// succeeds.
    previous: Option<Key>,
}

impl Sealer {
    /// A sealer for `identity` (the caller's credential name) and `file_name`, reporting
    /// failures under `name`.
    pub(crate) fn new(name: String, identity: &str, file_name: &[u8], key: Key) -> Sealer {
        let mut bound = Vec::with_capacity(16 + identity.len() + file_name.len());
        for part in [identity.as_bytes(), file_name] {
            bound.extend_from_slice(&(part.len() as u64).to_be_bytes());
            bound.extend_from_slice(part);
        }
        let digest = Sha256::new()
            .chain_update(b"keepfresh identity v1\0")
            .chain_update(&bound)
            .finalize();
        let mut identity_tag = [0u8; 8];
        identity_tag.copy_from_slice(&digest[..8]);
        Sealer {
            name,
            identity_tag,
            bound,
            keys: RwLock::new(Keys {
                current: key,
                previous: None,
            }),
        }
    }

    pub(crate) fn key_id(&self) -> KeyId {
        self.keys.read().current.id()
    }

    /// Seals with `new` from now on, still opening what the current key sealed.
    pub(crate) fn begin_rotation(&self, new: Key) {
        let mut keys = self.keys.write();
        let old = std::mem::replace(&mut keys.current, new);
        keys.previous = Some(old);
    }

    /// Ends a rotation: the old key is forgotten, or, when the rewrite failed, kept as the
    /// current key.
    pub(crate) fn end_rotation(&self, rewritten: bool) {
        let mut keys = self.keys.write();
        if let Some(old) = keys.previous.take()
            && !rewritten
        {
            keys.current = old;
        }
    }

    fn associated_data(&self, header: &[u8]) -> Vec<u8> {
        let mut ad = Vec::with_capacity(AD_DOMAIN.len() + NONCE.start + self.bound.len());
        ad.extend_from_slice(AD_DOMAIN);
        ad.extend_from_slice(&header[..NONCE.start]);
        ad.extend_from_slice(&self.bound);
        ad
    }

    fn corrupt(&self, detail: std::fmt::Arguments<'_>) -> StoreError {
        StoreError::new(
            StoreErrorKind::Corrupt,
            format!("{}: {detail}; it is left as it is", self.name),
        )
    }

    pub(crate) fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self.keys.read().current.clone();
        let mut header = [0u8; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()] = VERSION;
        header[KEY_ID].copy_from_slice(&key.id().0);
        header[IDENTITY_TAG].copy_from_slice(&self.identity_tag);
        random(&mut header[NONCE])?;
        let nonce = XNonce::try_from(&header[NONCE]).map_err(|_| internal())?;
        let ad = self.associated_data(&header);
        let sealed = cipher(&key)
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: &ad,
                },
            )
            .map_err(|_| internal())?;
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub(crate) fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < MAGIC.len() + 1 || &sealed[..MAGIC.len()] != MAGIC {
            if sealed.trim_ascii_start().starts_with(b"{") {
                return Err(self.corrupt(format_args!(
                    "not encrypted: it holds plain JSON (a FileStore's file?), not a sealed token document"
                )));
            }
            return Err(self.corrupt(format_args!(
                "not a sealed keepfresh token document (no KFSEAL header)"
            )));
        }
        let version = sealed[MAGIC.len()];
        if version != VERSION {
            return Err(self.corrupt(format_args!(
                "sealed in format {version}; this keepfresh reads format {VERSION} (a newer keepfresh wrote it?)"
            )));
        }
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(self.corrupt(format_args!(
                "truncated: {} bytes, a sealed document has at least {}",
                sealed.len(),
                HEADER_LEN + TAG_LEN
            )));
        }
        let file_key = KeyId(sealed[KEY_ID].try_into().map_err(|_| internal())?);
        let key = {
            let keys = self.keys.read();

            [Some(&keys.current), keys.previous.as_ref()]
                .into_iter()
                .flatten()
                .find(|k| k.id() == file_key)
                .cloned()
        };
        let Some(key) = key else {
            return Err(self.corrupt(format_args!(
                "sealed with another key (key id {file_key}; this store's key is {}): wrong key, or the key was rotated by another process",
                self.key_id()
            )));
        };
        if sealed[IDENTITY_TAG] != self.identity_tag {
            return Err(self.corrupt(format_args!(
                "sealed for another credential or another file name: a token file copied or swapped from another store"
            )));
        }
        let nonce = XNonce::try_from(&sealed[NONCE]).map_err(|_| internal())?;
        let ad = self.associated_data(sealed);
        cipher(&key)
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: &ad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                self.corrupt(format_args!(
                    "fails authentication: its bytes were changed or cut short after they were written"
                ))
            })
    }
}

/// The store's codec: the shared sealer.
impl Codec for std::sync::Arc<Sealer> {
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        Sealer::seal(self, plain)
    }
    fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        Sealer::open(self, sealed)
    }
}

fn cipher(key: &Key) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.bytes().into())
}

/// Lengths are fixed by the format; a failure here is a bug, reported without panicking.
fn internal() -> StoreError {
    StoreError::new(
        StoreErrorKind::Io,
        "internal error in the sealed store format",
    )
}

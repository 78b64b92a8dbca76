//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`)
//! into parsers that are not public on their own.
//!
//! **Not part of keepfresh's API**: hidden from the documentation, exempt from semver, and may
//! change or disappear in any release. Every function is a thin wrapper that calls the parser
//! exactly as the library does, with no behavior of its own.

#[cfg(feature = "file")]
use crate::store::local::{Blob, Codec, Local, Plain};
#[cfg(feature = "file")]
use crate::store::{StoreError, StoreErrorKind, Stored};
#[cfg(feature = "file")]
use zeroize::Zeroizing;

/// The value of `variable` in a `.env` file holding `content`, parsed as
/// [`ApiKey::from_dotenv`](crate::ApiKey::from_dotenv) parses the file it has read (the file
/// checks aside); errors name the file `.env`.
///
/// # Errors
/// [`ApiKeyErrorKind::Malformed`](crate::ApiKeyErrorKind::Malformed) or
/// [`ApiKeyErrorKind::NotUnicode`](crate::ApiKeyErrorKind::NotUnicode) with the line.
pub fn dotenv_value(
    content: &[u8],
    variable: &str,
) -> Result<Option<zeroize::Zeroizing<String>>, crate::ApiKeyError> {
    crate::apikey::dotenv::parse(content, variable)
        .map_err(|problem| problem.into_error(std::path::Path::new(".env")))
}

/// The path and the query of the request line the login's loopback listener received (`head`
/// is what it read of the request).
#[cfg(feature = "login")]
pub fn login_request_target(head: &[u8]) -> (String, String) {
    crate::oauth::login::request_target(head)
}

/// The login's checks of the redirect's query (`state`, RFC 9207 `iss`, an `error`): the code
/// it would redeem.
///
/// # Errors
/// As [`Login::finish`](crate::oauth::login::Login::finish) before it redeems the code.
#[cfg(feature = "login")]
pub fn login_redirect(
    query: &str,
    expected_state: &str,
    issuer: &str,
    require_iss: bool,
) -> Result<zeroize::Zeroizing<String>, crate::oauth::login::LoginError> {
    crate::oauth::login::check_redirect(query, expected_state, issuer, require_iss)
}

/// The bytes of a local store's document, handed to the store as if read from its file.
#[cfg(feature = "file")]
struct Bytes(Zeroizing<Vec<u8>>);

#[cfg(feature = "file")]
impl Blob for Bytes {
    fn read(&self) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(Some(self.0.clone()))
    }
    fn write(&self, _: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::new(
            StoreErrorKind::Io,
            "read-only fuzzing blob",
        ))
    }
}

#[cfg(feature = "file")]
fn load(bytes: &[u8], codec: Box<dyn Codec>) -> Result<Option<Stored>, StoreError> {
    Local::new(
        Box::new(Bytes(Zeroizing::new(bytes.to_vec()))),
        codec,
        std::path::Path::new("/nonexistent/keepfresh-fuzzing/tokens"),
        "fuzzing".into(),
    )
    .load()
}

/// What a `FileStore` loads from a file holding `bytes` (the size cap, the JSON document, its
/// format number), without the file.
///
/// # Errors
/// [`StoreErrorKind::Corrupt`] for bytes that are not a keepfresh token document.
#[cfg(feature = "file")]
pub fn load_store_document(bytes: &[u8]) -> Result<Option<Stored>, StoreError> {
    load(bytes, Box::new(Plain))
}

/// The sealing of an `EncryptedFileStore` for one key, identity and file name, without the file.
#[cfg(feature = "encrypted")]
pub struct SealedStore {
    sealer: std::sync::Arc<crate::store::encrypted::Sealer>,
}

#[cfg(feature = "encrypted")]
impl std::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedStore").finish_non_exhaustive()
    }
}

#[cfg(feature = "encrypted")]
impl SealedStore {
    /// Seals as an `EncryptedFileStore` opened with `key` for `identity` and a file named
    /// `file_name`.
    pub fn new(key: crate::store::Key, identity: &str, file_name: &str) -> SealedStore {
        SealedStore {
            sealer: std::sync::Arc::new(crate::store::encrypted::Sealer::new(
                "fuzzing".into(),
                identity,
                file_name.as_bytes(),
                key,
            )),
        }
    }

    /// The sealed bytes the store would write for the document `plain`.
    ///
    /// # Errors
    /// When the OS random source fails.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.sealer.seal(plain)
    }

    /// The document inside sealed bytes.
    ///
    /// # Errors
    /// [`StoreErrorKind::Corrupt`]: no header, another format, key or identity, or bytes that
    /// fail authentication.
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.sealer.open(sealed)
    }

    /// What the store loads from a file holding `sealed`.
    ///
    /// # Errors
    /// As [`open`](Self::open) and [`load_store_document`].
    pub fn load(&self, sealed: &[u8]) -> Result<Option<Stored>, StoreError> {
        load(sealed, Box::new(std::sync::Arc::clone(&self.sealer)))
    }
}

//! The bounds keepfresh puts on what it reads, so that no input — a hostile server's answer, a
//! corrupt file, a bad configuration — can make it allocate without bound, loop, or keep
//! parsing. Each limit, when hit, gives a typed error (or, for the text kept of a header
//! parameter, a shortened value), never a panic.
//!
//! The simulator's scenario files have limits of their own, in `keepfresh_sim::scenario_file`
//! (file size, callers, planned requests, scheduled actions, durations).
//!
//! ```
//! use keepfresh::limits;
//! assert!(limits::MAX_TOKEN_BYTES < limits::MAX_TOKEN_RESPONSE_BYTES);
//! assert!(limits::MAX_STORE_DOCUMENT_BYTES <= 1 << 20);
//! ```

/// The largest token-endpoint answer read, by default (refresh, code exchange, revocation):
/// 64 KiB; [`HttpRefresherBuilder::max_body_bytes`] changes it for a refresher. Past it, a 2xx
/// answer is an ambiguous failure (the provider may have rotated) and an error answer is
/// classified by its status alone.
///
/// [`HttpRefresherBuilder::max_body_bytes`]: crate::oauth::HttpRefresherBuilder::max_body_bytes
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// The longest access or refresh token accepted from a provider: 32 KiB (real JWTs, claims-heavy
/// ones included, stay under 16 KiB; most servers refuse headers past 8–16 KiB anyway). A longer
/// access token is treated as a malformed answer (a rotated refresh token in it is kept); a
/// longer refresh token makes the answer ambiguous.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

/// The most of an `error_description` (or vendor error text) that goes into an error message,
/// in characters, after secrets and token-looking words are cut out.
pub const MAX_ERROR_TEXT_CHARS: usize = 160;

/// The most of a `WWW-Authenticate` header value that is parsed: 8 KiB; the rest is ignored.
pub const MAX_CHALLENGE_HEADER_BYTES: usize = 8 * 1024;

/// The most kept of one challenge parameter value, in characters.
pub const MAX_CHALLENGE_VALUE_CHARS: usize = 512;

/// The largest discovery document (RFC 8414, RFC 9728) read or parsed: 256 KiB. Real documents
/// are a few KiB.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

/// The largest document a file, encrypted-file or keyring store reads: 1 MiB. A token set is a
/// few KiB at most; a bigger file is refused as corrupt and left as it is.
pub const MAX_STORE_DOCUMENT_BYTES: usize = 1 << 20;

/// The largest `.env` file read for an API key: 1 MiB; a bigger one is refused as malformed.
pub const MAX_DOTENV_BYTES: usize = 1 << 20;

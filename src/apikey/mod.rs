//! API keys: a long-lived secret read from the environment or from a private `.env` file,
//! handed out as a header behind the same [`AuthSource`](crate::AuthSource) interface as an
//! OAuth [`Credential`](crate::Credential).
//!
//! - `dotenv`: reading one variable from a `.env` file, with the file checks;
//! - `error`: [`ApiKeyError`].

pub(crate) mod dotenv;
mod error;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::auth_header::{header_safe, AuthHeader, AuthSource, Rejection, Unsafe, AUTHORIZATION};
use crate::error::Error;
use crate::secret::Fingerprint;

pub use error::{ApiKeyError, ApiKeyErrorKind};

/// The content of a file that holds secrets, read by [`read_private_file`]: wiped on drop,
/// never printed.
pub struct PrivateFile(Zeroizing<Vec<u8>>);

impl PrivateFile {
    /// The file's bytes.
    ///
    /// See [`read_private_file`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PrivateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateFile({} bytes, redacted)", self.0.len())
    }
}

/// Reads a file of secrets (refresh tokens, a client secret) of at most `max_bytes` with the
/// checks of [`ApiKey::from_dotenv`]: a regular file, not a symbolic link, and on Unix owned by
/// the effective user with no permission bits for group or others.
///
/// # Errors
/// [`Io`](ApiKeyErrorKind::Io) when the file cannot be read;
/// [`UnsafeFile`](ApiKeyErrorKind::UnsafeFile) when a check fails (the message says how to fix
/// it, e.g. `chmod 600 PATH`); [`Malformed`](ApiKeyErrorKind::Malformed) when it is larger than
/// `max_bytes`. Errors name the file, never its content.
///
/// ```
/// use keepfresh::{read_private_file, ApiKeyErrorKind};
/// # use std::io::Write;
/// let path = std::env::temp_dir().join(format!("keepfresh-doc-private-{}", std::process::id()));
/// std::fs::File::create(&path).unwrap().write_all(b"rt-1\nrt-2\n").unwrap();
/// # #[cfg(unix)] {
/// use std::os::unix::fs::PermissionsExt;
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
/// assert_eq!(read_private_file(&path, 1024)?.as_bytes(), b"rt-1\nrt-2\n");
/// assert_eq!(read_private_file(&path, 4).unwrap_err().kind(), ApiKeyErrorKind::Malformed);
/// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
/// assert_eq!(read_private_file(&path, 1024).unwrap_err().kind(), ApiKeyErrorKind::UnsafeFile);
/// # }
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), keepfresh::ApiKeyError>(())
/// ```
pub fn read_private_file(
    path: impl AsRef<Path>,
    max_bytes: usize,
) -> Result<PrivateFile, ApiKeyError> {
    dotenv::read_private(path.as_ref(), max_bytes).map(PrivateFile)
}

/// An API key: a secret that does not expire and cannot be refreshed, presented in a header
/// (by default `Authorization: Bearer <key>`; see [`KeyHeader`]).
///
/// `Debug` and `Display` show only the key's [`Fingerprint`], the bytes are zeroed on drop,
/// and a key that could not be sent safely in a header — empty, holding a control character
/// such as CR or LF (which would inject other headers), or starting or ending with whitespace —
/// is refused when the key is made.
///
/// It implements [`AuthSource`], so a server can hold it as an `Arc<dyn AuthSource>` next to
/// OAuth [`Credential`](crate::Credential)s.
///
/// # Examples
/// ```
/// use keepfresh::{ApiKey, KeyHeader};
///
/// let key = ApiKey::new("sk-live-123")?;
/// assert!(!format!("{key:?} {key}").contains("sk-live-123"));
/// assert_eq!(key.header(), &KeyHeader::bearer());
///
/// let github = ApiKey::new("ghp-123")?.with_header(KeyHeader::authorization("token")?);
/// let anthropic = ApiKey::new("sk-ant-123")?.with_header(KeyHeader::named("x-api-key")?);
/// assert_eq!(anthropic.header().name(), "x-api-key");
/// # let _ = github;
/// # Ok::<(), keepfresh::ApiKeyError>(())
/// ```
#[derive(Clone)]
pub struct ApiKey {
    key: Zeroizing<String>,
    fingerprint: Fingerprint,
    header: KeyHeader,
}

/// Where a key came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Value,
    Env(&'a str),
    File(&'a str, &'a Path),
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Value => f.write_str("the key"),
            Origin::Env(variable) => write!(f, "environment variable {variable}"),
            Origin::File(variable, path) => write!(f, "{variable} in {}", path.display()),
        }
    }
}

impl ApiKey {
    /// An API key from a value you already hold (from a secret manager, say).
    ///
    /// # Errors
    /// [`Empty`](ApiKeyErrorKind::Empty) for an empty key;
    /// [`InvalidCharacter`](ApiKeyErrorKind::InvalidCharacter) for a key holding a control
    /// character (CR, LF, NUL, …) or starting or ending with whitespace.
    ///
    /// ```
    /// use keepfresh::{ApiKey, ApiKeyErrorKind};
    /// assert_eq!(ApiKey::new("k-1").unwrap().expose_secret(), "k-1");
    /// let e = ApiKey::new("k-1\r\nX-Injected: yes").unwrap_err();
    /// assert_eq!(e.kind(), ApiKeyErrorKind::InvalidCharacter);
    /// assert!(!e.to_string().contains("Injected"));
    /// ```
    pub fn new(key: impl Into<String>) -> Result<Self, ApiKeyError> {
        Self::checked(Zeroizing::new(key.into()), Origin::Value)
    }

    /// The API key in the environment variable `variable`.
    ///
    /// # Errors
    /// Each names the variable, never the value:
    /// - [`Missing`](ApiKeyErrorKind::Missing): the variable is not set;
    /// - [`Empty`](ApiKeyErrorKind::Empty): it is set to the empty string;
    /// - [`NotUnicode`](ApiKeyErrorKind::NotUnicode): its value is not valid UTF-8;
    /// - [`InvalidCharacter`](ApiKeyErrorKind::InvalidCharacter): see [`ApiKey::new`];
    /// - [`Config`](ApiKeyErrorKind::Config): `variable` is empty or contains `=` or NUL.
    ///
    /// ```
    /// use keepfresh::{ApiKey, ApiKeyErrorKind};
    /// // PATH is set in any reasonable environment; it stands in for, say, OPENAI_API_KEY.
    /// let key = ApiKey::from_env("PATH")?;
    /// # let _ = key;
    /// let e = ApiKey::from_env("KEEPFRESH_DOC_SURELY_UNSET_VARIABLE").unwrap_err();
    /// assert_eq!(e.kind(), ApiKeyErrorKind::Missing);
    /// # Ok::<(), keepfresh::ApiKeyError>(())
    /// ```
    pub fn from_env(variable: &str) -> Result<Self, ApiKeyError> {
        match env_value(variable)? {
            Some(key) => Self::checked(key, Origin::Env(variable)),
            None => Err(ApiKeyError::new(
                ApiKeyErrorKind::Missing,
                format!("environment variable {variable} is not set"),
            )
            .with_variable(variable)),
        }
    }

    /// The API key defined as `variable` in the `.env` file at `path`, read without touching
    /// the process environment (nothing is set, whatever the file defines).
    ///
    /// The file is refused unless it is a regular file — not a symbolic link — and, on Unix,
    /// owned by the effective user with no permission bits for group or others (mode `0600`
    /// or stricter), like `ssh` refuses a private key others can read; the error says how to
    /// fix it (`chmod 600 PATH`). On other platforms only the regular-file and symbolic-link
    /// checks are made: there is no mode to check, and the file's ACL is trusted.
    ///
    /// The whole file is parsed by [`dotenvy`](https://docs.rs/dotenvy): `NAME=value`,
    /// optional `export ` prefix, `#` comments, blank lines, single quotes (literal), double
    /// quotes (with `\"`, `\\`, `\$` and `\n` escapes; may span lines), CRLF line ends and a
    /// UTF-8 byte-order mark. `$NAME` and `${NAME}` in unquoted and double-quoted values are
    /// substituted — from the process environment first, then from entries above in the file
    /// — so a key containing `$` must be single-quoted. When `variable` is defined more than
    /// once, the last definition wins, as when a shell sources the file.
    ///
    /// The key and the file's bytes are wiped after use; copies dotenvy makes inside its
    /// parser (its line buffer, the values it keeps for substitution) are freed without being
    /// wiped.
    ///
    /// # Errors
    /// Each names the variable and the file, never a value or the file's content:
    /// - [`Io`](ApiKeyErrorKind::Io): the file does not exist or cannot be read;
    /// - [`UnsafeFile`](ApiKeyErrorKind::UnsafeFile): a symbolic link, not a regular file,
    ///   owned by another user, or with group or other permission bits;
    /// - [`Malformed`](ApiKeyErrorKind::Malformed): a line is not valid `.env` syntax (anywhere
    ///   in the file, not only at `variable`), or its `$NAME` substitutions could take the
    ///   file's values past 4 MiB; [`ApiKeyError::line`] says which;
    /// - [`NotUnicode`](ApiKeyErrorKind::NotUnicode): a line is not valid UTF-8;
    /// - [`Missing`](ApiKeyErrorKind::Missing): the file does not define `variable`;
    /// - [`Empty`](ApiKeyErrorKind::Empty), [`InvalidCharacter`](ApiKeyErrorKind::InvalidCharacter):
    ///   as for [`ApiKey::new`].
    ///
    /// # Examples
    /// ```
    /// use keepfresh::{ApiKey, ApiKeyErrorKind};
    /// # fn write(contents: &str, mode: u32) -> std::path::PathBuf {
    /// #     use std::io::Write;
    /// #     let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    /// #     let path = std::env::temp_dir().join(format!("keepfresh-doc-{}-{nanos}.env", std::process::id()));
    /// #     std::fs::File::create(&path).unwrap().write_all(contents.as_bytes()).unwrap();
    /// #     #[cfg(unix)]
    /// #     std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    /// #     path
    /// # }
    /// // A private file (mode 0600) in the temporary directory.
    /// let path = write("# the service's keys\nexport SERVICE_KEY='sk-$123'\n", 0o600);
    /// let key = ApiKey::from_dotenv(&path, "SERVICE_KEY")?;
    /// assert_eq!(key.expose_secret(), "sk-$123");
    /// assert!(std::env::var("SERVICE_KEY").is_err()); // the process environment is untouched
    ///
    /// // Readable by others: refused.
    /// # #[cfg(unix)] {
    /// use std::os::unix::fs::PermissionsExt;
    /// std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    /// let e = ApiKey::from_dotenv(&path, "SERVICE_KEY").unwrap_err();
    /// assert_eq!(e.kind(), ApiKeyErrorKind::UnsafeFile);
    /// assert!(e.to_string().contains("chmod 600"));
    /// # }
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), keepfresh::ApiKeyError>(())
    /// ```
    pub fn from_dotenv(path: impl AsRef<Path>, variable: &str) -> Result<Self, ApiKeyError> {
        let path = path.as_ref();
        match dotenv::lookup(path, variable)? {
            Some(key) => Self::checked(key, Origin::File(variable, path)),
            None => Err(ApiKeyError::new(
                ApiKeyErrorKind::Missing,
                format!("{} does not define {variable}", path.display()),
            )
            .with_variable(variable)
            .with_path(path)),
        }
    }

    /// The API key in the environment variable `variable` if it is set, otherwise as defined
    /// in the `.env` file at `path` ([`ApiKey::from_dotenv`], with its file checks).
    ///
    /// A variable that is set takes precedence even when it is empty or invalid — the error is
    /// reported, the file is not consulted — as a set variable takes precedence over `.env`
    /// files elsewhere.
    ///
    /// # Errors
    /// Those of [`ApiKey::from_env`] for a variable that is set; otherwise those of
    /// [`ApiKey::from_dotenv`], except that a file that does not exist is
    /// [`Missing`](ApiKeyErrorKind::Missing) (the variable is in neither place).
    ///
    /// ```
    /// use keepfresh::{ApiKey, ApiKeyErrorKind};
    /// let nowhere = std::env::temp_dir().join("keepfresh-doc-no-such-dir/.env");
    /// let e = ApiKey::from_env_or_dotenv("KEEPFRESH_DOC_SURELY_UNSET_VARIABLE", &nowhere)
    ///     .unwrap_err();
    /// assert_eq!(e.kind(), ApiKeyErrorKind::Missing);
    /// // Set in the environment: the file is not needed.
    /// assert!(ApiKey::from_env_or_dotenv("PATH", &nowhere).is_ok());
    /// ```
    pub fn from_env_or_dotenv(variable: &str, path: impl AsRef<Path>) -> Result<Self, ApiKeyError> {
        if let Some(key) = env_value(variable)? {
            return Self::checked(key, Origin::Env(variable));
        }
        let path = path.as_ref();
        let missing = |how: &str| {
            ApiKeyError::new(
                ApiKeyErrorKind::Missing,
                format!(
                    "environment variable {variable} is not set, and {} {how}",
                    path.display()
                ),
            )
            .with_variable(variable)
            .with_path(path)
        };
        match dotenv::lookup(path, variable) {
            Ok(Some(key)) => Self::checked(key, Origin::File(variable, path)),
            Ok(None) => Err(missing(&format!("does not define {variable}"))),
            Err(e) if e.is_not_found() => Err(missing("does not exist")),
            Err(e) => Err(e),
        }
    }

    /// Presents the key in `header` instead of `Authorization: Bearer`.
    ///
    /// See the [type-level example](ApiKey#examples).
    pub fn with_header(mut self, header: KeyHeader) -> Self {
        self.header = header;
        self
    }

    /// How the key is presented.
    ///
    /// See the [type-level example](ApiKey#examples).
    pub fn header(&self) -> &KeyHeader {
        &self.header
    }

    /// The key itself. Call this only where the key is sent; for a header,
    /// [`AuthSource::auth_header`] builds it.
    ///
    /// See [`ApiKey::new`].
    pub fn expose_secret(&self) -> &str {
        &self.key
    }

    /// A short hash of the key for logs; see [`Fingerprint`].
    ///
    /// ```
    /// let key = keepfresh::ApiKey::new("sk-123").unwrap();
    /// assert_eq!(key.to_string(), format!("<redacted> {}", key.fingerprint()));
    /// ```
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn checked(key: Zeroizing<String>, origin: Origin<'_>) -> Result<Self, ApiKeyError> {
        let problem = match header_safe(&key) {
            Ok(()) => {
                return Ok(ApiKey {
                    fingerprint: Fingerprint::of(key.as_bytes()),
                    key,
                    header: KeyHeader::bearer(),
                })
            }
            Err(problem) => problem,
        };
        let (kind, what) = match problem {
            Unsafe::Empty => (ApiKeyErrorKind::Empty, "is empty"),
            Unsafe::Control => (
                ApiKeyErrorKind::InvalidCharacter,
                "contains a control character (CR, LF, NUL or another), which could inject \
                 other headers",
            ),
            Unsafe::EdgeWhitespace => (
                ApiKeyErrorKind::InvalidCharacter,
                "starts or ends with whitespace, which HTTP would strip",
            ),
        };
        let mut error = ApiKeyError::new(kind, format!("{origin} {what}"));
        match origin {
            Origin::Value => {}
            Origin::Env(variable) => error = error.with_variable(variable),
            Origin::File(variable, path) => error = error.with_variable(variable).with_path(path),
        }
        Err(error)
    }
}

/// The value of an environment variable, `None` when it is not set; the bytes are wiped
/// whatever happens.
fn env_value(variable: &str) -> Result<Option<Zeroizing<String>>, ApiKeyError> {
    if variable.is_empty() || variable.contains(['=', '\0']) {
        return Err(ApiKeyError::new(
            ApiKeyErrorKind::Config,
            format!("{variable:?} is not a valid environment variable name"),
        ));
    }
    let Some(value) = std::env::var_os(variable) else {
        return Ok(None);
    };
    match String::from_utf8(value.into_encoded_bytes()) {
        Ok(value) => Ok(Some(Zeroizing::new(value))),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            Err(ApiKeyError::new(
                ApiKeyErrorKind::NotUnicode,
                format!("environment variable {variable} is not valid UTF-8"),
            )
            .with_variable(variable))
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("key", &format_args!("<redacted> {}", self.fingerprint))
            .field("header", &self.header)
            .finish()
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted> {}", self.fingerprint)
    }
}

/// An API key never changes: its header is ready at once, and a rejection is
/// [`Rejection::Permanent`] — the key is wrong, revoked or lacks access, and retrying with it
/// cannot help.
///
/// ```
/// use keepfresh::{ApiKey, AuthSource, KeyHeader, Rejection};
/// # futures::executor::block_on(async {
/// let key = ApiKey::new("sk-123")?.with_header(KeyHeader::named("x-api-key")?);
/// let header = key.auth_header().await.unwrap();
/// assert_eq!((header.name(), header.expose_value()), ("x-api-key", "sk-123"));
/// assert_eq!(key.rejected(&header), Rejection::Permanent);
/// # Ok::<(), keepfresh::ApiKeyError>(())
/// # }).unwrap();
/// ```
#[async_trait]
impl AuthSource for ApiKey {
    async fn auth_header(&self) -> Result<AuthHeader, Error> {
        Ok(AuthHeader::for_key(
            &self.header,
            &self.key,
            self.fingerprint,
        ))
    }

    fn rejected(&self, _header: &AuthHeader) -> Rejection {
        Rejection::Permanent
    }
}

/// How an [`ApiKey`] is presented: in `Authorization` after a scheme (`Bearer` by default,
/// `token` for GitHub, …) or alone in a header of its own (`x-api-key`, …).
///
/// Header names are compared case-insensitively by HTTP and kept here in lowercase.
///
/// # Default
/// [`KeyHeader::bearer`]: `Authorization: Bearer <key>`.
///
/// ```
/// use keepfresh::KeyHeader;
/// assert_eq!(KeyHeader::default(), KeyHeader::bearer());
/// let h = KeyHeader::authorization("token")?;
/// assert_eq!((h.name(), h.scheme()), ("authorization", Some("token")));
/// let h = KeyHeader::named("X-Api-Key")?;
/// assert_eq!((h.name(), h.scheme()), ("x-api-key", None));
/// assert!(KeyHeader::named("x-api-key\r\nx-evil").is_err());
/// # Ok::<(), keepfresh::ApiKeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyHeader(Placement);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Placement {
    Authorization { scheme: Arc<str> },
    Named { name: Arc<str> },
}

impl KeyHeader {
    /// `Authorization: Bearer <key>` (RFC 6750), the default.
    ///
    /// See the [type-level example](KeyHeader).
    pub fn bearer() -> Self {
        KeyHeader(Placement::Authorization {
            scheme: Arc::from("Bearer"),
        })
    }

    /// `Authorization: <scheme> <key>`.
    ///
    /// # Errors
    /// [`Config`](ApiKeyErrorKind::Config) unless `scheme` is an HTTP token (letters, digits
    /// and ``!#$%&'*+-.^_`|~``).
    ///
    /// See the [type-level example](KeyHeader).
    pub fn authorization(scheme: &str) -> Result<Self, ApiKeyError> {
        if !is_http_token(scheme) {
            return Err(ApiKeyError::new(
                ApiKeyErrorKind::Config,
                format!("{scheme:?} is not a valid authorization scheme"),
            ));
        }
        Ok(KeyHeader(Placement::Authorization {
            scheme: Arc::from(scheme),
        }))
    }

    /// `<name>: <key>`, the key alone in a header of its own.
    ///
    /// # Errors
    /// [`Config`](ApiKeyErrorKind::Config) unless `name` is an HTTP token (letters, digits and
    /// ``!#$%&'*+-.^_`|~``).
    ///
    /// See the [type-level example](KeyHeader).
    pub fn named(name: &str) -> Result<Self, ApiKeyError> {
        if !is_http_token(name) {
            return Err(ApiKeyError::new(
                ApiKeyErrorKind::Config,
                format!("{name:?} is not a valid header name"),
            ));
        }
        Ok(KeyHeader(Placement::Named {
            name: Arc::from(name.to_ascii_lowercase()),
        }))
    }

    /// The header's name, in lowercase.
    ///
    /// See the [type-level example](KeyHeader).
    pub fn name(&self) -> &str {
        match &self.0 {
            Placement::Authorization { .. } => AUTHORIZATION,
            Placement::Named { name } => name,
        }
    }

    /// The scheme before the key in `Authorization`; `None` for a header of its own.
    ///
    /// See the [type-level example](KeyHeader).
    pub fn scheme(&self) -> Option<&str> {
        match &self.0 {
            Placement::Authorization { scheme } => Some(scheme),
            Placement::Named { .. } => None,
        }
    }

    /// The header's name as [`AuthHeader`] holds it (shared, not copied).
    pub(crate) fn shared_name(&self) -> Option<&Arc<str>> {
        match &self.0 {
            Placement::Authorization { .. } => None,
            Placement::Named { name } => Some(name),
        }
    }
}

impl Default for KeyHeader {
    fn default() -> Self {
        KeyHeader::bearer()
    }
}

impl fmt::Debug for KeyHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Placement::Authorization { scheme } => {
                write!(f, "KeyHeader(\"{AUTHORIZATION}: {scheme}\")")
            }
            Placement::Named { name } => write!(f, "KeyHeader({name:?})"),
        }
    }
}

/// An RFC 9110 token: what header names and authorization schemes are made of.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

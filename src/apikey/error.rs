//! Why an API key could not be loaded, told without the key or the file's content.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What kind of failure an [`ApiKeyError`] is.
///
/// ```
/// use keepfresh::{ApiKey, ApiKeyErrorKind};
/// let e = ApiKey::new("").unwrap_err();
/// assert_eq!(e.kind(), ApiKeyErrorKind::Empty);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiKeyErrorKind {
    /// The variable is not set in the environment, or not defined in the `.env` file, or the
    /// `.env` file of a fallback does not exist.
    Missing,
    /// The variable is set, but to the empty string.
    Empty,
    /// The value (or the `.env` file) is not valid UTF-8.
    NotUnicode,
    /// The key contains a control character (CR, LF, NUL, …) or starts or ends with
    /// whitespace: sent in a header it would be altered in transit or inject other headers.
    InvalidCharacter,
    /// The `.env` file is not safe to read a secret from: a symbolic link, not a regular file,
    /// owned by another user, or readable or writable by group or others.
    UnsafeFile,
    /// A line of the `.env` file is not valid `.env` syntax; see [`ApiKeyError::line`].
    Malformed,
    /// The `.env` file could not be opened or read (the I/O error is the
    /// [`source`](std::error::Error::source)).
    Io,
    /// A configuration mistake: a header name, scheme or variable name that cannot be valid.
    Config,
}

/// Why an API key could not be loaded or presented.
///
/// It names the variable and the file and says how to fix the problem; it never contains the
/// key or any of the `.env` file's content (a malformed line is reported by its number only).
/// Inspect it with [`kind`](ApiKeyError::kind), [`variable`](ApiKeyError::variable),
/// [`path`](ApiKeyError::path) and [`line`](ApiKeyError::line); the `Display` text is for
/// humans and not to be parsed.
///
/// ```
/// use keepfresh::{ApiKey, ApiKeyErrorKind};
/// let e = ApiKey::from_env("KEEPFRESH_DOC_SURELY_UNSET_VARIABLE").unwrap_err();
/// assert_eq!(e.kind(), ApiKeyErrorKind::Missing);
/// assert_eq!(e.variable(), Some("KEEPFRESH_DOC_SURELY_UNSET_VARIABLE"));
/// assert_eq!(
///     e.to_string(),
///     "API key: environment variable KEEPFRESH_DOC_SURELY_UNSET_VARIABLE is not set"
/// );
/// ```
#[derive(Clone)]
pub struct ApiKeyError {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ApiKeyErrorKind,
    variable: Option<String>,
    path: Option<PathBuf>,
    line: Option<usize>,
    message: String,
    source: Option<Arc<io::Error>>,
}

impl ApiKeyError {
    pub(crate) fn new(kind: ApiKeyErrorKind, message: impl Into<String>) -> Self {
        ApiKeyError {
            inner: Box::new(Inner {
                kind,
                variable: None,
                path: None,
                line: None,
                message: message.into(),
                source: None,
            }),
        }
    }

    pub(crate) fn with_variable(mut self, variable: &str) -> Self {
        self.inner.variable = Some(variable.to_owned());
        self
    }

    pub(crate) fn with_path(mut self, path: &Path) -> Self {
        self.inner.path = Some(path.to_owned());
        self
    }

    pub(crate) fn with_line(mut self, line: usize) -> Self {
        self.inner.line = Some(line);
        self
    }

    pub(crate) fn with_source(mut self, source: io::Error) -> Self {
        self.inner.source = Some(Arc::new(source));
        self
    }

    /// Whether the file to read does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        self.inner.kind == ApiKeyErrorKind::Io
            && self
                .inner
                .source
                .as_ref()
                .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
    }

    /// The kind of failure.
    ///
    /// See the [type-level example](ApiKeyError).
    pub fn kind(&self) -> ApiKeyErrorKind {
        self.inner.kind
    }

    /// The variable that was looked up, if the failure concerns one.
    ///
    /// See the [type-level example](ApiKeyError).
    pub fn variable(&self) -> Option<&str> {
        self.inner.variable.as_deref()
    }

    /// The `.env` file, if the failure concerns one.
    ///
    /// ```
    /// use keepfresh::{ApiKey, ApiKeyErrorKind};
    /// let path = std::env::temp_dir().join("keepfresh-doc-no-such-dir/.env");
    /// let e = ApiKey::from_dotenv(&path, "API_KEY").unwrap_err();
    /// assert_eq!(e.kind(), ApiKeyErrorKind::Io);
    /// assert_eq!(e.path(), Some(path.as_path()));
    /// ```
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The 1-based line of the `.env` file where parsing failed: for a quoted value spanning
    /// several lines, the line where the entry starts. Only for
    /// [`Malformed`](ApiKeyErrorKind::Malformed) and [`NotUnicode`](ApiKeyErrorKind::NotUnicode)
    /// file content.
    ///
    /// ```
    /// use keepfresh::ApiKey;
    /// let e = ApiKey::from_env("KEEPFRESH_DOC_SURELY_UNSET_VARIABLE").unwrap_err();
    /// assert_eq!(e.line(), None);
    /// ```
    pub fn line(&self) -> Option<usize> {
        self.inner.line
    }
}

impl fmt::Debug for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyError")
            .field("kind", &self.inner.kind)
            .field("variable", &self.inner.variable)
            .field("path", &self.inner.path)
            .field("line", &self.inner.line)
            .field("message", &self.inner.message)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API key: {}", self.inner.message)
    }
}

impl std::error::Error for ApiKeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

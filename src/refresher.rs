//! The one thing a host must provide: how to obtain a new token set, with classified failures.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::secret::RefreshToken;
use crate::token::TokenResponse;

/// What the engine hands a [`Refresher`] for one refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshRequest {
    /// The refresh token to redeem, if the credential has one.
    pub refresh_token: Option<RefreshToken>,
    /// The scope of the current token set, if known (send it to keep the grant minimal).
    pub scope: Option<String>,
    /// The 1-based attempt number within the current run of failures (1 after a success).
    pub attempt: u32,
}

impl RefreshRequest {
    /// A request redeeming `refresh_token` on attempt 1.
    ///
    /// ```
    /// use keepfresh::{RefreshRequest, RefreshToken};
    /// let r = RefreshRequest::new(Some(RefreshToken::new("rt")));
    /// assert_eq!(r.attempt, 1);
    /// ```
    pub fn new(refresh_token: Option<RefreshToken>) -> Self {
        RefreshRequest {
            refresh_token,
            scope: None,
            attempt: 1,
        }
    }
}

/// Obtains a new token set: the OAuth refresh grant, a client-credentials call, a cloud
/// metadata lookup, anything.
///
/// The engine guarantees that at most one `refresh` per credential runs at a time, that it runs
/// on a detached task (a caller's cancellation never aborts it), that it is bounded by the
/// policy's refresh timeout, and that a panic inside it is caught and reported as a transient
/// error. Do not retry inside a refresher: with rotating refresh tokens a retried POST is a
/// replay; the engine owns retries and backoff.
///
/// # Examples
/// ```
/// use keepfresh::{AccessToken, RefreshError, RefreshRequest, Refresher, TokenResponse};
///
/// struct Static;
/// #[async_trait::async_trait]
/// impl Refresher for Static {
///     async fn refresh(&self, _req: RefreshRequest) -> Result<TokenResponse, RefreshError> {
///         Ok(TokenResponse::new(AccessToken::new("at")).with_expires_in(3600))
///     }
/// }
/// # let _ = Static;
/// ```
#[async_trait]
pub trait Refresher: Send + Sync + 'static {
    /// Performs one refresh.
    ///
    /// # Errors
    /// A [`RefreshError`] whose [`ErrorClass`] tells the engine whether to back off and retry,
    /// ask for re-authorization, or stop.
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError>;
}

#[async_trait]
impl<R: Refresher + ?Sized> Refresher for Arc<R> {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        (**self).refresh(request).await
    }
}

/// A [`Refresher`] made from an async closure.
///
/// ```
/// use keepfresh::{refresher_fn, AccessToken, RefreshRequest, Refresher, TokenResponse};
/// let r = refresher_fn(|_req: RefreshRequest| async {
///     Ok(TokenResponse::new(AccessToken::new("at")).with_expires_in(60))
/// });
/// let resp = futures::executor::block_on(r.refresh(RefreshRequest::new(None))).unwrap();
/// assert_eq!(resp.expires_in(), Some(60));
/// ```
pub fn refresher_fn<F, Fut>(f: F) -> RefresherFn<F>
where
    F: Fn(RefreshRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<TokenResponse, RefreshError>> + Send + 'static,
{
    RefresherFn(f)
}

/// See [`refresher_fn`].
#[derive(Clone)]
pub struct RefresherFn<F>(F);

impl<F> fmt::Debug for RefresherFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefresherFn")
    }
}

#[async_trait]
impl<F, Fut> Refresher for RefresherFn<F>
where
    F: Fn(RefreshRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<TokenResponse, RefreshError>> + Send + 'static,
{
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        (self.0)(request).await
    }
}

/// How the engine treats a failed refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// 5xx, 429, 503, timeouts before the request was sent, connection refused: back off with
    /// jitter (honouring `Retry-After`) and retry; keep serving a still-valid token.
    Transient,
    /// `invalid_grant`: the refresh token is dead (revoked, expired, replayed). Re-authorization
    /// is required, unless the store already holds a newer refresh token.
    InvalidGrant,
    /// `invalid_client`: the client credentials were rejected. One occurrence is treated as
    /// transient; a second in a row is terminal.
    InvalidClient,
    /// `invalid_scope`, `unsupported_grant_type`, a bad URL: retrying cannot help.
    Configuration,
    /// The request may have reached the provider but the answer was lost (timeout after sending,
    /// connection reset). The provider may have rotated the refresh token.
    Ambiguous,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::InvalidGrant => "invalid_grant",
            ErrorClass::InvalidClient => "invalid_client",
            ErrorClass::Configuration => "configuration",
            ErrorClass::Ambiguous => "ambiguous",
        })
    }
}

/// A classified refresh failure.
///
/// Cheap to clone: one failure is shared with every caller waiting on that refresh. Build the
/// message from the provider's `error` and `error_description`, never from a token.
///
/// ```
/// use keepfresh::{ErrorClass, RefreshError};
/// use std::time::Duration;
///
/// let e = RefreshError::transient("HTTP 503").with_retry_after(Duration::from_secs(30));
/// assert_eq!(e.class(), ErrorClass::Transient);
/// assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
/// assert_eq!(e.to_string(), "transient refresh failure: HTTP 503 (retry after 30s)");
/// assert!(RefreshError::invalid_grant("token revoked").is_terminal());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshError {
    class: ErrorClass,
    retry_after: Option<Duration>,
    message: Arc<str>,
}

impl RefreshError {
    /// A failure of the given class.
    ///
    /// ```
    /// # use keepfresh::{ErrorClass, RefreshError};
    /// assert_eq!(RefreshError::new(ErrorClass::Ambiguous, "reset").class(), ErrorClass::Ambiguous);
    /// ```
    pub fn new(class: ErrorClass, message: impl Into<Arc<str>>) -> Self {
        RefreshError {
            class,
            retry_after: None,
            message: message.into(),
        }
    }

    /// [`ErrorClass::Transient`].
    ///
    /// See the [type-level example](RefreshError).
    pub fn transient(message: impl Into<Arc<str>>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    /// [`ErrorClass::InvalidGrant`].
    ///
    /// See the [type-level example](RefreshError).
    pub fn invalid_grant(message: impl Into<Arc<str>>) -> Self {
        Self::new(ErrorClass::InvalidGrant, message)
    }

    /// [`ErrorClass::InvalidClient`].
    ///
    /// ```
    /// # use keepfresh::{ErrorClass, RefreshError};
    /// assert_eq!(RefreshError::invalid_client("bad secret").class(), ErrorClass::InvalidClient);
    /// ```
    pub fn invalid_client(message: impl Into<Arc<str>>) -> Self {
        Self::new(ErrorClass::InvalidClient, message)
    }

    /// [`ErrorClass::Configuration`].
    ///
    /// ```
    /// # use keepfresh::{ErrorClass, RefreshError};
    /// assert!(RefreshError::configuration("invalid_scope").is_terminal());
    /// ```
    pub fn configuration(message: impl Into<Arc<str>>) -> Self {
        Self::new(ErrorClass::Configuration, message)
    }

    /// [`ErrorClass::Ambiguous`]: the response was lost after the request may have been
    /// processed.
    ///
    /// ```
    /// # use keepfresh::{ErrorClass, RefreshError};
    /// assert_eq!(RefreshError::ambiguous("timeout").class(), ErrorClass::Ambiguous);
    /// ```
    pub fn ambiguous(message: impl Into<Arc<str>>) -> Self {
        Self::new(ErrorClass::Ambiguous, message)
    }

    /// Adds the provider's `Retry-After`, as a delay (see [`crate::oauth::parse_retry_after`]
    /// for both header forms).
    ///
    /// See the [type-level example](RefreshError).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The failure's class.
    ///
    /// See the [type-level example](RefreshError).
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The provider's requested delay, if any.
    ///
    /// See the [type-level example](RefreshError).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether retrying with the same refresh token cannot succeed (`invalid_grant`,
    /// configuration errors).
    ///
    /// See the [type-level example](RefreshError).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.class,
            ErrorClass::InvalidGrant | ErrorClass::Configuration
        )
    }

    /// The human-readable message (never a secret if the refresher follows the rules).
    ///
    /// ```
    /// # use keepfresh::RefreshError;
    /// assert_eq!(RefreshError::transient("HTTP 502").message(), "HTTP 502");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshError")
            .field("class", &self.class)
            .field("retry_after", &self.retry_after)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refresh failure: {}", self.class, self.message)?;
        if let Some(d) = self.retry_after {
            write!(f, " (retry after {}s)", d.as_secs())?;
        }
        Ok(())
    }
}

impl std::error::Error for RefreshError {}

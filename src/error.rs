//! The error a caller of [`Credential::token`](crate::Credential::token) can get.

use std::fmt;
use std::sync::Arc;

use crate::machine::ReauthReason;
use crate::refresher::RefreshError;
use crate::runtime::MonoTime;
use crate::store::StoreError;

/// Why no token could be handed out.
///
/// Cheap to clone: one failure is shared by every caller that waited on the same refresh (and,
/// while backing off, by every caller until the backoff ends: a negative cache). Inspect it with
/// the predicates; the `Display` text is for humans and not to be parsed. It never contains
/// token material.
///
/// ```
/// use keepfresh::Error;
/// let e = Error::not_authorized();
/// assert!(e.is_not_authorized());
/// assert!(!e.is_timeout());
/// assert_eq!(e.to_string(), "no token: the credential was never authorized");
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Kind>,
}

#[derive(Debug)]
enum Kind {
    NotAuthorized,
    Reauth(ReauthReason),
    Refresh {
        error: RefreshError,
        retry_at: Option<MonoTime>,
    },
    Timeout,
    Store(StoreError),
    Closed,
    Config(String),
    UnsendableToken,
}

impl Error {
    fn new(kind: Kind) -> Self {
        Error {
            inner: Arc::new(kind),
        }
    }

    /// The credential holds no token and was never authorized.
    ///
    /// See the [type-level example](Error).
    pub fn not_authorized() -> Self {
        Self::new(Kind::NotAuthorized)
    }

    pub(crate) fn reauth(reason: ReauthReason) -> Self {
        Self::new(Kind::Reauth(reason))
    }

    pub(crate) fn refresh(error: RefreshError, retry_at: Option<MonoTime>) -> Self {
        Self::new(Kind::Refresh { error, retry_at })
    }

    pub(crate) fn timeout() -> Self {
        Self::new(Kind::Timeout)
    }

    pub(crate) fn closed() -> Self {
        Self::new(Kind::Closed)
    }

    pub(crate) fn store(error: StoreError) -> Self {
        Self::new(Kind::Store(error))
    }

    pub(crate) fn unsendable_token() -> Self {
        Self::new(Kind::UnsendableToken)
    }

    #[cfg_attr(feature = "tokio", allow(dead_code))]
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(Kind::Config(message.into()))
    }

    /// Never authorized.
    ///
    /// See the [type-level example](Error).
    pub fn is_not_authorized(&self) -> bool {
        matches!(*self.inner, Kind::NotAuthorized)
    }

    /// A new authorization (login) is needed; see [`Error::reauth_reason`].
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert!(!e.is_reauth_required());
    /// ```
    pub fn is_reauth_required(&self) -> bool {
        matches!(*self.inner, Kind::Reauth(_))
    }

    /// Why re-authorization is needed, if it is.
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert_eq!(e.reauth_reason(), None);
    /// ```
    pub fn reauth_reason(&self) -> Option<ReauthReason> {
        match *self.inner {
            Kind::Reauth(r) => Some(r),
            _ => None,
        }
    }

    /// The caller's wait deadline passed before a refresh finished.
    ///
    /// See the [type-level example](Error).
    pub fn is_timeout(&self) -> bool {
        matches!(*self.inner, Kind::Timeout)
    }

    /// The refresh failure behind this error, if any.
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert!(e.refresh_error().is_none());
    /// ```
    pub fn refresh_error(&self) -> Option<&RefreshError> {
        match &*self.inner {
            Kind::Refresh { error, .. } => Some(error),
            _ => None,
        }
    }

    /// When the engine will try again, if it is backing off.
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert!(e.retry_at().is_none());
    /// ```
    pub fn retry_at(&self) -> Option<MonoTime> {
        match &*self.inner {
            Kind::Refresh { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    /// The store failure behind this error, if any.
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert!(e.store_error().is_none());
    /// ```
    pub fn store_error(&self) -> Option<&StoreError> {
        match &*self.inner {
            Kind::Store(e) => Some(e),
            _ => None,
        }
    }

    /// A configuration mistake (no runtime, no refresher).
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert!(!e.is_config());
    /// ```
    pub fn is_config(&self) -> bool {
        matches!(*self.inner, Kind::Config(_))
    }

    /// The access token holds a character that cannot be sent in an HTTP header (a control
    /// character such as CR or LF, or whitespace at either end), so
    /// [`AuthSource::auth_header`](crate::AuthSource::auth_header) refused to build a header
    /// from it: the token endpoint misbehaved.
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert!(!e.is_unsendable_token());
    /// ```
    pub fn is_unsendable_token(&self) -> bool {
        matches!(*self.inner, Kind::UnsendableToken)
    }

    /// The credential was shut down and no valid token is left.
    ///
    /// ```
    /// # let e = keepfresh::Error::not_authorized();
    /// assert!(!e.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(*self.inner, Kind::Closed)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Error").field(&self.inner).finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.inner {
            Kind::NotAuthorized => f.write_str("no token: the credential was never authorized"),
            Kind::Reauth(r) => write!(f, "re-authorization required: {r}"),
            Kind::Refresh { error, .. } => write!(f, "no valid token: {error}"),
            Kind::Timeout => f.write_str("timed out waiting for a token refresh"),
            Kind::Closed => f.write_str("the credential was shut down and has no valid token"),
            Kind::Store(e) => write!(f, "{e}"),
            Kind::Config(m) => write!(f, "configuration error: {m}"),
            Kind::UnsendableToken => f.write_str(
                "the access token holds characters that cannot be sent in an HTTP header \
                 (control characters or surrounding whitespace)",
            ),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::store(e)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.inner {
            Kind::Refresh { error, .. } => Some(error),
            Kind::Store(e) => Some(e),
            _ => None,
        }
    }
}

//! What a refresh produces ([`TokenResponse`]) and what the engine keeps and stores ([`TokenSet`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secret::{AccessToken, RefreshToken};

/// The token set a credential holds and a [`TokenStore`](crate::store::TokenStore) persists.
///
/// Expiry is stored as an absolute wall-clock time, computed once from the refresh request's
/// send time, so a restart never re-derives it from `expires_in` (which would extend the
/// token's life by the time it spent on disk).
///
/// ```
/// use keepfresh::{AccessToken, RefreshToken, TokenSet};
/// use time::{Duration, OffsetDateTime};
///
/// let now = OffsetDateTime::now_utc();
/// let set = TokenSet::new(AccessToken::new("at"), Some(RefreshToken::new("rt")), now, now + Duration::hours(1))
///     .with_scope("repo read:user");
/// assert_eq!(set.lifetime(), Duration::hours(1));
/// assert_eq!(set.scope(), Some("repo read:user"));
/// let json = serde_json::to_string(&set).unwrap();
/// let back: TokenSet = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, set);
/// assert!(!format!("{set:?}").contains("\"at\""));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    access_token: AccessToken,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    #[serde(with = "time::serde::rfc3339")]
    issued_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

impl TokenSet {
    /// A token set issued at `issued_at` that expires at `expires_at` (wall-clock times).
    ///
    /// See the [type-level example](TokenSet).
    pub fn new(
        access_token: AccessToken,
        refresh_token: Option<RefreshToken>,
        issued_at: OffsetDateTime,
        expires_at: OffsetDateTime,
    ) -> Self {
        TokenSet {
            access_token,
            refresh_token,
            issued_at,
            expires_at: expires_at.max(issued_at),
            scope: None,
        }
    }

    /// Sets the granted scope (space-separated, as in RFC 6749).
    ///
    /// See the [type-level example](TokenSet).
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The access token.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// let set = TokenSet::new(AccessToken::new("at"), None, now, now);
    /// assert_eq!(set.access_token().expose_secret(), "at");
    /// ```
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The refresh token, if the provider issued one.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// assert!(TokenSet::new(AccessToken::new("at"), None, now, now).refresh_token().is_none());
    /// ```
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// When the token set was issued (the send time of the request that obtained it).
    ///
    /// ```
    /// # use keepfresh::{AccessToken, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// assert_eq!(TokenSet::new(AccessToken::new("at"), None, now, now).issued_at(), now);
    /// ```
    pub fn issued_at(&self) -> OffsetDateTime {
        self.issued_at
    }

    /// When the access token expires (absolute wall-clock time).
    ///
    /// ```
    /// # use keepfresh::{AccessToken, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// let later = now + time::Duration::minutes(5);
    /// assert_eq!(TokenSet::new(AccessToken::new("at"), None, now, later).expires_at(), later);
    /// ```
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }

    /// `expires_at - issued_at`.
    ///
    /// See the [type-level example](TokenSet).
    pub fn lifetime(&self) -> time::Duration {
        self.expires_at - self.issued_at
    }

    /// The granted scope, if known.
    ///
    /// See the [type-level example](TokenSet).
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// Replaces the refresh token (used when a response carries no new one: the old one is kept).
    pub(crate) fn set_refresh_token(&mut self, rt: Option<RefreshToken>) {
        self.refresh_token = rt;
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// What a [`Refresher`](crate::Refresher) returns on success: the token endpoint's answer, not
/// yet validated.
///
/// `expires_in` is kept as the raw number of seconds the provider sent (possibly missing, zero,
/// negative or absurd); the engine validates it against its [`RefreshPolicy`](crate::RefreshPolicy)
/// and computes the absolute expiry from the request's send time.
///
/// ```
/// use keepfresh::{AccessToken, RefreshToken, TokenResponse};
/// let r = TokenResponse::new(AccessToken::new("at"))
///     .with_refresh_token(RefreshToken::new("rt"))
///     .with_expires_in(3600)
///     .with_scope("read");
/// assert_eq!(r.expires_in(), Some(3600));
/// assert!(r.refresh_token().is_some());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenResponse {
    access_token: AccessToken,
    refresh_token: Option<RefreshToken>,
    expires_in: Option<i64>,
    scope: Option<String>,
}

impl TokenResponse {
    /// A response carrying `access_token`, with no refresh token and no lifetime.
    ///
    /// See the [type-level example](TokenResponse).
    pub fn new(access_token: AccessToken) -> Self {
        TokenResponse {
            access_token,
            refresh_token: None,
            expires_in: None,
            scope: None,
        }
    }

    /// Sets the rotated refresh token.
    ///
    /// See the [type-level example](TokenResponse).
    pub fn with_refresh_token(mut self, rt: RefreshToken) -> Self {
        self.refresh_token = Some(rt);
        self
    }

    /// Sets `expires_in` as sent by the provider, in seconds.
    ///
    /// See the [type-level example](TokenResponse).
    pub fn with_expires_in(mut self, seconds: i64) -> Self {
        self.expires_in = Some(seconds);
        self
    }

    /// Sets the granted scope.
    ///
    /// See the [type-level example](TokenResponse).
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// The access token.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, TokenResponse};
    /// assert_eq!(TokenResponse::new(AccessToken::new("a")).access_token().expose_secret(), "a");
    /// ```
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The rotated refresh token, if any.
    ///
    /// See the [type-level example](TokenResponse).
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// `expires_in` as sent, in seconds.
    ///
    /// See the [type-level example](TokenResponse).
    pub fn expires_in(&self) -> Option<i64> {
        self.expires_in
    }

    /// The granted scope, if sent.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, TokenResponse};
    /// assert_eq!(TokenResponse::new(AccessToken::new("a")).scope(), None);
    /// ```
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    pub(crate) fn into_parts(
        self,
    ) -> (
        AccessToken,
        Option<RefreshToken>,
        Option<i64>,
        Option<String>,
    ) {
        (
            self.access_token,
            self.refresh_token,
            self.expires_in,
            self.scope,
        )
    }
}

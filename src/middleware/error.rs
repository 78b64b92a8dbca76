//! The errors the middleware adds to those of the HTTP stack: a step-up the user must
//! authorize, and a rejected token that could not be replaced.

use std::fmt;

use crate::error::Error;
use crate::oauth::BearerChallenge;

/// The resource server answered 403 with `error="insufficient_scope"`: the token is valid but
/// lacks a scope the resource needs. A refresh of the same grant cannot add scope, so none was
/// made and the request was not retried; the user must authorize the scopes in
/// [`scopes`](StepUpRequired::scopes) (a step-up), after which
/// [`Credential::set_tokens`](crate::Credential::set_tokens) installs the new grant.
///
/// [`scopes`](StepUpRequired::scopes) is the union of the scopes the token held — known when
/// the token endpoint said ([`Token::scope`](crate::Token::scope)), never for an
/// [`ApiKey`](crate::ApiKey) — and the scopes the challenge asked for, so that authorizing it
/// does not lose access the grant already had. The challenge itself is kept, with its
/// `resource_metadata` (RFC 9728) for the discovery of the authorization server.
///
/// It carries no secret: `Debug` and `Display` show scopes and challenge parameters only.
///
/// # Examples
/// Through the [`AuthMiddleware`](super::AuthMiddleware) the error comes as
/// `reqwest_middleware::Error::Middleware`, whose `anyhow::Error` downcasts to it; through
/// the [`AuthLayer`](super::AuthLayer) it is the service's [`BoxError`](super::BoxError),
/// which downcasts the same way:
/// ```
/// use std::sync::Arc;
/// use keepfresh::middleware::{AuthLayer, StepUpRequired};
/// use keepfresh::ApiKey;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # futures::executor::block_on(async {
/// let api = service_fn(|_request: http::Request<String>| async {
///     http::Response::builder()
///         .status(403)
///         .header(
///             "www-authenticate",
///             r#"Bearer error="insufficient_scope", scope="repo admin:org", resource_metadata="https://api.example.com/.well-known/oauth-protected-resource""#,
///         )
///         .body(String::new())
/// });
/// let service = AuthLayer::new(Arc::new(ApiKey::new("sk-123").unwrap())).layer(api);
/// let error = service.oneshot(http::Request::new(String::new())).await.unwrap_err();
///
/// let step_up = error.downcast_ref::<StepUpRequired>().expect("a step-up");
/// assert_eq!(step_up.scopes(), ["repo", "admin:org"]);
/// assert_eq!(step_up.scope(), "repo admin:org");
/// assert_eq!(
///     step_up.resource_metadata(),
///     Some("https://api.example.com/.well-known/oauth-protected-resource")
/// );
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepUpRequired {
    scopes: Vec<String>,
    challenge: BearerChallenge,
}

impl StepUpRequired {
    /// The union of `held` (the token's scope string) and the challenge's `scope`, held scopes
    /// first, each once.
    pub(crate) fn new(held: Option<&str>, challenge: BearerChallenge) -> Self {
        let mut scopes: Vec<String> = Vec::new();
        let wanted = challenge.scope.as_deref().unwrap_or_default();
        for scope in held
            .unwrap_or_default()
            .split_whitespace()
            .chain(wanted.split_whitespace())
        {
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
        StepUpRequired { scopes, challenge }
    }

    /// The scopes to authorize: those the token held and those the resource asked for, held
    /// scopes first, each once. Empty when neither is known.
    ///
    /// See the [type-level example](StepUpRequired#examples).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// [`scopes`](StepUpRequired::scopes) joined by spaces: the `scope` parameter of the
    /// authorization request (RFC 6749 §3.3).
    ///
    /// See the [type-level example](StepUpRequired#examples).
    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }

    /// The `WWW-Authenticate: Bearer` challenge of the 403, as sent (its `scope` is what the
    /// resource asked for, without the scopes the token held).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use keepfresh::middleware::{AuthLayer, StepUpRequired};
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # futures::executor::block_on(async {
    /// # let api = service_fn(|_: http::Request<()>| async {
    /// #     http::Response::builder().status(403)
    /// #         .header("www-authenticate", r#"Bearer error="insufficient_scope", scope="admin""#)
    /// #         .body(())
    /// # });
    /// # let service = AuthLayer::new(Arc::new(keepfresh::ApiKey::new("k").unwrap())).layer(api);
    /// # let error = service.oneshot(http::Request::new(())).await.unwrap_err();
    /// let step_up = error.downcast_ref::<StepUpRequired>().unwrap();
    /// assert_eq!(step_up.challenge().error.as_deref(), Some("insufficient_scope"));
    /// assert_eq!(step_up.challenge().scope.as_deref(), Some("admin"));
    /// # });
    /// ```
    pub fn challenge(&self) -> &BearerChallenge {
        &self.challenge
    }

    /// The challenge's `resource_metadata`: the URL of the protected resource's metadata
    /// (RFC 9728), from which a client discovers the authorization server to ask.
    ///
    /// See the [type-level example](StepUpRequired#examples).
    pub fn resource_metadata(&self) -> Option<&str> {
        self.challenge.resource_metadata.as_deref()
    }
}

impl fmt::Display for StepUpRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the token lacks a scope the resource requires (HTTP 403 insufficient_scope)")?;
        if !self.scopes.is_empty() {
            write!(f, "; authorize scope \"{}\"", self.scope())?;
        }
        Ok(())
    }
}

impl std::error::Error for StepUpRequired {}

/// The resource server rejected the token (HTTP 401), the source invalidated it, and no new
/// header could be had for the retry: the refresh failed, the credential needs a new
/// authorization ([`Error::is_reauth_required`]), or the wait timed out.
/// [`error`](Unauthorized::error) says which.
///
/// The 401's challenge is kept, with its `resource_metadata` (RFC 9728): where a client that
/// must authorize again discovers the authorization server.
///
/// Only the retry's header can fail this way. A 401 that is not retried (an API key, a body
/// that cannot be replayed, a retry's own 401) is handed to the caller as a response, with the
/// challenge in its extensions (`response.extensions().get::<BearerChallenge>()`).
///
/// It carries no secret.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use keepfresh::middleware::{AuthLayer, Unauthorized};
/// use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, RefreshToken, TokenSet};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # let rt = tokio::runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// // The grant was revoked: the API refuses the token and the token endpoint the refresh.
/// let now = time::OffsetDateTime::now_utc();
/// let credential = Credential::builder(refresher_fn(|_| async {
///     Err(RefreshError::invalid_grant("grant revoked"))
/// }))
/// .tokens(TokenSet::new(
///     AccessToken::new("at-1"),
///     Some(RefreshToken::new("rt-1")),
///     now,
///     now + time::Duration::hours(1),
/// ))
/// .build()
/// .await
/// .unwrap();
/// let api = service_fn(|_: http::Request<()>| async {
///     http::Response::builder()
///         .status(401)
///         .header(
///             "www-authenticate",
///             r#"Bearer error="invalid_token", resource_metadata="https://api.example.com/.well-known/oauth-protected-resource""#,
///         )
///         .body(())
/// });
/// let service = AuthLayer::new(Arc::new(credential)).layer(api);
/// let error = service.oneshot(http::Request::new(())).await.unwrap_err();
///
/// let unauthorized = error.downcast_ref::<Unauthorized>().expect("a failed retry");
/// assert!(unauthorized.error().is_reauth_required());
/// assert_eq!(
///     unauthorized.resource_metadata(),
///     Some("https://api.example.com/.well-known/oauth-protected-resource")
/// );
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct Unauthorized {
    challenge: Option<BearerChallenge>,
    error: Error,
}

impl Unauthorized {
    pub(crate) fn new(challenge: Option<BearerChallenge>, error: Error) -> Self {
        Unauthorized { challenge, error }
    }

    /// Why no new header could be had (also the error's
    /// [`source`](std::error::Error::source)).
    ///
    /// See the [type-level example](Unauthorized#examples).
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The 401's `WWW-Authenticate: Bearer` challenge, if it sent one.
    ///
    /// ```
    /// # use keepfresh::middleware::Unauthorized;
    /// fn realm(e: &Unauthorized) -> Option<&str> {
    ///     e.challenge()?.realm.as_deref()
    /// }
    /// ```
    pub fn challenge(&self) -> Option<&BearerChallenge> {
        self.challenge.as_ref()
    }

    /// The challenge's `resource_metadata`: the URL of the protected resource's metadata
    /// (RFC 9728), from which a client discovers the authorization server to ask.
    ///
    /// See the [type-level example](Unauthorized#examples).
    pub fn resource_metadata(&self) -> Option<&str> {
        self.challenge.as_ref()?.resource_metadata.as_deref()
    }
}

impl fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the resource server rejected the token (HTTP 401) and no new one could be had: {}",
            self.error
        )
    }
}

impl std::error::Error for Unauthorized {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

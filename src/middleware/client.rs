//! [`AuthMiddleware`]: the behaviour of the module for `reqwest-middleware` clients.

use std::sync::Arc;

use async_trait::async_trait;
use http::Extensions;
use reqwest_middleware::{Error as MiddlewareError, Middleware, Next};

use super::answer::{keep_challenge, Attempt, Authorizer, Verdict};
use super::error::Unauthorized;
use crate::auth_header::AuthSource;

/// A [`reqwest_middleware::Middleware`] that authorizes every request with an
/// [`AuthSource`] and handles the resource server's 401 and 403 as the
/// [module documentation](super) describes.
///
/// A request whose body cannot be cloned ([`reqwest::Request::try_clone`] gives `None`: a
/// streaming body) is not retried: on a 401 its token is still invalidated, so the next
/// request gets a new one, and the 401 is returned.
///
/// Add it after any retry middleware (`.with(retry).with(auth)`): each of the retry
/// middleware's attempts then passes through it and gets a current header, and its own single
/// retry stays inside one of them.
///
/// # Errors
/// Besides the errors of the chain and of reqwest, `reqwest_middleware::Error::Middleware`
/// wrapping one of:
/// - [`Error`](crate::Error): no header could be had for the request (it was not sent);
/// - [`StepUpRequired`](super::StepUpRequired): 403 `insufficient_scope`;
/// - [`Unauthorized`]: 401, and no new header could be had for the retry.
///
/// Get them back with `anyhow::Error::downcast_ref` (no dependency on `anyhow` needed).
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use keepfresh::middleware::{AuthMiddleware, StepUpRequired};
/// use keepfresh::ApiKey;
/// use wiremock::matchers::{header, path};
/// use wiremock::{Mock, MockServer, ResponseTemplate};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let api = MockServer::start().await;
/// Mock::given(path("/me"))
///     .and(header("authorization", "Bearer sk-123"))
///     .respond_with(ResponseTemplate::new(200).set_body_string("me"))
///     .mount(&api)
///     .await;
/// Mock::given(path("/admin"))
///     .respond_with(ResponseTemplate::new(403).insert_header(
///         "www-authenticate",
///         r#"Bearer error="insufficient_scope", scope="admin""#,
///     ))
///     .mount(&api)
///     .await;
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(AuthMiddleware::new(Arc::new(ApiKey::new("sk-123")?)))
///     .build();
/// let me = client.get(format!("{}/me", api.uri())).send().await?;
/// assert_eq!(me.text().await?, "me");
///
/// let error = client.get(format!("{}/admin", api.uri())).send().await.unwrap_err();
/// let reqwest_middleware::Error::Middleware(error) = error else {
///     panic!("not a middleware error: {error}")
/// };
/// let step_up = error.downcast_ref::<StepUpRequired>().expect("a step-up");
/// assert_eq!(step_up.scopes(), ["admin"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AuthMiddleware {
    auth: Arc<Authorizer>,
}

impl AuthMiddleware {
    /// A middleware that authorizes requests with `source`: an
    /// [`Arc<Credential>`](crate::Credential), an [`Arc<ApiKey>`](crate::ApiKey) or any shared
    /// [`AuthSource`].
    ///
    /// See the [type-level example](AuthMiddleware#examples).
    pub fn new(source: Arc<dyn AuthSource>) -> Self {
        AuthMiddleware {
            auth: Arc::new(Authorizer::new(source)),
        }
    }
}

#[async_trait]
impl Middleware for AuthMiddleware {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let auth = &*self.auth;
        let header = auth.header().await.map_err(MiddlewareError::middleware)?;
        // Cloned before the header is attached: the copy never holds the rejected token.
        let spare = request.try_clone();
        auth.attach(request.headers_mut(), &header)
            .map_err(MiddlewareError::middleware)?;
        let mut response = next.clone().run(request, extensions).await?;
        let attempt = Attempt::First {
            can_replay: spare.is_some(),
        };
        let (challenge, mut spare) = match (
            auth.judge(&header, response.status(), response.headers(), attempt),
            spare,
        ) {
            (Verdict::Retry(challenge), Some(spare)) => (challenge, spare),
            (Verdict::Deliver(challenge) | Verdict::Retry(challenge), _) => {
                keep_challenge(response.extensions_mut(), challenge);
                return Ok(response);
            }
            (Verdict::StepUp(step_up), _) => return Err(MiddlewareError::middleware(step_up)),
        };
        // A 401's body is of no use; dropping it unread releases the connection.
        drop(response);
        let header = match auth.header().await {
            Ok(header) => header,
            Err(error) => {
                return Err(MiddlewareError::middleware(Unauthorized::new(
                    challenge, error,
                )))
            }
        };
        auth.attach(spare.headers_mut(), &header)
            .map_err(MiddlewareError::middleware)?;
        let mut response = next.run(spare, extensions).await?;
        match auth.judge(
            &header,
            response.status(),
            response.headers(),
            Attempt::Retry,
        ) {
            Verdict::Deliver(challenge) | Verdict::Retry(challenge) => {
                keep_challenge(response.extensions_mut(), challenge);
                Ok(response)
            }
            Verdict::StepUp(step_up) => Err(MiddlewareError::middleware(step_up)),
        }
    }
}

//! rmcp's Streamable HTTP client transport with its token from a keepfresh [`Credential`], so
//! that an MCP client shares one refresh per token generation with everything else that uses
//! the credential.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    InsufficientScopeError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};

use crate::auth_header::{AuthHeader, AuthSource};
use crate::credential::Credential;
use crate::error::Error;
use crate::middleware::Unauthorized;
use crate::oauth::{parse_bearer_challenge, BearerChallenge};

/// A [`StreamableHttpClient`] for rmcp's client transport that authorizes every request with
/// the current access token of a keepfresh [`Credential`].
///
/// - **Every request** (POST, the GET stream, the session DELETE) carries the token the
///   credential hands out at that moment: a token refreshed ahead of expiry is picked up by
///   the next request, and concurrent requests share one refresh. The `auth_header` rmcp
///   passes in (from `StreamableHttpClientTransportConfig::auth_header`) is ignored.
/// - **401** with `error="invalid_token"`, or a Bearer challenge without an error code:
///   exactly the token that was sent is invalidated ([`Credential::invalidate`]) — one
///   refresh however many requests report it, none when a newer token is already current —
///   and the request is sent **once more** with the new token. A second 401 goes to rmcp as
///   `StreamableHttpError::AuthRequired`; so does a 401 with another error code, untouched.
///   When no new token can be had for the retry, the call fails with
///   [`TransportError::Unauthorized`], which says why (re-authorization required, refresh
///   failing).
/// - **403** with `error="insufficient_scope"`: no refresh (a refresh cannot widen scope) and
///   no retry: the call fails with rmcp's step-up signal,
///   `StreamableHttpError::InsufficientScope`, whose `required_scope` is the union of the
///   scopes the token held and those the challenge asks for — what the new authorization
///   must request so that no access is lost.
/// - A credential that has no token (never authorized, re-authorization required, refresh
///   failing) fails the call before anything is sent, with [`TransportError::Credential`].
///
/// `C` is the HTTP client underneath: by default a `reqwest::Client` (rmcp's implementation
/// for it), configured as you like through [`with_client`](CredentialHttpClient::with_client).
///
/// rmcp's trait takes the token as a `String`, so each request makes one copy of it that is
/// not zeroed when dropped; the credential's own copy is.
///
/// # Examples
/// ```no_run
/// use keepfresh::mcp::CredentialHttpClient;
/// use keepfresh::store::MemoryStore;
/// use keepfresh::{refresher_fn, Credential, RefreshError};
/// use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
/// use rmcp::transport::StreamableHttpClientTransport;
/// use rmcp::ServiceExt;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // With feature `http`: `oauth::HttpRefresher` for the MCP server's authorization server,
/// // with the MCP server as its `resource`; with `file`: a `FileStore` the user's processes share.
/// let refresher = refresher_fn(|_| async { Err(RefreshError::transient("stand-in")) });
/// let credential = Credential::builder(refresher)
///     .store(MemoryStore::new())
///     .build()
///     .await?;
///
/// let transport = StreamableHttpClientTransport::with_client(
///     CredentialHttpClient::new(credential),
///     StreamableHttpClientTransportConfig::with_uri("https://mcp.example.com/mcp"),
/// );
/// let client = ().serve(transport).await?;
/// let tools = client.list_all_tools().await?;
/// println!("{} tools", tools.len());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CredentialHttpClient<C = reqwest::Client> {
    inner: C,
    credential: Credential,
}

/// Redirects an MCP request may follow: rmcp's own default. Only 307 and 308 keep the method
/// and the JSON-RPC body; another origin would be sent the session id and custom headers.
const MAX_REDIRECTS: usize = 10;

impl CredentialHttpClient<reqwest::Client> {
    /// Requests through a new `reqwest::Client` configured as rmcp's transport configures its
    /// own: same-origin 307 and 308 redirects followed (up to 10), any other redirect handed
    /// back as it is, and no idle connections kept (rmcp's measure against delayed-ACK
    /// stalls); authorized by `credential`.
    ///
    /// # Panics
    /// When the TLS backend cannot be initialized, as `reqwest::Client::new` does.
    ///
    /// See the [type-level example](CredentialHttpClient#examples).
    pub fn new(credential: Credential) -> Self {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let keeps_body = matches!(attempt.status().as_u16(), 307 | 308);
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if !keeps_body || !same_origin {
                attempt.stop()
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(redirects)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self::with_client(http, credential)
    }
}

impl<C> CredentialHttpClient<C> {
    /// Requests through `inner` (any rmcp [`StreamableHttpClient`]: a configured
    /// `reqwest::Client`, rmcp's Unix-socket client…), authorized by `credential`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let now = time::OffsetDateTime::now_utc();
    /// # let credential = keepfresh::Credential::builder(keepfresh::refresher_fn(|_| async {
    /// #     Err(keepfresh::RefreshError::transient("offline"))
    /// # }))
    /// # .tokens(keepfresh::TokenSet::new(keepfresh::AccessToken::new("at"), None, now, now + time::Duration::hours(1)))
    /// # .build().await.unwrap();
    /// use keepfresh::mcp::CredentialHttpClient;
    /// let http = reqwest::Client::builder()
    ///     .timeout(std::time::Duration::from_secs(30))
    ///     .build()
    ///     .unwrap();
    /// let client = CredentialHttpClient::with_client(http, credential);
    /// assert!(client.credential().try_token().is_some());
    /// # }
    /// ```
    pub fn with_client(inner: C, credential: Credential) -> Self {
        CredentialHttpClient { inner, credential }
    }

    /// The credential whose tokens authorize the requests.
    ///
    /// See [`with_client`](CredentialHttpClient::with_client).
    pub fn credential(&self) -> &Credential {
        &self.credential
    }
}

impl<C> fmt::Debug for CredentialHttpClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialHttpClient")
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// The error of a [`CredentialHttpClient`]: the HTTP client's own, or why no token could be
/// attached. Carried by `StreamableHttpError::Client`; never contains a token.
///
/// ```
/// use keepfresh::mcp::TransportError;
/// let e: TransportError<std::io::Error> = TransportError::Credential(keepfresh::Error::not_authorized());
/// assert!(e.credential_error().unwrap().is_not_authorized());
/// assert_eq!(e.to_string(), "no token for the MCP server: no token: the credential was never authorized");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum TransportError<E> {
    /// The HTTP client underneath failed.
    Http(E),
    /// The credential had no token to send (never authorized, re-authorization required,
    /// refresh failing, timeout); the request was not sent.
    Credential(Error),
    /// The server refused the token sent (401), which was invalidated, and no new token could
    /// be had for the one retry.
    Unauthorized(Unauthorized),
}

impl<E> TransportError<E> {
    /// The keepfresh error behind this one, if any: see [`Error::is_reauth_required`] and
    /// the other predicates.
    ///
    /// See the [type-level example](TransportError).
    pub fn credential_error(&self) -> Option<&Error> {
        match self {
            TransportError::Http(_) => None,
            TransportError::Credential(e) => Some(e),
            TransportError::Unauthorized(u) => Some(u.error()),
        }
    }
}

impl<E: fmt::Display> fmt::Display for TransportError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Http(e) => e.fmt(f),
            TransportError::Credential(e) => write!(f, "no token for the MCP server: {e}"),
            TransportError::Unauthorized(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TransportError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Http(e) => Some(e),
            TransportError::Credential(e) => Some(e),
            TransportError::Unauthorized(e) => Some(e),
        }
    }
}

type Lifted<E> = StreamableHttpError<TransportError<E>>;

/// Moves an error of the inner client into this client's error type, variant for variant, so
/// that rmcp's worker sees the same kinds (session expired, 429/5xx status, SSE unsupported…)
/// and reacts to them as with the inner client alone.
fn lift<E>(error: StreamableHttpError<E>) -> Lifted<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    use StreamableHttpError as S;
    match error {
        S::Sse(e) => S::Sse(e),
        S::Io(e) => S::Io(e),
        S::Client(e) => S::Client(TransportError::Http(e)),
        S::HttpStatus(e) => S::HttpStatus(e),
        S::UnexpectedEndOfStream => S::UnexpectedEndOfStream,
        S::UnexpectedServerResponse(e) => S::UnexpectedServerResponse(e),
        S::ResponseBodyTooLarge { max_size } => S::ResponseBodyTooLarge { max_size },
        S::UnexpectedContentType(e) => S::UnexpectedContentType(e),
        S::ServerDoesNotSupportSse => S::ServerDoesNotSupportSse,
        S::ServerDoesNotSupportDeleteSession => S::ServerDoesNotSupportDeleteSession,
        S::TokioJoinError(e) => S::TokioJoinError(e),
        S::Deserialize(e) => S::Deserialize(e),
        S::TransportChannelClosed => S::TransportChannelClosed,
        S::MissingSessionIdInResponse => S::MissingSessionIdInResponse,
        S::Auth(e) => S::Auth(e),
        S::AuthRequired(e) => S::AuthRequired(e),
        S::InsufficientScope(e) => S::InsufficientScope(e),
        S::ReservedHeaderConflict(e) => S::ReservedHeaderConflict(e),
        S::SessionExpired => S::SessionExpired,
        S::SessionRecoveryTimeout => S::SessionRecoveryTimeout,
        S::ReinitializationFailed(e) => S::ReinitializationFailed(e),
        S::ControlRequestTimeout => S::ControlRequestTimeout,
        // A kind added by a later rmcp 3.11 patch release: its text, as rmcp shows it.
        other => S::UnexpectedServerResponse(other.to_string().into()),
    }
}

impl<C> CredentialHttpClient<C>
where
    C: StreamableHttpClient + Send + Sync,
{
    /// Runs `call` with the credential's token; on a 401 for that token, invalidates it and
    /// runs `call` once more with the next one.
    async fn authorized<T, F, Fut>(&self, call: F) -> Result<T, Lifted<C::Error>>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, StreamableHttpError<C::Error>>>,
    {
        let sent = self
            .credential
            .auth_header()
            .await
            .map_err(|e| StreamableHttpError::Client(TransportError::Credential(e)))?;
        match call(Some(token_of(&sent))).await {
            Err(StreamableHttpError::AuthRequired(rejected)) => {
                let challenge = parse_bearer_challenge(&rejected.www_authenticate_header);
                let code = challenge.as_ref().and_then(|c| c.error.as_deref());
                if !matches!(code, None | Some("invalid_token")) {
                    return Err(StreamableHttpError::AuthRequired(rejected));
                }
                let rejection = self.credential.rejected(&sent);
                #[cfg(feature = "tracing")]
                tracing::debug!(
                    token = %sent.fingerprint(),
                    ?rejection,
                    "keepfresh mcp transport: 401, token reported as rejected"
                );
                if !rejection.should_retry() {
                    return Err(StreamableHttpError::AuthRequired(rejected));
                }
                let next = self.credential.auth_header().await.map_err(|e| {
                    StreamableHttpError::Client(TransportError::Unauthorized(Unauthorized::new(
                        challenge, e,
                    )))
                })?;
                call(Some(token_of(&next)))
                    .await
                    .map_err(|e| step_up(e, &next))
            }
            other => other.map_err(|e| step_up(e, &sent)),
        }
    }
}

/// The access token in `header` (a credential's header always carries one).
fn token_of(header: &AuthHeader) -> String {
    header
        .token()
        .map(|t| t.secret().to_owned())
        .unwrap_or_default()
}

/// A 403 `insufficient_scope` with the scopes to authorize widened to the union of those the
/// token `sent` held and those the challenge wants; any other error lifted as it is.
fn step_up<E>(error: StreamableHttpError<E>, sent: &AuthHeader) -> Lifted<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let StreamableHttpError::InsufficientScope(refused) = error else {
        return lift(error);
    };
    let challenge = parse_bearer_challenge(&refused.www_authenticate_header).unwrap_or_else(|| {
        BearerChallenge {
            scope: refused.required_scope.clone(),
            ..BearerChallenge::default()
        }
    });
    let held = sent.token().and_then(|t| t.scope());
    let union = crate::middleware::StepUpRequired::new(held, challenge).scope();
    #[cfg(feature = "tracing")]
    tracing::debug!(
        token = %sent.fingerprint(),
        scope = %union,
        "keepfresh mcp transport: 403 insufficient_scope, step-up required"
    );
    StreamableHttpError::InsufficientScope(InsufficientScopeError::new(
        refused.www_authenticate_header,
        (!union.is_empty()).then_some(union),
    ))
}

impl<C> StreamableHttpClient for CredentialHttpClient<C>
where
    C: StreamableHttpClient + Send + Sync,
{
    type Error = TransportError<C::Error>;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Lifted<C::Error>> {
        self.authorized(|token| {
            self.inner.post_message(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, Lifted<C::Error>> {
        self.authorized(|token| {
            self.inner.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Lifted<C::Error>> {
        self.authorized(|token| {
            self.inner.post_message_with_response_limits(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                limits,
            )
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Lifted<C::Error>> {
        self.authorized(|token| {
            self.inner.delete_session(
                uri.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxedSseResponse, Lifted<C::Error>> {
        self.authorized(|token| {
            self.inner.get_stream(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxedSseResponse, Lifted<C::Error>> {
        self.authorized(|token| {
            self.inner.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }
}

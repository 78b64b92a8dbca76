//! [`HttpRefresher`]: the RFC 6749 §6 refresh grant over HTTP (feature `http`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::{redirect, Client, ClientBuilder, Url};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{parse_retry_after, parse_token_response_redacting, HttpAnswer, Redactor};
use crate::refresher::{ErrorClass, RefreshError, RefreshRequest, Refresher};
use crate::secret::{ClientSecret, RefreshToken};
use crate::token::TokenResponse;

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
///
/// Without a [client secret](HttpRefresherBuilder::client_secret) the client is public and only
/// `client_id` is sent in the form, whatever this says.
///
/// ```
/// use keepfresh::oauth::ClientAuth;
/// assert_eq!(ClientAuth::default(), ClientAuth::Basic);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: `Authorization: Basic` with the form-urlencoded id and secret.
    /// The method every server must support (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    Post,
}

/// A [`HttpRefresher`] could not be built.
///
/// ```
/// use keepfresh::oauth::HttpRefresher;
/// let err = HttpRefresher::builder("not a url", "client").build().unwrap_err();
/// assert!(err.to_string().contains("token endpoint URL"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpBuildError(String);

impl fmt::Display for HttpBuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid HTTP refresher: {}", self.0)
    }
}

impl std::error::Error for HttpBuildError {}

/// A [`Refresher`] that redeems the refresh token at an OAuth 2.0 token endpoint
/// (RFC 6749 §6): a form-encoded `POST` of `grant_type=refresh_token`, the refresh token, the
/// scope of the current token set (when known) and every configured `resource` (RFC 8707), with
/// `Accept: application/json`.
///
/// The answer goes through [`parse_token_response`](super::parse_token_response), so every quirk
/// it knows (GitHub's errors with HTTP 200, Slack's envelope, form-encoded bodies, HTML pages)
/// is handled, and `Retry-After` is honoured in both forms (an HTTP date is measured against
/// the response's own `Date` header when it has one, so clock skew does not distort it).
///
/// What it never does:
/// - **retry**: a retried refresh `POST` is a replay of the refresh token, which a rotating
///   provider answers by revoking the whole grant; the engine owns retries and backoff;
/// - **follow redirects**: a redirected token request would carry the refresh token to another
///   URL; a 3xx answer is a configuration error;
/// - read more than [`max_body_bytes`](HttpRefresherBuilder::max_body_bytes) of a body;
/// - print a secret: `Debug` shows fingerprints only, and error messages are built from the
///   provider's `error` code and the transport failure, never from the request.
///
/// Transport failures are classified for the engine: a failure to connect (nothing was sent)
/// is [`ErrorClass::Transient`]; a timeout or a connection closed after the request may have
/// been sent is [`ErrorClass::Ambiguous`] (the provider may have rotated the refresh token).
///
/// It needs a tokio runtime (the engine's default one will do).
///
/// # Default
/// | setting | default |
/// |---|---|
/// | [`client_secret`](HttpRefresherBuilder::client_secret) | none (a public client) |
/// | [`client_auth`](HttpRefresherBuilder::client_auth) | [`ClientAuth::Basic`] |
/// | [`resource`](HttpRefresherBuilder::resource) | none |
/// | [`timeout`](HttpRefresherBuilder::timeout) | 20 s for the whole exchange (below the engine's default 30 s refresh timeout) |
/// | [`connect_timeout`](HttpRefresherBuilder::connect_timeout) | 5 s |
/// | [`max_body_bytes`](HttpRefresherBuilder::max_body_bytes) | 64 KiB |
/// | [`allow_insecure_http`](HttpRefresherBuilder::allow_insecure_http) | `false`: `http://` only for loopback hosts |
/// | [`user_agent`](HttpRefresherBuilder::user_agent) | `keepfresh/<version>` |
///
/// # Examples
/// ```
/// use keepfresh::oauth::{ClientAuth, HttpRefresher};
/// use keepfresh::{ClientSecret, Credential, RefreshToken};
/// use wiremock::matchers::{body_string_contains, header, method, path};
/// use wiremock::{Mock, MockServer, ResponseTemplate};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A stand-in for the provider's token endpoint.
/// let server = MockServer::start().await;
/// Mock::given(method("POST"))
///     .and(path("/oauth/token"))
///     .and(header("accept", "application/json"))
///     .and(body_string_contains("grant_type=refresh_token"))
///     .and(body_string_contains("refresh_token=rt-1"))
///     .and(body_string_contains("resource=https%3A%2F%2Fmcp.example.com%2F"))
///     .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
///         "access_token": "at-2", "refresh_token": "rt-2", "expires_in": 3600, "token_type": "Bearer"
///     })))
///     .expect(1)
///     .mount(&server)
///     .await;
///
/// let refresher = HttpRefresher::builder(format!("{}/oauth/token", server.uri()), "my-client")
///     .client_secret(ClientSecret::new("s3cr3t"))
///     .client_auth(ClientAuth::Post)
///     .resource("https://mcp.example.com/")
///     .build()?;
/// assert!(!format!("{refresher:?}").contains("s3cr3t"));
///
/// let credential = Credential::builder(refresher)
///     .refresh_token(RefreshToken::new("rt-1"))
///     .build()
///     .await?;
/// assert_eq!(credential.token().await?.secret(), "at-2");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HttpRefresher {
    client: Client,
    token_url: Url,
    client_id: String,
    client_secret: Option<ClientSecret>,
    client_auth: ClientAuth,
    resources: Vec<String>,
    max_body_bytes: usize,
    timeout: Duration,
    send_scope: bool,
    revocation_url: Option<Url>,
}

/// A caller's adjustments to the HTTP client (a custom root certificate, a proxy).
type Configure = Arc<dyn Fn(ClientBuilder) -> ClientBuilder + Send + Sync>;

/// Builds a [`HttpRefresher`]; see [`HttpRefresher#default`] for the defaults.
///
/// ```
/// use keepfresh::oauth::HttpRefresher;
/// use std::time::Duration;
/// let r = HttpRefresher::builder("https://auth.example.com/token", "client")
///     .timeout(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// assert_eq!(r.timeout(), Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct HttpRefresherBuilder {
    token_url: String,
    client_id: String,
    client_secret: Option<ClientSecret>,
    client_auth: ClientAuth,
    resources: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    max_body_bytes: usize,
    allow_insecure_http: bool,
    user_agent: String,
    send_scope: bool,
    revocation_url: Option<String>,
    configure: Option<Configure>,
}

impl HttpRefresher {
    /// A builder for the token endpoint at `token_url` and the client `client_id`.
    ///
    /// See the [type-level example](HttpRefresher#examples).
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> HttpRefresherBuilder {
        HttpRefresherBuilder {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            client_auth: ClientAuth::default(),
            resources: Vec::new(),
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            max_body_bytes: crate::limits::MAX_TOKEN_RESPONSE_BYTES,
            allow_insecure_http: false,
            user_agent: concat!("keepfresh/", env!("CARGO_PKG_VERSION")).to_owned(),
            send_scope: true,
            revocation_url: None,
            configure: None,
        }
    }

    /// The token endpoint.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// let r = HttpRefresher::builder("https://auth.example.com/token", "c").build().unwrap();
    /// assert_eq!(r.token_url().as_str(), "https://auth.example.com/token");
    /// ```
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// The client identifier.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// let r = HttpRefresher::builder("https://auth.example.com/token", "c").build().unwrap();
    /// assert_eq!(r.client_id(), "c");
    /// ```
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The timeout of one whole exchange (connect, send, answer, body).
    ///
    /// See the [builder example](HttpRefresherBuilder).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The `resource` indicators sent on every refresh (RFC 8707).
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// let r = HttpRefresher::builder("https://auth.example.com/token", "c")
    ///     .resource("https://mcp.example.com/")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(r.resources(), ["https://mcp.example.com/"]);
    /// ```
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    fn form(&self, request: &RefreshRequest, refresh_token: &str) -> Zeroizing<String> {
        // Sized up front for the worst case (every byte percent-encoded): the serializer never
        // reallocates, so no copy of the refresh token or client secret is left behind.
        let capacity = self.form_capacity(request, refresh_token);
        let mut form = form_urlencoded::Serializer::new(String::with_capacity(capacity));
        form.append_pair("grant_type", "refresh_token");
        form.append_pair("refresh_token", refresh_token);
        if let Some(scope) = request
            .scope
            .as_deref()
            .filter(|s| self.send_scope && !s.is_empty())
        {
            form.append_pair("scope", scope);
        }
        for resource in &self.resources {
            form.append_pair("resource", resource);
        }
        self.append_client(&mut form);
        Zeroizing::new(form.finish())
    }

    /// The longest the refresh form can be: every byte of every value percent-encoded, plus
    /// the names and separators.
    fn form_capacity(&self, request: &RefreshRequest, refresh_token: &str) -> usize {
        let secret = self
            .client_secret
            .as_ref()
            .map_or(0, |s| s.expose_secret().len());
        let scope = request.scope.as_deref().map_or(0, str::len);
        let resources: usize = self.resources.iter().map(|r| 3 * r.len() + 10).sum();
        3 * (refresh_token.len() + secret + scope + self.client_id.len()) + resources + 128
    }

    /// The client's identification in a form body (all but `client_secret_basic`).
    fn append_client(&self, form: &mut form_urlencoded::Serializer<'_, String>) {
        match (&self.client_secret, self.client_auth) {
            (None, _) => {
                form.append_pair("client_id", &self.client_id);
            }
            (Some(secret), ClientAuth::Post) => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", secret.expose_secret());
            }
            (Some(_), ClientAuth::Basic) => {}
        }
    }

    /// Adds `client_secret_basic` authentication when that is how the client authenticates.
    fn authenticate(&self, http: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let (Some(secret), ClientAuth::Basic) = (&self.client_secret, self.client_auth) else {
            return http;
        };
        let id = Zeroizing::new(
            form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect::<String>(),
        );
        let secret = Zeroizing::new(
            form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect::<String>(),
        );
        // reqwest marks the header sensitive.
        http.basic_auth(id.as_str(), Some(secret.as_str()))
    }

    /// The revocation endpoint, if one was configured.
    ///
    /// See [`HttpRefresherBuilder::revocation_url`].
    pub fn revocation_url(&self) -> Option<&Url> {
        self.revocation_url.as_ref()
    }

    /// Revokes `token` at the revocation endpoint (RFC 7009, `token_type_hint=refresh_token`,
    /// authenticated like a refresh). Revoking a refresh token also ends the access tokens of
    /// its grant at most providers. The server answers 200 for a token it does not know, so
    /// `Ok` means "no longer usable", not "was valid". On logout, delete the local tokens
    /// whatever this answers (see [`logout`](crate::oauth::logout)).
    ///
    /// # Errors
    /// No revocation endpoint configured ([`ErrorClass::Configuration`]); a transport failure
    /// or a 5xx ([`ErrorClass::Transient`], with `Retry-After` when given); the server's error
    /// answer classified as for a refresh (`unsupported_token_type`, `invalid_client`…).
    /// Errors never contain the token.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// # use keepfresh::RefreshToken;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let r = HttpRefresher::builder("https://a.example/token", "c").build().unwrap();
    /// let e = r.revoke(&RefreshToken::new("rt")).await.unwrap_err();
    /// assert_eq!(e.class(), keepfresh::ErrorClass::Configuration);
    /// # }
    /// ```
    pub async fn revoke(&self, token: &RefreshToken) -> Result<(), RefreshError> {
        let Some(url) = &self.revocation_url else {
            return Err(RefreshError::configuration(
                "no revocation endpoint configured (revocation_url)",
            ));
        };
        let capacity = 3
            * (token.expose_secret().len()
                + self
                    .client_secret
                    .as_ref()
                    .map_or(0, |s| s.expose_secret().len())
                + self.client_id.len())
            + 128;
        let mut form = form_urlencoded::Serializer::new(String::with_capacity(capacity));
        form.append_pair("token", token.expose_secret());
        form.append_pair("token_type_hint", "refresh_token");
        self.append_client(&mut form);
        let body = Zeroizing::new(form.finish());
        let http = self
            .client
            .post(url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec());
        let http = self.authenticate(http);
        drop(body);
        let result = async {
            let mut response = http
                .send()
                .await
                .map_err(|e| RefreshError::transient(format!("revocation request failed: {}", root_cause(&e))))?;
            let status = response.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(());
            }
            let headers = response.headers().clone();
            // An error answer: small, but it may echo the token; kept in a zeroizing buffer.
            let mut body = Zeroizing::new(Vec::with_capacity(4096));
            while let Ok(Some(chunk)) = response.chunk().await {
                if body.len() + chunk.len() > self.max_body_bytes {
                    body.clear();
                    break;
                }
                reserve_zeroizing(&mut body, chunk.len(), self.max_body_bytes);
                body.extend_from_slice(&chunk);
            }
            let content_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // RFC 7009 §2.2.1: the server does not revoke this kind of token; retrying cannot help.
            let code = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
            if code.as_deref() == Some("unsupported_token_type") {
                return Err(RefreshError::configuration(
                    "the revocation endpoint does not revoke refresh tokens (unsupported_token_type)",
                ));
            }
            Err(parse_token_response_redacting(
                HttpAnswer {
                    status,
                    content_type: content_type.as_deref(),
                    retry_after: retry_after(&headers),
                    body: &body,
                },
                &self.redactor(token.expose_secret()),
            )
            .err()
            .unwrap_or_else(|| RefreshError::transient(format!("revocation answered HTTP {status}"))))
        }
        .await;
        result.map_err(|e| scrub(e, &self.redactor(token.expose_secret())))
    }

    async fn exchange(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let Some(refresh_token) = request.refresh_token.as_ref() else {
            return Err(RefreshError::invalid_grant(
                "no refresh token to redeem: re-authorization is required",
            ));
        };
        let body = self.form(&request, refresh_token.expose_secret());
        let http = self
            .client
            .post(self.token_url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec());
        let http = self.authenticate(http);
        drop(body);

        let mut response = match http.send().await {
            Ok(r) => r,
            Err(e) => return Err(transport_error(&e, false)),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if (300..400).contains(&status) {
            return Err(RefreshError::configuration(format!(
                "HTTP {status} from the token endpoint: redirects are not followed (is the token URL right?)"
            )));
        }
        let success = (200..300).contains(&status);
        let retry_after = retry_after(&headers);
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Sized up front (from Content-Length when sent) and grown by copying into a new
        // zeroizing buffer: a reallocating Vec would leave copies of the tokens behind.
        let initial = declared
            .map_or(4096, |n| n as usize)
            .min(self.max_body_bytes);
        let mut body = Zeroizing::new(Vec::with_capacity(initial));
        let mut lost: Option<RefreshError> = None;
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            lost = Some(too_large(status, self.max_body_bytes));
        } else {
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        if body.len() + chunk.len() > self.max_body_bytes {
                            lost = Some(too_large(status, self.max_body_bytes));
                            break;
                        }
                        reserve_zeroizing(&mut body, chunk.len(), self.max_body_bytes);
                        body.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        lost = Some(transport_error(&e, true));
                        break;
                    }
                }
            }
        }
        if let Some(err) = lost {
            if success {
                // The provider answered (and may have rotated), but the answer is unusable.
                return Err(err);
            }
            // The status alone still classifies an error answer.
            body.clear();
        }
        parse_token_response_redacting(
            HttpAnswer {
                status,
                content_type: content_type.as_deref(),
                retry_after,
                body: &body,
            },
            &self.redactor(refresh_token.expose_secret()),
        )
    }

    /// What to cut out of the provider's error text: the refresh token sent and the client
    /// secret, in every form a request carries them.
    fn redactor(&self, refresh_token: &str) -> Redactor {
        let secret = self.client_secret.as_ref().map(|s| s.expose_secret());
        Redactor::new(
            std::iter::once(refresh_token).chain(secret),
            secret.map(|s| (self.client_id.as_str(), s)),
        )
    }
}

/// Replaces any secret the message contains.
fn scrub(e: RefreshError, redactor: &Redactor) -> RefreshError {
    let message = redactor.apply(e.message());
    if message == e.message() {
        return e;
    }
    let mut clean = RefreshError::new(e.class(), message);
    if let Some(ra) = e.retry_after() {
        clean = clean.with_retry_after(ra);
    }
    clean
}

/// Makes room for `extra` more bytes without a reallocation that would leave the old bytes
/// behind: a new buffer of twice the size (at most `max`) takes a copy, and the old one is
/// zeroized as it drops.
fn reserve_zeroizing(buf: &mut Zeroizing<Vec<u8>>, extra: usize, max: usize) {
    let needed = buf.len() + extra;
    if needed <= buf.capacity() {
        return;
    }
    let capacity = needed.max(buf.capacity() * 2).min(max.max(needed));
    let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
    grown.extend_from_slice(buf);
    *buf = grown;
}

fn too_large(status: u16, max: usize) -> RefreshError {
    RefreshError::ambiguous(format!(
        "HTTP {status} with a body larger than {max} bytes from the token endpoint"
    ))
}

/// `Retry-After`, with an HTTP date measured against the response's `Date` when present.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let now = headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(OffsetDateTime::from)
        .unwrap_or_else(OffsetDateTime::now_utc);
    parse_retry_after(value, now)
}

/// Classifies a transport failure. `after_headers`: the answer's head had already arrived.
fn transport_error(e: &reqwest::Error, after_headers: bool) -> RefreshError {
    let cause = root_cause(e);
    if e.is_builder() {
        return RefreshError::configuration(format!("bad token request: {cause}"));
    }
    if e.is_connect() && !after_headers {
        // Nothing was sent: retrying cannot be a replay.
        return RefreshError::transient(format!(
            "could not connect to the token endpoint: {cause}"
        ));
    }
    let what = if e.is_timeout() {
        "timed out"
    } else {
        "failed"
    };
    RefreshError::new(
        ErrorClass::Ambiguous,
        format!(
            "token request {what} after it may have been sent (the provider may have rotated the refresh token): {cause}"
        ),
    )
}

/// The innermost error message, which names the failure without the URL.
pub(super) fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: Option<&dyn std::error::Error> = None;
    let mut next = std::error::Error::source(e);
    while let Some(source) = next {
        cause = Some(source);
        next = source.source();
    }
    match cause {
        Some(c) => c
            .to_string()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
        // reqwest's own message names the URL; describe the kind only.
        None if e.is_timeout() => "timeout".to_owned(),
        None if e.is_connect() => "connection error".to_owned(),
        None => "transport error".to_owned(),
    }
}

#[async_trait]
impl Refresher for HttpRefresher {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let refresh_token = request.refresh_token.clone();
        self.exchange(request).await.map_err(|e| {
            // A provider may echo what it was sent in `error_description`; the parser already
            // redacted it there, this covers every other message.
            let token = refresh_token.as_ref().map_or("", |t| t.expose_secret());
            scrub(e, &self.redactor(token))
        })
    }
}

impl fmt::Debug for HttpRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut url = self.token_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        let _ = url.set_password(None);
        f.debug_struct("HttpRefresher")
            .field("token_url", &url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_auth", &self.client_auth)
            .field("resources", &self.resources)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl fmt::Debug for HttpRefresherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRefresherBuilder")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_auth", &self.client_auth)
            .field("resources", &self.resources)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("send_scope", &self.send_scope)
            .field("configured_client", &self.configure.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpRefresherBuilder {
    /// Authenticates the client with this secret (a confidential client), sent as
    /// [`client_auth`](Self::client_auth) says. Without one the client is public.
    ///
    /// See the [`HttpRefresher` example](HttpRefresher#examples).
    pub fn client_secret(mut self, secret: ClientSecret) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// How the [client secret](Self::client_secret) is sent. Default: [`ClientAuth::Basic`].
    ///
    /// See the [`HttpRefresher` example](HttpRefresher#examples).
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Adds a `resource` indicator (RFC 8707; for MCP, the server's canonical URI), sent on
    /// every refresh. May be called more than once.
    ///
    /// See [`HttpRefresher::resources`].
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// Bounds one whole exchange. Default: 20 s. Keep it below the engine's
    /// [refresh timeout](crate::RefreshPolicy::refresh_timeout) so the failure is classified
    /// here (a timeout after sending is [`ErrorClass::Ambiguous`]).
    ///
    /// See the [builder example](HttpRefresherBuilder).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds establishing the connection (nothing sent yet, so a failure here is
    /// [`ErrorClass::Transient`]). Default: 5 s.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// # use std::time::Duration;
    /// let r = HttpRefresher::builder("https://auth.example.com/token", "c")
    ///     .connect_timeout(Duration::from_secs(2))
    ///     .build();
    /// assert!(r.is_ok());
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest response body read; a larger successful answer is
    /// [`ErrorClass::Ambiguous`]. Default: 64 KiB.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// assert!(HttpRefresher::builder("https://a.example/token", "c").max_body_bytes(4096).build().is_ok());
    /// assert!(HttpRefresher::builder("https://a.example/token", "c").max_body_bytes(0).build().is_err());
    /// ```
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// Allows a plain `http://` token endpoint on a non-loopback host. Default: `false`
    /// (RFC 6749 §3.2 requires TLS; loopback hosts are always allowed, for tests and local
    /// mock servers).
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// assert!(HttpRefresher::builder("http://auth.example.com/token", "c").build().is_err());
    /// assert!(HttpRefresher::builder("http://127.0.0.1:8080/token", "c").build().is_ok());
    /// assert!(HttpRefresher::builder("http://auth.example.com/token", "c")
    ///     .allow_insecure_http(true)
    ///     .build()
    ///     .is_ok());
    /// ```
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Whether the `scope` a token set carries is sent on refresh. Default: `true` (ask for
    /// the same scopes again; a provider must not widen them). Some providers refuse a
    /// refresh that names scopes, or narrow the grant to exactly the named ones: turn it off
    /// for those.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// assert!(HttpRefresher::builder("https://a.example/token", "c").send_scope(false).build().is_ok());
    /// ```
    pub fn send_scope(mut self, send: bool) -> Self {
        self.send_scope = send;
        self
    }

    /// The RFC 7009 revocation endpoint, for [`HttpRefresher::revoke`]. Same URL rules as the
    /// token endpoint.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// let r = HttpRefresher::builder("https://a.example/token", "c")
    ///     .revocation_url("https://a.example/revoke")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(r.revocation_url().unwrap().path(), "/revoke");
    /// assert!(HttpRefresher::builder("https://a.example/token", "c").revocation_url("ftp://x").build().is_err());
    /// ```
    pub fn revocation_url(mut self, url: impl Into<String>) -> Self {
        self.revocation_url = Some(url.into());
        self
    }

    /// Adjusts the HTTP client before it is built: a custom root certificate, a proxy, a
    /// local address. keepfresh applies its own settings afterwards, which the adjustment
    /// cannot undo: redirects are never followed (a followed 307 or 308 would send the refresh
    /// token to another URL), nothing is retried (a retried refresh is a replay), and the
    /// timeouts and user agent above. A ready-made `reqwest::Client` is not taken because
    /// those settings could not be enforced on it.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// let r = HttpRefresher::builder("https://a.example/token", "c")
    ///     .configure_client(|b| b.no_proxy().tcp_nodelay(true))
    ///     .build();
    /// assert!(r.is_ok());
    /// ```
    pub fn configure_client(
        mut self,
        configure: impl Fn(ClientBuilder) -> ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// The `User-Agent` header. Default: `keepfresh/<version>`.
    ///
    /// ```
    /// # use keepfresh::oauth::HttpRefresher;
    /// assert!(HttpRefresher::builder("https://a.example/token", "c").user_agent("my-agent/1").build().is_ok());
    /// ```
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Builds the refresher.
    ///
    /// # Errors
    /// The URL does not parse, is not `https` (or `http` to a loopback host, or `http` with
    /// [`allow_insecure_http`](Self::allow_insecure_http)), carries credentials; the client id
    /// is empty; a limit is zero; the HTTP client cannot be built.
    ///
    /// See the [type-level example](HttpRefresher#examples).
    pub fn build(self) -> Result<HttpRefresher, HttpBuildError> {
        let url = checked_url(
            &self.token_url,
            "token endpoint URL",
            self.allow_insecure_http,
        )?;
        if self.client_id.is_empty() {
            return Err(HttpBuildError("client_id is empty".into()));
        }
        if self.max_body_bytes == 0 {
            return Err(HttpBuildError("max_body_bytes must be positive".into()));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(HttpBuildError("timeouts must be positive".into()));
        }
        let revocation_url = match &self.revocation_url {
            None => None,
            Some(raw) => Some(checked_url(
                raw,
                "revocation endpoint URL",
                self.allow_insecure_http,
            )?),
        };
        let base = match &self.configure {
            Some(configure) => configure(Client::builder()),
            None => Client::builder(),
        };
        // Applied after the caller's adjustments, so that they cannot be undone: a followed
        // 307/308 would send the refresh token to another URL, and a retried POST is a replay.
        let client = base
            .redirect(redirect::Policy::none())
            .retry(reqwest::retry::never())
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| HttpBuildError(format!("HTTP client: {}", root_cause(&e))))?;
        Ok(HttpRefresher {
            client,
            token_url: url,
            client_id: self.client_id,
            client_secret: self.client_secret,
            client_auth: self.client_auth,
            resources: self.resources,
            max_body_bytes: self.max_body_bytes,
            timeout: self.timeout,
            send_scope: self.send_scope,
            revocation_url,
        })
    }
}

/// Parses an endpoint URL: https, or http to a loopback host (or with `insecure`), no
/// credentials.
fn checked_url(raw: &str, what: &str, insecure: bool) -> Result<Url, HttpBuildError> {
    let url = Url::parse(raw.trim()).map_err(|e| HttpBuildError(format!("{what}: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if insecure || is_loopback(&url) => {}
        "http" => {
            return Err(HttpBuildError(format!(
                "{what}: plain http is only allowed for loopback hosts (see allow_insecure_http)"
            )))
        }
        other => {
            return Err(HttpBuildError(format!(
                "{what}: unsupported scheme {other:?}"
            )))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HttpBuildError(format!(
            "{what} must not carry credentials; use client_secret"
        )));
    }
    Ok(url)
}

pub(super) fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// What [`logout`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Logout {
    /// The revocation's answer; `None` when the store held no refresh token to revoke.
    pub revoked: Option<Result<(), RefreshError>>,
    /// Whether the store was emptied (`Ok(false)`: it was already empty).
    pub cleared: Result<bool, crate::store::StoreError>,
}

/// Logs a grant out: revokes the newest refresh token the store holds (RFC 7009) and empties
/// the store whatever the revocation answers, so that a failed or unreachable revocation
/// endpoint never leaves usable tokens on disk. Stop the credentials that use the store first
/// ([`Credential::shutdown`](crate::Credential::shutdown)), or one of them may save a refreshed
/// set after the store was emptied.
///
/// ```
/// use keepfresh::oauth::{logout, HttpRefresher};
/// use keepfresh::store::{MemoryStore, TokenStore};
/// use keepfresh::{AccessToken, RefreshToken, TokenSet};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = MemoryStore::new();
/// let now = time::OffsetDateTime::now_utc();
/// let set = TokenSet::new(AccessToken::new("at"), Some(RefreshToken::new("rt")), now, now + time::Duration::hours(1));
/// store.save(None, &set).await.unwrap();
/// // No revocation endpoint: the revocation fails, the tokens are deleted anyway.
/// let r = HttpRefresher::builder("https://a.example/token", "c").build().unwrap();
/// let out = logout(&store, &r).await;
/// assert!(matches!(out.revoked, Some(Err(_))));
/// assert!(out.cleared.unwrap());
/// assert!(store.load().await.unwrap().is_none());
/// # }
/// ```
pub async fn logout(store: &dyn crate::store::TokenStore, refresher: &HttpRefresher) -> Logout {
    let mut revoked = None;
    let mut cleared = Ok(false);
    // Another process may save between our load and our clear: read again and retry a few
    // times, revoking each refresh token seen.
    for _ in 0..5 {
        let stored = match store.load().await {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => {
                cleared = Err(e);
                break;
            }
        };
        if let Some(rt) = stored.tokens.refresh_token() {
            revoked = Some(refresher.revoke(rt).await);
        }
        match store.clear(stored.version).await {
            Ok(true) => {
                cleared = Ok(true);
                break;
            }
            Ok(false) => continue,
            Err(e) => {
                cleared = Err(e);
                break;
            }
        }
    }
    Logout { revoked, cleared }
}

#[cfg(test)]
mod zeroize_tests {
    use super::*;
    use crate::secret::RefreshToken;

    /// The refresh form is written into a buffer sized for the worst case: it never
    /// reallocates (a reallocation would leave an unzeroized copy of the refresh token).
    #[test]
    fn the_refresh_form_never_reallocates() {
        let hostile = "ä ?&=+%/\u{1F600}".repeat(40);
        let refresher = HttpRefresher::builder("https://auth.example.com/token", hostile.clone())
            .client_secret(crate::ClientSecret::new(hostile.clone()))
            .client_auth(ClientAuth::Post)
            .resource(format!("https://mcp.example.com/{hostile}"))
            .build()
            .unwrap();
        let mut request = RefreshRequest::new(Some(RefreshToken::new(hostile.clone())));
        request.scope = Some(hostile.clone());
        let form = refresher.form(&request, &hostile);
        assert!(form.len() > 3 * hostile.len(), "every value is in the form");
        assert_eq!(form.capacity(), refresher.form_capacity(&request, &hostile));
    }

    #[test]
    fn a_growing_body_keeps_its_bytes() {
        let mut buf = Zeroizing::new(Vec::with_capacity(4));
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnopqrstu"] {
            reserve_zeroizing(&mut buf, chunk.len(), 1 << 20);
            let before = buf.capacity();
            buf.extend_from_slice(chunk);
            assert_eq!(buf.capacity(), before, "extend never reallocates");
        }
        assert_eq!(&buf[..], b"abcdefghijklmnopqrstu");
    }
}

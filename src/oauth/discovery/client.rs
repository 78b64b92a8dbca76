//! [`Discovery`]: fetching the metadata documents over HTTP, in MCP's order, without following
//! redirects or reading unbounded bodies.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_LENGTH};
use reqwest::{redirect, Client, Url};

use super::error::{shown, DiscoveryError, DiscoveryErrorKind};
use super::metadata::{AuthorizationServerMetadata, ProtectedResourceMetadata, MAX_METADATA_BYTES};
use super::urls::{check, parse_given, protected_resource_urls, well_known_urls, Query};
use crate::oauth::http::{is_loopback, root_cause};

/// Finds a protected resource's authorization server and that server's endpoints, as MCP
/// clients must (feature `http`).
///
/// - [`discover_from_resource`](Self::discover_from_resource): protected resource metadata
///   (RFC 9728) from a 401's `resource_metadata`, else from the well-known URLs; then the first
///   listed authorization server's metadata.
/// - [`discover_authorization_server`](Self::discover_authorization_server): authorization
///   server metadata (RFC 8414) from the URLs of [`well_known_urls`](super::well_known_urls),
///   tried in order.
///
/// Every document goes through [`AuthorizationServerMetadata::from_json`] or
/// [`ProtectedResourceMetadata::from_json`], so an answer describing another issuer or
/// resource, an insecure endpoint or a server without PKCE `S256` is refused.
///
/// What it never does:
/// - **follow redirects**: a 3xx answer counts as "not here" and the next candidate URL is
///   tried; a [caller-supplied client](DiscoveryBuilder::client) that follows redirects anyway
///   has its answer refused ([`Redirected`](DiscoveryErrorKind::Redirected));
/// - **skip past a bad document**: only a non-2xx status moves on to the next URL; a 2xx answer
///   that is not valid metadata (another issuer, no `S256`, not JSON, too large) ends discovery
///   with that error;
/// - read more than [`MAX_METADATA_BYTES`] of a body, or wait longer than the
///   [timeout](DiscoveryBuilder::timeout) for one request;
/// - quote a fetched document in an error.
///
/// A transport failure (connection refused, DNS, TLS, timeout) ends discovery at once: the
/// other candidate URLs are on the same host.
///
/// It needs a tokio runtime.
///
/// # Default
/// | setting | default |
/// |---|---|
/// | [`client`](DiscoveryBuilder::client) | a client of its own, built with the settings below |
/// | [`timeout`](DiscoveryBuilder::timeout) | 10 s per request (applied to a caller-supplied client too) |
/// | [`connect_timeout`](DiscoveryBuilder::connect_timeout) | 5 s (own client only) |
/// | [`user_agent`](DiscoveryBuilder::user_agent) | `keepfresh/<version>` (own client only) |
///
/// # Examples
/// ```
/// use keepfresh::oauth::discovery::Discovery;
/// use serde_json::json;
/// use wiremock::matchers::{method, path};
/// use wiremock::{Mock, MockServer, ResponseTemplate};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A stand-in for an MCP server at <uri>/mcp and its authorization server at <uri>/auth.
/// let server = MockServer::start().await;
/// let uri = server.uri();
/// Mock::given(method("GET"))
///     .and(path("/.well-known/oauth-protected-resource/mcp"))
///     .respond_with(ResponseTemplate::new(200).set_body_json(json!({
///         "resource": format!("{uri}/mcp"),
///         "authorization_servers": [format!("{uri}/auth")],
///     })))
///     .mount(&server)
///     .await;
/// Mock::given(method("GET"))
///     .and(path("/.well-known/oauth-authorization-server/auth"))
///     .respond_with(ResponseTemplate::new(200).set_body_json(json!({
///         "issuer": format!("{uri}/auth"),
///         "authorization_endpoint": format!("{uri}/auth/authorize"),
///         "token_endpoint": format!("{uri}/auth/token"),
///         "response_types_supported": ["code"],
///         "code_challenge_methods_supported": ["S256"],
///     })))
///     .mount(&server)
///     .await;
///
/// let discovery = Discovery::builder().build()?;
/// // No 401 seen yet, so no `resource_metadata`: the well-known URLs are tried.
/// let found = discovery.discover_from_resource(&format!("{uri}/mcp"), None).await?;
/// assert_eq!(found.resource.resource, format!("{uri}/mcp"));
/// assert_eq!(found.authorization_server.issuer, format!("{uri}/auth"));
/// assert_eq!(found.authorization_server.token_endpoint.path(), "/auth/token");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Discovery {
    client: Client,
    timeout: Duration,
}

/// Builds a [`Discovery`]; see [`Discovery#default`] for the defaults.
///
/// ```
/// use keepfresh::oauth::discovery::Discovery;
/// use std::time::Duration;
/// let d = Discovery::builder().timeout(Duration::from_secs(3)).build().unwrap();
/// assert_eq!(d.timeout(), Duration::from_secs(3));
/// ```
#[derive(Clone, Debug)]
pub struct DiscoveryBuilder {
    client: Option<Client>,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
}

/// What [`Discovery::discover_from_resource`] found: the resource's metadata and its
/// authorization server's.
///
/// See the [`Discovery` example](Discovery#examples).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceDiscovery {
    /// The protected resource's metadata; its `resource` is the RFC 8707 `resource` to send.
    pub resource: ProtectedResourceMetadata,
    /// The metadata of the first server in
    /// [`authorization_servers`](ProtectedResourceMetadata::authorization_servers).
    pub authorization_server: AuthorizationServerMetadata,
}

/// One candidate URL's answer.
enum Answer {
    /// A 2xx answer's body, at most [`MAX_METADATA_BYTES`].
    Document(Vec<u8>),
    /// Any other status.
    Status(u16),
}

impl Discovery {
    /// A builder; see [`Discovery#default`] for the defaults.
    ///
    /// See the [builder example](DiscoveryBuilder).
    pub fn builder() -> DiscoveryBuilder {
        DiscoveryBuilder {
            client: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("keepfresh/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// The timeout of one request (connect, send, answer, body).
    ///
    /// See the [builder example](DiscoveryBuilder).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Fetches and vets an authorization server's metadata: the URLs of
    /// [`well_known_urls`](super::well_known_urls) are tried in order until one answers 2xx,
    /// and that answer must pass [`AuthorizationServerMetadata::from_json`] for `issuer`.
    ///
    /// # Errors
    /// [`InvalidUrl`](DiscoveryErrorKind::InvalidUrl) or
    /// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) for an unusable `issuer`, before anything
    /// is fetched; [`NotFound`](DiscoveryErrorKind::NotFound) when no URL answered 2xx;
    /// [`Transport`](DiscoveryErrorKind::Transport),
    /// [`Redirected`](DiscoveryErrorKind::Redirected),
    /// [`TooLarge`](DiscoveryErrorKind::TooLarge) for the request; any error of
    /// [`AuthorizationServerMetadata::from_json`] for the first 2xx answer, with its
    /// [`url`](DiscoveryError::url).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request in flight; nothing is kept.
    ///
    /// ```no_run
    /// use keepfresh::oauth::discovery::Discovery;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let meta = Discovery::builder()
    ///     .build()?
    ///     .discover_authorization_server("https://auth.example.com/tenant1")
    ///     .await?;
    /// println!("token endpoint: {}", meta.token_endpoint);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover_authorization_server(
        &self,
        issuer: &str,
    ) -> Result<AuthorizationServerMetadata, DiscoveryError> {
        let urls = well_known_urls(issuer)?;
        let mut tried = Vec::with_capacity(urls.len());
        for url in urls {
            match self.get(&url).await? {
                Answer::Document(body) => {
                    return AuthorizationServerMetadata::from_json(&body, issuer)
                        .map_err(|e| e.at(&url))
                }
                Answer::Status(status) => tried.push((url, status)),
            }
        }
        Err(not_found("authorization server metadata", &tried))
    }

    /// Fetches and vets a protected resource's metadata.
    ///
    /// `resource` is the protected resource's URL (for MCP, the server's endpoint, such as
    /// `https://mcp.example.com/mcp`). `resource_metadata` is the parameter of that name in the
    /// `WWW-Authenticate: Bearer` challenge of a 401 from it
    /// ([`parse_bearer_challenge`](crate::oauth::parse_bearer_challenge) reads it), if any:
    ///
    /// - with it, only that URL is fetched (`https`, or plain `http` on loopback under a
    ///   loopback resource; no fragment or credentials), and the document's `resource` must be
    ///   exactly `resource` (RFC 9728 §7.3);
    /// - without it, the URLs of [`protected_resource_urls`](super::protected_resource_urls) are
    ///   tried in order until one answers 2xx. The path-inserted URL's document must name
    ///   exactly `resource`; the root URL's may name `resource` or the resource's origin (the
    ///   identifier the root URL is built from, RFC 9728 §3.3), with or without a terminating
    ///   `/`.
    ///
    /// # Errors
    /// [`InvalidUrl`](DiscoveryErrorKind::InvalidUrl) or
    /// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) for an unusable `resource` or
    /// `resource_metadata`, before anything is fetched;
    /// [`NotFound`](DiscoveryErrorKind::NotFound) when no URL answered 2xx;
    /// [`Transport`](DiscoveryErrorKind::Transport),
    /// [`Redirected`](DiscoveryErrorKind::Redirected),
    /// [`TooLarge`](DiscoveryErrorKind::TooLarge) for the request; any error of
    /// [`ProtectedResourceMetadata::from_json`] for the first 2xx answer, with its
    /// [`url`](DiscoveryError::url).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request in flight; nothing is kept.
    ///
    /// ```no_run
    /// use keepfresh::oauth::discovery::Discovery;
    /// use keepfresh::oauth::parse_bearer_challenge;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let header = r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#;
    /// let challenge = parse_bearer_challenge(header).unwrap();
    /// let meta = Discovery::builder()
    ///     .build()?
    ///     .discover_protected_resource("https://mcp.example.com/mcp", challenge.resource_metadata.as_deref())
    ///     .await?;
    /// println!("authorization servers: {:?}", meta.authorization_servers);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover_protected_resource(
        &self,
        resource: &str,
        resource_metadata: Option<&str>,
    ) -> Result<ProtectedResourceMetadata, DiscoveryError> {
        let urls = protected_resource_urls(resource)?;
        let resource_url = parse_given("resource", resource, Query::Allowed)?;
        if let Some(given) = resource_metadata {
            let url = metadata_url(given, is_loopback(&resource_url))?;
            return match self.get(&url).await? {
                Answer::Document(body) => {
                    ProtectedResourceMetadata::from_json(&body, resource).map_err(|e| e.at(&url))
                }
                Answer::Status(status) => Err(not_found(
                    "protected resource metadata at the challenge's resource_metadata URL",
                    &[(url, status)],
                )),
            };
        }
        let origin = resource_url.origin().ascii_serialization();
        let origin_slash = format!("{origin}/");
        let mut tried = Vec::with_capacity(urls.len());
        for (i, url) in urls.into_iter().enumerate() {
            match self.get(&url).await? {
                Answer::Document(body) => {
                    let root = [resource, origin.as_str(), origin_slash.as_str()];
                    let accepted = if i == 0 { &root[..1] } else { &root[..] };
                    return ProtectedResourceMetadata::from_json_for(&body, resource, accepted)
                        .map_err(|e| e.at(&url));
                }
                Answer::Status(status) => tried.push((url, status)),
            }
        }
        Err(not_found("protected resource metadata", &tried))
    }

    /// Discovers a protected resource's authorization server, as an MCP client does after a
    /// 401: [`discover_protected_resource`](Self::discover_protected_resource), then
    /// [`discover_authorization_server`](Self::discover_authorization_server) for the first
    /// entry of its `authorization_servers` (exactly as listed, so that server's `issuer` must
    /// match it). To use another listed server, call `discover_authorization_server` with it.
    ///
    /// # Errors
    /// Those of the two steps.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request in flight; nothing is kept.
    ///
    /// See the [type-level example](Discovery#examples).
    pub async fn discover_from_resource(
        &self,
        resource: &str,
        resource_metadata: Option<&str>,
    ) -> Result<ResourceDiscovery, DiscoveryError> {
        let resource = self
            .discover_protected_resource(resource, resource_metadata)
            .await?;
        // `from_json` guarantees at least one entry.
        let issuer = resource.authorization_servers[0].clone();
        let authorization_server = self.discover_authorization_server(&issuer).await?;
        Ok(ResourceDiscovery {
            resource,
            authorization_server,
        })
    }

    async fn get(&self, url: &Url) -> Result<Answer, DiscoveryError> {
        let mut response = self
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| transport(&e).at(url))?;
        if response.url() != url {
            return Err(DiscoveryError::new(
                DiscoveryErrorKind::Redirected,
                "the HTTP client followed a redirect to another URL, whose answer is refused \
                 (build the client with reqwest::redirect::Policy::none())",
            )
            .at(url));
        }
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Ok(Answer::Status(status));
        }
        let too_large = || {
            DiscoveryError::new(
                DiscoveryErrorKind::TooLarge,
                format!("the metadata document is larger than {MAX_METADATA_BYTES} bytes"),
            )
            .at(url)
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_METADATA_BYTES as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e).at(url))? {
            if body.len() + chunk.len() > MAX_METADATA_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer::Document(body))
    }
}

impl DiscoveryBuilder {
    /// Sends the requests with this client instead of one of discovery's own (to share its
    /// connection pool, proxy or TLS settings). Build it with
    /// `redirect(reqwest::redirect::Policy::none())`: discovery refuses an answer that came
    /// from another URL, but a client that follows redirects has already sent the request
    /// there. The [timeout](Self::timeout) is applied to each request;
    /// [`connect_timeout`](Self::connect_timeout) and [`user_agent`](Self::user_agent) are the
    /// client's own business.
    ///
    /// ```
    /// use keepfresh::oauth::discovery::Discovery;
    /// let client = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .build()
    ///     .unwrap();
    /// assert!(Discovery::builder().client(client).build().is_ok());
    /// ```
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Bounds one request (connect, send, answer, body). Default: 10 s.
    ///
    /// See the [builder example](DiscoveryBuilder).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds establishing a connection, for discovery's own client. Default: 5 s.
    ///
    /// ```
    /// # use keepfresh::oauth::discovery::Discovery;
    /// # use std::time::Duration;
    /// assert!(Discovery::builder().connect_timeout(Duration::from_secs(2)).build().is_ok());
    /// assert!(Discovery::builder().connect_timeout(Duration::ZERO).build().is_err());
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The `User-Agent` header of discovery's own client. Default: `keepfresh/<version>`.
    ///
    /// ```
    /// # use keepfresh::oauth::discovery::Discovery;
    /// assert!(Discovery::builder().user_agent("my-agent/1").build().is_ok());
    /// ```
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Builds the [`Discovery`].
    ///
    /// # Errors
    /// [`Config`](DiscoveryErrorKind::Config) for a zero timeout or when the HTTP client cannot
    /// be built.
    ///
    /// See the [builder example](DiscoveryBuilder).
    pub fn build(self) -> Result<Discovery, DiscoveryError> {
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(DiscoveryError::new(
                DiscoveryErrorKind::Config,
                "timeouts must be positive",
            ));
        }
        let client = match self.client {
            Some(client) => client,
            None => Client::builder()
                .redirect(redirect::Policy::none())
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                .user_agent(self.user_agent)
                .build()
                .map_err(|e| {
                    DiscoveryError::new(
                        DiscoveryErrorKind::Config,
                        format!("HTTP client: {}", root_cause(&e)),
                    )
                })?,
        };
        Ok(Discovery {
            client,
            timeout: self.timeout,
        })
    }
}

/// Parses a 401's `resource_metadata` URL, which the resource server chose (so it is not quoted
/// in errors).
fn metadata_url(given: &str, resource_on_loopback: bool) -> Result<Url, DiscoveryError> {
    let url = Url::parse(given).map_err(|_| {
        DiscoveryError::new(
            DiscoveryErrorKind::InvalidUrl,
            "the challenge's resource_metadata is not an absolute URL",
        )
    })?;
    check(&url, Query::Allowed, Some(resource_on_loopback)).map_err(|r| {
        DiscoveryError::new(
            r.kind,
            format!("the challenge's resource_metadata URL {}", r.reason),
        )
    })?;
    Ok(url)
}

fn not_found(what: &str, tried: &[(Url, u16)]) -> DiscoveryError {
    let answers: Vec<String> = tried
        .iter()
        .map(|(url, status)| {
            let note = if (300..400).contains(status) {
                " (a redirect, not followed)"
            } else {
                ""
            };
            format!("{} answered HTTP {status}{note}", shown(url.as_str()))
        })
        .collect();
    DiscoveryError::new(
        DiscoveryErrorKind::NotFound,
        format!("no {what} found: {}", answers.join("; ")),
    )
}

fn transport(e: &reqwest::Error) -> DiscoveryError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    DiscoveryError::new(
        DiscoveryErrorKind::Transport,
        format!("the request {what}: {}", root_cause(e)),
    )
}

//! Why discovery failed, told without the fetched document's content.

use std::fmt;

use reqwest::Url;

/// What kind of failure a [`DiscoveryError`] is.
///
/// ```
/// use keepfresh::oauth::discovery::{well_known_urls, DiscoveryErrorKind};
/// let e = well_known_urls("https://auth.example.com/?tenant=1").unwrap_err();
/// assert_eq!(e.kind(), DiscoveryErrorKind::InvalidUrl);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiscoveryErrorKind {
    /// An issuer or resource URL given by the caller, or a 401's `resource_metadata` URL, is
    /// not usable: it does not parse, is relative, has surrounding whitespace, carries
    /// credentials, a fragment (or, for an issuer, a query), or a scheme other than
    /// `https`/`http`. (A URL inside a document is an
    /// [`InvalidField`](DiscoveryErrorKind::InvalidField).)
    InvalidUrl,
    /// A URL uses plain `http` where only `https` is allowed: `http` is accepted for loopback
    /// hosts (`localhost`, `127.0.0.1`, `[::1]`) only, and for a URL taken from a document
    /// (an endpoint, an authorization server) only when the issuer or resource is itself on
    /// loopback. [`field`](DiscoveryError::field) names the offending field, if any.
    InsecureUrl,
    /// No candidate URL answered with a 2xx status (all answered 404, another error status,
    /// or a redirect, which is not followed). The message lists every URL tried and its status.
    NotFound,
    /// The answer came from another URL than the one asked for: a caller-supplied
    /// [`reqwest::Client`] followed a redirect. Discovery refuses such answers.
    Redirected,
    /// The request could not be sent or the answer not read (connection refused, DNS, TLS,
    /// timeout, a body cut short).
    Transport,
    /// The document is larger than [`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES).
    TooLarge,
    /// The document is not a JSON object.
    Malformed,
    /// A required field is missing (or `null`, or an empty list where one entry is needed);
    /// [`field`](DiscoveryError::field) names it.
    MissingField,
    /// A field has the wrong type, or is not a URL discovery can use (relative, a scheme other
    /// than `https`, a fragment, credentials, a query in an issuer identifier);
    /// [`field`](DiscoveryError::field) names it.
    InvalidField,
    /// The authorization server metadata's `issuer` is not exactly the issuer its URL was
    /// built from (RFC 8414 §3.3): the document may describe another server.
    IssuerMismatch,
    /// The protected resource metadata's `resource` is not exactly the resource it was
    /// fetched for (RFC 9728 §3.3, §7.3): the document may describe another resource.
    ResourceMismatch,
    /// The authorization server does not advertise PKCE with `S256` in
    /// `code_challenge_methods_supported`, which MCP requires; the client must not proceed.
    PkceUnsupported,
    /// A [`DiscoveryBuilder`](super::DiscoveryBuilder) setting is unusable (a zero timeout) or
    /// the HTTP client could not be built.
    Config,
}

/// Why discovery failed.
///
/// Inspect it with [`kind`](DiscoveryError::kind), [`field`](DiscoveryError::field) and
/// [`url`](DiscoveryError::url); the `Display` text is for humans and not to be parsed. It names
/// the URLs fetched and the fields at fault, never a value taken from the fetched document.
///
/// ```
/// use keepfresh::oauth::discovery::{AuthorizationServerMetadata, DiscoveryErrorKind};
/// let doc = br#"{"issuer": "https://evil.example.com", "authorization_endpoint": "https://evil.example.com/a"}"#;
/// let e = AuthorizationServerMetadata::from_json(doc, "https://auth.example.com").unwrap_err();
/// assert_eq!(e.kind(), DiscoveryErrorKind::IssuerMismatch);
/// assert_eq!(e.field(), Some("issuer"));
/// assert!(!e.to_string().contains("evil"));
/// ```
#[derive(Clone)]
pub struct DiscoveryError {
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: DiscoveryErrorKind,
    field: Option<&'static str>,
    url: Option<Url>,
    message: String,
}

impl DiscoveryError {
    pub(super) fn new(kind: DiscoveryErrorKind, message: impl Into<String>) -> Self {
        DiscoveryError {
            inner: Box::new(Inner {
                kind,
                field: None,
                url: None,
                message: message.into(),
            }),
        }
    }

    pub(super) fn with_field(mut self, field: &'static str) -> Self {
        self.inner.field = Some(field);
        self
    }

    /// Names the URL being fetched, unless an inner step already did.
    pub(super) fn at(mut self, url: &Url) -> Self {
        if self.inner.url.is_none() {
            self.inner.url = Some(url.clone());
        }
        self
    }

    /// The kind of failure.
    ///
    /// See the [type-level example](DiscoveryError).
    pub fn kind(&self) -> DiscoveryErrorKind {
        self.inner.kind
    }

    /// The metadata field at fault, for [`MissingField`](DiscoveryErrorKind::MissingField),
    /// [`InvalidField`](DiscoveryErrorKind::InvalidField),
    /// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) (when the URL came from a document),
    /// [`IssuerMismatch`](DiscoveryErrorKind::IssuerMismatch),
    /// [`ResourceMismatch`](DiscoveryErrorKind::ResourceMismatch) and
    /// [`PkceUnsupported`](DiscoveryErrorKind::PkceUnsupported).
    ///
    /// ```
    /// use keepfresh::oauth::discovery::{ProtectedResourceMetadata, DiscoveryErrorKind};
    /// let e = ProtectedResourceMetadata::from_json(br#"{"resource": "https://mcp.example.com/mcp"}"#, "https://mcp.example.com/mcp")
    ///     .unwrap_err();
    /// assert_eq!(e.kind(), DiscoveryErrorKind::MissingField);
    /// assert_eq!(e.field(), Some("authorization_servers"));
    /// ```
    pub fn field(&self) -> Option<&'static str> {
        self.inner.field
    }

    /// The URL whose answer failed, when one did (a [`Discovery`](super::Discovery) fetch); `None`
    /// for the pure parsers and for [`NotFound`](DiscoveryErrorKind::NotFound), which lists
    /// every URL tried in its message.
    ///
    /// ```
    /// use keepfresh::oauth::discovery::well_known_urls;
    /// assert_eq!(well_known_urls("not a url").unwrap_err().url(), None);
    /// ```
    pub fn url(&self) -> Option<&Url> {
        self.inner.url.as_ref()
    }
}

impl fmt::Debug for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryError")
            .field("kind", &self.inner.kind)
            .field("field", &self.inner.field)
            .field("url", &self.inner.url.as_ref().map(Url::as_str))
            .field("message", &self.inner.message)
            .finish()
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.url {
            Some(url) => write!(
                f,
                "OAuth discovery at {}: {}",
                shown(url.as_str()),
                self.inner.message
            ),
            None => write!(f, "OAuth discovery: {}", self.inner.message),
        }
    }
}

impl std::error::Error for DiscoveryError {}

/// Keeps a URL or caller-supplied string printable and short in a message.
pub(super) fn shown(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

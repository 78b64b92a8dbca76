//! Where metadata lives: the well-known URLs built from an issuer or a resource, in the order
//! MCP clients try them, and the checks every URL discovery touches must pass.

use reqwest::Url;

use super::error::{shown, DiscoveryError, DiscoveryErrorKind};
use crate::oauth::http::is_loopback;

/// Whether a URL may carry a query component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Query {
    /// Issuer identifiers have none (RFC 8414 §2).
    Refused,
    /// Resource identifiers and endpoints may (RFC 9728 §1.2, RFC 6749 §3.1).
    Allowed,
}

/// Why a URL was refused, without the URL itself (it may come from a fetched document).
#[derive(Clone, Copy, Debug)]
pub(super) struct Refusal {
    pub(super) kind: DiscoveryErrorKind,
    pub(super) reason: &'static str,
}

impl Refusal {
    /// The error for a URL read from a document's `field` (which is not quoted): plain `http`
    /// stays [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl), any other flaw is an
    /// [`InvalidField`](DiscoveryErrorKind::InvalidField).
    pub(super) fn in_field(self, field: &'static str) -> DiscoveryError {
        let kind = match self.kind {
            DiscoveryErrorKind::InsecureUrl => DiscoveryErrorKind::InsecureUrl,
            _ => DiscoveryErrorKind::InvalidField,
        };
        DiscoveryError::new(
            kind,
            format!("the metadata's {field} names a URL that {}", self.reason),
        )
        .with_field(field)
    }
}

/// Checks the shape every URL discovery uses must have. `issued_on_loopback`: `None` for a URL
/// the caller gave (plain `http` allowed on loopback hosts), `Some(parent_is_loopback)` for a
/// URL read from a document (plain `http` allowed on loopback hosts only under a loopback
/// issuer or resource, so a remote server cannot point the client at its own machine in
/// clear text).
pub(super) fn check(
    url: &Url,
    query: Query,
    issued_on_loopback: Option<bool>,
) -> Result<(), Refusal> {
    let refuse = |kind, reason| Err(Refusal { kind, reason });
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url) && issued_on_loopback != Some(false) => {}
        "http" if is_loopback(url) => {
            return refuse(
                DiscoveryErrorKind::InsecureUrl,
                "uses plain http to a loopback host, which a document from a non-loopback server may not",
            )
        }
        "http" => {
            return refuse(
                DiscoveryErrorKind::InsecureUrl,
                "uses plain http, which is allowed for loopback hosts only",
            )
        }
        _ => {
            return refuse(
                DiscoveryErrorKind::InvalidUrl,
                "has a scheme other than https",
            )
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return refuse(DiscoveryErrorKind::InvalidUrl, "has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return refuse(DiscoveryErrorKind::InvalidUrl, "carries credentials");
    }
    if url.fragment().is_some() {
        return refuse(DiscoveryErrorKind::InvalidUrl, "has a fragment");
    }
    if query == Query::Refused && url.query().is_some() {
        return refuse(DiscoveryErrorKind::InvalidUrl, "has a query");
    }
    Ok(())
}

/// Parses a URL the caller gave (`what` names it in errors, which may quote it: it is the
/// caller's own input).
pub(super) fn parse_given(what: &str, s: &str, query: Query) -> Result<Url, DiscoveryError> {
    if s.is_empty() {
        return Err(DiscoveryError::new(
            DiscoveryErrorKind::InvalidUrl,
            format!("the {what} is empty"),
        ));
    }
    if s.trim() != s {
        return Err(DiscoveryError::new(
            DiscoveryErrorKind::InvalidUrl,
            format!(
                "the {what} {:?} has leading or trailing whitespace",
                shown(s)
            ),
        ));
    }
    let url = Url::parse(s).map_err(|e| {
        DiscoveryError::new(
            DiscoveryErrorKind::InvalidUrl,
            format!("the {what} {:?} is not an absolute URL ({e})", shown(s)),
        )
    })?;
    check(&url, query, None).map_err(|r| {
        DiscoveryError::new(r.kind, format!("the {what} {:?} {}", shown(s), r.reason))
    })?;
    Ok(url)
}

/// The URL with `path` and without query or fragment.
fn with_path(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    url.set_path(path);
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The path of an identifier without its terminating `/`s (RFC 8414 §3.1, RFC 9728 §3.1): empty
/// for an identifier without a path.
fn trimmed_path(url: &Url) -> &str {
    url.path().trim_end_matches('/')
}

/// The URLs where an authorization server's metadata may be, in the order MCP clients try them.
///
/// For an issuer with a path, such as `https://auth.example.com/tenant1`:
/// 1. `https://auth.example.com/.well-known/oauth-authorization-server/tenant1` (RFC 8414, path
///    inserted),
/// 2. `https://auth.example.com/.well-known/openid-configuration/tenant1` (OpenID Connect,
///    path inserted),
/// 3. `https://auth.example.com/tenant1/.well-known/openid-configuration` (OpenID Connect
///    Discovery 1.0, path appended).
///
/// Without a path: `/.well-known/oauth-authorization-server`, then
/// `/.well-known/openid-configuration`. A terminating `/` of the path is removed first, so
/// `https://auth.example.com/` has no path. The port is kept. Pure: nothing is fetched.
///
/// # Errors
/// [`InvalidUrl`](DiscoveryErrorKind::InvalidUrl) when the issuer does not parse, is relative,
/// has surrounding whitespace, a query or a fragment (an issuer identifier has neither,
/// RFC 8414 §2), credentials or a scheme other than `https`/`http`;
/// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) for plain `http` to a host that is not
/// loopback.
///
/// ```
/// use keepfresh::oauth::discovery::well_known_urls;
///
/// let urls = well_known_urls("https://auth.example.com/tenant1/").unwrap();
/// let urls: Vec<&str> = urls.iter().map(|u| u.as_str()).collect();
/// assert_eq!(urls, [
///     "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
///     "https://auth.example.com/.well-known/openid-configuration/tenant1",
///     "https://auth.example.com/tenant1/.well-known/openid-configuration",
/// ]);
///
/// let urls = well_known_urls("http://127.0.0.1:8080").unwrap();
/// let urls: Vec<&str> = urls.iter().map(|u| u.as_str()).collect();
/// assert_eq!(urls, [
///     "http://127.0.0.1:8080/.well-known/oauth-authorization-server",
///     "http://127.0.0.1:8080/.well-known/openid-configuration",
/// ]);
///
/// assert!(well_known_urls("https://auth.example.com/t#frag").is_err());
/// assert!(well_known_urls("http://auth.example.com").is_err());
/// ```
pub fn well_known_urls(issuer: &str) -> Result<Vec<Url>, DiscoveryError> {
    let url = parse_given("issuer", issuer, Query::Refused)?;
    let path = trimmed_path(&url);
    let mut urls = vec![
        with_path(
            &url,
            &format!("/.well-known/oauth-authorization-server{path}"),
        ),
        with_path(&url, &format!("/.well-known/openid-configuration{path}")),
    ];
    if !path.is_empty() {
        urls.push(with_path(
            &url,
            &format!("{path}/.well-known/openid-configuration"),
        ));
    }
    Ok(urls)
}

/// The URLs where a protected resource's metadata may be (RFC 9728 §3.1), in the order MCP
/// clients try them when a 401 named no `resource_metadata`.
///
/// For a resource with a path, such as `https://mcp.example.com/public/mcp`:
/// 1. `https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp` (path inserted;
///    a query, which RFC 9728 allows in a resource identifier, follows the path),
/// 2. `https://mcp.example.com/.well-known/oauth-protected-resource` (the root).
///
/// Without a path (and without a query) only the root. A terminating `/` of the path is removed
/// first. Pure: nothing is fetched.
///
/// # Errors
/// [`InvalidUrl`](DiscoveryErrorKind::InvalidUrl) when the resource does not parse, is
/// relative, has surrounding whitespace, a fragment (RFC 9728 §1.2), credentials or a scheme
/// other than `https`/`http`; [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) for plain
/// `http` to a host that is not loopback.
///
/// ```
/// use keepfresh::oauth::discovery::protected_resource_urls;
///
/// let urls = protected_resource_urls("https://mcp.example.com/public/mcp").unwrap();
/// let urls: Vec<&str> = urls.iter().map(|u| u.as_str()).collect();
/// assert_eq!(urls, [
///     "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp",
///     "https://mcp.example.com/.well-known/oauth-protected-resource",
/// ]);
///
/// let urls = protected_resource_urls("https://mcp.example.com:8443/").unwrap();
/// assert_eq!(urls[0].as_str(), "https://mcp.example.com:8443/.well-known/oauth-protected-resource");
/// assert_eq!(urls.len(), 1);
///
/// assert!(protected_resource_urls("https://mcp.example.com/mcp#section").is_err());
/// ```
pub fn protected_resource_urls(resource: &str) -> Result<Vec<Url>, DiscoveryError> {
    let url = parse_given("resource", resource, Query::Allowed)?;
    let mut inserted = with_path(
        &url,
        &format!(
            "/.well-known/oauth-protected-resource{}",
            trimmed_path(&url)
        ),
    );
    inserted.set_query(url.query());
    let root = with_path(&url, "/.well-known/oauth-protected-resource");
    let mut urls = vec![inserted];
    if urls[0] != root {
        urls.push(root);
    }
    Ok(urls)
}

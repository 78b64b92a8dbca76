//! Reading and vetting metadata documents: RFC 8414 authorization-server metadata and RFC 9728
//! protected-resource metadata, as pure functions of the bytes and the identifier they were
//! fetched for.

use reqwest::Url;
use serde_json::{Map, Value};

use super::error::{shown, DiscoveryError, DiscoveryErrorKind};
use super::urls::{check, parse_given, Query};
use crate::oauth::http::is_loopback;

pub use crate::limits::MAX_METADATA_BYTES;

/// An authorization server's metadata (RFC 8414 §2), vetted for an MCP client.
///
/// Built only by [`from_json`](Self::from_json) (or a [`Discovery`](super::Discovery) fetch),
/// which guarantees: `issuer` is exactly the expected issuer; both endpoints are present;
/// every endpoint URL is `https` (plain `http` only on loopback under a loopback issuer), has
/// no fragment and no credentials; `code_challenge_methods_supported` contains `S256`.
///
/// Optional list fields are `None` when the server did not send them, so the RFC's defaults can
/// be told apart from an explicit list; [`supports_grant_type`](Self::supports_grant_type) and
/// [`supports_token_endpoint_auth_method`](Self::supports_token_endpoint_auth_method) apply the
/// defaults. Unknown fields are ignored.
///
/// ```
/// use keepfresh::oauth::discovery::AuthorizationServerMetadata;
///
/// let doc = br#"{
///     "issuer": "https://auth.example.com/tenant1",
///     "authorization_endpoint": "https://auth.example.com/tenant1/authorize",
///     "token_endpoint": "https://auth.example.com/tenant1/token",
///     "revocation_endpoint": "https://auth.example.com/tenant1/revoke",
///     "response_types_supported": ["code"],
///     "grant_types_supported": ["authorization_code", "refresh_token"],
///     "code_challenge_methods_supported": ["S256"],
///     "authorization_response_iss_parameter_supported": true
/// }"#;
/// let meta = AuthorizationServerMetadata::from_json(doc, "https://auth.example.com/tenant1").unwrap();
/// assert_eq!(meta.token_endpoint.as_str(), "https://auth.example.com/tenant1/token");
/// assert!(meta.authorization_response_iss_parameter_supported);
/// assert!(meta.supports_grant_type("refresh_token"));
/// assert!(meta.registration_endpoint.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizationServerMetadata {
    /// `issuer`: the authorization server's issuer identifier, exactly as expected. Key
    /// credentials by it.
    pub issuer: String,
    /// `authorization_endpoint`.
    pub authorization_endpoint: Url,
    /// `token_endpoint`.
    pub token_endpoint: Url,
    /// `registration_endpoint`: dynamic client registration (RFC 7591), if offered.
    pub registration_endpoint: Option<Url>,
    /// `revocation_endpoint` (RFC 7009), if offered.
    pub revocation_endpoint: Option<Url>,
    /// `introspection_endpoint` (RFC 7662), if offered.
    pub introspection_endpoint: Option<Url>,
    /// `jwks_uri`, if offered.
    pub jwks_uri: Option<Url>,
    /// `scopes_supported`, if sent.
    pub scopes_supported: Option<Vec<String>>,
    /// `response_types_supported` (required by RFC 8414).
    pub response_types_supported: Vec<String>,
    /// `response_modes_supported`, if sent (default `["query", "fragment"]`).
    pub response_modes_supported: Option<Vec<String>>,
    /// `grant_types_supported`, if sent (default `["authorization_code", "implicit"]`).
    pub grant_types_supported: Option<Vec<String>>,
    /// `code_challenge_methods_supported`: always contains `S256`.
    pub code_challenge_methods_supported: Vec<String>,
    /// `token_endpoint_auth_methods_supported`, if sent (default `["client_secret_basic"]`).
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207): when `true`, an
    /// authorization response without `iss` must be refused. `false` when absent.
    pub authorization_response_iss_parameter_supported: bool,
    /// `client_id_metadata_document_supported`: the server accepts an HTTPS URL serving the
    /// client's metadata as `client_id` (MCP's Client ID Metadata Documents). `false` when
    /// absent.
    pub client_id_metadata_document_supported: bool,
}

/// A protected resource's metadata (RFC 9728 §2), vetted for an MCP client.
///
/// Built only by [`from_json`](Self::from_json) (or a [`Discovery`](super::Discovery) fetch),
/// which guarantees: `resource` is exactly the expected resource; `authorization_servers` has
/// at least one entry (MCP requires it) and every entry is a valid issuer identifier (`https`,
/// or plain `http` on loopback under a loopback resource; no query, fragment or credentials).
/// Unknown fields are ignored.
///
/// ```
/// use keepfresh::oauth::discovery::ProtectedResourceMetadata;
///
/// let doc = br#"{
///     "resource": "https://mcp.example.com/mcp",
///     "authorization_servers": ["https://auth.example.com/tenant1"],
///     "scopes_supported": ["tools:read"],
///     "bearer_methods_supported": ["header"]
/// }"#;
/// let meta = ProtectedResourceMetadata::from_json(doc, "https://mcp.example.com/mcp").unwrap();
/// assert_eq!(meta.authorization_servers, ["https://auth.example.com/tenant1"]);
/// assert_eq!(meta.scopes_supported.as_deref(), Some(&["tools:read".to_owned()][..]));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProtectedResourceMetadata {
    /// `resource`: the resource identifier, exactly as expected. Send it as the RFC 8707
    /// `resource` parameter.
    pub resource: String,
    /// `authorization_servers`: issuer identifiers, at least one. Each is an independent
    /// authorization server; credentials are never shared between them.
    pub authorization_servers: Vec<String>,
    /// `scopes_supported`, if sent.
    pub scopes_supported: Option<Vec<String>>,
    /// `bearer_methods_supported`, if sent.
    pub bearer_methods_supported: Option<Vec<String>>,
    /// `jwks_uri`, if sent.
    pub jwks_uri: Option<Url>,
    /// `resource_name`: a human-readable name, if sent. Untrusted text: escape it before
    /// display.
    pub resource_name: Option<String>,
}

impl AuthorizationServerMetadata {
    /// Parses and vets an authorization server metadata document fetched for `expected_issuer`
    /// (the issuer its well-known URL was built from). Pure: nothing is fetched.
    ///
    /// Checked, in this order: the size ([`MAX_METADATA_BYTES`]); a JSON object; `issuer`
    /// present and *identical* to `expected_issuer` (RFC 8414 §3.3: a simple string comparison,
    /// so `https://a.example` and `https://a.example/` differ); `authorization_endpoint` and
    /// `token_endpoint` present; every endpoint a valid `https` URL without fragment or
    /// credentials (plain `http` only for a loopback host under a loopback issuer);
    /// `response_types_supported` present; `code_challenge_methods_supported` containing
    /// `S256`; the type of every known field.
    ///
    /// # Errors
    /// [`InvalidUrl`](DiscoveryErrorKind::InvalidUrl) or
    /// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) for an unusable `expected_issuer` (the
    /// rules of [`well_known_urls`](super::well_known_urls));
    /// [`TooLarge`](DiscoveryErrorKind::TooLarge), [`Malformed`](DiscoveryErrorKind::Malformed),
    /// [`IssuerMismatch`](DiscoveryErrorKind::IssuerMismatch),
    /// [`MissingField`](DiscoveryErrorKind::MissingField),
    /// [`InvalidField`](DiscoveryErrorKind::InvalidField),
    /// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) (with the field) and
    /// [`PkceUnsupported`](DiscoveryErrorKind::PkceUnsupported) for the document. No error
    /// quotes the document.
    ///
    /// ```
    /// use keepfresh::oauth::discovery::{AuthorizationServerMetadata, DiscoveryErrorKind};
    ///
    /// let doc = |extra: &str| format!(r#"{{
    ///     "issuer": "https://auth.example.com",
    ///     "authorization_endpoint": "https://auth.example.com/authorize",
    ///     "token_endpoint": "https://auth.example.com/token",
    ///     "response_types_supported": ["code"]{extra}
    /// }}"#);
    /// let parse = |d: String| AuthorizationServerMetadata::from_json(d.as_bytes(), "https://auth.example.com");
    ///
    /// assert!(parse(doc(r#", "code_challenge_methods_supported": ["S256", "plain"]"#)).is_ok());
    ///
    /// // No PKCE S256: refused.
    /// let e = parse(doc(r#", "code_challenge_methods_supported": ["plain"]"#)).unwrap_err();
    /// assert_eq!(e.kind(), DiscoveryErrorKind::PkceUnsupported);
    /// let e = parse(doc("")).unwrap_err();
    /// assert_eq!(e.kind(), DiscoveryErrorKind::PkceUnsupported);
    ///
    /// // The issuer must be identical, trailing slash included.
    /// let e = AuthorizationServerMetadata::from_json(
    ///     doc(r#", "code_challenge_methods_supported": ["S256"]"#).as_bytes(),
    ///     "https://auth.example.com/",
    /// ).unwrap_err();
    /// assert_eq!(e.kind(), DiscoveryErrorKind::IssuerMismatch);
    ///
    /// assert_eq!(parse("{not json".into()).unwrap_err().kind(), DiscoveryErrorKind::Malformed);
    /// ```
    pub fn from_json(json: &[u8], expected_issuer: &str) -> Result<Self, DiscoveryError> {
        let expected = parse_given("expected issuer", expected_issuer, Query::Refused)?;
        let doc = Document::parse(json, is_loopback(&expected))?;

        let issuer = doc.required_str("issuer")?;
        if issuer != expected_issuer {
            return Err(DiscoveryError::new(
                DiscoveryErrorKind::IssuerMismatch,
                format!(
                    "the metadata's issuer is not {:?}{}; RFC 8414 §3.3 requires them identical \
                     (the document may describe another authorization server)",
                    shown(expected_issuer),
                    near_miss(issuer, expected_issuer),
                ),
            )
            .with_field("issuer"));
        }

        let authorization_endpoint = doc.required_url("authorization_endpoint")?;
        let token_endpoint = doc.required_url("token_endpoint")?;
        let registration_endpoint = doc.url("registration_endpoint")?;
        let revocation_endpoint = doc.url("revocation_endpoint")?;
        let introspection_endpoint = doc.url("introspection_endpoint")?;
        let jwks_uri = doc.url("jwks_uri")?;
        let scopes_supported = doc.strings("scopes_supported")?;
        let response_types_supported = doc
            .strings("response_types_supported")?
            .ok_or_else(|| missing("response_types_supported"))?;
        let response_modes_supported = doc.strings("response_modes_supported")?;
        let grant_types_supported = doc.strings("grant_types_supported")?;
        let token_endpoint_auth_methods_supported =
            doc.strings("token_endpoint_auth_methods_supported")?;
        let authorization_response_iss_parameter_supported =
            doc.flag("authorization_response_iss_parameter_supported")?;
        let client_id_metadata_document_supported =
            doc.flag("client_id_metadata_document_supported")?;

        let code_challenge_methods_supported = doc
            .strings("code_challenge_methods_supported")?
            .unwrap_or_default();
        if !code_challenge_methods_supported.iter().any(|m| m == "S256") {
            let what = if doc.has("code_challenge_methods_supported") {
                "does not list S256 in code_challenge_methods_supported"
            } else {
                "does not advertise code_challenge_methods_supported"
            };
            return Err(DiscoveryError::new(
                DiscoveryErrorKind::PkceUnsupported,
                format!(
                    "the authorization server {what}: PKCE with S256 is required (MCP \
                     authorization), so the client must not proceed"
                ),
            )
            .with_field("code_challenge_methods_supported"));
        }

        Ok(AuthorizationServerMetadata {
            issuer: issuer.to_owned(),
            authorization_endpoint,
            token_endpoint,
            registration_endpoint,
            revocation_endpoint,
            introspection_endpoint,
            jwks_uri,
            scopes_supported,
            response_types_supported,
            response_modes_supported,
            grant_types_supported,
            code_challenge_methods_supported,
            token_endpoint_auth_methods_supported,
            authorization_response_iss_parameter_supported,
            client_id_metadata_document_supported,
        })
    }

    /// Whether the server supports the grant type, applying RFC 8414's default
    /// (`authorization_code` and `implicit`) when `grant_types_supported` was not sent.
    ///
    /// ```
    /// use keepfresh::oauth::discovery::AuthorizationServerMetadata;
    /// let doc = br#"{"issuer": "https://a.example", "authorization_endpoint": "https://a.example/a",
    ///     "token_endpoint": "https://a.example/t", "response_types_supported": ["code"],
    ///     "code_challenge_methods_supported": ["S256"]}"#;
    /// let meta = AuthorizationServerMetadata::from_json(doc, "https://a.example").unwrap();
    /// assert!(meta.supports_grant_type("authorization_code"));
    /// // Not in the default: a server that refreshes lists it explicitly.
    /// assert!(!meta.supports_grant_type("refresh_token"));
    /// ```
    pub fn supports_grant_type(&self, grant_type: &str) -> bool {
        match &self.grant_types_supported {
            Some(list) => list.iter().any(|g| g == grant_type),
            None => matches!(grant_type, "authorization_code" | "implicit"),
        }
    }

    /// Whether the token endpoint accepts the client authentication method, applying
    /// RFC 8414's default (`client_secret_basic`) when
    /// `token_endpoint_auth_methods_supported` was not sent.
    ///
    /// ```
    /// use keepfresh::oauth::discovery::AuthorizationServerMetadata;
    /// let doc = br#"{"issuer": "https://a.example", "authorization_endpoint": "https://a.example/a",
    ///     "token_endpoint": "https://a.example/t", "response_types_supported": ["code"],
    ///     "code_challenge_methods_supported": ["S256"],
    ///     "token_endpoint_auth_methods_supported": ["none", "client_secret_post"]}"#;
    /// let meta = AuthorizationServerMetadata::from_json(doc, "https://a.example").unwrap();
    /// assert!(meta.supports_token_endpoint_auth_method("none"));
    /// assert!(!meta.supports_token_endpoint_auth_method("client_secret_basic"));
    /// ```
    pub fn supports_token_endpoint_auth_method(&self, method: &str) -> bool {
        match &self.token_endpoint_auth_methods_supported {
            Some(list) => list.iter().any(|m| m == method),
            None => method == "client_secret_basic",
        }
    }
}

impl ProtectedResourceMetadata {
    /// Parses and vets a protected resource metadata document fetched for `expected_resource`:
    /// the resource its well-known URL was built from, or — when the URL came from a 401's
    /// `resource_metadata` — the URL the request that drew the 401 was sent to (RFC 9728 §3.3,
    /// §7.3). Pure: nothing is fetched.
    ///
    /// Checked, in this order: the size ([`MAX_METADATA_BYTES`]); a JSON object; `resource`
    /// present and *identical* to `expected_resource` (a simple string comparison);
    /// `authorization_servers` present with at least one entry, each a valid issuer identifier;
    /// the type of every known field.
    ///
    /// # Errors
    /// [`InvalidUrl`](DiscoveryErrorKind::InvalidUrl) or
    /// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) for an unusable `expected_resource`
    /// (the rules of [`protected_resource_urls`](super::protected_resource_urls));
    /// [`TooLarge`](DiscoveryErrorKind::TooLarge), [`Malformed`](DiscoveryErrorKind::Malformed),
    /// [`ResourceMismatch`](DiscoveryErrorKind::ResourceMismatch),
    /// [`MissingField`](DiscoveryErrorKind::MissingField),
    /// [`InvalidField`](DiscoveryErrorKind::InvalidField) and
    /// [`InsecureUrl`](DiscoveryErrorKind::InsecureUrl) (with the field) for the document. No
    /// error quotes the document.
    ///
    /// ```
    /// use keepfresh::oauth::discovery::{ProtectedResourceMetadata, DiscoveryErrorKind};
    ///
    /// let doc = br#"{"resource": "https://other.example.com/mcp",
    ///                "authorization_servers": ["https://auth.example.com"]}"#;
    /// let e = ProtectedResourceMetadata::from_json(doc, "https://mcp.example.com/mcp").unwrap_err();
    /// assert_eq!(e.kind(), DiscoveryErrorKind::ResourceMismatch);
    ///
    /// let doc = br#"{"resource": "https://mcp.example.com/mcp",
    ///                "authorization_servers": ["http://auth.example.com"]}"#;
    /// let e = ProtectedResourceMetadata::from_json(doc, "https://mcp.example.com/mcp").unwrap_err();
    /// assert_eq!(e.kind(), DiscoveryErrorKind::InsecureUrl);
    /// assert_eq!(e.field(), Some("authorization_servers"));
    /// ```
    pub fn from_json(json: &[u8], expected_resource: &str) -> Result<Self, DiscoveryError> {
        Self::from_json_for(json, expected_resource, &[expected_resource])
    }

    /// [`from_json`](Self::from_json) accepting any of `accepted` as the `resource` (the root
    /// fallback URL stands for the resource's origin as well as for the resource itself).
    pub(super) fn from_json_for(
        json: &[u8],
        expected_resource: &str,
        accepted: &[&str],
    ) -> Result<Self, DiscoveryError> {
        let expected = parse_given("expected resource", expected_resource, Query::Allowed)?;
        let doc = Document::parse(json, is_loopback(&expected))?;

        let resource = doc.required_str("resource")?;
        if !accepted.contains(&resource) {
            return Err(DiscoveryError::new(
                DiscoveryErrorKind::ResourceMismatch,
                format!(
                    "the metadata's resource is not {:?}{}; RFC 9728 §3.3 requires them \
                     identical (the document may describe another resource)",
                    shown(expected_resource),
                    near_miss(resource, expected_resource),
                ),
            )
            .with_field("resource"));
        }

        let authorization_servers = doc
            .strings("authorization_servers")?
            .filter(|list| !list.is_empty())
            .ok_or_else(|| missing("authorization_servers"))?;
        for issuer in &authorization_servers {
            doc.check_issuer("authorization_servers", issuer)?;
        }

        Ok(ProtectedResourceMetadata {
            resource: resource.to_owned(),
            authorization_servers,
            scopes_supported: doc.strings("scopes_supported")?,
            bearer_methods_supported: doc.strings("bearer_methods_supported")?,
            jwks_uri: doc.url("jwks_uri")?,
            resource_name: doc.str("resource_name")?.map(str::to_owned),
        })
    }
}

/// A hint for two identifiers that differ in a way that is easy to overlook, computed without
/// quoting the received one.
fn near_miss(received: &str, expected: &str) -> &'static str {
    if received.trim_end_matches('/') == expected.trim_end_matches('/') {
        " (they differ only in a terminating '/')"
    } else if received.eq_ignore_ascii_case(expected) {
        " (they differ only in letter case)"
    } else {
        ""
    }
}

fn missing(field: &'static str) -> DiscoveryError {
    DiscoveryError::new(
        DiscoveryErrorKind::MissingField,
        format!("the metadata has no {field}"),
    )
    .with_field(field)
}

fn invalid(field: &'static str, what: &str) -> DiscoveryError {
    DiscoveryError::new(
        DiscoveryErrorKind::InvalidField,
        format!("the metadata's {field} {what}"),
    )
    .with_field(field)
}

/// A parsed document and whether it was issued on loopback (which allows plain-`http` loopback
/// URLs in it).
struct Document {
    fields: Map<String, Value>,
    loopback: bool,
}

impl Document {
    fn parse(json: &[u8], loopback: bool) -> Result<Self, DiscoveryError> {
        if json.len() > MAX_METADATA_BYTES {
            return Err(DiscoveryError::new(
                DiscoveryErrorKind::TooLarge,
                format!(
                    "the metadata document is larger than {MAX_METADATA_BYTES} bytes ({} bytes)",
                    json.len()
                ),
            ));
        }
        match serde_json::from_slice::<Value>(json) {
            Ok(Value::Object(fields)) => Ok(Document { fields, loopback }),
            // serde_json's messages name positions and expected tokens, never input text.
            Ok(_) => Err(DiscoveryError::new(
                DiscoveryErrorKind::Malformed,
                "the metadata document is JSON but not an object",
            )),
            Err(e) => Err(DiscoveryError::new(
                DiscoveryErrorKind::Malformed,
                format!(
                    "the metadata document is not JSON ({} bytes; {:?} at line {}, column {})",
                    json.len(),
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )),
        }
    }

    fn has(&self, field: &str) -> bool {
        !matches!(self.fields.get(field), None | Some(Value::Null))
    }

    fn str(&self, field: &'static str) -> Result<Option<&str>, DiscoveryError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(field, "is not a string")),
        }
    }

    fn required_str(&self, field: &'static str) -> Result<&str, DiscoveryError> {
        self.str(field)?.ok_or_else(|| missing(field))
    }

    fn strings(&self, field: &'static str) -> Result<Option<Vec<String>>, DiscoveryError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid(field, "is not a list of strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(invalid(field, "is not a list of strings")),
        }
    }

    fn flag(&self, field: &'static str) -> Result<bool, DiscoveryError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(field, "is not a boolean")),
        }
    }

    fn url(&self, field: &'static str) -> Result<Option<Url>, DiscoveryError> {
        let Some(s) = self.str(field)? else {
            return Ok(None);
        };
        let url = Url::parse(s).map_err(|_| invalid(field, "is not an absolute URL"))?;
        check(&url, Query::Allowed, Some(self.loopback)).map_err(|r| r.in_field(field))?;
        Ok(Some(url))
    }

    fn required_url(&self, field: &'static str) -> Result<Url, DiscoveryError> {
        self.url(field)?.ok_or_else(|| missing(field))
    }

    /// An issuer identifier listed in the document.
    fn check_issuer(&self, field: &'static str, issuer: &str) -> Result<(), DiscoveryError> {
        if issuer.trim() != issuer {
            return Err(invalid(
                field,
                "lists an issuer with surrounding whitespace",
            ));
        }
        let url =
            Url::parse(issuer).map_err(|_| invalid(field, "lists an issuer that is not a URL"))?;
        check(&url, Query::Refused, Some(self.loopback)).map_err(|r| r.in_field(field))
    }
}

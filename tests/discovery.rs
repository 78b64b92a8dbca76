//! `oauth::discovery`: the well-known URL builders and the metadata parsers as pure functions,
//! then `Discovery` against a real HTTP server on loopback (wiremock, and a raw TCP server for a
//! body without a length).

use std::time::Duration;

use keepfresh::oauth::discovery::{
    protected_resource_urls, well_known_urls, AuthorizationServerMetadata, Discovery,
    DiscoveryError, DiscoveryErrorKind, ProtectedResourceMetadata, MAX_METADATA_BYTES,
};
use keepfresh::oauth::parse_bearer_challenge;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use DiscoveryErrorKind as K;

/// A marker put in fetched documents: no error may repeat it.
const CANARY: &str = "CANARY-7f3a";

fn strs(urls: &[reqwest::Url]) -> Vec<&str> {
    urls.iter().map(|u| u.as_str()).collect()
}

/// A valid authorization server metadata document for `issuer`.
fn as_doc(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    })
}

fn with(mut doc: Value, key: &str, value: Value) -> Value {
    doc[key] = value;
    doc
}

fn without(mut doc: Value, key: &str) -> Value {
    doc.as_object_mut().unwrap().remove(key);
    doc
}

fn parse_as(doc: &Value, issuer: &str) -> Result<AuthorizationServerMetadata, DiscoveryError> {
    AuthorizationServerMetadata::from_json(doc.to_string().as_bytes(), issuer)
}

fn pr_doc(resource: &str, issuer: &str) -> Value {
    json!({ "resource": resource, "authorization_servers": [issuer] })
}

fn parse_pr(doc: &Value, resource: &str) -> Result<ProtectedResourceMetadata, DiscoveryError> {
    ProtectedResourceMetadata::from_json(doc.to_string().as_bytes(), resource)
}

fn assert_no_canary(e: &DiscoveryError) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(CANARY), "document echoed in error: {text}");
}

fn discovery() -> Discovery {
    Discovery::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn serve(server: &MockServer, at: &str, template: ResponseTemplate, times: u64) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(template)
        .expect(times)
        .mount(server)
        .await;
}

fn json_answer(doc: &Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(doc)
}

async fn requested_paths(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// well_known_urls

#[test]
fn well_known_urls_without_a_path_are_two() {
    for issuer in [
        "https://auth.example.com",
        "https://auth.example.com/",
        "https://auth.example.com//",
    ] {
        assert_eq!(
            strs(&well_known_urls(issuer).unwrap()),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ],
            "{issuer}"
        );
    }
}

#[test]
fn well_known_urls_with_a_path_are_three_in_mcp_order() {
    for issuer in [
        "https://auth.example.com/tenant1",
        "https://auth.example.com/tenant1/",
    ] {
        assert_eq!(
            strs(&well_known_urls(issuer).unwrap()),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
                "https://auth.example.com/.well-known/openid-configuration/tenant1",
                "https://auth.example.com/tenant1/.well-known/openid-configuration",
            ],
            "{issuer}"
        );
    }
    assert_eq!(
        strs(&well_known_urls("https://login.example.com/realms/a%20b/c").unwrap()),
        [
            "https://login.example.com/.well-known/oauth-authorization-server/realms/a%20b/c",
            "https://login.example.com/.well-known/openid-configuration/realms/a%20b/c",
            "https://login.example.com/realms/a%20b/c/.well-known/openid-configuration",
        ]
    );
}

#[test]
fn well_known_urls_keep_the_port() {
    assert_eq!(
        strs(&well_known_urls("https://auth.example.com:8443/t").unwrap()),
        [
            "https://auth.example.com:8443/.well-known/oauth-authorization-server/t",
            "https://auth.example.com:8443/.well-known/openid-configuration/t",
            "https://auth.example.com:8443/t/.well-known/openid-configuration",
        ]
    );
    // The default port is the URL's normal form.
    assert_eq!(
        well_known_urls("https://auth.example.com:443").unwrap()[0].as_str(),
        "https://auth.example.com/.well-known/oauth-authorization-server"
    );
    for (issuer, first) in [
        (
            "http://127.0.0.1:8080/t",
            "http://127.0.0.1:8080/.well-known/oauth-authorization-server/t",
        ),
        (
            "http://localhost:3000",
            "http://localhost:3000/.well-known/oauth-authorization-server",
        ),
        (
            "http://[::1]:9000/x",
            "http://[::1]:9000/.well-known/oauth-authorization-server/x",
        ),
    ] {
        assert_eq!(well_known_urls(issuer).unwrap()[0].as_str(), first);
    }
}

#[test]
fn well_known_urls_refuse_unusable_issuers() {
    for (issuer, kind) in [
        ("https://auth.example.com/t?tenant=1", K::InvalidUrl),
        ("https://auth.example.com/?", K::InvalidUrl),
        ("https://auth.example.com/t#frag", K::InvalidUrl),
        ("https://auth.example.com/#", K::InvalidUrl),
        ("https://user:pass@auth.example.com", K::InvalidUrl),
        ("ftp://auth.example.com", K::InvalidUrl),
        ("file:///etc/passwd", K::InvalidUrl),
        ("not a url", K::InvalidUrl),
        ("/tenant1", K::InvalidUrl),
        ("", K::InvalidUrl),
        (" https://auth.example.com", K::InvalidUrl),
        ("https://auth.example.com\n", K::InvalidUrl),
        ("http://auth.example.com", K::InsecureUrl),
        ("http://10.0.0.1:8080/t", K::InsecureUrl),
        ("http://localhost.example.com", K::InsecureUrl),
    ] {
        let e = well_known_urls(issuer).unwrap_err();
        assert_eq!(e.kind(), kind, "{issuer:?}: {e}");
        assert_eq!(e.url(), None);
    }
}

// ---------------------------------------------------------------------------------------------
// protected_resource_urls

#[test]
fn protected_resource_urls_insert_the_path_then_try_the_root() {
    for resource in [
        "https://mcp.example.com/public/mcp",
        "https://mcp.example.com/public/mcp/",
    ] {
        assert_eq!(
            strs(&protected_resource_urls(resource).unwrap()),
            [
                "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp",
                "https://mcp.example.com/.well-known/oauth-protected-resource",
            ],
            "{resource}"
        );
    }
    for resource in ["https://mcp.example.com", "https://mcp.example.com/"] {
        assert_eq!(
            strs(&protected_resource_urls(resource).unwrap()),
            ["https://mcp.example.com/.well-known/oauth-protected-resource"],
        );
    }
    assert_eq!(
        strs(&protected_resource_urls("http://127.0.0.1:7000/mcp").unwrap()),
        [
            "http://127.0.0.1:7000/.well-known/oauth-protected-resource/mcp",
            "http://127.0.0.1:7000/.well-known/oauth-protected-resource",
        ]
    );
    // RFC 9728 §3.1: a query follows the inserted path; the root has none.
    assert_eq!(
        strs(&protected_resource_urls("https://mcp.example.com:8443/mcp?tenant=a").unwrap()),
        [
            "https://mcp.example.com:8443/.well-known/oauth-protected-resource/mcp?tenant=a",
            "https://mcp.example.com:8443/.well-known/oauth-protected-resource",
        ]
    );
}

#[test]
fn protected_resource_urls_refuse_unusable_resources() {
    for (resource, kind) in [
        ("https://mcp.example.com/mcp#x", K::InvalidUrl),
        ("https://u@mcp.example.com/mcp", K::InvalidUrl),
        ("wss://mcp.example.com/mcp", K::InvalidUrl),
        ("mcp.example.com/mcp", K::InvalidUrl),
        ("", K::InvalidUrl),
        ("http://mcp.example.com/mcp", K::InsecureUrl),
    ] {
        let e = protected_resource_urls(resource).unwrap_err();
        assert_eq!(e.kind(), kind, "{resource:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// AuthorizationServerMetadata::from_json

#[test]
fn authorization_server_metadata_reads_every_field() {
    let issuer = "https://auth.example.com/tenant1";
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": "https://auth.example.com/tenant1/authorize",
        "token_endpoint": "https://tokens.example.com/tenant1/token?v=2",
        "registration_endpoint": "https://auth.example.com/register",
        "revocation_endpoint": "https://auth.example.com/revoke",
        "introspection_endpoint": "https://auth.example.com/introspect",
        "jwks_uri": "https://auth.example.com/jwks",
        "scopes_supported": ["openid", "tools:read"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        "userinfo_endpoint": "https://auth.example.com/userinfo",
        "some_vendor_extension": {"nested": [1, 2, 3]},
    });
    let m = parse_as(&doc, issuer).unwrap();
    assert_eq!(m.issuer, issuer);
    assert_eq!(
        m.authorization_endpoint.as_str(),
        "https://auth.example.com/tenant1/authorize"
    );
    assert_eq!(
        m.token_endpoint.as_str(),
        "https://tokens.example.com/tenant1/token?v=2"
    );
    assert_eq!(
        m.registration_endpoint.as_ref().unwrap().as_str(),
        "https://auth.example.com/register"
    );
    assert_eq!(m.revocation_endpoint.as_ref().unwrap().path(), "/revoke");
    assert_eq!(
        m.introspection_endpoint.as_ref().unwrap().path(),
        "/introspect"
    );
    assert_eq!(m.jwks_uri.as_ref().unwrap().path(), "/jwks");
    assert_eq!(
        m.scopes_supported.as_deref().unwrap(),
        ["openid", "tools:read"]
    );
    assert_eq!(m.response_types_supported, ["code"]);
    assert_eq!(m.response_modes_supported.as_deref().unwrap(), ["query"]);
    assert_eq!(m.code_challenge_methods_supported, ["plain", "S256"]);
    assert!(m.supports_grant_type("refresh_token"));
    assert!(!m.supports_grant_type("implicit"));
    assert!(m.supports_token_endpoint_auth_method("none"));
    assert!(!m.supports_token_endpoint_auth_method("client_secret_basic"));
    assert!(m.authorization_response_iss_parameter_supported);
    assert!(m.client_id_metadata_document_supported);
}

#[test]
fn authorization_server_metadata_defaults() {
    let m = parse_as(&as_doc("https://a.example"), "https://a.example").unwrap();
    assert_eq!(m.registration_endpoint, None);
    assert_eq!(m.revocation_endpoint, None);
    assert_eq!(m.scopes_supported, None);
    assert_eq!(m.grant_types_supported, None);
    assert!(m.supports_grant_type("authorization_code"));
    assert!(m.supports_grant_type("implicit"));
    assert!(!m.supports_grant_type("refresh_token"));
    assert!(m.supports_token_endpoint_auth_method("client_secret_basic"));
    assert!(!m.authorization_response_iss_parameter_supported);
    assert!(!m.client_id_metadata_document_supported);
    // Explicit nulls are absences.
    let doc = with(
        as_doc("https://a.example"),
        "authorization_response_iss_parameter_supported",
        Value::Null,
    );
    let doc = with(doc, "scopes_supported", Value::Null);
    let m = parse_as(&doc, "https://a.example").unwrap();
    assert!(!m.authorization_response_iss_parameter_supported);
    assert_eq!(m.scopes_supported, None);
}

#[test]
fn issuer_mismatch_is_refused_by_exact_comparison() {
    let expected = "https://auth.example.com/tenant1";
    for (received, hint) in [
        ("https://evil.example.com/tenant1", None),
        ("https://auth.example.com/tenant2", None),
        ("https://auth.example.com/tenant1/", Some("terminating '/'")),
        ("https://AUTH.example.com/tenant1", Some("letter case")),
        ("https://auth.example.com", None),
        ("", None),
    ] {
        let e = parse_as(&as_doc(received), expected).unwrap_err();
        assert_eq!(e.kind(), K::IssuerMismatch, "{received}");
        assert_eq!(e.field(), Some("issuer"));
        let text = e.to_string();
        assert!(text.contains(expected), "{text}");
        if let Some(hint) = hint {
            assert!(text.contains(hint), "{text}");
        }
        if !received.is_empty() && received.contains("evil") {
            assert!(!text.contains("evil"), "{text}");
        }
    }
    // The expected issuer's own terminating slash counts too.
    let e = parse_as(
        &as_doc("https://auth.example.com"),
        "https://auth.example.com/",
    )
    .unwrap_err();
    assert_eq!(e.kind(), K::IssuerMismatch);

    let e = parse_as(
        &as_doc(&format!("https://{CANARY}.example.com")),
        "https://auth.example.com",
    )
    .unwrap_err();
    assert_no_canary(&e);
}

#[test]
fn issuer_is_checked_before_anything_else_in_the_document() {
    // A document for another server that also lacks PKCE is reported as the wrong server.
    let doc = without(
        as_doc("https://evil.example.com"),
        "code_challenge_methods_supported",
    );
    let e = parse_as(&doc, "https://auth.example.com").unwrap_err();
    assert_eq!(e.kind(), K::IssuerMismatch);
}

#[test]
fn required_fields_are_required() {
    let issuer = "https://auth.example.com";
    for field in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "response_types_supported",
    ] {
        for doc in [
            without(as_doc(issuer), field),
            with(as_doc(issuer), field, Value::Null),
        ] {
            let e = parse_as(&doc, issuer).unwrap_err();
            assert_eq!(e.kind(), K::MissingField, "{field}: {e}");
            assert_eq!(e.field(), Some(field));
            assert!(e.to_string().contains(field));
        }
    }
}

#[test]
fn missing_s256_is_refused() {
    let issuer = "https://auth.example.com";
    let cases = [
        without(as_doc(issuer), "code_challenge_methods_supported"),
        with(
            as_doc(issuer),
            "code_challenge_methods_supported",
            Value::Null,
        ),
        with(
            as_doc(issuer),
            "code_challenge_methods_supported",
            json!([]),
        ),
        with(
            as_doc(issuer),
            "code_challenge_methods_supported",
            json!(["plain"]),
        ),
        with(
            as_doc(issuer),
            "code_challenge_methods_supported",
            json!(["s256"]),
        ),
        with(
            as_doc(issuer),
            "code_challenge_methods_supported",
            json!(["S256 "]),
        ),
    ];
    for doc in cases {
        let e = parse_as(&doc, issuer).unwrap_err();
        assert_eq!(e.kind(), K::PkceUnsupported, "{doc}");
        assert_eq!(e.field(), Some("code_challenge_methods_supported"));
        assert!(e.to_string().contains("S256"), "{e}");
    }
    let doc = with(
        as_doc(issuer),
        "code_challenge_methods_supported",
        json!("S256"),
    );
    assert_eq!(parse_as(&doc, issuer).unwrap_err().kind(), K::InvalidField);
}

#[test]
fn http_endpoint_is_refused_for_a_non_loopback_issuer() {
    let issuer = "https://auth.example.com";
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "jwks_uri",
    ] {
        for url in [
            "http://auth.example.com/x",
            "http://127.0.0.1:8080/x",
            "http://localhost/x",
        ] {
            let e = parse_as(&with(as_doc(issuer), field, json!(url)), issuer).unwrap_err();
            assert_eq!(e.kind(), K::InsecureUrl, "{field} {url}: {e}");
            assert_eq!(e.field(), Some(field));
            assert!(!e.to_string().contains(url), "{e}");
        }
    }
}

#[test]
fn http_endpoint_is_allowed_on_loopback_under_a_loopback_issuer_only() {
    let issuer = "http://127.0.0.1:8080/t";
    let m = parse_as(&as_doc(issuer), issuer).unwrap();
    assert_eq!(m.token_endpoint.as_str(), "http://127.0.0.1:8080/t/token");
    let doc = with(
        as_doc(issuer),
        "token_endpoint",
        json!("http://localhost:9/token"),
    );
    assert!(parse_as(&doc, issuer).is_ok());
    let doc = with(
        as_doc(issuer),
        "token_endpoint",
        json!("http://[::1]:9/token"),
    );
    assert!(parse_as(&doc, issuer).is_ok());
    // A loopback issuer may still not send the client to a remote host in clear text.
    let doc = with(
        as_doc(issuer),
        "token_endpoint",
        json!("http://auth.example.com/token"),
    );
    assert_eq!(parse_as(&doc, issuer).unwrap_err().kind(), K::InsecureUrl);
    // https is fine anywhere.
    let doc = with(
        as_doc(issuer),
        "token_endpoint",
        json!("https://auth.example.com/token"),
    );
    assert!(parse_as(&doc, issuer).is_ok());
}

#[test]
fn bad_endpoint_urls_and_types_are_invalid_fields() {
    let issuer = "https://auth.example.com";
    for (field, value) in [
        ("token_endpoint", json!("/token")),
        ("token_endpoint", json!("")),
        (
            "token_endpoint",
            json!(format!("https://auth.example.com/token#{CANARY}")),
        ),
        (
            "token_endpoint",
            json!(format!("https://{CANARY}:pw@auth.example.com/token")),
        ),
        ("token_endpoint", json!("javascript:alert(1)")),
        ("token_endpoint", json!(42)),
        ("token_endpoint", json!(["https://auth.example.com/token"])),
        ("issuer", json!({"url": issuer})),
        ("scopes_supported", json!(format!("openid {CANARY}"))),
        ("scopes_supported", json!(["openid", 7])),
        ("response_types_supported", json!("code")),
        (
            "authorization_response_iss_parameter_supported",
            json!("true"),
        ),
        ("client_id_metadata_document_supported", json!(1)),
    ] {
        let e = parse_as(&with(as_doc(issuer), field, value.clone()), issuer).unwrap_err();
        assert_eq!(e.kind(), K::InvalidField, "{field} = {value}: {e}");
        assert_eq!(e.field(), Some(field));
        assert_no_canary(&e);
    }
}

#[test]
fn malformed_documents_are_refused() {
    let issuer = "https://auth.example.com";
    let deep = "[".repeat(10_000);
    let bodies: [&[u8]; 9] = [
        b"",
        b"{not json",
        b"<html><body>Sign in</body></html>",
        b"[]",
        b"null",
        b"\"https://auth.example.com\"",
        b"{\"issuer\": \"https://auth.example.com\"} trailing",
        b"\xff\xfe{}",
        deep.as_bytes(),
    ];
    for body in bodies {
        let e = AuthorizationServerMetadata::from_json(body, issuer).unwrap_err();
        assert_eq!(
            e.kind(),
            K::Malformed,
            "{:?}",
            String::from_utf8_lossy(body)
        );
        let e = ProtectedResourceMetadata::from_json(body, "https://mcp.example.com").unwrap_err();
        assert_eq!(e.kind(), K::Malformed);
    }
    let body = format!("{{\"issuer\": \"{CANARY}\" ,,}}");
    let e = AuthorizationServerMetadata::from_json(body.as_bytes(), issuer).unwrap_err();
    assert_eq!(e.kind(), K::Malformed);
    assert_no_canary(&e);
}

#[test]
fn oversized_documents_are_refused() {
    let issuer = "https://auth.example.com";
    let doc = as_doc(issuer).to_string();
    // Padded with whitespace: still valid JSON, just too big.
    let mut at_cap = doc.clone().into_bytes();
    at_cap.resize(MAX_METADATA_BYTES, b' ');
    assert!(AuthorizationServerMetadata::from_json(&at_cap, issuer).is_ok());
    at_cap.push(b' ');
    let e = AuthorizationServerMetadata::from_json(&at_cap, issuer).unwrap_err();
    assert_eq!(e.kind(), K::TooLarge);
    let e = ProtectedResourceMetadata::from_json(&at_cap, "https://mcp.example.com").unwrap_err();
    assert_eq!(e.kind(), K::TooLarge);
}

#[test]
fn an_unusable_expected_issuer_is_refused_first() {
    let doc = as_doc("https://auth.example.com?x=1");
    let e = parse_as(&doc, "https://auth.example.com?x=1").unwrap_err();
    assert_eq!(e.kind(), K::InvalidUrl);
    let doc = as_doc("http://auth.example.com");
    let e = parse_as(&doc, "http://auth.example.com").unwrap_err();
    assert_eq!(e.kind(), K::InsecureUrl);
}

// ---------------------------------------------------------------------------------------------
// ProtectedResourceMetadata::from_json

#[test]
fn protected_resource_metadata_reads_its_fields() {
    let resource = "https://mcp.example.com/mcp";
    let doc = json!({
        "resource": resource,
        "authorization_servers": ["https://auth.example.com/tenant1", "https://other.example.com"],
        "scopes_supported": ["tools:read", "tools:write"],
        "bearer_methods_supported": ["header"],
        "jwks_uri": "https://mcp.example.com/jwks",
        "resource_name": "Example MCP",
        "resource_documentation": "https://docs.example.com",
    });
    let m = parse_pr(&doc, resource).unwrap();
    assert_eq!(m.resource, resource);
    assert_eq!(
        m.authorization_servers,
        [
            "https://auth.example.com/tenant1",
            "https://other.example.com"
        ]
    );
    assert_eq!(
        m.scopes_supported.as_deref().unwrap(),
        ["tools:read", "tools:write"]
    );
    assert_eq!(m.bearer_methods_supported.as_deref().unwrap(), ["header"]);
    assert_eq!(m.jwks_uri.unwrap().path(), "/jwks");
    assert_eq!(m.resource_name.as_deref(), Some("Example MCP"));

    let m = parse_pr(&pr_doc(resource, "https://a.example"), resource).unwrap();
    assert_eq!(m.scopes_supported, None);
    assert_eq!(m.resource_name, None);
}

#[test]
fn resource_mismatch_is_refused() {
    let resource = "https://mcp.example.com/mcp";
    for received in [
        "https://evil.example.com/mcp",
        "https://mcp.example.com/mcp/",
        "https://mcp.example.com",
        "https://mcp.example.com/other",
        "HTTPS://mcp.example.com/mcp",
    ] {
        let e = parse_pr(&pr_doc(received, "https://auth.example.com"), resource).unwrap_err();
        assert_eq!(e.kind(), K::ResourceMismatch, "{received}");
        assert_eq!(e.field(), Some("resource"));
        assert!(!e.to_string().contains("evil"));
    }
    let e = parse_pr(
        &pr_doc(
            &format!("https://{CANARY}.example"),
            "https://auth.example.com",
        ),
        resource,
    )
    .unwrap_err();
    assert_no_canary(&e);
}

#[test]
fn authorization_servers_are_required_and_vetted() {
    let resource = "https://mcp.example.com/mcp";
    for doc in [
        json!({ "resource": resource }),
        json!({ "resource": resource, "authorization_servers": [] }),
        json!({ "resource": resource, "authorization_servers": null }),
    ] {
        let e = parse_pr(&doc, resource).unwrap_err();
        assert_eq!(e.kind(), K::MissingField, "{doc}");
        assert_eq!(e.field(), Some("authorization_servers"));
    }
    let e = parse_pr(
        &json!({ "authorization_servers": ["https://a.example"] }),
        resource,
    )
    .unwrap_err();
    assert_eq!(e.kind(), K::MissingField);
    assert_eq!(e.field(), Some("resource"));

    for (entry, kind) in [
        (json!("http://auth.example.com"), K::InsecureUrl),
        (json!("http://127.0.0.1:9000"), K::InsecureUrl),
        (json!("https://auth.example.com?tenant=1"), K::InvalidField),
        (
            json!(format!("https://auth.example.com#{CANARY}")),
            K::InvalidField,
        ),
        (json!("ftp://auth.example.com"), K::InvalidField),
        (json!(format!("{CANARY}")), K::InvalidField),
        (json!(" https://auth.example.com"), K::InvalidField),
        (json!(17), K::InvalidField),
    ] {
        let doc = json!({
            "resource": resource,
            "authorization_servers": ["https://good.example.com", entry],
        });
        let e = parse_pr(&doc, resource).unwrap_err();
        assert_eq!(e.kind(), kind, "{entry}: {e}");
        assert_eq!(e.field(), Some("authorization_servers"));
        assert_no_canary(&e);
    }
    // A loopback resource may name a loopback authorization server over http.
    let resource = "http://127.0.0.1:7000/mcp";
    let m = parse_pr(&pr_doc(resource, "http://localhost:7001/auth"), resource).unwrap();
    assert_eq!(m.authorization_servers, ["http://localhost:7001/auth"]);
}

// ---------------------------------------------------------------------------------------------
// Discovery: authorization server metadata

fn variants(issuer_path: &str) -> [String; 3] {
    [
        format!("/.well-known/oauth-authorization-server{issuer_path}"),
        format!("/.well-known/openid-configuration{issuer_path}"),
        format!("{issuer_path}/.well-known/openid-configuration"),
    ]
}

#[tokio::test]
async fn every_url_variant_is_found_in_order() {
    for found_at in 0..3 {
        let server = MockServer::start().await;
        let issuer = format!("{}/tenant1", server.uri());
        let urls = variants("/tenant1");
        serve(&server, &urls[found_at], json_answer(&as_doc(&issuer)), 1).await;

        let m = discovery()
            .discover_authorization_server(&issuer)
            .await
            .unwrap();
        assert_eq!(m.issuer, issuer);
        assert_eq!(m.token_endpoint.as_str(), format!("{issuer}/token"));
        // The misses (404 by default) came first, in MCP's order, and nothing after the hit.
        assert_eq!(requested_paths(&server).await, urls[..=found_at]);
        let reqs = server.received_requests().await.unwrap();
        assert!(reqs.iter().all(|r| r.method.as_str() == "GET"));
        assert!(reqs
            .iter()
            .all(|r| r.headers.get("accept").unwrap() == "application/json"));
        server.verify().await;
    }
}

#[tokio::test]
async fn an_issuer_without_a_path_falls_back_to_openid_configuration() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    serve(
        &server,
        "/.well-known/openid-configuration",
        json_answer(&as_doc(&issuer)),
        1,
    )
    .await;
    let m = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap();
    assert_eq!(m.issuer, issuer);
    assert_eq!(
        requested_paths(&server).await,
        [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration"
        ]
    );
}

#[tokio::test]
async fn the_first_hit_wins_and_later_urls_are_not_fetched() {
    let server = MockServer::start().await;
    let issuer = format!("{}/tenant1", server.uri());
    let urls = variants("/tenant1");
    serve(&server, &urls[0], json_answer(&as_doc(&issuer)), 1).await;
    serve(&server, &urls[1], json_answer(&as_doc(&issuer)), 0).await;
    serve(&server, &urls[2], json_answer(&as_doc(&issuer)), 0).await;
    discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap();
    server.verify().await;
}

#[tokio::test]
async fn no_metadata_anywhere_lists_every_url_tried_in_order() {
    let server = MockServer::start().await;
    let issuer = format!("{}/tenant1", server.uri());
    let urls = variants("/tenant1");
    // Other error statuses also move on to the next URL.
    serve(&server, &urls[0], ResponseTemplate::new(500), 1).await;
    serve(&server, &urls[1], ResponseTemplate::new(401), 1).await;
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::NotFound);
    assert_eq!(e.url(), None);
    assert_eq!(requested_paths(&server).await, urls);
    let text = e.to_string();
    let positions: Vec<usize> = urls
        .iter()
        .map(|u| text.find(&format!("{}{u}", server.uri())).expect(u))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains("HTTP 500") && text.contains("HTTP 401") && text.contains("HTTP 404"));
}

#[tokio::test]
async fn an_issuer_mismatch_stops_discovery() {
    let server = MockServer::start().await;
    let issuer = format!("{}/tenant1", server.uri());
    let urls = variants("/tenant1");
    let other = format!("{}/tenant2", server.uri());
    serve(&server, &urls[0], json_answer(&as_doc(&other)), 1).await;
    // A valid document further down is never reached: a mismatch is not "not found".
    serve(&server, &urls[1], json_answer(&as_doc(&issuer)), 0).await;
    serve(&server, &urls[2], json_answer(&as_doc(&issuer)), 0).await;
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::IssuerMismatch);
    assert_eq!(e.url().unwrap().path(), urls[0]);
    assert!(!e.to_string().contains("tenant2"), "{e}");
    server.verify().await;
}

#[tokio::test]
async fn a_server_without_s256_is_refused() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    let doc = with(
        as_doc(&issuer),
        "code_challenge_methods_supported",
        json!(["plain"]),
    );
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        json_answer(&doc),
        1,
    )
    .await;
    serve(
        &server,
        "/.well-known/openid-configuration",
        json_answer(&as_doc(&issuer)),
        0,
    )
    .await;
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::PkceUnsupported);
    server.verify().await;
}

#[tokio::test]
async fn a_remote_http_endpoint_is_refused_even_from_a_loopback_issuer() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    let doc = with(
        as_doc(&issuer),
        "token_endpoint",
        json!("http://auth.example.com/token"),
    );
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        json_answer(&doc),
        1,
    )
    .await;
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::InsecureUrl);
    assert_eq!(e.field(), Some("token_endpoint"));
}

#[tokio::test]
async fn a_non_loopback_http_issuer_is_refused_before_any_request() {
    let e = discovery()
        .discover_authorization_server("http://auth.example.com")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::InsecureUrl);
}

#[tokio::test]
async fn malformed_json_stops_discovery() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        ResponseTemplate::new(200).set_body_raw(format!("<html>{CANARY}</html>"), "text/html"),
        1,
    )
    .await;
    serve(
        &server,
        "/.well-known/openid-configuration",
        json_answer(&as_doc(&issuer)),
        0,
    )
    .await;
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::Malformed);
    assert_no_canary(&e);
    server.verify().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    let mut body = as_doc(&issuer).to_string().into_bytes();
    body.resize(MAX_METADATA_BYTES + 1, b' ');
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        ResponseTemplate::new(200).set_body_raw(body, "application/json"),
        1,
    )
    .await;
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::TooLarge);
    assert_eq!(
        e.url().unwrap().path(),
        "/.well-known/oauth-authorization-server"
    );
}

/// A server answering every request with a chunked body of `size` bytes and no length.
async fn chunked_server(size: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = sock
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                      transfer-encoding: chunked\r\n\r\n",
                )
                .await;
            let chunk = vec![b' '; 16 * 1024];
            let mut sent = 0;
            while sent < size {
                let n = chunk.len().min(size - sent);
                let mut frame = format!("{n:x}\r\n").into_bytes();
                frame.extend_from_slice(&chunk[..n]);
                frame.extend_from_slice(b"\r\n");
                if sock.write_all(&frame).await.is_err() {
                    break;
                }
                sent += n;
            }
            let _ = sock.write_all(b"0\r\n\r\n").await;
        }
    });
    uri
}

#[tokio::test]
async fn an_oversized_body_without_a_length_is_cut_off() {
    let uri = chunked_server(MAX_METADATA_BYTES + 10).await;
    let e = discovery()
        .discover_authorization_server(&uri)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::TooLarge, "{e}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        ResponseTemplate::new(302).insert_header("location", format!("{issuer}/elsewhere")),
        1,
    )
    .await;
    serve(&server, "/elsewhere", json_answer(&as_doc(&issuer)), 0).await;
    serve(
        &server,
        "/.well-known/openid-configuration",
        ResponseTemplate::new(307).insert_header("location", format!("{issuer}/elsewhere")),
        1,
    )
    .await;
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::NotFound);
    assert!(
        e.to_string()
            .contains("HTTP 302 (a redirect, not followed)"),
        "{e}"
    );
    server.verify().await;
}

#[tokio::test]
async fn a_redirect_moves_on_to_the_next_url() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        ResponseTemplate::new(301).insert_header("location", format!("{issuer}/elsewhere")),
        1,
    )
    .await;
    serve(&server, "/elsewhere", json_answer(&as_doc(&issuer)), 0).await;
    serve(
        &server,
        "/.well-known/openid-configuration",
        json_answer(&as_doc(&issuer)),
        1,
    )
    .await;
    discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap();
    server.verify().await;
}

#[tokio::test]
async fn a_caller_client_that_follows_redirects_has_its_answer_refused() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        ResponseTemplate::new(302).insert_header("location", format!("{issuer}/elsewhere")),
        1,
    )
    .await;
    serve(&server, "/elsewhere", json_answer(&as_doc(&issuer)), 1).await;
    let following = reqwest::Client::builder().build().unwrap();
    let e = Discovery::builder()
        .client(following)
        .build()
        .unwrap()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::Redirected);
    assert_eq!(
        e.url().unwrap().path(),
        "/.well-known/oauth-authorization-server"
    );
}

#[tokio::test]
async fn a_caller_supplied_client_is_used() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        json_answer(&as_doc(&issuer)),
        1,
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("caller-agent/9")
        .build()
        .unwrap();
    Discovery::builder()
        .client(client)
        .build()
        .unwrap()
        .discover_authorization_server(&issuer)
        .await
        .unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs[0].headers.get("user-agent").unwrap(), "caller-agent/9");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        json_answer(&as_doc(&issuer)).set_delay(Duration::from_secs(5)),
        1,
    )
    .await;
    let e = Discovery::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::Transport);
    assert!(e.to_string().contains("timed out"), "{e}");
    // A transport failure ends discovery: the next URL is on the same host.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = discovery()
        .discover_authorization_server(&issuer)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::Transport);
    assert!(e.url().is_some());
}

#[test]
fn zero_timeouts_are_refused() {
    let e = Discovery::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), K::Config);
}

// ---------------------------------------------------------------------------------------------
// Discovery: protected resource metadata, then the authorization server

#[tokio::test]
async fn from_a_resource_by_the_path_inserted_url() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let resource = format!("{uri}/public/mcp");
    let issuer = format!("{uri}/auth");
    serve(
        &server,
        "/.well-known/oauth-protected-resource/public/mcp",
        json_answer(&pr_doc(&resource, &issuer)),
        1,
    )
    .await;
    serve(
        &server,
        "/.well-known/oauth-protected-resource",
        json_answer(&pr_doc(&resource, &issuer)),
        0,
    )
    .await;
    serve(
        &server,
        "/.well-known/oauth-authorization-server/auth",
        json_answer(&as_doc(&issuer)),
        1,
    )
    .await;
    let found = discovery()
        .discover_from_resource(&resource, None)
        .await
        .unwrap();
    assert_eq!(found.resource.resource, resource);
    assert_eq!(found.authorization_server.issuer, issuer);
    server.verify().await;
}

#[tokio::test]
async fn from_a_resource_by_the_root_url() {
    // The root document may name the resource itself or its origin.
    for named in ["resource", "origin", "origin/"] {
        let server = MockServer::start().await;
        let uri = server.uri();
        let resource = format!("{uri}/mcp");
        let listed = match named {
            "resource" => resource.clone(),
            "origin" => uri.clone(),
            _ => format!("{uri}/"),
        };
        serve(
            &server,
            "/.well-known/oauth-protected-resource",
            json_answer(&pr_doc(&listed, &uri)),
            1,
        )
        .await;
        serve(
            &server,
            "/.well-known/oauth-authorization-server",
            json_answer(&as_doc(&uri)),
            1,
        )
        .await;
        let found = discovery()
            .discover_from_resource(&resource, None)
            .await
            .unwrap();
        assert_eq!(found.resource.resource, listed);
        assert_eq!(
            requested_paths(&server).await,
            [
                "/.well-known/oauth-protected-resource/mcp",
                "/.well-known/oauth-protected-resource",
                "/.well-known/oauth-authorization-server",
            ]
        );
    }
}

#[tokio::test]
async fn a_resource_mismatch_is_refused() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let resource = format!("{uri}/mcp");
    // The path-inserted document must name the resource exactly, not its origin.
    serve(
        &server,
        "/.well-known/oauth-protected-resource/mcp",
        json_answer(&pr_doc(&uri, &uri)),
        1,
    )
    .await;
    serve(
        &server,
        "/.well-known/oauth-protected-resource",
        json_answer(&pr_doc(&resource, &uri)),
        0,
    )
    .await;
    let e = discovery()
        .discover_from_resource(&resource, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::ResourceMismatch);
    assert_eq!(
        e.url().unwrap().path(),
        "/.well-known/oauth-protected-resource/mcp"
    );
    server.verify().await;

    // At the root, another resource is still refused.
    let server = MockServer::start().await;
    let uri = server.uri();
    serve(
        &server,
        "/.well-known/oauth-protected-resource",
        json_answer(&pr_doc(&format!("{uri}/other"), &uri)),
        1,
    )
    .await;
    let e = discovery()
        .discover_from_resource(&format!("{uri}/mcp"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::ResourceMismatch);
}

#[tokio::test]
async fn resource_metadata_from_a_401_challenge_is_used() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let resource = format!("{uri}/mcp");
    let issuer = format!("{uri}/tenant1");
    let metadata_url = format!("{uri}/meta/prm.json");
    serve(
        &server,
        "/mcp",
        ResponseTemplate::new(401).insert_header(
            "www-authenticate",
            format!(
                r#"Bearer error="invalid_token", resource_metadata="{metadata_url}", scope="tools:read""#
            ),
        ),
        1,
    )
    .await;
    serve(
        &server,
        "/meta/prm.json",
        json_answer(&pr_doc(&resource, &issuer)),
        1,
    )
    .await;
    // The well-known URLs are not consulted when the challenge names the document.
    serve(
        &server,
        "/.well-known/oauth-protected-resource/mcp",
        json_answer(&pr_doc(&resource, &issuer)),
        0,
    )
    .await;
    serve(
        &server,
        "/.well-known/oauth-protected-resource",
        json_answer(&pr_doc(&resource, &issuer)),
        0,
    )
    .await;
    serve(
        &server,
        "/.well-known/openid-configuration/tenant1",
        json_answer(&as_doc(&issuer)),
        1,
    )
    .await;

    // The MCP request that draws the 401.
    let answer = reqwest::get(&resource).await.unwrap();
    assert_eq!(answer.status(), 401);
    let header = answer.headers()["www-authenticate"].to_str().unwrap();
    let challenge = parse_bearer_challenge(header).unwrap();
    assert_eq!(
        challenge.resource_metadata.as_deref(),
        Some(metadata_url.as_str())
    );

    let found = discovery()
        .discover_from_resource(&resource, challenge.resource_metadata.as_deref())
        .await
        .unwrap();
    assert_eq!(found.resource.resource, resource);
    assert_eq!(found.authorization_server.issuer, issuer);
    assert_eq!(
        requested_paths(&server).await,
        [
            "/mcp",
            "/meta/prm.json",
            "/.well-known/oauth-authorization-server/tenant1",
            "/.well-known/openid-configuration/tenant1",
        ]
    );
    server.verify().await;
}

#[tokio::test]
async fn a_missing_challenge_document_is_not_replaced_by_the_well_known_one() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let resource = format!("{uri}/mcp");
    serve(
        &server,
        "/.well-known/oauth-protected-resource/mcp",
        json_answer(&pr_doc(&resource, &uri)),
        0,
    )
    .await;
    serve(
        &server,
        "/redirecting",
        ResponseTemplate::new(302).insert_header(
            "location",
            format!("{uri}/.well-known/oauth-protected-resource/mcp"),
        ),
        1,
    )
    .await;
    let d = discovery();
    let e = d
        .discover_protected_resource(&resource, Some(&format!("{uri}/gone")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::NotFound);
    assert!(e.to_string().contains("HTTP 404"), "{e}");
    let e = d
        .discover_protected_resource(&resource, Some(&format!("{uri}/redirecting")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::NotFound);
    assert!(e.to_string().contains("not followed"), "{e}");
    server.verify().await;
}

#[tokio::test]
async fn an_unusable_challenge_url_is_refused_before_any_request() {
    let d = discovery();
    for (given, kind) in [
        ("/relative/prm", K::InvalidUrl),
        ("https://mcp.example.com/prm#x", K::InvalidUrl),
        ("https://user:pw@mcp.example.com/prm", K::InvalidUrl),
        ("http://mcp.example.com/prm", K::InsecureUrl),
        // A remote resource may not point at the client's own machine in clear text.
        ("http://127.0.0.1:1/prm", K::InsecureUrl),
    ] {
        let e = d
            .discover_protected_resource("https://mcp.example.com/mcp", Some(given))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), kind, "{given}: {e}");
        assert!(!e.to_string().contains(given), "{e}");
    }
}

#[tokio::test]
async fn the_authorization_server_of_a_resource_is_vetted_too() {
    let server = MockServer::start().await;
    let uri = server.uri();
    let resource = format!("{uri}/mcp");
    serve(
        &server,
        "/.well-known/oauth-protected-resource/mcp",
        json_answer(&pr_doc(&resource, &uri)),
        1,
    )
    .await;
    serve(
        &server,
        "/.well-known/oauth-authorization-server",
        json_answer(&without(as_doc(&uri), "code_challenge_methods_supported")),
        1,
    )
    .await;
    let e = discovery()
        .discover_from_resource(&resource, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::PkceUnsupported);
    assert_eq!(
        e.url().unwrap().path(),
        "/.well-known/oauth-authorization-server"
    );
}

#[tokio::test]
async fn no_resource_metadata_anywhere_is_not_found() {
    let server = MockServer::start().await;
    let resource = format!("{}/mcp", server.uri());
    let e = discovery()
        .discover_from_resource(&resource, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), K::NotFound);
    assert_eq!(
        requested_paths(&server).await,
        [
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-protected-resource",
        ]
    );
}

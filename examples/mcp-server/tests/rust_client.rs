//! The client side end to end: rmcp's own client, over its Streamable HTTP transport with
//! keepfresh's `CredentialHttpClient`, against the example HTTP server. The client's
//! credential starts with a token the server does not know: the 401 invalidates it, the one
//! refresh brings a known one, and the retried request — the MCP handshake itself — goes
//! through. Runs without Python.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::Running;
use keepfresh::mcp::CredentialHttpClient;
use keepfresh::{refresher_fn, AccessToken, Credential, RefreshToken, TokenResponse, TokenSet};
use keepfresh_mcp_example::token_digest;
use keepfresh_sim::http::{HttpProvider, ServeConfig};
use rmcp::model::CallToolRequestParams;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;

mod common;

fn start_server(dir: &Path, provider: &HttpProvider, token: &str) -> (Running, String) {
    let users = dir.join("users.json");
    std::fs::write(&users, format!(r#"{{"alice": "{}"}}"#, token_digest(token))).unwrap();
    common::start_http_server(|c| {
        c.arg("--users")
            .arg(&users)
            .arg("--store-dir")
            .arg(dir.join("tokens"))
            .args([
                "--token-url",
                &provider.token_url(),
                "--api-url",
                &provider.resource_url(),
            ])
            .stderr(Stdio::null());
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_with_a_keepfresh_credential() {
    let provider = HttpProvider::start(ServeConfig::new("strict").seed(21), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path(), &provider, "mcp-token-alice");

    // The MCP client's own grant with the MCP server's authorization server (here a
    // refresher that hands out the token the server knows).
    let refreshes = Arc::new(AtomicU32::new(0));
    let counted = refreshes.clone();
    let now = time::OffsetDateTime::now_utc();
    let credential = Credential::builder(refresher_fn(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            Ok(TokenResponse::new(AccessToken::new("mcp-token-alice"))
                .with_refresh_token(RefreshToken::new("mcp-refresh-2"))
                .with_expires_in(3600))
        }
    }))
    .tokens(TokenSet::new(
        AccessToken::new("mcp-token-revoked"),
        Some(RefreshToken::new("mcp-refresh-1")),
        now,
        now + time::Duration::hours(1),
    ))
    .build()
    .await
    .unwrap();

    let transport = StreamableHttpClientTransport::with_client(
        CredentialHttpClient::new(credential.clone()),
        StreamableHttpClientTransportConfig::with_uri(url),
    );
    let client = ().serve(transport).await.expect("the handshake, after one refresh");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);

    let tools = client.list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["admin_report", "read_resource"]);

    // Alice has no upstream grant on this server yet: the structured re-authorization error.
    let result = client
        .call_tool(CallToolRequestParams::new("read_resource"))
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let body = result.structured_content.unwrap();
    assert_eq!(body["error"], "reauthorization_required");
    assert_eq!(body["reason"], "never_authorized");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(credential.try_token().unwrap().secret(), "mcp-token-alice");
    client.cancel().await.unwrap();
}

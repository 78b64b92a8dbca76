//! An API client the way an MCP server calling an upstream API would use keepfresh: the OAuth
//! refresh grant over HTTP (`HttpRefresher`), concurrent requests sharing one credential, and
//! the resource server's answers read with `classify_resource_answer` — a 401 invalidates
//! exactly the token that was sent and the request is retried once; a 403 `insufficient_scope`
//! is a step-up, never a refresh.
//!
//! A local stand-in for the provider (rotating refresh tokens, reuse detection) and for the API
//! runs on loopback (wiremock), so the example needs no network.
//!
//! Run: `cargo run --example api_client --features http`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use keepfresh::oauth::{classify_resource_answer, HttpRefresher, ResourceVerdict};
use keepfresh::{Credential, Event, RefreshToken};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The provider: each refresh token works once and is rotated; a replay revokes everything.
struct TokenEndpoint {
    state: Arc<Mutex<Provider>>,
}

#[derive(Default)]
struct Provider {
    generation: u32,
    live_access: Option<String>,
    revoked: bool,
    calls: u32,
}

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut p = self.state.lock().expect("provider lock");
        p.calls += 1;
        let body = String::from_utf8_lossy(&request.body).into_owned();
        let expected = format!("refresh_token=refresh-{}", p.generation);
        if p.revoked || !body.contains(&expected) {
            p.revoked = true;
            return ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "invalid_grant", "error_description": "refresh token reused: grant revoked"
            }));
        }
        p.generation += 1;
        let n = p.generation;
        p.live_access = Some(format!("access-{n}"));
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": format!("access-{n}"),
            "refresh_token": format!("refresh-{n}"),
            "expires_in": 3600,
            "token_type": "Bearer",
        }))
    }
}

/// The API: accepts only the live access token; `/admin` needs a scope the grant lacks.
struct Api {
    state: Arc<Mutex<Provider>>,
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let p = self.state.lock().expect("provider lock");
        let sent = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if sent.is_none() || sent != p.live_access.as_deref() {
            return ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#);
        }
        if request.url.path() == "/admin" {
            return ResponseTemplate::new(403).insert_header(
                "www-authenticate",
                r#"Bearer error="insufficient_scope", scope="admin:org""#,
            );
        }
        ResponseTemplate::new(200).set_body_string("ok")
    }
}

/// One API call with keepfresh's 401 handling: invalidate that token, retry once.
async fn call(
    credential: &Credential,
    http: &reqwest::Client,
    url: &str,
) -> Result<String, String> {
    for attempt in 0..2 {
        let token = credential.token().await.map_err(|e| e.to_string())?;
        let response = http
            .get(url)
            .bearer_auth(token.secret())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match classify_resource_answer(response.status().as_u16(), challenge.as_deref()) {
            ResourceVerdict::InvalidToken if attempt == 0 => {
                credential.invalidate(&token);
            }
            ResourceVerdict::InvalidToken => return Err("401 after a fresh token".into()),
            ResourceVerdict::InsufficientScope { scope } => {
                return Err(format!("step-up needed for scope {scope:?} (no refresh)"))
            }
            ResourceVerdict::Forbidden => return Err("403".into()),
            _ => return response.text().await.map_err(|e| e.to_string()),
        }
    }
    Err("unreachable: two attempts".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = MockServer::start().await;
    let state = Arc::new(Mutex::new(Provider::default()));
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(TokenEndpoint {
            state: state.clone(),
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(Api {
            state: state.clone(),
        })
        .mount(&server)
        .await;

    let refresher = HttpRefresher::builder(format!("{}/oauth/token", server.uri()), "example")
        .resource("https://mcp.example.com/")
        .build()?;
    let credential = Credential::builder(refresher)
        .refresh_token(RefreshToken::new("refresh-0"))
        .build()
        .await?;
    let refreshes = Arc::new(AtomicU32::new(0));
    let counter = refreshes.clone();
    credential.on_event(move |e| {
        if let Event::Refreshed { .. } = e {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let http = reqwest::Client::new();
    let api = format!("{}/me", server.uri());

    println!("200 concurrent API calls on a credential holding only a refresh token:");
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let (c, h, u) = (credential.clone(), http.clone(), api.clone());
            tokio::spawn(async move { call(&c, &h, &u).await })
        })
        .collect();
    let mut ok = 0;
    for t in calls {
        ok += usize::from(t.await?.is_ok());
    }
    println!(
        "  {ok}/200 succeeded; token-endpoint calls: {}",
        state.lock().expect("lock").calls
    );

    println!("the provider kills the access token server-side (as GitHub does); 200 calls again:");
    state.lock().expect("lock").live_access = None;
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let (c, h, u) = (credential.clone(), http.clone(), api.clone());
            tokio::spawn(async move { call(&c, &h, &u).await })
        })
        .collect();
    let mut ok = 0;
    for t in calls {
        ok += usize::from(t.await?.is_ok());
    }
    let (calls, revoked) = {
        let p = state.lock().expect("lock");
        (p.calls, p.revoked)
    };
    println!(
        "  {ok}/200 succeeded after one 401 each; token-endpoint calls: {calls} (grant revoked: {revoked})"
    );

    println!("a call that needs more scope:");
    let before = refreshes.load(Ordering::SeqCst);
    let admin = call(&credential, &http, &format!("{}/admin", server.uri())).await;
    println!(
        "  {admin:?}; refreshes caused: {}",
        refreshes.load(Ordering::SeqCst) - before
    );
    Ok(())
}

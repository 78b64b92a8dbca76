//! `HttpRefresher` against a real HTTP server on loopback (wiremock, and a raw TCP server for
//! the failures wiremock cannot produce). Scenarios B.7/B.8, E.20/22/24, H.30.
#![cfg(feature = "http")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keepfresh::oauth::{ClientAuth, HttpRefresher};
use keepfresh::{
    ClientSecret, Credential, ErrorClass, RefreshError, RefreshRequest, RefreshToken, Refresher,
    TokenResponse,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const RT: &str = "rt-SEKRET-0001";
const SECRET: &str = "cs-SEKRET-p@ss:w/rd";

async fn server_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(template)
        .expect(1)
        .mount(&server)
        .await;
    server
}

fn refresher(server: &MockServer) -> HttpRefresher {
    HttpRefresher::builder(format!("{}/token", server.uri()), "client-1")
        .build()
        .unwrap()
}

fn request() -> RefreshRequest {
    RefreshRequest::new(Some(RefreshToken::new(RT)))
}

async fn refresh_once(template: ResponseTemplate) -> Result<TokenResponse, RefreshError> {
    let server = server_answering(template).await;
    let result = refresher(&server).refresh(request()).await;
    // Exactly one POST: nothing is ever retried by the refresher.
    server.verify().await;
    assert_no_secret(&result);
    result
}

fn assert_no_secret(result: &Result<TokenResponse, RefreshError>) {
    if let Err(e) = result {
        let text = format!("{e} {e:?}");
        assert!(!text.contains("SEKRET"), "secret in error: {text}");
    }
}

fn form(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&req.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    form.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn base64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn json_success_and_request_shape() {
    let server = server_answering(ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "access_token": "at-1", "refresh_token": "rt-2", "expires_in": 3600,
        "token_type": "Bearer", "scope": "read write"
    })))
    .await;
    let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), "client-1")
        .resource("https://mcp.example.com/")
        .resource("https://other.example.com/api")
        .build()
        .unwrap();
    let mut req = request();
    req.scope = Some("read write".into());
    let resp = refresher.refresh(req).await.unwrap();
    assert_eq!(resp.access_token().expose_secret(), "at-1");
    assert_eq!(resp.refresh_token().unwrap().expose_secret(), "rt-2");
    assert_eq!(resp.expires_in(), Some(3600));
    assert_eq!(resp.scope(), Some("read write"));

    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.headers.get("accept").unwrap(), "application/json");
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert!(r.headers.get("authorization").is_none(), "public client");
    let f = form(r);
    assert_eq!(field(&f, "grant_type"), ["refresh_token"]);
    assert_eq!(field(&f, "refresh_token"), [RT]);
    assert_eq!(field(&f, "scope"), ["read write"]);
    assert_eq!(
        field(&f, "resource"),
        ["https://mcp.example.com/", "https://other.example.com/api"]
    );
    assert_eq!(field(&f, "client_id"), ["client-1"]);
    assert!(field(&f, "client_secret").is_empty());
    server.verify().await;
}

#[tokio::test]
async fn no_scope_field_when_the_request_has_none() {
    let server = server_answering(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": "at"})),
    )
    .await;
    refresher(&server).refresh(request()).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    let f = form(&reqs[0]);
    assert!(field(&f, "scope").is_empty());
    assert!(field(&f, "resource").is_empty());
}

#[tokio::test]
async fn client_secret_basic_is_form_urlencoded_then_base64() {
    let server = server_answering(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": "at"})),
    )
    .await;
    let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), "my client")
        .client_secret(ClientSecret::new(SECRET))
        .build()
        .unwrap();
    assert!(!format!("{refresher:?}").contains("SEKRET"));
    refresher.refresh(request()).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    let expected = format!("Basic {}", base64(b"my+client:cs-SEKRET-p%40ss%3Aw%2Frd"));
    assert_eq!(reqs[0].headers.get("authorization").unwrap(), &expected);
    let f = form(&reqs[0]);
    assert!(field(&f, "client_secret").is_empty());
    assert!(!String::from_utf8_lossy(&reqs[0].body).contains("SEKRET-p"));
}

#[tokio::test]
async fn client_secret_post_goes_in_the_body() {
    let server = server_answering(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": "at"})),
    )
    .await;
    let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), "client-1")
        .client_secret(ClientSecret::new(SECRET))
        .client_auth(ClientAuth::Post)
        .build()
        .unwrap();
    refresher.refresh(request()).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs[0].headers.get("authorization").is_none());
    let f = form(&reqs[0]);
    assert_eq!(field(&f, "client_id"), ["client-1"]);
    assert_eq!(field(&f, "client_secret"), [SECRET]);
}

#[tokio::test]
async fn form_encoded_response() {
    let resp = refresh_once(
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/x-www-form-urlencoded")
            .set_body_string(
                "access_token=at-f&refresh_token=rt-f&expires_in=7200&token_type=bearer",
            ),
    )
    .await
    .unwrap();
    assert_eq!(resp.access_token().expose_secret(), "at-f");
    assert_eq!(resp.refresh_token().unwrap().expose_secret(), "rt-f");
    assert_eq!(resp.expires_in(), Some(7200));
}

#[tokio::test]
async fn github_error_with_http_200_is_invalid_grant() {
    let err = refresh_once(ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "error": "bad_refresh_token",
        "error_description": "The refresh token passed is incorrect or expired."
    })))
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidGrant);
}

#[tokio::test]
async fn slack_envelope_is_invalid_grant() {
    let err = refresh_once(
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"ok": false, "error": "invalid_refresh_token"})),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidGrant);
}

#[tokio::test]
async fn html_with_200_is_ambiguous() {
    let err = refresh_once(
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/html")
            .set_body_string("<html><body>Sign in</body></html>"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous);
}

#[tokio::test]
async fn empty_200_is_ambiguous() {
    let err = refresh_once(ResponseTemplate::new(200)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous);
}

#[tokio::test]
async fn too_many_requests_with_retry_after_seconds() {
    let err = refresh_once(ResponseTemplate::new(429).insert_header("retry-after", "7"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn retry_after_http_date_is_measured_against_the_response_date() {
    // The server's clock is far from ours: the delay must come from its own Date header.
    let err = refresh_once(
        ResponseTemplate::new(503)
            .insert_header("date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .insert_header("retry-after", "Sun, 06 Nov 1994 08:51:07 GMT"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(90)));
}

#[tokio::test]
async fn service_unavailable_is_transient() {
    let err = refresh_once(ResponseTemplate::new(503).set_body_string("upstream down"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn invalid_grant_400() {
    let err = refresh_once(ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "error": "invalid_grant", "error_description": "Refresh token reused"
    })))
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidGrant);
    assert!(err.message().contains("Refresh token reused"));
}

#[tokio::test]
async fn invalid_client_401() {
    let err = refresh_once(
        ResponseTemplate::new(401)
            .insert_header("www-authenticate", "Basic realm=\"token\"")
            .set_body_json(serde_json::json!({"error": "invalid_client"})),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidClient);
}

#[tokio::test]
async fn an_echoed_refresh_token_is_scrubbed_from_the_error() {
    let err = refresh_once(ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "error": "invalid_grant", "error_description": format!("token {RT} is revoked")
    })))
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidGrant);
    assert!(err.message().contains("<redacted>"), "{err}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&target)
        .await;
    let err = refresh_once(
        ResponseTemplate::new(307).insert_header("location", format!("{}/token", target.uri())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Configuration);
    target.verify().await;
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_ambiguous() {
    let server = server_answering(
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"access_token": "late"}))
            .set_delay(Duration::from_secs(10)),
    )
    .await;
    let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), "c")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = refresher.refresh(request()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous, "{err}");
    assert!(err.message().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn hostile_headers() {
    // A Retry-After far beyond any sane value saturates instead of panicking.
    let err = refresh_once(
        ResponseTemplate::new(429).insert_header("retry-after", "99999999999999999999999999"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(err.retry_after().unwrap() >= Duration::from_secs(u64::from(u32::MAX)));

    // A garbage Retry-After is ignored.
    let err = refresh_once(ResponseTemplate::new(503).insert_header("retry-after", "soon-ish"))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), None);

    // Garbage (non-ASCII) content type: the body is still understood.
    let ok = refresh_once(
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"access_token": "at-g"}))
            .insert_header("content-type", "t\u{e9}xt/\u{1f980}; charset=??"),
    )
    .await
    .unwrap();
    assert_eq!(ok.access_token().expose_secret(), "at-g");
}

#[tokio::test]
async fn an_oversized_successful_body_is_ambiguous() {
    let big = format!(
        r#"{{"access_token":"at","padding":"{}"}}"#,
        "x".repeat(200_000)
    );
    let err = refresh_once(
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/json")
            .set_body_string(big),
    )
    .await
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous);
    assert!(err.message().contains("larger than"), "{err}");
}

#[tokio::test]
async fn an_oversized_error_body_is_classified_by_status() {
    let err = refresh_once(ResponseTemplate::new(502).set_body_string("e".repeat(500_000)))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient);
}

/// A raw HTTP/1.1 server on loopback: accepts connections until dropped, reads one request per
/// connection and then runs `answer` on the socket. Counts the requests it saw.
async fn raw_server<F, Fut>(answer: F) -> (String, Arc<AtomicU32>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        // Bounded: a test never needs more than a few connections.
        for _ in 0..8 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head and the body (Content-Length) of the request.
            loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= head_end + 4 + len {
                        break;
                    }
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            answer(sock).await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn a_connection_reset_after_sending_is_ambiguous_and_not_retried() {
    let (url, seen) = raw_server(|sock| async move {
        // Close without answering: the request was delivered, the answer is lost.
        drop(sock);
    })
    .await;
    let refresher = HttpRefresher::builder(url, "c").build().unwrap();
    let err = refresher.refresh(request()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous, "{err}");
    assert!(!format!("{err:?}").contains("SEKRET"));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the POST was replayed");
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_is_ambiguous() {
    let (url, _) = raw_server(|mut sock| async move {
        let _ = sock
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await;
        let chunk = format!("{:x}\r\n{}\r\n", 8192, "x".repeat(8192));
        // Bounded: 16 chunks of 8 KiB, twice the limit below.
        for _ in 0..16 {
            if sock.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = sock.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let refresher = HttpRefresher::builder(url, "c")
        .max_body_bytes(64 * 1024)
        .build()
        .unwrap();
    let err = refresher.refresh(request()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous, "{err}");
    assert!(err.message().contains("larger than"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refresher = HttpRefresher::builder(format!("http://127.0.0.1:{port}/token"), "c")
        .build()
        .unwrap();
    let err = refresher.refresh(request()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.message().contains("connect"), "{err}");
}

#[tokio::test]
async fn no_refresh_token_means_reauthorization() {
    let server = MockServer::start().await;
    let err = refresher(&server)
        .refresh(RefreshRequest::new(None))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::InvalidGrant);
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// A rotating provider with reuse detection: each refresh token is good once; a replay revokes
/// the whole family.
struct Rotating {
    state: Arc<Mutex<RotState>>,
}

struct RotState {
    current: String,
    generation: u32,
    revoked: bool,
}

impl Respond for Rotating {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let f = form(request);
        let mut s = self.state.lock();
        let presented = field(&f, "refresh_token").first().copied().unwrap_or("");
        if s.revoked || presented != s.current {
            s.revoked = true;
            return ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"error": "invalid_grant"}));
        }
        s.generation += 1;
        s.current = format!("rt-{}", s.generation);
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({
                "access_token": format!("at-{}", s.generation),
                "refresh_token": s.current,
                "expires_in": 3600,
                "token_type": "Bearer",
            }))
            // Keep the refresh in flight while the callers pile up.
            .set_delay(Duration::from_millis(50))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_make_exactly_one_post() {
    let server = MockServer::start().await;
    let state = Arc::new(Mutex::new(RotState {
        current: "rt-0".into(),
        generation: 0,
        revoked: false,
    }));
    let rotating = Rotating {
        state: state.clone(),
    };
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(rotating)
        .mount(&server)
        .await;
    let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), "client-1")
        .resource("https://mcp.example.com/")
        .build()
        .unwrap();
    let credential = Credential::builder(refresher)
        .refresh_token(RefreshToken::new("rt-0"))
        .build()
        .await
        .unwrap();

    let start = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let c = credential.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                c.token().await.map(|t| t.secret().to_owned())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "at-1");
    }
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1, "exactly one token-endpoint call");
    assert_eq!(
        field(&form(&reqs[0]), "resource"),
        ["https://mcp.example.com/"]
    );
    // The credential holds the rotated refresh token, and the family is intact.
    let token = credential.token().await.unwrap();
    // The refresh-token-only start is generation 1; the one refresh made generation 2.
    assert_eq!(token.generation(), 2);
    assert_eq!(
        credential.status().refresh_token,
        Some(RefreshToken::new("rt-1").fingerprint())
    );
    let s = state.lock();
    assert!(!s.revoked, "the family was revoked");
    assert_eq!(s.generation, 1);
}

#[tokio::test]
async fn scope_is_not_sent_when_the_host_says_so() {
    let server = server_answering(
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"access_token": "at"})),
    )
    .await;
    let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), "client-1")
        .send_scope(false)
        .build()
        .unwrap();
    let mut req = request();
    req.scope = Some("read write".into());
    refresher.refresh(req).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert!(field(&form(&reqs[0]), "scope").is_empty());
}

/// A caller's client adjustments cannot turn redirects (or retries) back on.
#[tokio::test]
async fn a_configured_client_still_follows_no_redirect() {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&target)
        .await;
    let server = server_answering(
        ResponseTemplate::new(308).insert_header("location", format!("{}/token", target.uri())),
    )
    .await;
    let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), "client-1")
        .configure_client(|b| b.redirect(reqwest::redirect::Policy::limited(10)))
        .build()
        .unwrap();
    let err = refresher.refresh(request()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Configuration, "{err}");
    server.verify().await;
    target.verify().await;
}

/// With a configured client a lost answer is still not retried: exactly one POST.
#[tokio::test]
async fn a_configured_client_still_retries_nothing() {
    let (url, seen) = raw_server(|sock| async move { drop(sock) }).await;
    let refresher = HttpRefresher::builder(url, "c")
        .configure_client(|b| {
            // A policy that retries every failure, as a careless shared client might have.
            b.retry(
                reqwest::retry::for_host("127.0.0.1")
                    .no_budget()
                    .max_retries_per_request(3)
                    .classify_fn(|rr| {
                        if rr.error().is_some() {
                            rr.retryable()
                        } else {
                            rr.success()
                        }
                    }),
            )
        })
        .build()
        .unwrap();
    let err = refresher.refresh(request()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Ambiguous, "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the POST was replayed");
}

async fn revocation_server(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(template)
        .expect(1)
        .mount(&server)
        .await;
    server
}

fn revoker(server: &MockServer) -> HttpRefresher {
    HttpRefresher::builder(format!("{}/token", server.uri()), "client-1")
        .client_secret(ClientSecret::new(SECRET))
        .revocation_url(format!("{}/revoke", server.uri()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn revocation_posts_the_refresh_token_with_its_hint_and_client_auth() {
    let server = revocation_server(ResponseTemplate::new(200)).await;
    revoker(&server)
        .revoke(&RefreshToken::new(RT))
        .await
        .unwrap();
    let reqs = server.received_requests().await.unwrap();
    let f = form(&reqs[0]);
    assert_eq!(field(&f, "token"), [RT]);
    assert_eq!(field(&f, "token_type_hint"), ["refresh_token"]);
    assert!(
        reqs[0].headers.get("authorization").is_some(),
        "client_secret_basic"
    );
    server.verify().await;
}

#[tokio::test]
async fn revocation_errors_are_classified_and_never_show_the_token() {
    for (template, class) in [
        (
            ResponseTemplate::new(503).insert_header("retry-after", "7"),
            ErrorClass::Transient,
        ),
        (
            ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "unsupported_token_type",
                "error_description": format!("cannot revoke {RT}")
            })),
            ErrorClass::Configuration,
        ),
        (
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"error": "invalid_client"})),
            ErrorClass::InvalidClient,
        ),
    ] {
        let server = revocation_server(template).await;
        let err = revoker(&server)
            .revoke(&RefreshToken::new(RT))
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("SEKRET"), "{text}");
        assert_eq!(err.class(), class, "{text}");
        server.verify().await;
    }
}

/// Logout deletes the local tokens whatever the revocation endpoint answers.
#[tokio::test]
async fn logout_revokes_the_newest_refresh_token_and_always_deletes() {
    use keepfresh::oauth::logout;
    use keepfresh::store::{MemoryStore, TokenStore};
    use keepfresh::{AccessToken, TokenSet};
    for status in [200, 500] {
        let server = revocation_server(ResponseTemplate::new(status)).await;
        let store = MemoryStore::new();
        let now = time::OffsetDateTime::now_utc();
        let set = TokenSet::new(
            AccessToken::new("at"),
            Some(RefreshToken::new(RT)),
            now,
            now + time::Duration::hours(1),
        );
        store.save(None, &set).await.unwrap();
        let out = logout(&store, &revoker(&server)).await;
        assert_eq!(
            out.revoked.as_ref().unwrap().is_ok(),
            status == 200,
            "{status}"
        );
        assert!(out.cleared.unwrap(), "{status}");
        assert!(
            store.load().await.unwrap().is_none(),
            "{status}: tokens left behind"
        );
        let reqs = server.received_requests().await.unwrap();
        assert_eq!(field(&form(&reqs[0]), "token"), [RT]);
    }
}

//! Secret hygiene, end to end: the HTTP refresher, the engine, every store, discovery, the
//! login flow, both middlewares (reqwest-middleware and tower), API keys, the `keepfresh`
//! command-line tool and the MCP integration the example servers are built on are driven
//! through their error paths with seeded secrets — also placed where a hostile or careless server or file puts them:
//! inside `error_description`, vendor error envelopes, `Retry-After`, discovery documents and
//! store files. Every log line (`tracing`, all levels), `Debug`, `Display`, error message and
//! the tool's output is captured, and the test fails if a seeded secret appears raw (any 12
//! consecutive characters of it), base64-encoded (four alphabets) or URL-encoded.
#![cfg(all(
    feature = "http",
    feature = "tracing",
    feature = "file",
    feature = "encrypted",
    feature = "redis",
    feature = "middleware",
    feature = "cli",
    feature = "login",
    feature = "rmcp"
))]

use std::fmt::{Debug, Display};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use keepfresh::oauth::discovery::{AuthorizationServerMetadata, ProtectedResourceMetadata};
use keepfresh::oauth::{parse_bearer_challenge, HttpRefresher};
use keepfresh::store::spec::StoreSpec;
use keepfresh::store::{EncryptedFileStore, FileStore, Key, RedisStore, TokenStore};
use keepfresh::{
    AccessToken, ApiKey, ClientSecret, Credential, RefreshRequest, RefreshToken, Refresher,
    TokenSet,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The seeded secrets: long enough that any 12-character window is distinctive.
const AT: &str = "kfAT7q2Wm9LpV4nR8sT1wY6zB3cD5eF0";
const RT: &str = "kfRT3x8Nc1Qa6Zt9Hm2Jv5Kd7Pg4Sb0U";
const CS: &str = "kfCS5y1Ud8Rw3Ej6Tn9Xo2Il4Aq7Gh0M";
const RP: &str = "kfRP8b4Vf1Ck7Mz3Lx6Nq9Wd2Hs5Jt0E";
const AK: &str = "kfAK2h7Gt4Yp9Rc1Sv6Bn3Mx8Qw5Lz0D";
/// An authorization code (single-use, but redeemable until it is).
const AC: &str = "kfAC9d3Rk6Wn1Bq8Ty4Mz7Hv2Lc5Jx0P";
const KEY_HEX: &str = "6b6653454544313233343536373839306b66534545443132333435363738393a";
const CLIENT_ID: &str = "hygiene-client";

fn seeds() -> Vec<String> {
    [AT, RT, CS, RP, AK, AC, KEY_HEX]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Every form in which a seeded secret counts as leaked.
fn forms() -> Vec<(String, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut out = Vec::new();
    for s in seeds() {
        let chars: Vec<char> = s.chars().collect();
        for w in chars.windows(12) {
            out.push((s.clone(), w.iter().collect()));
        }
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            out.push((format!("base64({s})"), engine.encode(s.as_bytes())));
        }
        let url: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
        out.push((format!("url({s})"), url));
    }
    // The client's HTTP Basic credentials, as sent in the `Authorization` header.
    let basic = format!("{CLIENT_ID}:{CS}");
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push((format!("base64({basic})"), engine.encode(basic.as_bytes())));
    }
    out
}

/// Everything captured, with where it came from.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<(String, String)>>>);

impl Sink {
    fn push(&self, origin: &str, text: String) {
        self.0.lock().unwrap().push((origin.to_owned(), text));
    }
    fn debug(&self, origin: &str, v: &dyn Debug) {
        self.push(origin, format!("{v:?}\n{v:#?}"));
    }
    fn display(&self, origin: &str, v: &dyn Display) {
        self.push(origin, v.to_string());
    }
    fn error<E: Debug + Display>(&self, origin: &str, e: &E) {
        self.debug(origin, e);
        self.display(origin, e);
    }
    fn attach(&self, c: &Credential, origin: &'static str) {
        let me = self.clone();
        c.on_event(move |e| me.debug(origin, e));
    }
    fn origins(&self) -> Vec<String> {
        let mut o: Vec<String> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(o, _)| o.clone())
            .collect();
        o.sort();
        o.dedup();
        o
    }
    /// Panics naming the origin, the secret and the form of the first leak found.
    fn assert_clean(&self) {
        let forms = forms();
        let all = self.0.lock().unwrap();
        for (origin, text) in all.iter() {
            for (secret, form) in &forms {
                assert!(
                    !text.contains(form.as_str()),
                    "{origin} leaked {secret} as {form:?}:\n{text}"
                );
            }
        }
    }
}

/// A `tracing` writer into the sink.
#[derive(Clone)]
struct LogWriter(Sink);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .push("log", String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn long_prefix() -> String {
    "x".repeat(150)
}

/// Hostile and careless token-endpoint answers, each echoing secrets somewhere.
fn token_answers() -> Vec<(&'static str, ResponseTemplate)> {
    use base64::engine::general_purpose::STANDARD;
    let b64 = STANDARD.encode(RT);
    let url: String = form_urlencoded::byte_serialize(RT.as_bytes()).collect();
    let basic = STANDARD.encode(format!("{CLIENT_ID}:{CS}"));
    let json = |status: u16, body: String| {
        ResponseTemplate::new(status)
            .insert_header("content-type", "application/json")
            .set_body_string(body)
    };
    vec![
        (
            "error_description echoing every secret",
            json(
                400,
                format!(
                    r#"{{"error":"invalid_grant","error_description":"refresh token {RT} (b64 {b64}, url {url}) revoked; client secret {CS}; header Basic {basic}; access {AT}"}}"#
                ),
            ),
        ),
        (
            "a secret cut by the description's length limit",
            json(
                400,
                format!(
                    r#"{{"error":"invalid_grant","error_description":"{} {RT}"}}"#,
                    long_prefix()
                ),
            ),
        ),
        (
            "a secret as the error code",
            json(400, format!(r#"{{"error":"{RT}"}}"#)),
        ),
        (
            "a vendor envelope with a secret as its code",
            json(
                401,
                format!(r#"{{"error":{{"code":"{RT}","message":"{CS}"}}}}"#),
            ),
        ),
        (
            "Slack's envelope with a secret",
            json(200, format!(r#"{{"ok":false,"error":"{RT}"}}"#)),
        ),
        (
            "an HTML error page echoing the request",
            ResponseTemplate::new(502)
                .insert_header("content-type", "text/html")
                .set_body_string(format!(
                    "<html>refresh_token={RT}&client_secret={CS}</html>"
                )),
        ),
        (
            "a form-encoded error echoing the refresh token",
            ResponseTemplate::new(400)
                .insert_header("content-type", "application/x-www-form-urlencoded")
                .set_body_string(format!("error=invalid_grant&error_description={url}")),
        ),
        (
            "a hostile Retry-After",
            json(429, r#"{"error":"slow_down"}"#.to_owned()).insert_header("retry-after", RT),
        ),
        (
            "a success whose expires_in holds a secret",
            json(
                200,
                format!(r#"{{"access_token":"{AT}","refresh_token":"{RT}","expires_in":"{CS}"}}"#),
            ),
        ),
        (
            "a success without an access token",
            json(200, format!(r#"{{"token":"{AT}","refresh":"{RT}"}}"#)),
        ),
    ]
}

async fn refresher_and_engine(sink: &Sink) {
    for (what, answer) in token_answers() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(answer)
            .mount(&server)
            .await;
        let refresher = HttpRefresher::builder(format!("{}/token", server.uri()), CLIENT_ID)
            .client_secret(ClientSecret::new(CS))
            .allow_insecure_http(true)
            .build()
            .expect("refresher");
        sink.debug("HttpRefresher", &refresher);
        let request = RefreshRequest::new(Some(RefreshToken::new(RT)));
        sink.debug("RefreshRequest", &request);
        match refresher.refresh(request).await {
            Ok(r) => sink.debug(what, &r),
            Err(e) => sink.error(what, &e),
        }

        // The same answer through the engine: its errors, events and status.
        let now = time::OffsetDateTime::now_utc();
        let expired = TokenSet::new(
            AccessToken::new(AT),
            Some(RefreshToken::new(RT)),
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        );
        let credential = Credential::builder(refresher)
            .tokens(expired)
            .build()
            .await
            .expect("credential");
        sink.attach(&credential, "engine event");
        match credential.token().await {
            Ok(t) => sink.debug("engine token", &t),
            Err(e) => sink.error("engine error", &e),
        }
        sink.debug("credential", &credential);
        sink.debug("status", &credential.status());
        let _ = credential.shutdown().await;
    }
}

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn write_private(path: &std::path::Path, body: &str, mode: u32) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

async fn stores(sink: &Sink) {
    let dir = private_dir();
    let bodies = [
        (
            "truncated",
            format!(
                r#"{{"keepfresh_store":1,"version":3,"tokens":{{"access_token":"{AT}","refresh_token":"{RT}""#
            ),
        ),
        (
            "unknown field named by a secret",
            format!(r#"{{"keepfresh_store":1,"version":1,"{RT}":1}}"#),
        ),
        (
            "wrong type holding a secret",
            format!(r#"{{"keepfresh_store":1,"version":"{RT}"}}"#),
        ),
        (
            "token of the wrong type",
            format!(
                r#"{{"keepfresh_store":1,"version":1,"tokens":{{"access_token":["{AT}"],"refresh_token":"{RT}","issued_at":"{CS}","expires_at":"{CS}"}}}}"#
            ),
        ),
        (
            "not JSON",
            format!("access_token={AT}\nrefresh_token={RT}\n"),
        ),
    ];
    for (i, (what, body)) in bodies.iter().enumerate() {
        let file = dir.path().join(format!("corrupt-{i}.json"));
        write_private(&file, body, 0o600);
        let store = FileStore::open(&file).expect("opens");
        sink.debug("FileStore", &store);
        match store.load().await {
            Ok(v) => sink.debug(what, &v),
            Err(e) => sink.error(what, &e),
        }
    }
    // A token file others can read: refused, content never shown.
    let open_file = dir.path().join("readable.json");
    write_private(&open_file, &bodies[0].1, 0o644);
    if let Err(e) = FileStore::open(&open_file).and(Ok(())) {
        sink.error("readable token file", &e);
    }

    // The encrypted store: sealed with one key, opened with another; keys from bad env values.
    let key_bytes: [u8; 32] = {
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&KEY_HEX[2 * i..2 * i + 2], 16).unwrap();
        }
        k
    };
    let sealed = dir.path().join("sealed.bin");
    let right = EncryptedFileStore::open(&sealed, "hygiene", Key::from_bytes(key_bytes)).unwrap();
    sink.debug("EncryptedFileStore", &right);
    let now = time::OffsetDateTime::now_utc();
    let set = TokenSet::new(
        AccessToken::new(AT),
        Some(RefreshToken::new(RT)),
        now,
        now + time::Duration::hours(1),
    );
    right.save(None, &set).await.expect("saves");
    let wrong = EncryptedFileStore::open(&sealed, "hygiene", Key::from_bytes([7; 32])).unwrap();
    match wrong.load().await {
        Ok(v) => sink.debug("wrong key", &v),
        Err(e) => sink.error("wrong key", &e),
    }
    sink.debug("Key", &Key::from_bytes(key_bytes));
    for (i, bad) in [
        &KEY_HEX[..63],
        &format!("{KEY_HEX}00"),
        &format!("zz{}", &KEY_HEX[2..]),
    ]
    .into_iter()
    .enumerate()
    {
        let var = format!("KEEPFRESH_HYGIENE_KEY_{i}");
        // TODO: Audit that the environment access only happens in single-threaded code.
        unsafe { std::env::set_var(&var, bad) };
        match Key::from_env(&var) {
            Ok(k) => sink.debug("key from env", &k),
            Err(e) => sink.error("key from env", &e),
        }
    }
    // A plain file where a sealed one belongs, holding tokens in the clear.
    let plain = dir.path().join("plain.bin");
    write_private(&plain, &bodies[0].1, 0o600);
    let store = EncryptedFileStore::open(&plain, "hygiene", Key::from_bytes(key_bytes)).unwrap();
    if let Err(e) = store.load().await {
        sink.error("plain file as sealed", &e);
    }

    // Redis: a password in the URL, nothing listening.
    let url = format!("redis://:{RP}@127.0.0.1:1/0");
    match RedisStore::open(&url, "hygiene").await {
        Ok(s) => sink.debug("RedisStore", &s),
        Err(e) => sink.error("RedisStore::open", &e),
    }
    sink.debug("RedisStore::builder", &RedisStore::builder(&url));
    for spec in [
        format!("redis://:{RP}@127.0.0.1:1/0#hygiene"),
        format!("rediss://user:{RP}@127.0.0.1:1/0#hygiene"),
        format!("bogus://:{RP}@127.0.0.1/"),
        format!("redis://:{RP}@[::1"),
    ] {
        match spec.parse::<StoreSpec>() {
            Ok(s) => {
                sink.debug("StoreSpec", &s);
                sink.display("StoreSpec", &s);
                match s.open().await {
                    Ok(_) => {}
                    Err(e) => sink.error("StoreSpec::open", &e),
                }
            }
            Err(e) => sink.error("StoreSpec::parse", &e),
        }
    }
}

fn discovery(sink: &Sink) {
    let issuer = "https://auth.example.com";
    let docs = [
        format!(
            r#"{{"issuer":"{issuer}","authorization_endpoint":"https://user:{CS}@auth.example.com/a","token_endpoint":"{issuer}/token","response_types_supported":["code"],"code_challenge_methods_supported":["S256"]}}"#
        ),
        format!(
            r#"{{"issuer":"{RT}","authorization_endpoint":"{issuer}/a","token_endpoint":"{issuer}/token","response_types_supported":["code"],"code_challenge_methods_supported":["S256"]}}"#
        ),
        format!(
            r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/a","token_endpoint":"{issuer}/token","response_types_supported":"{RT}","code_challenge_methods_supported":["{AT}"]}}"#
        ),
        format!(r#"{{"issuer":"{issuer}","{RT}":"#),
    ];
    // Each document is refused; a document that is accepted is public by definition (it is
    // served unauthenticated at a well-known address), so only refusals are checked.
    for doc in &docs {
        let e = AuthorizationServerMetadata::from_json(doc.as_bytes(), issuer)
            .expect_err("a document with a bad field");
        sink.error("AS metadata", &e);
    }
    let resource = "https://mcp.example.com/";
    let docs = [
        format!(r#"{{"resource":"{RT}","authorization_servers":["{issuer}"]}}"#),
        format!(
            r#"{{"resource":"{resource}","authorization_servers":["https://u:{CS}@auth.example.com"]}}"#
        ),
        format!(r#"{{"resource":"{resource}","authorization_servers":"{AT}"}}"#),
    ];
    for doc in &docs {
        let e = ProtectedResourceMetadata::from_json(doc.as_bytes(), resource)
            .expect_err("a document with a bad field");
        sink.error("PR metadata", &e);
    }
}

async fn middleware(sink: &Sink) {
    use keepfresh::middleware::AuthMiddleware;
    let api = MockServer::start().await;
    let challenge = format!(
        r#"Bearer error="invalid_token", error_description="token {AT} is revoked ({RT})""#
    );
    Mock::given(path("/me"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("www-authenticate", challenge.as_str())
                .set_body_string(format!("bad token {AT}")),
        )
        .mount(&api)
        .await;
    Mock::given(path("/admin"))
        .respond_with(
            ResponseTemplate::new(403).insert_header(
                "www-authenticate",
                format!(
                    r#"Bearer error="insufficient_scope", scope="admin", error_description="{RT}""#
                )
                .as_str(),
            ),
        )
        .mount(&api)
        .await;
    let token_endpoint = refusing_token_endpoint(RT).await;
    let credential = credential_for_tower(&token_endpoint).await;
    sink.attach(&credential, "middleware engine event");
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(Arc::new(credential)))
        .build();
    for p in ["/me", "/admin"] {
        match client.get(format!("{}{p}", api.uri())).send().await {
            Ok(r) => sink.debug("middleware response", &r),
            Err(e) => sink.error("middleware error", &e),
        }
    }
    sink.debug("challenge", &parse_bearer_challenge(&challenge));

    // The tower layer in front of a service that answers 401 with the echoing challenge.
    {
        use keepfresh::middleware::{AuthLayer, BoxError};
        use tower::{service_fn, Layer, ServiceExt};
        let challenge = challenge.clone();
        let service = service_fn(move |_request: http::Request<()>| {
            let challenge = challenge.clone();
            async move {
                let mut response = http::Response::new(format!("bad token {AT}"));
                *response.status_mut() = http::StatusCode::UNAUTHORIZED;
                response.headers_mut().insert(
                    "www-authenticate",
                    http::HeaderValue::from_str(&challenge).unwrap(),
                );
                Ok::<_, BoxError>(response)
            }
        });
        let layer = AuthLayer::new(Arc::new(credential_for_tower(&token_endpoint).await));
        sink.debug("AuthLayer", &layer);
        match layer.layer(service).oneshot(http::Request::new(())).await {
            Ok(r) => sink.debug("tower response", &r),
            Err(e) => sink.error("tower error", &e),
        }
    }

    // An API key source: its Debug, and its errors.
    let key = ApiKey::new(AK).unwrap();
    sink.debug("ApiKey", &key);
    let dir = private_dir();
    let env = dir.path().join(".env");
    write_private(&env, &format!("HYGIENE_KEY={AK}\n"), 0o644);
    if let Err(e) = ApiKey::from_dotenv(&env, "HYGIENE_KEY") {
        sink.error("readable .env", &e);
    }
    write_private(&env, &format!("HYGIENE_KEY=\"{AK}\n{AK} = {AK}\n"), 0o600);
    match ApiKey::from_dotenv(&env, "HYGIENE_KEY") {
        Ok(k) => sink.debug("malformed .env", &k),
        Err(e) => sink.error("malformed .env", &e),
    }
    write_private(&env, &format!("OTHER={AK}\n"), 0o600);
    if let Err(e) = ApiKey::from_dotenv(&env, "HYGIENE_KEY") {
        sink.error("missing key in .env", &e);
    }
}

/// A token endpoint's `invalid_grant` refusal whose `error_description` is `description`.
fn invalid_grant(description: &str) -> ResponseTemplate {
    ResponseTemplate::new(400)
        .insert_header("content-type", "application/json")
        .set_body_json(serde_json::json!({
            "error": "invalid_grant",
            "error_description": description,
        }))
}

/// A token endpoint that refuses every request with [`invalid_grant`].
async fn refusing_token_endpoint(description: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(invalid_grant(description))
        .mount(&server)
        .await;
    server
}

/// A credential holding the seeded tokens whose refreshes hit `token_endpoint`.
async fn credential_for_tower(token_endpoint: &MockServer) -> Credential {
    let now = time::OffsetDateTime::now_utc();
    let fresh = TokenSet::new(
        AccessToken::new(AT),
        Some(RefreshToken::new(RT)),
        now,
        now + time::Duration::hours(1),
    );
    let refresher = HttpRefresher::builder(token_endpoint.uri(), CLIENT_ID)
        .client_secret(ClientSecret::new(CS))
        .allow_insecure_http(true)
        .build()
        .unwrap();
    Credential::builder(refresher)
        .tokens(fresh)
        .build()
        .await
        .unwrap()
}

/// The login flow (authorization code + PKCE) through every refusal: a denial whose
/// `error_description` echoes secrets, a forged state carrying a code, a pasted address that is
/// not a URL, and a code exchange the token endpoint refuses while echoing the code, the
/// client secret and the tokens; then a successful exchange whose tokens must not show.
async fn login(sink: &Sink) {
    use keepfresh::oauth::login::{Login, LoginOptions};
    let token_endpoint = MockServer::start().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_string_contains("code=kfAC"))
        .respond_with(invalid_grant(&format!("code {AC} for {CS} ({AT}, {RT})")))
        .mount(&token_endpoint)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "application/json")
                .set_body_string(format!(
                    r#"{{"access_token":"{AT}","refresh_token":"{RT}","token_type":"Bearer","expires_in":3600}}"#
                )),
        )
        .mount(&token_endpoint)
        .await;
    let issuer = token_endpoint.uri();
    let doc = format!(
        r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/authorize","token_endpoint":"{issuer}/token","response_types_supported":["code"],"code_challenge_methods_supported":["S256"]}}"#
    );
    let metadata = AuthorizationServerMetadata::from_json(doc.as_bytes(), &issuer).unwrap();
    let options = || {
        LoginOptions::new(CLIENT_ID)
            .client_secret(ClientSecret::new(CS))
            .scope("read")
    };
    sink.debug("LoginOptions", &options());
    let start = || async { Login::start(&metadata, options()).await.unwrap() };
    let state_of = |l: &Login| {
        l.authorization_url()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let enc = |v: &str| -> String { form_urlencoded::byte_serialize(v.as_bytes()).collect() };

    let l = start().await;
    sink.debug("Login", &l);
    let denied = format!(
        "{}?error=access_denied&error_description={}&state={}",
        l.redirect_uri(),
        enc(&format!("denied for {RT} and {CS}")),
        state_of(&l)
    );
    match l.finish_with_redirect(&denied).await {
        Ok(t) => sink.debug("login denied", &t),
        Err(e) => sink.error("login denied", &e),
    }
    let l = start().await;
    let forged = format!("{}?code={AC}&state=forged{AT}", l.redirect_uri());
    match l.finish_with_redirect(&forged).await {
        Ok(t) => sink.debug("login forged state", &t),
        Err(e) => sink.error("login forged state", &e),
    }
    let l = start().await;
    match l.finish_with_redirect(&format!("{AC} {RT} %%")).await {
        Ok(t) => sink.debug("login not a URL", &t),
        Err(e) => sink.error("login not a URL", &e),
    }
    let l = start().await;
    let refused = format!("{}?code={AC}&state={}", l.redirect_uri(), state_of(&l));
    match l.finish_with_redirect(&refused).await {
        Ok(t) => sink.debug("login code refused", &t),
        Err(e) => sink.error("login code refused", &e),
    }
    let l = start().await;
    let ok = format!("{}?code=good&state={}", l.redirect_uri(), state_of(&l));
    match l.finish_with_redirect(&ok).await {
        Ok(t) => sink.debug("login tokens", &t),
        Err(e) => sink.error("login tokens", &e),
    }
}

/// The MCP integration the example servers are built on: a tool error made from a refresh
/// failure that echoes secrets, rmcp's HTTP client transport against a server whose 401
/// challenge and body echo the token while its token endpoint refuses with an echo, and
/// rmcp's credential store adapter refusing another client's tokens.
async fn mcp(sink: &Sink) {
    use keepfresh::mcp::{CredentialHttpClient, RmcpStore, ToolAuthError};
    use rmcp::model::{ClientJsonRpcMessage, ClientNotification, InitializedNotification};
    use rmcp::transport::auth::{
        CredentialStore, OAuthTokenResponse, StoredCredentials, VendorExtraTokenFields,
    };
    use rmcp::transport::streamable_http_client::StreamableHttpClient;

    let token_endpoint = refusing_token_endpoint(&format!("{RT} {AT} {CS}")).await;
    let server = MockServer::start().await;
    Mock::given(path("/mcp"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header(
                    "www-authenticate",
                    format!(r#"Bearer error="invalid_token", error_description="{AT} / {RT}""#)
                        .as_str(),
                )
                .set_body_string(format!("token {AT} is not valid here")),
        )
        .mount(&server)
        .await;
    let credential = credential_for_tower(&token_endpoint).await;
    sink.attach(&credential, "mcp engine event");
    let client = CredentialHttpClient::new(credential.clone());
    sink.debug("CredentialHttpClient", &client);
    let message = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
        InitializedNotification::default(),
    ));
    match client
        .post_message(
            format!("{}/mcp", server.uri()).into(),
            message,
            None,
            Some(format!("Bearer {AT}")),
            std::collections::HashMap::new(),
        )
        .await
    {
        Ok(r) => sink.debug("mcp transport", &r),
        Err(e) => sink.error("mcp transport error", &e),
    }
    match credential.token().await {
        Ok(t) => sink.debug("mcp token", &t),
        Err(e) => {
            sink.error("mcp token error", &e);
            let tool = ToolAuthError::from_error(e, "reconnect at https://example.com/connect");
            sink.error("ToolAuthError", &tool);
            sink.display("ToolAuthError structured", &tool.structured());
            sink.debug("ToolAuthError result", &tool.into_call_tool_result());
        }
    }

    let dir = private_dir();
    let store = RmcpStore::new(
        FileStore::open(dir.path().join("private/tokens.json")).unwrap(),
        CLIENT_ID,
    )
    .issuer("https://auth.example.com");
    sink.debug("RmcpStore", &store);
    let mut response = OAuthTokenResponse::new(
        oauth2::AccessToken::new(AT.into()),
        oauth2::basic::BasicTokenType::Bearer,
        VendorExtraTokenFields::default(),
    );
    response.set_refresh_token(Some(oauth2::RefreshToken::new(RT.into())));
    let other = StoredCredentials::new("other-client".into(), Some(response), vec![], None);
    sink.debug("StoredCredentials refused", &other.client_id);
    match store.save(other).await {
        Ok(()) => sink.push("RmcpStore refusal", "accepted".into()),
        Err(e) => sink.error("RmcpStore refusal", &e),
    }
}

async fn cli(sink: &Sink) {
    let dir = private_dir();
    let store = dir.path().join("tokens").join("demo.json");
    let fs = FileStore::open(&store).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let set = TokenSet::new(
        AccessToken::new(AT),
        Some(RefreshToken::new(RT)),
        now - time::Duration::hours(2),
        now - time::Duration::hours(1),
    );
    fs.save(None, &set).await.unwrap();
    let token_endpoint = refusing_token_endpoint(&format!("{RT} / {CS}")).await;
    let spec = format!("file:{}", store.display());
    let bin = env!("CARGO_BIN_EXE_keepfresh");
    let runs: Vec<Vec<String>> = vec![
        vec![
            "status".into(),
            "--name".into(),
            "demo".into(),
            "--store".into(),
            spec.clone(),
        ],
        vec![
            "status".into(),
            "--name".into(),
            "demo".into(),
            "--store".into(),
            spec.clone(),
            "--json".into(),
        ],
        vec![
            "refresh".into(),
            "--name".into(),
            "demo".into(),
            "--token-url".into(),
            format!("{}/token", token_endpoint.uri()),
            "--client-id".into(),
            CLIENT_ID.into(),
            "--store".into(),
            spec.clone(),
        ],
        vec![
            "status".into(),
            "--name".into(),
            "demo".into(),
            "--store".into(),
            format!("redis://:{RP}@127.0.0.1:1/0#demo"),
        ],
    ];
    for args in runs {
        let out = Command::new(bin)
            .args(&args)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("HOME", dir.path())
            .env("KEEPFRESH_CLIENT_SECRET", CS)
            .output()
            .expect("runs keepfresh");
        let origin = format!("keepfresh {}", args[0]);
        sink.push(&origin, String::from_utf8_lossy(&out.stdout).into_owned());
        sink.push(&origin, String::from_utf8_lossy(&out.stderr).into_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_from_any_error_path() {
    let sink = Sink::default();
    let writer = LogWriter(sink.clone());
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber in this test binary");

    refresher_and_engine(&sink).await;
    stores(&sink).await;
    discovery(&sink);
    middleware(&sink).await;
    login(&sink).await;
    mcp(&sink).await;
    cli(&sink).await;

    // The sweep saw what it claims to have seen: every part produced output to check.
    let origins = sink.origins();
    for expected in [
        "log",
        "engine event",
        "engine error",
        "error_description echoing every secret",
        "wrong key",
        "RedisStore::open",
        "AS metadata",
        "PR metadata",
        "middleware error",
        "tower error",
        "malformed .env",
        "keepfresh refresh",
        "keepfresh status",
        "login denied",
        "login forged state",
        "login not a URL",
        "login code refused",
        "login tokens",
        "mcp transport error",
        "mcp token error",
        "ToolAuthError",
        "RmcpStore refusal",
    ] {
        assert!(
            origins.iter().any(|o| o == expected),
            "nothing captured from {expected}; captured: {origins:?}"
        );
    }
    sink.assert_clean();
}

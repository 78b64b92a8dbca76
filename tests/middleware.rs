//! The `middleware` feature: `AuthMiddleware` on a reqwest-middleware client against a local
//! API (wiremock), and `AuthService` over a `tower::service_fn` API, each with a real
//! `Credential` (a counting in-test refresher) and with an `ApiKey`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::counting::{credential, Counting};
use keepfresh::middleware::{
    AuthLayer, AuthMiddleware, BoxError, NoReplay, StepUpRequired, Unauthorized,
};
use keepfresh::oauth::BearerChallenge;
use keepfresh::{
    AccessToken, ApiKey, AuthHeader, AuthSource, Credential, KeyHeader, Rejection, TokenSet,
};
use tower::{service_fn, Layer, Service, ServiceExt};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const METADATA: &str = "https://api.example.com/.well-known/oauth-protected-resource";

/// The counting refresher as these tests use it: scope `read write`, each refresh taking 20 ms,
/// as over the network.
fn counting() -> Counting {
    Counting::new("read write", Duration::from_millis(20))
}

/// The resource server's rules, shared by the wiremock API and the `service_fn` API.
#[derive(Clone)]
struct Api(Arc<Mutex<ApiState>>);

struct ApiState {
    /// The `Authorization` / `X-Api-Key` value accepted; `None`: every request is refused.
    accepted: Option<String>,
    /// The challenge sent with a 401.
    challenge: String,
    /// The header values received, in order.
    seen: Vec<Option<String>>,
    /// How long a 401 takes to arrive.
    reject_delay: Duration,
}

impl Api {
    fn accepting(value: Option<&str>) -> Self {
        Api(Arc::new(Mutex::new(ApiState {
            accepted: value.map(str::to_owned),
            challenge: format!(r#"Bearer error="invalid_token", resource_metadata="{METADATA}""#),
            seen: Vec::new(),
            reject_delay: Duration::ZERO,
        })))
    }

    /// 401s arrive after `delay`: long enough for concurrent requests to all send the old
    /// token before the first rejection comes back, however the test threads are scheduled.
    fn rejecting_after(self, delay: Duration) -> Self {
        self.0.lock().unwrap().reject_delay = delay;
        self
    }

    fn reject_delay(&self) -> Duration {
        self.0.lock().unwrap().reject_delay
    }

    fn with_challenge(self, challenge: &str) -> Self {
        self.0.lock().unwrap().challenge = challenge.to_owned();
        self
    }

    fn hits(&self) -> usize {
        self.0.lock().unwrap().seen.len()
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.0.lock().unwrap().seen.clone()
    }

    /// Status and `WWW-Authenticate` for a request to `path` carrying `credential`.
    fn answer(&self, path: &str, credential: Option<&str>) -> (u16, Option<String>) {
        let mut s = self.0.lock().unwrap();
        s.seen.push(credential.map(str::to_owned));
        if credential.is_none() || credential != s.accepted.as_deref() {
            return (401, Some(s.challenge.clone()));
        }
        if path == "/admin" {
            return (
                403,
                Some(format!(
                    r#"Bearer error="insufficient_scope", scope="read admin", resource_metadata="{METADATA}""#
                )),
            );
        }
        (200, None)
    }
}

/// Every request that sent the old token was sent once more (with the new one), every other
/// request once; and the old token was sent by more than one request, so the single refresh
/// really served concurrent rejections.
fn assert_each_rejected_request_retried_once(api: &Api, requests: usize) {
    let seen = api.seen();
    let old = seen
        .iter()
        .filter(|v| v.as_deref() == Some("Bearer access-0"))
        .count();
    assert!(
        old > 1,
        "only {old} request(s) sent the old token: {seen:?}"
    );
    assert_eq!(seen.len(), requests + old, "{seen:?}");
}

fn credential_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .or_else(|| headers.get("x-api-key"))
        .map(|v| v.to_str().unwrap().to_owned())
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let (status, challenge) = self.answer(
            request.url.path(),
            credential_of(&request.headers).as_deref(),
        );
        let mut response = ResponseTemplate::new(status).set_body_string(format!("{status}"));
        if let Some(challenge) = challenge {
            response = response.insert_header("www-authenticate", challenge.as_str());
        }
        if status == 401 {
            response = response.set_delay(self.reject_delay());
        }
        response
    }
}

async fn server(api: &Api) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(api.clone())
        .mount(&server)
        .await;
    server
}

fn client(source: Arc<dyn AuthSource>) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(AuthMiddleware::new(source))
        .build()
}

fn middleware_error<T: std::error::Error + Send + Sync + 'static>(
    error: &reqwest_middleware::Error,
) -> &T {
    match error {
        reqwest_middleware::Error::Middleware(e) => e
            .downcast_ref::<T>()
            .unwrap_or_else(|| panic!("another middleware error: {e}")),
        reqwest_middleware::Error::Reqwest(e) => panic!("a reqwest error: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// reqwest-middleware
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reqwest_attaches_the_credentials_header() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-0"));
    let server = server(&api).await;
    let client = client(Arc::new(credential(&refresher).await));

    let response = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(api.seen(), [Some("Bearer access-0".to_owned())]);
    assert_eq!(refresher.calls(), 0);
}

#[tokio::test]
async fn reqwest_attaches_an_api_keys_header() {
    let api = Api::accepting(Some("sk-123"));
    let server = server(&api).await;
    let key = ApiKey::new("sk-123")
        .unwrap()
        .with_header(KeyHeader::named("x-api-key").unwrap());
    let client = client(Arc::new(key));

    let response = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(api.seen(), [Some("sk-123".to_owned())]);
}

#[tokio::test]
async fn reqwest_401_invalid_token_refreshes_once_and_retries_once() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1"));
    let server = server(&api).await;
    let client = client(Arc::new(credential(&refresher).await));

    let response = client
        .post(format!("{}/items", server.uri()))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(refresher.calls(), 1);
    assert_eq!(
        api.seen(),
        [
            Some("Bearer access-0".to_owned()),
            Some("Bearer access-1".to_owned())
        ]
    );
}

#[tokio::test]
async fn reqwest_401_with_a_bare_challenge_is_retried_too() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1")).with_challenge(r#"Bearer realm="api""#);
    let server = server(&api).await;
    let client = client(Arc::new(credential(&refresher).await));

    let response = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!((refresher.calls(), api.hits()), (1, 2));
}

#[tokio::test]
async fn reqwest_401_with_another_error_code_is_returned_without_a_refresh() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1"))
        .with_challenge(r#"Bearer error="invalid_request", error_description="bad""#);
    let server = server(&api).await;
    let credential = credential(&refresher).await;
    let client = client(Arc::new(credential.clone()));

    let response = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.hits(), 1);
    assert_eq!(credential.token().await.unwrap().secret(), "access-0");
    assert_eq!(refresher.calls(), 0);
}

#[tokio::test]
async fn reqwest_401_after_the_retry_is_returned_without_a_loop() {
    let refresher = counting();
    let api = Api::accepting(None);
    let server = server(&api).await;
    let client = client(Arc::new(credential(&refresher).await));

    let response = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.hits(), 2, "one send and one retry");
    assert_eq!(refresher.calls(), 1);
    let challenge = response
        .extensions()
        .get::<BearerChallenge>()
        .expect("the challenge in the extensions");
    assert_eq!(challenge.resource_metadata.as_deref(), Some(METADATA));
    assert_eq!(challenge.error.as_deref(), Some("invalid_token"));
}

#[tokio::test]
async fn reqwest_401_for_a_streaming_body_invalidates_without_a_retry() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1"));
    let server = server(&api).await;
    let credential = credential(&refresher).await;
    let client = client(Arc::new(credential.clone()));

    let response = client
        .post(format!("{}/upload", server.uri()))
        .body(reqwest::Body::wrap("streamed".to_owned()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.hits(), 1, "not retried");
    // The rejected token was invalidated: the next token is a new one, from one refresh.
    assert_eq!(credential.token().await.unwrap().secret(), "access-1");
    assert_eq!(refresher.calls(), 1);
    let response = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn reqwest_401_with_an_api_key_is_not_retried() {
    let api = Api::accepting(Some("Bearer right-key"));
    let server = server(&api).await;
    let client = client(Arc::new(ApiKey::new("wrong-key").unwrap()));

    let response = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.seen(), [Some("Bearer wrong-key".to_owned())]);
}

#[tokio::test]
async fn reqwest_403_insufficient_scope_is_a_step_up_without_a_refresh() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-0"));
    let server = server(&api).await;
    let client = client(Arc::new(credential(&refresher).await));

    let error = client
        .get(format!("{}/admin", server.uri()))
        .send()
        .await
        .unwrap_err();
    let step_up = middleware_error::<StepUpRequired>(&error);
    // `read` held by the token, `read admin` asked for by the challenge.
    assert_eq!(step_up.scopes(), ["read", "admin"]);
    assert_eq!(step_up.resource_metadata(), Some(METADATA));
    assert_eq!((api.hits(), refresher.calls()), (1, 0));
    assert!(error.to_string().contains("read admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_concurrent_401s_for_one_token_refresh_once() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1")).rejecting_after(Duration::from_millis(300));
    let server = server(&api).await;
    let client = client(Arc::new(credential(&refresher).await));

    let url = format!("{}/me", server.uri());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(refresher.calls(), 1);
    assert_each_rejected_request_retried_once(&api, 50);
}

#[tokio::test]
async fn reqwest_failed_retry_header_is_unauthorized_with_the_resource_metadata() {
    let refresher = counting();
    refresher.revoke();
    let api = Api::accepting(Some("Bearer access-1"));
    let server = server(&api).await;
    let client = client(Arc::new(credential(&refresher).await));

    let error = client
        .get(format!("{}/me", server.uri()))
        .send()
        .await
        .unwrap_err();
    let unauthorized = middleware_error::<Unauthorized>(&error);
    assert!(unauthorized.error().is_reauth_required());
    assert_eq!(unauthorized.resource_metadata(), Some(METADATA));
    assert_eq!(api.hits(), 1);
}

#[tokio::test]
async fn reqwest_no_header_no_request() {
    let api = Api::accepting(None);
    let server = server(&api).await;
    let never = Credential::builder(counting()).build().await.unwrap();
    let client = client(Arc::new(never));

    let error = client.get(server.uri()).send().await.unwrap_err();
    assert!(middleware_error::<keepfresh::Error>(&error).is_not_authorized());
    assert_eq!(api.hits(), 0);
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-0"));
    let server = server(&api).await;
    let credential = Arc::new(credential(&refresher).await);
    let middleware = AuthMiddleware::new(credential.clone());
    let layer = AuthLayer::new(credential.clone());
    let client = client(credential);

    let error = client
        .get(format!("{}/admin", server.uri()))
        .send()
        .await
        .unwrap_err();
    let shown = format!("{middleware:?} {layer:?} {error} {error:?}");
    assert!(!shown.contains("access-0"), "{shown}");
    assert!(!shown.contains("refresh-0"), "{shown}");

    // The header the API got was marked sensitive: its Debug form hides the value.
    let service = service_fn(|request: http::Request<()>| async move {
        let value = request.headers()["authorization"].clone();
        assert!(value.is_sensitive());
        assert_eq!(format!("{value:?}"), "Sensitive");
        Ok::<_, BoxError>(http::Response::new(()))
    });
    let key = Arc::new(ApiKey::new("sk-123").unwrap());
    AuthLayer::new(key)
        .layer(service)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// tower
// ---------------------------------------------------------------------------------------------

/// The API as a tower service: answers by [`Api::answer`], counts in `api`.
fn tower_api<B: Send + 'static>(
    api: &Api,
) -> impl Service<
    http::Request<B>,
    Response = http::Response<String>,
    Error = BoxError,
    Future = impl Send + use<B>,
>
       + Clone
       + Send
       + 'static
       + use<B> {
    let api = api.clone();
    service_fn(move |request: http::Request<B>| {
        let api = api.clone();
        async move {
            let (status, challenge) = api.answer(
                request.uri().path(),
                credential_of(request.headers()).as_deref(),
            );
            if status == 401 {
                tokio::time::sleep(api.reject_delay()).await;
            }
            let mut response = http::Response::builder().status(status);
            if let Some(challenge) = challenge {
                response = response.header("www-authenticate", challenge);
            }
            Ok::<_, BoxError>(response.body(status.to_string())?)
        }
    })
}

fn get(path: &str) -> http::Request<String> {
    http::Request::get(path).body(String::new()).unwrap()
}

#[tokio::test]
async fn tower_attaches_the_header() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-0"));
    let service = AuthLayer::new(Arc::new(credential(&refresher).await)).layer(tower_api(&api));

    let response = service.oneshot(get("/me")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(api.seen(), [Some("Bearer access-0".to_owned())]);
}

#[tokio::test]
async fn tower_401_invalid_token_refreshes_once_and_retries_once() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1"));
    let service = AuthLayer::new(Arc::new(credential(&refresher).await)).layer(tower_api(&api));

    let request = http::Request::post("/items")
        .header("content-type", "text/plain")
        .body("payload".to_owned())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(refresher.calls(), 1);
    assert_eq!(
        api.seen(),
        [
            Some("Bearer access-0".to_owned()),
            Some("Bearer access-1".to_owned())
        ]
    );
}

#[tokio::test]
async fn tower_401_after_the_retry_is_returned_without_a_loop() {
    let refresher = counting();
    let api = Api::accepting(None);
    let service = AuthLayer::new(Arc::new(credential(&refresher).await)).layer(tower_api(&api));

    let response = service.oneshot(get("/me")).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!((api.hits(), refresher.calls()), (2, 1));
    let challenge = response.extensions().get::<BearerChallenge>().unwrap();
    assert_eq!(challenge.resource_metadata.as_deref(), Some(METADATA));
}

#[tokio::test]
async fn tower_401_without_replay_invalidates_without_a_retry() {
    /// A body that cannot be cloned.
    struct Streaming;

    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1"));
    let credential = credential(&refresher).await;
    let mut service = AuthLayer::new(Arc::new(credential.clone()))
        .replay(NoReplay)
        .layer(tower_api::<Streaming>(&api));

    let response = service
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(Streaming))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.hits(), 1, "not retried");
    assert_eq!(credential.token().await.unwrap().secret(), "access-1");
    assert_eq!(refresher.calls(), 1);
    let response = service
        .oneshot(http::Request::new(Streaming))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn tower_401_with_an_api_key_is_not_retried() {
    let api = Api::accepting(Some("Bearer right-key"));
    let service =
        AuthLayer::new(Arc::new(ApiKey::new("wrong-key").unwrap())).layer(tower_api(&api));

    let response = service.oneshot(get("/me")).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(api.hits(), 1);
}

#[tokio::test]
async fn tower_403_insufficient_scope_is_a_step_up_without_a_refresh() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-0"));
    let service = AuthLayer::new(Arc::new(credential(&refresher).await)).layer(tower_api(&api));

    let error = service.oneshot(get("/admin")).await.unwrap_err();
    let step_up = error.downcast_ref::<StepUpRequired>().expect("a step-up");
    assert_eq!(step_up.scopes(), ["read", "admin"]);
    assert_eq!(step_up.resource_metadata(), Some(METADATA));
    assert_eq!((api.hits(), refresher.calls()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_concurrent_401s_for_one_token_refresh_once() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1")).rejecting_after(Duration::from_millis(300));
    let service = AuthLayer::new(Arc::new(credential(&refresher).await)).layer(tower_api(&api));

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot(get("/me")).await.unwrap().status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(refresher.calls(), 1);
    assert_each_rejected_request_retried_once(&api, 50);
}

#[tokio::test]
async fn tower_failed_retry_header_is_unauthorized() {
    let refresher = counting();
    refresher.revoke();
    let api = Api::accepting(Some("Bearer access-1"));
    let service = AuthLayer::new(Arc::new(credential(&refresher).await)).layer(tower_api(&api));

    let error = service.oneshot(get("/me")).await.unwrap_err();
    let unauthorized = error.downcast_ref::<Unauthorized>().expect("unauthorized");
    assert!(unauthorized.error().is_reauth_required());
    assert_eq!(unauthorized.resource_metadata(), Some(METADATA));
    assert_eq!(api.hits(), 1);
}

/// A source of its own: API keys an operator rotates; a rejected key moves on to the next one.
#[derive(Debug)]
struct RotatingKeys {
    keys: Vec<ApiKey>,
    current: Mutex<usize>,
}

#[async_trait]
impl AuthSource for RotatingKeys {
    async fn auth_header(&self) -> Result<AuthHeader, keepfresh::Error> {
        let key = self.keys[*self.current.lock().unwrap()].clone();
        key.auth_header().await
    }

    fn rejected(&self, header: &AuthHeader) -> Rejection {
        let mut current = self.current.lock().unwrap();
        if header.fingerprint() != self.keys[*current].fingerprint() {
            return Rejection::Superseded;
        }
        if *current + 1 == self.keys.len() {
            return Rejection::Permanent;
        }
        *current += 1;
        Rejection::Refreshing
    }
}

#[tokio::test]
async fn tower_a_custom_source_gets_its_new_header_attached() {
    let api = Api::accepting(Some("Bearer key-2"));
    let source = RotatingKeys {
        keys: vec![ApiKey::new("key-1").unwrap(), ApiKey::new("key-2").unwrap()],
        current: Mutex::new(0),
    };
    let service = AuthLayer::new(Arc::new(source)).layer(tower_api(&api));

    let response = service.clone().oneshot(get("/me")).await.unwrap();
    assert_eq!(response.status(), 200);
    let response = service.oneshot(get("/me")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        api.seen(),
        [
            Some("Bearer key-1".to_owned()),
            Some("Bearer key-2".to_owned()),
            Some("Bearer key-2".to_owned())
        ]
    );
}

#[tokio::test]
async fn tower_a_new_token_from_set_tokens_is_attached() {
    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-0"));
    let credential = credential(&refresher).await;
    let service = AuthLayer::new(Arc::new(credential.clone())).layer(tower_api(&api));

    assert_eq!(
        service.clone().oneshot(get("/me")).await.unwrap().status(),
        200
    );
    // A login installs another token: the value built for the old one is not reused.
    let now = time::OffsetDateTime::now_utc();
    credential
        .set_tokens(TokenSet::new(
            AccessToken::new("login-1"),
            None,
            now,
            now + time::Duration::hours(1),
        ))
        .await
        .unwrap();
    api.0.lock().unwrap().accepted = Some("Bearer login-1".to_owned());
    assert_eq!(service.oneshot(get("/me")).await.unwrap().status(), 200);
    assert_eq!(
        api.seen(),
        [
            Some("Bearer access-0".to_owned()),
            Some("Bearer login-1".to_owned())
        ]
    );
}

/// With `tracing`, the middleware's events carry the token's fingerprint, never the token.
#[cfg(feature = "tracing")]
#[tokio::test(flavor = "current_thread")]
async fn tracing_events_carry_fingerprints_only() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let refresher = counting();
    let api = Api::accepting(Some("Bearer access-1"));
    let credential = credential(&refresher).await;
    let rejected = credential.token().await.unwrap().fingerprint();
    let service = AuthLayer::new(Arc::new(credential)).layer(tower_api(&api));
    assert_eq!(
        service.clone().oneshot(get("/me")).await.unwrap().status(),
        200
    );
    service.oneshot(get("/admin")).await.unwrap_err();

    let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains("401, token reported as rejected"), "{out}");
    assert!(out.contains("step-up required"), "{out}");
    assert!(
        out.contains(&rejected.to_string()),
        "no fingerprint:\n{out}"
    );
    assert!(
        !out.contains("access-"),
        "a token reached the tracing output:\n{out}"
    );
}

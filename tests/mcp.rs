//! The `rmcp` feature: `CredentialHttpClient` over a scripted inner client (rmcp's
//! `StreamableHttpClient` trait, answering as an MCP server would: 401, 403, OK), with a real
//! `Credential` refreshed by a counting refresher; `RmcpStore` over a real `FileStore`, two
//! adapters on one file standing for two processes.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::counting::{credential, Counting};
use futures::StreamExt;
use keepfresh::mcp::{CredentialHttpClient, RmcpStore, TransportError};
use keepfresh::store::{FileStore, SaveOutcome, TokenStore};
use keepfresh::{AccessToken, Credential, TokenSet};
use rmcp::model::{ClientJsonRpcMessage, ClientNotification, InitializedNotification};
use rmcp::transport::auth::{
    AuthError, CredentialStore, OAuthTokenResponse, StoredCredentials, VendorExtraTokenFields,
};
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, InsufficientScopeError, StreamableHttpClient, StreamableHttpError,
    StreamableHttpPostResponse,
};

// ---------------------------------------------------------------------------------------------
// CredentialHttpClient
// ---------------------------------------------------------------------------------------------

/// The counting refresher as these tests use it: scope `read`, answering at once.
fn counting() -> Counting {
    Counting::new("read", Duration::ZERO)
}

/// What the scripted MCP server answers.
#[derive(Clone)]
enum Answer {
    /// 200 for this token, 401 with `challenge` for any other.
    Accept { token: String, challenge: String },
    /// 403 `insufficient_scope` asking for `scope`, whatever the token.
    Forbid { scope: String },
    /// An rmcp error of another kind.
    SessionExpired,
    /// The HTTP client itself fails.
    ClientFails,
}

/// The inner client: answers as `answer` says and records the token of every send. The first
/// sends of a round of concurrent requests wait at `barrier` before answering, so that all of
/// them went out with the token they were given before any 401 comes back.
#[derive(Clone)]
struct Scripted {
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
    barrier: Option<Arc<tokio::sync::Barrier>>,
}

impl Scripted {
    fn new(answer: Answer) -> Self {
        Scripted {
            answer: Arc::new(Mutex::new(answer)),
            seen: Arc::default(),
            barrier: None,
        }
    }

    fn accepting(token: &str) -> Self {
        Self::new(Answer::Accept {
            token: token.into(),
            challenge: r#"Bearer error="invalid_token", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource""#.into(),
        })
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }

    async fn answer(
        &self,
        token: Option<String>,
    ) -> Result<(), StreamableHttpError<std::io::Error>> {
        let answer = self.answer.lock().unwrap().clone();
        self.seen.lock().unwrap().push(token.clone());
        match answer {
            Answer::Accept {
                token: ok,
                challenge,
            } => {
                if token.as_deref() == Some(ok.as_str()) {
                    return Ok(());
                }
                if let Some(barrier) = &self.barrier {
                    barrier.wait().await;
                }
                Err(StreamableHttpError::AuthRequired(AuthRequiredError::new(
                    challenge,
                )))
            }
            Answer::Forbid { scope } => Err(StreamableHttpError::InsufficientScope(
                InsufficientScopeError::new(
                    format!(r#"Bearer error="insufficient_scope", scope="{scope}""#),
                    Some(scope),
                ),
            )),
            Answer::SessionExpired => Err(StreamableHttpError::SessionExpired),
            Answer::ClientFails => Err(StreamableHttpError::Client(std::io::Error::other(
                "connection refused",
            ))),
        }
    }
}

impl StreamableHttpClient for Scripted {
    type Error = std::io::Error;

    async fn post_message(
        &self,
        _uri: Arc<str>,
        _message: ClientJsonRpcMessage,
        _session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        _custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.answer(auth_header).await?;
        Ok(StreamableHttpPostResponse::Accepted)
    }

    async fn delete_session(
        &self,
        _uri: Arc<str>,
        _session_id: Arc<str>,
        auth_header: Option<String>,
        _custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.answer(auth_header).await
    }

    async fn get_stream(
        &self,
        _uri: Arc<str>,
        _session_id: Option<Arc<str>>,
        _last_event_id: Option<String>,
        auth_header: Option<String>,
        _custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        self.answer(auth_header).await?;
        Ok(futures::stream::empty().boxed())
    }
}

fn message() -> ClientJsonRpcMessage {
    ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
        InitializedNotification::default(),
    ))
}

type Outcome =
    Result<StreamableHttpPostResponse, StreamableHttpError<TransportError<std::io::Error>>>;

async fn post(client: &CredentialHttpClient<Scripted>, rmcp_auth: Option<&str>) -> Outcome {
    client
        .post_message(
            "http://127.0.0.1:1/mcp".into(),
            message(),
            None,
            rmcp_auth.map(str::to_owned),
            HashMap::new(),
        )
        .await
}

fn tokens(seen: &[Option<String>]) -> Vec<&str> {
    seen.iter()
        .map(|t| t.as_deref().unwrap_or("<none>"))
        .collect()
}

#[tokio::test]
async fn every_request_carries_the_credentials_token_not_rmcps() {
    let refresher = counting();
    let server = Scripted::accepting("access-0");
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);

    assert!(post(&client, Some("a-token-from-rmcps-config"))
        .await
        .is_ok());
    client
        .delete_session(
            "http://127.0.0.1:1/mcp".into(),
            "s".into(),
            None,
            HashMap::new(),
        )
        .await
        .unwrap();
    let _stream = client
        .get_stream(
            "http://127.0.0.1:1/mcp".into(),
            None,
            None,
            None,
            HashMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(tokens(&server.seen()), ["access-0", "access-0", "access-0"]);
    assert_eq!(refresher.calls(), 0);
}

#[tokio::test]
async fn a_401_invalidates_the_token_sent_refreshes_once_and_retries_once() {
    let refresher = counting();
    let server = Scripted::accepting("access-1");
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);

    assert!(post(&client, None).await.is_ok());
    assert_eq!(tokens(&server.seen()), ["access-0", "access-1"]);
    assert_eq!(refresher.calls(), 1);
    // The new token is kept: the next request sends it at once.
    assert!(post(&client, None).await.is_ok());
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_401s_for_one_token_make_one_refresh() {
    const N: usize = 100;
    let refresher = counting();
    let mut server = Scripted::accepting("access-1");
    server.barrier = Some(Arc::new(tokio::sync::Barrier::new(N)));
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);

    let calls = (0..N).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { post(&client, None).await.map(|_| ()) })
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap().unwrap();
    }
    assert_eq!(refresher.calls(), 1);
    let seen = server.seen();
    assert_eq!(
        seen.iter()
            .filter(|t| t.as_deref() == Some("access-0"))
            .count(),
        N
    );
    assert_eq!(
        seen.iter()
            .filter(|t| t.as_deref() == Some("access-1"))
            .count(),
        N
    );
}

#[tokio::test]
async fn a_second_401_goes_to_rmcp_without_another_refresh() {
    let refresher = counting();
    let server = Scripted::accepting("never-issued");
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);

    let error = post(&client, None).await.unwrap_err();
    let StreamableHttpError::AuthRequired(challenge) = error else {
        panic!("expected AuthRequired, got {error:?}");
    };
    assert!(challenge
        .www_authenticate_header
        .contains("resource_metadata"));
    assert_eq!(tokens(&server.seen()), ["access-0", "access-1"]);
    assert_eq!(refresher.calls(), 1);
}

#[tokio::test]
async fn a_401_for_another_reason_is_not_the_tokens_fault() {
    let refresher = counting();
    let server = Scripted::new(Answer::Accept {
        token: "never-issued".into(),
        challenge: r#"Bearer error="invalid_request""#.into(),
    });
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);

    assert!(matches!(
        post(&client, None).await,
        Err(StreamableHttpError::AuthRequired(_))
    ));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(refresher.calls(), 0);
}

#[tokio::test]
async fn a_403_insufficient_scope_asks_for_the_union_of_scopes_without_refreshing() {
    let refresher = counting();
    let server = Scripted::new(Answer::Forbid {
        scope: "admin read".into(),
    });
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);

    let error = post(&client, None).await.unwrap_err();
    let StreamableHttpError::InsufficientScope(step_up) = error else {
        panic!("expected InsufficientScope, got {error:?}");
    };
    // The token held `read`; the server wants `admin read`: held first, each once.
    assert_eq!(step_up.get_required_scope(), Some("read admin"));
    assert_eq!(server.seen().len(), 1);
    assert_eq!(refresher.calls(), 0);
}

#[tokio::test]
async fn a_revoked_grant_ends_in_unauthorized_with_the_reason() {
    let refresher = counting();
    refresher.revoke();
    let server = Scripted::accepting("never-issued");
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);

    let error = post(&client, None).await.unwrap_err();
    let StreamableHttpError::Client(TransportError::Unauthorized(unauthorized)) = &error else {
        panic!("expected Unauthorized, got {error:?}");
    };
    assert!(unauthorized.error().is_reauth_required());
    assert_eq!(
        unauthorized.resource_metadata(),
        Some("https://mcp.example.com/.well-known/oauth-protected-resource")
    );
    assert_eq!(server.seen().len(), 1);
    assert!(!format!("{error:?} {error}").contains("access-0"));
}

#[tokio::test]
async fn a_credential_without_a_token_sends_nothing() {
    let refresher = counting();
    let server = Scripted::accepting("access-0");
    let empty = Credential::builder(refresher.clone())
        .build()
        .await
        .unwrap();
    let client = CredentialHttpClient::with_client(server.clone(), empty);

    let error = post(&client, None).await.unwrap_err();
    let StreamableHttpError::Client(e) = &error else {
        panic!("expected a client error, got {error:?}");
    };
    assert!(e.credential_error().unwrap().is_not_authorized());
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn the_inner_clients_errors_keep_their_kind() {
    let refresher = counting();
    let server = Scripted::new(Answer::SessionExpired);
    let client = CredentialHttpClient::with_client(server.clone(), credential(&refresher).await);
    assert!(matches!(
        post(&client, None).await,
        Err(StreamableHttpError::SessionExpired)
    ));

    *server.answer.lock().unwrap() = Answer::ClientFails;
    let error = post(&client, None).await.unwrap_err();
    let StreamableHttpError::Client(TransportError::Http(io)) = &error else {
        panic!("expected the inner client's error, got {error:?}");
    };
    assert_eq!(io.to_string(), "connection refused");
}

#[tokio::test]
async fn debug_shows_no_token() {
    let refresher = counting();
    let client = CredentialHttpClient::with_client(
        Scripted::accepting("access-0"),
        credential(&refresher).await,
    );
    assert!(!format!("{client:?}").contains("access-0"));
}

// ---------------------------------------------------------------------------------------------
// RmcpStore
// ---------------------------------------------------------------------------------------------

fn rmcp_credentials(client: &str, access: &str, refresh: &str) -> StoredCredentials {
    let mut response = OAuthTokenResponse::new(
        oauth2::AccessToken::new(access.into()),
        oauth2::basic::BasicTokenType::Bearer,
        VendorExtraTokenFields::default(),
    );
    response.set_refresh_token(Some(oauth2::RefreshToken::new(refresh.into())));
    response.set_expires_in(Some(&Duration::from_secs(600)));
    response.set_scopes(Some(vec![
        oauth2::Scope::new("read".into()),
        oauth2::Scope::new("write".into()),
    ]));
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    StoredCredentials::new(client.into(), Some(response), vec![], Some(now))
}

fn secrets(credentials: &StoredCredentials) -> (String, Option<String>) {
    use oauth2::TokenResponse as _;
    let response = credentials.token_response.as_ref().unwrap();
    (
        response.access_token().secret().clone(),
        response.refresh_token().map(|t| t.secret().clone()),
    )
}

fn file_store(dir: &tempfile::TempDir) -> FileStore {
    // A directory of its own: the store makes it private (the temporary one is not).
    FileStore::open(dir.path().join("private/tokens.json")).unwrap()
}

fn adapter(dir: &tempfile::TempDir) -> RmcpStore<FileStore> {
    RmcpStore::new(file_store(dir), "cid").issuer("https://auth.example.com")
}

#[tokio::test]
async fn rmcp_credentials_round_trip_through_a_keepfresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = adapter(&dir);
    store
        .save(rmcp_credentials("cid", "at-1", "rt-1"))
        .await
        .unwrap();

    // keepfresh sees the set, with its scope and lifetime.
    let stored = file_store(&dir).load().await.unwrap().unwrap();
    assert_eq!(stored.tokens.access_token().expose_secret(), "at-1");
    assert_eq!(stored.tokens.scope(), Some("read write"));
    assert_eq!(stored.tokens.lifetime(), time::Duration::seconds(600));

    // And rmcp gets it back, from another adapter (another process).
    let loaded = adapter(&dir).load().await.unwrap().unwrap();
    assert_eq!(secrets(&loaded), ("at-1".into(), Some("rt-1".into())));
    assert_eq!(loaded.client_id, "cid");
    assert_eq!(loaded.issuer.as_deref(), Some("https://auth.example.com"));
    assert_eq!(loaded.granted_scopes, ["read", "write"]);
    assert!(!format!("{store:?} {loaded:?}").contains("at-1"));
}

#[tokio::test]
async fn credentials_of_another_client_or_issuer_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = adapter(&dir);
    let other_client = store.save(rmcp_credentials("other", "at", "rt")).await;
    assert!(matches!(
        other_client,
        Err(AuthError::CredentialStoreError(_))
    ));
    let mut other_issuer = rmcp_credentials("cid", "at", "rt");
    other_issuer.issuer = Some("https://evil.example".into());
    assert!(matches!(
        store.save(other_issuer).await,
        Err(AuthError::CredentialStoreError(_))
    ));
    assert!(file_store(&dir).load().await.unwrap().is_none());
}

#[tokio::test]
async fn a_refresh_never_overwrites_newer_tokens_but_a_login_does() {
    let dir = tempfile::tempdir().unwrap();
    let ours = adapter(&dir);
    ours.save(rmcp_credentials("cid", "at-1", "rt-1"))
        .await
        .unwrap();
    assert!(ours.load().await.unwrap().is_some());

    // Another process refreshes and saves rt-2 meanwhile.
    let theirs = adapter(&dir);
    theirs.load().await.unwrap();
    theirs
        .save(rmcp_credentials("cid", "at-2", "rt-2"))
        .await
        .unwrap();

    // Our refresh (under the guard) from rt-1 must not replace rt-2.
    let guard = ours
        .acquire_refresh_guard()
        .await
        .unwrap()
        .expect("a file lease");
    let refused = ours.save(rmcp_credentials("cid", "at-3", "rt-3")).await;
    assert!(matches!(refused, Err(AuthError::CredentialStoreError(_))));
    drop(guard);
    let kept = file_store(&dir).load().await.unwrap().unwrap();
    assert_eq!(kept.tokens.refresh_token().unwrap().expose_secret(), "rt-2");

    // A new authorization (outside the guard) wins over whatever is there.
    theirs
        .save(rmcp_credentials("cid", "at-9", "rt-9"))
        .await
        .unwrap();
    ours.save(rmcp_credentials("cid", "at-login", "rt-login"))
        .await
        .unwrap();
    let now = file_store(&dir).load().await.unwrap().unwrap();
    assert_eq!(
        now.tokens.refresh_token().unwrap().expose_secret(),
        "rt-login"
    );
}

#[tokio::test]
async fn a_rejected_refresh_token_clears_only_if_still_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = adapter(&dir);
    store
        .save(rmcp_credentials("cid", "at-1", "rt-1"))
        .await
        .unwrap();
    let old = rmcp_credentials("cid", "at-0", "rt-0");
    store.on_refresh_token_rejected(&old).await.unwrap();
    assert!(file_store(&dir).load().await.unwrap().is_some());

    let current = store.load().await.unwrap().unwrap();
    store.on_refresh_token_rejected(&current).await.unwrap();
    assert!(file_store(&dir).load().await.unwrap().is_none());
}

#[tokio::test]
async fn clear_keeps_tokens_written_since_the_last_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = adapter(&dir);
    store
        .save(rmcp_credentials("cid", "at-1", "rt-1"))
        .await
        .unwrap();
    let raw = file_store(&dir);
    let version = raw.load().await.unwrap().unwrap().version;
    let now = time::OffsetDateTime::now_utc();
    let newer = TokenSet::new(
        AccessToken::new("at-2"),
        None,
        now,
        now + time::Duration::hours(1),
    );
    assert!(matches!(
        raw.save(Some(version), &newer).await.unwrap(),
        SaveOutcome::Saved(_)
    ));
    store.clear().await.unwrap();
    assert!(raw.load().await.unwrap().is_some());
    store.load().await.unwrap();
    store.clear().await.unwrap();
    assert!(raw.load().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_guard_is_the_stores_lease_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let first = adapter(&dir);
    let second = adapter(&dir).lease_wait(Duration::from_millis(50));
    let guard = first
        .acquire_refresh_guard()
        .await
        .unwrap()
        .expect("a file lease");

    // While the first holds it, the second cannot get it and says so.
    let held = second.acquire_refresh_guard().await;
    assert!(
        matches!(held, Err(AuthError::CredentialStoreError(_))),
        "{:?}",
        held.is_ok()
    );

    // A waiter gets it once the first lets go.
    let third = adapter(&dir);
    let waiting =
        tokio::spawn(async move { third.acquire_refresh_guard().await.map(|g| g.is_some()) });
    drop(guard);
    assert!(waiting.await.unwrap().unwrap());
}

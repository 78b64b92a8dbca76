//! `keepfresh::oauth::login` end to end against the mock provider over real HTTP, with a
//! scripted browser (an HTTP client that follows the authorization redirect to the loopback
//! listener): consent, denial, a wrong `iss`, a forged `state`, a server without PKCE, a timeout,
//! a pasted redirect, and the tokens then kept fresh by the engine.
#![cfg(feature = "load")]

use std::time::Duration;

use keepfresh::oauth::discovery::{Discovery, DiscoveryErrorKind};
use keepfresh::oauth::login::{Login, LoginError, LoginOptions};
use keepfresh::oauth::HttpRefresher;
use keepfresh::Credential;
use keepfresh_sim::http::{AuthorizeMode, HttpProvider, ServeConfig};

async fn provider(mode: AuthorizeMode) -> HttpProvider {
    HttpProvider::start(ServeConfig::new("strict").authorize(mode), 0)
        .await
        .unwrap()
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// What the user's browser does: open the URL, follow the 302 to the redirect URI, optionally
/// tampering with the query first. Returns the redirect URL.
async fn browse(url: &str, tamper: impl Fn(String) -> String) -> String {
    let answer = browser().get(url).send().await.unwrap();
    assert_eq!(
        answer.status(),
        302,
        "the authorization endpoint should redirect"
    );
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let location = tamper(location);
    let page = browser().get(&location).send().await.unwrap();
    assert_eq!(page.status(), 200);
    location
}

async fn start(server: &HttpProvider) -> Login {
    let metadata = Discovery::builder()
        .build()
        .unwrap()
        .discover_authorization_server(&server.uri())
        .await
        .unwrap();
    Login::start(
        &metadata,
        LoginOptions::new("cli-client")
            .scope("read")
            .timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_gives_tokens_the_engine_keeps_fresh() {
    let server = provider(AuthorizeMode::Consent).await;
    let login = start(&server).await;
    let url = login.authorization_url().to_string();
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("scope=read"), "{url}");
    let (tokens, _) = tokio::join!(login.finish(), browse(&url, |l| l));
    let tokens = tokens.unwrap();
    assert_eq!(tokens.scope(), Some("read"));
    assert_eq!(
        server.check_resource(tokens.access_token().expose_secret()),
        200
    );
    // The engine takes over: a refresh with the login's refresh token works.
    let refresher = HttpRefresher::builder(server.token_url(), "cli-client")
        .build()
        .unwrap();
    let credential = Credential::builder(refresher)
        .tokens(tokens.clone())
        .build()
        .await
        .unwrap();
    let t = credential.token().await.unwrap();
    credential.invalidate(&t);
    let fresh = credential.token().await.unwrap();
    assert_ne!(fresh.secret(), t.secret());
    assert_eq!(server.check_resource(fresh.secret()), 200);
    assert!(server.summary().revoked_families.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_consent_is_a_clear_error() {
    let server = provider(AuthorizeMode::Deny).await;
    let login = start(&server).await;
    let url = login.authorization_url().to_string();
    let (r, _) = tokio::join!(login.finish(), browse(&url, |l| l));
    match r.unwrap_err() {
        LoginError::Denied { error, .. } => assert_eq!(error, "access_denied"),
        other => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_issuer_aborts_the_login() {
    let server = provider(AuthorizeMode::WrongIssuer).await;
    let login = start(&server).await;
    let url = login.authorization_url().to_string();
    let (r, _) = tokio::join!(login.finish(), browse(&url, |l| l));
    let e = r.unwrap_err();
    assert!(matches!(e, LoginError::IssuerMismatch { .. }), "{e}");
    assert_eq!(server.summary().logins, 0, "no code was redeemed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_state_aborts_the_login() {
    let server = provider(AuthorizeMode::Consent).await;
    let login = start(&server).await;
    let url = login.authorization_url().to_string();
    let forge = |l: String| {
        let mut u = url::Url::parse(&l).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                if k == "state" {
                    (k.into_owned(), "forged".to_owned())
                } else {
                    (k.into_owned(), v.into_owned())
                }
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        u.to_string()
    };
    let (r, _) = tokio::join!(login.finish(), browse(&url, forge));
    assert!(matches!(r.unwrap_err(), LoginError::StateMismatch));
    assert_eq!(server.summary().logins, 0, "no code was redeemed");
}

#[tokio::test]
async fn a_server_without_pkce_is_refused() {
    let server = provider(AuthorizeMode::NoPkce).await;
    let e = Discovery::builder()
        .build()
        .unwrap()
        .discover_authorization_server(&server.uri())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), DiscoveryErrorKind::PkceUnsupported, "{e}");
}

#[tokio::test]
async fn no_browser_answer_times_out_clearly() {
    let server = provider(AuthorizeMode::Consent).await;
    let metadata = Discovery::builder()
        .build()
        .unwrap()
        .discover_authorization_server(&server.uri())
        .await
        .unwrap();
    let login = Login::start(
        &metadata,
        LoginOptions::new("c").timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let e = login.finish().await.unwrap_err();
    assert!(matches!(e, LoginError::Timeout(_)), "{e}");
    assert!(e.to_string().contains("--no-browser"), "{e}");
}

/// Over SSH: the browser runs elsewhere, the user pastes the redirect URL.
#[tokio::test]
async fn a_pasted_redirect_finishes_the_login_and_another_logins_redirect_is_refused() {
    let server = provider(AuthorizeMode::Consent).await;
    let login = start(&server).await;
    let answer = browser()
        .get(login.authorization_url().as_str())
        .send()
        .await
        .unwrap();
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let tokens = login.finish_with_redirect(&location).await.unwrap();
    assert_eq!(
        server.check_resource(tokens.access_token().expose_secret()),
        200
    );
    // Another login (another port, another state) refuses this redirect.
    let again = start(&server).await;
    let e = again.finish_with_redirect(&location).await.unwrap_err();
    assert!(matches!(e, LoginError::BadRedirect(_)), "{e}");
}

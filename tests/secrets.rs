//! Scenario 33: across success, failure, re-authorization, malformed answers and failed saves,
//! no access token, refresh token or client secret appears in `Debug`/`Display` output, error
//! messages or events. Every seeded secret contains `SEKRIT`; the captured text is scanned for it.
#![cfg(feature = "tokio")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use keepfresh::oauth::{parse_token_response, HttpAnswer};
use keepfresh::runtime::ManualClock;
use keepfresh::store::MemoryStore;
use keepfresh::{
    refresher_fn, AccessToken, ClientSecret, Credential, RefreshError, RefreshRequest,
    RefreshToken, TokenResponse,
};

const SEED: &str = "SEKRIT";

/// Text captured from everything a host might log.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl Capture {
    fn debug(&self, v: &dyn std::fmt::Debug) {
        self.0.lock().unwrap().push(format!("{v:?} {v:#?}"));
    }
    fn display(&self, v: &dyn std::fmt::Display) {
        self.0.lock().unwrap().push(v.to_string());
    }
    fn attach(&self, c: &Credential) {
        let me = self.clone();
        c.on_event(move |e| me.debug(e));
    }
    fn assert_clean(&self) {
        let all = self.0.lock().unwrap();
        assert!(all.len() > 20, "too little captured to mean anything");
        for text in all.iter() {
            assert!(!text.contains(SEED), "a secret leaked: {text}");
        }
    }
}

fn answer(n: u32) -> TokenResponse {
    TokenResponse::new(AccessToken::new(format!("at-{SEED}-{n}")))
        .with_refresh_token(RefreshToken::new(format!("rt-{SEED}-{n}")))
        .with_expires_in(3600)
}

#[tokio::test]
async fn s33_secrets_never_print() {
    let cap = Capture::default();
    let clock = ManualClock::new();
    let client_secret = ClientSecret::new(format!("cs-{SEED}"));
    cap.debug(&client_secret);
    cap.display(&client_secret);

    // Call 1 rotates; 2 fails transiently; 3 answers without an access token but with a
    // rotated refresh token; 4 rotates (while saves fail); 5 is invalid_grant.
    let calls = Arc::new(AtomicU32::new(0));
    let seen = cap.clone();
    let counter = calls.clone();
    let refresher =
        refresher_fn(move |req: RefreshRequest| {
            seen.debug(&req);
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                match n {
                    2 => Err(RefreshError::transient("HTTP 503")
                        .with_retry_after(Duration::from_secs(1))),
                    3 => Ok(TokenResponse::new(AccessToken::new(""))
                        .with_refresh_token(RefreshToken::new(format!("rt-{SEED}-3")))),
                    5 => Err(RefreshError::invalid_grant("HTTP 400: invalid_grant")),
                    n => Ok(answer(n)),
                }
            }
        });
    let store = FlakyStore::new(MemoryStore::with_clock(Arc::new(clock.clone())));
    let initial = tokens(
        &clock,
        &format!("at-{SEED}-0"),
        Some(&format!("rt-{SEED}-0")),
        7200,
        3600,
    );
    cap.debug(&initial);
    let c = Credential::builder(refresher)
        .runtime(runtime(&clock))
        .policy(policy())
        .store(store.clone())
        .tokens(initial)
        .name("github")
        .build()
        .await
        .unwrap();
    cap.attach(&c);
    let mut events = c.subscribe();
    cap.debug(&c);

    // 1: success.
    let t = c.token().await.unwrap();
    assert!(
        t.secret().contains(SEED),
        "the seeded token is what is served"
    );
    cap.debug(&t);
    cap.debug(&t.scope());
    cap.debug(&t.fingerprint());
    cap.display(&t.fingerprint());
    cap.debug(&c.status());
    cap.debug(&c);
    cap.debug(&store.inner);
    cap.debug(&store.inner.snapshot());

    // 2: transient failure (forced by a 401).
    c.invalidate(&t);
    let e = c.token().await.unwrap_err();
    cap.debug(&e);
    cap.display(&e);

    // 3: malformed answer, rotated refresh token kept.
    clock.advance(Duration::from_secs(2));
    let e = c.token().await.unwrap_err();
    cap.debug(&e);
    cap.display(&e);

    // 4: success while saves fail.
    store.set_failing(true);
    clock.advance(Duration::from_secs(4));
    let t = c.token().await.unwrap();
    cap.debug(&t);
    cap.debug(&c.status());
    wait_for(&mut events, "persist failed", |e| {
        matches!(e, keepfresh::Event::PersistFailed { .. })
    })
    .await;
    store.set_failing(false);

    // 5: invalid_grant → re-authorization.
    c.invalidate(&t);
    let e = c.token().await.unwrap_err();
    assert!(e.is_reauth_required(), "{e}");
    cap.debug(&e);
    cap.display(&e);
    cap.debug(&c);
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // The token-endpoint parser's outputs and errors.
    let body = format!(
        r#"{{"access_token":"at-{SEED}-p","refresh_token":"rt-{SEED}-p","expires_in":60}}"#
    );
    let parsed = parse_token_response(HttpAnswer {
        status: 200,
        content_type: Some("application/json"),
        retry_after: None,
        body: body.as_bytes(),
    })
    .unwrap();
    cap.debug(&parsed);
    // A 2xx answer with only a (rotated) refresh token is kept, not an error.
    let rt_only = format!(r#"{{"refresh_token":"rt-{SEED}-q"}}"#);
    let kept = parse_token_response(HttpAnswer {
        status: 200,
        content_type: None,
        retry_after: None,
        body: rt_only.as_bytes(),
    })
    .unwrap();
    assert!(kept.access_token().is_empty());
    cap.debug(&kept);
    for (status, body) in [
        (200, format!("<html>at-{SEED}-h</html>")),
        (
            400,
            format!(r#"{{"error":"invalid_grant","refresh_token":"rt-{SEED}-r"}}"#),
        ),
        (503, format!("access_token=at-{SEED}-f")),
    ] {
        let e = parse_token_response(HttpAnswer {
            status,
            content_type: None,
            retry_after: None,
            body: body.as_bytes(),
        })
        .unwrap_err();
        cap.debug(&e);
        cap.display(&e);
    }
    cap.assert_clean();
}

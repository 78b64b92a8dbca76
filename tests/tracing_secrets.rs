//! With the `tracing` feature, every span and event the engine emits carries fingerprints only:
//! the seeded access and refresh tokens never appear in the formatted output.
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use keepfresh::{
    refresher_fn, AccessToken, Credential, RefreshError, RefreshPolicy, RefreshToken, TokenResponse,
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tracing_output_carries_fingerprints_only() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    let refresher = refresher_fn(move |_req| {
        let n = {
            let mut n = c.lock().expect("calls");
            *n += 1;
            *n
        };
        async move {
            if n == 2 {
                return Err(RefreshError::transient("HTTP 503"));
            }
            Ok(
                TokenResponse::new(AccessToken::new(format!("SEEDED-ACCESS-{n}")))
                    .with_refresh_token(RefreshToken::new(format!("SEEDED-REFRESH-{n}")))
                    .with_expires_in(3600),
            )
        }
    });
    let credential = Credential::builder(refresher)
        .policy(
            RefreshPolicy::builder()
                .jitter_seed(1)
                .build()
                .expect("policy"),
        )
        .refresh_token(RefreshToken::new("SEEDED-REFRESH-0"))
        .name("github")
        .build()
        .await
        .expect("builds");
    let token = credential.token().await.expect("first refresh");
    assert!(credential.invalidate(&token));
    // The second refresh fails (503): the failure is traced too.
    let err = credential
        .token()
        .await
        .expect_err("503 while the token is rejected");
    assert!(err.refresh_error().is_some());

    let out = String::from_utf8(captured.0.lock().expect("capture").clone()).expect("utf-8");
    assert!(
        out.contains("keepfresh token refreshed"),
        "no refresh event traced:\n{out}"
    );
    assert!(
        out.contains("keepfresh refresh failed"),
        "no failure event traced:\n{out}"
    );
    assert!(
        out.contains(&token.fingerprint().to_string()),
        "no fingerprint:\n{out}"
    );
    assert!(
        !out.contains("SEEDED"),
        "a secret reached the tracing output:\n{out}"
    );
}

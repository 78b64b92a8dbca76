//! keepfresh's metrics in Prometheus form: a pool of per-user credentials against an
//! in-process token endpoint that fails now and then, and the scrape text it produces.
//!
//! Run: `cargo run --example metrics_prometheus --features metrics`
//!
//! A real service serves `handle.render()` on its `/metrics` route (or enables the exporter's
//! `http-listener` feature); here it is printed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use keepfresh::metrics::SubjectLabel;
use keepfresh::pool::{CredentialKey, CredentialPool};
use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, RefreshToken, TokenResponse};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.01, 1.0, 60.0, 3600.0])?
        .install_recorder()?;

    // The token endpoint: every third call fails with a 503.
    let calls = Arc::new(AtomicU32::new(0));
    let endpoint = {
        let calls = calls.clone();
        move || {
            let calls = calls.clone();
            refresher_fn(move |_| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    if n.is_multiple_of(3) {
                        return Err(RefreshError::transient("HTTP 503"));
                    }
                    Ok(TokenResponse::new(AccessToken::new(format!("access-{n}")))
                        .with_refresh_token(RefreshToken::new(format!("refresh-{n}")))
                        .with_expires_in(3600))
                }
            })
        }
    };

    // Subjects as given, to make the output readable; the default hashes them.
    let pool = CredentialPool::builder()
        .metrics_subject(Some(SubjectLabel::AsGiven))
        .build();
    for user in ["alice", "bob", "carol"] {
        let key = CredentialKey::new("https://auth.example", "mcp-server")
            .resource("https://mcp.example/")
            .scopes(["files:read"])
            .subject(user);
        let endpoint = endpoint.clone();
        let credential = pool
            .get_or_build(&key, || async move {
                // Only a refresh token (from the user's consent): the first call waits for a
                // refresh.
                Ok(Credential::builder(endpoint())
                    .refresh_token(RefreshToken::new(format!("refresh-of-{user}"))))
            })
            .await?;
        match credential.token().await {
            Ok(token) => {
                println!("{user}: got {}", token.fingerprint());
                // The resource server rejects it: one more refresh.
                credential.invalidate(&token);
                let _ = credential.token().await;
            }
            Err(e) => println!("{user}: {e}"),
        }
    }

    println!("\n# scrape text\n{}", handle.render());
    pool.shutdown().await?;
    Ok(())
}

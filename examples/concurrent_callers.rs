//! 1,000 concurrent callers, one refresh: a credential with a rotating refresher, a store, an
//! event log, a 401 from a resource server and a provider outage inside the refresh window.
//!
//! Run: `cargo run --example concurrent_callers`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keepfresh::store::MemoryStore;
use keepfresh::{
    refresher_fn, AccessToken, Credential, Event, RefreshError, RefreshPolicy, RefreshToken,
    TokenResponse,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls = Arc::new(AtomicU32::new(0));
    let outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c, o) = (calls.clone(), outage.clone());
    let refresher = refresher_fn(move |req| {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        let down = o.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if down {
                return Err(
                    RefreshError::transient("HTTP 503").with_retry_after(Duration::from_secs(1))
                );
            }
            let used = req.refresh_token.map(|r| r.fingerprint().to_string());
            println!("  provider: refresh #{n} redeeming refresh token {used:?}");
            Ok(TokenResponse::new(AccessToken::new(format!("access-{n}")))
                .with_refresh_token(RefreshToken::new(format!("refresh-{n}")))
                .with_expires_in(2))
        }
    });

    let store = MemoryStore::new();
    let policy = RefreshPolicy::builder()
        .skew_allowance(Duration::from_millis(200))
        .floor_margin(Duration::from_millis(200))
        .build()?;
    let credential = Credential::builder(refresher)
        .policy(policy)
        .store(store.clone())
        .refresh_token(RefreshToken::new("refresh-0"))
        .build()
        .await?;
    credential.on_event(|e| {
        if let Event::Transition(t) = e {
            println!("  phase: {} -> {}", t.from, t.to);
        }
    });

    println!("1,000 callers on an expired token:");
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let c = credential.clone();
            tokio::spawn(async move { c.token().await.map(|t| t.generation()) })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    println!("  refresher calls: {}", calls.load(Ordering::SeqCst));

    println!("a resource server rejects the token (401), reported 100 times:");
    let token = credential.token().await?;
    let started = (0..100).filter(|_| credential.invalidate(&token)).count();
    let fresh = credential.token().await?;
    println!(
        "  refreshes started: {started}; new generation {}",
        fresh.generation()
    );

    println!("the provider goes down inside the refresh window:");
    outage.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let served = credential.token().await?;
    println!(
        "  still served generation {} (valid until {}), phase: {}",
        served.generation(),
        served.expires_at(),
        credential.phase()
    );

    let stored = store.snapshot().expect("saved");
    println!(
        "store holds refresh token {} (credential holds {:?})",
        stored
            .tokens
            .refresh_token()
            .map(|r| r.fingerprint().to_string())
            .unwrap_or_default(),
        credential.status().refresh_token.map(|f| f.to_string())
    );
    Ok(())
}

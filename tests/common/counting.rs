//! A refresher that counts its calls and issues `access-1`, `access-2`, …, and a credential
//! holding a fresh `access-0` it refreshes: the fixture of the integration tests (`middleware`,
//! `mcp`) that look at what a client does around a credential rather than at the engine.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::{
    AccessToken, Credential, RefreshError, RefreshRequest, RefreshToken, Refresher, TokenResponse,
    TokenSet,
};

/// Issues `access-n` / `refresh-n` (n = its call count) with `scope` and a one-hour lifetime,
/// each refresh taking `delay`; `invalid_grant` once revoked (the call still counts).
#[derive(Clone)]
pub struct Counting {
    pub calls: Arc<AtomicU32>,
    pub revoked: Arc<AtomicBool>,
    scope: &'static str,
    delay: Duration,
}

impl Counting {
    /// Granting `scope`; a refresh takes `delay` (zero: answers at once).
    pub fn new(scope: &'static str, delay: Duration) -> Self {
        Counting {
            calls: Arc::default(),
            revoked: Arc::default(),
            scope,
            delay,
        }
    }

    /// Refreshes so far.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every refresh from now on fails with `invalid_grant`.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl Refresher for Counting {
    async fn refresh(&self, _request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.delay.is_zero() {
            // A refresh takes time, as over the network.
            tokio::time::sleep(self.delay).await;
        }
        if self.revoked.load(Ordering::SeqCst) {
            return Err(RefreshError::invalid_grant("grant revoked"));
        }
        Ok(TokenResponse::new(AccessToken::new(format!("access-{n}")))
            .with_refresh_token(RefreshToken::new(format!("refresh-{n}")))
            .with_scope(self.scope)
            .with_expires_in(3600))
    }
}

/// A credential holding a fresh `access-0` (scope `read`, one hour), refreshed by `refresher`.
pub async fn credential(refresher: &Counting) -> Credential {
    let now = time::OffsetDateTime::now_utc();
    let tokens = TokenSet::new(
        AccessToken::new("access-0"),
        Some(RefreshToken::new("refresh-0")),
        now,
        now + time::Duration::hours(1),
    )
    .with_scope("read");
    Credential::builder(refresher.clone())
        .tokens(tokens)
        .build()
        .await
        .expect("credential")
}

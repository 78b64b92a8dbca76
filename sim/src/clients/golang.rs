//! `golang.org/x/oauth2`'s `ReuseTokenSource`, as a behaviour model.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: one mutex, held across the network call;
//! - **refresh-ahead**: the token counts as expired 10 s before its expiry (`expiryDelta`), no
//!   jitter, and only when a caller asks;
//! - **while refreshing**: every caller blocks on the mutex, even though the token it would
//!   get is still valid for up to 10 s;
//! - **refresh fails, token still valid**: the caller gets the error (the token is treated as
//!   expired 10 s early); the next caller retries at once, with no backoff;
//! - **persistence**: none: the rotated refresh token lives only in memory, so a restarted
//!   process replays the login's refresh token;
//! - **after a 401**: nothing (the token source is not told);
//! - **across processes**: nothing.
//!
//! Consequences the comparison shows: callers blocked at every refresh although the token was
//! valid; errors during an outage although the token was valid; a re-authorization (and, on a
//! rotating provider with reuse detection, a revoked grant) after every restart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::lock::Mutex;
use keepfresh::TokenSet;

use super::{client_error, health, is_invalid_grant, redeem, Generations, Held, ReauthFlag};
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// `expiryDelta`: the token counts as expired this long before its expiry.
pub const EXPIRY_DELTA: Duration = Duration::from_secs(10);

/// The `golang-oauth2` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct GolangOauth2;

struct Client {
    ctx: ProcessContext,
    /// The cached token, behind the mutex every `Token()` call takes.
    token: Mutex<Option<Held>>,
    generations: Generations,
    reauth: ReauthFlag,
}

#[async_trait]
impl ClientStrategy for GolangOauth2 {
    fn name(&self) -> &'static str {
        "golang-oauth2"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        // No persistence: every process instance starts from the login's tokens.
        let held = ctx
            .initial
            .as_ref()
            .map(|s| Held::from_set(s, &ctx.runtime, 0));
        Ok(Arc::new(Client {
            ctx,
            token: Mutex::new(held),
            generations: Generations::default(),
            reauth: ReauthFlag::default(),
        }))
    }
}

#[async_trait]
impl ProcessClient for Client {
    async fn token(&self) -> Result<ServedToken, ClientError> {
        let rt = &self.ctx.runtime;
        let mut cached = self.token.lock().await;
        if let Some(h) = cached.as_ref()
            && !h.within(rt.now(), EXPIRY_DELTA)
        {
            return Ok(h.served(rt));
        }
        // Still holding the mutex: every other caller waits for this call.
        let refresh = cached.as_ref().and_then(|h| h.refresh.clone());
        match redeem(&self.ctx, refresh, self.generations.next()).await {
            Ok(h) => {
                let served = h.served(rt);
                *cached = Some(h);
                Ok(served)
            }
            Err(e) if is_invalid_grant(&e) => Err(self.reauth.report(&self.ctx, "invalid_grant")),
            Err(e) => Err(client_error(&e)),
        }
    }

    fn unauthorized(&self, _token: &ServedToken) -> bool {
        false
    }

    async fn login(&self, tokens: TokenSet) -> Result<(), ClientError> {
        // Waits for the mutex: a refresh in flight finishes first, then the login replaces it.
        let held = Held::from_set(&tokens, &self.ctx.runtime, self.generations.next());
        *self.token.lock().await = Some(held);
        self.reauth.clear();
        Ok(())
    }

    async fn shutdown(&self) {}

    fn health(&self) -> Health {
        health(&self.reauth)
    }
}

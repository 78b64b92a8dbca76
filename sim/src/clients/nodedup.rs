//! The no-dedup baseline: the refresh logic most hand-written clients start with.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: none: every caller that sees a stale token refreshes;
//! - **refresh-ahead**: a fixed window of [`WINDOW`] before expiry, only when a caller asks;
//! - **while refreshing**: each caller refreshes;
//! - **refresh fails**: the caller gets the error; `invalid_grant` means a new login;
//! - **persistence**: the store is overwritten after each refresh (read once at start);
//! - **after a 401**: one refresh per 401;
//! - **across processes**: nothing.
//!
//! Consequences the comparison shows: duplicate refreshes ⇒ reuse detection ⇒ the whole grant
//! revoked on a strict rotating provider; errors during an outage although the token was
//! valid.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::TokenSet;

use super::{
    client_error, health, install_login, is_invalid_grant, load_or_login, overwrite, redeem,
    Forced, Generations, Held, ReauthFlag,
};
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// The refresh window W.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The `no-dedup` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDedup;

struct Client {
    ctx: ProcessContext,
    current: parking_lot::Mutex<Option<Held>>,
    forced: Forced,
    generations: Generations,
    reauth: ReauthFlag,
}

#[async_trait]
impl ClientStrategy for NoDedup {
    fn name(&self) -> &'static str {
        "no-dedup"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let set = load_or_login(&ctx).await;
        let held = set.as_ref().map(|s| Held::from_set(s, &ctx.runtime, 0));
        Ok(Arc::new(Client {
            ctx,
            current: parking_lot::Mutex::new(held),
            forced: Forced::default(),
            generations: Generations::default(),
            reauth: ReauthFlag::default(),
        }))
    }
}

#[async_trait]
impl ProcessClient for Client {
    async fn token(&self) -> Result<ServedToken, ClientError> {
        let rt = &self.ctx.runtime;
        let forced = self.forced.take();
        let seen = self.current.lock().clone();
        if let Some(h) = &seen
            && !forced
            && !h.within(rt.now(), WINDOW)
        {
            return Ok(h.served(rt));
        }
        let refresh = seen.and_then(|h| h.refresh);
        match redeem(&self.ctx, refresh, self.generations.next()).await {
            Ok(h) => {
                *self.current.lock() = Some(h.clone());
                overwrite(&self.ctx, &h.to_set(rt), true).await;
                Ok(h.served(rt))
            }
            Err(e) if is_invalid_grant(&e) => Err(self.reauth.report(&self.ctx, "invalid_grant")),
            Err(e) => Err(client_error(&e)),
        }
    }

    fn unauthorized(&self, _token: &ServedToken) -> bool {
        self.forced.push();
        true
    }

    async fn login(&self, tokens: TokenSet) -> Result<(), ClientError> {
        install_login(
            &self.ctx,
            &self.current,
            &self.generations,
            &self.reauth,
            &tokens,
            true,
        )
        .await;
        Ok(())
    }

    async fn shutdown(&self) {}

    fn health(&self) -> Health {
        health(&self.reauth)
    }
}

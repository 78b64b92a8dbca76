//! yup-oauth2, as a behaviour model.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: none: every caller that sees a stale token refreshes, with the same refresh
//!   token, concurrently;
//! - **refresh-ahead**: 60 s before expiry, no jitter, only when a caller asks;
//! - **while refreshing**: each caller does its own refresh;
//! - **refresh fails, token still valid**: the caller gets an error: the authenticator falls
//!   back to the full authorization flow (re-authorization);
//! - **persistence**: the storage is written after each refresh; a failed write loses the
//!   rotated refresh token (it survives only in memory, until the process stops);
//! - **after a 401**: the application forces a refresh (one per 401, no dedup);
//! - **across processes**: the token file is read once at start and overwritten in place, with
//!   no lock: each process keeps refreshing with the refresh token it read.
//!
//! Consequences the comparison shows: duplicate refreshes ⇒ reuse detection ⇒ the whole grant
//! revoked on a strict rotating provider (stampede, several processes); errors and
//! re-authorization during an outage although the token was valid; a lost rotation after a
//! failed save and a restart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::TokenSet;

use super::{
    health, install_login, load_or_login, overwrite, redeem, Forced, Generations, Held, ReauthFlag,
};
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// Refresh when less than this is left.
pub const MARGIN: Duration = Duration::from_secs(60);

/// The `yup-oauth2` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct YupOauth2;

struct Client {
    ctx: ProcessContext,
    current: parking_lot::Mutex<Option<Held>>,
    forced: Forced,
    generations: Generations,
    reauth: ReauthFlag,
}

#[async_trait]
impl ClientStrategy for YupOauth2 {
    fn name(&self) -> &'static str {
        "yup-oauth2"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        // The token file is read once, here.
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
            && !h.within(rt.now(), MARGIN)
        {
            return Ok(h.served(rt));
        }
        // No dedup: this caller refreshes with the refresh token it saw.
        let refresh = seen.and_then(|h| h.refresh);
        match redeem(&self.ctx, refresh, self.generations.next()).await {
            Ok(h) => {
                *self.current.lock() = Some(h.clone());
                overwrite(&self.ctx, &h.to_set(rt), true).await;
                Ok(h.served(rt))
            }
            Err(e) => Err(self
                .reauth
                .report(&self.ctx, &format!("auth flow fallback ({})", e.class()))),
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

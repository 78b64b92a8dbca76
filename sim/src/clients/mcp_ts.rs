//! The MCP TypeScript SDK's client-side OAuth, as a behaviour model.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: none;
//! - **refresh-ahead**: none: the stored access token is sent until the resource server
//!   answers 401 (expired tokens included);
//! - **after a 401**: one refresh, then the request is retried; concurrent 401s refresh
//!   concurrently with the same refresh token;
//! - **refresh fails**: a 5xx (any failure) falls through to interactive re-authorization;
//! - **persistence**: `saveTokens` is awaited after a refresh; its errors are swallowed (the
//!   behaviour before a 2026 fix), so nothing is logged when the write fails;
//! - **across processes**: nothing (tokens read from the store at start).
//!
//! Consequences the comparison shows: duplicate refreshes ⇒ reuse detection ⇒ the whole grant
//! revoked (every caller that holds the expired token gets a 401 and refreshes); expired
//! tokens sent to the resource server; re-authorization on any refresh failure.

use std::sync::Arc;

use async_trait::async_trait;
use keepfresh::TokenSet;

use super::{
    health, install_login, load_or_login, overwrite, redeem, Forced, Generations, Held, ReauthFlag,
};
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// The `mcp-typescript` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct McpTypescript;

struct Client {
    ctx: ProcessContext,
    current: parking_lot::Mutex<Option<Held>>,
    /// Refreshes owed to callers that got a 401.
    after_401: Forced,
    generations: Generations,
    reauth: ReauthFlag,
}

#[async_trait]
impl ClientStrategy for McpTypescript {
    fn name(&self) -> &'static str {
        "mcp-typescript"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let set = load_or_login(&ctx).await;
        let held = set.as_ref().map(|s| Held::from_set(s, &ctx.runtime, 0));
        Ok(Arc::new(Client {
            ctx,
            current: parking_lot::Mutex::new(held),
            after_401: Forced::default(),
            generations: Generations::default(),
            reauth: ReauthFlag::default(),
        }))
    }
}

#[async_trait]
impl ProcessClient for Client {
    async fn token(&self) -> Result<ServedToken, ClientError> {
        let rt = &self.ctx.runtime;
        let seen = self.current.lock().clone();
        if !self.after_401.take() {
            // No refresh-ahead: whatever is stored is sent, expired or not.
            return match seen {
                Some(h) => Ok(h.served(rt)),
                None => Err(self.reauth.report(&self.ctx, "no tokens")),
            };
        }
        let refresh = seen.and_then(|h| h.refresh);
        match redeem(&self.ctx, refresh, self.generations.next()).await {
            Ok(h) => {
                *self.current.lock() = Some(h.clone());
                // saveTokens is awaited; a failure is swallowed.
                overwrite(&self.ctx, &h.to_set(rt), false).await;
                Ok(h.served(rt))
            }
            Err(e) => Err(self.reauth.report(
                &self.ctx,
                &format!("interactive re-authorization ({})", e.class()),
            )),
        }
    }

    fn unauthorized(&self, _token: &ServedToken) -> bool {
        self.after_401.push();
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

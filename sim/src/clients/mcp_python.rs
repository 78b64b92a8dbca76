//! The MCP Python SDK's client-side OAuth (`OAuthClientProvider`), as a behaviour model.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: one lock per process, held across the *whole* request: from asking for the
//!   token until the caller's request is finished (long SSE streams included). The token a
//!   caller receives carries the lock guard; the world drops it when the request ends;
//! - **refresh-ahead**: none: the token is refreshed once it has expired;
//! - **while refreshing**: every other request stalls behind the lock (and behind every other
//!   caller's I/O);
//! - **refresh fails**: any non-200 answer clears the tokens: re-authorization is needed;
//! - **persistence**: `set_tokens` after a refresh (overwrite), read at start;
//! - **after a 401**: full re-authorization (tokens cleared);
//! - **across processes**: nothing.
//!
//! Consequences the comparison shows: every caller blocked behind every other caller's I/O
//! (long waits even without any refresh); tokens cleared and re-authorization after a single
//! transient failure.

use std::sync::Arc;

use async_trait::async_trait;
use futures::lock::{Mutex, OwnedMutexGuard};
use keepfresh::TokenSet;

use super::{
    health, install_login, load_or_login, overwrite, redeem, Generations, Held, ReauthFlag,
};
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// The `mcp-python` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct McpPython;

/// The request lock, carried by the served token until the caller's request ends.
type RequestGuard = parking_lot::Mutex<Option<OwnedMutexGuard<()>>>;

struct Client {
    ctx: ProcessContext,
    lock: Arc<Mutex<()>>,
    current: parking_lot::Mutex<Option<Held>>,
    generations: Generations,
    reauth: ReauthFlag,
}

impl Client {
    fn serve(&self, h: &Held, guard: OwnedMutexGuard<()>) -> ServedToken {
        let handle: RequestGuard = parking_lot::Mutex::new(Some(guard));
        h.served_with(&self.ctx.runtime, Some(Box::new(handle)))
    }
}

#[async_trait]
impl ClientStrategy for McpPython {
    fn name(&self) -> &'static str {
        "mcp-python"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let set = load_or_login(&ctx).await;
        let held = set.as_ref().map(|s| Held::from_set(s, &ctx.runtime, 0));
        Ok(Arc::new(Client {
            ctx,
            lock: Arc::new(Mutex::new(())),
            current: parking_lot::Mutex::new(held),
            generations: Generations::default(),
            reauth: ReauthFlag::default(),
        }))
    }
}

#[async_trait]
impl ProcessClient for Client {
    async fn token(&self) -> Result<ServedToken, ClientError> {
        let guard = self.lock.clone().lock_owned().await;
        let rt = &self.ctx.runtime;
        let Some(seen) = self.current.lock().clone() else {
            return Err(self.reauth.report(&self.ctx, "tokens cleared"));
        };
        if seen.remaining(rt.now()) > std::time::Duration::ZERO {
            return Ok(self.serve(&seen, guard));
        }
        match redeem(&self.ctx, seen.refresh.clone(), self.generations.next()).await {
            Ok(h) => {
                *self.current.lock() = Some(h.clone());
                overwrite(&self.ctx, &h.to_set(rt), true).await;
                Ok(self.serve(&h, guard))
            }
            Err(e) => {
                // Any non-200 clears the tokens.
                *self.current.lock() = None;
                Err(self.reauth.report(
                    &self.ctx,
                    &format!("tokens cleared after a failed refresh ({})", e.class()),
                ))
            }
        }
    }

    fn unauthorized(&self, token: &ServedToken) -> bool {
        // The request ends here: release the lock it held, then start the full
        // re-authorization (the tokens are cleared).
        if let Some(g) = token
            .handle
            .as_ref()
            .and_then(|h| h.downcast_ref::<RequestGuard>())
        {
            g.lock().take();
        }
        *self.current.lock() = None;
        self.reauth.report(&self.ctx, "401: full re-authorization");
        false
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

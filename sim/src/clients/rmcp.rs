//! rmcp 3.11 (the MCP Rust SDK), client side, as a behaviour model.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: a mutex around the whole authorization manager; a caller that saw a token
//!   needing refresh refreshes once after acquiring it, *without re-checking*: every caller
//!   that queued during a refresh refreshes again, serially;
//! - **refresh-ahead**: when less than 30 s or less than half the lifetime is left;
//! - **while refreshing**: every caller is serialised behind the manager mutex;
//! - **refresh fails, token still valid**: the caller gets the error; `invalid_grant` ⇒
//!   re-authorization;
//! - **persistence**: the store is written after each refresh; a failed write loses the
//!   rotated refresh token (it lives on only in memory, until the process stops);
//! - **after a 401**: one unconditional refresh, then the request is retried;
//! - **across processes**: the store's refresh guard (the store lease here) is taken around
//!   the refresh, but there is no generation check: after waiting for the guard, a process
//!   refreshes with the refresh token it holds in memory, which another process may already
//!   have rotated.
//!
//! Consequences the comparison shows: callers blocked at every refresh although the token was
//! valid, and needless serial refreshes; errors during an outage although the token was valid;
//! replays of rotated refresh tokens ⇒ revoked grants when several processes share a store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::store::LeaseOutcome;
use keepfresh::TokenSet;

use super::{
    client_error, health, is_invalid_grant, load_or_login, overwrite, redeem, sleep, Forced,
    Generations, Held, ReauthFlag,
};
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// Refresh when less than this is left (or less than half the lifetime).
pub const MARGIN: Duration = Duration::from_secs(30);
/// Time-to-live of the store guard.
pub const GUARD_TTL: Duration = Duration::from_secs(60);
/// How often a process waiting for the store guard tries again.
pub const GUARD_POLL: Duration = Duration::from_millis(250);

/// The `rmcp` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rmcp;

struct Client {
    ctx: ProcessContext,
    /// The authorization manager and its credentials, behind one mutex.
    manager: futures::lock::Mutex<Option<Held>>,
    /// What callers see before taking the manager mutex.
    snapshot: parking_lot::Mutex<Option<Held>>,
    forced: Forced,
    generations: Generations,
    reauth: ReauthFlag,
}

fn needs_refresh(h: &Held, now: keepfresh::runtime::MonoTime) -> bool {
    h.within(now, MARGIN) || h.remaining(now) < h.lifetime / 2
}

impl Client {
    /// Waits for the store's refresh guard; `None` when the store has none.
    async fn guard(&self) -> Option<keepfresh::store::Lease> {
        loop {
            match self.ctx.store.try_lease(GUARD_TTL).await {
                Ok(LeaseOutcome::Acquired(l)) => return Some(l),
                Ok(LeaseOutcome::Held) => sleep(&self.ctx.runtime, GUARD_POLL).await,
                Ok(LeaseOutcome::Unsupported) | Err(_) => return None,
            }
        }
    }
}

#[async_trait]
impl ClientStrategy for Rmcp {
    fn name(&self) -> &'static str {
        "rmcp"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let set = load_or_login(&ctx).await;
        let held = set.as_ref().map(|s| Held::from_set(s, &ctx.runtime, 0));
        Ok(Arc::new(Client {
            ctx,
            manager: futures::lock::Mutex::new(held.clone()),
            snapshot: parking_lot::Mutex::new(held),
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
        let decided = forced
            || self
                .snapshot
                .lock()
                .as_ref()
                .map_or(true, |h| needs_refresh(h, rt.now()));
        let mut manager = self.manager.lock().await;
        if !decided && let Some(h) = manager.as_ref() {
            return Ok(h.served(rt));
        }
        // No re-check: the decision made before the mutex stands.
        let lease = self.guard().await;
        let refresh = manager.as_ref().and_then(|h| h.refresh.clone());
        let result = redeem(&self.ctx, refresh, self.generations.next()).await;
        let out = match result {
            Ok(h) => {
                *manager = Some(h.clone());
                *self.snapshot.lock() = Some(h.clone());
                overwrite(&self.ctx, &h.to_set(rt), true).await;
                Ok(h.served(rt))
            }
            Err(e) if is_invalid_grant(&e) => Err(self.reauth.report(&self.ctx, "invalid_grant")),
            Err(e) => Err(client_error(&e)),
        };
        if let Some(l) = lease {
            let _ = self.ctx.store.release(l).await;
        }
        out
    }

    fn unauthorized(&self, _token: &ServedToken) -> bool {
        self.forced.push();
        true
    }

    async fn login(&self, tokens: TokenSet) -> Result<(), ClientError> {
        // The authorization manager's mutex: after any refresh in progress.
        let mut manager = self.manager.lock().await;
        let held = Held::from_set(&tokens, &self.ctx.runtime, self.generations.next());
        *manager = Some(held.clone());
        *self.snapshot.lock() = Some(held);
        self.reauth.clear();
        overwrite(&self.ctx, &tokens, true).await;
        Ok(())
    }

    async fn shutdown(&self) {}

    fn health(&self) -> Health {
        health(&self.reauth)
    }
}

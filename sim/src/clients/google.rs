//! google-auth (Python), user credentials on the synchronous path, as a behaviour model.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: none on the sync path: every caller that sees a stale token refreshes;
//! - **refresh-ahead**: the token counts as expired 3 min 45 s before its expiry;
//! - **while refreshing**: the calling request refreshes itself (the optional background
//!   refresh thread is off by default and not modelled);
//! - **refresh fails**: the refresh request is retried inside the call with exponential
//!   backoff (1 s, 2 s, …, ±10 % jitter) up to three attempts, then the caller gets the error,
//!   although the token may still be valid; a retried POST after a lost answer is a replay;
//! - **persistence**: none; **across processes**: nothing;
//! - **after a 401**: a refresh and a retry (up to two refreshes per request; the world's
//!   callers retry once).
//!
//! Consequences the comparison shows: duplicate refreshes under load (a grant revoked on a
//! strict rotating provider, harmless on Google's own non-rotating one); in-call retries that
//! replay a refresh token whose answer was lost; errors during an outage although the token
//! was valid.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::ErrorClass;
use keepfresh::TokenSet;

use super::{
    client_error, health, install_login, is_invalid_grant, redeem, sleep, Forced, Generations,
    Held, ReauthFlag,
};
use crate::rng::SimRng;
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// The token counts as expired this long before its expiry.
pub const REFRESH_THRESHOLD: Duration = Duration::from_secs(225);
/// Attempts per refresh.
pub const ATTEMPTS: u32 = 3;
/// First backoff delay.
pub const BACKOFF: Duration = Duration::from_secs(1);

/// The `google-auth` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoogleAuth;

struct Client {
    ctx: ProcessContext,
    current: parking_lot::Mutex<Option<Held>>,
    forced: Forced,
    rng: parking_lot::Mutex<SimRng>,
    generations: Generations,
    reauth: ReauthFlag,
}

#[async_trait]
impl ClientStrategy for GoogleAuth {
    fn name(&self) -> &'static str {
        "google-auth"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let held = ctx
            .initial
            .as_ref()
            .map(|s| Held::from_set(s, &ctx.runtime, 0));
        let rng = SimRng::new(ctx.seed);
        Ok(Arc::new(Client {
            ctx,
            current: parking_lot::Mutex::new(held),
            forced: Forced::default(),
            rng: parking_lot::Mutex::new(rng),
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
            && !h.within(rt.now(), REFRESH_THRESHOLD)
        {
            return Ok(h.served(rt));
        }
        let refresh = seen.and_then(|h| h.refresh);
        let mut delay = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match redeem(&self.ctx, refresh.clone(), self.generations.next()).await {
                Ok(h) => {
                    *self.current.lock() = Some(h.clone());
                    return Ok(h.served(rt));
                }
                Err(e) if is_invalid_grant(&e) => {
                    return Err(self.reauth.report(&self.ctx, "invalid_grant"))
                }
                Err(e) => {
                    let retryable =
                        matches!(e.class(), ErrorClass::Transient | ErrorClass::Ambiguous);
                    if !retryable || attempt == ATTEMPTS {
                        return Err(client_error(&e));
                    }
                    let jitter = 0.9 + 0.2 * self.rng.lock().unit();
                    sleep(rt, delay.mul_f64(jitter)).await;
                    delay *= 2;
                }
            }
        }
        Err(ClientError::Other("no attempt made".into()))
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
            false,
        )
        .await;
        Ok(())
    }

    async fn shutdown(&self) {}

    fn health(&self) -> Health {
        health(&self.reauth)
    }
}

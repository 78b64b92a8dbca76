//! aws-smithy's `LazyCache` (identity cache), as a behaviour model of an OAuth refresh.
//!
//! Facts modelled (see also `docs/client-models.md`):
//! - **dedup**: a `OnceCell`-style single load; errors are *not* shared, so each waiter, when
//!   its turn comes, loads again;
//! - **refresh-ahead**: a buffer of 5–10 s before expiry (jittered per load, from the seed);
//! - **while refreshing**: the cache is cleared on entering the buffer and every caller waits
//!   for the load, although the token it held was still valid;
//! - **refresh fails, token still valid**: the caller gets the error; every later caller loads
//!   again, with no backoff;
//! - **persistence**: none (the refresh token lives in the loader's memory);
//! - **after a 401**: nothing; **across processes**: nothing.
//!
//! Consequences the comparison shows: callers blocked at every refresh although the token was
//! valid; errors during an outage although the token was valid, one load per waiter; a
//! re-authorization after every restart on a rotating provider.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::TokenSet;

use super::{client_error, health, is_invalid_grant, redeem, Generations, Held, ReauthFlag};
use crate::rng::SimRng;
use crate::strategy::{
    ClientError, ClientStrategy, Health, ProcessClient, ProcessContext, ServedToken,
};

/// Shortest refresh-ahead buffer.
pub const BUFFER_MIN: Duration = Duration::from_secs(5);
/// Longest refresh-ahead buffer.
pub const BUFFER_MAX: Duration = Duration::from_secs(10);

/// The `aws-lazy-cache` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct AwsLazyCache;

struct Cached {
    held: Held,
    buffer: Duration,
}

struct Client {
    ctx: ProcessContext,
    /// The cell: `None` while empty (cleared on entering the buffer).
    cache: parking_lot::Mutex<Option<Cached>>,
    /// The one-load guard of the cell; an error releases it to the next waiter.
    load: futures::lock::Mutex<()>,
    /// The loader's refresh token.
    refresh: parking_lot::Mutex<Option<keepfresh::RefreshToken>>,
    rng: parking_lot::Mutex<SimRng>,
    generations: Generations,
    reauth: ReauthFlag,
}

impl Client {
    fn buffer(&self) -> Duration {
        let ms = self
            .rng
            .lock()
            .range(BUFFER_MIN.as_millis() as u64, BUFFER_MAX.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// The cached token if it is outside its buffer; clears the cell otherwise.
    fn cached(&self) -> Option<ServedToken> {
        let rt = &self.ctx.runtime;
        let mut cache = self.cache.lock();
        match cache.as_ref() {
            Some(c) if !c.held.within(rt.now(), c.buffer) => Some(c.held.served(rt)),
            Some(_) => {
                *cache = None;
                None
            }
            None => None,
        }
    }
}

#[async_trait]
impl ClientStrategy for AwsLazyCache {
    fn name(&self) -> &'static str {
        "aws-lazy-cache"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let mut rng = SimRng::new(ctx.seed);
        let held = ctx
            .initial
            .as_ref()
            .map(|s| Held::from_set(s, &ctx.runtime, 0));
        let refresh = held.as_ref().and_then(|h| h.refresh.clone());
        let buffer = Duration::from_millis(
            rng.range(BUFFER_MIN.as_millis() as u64, BUFFER_MAX.as_millis() as u64),
        );
        Ok(Arc::new(Client {
            ctx,
            cache: parking_lot::Mutex::new(held.map(|held| Cached { held, buffer })),
            load: futures::lock::Mutex::new(()),
            refresh: parking_lot::Mutex::new(refresh),
            rng: parking_lot::Mutex::new(rng),
            generations: Generations::default(),
            reauth: ReauthFlag::default(),
        }))
    }
}

#[async_trait]
impl ProcessClient for Client {
    async fn token(&self) -> Result<ServedToken, ClientError> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let _loading = self.load.lock().await;
        // The cell may have been filled while this caller waited.
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let refresh = self.refresh.lock().clone();
        match redeem(&self.ctx, refresh, self.generations.next()).await {
            Ok(held) => {
                *self.refresh.lock() = held.refresh.clone();
                let served = held.served(&self.ctx.runtime);
                let buffer = self.buffer();
                *self.cache.lock() = Some(Cached { held, buffer });
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
        // The cell is filled directly; a load in flight still overwrites it when it returns.
        let held = Held::from_set(&tokens, &self.ctx.runtime, self.generations.next());
        *self.refresh.lock() = held.refresh.clone();
        let buffer = self.buffer();
        *self.cache.lock() = Some(Cached { held, buffer });
        self.reauth.clear();
        Ok(())
    }

    async fn shutdown(&self) {}

    fn health(&self) -> Health {
        health(&self.reauth)
    }
}

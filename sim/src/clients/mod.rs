//! Behaviour models of other token clients, as [`ClientStrategy`]s, so that the same seeded
//! world can run a user's current client and keepfresh side by side (`keepfresh-sim compare`,
//! `--client NAME`).
//!
//! Each model reproduces what the library's source shows (versions of 2025–2026): in-process
//! deduplication, refresh-ahead window, what callers do while a refresh runs, what happens when
//! a refresh fails while the token is still valid, persistence, the reaction to a
//! resource-server 401, and behaviour across processes. These are models of *behaviour*; no
//! library code is copied. Each module documents the facts it encodes and the consequences the
//! comparison shows; `docs/client-models.md` describes every model for users.
//!
//! | name | module | reproduces |
//! |---|---|---|
//! | `keepfresh` | [`crate::strategy::Keepfresh`] | the real engine, unchanged |
//! | `golang-oauth2` | [`golang`] | mutex across the call, 10 s window, errors while valid, no persistence |
//! | `aws-lazy-cache` | [`aws`] | cache cleared in a 5–10 s jittered window, unshared errors, waiters retry in turn |
//! | `yup-oauth2` | [`yup`] | no dedup, 60 s window, auth-flow fallback, read-once/overwrite store |
//! | `rmcp` | [`rmcp`] | manager mutex, refresh without re-check, store guard without generation check |
//! | `mcp-typescript` | [`mcp_ts`] | no refresh-ahead, one refresh per 401, no dedup, 5xx ⇒ re-authorization |
//! | `mcp-python` | [`mcp_python`] | one lock across the whole request, refresh at expiry, non-200 clears tokens |
//! | `google-auth` | [`google`] | no dedup, 3 min 45 s window, in-call retries with backoff, no persistence |
//! | `no-dedup` | [`nodedup`] | the baseline: every caller that sees a stale token refreshes |
//!
//! # Shared modelling choices
//! - Every model reaches the token endpoint only through [`ProcessContext::refresher`] with a
//!   [`RefreshRequest::new`], keeps time only with [`ProcessContext::runtime`], persists only
//!   through [`ProcessContext::store`], and logs re-authorization and persistence through
//!   [`ProcessContext::log`], so the world's oracles see exactly what they see for keepfresh.
//! - Locks a library holds across the network call are [`futures::lock::Mutex`]es, which park
//!   the waiting callers on the simulator's executor: "every caller blocks on the mutex" is a
//!   real wait in simulated time, visible in the caller-wait figures.
//! - Each model bounds one token-endpoint call by an HTTP client timeout of
//!   [`HTTP_TIMEOUT`] (30 s; the libraries leave it to the HTTP client, and deployments set
//!   one). A call cut by the timeout is an ambiguous failure: the provider may have rotated.
//! - Expiry is tracked as a deadline on the process's monotonic clock, computed from
//!   `expires_in` when the answer arrives (or from the stored absolute expiry at start); a
//!   missing or non-positive `expires_in` counts as one hour. A refresh answer without a
//!   `refresh_token` keeps the previous one.
//! - Models without persistence start every process instance from the login tokens
//!   ([`ProcessContext::initial`]): that is what an application re-reading its configuration
//!   after a restart does. Models with persistence read the store once at start and fall back
//!   to the login tokens when it is empty; they write by overwriting whatever the store holds
//!   (no compare-and-swap, no lock), as a file rewritten in place does.
//! - "Re-authorization" (a library falling back to an interactive flow, or an `invalid_grant`
//!   the application can only answer with a new login) is reported once per process instance
//!   with [`LogLine::Reauth`]; callers then get [`ClientError::Reauth`].

pub mod aws;
pub mod golang;
pub mod google;
pub mod mcp_python;
pub mod mcp_ts;
pub mod nodedup;
pub mod rmcp;
pub mod yup;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use keepfresh::runtime::{MonoTime, Runtime};
use keepfresh::store::SaveOutcome;
use keepfresh::{
    AccessToken, ErrorClass, RefreshError, RefreshRequest, RefreshToken, TokenResponse, TokenSet,
};

use crate::strategy::{
    ClientError, ClientStrategy, Keepfresh, LogLine, ProcessContext, ServedToken,
};

/// Every strategy, keepfresh first: the one list (`--client` names are their
/// [`ClientStrategy::name`]s).
pub fn all() -> Vec<Arc<dyn ClientStrategy>> {
    vec![
        Arc::new(Keepfresh),
        Arc::new(golang::GolangOauth2),
        Arc::new(aws::AwsLazyCache),
        Arc::new(yup::YupOauth2),
        Arc::new(rmcp::Rmcp),
        Arc::new(mcp_ts::McpTypescript),
        Arc::new(mcp_python::McpPython),
        Arc::new(google::GoogleAuth),
        Arc::new(nodedup::NoDedup),
    ]
}

/// Every strategy name `--client` accepts, in [`all`] order.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|s| s.name()).collect()
}

/// The strategy called `name`.
///
/// # Errors
/// The list of known names when `name` is not one of them.
pub fn by_name(name: &str) -> Result<Arc<dyn ClientStrategy>, String> {
    all().into_iter().find(|s| s.name() == name).ok_or_else(|| {
        format!(
            "unknown client {name:?}; known clients: {}",
            names().join(", ")
        )
    })
}

/// The HTTP client timeout every model puts on one token-endpoint call.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Lifetime assumed when `expires_in` is missing or not positive.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A token set as a model holds it in memory.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) access: AccessToken,
    pub(crate) refresh: Option<RefreshToken>,
    /// Expiry on the process's monotonic clock.
    pub(crate) deadline: MonoTime,
    /// Lifetime announced when it was issued.
    pub(crate) lifetime: Duration,
    /// The model's counter, increasing with every refresh.
    pub(crate) generation: u64,
}

impl Held {
    /// A stored or login token set, its absolute expiry turned into a monotonic deadline.
    pub(crate) fn from_set(set: &TokenSet, rt: &Runtime, generation: u64) -> Held {
        let left = set.expires_at() - rt.wall();
        let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
        let lifetime = Duration::try_from(set.lifetime()).unwrap_or(Duration::ZERO);
        Held {
            access: set.access_token().clone(),
            refresh: set.refresh_token().cloned(),
            deadline: rt.now().saturating_add(left),
            lifetime,
            generation,
        }
    }

    /// A refresh answer received now; keeps `old_refresh` when the answer has none.
    pub(crate) fn from_response(
        r: &TokenResponse,
        old_refresh: Option<RefreshToken>,
        rt: &Runtime,
        generation: u64,
    ) -> Held {
        let lifetime = match r.expires_in() {
            Some(s) if s > 0 => Duration::from_secs((s as u64).min(365 * 24 * 3600)),
            _ => DEFAULT_LIFETIME,
        };
        Held {
            access: r.access_token().clone(),
            refresh: r.refresh_token().cloned().or(old_refresh),
            deadline: rt.now().saturating_add(lifetime),
            lifetime,
            generation,
        }
    }

    /// Time left before expiry at `now`.
    pub(crate) fn remaining(&self, now: MonoTime) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// Whether the token is inside a window of `margin` before its expiry (or past it).
    pub(crate) fn within(&self, now: MonoTime, margin: Duration) -> bool {
        self.remaining(now) <= margin
    }

    /// What a caller receives.
    pub(crate) fn served(&self, rt: &Runtime) -> ServedToken {
        self.served_with(rt, None)
    }

    /// What a caller receives, with strategy-private data attached.
    pub(crate) fn served_with(
        &self,
        rt: &Runtime,
        handle: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> ServedToken {
        let left = self.remaining(rt.now());
        ServedToken {
            access: self.access.clone(),
            generation: self.generation,
            expires_at: rt.wall() + left,
            handle,
        }
    }

    /// The token set to write to the store.
    pub(crate) fn to_set(&self, rt: &Runtime) -> TokenSet {
        let now = rt.wall();
        let left = self.remaining(rt.now());
        let expires = now + left;
        TokenSet::new(
            self.access.clone(),
            self.refresh.clone(),
            expires - self.lifetime,
            expires,
        )
    }
}

/// Runs `f` for at most `d` on `rt`'s clock.
pub(crate) async fn with_timeout<F: Future>(rt: &Runtime, d: Duration, f: F) -> Option<F::Output> {
    let deadline = rt.now().saturating_add(d);
    let f = std::pin::pin!(f);
    match select(f, rt.sleep_until(deadline)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Sleeps for `d` on `rt`'s clock.
pub(crate) async fn sleep(rt: &Runtime, d: Duration) {
    rt.sleep_until(rt.now().saturating_add(d)).await;
}

/// One token-endpoint call redeeming `refresh`, bounded by [`HTTP_TIMEOUT`].
pub(crate) async fn redeem(
    ctx: &ProcessContext,
    refresh: Option<RefreshToken>,
    generation: u64,
) -> Result<Held, RefreshError> {
    if refresh.is_none() {
        return Err(RefreshError::invalid_grant("no refresh token"));
    }
    let call = ctx.refresher.refresh(RefreshRequest::new(refresh.clone()));
    match with_timeout(&ctx.runtime, HTTP_TIMEOUT, call).await {
        Some(Ok(r)) => Ok(Held::from_response(&r, refresh, &ctx.runtime, generation)),
        Some(Err(e)) => Err(e),
        None => Err(RefreshError::ambiguous("HTTP client timeout")),
    }
}

/// The tokens a persisting model starts from: the store's, or the login's when it is empty
/// or unreadable.
pub(crate) async fn load_or_login(ctx: &ProcessContext) -> Option<TokenSet> {
    match ctx.store.load().await {
        Ok(Some(stored)) => Some(stored.tokens),
        _ => ctx.initial.clone(),
    }
}

/// Overwrites the store with `set` whatever it holds (a file rewritten in place: no
/// compare-and-swap, no lock). Logs the outcome; returns whether it was written.
pub(crate) async fn overwrite(ctx: &ProcessContext, set: &TokenSet, log_failure: bool) -> bool {
    let mut expected = match ctx.store.load().await {
        Ok(s) => s.map(|s| s.version),
        Err(_) => None,
    };
    for _ in 0..3 {
        match ctx.store.save(expected, set).await {
            Ok(SaveOutcome::Saved(_)) => {
                ctx.log.log(LogLine::Persisted);
                return true;
            }
            // Someone else wrote in between: a blind writer simply writes over it.
            Ok(SaveOutcome::Conflict(now)) => expected = now.map(|s| s.version),
            Err(_) => break,
        }
    }
    if log_failure {
        ctx.log.log(LogLine::PersistFailed);
    }
    false
}

/// Installs a login's tokens in a model that keeps them in `current`: they replace what it
/// holds, are persisted if `persist` (overwriting the store, as the model does after a refresh),
/// and answer a pending re-authorization.
pub(crate) async fn install_login(
    ctx: &ProcessContext,
    current: &parking_lot::Mutex<Option<Held>>,
    generations: &Generations,
    reauth: &ReauthFlag,
    tokens: &TokenSet,
    persist: bool,
) {
    *current.lock() = Some(Held::from_set(tokens, &ctx.runtime, generations.next()));
    reauth.clear();
    if persist {
        overwrite(ctx, tokens, true).await;
    }
}

/// The caller-facing error for a refresh failure.
pub(crate) fn client_error(e: &RefreshError) -> ClientError {
    ClientError::Refresh(e.class().to_string())
}

/// Whether a failure is an `invalid_grant` (the grant is dead: only a new login helps).
pub(crate) fn is_invalid_grant(e: &RefreshError) -> bool {
    e.class() == ErrorClass::InvalidGrant
}

/// Re-authorization reported once per process instance.
#[derive(Debug, Default)]
pub(crate) struct ReauthFlag(AtomicBool);

impl ReauthFlag {
    /// Reports re-authorization with `reason` (the first time only) and returns the caller's
    /// error.
    pub(crate) fn report(&self, ctx: &ProcessContext, reason: &str) -> ClientError {
        if !self.0.swap(true, Ordering::Relaxed) {
            ctx.log.log(LogLine::Reauth {
                reason: reason.to_owned(),
            });
        }
        ClientError::Reauth(reason.to_owned())
    }

    /// Whether re-authorization was reported.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A new login answered the re-authorization.
    pub(crate) fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Counts forced refreshes requested by 401 handling, each consumed by one later `token`.
#[derive(Debug, Default)]
pub(crate) struct Forced(AtomicU64);

impl Forced {
    /// One more forced refresh.
    pub(crate) fn push(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one forced refresh if any is pending.
    pub(crate) fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A generation counter.
#[derive(Debug, Default)]
pub(crate) struct Generations(AtomicU64);

impl Generations {
    /// The next generation number.
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The [`crate::strategy::Health`] of a model: `reauth` once re-authorization was reported.
pub(crate) fn health(reauth: &ReauthFlag) -> crate::strategy::Health {
    crate::strategy::Health {
        phase: if reauth.is_set() { "reauth" } else { "serving" }.into(),
        reauth: reauth.is_set(),
        persist_pending: false,
    }
}

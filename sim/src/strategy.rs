//! The seam between the simulated world and the client library under test, so the identical
//! world (provider, store, faults, callers, oracles) can run keepfresh or any other client's
//! refresh behaviour.
//!
//! A [`ClientStrategy`] starts one [`ProcessClient`] per simulated process (at the beginning and
//! after every restart) from a [`ProcessContext`]: the process's runtime on the deterministic
//! executor, its view of the shared store, the mock provider behind a
//! [`Refresher`], and a [`LogSink`] for everything the client would log.
//! The world then only calls [`ProcessClient::token`] for each caller request,
//! [`ProcessClient::unauthorized`] after a resource-server 401, [`ProcessClient::login`] when the
//! user logs in again, [`ProcessClient::shutdown`] at a clean stop and [`ProcessClient::health`]
//! for liveness checks. Oracles observe the provider,
//! the store and the callers, never the strategy's internals, so metrics compare across
//! strategies. [`Keepfresh`] is the default strategy: the real engine, unchanged.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use keepfresh::runtime::Runtime;
use keepfresh::store::TokenStore;
use keepfresh::{Credential, Event, RefreshPolicy, Refresher, TokenSet};
use parking_lot::Mutex;
use time::OffsetDateTime;

use crate::exec::InjectedPanic;

/// Where a client's log lines go: the trace (with simulated timestamps), the determinism hash
/// and the secret scan.
#[derive(Clone)]
pub struct LogSink(Arc<dyn Fn(LogLine) + Send + Sync>);

/// One thing a client reported.
#[derive(Debug)]
pub enum LogLine {
    /// A free-form line (as a library would log it).
    Text(String),
    /// Re-authorization is required; `reason` is a stable short string.
    Reauth {
        /// Why.
        reason: String,
    },
    /// A refresh result was written to the store.
    Persisted,
    /// A refresh result could not be written to the store.
    PersistFailed,
}

impl LogSink {
    /// A sink calling `f` for every line.
    pub fn new(f: impl Fn(LogLine) + Send + Sync + 'static) -> Self {
        LogSink(Arc::new(f))
    }

    /// Reports a line.
    pub fn log(&self, line: LogLine) {
        (self.0)(line)
    }
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogSink")
    }
}

/// The world's decision, per event a client's listener receives, whether that listener panics
/// (a host's event callback with a bug). Decided from the run's seed, so a run replays.
#[derive(Clone)]
pub struct ListenerPanics(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl ListenerPanics {
    /// A decision made by `f`, which gets the event's kind (such as `RefreshStarted`).
    pub fn new(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        ListenerPanics(Arc::new(f))
    }

    /// Whether the listener panics on an event of this kind.
    pub fn fires(&self, event_kind: &str) -> bool {
        (self.0)(event_kind)
    }

    /// Panics with an [`InjectedPanic`] if the listener panics on an event of this kind.
    pub fn maybe_panic(&self, event_kind: &str) {
        if self.fires(event_kind) {
            std::panic::panic_any(InjectedPanic);
        }
    }
}

impl fmt::Debug for ListenerPanics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ListenerPanics")
    }
}

/// Everything a strategy gets to build one process's client.
#[derive(Clone)]
pub struct ProcessContext {
    /// Clock, timers and spawner of this process on the deterministic executor.
    pub runtime: Runtime,
    /// This process's view of the store shared by all processes of the credential.
    pub store: Arc<dyn TokenStore>,
    /// The token endpoint (mock provider through the simulated network).
    pub refresher: Arc<dyn Refresher>,
    /// Tokens from the login, used when the store is empty.
    pub initial: Option<TokenSet>,
    /// The scenario's refresh policy (strategies that have no such knobs may ignore it).
    pub policy: RefreshPolicy,
    /// A seed for the client's own randomness.
    pub seed: u64,
    /// Where log lines go.
    pub log: LogSink,
    /// A label such as `c0/p1`, for logs.
    pub label: String,
    /// When set, the client registers an event listener of the host's that panics when this
    /// says so (clients without event listeners ignore it).
    pub listener_panics: Option<ListenerPanics>,
}

impl fmt::Debug for ProcessContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessContext")
            .field("label", &self.label)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// A token handed to a caller.
pub struct ServedToken {
    /// The access token value (for the resource server model; never printed).
    pub access: keepfresh::AccessToken,
    /// The client's generation counter for it (strategy-defined, increasing).
    pub generation: u64,
    /// The expiry the client believes.
    pub expires_at: OffsetDateTime,
    /// Strategy-private data (keepfresh keeps its `Token` for `invalidate`).
    pub handle: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for ServedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServedToken")
            .field("access", &self.access)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Why a client handed out no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A new login is needed; a stable short reason.
    Reauth(String),
    /// The client gave up waiting.
    Timeout,
    /// A refresh failed (backing off or shared failure), with its class.
    Refresh(String),
    /// Anything else.
    Other(String),
}

/// What the world can see of a client without looking inside.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// A short phase name.
    pub phase: String,
    /// Re-authorization is required.
    pub reauth: bool,
    /// A refreshed token set is not yet durable.
    pub persist_pending: bool,
}

/// One simulated process's client.
#[async_trait]
pub trait ProcessClient: Send + Sync {
    /// A token for one caller request.
    async fn token(&self) -> Result<ServedToken, ClientError>;
    /// The token the first poll of [`ProcessClient::token`] would serve at once, if the client
    /// can tell without waiting and without side effects (keepfresh: its lock-free hot path,
    /// `Credential::try_token`); `None`: call [`ProcessClient::token`]. The world's callers take
    /// this path for a request that needs nothing but its token, without a future or a copy of
    /// the access token.
    fn token_now(&self) -> Option<keepfresh::Token> {
        None
    }
    /// The resource server answered 401 to `token`; returns whether a refresh was started.
    fn unauthorized(&self, token: &ServedToken) -> bool;
    /// The user logged in again: `tokens` replace whatever the client holds (a refresh in
    /// flight must not overwrite them), and are persisted if the client persists.
    ///
    /// # Errors
    /// Why the tokens were not installed.
    async fn login(&self, tokens: TokenSet) -> Result<(), ClientError>;
    /// A clean stop (flush pending saves).
    async fn shutdown(&self);
    /// The client's state, for liveness checks and reports.
    fn health(&self) -> Health;
}

/// A client library's refresh behaviour, instantiated per simulated process.
#[async_trait]
pub trait ClientStrategy: Send + Sync {
    /// A stable name (`keepfresh`, `golang-oauth2`, …).
    fn name(&self) -> &'static str;
    /// Starts one process's client (at the start and after every restart).
    ///
    /// # Errors
    /// A message when the client cannot start (store unreadable, …).
    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String>;
}

/// The default strategy: keepfresh's [`Credential`], unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Keepfresh;

struct KeepfreshClient {
    credential: Credential,
}

#[async_trait]
impl ClientStrategy for Keepfresh {
    fn name(&self) -> &'static str {
        "keepfresh"
    }

    async fn start(&self, ctx: ProcessContext) -> Result<Arc<dyn ProcessClient>, String> {
        let mut builder = Credential::builder(ctx.refresher.clone())
            .runtime(ctx.runtime.clone())
            .policy(ctx.policy.clone())
            .store(ctx.store.clone())
            .name(ctx.label.clone());
        if let Some(set) = ctx.initial.clone() {
            builder = builder.tokens(set);
        }
        let credential = builder.build().await.map_err(|e| e.to_string())?;
        let log = ctx.log.clone();
        credential.on_event(move |e: &Event| {
            // Sized for an event's line and the world's `p{i} ` prefix up front: `format!`
            // would grow the string from a few bytes, reallocating five or six times.
            let mut text = String::with_capacity(EVENT_LINE_CAPACITY);
            let _ = fmt::Write::write_fmt(&mut text, format_args!("{e:?}"));
            log.log(LogLine::Text(text));
            match e {
                Event::ReauthRequired { reason, .. } => log.log(LogLine::Reauth {
                    reason: format!("{reason:?}"),
                }),
                Event::Persisted { .. } => log.log(LogLine::Persisted),
                Event::PersistFailed { .. } => log.log(LogLine::PersistFailed),
                _ => {}
            }
        });
        if let Some(panics) = ctx.listener_panics.clone() {
            credential.on_event(move |e: &Event| {
                let text = format!("{e:?}");
                let kind = text
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .next()
                    .unwrap_or("");
                panics.maybe_panic(kind);
            });
        }
        Ok(Arc::new(KeepfreshClient { credential }))
    }
}

type Held = Mutex<Option<keepfresh::Token>>;

/// Bytes reserved for one event's trace line (most are 60 to 200).
const EVENT_LINE_CAPACITY: usize = 256;

#[async_trait]
impl ProcessClient for KeepfreshClient {
    async fn token(&self) -> Result<ServedToken, ClientError> {
        match self.credential.token().await {
            Ok(t) => Ok(ServedToken {
                access: t.access_token().clone(),
                generation: t.generation(),
                expires_at: t.expires_at(),
                handle: Some(Box::new(Held::new(Some(t)))),
            }),
            Err(e) => Err(if let Some(r) = e.reauth_reason() {
                ClientError::Reauth(format!("{r:?}"))
            } else if e.is_timeout() {
                ClientError::Timeout
            } else if let Some(r) = e.refresh_error() {
                ClientError::Refresh(r.class().to_string())
            } else {
                ClientError::Other(e.to_string())
            }),
        }
    }

    #[inline]
    fn token_now(&self) -> Option<keepfresh::Token> {
        self.credential.try_token()
    }

    fn unauthorized(&self, token: &ServedToken) -> bool {
        let held = token.handle.as_ref().and_then(|h| h.downcast_ref::<Held>());
        match held.and_then(|h| h.lock().take()) {
            Some(t) => self.credential.invalidate(&t),
            None => false,
        }
    }

    async fn login(&self, tokens: TokenSet) -> Result<(), ClientError> {
        self.credential
            .set_tokens(tokens)
            .await
            .map_err(|e| ClientError::Other(e.to_string()))
    }

    async fn shutdown(&self) {
        let _ = self.credential.shutdown().await;
    }

    fn health(&self) -> Health {
        let s = self.credential.status();
        Health {
            phase: s.phase.to_string(),
            reauth: matches!(s.phase, keepfresh::Phase::ReauthRequired { .. }),
            persist_pending: s.persist_pending,
        }
    }
}

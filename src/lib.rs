//! # keepfresh
//!
//! A token-refresh engine for long-running services — MCP servers, API clients, agents —
//! that hold OAuth tokens which expire.
//!
//! Existing clients get refresh wrong in a few recurring ways: they refresh in every concurrent
//! request (and with rotating refresh tokens one duplicate refresh looks like theft, so the
//! provider revokes the whole grant), they block every caller while refreshing, they lose the
//! rotated refresh token when a save fails, or they fail requests during a provider outage
//! although the token in hand is still valid. keepfresh's [`Credential`] does none of that:
//!
//! - **single-flight**: one refresh per token generation however many callers, sharing its
//!   outcome, error included; across processes through the store's lease, failing closed when
//!   the store cannot grant it;
//! - **refresh-ahead** at a jittered point of the lifetime while callers keep the valid token;
//! - **persist, then publish**: a rotated token set is saved before anyone sees it, and a
//!   failed save is retried without ever replaying the old refresh token;
//! - **classified errors** with exponential backoff, full jitter and `Retry-After`;
//! - a **lock-free hot path**: a fresh token costs one atomic load and one clock read.
//!
//! ```
//! use keepfresh::{refresher_fn, AccessToken, Credential, RefreshPolicy, RefreshToken, TokenResponse};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), keepfresh::Error> {
//! let refresher = refresher_fn(|req| async move {
//!     // POST grant_type=refresh_token to your provider here (see keepfresh::oauth for parsing).
//!     let _rt = req.refresh_token;
//!     Ok(TokenResponse::new(AccessToken::new("new-access"))
//!         .with_refresh_token(RefreshToken::new("new-refresh"))
//!         .with_expires_in(3600))
//! });
//! let credential = Credential::builder(refresher)
//!     .policy(RefreshPolicy::default())
//!     .refresh_token(RefreshToken::new("stored-refresh"))
//!     .build()
//!     .await?;
//!
//! let token = credential.token().await?;
//! assert_eq!(token.secret(), "new-access");
//! // After an HTTP 401 from the resource server:
//! credential.invalidate(&token);
//! # Ok(())
//! # }
//! ```
//!
//! ## Contents
//! - [`machine`]: the pure, sans-IO state machine ([`Phase`], [`machine::Input`],
//!   [`machine::Decision`]);
//! - [`flight`]: one refresh flight as a pure plan: lease, re-read, call, save along the
//!   lineage, keep the lease until durable ([`flight::Plan`]);
//! - [`policy`]: refresh window, jitter, backoff, lifetime validation, timeouts and their
//!   relations ([`RefreshPolicy`]);
//! - [`Credential`]: the concurrent shell;
//! - [`Refresher`], [`RefreshError`], [`ErrorClass`]: how tokens are obtained;
//! - [`ApiKey`]: a key that never expires, from an environment variable or a private `.env`
//!   file ([`KeyHeader`]: how it is presented, [`ApiKeyError`]: why it could not be loaded);
//! - [`AuthSource`]: the header to attach and what to do on a 401, whether the source is a
//!   [`Credential`] or an [`ApiKey`] ([`AuthHeader`], [`Rejection`]);
//! - [`store`]: [`TokenStore`](store::TokenStore) with versions, compare-and-swap and leases;
//! - [`runtime`]: the clock, timer and spawner seams ([`Runtime::tokio`](runtime::Runtime::tokio),
//!   [`ManualClock`](runtime::ManualClock));
//! - [`oauth`]: parsing token-endpoint answers and `Retry-After`; with `http`, the refresh
//!   grant over HTTP and `oauth::discovery` (RFC 9728 / RFC 8414 metadata in MCP's order);
//! - `middleware` (feature `middleware`): `reqwest-middleware` and `tower` middleware that
//!   attach the header, refresh once and retry once on a 401, and report a 403
//!   `insufficient_scope` as a step-up;
//! - `mcp` (feature `rmcp`): keepfresh in MCP servers and clients built on rmcp 3.11 — tool
//!   errors for step-up and re-authorization, rmcp's Streamable HTTP client transport with its
//!   token from a [`Credential`], and rmcp's `CredentialStore` over any store;
//! - [`pool`]: many credentials keyed by issuer, client, resource, scopes and subject;
//! - [`event`]: what a credential reports;
//! - `metrics` (feature `metrics`): counters, histograms and gauges through the `metrics`
//!   facade, per credential and for every pooled credential.
//!
//! ## Features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tokio` | yes | [`Runtime::tokio`](runtime::Runtime::tokio), the default runtime |
//! | `tracing` | no | `tracing` spans around refreshes and events for every [`Event`], with fingerprints only |
//! | `metrics` | no | `metrics::install`: refreshes by outcome, refresh latency, caller waits, served-stale, time to expiry, phases and store errors through the `metrics` facade, labelled by credential key without secrets; installed on every pooled credential |
//! | `file` | no | `store::FileStore`: a private token file shared by the user's processes (atomic replace, versioned compare-and-swap, `flock` lease) |
//! | `login` | no | `oauth::login`: the first tokens through the authorization code grant with PKCE and a loopback redirect |
//! | `cli` | no | the `keepfresh` command-line tool (`login`, `status`, `refresh`, `logout`) |
//! | `contract` | no | `store::contract`: the checks every `TokenStore` must pass, to run on your own store |
//! | `http` | no | `oauth::HttpRefresher`: the RFC 6749 refresh grant over HTTP (reqwest + rustls), no automatic retries, transport failures classified as transient or ambiguous; `oauth::discovery`: protected-resource and authorization-server metadata, issuer and resource checked, PKCE S256 required |
//! | `encrypted` | no | `store::EncryptedFileStore`: the file store's document sealed with XChaCha20-Poly1305, bound to the credential's identity; `store::Key` from the environment, a key file or the keyring; key rotation |
//! | `middleware` | no | `middleware::AuthMiddleware` (reqwest-middleware 0.5) and `middleware::AuthLayer` (tower 0.5): the header attached and marked sensitive, one refresh and one retry on a 401 `invalid_token`, `StepUpRequired` on a 403 `insufficient_scope` |
//! | `rmcp` | no | `mcp::ToolAuthError` (step-up and re-authorization as structured MCP tool errors), `mcp::CredentialHttpClient` (rmcp's Streamable HTTP client transport authorized by a [`Credential`]: exact invalidation and one retry on a 401, rmcp's step-up on a 403 `insufficient_scope`), `mcp::RmcpStore` (rmcp's `CredentialStore` over any `TokenStore`, its refresh guard the store's lease); implies `middleware` |
//! | `keyring` | no | `store::KeyringStore`: tokens in the OS keyring (Secret Service, Keychain, Credential Manager), too-big sets in an encrypted file; `Key::from_keyring` |
//! | `redis` | no | `store::RedisStore`: a store shared by replicas through Redis (compare-and-swap scripts, fenced leases, pub/sub wake-ups) |
//! | `redis-tls` | no | `rediss://` URLs for `RedisStore`, over rustls and aws-lc-rs (the same stack as `http`) |
//!
//! Without `tokio` the crate builds on `futures`, `parking_lot`, `arc-swap`, `time` and `serde`
//! alone and runs on any executor through [`runtime::Runtime::new`].
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod apikey;
mod auth_header;
mod credential;
mod error;
pub mod event;
pub mod flight;
/// Fuzzing entry points: not part of the API (see the module's documentation).
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod machine;
#[cfg(feature = "rmcp")]
pub mod mcp;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "middleware")]
pub mod middleware;
pub mod oauth;
pub mod policy;
pub mod pool;
mod refresher;
pub mod runtime;
mod secret;
pub mod store;
mod sync;
mod token;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use apikey::{read_private_file, ApiKey, ApiKeyError, ApiKeyErrorKind, KeyHeader, PrivateFile};
pub use auth_header::{AuthHeader, AuthSource, Rejection};
pub use credential::{Credential, CredentialBuilder, Precedence, Status, Token, TokenFuture};
pub use error::Error;
pub use event::Event;
pub use machine::{Phase, ReauthReason};
pub use policy::RefreshPolicy;
pub use refresher::{
    refresher_fn, ErrorClass, RefreshError, RefreshRequest, Refresher, RefresherFn,
};
pub use secret::{AccessToken, ClientSecret, Fingerprint, RefreshToken};
pub use token::{TokenResponse, TokenSet};

//! HTTP client middleware that puts an [`AuthSource`](crate::AuthSource) in front of every
//! request, so that callers neither attach tokens nor handle 401 and 403 by hand.
//!
//! Two integrations, one behaviour:
//! - [`AuthMiddleware`] for [`reqwest-middleware`](https://docs.rs/reqwest-middleware) 0.5
//!   clients (reqwest 0.13);
//! - [`AuthLayer`] / [`AuthService`] for [`tower`](https://docs.rs/tower) 0.5 services of
//!   `http::Request<B>` → `http::Response<R>` (hyper-util's client, or any `http` 1 stack).
//!
//! # What happens to a request
//! 1. The header from [`AuthSource::auth_header`](crate::AuthSource::auth_header) is attached
//!    (`Authorization: Bearer <token>` for a [`Credential`](crate::Credential), the configured
//!    header for an [`ApiKey`](crate::ApiKey)), marked sensitive
//!    (`HeaderValue::set_sensitive`). It replaces a header of the same name on the request.
//! 2. A **401** whose `WWW-Authenticate: Bearer` challenge says `error="invalid_token"`, has no
//!    error code (RFC 6750 §3.1 allows a bare challenge), or is missing: the source hears that
//!    exactly the header sent was rejected ([`AuthSource::rejected`](crate::AuthSource::rejected)).
//!    A credential invalidates that token and starts one refresh — one however many requests
//!    report the same token. If the source says a retry can help and the request can be
//!    replayed, it is sent **once more** with the new header (which waits for the refresh).
//!    Otherwise — an API key, a body that cannot be replayed — the 401 is returned as it is.
//!    A 401 with another error code (`invalid_request`…) is not the token's fault: it is
//!    returned without a report.
//! 3. A **403** with `error="insufficient_scope"`: no refresh (it cannot add scope) and no
//!    retry; the call fails with [`StepUpRequired`], carrying the union of the scopes the
//!    token held and those the challenge asks for.
//! 4. Anything else goes to the caller, and so does whatever the retry answers (a second 401
//!    included; a 403 `insufficient_scope` is still a [`StepUpRequired`]): at most two sends
//!    per request, never a loop. A retry's 401 is not reported again; the next request
//!    reports its own token if that one is refused too.
//!
//! A 401 or 403 handed back to the caller with a Bearer challenge carries it, parsed, in the
//! response's extensions — with `resource_metadata` for RFC 9728 discovery of the
//! authorization server: `response.extensions().get::<BearerChallenge>()`
//! ([`BearerChallenge`](crate::oauth::BearerChallenge)).
//!
//! # Errors
//! Beside the HTTP stack's own errors, a call can fail with (downcast to tell them apart):
//!
//! | error | when | the request |
//! |---|---|---|
//! | [`Error`](crate::Error) | no header could be had (never authorized, re-authorization required, refresh failing, timeout) | not sent |
//! | [`StepUpRequired`] | 403 `insufficient_scope` | sent once |
//! | [`Unauthorized`] | 401, and no new header could be had for the retry | sent once |
//!
//! With [`AuthMiddleware`] they come as `reqwest_middleware::Error::Middleware(anyhow::Error)`
//! (`anyhow::Error::downcast_ref`); with [`AuthService`], as its [`BoxError`]
//! (`Box<dyn Error>::downcast_ref`).
//!
//! # Replaying a request
//! A retry sends a copy of the request, made before the first send (and before the header is
//! attached). reqwest copies what [`reqwest::Request::try_clone`] can: every body but a
//! stream. The tower service copies with a [`Replay`] strategy: [`CloneBody`] (the default)
//! for bodies that implement `Clone`, [`NoReplay`] for any other body — their 401 still
//! invalidates the token, so the next request succeeds, but it is returned to the caller.
//!
//! # Secrets
//! Header values never appear in `Debug` output, errors or `tracing` events (which carry the
//! token's [`Fingerprint`](crate::Fingerprint)); the header is marked sensitive for the HTTP
//! stack's own logging. The value is copied into an `http::HeaderValue` — once per token for a
//! credential, whose requests share it; once per request for a key — which, unlike
//! [`AuthHeader`](crate::AuthHeader), is not zeroed on drop.
//!
//! # Cost
//! On a fresh token the middleware adds a few hundred nanoseconds to a request: the header is
//! fetched (one boxed future, the header's value built and zeroed again), the request is copied
//! for a possible retry (its header map, URI and body: most of the cost, and paid on every
//! request, since the inner service consumes the request before its answer says whether a
//! retry is needed), and the call goes through one more boxed future. A credential's
//! `http::HeaderValue` is built once per token and shared by the requests that carry it. The
//! `keepfresh-benches` binary measures the overhead against the same request without the
//! middleware, in one run (`cargo bench -p keepfresh-benches -- middleware`).

mod answer;
mod client;
mod error;
mod future;
mod layer;
mod replay;
mod service;

pub use client::AuthMiddleware;
pub use error::{StepUpRequired, Unauthorized};
pub use future::ResponseFuture;
pub use layer::AuthLayer;
pub use replay::{CloneBody, NoReplay, Replay};
pub use service::AuthService;

/// The error of an [`AuthService`]: the inner service's error, or one of the module's
/// [errors](self#errors), boxed (tower's convention, as `tower::BoxError`).
///
/// ```
/// use keepfresh::middleware::{BoxError, StepUpRequired};
/// fn is_step_up(error: &BoxError) -> bool {
///     error.downcast_ref::<StepUpRequired>().is_some()
/// }
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

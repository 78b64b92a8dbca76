//! Every call into a store or the refresher, bounded by the policy's timeouts and shielded from
//! panics: a store that hangs, errors or panics is a failure with a kind, never a wedge.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::future::{select, Either};
use futures::FutureExt;

use crate::refresher::{RefreshError, RefreshRequest, Refresher};
use crate::runtime::Runtime;
use crate::store::{StoreError, StoreErrorKind};
use crate::token::TokenResponse;

/// Runs `fut` until `limit` passes on the runtime's clock.
pub(crate) async fn timeout<F: Future>(rt: &Runtime, limit: Duration, fut: F) -> Option<F::Output> {
    let deadline = rt.now().saturating_add(limit);
    let fut = std::pin::pin!(fut);
    match select(fut, rt.sleep_until(deadline)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// One store operation: a timeout is [`StoreErrorKind::Timeout`], a panic [`StoreErrorKind::Io`].
pub(crate) async fn store_op<T>(
    rt: &Runtime,
    limit: Duration,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let op = AssertUnwindSafe(op).catch_unwind();
    match timeout(rt, limit, op).await {
        Some(Ok(r)) => r,
        Some(Err(_panic)) => Err(StoreError::new(
            StoreErrorKind::Io,
            "the store panicked during the operation",
        )),
        None => Err(StoreError::new(
            StoreErrorKind::Timeout,
            format!("no answer within {limit:?}"),
        )),
    }
}

/// Resolves when the store reports a change; never when it fails or panics (the caller's poll
/// sleep then runs its full length).
pub(crate) async fn watch(store: &dyn crate::store::TokenStore) {
    match AssertUnwindSafe(store.changed()).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => futures::future::pending::<()>().await,
    }
}

/// What a provider call produced.
pub(crate) enum Called {
    Answer(Result<TokenResponse, RefreshError>),
    Panicked,
}

/// One refresher call: a timeout is ambiguous (the provider may have rotated the token), a
/// panic transient.
pub(crate) async fn call(
    rt: &Runtime,
    limit: Duration,
    refresher: &dyn Refresher,
    request: RefreshRequest,
) -> Called {
    let call = AssertUnwindSafe(refresher.refresh(request)).catch_unwind();
    match timeout(rt, limit, call).await {
        Some(Ok(r)) => Called::Answer(r),
        Some(Err(_panic)) => Called::Panicked,
        None => Called::Answer(Err(RefreshError::ambiguous(format!(
            "no answer within the refresh timeout of {limit:?}"
        )))),
    }
}

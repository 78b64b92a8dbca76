//! [`ResponseFuture`]: what [`AuthService`](super::AuthService) returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::BoxError;

/// The answer of an [`AuthService`](super::AuthService): the header is fetched, the request
/// sent, and — after a 401 — the copy sent once more, all inside this future.
///
/// # Cancel safety
/// Dropping it drops the request in flight. A refresh the 401 started belongs to the
/// credential, not to this future, and goes on (see
/// [`Credential::token`](crate::Credential::token)).
pub struct ResponseFuture<R> {
    inner: Pin<Box<dyn Future<Output = Result<http::Response<R>, BoxError>> + Send>>,
}

impl<R> ResponseFuture<R> {
    pub(crate) fn new(
        future: impl Future<Output = Result<http::Response<R>, BoxError>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            inner: Box::pin(future),
        }
    }
}

impl<R> Future for ResponseFuture<R> {
    type Output = Result<http::Response<R>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<R> fmt::Debug for ResponseFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

//! [`AuthService`]: the behaviour of the module for tower services over `http` requests.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::answer::{keep_challenge, Attempt, Authorizer, Verdict};
use super::error::Unauthorized;
use super::future::ResponseFuture;
use super::replay::{CloneBody, Replay};
use super::BoxError;
use crate::auth_header::AuthSource;

/// A tower service that authorizes each `http::Request<B>` with an [`AuthSource`] before
/// passing it to the inner service, and handles the resource server's 401 and 403 as the
/// [module documentation](super) describes. Made by [`AuthLayer`](super::AuthLayer) or
/// [`AuthService::new`].
///
/// The inner service must be [`Clone`]: the retry after a 401 is sent through a clone, which
/// is made ready again first (the usual tower pattern: the clone taken in `call` replaces the
/// service that was made ready). `P` copies each request for that retry (see [`Replay`]).
///
/// # Errors
/// A [`BoxError`] holding the inner service's error, or one of:
/// - [`Error`](crate::Error): no header could be had for the request (it was not sent);
/// - [`StepUpRequired`](super::StepUpRequired): 403 `insufficient_scope`;
/// - [`Unauthorized`]: 401, and no new header could be had for the retry.
///
/// Tell them apart with `error.downcast_ref::<T>()`.
///
/// See the [`AuthLayer` example](super::AuthLayer#examples).
#[derive(Clone, Debug)]
pub struct AuthService<S, P = CloneBody> {
    pub(super) inner: S,
    pub(super) auth: Arc<Authorizer>,
    pub(super) replay: P,
}

impl<S> AuthService<S> {
    /// Wraps `inner`: requests are authorized with `source` and replayed with [`CloneBody`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keepfresh::middleware::AuthService;
    /// use tower::{service_fn, ServiceExt};
    ///
    /// # futures::executor::block_on(async {
    /// let api = service_fn(|request: http::Request<()>| async move {
    ///     let status = if request.headers().contains_key("x-api-key") { 200 } else { 401 };
    ///     http::Response::builder().status(status).body(())
    /// });
    /// let key = keepfresh::ApiKey::new("sk-123")
    ///     .unwrap()
    ///     .with_header(keepfresh::KeyHeader::named("x-api-key").unwrap());
    /// let service = AuthService::new(api, Arc::new(key));
    /// let response = service.oneshot(http::Request::new(())).await.unwrap();
    /// assert_eq!(response.status(), 200);
    /// # });
    /// ```
    pub fn new(inner: S, source: Arc<dyn AuthSource>) -> Self {
        AuthService {
            inner,
            auth: Arc::new(Authorizer::new(source)),
            replay: CloneBody,
        }
    }
}

impl<S, P> AuthService<S, P> {
    /// The same service, copying requests for the retry with `replay` instead.
    ///
    /// See [`AuthLayer::replay`](super::AuthLayer::replay).
    pub fn replay<Q>(self, replay: Q) -> AuthService<S, Q> {
        AuthService {
            inner: self.inner,
            auth: self.auth,
            replay,
        }
    }
}

impl<S, P, B, R> Service<http::Request<B>> for AuthService<S, P>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    P: Replay<B>,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = ResponseFuture<R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let spare = self.replay.replay(&request);
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(authorize(self.auth.clone(), ready, request, spare))
    }
}

/// One request through the inner service `ready` (already made ready by `poll_ready`), and at
/// most one retry of `spare` after a 401.
async fn authorize<S, B, R>(
    auth: Arc<Authorizer>,
    mut ready: S,
    mut request: http::Request<B>,
    spare: Option<http::Request<B>>,
) -> Result<http::Response<R>, BoxError>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<BoxError>,
{
    let header = auth.header().await?;
    auth.attach(request.headers_mut(), &header)?;
    let mut response = ready.call(request).await.map_err(Into::into)?;
    let attempt = Attempt::First {
        can_replay: spare.is_some(),
    };
    let (challenge, mut spare) = match (
        auth.judge(&header, response.status(), response.headers(), attempt),
        spare,
    ) {
        (Verdict::Retry(challenge), Some(spare)) => (challenge, spare),
        (Verdict::Deliver(challenge) | Verdict::Retry(challenge), _) => {
            keep_challenge(response.extensions_mut(), challenge);
            return Ok(response);
        }
        (Verdict::StepUp(step_up), _) => return Err(step_up.into()),
    };
    // A 401's body is of no use; dropping it unread releases the connection.
    drop(response);
    let header = match auth.header().await {
        Ok(header) => header,
        Err(error) => return Err(Unauthorized::new(challenge, error).into()),
    };
    auth.attach(spare.headers_mut(), &header)?;
    poll_fn(|cx| ready.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    let mut response = ready.call(spare).await.map_err(Into::into)?;
    match auth.judge(
        &header,
        response.status(),
        response.headers(),
        Attempt::Retry,
    ) {
        Verdict::Deliver(challenge) | Verdict::Retry(challenge) => {
            keep_challenge(response.extensions_mut(), challenge);
            Ok(response)
        }
        Verdict::StepUp(step_up) => Err(step_up.into()),
    }
}

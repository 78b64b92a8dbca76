//! [`AuthLayer`]: wraps a tower service in an [`AuthService`].

use std::sync::Arc;

use tower_layer::Layer;

use super::answer::Authorizer;
use super::replay::CloneBody;
use super::service::AuthService;
use crate::auth_header::AuthSource;

/// A [`tower_layer::Layer`] that wraps a service of `http::Request<B>` → `http::Response<R>`
/// in an [`AuthService`]: every request is authorized with an [`AuthSource`], and the
/// resource server's 401 and 403 are handled as the [module documentation](super) describes.
///
/// `P` says how a request is copied for the retry after a 401 (see [`Replay`](super::Replay)):
/// [`CloneBody`] by default, which needs `B: Clone`; [`NoReplay`](super::NoReplay) for any
/// body, never retrying.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use keepfresh::middleware::AuthLayer;
/// use keepfresh::ApiKey;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # futures::executor::block_on(async {
/// // Stands in for an HTTP client service (hyper-util's client, say).
/// let api = service_fn(|request: http::Request<String>| async move {
///     let authorization = request.headers()["authorization"].clone();
///     assert!(authorization.is_sensitive());
///     assert_eq!(authorization, "Bearer sk-123");
///     Ok::<_, std::convert::Infallible>(http::Response::new("ok".to_owned()))
/// });
/// let service = AuthLayer::new(Arc::new(ApiKey::new("sk-123").unwrap())).layer(api);
/// let response = service.oneshot(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(response.body(), "ok");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct AuthLayer<P = CloneBody> {
    auth: Arc<Authorizer>,
    replay: P,
}

impl AuthLayer {
    /// A layer that authorizes requests with `source` and replays them with [`CloneBody`].
    ///
    /// See the [type-level example](AuthLayer#examples).
    pub fn new(source: Arc<dyn AuthSource>) -> Self {
        AuthLayer {
            auth: Arc::new(Authorizer::new(source)),
            replay: CloneBody,
        }
    }
}

impl<P> AuthLayer<P> {
    /// The same layer, copying requests for the retry with `replay` instead.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keepfresh::middleware::{AuthLayer, NoReplay};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// /// A body that cannot be cloned.
    /// struct Streaming;
    ///
    /// # futures::executor::block_on(async {
    /// let api = service_fn(|_: http::Request<Streaming>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
    /// });
    /// let service = AuthLayer::new(Arc::new(keepfresh::ApiKey::new("sk-123").unwrap()))
    ///     .replay(NoReplay)
    ///     .layer(api);
    /// service.oneshot(http::Request::new(Streaming)).await.unwrap();
    /// # });
    /// ```
    pub fn replay<Q>(self, replay: Q) -> AuthLayer<Q> {
        AuthLayer {
            auth: self.auth,
            replay,
        }
    }
}

impl<S, P: Clone> Layer<S> for AuthLayer<P> {
    type Service = AuthService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            replay: self.replay.clone(),
        }
    }
}

//! How the tower service gets the copy of a request it sends again after a 401: the body has to
//! be read twice, which only some body types allow.

/// Makes the copy of a request that [`AuthService`](super::AuthService) sends once more after a
/// 401, or says that the request cannot be replayed.
///
/// The copy is made for every request, before it is sent and before the auth header is attached
/// (the copy gets the new header), and dropped unused when no retry is needed: keep it cheap,
/// as cloning a `Bytes`-backed body is.
///
/// Two strategies come with the crate: [`CloneBody`], the default, for bodies that implement
/// [`Clone`], and [`NoReplay`] for any body (no retry). Implement it for a body that can be
/// copied only sometimes (a body that may be buffered or streaming, say).
///
/// ```
/// use keepfresh::middleware::Replay;
///
/// /// Replays GET and HEAD requests only.
/// #[derive(Clone, Debug)]
/// struct SafeMethodsOnly;
///
/// impl<B: Clone> Replay<B> for SafeMethodsOnly {
///     fn replay(&self, request: &http::Request<B>) -> Option<http::Request<B>> {
///         if !request.method().is_safe() {
///             return None;
///         }
///         keepfresh::middleware::CloneBody.replay(request)
///     }
/// }
///
/// let post = http::Request::post("https://api.example.com/").body(()).unwrap();
/// assert!(SafeMethodsOnly.replay(&post).is_none());
/// ```
pub trait Replay<B> {
    /// A copy of `request` (method, URI, version, headers, extensions and body), or `None` if it
    /// cannot be replayed.
    fn replay(&self, request: &http::Request<B>) -> Option<http::Request<B>>;
}

/// Replays a request by cloning it, body included: the default of
/// [`AuthLayer`](super::AuthLayer), for bodies that implement [`Clone`] (`String`,
/// `Vec<u8>`, `Bytes`, `http_body_util::Full<Bytes>`, `()`…).
///
/// ```
/// use keepfresh::middleware::{CloneBody, Replay};
///
/// let request = http::Request::post("https://api.example.com/items")
///     .header("content-type", "application/json")
///     .body(r#"{"name":"x"}"#.to_owned())
///     .unwrap();
/// let copy = CloneBody.replay(&request).unwrap();
/// assert_eq!(copy.uri(), request.uri());
/// assert_eq!(copy.headers(), request.headers());
/// assert_eq!(copy.body(), request.body());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneBody;

impl<B: Clone> Replay<B> for CloneBody {
    fn replay(&self, request: &http::Request<B>) -> Option<http::Request<B>> {
        let mut copy = http::Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

/// Never replays: for bodies that cannot be cloned (a streaming body, hyper's `Incoming`, a
/// boxed body). On a 401 the token is still reported and invalidated, so the next request gets
/// a new one, and the 401 is handed to the caller.
///
/// ```
/// use keepfresh::middleware::{NoReplay, Replay};
///
/// /// A body that cannot be cloned.
/// struct Streaming;
///
/// let request = http::Request::new(Streaming);
/// assert!(NoReplay.replay(&request).is_none());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReplay;

impl<B> Replay<B> for NoReplay {
    fn replay(&self, _request: &http::Request<B>) -> Option<http::Request<B>> {
        None
    }
}

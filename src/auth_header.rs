//! One interface over every kind of credential, so that a server attaches "the auth header"
//! whether it holds an OAuth [`Credential`] or an [`ApiKey`](crate::ApiKey).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::apikey::KeyHeader;
use crate::credential::{Credential, Token};
use crate::error::Error;
use crate::secret::Fingerprint;

/// The name of the `Authorization` header, in the lowercase HTTP/2 requires.
pub(crate) const AUTHORIZATION: &str = "authorization";

/// Something that authorizes HTTP requests: it hands out the header to attach, and hears
/// when a server rejected one. Implemented by [`Credential`] (`Authorization: Bearer` with a
/// fresh access token) and by [`ApiKey`](crate::ApiKey) (the key, in the header it is
/// configured for), so a server can hold `Arc<dyn AuthSource>` without caring which kind it
/// has.
///
/// # Examples
/// One request function for every kind of source: attach the header; on a 401, report the
/// rejection and retry once if the source says a retry can help.
/// ```
/// use std::sync::Arc;
/// use keepfresh::{
///     refresher_fn, AccessToken, ApiKey, AuthHeader, AuthSource, Credential, RefreshToken,
///     TokenResponse, TokenSet,
/// };
///
/// /// Stands in for an HTTP call; answers 401 to a revoked token or a wrong key.
/// fn send(header: &AuthHeader) -> u16 {
///     match header.expose_value() {
///         "Bearer at-1" | "wrong-key" => 401,
///         _ => 200,
///     }
/// }
///
/// async fn call(source: &dyn AuthSource) -> Result<u16, keepfresh::Error> {
///     let header = source.auth_header().await?;
///     let status = send(&header);
///     if status == 401 && source.rejected(&header).should_retry() {
///         return Ok(send(&source.auth_header().await?));
///     }
///     Ok(status)
/// }
///
/// # let rt = tokio::runtime::Runtime::new().unwrap();
/// # rt.block_on(async {
/// let now = time::OffsetDateTime::now_utc();
/// let tokens = TokenSet::new(
///     AccessToken::new("at-1"),
///     Some(RefreshToken::new("rt-1")),
///     now,
///     now + time::Duration::hours(1),
/// );
/// let credential = Credential::builder(refresher_fn(|_| async {
///     Ok(TokenResponse::new(AccessToken::new("at-2")).with_expires_in(3600))
/// }))
/// .tokens(tokens)
/// .build()
/// .await?;
///
/// let sources: Vec<Arc<dyn AuthSource>> = vec![
///     Arc::new(credential),
///     Arc::new(ApiKey::new("right-key").unwrap()),
///     Arc::new(
///         ApiKey::new("wrong-key")
///             .unwrap()
///             .with_header(keepfresh::KeyHeader::named("x-api-key").unwrap()),
///     ),
/// ];
/// // The credential's rejected token is replaced and the retry succeeds; the right key works
/// // at once; the wrong key is not retried.
/// let mut statuses = Vec::new();
/// for source in &sources {
///     statuses.push(call(source.as_ref()).await?);
/// }
/// assert_eq!(statuses, [200, 200, 401]);
/// # Ok::<(), keepfresh::Error>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait AuthSource: fmt::Debug + Send + Sync {
    /// The header to attach to the next request.
    ///
    /// # Errors
    /// Whatever keeps the source from authorizing: for a [`Credential`], the errors of
    /// [`Credential::token`], and [`Error::is_unsendable_token`] for an access token that
    /// cannot be sent in a header. An [`ApiKey`](crate::ApiKey) never fails here: it was
    /// checked when it was loaded.
    ///
    /// # Cancel safety
    /// Cancel safe for both implementations of this crate (see [`Credential::token`]).
    async fn auth_header(&self) -> Result<AuthHeader, Error>;

    /// Reports that a server rejected `header` (HTTP 401), and says whether asking for a new
    /// header and retrying can help. Never blocks.
    ///
    /// For a [`Credential`], the token that was sent stops being served and one refresh
    /// starts ([`Credential::invalidate`]), unless a newer token is already current.
    /// An [`ApiKey`](crate::ApiKey) cannot be refreshed: the answer is
    /// [`Rejection::Permanent`], meaning the key is wrong, revoked or lacks access.
    ///
    /// A header from another source is not an error: the source acts as for a header that is
    /// no longer current.
    ///
    /// See the [type-level example](AuthSource#examples).
    fn rejected(&self, header: &AuthHeader) -> Rejection;
}

/// What [`AuthSource::rejected`] did about a rejected header.
///
/// ```
/// use keepfresh::Rejection;
/// assert!(Rejection::Refreshing.should_retry());
/// assert!(Rejection::Superseded.should_retry());
/// assert!(!Rejection::Permanent.should_retry());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// The header was current: it is no longer handed out, and a refresh started. The next
    /// [`auth_header`](AuthSource::auth_header) waits for it.
    Refreshing,
    /// Nothing was started: a newer header is already current, or a refresh for this one is
    /// already under way (another request reported it first), or the header did not come from
    /// this source. The next [`auth_header`](AuthSource::auth_header) gives the current one.
    Superseded,
    /// The source cannot produce a different header (an API key): retrying cannot help, and
    /// the credential needs fixing (a new key, more access).
    Permanent,
}

impl Rejection {
    /// Whether asking for a new header and retrying the request once may succeed.
    ///
    /// See the [type-level example](Rejection).
    pub fn should_retry(self) -> bool {
        match self {
            Rejection::Refreshing | Rejection::Superseded => true,
            Rejection::Permanent => false,
        }
    }
}

/// A header to attach to a request, from an [`AuthSource`]: its name and its secret value.
///
/// `Debug` shows the name and the [`Fingerprint`] of the token or key in the value, never the
/// value; the value is zeroed on drop. Keep the header until the answer arrives, and pass it to
/// [`AuthSource::rejected`] on a 401: it identifies exactly the token that was sent.
///
/// ```
/// use keepfresh::{ApiKey, AuthSource};
/// # futures::executor::block_on(async {
/// let key = ApiKey::new("sk-123").unwrap();
/// let header = key.auth_header().await.unwrap();
/// assert_eq!(header.name(), "authorization");
/// assert_eq!(header.expose_value(), "Bearer sk-123");
/// assert_eq!(header.fingerprint(), key.fingerprint());
/// assert!(!format!("{header:?}").contains("sk-123"));
/// # });
/// ```
pub struct AuthHeader {
    name: Name,
    value: Zeroizing<String>,
    origin: Origin,
}

enum Name {
    Authorization,
    Custom(Arc<str>),
}

/// What the value was made from: a credential's token (what a rejection invalidates) or a key.
enum Origin {
    Token(Token),
    Key(Fingerprint),
}

impl AuthHeader {
    /// `Authorization: Bearer <access token>`.
    pub(crate) fn for_token(token: Token) -> Result<Self, Error> {
        if header_safe(token.secret()).is_err() {
            return Err(Error::unsendable_token());
        }
        Ok(AuthHeader {
            name: Name::Authorization,
            value: join(Some("Bearer"), token.secret()),
            origin: Origin::Token(token),
        })
    }

    /// `key` as `header` says; the key was checked when it was made.
    pub(crate) fn for_key(header: &KeyHeader, key: &str, fingerprint: Fingerprint) -> Self {
        AuthHeader {
            name: header
                .shared_name()
                .map_or(Name::Authorization, |name| Name::Custom(name.clone())),
            value: join(header.scheme(), key),
            origin: Origin::Key(fingerprint),
        }
    }

    /// The header's name, in lowercase (`authorization`, `x-api-key`, …).
    ///
    /// See the [type-level example](AuthHeader).
    pub fn name(&self) -> &str {
        match &self.name {
            Name::Authorization => AUTHORIZATION,
            Name::Custom(name) => name,
        }
    }

    /// The header's value (`Bearer <token>`, `<key>`, …). Call this only where the request is
    /// built; HTTP libraries that can should mark the header sensitive (`http`'s
    /// `HeaderValue::set_sensitive`), so that it is left out of their logs too.
    ///
    /// See the [type-level example](AuthHeader).
    pub fn expose_value(&self) -> &str {
        &self.value
    }

    /// The fingerprint of the token or key in the value: the same as
    /// [`Token::fingerprint`] or [`ApiKey::fingerprint`](crate::ApiKey::fingerprint).
    ///
    /// See the [type-level example](AuthHeader).
    pub fn fingerprint(&self) -> Fingerprint {
        match &self.origin {
            Origin::Token(token) => token.fingerprint(),
            Origin::Key(fingerprint) => *fingerprint,
        }
    }

    /// The credential's token the header carries (its expiry, generation, scope); `None` for
    /// an API key.
    ///
    /// ```
    /// use keepfresh::{ApiKey, AuthSource};
    /// # futures::executor::block_on(async {
    /// let header = ApiKey::new("sk-123").unwrap().auth_header().await.unwrap();
    /// assert!(header.token().is_none());
    /// # });
    /// ```
    pub fn token(&self) -> Option<&Token> {
        match &self.origin {
            Origin::Token(token) => Some(token),
            Origin::Key(_) => None,
        }
    }
}

impl fmt::Debug for AuthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeader")
            .field("name", &self.name())
            .field("value", &format_args!("<redacted> {}", self.fingerprint()))
            .finish()
    }
}

/// `<scheme> <secret>`, or the secret alone, in a buffer sized so it is never reallocated
/// (which would leave unwiped copies).
fn join(scheme: Option<&str>, secret: &str) -> Zeroizing<String> {
    let len = scheme.map_or(0, |s| s.len() + 1) + secret.len();
    let mut value = Zeroizing::new(String::with_capacity(len));
    if let Some(scheme) = scheme {
        value.push_str(scheme);
        value.push(' ');
    }
    value.push_str(secret);
    value
}

/// Why a secret cannot be sent as (part of) a header value.
pub(crate) enum Unsafe {
    Empty,
    /// CR and LF would end the header and start others; other control characters are refused
    /// by HTTP or read differently by different servers.
    Control,
    /// HTTP strips whitespace around a header value, so the server would see another secret.
    EdgeWhitespace,
}

/// Whether `secret` can be sent in a header value unchanged.
pub(crate) fn header_safe(secret: &str) -> Result<(), Unsafe> {
    // Runs for every header a credential hands out, over JWTs of a kilobyte or more: printable
    // ASCII (almost every token) is recognized with a branch-free fold the compiler vectorizes,
    // and only other text is decoded to look for Unicode control characters.
    let printable_ascii = secret
        .bytes()
        .fold(true, |ok, b| ok & (b.wrapping_sub(0x20) < 0x5f));
    if secret.is_empty() {
        Err(Unsafe::Empty)
    } else if !printable_ascii && secret.chars().any(char::is_control) {
        Err(Unsafe::Control)
    } else if secret.starts_with(char::is_whitespace) || secret.ends_with(char::is_whitespace) {
        Err(Unsafe::EdgeWhitespace)
    } else {
        Ok(())
    }
}

/// `Authorization: Bearer <access token>` with a valid access token from
/// [`Credential::token`]; a rejection invalidates exactly the token that was sent
/// ([`Credential::invalidate`]), so that one refresh starts however many requests report it.
///
/// See the [trait-level example](AuthSource#examples).
#[async_trait]
impl AuthSource for Credential {
    async fn auth_header(&self) -> Result<AuthHeader, Error> {
        AuthHeader::for_token(self.token().await?)
    }

    fn rejected(&self, header: &AuthHeader) -> Rejection {
        match &header.origin {
            Origin::Token(token) if self.invalidate(token) => Rejection::Refreshing,
            _ => Rejection::Superseded,
        }
    }
}

/// A shared source is a source, so `Arc<dyn AuthSource>` can be passed wherever an
/// `impl AuthSource` is expected.
///
/// ```
/// use std::sync::Arc;
/// use keepfresh::{ApiKey, AuthSource};
/// fn takes(_: impl AuthSource) {}
/// let shared: Arc<dyn AuthSource> = Arc::new(ApiKey::new("sk-123").unwrap());
/// takes(shared);
/// ```
#[async_trait]
impl<T: AuthSource + ?Sized> AuthSource for Arc<T> {
    async fn auth_header(&self) -> Result<AuthHeader, Error> {
        (**self).auth_header().await
    }

    fn rejected(&self, header: &AuthHeader) -> Rejection {
        (**self).rejected(header)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{header_safe, Unsafe};

    fn verdict(result: Result<(), Unsafe>) -> &'static str {
        match result {
            Ok(()) => "safe",
            Err(Unsafe::Empty) => "empty",
            Err(Unsafe::Control) => "control",
            Err(Unsafe::EdgeWhitespace) => "edge whitespace",
        }
    }

    /// `header_safe` without its printable-ASCII fast path.
    fn by_definition(secret: &str) -> &'static str {
        if secret.is_empty() {
            "empty"
        } else if secret.chars().any(char::is_control) {
            "control"
        } else if secret.starts_with(char::is_whitespace) || secret.ends_with(char::is_whitespace) {
            "edge whitespace"
        } else {
            "safe"
        }
    }

    /// Characters at the edges of the fast path: C0 and C1 controls, DEL, tab, space, the last
    /// printable ASCII character, non-ASCII text and whitespace.
    fn edgy() -> impl Strategy<Value = char> {
        prop_oneof![
            Just('\r'),
            Just('\t'),
            Just('\u{1f}'),
            Just(' '),
            Just('~'),
            Just('\u{7f}'),
            Just('\u{80}'),
            Just('\u{85}'),
            Just('\u{9f}'),
            Just('\u{a0}'),
            Just('é'),
            Just('\u{2028}'),
            Just('a'),
            any::<char>(),
        ]
    }

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_definition(
            chars in prop::collection::vec(edgy(), 0..24),
        ) {
            let secret: String = chars.into_iter().collect();
            prop_assert_eq!(verdict(header_safe(&secret)), by_definition(&secret), "{:?}", secret);
        }

        #[test]
        fn arbitrary_text_agrees_with_the_definition(secret in any::<String>()) {
            prop_assert_eq!(verdict(header_safe(&secret)), by_definition(&secret), "{:?}", secret);
        }
    }

    #[test]
    fn a_long_printable_token_is_safe() {
        let jwt = format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.{}",
            "a".repeat(420),
            "s_-".repeat(100)
        );
        assert_eq!(verdict(header_safe(&jwt)), "safe");
        assert_eq!(verdict(header_safe(&format!("{jwt}\u{85}"))), "control");
        assert_eq!(verdict(header_safe(&format!("{jwt} "))), "edge whitespace");
    }
}

//! What callers hold: [`Token`] and the published snapshot it reads, and [`Status`].

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::machine::Phase;
use crate::runtime::MonoTime;
use crate::secret::{AccessToken, Fingerprint};
use crate::store::Version;
use crate::sync::Loaded;
use crate::token::TokenSet;

/// What lock-free readers see: the current set and until when it may be handed out without
/// asking the engine.
pub(crate) struct Snapshot {
    /// Identifies the credential, so that a token of another credential is never taken for
    /// one of this one's (generations of different credentials collide).
    pub(crate) owner: u64,
    pub(crate) set: Option<Arc<TokenSet>>,
    pub(crate) generation: u64,
    pub(crate) fast_until: MonoTime,
    /// From when a token handed out is past its refresh point (served stale, for metrics);
    /// [`MonoTime::MAX`] when `fast_until` does not reach beyond it.
    #[cfg(feature = "metrics")]
    pub(crate) stale_from: MonoTime,
}

/// An access token handed out by [`Credential::token`](crate::Credential::token).
///
/// Holding it is cheap and never blocks the credential from publishing newer tokens. Pass it
/// to [`Credential::invalidate`](crate::Credential::invalidate) when a resource server rejects
/// it. It exposes the access token, its expiry and scope — never the refresh token, which only
/// the engine uses.
pub struct Token {
    pub(crate) snap: Loaded<Snapshot>,
}

impl Token {
    fn set(&self) -> &TokenSet {
        // A Token is only built from a snapshot the machine allowed to serve, which always
        // holds a token set.
        self.snap
            .set
            .as_deref()
            .expect("a served snapshot holds a token set")
    }

    /// The access token.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, Credential, TokenSet};
    /// # let set = TokenSet::new(AccessToken::new("at"), None, time::OffsetDateTime::now_utc(), time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).tokens(set).build().await.unwrap();
    /// let token = c.token().await.unwrap();
    /// assert_eq!(token.access_token().expose_secret(), "at");
    /// # });
    /// ```
    pub fn access_token(&self) -> &AccessToken {
        self.set().access_token()
    }

    /// The access token's value, for an `Authorization: Bearer` header.
    ///
    /// See the [`Credential` example](crate::Credential#examples).
    pub fn secret(&self) -> &str {
        self.set().access_token().expose_secret()
    }

    /// The scope the token was granted, if the provider said.
    ///
    /// ```
    /// # use keepfresh::{AccessToken, Credential, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// # let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1)).with_scope("read");
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).tokens(set).build().await.unwrap();
    /// let token = c.token().await.unwrap();
    /// assert_eq!(token.scope(), Some("read"));
    /// # });
    /// ```
    pub fn scope(&self) -> Option<&str> {
        self.set().scope()
    }

    /// The generation of the token set (1 for the first, +1 for each new one).
    ///
    /// ```
    /// # use keepfresh::{AccessToken, Credential, TokenSet};
    /// # let now = time::OffsetDateTime::now_utc();
    /// # let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1));
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// # let c = Credential::builder(keepfresh::refresher_fn(|_| async { Err(keepfresh::RefreshError::transient("x")) })).tokens(set).build().await.unwrap();
    /// assert_eq!(c.token().await.unwrap().generation(), 1);
    /// # });
    /// ```
    pub fn generation(&self) -> u64 {
        self.snap.generation
    }

    /// When the access token expires (wall clock).
    ///
    /// See [`TokenSet::expires_at`].
    pub fn expires_at(&self) -> OffsetDateTime {
        self.set().expires_at()
    }

    /// A short hash of the access token for logs.
    ///
    /// See [`AccessToken::fingerprint`].
    pub fn fingerprint(&self) -> Fingerprint {
        self.set().access_token().fingerprint()
    }

    pub(crate) fn owner(&self) -> u64 {
        self.snap.owner
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("generation", &self.snap.generation)
            .field("access_token", self.access_token())
            .finish()
    }
}

/// A summary of a credential's state, without secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The current phase (as of the last event the credential processed).
    pub phase: Phase,
    /// The current generation (0: never had a token).
    pub generation: u64,
    /// Expiry of the current access token.
    pub expires_at: Option<OffsetDateTime>,
    /// Fingerprint of the current access token.
    pub access_token: Option<Fingerprint>,
    /// Fingerprint of the current refresh token.
    pub refresh_token: Option<Fingerprint>,
    /// Whether the current token set is not yet durable in the store (a save is being retried).
    pub persist_pending: bool,
    /// The store version last read or written.
    pub store_version: Option<Version>,
    /// Whether [`Credential::shutdown`](crate::Credential::shutdown) was called.
    pub closed: bool,
}

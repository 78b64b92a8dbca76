//! Many credentials, one per (issuer, client, resource, scopes, subject), so that tokens minted
//! for one resource or scope set are never handed out for another, and a refresh token is never
//! sent to an issuer other than the one that issued it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;

use crate::credential::Credential;
use crate::error::Error;
use crate::sync::Mutex;

/// What a credential is bound to. Two requests share a credential only if every part is equal;
/// scopes compare as a set (order and duplicates do not matter).
///
/// ```
/// use keepfresh::pool::CredentialKey;
/// let a = CredentialKey::new("https://auth.example", "client-1")
///     .resource("https://mcp.example/")
///     .scopes(["read", "write"]);
/// let b = CredentialKey::new("https://auth.example", "client-1")
///     .resource("https://mcp.example/")
///     .scopes(["write", "read", "read"]);
/// assert_eq!(a, b);
/// assert_ne!(a, a.clone().resource("https://other.example/"));
/// assert_eq!(a.issuer(), "https://auth.example");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    issuer: String,
    client_id: String,
    resource: Option<String>,
    scopes: BTreeSet<String>,
    subject: Option<String>,
}

impl CredentialKey {
    /// A key for `client_id` at `issuer`, with no resource, scopes or subject.
    ///
    /// See the [type-level example](CredentialKey).
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        CredentialKey {
            issuer: issuer.into(),
            client_id: client_id.into(),
            resource: None,
            scopes: BTreeSet::new(),
            subject: None,
        }
    }

    /// Binds the key to an RFC 8707 resource indicator.
    ///
    /// See the [type-level example](CredentialKey).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Binds the key to a set of scopes.
    ///
    /// See the [type-level example](CredentialKey).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Binds the key to a subject (the end user the tokens act for).
    ///
    /// ```
    /// let k = keepfresh::pool::CredentialKey::new("iss", "cid").subject("user-42");
    /// assert_eq!(k.subject_id(), Some("user-42"));
    /// ```
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The issuer.
    ///
    /// See the [type-level example](CredentialKey).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client id.
    ///
    /// ```
    /// assert_eq!(keepfresh::pool::CredentialKey::new("iss", "cid").client_id(), "cid");
    /// ```
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The resource indicator, if bound to one.
    ///
    /// ```
    /// assert_eq!(keepfresh::pool::CredentialKey::new("iss", "cid").resource_indicator(), None);
    /// ```
    pub fn resource_indicator(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The scopes, as a space-separated string in sorted order (the RFC 6749 `scope` form).
    ///
    /// ```
    /// let k = keepfresh::pool::CredentialKey::new("iss", "cid").scopes(["b", "a"]);
    /// assert_eq!(k.scope_string(), "a b");
    /// ```
    pub fn scope_string(&self) -> String {
        self.scopes
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The subject, if bound to one.
    ///
    /// See [`CredentialKey::subject`].
    pub fn subject_id(&self) -> Option<&str> {
        self.subject.as_deref()
    }
}

/// A map of credentials by [`CredentialKey`].
///
/// # Examples
/// ```
/// use keepfresh::pool::{CredentialKey, CredentialPool};
/// use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, TokenSet};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), keepfresh::Error> {
/// let pool = CredentialPool::new();
/// let read = CredentialKey::new("https://auth.example", "cid").scopes(["read"]);
/// let write = CredentialKey::new("https://auth.example", "cid").scopes(["write"]);
/// let build = |scope: &'static str| async move {
///     let now = time::OffsetDateTime::now_utc();
///     let set = TokenSet::new(AccessToken::new(scope), None, now, now + time::Duration::hours(1));
///     Credential::builder(refresher_fn(|_| async { Err(RefreshError::transient("offline")) }))
///         .tokens(set)
///         .build()
///         .await
/// };
/// let r = pool.get_or_build(&read, || build("read-token")).await?;
/// let w = pool.get_or_build(&write, || build("write-token")).await?;
/// assert_eq!(r.token().await?.secret(), "read-token");
/// assert_eq!(w.token().await?.secret(), "write-token");
/// // The same key gives the same credential; the builder is not called again.
/// let again = pool.get_or_build(&read, || async { unreachable!() }).await?;
/// assert_eq!(again.token().await?.secret(), "read-token");
/// // The issuer moved: every credential bound to the old one is dropped.
/// assert_eq!(pool.remove_issuer("https://auth.example"), 2);
/// assert!(pool.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct CredentialPool {
    map: Mutex<HashMap<CredentialKey, Credential>>,
}

impl CredentialPool {
    /// An empty pool.
    ///
    /// See the [type-level example](CredentialPool#examples).
    pub fn new() -> Self {
        Self::default()
    }

    /// The credential for `key`, if present.
    ///
    /// ```
    /// # use keepfresh::pool::{CredentialKey, CredentialPool};
    /// assert!(CredentialPool::new().get(&CredentialKey::new("iss", "cid")).is_none());
    /// ```
    pub fn get(&self, key: &CredentialKey) -> Option<Credential> {
        self.map.lock().get(key).cloned()
    }

    /// The credential for `key`, built with `build` if absent. When two callers build the same
    /// key at once, the first to finish wins and both get its credential (the other is dropped
    /// before it was ever used).
    ///
    /// # Errors
    /// Whatever `build` returns.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is inserted until `build` completes.
    ///
    /// See the [type-level example](CredentialPool#examples).
    pub async fn get_or_build<F, Fut>(
        &self,
        key: &CredentialKey,
        build: F,
    ) -> Result<Credential, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Credential, Error>>,
    {
        if let Some(c) = self.get(key) {
            return Ok(c);
        }
        let built = build().await?;
        Ok(self.map.lock().entry(key.clone()).or_insert(built).clone())
    }

    /// Removes the credential for `key`.
    ///
    /// ```
    /// # use keepfresh::pool::{CredentialKey, CredentialPool};
    /// assert!(CredentialPool::new().remove(&CredentialKey::new("iss", "cid")).is_none());
    /// ```
    pub fn remove(&self, key: &CredentialKey) -> Option<Credential> {
        self.map.lock().remove(key)
    }

    /// Removes every credential bound to `issuer` (the authorization server changed: its
    /// refresh tokens must never be sent to the new one). Returns how many were removed.
    ///
    /// See the [type-level example](CredentialPool#examples).
    pub fn remove_issuer(&self, issuer: &str) -> usize {
        let mut map = self.map.lock();
        let before = map.len();
        map.retain(|k, _| k.issuer != issuer);
        before - map.len()
    }

    /// The number of credentials.
    ///
    /// ```
    /// assert_eq!(keepfresh::pool::CredentialPool::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether the pool is empty.
    ///
    /// See the [type-level example](CredentialPool#examples).
    pub fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }
}

impl fmt::Debug for CredentialPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.lock();
        f.debug_struct("CredentialPool")
            .field("keys", &map.keys().collect::<Vec<_>>())
            .finish()
    }
}

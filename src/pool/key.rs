//! [`CredentialKey`]: what a pooled credential is bound to, laid out so that the parts every
//! user of one grant shares are stored once per pool, not once per user.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What a credential is bound to. Two requests share a credential only if every part is equal;
/// scopes compare as a set (order and duplicates do not matter).
///
/// Scopes follow RFC 6749's `scope` syntax: each item given to [`scopes`](CredentialKey::scopes)
/// may itself be a space-separated list, so `["read write"]` and `["write", "read"]` are the
/// same set.
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
/// assert_eq!(a, a.clone().scopes(["read write"]));
/// assert_ne!(a, a.clone().resource("https://other.example/"));
/// assert_eq!(a.issuer(), "https://auth.example");
/// ```
#[derive(Clone, Eq, PartialOrd, Ord)]
pub struct CredentialKey {
    /// Issuer, client, resource and scopes: one copy per pool, shared by every subject's key
    /// (the pool interns it).
    pub(super) binding: Arc<Binding>,
    subject: Option<Box<str>>,
}

/// Everything in a key but the subject.
#[derive(Clone, Debug)]
pub(super) struct Binding {
    issuer: Box<str>,
    client_id: Box<str>,
    resource: Option<Box<str>>,
    /// Sorted, deduplicated, space-separated: the RFC 6749 form.
    scopes: Box<str>,
    /// A digest of the fields above, computed when they change: a lookup hashes eight bytes
    /// for them instead of every string, twice (shard and map).
    digest: u64,
}

impl Binding {
    fn fields(&self) -> (&str, &str, Option<&str>, &str) {
        (
            &self.issuer,
            &self.client_id,
            self.resource.as_deref(),
            &self.scopes,
        )
    }

    fn seal(&mut self) {
        // A fixed-key SipHash: the digest only needs to be stable and well spread; the pool's
        // map hashes it again with its own random keys.
        let mut h = std::hash::DefaultHasher::new();
        self.fields().hash(&mut h);
        self.digest = h.finish();
    }
}

impl PartialEq for Binding {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.fields() == other.fields()
    }
}

impl Eq for Binding {}

impl Hash for Binding {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

impl PartialOrd for Binding {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Binding {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fields().cmp(&other.fields())
    }
}

impl PartialEq for CredentialKey {
    fn eq(&self, other: &Self) -> bool {
        // Keys in a pool share one binding: the pointer answers without comparing strings.
        (Arc::ptr_eq(&self.binding, &other.binding) || self.binding == other.binding)
            && self.subject == other.subject
    }
}

impl Hash for CredentialKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal keys have equal bindings, so equal digests.
        self.binding.hash(state);
        self.subject.hash(state);
    }
}

impl CredentialKey {
    /// A key for `client_id` at `issuer`, with no resource, scopes or subject.
    ///
    /// See the [type-level example](CredentialKey).
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>) -> Self {
        let mut binding = Binding {
            issuer: issuer.into().into_boxed_str(),
            client_id: client_id.into().into_boxed_str(),
            resource: None,
            scopes: Box::default(),
            digest: 0,
        };
        binding.seal();
        CredentialKey {
            binding: Arc::new(binding),
            subject: None,
        }
    }

    /// Binds the key to an RFC 8707 resource indicator.
    ///
    /// See the [type-level example](CredentialKey).
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        let binding = Arc::make_mut(&mut self.binding);
        binding.resource = Some(resource.into().into_boxed_str());
        binding.seal();
        self
    }

    /// Binds the key to a set of scopes (replacing any set before).
    ///
    /// See the [type-level example](CredentialKey).
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let items: Vec<String> = scopes.into_iter().map(Into::into).collect();
        let set: BTreeSet<&str> = items.iter().flat_map(|s| s.split_whitespace()).collect();
        let binding = Arc::make_mut(&mut self.binding);
        binding.scopes = set.into_iter().collect::<Vec<_>>().join(" ").into();
        binding.seal();
        self
    }

    /// Binds the key to a subject (the end user the tokens act for).
    ///
    /// ```
    /// let k = keepfresh::pool::CredentialKey::new("iss", "cid").subject("user-42");
    /// assert_eq!(k.subject_id(), Some("user-42"));
    /// ```
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into().into_boxed_str());
        self
    }

    /// The issuer.
    ///
    /// See the [type-level example](CredentialKey).
    pub fn issuer(&self) -> &str {
        &self.binding.issuer
    }

    /// The client id.
    ///
    /// ```
    /// assert_eq!(keepfresh::pool::CredentialKey::new("iss", "cid").client_id(), "cid");
    /// ```
    pub fn client_id(&self) -> &str {
        &self.binding.client_id
    }

    /// The resource indicator, if bound to one.
    ///
    /// ```
    /// assert_eq!(keepfresh::pool::CredentialKey::new("iss", "cid").resource_indicator(), None);
    /// ```
    pub fn resource_indicator(&self) -> Option<&str> {
        self.binding.resource.as_deref()
    }

    /// The scopes, as a space-separated string in sorted order (the RFC 6749 `scope` form).
    ///
    /// ```
    /// let k = keepfresh::pool::CredentialKey::new("iss", "cid").scopes(["b", "a"]);
    /// assert_eq!(k.scope_string(), "a b");
    /// ```
    pub fn scope_string(&self) -> String {
        self.binding.scopes.to_string()
    }

    /// The subject, if bound to one.
    ///
    /// See [`CredentialKey::subject`].
    pub fn subject_id(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The scopes without allocating (space-separated, sorted).
    #[cfg(feature = "metrics")]
    pub(crate) fn scopes_str(&self) -> &str {
        &self.binding.scopes
    }

    /// A cheap, fixed-key spread of the key, to pick a shard (not for the map itself).
    pub(super) fn shard_hint(&self) -> u64 {
        // FNV-1a over the subject, seeded with the binding's digest.
        let mut h = self.binding.digest ^ 0xcbf2_9ce4_8422_2325;
        for b in self.subject.as_deref().unwrap_or("").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialKey")
            .field("issuer", &self.binding.issuer)
            .field("client_id", &self.binding.client_id)
            .field("resource", &self.binding.resource)
            .field("scopes", &self.binding.scopes)
            .field("subject", &self.subject)
            .finish()
    }
}

//! [`Replaced`]: what a process remembers of a token set it moved past.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, LazyLock};

use crate::secret::{AccessToken, RefreshToken};
use crate::token::TokenSet;

/// One key for the process: hashes are compared only within it.
static KEY: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// A token set this process held and knows to be older than the one it holds, remembered as
/// three keyed 64-bit hashes (of the whole set, of its access token and of its refresh token)
/// instead of the set itself.
///
/// A credential remembers up to sixteen replaced sets; as hashes they take 24 bytes each
/// instead of keeping every old token string alive (a 1 KiB JWT access token times sixteen,
/// per credential, in a pool of a million). The key is random per process, so the hashes say
/// nothing outside it, and two different tokens collide with probability 2⁻⁶⁴.
///
/// ```
/// use keepfresh::flight::Replaced;
/// use keepfresh::{AccessToken, RefreshToken, TokenSet};
/// let wall = time::OffsetDateTime::UNIX_EPOCH;
/// let old = TokenSet::new(AccessToken::new("a0"), Some(RefreshToken::new("r0")), wall, wall);
/// let new = TokenSet::new(AccessToken::new("a1"), Some(RefreshToken::new("r1")), wall, wall);
/// let r = Replaced::of(&old);
/// assert!(r.is_set(&old) && !r.is_set(&new));
/// assert!(r.has_access_token(old.access_token()));
/// assert!(r.has_refresh_token(old.refresh_token().unwrap()));
/// assert!(!r.has_refresh_token(new.refresh_token().unwrap()));
/// assert_eq!(format!("{r:?}"), "Replaced(..)");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    set: u64,
    access: u64,
    refresh: u64,
}

impl Replaced {
    /// Remembers `set`.
    ///
    /// See the [type-level example](Replaced).
    pub fn of(set: &TokenSet) -> Self {
        Replaced {
            set: set_hash(set),
            access: access_hash(set.access_token()),
            refresh: refresh_hash(set.refresh_token()),
        }
    }

    /// Whether `set` is the set remembered (every field equal, up to a 2⁻⁶⁴ collision).
    ///
    /// See the [type-level example](Replaced).
    pub fn is_set(&self, set: &TokenSet) -> bool {
        self.set == set_hash(set)
    }

    /// Whether the set remembered carried `token`.
    ///
    /// See the [type-level example](Replaced).
    pub fn has_access_token(&self, token: &AccessToken) -> bool {
        self.access == access_hash(token)
    }

    /// Whether the set remembered carried the refresh token `token`.
    ///
    /// See the [type-level example](Replaced).
    pub fn has_refresh_token(&self, token: &RefreshToken) -> bool {
        self.refresh == refresh_hash(Some(token))
    }
}

/// A token set's hashes as [`Replaced`] remembers them, computed once to compare the set with
/// every remembered one ([`Replaced::matches`]) instead of hashing it again for each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    set: u64,
    access: Option<u64>,
    refresh: Option<u64>,
}

impl Probe {
    /// The hashes of `set`, and of the access and refresh tokens to look for (`None`: not
    /// looked for).
    pub(crate) fn new(
        set: &TokenSet,
        access: Option<&AccessToken>,
        refresh: Option<&RefreshToken>,
    ) -> Self {
        Probe {
            set: set_hash(set),
            access: access.map(access_hash),
            refresh: refresh.map(|t| refresh_hash(Some(t))),
        }
    }
}

impl Replaced {
    /// `self.is_set(set) || access.is_some_and(|a| self.has_access_token(a)) ||
    /// refresh.is_some_and(|t| self.has_refresh_token(t))` for the `set`, `access` and
    /// `refresh` of `probe`.
    #[inline]
    pub(crate) fn matches(&self, probe: &Probe) -> bool {
        self.set == probe.set
            || probe.access == Some(self.access)
            || probe.refresh == Some(self.refresh)
    }
}

impl fmt::Debug for Replaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keyed hashes reveal nothing, but they identify nothing to a reader either.
        f.write_str("Replaced(..)")
    }
}

impl From<&TokenSet> for Replaced {
    fn from(set: &TokenSet) -> Self {
        Replaced::of(set)
    }
}

impl From<Arc<TokenSet>> for Replaced {
    fn from(set: Arc<TokenSet>) -> Self {
        Replaced::of(&set)
    }
}

impl From<&Arc<TokenSet>> for Replaced {
    fn from(set: &Arc<TokenSet>) -> Self {
        Replaced::of(set)
    }
}

/// Each hash is tagged with what it hashes, so an access token never matches a refresh token.
fn hasher(tag: u8) -> impl Hasher {
    let mut h = KEY.build_hasher();
    h.write_u8(tag);
    h
}

fn access_hash(token: &AccessToken) -> u64 {
    let mut h = hasher(1);
    token.expose_secret().hash(&mut h);
    h.finish()
}

fn refresh_hash(token: Option<&RefreshToken>) -> u64 {
    let mut h = hasher(2);
    token.map(RefreshToken::expose_secret).hash(&mut h);
    h.finish()
}

fn set_hash(set: &TokenSet) -> u64 {
    let mut h = hasher(3);
    set.access_token().expose_secret().hash(&mut h);
    set.refresh_token()
        .map(RefreshToken::expose_secret)
        .hash(&mut h);
    set.issued_at().hash(&mut h);
    set.expires_at().hash(&mut h);
    set.scope().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn set(access: &str, refresh: Option<&str>, expires: i64, scope: Option<&str>) -> TokenSet {
        let wall = OffsetDateTime::UNIX_EPOCH;
        let mut s = TokenSet::new(
            AccessToken::new(access),
            refresh.map(RefreshToken::new),
            wall,
            wall + time::Duration::seconds(expires),
        );
        if let Some(scope) = scope {
            s = s.with_scope(scope);
        }
        s
    }

    #[test]
    fn a_set_differing_in_any_field_is_another_set() {
        let base = set("a", Some("r"), 60, Some("read"));
        let r = Replaced::of(&base);
        assert!(r.is_set(&set("a", Some("r"), 60, Some("read"))));
        for other in [
            set("b", Some("r"), 60, Some("read")),
            set("a", Some("s"), 60, Some("read")),
            set("a", None, 60, Some("read")),
            set("a", Some("r"), 61, Some("read")),
            set("a", Some("r"), 60, None),
            set("a", Some("r"), 60, Some("write")),
        ] {
            assert!(!r.is_set(&other));
        }
    }

    #[test]
    fn an_access_token_never_matches_a_refresh_token_of_the_same_text() {
        let r = Replaced::of(&set("same", Some("other"), 60, None));
        assert!(r.has_access_token(&AccessToken::new("same")));
        assert!(!r.has_refresh_token(&RefreshToken::new("same")));
        let no_refresh = Replaced::of(&set("a", None, 60, None));
        assert!(!no_refresh.has_refresh_token(&RefreshToken::new("")));
    }

    #[test]
    fn a_probe_matches_exactly_as_the_three_comparisons() {
        let remembered = [
            set("a", Some("r"), 60, None),
            set("b", None, 60, Some("read")),
            set("c", Some("s"), 61, None),
        ];
        let stored = [
            set("a", Some("r"), 60, None),
            set("a", Some("x"), 60, None),
            set("x", Some("r"), 60, None),
            set("b", None, 60, None),
            set("y", Some("s"), 60, None),
            set("z", None, 60, None),
        ];
        for m in &remembered {
            let r = Replaced::of(m);
            for st in &stored {
                for access in [None, Some(st.access_token())] {
                    for refresh in [None, st.refresh_token()] {
                        let each = r.is_set(st)
                            || access.is_some_and(|a| r.has_access_token(a))
                            || refresh.is_some_and(|t| r.has_refresh_token(t));
                        assert_eq!(r.matches(&Probe::new(st, access, refresh)), each);
                    }
                }
            }
        }
    }
}

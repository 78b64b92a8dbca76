//! Secret strings that never print, are wiped from memory on drop and compare in constant time.
//!
//! # What is wiped, and what is not
//! keepfresh zeroizes the copies it owns:
//! - the secret types ([`AccessToken`], [`RefreshToken`], [`ClientSecret`], API keys, store
//!   keys) wipe their buffer on drop;
//! - a token answer is read into a zeroizing buffer sized from `Content-Length` (grown by copying
//!   into a new zeroizing buffer, never by reallocation), and its token fields are parsed
//!   straight into zeroizing strings that become the secret types without a further copy — not
//!   into a `serde_json::Value`; other fields (an `id_token`) are skipped, not copied;
//! - the refresh and revocation forms are written into zeroizing buffers sized for the worst
//!   case, so they never reallocate;
//! - store documents and sealed files are read and written through zeroizing buffers.
//!
//! Copies that belong to dependencies are outside its reach, and are not wiped:
//! - **hyper/reqwest** keep the request body they are handed and the response chunks they read
//!   in their own buffers;
//! - **serde_json** decodes a JSON string with escape sequences in a scratch buffer;
//!   **form_urlencoded** percent-decodes into its own;
//! - the **OS** (socket buffers, page cache of a token file, swap) and the keyring or Redis
//!   server keep theirs.
//!
//! Wiping shortens how long a secret sits in this process's heap; it does not make a process
//! that an attacker can read safe.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A short, non-reversible identifier of a secret for logs and events: the first 8 hex digits
/// of the SHA-256 of the secret.
///
/// Two fingerprints being equal says (with overwhelming likelihood) that the secrets are equal;
/// the fingerprint does not help recover the secret.
///
/// ```
/// use keepfresh::AccessToken;
/// let a = AccessToken::new("at-123");
/// assert_eq!(a.fingerprint(), AccessToken::new("at-123").fingerprint());
/// assert_ne!(a.fingerprint(), AccessToken::new("at-124").fingerprint());
/// assert_eq!(a.fingerprint().to_string().len(), 8);
/// assert!(!a.fingerprint().to_string().contains("at-123"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    pub(crate) fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        Fingerprint([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Zeroizing<String>);

        impl $name {
            /// Wraps a secret value.
            ///
            /// ```
            #[doc = concat!("let s = keepfresh::", stringify!($name), "::new(\"value\");")]
            /// assert_eq!(s.expose_secret(), "value");
            /// ```
            pub fn new(value: impl Into<String>) -> Self {
                $name(Zeroizing::new(value.into()))
            }

            /// Takes a buffer that is already zeroizing, without copying it.
            #[allow(dead_code)]
            pub(crate) fn from_zeroizing(value: Zeroizing<String>) -> Self {
                $name(value)
            }

            /// The secret itself. Call this only where the secret is sent (an `Authorization`
            /// header, a token request body) or stored.
            ///
            /// ```
            #[doc = concat!("let s = keepfresh::", stringify!($name), "::new(\"value\");")]
            /// assert_eq!(s.expose_secret().len(), 5);
            /// ```
            pub fn expose_secret(&self) -> &str {
                &self.0
            }

            /// A short hash for logs; see [`Fingerprint`].
            ///
            /// ```
            #[doc = concat!("let s = keepfresh::", stringify!($name), "::new(\"value\");")]
            /// println!("using {}", s.fingerprint());
            /// ```
            pub fn fingerprint(&self) -> Fingerprint {
                Fingerprint::of(self.0.as_bytes())
            }

            /// Whether the secret is the empty string.
            ///
            /// ```
            #[doc = concat!("assert!(keepfresh::", stringify!($name), "::new(\"\").is_empty());")]
            /// ```
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "(<redacted> {})"), self.fingerprint())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }

        /// Constant-time comparison: the time taken does not depend on where the values differ.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
            }
        }

        impl Eq for $name {}

        /// Serializes the secret itself: for token stores only.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(Self::new)
            }
        }
    };
}

secret_type!(
    /// An OAuth access token (or API key) sent to resource servers.
    ///
    /// `Debug` shows only the fingerprint, `Display` shows `<redacted>`, the bytes are zeroed
    /// on drop and `==` runs in constant time.
    ///
    /// ```
    /// use keepfresh::AccessToken;
    /// let t = AccessToken::new("s3cr3t-access");
    /// assert!(!format!("{t:?} {t}").contains("s3cr3t"));
    /// assert_eq!(t, AccessToken::new("s3cr3t-access"));
    /// ```
    AccessToken,
    "AccessToken"
);

secret_type!(
    /// An OAuth refresh token.
    ///
    /// Redacted in `Debug`/`Display`, zeroed on drop, compared in constant time.
    ///
    /// ```
    /// use keepfresh::RefreshToken;
    /// let t = RefreshToken::new("s3cr3t-refresh");
    /// assert!(!format!("{t:?} {t}").contains("s3cr3t"));
    /// ```
    RefreshToken,
    "RefreshToken"
);

secret_type!(
    /// An OAuth client secret.
    ///
    /// Redacted in `Debug`/`Display`, zeroed on drop, compared in constant time.
    ///
    /// ```
    /// use keepfresh::ClientSecret;
    /// let s = ClientSecret::new("s3cr3t-client");
    /// assert!(!format!("{s:?} {s}").contains("s3cr3t"));
    /// ```
    ClientSecret,
    "ClientSecret"
);

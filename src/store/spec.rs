//! Store specs: one line of text that names a store, for command lines and configuration files
//! (`file:~/.config/app/tokens.json`, `redis://cache:6379/github-alice`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::{MemoryStore, StoreError, StoreErrorKind, TokenStore};

/// A parsed store spec.
///
/// | spec | store | feature |
/// |---|---|---|
/// | `memory:` | [`MemoryStore`] (this process only) | — |
/// | `file:PATH` | `FileStore` | `file` |
/// | `encrypted-file:PATH?key=keyring` | `EncryptedFileStore`, key in the OS keyring | `encrypted` + `keyring` |
/// | `encrypted-file:PATH?key=env:VAR` | key from an environment variable | `encrypted` |
/// | `encrypted-file:PATH?key=file:KEYPATH` | key from a private file | `encrypted` |
/// | `keyring:SERVICE/ACCOUNT` | `KeyringStore` | `keyring` |
/// | `redis://[USER:PASSWORD@]HOST[:PORT][/DB]/KEY` | `RedisStore` (also `rediss://`) | `redis` |
///
/// A leading `~/` in a path is the home directory. `Display` and `Debug` never show a
/// password from a Redis URL. An encrypted file opened by spec is sealed for the identity
/// `keepfresh` (its file name is bound too); `key=keyring` keeps one key per token file in the
/// keyring (service `keepfresh`, account `file-key:PATH`), created on first use.
///
/// ```
/// use keepfresh::store::spec::{KeySource, StoreSpec};
///
/// let spec: StoreSpec = "encrypted-file:/var/lib/app/t.json?key=env:APP_KEY".parse().unwrap();
/// assert_eq!(
///     spec,
///     StoreSpec::EncryptedFile { path: "/var/lib/app/t.json".into(), key: KeySource::Env("APP_KEY".into()) }
/// );
/// let redis: StoreSpec = "redis://app:hunter2@cache:6379/github-alice".parse().unwrap();
/// assert_eq!(redis.to_string(), "redis://app:***@cache:6379/github-alice");
/// let e = "ftp://x".parse::<StoreSpec>().unwrap_err();
/// assert!(e.to_string().contains("memory:, file:PATH"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreSpec {
    /// `memory:`
    Memory,
    /// `file:PATH`
    File {
        /// The token file.
        path: PathBuf,
    },
    /// `encrypted-file:PATH?key=…`
    EncryptedFile {
        /// The sealed token file.
        path: PathBuf,
        /// Where the 32-byte key comes from.
        key: KeySource,
    },
    /// `keyring:SERVICE/ACCOUNT`
    Keyring {
        /// The keyring service name.
        service: String,
        /// The keyring account name.
        account: String,
    },
    /// `redis://…/KEY` or `rediss://…/KEY`
    Redis {
        /// The connection URL, without the key.
        url: String,
        /// The credential's key (prefix) in Redis.
        key: String,
    },
}

/// Where an encrypted file store's key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// The OS keyring (created on first use).
    Keyring,
    /// An environment variable holding the key.
    Env(String),
    /// A private file holding the key.
    File(PathBuf),
}

/// A spec that could not be parsed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; a store spec is one of memory:, file:PATH, encrypted-file:PATH?key=keyring|env:VAR|file:PATH, keyring:SERVICE/ACCOUNT, redis://HOST:PORT/KEY",
            self.0
        )
    }
}

impl std::error::Error for SpecError {}

/// The keyring service of keys that `encrypted-file:…?key=keyring` specs create, and the
/// identity their files are sealed for.
#[cfg(feature = "encrypted")]
const SPEC_SERVICE: &str = "keepfresh";

fn bad(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

impl FromStr for StoreSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<StoreSpec, SpecError> {
        let s = s.trim();
        if s.chars().any(char::is_control) {
            return Err(bad("the spec contains control characters"));
        }
        if s == "memory:" || s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        if let Some(rest) = s.strip_prefix("file:") {
            return Ok(StoreSpec::File { path: path(rest)? });
        }
        if let Some(rest) = s.strip_prefix("encrypted-file:") {
            let (file, query) = rest.split_once('?').ok_or_else(|| {
                bad("encrypted-file: needs ?key=keyring, ?key=env:VAR or ?key=file:PATH")
            })?;
            let key = query.strip_prefix("key=").ok_or_else(|| {
                bad(format!(
                    "encrypted-file: unknown option {query:?}; the only one is key="
                ))
            })?;
            let key = if key == "keyring" {
                KeySource::Keyring
            } else if let Some(var) = key.strip_prefix("env:") {
                if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(bad(format!(
                        "encrypted-file: {var:?} is not an environment variable name"
                    )));
                }
                KeySource::Env(var.to_owned())
            } else if let Some(p) = key.strip_prefix("file:") {
                KeySource::File(path(p)?)
            } else {
                return Err(bad(format!(
                    "encrypted-file: key={key:?} is none of keyring, env:VAR, file:PATH"
                )));
            };
            return Ok(StoreSpec::EncryptedFile {
                path: path(file)?,
                key,
            });
        }
        if let Some(rest) = s.strip_prefix("keyring:") {
            let (service, account) = rest
                .split_once('/')
                .filter(|(s, a)| !s.is_empty() && !a.is_empty())
                .ok_or_else(|| bad("keyring: needs SERVICE/ACCOUNT"))?;
            return Ok(StoreSpec::Keyring {
                service: service.to_owned(),
                account: account.to_owned(),
            });
        }
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            let scheme_end = s.find("://").map_or(0, |i| i + 3);
            let (url, key) = s
                .rsplit_once('/')
                .filter(|(u, k)| u.len() >= scheme_end && !k.is_empty())
                .ok_or_else(|| bad("redis: needs a key after the host: redis://HOST:PORT/KEY"))?;
            if url.len() < scheme_end + 1 {
                return Err(bad("redis: needs a host: redis://HOST:PORT/KEY"));
            }
            if key.contains(['{', '}']) {
                return Err(bad(
                    "redis: the key may not contain { or } (keepfresh adds the hash tag)",
                ));
            }
            return Ok(StoreSpec::Redis {
                url: url.to_owned(),
                key: key.to_owned(),
            });
        }
        Err(bad(format!("unknown store spec {:?}", redact_url(s))))
    }
}

fn path(p: &str) -> Result<PathBuf, SpecError> {
    if p.is_empty() {
        return Err(bad("the path is empty"));
    }
    if let Some(rest) = p.strip_prefix("~/") {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("the path starts with ~/ but HOME is not set"))?;
        return Ok(PathBuf::from(home).join(rest));
    }
    Ok(PathBuf::from(p))
}

/// `scheme://user:***@host…`: a URL with its password hidden.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}{shown}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory:"),
            StoreSpec::File { path } => write!(f, "file:{}", path.display()),
            StoreSpec::EncryptedFile { path, key } => {
                write!(f, "encrypted-file:{}?key=", path.display())?;
                match key {
                    KeySource::Keyring => f.write_str("keyring"),
                    KeySource::Env(v) => write!(f, "env:{v}"),
                    KeySource::File(p) => write!(f, "file:{}", p.display()),
                }
            }
            StoreSpec::Keyring { service, account } => write!(f, "keyring:{service}/{account}"),
            StoreSpec::Redis { url, key } => write!(f, "{}/{key}", redact_url(url)),
        }
    }
}

impl fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreSpec({self})")
    }
}

impl StoreSpec {
    /// The spec as text, with its Redis password: what another process needs to open the same
    /// store (a worker's `--store` argument, a child's environment). It parses back to this
    /// spec. Everything else it prints as [`Display`](fmt::Display) does, which hides the
    /// password; log that one, never this.
    ///
    /// ```
    /// use keepfresh::store::spec::StoreSpec;
    ///
    /// let spec: StoreSpec = "redis://app:hunter2@cache:6379/github-alice".parse().unwrap();
    /// assert_eq!(spec.expose_spec(), "redis://app:hunter2@cache:6379/github-alice");
    /// assert_eq!(spec.expose_spec().parse::<StoreSpec>().unwrap(), spec);
    /// assert!(!spec.to_string().contains("hunter2"));
    /// ```
    pub fn expose_spec(&self) -> String {
        match self {
            StoreSpec::Redis { url, key } => format!("{url}/{key}"),
            other => other.to_string(),
        }
    }

    /// Opens the store the spec names. Each call opens a new handle, as another process would;
    /// `memory:` gives a new, empty store each time.
    ///
    /// ```
    /// use keepfresh::store::spec::StoreSpec;
    /// # futures::executor::block_on(async {
    /// let store = "memory:".parse::<StoreSpec>().unwrap().open().await.unwrap();
    /// assert!(store.load().await.unwrap().is_none());
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`StoreErrorKind::Config`] when keepfresh was built without the store's feature, and
    /// whatever opening the store fails with (permissions, an unreachable Redis, a missing key).
    pub async fn open(&self) -> Result<Arc<dyn TokenStore>, StoreError> {
        match self {
            StoreSpec::Memory => Ok(Arc::new(MemoryStore::new())),
            #[cfg(feature = "file")]
            StoreSpec::File { path } => Ok(Arc::new(super::FileStore::open(path.clone())?)),
            #[cfg(feature = "encrypted")]
            StoreSpec::EncryptedFile { path, key } => {
                let key = match key {
                    KeySource::Env(var) => super::Key::from_env(var)?,
                    KeySource::File(p) => super::Key::from_file(p)?,
                    #[cfg(feature = "keyring")]
                    KeySource::Keyring => {
                        // One key per token file; the keyring API blocks.
                        let account = format!("file-key:{}", path.display());
                        blocking::unblock(move || super::Key::from_keyring(SPEC_SERVICE, &account))
                            .await?
                    }
                    #[cfg(not(feature = "keyring"))]
                    KeySource::Keyring => {
                        return Err(StoreError::new(
                            StoreErrorKind::Config,
                            format!("{self}: this build of keepfresh lacks the keyring feature"),
                        ))
                    }
                };
                Ok(Arc::new(super::EncryptedFileStore::open(
                    path.clone(),
                    SPEC_SERVICE,
                    key,
                )?))
            }
            #[cfg(feature = "keyring")]
            StoreSpec::Keyring { service, account } => {
                let (service, account) = (service.clone(), account.clone());
                let store =
                    blocking::unblock(move || super::KeyringStore::open(&service, &account))
                        .await?;
                Ok(Arc::new(store))
            }
            #[cfg(feature = "redis")]
            StoreSpec::Redis { url, key } => Ok(Arc::new(super::RedisStore::open(url, key).await?)),
            // Reachable when this build lacks a store's feature.
            #[allow(unreachable_patterns)]
            other => Err(StoreError::new(
                StoreErrorKind::Config,
                format!(
                    "{other}: this build of keepfresh lacks the feature for this store ({})",
                    other.feature()
                ),
            )),
        }
    }

    /// The cargo feature the store needs.
    ///
    /// ```
    /// use keepfresh::store::spec::StoreSpec;
    /// assert_eq!("file:t.json".parse::<StoreSpec>().unwrap().feature(), "file");
    /// ```
    pub fn feature(&self) -> &'static str {
        match self {
            StoreSpec::Memory => "none",
            StoreSpec::File { .. } => "file",
            StoreSpec::EncryptedFile {
                key: KeySource::Keyring,
                ..
            } => "encrypted, keyring",
            StoreSpec::EncryptedFile { .. } => "encrypted",
            StoreSpec::Keyring { .. } => "keyring",
            StoreSpec::Redis { .. } => "redis",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let cases: &[(&str, StoreSpec)] = &[
            ("memory:", StoreSpec::Memory),
            (
                "file:/a/b.json",
                StoreSpec::File {
                    path: "/a/b.json".into(),
                },
            ),
            (
                "encrypted-file:t.bin?key=keyring",
                StoreSpec::EncryptedFile {
                    path: "t.bin".into(),
                    key: KeySource::Keyring,
                },
            ),
            (
                "encrypted-file:t.bin?key=file:/k",
                StoreSpec::EncryptedFile {
                    path: "t.bin".into(),
                    key: KeySource::File("/k".into()),
                },
            ),
            (
                "keyring:gh/alice",
                StoreSpec::Keyring {
                    service: "gh".into(),
                    account: "alice".into(),
                },
            ),
            (
                "redis://127.0.0.1:6379/alice",
                StoreSpec::Redis {
                    url: "redis://127.0.0.1:6379".into(),
                    key: "alice".into(),
                },
            ),
            (
                "rediss://u:p@h:1/2/alice",
                StoreSpec::Redis {
                    url: "rediss://u:p@h:1/2".into(),
                    key: "alice".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let got: StoreSpec = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&got, want, "{text}");
            // Display gives a spec that parses back to the same (passwords aside).
            if !text.contains('@') {
                assert_eq!(got.to_string().parse::<StoreSpec>().unwrap(), got, "{text}");
            }
            // expose_spec gives one whatever the password.
            assert_eq!(
                got.expose_spec().parse::<StoreSpec>().unwrap(),
                got,
                "{text}"
            );
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, needle) in [
            ("", "unknown store spec"),
            ("file:", "path is empty"),
            ("encrypted-file:t.bin", "needs ?key="),
            ("encrypted-file:t.bin?cipher=x", "unknown option"),
            ("encrypted-file:t.bin?key=vault", "none of keyring"),
            (
                "encrypted-file:t.bin?key=env:A-B",
                "not an environment variable",
            ),
            ("keyring:onlyservice", "SERVICE/ACCOUNT"),
            ("keyring:/a", "SERVICE/ACCOUNT"),
            ("redis://host:6379", "needs a key"),
            ("redis://host/", "needs a key"),
            ("redis:///k", "needs a host"),
            ("redis://h/{k}", "hash tag"),
            ("file:a\nb", "control characters"),
            ("s3://bucket/x", "unknown store spec"),
        ] {
            let e = text.parse::<StoreSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn passwords_never_show() {
        for text in [
            "redis://:hunter2@h:1/k",
            "redis://u:hunter2@h:1/k",
            "rediss://hunter2@h/k",
        ] {
            let spec: StoreSpec = text.parse().unwrap();
            assert!(!spec.to_string().contains("hunter2"), "{spec}");
            assert!(!format!("{spec:?}").contains("hunter2"));
        }
        let e = "redis2://u:hunter2@h/k".parse::<StoreSpec>().unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

//! Turning the client's errors into [`StoreError`]s that name the failure but never a secret:
//! the URL's password is replaced wherever it could appear, and no reply text that might echo
//! a token is ever quoted.

use ::redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, ServerErrorKind};
use zeroize::Zeroizing;

use crate::store::{StoreError, StoreErrorKind};

/// What an error message may say about the server: its address without the password, and the
/// password itself, to scrub from any text the client produces.
pub(super) struct Target {
    shown: String,
    password: Option<Zeroizing<String>>,
}

impl Target {
    pub(super) fn new(info: &ConnectionInfo) -> Self {
        let settings = info.redis_settings();
        let password = settings
            .password()
            .filter(|p| !p.is_empty())
            .map(|p| Zeroizing::new(p.to_owned()));
        let user = match (settings.username(), &password) {
            (Some(user), Some(_)) => format!("{user}:***@"),
            (Some(user), None) => format!("{user}@"),
            (None, Some(_)) => ":***@".to_owned(),
            (None, None) => String::new(),
        };
        let db = settings.db();
        let shown = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                format!("redis://{user}{}:{port}/{db}", bracket(host))
            }
            ConnectionAddr::TcpTls { host, port, .. } => {
                format!("rediss://{user}{}:{port}/{db}", bracket(host))
            }
            ConnectionAddr::Unix(path) => format!("unix://{user}{}?db={db}", path.display()),
            #[allow(unreachable_patterns)]
            _ => format!("redis://{user}(unsupported address)/{db}"),
        };
        Target { shown, password }
    }

    /// The server's address for messages and `Debug`, with `***` for a password.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// `text` with every occurrence of the password replaced by `***`.
    pub(super) fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) => text.replace(p.as_str(), "***"),
            None => text.to_owned(),
        }
    }

    /// A client error as a store error: `what` says which operation on which key failed.
    pub(super) fn error(&self, what: &str, e: &RedisError) -> StoreError {
        let kind = match e.kind() {
            _ if e.is_timeout() => StoreErrorKind::Timeout,
            ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::Server(ServerErrorKind::NoPerm) => StoreErrorKind::Config,
            _ if matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM")) => {
                StoreErrorKind::Config
            }
            // A reply of the wrong shape: a key holding something else than this store's data.
            ErrorKind::UnexpectedReturnType => StoreErrorKind::Corrupt,
            _ if matches!(e.code(), Some("WRONGTYPE" | "CORRUPT")) => StoreErrorKind::Corrupt,
            _ => StoreErrorKind::Io,
        };
        // The client's text names the failure (connection refused, WRONGPASS, NOSCRIPT…); our
        // arguments (token sets) are never part of it, and the password is scrubbed anyway.
        let detail = self.scrub(&e.to_string());
        StoreError::new(kind, format!("{what} at {}: {detail}", self.shown))
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A URL as it may be shown before it was parsed: everything between the first `:` of the
/// user information and the last `@` becomes `***` (a password may hold `/`, `?` or `@`), and so
/// does any `pass=` query value (the socket form).
pub(super) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "(not a URL)".to_owned();
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let mut out = head.to_owned();
    let after = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    let Some(q) = after.find('?') else {
        out.push_str(after);
        return out;
    };
    out.push_str(&after[..=q]);
    let (query, fragment) = after[q + 1..]
        .split_once('#')
        .map_or((&after[q + 1..], None), |(query, f)| (query, Some(f)));
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("pass") => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    out.push_str(&pairs.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// The error for a URL the client refused, without the client's text (which may quote it).
pub(super) fn bad_url(url: &str, e: &RedisError) -> StoreError {
    StoreError::new(
        StoreErrorKind::Config,
        format!("invalid Redis URL {}: {}", redact_url(url), e.category()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact_url("rediss://host:6380"), "rediss://host:6380");
        assert_eq!(
            redact_url("redis+unix:///tmp/r.sock?db=1&pass=s3cret#x"),
            "redis+unix:///tmp/r.sock?db=1&pass=***#x"
        );
        assert_eq!(redact_url("s3cret"), "(not a URL)");
        assert_eq!(
            redact_url("redis://u:p@ss:w@rd@host/"),
            "redis://u:***@host/"
        );
        assert_eq!(
            redact_url("redis://u:pa/ss?x@host/0"),
            "redis://u:***@host/0"
        );
    }

    #[test]
    fn parsed_targets_show_no_password() {
        let client = ::redis::Client::open("redis://alice:s3cret@127.0.0.1:6390/2").unwrap();
        let target = Target::new(client.get_connection_info());
        assert_eq!(target.shown(), "redis://alice:***@127.0.0.1:6390/2");
        assert_eq!(target.scrub("WRONGPASS s3cret"), "WRONGPASS ***");
    }
}

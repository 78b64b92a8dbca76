//! What a resource server's answer means for the token: RFC 6750 `WWW-Authenticate: Bearer`
//! challenges, and the verdict a caller acts on (invalidate and retry once, step up, or nothing).

use crate::limits::{
    MAX_CHALLENGE_HEADER_BYTES as MAX_HEADER, MAX_CHALLENGE_VALUE_CHARS as MAX_VALUE,
};

/// The parameters of a `Bearer` challenge (RFC 6750 §3, plus MCP's `resource_metadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BearerChallenge {
    /// `realm`.
    pub realm: Option<String>,
    /// `error`: `invalid_token`, `insufficient_scope`, `invalid_request`, …
    pub error: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
    /// `scope`: the scopes the resource needs (for a step-up).
    pub scope: Option<String>,
    /// `resource_metadata`: where the protected resource's metadata lives (MCP authorization).
    pub resource_metadata: Option<String>,
}

/// Finds the first `Bearer` challenge in a `WWW-Authenticate` header value and reads its
/// parameters. Unknown parameters are ignored, quoted strings may contain commas and escapes,
/// other schemes in the same header are skipped. Never panics; `None` without a Bearer
/// challenge. In `realm`, `error` and `error_description`, words that look like tokens (20 or
/// more base64 / JWT characters with a letter and a digit) are replaced by `<redacted>`: a
/// server may echo the token it rejected.
///
/// ```
/// use keepfresh::oauth::parse_bearer_challenge;
/// let c = parse_bearer_challenge(
///     r#"Basic realm="x", Bearer realm="api", error="insufficient_scope", scope="repo admin:org", error_description="needs \"admin\"""#,
/// ).unwrap();
/// assert_eq!(c.error.as_deref(), Some("insufficient_scope"));
/// assert_eq!(c.scope.as_deref(), Some("repo admin:org"));
/// assert_eq!(c.error_description.as_deref(), Some(r#"needs "admin""#));
/// assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
/// assert_eq!(parse_bearer_challenge("Bearer").unwrap(), Default::default());
/// let echoed = parse_bearer_challenge(
///     r#"Bearer error="invalid_token", error_description="token eyJhbGciOi.eyJzdWIiOjEy.c2ln9 expired""#,
/// ).unwrap();
/// assert_eq!(echoed.error_description.as_deref(), Some("token <redacted> expired"));
/// ```
pub fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let mut end = header.len().min(MAX_HEADER);
    while !header.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Parser {
        s: &header[..end],
        i: 0,
    };
    loop {
        p.skip(|c| c == ' ' || c == '\t' || c == ',');
        let scheme = p.token()?;
        let is_bearer = scheme.eq_ignore_ascii_case("bearer");
        let mut challenge = BearerChallenge::default();
        // Parameters follow until the next `scheme` (a token not followed by `=`).
        loop {
            p.skip(|c| c == ' ' || c == '\t' || c == ',');
            let save = p.i;
            let Some(name) = p.token() else { break };
            p.skip(|c| c == ' ' || c == '\t');
            if !p.eat('=') {
                // A token68 (`Bearer abc==`) or the next scheme.
                if p.peek().is_none() || p.peek() == Some(',') {
                    continue;
                }
                p.i = save;
                break;
            }
            p.skip(|c| c == ' ' || c == '\t');
            let value = if p.peek() == Some('"') {
                p.quoted()
            } else {
                p.token().map(str::to_owned).unwrap_or_default()
            };
            let value: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_VALUE)
                .collect();
            if is_bearer {
                let name = name.to_ascii_lowercase();
                // Free text a server writes may echo the token it rejected: token-looking
                // words are cut out (see `Redactor`); `scope` and `resource_metadata` are
                // kept exact, the client acts on them.
                let value = match name.as_str() {
                    "realm" | "error" | "error_description" => super::redact_token_words(&value),
                    _ => value,
                };
                let slot = match name.as_str() {
                    "realm" => &mut challenge.realm,
                    "error" => &mut challenge.error,
                    "error_description" => &mut challenge.error_description,
                    "scope" => &mut challenge.scope,
                    "resource_metadata" => &mut challenge.resource_metadata,
                    _ => continue,
                };
                slot.get_or_insert(value);
            }
        }
        if is_bearer {
            return Some(challenge);
        }
        p.peek()?;
    }
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.i..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.i += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip(&mut self, f: impl Fn(char) -> bool) {
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.i += c.len_utf8();
        }
    }

    /// An RFC 7230 token (plus `/` `=`-free token68 characters used by some servers).
    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        self.skip(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/:".contains(c));
        (self.i > start).then(|| &self.s[start..self.i])
    }

    fn quoted(&mut self) -> String {
        let mut out = String::new();
        self.eat('"');
        while let Some(c) = self.peek() {
            self.i += c.len_utf8();
            match c {
                '"' => break,
                '\\' => {
                    if let Some(n) = self.peek() {
                        self.i += n.len_utf8();
                        out.push(n);
                    }
                }
                _ => out.push(c),
            }
        }
        out
    }
}

/// What a resource server's answer means for the token that was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceVerdict {
    /// Not an authorization problem.
    Accepted,
    /// The token was rejected (401): call [`Credential::invalidate`](crate::Credential::invalidate)
    /// with it and retry the request once with the next token — never in a loop.
    InvalidToken,
    /// The token is valid but lacks scope (403 `insufficient_scope`): a refresh cannot help; the
    /// user must authorize the listed scopes (step-up).
    InsufficientScope {
        /// The scopes the resource asked for, if it said.
        scope: Option<String>,
    },
    /// Forbidden for another reason (403 without `insufficient_scope`): not a token problem.
    Forbidden,
}

/// Classifies a resource server's answer from its status and `WWW-Authenticate` header.
///
/// ```
/// use keepfresh::oauth::{classify_resource_answer, ResourceVerdict};
/// assert_eq!(classify_resource_answer(200, None), ResourceVerdict::Accepted);
/// assert_eq!(
///     classify_resource_answer(401, Some(r#"Bearer error="invalid_token""#)),
///     ResourceVerdict::InvalidToken
/// );
/// assert_eq!(
///     classify_resource_answer(403, Some(r#"Bearer error="insufficient_scope", scope="admin""#)),
///     ResourceVerdict::InsufficientScope { scope: Some("admin".into()) }
/// );
/// assert_eq!(classify_resource_answer(403, None), ResourceVerdict::Forbidden);
/// ```
pub fn classify_resource_answer(status: u16, www_authenticate: Option<&str>) -> ResourceVerdict {
    let challenge = www_authenticate.and_then(parse_bearer_challenge);
    match status {
        401 => ResourceVerdict::InvalidToken,
        403 => match challenge {
            Some(c) if c.error.as_deref() == Some("insufficient_scope") => {
                ResourceVerdict::InsufficientScope { scope: c.scope }
            }
            _ => ResourceVerdict::Forbidden,
        },
        _ => ResourceVerdict::Accepted,
    }
}

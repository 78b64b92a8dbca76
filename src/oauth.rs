//! Turning a token endpoint's HTTP answer into a [`TokenResponse`] or a classified
//! [`RefreshError`], with the quirks real providers have.
//!
//! Handled: JSON and form-encoded bodies; errors sent with HTTP 200 (GitHub's
//! `bad_refresh_token`); Slack's `{"ok": false, "error": …}` envelope; `expires_in` as a number,
//! a float or a string (PayPal), missing (Salesforce, Zendesk), zero, negative or out of range
//! (clamped later by [`RefreshPolicy::lifetime`](crate::RefreshPolicy::lifetime)); empty or HTML
//! bodies; `Retry-After` as seconds or as an HTTP date. Nothing here panics on any input, and
//! no error message contains a token.
//!
//! The other direction — what a *resource server's* 401 or 403 means — is
//! [`classify_resource_answer`]: a 401 invalidates exactly the token that was sent (refresh once,
//! retry once), a 403 `insufficient_scope` is a step-up, never a refresh.
//!
//! With the `http` feature, [`HttpRefresher`] is a ready [`Refresher`](crate::Refresher) for the
//! RFC 6749 refresh grant (client authentication, RFC 8707 `resource`, no automatic retries,
//! transport failures classified as transient or ambiguous), and `discovery` finds the
//! endpoints: RFC 9728 protected-resource metadata, then RFC 8414 authorization-server
//! metadata, in MCP's order, with the issuer, the resource and PKCE `S256` checked.

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::limits::{MAX_ERROR_TEXT_CHARS, MAX_TOKEN_BYTES};
use crate::refresher::{ErrorClass, RefreshError};
use crate::secret::{AccessToken, RefreshToken};
use crate::token::TokenResponse;

/// Parses a `Retry-After` header value — delay-seconds or an HTTP date — into a delay from
/// `now`. Dates in the past give zero; garbage gives `None`.
///
/// ```
/// use keepfresh::oauth::parse_retry_after;
/// use std::time::Duration;
/// use time::macros::datetime;
///
/// let now = datetime!(2026-11-26 10:00:00 UTC);
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("Thu, 26 Nov 2026 10:01:30 GMT", now), Some(Duration::from_secs(90)));
/// assert_eq!(parse_retry_after("Thu, 26 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
/// assert_eq!(parse_retry_after("soon", now), None);
/// assert_eq!(parse_retry_after("-5", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long numbers saturate; the policy caps the delay anyway.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = OffsetDateTime::from(at);
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

/// An HTTP answer from a token endpoint.
#[derive(Clone, Copy, Debug)]
pub struct HttpAnswer<'a> {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The `Retry-After` header, already parsed (see [`parse_retry_after`]).
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: &'a [u8],
}

/// Classifies a token endpoint's answer.
///
/// # Errors
/// A [`RefreshError`] of the class the engine needs:
/// `invalid_grant` (and vendor equivalents) → [`ErrorClass::InvalidGrant`];
/// `invalid_client` → [`ErrorClass::InvalidClient`];
/// `invalid_scope`, `unauthorized_client`, `unsupported_grant_type`, `invalid_request`, 404 →
/// [`ErrorClass::Configuration`]; 408, 429, 5xx → [`ErrorClass::Transient`] with the
/// `Retry-After`; a 2xx whose body cannot be understood → [`ErrorClass::Ambiguous`] (the
/// provider may have rotated the refresh token).
///
/// ```
/// use keepfresh::oauth::{parse_token_response, HttpAnswer};
/// use keepfresh::ErrorClass;
///
/// let ok = parse_token_response(HttpAnswer {
///     status: 200,
///     content_type: Some("application/json"),
///     retry_after: None,
///     body: br#"{"access_token":"a","refresh_token":"r","expires_in":"3600","token_type":"Bearer"}"#,
/// })
/// .unwrap();
/// assert_eq!(ok.expires_in(), Some(3600));
///
/// // GitHub reports errors with HTTP 200.
/// let err = parse_token_response(HttpAnswer {
///     status: 200,
///     content_type: Some("application/json"),
///     retry_after: None,
///     body: br#"{"error":"bad_refresh_token","error_description":"The refresh token passed is incorrect or expired."}"#,
/// })
/// .unwrap_err();
/// assert_eq!(err.class(), ErrorClass::InvalidGrant);
///
/// // Slack's envelope.
/// let err = parse_token_response(HttpAnswer {
///     status: 200, content_type: Some("application/json"), retry_after: None,
///     body: br#"{"ok":false,"error":"invalid_refresh_token"}"#,
/// }).unwrap_err();
/// assert_eq!(err.class(), ErrorClass::InvalidGrant);
///
/// // A 2xx answer with a rotated refresh token but no access token: the refresh token is
/// // kept (the old one may be spent); the empty access token marks the answer as malformed.
/// let odd = parse_token_response(HttpAnswer {
///     status: 200, content_type: Some("application/json"), retry_after: None,
///     body: br#"{"refresh_token":"r2"}"#,
/// }).unwrap();
/// assert!(odd.access_token().is_empty());
/// assert_eq!(odd.refresh_token().unwrap().expose_secret(), "r2");
///
/// // An HTML page with 200: the answer is lost.
/// let err = parse_token_response(HttpAnswer {
///     status: 200, content_type: Some("text/html"), retry_after: None, body: b"<html>",
/// }).unwrap_err();
/// assert_eq!(err.class(), ErrorClass::Ambiguous);
/// ```
pub fn parse_token_response(answer: HttpAnswer<'_>) -> Result<TokenResponse, RefreshError> {
    parse_token_response_redacting(answer, &Redactor::default())
}

/// [`parse_token_response`], cutting the secrets `redactor` knows out of the provider's text.
pub(crate) fn parse_token_response_redacting(
    answer: HttpAnswer<'_>,
    redactor: &Redactor,
) -> Result<TokenResponse, RefreshError> {
    let fields = parse_body(answer.content_type, answer.body);
    let success = (200..300).contains(&answer.status);
    if let Some(fields) = &fields
        && let Some(code) = error_code(fields)
    {
        let class = classify(&code, answer.status);
        // Redacted before it is cut to length, so no prefix of a secret survives the cut.
        let shown_code = sanitize(&redactor.apply(&code), 64);
        let mut message = format!("HTTP {}: {shown_code}", answer.status);
        if let Some(Value::String(desc)) = &fields.error_description {
            message.push_str(": ");
            message.push_str(&sanitize(&redactor.apply(desc), MAX_ERROR_TEXT_CHARS));
        }
        let mut e = RefreshError::new(class, message);
        if let Some(ra) = answer.retry_after {
            e = e.with_retry_after(ra);
        }
        return Err(e);
    }
    if !success {
        let class = match answer.status {
            408 | 425 | 429 | 500..=599 => ErrorClass::Transient,
            400 | 401 | 403 | 404 | 405 | 410 | 415 => ErrorClass::Configuration,
            _ => ErrorClass::Transient,
        };
        let mut e = RefreshError::new(
            class,
            format!("HTTP {} from the token endpoint", answer.status),
        );
        if let Some(ra) = answer.retry_after {
            e = e.with_retry_after(ra);
        }
        return Err(e);
    }
    let Some(fields) = fields else {
        return Err(RefreshError::ambiguous(format!(
            "HTTP {} with a body that is not a token response ({} bytes)",
            answer.status,
            answer.body.len()
        )));
    };
    // The token strings move into the secret types as they are: no copy is left behind.
    let refresh_token = match fields.refresh_token.0 {
        Some(rt) if rt.len() > MAX_TOKEN_BYTES => {
            // Rotated, perhaps, but not a refresh token anyone can store or send back.
            return Err(RefreshError::ambiguous(format!(
                "the refresh token in the answer is {} bytes, over the {MAX_TOKEN_BYTES}-byte limit",
                rt.len()
            )));
        }
        Some(rt) if !rt.is_empty() => Some(RefreshToken::from_zeroizing(rt)),
        _ => None,
    };
    // An access token over the limit counts as missing: the answer is malformed, and a rotated
    // refresh token in it is still kept.
    let access_token = fields.access_token.0.filter(|a| a.len() <= MAX_TOKEN_BYTES);
    let access = match (access_token, refresh_token.as_ref()) {
        (Some(s), _) if !s.is_empty() => AccessToken::from_zeroizing(s),
        // No access token, but a refresh token: the provider may have rotated, so the old
        // refresh token may be spent. Hand the new one to the engine (an empty access token
        // marks the answer as malformed); it keeps and saves it.
        (_, Some(_)) => AccessToken::new(""),
        _ => {
            return Err(RefreshError::ambiguous(
                "token response without an access_token",
            ))
        }
    };
    let mut response = TokenResponse::new(access);
    if let Some(rt) = refresh_token {
        response = response.with_refresh_token(rt);
    }
    if let Some(secs) = fields.expires_in.as_ref().and_then(lifetime_seconds) {
        response = response.with_expires_in(secs);
    }
    if let Some(Value::String(scope)) = &fields.scope {
        response = response.with_scope(scope.as_str());
    }
    Ok(response)
}

/// The fields of a token-endpoint answer that keepfresh reads. The token strings are parsed
/// straight into zeroizing buffers ([`TokenString`]), not into a `serde_json::Value`; every
/// other field (an `id_token` among them) is skipped without being copied.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Fields {
    access_token: TokenString,
    refresh_token: TokenString,
    expires_in: Option<Value>,
    scope: Option<Value>,
    error: Option<Value>,
    error_description: Option<Value>,
    ok: Option<Value>,
}

/// A token field: its string, in a buffer zeroized on drop; `None` when it is absent or not a
/// string (an odd type is treated as absent, as before, rather than failing the whole answer).
#[derive(Default)]
struct TokenString(Option<Zeroizing<String>>);

impl<'de> serde::Deserialize<'de> for TokenString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TokenString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a token string")
            }
            fn visit_str<E>(self, v: &str) -> Result<TokenString, E> {
                // One allocation of the exact size: nothing to grow, nothing left behind.
                Ok(TokenString(Some(Zeroizing::new(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<TokenString, E> {
                Ok(TokenString(Some(Zeroizing::new(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<TokenString, E> {
                Ok(TokenString(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<TokenString, E> {
                Ok(TokenString(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<TokenString, E> {
                Ok(TokenString(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<TokenString, E> {
                Ok(TokenString(None))
            }
            fn visit_unit<E>(self) -> Result<TokenString, E> {
                Ok(TokenString(None))
            }
            fn visit_none<E>(self) -> Result<TokenString, E> {
                Ok(TokenString(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<TokenString, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(TokenString(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<TokenString, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(TokenString(None))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn parse_body(content_type: Option<&str>, body: &[u8]) -> Option<Fields> {
    let is_form = content_type.is_some_and(|c| c.contains("x-www-form-urlencoded"));
    if !is_form {
        // Not an object, or a field twice: not a token response we can trust.
        if let Ok(fields) = serde_json::from_slice::<Fields>(body) {
            return Some(fields);
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            // JSON, but not one object of the expected shape.
            return None;
        }
    }
    let text = std::str::from_utf8(body).ok()?;
    if text.trim_start().starts_with('<') || !text.contains('=') {
        return None;
    }
    let mut fields = Fields::default();
    let mut any = false;
    for (k, v) in form_urlencoded::parse(text.trim().as_bytes()) {
        any = true;
        // The decoded value moves into the zeroizing buffer as it is (percent-decoding's own
        // buffer is form_urlencoded's: see the crate docs on what is zeroized).
        match &*k {
            "access_token" => {
                fields.access_token = TokenString(Some(Zeroizing::new(v.into_owned())))
            }
            "refresh_token" => {
                fields.refresh_token = TokenString(Some(Zeroizing::new(v.into_owned())))
            }
            "expires_in" => fields.expires_in = Some(Value::String(v.into_owned())),
            "scope" => fields.scope = Some(Value::String(v.into_owned())),
            "error" => fields.error = Some(Value::String(v.into_owned())),
            "error_description" => fields.error_description = Some(Value::String(v.into_owned())),
            "ok" => fields.ok = Some(Value::String(v.into_owned())),
            _ => {}
        }
    }
    any.then_some(fields)
}

fn error_code(fields: &Fields) -> Option<String> {
    if fields.ok == Some(Value::Bool(false)) {
        return Some(match &fields.error {
            Some(Value::String(s)) => s.clone(),
            _ => "unknown_error".to_owned(),
        });
    }
    match &fields.error {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Object(o)) => o
            .get("code")
            .or_else(|| o.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn classify(code: &str, status: u16) -> ErrorClass {
    match code {
        "invalid_grant"
        | "bad_refresh_token"
        | "invalid_refresh_token"
        | "token_revoked"
        | "token_expired"
        | "invalid_auth"
        | "expired_token" => ErrorClass::InvalidGrant,
        "invalid_client" | "incorrect_client_credentials" | "bad_client_secret" => {
            ErrorClass::InvalidClient
        }
        "invalid_scope"
        | "unauthorized_client"
        | "unsupported_grant_type"
        | "invalid_request"
        | "invalid_target" => ErrorClass::Configuration,
        "temporarily_unavailable" | "server_error" | "slow_down" | "ratelimited" => {
            ErrorClass::Transient
        }
        _ if status >= 500 || status == 429 => ErrorClass::Transient,
        _ => ErrorClass::Transient,
    }
}

fn lifetime_seconds(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|_| i64::MAX))
            .or_else(|| n.as_f64().map(saturating_f64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(saturating_f64)
                })
                .or_else(|| {
                    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(i64::MAX)
                })
        }
        _ => None,
    }
}

fn saturating_f64(f: f64) -> i64 {
    if f.is_nan() {
        0
    } else {
        // `as` saturates at the i64 bounds.
        f as i64
    }
}

/// Keeps a provider-supplied string printable and short.
fn sanitize(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Cuts secrets out of text a provider wrote (an `error_description`, an error code), before
/// the text goes into an error message.
///
/// Two passes: every secret it was given, raw, base64-encoded (standard and URL-safe alphabets,
/// with and without padding) and URL-encoded; then any word that looks like a token whatever
/// it is (20 or more characters of the base64, base64url, JWT or percent-encoding alphabets,
/// with at least one letter and one digit), so that a token the client never sent (another
/// user's, a new one) is not echoed either. Prose and URLs survive (spaces end words, and a
/// word starting `//` after `https:` is a URL).
#[derive(Default)]
pub(crate) struct Redactor {
    /// Longest first, so that a secret's encoding is cut whole before a shorter form inside it.
    forms: Vec<String>,
}

/// What replaces a redacted secret.
pub(crate) const REDACTED: &str = "<redacted>";

impl Redactor {
    /// Redacts `secrets` (shorter than 4 characters: skipped, they would cut words apart) and
    /// the HTTP Basic credentials `client_id:secret` in the forms a request carries them.
    // Only the HTTP refresher knows the secrets to redact; `base64` comes with its feature.
    #[cfg(feature = "http")]
    pub(crate) fn new<'a>(
        secrets: impl IntoIterator<Item = &'a str>,
        basic: Option<(&str, &str)>,
    ) -> Self {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        use base64::Engine as _;
        let mut forms = Vec::new();
        let mut add = |raw: &str| {
            if raw.len() < 4 {
                return;
            }
            forms.push(raw.to_owned());
            for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                forms.push(engine.encode(raw.as_bytes()));
            }
            forms.push(form_urlencoded::byte_serialize(raw.as_bytes()).collect());
        };
        for s in secrets {
            add(s);
        }
        if let Some((id, secret)) = basic {
            add(&format!("{id}:{secret}"));
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            add(&format!("{}:{}", enc(id), enc(secret)));
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Redactor { forms }
    }

    /// `text` with every secret and every token-looking word replaced by `<redacted>`.
    pub(crate) fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for f in &self.forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), REDACTED);
            }
        }
        redact_token_words(&out)
    }
}

/// A character a token (opaque, base64, base64url, JWT, percent-encoded) can be made of.
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=' | '%')
}

/// Replaces every word of 20 or more token characters holding a letter and a digit.
pub(crate) fn redact_token_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // `//host/path` after a `scheme:` is a URL, kept.
        let looks_like_token = word.len() >= 20
            && !word.starts_with("//")
            && word.chars().any(|c| c.is_ascii_alphabetic())
            && word.chars().any(|c| c.is_ascii_digit());
        out.push_str(if looks_like_token { REDACTED } else { word });
        word.clear();
    };
    for c in text.chars() {
        if token_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

mod challenge;
pub use challenge::{
    classify_resource_answer, parse_bearer_challenge, BearerChallenge, ResourceVerdict,
};

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub use http::{logout, ClientAuth, HttpBuildError, HttpRefresher, HttpRefresherBuilder, Logout};

#[cfg(feature = "http")]
pub mod discovery;
#[cfg(feature = "login")]
pub mod login;

#[cfg(test)]
mod redactor_tests {
    use super::*;

    #[test]
    #[cfg(feature = "http")]
    fn known_secrets_go_in_every_form_and_before_the_cut() {
        use base64::Engine as _;
        let secret = "s3cr3t-VALUE";
        let r = Redactor::new([secret], Some(("client", "pw-1234")));
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let basic = base64::engine::general_purpose::STANDARD.encode("client:pw-1234");
        let text = format!("a {secret} b {b64} c s3cr3t%2DVALUE d Basic {basic}");
        let out = r.apply(&text);
        assert_eq!(
            out,
            "a <redacted> b <redacted> c s3cr3t%2DVALUE d Basic <redacted>"
        );
        // `-` is not encoded by form encoding, so the URL form equals the raw one here; a
        // secret with a space shows the encoded form is covered.
        let r = Redactor::new(["two words!"], None);
        assert_eq!(r.apply("x two+words%21 y"), "x <redacted> y");
        // Short secrets are not cut out of words.
        assert_eq!(Redactor::new(["ab"], None).apply("abc"), "abc");
    }

    #[test]
    fn token_looking_words_go_and_prose_and_urls_stay() {
        let r = Redactor::default();
        assert_eq!(
            r.apply("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl0 revoked"),
            "token <redacted> revoked"
        );
        assert_eq!(
            r.apply("see https://docs.example.com/errors/invalid_grant#section-5.2"),
            "see https://docs.example.com/errors/invalid_grant#section-5.2"
        );
        assert_eq!(
            r.apply("The refresh token passed is incorrect or expired."),
            "The refresh token passed is incorrect or expired."
        );
        // Long words without digits (prose in other languages, identifiers) stay.
        assert_eq!(
            r.apply("unsupported_grant_type_refresh"),
            "unsupported_grant_type_refresh"
        );
    }

    #[test]
    #[cfg(feature = "http")]
    fn a_description_cut_to_length_keeps_no_prefix_of_a_secret() {
        let secret = "kfRT3x8Nc1Qa6Zt9Hm2Jv5Kd7Pg4Sb0U";
        let body = format!(
            r#"{{"error":"invalid_grant","error_description":"{} {secret}"}}"#,
            "x ".repeat(77)
        );
        let e = parse_token_response_redacting(
            HttpAnswer {
                status: 400,
                content_type: Some("application/json"),
                retry_after: None,
                body: body.as_bytes(),
            },
            &Redactor::new([secret], None),
        )
        .unwrap_err();
        assert!(!e.message().contains("kfRT"), "{}", e.message());
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn answer(body: &str) -> Result<TokenResponse, RefreshError> {
        parse_token_response(HttpAnswer {
            status: 200,
            content_type: Some("application/json"),
            retry_after: None,
            body: body.as_bytes(),
        })
    }

    #[test]
    fn an_oversized_access_token_is_malformed_and_the_refresh_token_kept() {
        let at = "a".repeat(MAX_TOKEN_BYTES + 1);
        let r = answer(&format!(
            r#"{{"access_token":"{at}","refresh_token":"r2"}}"#
        ))
        .unwrap();
        assert!(r.access_token().is_empty());
        assert_eq!(r.refresh_token().unwrap().expose_secret(), "r2");
        // At the limit it is a token.
        let at = "a".repeat(MAX_TOKEN_BYTES);
        let r = answer(&format!(r#"{{"access_token":"{at}"}}"#)).unwrap();
        assert_eq!(r.access_token().expose_secret().len(), MAX_TOKEN_BYTES);
        // Without a refresh token it is no answer at all.
        let at = "a".repeat(MAX_TOKEN_BYTES + 1);
        let e = answer(&format!(r#"{{"access_token":"{at}"}}"#)).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Ambiguous);
    }

    #[test]
    fn an_oversized_refresh_token_makes_the_answer_ambiguous() {
        let rt = "r".repeat(MAX_TOKEN_BYTES + 1);
        let e = answer(&format!(r#"{{"access_token":"a","refresh_token":"{rt}"}}"#)).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Ambiguous);
        assert!(e.message().contains("limit"), "{}", e.message());
        assert!(!e.message().contains("rrrr"));
    }
}

//! The fuzz drivers, shared by the cargo-fuzz targets and by the corpus replay test
//! (`tests/fuzz_corpus.rs`), so the committed corpus runs in every `cargo test`.

use std::time::Duration;

use keepfresh::machine::{Action, FlightId, Grant, Input, Machine};
use keepfresh::oauth::{
    classify_resource_answer, parse_bearer_challenge, parse_retry_after, parse_token_response,
    HttpAnswer,
};
use keepfresh::runtime::MonoTime;
use keepfresh::{ErrorClass, RefreshPolicy};

/// Token-endpoint answers: first two bytes pick the status, the third the content type.
pub fn token_response(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let status = 100 + (u16::from_le_bytes([data[0], data[1]]) % 500);
    let content_type = match data[2] % 4 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/x-www-form-urlencoded"),
        _ => Some("text/html; charset=utf-8"),
    };
    let answer = HttpAnswer {
        status,
        content_type,
        retry_after: None,
        body: &data[3..],
    };
    match parse_token_response(answer) {
        Ok(r) => {
            // An empty access token only ever carries a rotated refresh token to the engine.
            assert!(
                !r.access_token().is_empty() || r.refresh_token().is_some(),
                "an empty access token was accepted"
            );
            // The lifetime the engine would use is always within policy bounds.
            let (lifetime, _) = RefreshPolicy::default().lifetime(r.expires_in());
            assert!(lifetime >= Duration::from_secs(1));
        }
        Err(e) => {
            // The message is short and printable whatever the body (codes and descriptions are
            // sanitised and cut), and it never echoes a token: a value marked `s3cr3t` shows
            // only when the body put it in an error field, which the message may quote.
            let message = e.to_string();
            assert!(message.chars().count() <= 300, "an unbounded error message");
            assert!(
                !message.chars().any(char::is_control),
                "a control character in an error message"
            );
            if message.contains(MARKER) {
                assert!(
                    error_fields_mention(&data[3..], MARKER),
                    "an error message echoes a body field that is not an error field"
                );
            }
        }
    }
}

/// A value that stands for a secret in the seeds: no message may show it unless the input put
/// it where a message is allowed to quote.
const MARKER: &str = "s3cr3t";

/// Whether the body (as JSON or as a form, whichever it parses as) has `needle` in an error
/// field: `error`, `error_description`, or a vendor envelope's `error.code` / `error.message`.
fn error_fields_mention(body: &[u8], needle: &str) -> bool {
    let mut values: Vec<String> = Vec::new();
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["error", "error_description"] {
            match map.get(key) {
                Some(serde_json::Value::String(s)) => values.push(s.clone()),
                Some(serde_json::Value::Object(o)) => {
                    for k in ["code", "message"] {
                        if let Some(serde_json::Value::String(s)) = o.get(k) {
                            values.push(s.clone());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        for (k, v) in form_urlencoded::parse(text.trim().as_bytes()) {
            if k == "error" || k == "error_description" {
                values.push(v.into_owned());
            }
        }
    }
    // Messages keep a field's printable characters only.
    values.iter().any(|v| {
        v.chars()
            .filter(|c| !c.is_control())
            .collect::<String>()
            .contains(needle)
    })
}

/// `Retry-After` header values.
pub fn retry_after(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let parsed = parse_retry_after(s, now);
        let t = s.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            assert!(parsed.is_some(), "delay-seconds not understood");
        }
    }
}

/// Event sequences for the pure machine; checks its invariants after every step.
pub fn machine(data: &[u8]) {
    let policy = RefreshPolicy::builder()
        .jitter_seed(data.first().copied().unwrap_or(0) as u64)
        .build()
        .expect("valid policy");
    let mut m = Machine::new(policy);
    let mut now = MonoTime::ZERO;
    let mut flight: Option<FlightId> = None;
    for chunk in data.chunks(4) {
        let [op, a, b, c] = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
            *chunk.get(3).unwrap_or(&0),
        ];
        now = now.saturating_add(Duration::from_millis(u64::from(a) * u64::from(b) * 37));
        let grant = Grant::new(
            now.saturating_sub(Duration::from_secs(u64::from(c))),
            Duration::from_secs(u64::from(b) * 17),
            a % 5 != 0,
        );
        let input = match op % 6 {
            0 => Input::Demand { now },
            1 => Input::Invalidate {
                now,
                generation: u64::from(c % 4),
            },
            2 => match flight {
                Some(f) => Input::RefreshSucceeded {
                    now,
                    flight: f,
                    grant,
                },
                None => Input::Tick { now },
            },
            3 => match flight {
                Some(f) => Input::RefreshFailed {
                    now,
                    flight: f,
                    class: [
                        ErrorClass::Transient,
                        ErrorClass::InvalidGrant,
                        ErrorClass::InvalidClient,
                        ErrorClass::Configuration,
                        ErrorClass::Ambiguous,
                    ][usize::from(c % 5)],
                    retry_after: (b % 3 == 0).then(|| Duration::from_secs(u64::from(a))),
                },
                None => Input::Tick { now },
            },
            4 => Input::Authorize { now, grant },
            _ => Input::Tick { now },
        };
        let was_in_flight = m.flight().is_some();
        let d = m.handle(input);
        if let Some(f) = d.start_refresh {
            assert!(
                !was_in_flight || flight.is_none(),
                "two refreshes in flight"
            );
            flight = Some(f);
        }
        if m.flight().is_none() {
            flight = None;
        }
        if d.action == Action::Serve {
            assert!(
                m.token_valid_at(now) || m.token_in_grace_at(now),
                "served a rejected or expired token"
            );
        }
        if let Some(t) = m.timing() {
            assert!(t.refresh_at <= t.usable_until);
            assert!(m.fast_path_until() <= t.usable_until);
        }
    }
}

/// `WWW-Authenticate` header values from resource servers.
pub fn www_authenticate(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(c) = parse_bearer_challenge(s) {
            for v in [
                &c.realm,
                &c.error,
                &c.error_description,
                &c.scope,
                &c.resource_metadata,
            ]
            .into_iter()
            .flatten()
            {
                assert!(v.chars().count() <= 512, "an unbounded parameter value");
            }
        }
        for status in [200, 401, 403] {
            let _ = classify_resource_answer(status, Some(s));
        }
    }
}

/// One refresh flight's pure plan fed with store and provider answers chosen by the bytes.
/// Checks, whatever the answers: the plan never panics and ends within a bounded number of
/// steps once the store heals; no provider call without a lease (or a store without leases)
/// and a successful re-read; no save after a conflict with a set of another lineage; one
/// release at most, and never while a save is owed.
pub fn flight(data: &[u8]) {
    use keepfresh::flight::{Effect, Feedback, Plan, Report, Start};
    use keepfresh::store::{
        Lease, LeaseOutcome, SaveOutcome, StoreError, StoreErrorKind, Stored, Version,
    };
    use keepfresh::{AccessToken, RefreshError, RefreshToken, TokenResponse, TokenSet};
    use std::sync::Arc;

    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let wall = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let set = |a: &str, r: &str| {
        TokenSet::new(
            AccessToken::new(a),
            Some(RefreshToken::new(r)),
            wall,
            wall + time::Duration::hours(1),
        )
    };
    let base = Arc::new(set("a0", "r0"));
    let foreign = set("x", "xr");
    let has_store = next().is_none_or(|b| b % 8 != 0);
    let policy = RefreshPolicy::builder()
        .jitter_seed(1)
        .fail_open(next().is_some_and(|b| b % 16 == 0))
        .build()
        .unwrap();
    let fail_open = policy.fail_open();
    let mut plan = Plan::new(
        Arc::new(policy),
        has_store,
        Start::new(
            FlightId(1),
            MonoTime::ZERO,
            Some(base.clone()),
            Some(Version(1)),
        ),
    );
    let err = || StoreError::new(StoreErrorKind::Io, "fuzz");
    let mut now = MonoTime::ZERO;
    let mut feedback = Feedback::Start;
    let (mut cleared_lease, mut read_ok, mut foreign_conflict) = (false, false, false);
    let mut lease_id = 0u64;
    let mut releases = 0;
    for step in 0..10_000u32 {
        // After 300 steps every answer succeeds: the plan must then finish.
        let heal = step > 300;
        let mut pick = |n: u8| if heal { 0 } else { next().map_or(0, |b| b % n) };
        let effect = plan.step(now, feedback);
        now = now.saturating_add(Duration::from_millis(u64::from(pick(200))));
        feedback = match effect {
            Effect::Done => {
                assert!(!plan.owes_save() && plan.lease().is_none());
                return;
            }
            Effect::Report(Report::Refreshed { .. }) | Effect::Report(_) => Feedback::Ack,
            Effect::TryLease { .. } => Feedback::Lease(match pick(4) {
                0 => {
                    lease_id += 1;
                    cleared_lease = true;
                    Ok(LeaseOutcome::Acquired(Lease { id: lease_id }))
                }
                1 => {
                    cleared_lease = true;
                    Ok(LeaseOutcome::Unsupported)
                }
                2 => Ok(LeaseOutcome::Held),
                _ => Err(err()),
            }),
            Effect::Load => Feedback::Loaded(match pick(4) {
                0 => {
                    read_ok = true;
                    Ok(Some(Stored {
                        version: Version(1),
                        tokens: (*base).clone(),
                    }))
                }
                1 => {
                    read_ok = true;
                    Ok(None)
                }
                2 => {
                    read_ok = true;
                    Ok(Some(Stored {
                        version: Version(9),
                        tokens: foreign.clone(),
                    }))
                }
                _ => {
                    read_ok = false;
                    Err(err())
                }
            }),
            Effect::Sleep { until } => {
                now = now.max(until);
                Feedback::Slept
            }
            Effect::Call(_) => {
                if has_store && !fail_open {
                    assert!(
                        cleared_lease && read_ok,
                        "provider called without lease and re-read"
                    );
                }
                let result = match pick(5) {
                    0 => Ok(TokenResponse::new(AccessToken::new("a1"))
                        .with_refresh_token(RefreshToken::new("r1"))
                        .with_expires_in(3600)),
                    1 => Ok(TokenResponse::new(AccessToken::new(""))
                        .with_refresh_token(RefreshToken::new("r1"))),
                    2 => Err(RefreshError::invalid_grant("fuzz")),
                    3 => Err(RefreshError::ambiguous("fuzz")),
                    _ => Err(RefreshError::transient("fuzz")),
                };
                Feedback::Called {
                    result,
                    issued: now,
                    issued_wall: wall,
                }
            }
            Effect::Renew { .. } => Feedback::Renewed(match pick(3) {
                0 => Ok(true),
                1 => Ok(false),
                _ => Err(err()),
            }),
            Effect::Save { set: saved, .. } => {
                assert!(
                    !foreign_conflict,
                    "saved after a conflict with another lineage's set"
                );
                Feedback::Saved(match pick(4) {
                    0 => Ok(SaveOutcome::Saved(Version(2))),
                    1 => Ok(SaveOutcome::Conflict(Some(Stored {
                        version: Version(2),
                        tokens: (*saved).clone(),
                    }))),
                    2 => {
                        foreign_conflict = true;
                        Ok(SaveOutcome::Conflict(Some(Stored {
                            version: Version(9),
                            tokens: foreign.clone(),
                        })))
                    }
                    _ => Err(err()),
                })
            }
            Effect::Clear { .. } => {
                Feedback::Cleared(if pick(2) == 0 { Ok(true) } else { Err(err()) })
            }
            Effect::Release { .. } => {
                releases += 1;
                assert!(releases <= 1, "released twice");
                assert!(!plan.owes_save(), "released while a save is owed");
                Feedback::Released
            }
            _ => Feedback::Ack,
        };
    }
    panic!("the plan did not finish after the store healed");
}

/// Discovery: the first line is the identifier the documents were fetched for (an issuer or a
/// resource), the rest is the document. Runs the well-known URL builders on the identifier and
/// both metadata parsers (RFC 8414, RFC 9728) on the document. Checks: every URL built or
/// accepted is `https` (or `http` to a loopback host under a loopback identifier) without
/// credentials or fragment; an accepted document names exactly the expected identifier and
/// PKCE `S256`; no error quotes the document (a `s3cr3t` in it never shows unless the
/// identifier, which errors may quote, has it too).
#[cfg(feature = "http")]
pub fn discovery(data: &[u8]) {
    use keepfresh::oauth::discovery::{
        protected_resource_urls, well_known_urls, AuthorizationServerMetadata,
        ProtectedResourceMetadata,
    };

    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(identifier) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or(&[]);
    let loopback_identifier = is_loopback_url(identifier);
    let check_url = |url: &url::Url, what: &str| {
        match url.scheme() {
            "https" => {}
            "http" => assert!(
                loopback_identifier && is_loopback_url(url.as_str()),
                "{what}: plain http to a remote host accepted"
            ),
            other => panic!("{what}: scheme {other:?} accepted"),
        }
        assert!(url.fragment().is_none(), "{what}: a fragment accepted");
        assert!(
            url.username().is_empty() && url.password().is_none(),
            "{what}: credentials accepted"
        );
        assert!(
            url.host_str().is_some_and(|h| !h.is_empty()),
            "{what}: no host"
        );
    };
    // Errors may quote the identifier (without its control characters).
    let quotable = identifier
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .contains(MARKER);
    let check_error = |e: &keepfresh::oauth::discovery::DiscoveryError| {
        let message = e.to_string();
        assert!(
            quotable || !message.contains(MARKER),
            "a discovery error quotes the document: {message}"
        );
        assert!(!format!("{e:?}").contains(MARKER) || quotable);
    };

    match well_known_urls(identifier) {
        Ok(urls) => {
            assert!((2..=3).contains(&urls.len()));
            for u in &urls {
                check_url(u, "well-known URL");
                assert!(u.path().contains("/.well-known/"));
                assert!(u.query().is_none());
            }
        }
        Err(e) => check_error(&e),
    }
    match protected_resource_urls(identifier) {
        Ok(urls) => {
            assert!((1..=2).contains(&urls.len()));
            for u in &urls {
                check_url(u, "protected-resource URL");
                assert!(u
                    .path()
                    .starts_with("/.well-known/oauth-protected-resource"));
            }
        }
        Err(e) => check_error(&e),
    }
    match AuthorizationServerMetadata::from_json(body, identifier) {
        Ok(meta) => {
            assert_eq!(meta.issuer, identifier, "another issuer accepted");
            assert!(meta
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256"));
            check_url(&meta.authorization_endpoint, "authorization_endpoint");
            check_url(&meta.token_endpoint, "token_endpoint");
            for u in [
                &meta.registration_endpoint,
                &meta.revocation_endpoint,
                &meta.introspection_endpoint,
                &meta.jwks_uri,
            ]
            .into_iter()
            .flatten()
            {
                check_url(u, "optional endpoint");
            }
            let _ = meta.supports_grant_type("refresh_token");
            let _ = meta.supports_token_endpoint_auth_method("none");
        }
        Err(e) => check_error(&e),
    }
    match ProtectedResourceMetadata::from_json(body, identifier) {
        Ok(meta) => {
            assert_eq!(meta.resource, identifier, "another resource accepted");
            assert!(!meta.authorization_servers.is_empty());
            for issuer in &meta.authorization_servers {
                let url = url::Url::parse(issuer)
                    .expect("an authorization server that is not a URL accepted");
                check_url(&url, "authorization_servers");
                assert!(url.query().is_none(), "an issuer with a query accepted");
            }
            if let Some(u) = &meta.jwks_uri {
                check_url(u, "jwks_uri");
            }
        }
        Err(e) => check_error(&e),
    }
}

/// Whether `s` parses as a URL whose host is `localhost` or a loopback address.
#[cfg(feature = "http")]
fn is_loopback_url(s: &str) -> bool {
    let Ok(url) = url::Url::parse(s) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The login's loopback listener: `data` is what a browser (or any local process) sent. Checks
/// the request line's target is split without spaces, and that a redirect is accepted only
/// with this login's `state` (the last one sent), the issuer's `iss` when present or required,
/// and no `error`; a denial's strings are short and printable.
#[cfg(feature = "login")]
pub fn login_callback(data: &[u8]) {
    use keepfresh::fuzzing::{login_redirect, login_request_target};
    use keepfresh::oauth::login::LoginError;

    const STATE: &str = "st4te-Zk3v9Qw";
    const ISSUER: &str = "https://auth.example.com/tenant1";

    let (path, query) = login_request_target(data);
    assert!(!path.contains(' ') && !query.contains(' '));
    assert!(!path.contains('?'));
    let require_iss = data.len().is_multiple_of(2);
    let (mut state, mut iss, mut error, mut code) = (None, None, false, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "state" => state = Some(v.into_owned()),
            "iss" => iss = Some(v.into_owned()),
            "error" => error = true,
            "code" => code = Some(v.into_owned()),
            _ => {}
        }
    }
    match login_redirect(&query, STATE, ISSUER, require_iss) {
        Ok(got) => {
            assert_eq!(
                state.as_deref(),
                Some(STATE),
                "a redirect with a foreign state accepted"
            );
            match &iss {
                Some(i) => assert_eq!(i, ISSUER, "a redirect from another issuer accepted"),
                None => assert!(!require_iss, "a redirect without the required iss accepted"),
            }
            assert!(!error, "an error redirect accepted");
            assert_eq!(code.as_deref(), Some(got.as_str()));
        }
        Err(LoginError::StateMismatch) => assert_ne!(state.as_deref(), Some(STATE)),
        Err(LoginError::Denied { error, description }) => {
            for s in std::iter::once(&error).chain(description.as_ref()) {
                assert!(s.chars().count() <= 200 && !s.chars().any(char::is_control));
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.chars().any(|c| c == '\n' || c == '\r'));
        }
    }
}

/// A `FileStore`'s document: what loads must survive being written back (the JSON document
/// the store writes, rebuilt here) and read again unchanged; a refusal is `Corrupt` and never
/// quotes the file.
#[cfg(feature = "file")]
pub fn store_document(data: &[u8]) {
    use keepfresh::fuzzing::load_store_document;
    use keepfresh::store::StoreErrorKind;

    match load_store_document(data) {
        Ok(Some(stored)) => {
            let again = serde_json::to_vec(&serde_json::json!({
                "keepfresh_store": 1,
                "version": stored.version.0,
                "tokens": stored.tokens,
            }))
            .expect("a loaded token set serializes");
            let reloaded = load_store_document(&again)
                .expect("what was loaded, written back, loads")
                .expect("and is not empty");
            assert_eq!(
                reloaded, stored,
                "a token set changed on its way through the store"
            );
        }
        Ok(None) => {}
        Err(e) => {
            assert_eq!(e.kind(), StoreErrorKind::Corrupt);
            assert!(
                !e.to_string().contains(MARKER),
                "a store error quotes the file"
            );
        }
    }
}

/// An `EncryptedFileStore`'s file under a fixed key. The first byte picks the mode:
/// - 0: open the rest as a file found on disk (header checks, authentication): anything but a
///   file this key sealed is `Corrupt`;
/// - 1: seal the rest as a document, then open and load it: the same bytes come back, and it
///   loads exactly as the plain store loads the document;
/// - else: seal `data[3..]`, then flip bits (`data[2] | 1`) at the position `data[1]` picks, or
///   cut the file short (`data[2] == 0`): opening must fail.
#[cfg(feature = "encrypted")]
pub fn sealed_store(data: &[u8]) {
    use keepfresh::fuzzing::{load_store_document, SealedStore};
    use keepfresh::store::{Key, StoreErrorKind};

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let store = SealedStore::new(Key::from_bytes([7; 32]), "fuzz/identity", "tokens.sealed");
    match mode {
        0 => {
            if let Err(e) = store.open(rest) {
                assert_eq!(e.kind(), StoreErrorKind::Corrupt);
                assert!(!e.to_string().contains(MARKER));
            }
            if let Err(e) = store.load(rest) {
                assert_eq!(e.kind(), StoreErrorKind::Corrupt);
                assert!(!e.to_string().contains(MARKER));
            }
        }
        1 => {
            let sealed = store.seal(rest).expect("seal");
            assert_eq!(
                &store.open(&sealed).expect("open what was sealed")[..],
                rest
            );
            match (store.load(&sealed), load_store_document(rest)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
                (a, b) => panic!("sealed and plain loads differ: {a:?} / {b:?}"),
            }
        }
        _ => {
            let (Some(&at), Some(&flip)) = (rest.first(), rest.get(1)) else {
                return;
            };
            let plain = &rest[2..];
            let mut sealed = store.seal(plain).expect("seal");
            if flip == 0 {
                sealed.truncate(usize::from(at) % sealed.len());
            } else {
                let i = (usize::from(at) * 7919) % sealed.len();
                sealed[i] ^= flip | 1;
            }
            let e = store
                .open(&sealed)
                .expect_err("a changed sealed file opened");
            assert_eq!(e.kind(), StoreErrorKind::Corrupt);
        }
    }
}

/// Store specs (`file:…`, `redis://…`): a parsed spec prints as a spec that parses back to
/// itself (a Redis password aside, which prints as `***`), and no output (`Display`, `Debug`, an
/// error) shows a Redis password marked `s3cr3t`.
pub fn store_spec(data: &[u8]) {
    use keepfresh::store::spec::StoreSpec;

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Only a spec that is a URL has a password (`file:` and `encrypted-file:` paths, key
    // sources and `keyring:` names are shown as they are, even when they contain `://`).
    let trimmed = text.trim();
    let url_like = trimmed.find("://").is_some_and(|i| {
        let scheme = &trimmed[..i];
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !["memory", "file", "encrypted-file", "keyring"].contains(&scheme)
    });
    let password_marked = url_like
        && text.matches(MARKER).count() == 1
        && redis_password(text).is_some_and(|p| p.contains(MARKER));
    match text.parse::<StoreSpec>() {
        Ok(spec) => {
            let shown = spec.to_string();
            let debug = format!("{spec:?}");
            if password_marked && matches!(spec, StoreSpec::Redis { .. }) {
                assert!(
                    !shown.contains(MARKER) && !debug.contains(MARKER),
                    "a password shown: {shown}"
                );
            }
            let hidden = matches!(&spec, StoreSpec::Redis { url, .. } if url.contains('@'));
            if !hidden {
                let again: StoreSpec = shown.parse().expect("a printed spec parses");
                assert_eq!(again, spec, "a spec changed on its way through Display");
            }
            // The exposed form (password and all, for another process) always parses back.
            let exposed: StoreSpec = spec.expose_spec().parse().expect("an exposed spec parses");
            assert_eq!(
                exposed, spec,
                "a spec changed on its way through expose_spec"
            );
            let _ = spec.feature();
        }
        Err(e) => {
            if password_marked {
                assert!(
                    !e.to_string().contains(MARKER),
                    "a password in an error: {e}"
                );
            }
        }
    }
}

/// The password of a `scheme://user:password@host/…` URL, as URL parsers read it: the userinfo
/// runs to the authority's last `@`, the password from its first `:`.
fn redis_password(s: &str) -> Option<&str> {
    let rest = &s.trim()[s.trim().find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(userinfo.split_once(':')?.1)
}

/// `.env` files: the value of `KEY`. Checks: a malformed file is reported at a line that
/// exists, no error quotes the file (a value marked `s3cr3t` never shows), and substitutions
/// do not blow a small file up into a huge value.
pub fn dotenv(data: &[u8]) {
    match keepfresh::fuzzing::dotenv_value(data, "KEY") {
        Ok(Some(value)) => {
            assert!(
                data.windows(3).any(|w| w == b"KEY"),
                "a value found for a variable the file does not name"
            );
            // `$NAME` substitutions chained through the file must not multiply its size
            // without bound (`B=$A$A…`, `C=$B$B…`: eight-fold per line).
            assert!(
                value.len() <= 8 << 20,
                "a {}-byte value from a {}-byte file",
                value.len(),
                data.len()
            );
        }
        Ok(None) => {}
        Err(e) => {
            let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
            let line = e.line().expect("a parse error names its line");
            assert!(
                (1..=lines).contains(&line),
                "line {line} of a {lines}-line file"
            );
            assert!(
                !e.to_string().contains(MARKER),
                "a .env error quotes the file"
            );
            assert!(!format!("{e:?}").contains(MARKER));
        }
    }
}

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
            assert!(
                !r.access_token().is_empty(),
                "an empty access token was accepted"
            );
            // The lifetime the engine would use is always within policy bounds.
            let (lifetime, _) = RefreshPolicy::default().lifetime(r.expires_in());
            assert!(lifetime >= Duration::from_secs(1));
        }
        Err(e) => {
            // Error text never echoes the body's token fields verbatim beyond sanitised codes.
            let _ = e.to_string();
        }
    }
}

/// `Retry-After` header values.
pub fn retry_after(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let _ = parse_retry_after(s, now);
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

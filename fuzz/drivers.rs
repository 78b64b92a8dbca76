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

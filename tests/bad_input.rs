//! Bad answers from a refresher (scenario 16 and issue 2's "Bad input"): odd lifetimes, an
//! empty access token, a panic. A typed error or a clamped lifetime with an event; never a
//! panic of the engine, never a refresh loop, never a lost token.
#![cfg(feature = "tokio")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use keepfresh::event::Event;
use keepfresh::policy::LifetimeAdjustment;
use keepfresh::runtime::ManualClock;
use keepfresh::store::MemoryStore;
use keepfresh::ErrorClass;

/// Callers ask every 10 s for two simulated hours while the provider answers `body` (with a
/// fresh access token each time). Returns the refresher calls, the lifetime the engine used and
/// the adjustment events.
async fn lifetime_case(body: impl Fn(u64) -> String) -> (usize, Duration, Vec<Event>) {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.lenient();
    let bodies: Vec<Answer> = (1..2_000).map(|n| Answer::Json(body(n))).collect();
    provider.script(bodies);
    let c = build(&clock, &provider, None, policy(), Some(expired(&clock))).await;
    let log = Log::attach(&c);
    let mut events = c.subscribe();
    let first = c.token().await.expect("a token");
    assert_eq!(first.secret(), "access-1");
    let used = log
        .events()
        .iter()
        .find_map(|e| match e {
            Event::Refreshed { lifetime, .. } => Some(*lifetime),
            _ => None,
        })
        .expect("refreshed");
    let mut last_calls = provider.calls();
    for _ in 0..720 {
        clock.advance(Duration::from_secs(10));
        c.token().await.expect("a token every time");
        if provider.calls() != last_calls {
            // A background refresh started: let it finish before time moves on.
            wait_for(&mut events, "refresh outcome", |e| {
                matches!(e, Event::Refreshed { .. } | Event::RefreshFailed { .. })
            })
            .await;
            last_calls = provider.calls();
        }
    }
    let adjustments = log
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::LifetimeAdjusted { .. }))
        .collect();
    (provider.calls(), used, adjustments)
}

/// At most one refresh per (refresh-window start) of the lifetime, plus the first.
fn assert_no_loop(calls: usize, lifetime: Duration) {
    let simulated = 7_200.0;
    // The refresh point is at 60 % of the lifetime at the earliest, or at the serving deadline
    // when the skew allowance (at most half the lifetime) comes first; callers every 10 s.
    let period = (lifetime.as_secs_f64() * 0.5).max(10.0);
    let bound = (simulated / period).ceil() as usize + 2;
    assert!(
        calls <= bound,
        "{calls} refreshes in 2 h for a {lifetime:?} lifetime (bound {bound})"
    );
}

#[tokio::test]
async fn s16_expires_in_missing_uses_the_default_lifetime() {
    let (calls, used, adj) = lifetime_case(|n| format!(r#"{{"access_token":"access-{n}"}}"#)).await;
    assert_eq!(used, Duration::from_secs(3600));
    assert!(matches!(
        adj[0],
        Event::LifetimeAdjusted {
            adjustment: LifetimeAdjustment::Missing,
            ..
        }
    ));
    assert_no_loop(calls, used);
    assert!(
        calls >= 2,
        "a one-hour default lifetime needs refreshing in two hours"
    );
}

#[tokio::test]
async fn s16_expires_in_zero_is_raised_to_the_minimum() {
    let (calls, used, adj) =
        lifetime_case(|n| format!(r#"{{"access_token":"access-{n}","expires_in":0}}"#)).await;
    assert_eq!(used, Duration::from_secs(30));
    assert!(matches!(
        adj[0],
        Event::LifetimeAdjusted {
            adjustment: LifetimeAdjustment::RaisedToMinimum { sent: 0 },
            ..
        }
    ));
    assert_no_loop(calls, used);
}

#[tokio::test]
async fn s16_expires_in_negative_is_raised_to_the_minimum() {
    let (calls, used, adj) =
        lifetime_case(|n| format!(r#"{{"access_token":"access-{n}","expires_in":-3600}}"#)).await;
    assert_eq!(used, Duration::from_secs(30));
    assert!(matches!(
        adj[0],
        Event::LifetimeAdjusted {
            adjustment: LifetimeAdjustment::RaisedToMinimum { sent: -3600 },
            ..
        }
    ));
    assert_no_loop(calls, used);
}

#[tokio::test]
async fn s16_expires_in_above_i32_is_lowered_to_the_maximum() {
    for huge in ["2147483648", "99999999999999999999999", "1e300"] {
        let (calls, used, adj) =
            lifetime_case(|n| format!(r#"{{"access_token":"access-{n}","expires_in":{huge}}}"#))
                .await;
        assert_eq!(used, Duration::from_secs(400 * 86_400), "{huge}");
        assert!(matches!(
            adj[0],
            Event::LifetimeAdjusted {
                adjustment: LifetimeAdjustment::LoweredToMaximum { .. },
                ..
            }
        ));
        assert_eq!(calls, 1, "{huge}");
    }
}

#[tokio::test]
async fn s16_expires_in_as_a_string() {
    let (calls, used, adj) =
        lifetime_case(|n| format!(r#"{{"access_token":"access-{n}","expires_in":"1800"}}"#)).await;
    assert_eq!(used, Duration::from_secs(1800));
    assert!(adj.is_empty());
    assert_no_loop(calls, used);

    let (calls, used, _) =
        lifetime_case(|n| format!(r#"{{"access_token":"access-{n}","expires_in":"soon"}}"#)).await;
    assert_eq!(used, Duration::from_secs(3600), "unparsable: the default");
    assert_no_loop(calls, used);
}

#[tokio::test]
async fn s17_lifetime_shorter_than_the_margin_does_not_loop() {
    let (calls, used, _) =
        lifetime_case(|n| format!(r#"{{"access_token":"access-{n}","expires_in":60}}"#)).await;
    assert_eq!(used, Duration::from_secs(60));
    assert_no_loop(calls, used);
}

/// An answer with an empty access token is a typed error; a rotated refresh token in that
/// answer is kept (the old one is dead) and used for the next refresh.
#[tokio::test]
async fn empty_access_token_is_an_error_and_keeps_the_rotated_refresh_token() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([Answer::EmptyAccessToken]);
    let store = MemoryStore::with_clock(Arc::new(clock.clone()));
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    let e = c.token().await.expect_err("no access token");
    assert_eq!(e.refresh_error().unwrap().class(), ErrorClass::Transient);
    assert_eq!(
        log.count(|e| matches!(
            e,
            Event::MalformedResponse {
                kept_refresh_token: true,
                ..
            }
        )),
        1
    );
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-1"));
    clock.advance(Duration::from_secs(2));
    assert_eq!(c.token().await.unwrap().secret(), "access-2");
    assert_eq!(
        provider.presented(),
        [Some("refresh-0".into()), Some("refresh-1".into())]
    );
    assert!(!provider.revoked());
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-2"));
}

/// A panicking refresher becomes a transient error for the waiters plus an event; the engine
/// keeps working.
#[tokio::test]
async fn refresher_panic_is_a_transient_error_and_an_event() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([Answer::Panic]);
    let c = build(&clock, &provider, None, policy(), Some(expired(&clock))).await;
    let log = Log::attach(&c);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    for w in waiters {
        let e = w
            .await
            .expect("the caller did not panic")
            .expect_err("no token");
        assert_eq!(e.refresh_error().unwrap().class(), ErrorClass::Transient);
    }
    assert_eq!(
        log.count(|e| matches!(e, Event::RefresherPanicked { .. })),
        1
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
}

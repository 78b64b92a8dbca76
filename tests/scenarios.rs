//! The failure scenarios of `docs/scenarios.md` (numbered as in its catalogue) as tokio
//! integration tests: a scripted provider with strict rotation, the manual clock for time,
//! events and gates for synchronisation.
#![cfg(feature = "tokio")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use keepfresh::event::Event;
use keepfresh::runtime::ManualClock;
use keepfresh::store::MemoryStore;
use keepfresh::{ErrorClass, Phase, ReauthReason, RefreshError, RefreshPolicy, RefreshToken};

fn memory(clock: &ManualClock) -> MemoryStore {
    MemoryStore::with_clock(Arc::new(clock.clone()))
}

/// Scenario 1: N callers on an expired token, strict rotation: exactly one refresher call,
/// everyone gets the new token, the family is never revoked.
async fn stampede(n: usize) {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0").gated();
    let store = memory(&clock);
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    // Let every caller reach the credential before the provider answers.
    tokio::task::yield_now().await;
    provider.release(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("a token"), "access-1");
    }
    assert_eq!(provider.calls(), 1);
    assert!(!provider.revoked());
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-1"));
}

#[tokio::test]
async fn s01_stampede_one_caller() {
    stampede(1).await;
}

#[tokio::test]
async fn s01_stampede_100_callers() {
    stampede(100).await;
}

#[tokio::test]
async fn s01_stampede_10_000_callers() {
    stampede(10_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s01_stampede_1_000_callers_multi_thread() {
    stampede(1_000).await;
}

/// Scenario 3 (and 4): three processes share one store. The one that refreshes second adopts
/// the winner's tokens from the store instead of replaying the old refresh token.
#[tokio::test]
async fn s03_processes_sharing_a_store_adopt_the_winner() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let store = memory(&clock);
    store.overwrite(Some(expired(&clock)));
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(
            build(
                &clock,
                &provider,
                Some(Arc::new(store.clone())),
                policy(),
                None,
            )
            .await,
        );
    }
    for p in &procs {
        assert_eq!(p.token().await.expect("a token").secret(), "access-1");
    }
    assert_eq!(provider.calls(), 1, "{:?}", provider.presented());
    assert!(!provider.revoked());
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-1"));
    for p in &procs {
        assert!(!p.status().persist_pending);
    }
}

/// Scenarios 3 and 4 concurrently: the first process holds the store's lease while its
/// refresh is in flight; the others wait for the lease, re-read the store and adopt.
#[tokio::test]
async fn s04_lease_waiters_reread_and_adopt() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0").gated();
    let store = memory(&clock);
    store.overwrite(Some(expired(&clock)));
    let a = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        None,
    )
    .await;
    let mut a_events = a.subscribe();
    let leader = {
        let a = a.clone();
        tokio::spawn(async move { a.token().await.map(|t| t.secret().to_owned()) })
    };
    wait_for(&mut a_events, "refresh started", |e| {
        matches!(e, Event::RefreshStarted { .. })
    })
    .await;
    // Wait until A's refresh holds the lease and is inside the provider.
    while provider.calls() == 0 {
        tokio::task::yield_now().await;
    }
    let mut others = Vec::new();
    for _ in 0..2 {
        let p = build(
            &clock,
            &provider,
            Some(Arc::new(store.clone())),
            policy(),
            None,
        )
        .await;
        let mut events = p.subscribe();
        let task = {
            let p = p.clone();
            tokio::spawn(async move { p.token().await.map(|t| t.secret().to_owned()) })
        };
        wait_for(&mut events, "lease busy", |e| {
            matches!(e, Event::LeaseBusy { .. })
        })
        .await;
        others.push((p, task));
    }
    provider.release(1);
    assert_eq!(leader.await.unwrap().expect("a token"), "access-1");
    // The waiters poll the lease on the clock.
    clock.advance(Duration::from_secs(1));
    for (p, task) in others {
        assert_eq!(task.await.unwrap().expect("a token"), "access-1");
        assert_eq!(p.status().generation, 2);
    }
    assert_eq!(provider.calls(), 1);
    assert!(!provider.revoked());
}

/// Scenario 7: the provider rotates but the answer is lost; the retry with the old refresh
/// token is refused. Re-authorization with reason "response lost", exactly once, and no more
/// calls to the provider.
#[tokio::test]
async fn s07_lost_response_then_invalid_grant_is_response_lost_once() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([Answer::Lost]);
    let store = memory(&clock);
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    let err = c.token().await.expect_err("the answer was lost");
    assert_eq!(err.refresh_error().unwrap().class(), ErrorClass::Ambiguous);
    clock.advance(Duration::from_secs(2));
    let err = c.token().await.expect_err("replay refused");
    assert_eq!(err.reauth_reason(), Some(ReauthReason::ResponseLost));
    for _ in 0..5 {
        clock.advance(Duration::from_secs(600));
        let err = c.token().await.expect_err("terminal");
        assert_eq!(err.reauth_reason(), Some(ReauthReason::ResponseLost));
    }
    assert_eq!(provider.calls(), 2);
    assert_eq!(
        log.count(|e| matches!(e, Event::ReauthRequired { .. })),
        1,
        "{:?}",
        log.events()
    );
    assert_eq!(
        log.count(|e| matches!(
            e,
            Event::ReauthRequired {
                reason: ReauthReason::ResponseLost,
                ..
            }
        )),
        1
    );
    assert!(matches!(
        c.phase(),
        Phase::ReauthRequired {
            reason: ReauthReason::ResponseLost
        }
    ));
}

/// Scenario 9: the save after a rotation fails. The new token is served from memory, the save
/// is retried with backoff and lands later, a loud event is raised, re-authorization is never
/// asked for, and the old refresh token is never replayed.
#[tokio::test]
async fn s09_failed_save_keeps_serving_and_retries() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let store = FlakyStore::new(memory(&clock));
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    let mut events = c.subscribe();
    store.set_failing(true);

    let t = c.token().await.expect("served from memory");
    assert_eq!(t.secret(), "access-1");
    assert!(c.status().persist_pending);
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-0"));
    wait_for(&mut events, "persist failed", |e| {
        matches!(e, Event::PersistFailed { attempt: 1, .. })
    })
    .await;

    // Retried with backoff (still failing).
    clock.advance(Duration::from_secs(2));
    wait_for(&mut events, "second persist failure", |e| {
        matches!(e, Event::PersistFailed { attempt: 2, .. })
    })
    .await;
    assert_eq!(c.token().await.unwrap().secret(), "access-1");

    // A 401 forces another refresh while the save is still pending: it must redeem the
    // rotated refresh token held in memory, not the stale one in the store.
    assert!(c.invalidate(&t));
    assert_eq!(c.token().await.unwrap().secret(), "access-2");
    assert_eq!(
        provider.presented(),
        [Some("refresh-0".into()), Some("refresh-1".into())]
    );
    assert!(!provider.revoked());

    store.set_failing(false);
    for _ in 0..20 {
        if !c.status().persist_pending {
            break;
        }
        clock.advance(Duration::from_secs(300));
        tokio::task::yield_now().await;
    }
    wait_for(&mut events, "persisted", |e| {
        matches!(e, Event::Persisted { .. })
    })
    .await;
    assert!(!c.status().persist_pending);
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-2"));
    assert_eq!(stored_at(&store.inner).as_deref(), Some("access-2"));
    assert_eq!(log.count(|e| matches!(e, Event::ReauthRequired { .. })), 0);
    assert!(!matches!(c.phase(), Phase::ReauthRequired { .. }));
}

/// Scenario 12: an answer without a refresh token keeps the old one; an answer with one
/// replaces it and is never overwritten by the old one again.
#[tokio::test]
async fn s12_refresh_token_kept_or_replaced() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.lenient();
    provider.script([
        Answer::NoRefreshToken,
        Answer::Json(
            r#"{"access_token":"access-2","refresh_token":"refresh-new","expires_in":3600}"#.into(),
        ),
        Answer::NoRefreshToken,
    ]);
    let store = memory(&clock);
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let mut t = c.token().await.expect("a token");
    assert_eq!(t.secret(), "access-1");
    for expected in ["access-2", "access-3"] {
        assert!(c.invalidate(&t));
        t = c.token().await.expect("a token");
        assert_eq!(t.secret(), expected);
    }
    assert_eq!(
        provider.presented(),
        [
            Some("refresh-0".into()),
            Some("refresh-0".into()),
            Some("refresh-new".into()),
        ]
    );
    assert_eq!(
        c.status().refresh_token,
        Some(RefreshToken::new("refresh-new").fingerprint())
    );
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-new"));
}

/// Scenarios 19 and 20: during a provider outage the valid token keeps being served; the
/// provider's Retry-After is honoured; no token is cleared.
#[tokio::test]
async fn s19_outage_serves_valid_token_and_honours_retry_after() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([Answer::Fail(
        RefreshError::transient("HTTP 503").with_retry_after(Duration::from_secs(120)),
    )]);
    let store = memory(&clock);
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(fresh(&clock)),
    )
    .await;
    let mut events = c.subscribe();
    // Inside the refresh window, before expiry.
    clock.advance(Duration::from_secs(3100));
    assert_eq!(c.token().await.unwrap().secret(), "access-0");
    wait_for(&mut events, "refresh failed", |e| {
        matches!(e, Event::RefreshFailed { .. })
    })
    .await;
    for _ in 0..10 {
        clock.advance(Duration::from_secs(10));
        assert_eq!(c.token().await.unwrap().secret(), "access-0");
    }
    assert_eq!(provider.calls(), 1, "Retry-After not honoured");
    assert!(matches!(c.phase(), Phase::BackingOff { .. }));
    assert_eq!(stored_at(&store).as_deref(), Some("access-0"));
    clock.advance(Duration::from_secs(21));
    assert_eq!(c.token().await.unwrap().secret(), "access-0");
    wait_for(&mut events, "refreshed", |e| {
        matches!(e, Event::Refreshed { .. })
    })
    .await;
    assert_eq!(provider.calls(), 2);
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
}

/// Scenario 20: with no valid token, N waiting callers share one failed refresh and its error;
/// callers during the backoff get the same error without a provider call.
#[tokio::test]
async fn s20_negative_cache_shared_by_all_waiters() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0").gated();
    provider.set_default(Answer::Fail(
        RefreshError::transient("HTTP 429").with_retry_after(Duration::from_secs(60)),
    ));
    let c = build(&clock, &provider, None, policy(), Some(expired(&clock))).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    tokio::task::yield_now().await;
    provider.release(1);
    for t in tasks {
        let e = t.await.unwrap().expect_err("no token");
        let re = e.refresh_error().expect("the shared refresh error");
        assert_eq!(re.class(), ErrorClass::Transient);
        assert_eq!(re.retry_after(), Some(Duration::from_secs(60)));
        assert!(e.retry_at().is_some());
    }
    for _ in 0..5 {
        clock.advance(Duration::from_secs(10));
        let e = c.token().await.expect_err("still backing off");
        assert!(e.refresh_error().is_some());
    }
    assert_eq!(provider.calls(), 1);
}

#[test]
fn s20_retry_after_as_seconds_and_http_date() {
    use keepfresh::oauth::parse_retry_after;
    let now = time::macros::datetime!(2026-01-01 00:00:00 UTC);
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Thu, 01 Jan 2026 00:02:00 GMT", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", now), None);
}

/// Scenario 21: `invalid_grant` clears the store only if it still holds the refresh token that
/// failed.
#[tokio::test]
async fn s21_invalid_grant_clears_store_holding_the_failed_token() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([Answer::Fail(RefreshError::invalid_grant("revoked"))]);
    let store = memory(&clock);
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    let e = c.token().await.expect_err("revoked");
    assert_eq!(e.reauth_reason(), Some(ReauthReason::InvalidGrant));
    assert!(store.snapshot().is_none(), "store not cleared");
    assert_eq!(log.count(|e| matches!(e, Event::StoreCleared { .. })), 1);
    clock.advance(Duration::from_secs(3600));
    assert!(c.token().await.unwrap_err().is_reauth_required());
    assert_eq!(provider.calls(), 1, "invalid_grant retried");
}

#[tokio::test]
async fn s21_invalid_grant_adopts_newer_tokens_of_another_process() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let store = memory(&clock);
    let winner = tokens(&clock, "access-other", Some("refresh-other"), 0, 3600);
    let other = store.clone();
    provider.script([Answer::InvalidGrantAfter(Arc::new(move || {
        // Another process redeemed the token and saved its result meanwhile.
        other.overwrite(Some(winner.clone()));
    }))]);
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    assert_eq!(c.token().await.unwrap().secret(), "access-other");
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-other"));
    assert_eq!(log.count(|e| matches!(e, Event::StoreCleared { .. })), 0);
    assert_eq!(log.count(|e| matches!(e, Event::ReauthRequired { .. })), 0);
}

/// Scenario 23: one `invalid_client` does not poison the credential (two in a row do).
#[tokio::test]
async fn s23_one_invalid_client_does_not_poison() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([Answer::Fail(RefreshError::invalid_client("blip"))]);
    let c = build(&clock, &provider, None, policy(), Some(expired(&clock))).await;
    let e = c.token().await.expect_err("first refresh refused");
    assert!(!e.is_reauth_required());
    assert!(!matches!(c.phase(), Phase::ReauthRequired { .. }));
    clock.advance(Duration::from_secs(2));
    assert_eq!(c.token().await.unwrap().secret(), "access-1");

    // Two in a row are terminal.
    let provider = Provider::rotating("refresh-0");
    provider.set_default(Answer::Fail(RefreshError::invalid_client("bad secret")));
    let c = build(&clock, &provider, None, policy(), Some(expired(&clock))).await;
    assert!(!c.token().await.unwrap_err().is_reauth_required());
    clock.advance(Duration::from_secs(2));
    let e = c.token().await.unwrap_err();
    assert_eq!(e.reauth_reason(), Some(ReauthReason::InvalidClient));
    assert_eq!(provider.calls(), 2);
}

/// Scenarios 2 and 25: 1,000 concurrent 401s on one token start at most one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s25_thousand_invalidations_one_refresh() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let c = build(&clock, &provider, None, policy(), Some(fresh(&clock))).await;
    let t = Arc::new(c.token().await.unwrap());
    let mut events = c.subscribe();
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let c = c.clone();
            let t = t.clone();
            tokio::spawn(async move { c.invalidate(&t) })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        started += usize::from(task.await.unwrap());
    }
    assert_eq!(started, 1);
    wait_for(&mut events, "refreshed", |e| {
        matches!(e, Event::Refreshed { .. })
    })
    .await;
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    // A late 401 for the old token changes nothing.
    assert!(!c.invalidate(&t));
    assert_eq!(provider.calls(), 1);
}

/// Scenario 28: the caller that triggered the refresh is cancelled; the refresh goes on, the
/// other waiters get its result and the rotated refresh token is persisted.
#[tokio::test]
async fn s28_first_caller_cancelled_mid_refresh() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0").gated();
    let store = memory(&clock);
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let mut events = c.subscribe();
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
    };
    wait_for(&mut events, "refresh started", |e| {
        matches!(e, Event::RefreshStarted { .. })
    })
    .await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let others: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
        })
        .collect();
    provider.release(1);
    for t in others {
        assert_eq!(t.await.unwrap().unwrap(), "access-1");
    }
    wait_for(&mut events, "persisted", |e| {
        matches!(e, Event::Persisted { .. })
    })
    .await;
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-1"));
    assert_eq!(provider.calls(), 1);
}

/// Scenario 28, timeout flavour: the leader gives up at its deadline; the refresh still lands.
#[tokio::test]
async fn every_wait_is_bounded_by_the_deadline() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0").gated();
    let store = memory(&clock);
    let policy = RefreshPolicy::builder()
        .jitter_seed(3)
        .wait_timeout(Duration::from_secs(10))
        .refresh_timeout(Duration::from_secs(120))
        .lease_ttl(Duration::from_secs(180))
        .build()
        .unwrap();
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy,
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    let mut events = c.subscribe();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
    };
    wait_for(&mut events, "refresh started", |e| {
        matches!(e, Event::RefreshStarted { .. })
    })
    .await;
    // The waiter arms its deadline timer on its first poll, which is done by now.
    clock.advance(Duration::from_secs(10));
    let e = waiter.await.unwrap().expect_err("timed out");
    assert!(e.is_timeout(), "{e}");
    assert_eq!(log.count(|e| matches!(e, Event::WaitTimedOut { .. })), 1);
    provider.release(1);
    wait_for(&mut events, "persisted", |e| {
        matches!(e, Event::Persisted { .. })
    })
    .await;
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-1"));
}

/// A refresher that never answers is abandoned at the refresh timeout as ambiguous; waiters
/// are released with that error.
#[tokio::test]
async fn hung_refresher_is_abandoned_at_the_refresh_timeout() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0").gated();
    let policy = RefreshPolicy::builder()
        .jitter_seed(3)
        .wait_timeout(Duration::from_secs(60))
        .refresh_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let c = build(&clock, &provider, None, policy, Some(expired(&clock))).await;
    let mut events = c.subscribe();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
    };
    wait_for(&mut events, "refresh started", |e| {
        matches!(e, Event::RefreshStarted { .. })
    })
    .await;
    while provider.calls() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(20));
    let e = waiter.await.unwrap().expect_err("refresh abandoned");
    assert_eq!(e.refresh_error().unwrap().class(), ErrorClass::Ambiguous);
}

/// Scenario 31: the provider issued no refresh token: re-authorization is surfaced at the
/// refresh point, while the token is still served, and the provider is never called.
#[tokio::test]
async fn s31_no_refresh_token_reauth_before_expiry() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let c = build(
        &clock,
        &provider,
        None,
        policy(),
        Some(tokens(&clock, "access-0", None, 0, 3600)),
    )
    .await;
    let log = Log::attach(&c);
    assert_eq!(c.token().await.unwrap().secret(), "access-0");
    assert_eq!(c.phase(), Phase::Fresh);
    // Past the latest refresh point (85 %), before expiry.
    clock.advance(Duration::from_secs(3100));
    assert_eq!(c.token().await.unwrap().secret(), "access-0");
    assert_eq!(
        c.phase(),
        Phase::ReauthRequired {
            reason: ReauthReason::NoRefreshToken
        }
    );
    assert_eq!(log.count(|e| matches!(e, Event::ReauthRequired { .. })), 1);
    clock.advance(Duration::from_secs(500));
    let e = c.token().await.expect_err("expired");
    assert_eq!(e.reauth_reason(), Some(ReauthReason::NoRefreshToken));
    assert_eq!(provider.calls(), 0);
}

/// Refresh-ahead: a caller inside the refresh window gets the current token at once while one
/// background refresh runs.
#[tokio::test]
async fn refresh_ahead_serves_at_once_while_one_refresh_runs() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0").gated();
    let c = build(&clock, &provider, None, policy(), Some(fresh(&clock))).await;
    let mut events = c.subscribe();
    clock.advance(Duration::from_secs(3100));
    for _ in 0..20 {
        // The provider is held: these return without waiting for it.
        assert_eq!(c.token().await.unwrap().secret(), "access-0");
    }
    assert!(matches!(c.phase(), Phase::Refreshing { serving: true }));
    provider.release(1);
    wait_for(&mut events, "refreshed", |e| {
        matches!(e, Event::Refreshed { .. })
    })
    .await;
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert_eq!(provider.calls(), 1);
}

/// Eager mode refreshes on a timer with no caller.
#[tokio::test]
async fn eager_mode_refreshes_without_callers() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let store = memory(&clock);
    let policy = RefreshPolicy::builder()
        .jitter_seed(5)
        .eager(true)
        .build()
        .unwrap();
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy,
        Some(fresh(&clock)),
    )
    .await;
    let mut events = c.subscribe();
    // Let the eager timer task arm its timer.
    while clock.pending_timers() == 0 {
        tokio::task::yield_now().await;
    }
    clock.advance(Duration::from_secs(1800));
    assert_eq!(provider.calls(), 0, "refreshed before the window");
    clock.advance(Duration::from_secs(1300));
    wait_for(&mut events, "persisted", |e| {
        matches!(e, Event::Persisted { .. })
    })
    .await;
    assert_eq!(provider.calls(), 1);
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-1"));
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
}

/// Scenario 13: a token set loaded after a restart keeps its absolute expiry; it is never
/// re-derived from the lifetime at load time.
#[tokio::test]
async fn s13_restart_keeps_absolute_expiry() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.set_default(Answer::Fail(RefreshError::transient("HTTP 503")));
    let store = memory(&clock);
    // Issued half an hour before this process started.
    store.overwrite(Some(tokens(
        &clock,
        "access-0",
        Some("refresh-0"),
        1800,
        3600,
    )));
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        None,
    )
    .await;
    let t = c.token().await.unwrap();
    assert_eq!(
        t.expires_at(),
        store.snapshot().unwrap().tokens.expires_at()
    );
    // 1,800 s remain: served (at the latest as a last resort while the provider fails) until
    // the stated expiry 1,800 s from now, and never after it.
    clock.advance(Duration::from_secs(1765));
    assert_eq!(c.token().await.unwrap().secret(), "access-0");
    clock.advance(Duration::from_secs(36));
    let late = c.token().await;
    assert!(
        late.is_err(),
        "served past its absolute expiry: {late:?} {:?}",
        c.status()
    );
}

/// Scenarios 9 and 21 together: a rotated token set whose save is still failing is refused
/// with `invalid_grant`. The store holds the older set (same version the engine last wrote),
/// whose refresh token is just as dead: it must not be adopted as "newer tokens from another
/// process" (that would serve a superseded access token and later replay a dead refresh token),
/// nor cleared (it does not hold the refresh token that failed).
#[tokio::test]
async fn s21_invalid_grant_while_a_save_is_pending_does_not_adopt_the_older_store() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([
        Answer::Rotate,
        Answer::Fail(RefreshError::invalid_grant("revoked")),
    ]);
    let store = FlakyStore::new(memory(&clock));
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(store.clone())),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    store.set_failing(true);
    let t = c.token().await.unwrap();
    assert_eq!(t.secret(), "access-1");
    assert!(c.status().persist_pending);
    store.set_failing(false);
    assert!(c.invalidate(&t));
    let e = c.token().await.expect_err("refused");
    assert_eq!(e.reauth_reason(), Some(ReauthReason::InvalidGrant));
    assert_eq!(log.count(|e| matches!(e, Event::Adopted { .. })), 0);
    assert_eq!(log.count(|e| matches!(e, Event::StoreCleared { .. })), 0);
    assert_eq!(stored_at(&store.inner).as_deref(), Some("access-0"));
    assert_eq!(
        provider.presented(),
        [Some("refresh-0".into()), Some("refresh-1".into())]
    );
}

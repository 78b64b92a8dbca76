//! One test per defect of the engine-flight issue: each failed on the engine before the flight
//! became a pure plan (commit bc1d46a) and pins the rule that fixed it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::future::BoxFuture;
use keepfresh::event::Event;
use keepfresh::runtime::{ManualClock, Runtime, Spawn};
use keepfresh::store::{LeaseOutcome, MemoryStore, TokenStore};
use keepfresh::{
    Credential, ErrorClass, Precedence, RefreshError, RefreshPolicy, RefreshToken, TokenSet,
};

fn memory(clock: &ManualClock) -> MemoryStore {
    MemoryStore::with_clock(Arc::new(clock.clone()))
}

/// Lets the owed save's retry timer fire until the set is durable (at most 20 retries).
async fn until_durable(c: &Credential, clock: &ManualClock) {
    for _ in 0..20 {
        if !c.status().persist_pending {
            return;
        }
        clock.advance(Duration::from_secs(20));
        settle().await;
    }
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// Defect 1: a login during a refresh already in flight is never overwritten by that
/// refresh's result, in memory or in the store.
#[tokio::test]
async fn a_login_during_a_refresh_wins() {
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
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move { c.token().await.map(|t| t.secret().to_owned()) })
    };
    wait_for(&mut events, "refresh started", |e| {
        matches!(e, Event::RefreshStarted { .. })
    })
    .await;
    // The step-up login lands while the provider still holds the old refresh.
    let login = tokens(&clock, "login-access", Some("login-refresh"), 0, 3600);
    c.set_tokens(login).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), "login-access");
    provider.release(1);
    // Shutdown returns once the refresh worker is idle: the superseded flight has done
    // whatever it still does.
    c.shutdown().await.unwrap();
    assert_eq!(c.token().await.unwrap().secret(), "login-access");
    assert_eq!(stored_at(&store).as_deref(), Some("login-access"));
    assert_eq!(stored_rt(&store).as_deref(), Some("login-refresh"));
}

/// Defect 2: a save retry superseded by a newer set in the store never writes over it; the
/// newer set is adopted.
#[tokio::test]
async fn a_save_retry_never_overwrites_a_newer_set() {
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
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert!(c.status().persist_pending);
    wait_for(&mut events, "persist failed", |e| {
        matches!(e, Event::PersistFailed { .. })
    })
    .await;
    // Another process (after our lease ran out, say) wrote a newer set.
    let other = tokens(&clock, "other-access", Some("other-refresh"), 0, 3600);
    store.inner.overwrite(Some(other));
    store.set_failing(false);
    until_durable(&c, &clock).await;
    assert!(!c.status().persist_pending);
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("other-refresh"));
    assert_eq!(c.token().await.unwrap().secret(), "other-access");
    assert_eq!(
        log.count(|e| matches!(e, Event::SaveSuperseded { adopted: true, .. })),
        1
    );
}

/// Defect 3: the cross-process lease is kept, and renewed, while a rotated set is not durable;
/// it is released once the set lands.
#[tokio::test]
async fn the_lease_is_kept_until_the_rotated_set_is_durable() {
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
    let mut events = c.subscribe();
    store.set_failing(true);
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    wait_for(&mut events, "persist failed", |e| {
        matches!(e, Event::PersistFailed { .. })
    })
    .await;
    // Well past the lease's time-to-live: renewals keep it ours.
    for _ in 0..10 {
        clock.advance(Duration::from_secs(15));
        settle().await;
    }
    let other = store
        .inner
        .try_lease(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(other, LeaseOutcome::Held, "another process got the lease");
    store.set_failing(false);
    until_durable(&c, &clock).await;
    assert!(!c.status().persist_pending);
    settle().await;
    let after = store
        .inner
        .try_lease(Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        matches!(after, LeaseOutcome::Acquired(_)),
        "released once durable: {after:?}"
    );
}

/// Defect 4: a store whose lease operation fails does not let a refresh through (fail closed):
/// no provider call, a transient error, and a retry once the store is back.
#[tokio::test]
async fn lease_errors_fail_closed() {
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
    store.set_leases_failing(true);
    let e = c.token().await.expect_err("no refresh without the lease");
    assert_eq!(
        e.refresh_error().map(|r| r.class()),
        Some(ErrorClass::Transient)
    );
    assert_eq!(provider.calls(), 0);
    // The re-read after the lease fails closed too.
    store.set_leases_failing(false);
    store.set_loads_failing(true);
    clock.advance(Duration::from_secs(400));
    assert!(c.token().await.is_err());
    assert_eq!(provider.calls(), 0);
    store.set_loads_failing(false);
    clock.advance(Duration::from_secs(400));
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert_eq!(provider.calls(), 1);
}

/// The explicit availability switch: with `fail_open`, a lease error lets the refresh through.
#[tokio::test]
async fn fail_open_refreshes_despite_lease_errors() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let store = FlakyStore::new(memory(&clock));
    let policy = RefreshPolicy::builder()
        .jitter_seed(11)
        .fail_open(true)
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
    store.set_leases_failing(true);
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
}

/// Defect 5: after a suspend (the monotonic clock stood still while the wall clock ran on),
/// a token that expired during the suspend is not served.
#[tokio::test]
async fn no_expired_token_after_a_suspend() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let c = build(&clock, &provider, None, policy(), Some(fresh(&clock))).await;
    assert_eq!(c.try_token().unwrap().secret(), "access-0");
    // A four-hour laptop sleep: only the wall clock moves.
    clock.jump_wall(time::Duration::hours(4));
    assert!(c.try_token().is_none(), "an expired token was served");
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
}

/// Defect 6: a panicking listener, a panicking store and a runtime that cannot run the
/// refresh task never wedge the credential.
#[tokio::test]
async fn panics_and_unspawnable_tasks_do_not_wedge() {
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
    c.on_event(|e| {
        if matches!(e, Event::RefreshStarted { .. }) {
            panic!("listener bug");
        }
    });
    let mut events = c.subscribe();
    store.set_saves_panicking(true);
    // Served from memory although the store panicked on the save.
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    wait_for(&mut events, "the listener panic is reported", |e| {
        matches!(e, Event::ListenerPanicked { .. })
    })
    .await;
    store.set_saves_panicking(false);
    until_durable(&c, &clock).await;
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-1"));
}

/// A spawner that cannot run anything (a dropped runtime).
struct Dead;
impl Spawn for Dead {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        drop(task);
    }
}

#[tokio::test]
async fn a_refresh_task_that_never_runs_fails_the_flight() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let rt = Runtime::new(
        Arc::new(clock.clone()),
        Arc::new(clock.clone()),
        Arc::new(Dead),
    );
    let c = Credential::builder(provider.clone())
        .runtime(rt)
        .policy(policy())
        .tokens(expired(&clock))
        .build()
        .await
        .unwrap();
    let log = Log::attach(&c);
    // Before: every caller waited until its deadline, which a manual clock never reaches.
    let e = c.token().await.expect_err("the flight failed");
    assert!(e.refresh_error().is_some(), "{e}");
    assert_eq!(log.count(|e| matches!(e, Event::FlightAborted { .. })), 1);
    c.shutdown().await.unwrap();
}

/// `invalidate()` from a thread outside tokio, with the default runtime, neither panics nor
/// loses the refresh.
#[cfg(feature = "tokio")]
#[test]
fn invalidate_from_a_plain_thread() {
    use keepfresh::{refresher_fn, AccessToken, TokenResponse};
    use std::sync::atomic::{AtomicU32, Ordering};
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let c = tokio_rt.block_on(async {
        let now = time::OffsetDateTime::now_utc();
        Credential::builder(refresher_fn(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                Ok(TokenResponse::new(AccessToken::new(format!("at-{n}"))).with_expires_in(3600))
            }
        }))
        .tokens(TokenSet::new(
            AccessToken::new("at-0"),
            Some(RefreshToken::new("rt")),
            now,
            now + time::Duration::hours(1),
        ))
        .build()
        .await
        .unwrap()
    });
    let c2 = c.clone();
    let token = std::thread::spawn(move || {
        let t = c2.try_token().unwrap();
        assert!(c2.invalidate(&t));
        futures::executor::block_on(c2.token()).map(|t| t.secret().to_owned())
    })
    .join()
    .expect("no panic outside tokio");
    assert_eq!(token.unwrap(), "at-1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Defect 7: after an ambiguous answer (a lost response) the engine retries on its own timer,
/// without waiting for a caller.
#[tokio::test]
async fn an_ambiguous_answer_is_retried_without_callers() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    provider.script([Answer::Fail(RefreshError::ambiguous("connection reset"))]);
    let c = build(&clock, &provider, None, policy(), Some(expired(&clock))).await;
    let mut events = c.subscribe();
    assert!(c.token().await.is_err());
    assert_eq!(provider.calls(), 1);
    for _ in 0..10 {
        clock.advance(Duration::from_secs(1));
        settle().await;
        if provider.calls() == 2 {
            break;
        }
    }
    assert_eq!(provider.calls(), 2, "retried on the timer");
    wait_for(&mut events, "refreshed", |e| {
        matches!(e, Event::Refreshed { .. })
    })
    .await;
    assert_eq!(c.try_token().unwrap().secret(), "access-1");
}

/// The default refresh timeout leaves room for a retry inside a 30 s grace window.
#[test]
fn the_default_refresh_timeout_is_well_inside_a_grace_window() {
    let p = RefreshPolicy::default();
    assert!(p.refresh_timeout() * 2 < Duration::from_secs(30));
}

/// Defect 8: shutdown refuses new flights, is bounded, and reports an unsaved set.
#[tokio::test]
async fn shutdown_fences_flights_and_is_bounded() {
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
    store.set_failing(true);
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    let shutdown = {
        let c = c.clone();
        tokio::spawn(async move { c.shutdown().await })
    };
    settle().await;
    clock.advance(Duration::from_secs(61));
    settle().await;
    clock.advance(Duration::from_secs(61));
    let r = shutdown.await.unwrap();
    assert!(r.is_err(), "the unsaved set is reported");
    // No refresh starts after shutdown.
    let t = c.try_token();
    assert!(t.is_some());
    assert!(!c.invalidate(&t.unwrap()));
    assert_eq!(provider.calls(), 1);
    let e = c.token().await.expect_err("closed");
    assert!(e.is_closed(), "{e}");
}

/// Defect 8: which of store and builder tokens wins is explicit and reported; a refresh token
/// alone is not a fake token set and is never saved.
#[tokio::test]
async fn builder_precedence_and_refresh_token_only() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let store = memory(&clock);
    let c = Credential::builder(provider.clone())
        .runtime(runtime(&clock))
        .policy(policy())
        .store(store.clone())
        .refresh_token(RefreshToken::new("refresh-0"))
        .build()
        .await
        .unwrap();
    assert_eq!(store.writes(), 0, "a refresh token alone is not saved");
    assert!(c.try_token().is_none());
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert_eq!(stored_rt(&store).as_deref(), Some("refresh-1"));

    // A newer login given to the builder wins over the stored set, and says so.
    clock.advance(Duration::from_secs(1));
    let newer = tokens(&clock, "newer", Some("refresh-1"), 0, 3600);
    let b = Credential::builder(provider.clone())
        .runtime(runtime(&clock))
        .policy(policy())
        .store(store.clone())
        .tokens(newer);
    let c2 = b.build().await.unwrap();
    assert_eq!(c2.try_token().unwrap().secret(), "newer");
    assert_eq!(stored_at(&store).as_deref(), Some("newer"));
    // An older one loses to the store unless told otherwise.
    let older = tokens(&clock, "older", Some("refresh-1"), 100, 3600);
    let c3 = Credential::builder(provider.clone())
        .runtime(runtime(&clock))
        .policy(policy())
        .store(store.clone())
        .tokens(older.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(c3.try_token().unwrap().secret(), "newer");
    let c4 = Credential::builder(provider)
        .runtime(runtime(&clock))
        .policy(policy())
        .store(store.clone())
        .tokens(older)
        .precedence(Precedence::Given)
        .build()
        .await
        .unwrap();
    assert_eq!(c4.try_token().unwrap().secret(), "older");
}

/// Defect 8: `invalidate` ignores a token of another credential (generations collide).
#[tokio::test]
async fn invalidate_ignores_tokens_of_other_credentials() {
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let a = build(&clock, &provider, None, policy(), Some(fresh(&clock))).await;
    let b = build(&clock, &provider, None, policy(), Some(fresh(&clock))).await;
    let t = a.token().await.unwrap();
    assert_eq!(t.generation(), b.token().await.unwrap().generation());
    assert!(!b.invalidate(&t));
    assert_eq!(provider.calls(), 0);
}

/// Defect 8: absurd lifetimes and timeout relations are rejected when the policy is built.
#[test]
fn absurd_policies_are_rejected() {
    assert!(RefreshPolicy::builder()
        .max_lifetime(Duration::MAX)
        .build()
        .is_err());
    let e = RefreshPolicy::builder()
        .refresh_timeout(Duration::from_secs(120))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("lease_ttl"), "{e}");
}

/// The renewal answer is checked: a store that forgot `renew_lease` is reported.
#[tokio::test]
async fn a_store_without_renew_lease_is_reported() {
    struct Forgetful(MemoryStore);
    #[async_trait::async_trait]
    impl TokenStore for Forgetful {
        async fn load(
            &self,
        ) -> Result<Option<keepfresh::store::Stored>, keepfresh::store::StoreError> {
            self.0.load().await
        }
        async fn save(
            &self,
            expected: Option<keepfresh::store::Version>,
            tokens: &TokenSet,
        ) -> Result<keepfresh::store::SaveOutcome, keepfresh::store::StoreError> {
            self.0.save(expected, tokens).await
        }
        async fn clear(
            &self,
            expected: keepfresh::store::Version,
        ) -> Result<bool, keepfresh::store::StoreError> {
            self.0.clear(expected).await
        }
        async fn try_lease(
            &self,
            ttl: Duration,
        ) -> Result<LeaseOutcome, keepfresh::store::StoreError> {
            self.0.try_lease(ttl).await
        }
    }
    let clock = ManualClock::new();
    let provider = Provider::rotating("refresh-0");
    let c = build(
        &clock,
        &provider,
        Some(Arc::new(Forgetful(memory(&clock)))),
        policy(),
        Some(expired(&clock)),
    )
    .await;
    let log = Log::attach(&c);
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert_eq!(log.count(|e| matches!(e, Event::LeaseLost { .. })), 1);
}

/// Defect 3, the later flight: a flight that starts while a rotated set is unsaved and then
/// fails transiently does not give the lease back; the owed save goes on and lands.
#[tokio::test]
async fn a_later_failing_flight_keeps_the_lease_of_an_unsaved_set() {
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
    let mut events = c.subscribe();
    store.set_failing(true);
    let t = c.token().await.unwrap();
    assert_eq!(t.secret(), "access-1");
    wait_for(&mut events, "persist failed", |e| {
        matches!(e, Event::PersistFailed { .. })
    })
    .await;
    // A 401 forces a refresh, which the provider answers with a 503.
    provider.script([Answer::Fail(RefreshError::transient("HTTP 503"))]);
    assert!(c.invalidate(&t));
    wait_for(&mut events, "the later flight failed", |e| {
        matches!(e, Event::RefreshFailed { .. })
    })
    .await;
    settle().await;
    let other = store
        .inner
        .try_lease(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(other, LeaseOutcome::Held, "the lease was given back early");
    assert!(c.status().persist_pending);
    store.set_failing(false);
    until_durable(&c, &clock).await;
    assert!(!c.status().persist_pending);
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-1"));
    assert_eq!(
        provider.presented(),
        [Some("refresh-0".into()), Some("refresh-1".into())]
    );
}

/// Found by the cross-process model check (`tests/cross_process_model.rs`): a lease handed to
/// the next flight was used without checking that it was still this process's. It may have run
/// out, been taken by another process and released again while the owed save was retried; the
/// next flight then re-read and called the provider with a refresh token the other process had
/// just spent (family revoked). The carried lease is renewed first, and taken anew when the
/// store says it is no longer ours.
mod a_carried_lease {
    use keepfresh::flight::{Carry, Effect, Feedback, Plan, Start};
    use keepfresh::machine::FlightId;
    use keepfresh::runtime::MonoTime;
    use keepfresh::store::{Lease, StoreError, StoreErrorKind, Version};
    use keepfresh::{AccessToken, RefreshPolicy, RefreshToken, TokenSet};
    use std::sync::Arc;

    fn carried() -> Plan {
        let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_900_000_000);
        let owed = Arc::new(TokenSet::new(
            AccessToken::new("at-1"),
            Some(RefreshToken::new("rt-1")),
            at,
            at + time::Duration::hours(1),
        ));
        let start = Start::new(
            FlightId(2),
            MonoTime::ZERO,
            Some(owed.clone()),
            Some(Version(1)),
        )
        .with_carry(Carry {
            lease: Some(Lease { id: 7 }),
            owed: Some(owed),
            expected: Some(Version(1)),
        });
        Plan::new(Arc::new(RefreshPolicy::default()), true, start)
    }

    #[test]
    fn is_renewed_before_anything_is_read_or_called() {
        let mut plan = carried();
        match plan.step(MonoTime::ZERO, Feedback::Start) {
            Effect::Renew { lease, .. } => assert_eq!(lease, Lease { id: 7 }),
            other => panic!("the carried lease was used unchecked: {other:?}"),
        }
        assert_eq!(
            plan.step(MonoTime::ZERO, Feedback::Renewed(Ok(true))),
            Effect::Load
        );
    }

    #[test]
    fn is_taken_anew_when_the_store_says_it_is_gone() {
        let mut plan = carried();
        assert!(matches!(
            plan.step(MonoTime::ZERO, Feedback::Start),
            Effect::Renew { .. }
        ));
        let next = plan.step(MonoTime::ZERO, Feedback::Renewed(Ok(false)));
        // A report that the lease was lost may come first.
        let next = match next {
            Effect::Report(_) => plan.step(MonoTime::ZERO, Feedback::Ack),
            other => other,
        };
        assert!(matches!(next, Effect::TryLease { .. }), "{next:?}");
    }

    /// A failed renewal says nothing: the lease may still be ours, and it guards a set that
    /// is not durable. Giving it back let another process refresh from the durable parent
    /// (whose refresh token this process had spent): the model check found that too.
    #[test]
    fn is_kept_when_renewing_fails() {
        let mut plan = carried();
        assert!(matches!(
            plan.step(MonoTime::ZERO, Feedback::Start),
            Effect::Renew { .. }
        ));
        let failed = Feedback::Renewed(Err(StoreError::new(StoreErrorKind::Io, "down")));
        let next = match plan.step(MonoTime::ZERO, failed) {
            Effect::Report(_) => plan.step(MonoTime::ZERO, Feedback::Ack),
            other => other,
        };
        assert_eq!(next, Effect::Load);
    }
}

/// Defect 9 (a store that lies): a save the store acknowledged and lost (a Redis failover that
/// lost an acknowledged write, a disk that lost an fsync'd write) leaves the set this process
/// replaced in the store. The process holds the newer set in memory and knows the stored
/// refresh token is spent: its next refresh starts from its own set, never from the stored one,
/// and its save puts the lineage back in the store.
#[tokio::test]
async fn a_lost_write_never_sends_the_engine_back_to_a_spent_refresh_token() {
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
    store.set_losing_saves(true);
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert!(
        !c.status().persist_pending,
        "the store acknowledged the save"
    );
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-0"));
    store.set_losing_saves(false);
    // access-1 runs out: the next refresh re-reads the store and finds the set it replaced.
    clock.advance(Duration::from_secs(3600));
    let served = c.token().await.map(|t| t.secret().to_owned());
    assert!(
        !provider.revoked(),
        "the spent refresh token was replayed: {:?}",
        provider.presented()
    );
    assert_eq!(served.unwrap(), "access-2");
    assert_eq!(
        provider.presented(),
        [Some("refresh-0".into()), Some("refresh-1".into())]
    );
    assert_eq!(log.count(|e| matches!(e, Event::Adopted { .. })), 0);
    // Said loudly: the re-read found the replaced set, and the save wrote over it.
    assert!(log.count(|e| matches!(e, Event::StoreBehind { .. })) >= 1);
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-2"));
}

/// Defect 9 (a store that lies): a read answered from a lagging replica shows the set this
/// process replaced. It is older than the set held, not another process's newer one: never
/// adopted, and its spent refresh token never sent.
#[tokio::test]
async fn a_stale_read_never_sends_the_engine_back_to_a_spent_refresh_token() {
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
    let before = store.inner.snapshot().expect("the initial set was saved");
    assert_eq!(c.token().await.unwrap().secret(), "access-1");
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-1"));
    // Every read now answers with the set access-1 replaced.
    store.set_stale(Some(before));
    clock.advance(Duration::from_secs(3600));
    let served = c.token().await.map(|t| t.secret().to_owned());
    assert!(
        !provider.revoked(),
        "the spent refresh token was replayed: {:?}",
        provider.presented()
    );
    assert_eq!(served.unwrap(), "access-2");
    // Once more, a whole lifetime later: the engine still does not go back.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(c.token().await.unwrap().secret(), "access-3");
    assert!(!provider.revoked(), "{:?}", provider.presented());
    assert_eq!(log.count(|e| matches!(e, Event::Adopted { .. })), 0);
    assert_eq!(log.count(|e| matches!(e, Event::StoreBehind { .. })), 2);
    store.set_stale(None);
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-3"));
}

/// Defect 9 without a lying store: while the save of a rotated set is owed, an unrelated writer
/// rewrites the store's set (the one the rotation replaced) at a new version, and a 401 starts
/// the next flight before the save retry lands. The new version made the replaced set look like
/// another process's newer one: it was adopted, and its spent refresh token sent.
#[tokio::test]
async fn a_rewritten_replaced_set_is_not_adopted_while_a_save_is_owed() {
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
    let t = c.token().await.unwrap();
    assert_eq!(t.secret(), "access-1");
    wait_for(&mut events, "persist failed", |e| {
        matches!(e, Event::PersistFailed { .. })
    })
    .await;
    let replaced = store.inner.snapshot().unwrap().tokens;
    assert_eq!(replaced.access_token().expose_secret(), "access-0");
    store.inner.overwrite(Some(replaced));
    assert!(c.invalidate(&t));
    wait_for(&mut events, "the next flight's answer", |e| {
        matches!(e, Event::Refreshed { .. } | Event::RefreshFailed { .. })
    })
    .await;
    settle().await;
    assert!(!provider.revoked(), "{:?}", provider.presented());
    assert_eq!(log.count(|e| matches!(e, Event::Adopted { .. })), 0);
    assert_eq!(c.token().await.unwrap().secret(), "access-2");
    store.set_failing(false);
    until_durable(&c, &clock).await;
    assert!(!provider.revoked(), "{:?}", provider.presented());
    assert_eq!(
        provider.presented(),
        [Some("refresh-0".into()), Some("refresh-1".into())]
    );
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-2"));
}

/// Defect 10: an unrelated writer rewrites the stored set (the one the refresh replaced) at a
/// new version before every save attempt. After three immediate rewrites the save gave its
/// lineage up for that set, "another lineage's", and adopted it: the refresh went back to the
/// set it had replaced and sent its spent refresh token. Now the save backs off and retries.
#[tokio::test]
async fn a_save_never_gives_its_lineage_up_for_the_set_it_replaced() {
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
    store.set_rewriting(true);
    let served = c.token().await.map(|t| t.secret().to_owned());
    settle().await;
    assert!(!provider.revoked(), "{:?}", provider.presented());
    assert_eq!(served.unwrap(), "access-1");
    assert!(c.status().persist_pending);
    store.set_rewriting(false);
    until_durable(&c, &clock).await;
    assert!(!c.status().persist_pending);
    assert_eq!(stored_rt(&store.inner).as_deref(), Some("refresh-1"));
    assert_eq!(provider.presented(), [Some("refresh-0".into())]);
    assert_eq!(log.count(|e| matches!(e, Event::Adopted { .. })), 0);
    assert_eq!(log.count(|e| matches!(e, Event::SaveSuperseded { .. })), 0);
}

/// Found by the fresh-seed sweep (swarm seed 51000782): after the wall clock was set back, a
/// refreshed set was stamped with an `issued_at` earlier than the set it replaced, so a host
/// passing its first tokens at every start saw them win `Precedence::Newer` over the store's
/// newer set and redeemed a spent refresh token. `issued_at` never goes back along a lineage.
#[test]
fn a_refreshed_set_is_never_issued_before_the_set_it_replaced() {
    use keepfresh::flight::{Effect, Feedback, Plan, Report, Start};
    use keepfresh::machine::FlightId;
    use keepfresh::runtime::MonoTime;
    use keepfresh::TokenResponse;
    let t = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_900_000_000);
    let base = Arc::new(TokenSet::new(
        keepfresh::AccessToken::new("at-1"),
        Some(RefreshToken::new("rt-1")),
        t,
        t + time::Duration::hours(1),
    ));
    let mut plan = Plan::new(
        Arc::new(RefreshPolicy::default()),
        false,
        Start::new(FlightId(1), MonoTime::ZERO, Some(base.clone()), None),
    );
    assert!(matches!(
        plan.step(MonoTime::ZERO, Feedback::Start),
        Effect::Call(_)
    ));
    // The wall clock now reads two hours earlier than when the base set was issued.
    let stepped_back = t - time::Duration::hours(2);
    let answer = TokenResponse::new(keepfresh::AccessToken::new("at-2"))
        .with_refresh_token(RefreshToken::new("rt-2"))
        .with_expires_in(3600);
    let mut effect = plan.step(
        MonoTime::ZERO,
        Feedback::Called {
            result: Ok(answer),
            issued: MonoTime::ZERO,
            issued_wall: stepped_back,
        },
    );
    let mut refreshed = None;
    for _ in 0..10 {
        if let Effect::Report(Report::Refreshed { set, .. }) = &effect {
            refreshed = Some(set.clone());
            break;
        }
        effect = plan.step(MonoTime::ZERO, Feedback::Ack);
    }
    let set = refreshed.expect("a Refreshed report");
    assert!(
        set.issued_at() >= base.issued_at(),
        "issued {} before the set it replaced ({})",
        set.issued_at(),
        base.issued_at()
    );
}

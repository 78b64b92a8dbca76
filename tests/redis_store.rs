//! `RedisStore` against a real `redis-server`: the store's own behaviour (versions,
//! compare-and-swap, leases and fencing, change notices, failures), then the engine end to end
//! with several replicas sharing one server.
//!
//! Each test starts its own `redis-server` on a free loopback port. Without `redis-server` on
//! the PATH the tests fail (CI installs it: `apt-get install -y redis-server`), unless
//! `KEEPFRESH_SKIP_REDIS=1` is set.
#![cfg(feature = "redis")]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keepfresh::store::{
    LeaseOutcome, RedisStore, SaveOutcome, StoreErrorKind, Stored, TokenStore, Version,
};
use keepfresh::{
    AccessToken, Credential, RefreshError, RefreshPolicy, RefreshRequest, RefreshToken, Refresher,
    TokenResponse, TokenSet,
};

// ---------------------------------------------------------------------------------------------
// A redis-server per test (tests/common/redis.rs, shared with the simulator's tests and the
// benchmarks).

#[path = "common/redis.rs"]
mod redis_server;
use redis_server::RedisServer;

macro_rules! server {
    () => {
        match RedisServer::start() {
            Some(server) => server,
            None => return,
        }
    };
    ($($arg:expr_2021),+) => {
        match RedisServer::start_with(&[$($arg),+]) {
            Some(server) => server,
            None => return,
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers.

const OP_TIMEOUT: Duration = Duration::from_secs(2);

async fn open(server: &RedisServer, key: &str) -> RedisStore {
    RedisStore::builder(&server.url())
        .op_timeout(OP_TIMEOUT)
        .open(key)
        .await
        .expect("the store opens")
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("a raw connection")
}

/// A token set with every field set, sub-second times included.
fn set(n: u32) -> TokenSet {
    let issued = time::OffsetDateTime::now_utc();
    TokenSet::new(
        AccessToken::new(format!("access-{n}")),
        Some(RefreshToken::new(format!("refresh-{n}"))),
        issued,
        issued + time::Duration::seconds(3600) + time::Duration::nanoseconds(123_456_789),
    )
    .with_scope("repo read:user")
}

fn saved(outcome: SaveOutcome) -> Version {
    match outcome {
        SaveOutcome::Saved(v) => v,
        other => panic!("expected a save, got {other:?}"),
    }
}

fn acquired(outcome: LeaseOutcome) -> keepfresh::store::Lease {
    match outcome {
        LeaseOutcome::Acquired(lease) => lease,
        other => panic!("expected the lease, got {other:?}"),
    }
}

/// Evaluates `check` (which may `.await`) every 20 ms until it is true, at most `limit`.
macro_rules! eventually {
    ($limit:expr_2021, $what:expr_2021, $check:expr_2021) => {{
        let limit: Duration = $limit;
        let deadline = Instant::now() + limit;
        loop {
            if $check {
                break;
            }
            assert!(Instant::now() < deadline, "not within {limit:?}: {}", $what);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

// ---------------------------------------------------------------------------------------------
// The store alone.

#[tokio::test]
async fn versions_grow_and_token_sets_round_trip_exactly() {
    let server = server!();
    let store = open(&server, "github").await;
    assert_eq!(store.load().await.unwrap(), None);

    let first = set(1);
    let v1 = saved(store.save(None, &first).await.unwrap());
    let loaded = store.load().await.unwrap().expect("a set");
    assert_eq!(
        loaded,
        Stored {
            version: v1,
            tokens: first.clone()
        }
    );
    assert_eq!(loaded.tokens.scope(), Some("repo read:user"));
    assert_eq!(loaded.tokens.expires_at(), first.expires_at());

    // No refresh token, no scope: still exact.
    let now = time::OffsetDateTime::now_utc();
    let bare = TokenSet::new(AccessToken::new("bare"), None, now, now);
    let v2 = saved(store.save(Some(v1), &bare).await.unwrap());
    assert!(v2 > v1);
    assert_eq!(store.load().await.unwrap().unwrap().tokens, bare);

    let v3 = saved(store.save(Some(v2), &set(3)).await.unwrap());
    assert!(v3 > v2);
}

#[tokio::test]
async fn a_stale_or_blind_save_is_a_conflict_carrying_the_current_set() {
    let server = server!();
    let store = open(&server, "github").await;
    let v1 = saved(store.save(None, &set(1)).await.unwrap());
    let v2 = saved(store.save(Some(v1), &set(2)).await.unwrap());

    let current = Some(Stored {
        version: v2,
        tokens: set_like(&store).await,
    });
    assert_eq!(
        store.save(None, &set(9)).await.unwrap(),
        SaveOutcome::Conflict(current.clone())
    );
    assert_eq!(
        store.save(Some(v1), &set(9)).await.unwrap(),
        SaveOutcome::Conflict(current)
    );

    // An emptied store: a save expecting a version conflicts with nothing.
    assert!(store.clear(v2).await.unwrap());
    assert_eq!(
        store.save(Some(v2), &set(9)).await.unwrap(),
        SaveOutcome::Conflict(None)
    );
}

async fn set_like(store: &RedisStore) -> TokenSet {
    store.load().await.unwrap().expect("a set").tokens
}

#[tokio::test]
async fn clear_is_a_compare_and_swap_and_versions_are_never_reused() {
    let server = server!();
    let store = open(&server, "github").await;
    let v1 = saved(store.save(None, &set(1)).await.unwrap());
    let v2 = saved(store.save(Some(v1), &set(2)).await.unwrap());

    assert!(
        !store.clear(v1).await.unwrap(),
        "a stale clear must not wipe newer tokens"
    );
    assert!(store.load().await.unwrap().is_some());
    assert!(store.clear(v2).await.unwrap());
    assert_eq!(store.load().await.unwrap(), None);
    assert!(!store.clear(v2).await.unwrap(), "nothing left to clear");

    let v3 = saved(store.save(None, &set(3)).await.unwrap());
    assert!(
        v3 > v2,
        "a version after a clear is new: {v3:?} after {v2:?}"
    );
}

#[tokio::test]
async fn keys_are_hash_tagged_per_credential_and_credentials_do_not_mix() {
    let server = server!();
    let github = open(&server, "github").await;
    let gitlab = github.for_key("gitlab").unwrap();
    assert_eq!(gitlab.key(), "gitlab");
    let other_ns = RedisStore::builder(&server.url())
        .namespace("other")
        .open("github")
        .await
        .unwrap();

    saved(github.save(None, &set(1)).await.unwrap());
    assert_eq!(gitlab.load().await.unwrap(), None);
    assert_eq!(other_ns.load().await.unwrap(), None);
    saved(gitlab.save(None, &set(2)).await.unwrap());
    acquired(github.try_lease(Duration::from_secs(30)).await.unwrap());
    assert!(matches!(
        gitlab.try_lease(Duration::from_secs(30)).await.unwrap(),
        LeaseOutcome::Acquired(_)
    ));

    let mut conn = raw(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "{keepfresh:github}:fence",
            "{keepfresh:github}:lease",
            "{keepfresh:github}:state",
            "{keepfresh:gitlab}:fence",
            "{keepfresh:gitlab}:lease",
            "{keepfresh:gitlab}:state",
        ]
    );
    let version: String = redis::cmd("HGET")
        .arg("{keepfresh:github}:state")
        .arg("version")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(version.parse::<u64>().is_ok());

    for bad in ["", "a{b", "c}"] {
        let e = github.for_key(bad).expect_err("an invalid key");
        assert_eq!(e.kind(), StoreErrorKind::Config);
    }
}

#[tokio::test]
async fn the_lease_is_exclusive_between_replicas() {
    let server = server!();
    let a = open(&server, "github").await;
    let b = open(&server, "github").await;
    let ttl = Duration::from_secs(30);

    let lease = acquired(a.try_lease(ttl).await.unwrap());
    assert_eq!(b.try_lease(ttl).await.unwrap(), LeaseOutcome::Held);
    assert_eq!(a.try_lease(ttl).await.unwrap(), LeaseOutcome::Held);
    a.release(lease.clone()).await.unwrap();
    let lease_b = acquired(b.try_lease(ttl).await.unwrap());
    assert!(
        lease_b.id > lease.id,
        "the fence grows with every acquisition"
    );
    // A second handle over the same connection is another replica too.
    let c = a.for_key("github").unwrap();
    assert_eq!(c.try_lease(ttl).await.unwrap(), LeaseOutcome::Held);
}

/// A takes the lease with a short TTL; B takes it once it ran out. Returns both leases.
async fn lose_lease(
    a: &RedisStore,
    b: &RedisStore,
) -> (keepfresh::store::Lease, keepfresh::store::Lease) {
    let lease_a = acquired(a.try_lease(Duration::from_millis(200)).await.unwrap());
    assert_eq!(
        b.try_lease(Duration::from_secs(30)).await.unwrap(),
        LeaseOutcome::Held
    );
    let mut lease_b = None;
    eventually!(Duration::from_secs(5), "B takes the expired lease", {
        if let LeaseOutcome::Acquired(l) = b.try_lease(Duration::from_secs(30)).await.unwrap() {
            lease_b = Some(l);
        }
        lease_b.is_some()
    });
    (lease_a, lease_b.unwrap())
}

#[tokio::test]
async fn a_lease_runs_out_then_the_old_holder_can_neither_renew_nor_write() {
    let server = server!();
    let a = open(&server, "github").await;
    let b = open(&server, "github").await;
    let v1 = saved(a.save(None, &set(1)).await.unwrap());

    // A paused past its TTL and does not know yet: its write at the right version is fenced,
    // once; it has learnt that the lease is gone.
    let (lease_a, lease_b) = lose_lease(&a, &b).await;
    let e = a
        .save(Some(v1), &set(2))
        .await
        .expect_err("a fenced save is refused");
    assert_eq!(e.kind(), StoreErrorKind::Io);
    assert!(e.to_string().contains("fenced"), "{e}");
    assert_eq!(
        a.load().await.unwrap().unwrap().version,
        v1,
        "nothing written"
    );
    assert!(!a
        .renew_lease(&lease_a, Duration::from_secs(30))
        .await
        .unwrap());
    assert!(!format!("{a:?}").contains("holds_lease: true"));
    // The new holder writes on; A's plain compare-and-swap retry then conflicts with it.
    assert!(b
        .renew_lease(&lease_b, Duration::from_secs(30))
        .await
        .unwrap());
    let v2 = saved(b.save(Some(v1), &set(3)).await.unwrap());
    assert!(matches!(
        a.save(Some(v1), &set(2)).await.unwrap(),
        SaveOutcome::Conflict(Some(Stored { version, .. })) if version == v2
    ));
    b.release(lease_b).await.unwrap();

    // The same for a clear.
    let (_, lease_b) = lose_lease(&a, &b).await;
    let e = a.clear(v2).await.expect_err("a fenced clear is refused");
    assert!(e.to_string().contains("fenced"), "{e}");
    assert_eq!(
        a.load().await.unwrap().unwrap().version,
        v2,
        "nothing cleared"
    );
    b.release(lease_b).await.unwrap();
}

#[tokio::test]
async fn a_lease_that_ran_out_unclaimed_is_renewed_like_the_memory_store() {
    let server = server!();
    let a = open(&server, "github").await;
    let lease = acquired(a.try_lease(Duration::from_millis(100)).await.unwrap());
    let mut conn = raw(&server).await;
    eventually!(Duration::from_secs(5), "the lease key expires", {
        let exists: bool = redis::cmd("EXISTS")
            .arg("{keepfresh:github}:lease")
            .query_async(&mut conn)
            .await
            .unwrap();
        !exists
    });
    // Nobody acquired it since (the fence is unchanged): still ours, as in MemoryStore.
    assert!(a
        .renew_lease(&lease, Duration::from_secs(30))
        .await
        .unwrap());
    let b = open(&server, "github").await;
    assert_eq!(
        b.try_lease(Duration::from_secs(30)).await.unwrap(),
        LeaseOutcome::Held
    );
    saved(a.save(None, &set(1)).await.unwrap());
}

#[tokio::test]
async fn release_and_renew_by_a_non_owner_do_nothing() {
    let server = server!();
    let a = open(&server, "github").await;
    let b = open(&server, "github").await;
    let ttl = Duration::from_secs(30);
    let lease = acquired(a.try_lease(ttl).await.unwrap());

    // B presents A's lease (same id): its owner differs.
    b.release(lease.clone()).await.unwrap();
    assert!(!b.renew_lease(&lease, ttl).await.unwrap());
    assert_eq!(b.try_lease(ttl).await.unwrap(), LeaseOutcome::Held);
    assert!(a.renew_lease(&lease, ttl).await.unwrap());
    // A stale lease of A's own (an older acquisition) does not release the current one.
    a.release(keepfresh::store::Lease { id: lease.id - 1 })
        .await
        .unwrap();
    assert_eq!(b.try_lease(ttl).await.unwrap(), LeaseOutcome::Held);
    a.release(lease).await.unwrap();
    acquired(b.try_lease(ttl).await.unwrap());
}

#[tokio::test]
async fn changed_resolves_by_pubsub_when_another_replica_saves_or_releases() {
    let server = server!();
    // A poll interval far beyond the test's bounds: only a pub/sub message can wake it.
    let a = Arc::new(
        RedisStore::builder(&server.url())
            .poll_interval(Duration::from_secs(600))
            .open("github")
            .await
            .unwrap(),
    );
    let b = open(&server, "github").await;
    let mut conn = raw(&server).await;

    let waiter = spawn_settled_waiter(&a, &mut conn).await;
    let v = saved(b.save(None, &set(1)).await.unwrap());
    woken(waiter).await;

    let lease = acquired(b.try_lease(Duration::from_secs(30)).await.unwrap());
    a.load().await.unwrap();
    // A has not looked at the lease since B took it: that alone wakes it.
    woken(tokio::spawn({
        let a = a.clone();
        async move { a.changed().await }
    }))
    .await;
    let waiter = spawn_settled_waiter(&a, &mut conn).await;
    b.release(lease).await.unwrap();
    woken(waiter).await;

    let waiter = spawn_settled_waiter(&a, &mut conn).await;
    assert!(b.clear(v).await.unwrap());
    woken(waiter).await;
}

/// How many HGET commands the server has run (each look of `changed()` runs one).
async fn hget_calls(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hget:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Starts `a.changed()` and returns once it is subscribed and has taken its look at the
/// store, so that only a message can wake it.
async fn spawn_settled_waiter(
    a: &Arc<RedisStore>,
    conn: &mut redis::aio::MultiplexedConnection,
) -> tokio::task::JoinHandle<Result<(), keepfresh::store::StoreError>> {
    let before = hget_calls(conn).await;
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { a.changed().await }
    });
    eventually!(Duration::from_secs(5), "the waiter subscribes and looks", {
        let (_, subscribed): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("{keepfresh:github}:changed")
            .query_async(&mut *conn)
            .await
            .unwrap();
        subscribed >= 1 && hget_calls(conn).await > before
    });
    assert!(!waiter.is_finished(), "nothing changed yet");
    waiter
}

async fn woken(waiter: tokio::task::JoinHandle<Result<(), keepfresh::store::StoreError>>) {
    tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .expect("changed() woke")
        .unwrap()
        .expect("changed() succeeds");
}

#[tokio::test]
async fn changed_falls_back_to_polling_for_what_sends_no_message() {
    let server = server!();
    let a = Arc::new(
        RedisStore::builder(&server.url())
            .poll_interval(Duration::from_millis(50))
            .open("github")
            .await
            .unwrap(),
    );
    let b = open(&server, "github").await;
    let waiter = tokio::spawn({
        let a = a.clone();
        async move { a.changed().await }
    });
    // Acquiring publishes nothing, and the short lease runs out silently: either change is
    // seen by the poll.
    acquired(b.try_lease(Duration::from_millis(300)).await.unwrap());
    tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the poll saw the lease")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_eight_concurrent_writers_from_one_version_exactly_one_saves() {
    let server = server!();
    let seed = open(&server, "github").await;
    let v = saved(seed.save(None, &set(0)).await.unwrap());
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(open(&server, "github").await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mine = set(100 + i as u32);
                barrier.wait().await;
                (mine.clone(), store.save(Some(v), &mine).await.unwrap())
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (mine, SaveOutcome::Saved(version)) => winners.push((mine, version)),
            (_, SaveOutcome::Conflict(held)) => conflicts.push(held),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    let (winner, version) = winners.pop().unwrap();
    assert_eq!(conflicts.len(), 7);
    for held in conflicts {
        assert_eq!(
            held,
            Some(Stored {
                version,
                tokens: winner.clone()
            })
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_prompt_error_and_the_store_recovers() {
    let mut server = server!();
    let store = open(&server, "github").await;
    saved(store.save(None, &set(1)).await.unwrap());
    server.stop();

    for _ in 0..3 {
        let started = Instant::now();
        let e = store.load().await.expect_err("no server");
        assert!(
            matches!(e.kind(), StoreErrorKind::Io | StoreErrorKind::Timeout),
            "{e}"
        );
        assert!(
            started.elapsed() < OP_TIMEOUT + Duration::from_secs(1),
            "bounded"
        );
        let e = store
            .try_lease(Duration::from_secs(30))
            .await
            .expect_err("no server");
        assert!(
            matches!(e.kind(), StoreErrorKind::Io | StoreErrorKind::Timeout),
            "{e}"
        );
        let e = store.save(None, &set(2)).await.expect_err("no server");
        assert!(
            matches!(e.kind(), StoreErrorKind::Io | StoreErrorKind::Timeout),
            "{e}"
        );
        assert!(!e.to_string().contains("access-2"), "{e}");
        let e = tokio::time::timeout(OP_TIMEOUT * 3, store.changed())
            .await
            .expect("changed() fails instead of hanging")
            .expect_err("no server");
        assert!(
            matches!(e.kind(), StoreErrorKind::Io | StoreErrorKind::Timeout),
            "{e}"
        );
    }
    let e = RedisStore::open(&server.url(), "github")
        .await
        .expect_err("nothing to open");
    assert!(
        matches!(e.kind(), StoreErrorKind::Io | StoreErrorKind::Timeout),
        "{e}"
    );

    server.restart();
    let mut loaded;
    eventually!(Duration::from_secs(10), "the store reconnects", {
        loaded = store.load().await.ok();
        loaded.is_some()
    });
    // Restarted without persistence: empty, and writable again.
    assert_eq!(loaded, Some(None));
    saved(store.save(None, &set(3)).await.unwrap());
}

#[tokio::test]
async fn a_server_that_stops_answering_is_a_timeout_not_a_hang() {
    let server = server!();
    let limit = Duration::from_millis(300);
    let store = RedisStore::builder(&server.url())
        .op_timeout(limit)
        .open("github")
        .await
        .unwrap();
    saved(store.save(None, &set(1)).await.unwrap());
    server.signal("STOP");
    let started = Instant::now();
    let e = store.load().await.expect_err("no answer");
    assert_eq!(e.kind(), StoreErrorKind::Timeout, "{e}");
    let e = store
        .try_lease(Duration::from_secs(30))
        .await
        .expect_err("no answer");
    assert_eq!(e.kind(), StoreErrorKind::Timeout, "{e}");
    assert!(
        started.elapsed() < limit * 2 + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    server.signal("CONT");
    eventually!(Duration::from_secs(10), "the store answers again", {
        store.load().await.is_ok()
    });
    assert!(store.load().await.unwrap().is_some());
}

#[tokio::test]
async fn a_password_in_the_url_works_and_is_never_shown() {
    let password = "pw-S3cret-x";
    let server = server!("--requirepass", password);
    let url = format!("redis://:{password}@127.0.0.1:{}/0", server.port);
    let store = RedisStore::open(&url, "github")
        .await
        .expect("authenticated");
    let tokens = set(1);
    saved(store.save(None, &tokens).await.unwrap());
    assert_eq!(store.load().await.unwrap().unwrap().tokens, tokens);
    let shown = format!("{store:?}");
    assert!(!shown.contains(password), "{shown}");
    assert!(shown.contains(":***@127.0.0.1"), "{shown}");
    let builder = format!("{:?}", RedisStore::builder(&url));
    assert!(!builder.contains(password), "{builder}");

    let wrong = format!("redis://:wrong-{password}@127.0.0.1:{}/0", server.port);
    let e = RedisStore::open(&wrong, "github")
        .await
        .expect_err("wrong password");
    assert_eq!(e.kind(), StoreErrorKind::Config, "{e}");
    assert!(!e.to_string().contains(password), "{e}");
    assert!(!format!("{e:?}").contains(password), "{e:?}");

    // Without a password the connection opens; Redis refuses the first command.
    let anonymous = RedisStore::open(&server.url(), "github")
        .await
        .expect("opens");
    let e = anonymous.load().await.expect_err("not authenticated");
    assert_eq!(e.kind(), StoreErrorKind::Config, "{e}");

    let e = RedisStore::open(&format!("http://:{password}@x"), "github")
        .await
        .expect_err("not a Redis URL");
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(!e.to_string().contains(password), "{e}");
}

#[tokio::test]
async fn corrupt_content_is_reported_without_quoting_it() {
    let server = server!();
    let store = open(&server, "github").await;
    let v = saved(store.save(None, &set(1)).await.unwrap());
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("HSET")
        .arg("{keepfresh:github}:state")
        .arg("tokens")
        .arg(r#"{"access_token": 918273645, "refresh_token": "rt-SECRET"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = store.load().await.expect_err("corrupt");
    assert_eq!(e.kind(), StoreErrorKind::Corrupt);
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains("SECRET") && !shown.contains("918273645"),
        "{e}"
    );
    // A conflict that would carry the corrupt set is an error too, and the data stays.
    let e = store.save(None, &set(2)).await.expect_err("corrupt");
    assert_eq!(e.kind(), StoreErrorKind::Corrupt);
    let _: () = redis::cmd("SET")
        .arg("{keepfresh:github}:state")
        .arg("not a hash")
        .query_async(&mut conn)
        .await
        .unwrap();
    let e = store.load().await.expect_err("wrong type");
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}");
    let e = store.save(Some(v), &set(2)).await.expect_err("wrong type");
    assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{e}");
}

// ---------------------------------------------------------------------------------------------
// The engine, with replicas sharing one server.

/// An authorization server with strict refresh-token rotation: presenting anything but the
/// live refresh token revokes the whole family.
#[derive(Default)]
struct AuthServer {
    state: Mutex<AuthState>,
}

#[derive(Default)]
struct AuthState {
    issued: u32,
    revoked: bool,
    presented: Vec<Option<String>>,
}

impl AuthServer {
    fn live(state: &AuthState) -> String {
        format!("refresh-{}", state.issued)
    }

    fn redeem(&self, request: &RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let presented = request
            .refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned());
        let mut s = self.state.lock().unwrap();
        s.presented.push(presented.clone());
        if s.revoked {
            return Err(RefreshError::invalid_grant("grant revoked"));
        }
        if presented != Some(Self::live(&s)) {
            s.revoked = true;
            return Err(RefreshError::invalid_grant(
                "refresh token reused: family revoked",
            ));
        }
        s.issued += 1;
        let n = s.issued;
        Ok(TokenResponse::new(AccessToken::new(format!("access-{n}")))
            .with_refresh_token(RefreshToken::new(format!("refresh-{n}")))
            .with_expires_in(3600))
    }

    fn calls(&self) -> usize {
        self.state.lock().unwrap().presented.len()
    }

    fn revoked(&self) -> bool {
        self.state.lock().unwrap().revoked
    }
}

/// One replica's view of the authorization server: a round trip of `latency`.
struct Client {
    server: Arc<AuthServer>,
    latency: Duration,
}

#[async_trait]
impl Refresher for Client {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        tokio::time::sleep(self.latency).await;
        self.server.redeem(&request)
    }
}

/// A refresher that reports its call, then never answers (a process frozen mid-refresh).
struct Stuck {
    called: tokio::sync::mpsc::UnboundedSender<()>,
}

#[async_trait]
impl Refresher for Stuck {
    async fn refresh(&self, _request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let _ = self.called.send(());
        futures::future::pending().await
    }
}

fn expired_set() -> TokenSet {
    let issued = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    TokenSet::new(
        AccessToken::new("access-0"),
        Some(RefreshToken::new("refresh-0")),
        issued,
        issued + time::Duration::hours(1),
    )
}

fn fresh_set() -> TokenSet {
    let issued = time::OffsetDateTime::now_utc();
    TokenSet::new(
        AccessToken::new("access-0"),
        Some(RefreshToken::new("refresh-0")),
        issued,
        issued + time::Duration::hours(1),
    )
}

fn quick_policy(seed: u64) -> RefreshPolicy {
    RefreshPolicy::builder()
        .jitter_seed(seed)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()
        .unwrap()
}

async fn replica(
    server: &RedisServer,
    refresher: impl Refresher,
    policy: RefreshPolicy,
) -> (Credential, Arc<RedisStore>) {
    let store = Arc::new(open(server, "github").await);
    let credential = Credential::builder(refresher)
        .policy(policy)
        .store(store.clone())
        .build()
        .await
        .expect("the credential builds");
    (credential, store)
}

async fn stored_access(store: &RedisStore) -> Option<String> {
    store
        .load()
        .await
        .unwrap()
        .map(|s| s.tokens.access_token().expose_secret().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_refresh_once_per_generation_under_bursts() {
    let server = server!();
    let auth = Arc::new(AuthServer::default());
    saved(
        open(&server, "github")
            .await
            .save(None, &expired_set())
            .await
            .unwrap(),
    );
    let mut replicas = Vec::new();
    for i in 0..3 {
        let client = Client {
            server: auth.clone(),
            latency: Duration::from_millis(30),
        };
        replicas.push(replica(&server, client, quick_policy(i)).await);
    }
    let events = Arc::new(Mutex::new(Vec::new()));
    for (c, _) in &replicas {
        let events = events.clone();
        c.on_event(move |e| events.lock().unwrap().push(e.clone()));
    }
    let count = |pred: fn(&keepfresh::Event) -> bool| {
        events.lock().unwrap().iter().filter(|e| pred(e)).count()
    };

    const GENERATIONS: u32 = 5;
    const CALLERS: usize = 20;
    for generation in 1..=GENERATIONS {
        if generation > 1 {
            // Every replica's resource server rejects the current token at once.
            for (c, _) in &replicas {
                let current = c.token().await.unwrap();
                assert!(c.invalidate(&current));
            }
        }
        let mut burst = Vec::new();
        for (c, _) in &replicas {
            for _ in 0..CALLERS {
                let c = c.clone();
                burst.push(tokio::spawn(async move {
                    c.token().await.map(|t| t.secret().to_owned())
                }));
            }
        }
        let expected = format!("access-{generation}");
        for task in burst {
            assert_eq!(task.await.unwrap().expect("a token"), expected);
        }
        assert_eq!(
            auth.calls(),
            generation as usize,
            "one refresh per generation"
        );
        assert!(!auth.revoked());
        // The two other replicas took the new set from the store.
        let n = generation as usize;
        assert_eq!(
            count(|e| matches!(e, keepfresh::Event::Refreshed { .. })),
            n
        );
        assert_eq!(
            count(|e| matches!(e, keepfresh::Event::Adopted { .. })),
            2 * n
        );
    }
    assert!(
        count(|e| matches!(e, keepfresh::Event::LeaseBusy { .. })) > 0,
        "the replicas met on the lease"
    );
    for (c, store) in &replicas {
        assert_eq!(
            c.token().await.unwrap().secret(),
            format!("access-{GENERATIONS}")
        );
        assert!(!c.status().persist_pending);
        assert_eq!(
            stored_access(store).await.as_deref(),
            Some(format!("access-{GENERATIONS}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_mid_refresh_is_taken_over_after_the_lease_ttl() {
    let server = server!();
    let auth = Arc::new(AuthServer::default());
    saved(
        open(&server, "github")
            .await
            .save(None, &expired_set())
            .await
            .unwrap(),
    );
    let lease_ttl = Duration::from_secs(3);
    let policy = RefreshPolicy::builder()
        .jitter_seed(7)
        .refresh_timeout(Duration::from_secs(1))
        .store_timeout(Duration::from_millis(500))
        .lease_ttl(lease_ttl)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()
        .unwrap();

    // Replica A lives on its own runtime, which is shut down while A holds the lease inside
    // the provider call: nothing of A is left to release the lease.
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (called_tx, mut called) = tokio::sync::mpsc::unbounded_channel();
    let url = server.url();
    let a_policy = policy.clone();
    a_runtime.spawn(async move {
        let store = RedisStore::builder(&url)
            .op_timeout(Duration::from_millis(400))
            .open("github")
            .await
            .unwrap();
        let a = Credential::builder(Stuck { called: called_tx })
            .policy(a_policy)
            .store(store)
            .build()
            .await
            .unwrap();
        let _ = a.token().await;
        futures::future::pending::<()>().await;
    });
    tokio::time::timeout(Duration::from_secs(10), called.recv())
        .await
        .expect("A reaches its provider call")
        .unwrap();
    let frozen_at = Instant::now();
    a_runtime.shutdown_background();

    let (b, b_store) = replica(
        &server,
        Client {
            server: auth.clone(),
            latency: Duration::from_millis(10),
        },
        policy,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        match b.token().await {
            Ok(t) => break t,
            Err(e) => assert!(Instant::now() < deadline, "B never took over: {e}"),
        }
    };
    assert_eq!(token.secret(), "access-1");
    assert!(
        frozen_at.elapsed() >= lease_ttl - Duration::from_millis(500),
        "B waited for A's lease to run out ({:?})",
        frozen_at.elapsed()
    );
    assert_eq!(auth.calls(), 1, "only B reached the provider");
    assert!(!auth.revoked());
    assert_eq!(stored_access(&b_store).await.as_deref(), Some("access-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_valid_tokens_through_a_redis_restart_then_refresh_again() {
    let mut server = server!();
    let auth = Arc::new(AuthServer::default());
    saved(
        open(&server, "github")
            .await
            .save(None, &fresh_set())
            .await
            .unwrap(),
    );
    let mut replicas = Vec::new();
    for i in 0..3 {
        let client = Client {
            server: auth.clone(),
            latency: Duration::from_millis(10),
        };
        replicas.push(replica(&server, client, quick_policy(10 + i)).await);
    }
    for (c, _) in &replicas {
        assert_eq!(c.token().await.unwrap().secret(), "access-0");
    }

    server.stop();
    for _ in 0..3 {
        for (c, _) in &replicas {
            let t = tokio::time::timeout(Duration::from_secs(1), c.token())
                .await
                .expect("a valid token is served without the store")
                .unwrap();
            assert_eq!(t.secret(), "access-0");
        }
    }
    // A refresh that cannot take the lease fails closed, promptly, without calling the provider.
    let (first, _) = &replicas[0];
    let rejected = first.token().await.unwrap();
    assert!(first.invalidate(&rejected));
    let outcome = tokio::time::timeout(Duration::from_secs(10), first.token())
        .await
        .expect("no hang while Redis is down");
    assert!(
        outcome.is_err(),
        "no token while the rejected one cannot be replaced"
    );
    assert_eq!(auth.calls(), 0);

    // Back, empty (no persistence): the replicas refresh once and adopt that refresh.
    server.restart();
    for (c, _) in &replicas[1..] {
        let current = c.token().await.unwrap();
        assert!(c.invalidate(&current));
    }
    for (c, _) in &replicas {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match c.token().await {
                Ok(t) if t.secret() == "access-1" => break,
                other => assert!(
                    Instant::now() < deadline,
                    "no refresh after the restart: {:?}",
                    other.map(|t| t.secret().to_owned())
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(auth.calls(), 1, "one refresh for the three replicas");
    assert!(!auth.revoked());
    let (_, store) = &replicas[2];
    assert_eq!(stored_access(store).await.as_deref(), Some("access-1"));
}

#[tokio::test]
async fn the_store_works_behind_a_dyn_token_store() {
    let server = server!();
    let store: Arc<dyn TokenStore> = Arc::new(open(&server, "github").await);
    saved(store.save(None, &set(1)).await.unwrap());
    assert!(store.load().await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// TLS (feature `redis-tls`): a server with a certificate from a throw-away CA.

/// Runs `openssl` with `args` in `dir`.
#[cfg(feature = "redis-tls")]
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the TLS test needs the openssl command (apt-get install -y openssl)");
    assert!(status.success(), "openssl {args:?} failed");
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn rediss_urls_connect_with_a_private_root_certificate() {
    if std::env::var("KEEPFRESH_SKIP_REDIS").as_deref() == Ok("1") {
        return;
    }
    let certs = std::env::temp_dir().join(format!("keepfresh-redis-tls-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=keepfresh test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&certs, &ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&certs, &csr);
    std::fs::write(certs.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &certs,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    let path = |f: &str| certs.join(f).display().to_string();
    let (cert, key, ca_file) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let server = RedisServer::launch(
        &[
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "tls-S3cret",
        ],
        true,
    )
    .expect("a TLS redis-server");
    let url = format!("rediss://:tls-S3cret@127.0.0.1:{}/0", server.port);
    let ca_pem = std::fs::read(certs.join("ca.pem")).unwrap();

    let store = RedisStore::builder(&url)
        .tls_root_certificate(ca_pem)
        .open("github")
        .await
        .expect("a TLS connection trusting the private CA");
    let tokens = set(1);
    saved(store.save(None, &tokens).await.unwrap());
    assert_eq!(store.load().await.unwrap().unwrap().tokens, tokens);
    assert!(format!("{store:?}").contains("rediss://:***@127.0.0.1"));

    // The platform's roots do not know the private CA: an error, not a panic.
    let e = RedisStore::open(&url, "github")
        .await
        .expect_err("an unknown issuer");
    assert!(!e.to_string().contains("tls-S3cret"), "{e}");
    // Plain text against the TLS port fails too.
    let plain = format!("redis://:tls-S3cret@127.0.0.1:{}/0", server.port);
    assert!(RedisStore::builder(&plain)
        .op_timeout(Duration::from_millis(500))
        .open("github")
        .await
        .is_err());
    let _ = std::fs::remove_dir_all(&certs);
}

// ---------------------------------------------------------------------------------------------
// The store contract every TokenStore owes the engine (feature `contract`).

#[cfg(feature = "contract")]
mod contract {
    use super::*;
    use keepfresh::runtime::Runtime;
    use keepfresh::store::contract::{Contract, Fixture};

    /// Every fresh store is a new credential key on one server; a reopened handle is a new
    /// connection, as another replica would open it.
    struct Redis {
        url: String,
        next: u32,
    }

    #[async_trait]
    impl Fixture for Redis {
        type Store = RedisStore;
        async fn fresh(&mut self) -> RedisStore {
            self.next += 1;
            RedisStore::open(&self.url, &format!("contract-{}", self.next))
                .await
                .expect("the store opens")
        }
        async fn reopen(&mut self, store: &RedisStore) -> RedisStore {
            RedisStore::open(&self.url, store.key())
                .await
                .expect("the store opens")
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store_keeps_the_store_contract() {
        let server = server!();
        let mut fixture = Redis {
            url: server.url(),
            next: 0,
        };
        let report = Contract::new(Runtime::tokio())
            .notifies(true)
            .check(&mut fixture)
            .await
            .unwrap_or_else(|violations| {
                let all: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
                panic!("{}", all.join("\n"))
            });
        for check in [
            "lease expiry",
            "concurrent writers",
            "clear-if",
            "change notice",
        ] {
            assert!(report.passed.contains(&check), "{check} did not run");
        }
    }
}

#[tokio::test]
async fn a_store_spec_opens_a_redis_store() {
    let server = server!();
    let spec: keepfresh::store::spec::StoreSpec =
        format!("{}/0/github", server.url()).parse().unwrap();
    let store = spec.open().await.expect("the spec opens");
    let v = saved(store.save(None, &set(1)).await.unwrap());
    let direct = open(&server, "github").await;
    assert_eq!(direct.load().await.unwrap().unwrap().version, v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_polled_by_another_executor_run_on_the_stores_runtime() {
    let server = server!();
    let a = open(&server, "github").await;
    let b = open(&server, "github").await;
    let elsewhere = tokio::task::spawn_blocking(move || {
        futures::executor::block_on(async {
            let v = saved(a.save(None, &set(1)).await.unwrap());
            let lease = acquired(a.try_lease(Duration::from_secs(30)).await.unwrap());
            assert!(a
                .renew_lease(&lease, Duration::from_secs(30))
                .await
                .unwrap());
            a.release(lease).await.unwrap();
            assert_eq!(a.load().await.unwrap().unwrap().version, v);
            saved(b.save(Some(v), &set(2)).await.unwrap());
            // `a` last saw version v: the newer one wakes it at once.
            a.changed().await.unwrap();
        })
    });
    tokio::time::timeout(Duration::from_secs(10), elsewhere)
        .await
        .expect("no hang outside tokio")
        .expect("no panic outside tokio");
}

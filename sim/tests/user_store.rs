//! The simulator as a library (`keepfresh_sim::lab`): a host's own `TokenStore` in seeded
//! multi-process worlds, under the simulator's faults and oracles.
//!
//! `PlantedStore` is a store written here from scratch (on `std::sync::Mutex`, leases on the
//! world's clock), correct unless a bug is planted in it:
//!
//! - `Bug::LeaseAlwaysGranted`: `try_lease` hands the lease to everyone (it forgets to check
//!   the holder), so two processes refresh at once with the same refresh token: the oracle of
//!   one token-endpoint call in flight per credential fails;
//! - `Bug::NoCompareAndSwap`: `save` ignores the expected version, so a save retried after
//!   another writer stored a newer set writes the older set over it.
//!
//! Each bug is found within a few seeds, the report names the invariant and prints how to
//! replay the seed, and the replay reproduces the run exactly; the same worlds pass with the
//! correct store, with keepfresh's `MemoryStore` and with its `FileStore` in a temp dir.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::runtime::{Clock, MonoTime};
use keepfresh::store::{
    Lease, LeaseOutcome, MemoryStore, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore,
    Version,
};
use keepfresh::TokenSet;
use keepfresh_sim::lab::{Lab, LabError, LabReport, StoreSeat};
use keepfresh_sim::world::FailureKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    LeaseAlwaysGranted,
    NoCompareAndSwap,
}

#[derive(Default)]
struct Content {
    version: u64,
    tokens: Option<TokenSet>,
    lease: Option<(u64, MonoTime)>,
    next_lease: u64,
}

/// A host's store: versions, compare-and-swap, leases with a time-to-live on `clock`.
struct PlantedStore {
    content: Mutex<Content>,
    clock: Arc<dyn Clock>,
    bug: Option<Bug>,
}

impl PlantedStore {
    fn new(seat: &StoreSeat, bug: Option<Bug>) -> Self {
        PlantedStore {
            content: Mutex::new(Content::default()),
            clock: seat.clock(),
            bug,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Content>, StoreError> {
        self.content
            .lock()
            .map_err(|_| StoreError::new(StoreErrorKind::Io, "poisoned"))
    }
}

fn stored(c: &Content) -> Option<Stored> {
    c.tokens.clone().map(|tokens| Stored {
        version: Version(c.version),
        tokens,
    })
}

#[async_trait]
impl TokenStore for PlantedStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        Ok(stored(&*self.lock()?))
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        let mut c = self.lock()?;
        let current = c.tokens.as_ref().map(|_| Version(c.version));
        if current != expected && self.bug != Some(Bug::NoCompareAndSwap) {
            return Ok(SaveOutcome::Conflict(stored(&c)));
        }
        c.version += 1;
        c.tokens = Some(tokens.clone());
        Ok(SaveOutcome::Saved(Version(c.version)))
    }

    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        let mut c = self.lock()?;
        if c.tokens.is_none() || c.version != expected.0 {
            return Ok(false);
        }
        c.version += 1;
        c.tokens = None;
        Ok(true)
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        let now = self.clock.monotonic();
        let mut c = self.lock()?;
        let held = c.lease.is_some_and(|(_, until)| now < until);
        if held && self.bug != Some(Bug::LeaseAlwaysGranted) {
            return Ok(LeaseOutcome::Held);
        }
        c.next_lease += 1;
        let id = c.next_lease;
        c.lease = Some((id, now.saturating_add(ttl)));
        Ok(LeaseOutcome::Acquired(Lease { id }))
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        let mut c = self.lock()?;
        if c.lease.is_some_and(|(id, _)| id == lease.id) {
            c.lease = None;
        }
        Ok(())
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.monotonic();
        let mut c = self.lock()?;
        match c.lease {
            Some((id, _)) if id == lease.id => {
                c.lease = Some((id, now.saturating_add(ttl)));
                Ok(true)
            }
            _ if self.bug == Some(Bug::LeaseAlwaysGranted) => Ok(true),
            _ => Ok(false),
        }
    }
}

/// The seeds every test here runs: the planted bugs must show within them. (Over seeds 1 to
/// 20, the lease bug fails 19 runs of `lease-reread` and 3 of `shared-store`, the missing
/// compare-and-swap all 20 of `newer-during-save-retry` and 8 of `login-during-refresh`, and
/// none of `shared-store`, where the lease keeps writers apart.)
const SEEDS: std::ops::RangeInclusive<u64> = 1..=8;

fn planted(scenario: &str, bug: Option<Bug>) -> Lab {
    Lab::scenario(scenario)
        .store(move |seat| PlantedStore::new(seat, bug))
        .seeds(SEEDS)
}

/// The first failure of `report`, checked to name `invariant` and to say how to replay it;
/// then the seed replayed alone gives the same failure and the same trace.
fn assert_found(report: &LabReport, lab: &Lab, scenario: &str, invariant: &str) -> u64 {
    let fail = report
        .first_failure()
        .unwrap_or_else(|| panic!("the planted bug went unnoticed in {scenario}:\n{report}"));
    let f = fail.failure().expect("a failing run has a failure");
    assert_eq!(f.kind, FailureKind::Correctness, "{report}");
    assert!(
        f.message.contains(invariant),
        "expected the invariant {invariant:?}:\n{report}"
    );
    let text = report.to_string();
    let seed = fail.seed();
    for needle in [
        format!("scenario {scenario} seed {seed}: correctness failure"),
        format!("invariant: {}", f.message),
        "last trace lines:".to_string(),
        format!("KEEPFRESH_SIM_SEED={seed} cargo test -p keepfresh-sim --test user_store"),
        format!(".seed({seed})"),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    assert!(!fail.trace_tail().is_empty());
    let again = lab.clone().seed(seed).run().expect("runs");
    let rerun = &again.runs()[0];
    assert_eq!(rerun.failure().map(|f| &f.message), Some(&f.message));
    assert_eq!(rerun.trace_hash(), fail.trace_hash(), "the replay differs");
    println!("{report}");
    seed
}

#[test]
fn lease_that_always_grants_is_found_in_lease_reread() {
    let lab = planted("lease-reread", Some(Bug::LeaseAlwaysGranted));
    let report = lab.run().expect("runs");
    let seed = assert_found(
        &report,
        &lab,
        "lease-reread",
        "two token-endpoint calls in flight at once",
    );
    println!("found at seed {seed}");
}

#[test]
fn save_without_compare_and_swap_is_found_in_newer_during_save_retry() {
    let lab = planted("newer-during-save-retry", Some(Bug::NoCompareAndSwap));
    let report = lab.run().expect("runs");
    let seed = assert_found(
        &report,
        &lab,
        "newer-during-save-retry",
        "wrote an older token set over a newer one",
    );
    println!("found at seed {seed}");
}

#[test]
fn the_correct_store_passes_the_same_worlds() {
    for scenario in ["shared-store", "newer-during-save-retry", "lease-reread"] {
        let report = planted(scenario, None).run().expect("runs");
        assert!(report.passed(), "{report}");
        assert_eq!(report.runs().len(), SEEDS.count());
    }
}

#[test]
fn memory_store_passes_the_same_worlds() {
    for scenario in ["shared-store", "newer-during-save-retry", "lease-reread"] {
        Lab::scenario(scenario)
            .store(|seat| MemoryStore::with_clock(seat.clock()))
            .seeds(SEEDS)
            .check();
    }
}

/// keepfresh's file store: real files in a temp dir, one per credential and seed, its I/O on
/// the `blocking` crate's threads (each operation is waited for on the simulator's thread).
#[cfg(feature = "load")]
#[test]
fn file_store_passes_the_same_worlds() {
    let dir = tempfile::tempdir().expect("temp dir");
    for scenario in ["shared-store", "newer-during-save-retry", "lease-reread"] {
        let root = dir.path().join(scenario);
        Lab::scenario(scenario)
            .store(move |seat| {
                let path = root.join(format!("seed-{}/c{}.json", seat.seed(), seat.credential()));
                keepfresh::store::FileStore::open(path).expect("opens")
            })
            .seeds(1..=3)
            .check();
    }
    // Deterministic per seed with real files too: two runs of a seed in fresh directories
    // give the same trace.
    let hash = |run: u32| {
        let root = dir.path().join(format!("twice-{run}"));
        let report = Lab::scenario("lease-reread")
            .store(move |seat| {
                keepfresh::store::FileStore::open(root.join(format!("c{}.json", seat.credential())))
                    .expect("opens")
            })
            .seed(4)
            .run()
            .expect("runs");
        assert!(report.passed(), "{report}");
        report.runs()[0].trace_hash()
    };
    assert_eq!(hash(1), hash(2));
}

/// A store that panics in `save`: the run fails naming the store and the operation; the lab
/// itself does not panic.
#[test]
fn a_panicking_store_is_reported() {
    struct Panics(PlantedStore);
    #[async_trait]
    impl TokenStore for Panics {
        async fn load(&self) -> Result<Option<Stored>, StoreError> {
            self.0.load().await
        }
        async fn save(&self, _: Option<Version>, _: &TokenSet) -> Result<SaveOutcome, StoreError> {
            panic!("planted panic in save")
        }
        async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
            self.0.clear(expected).await
        }
    }
    let report = Lab::scenario("shared-store")
        .store(|seat| Panics(PlantedStore::new(seat, None)))
        .seed(1)
        .run()
        .expect("runs");
    let f = report
        .first_failure()
        .and_then(|r| r.failure())
        .expect("fails");
    assert_eq!(f.kind, FailureKind::Crash, "{report}");
    assert!(
        f.message
            .contains("the store under test panicked in save: planted panic in save"),
        "{report}"
    );
}

/// A store whose `load` never completes (it waits on something the simulator cannot drive):
/// the run fails after the operation limit instead of hanging.
#[test]
fn a_stuck_store_is_reported() {
    struct Stuck;
    #[async_trait]
    impl TokenStore for Stuck {
        async fn load(&self) -> Result<Option<Stored>, StoreError> {
            futures::future::pending().await
        }
        async fn save(&self, _: Option<Version>, _: &TokenSet) -> Result<SaveOutcome, StoreError> {
            futures::future::pending().await
        }
        async fn clear(&self, _: Version) -> Result<bool, StoreError> {
            futures::future::pending().await
        }
    }
    let report = Lab::scenario("shared-store")
        .store(|_| Stuck)
        .op_limit(Duration::from_millis(50))
        .seed(1)
        .run()
        .expect("runs");
    let f = report
        .first_failure()
        .and_then(|r| r.failure())
        .expect("fails");
    assert_eq!(f.kind, FailureKind::Crash, "{report}");
    assert!(f.message.contains("did not complete"), "{report}");
}

/// A store whose every operation fails is a store with errors, not a crash of the harness:
/// the lab reports what the engine did with it.
#[test]
fn a_store_that_always_fails_is_a_report_not_a_panic() {
    struct Fails(AtomicUsize);
    #[async_trait]
    impl TokenStore for Fails {
        async fn load(&self) -> Result<Option<Stored>, StoreError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(StoreError::new(StoreErrorKind::Io, "disk on fire"))
        }
        async fn save(&self, _: Option<Version>, _: &TokenSet) -> Result<SaveOutcome, StoreError> {
            Err(StoreError::new(StoreErrorKind::Io, "disk on fire"))
        }
        async fn clear(&self, _: Version) -> Result<bool, StoreError> {
            Err(StoreError::new(StoreErrorKind::Io, "disk on fire"))
        }
    }
    let report = Lab::scenario("shared-store")
        .store(|_| Fails(AtomicUsize::new(0)))
        .seed(1)
        .run()
        .expect("runs");
    if let Some(f) = report.first_failure().and_then(|r| r.failure()) {
        assert_ne!(f.kind, FailureKind::Crash, "{report}");
    }
}

#[test]
fn bad_worlds_are_errors() {
    let err = Lab::scenario("no-such-world").run().unwrap_err();
    assert!(matches!(err, LabError::UnknownScenario { .. }), "{err}");
    let err = Lab::scenario("shared-store")
        .seeds(std::iter::empty())
        .run()
        .unwrap_err();
    assert_eq!(err, LabError::NoSeeds);
}

/// A scenario file runs in the lab like a built-in world, and a bad file is a clear error
/// naming its position, not a panic.
#[test]
fn scenario_files_run_in_the_lab() {
    use keepfresh_sim::lab::{Lab, LabError};
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/scenarios/desktop-apps.toml");
    let report = Lab::scenario_file(&file)
        .store(|seat| keepfresh::store::MemoryStore::with_clock(seat.clock()))
        .seeds(1..=2)
        .run()
        .expect("runs");
    assert!(report.passed(), "{report}");
    assert_eq!(report.runs().len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"b\"\nduration = \"1h\"\n[world]\nprocesses = 0\n",
    )
    .unwrap();
    match Lab::scenario_file(&bad).seed(1).run() {
        Err(LabError::InvalidWorld { message, .. }) => {
            assert!(message.contains("bad.toml:4:"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

/// A throwaway `redis-server`, shared with keepfresh's own tests and the benchmarks.
#[cfg(feature = "load")]
#[path = "../../tests/common/redis.rs"]
mod redis_server;

/// keepfresh's `RedisStore`, which needs a tokio runtime for its connection and timeouts, in
/// the lab's multi-process worlds on a real Redis (`Lab::tokio`): every invariant holds, each
/// run in a namespace of its own. Without the runtime the lab reports the store as panicking
/// (no reactor), naming the operation.
#[cfg(feature = "load")]
#[test]
fn redis_store_in_the_lab_on_a_tokio_runtime() {
    use keepfresh::store::RedisStore;
    let Some(redis) = redis_server::RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    // A namespace per world and seed: a run starts from an empty store, as in memory.
    let open = |world: &'static str| {
        let (handle, url) = (runtime.handle().clone(), url.clone());
        move |seat: &StoreSeat| {
            handle
                .block_on(
                    RedisStore::builder(&url)
                        .namespace(format!("lab-{world}-{}", seat.seed()))
                        .open(&format!("c{}", seat.credential())),
                )
                .expect("open the Redis store")
        }
    };
    for scenario in [
        "shared-store",
        "lease-reread",
        "stampede",
        "newer-during-save-retry",
        "store-outage",
    ] {
        let report = Lab::scenario(scenario)
            .store(open(scenario))
            .tokio(runtime.handle().clone())
            .seeds(1..=3)
            .run()
            .unwrap_or_else(|e| panic!("{scenario}: {e}"));
        assert!(report.passed(), "{scenario}: {report}");
        assert_eq!(report.runs().len(), 3, "{scenario}");
    }
    let without = Lab::scenario("shared-store")
        .store(open("no-runtime"))
        .seed(1)
        .run()
        .expect("runs");
    assert!(!without.passed(), "a tokio store without the runtime fails");
    let text = without.to_string();
    assert!(text.contains("panicked"), "{text}");
}

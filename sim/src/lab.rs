//! The simulator as a library: run **your own** [`TokenStore`] (and your own
//! [`RefreshPolicy`]) under keepfresh's engine in a seeded world, with the same faults and
//! invariant oracles as the built-in scenarios, from an ordinary `#[test]`.
//!
//! ```
//! use keepfresh::store::MemoryStore;
//! use keepfresh_sim::lab::Lab;
//!
//! // Every process of a credential shares the store the factory makes for that credential.
//! // `seat.clock()` is the world's virtual clock: give it to whatever in your store keeps
//! // time (lease expiry), so that leases run out in simulated time.
//! let report = Lab::scenario("shared-store")
//!     .store(|seat| MemoryStore::with_clock(seat.clock()))
//!     .seeds(1..=2)
//!     .run()
//!     .expect("a known scenario");
//! assert!(report.passed(), "{report}");
//! ```
//!
//! In a test, [`Lab::check`] does the same and panics with the report when a seed fails. The
//! report of a failing seed names the scenario, the seed, the broken invariant and the last
//! trace lines, and says how to rerun only that seed: `KEEPFRESH_SIM_SEED=<seed> cargo test …`
//! (the lab runs just that seed when the variable is set; add `KEEPFRESH_SIM_TRACE=1` and
//! `--nocapture` for its full trace) or `.seed(<seed>)` in the builder.
//! Runs are deterministic per seed: the same seed replays the same run, event for event, as
//! long as the store itself is deterministic.
//!
//! # Worlds
//!
//! [`Lab::scenario`] takes a built-in scenario's name (`keepfresh-sim list`, and
//! `docs/scenarios.md`); the world is drawn from each seed as `keepfresh-sim run` draws it.
//! [`Lab::world`] takes any [`WorldConfig`] (one built by hand, or loaded from a file) and
//! runs it with every seed; [`Lab::world_fn`] draws one from each seed. Stores matter in worlds
//! with several processes per credential: `shared-store`, `lease-reread`, `unrelated-writer`,
//! `save-fails`, `slow-store`, and the store-fault scenarios.
//!
//! # Faults and oracles with your store
//!
//! Your store sits behind the simulator's fault layer, which every process's engine talks to.
//! All of the world's faults apply: failed, slow and hung writes, failed and hung reads and
//! lease operations, store outages, a crash between the provider's answer and the save, and
//! the two lies: a stale read (the layer answers with a set the store held before its latest
//! writes, as it recorded them) and a lost save (the layer acknowledges a save whose
//! compare-and-swap matches without passing it on, answering the version the store had plus
//! one: exact for stores that count versions up by one, such as keepfresh's memory and file
//! stores). Scheduled rewrites by an unrelated writer and the director's newer writes go
//! through your store's own `load` and `save` (compare-and-swap).
//!
//! The oracles read the store's true content through your store's `load`, from outside the
//! fault layer (before each save that lands, for the store oracle; at a crash; at the end, for
//! convergence). So a store whose `load` lies is judged by its lie.
//!
//! # Which stores
//!
//! Each operation of your store is driven to completion on the simulator's thread as soon as
//! it is called: it takes no simulated time (the fault layer adds the simulated latency) and
//! nothing else in the world runs meanwhile. Supported: stores whose futures complete without
//! an async runtime's timers or I/O reactor — memory-like stores, stores on `std::sync` or
//! `parking_lot`, stores that hand blocking work to a thread pool and are woken from it (such
//! as keepfresh's `FileStore`, feature `file`, in a temporary directory). Stores built on tokio
//! (keepfresh's `RedisStore`) work when the lab is given a multi-thread runtime
//! ([`Lab::tokio`]): each operation then runs in its context, and its workers drive the
//! store's sockets and timers. Not supported: stores that wait for another task of the
//! world. An operation still pending after [`Lab::op_limit`] of real time (10 s by default)
//! fails the run with a message saying so; a store that panics fails the run naming the
//! operation; a store that returns errors is simply a store with errors, which the engine must
//! live with.
//!
//! [`TokenStore::changed`] is not forwarded: the engine polls while another process holds the
//! lease (as with a store without change notices). Anything in your store that keeps time
//! must use [`StoreSeat::clock`]; a store on the system clock (`MemoryStore::new()`,
//! `FileStore`'s in-process lease time-to-live, a Redis server's key expiry) sees almost no
//! time pass in a simulated hour, so its leases only end when released: scenarios that kill or
//! hang a lease holder (`lease-faults`) then report a liveness failure that belongs to the
//! clock, not the store.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use keepfresh::runtime::Clock;
use keepfresh::store::TokenStore;
use keepfresh::RefreshPolicy;

use crate::provider::SECRET_MARKER;
use crate::runner::{self, Overrides};
use crate::scenario;
use crate::strategy::Keepfresh;
use crate::world::{self, Failure, FailureKind, HostParts, WorldConfig};

/// The environment variable that makes every lab run only the seed it names: the replay of a
/// failing seed is `KEEPFRESH_SIM_SEED=<seed> cargo test …`.
///
/// ```
/// assert_eq!(keepfresh_sim::lab::SEED_VAR, "KEEPFRESH_SIM_SEED");
/// ```
pub const SEED_VAR: &str = "KEEPFRESH_SIM_SEED";

/// The environment variable that makes every lab run print its full trace (any value but
/// `0`), as [`Lab::print_trace`] does; with `--nocapture` to see it in a test.
///
/// ```
/// assert_eq!(keepfresh_sim::lab::TRACE_VAR, "KEEPFRESH_SIM_TRACE");
/// ```
pub const TRACE_VAR: &str = "KEEPFRESH_SIM_TRACE";

/// Real time one operation of a store under test may take by default.
const OP_LIMIT: Duration = Duration::from_secs(10);

/// Where a store is being made: which credential, and the clock to keep time by.
///
/// ```
/// use keepfresh::store::MemoryStore;
/// use keepfresh_sim::lab::Lab;
///
/// Lab::scenario("scopes")
///     .store(|seat| {
///         assert!(seat.credential() < 4);
///         MemoryStore::with_clock(seat.clock())
///     })
///     .seed(3)
///     .check();
/// ```
#[derive(Clone)]
pub struct StoreSeat {
    credential: usize,
    seed: u64,
    clock: Arc<dyn Clock>,
}

impl StoreSeat {
    pub(crate) fn new(credential: usize, seed: u64, clock: Arc<dyn Clock>) -> Self {
        StoreSeat {
            credential,
            seed,
            clock,
        }
    }

    /// The run's seed (in a world run in shards, the shard's): to keep the stores of
    /// different runs apart, such as one directory per seed for a file store.
    ///
    /// ```
    /// use keepfresh::store::MemoryStore;
    /// use keepfresh_sim::lab::Lab;
    ///
    /// Lab::scenario("shared-store")
    ///     .store(|seat| {
    ///         assert_eq!(seat.seed(), 8);
    ///         MemoryStore::with_clock(seat.clock())
    ///     })
    ///     .seed(8)
    ///     .check();
    /// ```
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The credential's index in the world (`0..credentials`); every process of it shares
    /// the store made here. In a world run in shards, the index within the shard.
    ///
    /// See the [type-level example](StoreSeat).
    pub fn credential(&self) -> usize {
        self.credential
    }

    /// The world's clock (virtual time; its wall clock is the true one, without the skew of
    /// any process). Lease expiry and anything else time-based in the store should follow it.
    ///
    /// See the [type-level example](StoreSeat).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }
}

impl fmt::Debug for StoreSeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSeat")
            .field("credential", &self.credential)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
enum WorldSource {
    Scenario(String),
    File(std::path::PathBuf),
    Config(Box<WorldConfig>),
    Draw(Arc<dyn Fn(u64) -> WorldConfig + Send + Sync>),
}

#[derive(Clone, Debug)]
enum Seeds {
    List(Vec<u64>),
    Fresh(u64),
}

/// A lab run: a world, a store, a policy and seeds. See the [module documentation](self).
///
/// ```
/// use keepfresh::store::MemoryStore;
/// use keepfresh::RefreshPolicy;
/// use keepfresh_sim::lab::Lab;
///
/// Lab::scenario("lease-reread")
///     .store(|seat| MemoryStore::with_clock(seat.clock()))
///     .policy(RefreshPolicy::default())
///     .seed(7)
///     .check();
/// ```
#[derive(Clone)]
pub struct Lab {
    world: WorldSource,
    parts: HostParts,
    seeds: Seeds,
    keep_going: bool,
    print_trace: bool,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let world = match &self.world {
            WorldSource::Scenario(n) => n.clone(),
            WorldSource::File(p) => p.display().to_string(),
            WorldSource::Config(c) => c.scenario.clone(),
            WorldSource::Draw(_) => "<drawn per seed>".into(),
        };
        f.debug_struct("Lab")
            .field("world", &world)
            .field("own_store", &self.parts.store.is_some())
            .field("own_policy", &self.parts.policy.is_some())
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl Lab {
    fn new(world: WorldSource) -> Lab {
        Lab {
            world,
            parts: HostParts {
                store: None,
                policy: None,
                op_limit: OP_LIMIT,
                progress: None,
                #[cfg(feature = "load")]
                tokio: None,
            },
            seeds: Seeds::List(vec![0]),
            keep_going: false,
            print_trace: false,
        }
    }

    /// The built-in scenario `name`, its world drawn from each seed. An unknown name is
    /// reported by [`Lab::run`].
    ///
    /// See the [type-level example](Lab).
    pub fn scenario(name: &str) -> Lab {
        Lab::new(WorldSource::Scenario(name.to_owned()))
    }

    /// The world described by the scenario file at `path` (see
    /// [`scenario_file`](crate::scenario_file)), for every seed. A file that does not load is
    /// reported by [`Lab::run`] with its line and column.
    ///
    /// ```
    /// use keepfresh::store::MemoryStore;
    /// use keepfresh_sim::lab::Lab;
    /// let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
    ///     .join("../docs/scenarios/desktop-apps.toml");
    /// Lab::scenario_file(file)
    ///     .store(|seat| MemoryStore::with_clock(seat.clock()))
    ///     .seed(1)
    ///     .check();
    /// ```
    pub fn scenario_file(path: impl AsRef<std::path::Path>) -> Lab {
        Lab::new(WorldSource::File(path.as_ref().to_path_buf()))
    }

    /// This world for every seed (the seed still decides the workload, the faults, the
    /// latencies and the order of events).
    ///
    /// ```
    /// use keepfresh::store::MemoryStore;
    /// use keepfresh_sim::lab::Lab;
    /// use keepfresh_sim::provider::Profile;
    /// use keepfresh_sim::world::WorldConfig;
    /// use std::time::Duration;
    ///
    /// let mut world = WorldConfig::base("my-world", Profile::strict(Duration::from_secs(600)));
    /// world.processes = 3;
    /// world.duration = Duration::from_secs(3600);
    /// world.faults.store_write_fail = 0.2;
    /// Lab::world(world)
    ///     .store(|seat| MemoryStore::with_clock(seat.clock()))
    ///     .seeds(1..=2)
    ///     .check();
    /// ```
    pub fn world(cfg: WorldConfig) -> Lab {
        Lab::new(WorldSource::Config(Box::new(cfg)))
    }

    /// A world drawn from each seed by `draw`.
    ///
    /// ```
    /// use keepfresh::store::MemoryStore;
    /// use keepfresh_sim::lab::Lab;
    /// use keepfresh_sim::provider::Profile;
    /// use keepfresh_sim::world::WorldConfig;
    /// use std::time::Duration;
    ///
    /// Lab::world_fn(|seed| {
    ///     let mut w = WorldConfig::base("drawn", Profile::strict(Duration::from_secs(900)));
    ///     w.processes = 2 + (seed % 3) as usize;
    ///     w.duration = Duration::from_secs(3600);
    ///     w
    /// })
    /// .store(|seat| MemoryStore::with_clock(seat.clock()))
    /// .seeds(10..12)
    /// .check();
    /// ```
    pub fn world_fn(draw: impl Fn(u64) -> WorldConfig + Send + Sync + 'static) -> Lab {
        Lab::new(WorldSource::Draw(Arc::new(draw)))
    }

    /// The store under test: `make` is called once per credential and per run, and every
    /// process of the credential (and every restart of one) shares what it returns, behind
    /// the fault layer. Without it, the world uses the simulator's own memory store.
    ///
    /// See the [module documentation](self) for which stores are supported.
    ///
    /// ```
    /// use keepfresh::store::MemoryStore;
    /// use keepfresh_sim::lab::Lab;
    /// use std::sync::Arc;
    ///
    /// // Any `TokenStore`; an `Arc` of one is a `TokenStore` too.
    /// Lab::scenario("shared-store")
    ///     .store(|seat| Arc::new(MemoryStore::with_clock(seat.clock())))
    ///     .seed(1)
    ///     .check();
    /// ```
    pub fn store<S, F>(mut self, make: F) -> Lab
    where
        S: TokenStore,
        F: Fn(&StoreSeat) -> S + Send + Sync + 'static,
    {
        self.parts.store = Some(Arc::new(move |seat: &StoreSeat| {
            Arc::new(make(seat)) as Arc<dyn TokenStore>
        }));
        self
    }

    /// The engine's policy for every run, in place of the world's (its refresh-ahead jitter
    /// is still seeded per process by the world).
    ///
    /// See the [type-level example](Lab).
    pub fn policy(self, policy: RefreshPolicy) -> Lab {
        self.policy_fn(move |_| policy.clone())
    }

    /// The engine's policy for each run's seed.
    ///
    /// ```
    /// use keepfresh::RefreshPolicy;
    /// use keepfresh_sim::lab::Lab;
    /// use std::time::Duration;
    ///
    /// Lab::scenario("stampede")
    ///     .policy_fn(|seed| {
    ///         RefreshPolicy::builder()
    ///             .wait_timeout(Duration::from_secs(10 + seed % 20))
    ///             .build()
    ///             .expect("a valid policy")
    ///     })
    ///     .seed(4)
    ///     .check();
    /// ```
    pub fn policy_fn(mut self, make: impl Fn(u64) -> RefreshPolicy + Send + Sync + 'static) -> Lab {
        self.parts.policy = Some(Arc::new(make));
        self
    }

    /// Runs this one seed (the default is seed 0).
    ///
    /// See the [type-level example](Lab).
    pub fn seed(self, seed: u64) -> Lab {
        self.seeds([seed])
    }

    /// Runs these seeds, in order: a range (`1..=100`), a list, any iterator.
    ///
    /// See the [module documentation](self).
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = u64>) -> Lab {
        self.seeds = Seeds::List(seeds.into_iter().collect());
        self
    }

    /// Runs `n` seeds from a start taken from the system clock, new on every run: each run
    /// explores seeds no earlier run tried, and a failing seed's report still replays it.
    ///
    /// ```
    /// use keepfresh_sim::lab::Lab;
    /// let report = Lab::scenario("scopes").fresh_seeds(1).run().unwrap();
    /// assert_eq!(report.runs().len(), 1);
    /// assert!(report.passed(), "{report}");
    /// ```
    pub fn fresh_seeds(mut self, n: u64) -> Lab {
        self.seeds = Seeds::Fresh(n);
        self
    }

    /// Runs every seed even after one failed (by default the lab stops at the first failing
    /// seed).
    ///
    /// ```
    /// use keepfresh_sim::lab::Lab;
    /// let report = Lab::scenario("scopes").seeds(0..2).keep_going(true).run().unwrap();
    /// assert_eq!(report.runs().len(), 2);
    /// ```
    pub fn keep_going(mut self, keep_going: bool) -> Lab {
        self.keep_going = keep_going;
        self
    }

    /// Prints every run's full trace to standard output (for a replay of one seed); so does
    /// [`TRACE_VAR`] set to anything but `0`.
    ///
    /// ```
    /// use keepfresh_sim::lab::Lab;
    /// Lab::scenario("stampede").seed(2).print_trace(true).check();
    /// ```
    pub fn print_trace(mut self, print: bool) -> Lab {
        self.print_trace = print;
        self
    }

    /// Real time one operation of the store under test may take before the run fails with a
    /// stuck store (10 s by default). The operation itself takes no simulated time.
    ///
    /// ```
    /// use keepfresh::store::MemoryStore;
    /// use keepfresh_sim::lab::Lab;
    /// use std::time::Duration;
    /// Lab::scenario("shared-store")
    ///     .store(|seat| MemoryStore::with_clock(seat.clock()))
    ///     .op_limit(Duration::from_secs(1))
    ///     .seed(5)
    ///     .check();
    /// ```
    pub fn op_limit(mut self, limit: Duration) -> Lab {
        self.parts.op_limit = limit;
        self
    }

    /// Runs each operation of the store under test inside `runtime`'s context, so that a
    /// store built on tokio (its timers, its sockets: keepfresh's `RedisStore`) works in the
    /// lab. The runtime must be multi-threaded: its workers drive the store's I/O and timers
    /// while the simulator's thread waits for the operation. Feature `load` (on by default).
    ///
    /// Such a store keeps real time: an operation takes no simulated time, and a lease's
    /// time-to-live runs on the real clock, so in a simulated hour it ends only when
    /// released (see [which stores](self#which-stores)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use keepfresh::store::{
    ///     Lease, LeaseOutcome, MemoryStore, SaveOutcome, StoreError, Stored, TokenStore, Version,
    /// };
    /// use keepfresh::TokenSet;
    /// use keepfresh_sim::lab::Lab;
    ///
    /// /// A memory store whose every operation first waits 1 ms on a tokio timer.
    /// struct OnTokio(MemoryStore);
    ///
    /// async fn tick() {
    ///     tokio::time::sleep(Duration::from_millis(1)).await;
    /// }
    ///
    /// #[async_trait::async_trait]
    /// impl TokenStore for OnTokio {
    ///     async fn load(&self) -> Result<Option<Stored>, StoreError> {
    ///         tick().await;
    ///         self.0.load().await
    ///     }
    ///     async fn save(&self, expected: Option<Version>, t: &TokenSet) -> Result<SaveOutcome, StoreError> {
    ///         tick().await;
    ///         self.0.save(expected, t).await
    ///     }
    ///     async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
    ///         tick().await;
    ///         self.0.clear(expected).await
    ///     }
    ///     async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
    ///         tick().await;
    ///         self.0.try_lease(ttl).await
    ///     }
    ///     async fn release(&self, lease: Lease) -> Result<(), StoreError> {
    ///         tick().await;
    ///         self.0.release(lease).await
    ///     }
    ///     async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
    ///         tick().await;
    ///         self.0.renew_lease(lease, ttl).await
    ///     }
    /// }
    ///
    /// let runtime = tokio::runtime::Runtime::new().unwrap();
    /// Lab::scenario("shared-store")
    ///     .store(|seat| OnTokio(MemoryStore::with_clock(seat.clock())))
    ///     .tokio(runtime.handle().clone())
    ///     .seed(4)
    ///     .check();
    /// ```
    #[cfg(feature = "load")]
    pub fn tokio(mut self, runtime: tokio::runtime::Handle) -> Lab {
        self.parts.tokio = Some(runtime);
        self
    }

    /// The seeds to run: the one in [`SEED_VAR`] when it is set, else the builder's.
    fn resolve_seeds(&self) -> Result<(Vec<u64>, SeedSource), LabError> {
        if let Ok(v) = std::env::var(SEED_VAR) {
            let seed = v
                .trim()
                .parse::<u64>()
                .map_err(|_| LabError::BadSeedVar(v))?;
            return Ok((vec![seed], SeedSource::Env));
        }
        match &self.seeds {
            Seeds::List(v) if v.is_empty() => Err(LabError::NoSeeds),
            Seeds::List(v) => Ok((v.clone(), SeedSource::Builder)),
            Seeds::Fresh(n) => {
                if *n == 0 {
                    return Err(LabError::NoSeeds);
                }
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                // Well apart from the small seeds people write by hand.
                let start = crate::rng::derive(nanos, 0x1ab) >> 16;
                Ok((
                    (start..start.saturating_add(*n)).collect(),
                    SeedSource::Builder,
                ))
            }
        }
    }

    /// The world for `seed`.
    fn world_for(&self, seed: u64) -> Result<WorldConfig, LabError> {
        let cfg = match &self.world {
            WorldSource::Scenario(name) => {
                let all = scenario::all();
                let sc = all.iter().find(|s| s.name == name).ok_or_else(|| {
                    LabError::UnknownScenario {
                        name: name.clone(),
                        known: all.iter().map(|s| s.name).collect(),
                    }
                })?;
                return runner::resolve(sc, seed, &Overrides::default())
                    .map_err(|message| LabError::InvalidWorld { seed, message });
            }
            WorldSource::File(path) => crate::scenario_file::ScenarioFile::load(path)
                .map_err(|e| LabError::InvalidWorld {
                    seed,
                    message: e.to_string(),
                })?
                .world(),
            WorldSource::Config(c) => (**c).clone(),
            WorldSource::Draw(draw) => {
                catch(|| draw(seed)).map_err(|p| LabError::InvalidWorld {
                    seed,
                    message: format!("the world function panicked: {p}"),
                })?
            }
        };
        cfg.validate()
            .map_err(|message| LabError::InvalidWorld { seed, message })?;
        Ok(cfg)
    }

    /// Runs the seeds, one after the other; stops at the first failing seed unless
    /// [`Lab::keep_going`].
    ///
    /// # Errors
    /// An unknown scenario, an invalid world, no seeds, or a [`SEED_VAR`] that is not a
    /// number. A failing seed is not an error: it is in the [`LabReport`].
    ///
    /// See the [module documentation](self).
    pub fn run(&self) -> Result<LabReport, LabError> {
        let (seeds, source) = self.resolve_seeds()?;
        let print_trace =
            self.print_trace || std::env::var(TRACE_VAR).is_ok_and(|v| !v.is_empty() && v != "0");
        let mut runs = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let cfg = self.world_for(seed)?;
            let run = catch(|| {
                world::run_with(&cfg, seed, Arc::new(Keepfresh), print_trace, &self.parts)
            });
            let run = match run {
                Ok(out) => SeedRun {
                    scenario: cfg.scenario.clone(),
                    seed,
                    failure: out.failure,
                    tail: out.tail,
                    trace_hash: out.trace_hash,
                    events: out.events,
                    source,
                },
                Err(msg) => SeedRun {
                    scenario: cfg.scenario.clone(),
                    seed,
                    failure: Some(Failure {
                        kind: FailureKind::Crash,
                        message: format!("panic outside the world's tasks: {msg}"),
                        at_secs: 0.0,
                    }),
                    tail: Vec::new(),
                    trace_hash: 0,
                    events: 0,
                    source,
                },
            };
            let failed = run.failure.is_some();
            runs.push(run);
            if failed && !self.keep_going {
                break;
            }
        }
        Ok(LabReport { runs })
    }

    /// [`Lab::run`], for tests: panics with the report (every failing seed and how to replay
    /// it) unless every seed passed, or with the error.
    ///
    /// # Panics
    /// When a seed fails or the lab cannot run.
    ///
    /// See the [type-level example](Lab).
    pub fn check(&self) {
        match self.run() {
            Ok(report) if report.passed() => {}
            Ok(report) => panic!("{report}"),
            Err(e) => panic!("keepfresh-sim lab: {e}"),
        }
    }
}

/// Runs `f`, turning a panic into its message.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_text(p.as_ref()))
}

/// A panic's message, cut before anything that looks like one of the provider's tokens.
pub(crate) fn panic_text(payload: &(dyn Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into());
    match msg.find(SECRET_MARKER) {
        Some(i) => format!("{}<secret…>", &msg[..i]),
        None => msg,
    }
}

/// Where a run's seed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeedSource {
    Builder,
    Env,
}

/// One seed's run.
///
/// ```
/// use keepfresh_sim::lab::Lab;
/// let report = Lab::scenario("scopes").seed(9).run().unwrap();
/// let run = &report.runs()[0];
/// assert_eq!((run.scenario(), run.seed()), ("scopes", 9));
/// assert!(run.failure().is_none());
/// assert!(run.events() > 0);
/// // The same seed replays the same run.
/// let again = Lab::scenario("scopes").seed(9).run().unwrap();
/// assert_eq!(again.runs()[0].trace_hash(), run.trace_hash());
/// ```
#[derive(Clone, Debug)]
pub struct SeedRun {
    scenario: String,
    seed: u64,
    failure: Option<Failure>,
    tail: Vec<String>,
    trace_hash: u64,
    events: u64,
    source: SeedSource,
}

impl SeedRun {
    /// The world's scenario name.
    ///
    /// See the [type-level example](SeedRun).
    pub fn scenario(&self) -> &str {
        &self.scenario
    }

    /// The seed.
    ///
    /// See the [type-level example](SeedRun).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The first broken invariant, if any: its kind, message and simulated time.
    ///
    /// See the [type-level example](SeedRun).
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// The last trace lines (up to the failure, for a failing run).
    ///
    /// ```
    /// use keepfresh_sim::lab::Lab;
    /// let report = Lab::scenario("stampede").seed(1).run().unwrap();
    /// assert!(!report.runs()[0].trace_tail().is_empty());
    /// ```
    pub fn trace_tail(&self) -> &[String] {
        &self.tail
    }

    /// The run's determinism hash over its whole trace.
    ///
    /// See the [type-level example](SeedRun).
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    /// Events the world processed.
    ///
    /// See the [type-level example](SeedRun).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// How to rerun only this seed: the environment variable with the `cargo test` command of
    /// the running test (package, test target and test name, as far as they can be told from
    /// the running process), and the builder call.
    ///
    /// ```
    /// use keepfresh_sim::lab::Lab;
    /// let report = Lab::scenario("scopes").seed(12).run().unwrap();
    /// let replay = report.runs()[0].replay();
    /// assert!(replay.contains("KEEPFRESH_SIM_SEED=12 cargo test"));
    /// assert!(replay.contains(".seed(12)"));
    /// ```
    pub fn replay(&self) -> String {
        let mut cmd = format!("{SEED_VAR}={} cargo test", self.seed);
        if let Ok(pkg) = std::env::var("CARGO_PKG_NAME") {
            cmd.push_str(&format!(" -p {pkg}"));
            let stem = std::env::current_exe().ok().and_then(|p| {
                p.file_stem()
                    .and_then(|s| s.to_str())
                    .map(|s| s.rsplit_once('-').map_or(s, |(a, _)| a).to_owned())
            });
            match stem {
                Some(s) if s == pkg.replace('-', "_") => cmd.push_str(" --lib"),
                Some(s) if !s.is_empty() && !s.starts_with("rust_out") => {
                    cmd.push_str(&format!(" --test {s}"))
                }
                _ => {}
            }
        }
        if let Some(name) = std::thread::current()
            .name()
            .filter(|n| *n != "main" && !n.is_empty())
        {
            cmd.push_str(&format!(" -- {name} --exact"));
        }
        format!(
            "{cmd}\n  or run only this seed from the builder: .seed({})\n  full trace: add {TRACE_VAR}=1 and --nocapture, or .print_trace(true)",
            self.seed
        )
    }
}

impl fmt::Display for SeedRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(fail) = &self.failure else {
            return writeln!(
                f,
                "scenario {} seed {}: ok (trace {:016x})",
                self.scenario, self.seed, self.trace_hash
            );
        };
        let kind = match fail.kind {
            FailureKind::Correctness => "correctness",
            FailureKind::Liveness => "liveness",
            FailureKind::Crash => "crash",
        };
        writeln!(
            f,
            "scenario {} seed {}: {kind} failure at {:.3}s simulated{}",
            self.scenario,
            self.seed,
            fail.at_secs,
            if self.source == SeedSource::Env {
                format!(" (seed from {SEED_VAR})")
            } else {
                String::new()
            }
        )?;
        writeln!(f, "  invariant: {}", fail.message)?;
        if !self.tail.is_empty() {
            writeln!(f, "  last trace lines:")?;
            for l in &self.tail {
                writeln!(f, "    {l}")?;
            }
        }
        writeln!(f, "  replay: {}", self.replay())
    }
}

/// What a lab run found: one [`SeedRun`] per seed run.
///
/// ```
/// use keepfresh_sim::lab::Lab;
/// let report = Lab::scenario("scopes").seeds([1, 2]).run().unwrap();
/// assert!(report.passed());
/// assert_eq!(report.failures().count(), 0);
/// assert!(report.first_failure().is_none());
/// println!("{report}");
/// ```
#[derive(Clone, Debug)]
pub struct LabReport {
    runs: Vec<SeedRun>,
}

impl LabReport {
    /// Whether every seed run passed.
    ///
    /// See the [type-level example](LabReport).
    pub fn passed(&self) -> bool {
        self.runs.iter().all(|r| r.failure.is_none())
    }

    /// Every seed run, in order.
    ///
    /// See the [type-level example](LabReport).
    pub fn runs(&self) -> &[SeedRun] {
        &self.runs
    }

    /// The failing seed runs.
    ///
    /// See the [type-level example](LabReport).
    pub fn failures(&self) -> impl Iterator<Item = &SeedRun> {
        self.runs.iter().filter(|r| r.failure.is_some())
    }

    /// The first failing seed run.
    ///
    /// See the [type-level example](LabReport).
    pub fn first_failure(&self) -> Option<&SeedRun> {
        self.failures().next()
    }
}

impl fmt::Display for LabReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self.failures().count();
        writeln!(
            f,
            "keepfresh-sim lab: {} seed(s) run, {failed} failed",
            self.runs.len()
        )?;
        for r in self.failures() {
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Why a lab could not run.
///
/// ```
/// use keepfresh_sim::lab::{Lab, LabError};
/// let err = Lab::scenario("no-such-world").run().unwrap_err();
/// assert!(matches!(err, LabError::UnknownScenario { .. }));
/// assert!(err.to_string().contains("shared-store"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabError {
    /// No built-in scenario has this name.
    UnknownScenario {
        /// The name asked for.
        name: String,
        /// The known names.
        known: Vec<&'static str>,
    },
    /// The world for a seed is invalid.
    InvalidWorld {
        /// The seed.
        seed: u64,
        /// What is wrong.
        message: String,
    },
    /// No seeds to run.
    NoSeeds,
    /// [`SEED_VAR`] is set to something that is not a `u64`.
    BadSeedVar(String),
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::UnknownScenario { name, known } => {
                write!(f, "unknown scenario {name:?}; known: {}", known.join(", "))
            }
            LabError::InvalidWorld { seed, message } => {
                write!(f, "the world for seed {seed} is invalid: {message}")
            }
            LabError::NoSeeds => f.write_str("no seeds to run"),
            LabError::BadSeedVar(v) => {
                write!(
                    f,
                    "{SEED_VAR}={v:?} is not a seed (a number from 0 to 2^64-1)"
                )
            }
        }
    }
}

impl std::error::Error for LabError {}

//! # keepfresh-sim
//!
//! Drives the real keepfresh engine in a deterministic simulated world, so that expiry bugs are
//! reproduced from a `u64` seed instead of discovered in production.
//!
//! - [`exec`]: our own single-threaded executor with virtual time; the engine runs on it through
//!   its runtime traits, unchanged and without tokio;
//! - [`provider`]: the mock authorization server and resource server as a pure model, with the
//!   provider profiles (`docs/scenarios.md`) as presets;
//! - [`world::network`], [`world::faulty_store`]: the simulated network and the shared, faulty
//!   store, parts of the world;
//! - [`strategy`]: the seam that lets the same world run another client's refresh behaviour;
//! - [`world`]: processes, callers, faults, the director and the invariant oracles;
//! - [`scenario`]: the named scenarios, swarm runs and the fleet run;
//! - [`report`]: readable and JSON summaries and the SVG plot;
//! - [`plot`]: charts with axes, ticks, units and legends (plotters, SVG);
//! - [`runner`]: running, replaying, sweeping, shrinking and the determinism self-check;
//! - [`lab`]: the simulator as a library: your own `TokenStore` and `RefreshPolicy` in a seeded
//!   world, under the same faults and oracles, from an ordinary `#[test]`.
//!
//! One seed decides the workload, the faults, the latencies, the engine's jitter and the order
//! in which ready tasks run.
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod clients;
pub mod compare;
pub mod exec;
pub mod lab;
pub mod plot;
pub mod provider;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod scenario_file;
pub mod strategy;
pub mod world;

/// Load mode, serving half: the mock provider over real HTTP (feature `load`, default).
#[cfg(feature = "load")]
pub mod http;
/// Load mode, generating half: bursts of callers through real engines (feature `load`).
#[cfg(feature = "load")]
pub mod load;
/// What a real token endpoint does with refresh tokens, found by spending a few (feature
/// `load`).
#[cfg(feature = "load")]
pub mod probe;

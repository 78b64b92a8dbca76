//! keepfresh-sim: drives the keepfresh engine in a deterministic simulated world.

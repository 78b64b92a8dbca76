#![no_main]

// Scenario files of `keepfresh-sim` (`--scenario-file`): the check is the simulator's own
// (`keepfresh_sim::scenario_file::fuzz_check`), which its tests also run over this corpus.
libfuzzer_sys::fuzz_target!(|data: &[u8]| keepfresh_sim::scenario_file::fuzz_check(data));

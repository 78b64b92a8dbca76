#![no_main]

// Each target uses one of the shared drivers.
#[allow(dead_code)]
#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::dotenv(data));

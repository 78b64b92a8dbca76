//! Replays the committed fuzz corpus (`fuzz/corpus/*`) through the same drivers the cargo-fuzz
//! targets use, so every `cargo test` re-checks the inputs the fuzzers found interesting.

#[path = "../fuzz/drivers.rs"]
mod drivers;

use std::path::Path;

fn replay(target: &str, driver: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).expect("corpus file");
        driver(&data);
        n += 1;
    }
    n
}

#[test]
fn token_response_corpus() {
    assert!(replay("token_response", drivers::token_response) >= 5);
}

#[test]
fn retry_after_corpus() {
    assert!(replay("retry_after", drivers::retry_after) >= 3);
}

#[test]
fn machine_corpus() {
    assert!(replay("machine", drivers::machine) >= 2);
}

#[test]
fn www_authenticate_corpus() {
    assert!(replay("www_authenticate", drivers::www_authenticate) >= 3);
}

#[test]
fn flight_corpus() {
    assert!(replay("flight", drivers::flight) >= 3);
}

#[cfg(feature = "http")]
#[test]
fn discovery_corpus() {
    assert!(replay("discovery", drivers::discovery) >= 8);
}

#[cfg(feature = "login")]
#[test]
fn login_callback_corpus() {
    assert!(replay("login_callback", drivers::login_callback) >= 6);
}

#[cfg(feature = "file")]
#[test]
fn store_document_corpus() {
    assert!(replay("store_document", drivers::store_document) >= 6);
}

#[cfg(feature = "encrypted")]
#[test]
fn sealed_store_corpus() {
    assert!(replay("sealed_store", drivers::sealed_store) >= 6);
}

#[test]
fn store_spec_corpus() {
    assert!(replay("store_spec", drivers::store_spec) >= 8);
}

#[test]
fn dotenv_corpus() {
    assert!(replay("dotenv", drivers::dotenv) >= 6);
}

/// Regression: `$NAME` substitutions chained through a 150-byte `.env` file (`B=$A$A…`,
/// `C=$B$B…`, eight-fold per line) made a 33 MB value; two more lines made the `dotenv` target
/// abort at its 1 GiB memory limit.
#[test]
fn dotenv_substitution_blowup() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus/dotenv/regression-substitution-blowup");
    drivers::dotenv(&std::fs::read(path).expect("the regression input"));
}

//! Crash safety of the file store: a writer process killed (SIGKILL) at arbitrary points of its
//! saves leaves the old or the new token set, never a torn file, and never loses a set whose
//! save had returned. The writer is this test binary re-executed (`writer_process`).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use keepfresh::store::{FileStore, SaveOutcome, TokenStore};
use keepfresh::{AccessToken, RefreshToken, TokenSet};

const WRITER_ENV: &str = "KEEPFRESH_CRASH_WRITER_PATH";

fn set(generation: u64) -> TokenSet {
    let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_900_000_000);
    TokenSet::new(
        AccessToken::new(format!("at-{generation}")),
        Some(RefreshToken::new(format!("rt-{generation}"))),
        at,
        at + time::Duration::hours(1),
    )
}

fn generation(set: &TokenSet) -> u64 {
    let rt = set
        .refresh_token()
        .expect("a refresh token")
        .expose_secret();
    rt.strip_prefix("rt-")
        .and_then(|g| g.parse().ok())
        .expect("rt-N")
}

/// The writer: rotates the stored set forever, printing each generation once its save returned.
#[test]
#[ignore = "the writer process of killed_writers_never_tear_or_lose_a_saved_set"]
fn writer_process() {
    let Some(path) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let store = FileStore::open(std::path::PathBuf::from(path)).unwrap();
    futures::executor::block_on(async {
        loop {
            let stored = store.load().await.unwrap();
            let (expected, next) = match &stored {
                Some(s) => (Some(s.version), generation(&s.tokens) + 1),
                None => (None, 1),
            };
            if let SaveOutcome::Saved(_) = store.save(expected, &set(next)).await.unwrap() {
                println!("saved {next}");
            }
        }
    });
}

#[test]
fn killed_writers_never_tear_or_lose_a_saved_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("t.json");
    let exe = std::env::current_exe().unwrap();
    // A fixed seed: the kill points vary across rounds, and a failure replays.
    let mut rng = 0x5eed_c4a5_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let rounds = 40;
    let mut last_saved = 0u64;
    let mut kills_between_saves = 0;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "writer_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Let it make a few saves, then kill it a random time into the next ones.
        let wanted = 1 + next() % 4;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(g) = line.strip_prefix("saved ") {
                last_saved = g.parse().unwrap();
                seen += 1;
                if seen == wanted {
                    break;
                }
            }
        }
        assert_eq!(seen, wanted, "round {round}: the writer stopped early");
        std::thread::sleep(Duration::from_micros(next() % 3_000));
        child.kill().unwrap();
        child.wait().unwrap();
        // Saves that completed before the kill, printed after our last read.
        for line in lines {
            if let Some(g) = line.unwrap().strip_prefix("saved ") {
                last_saved = g.parse().unwrap();
            }
        }
        let store = FileStore::open(&path).unwrap();
        let stored = futures::executor::block_on(store.load())
            .unwrap_or_else(|e| panic!("round {round}: torn or unreadable after a kill: {e}"))
            .expect("tokens");
        let g = generation(&stored.tokens);
        assert!(
            g == last_saved || g == last_saved + 1,
            "round {round}: the file holds generation {g}, the writer last saved {last_saved}"
        );
        kills_between_saves += usize::from(g == last_saved + 1);
        last_saved = g;
        assert_eq!(
            stored.tokens,
            set(g),
            "round {round}: a set changed on disk"
        );
    }
    eprintln!(
        "{rounds} writers killed; {kills_between_saves} of them after the rename but before the save returned"
    );
    // Nothing left behind but the file and its write-lock sidecar: the temporary file of a
    // writer killed before its rename is removed by the next open.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["t.json", "t.json.lock"]);
}

//! The file store: the store contract, permissions, bad content, and credentials of one process
//! sharing a file. Cross-process behaviour is in `tests/processes.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::runtime::Runtime;
use keepfresh::store::contract::{Contract, Fixture};
use keepfresh::store::{FileStore, LeaseOutcome, SaveOutcome, StoreErrorKind, TokenStore};
use keepfresh::{AccessToken, RefreshToken, TokenSet};

struct Files {
    dir: tempfile::TempDir,
    n: usize,
}

#[async_trait]
impl Fixture for Files {
    type Store = FileStore;
    async fn fresh(&mut self) -> FileStore {
        self.n += 1;
        FileStore::open(self.dir.path().join(format!("t{}.json", self.n))).unwrap()
    }
    async fn reopen(&mut self, store: &FileStore) -> FileStore {
        FileStore::open(store.path()).unwrap()
    }
}

/// A temporary directory private to this user (tempfile's follows the umask).
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn files() -> Files {
    Files {
        dir: private_dir(),
        n: 0,
    }
}

fn set(n: u32) -> TokenSet {
    let now = time::OffsetDateTime::now_utc();
    TokenSet::new(
        AccessToken::new(format!("secret-at-{n}")),
        Some(RefreshToken::new(format!("secret-rt-{n}"))),
        now,
        now + time::Duration::hours(1),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn file_store_passes_the_store_contract() {
    let report = Contract::new(Runtime::tokio())
        .notifies(true)
        .check(&mut files())
        .await
        .unwrap_or_else(|v| panic!("{v:#?}"));
    assert_eq!(report.passed.len(), 11, "{:?}", report.passed);
}

#[tokio::test]
async fn memory_store_passes_the_store_contract() {
    struct Memory;
    #[async_trait]
    impl Fixture for Memory {
        type Store = keepfresh::store::MemoryStore;
        async fn fresh(&mut self) -> Self::Store {
            keepfresh::store::MemoryStore::new()
        }
        async fn reopen(&mut self, s: &Self::Store) -> Self::Store {
            s.clone()
        }
    }
    Contract::new(Runtime::tokio())
        .check(&mut Memory)
        .await
        .unwrap_or_else(|v| panic!("{v:#?}"));
}

/// The suite must be able to fail: a store whose save ignores the expected version.
#[tokio::test]
async fn the_contract_catches_a_store_without_compare_and_swap() {
    #[derive(Clone)]
    struct Blind(keepfresh::store::MemoryStore);
    #[async_trait]
    impl TokenStore for Blind {
        async fn load(
            &self,
        ) -> Result<Option<keepfresh::store::Stored>, keepfresh::store::StoreError> {
            self.0.load().await
        }
        async fn save(
            &self,
            _expected: Option<keepfresh::store::Version>,
            tokens: &TokenSet,
        ) -> Result<SaveOutcome, keepfresh::store::StoreError> {
            let now = self.0.load().await?.map(|s| s.version);
            self.0.save(now, tokens).await
        }
        async fn clear(
            &self,
            v: keepfresh::store::Version,
        ) -> Result<bool, keepfresh::store::StoreError> {
            self.0.clear(v).await
        }
    }
    struct Fx;
    #[async_trait]
    impl Fixture for Fx {
        type Store = Blind;
        async fn fresh(&mut self) -> Blind {
            Blind(keepfresh::store::MemoryStore::new())
        }
        async fn reopen(&mut self, s: &Blind) -> Blind {
            s.clone()
        }
    }
    let failed = Contract::new(Runtime::tokio())
        .leases(keepfresh::store::contract::Leases::Unsupported)
        .check(&mut Fx)
        .await
        .unwrap_err();
    let names: Vec<_> = failed.iter().map(|v| v.check).collect();
    assert!(names.contains(&"compare-and-swap"), "{names:?}");
    assert!(names.contains(&"concurrent writers"), "{names:?}");
}

#[tokio::test]
async fn creates_a_private_directory_and_file() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("a/b/tokens.json");
    let store = FileStore::open(&path).unwrap();
    assert_eq!(mode(&root.path().join("a/b")), 0o700);
    store.save(None, &set(1)).await.unwrap();
    assert_eq!(mode(&path), 0o600);
    let lease = store.try_lease(Duration::from_secs(5)).await.unwrap();
    assert!(matches!(lease, LeaseOutcome::Acquired(_)));
    assert_eq!(
        mode(&PathBuf::from(format!("{}.lease", path.display()))),
        0o600
    );
}

#[tokio::test]
async fn refuses_a_file_others_can_read_and_says_how_to_fix_it() {
    let dir = private_dir();
    let path = dir.path().join("tokens.json");
    FileStore::open(&path)
        .unwrap()
        .save(None, &set(1))
        .await
        .unwrap();
    for bad in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let e = FileStore::open(&path).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Config);
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
    // An open store re-checks on every read: loosened later is refused too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = FileStore::open(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        store.load().await.unwrap_err().kind(),
        StoreErrorKind::Config
    );
    // And a refused file is not touched.
    assert_eq!(mode(&path), 0o644);
}

#[tokio::test]
async fn refuses_a_directory_others_can_access() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = FileStore::open(dir.join("tokens.json")).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("chmod 700"), "{e}");
}

#[tokio::test]
async fn refuses_a_symlink() {
    let dir = private_dir();
    let real = dir.path().join("real.json");
    FileStore::open(&real)
        .unwrap()
        .save(None, &set(1))
        .await
        .unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = FileStore::open(&link).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("symbolic link"), "{e}");
}

/// Bad content of every kind: a typed error, the file byte-for-byte unchanged, and no save over it.
#[tokio::test]
async fn bad_content_is_a_typed_error_and_left_untouched() {
    let dir = private_dir();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", br#"{"keepfresh_store":1,"version":3,"tokens":{"access_"#.to_vec()),
        ("not json", b"access_token=secret-at-1".to_vec()),
        ("non-utf8", vec![0xff, 0xfe, 0x00, 0x9f]),
        ("wrong format", br#"{"keepfresh_store":2,"version":3,"tokens":null}"#.to_vec()),
        ("unknown field", br#"{"keepfresh_store":1,"version":3,"tokens":null,"x":1}"#.to_vec()),
        ("oversized", vec![b' '; (1 << 20) + 1]),
        (
            "bad token field",
            br#"{"keepfresh_store":1,"version":3,"tokens":{"access_token":"secret-at-1","issued_at":"yesterday","expires_at":"x"}}"#.to_vec(),
        ),
    ];
    for (label, bytes) in cases {
        let path = dir.path().join(format!("{}.json", label.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let store = FileStore::open(&path).unwrap();
        let e = store.load().await.unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Corrupt, "{label}: {e}");
        assert!(
            !e.to_string().contains("secret"),
            "{label}: the error echoes content: {e}"
        );
        let e = store.save(None, &set(2)).await.unwrap_err();
        assert_eq!(
            e.kind(),
            StoreErrorKind::Corrupt,
            "{label}: save over bad content"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{label}: the file changed"
        );
    }
}

#[tokio::test]
async fn debug_and_errors_never_show_tokens() {
    let dir = private_dir();
    let store = FileStore::open(dir.path().join("t.json")).unwrap();
    store.save(None, &set(7)).await.unwrap();
    let loaded = store.load().await.unwrap().unwrap();
    for text in [format!("{store:?}"), format!("{loaded:?}")] {
        assert!(!text.contains("secret-"), "{text}");
    }
    // The file itself holds them, for the next process.
    let raw = std::fs::read_to_string(store.path()).unwrap();
    assert!(raw.contains("secret-rt-7"));
}

/// A lease whose flight vanished (never released) runs out inside the process, so the next
/// flight of this process is not blocked until restart.
#[tokio::test]
async fn an_abandoned_lease_runs_out_within_the_process() {
    let dir = private_dir();
    let a = FileStore::open(dir.path().join("t.json")).unwrap();
    let b = FileStore::open(dir.path().join("t.json")).unwrap();
    let LeaseOutcome::Acquired(_) = a.try_lease(Duration::from_millis(1)).await.unwrap() else {
        panic!("no lease")
    };
    // Wait for the time-to-live on the clock the store uses, without sleeping blindly: poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match b.try_lease(Duration::from_secs(5)).await.unwrap() {
            LeaseOutcome::Acquired(_) => break,
            _ if std::time::Instant::now() < deadline => tokio::task::yield_now().await,
            other => panic!("still {other:?}"),
        }
    }
}

/// A token file another user owns could have been planted: refused. Needs root to chown.
#[tokio::test]
async fn refuses_a_file_owned_by_another_user() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("not run: changing a file's owner needs root");
        return;
    }
    let dir = private_dir();
    let path = dir.path().join("t.json");
    FileStore::open(&path)
        .unwrap()
        .save(None, &set(1))
        .await
        .unwrap();
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let e = FileStore::open(&path).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Config);
    assert!(e.to_string().contains("belongs to user 65534"), "{e}");
}

/// Several credentials of one process on one token file (as several MCP sessions of one server
/// would be) against a provider that revokes the family on any reuse: one refresh per burst,
/// the others adopt, and everyone ends on the newest tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_of_one_process_share_a_file_and_refresh_once() {
    use keepfresh::Credential;
    let dir = private_dir();
    let path = dir.path().join("t.json");
    let provider = common::Provider::rotating("refresh-0");
    let now = time::OffsetDateTime::now_utc();
    let first = TokenSet::new(
        AccessToken::new("access-0"),
        Some(RefreshToken::new("refresh-0")),
        now,
        now + time::Duration::hours(1),
    );
    FileStore::open(&path)
        .unwrap()
        .save(None, &first)
        .await
        .unwrap();
    let mut credentials = Vec::new();
    for i in 0..3 {
        let c = Credential::builder(provider.clone())
            .policy(
                keepfresh::RefreshPolicy::builder()
                    .jitter_seed(i)
                    .build()
                    .unwrap(),
            )
            .store(FileStore::open(&path).unwrap())
            .build()
            .await
            .unwrap();
        credentials.push(c);
    }
    let bursts = 6;
    for burst in 0..bursts {
        for c in &credentials {
            let t = c.token().await.unwrap();
            c.invalidate(&t);
        }
        let mut callers = tokio::task::JoinSet::new();
        for k in 0..60 {
            let c = credentials[k % 3].clone();
            callers.spawn(async move { c.token().await.map(|t| t.secret().to_owned()) });
        }
        while let Some(r) = callers.join_next().await {
            r.unwrap().unwrap_or_else(|e| panic!("burst {burst}: {e}"));
        }
    }
    assert!(
        !provider.revoked(),
        "the family was revoked: {:?}",
        provider.presented()
    );
    assert_eq!(
        provider.calls(),
        bursts,
        "one refresh per burst: {:?}",
        provider.presented()
    );
    let stored = FileStore::open(&path)
        .unwrap()
        .load()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored
            .tokens
            .refresh_token()
            .map(|r| r.expose_secret().to_owned()),
        provider.live()
    );
    for c in &credentials {
        assert_eq!(
            c.token().await.unwrap().secret(),
            stored.tokens.access_token().expose_secret()
        );
    }
}

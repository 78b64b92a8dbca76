//! `RmcpStore` under rmcp's own refresh: three `AuthorizationManager`s (three processes of a
//! desktop user, say) share one token file through `RmcpStore` and refresh at the same moment
//! against the mock provider, which rotates refresh tokens and revokes the whole grant when one
//! is redeemed twice. With the file's lease as rmcp's refresh guard they take turns: each
//! refreshes with the newest refresh token (rmcp refreshes again in every waiter: three
//! refreshes, not one), no replay, the grant survives. The same three without the lease all
//! read the same refresh token, and the grant is revoked — so the guard is what saves it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::mcp::RmcpStore;
use keepfresh::store::{FileStore, SaveOutcome, StoreError, Stored, TokenStore, Version};
use keepfresh::{AccessToken, RefreshToken, TokenSet};
use keepfresh_sim::http::{HttpProvider, ServeConfig, ServerSummary};
use rmcp::transport::auth::{AuthorizationManager, CredentialStore};

const CLIENT: &str = "rmcp-desktop-client";

/// A file store without its lease, whose next `waiting` loads wait for each other: all three
/// managers then read the same refresh token before any of them refreshes, however they are
/// scheduled.
struct Unleased {
    file: FileStore,
    waiting: Arc<AtomicUsize>,
    barrier: Arc<tokio::sync::Barrier>,
}

#[async_trait]
impl TokenStore for Unleased {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        let stored = self.file.load().await;
        let turn = self
            .waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if turn.is_ok() {
            self.barrier.wait().await;
        }
        stored
    }
    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.file.save(expected, tokens).await
    }
    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        self.file.clear(expected).await
    }
}

/// A grant at the provider, saved as the file's first tokens.
async fn seed(provider: &HttpProvider, path: &std::path::Path) {
    let grant = provider.login();
    let now = time::OffsetDateTime::now_utc();
    let set = TokenSet::new(
        AccessToken::new(grant.access_token),
        grant.refresh_token.map(RefreshToken::new),
        now,
        now + time::Duration::hours(1),
    );
    FileStore::open(path)
        .unwrap()
        .save(None, &set)
        .await
        .unwrap();
}

async fn manager(
    provider: &HttpProvider,
    store: impl CredentialStore + 'static,
) -> AuthorizationManager {
    let mut manager = AuthorizationManager::new(provider.uri()).await.unwrap();
    manager.set_credential_store(store);
    assert!(
        manager.initialize_from_store().await.unwrap(),
        "the stored credentials were not taken"
    );
    manager
}

fn adapter<S: TokenStore>(store: S, provider: &HttpProvider) -> RmcpStore<S> {
    RmcpStore::new(store, CLIENT).issuer(provider.uri())
}

fn refreshes(summary: &ServerSummary, outcome: &str) -> u64 {
    summary.calls_by_outcome.get(outcome).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rmcp_managers_take_turns_through_the_file_lease() {
    let provider = HttpProvider::start(ServeConfig::new("strict").seed(31), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desktop/tokens.json");
    seed(&provider, &path).await;

    let mut managers = Vec::new();
    for _ in 0..3 {
        let store =
            adapter(FileStore::open(&path).unwrap(), &provider).lease_wait(Duration::from_secs(30));
        managers.push(manager(&provider, store).await);
    }
    let results = futures::future::join_all(managers.iter().map(|m| m.refresh_token())).await;
    for result in &results {
        assert!(
            result.is_ok(),
            "a refresh failed: {:?}",
            result.as_ref().err()
        );
    }

    let summary = provider.summary();
    assert_eq!(refreshes(&summary, "ok"), 3, "{summary:?}");
    assert_eq!(summary.token_calls, 3, "{summary:?}");
    assert_eq!(summary.replays, 0, "{summary:?}");
    assert!(summary.revoked_families.is_empty(), "{summary:?}");
    // Every manager sees the newest tokens: the last refresh's, saved in the file.
    let newest = FileStore::open(&path)
        .unwrap()
        .load()
        .await
        .unwrap()
        .unwrap();
    for m in &managers {
        assert_eq!(
            m.get_access_token().await.unwrap(),
            newest.tokens.access_token().expose_secret()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lease_the_same_managers_get_the_grant_revoked() {
    let provider = HttpProvider::start(ServeConfig::new("strict").seed(32), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desktop/tokens.json");
    seed(&provider, &path).await;

    let waiting = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let mut managers = Vec::new();
    for _ in 0..3 {
        let store = Unleased {
            file: FileStore::open(&path).unwrap(),
            waiting: waiting.clone(),
            barrier: barrier.clone(),
        };
        managers.push(manager(&provider, adapter(store, &provider)).await);
    }
    // The loads of the three refreshes (not those of `initialize_from_store` above, nor the
    // re-read after `invalid_grant`).
    waiting.store(3, Ordering::SeqCst);
    let results = futures::future::join_all(managers.iter().map(|m| m.refresh_token())).await;

    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let summary = provider.summary();
    assert_eq!(refreshes(&summary, "ok"), 1, "{summary:?}");
    assert_eq!(summary.revoked_families.len(), 1, "{summary:?}");
}

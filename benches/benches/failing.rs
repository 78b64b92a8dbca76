//! The provider fails while the token in hand is still valid, inside the refresh window: who
//! still gets the token?

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_smithy_runtime_api::client::identity::{Identity, IdentityFuture, ResolveIdentity};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use futures::future::join_all;
use keepfresh::{RefreshError, RefreshPolicy};

use crate::contenders::{self, AwsLazyCache, MutexCache, Snap};
use crate::report::{Report, Target};

/// What is left of the caches' one-hour token: valid, inside their 60 s early-refresh margin
/// (for the AWS cache even with its jitter, which adds up to half the buffer to the expiry).
const REMAINING: Duration = Duration::from_secs(25);
/// The provider answers 503 this fast.
const FAILURE_LATENCY: Duration = Duration::from_millis(10);
const WAVES: usize = 4;
const PER_WAVE: usize = 50;
const WAVE_GAP: Duration = Duration::from_millis(25);
/// yup-oauth2 refreshes a token within a minute of its expiry; the same margin for the caches.
const EARLY_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct FailingAfterFirst(Arc<AtomicU32>);

impl ResolveIdentity for FailingAfterFirst {
    fn resolve_identity<'a>(
        &'a self,
        _components: &'a RuntimeComponents,
        _config: &'a ConfigBag,
    ) -> IdentityFuture<'a> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        IdentityFuture::new(async move {
            if n == 0 {
                let expires = SystemTime::now() + REMAINING;
                return Ok(Identity::new("aws".to_owned(), Some(expires)));
            }
            tokio::time::sleep(FAILURE_LATENCY).await;
            Err("503 from the provider".into())
        })
    }
}

/// Calls `get` in `WAVES` waves of `PER_WAVE` concurrent callers; counts the successes.
async fn waves<F, Fut>(get: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut ok = 0;
    for wave in 0..WAVES {
        if wave > 0 {
            tokio::time::sleep(WAVE_GAP).await;
        }
        ok += join_all((0..PER_WAVE).map(|_| get()))
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
    }
    ok
}

pub(crate) fn run(report: &mut Report) {
    let total = WAVES * PER_WAVE;
    report.section(&format!(
        "Refresh failing inside the refresh window: the provider answers 503 after {} ms; \
         {total} callers in {WAVES} waves {} ms apart. keepfresh: 2 s token, callers from 1.75 s \
         (past its refresh point, before its 1.9 s serving deadline); caches: 1 h token with {} s \
         left, inside their 60 s early-refresh margin",
        FAILURE_LATENCY.as_millis(),
        WAVE_GAP.as_millis(),
        REMAINING.as_secs()
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // keepfresh on a 2 s token issued now, on its own real timeline: refresh point drawn in
    // 1.2-1.7 s, served until 1.9 s (100 ms skew); the callers arrive from 1.75 s on, past the
    // refresh point and before the serving deadline.
    let calls = Arc::new(AtomicU32::new(0));
    let ok = rt.block_on(async {
        let credential = contenders::credential(
            time::Duration::seconds(2),
            time::Duration::ZERO,
            RefreshPolicy::builder()
                .skew_allowance(Duration::from_millis(100))
                .floor_margin(Duration::from_millis(200))
                .jitter_seed(42)
                .build()
                .expect("policy"),
            FAILURE_LATENCY,
            calls.clone(),
            |_| Err(RefreshError::transient("503 from the provider")),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1750)).await;
        waves(|| async {
            credential
                .token()
                .await
                .is_ok_and(|t| t.secret() == "initial-access")
        })
        .await
    });
    report.figure(
        "keepfresh: callers served the valid token",
        ok as f64,
        "",
        Target::Exactly(total as f64),
    );
    report.figure(
        "keepfresh: refresher calls (backoff between)",
        f64::from(calls.load(Ordering::SeqCst)),
        "",
        Target::Info,
    );

    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let mutex = MutexCache::new(
        Some(Snap::new("mutex", REMAINING)),
        EARLY_MARGIN,
        Box::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(FAILURE_LATENCY).await;
                Err("503 from the provider".to_owned())
            })
        }),
    );
    let ok = rt.block_on(waves(|| async {
        mutex.token().await.is_ok_and(|t| &*t.token == "mutex")
    }));
    report.figure(
        "tokio_mutex_golang (60 s margin): callers served",
        ok as f64,
        "",
        Target::Info,
    );
    report.figure(
        "tokio_mutex_golang (60 s margin): refresher calls",
        f64::from(calls.load(Ordering::SeqCst)),
        "",
        Target::Info,
    );

    let calls = Arc::new(AtomicU32::new(0));
    let ok = rt.block_on(async {
        let aws = AwsLazyCache::with_buffer_time(FailingAfterFirst(calls.clone()), EARLY_MARGIN);
        aws.token().await.expect("first load succeeds");
        waves(|| async { aws.token().await.is_ok() }).await
    });
    report.figure(
        "aws_lazy_cache (60 s buffer): callers served",
        ok as f64,
        "",
        Target::Info,
    );
    report.figure(
        "aws_lazy_cache (60 s buffer): refresher calls after the first load",
        f64::from(calls.load(Ordering::SeqCst).saturating_sub(1)),
        "",
        Target::Info,
    );
}

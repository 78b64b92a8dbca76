//! Sizes: of a waiting `token()` future, of an idle credential, and allocations per hot-path
//! call.

use std::hint::black_box;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker_ref;
use futures::FutureExt;
use keepfresh::{
    refresher_fn, AccessToken, Credential, RefreshPolicy, RefreshToken, Token, TokenResponse,
    TokenSet,
};

use crate::alloc;
use crate::contenders;
use crate::hot_path::{each_contender, poll_ready, Contenders};
use crate::report::{Report, Target};

const CREDENTIALS: usize = 10_000;
const CALLS: usize = 100_000;

pub(crate) fn run(report: &mut Report) {
    report.section("Sizes");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _guard = rt.enter();

    let waiting = rt.block_on(async {
        // An expired token and a refresher that never answers: the future parks on the flight.
        let credential = contenders::credential(
            time::Duration::hours(1),
            time::Duration::hours(2),
            RefreshPolicy::default(),
            Duration::from_secs(3600),
            Arc::new(AtomicU32::new(0)),
            |_| Ok(TokenResponse::new(AccessToken::new("late")).with_expires_in(3600)),
        )
        .await;
        let mut fut = Box::pin(credential.token());
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(matches!(fut.poll_unpin(&mut cx), Poll::Pending));
        std::mem::size_of_val(&*fut)
    });
    report.figure(
        "waiting token() future",
        waiting as f64,
        "bytes",
        Target::AtMost(256.0),
    );
    report.figure(
        "Credential handle (size_of)",
        std::mem::size_of::<Credential>() as f64,
        "bytes",
        Target::Info,
    );
    report.figure(
        "Token (size_of)",
        std::mem::size_of::<Token>() as f64,
        "bytes",
        Target::Info,
    );

    idle_credentials(report);
    allocations_per_call(report, &rt);
}

fn token_set(i: usize) -> TokenSet {
    let now = time::OffsetDateTime::now_utc();
    TokenSet::new(
        AccessToken::new(format!("access-token-{i:020}")),
        Some(RefreshToken::new(format!("refresh-token-{i:020}"))),
        now,
        now + time::Duration::hours(1),
    )
}

/// Live heap bytes per idle credential (built with the defaults, holding a fresh token set),
/// less the heap bytes of its token strings.
fn idle_credentials(report: &mut Report) {
    let (sets, tokens) = alloc::measure(|| (0..CREDENTIALS).map(token_set).collect::<Vec<_>>());
    // The Vec's buffer holds the TokenSet structs themselves; the rest is the token strings.
    let token_bytes = (tokens.live_bytes as f64
        - (CREDENTIALS * std::mem::size_of::<TokenSet>()) as f64)
        / CREDENTIALS as f64;
    drop(sets);

    let mut sets: Vec<TokenSet> = (0..CREDENTIALS).map(token_set).collect();
    let (credentials, counts) = alloc::measure(|| {
        futures::executor::block_on(async {
            let mut credentials = Vec::with_capacity(CREDENTIALS);
            // `drain` keeps the Vec's buffer, allocated before counting, out of the count.
            for set in sets.drain(..) {
                let refresher = refresher_fn(|_| async {
                    Ok(TokenResponse::new(AccessToken::new("unused")).with_expires_in(3600))
                });
                let credential = Credential::builder(refresher)
                    .tokens(set)
                    .build()
                    .await
                    .expect("credential builds");
                credentials.push(credential);
            }
            credentials
        })
    });
    // The token strings were allocated before counting began and moved into the credentials,
    // so the count is the credentials' own memory plus the Vec holding them.
    let vec_bytes = (CREDENTIALS * std::mem::size_of::<Credential>()) as f64;
    let per_credential = (counts.live_bytes as f64 - vec_bytes) / CREDENTIALS as f64;
    // The token set itself lives in an `Arc<TokenSet>` (two counters and the struct).
    let token_set_alloc =
        (std::mem::size_of::<TokenSet>() + 2 * std::mem::size_of::<usize>()) as f64;
    report.figure(
        "token strings per credential (not counted below)",
        token_bytes,
        "bytes",
        Target::Info,
    );
    report.figure(
        &format!("idle credential, heap bytes ({CREDENTIALS} built, averaged)"),
        per_credential,
        "bytes",
        Target::Info,
    );
    report.figure(
        "  of which the Arc<TokenSet> holding the token",
        token_set_alloc,
        "bytes",
        Target::Info,
    );
    report.figure(
        "idle credential besides its token (set)",
        per_credential - token_set_alloc,
        "bytes",
        Target::AtMost(1024.0),
    );
    report.figure(
        "idle credential, heap allocations",
        counts.allocations as f64 / CREDENTIALS as f64,
        "",
        Target::Info,
    );
    drop(credentials);
}

fn allocations_per_call(report: &mut Report, rt: &tokio::runtime::Runtime) {
    let contenders = Contenders::new(rt);
    each_contender!(&contenders, count_allocations, report);
}

fn count_allocations<F: Fn()>(report: &mut Report, name: &str, call: F) {
    let ((), counts) = alloc::measure(|| {
        for _ in 0..CALLS {
            call();
        }
    });
    let per_call = counts.allocations as f64 / CALLS as f64;
    let target = if name == "keepfresh" {
        Target::Exactly(0.0)
    } else {
        Target::Info
    };
    report.figure(
        &format!("allocations per hot-path call: {name}"),
        per_call,
        "",
        target,
    );
}

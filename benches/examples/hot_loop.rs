//! A bare loop of hot-path calls for instruction counting, which (unlike wall time) does not
//! depend on what else the machine is doing:
//!
//! ```text
//! cargo build --release -p keepfresh-benches --example hot_loop
//! for n in 1000000 2000000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/hot_loop keepfresh $n 2>&1 | grep Collected
//! done   # instructions per call = (I(2n) - I(n)) / n; same for `keepfresh-await` and `floor`
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::FutureExt;
use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, TokenSet};

fn main() {
    let mut args = std::env::args().skip(1);
    let contender = args.next().unwrap_or_else(|| "keepfresh".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    match contender.as_str() {
        "keepfresh" | "keepfresh-await" => {
            let now = time::OffsetDateTime::now_utc();
            let set = TokenSet::new(
                AccessToken::new("access"),
                None,
                now,
                now + time::Duration::hours(1),
            );
            let credential = futures::executor::block_on(
                Credential::builder(refresher_fn(|_| async {
                    Err(RefreshError::transient("unused"))
                }))
                .tokens(set)
                .build(),
            )
            .expect("credential");
            if contender == "keepfresh" {
                // Each call polled on its own with a no-op waker, as the criterion bench does.
                for _ in 0..n {
                    let token = credential
                        .token()
                        .now_or_never()
                        .expect("fresh")
                        .expect("ok");
                    black_box(&token);
                }
            } else {
                // `.await` inside one task, as a host calls it: no context set-up per call.
                futures::executor::block_on(async {
                    for _ in 0..n {
                        let token = credential.token().await.expect("ok");
                        black_box(&token);
                    }
                });
            }
        }
        "floor" => {
            let deadline = Instant::now() + Duration::from_secs(3600);
            let cell = ArcSwap::from_pointee((String::from("access"), deadline));
            for _ in 0..n {
                let guard = cell.load();
                let fresh = Instant::now() < guard.1;
                black_box((&guard, fresh));
            }
        }
        other => {
            eprintln!("unknown contender {other:?}: keepfresh, keepfresh-await or floor");
            std::process::exit(2);
        }
    }
}

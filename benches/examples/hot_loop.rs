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
//!
//! `tower-without`, `tower-credential` and `tower-api-key` count one request through a
//! `tower::service_fn` that answers at once, without and with `middleware::AuthService`: the
//! middleware's overhead in instructions, the figure the criterion bench gives in wall time.

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
        "tower-without" | "tower-credential" | "tower-api-key" => tower(&contender, n),
        other => {
            eprintln!(
                "unknown contender {other:?}: keepfresh, keepfresh-await, floor, tower-without, \
                 tower-credential or tower-api-key"
            );
            std::process::exit(2);
        }
    }
}

/// `n` requests through a `service_fn` answering at once, through `AuthService` unless
/// `contender` is `tower-without`; each request built and each call polled as the criterion
/// bench does.
fn tower(contender: &str, n: u64) {
    use std::sync::Arc;

    use keepfresh::middleware::AuthLayer;
    use keepfresh::{ApiKey, AuthSource, RefreshToken};
    use tower::{service_fn, Layer, Service};

    fn request() -> http::Request<String> {
        http::Request::post("https://api.example.com/v1/items?page=2")
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(r#"{"name":"item"}"#.to_owned())
            .expect("request")
    }

    fn run<S>(mut service: S, n: u64)
    where
        S: Service<http::Request<String>, Response = http::Response<()>>,
        S::Error: std::fmt::Debug,
    {
        for _ in 0..n {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .now_or_never()
                .expect("ready")
                .expect("ok");
            let response = service
                .call(request())
                .now_or_never()
                .expect("answered")
                .expect("200");
            black_box(&response);
        }
    }

    let api = service_fn(|request: http::Request<String>| async move {
        black_box(&request);
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let source: Arc<dyn AuthSource> = match contender {
        "tower-without" => return run(api, n),
        "tower-api-key" => Arc::new(ApiKey::new("sk-live-0123456789abcdef").expect("key")),
        _ => {
            // A fresh 780-byte access token, the size of a typical JWT.
            let now = time::OffsetDateTime::now_utc();
            let jwt = format!(
                "eyJhbGciOiJSUzI1NiJ9.{}.{}",
                "a".repeat(420),
                "s".repeat(338)
            );
            let set = TokenSet::new(
                AccessToken::new(jwt),
                Some(RefreshToken::new("refresh-0")),
                now,
                now + time::Duration::hours(1),
            );
            Arc::new(
                futures::executor::block_on(
                    Credential::builder(refresher_fn(|_| async {
                        Err(RefreshError::transient("unused"))
                    }))
                    .tokens(set)
                    .build(),
                )
                .expect("credential"),
            )
        }
    };
    run(AuthLayer::new(source).layer(api), n);
}

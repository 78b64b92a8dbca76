//! The middleware's overhead per request: the same request through an inner service that
//! answers 200 at once, with and without the middleware, in one run and without network.
//!
//! Both integrations are measured: `AuthService` over a `tower::service_fn`, and
//! `AuthMiddleware` in a `reqwest-middleware` chain whose last middleware answers instead of
//! sending. Each request is built inside the timed call, the same way for every contender, so
//! the difference is what the middleware adds: the header fetched and attached, the request
//! copied for a possible retry, the boxed futures, the status check.
//!
//! Criterion times each contender on its own (`bench_all`, read back by `report`); `run` times
//! them paired — rounds of calls without and with the middleware, interleaved, the overhead
//! taken per round — so that load from other processes, which shifts from one criterion
//! benchmark to the next, falls on both sides of each difference. `run` also counts
//! allocations per request.

use std::convert::Infallible;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use keepfresh::middleware::{AuthLayer, AuthMiddleware, AuthService};
use keepfresh::{
    refresher_fn, AccessToken, ApiKey, AuthSource, Credential, RefreshError, RefreshToken, TokenSet,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tower::{service_fn, Layer, Service};

use crate::alloc;
use crate::hot_path::{median_ns, poll_ready};
use crate::report::{Report, Target};

/// Criterion group names; the report reads their estimates back by these names.
const GROUPS: [&str; 2] = ["middleware_tower", "middleware_reqwest"];
/// Criterion function names, the request without the middleware first.
const CONTENDERS: [&str; 3] = ["without", "with_credential", "with_api_key"];
/// The issue's bound on what the middleware adds to a request.
const TARGET_NS: f64 = 1_000.0;

const URL: &str = "https://api.example.com/v1/items?page=2";

/// A credential holding a fresh access token the size of a typical JWT (780 bytes).
fn credential(rt: &tokio::runtime::Runtime) -> Credential {
    let now = time::OffsetDateTime::now_utc();
    let jwt = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        "a".repeat(420),
        "s".repeat(338)
    );
    let tokens = TokenSet::new(
        AccessToken::new(jwt),
        Some(RefreshToken::new("refresh-0")),
        now,
        now + time::Duration::hours(1),
    );
    rt.block_on(
        Credential::builder(refresher_fn(|_| async {
            Err(RefreshError::transient("never called: the token is fresh"))
        }))
        .tokens(tokens)
        .build(),
    )
    .expect("credential builds")
}

fn api_key() -> ApiKey {
    ApiKey::new("sk-live-0123456789abcdef").expect("key")
}

/// The request every tower contender sends: a JSON POST with two headers.
fn request() -> http::Request<String> {
    http::Request::post(URL)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(r#"{"name":"item"}"#.to_owned())
        .expect("request")
}

/// The same request for reqwest.
fn reqwest_request(url: &reqwest::Url) -> reqwest::Request {
    let mut request = reqwest::Request::new(reqwest::Method::POST, url.clone());
    let headers = request.headers_mut();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert("accept", http::HeaderValue::from_static("application/json"));
    *request.body_mut() = Some(r#"{"name":"item"}"#.into());
    request
}

/// The API: answers 200 at once.
type Api = tower::util::ServiceFn<
    fn(http::Request<String>) -> std::future::Ready<Result<http::Response<()>, Infallible>>,
>;

fn api() -> Api {
    fn answer(
        request: http::Request<String>,
    ) -> std::future::Ready<Result<http::Response<()>, Infallible>> {
        black_box(&request);
        std::future::ready(Ok(http::Response::new(())))
    }
    service_fn(answer as fn(_) -> _)
}

/// One request through `service`, polled as the hot-path benchmarks poll (once, no-op waker).
fn tower_call<S>(service: &mut S)
where
    S: Service<http::Request<String>, Response = http::Response<()>>,
    S::Error: std::fmt::Debug,
{
    poll_ready(std::future::poll_fn(|cx| service.poll_ready(cx))).expect("ready");
    black_box(poll_ready(service.call(request())).expect("200"));
}

/// The `reqwest-middleware` chain's end: answers 200 without sending anything.
struct Answer200;

#[async_trait]
impl Middleware for Answer200 {
    async fn handle(
        &self,
        request: reqwest::Request,
        _extensions: &mut http::Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        black_box(&request);
        Ok(reqwest::Response::from(http::Response::new("ok")))
    }
}

fn chain(auth: Option<Arc<dyn AuthSource>>) -> ClientWithMiddleware {
    let mut builder = ClientBuilder::new(reqwest::Client::new());
    if let Some(source) = auth {
        builder = builder.with(AuthMiddleware::new(source));
    }
    builder.with(Answer200).build()
}

fn reqwest_call(client: &ClientWithMiddleware, url: &reqwest::Url) {
    black_box(poll_ready(client.execute(reqwest_request(url))).expect("200"));
}

/// Everything under measurement; build inside `rt`'s context.
struct Contenders {
    url: reqwest::Url,
    direct: Api,
    tower_credential: AuthService<Api>,
    tower_api_key: AuthService<Api>,
    reqwest: [ClientWithMiddleware; 3],
}

impl Contenders {
    fn new(rt: &tokio::runtime::Runtime) -> Self {
        let credential: Arc<dyn AuthSource> = Arc::new(credential(rt));
        let api_key: Arc<dyn AuthSource> = Arc::new(api_key());
        Contenders {
            url: reqwest::Url::parse(URL).expect("url"),
            direct: api(),
            tower_credential: AuthLayer::new(credential.clone()).layer(api()),
            tower_api_key: AuthLayer::new(api_key.clone()).layer(api()),
            reqwest: [chain(None), chain(Some(credential)), chain(Some(api_key))],
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Criterion: one request with and without the middleware, for each integration.
pub(crate) fn bench_all(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut k = Contenders::new(&rt);
    let [without, with_credential, with_api_key] = CONTENDERS;

    let mut tower = c.benchmark_group(GROUPS[0]);
    tower
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    tower.bench_function(without, |b| b.iter(|| tower_call(&mut k.direct)));
    tower.bench_function(with_credential, |b| {
        b.iter(|| tower_call(&mut k.tower_credential))
    });
    tower.bench_function(with_api_key, |b| {
        b.iter(|| tower_call(&mut k.tower_api_key))
    });
    tower.finish();

    let mut reqwest = c.benchmark_group(GROUPS[1]);
    reqwest
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, client) in CONTENDERS.iter().zip(&k.reqwest) {
        reqwest.bench_function(*name, |b| b.iter(|| reqwest_call(client, &k.url)));
    }
    reqwest.finish();
}

/// Adds criterion's medians and their differences to the report, from the estimates criterion
/// just wrote; only the groups `selected` accepts are read.
pub(crate) fn report(report: &mut Report, selected: impl Fn(&str) -> bool) {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::report::target_dir().join("criterion"));
    let groups: Vec<&str> = GROUPS.into_iter().filter(|g| selected(g)).collect();
    if !groups.is_empty() {
        report.section(
            "Middleware: one request without and with it, each timed on its own \
             (criterion medians, this run)",
        );
    }
    for group in groups {
        let medians: Vec<Option<f64>> = CONTENDERS
            .iter()
            .map(|f| median_ns(&root.join(group).join(f).join("new/estimates.json")))
            .collect();
        let [Some(without), Some(credential), Some(api_key)] = medians[..] else {
            report.note(&format!(
                "{group}: no estimates under {} (filtered out, or --test/--list run)",
                root.display()
            ));
            continue;
        };
        for (name, ns) in CONTENDERS.iter().zip([without, credential, api_key]) {
            report.figure(&format!("{group}: {name} median"), ns, "ns", Target::Info);
        }
        report.figure(
            &format!("{group}: with_credential - without"),
            credential - without,
            "ns",
            Target::Info,
        );
        report.figure(
            &format!("{group}: with_api_key - without"),
            api_key - without,
            "ns",
            Target::Info,
        );
    }
}

/// Rounds of `calls` requests without, then with, the middleware (the order alternating from
/// one round to the next); the median over rounds of the per-request difference, and the
/// median per-request time without.
fn paired(
    rounds: usize,
    calls: u32,
    mut without: impl FnMut(),
    mut with: impl FnMut(),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        for _ in 0..calls {
            f();
        }
        t0.elapsed().as_nanos() as f64 / f64::from(calls)
    };
    let mut differences = Vec::with_capacity(rounds);
    let mut bases = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (base, total) = if round % 2 == 0 {
            let base = time(&mut without);
            (base, time(&mut with))
        } else {
            let total = time(&mut with);
            (time(&mut without), total)
        };
        differences.push(total - base);
        bases.push(base);
    }
    (median(&mut differences), median(&mut bases))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Allocations per request made by `call`.
fn allocations(mut call: impl FnMut()) -> f64 {
    const CALLS: usize = 1_000;
    call();
    let ((), counts) = alloc::measure(|| {
        for _ in 0..CALLS {
            call();
        }
    });
    counts.allocations as f64 / CALLS as f64
}

/// The paired overhead, checked against the issue's 1 µs, and allocations per request.
pub(crate) fn run(report: &mut Report, test: bool) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut k = Contenders::new(&rt);
    let (rounds, calls) = if test { (4, 100) } else { (201, 2_000) };
    report.section(&format!(
        "Middleware overhead per request, paired: {rounds} rounds of {calls} requests without \
         and with it, interleaved; median of the per-round differences (inner service answers \
         at once, 780-byte access token)"
    ));
    let Contenders {
        url,
        direct,
        tower_credential,
        tower_api_key,
        reqwest: [bare, with_credential, with_api_key],
    } = &mut k;

    let mut figures = Vec::new();
    let (d, base) = paired(
        rounds,
        calls,
        || tower_call(direct),
        || tower_call(tower_credential),
    );
    figures.push(("tower", "credential", d, base));
    let (d, base) = paired(
        rounds,
        calls,
        || tower_call(direct),
        || tower_call(tower_api_key),
    );
    figures.push(("tower", "API key", d, base));
    let (d, base) = paired(
        rounds,
        calls,
        || reqwest_call(bare, url),
        || reqwest_call(with_credential, url),
    );
    figures.push(("reqwest-middleware", "credential", d, base));
    let (d, base) = paired(
        rounds,
        calls,
        || reqwest_call(bare, url),
        || reqwest_call(with_api_key, url),
    );
    figures.push(("reqwest-middleware", "API key", d, base));
    for (integration, source, overhead, base) in figures {
        report.figure(
            &format!("{integration}: request without the middleware"),
            base,
            "ns",
            Target::Info,
        );
        report.figure(
            &format!("{integration}: overhead with {source}"),
            overhead,
            "ns",
            Target::AtMost(TARGET_NS),
        );
    }

    let base = allocations(|| tower_call(direct));
    for (name, per_request) in [
        ("tower: allocations per request without", base),
        (
            "tower: allocations added with a credential",
            allocations(|| tower_call(tower_credential)) - base,
        ),
        (
            "tower: allocations added with an API key",
            allocations(|| tower_call(tower_api_key)) - base,
        ),
    ] {
        report.figure(name, per_request, "allocs", Target::Info);
    }
}

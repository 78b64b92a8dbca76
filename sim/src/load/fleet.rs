//! Load with many grants: one keepfresh credential per grant, driven at a target request rate
//! or concurrency (with a ramp), so that the token endpoint itself is loaded, the way many
//! users refreshing at once load it.
//!
//! A request is what a caller does after a resource server rejected its token: invalidate the
//! grant's current access token and ask for one again, which refreshes the grant (callers of one
//! grant that overlap share that refresh). The report gives throughput, token-endpoint latency
//! and caller-wait percentiles, errors by outcome class, the `Retry-After` values seen, and a
//! timeline the run's plot is drawn from.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keepfresh::oauth::HttpRefresher;
use keepfresh::{
    AccessToken, Credential, RefreshError, RefreshPolicy, RefreshRequest, RefreshToken, Refresher,
    TokenResponse, TokenSet,
};
use parking_lot::Mutex;
use serde::Serialize;

use crate::http::{HttpProvider, ServeConfig, ServerSummary};
use crate::plot::{Figure, Panel, PlotError, Series};
use crate::probe::Endpoint;

/// At most this many grants (credentials) in one run.
pub const MAX_FLEET_GRANTS: usize = 20_000;
/// At most this many requests in flight; more are shed (counted, not sent).
const MAX_IN_FLIGHT: usize = 20_000;

/// How requests are paced.
///
/// ```
/// use keepfresh_sim::load::fleet::Pace;
/// assert_eq!(Pace::Rate(50.0).to_string(), "50 requests/s");
/// assert_eq!(Pace::Concurrency(8).to_string(), "8 at once");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Open loop: requests start at this rate per second, whatever the answers' speed.
    Rate(f64),
    /// Closed loop: this many callers, each starting its next request when the last ended.
    Concurrency(usize),
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pace::Rate(r) => write!(f, "{r} requests/s"),
            Pace::Concurrency(c) => write!(f, "{c} at once"),
        }
    }
}

/// Where the grants are.
#[derive(Clone, Debug)]
pub enum FleetTarget {
    /// The built-in mock provider, which mints this many grants.
    BuiltIn(ServeConfig, usize),
    /// A real token endpoint and the refresh tokens of its grants (`Debug` shows neither
    /// secret nor token).
    External(Endpoint, Vec<RefreshToken>),
}

/// A many-grants load run's shape.
///
/// # Default
/// The built-in `strict` provider with 100 grants, 8 at once, no ramp, 10 s, 30 s per caller,
/// a timeline bucket of 1 s, no request cap.
///
/// ```
/// use keepfresh_sim::load::fleet::{FleetConfig, Pace};
/// use std::time::Duration;
/// let c = FleetConfig::default().pace(Pace::Rate(200.0)).ramp(Duration::from_secs(2));
/// assert!(c.validate().is_ok());
/// assert!(FleetConfig::default().pace(Pace::Rate(0.0)).validate().is_err());
/// assert!(FleetConfig::default().ramp(Duration::from_secs(60)).validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct FleetConfig {
    target: FleetTarget,
    pace: Pace,
    ramp: Duration,
    duration: Duration,
    max_requests: Option<u64>,
    caller_timeout: Duration,
    bucket: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            target: FleetTarget::BuiltIn(ServeConfig::new("strict"), 100),
            pace: Pace::Concurrency(8),
            ramp: Duration::ZERO,
            duration: Duration::from_secs(10),
            max_requests: None,
            caller_timeout: Duration::from_secs(30),
            bucket: Duration::from_secs(1),
        }
    }
}

impl FleetConfig {
    /// The grants.
    ///
    /// See the [type-level example](FleetConfig).
    pub fn target(mut self, target: FleetTarget) -> Self {
        self.target = target;
        self
    }

    /// The pace.
    ///
    /// See the [type-level example](FleetConfig).
    pub fn pace(mut self, pace: Pace) -> Self {
        self.pace = pace;
        self
    }

    /// The time over which the pace grows linearly from zero to its target.
    ///
    /// See the [type-level example](FleetConfig).
    pub fn ramp(mut self, ramp: Duration) -> Self {
        self.ramp = ramp;
        self
    }

    /// How long requests are started (ramp included).
    ///
    /// See the [type-level example](FleetConfig).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Stop starting requests after this many.
    ///
    /// ```
    /// # use keepfresh_sim::load::fleet::FleetConfig;
    /// assert!(FleetConfig::default().max_requests(Some(0)).validate().is_err());
    /// ```
    pub fn max_requests(mut self, max: Option<u64>) -> Self {
        self.max_requests = max;
        self
    }

    /// How long one caller waits for a token at most.
    ///
    /// See the [type-level example](FleetConfig).
    pub fn caller_timeout(mut self, timeout: Duration) -> Self {
        self.caller_timeout = timeout;
        self
    }

    /// The timeline's bucket width.
    ///
    /// ```
    /// # use keepfresh_sim::load::fleet::FleetConfig;
    /// assert!(FleetConfig::default().bucket(std::time::Duration::ZERO).validate().is_err());
    /// ```
    pub fn bucket(mut self, bucket: Duration) -> Self {
        self.bucket = bucket;
        self
    }

    fn grants(&self) -> usize {
        match &self.target {
            FleetTarget::BuiltIn(_, n) => *n,
            FleetTarget::External(_, g) => g.len(),
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// No grant or too many, a pace of zero, not finite or absurd, a ramp not shorter than the
    /// run, a zero duration, timeout or bucket, a bucket count over 10,000, an invalid
    /// built-in provider.
    ///
    /// See the [type-level example](FleetConfig).
    pub fn validate(&self) -> Result<(), String> {
        let n = self.grants();
        if n == 0 || n > MAX_FLEET_GRANTS {
            return Err(format!(
                "grants must be between 1 and {MAX_FLEET_GRANTS}, got {n}"
            ));
        }
        match self.pace {
            Pace::Rate(r) if !(r.is_finite() && r > 0.0 && r <= 100_000.0) => {
                return Err(format!(
                    "the rate must be between 0 and 100000 requests/s, got {r}"
                ))
            }
            Pace::Concurrency(c) if c == 0 || c > MAX_IN_FLIGHT => {
                return Err(format!(
                    "the concurrency must be between 1 and {MAX_IN_FLIGHT}, got {c}"
                ))
            }
            _ => {}
        }
        if self.duration.is_zero() || self.caller_timeout.is_zero() || self.bucket.is_zero() {
            return Err("the duration, the caller timeout and the bucket must be positive".into());
        }
        if self.ramp >= self.duration {
            return Err("the ramp must be shorter than the run".into());
        }
        if self.duration.as_secs_f64() / self.bucket.as_secs_f64() > 10_000.0 {
            return Err("more than 10000 timeline buckets: use a wider bucket".into());
        }
        if self.max_requests == Some(0) {
            return Err("a request cap of 0 sends nothing".into());
        }
        if let FleetTarget::BuiltIn(serve, _) = &self.target {
            serve.validate()?;
        }
        Ok(())
    }
}

/// One token-endpoint call as the client saw it.
#[derive(Clone, Copy)]
struct Call {
    at: f64,
    latency: f64,
    outcome: Outcome,
    retry_after: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error(keepfresh::ErrorClass),
}

impl Outcome {
    fn name(self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Error(c) => c.to_string(),
        }
    }
}

/// One caller request.
#[derive(Clone, Copy)]
struct Done {
    at: f64,
    wait: f64,
    ok: bool,
}

/// What every credential's refresher and every caller record.
struct Recorder {
    started: Mutex<Instant>,
    calls: Mutex<Vec<Call>>,
    in_flight: Mutex<Vec<u32>>,
    overlapping: AtomicU64,
    requests_started: AtomicU64,
    requests_done: AtomicU64,
    request_errors: AtomicU64,
    token_calls: AtomicU64,
    token_errors: AtomicU64,
    done: Mutex<Vec<Done>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Recorder {
    fn now(&self) -> f64 {
        self.started.lock().elapsed().as_secs_f64()
    }
}

/// The real refresher of one grant, timed.
struct Timed {
    inner: HttpRefresher,
    grant: usize,
    rec: Arc<Recorder>,
}

#[async_trait]
impl Refresher for Timed {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        {
            let mut f = self.rec.in_flight.lock();
            f[self.grant] += 1;
            if f[self.grant] > 1 {
                self.rec.overlapping.fetch_add(1, Ordering::Relaxed);
            }
        }
        let at = self.rec.now();
        let t0 = Instant::now();
        let result = self.inner.refresh(request).await;
        let latency = t0.elapsed().as_secs_f64();
        self.rec.in_flight.lock()[self.grant] -= 1;
        self.rec.token_calls.fetch_add(1, Ordering::Relaxed);
        let (outcome, retry_after) = match &result {
            Ok(_) => (Outcome::Ok, None),
            Err(e) => {
                self.rec.token_errors.fetch_add(1, Ordering::Relaxed);
                (
                    Outcome::Error(e.class()),
                    e.retry_after().map(|d| d.as_secs_f64()),
                )
            }
        };
        self.rec.calls.lock().push(Call {
            at,
            latency,
            outcome,
            retry_after,
        });
        result
    }
}

/// Percentiles of a sample, in milliseconds (nearest rank).
///
/// ```
/// use keepfresh_sim::load::fleet::Percentiles;
/// let p = Percentiles::of_secs(&mut [0.001, 0.002, 0.003, 0.004]);
/// assert_eq!((p.p50_ms, p.max_ms), (2.0, 4.0));
/// assert_eq!(Percentiles::of_secs(&mut []).count, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `samples` in seconds (sorted in place; non-finite samples sort last).
    ///
    /// See the [type-level example](Percentiles).
    pub fn of_secs(samples: &mut [f64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable_by(|a, b| a.total_cmp(b));
        let n = samples.len();
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1] * 1000.0;
        Percentiles {
            count: n as u64,
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: samples[n - 1] * 1000.0,
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        )
    }
}

/// `Retry-After` values the token endpoint sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RetryAfterSeen {
    /// Answers that carried one.
    pub answers: u64,
    /// Smallest, seconds.
    pub min_s: Option<f64>,
    /// Largest, seconds.
    pub max_s: Option<f64>,
}

/// One timeline bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Bucket start, seconds from the start of the run.
    pub t_s: f64,
    /// The target rate at the bucket's middle (rate pacing), requests/s.
    pub target_per_s: Option<f64>,
    /// Requests completed per second.
    pub completed_per_s: f64,
    /// Token-endpoint calls started per second.
    pub token_calls_per_s: f64,
    /// Failed token-endpoint calls per second.
    pub token_errors_per_s: f64,
    /// Token-endpoint latency of the calls started in the bucket.
    pub token_latency: Percentiles,
    /// Caller waits of the requests completed in the bucket.
    pub caller_wait: Percentiles,
}

/// What a many-grants load run measured. No secret appears in it.
#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    /// `built-in:<profile>` or the token URL.
    pub target: String,
    /// Grants (one credential each).
    pub grants: usize,
    /// The pace.
    pub pace: Pace,
    /// The ramp, seconds.
    pub ramp_s: f64,
    /// Wall-clock seconds from the first request to the last answer.
    pub elapsed_s: f64,
    /// Requests started.
    pub requests: u64,
    /// Requests that got a token.
    pub completed: u64,
    /// Requests shed because too many were in flight (rate pacing).
    pub shed: u64,
    /// Completed requests per second over the whole run.
    pub throughput_per_s: f64,
    /// Completed requests per second after the ramp.
    pub steady_throughput_per_s: f64,
    /// Token-endpoint calls.
    pub token_calls: u64,
    /// Token-endpoint calls per second.
    pub token_calls_per_s: f64,
    /// Token-endpoint calls by outcome class (`ok`, `transient`, `invalid_grant`, …).
    pub token_calls_by_outcome: BTreeMap<String, u64>,
    /// Token-endpoint latency.
    pub token_latency: Percentiles,
    /// How long callers waited for a token.
    pub caller_wait: Percentiles,
    /// Caller errors by kind.
    pub caller_errors: BTreeMap<String, u64>,
    /// `Retry-After` values seen.
    pub retry_after: RetryAfterSeen,
    /// Token-endpoint calls that overlapped another call for the same grant: 0 for keepfresh.
    pub duplicate_refreshes: u64,
    /// The built-in provider's own view.
    pub server: Option<ServerSummary>,
    /// The run over time.
    pub timeline: Vec<Bucket>,
}

impl FleetReport {
    /// Whether keepfresh kept its promises: no duplicate refresh and (built-in provider) no
    /// replayed refresh token and no revoked grant. Errors the endpoint answered are findings
    /// about the endpoint, not failures of the run.
    ///
    /// See [`run_fleet`].
    pub fn healthy(&self) -> bool {
        self.duplicate_refreshes == 0
            && self
                .server
                .as_ref()
                .is_none_or(|s| s.replays == 0 && s.revoked_families.is_empty())
    }

    /// The run over time as an SVG chart: throughput against the target, and token-endpoint
    /// latency and caller waits.
    ///
    /// # Errors
    /// A drawing failure.
    ///
    /// See [`run_fleet`].
    pub fn plot(&self) -> Result<String, PlotError> {
        let mid = |b: &Bucket, w: f64| b.t_s + w / 2.0;
        let w = self
            .timeline
            .get(1)
            .map_or(1.0, |b| b.t_s - self.timeline[0].t_s);
        let col = |f: &dyn Fn(&Bucket) -> f64| -> Vec<(f64, f64)> {
            self.timeline.iter().map(|b| (mid(b, w), f(b))).collect()
        };
        let mut throughput = Panel::new("Throughput", "per second")
            .series(Series::line(
                "requests completed/s",
                col(&|b| b.completed_per_s),
            ))
            .series(Series::line(
                "token-endpoint calls/s",
                col(&|b| b.token_calls_per_s),
            ))
            .series(Series::line(
                "failed token-endpoint calls/s",
                col(&|b| b.token_errors_per_s),
            ));
        if matches!(self.pace, Pace::Rate(_)) {
            throughput = throughput.series(Series::dashed(
                "target requests/s",
                col(&|b| b.target_per_s.unwrap_or(f64::NAN)),
            ));
        }
        let latency = Panel::new("Token-endpoint latency and caller waits", "milliseconds")
            .series(Series::line(
                "token endpoint p50",
                col(&|b| nan_if_empty(&b.token_latency, b.token_latency.p50_ms)),
            ))
            .series(Series::line(
                "token endpoint p99",
                col(&|b| nan_if_empty(&b.token_latency, b.token_latency.p99_ms)),
            ))
            .series(Series::line(
                "caller wait p99",
                col(&|b| nan_if_empty(&b.caller_wait, b.caller_wait.p99_ms)),
            ));
        Figure::new(
            format!(
                "keepfresh-sim load: {} grants, {}, {}",
                self.grants, self.pace, self.target
            ),
            "time since start (s)",
        )
        .panel(throughput)
        .panel(latency)
        .to_svg()
    }
}

fn nan_if_empty(p: &Percentiles, v: f64) -> f64 {
    if p.count == 0 {
        f64::NAN
    } else {
        v
    }
}

impl fmt::Display for FleetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(f, "load run against {}", self.target)?;
        writeln!(
            f,
            "  {} grants, {} (ramp {:.1} s), {:.2} s",
            self.grants, self.pace, self.ramp_s, self.elapsed_s
        )?;
        writeln!(
            f,
            "  requests: {} started, {} completed, {} shed; {:.1}/s overall, {:.1}/s after the ramp",
            self.requests,
            self.completed,
            self.shed,
            self.throughput_per_s,
            self.steady_throughput_per_s
        )?;
        writeln!(
            f,
            "  token endpoint: {} calls ({:.1}/s): {}",
            self.token_calls,
            self.token_calls_per_s,
            join(&self.token_calls_by_outcome)
        )?;
        writeln!(f, "  token-endpoint latency: {}", self.token_latency)?;
        writeln!(f, "  caller wait:            {}", self.caller_wait)?;
        writeln!(f, "  caller errors: {}", join(&self.caller_errors))?;
        match (self.retry_after.min_s, self.retry_after.max_s) {
            (Some(lo), Some(hi)) => writeln!(
                f,
                "  Retry-After: {} answers, {lo} s to {hi} s",
                self.retry_after.answers
            )?,
            _ => writeln!(f, "  Retry-After: none")?,
        }
        writeln!(
            f,
            "  duplicate refreshes (two calls for one grant at once): {}",
            self.duplicate_refreshes
        )?;
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  provider ({}): {} token calls, replays {}, revoked grants {}",
                s.profile,
                s.token_calls,
                s.replays,
                s.revoked_families.len()
            )?;
        }
        write!(
            f,
            "  verdict: {}",
            if self.healthy() { "ok" } else { "FAILED" }
        )
    }
}

/// The target rate at `t` seconds under a linear ramp.
fn rate_at(rate: f64, ramp: f64, t: f64) -> f64 {
    if ramp > 0.0 && t < ramp {
        rate * t / ramp
    } else {
        rate
    }
}

/// Requests due by `t` seconds under a linear ramp (the integral of [`rate_at`]).
fn due_by(rate: f64, ramp: f64, t: f64) -> f64 {
    if ramp > 0.0 && t < ramp {
        rate * t * t / (2.0 * ramp)
    } else {
        rate * (t - ramp / 2.0)
    }
}

/// One request on `credential`: make its current token stale, as a resource server's 401
/// would, and ask for a token.
async fn request(credential: Credential, rec: Arc<Recorder>, timeout: Duration) {
    rec.requests_started.fetch_add(1, Ordering::Relaxed);
    let t0 = Instant::now();
    if let Some(current) = credential.try_token() {
        credential.invalidate(&current);
    }
    let result = tokio::time::timeout(timeout, credential.token()).await;
    let wait = t0.elapsed().as_secs_f64();
    let error = match result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(super::error_kind(&e)),
        Err(_) => Some("caller timeout".to_owned()),
    };
    let ok = error.is_none();
    if let Some(kind) = error {
        rec.request_errors.fetch_add(1, Ordering::Relaxed);
        *rec.errors.lock().entry(kind).or_default() += 1;
    }
    rec.done.lock().push(Done {
        at: rec.now(),
        wait,
        ok,
    });
    rec.requests_done.fetch_add(1, Ordering::Relaxed);
}

/// How the live progress line is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not at all.
    Off,
    /// Rewritten in place (a terminal).
    InPlace,
    /// One line every few seconds (a log).
    Lines,
}

/// Runs a many-grants load. Needs a tokio runtime with the time and I/O drivers.
///
/// Bounded: requests start only during the configured duration (and up to the request cap),
/// at most 20,000 are in flight, each caller waits at most the caller timeout.
///
/// # Errors
/// An invalid configuration, a built-in server that cannot start, an endpoint the refresher
/// refuses, a credential that cannot be built.
///
/// ```
/// use keepfresh_sim::http::ServeConfig;
/// use keepfresh_sim::load::fleet::{run_fleet, FleetConfig, FleetTarget, Pace, Progress};
/// use std::time::Duration;
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let config = FleetConfig::default()
///     .target(FleetTarget::BuiltIn(ServeConfig::new("okta"), 20))
///     .pace(Pace::Concurrency(4))
///     .duration(Duration::from_millis(500))
///     .bucket(Duration::from_millis(100));
/// let report = run_fleet(config, Progress::Off).await.unwrap();
/// assert!(report.healthy(), "{report}");
/// assert_eq!(report.token_calls, report.token_calls_by_outcome["ok"]);
/// assert!(report.plot().unwrap().contains("Throughput"));
/// # }
/// ```
pub async fn run_fleet(config: FleetConfig, progress: Progress) -> Result<FleetReport, String> {
    config.validate()?;
    let (server, endpoint, grants, target) = match &config.target {
        FleetTarget::BuiltIn(serve, n) => {
            let server = HttpProvider::start(serve.clone(), 0).await?;
            let grants: Vec<RefreshToken> = (0..*n)
                .map(|_| RefreshToken::new(server.login().refresh_token.unwrap_or_default()))
                .collect();
            let endpoint = Endpoint {
                token_url: server.token_url(),
                client_id: "keepfresh-load".into(),
                client_secret: None,
                client_auth: Default::default(),
                resources: Vec::new(),
                scope: None,
                resource_url: None,
            };
            let target = format!("built-in:{}", serve.profile_name());
            (Some(server), endpoint, grants, target)
        }
        FleetTarget::External(endpoint, grants) => (
            None,
            endpoint.clone(),
            grants.clone(),
            endpoint.token_url.clone(),
        ),
    };
    let mut b = HttpRefresher::builder(endpoint.token_url.clone(), endpoint.client_id.clone())
        .client_auth(endpoint.client_auth);
    if let Some(s) = &endpoint.client_secret {
        b = b.client_secret(s.clone());
    }
    for r in &endpoint.resources {
        b = b.resource(r.clone());
    }
    let refresher = b.build().map_err(|e| e.to_string())?;
    let rec = Arc::new(Recorder {
        started: Mutex::new(Instant::now()),
        calls: Mutex::new(Vec::new()),
        in_flight: Mutex::new(vec![0; grants.len()]),
        overlapping: AtomicU64::new(0),
        requests_started: AtomicU64::new(0),
        requests_done: AtomicU64::new(0),
        request_errors: AtomicU64::new(0),
        token_calls: AtomicU64::new(0),
        token_errors: AtomicU64::new(0),
        done: Mutex::new(Vec::new()),
        errors: Mutex::new(BTreeMap::new()),
    });
    let epoch = time::OffsetDateTime::UNIX_EPOCH;
    let mut credentials = Vec::with_capacity(grants.len());
    for (i, rt) in grants.into_iter().enumerate() {
        let policy = RefreshPolicy::builder()
            .wait_timeout(config.caller_timeout)
            .jitter_seed(i as u64)
            .build()
            .map_err(|e| e.to_string())?;
        let mut initial = TokenSet::new(AccessToken::new(""), Some(rt), epoch, epoch);
        if let Some(scope) = &endpoint.scope {
            initial = initial.with_scope(scope.clone());
        }
        let credential = Credential::builder(Timed {
            inner: refresher.clone(),
            grant: i,
            rec: rec.clone(),
        })
        .policy(policy)
        .tokens(initial)
        .name(format!("grant-{i}"))
        .build()
        .await
        .map_err(|e| e.to_string())?;
        credentials.push(credential);
    }

    // The run's clock starts now, after the setup.
    *rec.started.lock() = Instant::now();
    let (stop_progress, stopped) = tokio::sync::oneshot::channel::<()>();
    let progress_task = (progress != Progress::Off).then(|| {
        tokio::spawn(show_progress(
            rec.clone(),
            progress,
            config.pace,
            config.ramp.as_secs_f64(),
            config.duration.as_secs_f64(),
            stopped,
        ))
    });
    let credentials = Arc::new(credentials);
    let n = credentials.len();
    let duration = config.duration.as_secs_f64();
    let ramp = config.ramp.as_secs_f64();
    let cap = config.max_requests.unwrap_or(u64::MAX);
    let timeout = config.caller_timeout;
    let mut shed = 0u64;
    match config.pace {
        Pace::Rate(rate) => {
            let mut tasks = tokio::task::JoinSet::new();
            let mut sent = 0u64;
            let mut ticks = tokio::time::interval(Duration::from_millis(5));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            'run: loop {
                ticks.tick().await;
                let t = rec.now();
                if t >= duration {
                    break;
                }
                let due = (due_by(rate, ramp, t).floor().max(0.0) as u64).min(cap);
                while tasks.try_join_next().is_some() {}
                while sent < due {
                    if tasks.len() >= MAX_IN_FLIGHT {
                        shed += 1;
                    } else {
                        let credential = credentials[(sent % n as u64) as usize].clone();
                        tasks.spawn(request(credential, rec.clone(), timeout));
                    }
                    sent += 1;
                }
                if sent >= cap {
                    break 'run;
                }
            }
            while tasks.join_next().await.is_some() {}
        }
        Pace::Concurrency(callers) => {
            let issued = Arc::new(AtomicU64::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for j in 0..callers {
                let (rec, credentials, issued) = (rec.clone(), credentials.clone(), issued.clone());
                let start = config.ramp.mul_f64(j as f64 / callers as f64);
                workers.spawn(async move {
                    tokio::time::sleep(start).await;
                    while rec.now() < duration {
                        let k = issued.fetch_add(1, Ordering::Relaxed);
                        if k >= cap {
                            break;
                        }
                        let credential = credentials[(k % n as u64) as usize].clone();
                        request(credential, rec.clone(), timeout).await;
                    }
                });
            }
            while workers.join_next().await.is_some() {}
        }
    }
    let elapsed = rec.now();
    let _ = stop_progress.send(());
    if let Some(task) = progress_task {
        let _ = task.await;
    }
    for credential in credentials.iter() {
        let _ = tokio::time::timeout(Duration::from_secs(5), credential.shutdown()).await;
    }
    Ok(summarize(
        &config,
        &rec,
        elapsed,
        shed,
        target,
        server.as_ref(),
    ))
}

fn summarize(
    config: &FleetConfig,
    rec: &Recorder,
    elapsed: f64,
    shed: u64,
    target: String,
    server: Option<&HttpProvider>,
) -> FleetReport {
    let calls = rec.calls.lock().clone();
    let done = rec.done.lock().clone();
    let ramp = config.ramp.as_secs_f64();
    let duration = config.duration.as_secs_f64();
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut retry = RetryAfterSeen::default();
    for c in &calls {
        *by_outcome.entry(c.outcome.name()).or_default() += 1;
        if let Some(r) = c.retry_after {
            retry.answers += 1;
            retry.min_s = Some(retry.min_s.map_or(r, |m: f64| m.min(r)));
            retry.max_s = Some(retry.max_s.map_or(r, |m: f64| m.max(r)));
        }
    }
    let completed = done.iter().filter(|d| d.ok).count() as u64;
    let after_ramp = done.iter().filter(|d| d.ok && d.at >= ramp).count() as f64;
    let per_s = |n: f64, secs: f64| if secs > 0.0 { n / secs } else { 0.0 };
    let width = config.bucket.as_secs_f64();
    let buckets = ((elapsed / width).ceil() as usize).max(1);
    let timeline = (0..buckets)
        .map(|i| {
            let (lo, hi) = (i as f64 * width, (i + 1) as f64 * width);
            let inside = |t: f64| t >= lo && t < hi;
            let mut latencies: Vec<f64> = calls
                .iter()
                .filter(|c| inside(c.at))
                .map(|c| c.latency)
                .collect();
            let errors = calls
                .iter()
                .filter(|c| inside(c.at) && c.outcome != Outcome::Ok)
                .count();
            let mut waits: Vec<f64> = done
                .iter()
                .filter(|d| inside(d.at))
                .map(|d| d.wait)
                .collect();
            let completed = done.iter().filter(|d| d.ok && inside(d.at)).count();
            let mid = lo + width / 2.0;
            Bucket {
                t_s: lo,
                target_per_s: match config.pace {
                    Pace::Rate(r) if mid < duration => Some(rate_at(r, ramp, mid)),
                    Pace::Rate(_) => Some(0.0),
                    Pace::Concurrency(_) => None,
                },
                completed_per_s: completed as f64 / width,
                token_calls_per_s: latencies.len() as f64 / width,
                token_errors_per_s: errors as f64 / width,
                token_latency: Percentiles::of_secs(&mut latencies),
                caller_wait: Percentiles::of_secs(&mut waits),
            }
        })
        .collect();
    let mut latencies: Vec<f64> = calls.iter().map(|c| c.latency).collect();
    let mut waits: Vec<f64> = done.iter().map(|d| d.wait).collect();
    FleetReport {
        target,
        grants: config.grants(),
        pace: config.pace,
        ramp_s: ramp,
        elapsed_s: elapsed,
        requests: rec.requests_started.load(Ordering::Relaxed) + shed,
        completed,
        shed,
        throughput_per_s: per_s(completed as f64, elapsed),
        steady_throughput_per_s: per_s(after_ramp, elapsed - ramp),
        token_calls: calls.len() as u64,
        token_calls_per_s: per_s(calls.len() as f64, elapsed),
        token_calls_by_outcome: by_outcome,
        token_latency: Percentiles::of_secs(&mut latencies),
        caller_wait: Percentiles::of_secs(&mut waits),
        caller_errors: rec.errors.lock().clone(),
        retry_after: retry,
        duplicate_refreshes: rec.overlapping.load(Ordering::Relaxed),
        server: server.map(HttpProvider::summary),
        timeline,
    }
}

/// The live progress line, on standard error, until `stop` fires.
async fn show_progress(
    rec: Arc<Recorder>,
    mode: Progress,
    pace: Pace,
    ramp: f64,
    duration: f64,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    use std::io::Write as _;
    let every = if mode == Progress::InPlace { 0.5 } else { 5.0 };
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(every));
    let (mut last_t, mut last_done) = (0.0, 0u64);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        let t = rec.now();
        let started = rec.requests_started.load(Ordering::Relaxed);
        let done = rec.requests_done.load(Ordering::Relaxed);
        let now_rate = (done - last_done) as f64 / (t - last_t).max(1e-3);
        (last_t, last_done) = (t, done);
        let target = match pace {
            Pace::Rate(r) => format!(" (target {:.0}/s)", rate_at(r, ramp, t.min(duration))),
            Pace::Concurrency(c) => format!(" ({c} at once)"),
        };
        let line = format!(
            "{t:6.1}/{duration:.0} s  {now_rate:7.1} requests/s{target}  in flight {}  token calls {} (failed {})  caller errors {}",
            started - done,
            rec.token_calls.load(Ordering::Relaxed),
            rec.token_errors.load(Ordering::Relaxed),
            rec.request_errors.load(Ordering::Relaxed),
        );
        let mut err = std::io::stderr().lock();
        let _ = match mode {
            Progress::InPlace => write!(err, "\r{line}\x1b[K"),
            _ => writeln!(err, "{line}"),
        };
        let _ = err.flush();
    }
    if mode == Progress::InPlace {
        eprintln!();
    }
}

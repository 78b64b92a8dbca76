//! Load mode, generating half: concurrent bursts of callers through real engines
//! ([`keepfresh::Credential`] with [`keepfresh::oauth::HttpRefresher`]) on tokio, over real HTTP, against the
//! built-in mock provider ([`crate::http`]) or any RFC 6749 token endpoint.
//!
//! Each burst makes the engines' current access tokens stale first (as a resource server's
//! 401 would: [`keepfresh::Credential::invalidate`]), then releases all of its callers at once on every
//! engine. A correct engine makes exactly one token-endpoint call per burst, whatever the
//! number of callers and engines (with a shared store, the other engines adopt the winner's
//! tokens). The report counts token-endpoint calls by outcome, refreshes, duplicate refreshes
//! (calls that overlapped another one, or that presented an already rotated refresh token),
//! the callers' waits and their errors.
//!
//! [`fleet`](crate::load::fleet) loads the token endpoint itself instead: many grants (from
//! [`grants`](crate::load::grants)), one credential each, at a target rate or concurrency;
//! [`processes`](crate::load::processes) runs the bursts in real OS processes sharing a store.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keepfresh::oauth::{ClientAuth, HttpRefresher};
use keepfresh::store::MemoryStore;
use keepfresh::{
    AccessToken, ClientSecret, Credential, Event, Fingerprint, RefreshError, RefreshPolicy,
    RefreshRequest, RefreshToken, Refresher, TokenResponse, TokenSet,
};
use parking_lot::Mutex;
use serde::Serialize;

use crate::http::{HttpProvider, ServeConfig, ServerSummary};

pub mod fleet;
pub mod grants;
pub mod processes;

/// Where the load goes.
///
/// ```
/// use keepfresh::RefreshToken;
/// use keepfresh_sim::http::ServeConfig;
/// use keepfresh_sim::load::{ExternalTarget, LoadConfig, Target};
/// let built_in = Target::BuiltIn(ServeConfig::new("auth0"));
/// let external = Target::External(ExternalTarget::new(
///     "https://auth.example.com/oauth/token", "client", RefreshToken::new("rt")));
/// assert!(LoadConfig::default().target(built_in).validate().is_ok());
/// assert!(LoadConfig::default().target(external).check_resource(true).validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub enum Target {
    /// The built-in mock provider, started in-process on an ephemeral loopback port.
    BuiltIn(ServeConfig),
    /// Any RFC 6749 token endpoint.
    External(ExternalTarget),
}

/// A real token endpoint and the grant to exercise there. `Debug` never shows the secrets.
///
/// ```
/// use keepfresh::{ClientSecret, RefreshToken};
/// use keepfresh_sim::load::ExternalTarget;
/// let t = ExternalTarget::new("https://auth.example.com/token", "client", RefreshToken::new("rt-secret"))
///     .client_secret(ClientSecret::new("cs-secret"));
/// assert!(!format!("{t:?}").contains("secret\""));
/// assert!(!format!("{t:?}").contains("rt-secret"));
/// ```
#[derive(Clone)]
pub struct ExternalTarget {
    token_url: String,
    client_id: String,
    client_secret: Option<ClientSecret>,
    client_auth: ClientAuth,
    refresh_token: RefreshToken,
    resources: Vec<String>,
    scope: Option<String>,
}

impl fmt::Debug for ExternalTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalTarget")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_auth", &self.client_auth)
            .field("refresh_token", &self.refresh_token)
            .field("resources", &self.resources)
            .field("scope", &self.scope)
            .finish()
    }
}

impl ExternalTarget {
    /// The token endpoint `token_url`, the client `client_id` and the grant's refresh token.
    ///
    /// See the [type-level example](ExternalTarget).
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        refresh_token: RefreshToken,
    ) -> Self {
        ExternalTarget {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: None,
            client_auth: ClientAuth::Basic,
            refresh_token,
            resources: Vec::new(),
            scope: None,
        }
    }

    /// A confidential client's secret.
    ///
    /// See the [type-level example](ExternalTarget).
    pub fn client_secret(mut self, secret: ClientSecret) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// How the secret is sent.
    ///
    /// ```
    /// # use keepfresh::RefreshToken;
    /// # use keepfresh::oauth::ClientAuth;
    /// # use keepfresh_sim::load::ExternalTarget;
    /// let t = ExternalTarget::new("https://a.example/token", "c", RefreshToken::new("r"))
    ///     .client_auth(ClientAuth::Post);
    /// assert!(format!("{t:?}").contains("Post"));
    /// ```
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// An RFC 8707 `resource` sent on every refresh.
    ///
    /// ```
    /// # use keepfresh::RefreshToken;
    /// # use keepfresh_sim::load::ExternalTarget;
    /// let t = ExternalTarget::new("https://a.example/token", "c", RefreshToken::new("r"))
    ///     .resource("https://mcp.example.com/");
    /// assert!(format!("{t:?}").contains("mcp.example.com"));
    /// ```
    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resources.push(resource.into());
        self
    }

    /// The scope to request on refresh.
    ///
    /// ```
    /// # use keepfresh::RefreshToken;
    /// # use keepfresh_sim::load::ExternalTarget;
    /// let t = ExternalTarget::new("https://a.example/token", "c", RefreshToken::new("r")).scope("read");
    /// assert!(format!("{t:?}").contains("read"));
    /// ```
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}

/// A load run's shape.
///
/// # Default
/// One engine, 100 callers per burst, 3 bursts, 100 ms between bursts, a shared store, 60 s
/// total budget, 30 s per caller, the built-in `strict` provider with seed 0.
///
/// ```
/// use keepfresh_sim::load::LoadConfig;
/// let c = LoadConfig::default().burst(500).bursts(3).engines(2);
/// assert!(c.validate().is_ok());
/// assert!(LoadConfig::default().burst(0).validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct LoadConfig {
    target: Target,
    engines: usize,
    shared_store: bool,
    burst: usize,
    bursts: usize,
    interval: Duration,
    max_duration: Duration,
    caller_timeout: Duration,
    check_resource: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            target: Target::BuiltIn(ServeConfig::new("strict")),
            engines: 1,
            shared_store: true,
            burst: 100,
            bursts: 3,
            interval: Duration::from_millis(100),
            max_duration: Duration::from_secs(60),
            caller_timeout: Duration::from_secs(30),
            check_resource: false,
        }
    }
}

/// Upper bounds that keep a run bounded in count.
const MAX_CALLERS: usize = 100_000;
const MAX_BURSTS: usize = 10_000;
const MAX_ENGINES: usize = 64;

impl LoadConfig {
    /// The target.
    ///
    /// ```
    /// # use keepfresh_sim::load::{LoadConfig, Target};
    /// # use keepfresh_sim::http::ServeConfig;
    /// let c = LoadConfig::default().target(Target::BuiltIn(ServeConfig::new("okta")));
    /// assert!(c.validate().is_ok());
    /// ```
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// How many engines (simulated processes), each a [`Credential`] of its own.
    ///
    /// See the [type-level example](LoadConfig).
    pub fn engines(mut self, n: usize) -> Self {
        self.engines = n;
        self
    }

    /// Whether the engines share one store (as processes sharing a credentials file do).
    /// Without it, each engine gets a grant of its own from the built-in provider.
    ///
    /// ```
    /// # use keepfresh_sim::load::LoadConfig;
    /// assert!(LoadConfig::default().engines(3).shared_store(false).validate().is_ok());
    /// ```
    pub fn shared_store(mut self, shared: bool) -> Self {
        self.shared_store = shared;
        self
    }

    /// Callers per burst (spread over the engines).
    ///
    /// See the [type-level example](LoadConfig).
    pub fn burst(mut self, callers: usize) -> Self {
        self.burst = callers;
        self
    }

    /// Number of bursts.
    ///
    /// See the [type-level example](LoadConfig).
    pub fn bursts(mut self, n: usize) -> Self {
        self.bursts = n;
        self
    }

    /// Pause between bursts.
    ///
    /// ```
    /// # use keepfresh_sim::load::LoadConfig;
    /// assert!(LoadConfig::default().interval(std::time::Duration::ZERO).validate().is_ok());
    /// ```
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Wall-clock budget of the whole run: bursts not started by then are skipped.
    ///
    /// ```
    /// # use keepfresh_sim::load::LoadConfig;
    /// assert!(LoadConfig::default().max_duration(std::time::Duration::ZERO).validate().is_err());
    /// ```
    pub fn max_duration(mut self, budget: Duration) -> Self {
        self.max_duration = budget;
        self
    }

    /// How long one caller waits for a token at most.
    ///
    /// ```
    /// # use keepfresh_sim::load::LoadConfig;
    /// assert!(LoadConfig::default().caller_timeout(std::time::Duration::from_secs(5)).validate().is_ok());
    /// ```
    pub fn caller_timeout(mut self, timeout: Duration) -> Self {
        self.caller_timeout = timeout;
        self
    }

    /// Whether every caller also presents its token to the built-in protected resource
    /// (counting 401s: tokens handed out that the resource server rejects).
    ///
    /// ```
    /// # use keepfresh_sim::load::LoadConfig;
    /// assert!(LoadConfig::default().check_resource(true).validate().is_ok());
    /// ```
    pub fn check_resource(mut self, check: bool) -> Self {
        self.check_resource = check;
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// Zero or absurd counts, an invalid built-in provider configuration, or contradictory
    /// options (independent engines cannot share one external refresh token; the resource
    /// check needs the built-in provider).
    ///
    /// See the [type-level example](LoadConfig).
    pub fn validate(&self) -> Result<(), String> {
        if self.burst == 0 || self.burst > MAX_CALLERS {
            return Err(format!(
                "burst must be between 1 and {MAX_CALLERS} callers, got {}",
                self.burst
            ));
        }
        if self.bursts == 0 || self.bursts > MAX_BURSTS {
            return Err(format!(
                "bursts must be between 1 and {MAX_BURSTS}, got {}",
                self.bursts
            ));
        }
        if self.engines == 0 || self.engines > MAX_ENGINES {
            return Err(format!(
                "processes must be between 1 and {MAX_ENGINES}, got {}",
                self.engines
            ));
        }
        if self.max_duration.is_zero() || self.caller_timeout.is_zero() {
            return Err("duration and caller timeout must be positive".into());
        }
        match &self.target {
            Target::BuiltIn(serve) => serve.validate()?,
            Target::External(_) => {
                if self.engines > 1 && !self.shared_store {
                    return Err(
                        "contradictory options: several processes without a shared store \
                         would all redeem the one given refresh token (a replay that revokes \
                         the grant); use a shared store or one process"
                            .into(),
                    );
                }
                if self.check_resource {
                    return Err(
                        "the resource check needs the built-in provider (no --token-url)".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Token-endpoint calls seen from the client side, shared by every engine of a run.
#[derive(Default)]
struct CallLog {
    /// Calls in flight per credential group (one group per store).
    in_flight: BTreeMap<usize, u32>,
    calls: u64,
    overlapping: u64,
    outcomes: BTreeMap<String, u64>,
    presented: HashSet<Fingerprint>,
    rotated_away: HashSet<Fingerprint>,
    replayed: u64,
}

/// Wraps the [`keepfresh::oauth::HttpRefresher`]: one `refresh` is exactly one token-endpoint POST.
struct Counting {
    inner: HttpRefresher,
    log: Arc<Mutex<CallLog>>,
    /// The credential group: engines sharing a store form one.
    group: usize,
}

#[async_trait]
impl Refresher for Counting {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let presented = request
            .refresh_token
            .as_ref()
            .map(RefreshToken::fingerprint);
        {
            let mut log = self.log.lock();
            log.calls += 1;
            let in_flight = log.in_flight.entry(self.group).or_default();
            *in_flight += 1;
            if *in_flight > 1 {
                log.overlapping += 1;
            }
            if let Some(fp) = presented {
                if log.rotated_away.contains(&fp) {
                    log.replayed += 1;
                }
                log.presented.insert(fp);
            }
        }
        let result = self.inner.refresh(request).await;
        let mut log = self.log.lock();
        if let Some(n) = log.in_flight.get_mut(&self.group) {
            *n -= 1;
        }
        let name = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.class().to_string(),
        };
        *log.outcomes.entry(name).or_default() += 1;
        if let (Ok(resp), Some(old)) = (&result, presented)
            && let Some(new) = resp.refresh_token().map(RefreshToken::fingerprint)
            && new != old
        {
            log.rotated_away.insert(old);
        }
        result
    }
}

/// Wait-time percentiles, in milliseconds.
///
/// ```
/// use keepfresh_sim::load::Waits;
/// use std::time::Duration;
/// let w = Waits::of(&mut [Duration::from_millis(1), Duration::from_millis(3), Duration::from_millis(2)]);
/// assert_eq!(w.max_ms, 3.0);
/// assert_eq!(w.p50_ms, 2.0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Waits {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Waits {
    /// Percentiles of `samples` (sorted in place; nearest rank).
    ///
    /// See the [type-level example](Waits).
    pub fn of(samples: &mut [Duration]) -> Waits {
        if samples.is_empty() {
            return Waits::default();
        }
        samples.sort_unstable();
        let rank = |p: f64| {
            let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Waits {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: samples[samples.len() - 1].as_secs_f64() * 1000.0,
        }
    }
}

/// What a load run measured. No secret appears in it.
///
/// ```
/// use keepfresh_sim::load::{run, LoadConfig};
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let report = run(LoadConfig::default().burst(50).bursts(2)).await.unwrap();
/// assert_eq!(report.token_endpoint_calls, 2);
/// assert_eq!(report.duplicate_refreshes, 0);
/// assert!(report.to_string().contains("token-endpoint calls"));
/// # }
/// ```
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// `built-in:<profile>` or the external token URL.
    pub target: String,
    /// Engines (simulated processes).
    pub engines: usize,
    /// Independent credentials: 1 with a shared store, one per engine otherwise. A correct
    /// engine makes at most one token-endpoint call per credential and burst.
    pub credentials: usize,
    /// Whether they shared one store.
    pub shared_store: bool,
    /// Bursts run (fewer than configured if the time budget ran out).
    pub bursts: usize,
    /// Callers per burst.
    pub burst: usize,
    /// Caller requests in all.
    pub callers: u64,
    /// Token-endpoint calls made by the engines.
    pub token_endpoint_calls: u64,
    /// Those calls by outcome as the client classified them (`ok`, `transient`,
    /// `invalid_grant`, `ambiguous`, …).
    pub calls_by_outcome: BTreeMap<String, u64>,
    /// Successful refreshes (new token sets).
    pub refreshes: u64,
    /// Refreshes avoided because another engine's tokens were adopted from the shared store.
    pub adopted: u64,
    /// Calls that started while another call for the same credential was in flight, plus
    /// calls that presented a refresh token already rotated away: 0 for a correct engine.
    pub duplicate_refreshes: u64,
    /// Of those, rotated refresh tokens presented again.
    pub replayed_refresh_tokens: u64,
    /// Caller waits for `token()`.
    pub wait: Waits,
    /// Caller errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Tokens the built-in resource server rejected (with `check_resource`).
    pub resource_rejections: u64,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Caller requests served per wall second.
    pub callers_per_s: f64,
    /// The built-in provider's own view (None for an external target).
    pub server: Option<ServerSummary>,
}

impl LoadReport {
    /// Whether the run kept the engine's promises: no caller error, no duplicate refresh, at
    /// most one token-endpoint call per credential and burst, and (built-in provider) no
    /// replay and no revoked family.
    ///
    /// See [`run`] for an example.
    pub fn healthy(&self) -> bool {
        self.errors.is_empty()
            && self.duplicate_refreshes == 0
            && self.token_endpoint_calls <= (self.bursts * self.credentials) as u64
            && self
                .server
                .as_ref()
                .is_none_or(|s| s.revoked_families.is_empty() && s.replays == 0)
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "load run against {}", self.target)?;
        writeln!(
            f,
            "  {} engine(s), {} store, {} burst(s) of {} callers = {} callers in {:.2} s ({:.0}/s)",
            self.engines,
            if self.shared_store {
                "shared"
            } else {
                "separate"
            },
            self.bursts,
            self.burst,
            self.callers,
            self.elapsed_s,
            self.callers_per_s
        )?;
        let outcomes: Vec<String> = self
            .calls_by_outcome
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            f,
            "  token-endpoint calls: {} ({})",
            self.token_endpoint_calls,
            if outcomes.is_empty() {
                "none".to_owned()
            } else {
                outcomes.join(", ")
            }
        )?;
        writeln!(
            f,
            "  refreshes: {}, adopted from the store: {}, duplicate refreshes: {} (replayed refresh tokens: {})",
            self.refreshes, self.adopted, self.duplicate_refreshes, self.replayed_refresh_tokens
        )?;
        writeln!(
            f,
            "  caller wait: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.wait.p50_ms, self.wait.p99_ms, self.wait.max_ms
        )?;
        if self.errors.is_empty() {
            writeln!(f, "  caller errors: none")?;
        } else {
            let errors: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "  caller errors: {}", errors.join(", "))?;
        }
        if let Some(s) = &self.server {
            let outcomes: Vec<String> = s
                .calls_by_outcome
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(
                f,
                "  provider ({}): {} token calls ({}), replays {}, revoked families {}, resource 200/401: {}/{}",
                s.profile,
                s.token_calls,
                if outcomes.is_empty() { "none".to_owned() } else { outcomes.join(", ") },
                s.replays,
                s.revoked_families.len(),
                s.resource_ok,
                s.resource_unauthorized
            )?;
        }
        write!(
            f,
            "  verdict: {}",
            if self.healthy() { "ok" } else { "FAILED" }
        )
    }
}

/// Runs a load. Needs a tokio runtime with the time and I/O drivers (a multi-thread one
/// spreads the callers over the cores).
///
/// Bounded: at most `bursts × burst` callers, each waiting at most the caller timeout, and no
/// burst starts after the time budget.
///
/// # Errors
/// An invalid configuration (see [`LoadConfig::validate`]), a built-in server that cannot
/// start, or an engine that cannot be built.
///
/// See [`LoadReport`] for an example.
pub async fn run(config: LoadConfig) -> Result<LoadReport, String> {
    config.validate()?;
    let started = Instant::now();
    let log = Arc::new(Mutex::new(CallLog::default()));
    let (server, target_name) = match &config.target {
        Target::BuiltIn(serve) => {
            let server = HttpProvider::start(serve.clone(), 0).await?;
            let name = format!("built-in:{} ({})", serve.profile_name(), server.uri());
            (Some(server), name)
        }
        Target::External(ext) => (None, ext.token_url.clone()),
    };

    // The engines.
    let refreshed = Arc::new(Mutex::new((0u64, 0u64)));
    let store = MemoryStore::new();
    let mut engines = Vec::with_capacity(config.engines);
    let mut shared_grant: Option<RefreshToken> = None;
    for i in 0..config.engines {
        let (refresher, refresh_token) = match (&config.target, &server) {
            (Target::BuiltIn(_), Some(server)) => {
                let rt = if config.shared_store {
                    shared_grant
                        .get_or_insert_with(|| grant_refresh_token(server))
                        .clone()
                } else {
                    grant_refresh_token(server)
                };
                let refresher = HttpRefresher::builder(server.token_url(), "keepfresh-load")
                    .build()
                    .map_err(|e| e.to_string())?;
                (refresher, rt)
            }
            (Target::External(ext), _) => {
                let mut b = HttpRefresher::builder(ext.token_url.clone(), ext.client_id.clone())
                    .client_auth(ext.client_auth);
                if let Some(s) = &ext.client_secret {
                    b = b.client_secret(s.clone());
                }
                for r in &ext.resources {
                    b = b.resource(r.clone());
                }
                (
                    b.build().map_err(|e| e.to_string())?,
                    ext.refresh_token.clone(),
                )
            }
            (Target::BuiltIn(_), None) => unreachable!("the built-in target always has a server"),
        };
        let policy = RefreshPolicy::builder()
            .wait_timeout(config.caller_timeout)
            .jitter_seed(i as u64)
            .build()
            .map_err(|e| e.to_string())?;
        let mut builder = Credential::builder(Counting {
            inner: refresher,
            log: log.clone(),
            group: if config.shared_store { 0 } else { i },
        })
        .policy(policy)
        .name(format!("load-{i}"));
        // A refresh-token-only start, carrying the scope to request when one is given.
        let epoch = time::OffsetDateTime::UNIX_EPOCH;
        let mut initial = TokenSet::new(AccessToken::new(""), Some(refresh_token), epoch, epoch);
        if let Target::External(ExternalTarget {
            scope: Some(scope), ..
        }) = &config.target
        {
            initial = initial.with_scope(scope.clone());
        }
        builder = builder.tokens(initial);
        if config.shared_store {
            builder = builder.store(store.clone());
        }
        let credential = builder.build().await.map_err(|e| e.to_string())?;
        let counts = refreshed.clone();
        credential.on_event(move |e| match e {
            Event::Refreshed { .. } => counts.lock().0 += 1,
            Event::Adopted { .. } => counts.lock().1 += 1,
            _ => {}
        });
        engines.push(credential);
    }
    let resource = server.as_ref().map(|s| s.resource_url());
    let http = reqwest::Client::builder()
        .timeout(config.caller_timeout)
        .pool_max_idle_per_host(32)
        .build()
        .map_err(|e| e.to_string())?;
    // Bounds the resource checks in flight (and so the sockets open).
    let resource_permits = Arc::new(tokio::sync::Semaphore::new(32));

    let mut waits: Vec<Duration> = Vec::with_capacity(config.burst * config.bursts);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut resource_rejections = 0u64;
    let mut bursts_run = 0usize;
    for burst in 0..config.bursts {
        if started.elapsed() >= config.max_duration {
            break;
        }
        if burst > 0 {
            if !config.interval.is_zero() {
                tokio::time::sleep(config.interval).await;
            }
            // Make every engine's current token stale, as a resource server's 401 would.
            let mut current = Vec::with_capacity(engines.len());
            for engine in &engines {
                match tokio::time::timeout(config.caller_timeout, engine.token()).await {
                    Ok(Ok(t)) => current.push(Some(t)),
                    _ => current.push(None),
                }
            }
            for (engine, token) in engines.iter().zip(&current) {
                if let Some(t) = token {
                    engine.invalidate(t);
                }
            }
        }
        bursts_run += 1;
        let gate = Arc::new(tokio::sync::Barrier::new(config.burst));
        let mut tasks = tokio::task::JoinSet::new();
        for caller in 0..config.burst {
            let engine = engines[caller % engines.len()].clone();
            let gate = gate.clone();
            let timeout = config.caller_timeout;
            let check = config
                .check_resource
                .then(|| resource.clone())
                .flatten()
                .map(|url| (url, http.clone(), resource_permits.clone()));
            tasks.spawn(async move {
                gate.wait().await;
                let t0 = Instant::now();
                let got = tokio::time::timeout(timeout, engine.token()).await;
                let waited = t0.elapsed();
                let token = match got {
                    Err(_) => return (waited, Err("caller timeout".to_owned()), false),
                    Ok(Err(e)) => return (waited, Err(error_kind(&e)), false),
                    Ok(Ok(t)) => t,
                };
                let mut rejected = false;
                if let Some((url, http, permits)) = check {
                    let _permit = permits.acquire_owned().await;
                    match http.get(url).bearer_auth(token.secret()).send().await {
                        Ok(r) => rejected = r.status().as_u16() == 401,
                        Err(_) => return (waited, Err("resource unreachable".to_owned()), false),
                    }
                }
                (waited, Ok(()), rejected)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((waited, result, rejected)) => {
                    waits.push(waited);
                    if let Err(kind) = result {
                        *errors.entry(kind).or_default() += 1;
                    }
                    resource_rejections += u64::from(rejected);
                }
                Err(_) => *errors.entry("caller panicked".to_owned()).or_default() += 1,
            }
        }
    }
    for engine in &engines {
        let _ = tokio::time::timeout(config.caller_timeout, engine.shutdown()).await;
    }

    let elapsed = started.elapsed().as_secs_f64();
    let callers = waits.len() as u64;
    let log = log.lock();
    let (refreshes, adopted) = *refreshed.lock();
    Ok(LoadReport {
        target: target_name,
        engines: config.engines,
        credentials: if config.shared_store {
            1
        } else {
            config.engines
        },
        shared_store: config.shared_store,
        bursts: bursts_run,
        burst: config.burst,
        callers,
        token_endpoint_calls: log.calls,
        calls_by_outcome: log.outcomes.clone(),
        refreshes,
        adopted,
        duplicate_refreshes: log.overlapping + log.replayed,
        replayed_refresh_tokens: log.replayed,
        wait: Waits::of(&mut waits),
        errors,
        resource_rejections,
        elapsed_s: elapsed,
        callers_per_s: if elapsed > 0.0 {
            callers as f64 / elapsed
        } else {
            0.0
        },
        server: server.as_ref().map(HttpProvider::summary),
    })
}

fn grant_refresh_token(server: &HttpProvider) -> RefreshToken {
    // Every profile preset issues refresh tokens; a grant without one cannot be load-tested.
    RefreshToken::new(server.login().refresh_token.unwrap_or_default())
}

/// A short, secret-free name for a caller's error.
fn error_kind(e: &keepfresh::Error) -> String {
    let text = e.to_string();
    let head: String = text
        .split(':')
        .next()
        .unwrap_or("error")
        .chars()
        .take(60)
        .collect();
    head
}

/// Options of `keepfresh-sim load`.
///
/// Without `--token-url` the load goes to the built-in mock provider (`--profile`), started
/// in-process on an ephemeral loopback port. With it, to that RFC 6749 token endpoint, with
/// `--client-id`, `KEEPFRESH_REFRESH_TOKEN` (or `--refresh-token-file`) and optionally
/// `KEEPFRESH_CLIENT_SECRET` (or `--client-secret-file`): secrets never come from the command
/// line, where other users of the machine can read them.
///
/// ```
/// use clap::Parser;
/// use keepfresh_sim::load::LoadArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     load: LoadArgs,
/// }
/// let cli = Cli::try_parse_from(["load", "--burst", "500", "--bursts", "3"]).unwrap();
/// assert!(cli.load.config().is_ok());
/// // A profile is for the built-in provider only.
/// assert!(Cli::try_parse_from(["load", "--profile", "okta", "--token-url", "https://a.example/t"]).is_err());
/// ```
#[derive(Clone, Debug, clap::Args)]
pub struct LoadArgs {
    /// Built-in provider profile (default strict): strict, okta, auth0, xero, github-user,
    /// slack, salesforce, google.
    #[arg(long, conflicts_with = "token_url")]
    pub profile: Option<String>,
    /// Seed of the built-in provider.
    #[arg(long, default_value_t = 0, conflicts_with = "token_url")]
    pub seed: u64,
    /// Built-in provider: token-endpoint latency, minimum (ms).
    #[arg(long, default_value_t = 0, conflicts_with = "token_url")]
    pub latency_min_ms: u64,
    /// Built-in provider: token-endpoint latency, maximum (ms).
    #[arg(long, default_value_t = 0, conflicts_with = "token_url")]
    pub latency_max_ms: u64,
    /// Built-in provider: share of token calls answered 503 with Retry-After (0 to 1).
    #[arg(long, default_value_t = 0.0, conflicts_with = "token_url")]
    pub unavailable_rate: f64,
    /// Built-in provider: check every handed-out token against its protected resource.
    #[arg(long, conflicts_with = "token_url")]
    pub check_resource: bool,
    /// An RFC 6749 token endpoint to load instead of the built-in provider.
    #[arg(long, requires_all = ["client_id"])]
    pub token_url: Option<String>,
    /// Client id at --token-url.
    #[arg(long, requires = "token_url")]
    pub client_id: Option<String>,
    /// A private file holding the client secret at --token-url (else the
    /// KEEPFRESH_CLIENT_SECRET variable, if set). Never on the command line.
    #[arg(long, requires = "token_url")]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// How the client secret is sent: basic or post.
    #[arg(long, default_value = "basic", value_parser = ["basic", "post"])]
    pub client_auth: String,
    /// A private file holding the refresh token to start from at --token-url (else the
    /// KEEPFRESH_REFRESH_TOKEN variable). Never on the command line.
    #[arg(long, requires = "token_url")]
    pub refresh_token_file: Option<std::path::PathBuf>,
    /// RFC 8707 resource to send on every refresh (repeatable).
    #[arg(long)]
    pub resource: Vec<String>,
    /// Scope to request on refresh.
    #[arg(long, requires = "token_url")]
    pub scope: Option<String>,
    /// Callers per burst.
    #[arg(long, default_value_t = 100)]
    pub burst: usize,
    /// Number of bursts (each one a new token generation).
    #[arg(long, default_value_t = 3)]
    pub bursts: usize,
    /// Pause between bursts (ms).
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Engines (simulated processes), each a Credential of its own.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Give each process its own store (and, built-in provider, its own grant).
    #[arg(long)]
    pub separate_stores: bool,
    /// Wall-clock budget of the whole run in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Longest wait of one caller in seconds.
    #[arg(long, default_value_t = 30)]
    pub caller_timeout: u64,
    /// A store shared by the processes, as a spec: file:PATH, redis://HOST:PORT/KEY, … (see
    /// keepfresh's store specs). Needed with --os-processes.
    #[arg(long)]
    pub store: Option<String>,
    /// Start this many real OS processes sharing --store instead of engines in this process.
    #[arg(long, requires = "store", conflicts_with_all = ["processes", "separate_stores", "check_resource"])]
    pub os_processes: Option<usize>,
    /// Built-in provider: time its storage takes to write a rotation (ms).
    #[arg(long, default_value_t = 0, conflicts_with = "token_url")]
    pub storage_latency_ms: u64,
    /// Built-in provider: a non-atomic reuse check (needs --storage-latency-ms).
    #[arg(long, conflicts_with = "token_url")]
    pub racy_reuse_check: bool,
    /// Many grants, built-in provider: mint this many grants, one credential each.
    #[arg(long, conflicts_with = "token_url")]
    pub mock_grants: Option<usize>,
    /// Many grants at --token-url: --grants-file, --mint-command, --mint-count.
    #[command(flatten)]
    pub grants: grants::GrantSourceArgs,
    /// Many grants: target requests per second (open loop: starts whatever the answers' speed).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Many grants: callers at once (closed loop).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Many grants: seconds over which the pace grows from zero to its target.
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Many grants: start no more than this many requests.
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Many grants: the timeline's bucket (ms).
    #[arg(long, default_value_t = 1000)]
    pub bucket_ms: u64,
    /// Many grants: write an SVG plot of the run over time here.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Many grants: live progress on standard error: auto (only on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub progress: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One secret from a private file (trimmed; the checks of [`keepfresh::read_private_file`]),
/// else from the environment variable; `None` when neither gives one.
pub(crate) fn secret_from(
    file: Option<&std::path::Path>,
    variable: &str,
    option: &str,
) -> Result<Option<String>, String> {
    match file {
        Some(path) => {
            let content = keepfresh::read_private_file(path, keepfresh::limits::MAX_TOKEN_BYTES)
                .map_err(|e| format!("{option}: {e}"))?;
            let text = std::str::from_utf8(content.as_bytes())
                .map_err(|_| format!("{option}: the file is not UTF-8"))?
                .trim();
            if text.is_empty() {
                return Err(format!("{option}: the file is empty"));
            }
            Ok(Some(text.to_owned()))
        }
        None => Ok(std::env::var(variable).ok().filter(|s| !s.is_empty())),
    }
}

impl LoadArgs {
    /// The built-in provider these options describe.
    fn serve_config(&self) -> ServeConfig {
        ServeConfig::new(self.profile.clone().unwrap_or_else(|| "strict".into()))
            .seed(self.seed)
            .latency(
                Duration::from_millis(self.latency_min_ms),
                Duration::from_millis(self.latency_max_ms),
            )
            .unavailable_rate(self.unavailable_rate)
            .storage_latency(Duration::from_millis(self.storage_latency_ms))
            .racy_reuse_check(self.racy_reuse_check)
    }

    /// Whether these options ask for a many-grants run ([`fleet`]): a grant source, a rate or
    /// a concurrency.
    ///
    /// ```
    /// use clap::Parser;
    /// use keepfresh_sim::load::LoadArgs;
    /// #[derive(Parser)]
    /// struct Cli {
    ///     #[command(flatten)]
    ///     load: LoadArgs,
    /// }
    /// let many = Cli::try_parse_from(["load", "--mock-grants", "100", "--rate", "50"]).unwrap();
    /// assert!(many.load.many_grants());
    /// assert!(many.load.fleet_config().is_ok());
    /// assert!(!Cli::try_parse_from(["load"]).unwrap().load.many_grants());
    /// ```
    pub fn many_grants(&self) -> bool {
        self.mock_grants.is_some()
            || self.grants.given()
            || self.rate.is_some()
            || self.concurrency.is_some()
    }

    /// The many-grants configuration these options describe.
    ///
    /// # Errors
    /// Options of the burst mode (several processes, separate stores, the resource check, a
    /// store), unreadable or unsafe grants, and the checks of [`fleet::FleetConfig::validate`].
    ///
    /// See [`many_grants`](Self::many_grants).
    pub fn fleet_config(&self) -> Result<fleet::FleetConfig, String> {
        if self.processes != 1 || self.separate_stores || self.check_resource {
            return Err(
                "--processes, --separate-stores and --check-resource are for burst runs; a \
                 many-grants run has one credential per grant"
                    .into(),
            );
        }
        if self.store.is_some() || self.os_processes.is_some() {
            return Err("--store and --os-processes are for burst runs".into());
        }
        let target = match &self.token_url {
            None => {
                fleet::FleetTarget::BuiltIn(self.serve_config(), self.mock_grants.unwrap_or(100))
            }
            Some(url) => {
                let tokens = self.grants.read(
                    "a many-grants run at --token-url needs --grants-file, --mint-command or \
                     KEEPFRESH_REFRESH_TOKENS",
                )?;
                let endpoint = crate::probe::Endpoint {
                    token_url: url.clone(),
                    client_id: self
                        .client_id
                        .clone()
                        .ok_or("--token-url needs --client-id")?,
                    client_secret: self.client_secret()?,
                    client_auth: if self.client_auth == "post" {
                        ClientAuth::Post
                    } else {
                        ClientAuth::Basic
                    },
                    resources: self.resource.clone(),
                    scope: self.scope.clone(),
                    resource_url: None,
                };
                // Fail early on a URL the refresher would refuse.
                HttpRefresher::builder(url.clone(), "load")
                    .build()
                    .map_err(|e| e.to_string())?;
                fleet::FleetTarget::External(endpoint, tokens)
            }
        };
        let pace = match (self.rate, self.concurrency) {
            (Some(r), _) => fleet::Pace::Rate(r),
            (None, Some(c)) => fleet::Pace::Concurrency(c),
            (None, None) => fleet::Pace::Concurrency(8),
        };
        let ramp = Duration::try_from_secs_f64(self.ramp)
            .map_err(|_| "--ramp must be a non-negative number of seconds".to_owned())?;
        let config = fleet::FleetConfig::default()
            .target(target)
            .pace(pace)
            .ramp(ramp)
            .duration(Duration::from_secs(self.duration))
            .max_requests(self.max_requests)
            .caller_timeout(Duration::from_secs(self.caller_timeout))
            .bucket(Duration::from_millis(self.bucket_ms));
        config.validate()?;
        Ok(config)
    }

    /// The client secret: `--client-secret-file`, else `KEEPFRESH_CLIENT_SECRET`.
    ///
    /// # Errors
    /// A secret file that fails the private-file checks, is not UTF-8 or is empty.
    pub fn client_secret(&self) -> Result<Option<ClientSecret>, String> {
        Ok(secret_from(
            self.client_secret_file.as_deref(),
            "KEEPFRESH_CLIENT_SECRET",
            "--client-secret-file",
        )?
        .map(ClientSecret::new))
    }

    /// The refresh token to start from: `--refresh-token-file`, else
    /// `KEEPFRESH_REFRESH_TOKEN`.
    ///
    /// # Errors
    /// As for [`client_secret`](Self::client_secret).
    pub fn refresh_token(&self) -> Result<Option<String>, String> {
        secret_from(
            self.refresh_token_file.as_deref(),
            "KEEPFRESH_REFRESH_TOKEN",
            "--refresh-token-file",
        )
    }

    /// The load configuration these options describe.
    ///
    /// # Errors
    /// Bad or contradictory options (see [`LoadConfig::validate`]), a missing refresh token.
    ///
    /// See the [type-level example](LoadArgs).
    pub fn config(&self) -> Result<LoadConfig, String> {
        let target = match &self.token_url {
            None => {
                if !self.resource.is_empty() {
                    return Err("--resource is for --token-url targets".into());
                }
                Target::BuiltIn(self.serve_config())
            }
            Some(url) => {
                let client_id = self
                    .client_id
                    .clone()
                    .ok_or("--token-url needs --client-id")?;
                let refresh_token = self
                    .refresh_token()?
                    .ok_or("--token-url needs --refresh-token-file or KEEPFRESH_REFRESH_TOKEN")?;
                let mut ext =
                    ExternalTarget::new(url.clone(), client_id, RefreshToken::new(refresh_token))
                        .client_auth(if self.client_auth == "post" {
                            ClientAuth::Post
                        } else {
                            ClientAuth::Basic
                        });
                if let Some(secret) = self.client_secret()? {
                    ext = ext.client_secret(secret);
                }
                for r in &self.resource {
                    ext = ext.resource(r.clone());
                }
                if let Some(s) = &self.scope {
                    ext = ext.scope(s.clone());
                }
                // Fail early on a URL the refresher would refuse.
                HttpRefresher::builder(url.clone(), "probe")
                    .build()
                    .map_err(|e| e.to_string())?;
                Target::External(ext)
            }
        };
        let config = LoadConfig::default()
            .target(target)
            .engines(self.processes)
            .shared_store(!self.separate_stores)
            .burst(self.burst)
            .bursts(self.bursts)
            .interval(Duration::from_millis(self.interval_ms))
            .max_duration(Duration::from_secs(self.duration))
            .caller_timeout(Duration::from_secs(self.caller_timeout))
            .check_resource(self.check_resource);
        config.validate()?;
        Ok(config)
    }
}

/// Runs `load` from its options: prints the report (text or `--json`).
///
/// Exit codes: 0 for a healthy run, 1 when the report's verdict failed (caller errors,
/// duplicate refreshes, a revoked family), 2 for bad options.
///
/// ```
/// use clap::Parser;
/// use keepfresh_sim::load::{run_load, LoadArgs};
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     load: LoadArgs,
/// }
/// let cli = Cli::try_parse_from(["load", "--burst", "20", "--bursts", "2", "--json"]).unwrap();
/// assert_eq!(run_load(cli.load), std::process::ExitCode::SUCCESS);
/// let bad = Cli::try_parse_from(["load", "--processes", "0"]).unwrap();
/// assert_eq!(run_load(bad.load), std::process::ExitCode::from(2));
/// ```
pub fn run_load(args: LoadArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    if args.many_grants() {
        return run_many(&args);
    }
    if let Some(n) = args.os_processes {
        return run_processes(&args, n);
    }
    if args.store.is_some() {
        eprintln!("keepfresh-sim load: --store is for --os-processes runs");
        return ExitCode::from(2);
    }
    if args.plot.is_some() {
        eprintln!(
            "keepfresh-sim load: --plot is for many-grants runs (--mock-grants, --grants-file, \
             --mint-command, --rate or --concurrency)"
        );
        return ExitCode::from(2);
    }
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keepfresh-sim load: {e}");
            return ExitCode::from(2);
        }
    };
    match on_runtime("load", run(config)) {
        Ok(report) => print_report(args.json, &report, report.healthy()),
        Err(code) => code,
    }
}

fn run_many(args: &LoadArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let config = match args.fleet_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keepfresh-sim load: {e}");
            return ExitCode::from(2);
        }
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = match (args.progress.as_str(), terminal) {
        ("never", _) | ("auto", false) => fleet::Progress::Off,
        (_, true) => fleet::Progress::InPlace,
        (_, false) => fleet::Progress::Lines,
    };
    let report = match on_runtime("load", fleet::run_fleet(config, progress)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(path) = &args.plot {
        let written = report
            .plot()
            .map_err(|e| e.to_string())
            .and_then(|svg| std::fs::write(path, svg).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("keepfresh-sim load: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    print_report(args.json, &report, report.healthy())
}

fn run_processes(args: &LoadArgs, n: usize) -> std::process::ExitCode {
    use std::process::ExitCode;
    let spec: keepfresh::store::spec::StoreSpec =
        match args.store.as_deref().unwrap_or_default().parse() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keepfresh-sim load: --store: {e}");
                return ExitCode::from(2);
            }
        };
    match on_runtime("load", processes::run(args, spec, n)) {
        Ok(report) => print_report(args.json, &report, report.healthy()),
        Err(code) => code,
    }
}

/// Runs one worker process of a multi-process load (the hidden `load-worker` command).
///
/// Exit code 0 when it ran its bursts, 2 when it could not start or lost its parent.
pub fn run_worker(args: processes::WorkerArgs) -> std::process::ExitCode {
    match on_runtime("load-worker", processes::worker(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Runs `work` on a two-worker tokio runtime; a runtime that cannot start or work that fails
/// is reported as `keepfresh-sim COMMAND: …` and exit code 2.
fn on_runtime<T>(
    command: &str,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, std::process::ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"));
    match runtime.and_then(|rt| rt.block_on(work)) {
        Ok(out) => Ok(out),
        Err(e) => {
            eprintln!("keepfresh-sim {command}: {e}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// Prints a report (text or `--json`); exit code 0 when healthy, 1 when not.
fn print_report<R: Serialize + fmt::Display>(
    json: bool,
    report: &R,
    healthy: bool,
) -> std::process::ExitCode {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_else(|_| "{}".into())
        );
    } else {
        println!("{report}");
    }
    if healthy {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

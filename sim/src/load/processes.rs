//! Load mode across real OS processes sharing one store (`load --store SPEC --os-processes N`):
//! the desktop case (one stdio MCP server started several times on one token file) and the
//! replica case (several servers on one Redis), over real HTTP.
//!
//! The parent starts the built-in provider (or uses `--token-url`), makes sure the store holds
//! tokens (one refresh from the given refresh token when it is empty, never when it already
//! holds some: a run against a real provider continues from the newest refresh token and leaves
//! the newest one behind), then starts N workers (this binary, `load-worker`). The workers hold
//! to the bursts in lockstep through their standard input and output: each takes its current
//! token, says `ready`, waits for `go`, makes that token stale (as a 401 would), fires its
//! callers and says `done`. Set `KEEPFRESH_LOAD_TRACE=1` to have each worker print its
//! credential's events (fingerprints only) on standard error. At the end each
//! reports its waits, errors, refreshes and final token fingerprint as one JSON line.

use std::collections::BTreeMap;
use std::fmt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keepfresh::oauth::HttpRefresher;
use keepfresh::store::spec::StoreSpec;
use keepfresh::store::TokenStore;
use keepfresh::{
    AccessToken, Credential, Event, RefreshError, RefreshPolicy, RefreshRequest, RefreshToken,
    Refresher, TokenResponse, TokenSet,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{LoadArgs, Waits};
use crate::http::{HttpProvider, ServerSummary};

/// The most worker processes one run starts.
pub const MAX_OS_PROCESSES: usize = 64;

/// What a multi-process load run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessesReport {
    /// `built-in:<profile>` or the token URL.
    pub target: String,
    /// The store spec (passwords hidden).
    pub store: String,
    /// Worker processes.
    pub processes: usize,
    /// Bursts run.
    pub bursts: usize,
    /// Callers per burst in each process.
    pub burst: usize,
    /// Caller requests in all.
    pub callers: u64,
    /// Refreshes the parent made to put the first tokens into an empty store (0 or 1).
    pub seeding_refreshes: u64,
    /// Token-endpoint calls the workers made.
    pub token_endpoint_calls: u64,
    /// Successful refreshes across the workers.
    pub refreshes: u64,
    /// Token sets workers adopted from the store instead of refreshing.
    pub adopted: u64,
    /// Caller waits for `token()`, all processes together.
    pub wait: Waits,
    /// Caller errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Whether every worker ended serving the token set the store holds.
    pub consistent: bool,
    /// Workers that exited abnormally.
    pub failed_workers: u64,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// The built-in provider's view (None for an external target).
    pub server: Option<ServerSummary>,
}

impl ProcessesReport {
    /// No caller error, no failed worker, every worker on the stored set, at most one
    /// token-endpoint call per burst, and (built-in provider) no replay and no revoked family.
    ///
    /// ```
    /// let mut r = keepfresh_sim::load::processes::ProcessesReport::default();
    /// r.consistent = true;
    /// assert!(r.healthy());
    /// r.token_endpoint_calls = 1; // more calls than bursts (0)
    /// assert!(!r.healthy());
    /// ```
    pub fn healthy(&self) -> bool {
        self.errors.is_empty()
            && self.failed_workers == 0
            && self.consistent
            && self.token_endpoint_calls <= self.bursts as u64
            && self
                .server
                .as_ref()
                .is_none_or(|s| s.revoked_families.is_empty() && s.replays == 0)
    }
}

impl fmt::Display for ProcessesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "load run across OS processes against {}", self.target)?;
        writeln!(f, "  store:                {}", self.store)?;
        writeln!(
            f,
            "  processes × bursts × callers: {} × {} × {} = {} callers",
            self.processes, self.bursts, self.burst, self.callers
        )?;
        writeln!(
            f,
            "  token-endpoint calls: {} (at most one per burst), {} seeding",
            self.token_endpoint_calls, self.seeding_refreshes
        )?;
        writeln!(
            f,
            "  refreshes / adopted:  {} / {}",
            self.refreshes, self.adopted
        )?;
        writeln!(
            f,
            "  caller wait:          p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.wait.p50_ms, self.wait.p99_ms, self.wait.max_ms
        )?;
        if !self.errors.is_empty() {
            writeln!(f, "  caller errors:        {:?}", self.errors)?;
        }
        if let Some(s) = &self.server {
            writeln!(
                f,
                "  provider:             {} calls, {} replays, {} revoked families",
                s.token_calls,
                s.replays,
                s.revoked_families.len()
            )?;
        }
        writeln!(
            f,
            "  every process on the stored tokens: {}",
            if self.consistent { "yes" } else { "NO" }
        )?;
        writeln!(f, "  the newest refresh token is in the store")?;
        write!(
            f,
            "  verdict: {}",
            if self.healthy() { "ok" } else { "FAILED" }
        )
    }
}

/// Options of the hidden `load-worker` command (one worker process).
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// The shared store.
    #[arg(long)]
    pub store: String,
    /// The token endpoint.
    #[arg(long)]
    pub token_url: String,
    /// The client id.
    #[arg(long)]
    pub client_id: String,
    /// basic or post (the secret comes from KEEPFRESH_CLIENT_SECRET).
    #[arg(long, default_value = "basic")]
    pub client_auth: String,
    /// RFC 8707 resources.
    #[arg(long)]
    pub resource: Vec<String>,
    /// Callers per burst.
    #[arg(long)]
    pub burst: usize,
    /// Bursts.
    #[arg(long)]
    pub bursts: usize,
    /// Longest wait of one caller in seconds.
    #[arg(long)]
    pub caller_timeout: u64,
    /// This worker's index (its jitter seed).
    #[arg(long)]
    pub index: u64,
}

/// What one worker reports on its last line.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerReport {
    waits_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    calls: u64,
    refreshes: u64,
    adopted: u64,
    final_fingerprint: Option<String>,
}

fn refresher(
    token_url: &str,
    client_id: &str,
    client_auth: &str,
    resources: &[String],
    secret: Option<keepfresh::ClientSecret>,
) -> Result<HttpRefresher, String> {
    let mut b = HttpRefresher::builder(token_url.to_owned(), client_id.to_owned()).client_auth(
        if client_auth == "post" {
            keepfresh::oauth::ClientAuth::Post
        } else {
            keepfresh::oauth::ClientAuth::Basic
        },
    );
    if let Some(secret) = secret {
        b = b.client_secret(secret);
    }
    for r in resources {
        b = b.resource(r.clone());
    }
    b.build().map_err(|e| e.to_string())
}

/// Counts token-endpoint calls.
struct Counted {
    inner: HttpRefresher,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Refresher for Counted {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.refresh(request).await
    }
}

/// Runs a multi-process load from the `load` options (`--store`, `--os-processes`).
///
/// # Errors
/// Bad options, a store that cannot be opened, a seeding refresh that fails, a worker that
/// cannot be started.
pub async fn run(
    args: &LoadArgs,
    spec: StoreSpec,
    processes: usize,
) -> Result<ProcessesReport, String> {
    if processes == 0 || processes > MAX_OS_PROCESSES {
        return Err(format!("--os-processes must be 1 to {MAX_OS_PROCESSES}"));
    }
    if spec == StoreSpec::Memory {
        return Err("memory: is not shared between processes; use file:PATH or redis://…".into());
    }
    if args.burst == 0 || args.bursts == 0 {
        return Err("--burst and --bursts must be at least 1".into());
    }
    let config = args.config()?;
    let started = Instant::now();
    let (server, target, token_url, client_id, start_rt) = match &args.token_url {
        None => {
            let serve = match &config.target {
                super::Target::BuiltIn(s) => s.clone(),
                super::Target::External(_) => unreachable!("no --token-url"),
            };
            let server = HttpProvider::start(serve.clone(), 0).await?;
            let grant = server.login();
            let target = format!("built-in:{} ({})", serve.profile_name(), server.uri());
            let url = server.token_url();
            let rt = grant.refresh_token.unwrap_or_default();
            (
                Some(server),
                target,
                url,
                "keepfresh-load".to_owned(),
                Some(rt),
            )
        }
        Some(url) => {
            let rt = args.refresh_token()?;
            let id = args
                .client_id
                .clone()
                .ok_or("--token-url needs --client-id")?;
            (None, url.clone(), url.clone(), id, rt)
        }
    };
    let store = spec.open().await.map_err(|e| e.to_string())?;
    let seeding_refreshes = seed(
        &store,
        &token_url,
        &client_id,
        args,
        start_rt,
        server.is_some(),
    )
    .await?;

    let client_secret = args.client_secret()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut workers = Vec::with_capacity(processes);
    for index in 0..processes {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("load-worker")
            .args(["--store", &spec.expose_spec()])
            .args(["--token-url", &token_url])
            .args(["--client-id", &client_id])
            .args(["--client-auth", &args.client_auth])
            .args(["--burst", &args.burst.to_string()])
            .args(["--bursts", &args.bursts.to_string()])
            .args(["--caller-timeout", &args.caller_timeout.to_string()])
            .args(["--index", &index.to_string()]);
        if let Some(secret) = &client_secret {
            // Workers read it from the environment, never from their command line.
            cmd.env("KEEPFRESH_CLIENT_SECRET", secret.expose_secret());
        }
        for r in &args.resource {
            cmd.args(["--resource", r]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let stdin = child.stdin.take().ok_or("no worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no worker stdout")?).lines();
        workers.push((child, stdin, stdout));
    }

    let mut failed = 0u64;
    let mut bursts_run = 0;
    'bursts: for _ in 0..args.bursts {
        for (_, _, out) in workers.iter_mut() {
            if !expect(out, "ready").await {
                failed += 1;
                break 'bursts;
            }
        }
        for (_, input, _) in workers.iter_mut() {
            if input.write_all(b"go\n").await.is_err() {
                failed += 1;
                break 'bursts;
            }
        }
        for (_, _, out) in workers.iter_mut() {
            if !expect(out, "done").await {
                failed += 1;
                break 'bursts;
            }
        }
        bursts_run += 1;
    }
    let mut reports = Vec::new();
    for (mut child, input, mut out) in workers {
        drop(input);
        let mut report = None;
        while let Ok(Some(line)) = out.next_line().await {
            if let Some(json) = line.strip_prefix("report ") {
                report = serde_json::from_str::<WorkerReport>(json).ok();
            }
        }
        let ok = child.wait().await.map(|s| s.success()).unwrap_or(false);
        match report {
            Some(r) if ok => reports.push(r),
            _ => failed += 1,
        }
    }

    let stored = store.load().await.map_err(|e| e.to_string())?;
    let stored_fp = stored
        .as_ref()
        .map(|s| s.tokens.access_token().fingerprint().to_string());
    let mut waits: Vec<Duration> = Vec::new();
    let mut errors = BTreeMap::new();
    let (mut calls, mut refreshes, mut adopted) = (0, 0, 0);
    let mut consistent = stored_fp.is_some() && failed == 0;
    for r in &reports {
        waits.extend(r.waits_us.iter().map(|us| Duration::from_micros(*us)));
        for (k, v) in &r.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        calls += r.calls;
        refreshes += r.refreshes;
        adopted += r.adopted;
        consistent &= r.final_fingerprint == stored_fp;
    }
    Ok(ProcessesReport {
        target,
        store: spec.to_string(),
        processes,
        bursts: bursts_run,
        burst: args.burst,
        callers: waits.len() as u64,
        seeding_refreshes,
        token_endpoint_calls: calls,
        refreshes,
        adopted,
        wait: Waits::of(&mut waits),
        errors,
        consistent,
        failed_workers: failed,
        elapsed_s: started.elapsed().as_secs_f64(),
        server: server.as_ref().map(HttpProvider::summary),
    })
}

async fn expect(
    out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    word: &str,
) -> bool {
    matches!(out.next_line().await, Ok(Some(line)) if line == word)
}

/// Puts first tokens into an empty store with one refresh; leaves a store with tokens alone.
async fn seed(
    store: &Arc<dyn TokenStore>,
    token_url: &str,
    client_id: &str,
    args: &LoadArgs,
    refresh_token: Option<String>,
    built_in: bool,
) -> Result<u64, String> {
    if store.load().await.map_err(|e| e.to_string())?.is_some() {
        if built_in {
            return Err(
                "the store already holds tokens, which the built-in provider (new on every run) \
                 never issued; give an empty store"
                    .into(),
            );
        }
        return Ok(0);
    }
    let rt = refresh_token.ok_or(
        "the store is empty: give the refresh token to start from (KEEPFRESH_REFRESH_TOKEN or --refresh-token-file)",
    )?;
    let refresher = refresher(
        token_url,
        client_id,
        &args.client_auth,
        &args.resource,
        args.client_secret()?,
    )?;
    let epoch = time::OffsetDateTime::UNIX_EPOCH;
    let credential = Credential::builder(refresher)
        .tokens(TokenSet::new(
            AccessToken::new(""),
            Some(RefreshToken::new(rt)),
            epoch,
            epoch,
        ))
        .store(Arc::clone(store))
        .name("load-seed")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    credential
        .token()
        .await
        .map_err(|e| format!("the first refresh failed: {e}"))?;
    let _ = credential.shutdown().await;
    Ok(1)
}

/// The worker process: see the module docs for its protocol.
pub async fn worker(args: WorkerArgs) -> Result<(), String> {
    let spec: StoreSpec = args.store.parse().map_err(|e| format!("{e}"))?;
    let store = spec.open().await.map_err(|e| e.to_string())?;
    let calls = Arc::new(AtomicU64::new(0));
    let inner = refresher(
        &args.token_url,
        &args.client_id,
        &args.client_auth,
        &args.resource,
        // Handed over by the parent in the environment, never on the command line.
        std::env::var("KEEPFRESH_CLIENT_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .map(keepfresh::ClientSecret::new),
    )?;
    let timeout = Duration::from_secs(args.caller_timeout);
    let credential = Credential::builder(Counted {
        inner,
        calls: calls.clone(),
    })
    .policy(
        RefreshPolicy::builder()
            .wait_timeout(timeout)
            .jitter_seed(args.index)
            .build()
            .map_err(|e| e.to_string())?,
    )
    .store(store)
    .name(format!("worker-{}", args.index))
    .build()
    .await
    .map_err(|e| e.to_string())?;
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let c = counts.clone();
    let index = args.index;
    let trace = std::env::var_os("KEEPFRESH_LOAD_TRACE").is_some();
    credential.on_event(move |e| {
        if trace {
            eprintln!("worker {index}: {e:?}");
        }
    });
    credential.on_event(move |e| match e {
        Event::Refreshed { .. } => {
            c.0.fetch_add(1, Ordering::Relaxed);
        }
        Event::Adopted { .. } => {
            c.1.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    });
    let mut report = WorkerReport::default();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    for _ in 0..args.bursts {
        // The token every process holds now (no process refreshes between two bursts)...
        let held = tokio::time::timeout(timeout, credential.token()).await;
        say("ready");
        match stdin.next_line().await {
            Ok(Some(line)) if line == "go" => {}
            _ => return Err("the parent went away".into()),
        }
        // ...made stale only after every process took it, as a resource server's 401 would.
        // Invalidating before the barrier let a fast process refresh before a slow one had
        // even read the store, so the slow one then invalidated the new set: a second,
        // legitimate refresh in the same burst.
        if let Ok(Ok(t)) = held {
            credential.invalidate(&t);
        }
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..args.burst {
            let c = credential.clone();
            callers.spawn(async move {
                let t0 = Instant::now();
                let got = tokio::time::timeout(timeout, c.token()).await;
                let waited = t0.elapsed();
                let err = match got {
                    Err(_) => Some("caller timeout".to_owned()),
                    Ok(Err(e)) => Some(super::error_kind(&e)),
                    Ok(Ok(_)) => None,
                };
                (waited, err)
            });
        }
        while let Some(joined) = callers.join_next().await {
            let (waited, err) = joined.unwrap_or((Duration::ZERO, Some("caller panicked".into())));
            report.waits_us.push(waited.as_micros() as u64);
            if let Some(e) = err {
                *report.errors.entry(e).or_default() += 1;
            }
        }
        say("done");
    }
    report.final_fingerprint = tokio::time::timeout(timeout, credential.token())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|t| t.fingerprint().to_string());
    let _ = credential.shutdown().await;
    report.calls = calls.load(Ordering::Relaxed);
    report.refreshes = counts.0.load(Ordering::Relaxed);
    report.adopted = counts.1.load(Ordering::Relaxed);
    say(&format!(
        "report {}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    ));
    Ok(())
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

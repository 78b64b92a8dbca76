//! Shared fixtures for the tokio integration tests: a scripted provider, a store that can be
//! made to fail, a manual clock with tokio spawning, and event helpers; [`counting`], a
//! counting refresher and a credential around it.
#![allow(dead_code)]

pub mod counting;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use keepfresh::event::Event;
use keepfresh::oauth::{parse_token_response, HttpAnswer};
use keepfresh::runtime::{ManualClock, Runtime, Spawn};
use keepfresh::store::{
    LeaseOutcome, MemoryStore, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore, Version,
};
use keepfresh::{
    AccessToken, Credential, RefreshError, RefreshPolicy, RefreshRequest, RefreshToken, Refresher,
    TokenResponse, TokenSet,
};

/// Spawns the engine's tasks on the ambient tokio runtime.
pub struct TokioSpawn;

impl Spawn for TokioSpawn {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        drop(tokio::spawn(task));
    }
}

/// A manual clock for time, tokio for tasks.
pub fn runtime(clock: &ManualClock) -> Runtime {
    Runtime::new(
        Arc::new(clock.clone()),
        Arc::new(clock.clone()),
        Arc::new(TokioSpawn),
    )
}

/// What the provider does on one call.
#[derive(Clone)]
pub enum Answer {
    /// Rotate: `access-n` / `refresh-n`.
    Rotate,
    /// A new access token, no refresh token in the answer.
    NoRefreshToken,
    /// Fail with this error (nothing changes server-side).
    Fail(RefreshError),
    /// Rotate server-side, but the answer is lost on the way back.
    Lost,
    /// Rotate, but answer with an empty access token.
    EmptyAccessToken,
    /// Panic inside the refresher.
    Panic,
    /// Answer with this JSON body, parsed by `keepfresh::oauth`.
    Json(String),
    /// Run this before answering `invalid_grant` (another process wins meanwhile).
    InvalidGrantAfter(Arc<dyn Fn() + Send + Sync>),
}

struct ProviderState {
    /// The refresh token the provider accepts (strict rotation); `None`: accept any.
    live: Option<String>,
    revoked: bool,
    calls: Vec<Option<String>>,
    script: VecDeque<Answer>,
    default: Answer,
    issued: u64,
    expires_in: Option<i64>,
}

/// A scripted authorization server with strict refresh-token rotation: a replayed refresh token
/// is refused with `invalid_grant` and revokes the whole family.
#[derive(Clone)]
pub struct Provider {
    state: Arc<Mutex<ProviderState>>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Provider {
    /// A strict rotating provider whose live refresh token is `live`.
    pub fn rotating(live: &str) -> Self {
        Provider {
            state: Arc::new(Mutex::new(ProviderState {
                live: Some(live.to_owned()),
                revoked: false,
                calls: Vec::new(),
                script: VecDeque::new(),
                default: Answer::Rotate,
                issued: 0,
                expires_in: Some(3600),
            })),
            gate: None,
        }
    }

    /// Calls wait for [`Provider::release`] before answering.
    pub fn gated(mut self) -> Self {
        self.gate = Some(Arc::new(tokio::sync::Semaphore::new(0)));
        self
    }

    /// Lets `n` waiting (or future) calls answer.
    pub fn release(&self, n: usize) {
        self.gate.as_ref().expect("gated provider").add_permits(n);
    }

    /// Answers given in order before falling back to the default.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    pub fn set_default(&self, answer: Answer) {
        self.state.lock().unwrap().default = answer;
    }

    pub fn set_expires_in(&self, expires_in: Option<i64>) {
        self.state.lock().unwrap().expires_in = expires_in;
    }

    /// Accept any refresh token from now on.
    pub fn lenient(&self) {
        self.state.lock().unwrap().live = None;
    }

    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls.len()
    }

    /// The refresh tokens presented, in order.
    pub fn presented(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn revoked(&self) -> bool {
        self.state.lock().unwrap().revoked
    }

    pub fn live(&self) -> Option<String> {
        self.state.lock().unwrap().live.clone()
    }
}

#[async_trait]
impl Refresher for Provider {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let presented = request
            .refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned());
        let answer = {
            let mut s = self.state.lock().unwrap();
            s.calls.push(presented.clone());
            if s.revoked {
                return Err(RefreshError::invalid_grant("grant revoked"));
            }
            if let Some(live) = &s.live
                && presented.as_ref() != Some(live)
            {
                s.revoked = true;
                return Err(RefreshError::invalid_grant("refresh token replayed"));
            }
            s.script.pop_front().unwrap_or_else(|| s.default.clone())
        };
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        let mut s = self.state.lock().unwrap();
        let expires_in = s.expires_in;
        let with_life = |r: TokenResponse| match expires_in {
            Some(e) => r.with_expires_in(e),
            None => r,
        };
        match answer {
            Answer::Rotate => {
                s.issued += 1;
                let n = s.issued;
                if s.live.is_some() {
                    s.live = Some(format!("refresh-{n}"));
                }
                Ok(with_life(
                    TokenResponse::new(AccessToken::new(format!("access-{n}")))
                        .with_refresh_token(RefreshToken::new(format!("refresh-{n}"))),
                ))
            }
            Answer::NoRefreshToken => {
                s.issued += 1;
                Ok(with_life(TokenResponse::new(AccessToken::new(format!(
                    "access-{}",
                    s.issued
                )))))
            }
            Answer::Fail(e) => Err(e),
            Answer::Lost => {
                s.issued += 1;
                if s.live.is_some() {
                    s.live = Some(format!("refresh-{}", s.issued));
                }
                Err(RefreshError::ambiguous("connection reset"))
            }
            Answer::EmptyAccessToken => {
                s.issued += 1;
                let n = s.issued;
                if s.live.is_some() {
                    s.live = Some(format!("refresh-{n}"));
                }
                Ok(with_life(
                    TokenResponse::new(AccessToken::new(""))
                        .with_refresh_token(RefreshToken::new(format!("refresh-{n}"))),
                ))
            }
            Answer::Panic => {
                drop(s);
                panic!("refresher bug");
            }
            Answer::Json(body) => {
                let r = parse_token_response(HttpAnswer {
                    status: 200,
                    content_type: Some("application/json"),
                    retry_after: None,
                    body: body.as_bytes(),
                })?;
                s.issued += 1;
                if let (Some(_), Some(rt)) = (&s.live, r.refresh_token()) {
                    s.live = Some(rt.expose_secret().to_owned());
                }
                Ok(r)
            }
            Answer::InvalidGrantAfter(f) => {
                drop(s);
                f();
                Err(RefreshError::invalid_grant("refresh token revoked"))
            }
        }
    }
}

/// A memory store whose saves, loads and lease operations can be made to fail, whose saves can
/// be made to panic, and which can be made to lie: acknowledge a save it loses, or answer reads
/// with an older set. Implements every lease method.
#[derive(Clone)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    pub fail_saves: Arc<AtomicBool>,
    pub fail_leases: Arc<AtomicBool>,
    pub fail_loads: Arc<AtomicBool>,
    pub panic_saves: Arc<AtomicBool>,
    /// Saves answer `Saved` at the version they would have had, and write nothing (a Redis
    /// failover that lost an acknowledged write, its version counter with it).
    pub lose_saves: Arc<AtomicBool>,
    /// Reads answer this older content instead of the store's (a lagging replica).
    pub stale: Arc<Mutex<Option<Stored>>>,
    /// Before every save, an unrelated writer rewrites the stored set at a new version.
    pub rewrite_before_save: Arc<AtomicBool>,
}

impl FlakyStore {
    pub fn new(inner: MemoryStore) -> Self {
        FlakyStore {
            inner,
            fail_saves: Arc::new(AtomicBool::new(false)),
            fail_leases: Arc::new(AtomicBool::new(false)),
            fail_loads: Arc::new(AtomicBool::new(false)),
            panic_saves: Arc::new(AtomicBool::new(false)),
            lose_saves: Arc::new(AtomicBool::new(false)),
            stale: Arc::new(Mutex::new(None)),
            rewrite_before_save: Arc::new(AtomicBool::new(false)),
        }
    }
    pub fn set_rewriting(&self, rewriting: bool) {
        self.rewrite_before_save.store(rewriting, Ordering::SeqCst);
    }
    pub fn set_losing_saves(&self, losing: bool) {
        self.lose_saves.store(losing, Ordering::SeqCst);
    }
    /// Reads answer `stale` from now on (`None`: the truth again).
    pub fn set_stale(&self, stale: Option<Stored>) {
        *self.stale.lock().unwrap() = stale;
    }
    pub fn set_failing(&self, failing: bool) {
        self.fail_saves.store(failing, Ordering::SeqCst);
    }
    pub fn set_leases_failing(&self, failing: bool) {
        self.fail_leases.store(failing, Ordering::SeqCst);
    }
    pub fn set_loads_failing(&self, failing: bool) {
        self.fail_loads.store(failing, Ordering::SeqCst);
    }
    pub fn set_saves_panicking(&self, panicking: bool) {
        self.panic_saves.store(panicking, Ordering::SeqCst);
    }
    fn lease_fault(&self) -> Result<(), StoreError> {
        if self.fail_leases.load(Ordering::SeqCst) {
            return Err(StoreError::new(
                StoreErrorKind::Io,
                "lease table unreachable",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl TokenStore for FlakyStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::new(StoreErrorKind::Io, "read failed"));
        }
        if let Some(stale) = self.stale.lock().unwrap().clone() {
            return Ok(Some(stale));
        }
        self.inner.load().await
    }
    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        if self.panic_saves.load(Ordering::SeqCst) {
            panic!("store bug");
        }
        if self.fail_saves.load(Ordering::SeqCst) {
            return Err(StoreError::new(StoreErrorKind::Io, "disk full"));
        }
        if self.rewrite_before_save.load(Ordering::SeqCst) {
            self.inner
                .overwrite(self.inner.snapshot().map(|s| s.tokens));
        }
        if self.lose_saves.load(Ordering::SeqCst) {
            let current = self.inner.snapshot().map(|s| s.version);
            if current != expected {
                return Ok(SaveOutcome::Conflict(self.inner.snapshot()));
            }
            return Ok(SaveOutcome::Saved(Version(current.map_or(0, |v| v.0) + 1)));
        }
        self.inner.save(expected, tokens).await
    }
    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        self.inner.clear(expected).await
    }
    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        self.lease_fault()?;
        self.inner.try_lease(ttl).await
    }
    async fn release(&self, lease: keepfresh::store::Lease) -> Result<(), StoreError> {
        self.lease_fault()?;
        self.inner.release(lease).await
    }
    async fn renew_lease(
        &self,
        lease: &keepfresh::store::Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.lease_fault()?;
        self.inner.renew_lease(lease, ttl).await
    }
}

/// A seeded default policy.
pub fn policy() -> RefreshPolicy {
    RefreshPolicy::builder().jitter_seed(11).build().unwrap()
}

/// A token set issued `age` seconds ago (by the clock's wall time) living `lifetime` seconds.
pub fn tokens(
    clock: &ManualClock,
    access: &str,
    refresh: Option<&str>,
    age: i64,
    lifetime: i64,
) -> TokenSet {
    let issued = clock.wall_now() - time::Duration::seconds(age);
    TokenSet::new(
        AccessToken::new(access),
        refresh.map(RefreshToken::new),
        issued,
        issued + time::Duration::seconds(lifetime),
    )
}

/// An expired token set with refresh token `refresh-0`.
pub fn expired(clock: &ManualClock) -> TokenSet {
    tokens(clock, "access-0", Some("refresh-0"), 7200, 3600)
}

/// A fresh one-hour token set with refresh token `refresh-0`.
pub fn fresh(clock: &ManualClock) -> TokenSet {
    tokens(clock, "access-0", Some("refresh-0"), 0, 3600)
}

pub async fn build(
    clock: &ManualClock,
    provider: &Provider,
    store: Option<Arc<dyn TokenStore>>,
    policy: RefreshPolicy,
    initial: Option<TokenSet>,
) -> Credential {
    let mut b = Credential::builder(provider.clone())
        .runtime(runtime(clock))
        .policy(policy);
    if let Some(store) = store {
        b = b.store(store);
    }
    if let Some(set) = initial {
        b = b.tokens(set);
    }
    b.build().await.expect("build")
}

/// Every event of a credential, collected.
#[derive(Clone, Default)]
pub struct Log(pub Arc<Mutex<Vec<Event>>>);

impl Log {
    pub fn attach(c: &Credential) -> Self {
        let log = Log::default();
        let sink = log.0.clone();
        c.on_event(move |e| sink.lock().unwrap().push(e.clone()));
        log
    }
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    pub fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| pred(e)).count()
    }
}

/// Waits for the first event matching `pred` on a subscription. A hang guard of 30 s of real
/// time turns a missing event into a failure instead of a hung test run.
pub async fn wait_for(
    events: &mut futures::channel::mpsc::UnboundedReceiver<Event>,
    what: &str,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    let find = async {
        while let Some(e) = events.next().await {
            if pred(&e) {
                return e;
            }
        }
        panic!("event stream ended before {what}");
    };
    tokio::time::timeout(Duration::from_secs(30), find)
        .await
        .unwrap_or_else(|_| panic!("no {what} event"))
}

pub fn stored_rt(store: &MemoryStore) -> Option<String> {
    store.snapshot().and_then(|s| {
        s.tokens
            .refresh_token()
            .map(|r| r.expose_secret().to_owned())
    })
}

pub fn stored_at(store: &MemoryStore) -> Option<String> {
    store
        .snapshot()
        .map(|s| s.tokens.access_token().expose_secret().to_owned())
}

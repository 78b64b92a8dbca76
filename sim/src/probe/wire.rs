//! The probe's requests: one refresh-grant POST or one resource GET each, numbered and logged
//! with fingerprints only, so every finding can cite the requests that prove it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keepfresh::oauth::HttpRefresher;
use keepfresh::{
    AccessToken, RefreshError, RefreshRequest, RefreshToken, Refresher, TokenResponse,
};
use parking_lot::Mutex;
use serde::Serialize;

/// One request the probe sent and what came back. Secrets appear as fingerprints only.
#[derive(Clone, Debug, Serialize)]
pub struct Exchange {
    /// Request number (`#id` in findings).
    pub id: usize,
    /// The probe step that sent it.
    pub step: &'static str,
    /// Milliseconds from the start of the probe to the send.
    pub sent_ms: f64,
    /// Milliseconds until the answer (or the failure).
    pub latency_ms: f64,
    /// `refresh` (token endpoint) or `resource` (GET with the access token).
    pub kind: &'static str,
    /// Fingerprint of the refresh token (refresh) or access token (resource) presented.
    pub presented: String,
    /// `ok` or the error class (refresh); the HTTP status or `unreachable` (resource).
    pub outcome: String,
    /// New access token's fingerprint (refresh, success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The answer's refresh token's fingerprint (refresh, success, when sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// `expires_in` as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// `Retry-After`, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<f64>,
    /// The classified error's message (built by keepfresh from `error` and
    /// `error_description`, never from a token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{:<3} +{:>8.3}s {:<8} {} {}",
            self.id,
            self.sent_ms / 1000.0,
            self.kind,
            if self.kind == "refresh" { "rt" } else { "at" },
            self.presented
        )?;
        write!(f, " -> {}", self.outcome)?;
        if let Some(at) = &self.access_token {
            write!(f, " at {at}")?;
        }
        if let Some(rt) = &self.refresh_token {
            write!(f, " rt {rt}")?;
        }
        if let Some(e) = self.expires_in {
            write!(f, " expires_in {e}")?;
        }
        if let Some(r) = self.retry_after_s {
            write!(f, " retry-after {r}s")?;
        }
        if let Some(e) = &self.error {
            write!(f, " ({e})")?;
        }
        write!(f, " [{:.0} ms]", self.latency_ms)
    }
}

/// The token endpoint and the resource, and the log of everything sent to them.
pub(crate) struct Wire {
    refresher: Arc<HttpRefresher>,
    http: reqwest::Client,
    resource_url: Option<String>,
    scope: Option<String>,
    started: Instant,
    log: Mutex<Vec<Exchange>>,
    step: Mutex<&'static str>,
    /// Every secret the probe holds or was handed, to scrub from the endpoint's error texts (a
    /// hostile or careless endpoint may echo a token back).
    known: Mutex<Vec<RefreshToken>>,
}

impl Wire {
    pub(crate) fn new(
        refresher: HttpRefresher,
        resource_url: Option<String>,
        scope: Option<String>,
        timeout: Duration,
    ) -> Result<Wire, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Wire {
            refresher: Arc::new(refresher),
            http,
            resource_url,
            scope,
            started: Instant::now(),
            log: Mutex::new(Vec::new()),
            step: Mutex::new("setup"),
            known: Mutex::new(Vec::new()),
        })
    }

    /// Adds a secret to scrub from error texts.
    pub(crate) fn know(&self, secret: &str) {
        if !secret.is_empty() {
            self.known.lock().push(RefreshToken::new(secret));
        }
    }

    /// `text` with every known secret replaced by its fingerprint.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for k in self.known.lock().iter() {
            if out.contains(k.expose_secret()) {
                out = out.replace(k.expose_secret(), &format!("<secret {}>", k.fingerprint()));
            }
        }
        out
    }

    pub(crate) fn has_resource(&self) -> bool {
        self.resource_url.is_some()
    }

    pub(crate) fn set_step(&self, step: &'static str) {
        *self.step.lock() = step;
    }

    /// Seconds since the probe started.
    pub(crate) fn now_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub(crate) fn exchanges(&self) -> Vec<Exchange> {
        self.log.lock().clone()
    }

    fn record(&self, mut e: Exchange) -> usize {
        let mut log = self.log.lock();
        e.id = log.len() + 1;
        e.step = *self.step.lock();
        log.push(e);
        log.len()
    }

    /// One refresh-grant request presenting `rt`.
    pub(crate) async fn refresh(
        &self,
        rt: &RefreshToken,
    ) -> (usize, Result<TokenResponse, RefreshError>) {
        let mut request = RefreshRequest::new(Some(rt.clone()));
        request.scope = self.scope.clone();
        let sent = self.started.elapsed();
        let t0 = Instant::now();
        let result = self.refresher.refresh(request).await;
        let latency = t0.elapsed();
        self.know(rt.expose_secret());
        if let Ok(r) = &result {
            self.know(r.access_token().expose_secret());
            if let Some(n) = r.refresh_token() {
                self.know(n.expose_secret());
            }
        }
        let mut e = Exchange {
            id: 0,
            step: "",
            sent_ms: sent.as_secs_f64() * 1000.0,
            latency_ms: latency.as_secs_f64() * 1000.0,
            kind: "refresh",
            presented: rt.fingerprint().to_string(),
            outcome: String::new(),
            access_token: None,
            refresh_token: None,
            expires_in: None,
            retry_after_s: None,
            error: None,
        };
        match &result {
            Ok(r) => {
                e.outcome = "ok".into();
                e.access_token = Some(r.access_token().fingerprint().to_string());
                e.refresh_token = r.refresh_token().map(|t| t.fingerprint().to_string());
                e.expires_in = r.expires_in();
            }
            Err(err) => {
                e.outcome = err.class().to_string();
                e.retry_after_s = err.retry_after().map(|d| d.as_secs_f64());
                e.error = Some(self.scrub(err.message()));
            }
        }
        (self.record(e), result)
    }

    /// One GET of the resource with `at`; `None` when it could not be reached.
    pub(crate) async fn resource(&self, at: &AccessToken) -> (usize, Option<u16>) {
        let Some(url) = &self.resource_url else {
            return (0, None);
        };
        let sent = self.started.elapsed();
        let t0 = Instant::now();
        let status = self
            .http
            .get(url)
            .bearer_auth(at.expose_secret())
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        let e = Exchange {
            id: 0,
            step: "",
            sent_ms: sent.as_secs_f64() * 1000.0,
            latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
            kind: "resource",
            presented: at.fingerprint().to_string(),
            outcome: status.map_or("unreachable".into(), |s| s.to_string()),
            access_token: None,
            refresh_token: None,
            expires_in: None,
            retry_after_s: None,
            error: None,
        };
        (self.record(e), status)
    }
}

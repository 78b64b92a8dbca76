//! Load mode, serving half: the mock authorization server model ([`crate::provider`]) served
//! over real HTTP on loopback, built on wiremock.
//!
//! Endpoints (all on `127.0.0.1`):
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /token` | RFC 6749 §6 refresh grant (form-encoded, `grant_type=refresh_token`), answered by the model of the chosen profile: rotation, reuse detection, grace windows, vendor error styles |
//! | `POST /login` | a new grant (token family), answered like a token response: how a client gets its first refresh token |
//! | `GET /resource` | a protected resource: 200 for a live access token, 401 `invalid_token` for an unknown, expired or revoked one |
//! | `GET /resource/admin` | a resource that needs the `admin` scope, which no grant of the mock holds: 403 `insufficient_scope` (`scope="admin"`) for a live access token, 401 as above otherwise (a step-up to test) |
//! | `GET /authorize` | authorization code + PKCE (S256) with auto-consent: redirects to `redirect_uri` with `code`, `state` and `iss` (RFC 9207); [`AuthorizeMode`](crate::http::AuthorizeMode) makes it deny, send a wrong `iss` or not support PKCE |
//! | `POST /token` with `grant_type=authorization_code` | redeems a code once, checking `redirect_uri`, `client_id` and the PKCE verifier: a new grant |
//! | `POST /revoke` | RFC 7009: revokes the family of a refresh token (200 whatever the token) |
//! | `GET /.well-known/oauth-authorization-server` | RFC 8414 metadata: issuer, endpoints, PKCE S256, `iss` parameter support |
//!
//! On top of the model, the server adds seeded transport behaviour: a latency drawn per call
//! (through wiremock's `set_delay`, after the model has committed, like a slow real server)
//! and a share of calls answered `503` with `Retry-After` before reaching the model.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keepfresh::runtime::MonoTime;
use parking_lot::Mutex;
use serde::Serialize;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::provider::{Answer, CallOutcome, Profile, Provider, ResourceAnswer};
use crate::rng::SimRng;

/// How the HTTP mock provider behaves.
///
/// ```
/// use keepfresh_sim::http::ServeConfig;
/// let config = ServeConfig::new("strict").seed(7);
/// assert_eq!(config.profile_name(), "strict");
/// assert!(ServeConfig::new("no-such-provider").profile().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct ServeConfig {
    profile: String,
    seed: u64,
    access_lifetime: Duration,
    latency: (Duration, Duration),
    unavailable_rate: f64,
    authorize: AuthorizeMode,
    storage_latency: Duration,
    racy_reuse_check: bool,
    grace: Option<Duration>,
    stated_lifetime: Option<Duration>,
    reuse_revokes_family: Option<bool>,
}

/// How the authorization endpoint answers, to test a client's login flow.
///
/// ```
/// use keepfresh_sim::http::{AuthorizeMode, ServeConfig};
/// let c = ServeConfig::new("strict").authorize(AuthorizeMode::Deny);
/// assert!(c.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizeMode {
    /// The user consents at once.
    #[default]
    Consent,
    /// The user denies: `error=access_denied`.
    Deny,
    /// The redirect carries an `iss` that is not this server (a mix-up attack, RFC 9207).
    WrongIssuer,
    /// The server neither advertises nor checks PKCE (a client must refuse it).
    NoPkce,
}

impl ServeConfig {
    /// The provider profile `profile` (see [`Profile::NAMES`]) with seed 0, 1 h access tokens
    /// (where the profile lets it be configured), no latency and no injected failures.
    ///
    /// See the [type-level example](ServeConfig).
    pub fn new(profile: impl Into<String>) -> Self {
        ServeConfig {
            profile: profile.into(),
            seed: 0,
            access_lifetime: Duration::from_secs(3600),
            latency: (Duration::ZERO, Duration::ZERO),
            unavailable_rate: 0.0,
            authorize: AuthorizeMode::Consent,
            storage_latency: Duration::ZERO,
            racy_reuse_check: false,
            grace: None,
            stated_lifetime: None,
            reuse_revokes_family: None,
        }
    }

    /// Overrides whether presenting a spent refresh token revokes the whole grant (`false`: the
    /// reuse is refused, the grant lives on).
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// let c = ServeConfig::new("strict").reuse_revokes_family(false);
    /// assert!(!c.profile().unwrap().reuse_revokes_family);
    /// ```
    pub fn reuse_revokes_family(mut self, revokes: bool) -> Self {
        self.reuse_revokes_family = Some(revokes);
        self
    }

    /// Makes refresh answers state this `expires_in` whatever the access tokens' true lifetime
    /// (a provider whose tokens die before, or after, the time it states).
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// let c = ServeConfig::new("strict").stated_lifetime(std::time::Duration::from_secs(7200));
    /// assert!(c.validate().is_ok());
    /// ```
    pub fn stated_lifetime(mut self, stated: Duration) -> Self {
        self.stated_lifetime = Some(stated);
        self
    }

    /// How long the server's token storage takes to write a rotation; every refresh answer is
    /// delayed by it (default zero).
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// let c = ServeConfig::new("strict").storage_latency(std::time::Duration::from_millis(20));
    /// assert!(c.validate().is_ok());
    /// ```
    pub fn storage_latency(mut self, latency: Duration) -> Self {
        self.storage_latency = latency;
        self
    }

    /// Makes the reuse check non-atomic (default: atomic): the server reads a refresh token's
    /// state, decides, and writes the rotation only after the storage latency, so two
    /// refreshes of one token inside that window both succeed and fork the grant into two
    /// live chains — what a certified server with slow storage does. Needs a storage latency.
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// # use std::time::Duration;
    /// assert!(ServeConfig::new("strict").racy_reuse_check(true).validate().is_err());
    /// let c = ServeConfig::new("strict").racy_reuse_check(true).storage_latency(Duration::from_millis(20));
    /// assert!(c.validate().is_ok());
    /// ```
    pub fn racy_reuse_check(mut self, racy: bool) -> Self {
        self.racy_reuse_check = racy;
        self
    }

    /// Overrides the profile's grace window for rotated refresh tokens.
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// let c = ServeConfig::new("okta").grace(std::time::Duration::from_millis(800));
    /// assert_eq!(c.profile().unwrap().grace.as_millis(), 800);
    /// ```
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    /// How the authorization endpoint answers (default: consent).
    ///
    /// See [`AuthorizeMode`].
    pub fn authorize(mut self, mode: AuthorizeMode) -> Self {
        self.authorize = mode;
        self
    }

    /// The seed of the model (token values) and of the injected latency and failures.
    ///
    /// See the [type-level example](ServeConfig).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The access-token lifetime, where the profile lets the customer configure it.
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// let c = ServeConfig::new("strict").access_lifetime(std::time::Duration::from_secs(60));
    /// assert_eq!(c.profile().unwrap().at_lifetime.as_secs(), 60);
    /// ```
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_lifetime = lifetime;
        self
    }

    /// Token-endpoint latency, drawn uniformly in `[min, max]` per call.
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// # use std::time::Duration;
    /// let c = ServeConfig::new("strict").latency(Duration::from_millis(5), Duration::from_millis(20));
    /// assert!(c.validate().is_ok());
    /// let bad = ServeConfig::new("strict").latency(Duration::from_millis(20), Duration::from_millis(5));
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.latency = (min, max);
        self
    }

    /// The share of token-endpoint calls answered `503` with `Retry-After: 1` without
    /// reaching the model.
    ///
    /// ```
    /// # use keepfresh_sim::http::ServeConfig;
    /// assert!(ServeConfig::new("strict").unavailable_rate(0.1).validate().is_ok());
    /// assert!(ServeConfig::new("strict").unavailable_rate(1.5).validate().is_err());
    /// ```
    pub fn unavailable_rate(mut self, rate: f64) -> Self {
        self.unavailable_rate = rate;
        self
    }

    /// The profile name as given.
    ///
    /// See the [type-level example](ServeConfig).
    pub fn profile_name(&self) -> &str {
        &self.profile
    }

    /// The resolved profile.
    ///
    /// # Errors
    /// The list of known profiles when the name is unknown.
    ///
    /// See the [type-level example](ServeConfig).
    pub fn profile(&self) -> Result<Profile, String> {
        let mut profile = Profile::by_name(&self.profile, self.access_lifetime)?;
        if let Some(grace) = self.grace {
            profile.grace = grace;
        }
        if let Some(revokes) = self.reuse_revokes_family {
            profile.reuse_revokes_family = revokes;
        }
        Ok(profile)
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// An unknown profile, an inverted latency range, a rate outside `[0, 1]`, a zero lifetime.
    ///
    /// See [`latency`](Self::latency).
    pub fn validate(&self) -> Result<(), String> {
        self.profile()?;
        if self.latency.0 > self.latency.1 {
            return Err(format!(
                "latency range is inverted: min {:?} > max {:?}",
                self.latency.0, self.latency.1
            ));
        }
        if !(0.0..=1.0).contains(&self.unavailable_rate) || self.unavailable_rate.is_nan() {
            return Err(format!(
                "unavailable rate must be between 0 and 1, got {}",
                self.unavailable_rate
            ));
        }
        if self.access_lifetime.is_zero() {
            return Err("access-token lifetime must be positive".into());
        }
        if self.racy_reuse_check && self.storage_latency.is_zero() {
            return Err(
                "a racy reuse check needs a storage latency (its race window); set one".into(),
            );
        }
        Ok(())
    }
}

/// A new grant from [`HttpProvider::login`]: what a client holds after authorizing.
///
/// `Debug` never shows the tokens.
///
/// ```
/// # use keepfresh_sim::http::{HttpProvider, ServeConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = HttpProvider::start(ServeConfig::new("strict"), 0).await.unwrap();
/// let grant = server.login();
/// assert!(grant.refresh_token.is_some());
/// assert!(!format!("{grant:?}").contains(&grant.access_token));
/// # }
/// ```
#[derive(Clone)]
pub struct Grant {
    /// The token family (one per login).
    pub family: usize,
    /// The first access token.
    pub access_token: String,
    /// The first refresh token, if the profile issues them.
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// What the HTTP mock provider saw, for reports.
///
/// ```
/// # use keepfresh_sim::http::{HttpProvider, ServeConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = HttpProvider::start(ServeConfig::new("strict"), 0).await.unwrap();
/// let summary = server.summary();
/// assert_eq!(summary.token_calls, 0);
/// assert!(summary.revoked_families.is_empty());
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServerSummary {
    /// The profile served.
    pub profile: String,
    /// Token-endpoint calls in all.
    pub token_calls: u64,
    /// Token-endpoint calls by outcome (`ok`, `ok_grace`, `invalid_grant`, `unavailable`, …).
    pub calls_by_outcome: BTreeMap<String, u64>,
    /// Requests that were not a refresh grant (bad form, other grant types).
    pub rejected_requests: u64,
    /// Rotated refresh tokens presented again outside any grace window.
    pub replays: u64,
    /// Families revoked, with the reason.
    pub revoked_families: Vec<(usize, String)>,
    /// Logins (families) so far.
    pub logins: u64,
    /// Resource requests answered 200 / 401.
    pub resource_ok: u64,
    /// Resource requests answered 401.
    pub resource_unauthorized: u64,
}

struct Shared {
    model: Mutex<Model>,
    started: Instant,
    profile: String,
    authorize: AuthorizeMode,
    issuer: Mutex<String>,
    codes: Mutex<std::collections::HashMap<String, PendingCode>>,
}

/// An authorization code waiting to be redeemed.
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    challenge: Option<String>,
    scope: Option<String>,
}

struct Model {
    provider: Provider,
    rng: SimRng,
    latency: (Duration, Duration),
    storage_latency: Duration,
    unavailable_rate: f64,
    logins: u64,
    token_calls: u64,
    rejected: u64,
    resource_ok: u64,
    resource_unauthorized: u64,
}

impl Shared {
    fn now(&self) -> MonoTime {
        MonoTime::from_duration(self.started.elapsed())
    }
}

/// The mock provider over HTTP on a loopback port. Dropping it stops the server.
///
/// ```
/// use keepfresh::oauth::HttpRefresher;
/// use keepfresh::{Credential, RefreshToken};
/// use keepfresh_sim::http::{HttpProvider, ServeConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = HttpProvider::start(ServeConfig::new("strict").seed(1), 0).await.unwrap();
/// let grant = server.login();
/// let refresher = HttpRefresher::builder(server.token_url(), "demo-client").build().unwrap();
/// let credential = Credential::builder(refresher)
///     .refresh_token(RefreshToken::new(grant.refresh_token.unwrap()))
///     .build()
///     .await
///     .unwrap();
/// let token = credential.token().await.unwrap();
/// assert_eq!(server.check_resource(token.secret()), 200);
/// let summary = server.summary();
/// assert_eq!(summary.calls_by_outcome["ok"], 1);
/// # }
/// ```
pub struct HttpProvider {
    server: MockServer,
    shared: Arc<Shared>,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("uri", &self.server.uri())
            .field("profile", &self.shared.profile)
            .finish()
    }
}

impl HttpProvider {
    /// Starts the server on `127.0.0.1:port` (`0`: an ephemeral port).
    ///
    /// # Errors
    /// An invalid configuration (see [`ServeConfig::validate`]) or a port that cannot be bound.
    ///
    /// See the [type-level example](HttpProvider).
    pub async fn start(config: ServeConfig, port: u16) -> Result<HttpProvider, String> {
        config.validate()?;
        let profile = config.profile()?;
        let mut provider = Provider::new(profile, config.seed, 0);
        if config.racy_reuse_check {
            provider.set_racy_reuse_window(config.storage_latency);
        }
        if let Some(stated) = config.stated_lifetime {
            provider.set_stated_lifetime(stated);
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let shared = Arc::new(Shared {
            model: Mutex::new(Model {
                provider,
                rng: SimRng::new(config.seed ^ 0x6874_7470),
                latency: config.latency,
                storage_latency: config.storage_latency,
                unavailable_rate: config.unavailable_rate,
                logins: 0,
                token_calls: 0,
                rejected: 0,
                resource_ok: 0,
                resource_unauthorized: 0,
            }),
            started: Instant::now(),
            profile: config.profile.clone(),
            authorize: config.authorize,
            issuer: Mutex::new(String::new()),
            codes: Mutex::new(std::collections::HashMap::new()),
        });
        let server = MockServer::builder()
            .listener(listener)
            // A load run sends many thousands of requests: keep no copies.
            .disable_request_recording()
            .start()
            .await;
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(TokenEndpoint(shared.clone()))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/login"))
            .respond_with(LoginEndpoint(shared.clone()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/resource"))
            .respond_with(ResourceEndpoint {
                shared: shared.clone(),
                needs_admin: false,
            })
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/resource/admin"))
            .respond_with(ResourceEndpoint {
                shared: shared.clone(),
                needs_admin: true,
            })
            .mount(&server)
            .await;
        let issuer = server.uri();
        *shared.issuer.lock() = issuer.clone();
        Mock::given(method("GET"))
            .and(path("/authorize"))
            .respond_with(AuthorizeEndpoint(shared.clone()))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/revoke"))
            .respond_with(RevokeEndpoint(shared.clone()))
            .mount(&server)
            .await;
        let mut metadata = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "revocation_endpoint": format!("{issuer}/revoke"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported":
                ["none", "client_secret_basic", "client_secret_post"],
            "scopes_supported": ["read", "write", "admin"],
            "authorization_response_iss_parameter_supported": true,
        });
        if config.authorize != AuthorizeMode::NoPkce {
            metadata["code_challenge_methods_supported"] = serde_json::json!(["S256"]);
        }
        Mock::given(method("GET"))
            .and(path("/.well-known/oauth-authorization-server"))
            .respond_with(ResponseTemplate::new(200).set_body_json(metadata))
            .mount(&server)
            .await;
        Ok(HttpProvider { server, shared })
    }

    /// The base URI, e.g. `http://127.0.0.1:41234`.
    ///
    /// See [`token_url`](Self::token_url).
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The token endpoint's URL.
    ///
    /// ```
    /// # use keepfresh_sim::http::{HttpProvider, ServeConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = HttpProvider::start(ServeConfig::new("okta"), 0).await.unwrap();
    /// assert!(server.token_url().starts_with("http://127.0.0.1:"));
    /// assert!(server.token_url().ends_with("/token"));
    /// # }
    /// ```
    pub fn token_url(&self) -> String {
        format!("{}/token", self.server.uri())
    }

    /// The protected resource's URL.
    ///
    /// ```
    /// # use keepfresh_sim::http::{HttpProvider, ServeConfig};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = HttpProvider::start(ServeConfig::new("strict"), 0).await.unwrap();
    /// assert!(server.resource_url().ends_with("/resource"));
    /// # }
    /// ```
    pub fn resource_url(&self) -> String {
        format!("{}/resource", self.server.uri())
    }

    /// A new grant (token family), as after a user authorized the client.
    ///
    /// See [`Grant`].
    pub fn login(&self) -> Grant {
        let now = self.shared.now();
        let mut m = self.shared.model.lock();
        m.logins += 1;
        let (family, access_token, refresh_token, _) = m.provider.login(now);
        Grant {
            family,
            access_token,
            refresh_token,
        }
    }

    /// The resource server's status for a request carrying `access_token`, without HTTP.
    ///
    /// See the [type-level example](HttpProvider).
    pub fn check_resource(&self, access_token: &str) -> u16 {
        self.shared.resource(access_token).0
    }

    /// What the server saw so far.
    ///
    /// See [`ServerSummary`].
    pub fn summary(&self) -> ServerSummary {
        let m = self.shared.model.lock();
        let mut calls_by_outcome: BTreeMap<String, u64> = BTreeMap::new();
        for (outcome, n) in &m.provider.outcomes {
            *calls_by_outcome
                .entry(outcome.name().to_owned())
                .or_default() += n;
        }
        let revoked_families = (0..m.logins as usize)
            .filter_map(|f| m.provider.family_revoked(f).map(|why| (f, why.to_owned())))
            .collect();
        ServerSummary {
            profile: self.shared.profile.clone(),
            token_calls: m.token_calls,
            calls_by_outcome,
            rejected_requests: m.rejected,
            replays: m.provider.replays.len() as u64,
            revoked_families,
            logins: m.logins,
            resource_ok: m.resource_ok,
            resource_unauthorized: m.resource_unauthorized,
        }
    }
}

impl Shared {
    fn resource(&self, access_token: &str) -> (u16, ResourceAnswer) {
        let now = self.now();
        let mut m = self.model.lock();
        let answer = m.provider.check_resource(access_token, now);
        let status = match answer {
            ResourceAnswer::Ok => {
                m.resource_ok += 1;
                200
            }
            ResourceAnswer::Unauthorized => {
                m.resource_unauthorized += 1;
                401
            }
            ResourceAnswer::Forbidden => 403,
        };
        (status, answer)
    }
}

fn oauth_error(status: u16, code: &str, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("cache-control", "no-store")
        .set_body_json(serde_json::json!({"error": code, "error_description": description}))
}

fn answer_template(answer: Answer) -> ResponseTemplate {
    let mut t = ResponseTemplate::new(answer.status)
        .insert_header("cache-control", "no-store")
        .set_body_raw(answer.body, answer.content_type);
    if let Some(ra) = answer.retry_after {
        t = t.insert_header("retry-after", ra.as_str());
    }
    t
}

struct TokenEndpoint(Arc<Shared>);

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut grant_type = None;
        let mut refresh_token = None;
        for (k, v) in form_urlencoded::parse(&request.body) {
            match k.as_ref() {
                "grant_type" => grant_type = Some(v.into_owned()),
                "refresh_token" => refresh_token = Some(v.into_owned()),
                _ => {}
            }
        }
        if grant_type.as_deref() == Some("authorization_code") {
            return self.0.redeem(request);
        }
        let now = self.0.now();
        let mut m = self.0.model.lock();
        if grant_type.as_deref() != Some("refresh_token") {
            m.rejected += 1;
            return oauth_error(
                400,
                "unsupported_grant_type",
                "only grant_type=refresh_token is served here",
            );
        }
        m.token_calls += 1;
        let (lo, hi) = m.latency;
        let mut delay = if hi > lo {
            let span = (hi - lo).as_nanos().min(u128::from(u64::MAX)) as u64;
            lo + Duration::from_nanos(m.rng.range(0, span))
        } else {
            lo
        };
        let rate = m.unavailable_rate;
        let template = if rate > 0.0 && m.rng.chance(rate) {
            m.provider.count(CallOutcome::Unavailable);
            oauth_error(503, "temporarily_unavailable", "try again later")
                .insert_header("retry-after", "1")
        } else {
            let answer = m.provider.refresh(now, refresh_token.as_deref());
            // The rotation is written before the answer leaves.
            delay += m.storage_latency;
            answer_template(answer)
        };
        template.set_delay(delay)
    }
}

impl Shared {
    /// `grant_type=authorization_code`: one redemption per code, checked like a real server.
    fn redeem(&self, request: &Request) -> ResponseTemplate {
        let form: BTreeMap<String, String> = form_urlencoded::parse(&request.body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let Some(pending) = form.get("code").and_then(|c| self.codes.lock().remove(c)) else {
            return oauth_error(400, "invalid_grant", "unknown or already redeemed code");
        };
        if form.get("redirect_uri") != Some(&pending.redirect_uri) {
            return oauth_error(
                400,
                "invalid_grant",
                "redirect_uri differs from the authorization request",
            );
        }
        if form
            .get("client_id")
            .is_some_and(|c| c != &pending.client_id)
        {
            return oauth_error(400, "invalid_grant", "code issued to another client");
        }
        if let Some(challenge) = &pending.challenge {
            let Some(verifier) = form.get("code_verifier") else {
                return oauth_error(400, "invalid_grant", "code_verifier missing");
            };
            if pkce_s256(verifier) != *challenge {
                return oauth_error(400, "invalid_grant", "code_verifier does not match");
            }
        }
        let now = self.now();
        let mut m = self.model.lock();
        m.logins += 1;
        let lifetime = m.provider.profile().at_lifetime.as_secs();
        let (_, at, rt, _) = m.provider.login(now);
        let mut body = serde_json::json!({
            "access_token": at,
            "token_type": "Bearer",
            "expires_in": lifetime,
        });
        if let Some(rt) = rt {
            body["refresh_token"] = rt.into();
        }
        if let Some(scope) = pending.scope {
            body["scope"] = scope.into();
        }
        ResponseTemplate::new(200)
            .insert_header("cache-control", "no-store")
            .set_body_json(body)
    }
}

/// `BASE64URL(SHA256(verifier))`, RFC 7636 §4.2.
fn pkce_s256(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

struct AuthorizeEndpoint(Arc<Shared>);

impl Respond for AuthorizeEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let q: BTreeMap<String, String> = request
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let (Some(client_id), Some(redirect_uri)) = (q.get("client_id"), q.get("redirect_uri"))
        else {
            // Without a valid redirect URI the error is shown to the user, never redirected.
            return ResponseTemplate::new(400)
                .set_body_string("client_id and redirect_uri are required");
        };
        let Ok(mut target) = url::Url::parse(redirect_uri) else {
            return ResponseTemplate::new(400).set_body_string("redirect_uri is not a URL");
        };
        if !matches!(target.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) {
            return ResponseTemplate::new(400)
                .set_body_string("only loopback redirect URIs are registered");
        }
        let issuer = self.0.issuer.lock().clone();
        let mode = self.0.authorize;
        {
            let mut pairs = target.query_pairs_mut();
            let challenge = q.get("code_challenge");
            if mode == AuthorizeMode::Deny {
                pairs.append_pair("error", "access_denied");
            } else if q.get("response_type").map(String::as_str) != Some("code") {
                pairs.append_pair("error", "unsupported_response_type");
            } else if mode != AuthorizeMode::NoPkce
                && (challenge.is_none()
                    || q.get("code_challenge_method").map(String::as_str) != Some("S256"))
            {
                pairs.append_pair("error", "invalid_request");
                pairs.append_pair("error_description", "PKCE with S256 is required");
            } else {
                let code = format!("code-{:016x}", self.0.model.lock().rng.next_u64());
                self.0.codes.lock().insert(
                    code.clone(),
                    PendingCode {
                        client_id: client_id.clone(),
                        redirect_uri: redirect_uri.clone(),
                        challenge: (mode != AuthorizeMode::NoPkce)
                            .then(|| challenge.cloned())
                            .flatten(),
                        scope: q.get("scope").cloned(),
                    },
                );
                pairs.append_pair("code", &code);
            }
            if let Some(state) = q.get("state") {
                pairs.append_pair("state", state);
            }
            let iss = if mode == AuthorizeMode::WrongIssuer {
                "https://evil.example".to_owned()
            } else {
                issuer
            };
            pairs.append_pair("iss", &iss);
        }
        ResponseTemplate::new(302).insert_header("location", target.as_str())
    }
}

struct RevokeEndpoint(Arc<Shared>);

impl Respond for RevokeEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let token = form_urlencoded::parse(&request.body)
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned());
        let mut m = self.0.model.lock();
        if let Some(family) = token.and_then(|t| m.provider.family_of(&t)) {
            m.provider
                .revoke_family(family, "revoked by the client (RFC 7009)");
        }
        // RFC 7009 §2.2: 200 also for an unknown token.
        ResponseTemplate::new(200)
    }
}

struct LoginEndpoint(Arc<Shared>);

impl Respond for LoginEndpoint {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let now = self.0.now();
        let mut m = self.0.model.lock();
        m.logins += 1;
        let lifetime = m.provider.profile().at_lifetime.as_secs();
        let (_, at, rt, _) = m.provider.login(now);
        let mut body = serde_json::json!({
            "access_token": at,
            "token_type": "Bearer",
            "expires_in": lifetime,
        });
        if let Some(rt) = rt {
            body["refresh_token"] = rt.into();
        }
        ResponseTemplate::new(200)
            .insert_header("cache-control", "no-store")
            .set_body_json(body)
    }
}

struct ResourceEndpoint {
    shared: Arc<Shared>,
    /// `/resource/admin`: a live token still lacks the scope, since no grant carries `admin`.
    needs_admin: bool,
}

impl Respond for ResourceEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let bearer = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = bearer else {
            return ResponseTemplate::new(401).insert_header("www-authenticate", "Bearer");
        };
        match self.shared.resource(token) {
            (200, _) if self.needs_admin => ResponseTemplate::new(403).insert_header(
                "www-authenticate",
                "Bearer error=\"insufficient_scope\", scope=\"admin\"",
            ),
            (200, _) => ResponseTemplate::new(200).set_body_json(serde_json::json!({"ok": true})),
            (403, _) => ResponseTemplate::new(403)
                .insert_header("www-authenticate", "Bearer error=\"insufficient_scope\""),
            _ => ResponseTemplate::new(401).insert_header(
                "www-authenticate",
                "Bearer error=\"invalid_token\", error_description=\"expired or revoked\"",
            ),
        }
    }
}

mod cli;
pub use cli::{run_serve, ServeArgs};

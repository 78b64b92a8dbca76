//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, so that a service sees its
//! credentials' refreshes, waits and failures in the monitoring it already has (Prometheus,
//! StatsD, OpenTelemetry… — whatever recorder the host installs).
//!
//! [`install`] adds a listener to one credential; a [`CredentialPool`](crate::pool::CredentialPool)
//! installs one on each of its credentials, labelled from its key
//! ([`CredentialPoolBuilder::metrics_subject`](crate::pool::CredentialPoolBuilder::metrics_subject)).
//! Labels never carry token material: the key's issuer, client id, resource and scopes, and
//! its subject hashed, as given, or not at all ([`SubjectLabel`]).
//!
//! | name | kind | labels beyond the credential's | what |
//! |---|---|---|---|
//! | `keepfresh_refreshes_total` | counter | `outcome` | refreshes that ended: `success`, `adopted` (another process's newer tokens were taken from the store), a failure class (`transient`, `invalid_grant`, `invalid_client`, `configuration`, `ambiguous`), or `aborted` (the refresh task died) |
//! | `keepfresh_refresh_duration_seconds` | histogram | `outcome` | from the refresh's start to its end, lease and store included |
//! | `keepfresh_time_to_expiry_seconds` | histogram | | when a refresh starts, how long the token it replaces had left (0: expired) |
//! | `keepfresh_caller_waits_total` | counter | `outcome` (`served`, `failed`) | callers that found no usable token and waited for a refresh |
//! | `keepfresh_caller_wait_seconds` | histogram | | how long they waited |
//! | `keepfresh_caller_wait_timeouts_total` | counter | | waits that ran out ([`RefreshPolicy::wait_timeout`](crate::RefreshPolicy)) |
//! | `keepfresh_served_stale_total` | counter | | tokens handed out past their refresh point (while a refresh ran, failed or re-authorization was pending); counted on the hot path with one atomic add, reported at the credential's next event |
//! | `keepfresh_credentials` | gauge | `phase` | credentials in each phase (`empty`, `fresh`, `refresh_due`, `refreshing`, `expired`, `backing_off`, `reauth_required`): +1 on entering, −1 on leaving or when the credential is dropped, so it sums across credentials that share labels |
//! | `keepfresh_store_errors_total` | counter | `op` (`save`, `lease`), `kind` | failed saves (retried) and lost leases |
//! | `keepfresh_store_conflicts_total` | counter | | writes redone because another writer changed the store |
//! | `keepfresh_reauth_required_total` | counter | `reason` | credentials that need a new authorization |
//! | `keepfresh_invalidations_total` | counter | | tokens a resource server rejected ([`Credential::invalidate`]) |
//!
//! Cardinality: every distinct label set is a series in the backend. A pool of many users
//! labelled by subject makes one series per user and metric; label pools of more than a few
//! thousand users with [`SubjectLabel::Omitted`], which sums all users of one grant.
//!
//! ```
//! use keepfresh::metrics::{self, Labels};
//! use keepfresh::{refresher_fn, AccessToken, Credential, RefreshError, TokenSet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), keepfresh::Error> {
//! let now = time::OffsetDateTime::now_utc();
//! let set = TokenSet::new(AccessToken::new("at"), None, now, now + time::Duration::hours(1));
//! let credential = Credential::builder(refresher_fn(|_| async { Err(RefreshError::transient("x")) }))
//!     .tokens(set)
//!     .build()
//!     .await?;
//! // With no recorder installed this records nothing; the host installs one (see the
//! // `metrics_prometheus` example).
//! metrics::install(&credential, Labels::new().label("credential", "github"));
//! # Ok(())
//! # }
//! ```

use std::sync::Once;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use ::metrics::{Label, Unit};
use sha2::{Digest, Sha256};

use crate::credential::{Credential, WeakCredential};
use crate::event::Event;
use crate::machine::{FlightId, Phase, ReauthReason};
use crate::pool::CredentialKey;
use crate::runtime::MonoTime;
use crate::store::StoreErrorKind;
use crate::sync::Mutex;

/// `keepfresh_refreshes_total`: refreshes that ended, by `outcome`.
pub const REFRESHES: &str = "keepfresh_refreshes_total";
/// `keepfresh_refresh_duration_seconds`: refresh latency, by `outcome`.
pub const REFRESH_DURATION: &str = "keepfresh_refresh_duration_seconds";
/// `keepfresh_time_to_expiry_seconds`: validity left on the token a starting refresh replaces.
pub const TIME_TO_EXPIRY: &str = "keepfresh_time_to_expiry_seconds";
/// `keepfresh_caller_waits_total`: callers that waited for a refresh, by `outcome`.
pub const CALLER_WAITS: &str = "keepfresh_caller_waits_total";
/// `keepfresh_caller_wait_seconds`: how long callers waited for a refresh.
pub const CALLER_WAIT: &str = "keepfresh_caller_wait_seconds";
/// `keepfresh_caller_wait_timeouts_total`: waits that ran out.
pub const CALLER_WAIT_TIMEOUTS: &str = "keepfresh_caller_wait_timeouts_total";
/// `keepfresh_served_stale_total`: tokens handed out past their refresh point.
pub const SERVED_STALE: &str = "keepfresh_served_stale_total";
/// `keepfresh_credentials`: credentials by `phase`.
pub const CREDENTIALS: &str = "keepfresh_credentials";
/// `keepfresh_store_errors_total`: failed saves and lost leases, by `op` and `kind`.
pub const STORE_ERRORS: &str = "keepfresh_store_errors_total";
/// `keepfresh_store_conflicts_total`: writes redone after another writer's change.
pub const STORE_CONFLICTS: &str = "keepfresh_store_conflicts_total";
/// `keepfresh_reauth_required_total`: credentials that need a new authorization, by `reason`.
pub const REAUTH_REQUIRED: &str = "keepfresh_reauth_required_total";
/// `keepfresh_invalidations_total`: tokens a resource server rejected.
pub const INVALIDATIONS: &str = "keepfresh_invalidations_total";

/// How a pooled credential's subject (the end user) appears in its labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubjectLabel {
    /// `subject` is the first 16 hex digits of the subject's SHA-256: stable across restarts
    /// and processes, not the identifier itself — but not anonymous either when subjects can
    /// be guessed (e-mail addresses): hash a guess and compare. The default.
    #[default]
    Hashed,
    /// `subject` is the subject as given.
    AsGiven,
    /// No `subject` label: the series of all users of one grant add up.
    Omitted,
}

/// The labels of one credential's series.
///
/// ```
/// use keepfresh::metrics::{Labels, SubjectLabel};
/// use keepfresh::pool::CredentialKey;
/// let key = CredentialKey::new("https://auth.example", "cid").subject("alice@example.com");
/// let labels = Labels::from_key(&key, SubjectLabel::Hashed);
/// let pairs: Vec<(&str, &str)> = labels.iter().collect();
/// assert_eq!(pairs[0], ("issuer", "https://auth.example"));
/// assert_eq!(pairs[1], ("client_id", "cid"));
/// assert_eq!(pairs[2].0, "subject");
/// assert_ne!(pairs[2].1, "alice@example.com");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// No labels.
    ///
    /// See the [module example](self).
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Adds a label. Never put a token or another secret in a label.
    ///
    /// See the [module example](self).
    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.0.push(Label::new(key, value.into()));
        self
    }

    /// The labels of a pooled credential: `issuer`, `client_id`, `resource` (if bound to
    /// one), `scopes` (if any, space-separated and sorted) and `subject` as `subject` says.
    ///
    /// See the [type-level example](Labels).
    pub fn from_key(key: &CredentialKey, subject: SubjectLabel) -> Self {
        let mut labels = Labels::new()
            .label("issuer", key.issuer())
            .label("client_id", key.client_id());
        if let Some(r) = key.resource_indicator() {
            labels = labels.label("resource", r);
        }
        if !key.scopes_str().is_empty() {
            labels = labels.label("scopes", key.scopes_str());
        }
        match (key.subject_id(), subject) {
            (Some(s), SubjectLabel::Hashed) => labels.label("subject", hash_subject(s)),
            (Some(s), SubjectLabel::AsGiven) => labels.label("subject", s),
            _ => labels,
        }
    }

    /// The labels as `(key, value)` pairs.
    ///
    /// See the [type-level example](Labels).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|l| (l.key(), l.value()))
    }

    fn with(&self, key: &'static str, value: &'static str) -> Vec<Label> {
        let mut all = self.0.clone();
        all.push(Label::new(key, value));
        all
    }
}

fn hash_subject(subject: &str) -> String {
    let digest = Sha256::digest(subject.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Records `credential`'s metrics from now on, under `labels` (see the
/// [module documentation](self) for the metrics). Installing twice counts twice.
///
/// Registers the metrics' descriptions with the recorder on the first call.
///
/// See the [module example](self).
pub fn install(credential: &Credential, labels: Labels) {
    static DESCRIBE: Once = Once::new();
    DESCRIBE.call_once(describe);
    let phase = phase_label(&credential.phase());
    gauge!(CREDENTIALS, labels.with("phase", phase)).increment(1.0);
    let recorder = Recorder {
        labels,
        credential: credential.weak(),
        state: Mutex::new(State {
            phase,
            started: None,
        }),
    };
    credential.on_event(move |e| recorder.record(e));
}

/// Registers every metric's unit and description with the installed recorder (done by
/// [`install`] on its first call; call it yourself if you install a recorder later).
///
/// ```
/// keepfresh::metrics::describe();
/// ```
pub fn describe() {
    describe_counter!(REFRESHES, Unit::Count, "Refreshes that ended, by outcome");
    describe_histogram!(
        REFRESH_DURATION,
        Unit::Seconds,
        "Refresh latency from start to end, lease and store included"
    );
    describe_histogram!(
        TIME_TO_EXPIRY,
        Unit::Seconds,
        "Validity left on the token a starting refresh replaces"
    );
    describe_counter!(
        CALLER_WAITS,
        Unit::Count,
        "Callers that waited for a refresh"
    );
    describe_histogram!(
        CALLER_WAIT,
        Unit::Seconds,
        "How long callers waited for a refresh"
    );
    describe_counter!(
        CALLER_WAIT_TIMEOUTS,
        Unit::Count,
        "Caller waits that ran out"
    );
    describe_counter!(
        SERVED_STALE,
        Unit::Count,
        "Tokens handed out past their refresh point"
    );
    describe_gauge!(CREDENTIALS, Unit::Count, "Credentials in each phase");
    describe_counter!(STORE_ERRORS, Unit::Count, "Failed saves and lost leases");
    describe_counter!(
        STORE_CONFLICTS,
        Unit::Count,
        "Writes redone after another writer changed the store"
    );
    describe_counter!(
        REAUTH_REQUIRED,
        Unit::Count,
        "Credentials that need a new authorization"
    );
    describe_counter!(
        INVALIDATIONS,
        Unit::Count,
        "Tokens a resource server rejected"
    );
}

/// One credential's listener.
struct Recorder {
    labels: Labels,
    credential: WeakCredential,
    state: Mutex<State>,
}

struct State {
    /// The phase counted in the gauge.
    phase: &'static str,
    /// The refresh in flight and when it started.
    started: Option<(FlightId, MonoTime)>,
}

impl Recorder {
    fn record(&self, e: &Event) {
        let labels = &self.labels;
        if let Some(c) = self.credential.upgrade() {
            let stale = c.take_stale_served();
            if stale > 0 {
                counter!(SERVED_STALE, labels.0.clone()).increment(stale);
            }
        }
        match e {
            Event::Transition(t) => {
                let to = phase_label(&t.to);
                let from = std::mem::replace(&mut self.state.lock().phase, to);
                if from != to {
                    gauge!(CREDENTIALS, labels.with("phase", from)).decrement(1.0);
                    gauge!(CREDENTIALS, labels.with("phase", to)).increment(1.0);
                }
            }
            Event::RefreshStarted { at, flight, .. } => {
                self.state.lock().started = Some((*flight, *at));
                if let Some(left) = self.credential.upgrade().and_then(|c| c.expires_in(*at)) {
                    histogram!(TIME_TO_EXPIRY, labels.0.clone()).record(left.as_secs_f64());
                }
            }
            Event::Refreshed { at, flight, .. } => self.ended(*at, Some(*flight), "success"),
            Event::Adopted { at, .. } => self.ended(*at, None, "adopted"),
            Event::RefreshFailed {
                at, flight, class, ..
            } => self.ended(*at, Some(*flight), class_label(*class)),
            Event::FlightAborted { at, flight } => self.ended(*at, Some(*flight), "aborted"),
            Event::CallerWaited { waited, served, .. } => {
                let outcome = if *served { "served" } else { "failed" };
                counter!(CALLER_WAITS, labels.with("outcome", outcome)).increment(1);
                histogram!(CALLER_WAIT, labels.0.clone()).record(waited.as_secs_f64());
            }
            Event::WaitTimedOut { .. } => {
                counter!(CALLER_WAIT_TIMEOUTS, labels.0.clone()).increment(1)
            }
            Event::PersistFailed { error, .. } => {
                let mut l = labels.with("op", "save");
                l.push(Label::new("kind", kind_label(error.kind())));
                counter!(STORE_ERRORS, l).increment(1);
            }
            Event::LeaseLost { .. } => {
                let mut l = labels.with("op", "lease");
                l.push(Label::new("kind", "lost"));
                counter!(STORE_ERRORS, l).increment(1);
            }
            Event::StoreConflict { .. } => counter!(STORE_CONFLICTS, labels.0.clone()).increment(1),
            Event::ReauthRequired { reason, .. } => counter!(
                REAUTH_REQUIRED,
                labels.with("reason", reason_label(*reason))
            )
            .increment(1),
            Event::Invalidated { .. } => counter!(INVALIDATIONS, labels.0.clone()).increment(1),
            _ => {}
        }
    }

    /// A refresh ended with `outcome`; `flight` is `None` when the event does not say which.
    fn ended(&self, at: MonoTime, flight: Option<FlightId>, outcome: &'static str) {
        let labels = self.labels.with("outcome", outcome);
        let started = {
            let mut state = self.state.lock();
            match (state.started, flight) {
                (Some((f, _)), Some(g)) if f != g => None,
                _ => state.started.take(),
            }
        };
        if let Some((_, start)) = started {
            histogram!(REFRESH_DURATION, labels.clone())
                .record(at.saturating_duration_since(start).as_secs_f64());
        }
        counter!(REFRESHES, labels).increment(1);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The credential is gone: it no longer counts in any phase.
        let phase = self.state.lock().phase;
        gauge!(CREDENTIALS, self.labels.with("phase", phase)).decrement(1.0);
    }
}

fn phase_label(p: &Phase) -> &'static str {
    match p {
        Phase::Empty => "empty",
        Phase::Fresh => "fresh",
        Phase::RefreshDue => "refresh_due",
        Phase::Refreshing { .. } => "refreshing",
        Phase::Expired => "expired",
        Phase::BackingOff { .. } => "backing_off",
        Phase::ReauthRequired { .. } => "reauth_required",
    }
}

fn class_label(c: crate::ErrorClass) -> &'static str {
    match c {
        crate::ErrorClass::Transient => "transient",
        crate::ErrorClass::InvalidGrant => "invalid_grant",
        crate::ErrorClass::InvalidClient => "invalid_client",
        crate::ErrorClass::Configuration => "configuration",
        crate::ErrorClass::Ambiguous => "ambiguous",
    }
}

fn reason_label(r: ReauthReason) -> &'static str {
    match r {
        ReauthReason::NoRefreshToken => "no_refresh_token",
        ReauthReason::InvalidGrant => "invalid_grant",
        ReauthReason::ResponseLost => "response_lost",
        ReauthReason::InvalidClient => "invalid_client",
        ReauthReason::Configuration => "configuration",
        ReauthReason::TokenRejected => "token_rejected",
    }
}

fn kind_label(k: StoreErrorKind) -> &'static str {
    match k {
        StoreErrorKind::Io => "io",
        StoreErrorKind::Corrupt => "corrupt",
        StoreErrorKind::Timeout => "timeout",
        StoreErrorKind::Config => "config",
    }
}

//! Scenario files: a world of the user's own, described in TOML, that `run`, `replay`, `sweep`,
//! `shrink` and `compare` take with `--scenario-file PATH` (the format is documented for users
//! in `docs/scenario-files.md`).
//!
//! A file fixes every parameter of the world; the seed given on the command line drives what
//! happens inside it (latencies, fault draws, caller timing, refresh jitter), so `sweep` over a
//! file explores many runs of the same world. `keepfresh-sim scenario show NAME --seed N`
//! prints the world a built-in scenario draws for seed `N` as such a file, to start from.
//!
//! Unknown keys, values of the wrong type and impossible values are errors that name the file,
//! line and column; sizes are bounded by the `MAX_*` constants.
//!
//! ```
//! use keepfresh_sim::scenario_file::ScenarioFile;
//! let file = ScenarioFile::parse(r#"
//!     name = "desktop-apps"
//!     duration = "6h"
//!
//!     [provider]
//!     profile = "strict"
//!     access_token_lifetime = "1h"
//!
//!     [world]
//!     processes = 3
//!
//!     [[schedule]]
//!     action = "crash"
//!     at = "2h"
//!     process = 1
//!     restart_after = "30s"
//! "#).unwrap();
//! let world = file.world();
//! assert_eq!(world.processes, 3);
//! assert_eq!(world.schedule.len(), 1);
//!
//! let err = ScenarioFile::parse("name = \"x\"\nduration = \"1h\"\n[world]\nprocesess = 3\n")
//!     .unwrap_err();
//! assert_eq!(err.line(), Some(4));
//! assert!(err.to_string().contains("processes"), "{err}");
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::provider::{ErrorStyle, ExpiresStyle, Profile};
use crate::world::{Action, FaultKind, Faults, Initial, Pattern, ReauthExpect, WorldConfig};

/// Largest scenario file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most callers a file's world may have in all (credentials × processes × callers per
/// process); the built-in fleet has 1,000,000.
pub const MAX_TOTAL_CALLERS: u64 = 2_000_000;
/// Most credentials a file's world may have (the built-in fleet has 10,000).
pub const MAX_CREDENTIALS: u64 = 100_000;
/// Most processes per credential.
pub const MAX_PROCESSES: u64 = 64;
/// Most caller requests a file's world may plan (callers in all × workload ÷ interval); the
/// built-in fleet plans about 48 million. Bounds how long one run can take.
pub const MAX_PLANNED_REQUESTS: u64 = 250_000_000;
/// Most executor events a file's world may plan for one executor (the whole world, or one
/// shard of it: `shard_credentials`): three quarters of
/// [`DEFAULT_MAX_STEPS`](crate::world::DEFAULT_MAX_STEPS), at which a run stops with a
/// liveness failure, leaving the rest to refreshes, waits and retries. A larger plan is
/// refused here, clearly, instead of ending in that failure after a long run.
///
/// The plan counts two events per steady request (its timer and its poll), two per burst
/// and process (a burst's requests served at once take none of their own), and two more
/// per request that spends I/O time at the resource server.
pub const MAX_PLANNED_EVENTS_PER_EXECUTOR: u64 = 150_000_000;
/// Most scheduled actions.
pub const MAX_SCHEDULE: usize = 10_000;
/// Longest workload, settle time or any other duration in a file: 400 days.
pub const MAX_DURATION: Duration = Duration::from_secs(400 * 24 * 3600);

/// A scenario file that does not load: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioFileError {
    path: Option<PathBuf>,
    position: Option<(usize, usize)>,
    excerpt: Option<String>,
    message: String,
}

impl ScenarioFileError {
    fn new(message: impl Into<String>) -> ScenarioFileError {
        ScenarioFileError {
            path: None,
            position: None,
            excerpt: None,
            message: message.into(),
        }
    }

    fn at(text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let mut e = ScenarioFileError::new(message);
        if let Some(span) = span {
            let start = span.start.min(text.len());
            let before = &text[..floor_char_boundary(text, start)];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            e.position = Some((line, column));
            let line_text: String = text[line_start..]
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(120)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            e.excerpt = Some(line_text);
        }
        e
    }

    /// The 1-based line of the error in the file, when it has one.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.0)
    }

    /// The 1-based column of the error, when it has one.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|p| p.1)
    }

    /// What is wrong, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for ScenarioFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.position) {
            (Some(p), Some((l, c))) => write!(f, "{}:{l}:{c}: ", p.display())?,
            (Some(p), None) => write!(f, "{}: ", p.display())?,
            (None, Some((l, c))) => write!(f, "line {l}, column {c}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)?;
        if let (Some(x), Some((_, c))) = (&self.excerpt, self.position) {
            write!(f, "\n  | {x}\n  | {}^", " ".repeat(c.saturating_sub(1)))?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioFileError {}

/// A duration written as text: `"90s"`, `"1h 30m"`, `"250ms"`, `"2days"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(s.trim()).map_err(|e| {
            de::Error::custom(format!(
                "`{}` is not a duration ({e}); write e.g. \"90s\", \"1h 30m\", \"250ms\"",
                s.chars().take(40).collect::<String>()
            ))
        })?;
        if v > MAX_DURATION {
            return Err(de::Error::custom(format!(
                "`{s}` is longer than the most a scenario takes ({})",
                humantime::format_duration(MAX_DURATION)
            )));
        }
        Ok(Dur(v))
    }
}

/// A probability in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize)]
pub struct Rate(pub f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let v = f64::deserialize(d)?;
        if (0.0..=1.0).contains(&v) {
            Ok(Rate(v))
        } else {
            Err(de::Error::custom(format!(
                "{v} is not a probability: write a number from 0 to 1"
            )))
        }
    }
}

/// A `[min, max]` pair of durations, `min <= max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DurRange(pub Dur, pub Dur);

impl<'de> Deserialize<'de> for DurRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DurRange, D::Error> {
        let (a, b) = <(Dur, Dur)>::deserialize(d)?;
        if a > b {
            return Err(de::Error::custom(format!(
                "the range [{}, {}] is upside down: the first value is the minimum",
                humantime::format_duration(a.0),
                humantime::format_duration(b.0)
            )));
        }
        Ok(DurRange(a, b))
    }
}

fn bounded<'de, D: Deserializer<'de>>(
    d: D,
    what: &str,
    min: u64,
    max: u64,
) -> Result<u64, D::Error> {
    let v = i64::deserialize(d)?;
    if v < min as i64 || v as u64 > max {
        return Err(de::Error::custom(format!(
            "{what} = {v} is out of range: from {min} to {max}"
        )));
    }
    Ok(v as u64)
}

fn world_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if name.trim().is_empty() || name.chars().any(char::is_control) || name.len() > 100 {
        return Err(de::Error::custom(
            "name must be 1 to 100 printable characters",
        ));
    }
    Ok(name)
}

fn profile_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if !Profile::NAMES.contains(&name.as_str()) {
        return Err(de::Error::custom(format!(
            "unknown provider profile `{}`; known: {}",
            name.chars().take(40).collect::<String>(),
            Profile::NAMES.join(", ")
        )));
    }
    Ok(name)
}

fn credentials<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, "credentials", 1, MAX_CREDENTIALS)
}

fn processes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    bounded(d, "processes", 1, MAX_PROCESSES)
}

fn skew<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = i64::deserialize(d)?;
    let max = MAX_DURATION.as_secs() as i64;
    if !(-max..=max).contains(&v) {
        return Err(de::Error::custom(format!(
            "{v} seconds of clock skew is out of range (at most {max} either way)"
        )));
    }
    Ok(v)
}

/// A fault kind that is a rate, by its name (`5xx`, `store_write_fail`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RateKind(pub FaultKind);

impl Serialize for RateKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for RateKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RateKind, D::Error> {
        let s = String::deserialize(d)?;
        let kind: FaultKind = s.parse().map_err(de::Error::custom)?;
        if !kind.is_rate() {
            return Err(de::Error::custom(format!(
                "`{kind}` is a scheduled fault, not a rate: add it as a [[schedule]] entry"
            )));
        }
        Ok(RateKind(kind))
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The world's name in reports (1 to 100 printable characters).
    #[serde(deserialize_with = "world_name")]
    pub name: String,
    /// What the world is about (free text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// How long callers keep making requests.
    pub duration: Dur,
    /// Time after the workload for the engine to settle before the final checks.
    #[serde(default = "default_settle")]
    pub settle: Dur,
    /// When rate faults stop (default: at the end of the workload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_at: Option<Dur>,
    /// The provider.
    #[serde(default)]
    pub provider: ProviderSection,
    /// Credentials, processes and their starting tokens.
    #[serde(default)]
    pub world: WorldSection,
    /// The callers and their pattern.
    #[serde(default)]
    pub callers: CallersSection,
    /// The refresh policy.
    #[serde(default)]
    pub engine: EngineSection,
    /// Transport, store and host faults.
    #[serde(default)]
    pub faults: FaultsSection,
    /// Scheduled actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Spanned<ScheduledAction>>,
    /// What the oracles check beyond the invariants that always hold.
    #[serde(default)]
    pub expect: ExpectSection,
}

fn default_settle() -> Dur {
    Dur(WorldConfig::base("", Profile::strict(Duration::ZERO)).settle)
}

/// `[provider]`: a preset and changes to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Preset: `strict`, `okta`, `auth0`, `xero`, `github-user`, `slack`, `salesforce`, `google`.
    #[serde(deserialize_with = "profile_name")]
    pub profile: String,
    /// Access-token lifetime (default: the preset's, 1 h unless the provider fixes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_lifetime: Option<Dur>,
    /// Each refresh issues a new refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate: Option<bool>,
    /// Presenting a rotated refresh token again revokes the whole grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_revokes_family: Option<bool>,
    /// How long a rotated refresh token stays redeemable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Dur>,
    /// Refresh tokens unused this long die.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_idle_expiry: Option<Dur>,
    /// Refresh tokens die this long after the login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_absolute_expiry: Option<Dur>,
    /// A refresh revokes the previous access token (GitHub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_kills_old_access_token: Option<bool>,
    /// Most live refresh tokens per client; the oldest is evicted (Google).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_refresh_token_cap: Option<usize>,
    /// Error style: `standard`, `http200` (GitHub), `slack-envelope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorsName>,
    /// Lifetime style: `number`, `string`, `missing-issued-at-ms`, `odd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<ExpiresName>,
    /// Token answers form-encoded rather than JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_encoded: Option<bool>,
    /// The provider issues refresh tokens at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issues_refresh_token: Option<bool>,
    /// Probability that a refresh answer omits `refresh_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_refresh_token: Option<Rate>,
    /// The provider's clock is this many seconds ahead (negative: behind).
    #[serde(default, deserialize_with = "skew")]
    pub clock_skew_secs: i64,
}

impl Default for ProviderSection {
    fn default() -> Self {
        ProviderSection {
            profile: "strict".into(),
            access_token_lifetime: None,
            rotate: None,
            reuse_revokes_family: None,
            grace: None,
            refresh_token_idle_expiry: None,
            refresh_token_absolute_expiry: None,
            refresh_kills_old_access_token: None,
            live_refresh_token_cap: None,
            errors: None,
            expires: None,
            form_encoded: None,
            issues_refresh_token: None,
            omit_refresh_token: None,
            clock_skew_secs: 0,
        }
    }
}

/// [`ErrorStyle`] by its name in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorsName {
    /// RFC 6749 errors.
    Standard,
    /// HTTP 200 with an `error` field.
    Http200,
    /// Slack's `{"ok": false}` envelope.
    SlackEnvelope,
}

/// [`ExpiresStyle`] by its name in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiresName {
    /// `"expires_in": 3600`.
    Number,
    /// `"expires_in": "3600"`.
    String,
    /// No `expires_in`; `issued_at` in milliseconds.
    MissingIssuedAtMs,
    /// A different odd value on each answer.
    Odd,
}

/// `[world]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldSection {
    /// Independent credentials, each with its own grant and store.
    #[serde(deserialize_with = "credentials")]
    pub credentials: u64,
    /// Processes per credential sharing its store.
    #[serde(deserialize_with = "processes")]
    pub processes: u64,
    /// The tokens each credential starts with: `fresh`, `aged`, `expired`.
    pub initial: InitialName,
    /// Each process's wall clock is off by up to this many seconds, either way.
    #[serde(deserialize_with = "skew")]
    pub process_clock_skew_secs: i64,
    /// Run the credentials in independent shards of this many, one after another (0: all in
    /// one world). For large worlds: credentials share nothing, so every oracle still runs in
    /// each shard, and the working set stays small. Ignored when there are scheduled actions.
    pub shard_credentials: u64,
}

impl Default for WorldSection {
    fn default() -> Self {
        WorldSection {
            credentials: 1,
            processes: 1,
            initial: InitialName::Fresh,
            process_clock_skew_secs: 0,
            shard_credentials: 0,
        }
    }
}

/// [`Initial`] by its name in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitialName {
    /// Just issued.
    Fresh,
    /// Issued at a random earlier time within the lifetime.
    Aged,
    /// Expired just before time zero.
    Expired,
}

/// `[callers]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallersSection {
    /// Callers per process.
    pub count: Spanned<u64>,
    /// When they make requests.
    pub pattern: PatternSpec,
    /// Time a caller spends using the token before the resource server sees it.
    pub io_time: Dur,
    /// Callers give up on a request after this long (default: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Callers check each token at the resource server and handle a 401.
    pub resource_server: bool,
    /// Every n-th resource request needs a scope the grant lacks (0: never).
    pub step_up_every: u64,
}

impl Default for CallersSection {
    fn default() -> Self {
        CallersSection {
            count: Spanned::new(0..0, 10),
            pattern: PatternSpec::Steady {
                mean: Dur(Duration::from_secs(60)),
            },
            io_time: Dur(Duration::ZERO),
            timeout: None,
            resource_server: true,
            step_up_every: 0,
        }
    }
}

/// A caller pattern: `{ kind = "steady", mean = "60s" }` or
/// `{ kind = "bursts", first = "0s", every = "30m" }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PatternSpec {
    /// Independent intervals drawn around `mean`.
    Steady {
        /// Mean interval between two requests of one caller.
        mean: Dur,
    },
    /// Every caller at the same instants.
    Bursts {
        /// First burst.
        first: Dur,
        /// Interval between bursts.
        every: Dur,
    },
}

/// `[engine]`: the refresh policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// Refresh at a jittered point (off: at 75 % of each token's life).
    pub jitter: bool,
    /// Refresh on a timer even without demand.
    pub eager: bool,
    /// How long a caller waits for a refresh.
    pub wait_timeout: Dur,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            jitter: true,
            eager: false,
            wait_timeout: Dur(Duration::from_secs(30)),
        }
    }
}

/// `[faults]`; rates go in `[faults.rates]`, keyed by fault kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsSection {
    /// Token-endpoint latency, `[min, max]`.
    pub latency: DurRange,
    /// Probability that a call takes ten times longer.
    pub latency_tail: Rate,
    /// `Retry-After` on 429 and 503.
    pub retry_after: Dur,
    /// `Retry-After` as an HTTP date rather than seconds.
    pub retry_after_as_date: bool,
    /// Store operation latency, `[min, max]`.
    pub store_latency: DurRange,
    /// Rates by fault kind: `"5xx" = 0.05`, `store_write_fail = 0.2`, ….
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rates: std::collections::BTreeMap<RateKind, Rate>,
}

impl Default for FaultsSection {
    fn default() -> Self {
        FaultsSection::from(&Faults::none())
    }
}

impl From<&Faults> for FaultsSection {
    fn from(f: &Faults) -> Self {
        let ms = |v: u64| Dur(Duration::from_millis(v));
        FaultsSection {
            latency: DurRange(ms(f.latency_ms.0), ms(f.latency_ms.1)),
            latency_tail: Rate(f.latency_tail),
            retry_after: Dur(Duration::from_secs(f.retry_after_secs)),
            retry_after_as_date: f.retry_after_date,
            store_latency: DurRange(ms(f.store_latency_ms.0), ms(f.store_latency_ms.1)),
            rates: f
                .rates()
                .into_iter()
                .filter(|(_, p)| *p > 0.0)
                .map(|(k, p)| (RateKind(k), Rate(p)))
                .collect(),
        }
    }
}

/// One `[[schedule]]` entry: `action` names what happens, `at` when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScheduledAction {
    /// A process is killed and restarted after `restart_after`.
    Crash {
        /// When.
        at: Dur,
        /// Process index (credential × processes + process), from 0.
        process: usize,
        /// Down time.
        restart_after: Dur,
    },
    /// The process's next save kills it (after the provider answered).
    CrashOnNextSave {
        /// When.
        at: Dur,
        /// Process index, from 0.
        process: usize,
        /// Down time.
        restart_after: Dur,
    },
    /// A clean shutdown and a restart after `restart_after`.
    Shutdown {
        /// When.
        at: Dur,
        /// Process index, from 0.
        process: usize,
        /// Down time.
        restart_after: Dur,
    },
    /// The provider revokes the credential's grant.
    Revoke {
        /// When.
        at: Dur,
        /// Credential index, from 0.
        credential: usize,
    },
    /// The provider revokes the credential's live access tokens.
    RevokeAccess {
        /// When.
        at: Dur,
        /// Credential index, from 0.
        credential: usize,
    },
    /// An unrelated writer rewrites the credential's store content.
    Overwrite {
        /// When.
        at: Dur,
        /// Credential index, from 0.
        credential: usize,
    },
    /// The process's wall clock jumps by `secs` (negative: back).
    JumpWall {
        /// When.
        at: Dur,
        /// Process index, from 0.
        process: usize,
        /// Signed seconds.
        #[serde(deserialize_with = "skew")]
        secs: i64,
    },
    /// Every operation on the credential's store fails for `duration`.
    StoreOutage {
        /// When.
        at: Dur,
        /// Credential index, from 0.
        credential: usize,
        /// Length.
        duration: Dur,
    },
    /// The process's host sleeps for `duration` (its monotonic clock stops).
    Suspend {
        /// When.
        at: Dur,
        /// Process index, from 0.
        process: usize,
        /// Length.
        duration: Dur,
    },
    /// The user logs in again in this process.
    Login {
        /// When.
        at: Dur,
        /// Process index, from 0.
        process: usize,
    },
    /// Another writer stores a newer set during a save retry.
    NewerWrite {
        /// When (the writer waits for the first moment it can strike).
        at: Dur,
        /// Credential index, from 0.
        credential: usize,
    },
}

impl ScheduledAction {
    fn at(&self) -> Duration {
        match self {
            ScheduledAction::Crash { at, .. }
            | ScheduledAction::CrashOnNextSave { at, .. }
            | ScheduledAction::Shutdown { at, .. }
            | ScheduledAction::Revoke { at, .. }
            | ScheduledAction::RevokeAccess { at, .. }
            | ScheduledAction::Overwrite { at, .. }
            | ScheduledAction::JumpWall { at, .. }
            | ScheduledAction::StoreOutage { at, .. }
            | ScheduledAction::Suspend { at, .. }
            | ScheduledAction::Login { at, .. }
            | ScheduledAction::NewerWrite { at, .. } => at.0,
        }
    }

    fn to_action(&self) -> Action {
        match *self {
            ScheduledAction::Crash {
                process,
                restart_after,
                ..
            } => Action::Crash {
                proc: process,
                restart_after: restart_after.0,
            },
            ScheduledAction::CrashOnNextSave {
                process,
                restart_after,
                ..
            } => Action::CrashOnNextSave {
                proc: process,
                restart_after: restart_after.0,
            },
            ScheduledAction::Shutdown {
                process,
                restart_after,
                ..
            } => Action::Shutdown {
                proc: process,
                restart_after: restart_after.0,
            },
            ScheduledAction::Revoke { credential, .. } => Action::Revoke { cred: credential },
            ScheduledAction::RevokeAccess { credential, .. } => {
                Action::RevokeAccess { cred: credential }
            }
            ScheduledAction::Overwrite { credential, .. } => Action::Overwrite { cred: credential },
            ScheduledAction::JumpWall { process, secs, .. } => Action::JumpWall {
                proc: process,
                secs,
            },
            ScheduledAction::StoreOutage {
                credential,
                duration,
                ..
            } => Action::StoreOutage {
                cred: credential,
                duration: duration.0,
            },
            ScheduledAction::Suspend {
                process, duration, ..
            } => Action::Suspend {
                proc: process,
                duration: duration.0,
            },
            ScheduledAction::Login { process, .. } => Action::Login { proc: process },
            ScheduledAction::NewerWrite { credential, .. } => {
                Action::WriteNewer { cred: credential }
            }
        }
    }

    fn from_action(at: Duration, a: &Action) -> ScheduledAction {
        let at = Dur(at);
        match *a {
            Action::Crash {
                proc,
                restart_after,
            } => ScheduledAction::Crash {
                at,
                process: proc,
                restart_after: Dur(restart_after),
            },
            Action::CrashOnNextSave {
                proc,
                restart_after,
            } => ScheduledAction::CrashOnNextSave {
                at,
                process: proc,
                restart_after: Dur(restart_after),
            },
            Action::Shutdown {
                proc,
                restart_after,
            } => ScheduledAction::Shutdown {
                at,
                process: proc,
                restart_after: Dur(restart_after),
            },
            Action::Revoke { cred } => ScheduledAction::Revoke {
                at,
                credential: cred,
            },
            Action::RevokeAccess { cred } => ScheduledAction::RevokeAccess {
                at,
                credential: cred,
            },
            Action::Overwrite { cred } => ScheduledAction::Overwrite {
                at,
                credential: cred,
            },
            Action::JumpWall { proc, secs } => ScheduledAction::JumpWall {
                at,
                process: proc,
                secs,
            },
            Action::StoreOutage { cred, duration } => ScheduledAction::StoreOutage {
                at,
                credential: cred,
                duration: Dur(duration),
            },
            Action::Suspend { proc, duration } => ScheduledAction::Suspend {
                at,
                process: proc,
                duration: Dur(duration),
            },
            Action::Login { proc } => ScheduledAction::Login { at, process: proc },
            Action::WriteNewer { cred } => ScheduledAction::NewerWrite {
                at,
                credential: cred,
            },
        }
    }
}

/// `[expect]`: the checks a world asks for beyond the invariants that always hold (one
/// refresh per token generation, no replay of a rotated refresh token, every rotation saved
/// before it is served, no caller served an expired token, no deadlock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpectSection {
    /// Re-authorization: `never` (any is a failure), `allowed`, or `exactly-once` (each
    /// process instance that reports it does so once, with `reauthorization_reason`).
    pub reauthorization: ReauthName,
    /// The reason an `exactly-once` re-authorization must give (e.g. `invalid_grant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reauthorization_reason: Option<String>,
    /// Replays of rotated refresh tokens and revoked grants are expected (a world that revokes
    /// or replays on purpose).
    pub replays_allowed: bool,
    /// Exactly this many token-endpoint calls per credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_calls_per_credential: Option<u64>,
    /// At most this many token-endpoint calls per credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_calls_per_credential: Option<u64>,
    /// A token is rejected at the resource server at least once, and every retry after a 401
    /// gets a token the resource server accepts.
    pub unauthorized_retries: bool,
    /// The store ends holding the provider's newest refresh token.
    pub store_converges: bool,
    /// The provider states the true lifetime, so serving past it is a failure.
    pub lifetime_known: bool,
}

impl Default for ExpectSection {
    fn default() -> Self {
        ExpectSection {
            reauthorization: ReauthName::Never,
            reauthorization_reason: None,
            replays_allowed: false,
            exact_calls_per_credential: None,
            max_calls_per_credential: None,
            unauthorized_retries: false,
            store_converges: true,
            lifetime_known: true,
        }
    }
}

/// [`ReauthExpect`] by its name in files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReauthName {
    /// Any re-authorization fails the run.
    Never,
    /// Re-authorization is allowed.
    Allowed,
    /// Exactly once per process instance that reports it, and at least once.
    ExactlyOnce,
}

impl ScenarioFile {
    /// Parses and checks a scenario file's text.
    ///
    /// # Errors
    /// Syntax errors, unknown keys, values of the wrong type or out of range, scheduled
    /// actions naming processes or credentials that do not exist or falling after the world
    /// ends, and worlds larger than the `MAX_*` limits; each with its line and column.
    pub fn parse(text: &str) -> Result<ScenarioFile, ScenarioFileError> {
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(ScenarioFileError::new(format!(
                "the file has {} bytes; a scenario file has at most {MAX_FILE_BYTES}",
                text.len()
            )));
        }
        let file: ScenarioFile = toml::from_str(text)
            .map_err(|e| ScenarioFileError::at(text, e.span(), e.message().trim_end()))?;
        file.check(text)?;
        Ok(file)
    }

    /// Reads and parses the file at `path` (at most [`MAX_FILE_BYTES`]).
    ///
    /// # Errors
    /// As [`ScenarioFile::parse`], and I/O errors, each naming the path.
    pub fn load(path: &Path) -> Result<ScenarioFile, ScenarioFileError> {
        use std::io::Read as _;
        let f = std::fs::File::open(path)
            .map_err(|e| ScenarioFileError::new(format!("cannot open: {e}")).with_path(path))?;
        let mut text = String::new();
        f.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| ScenarioFileError::new(format!("cannot read: {e}")).with_path(path))?;
        ScenarioFile::parse(&text).map_err(|e| e.with_path(path))
    }

    fn check(&self, text: &str) -> Result<(), ScenarioFileError> {
        let err =
            |span: Range<usize>, msg: String| Err(ScenarioFileError::at(text, Some(span), msg));
        if self.duration.0.is_zero() {
            return Err(ScenarioFileError::new("duration must be more than zero"));
        }
        let count = *self.callers.count.get_ref();
        let total = self.world.credentials * self.world.processes;
        if count == 0 || count.saturating_mul(total) > MAX_TOTAL_CALLERS {
            return err(
                self.callers.count.span(),
                format!(
                    "{count} callers per process × {total} processes is out of range: from 1 to {MAX_TOTAL_CALLERS} callers in all"
                ),
            );
        }
        let (PatternSpec::Steady { mean: every } | PatternSpec::Bursts { every, .. }) =
            &self.callers.pattern;
        if every.0 < Duration::from_millis(1) {
            return Err(ScenarioFileError::new(
                "[callers] pattern: the interval between requests must be at least 1ms",
            ));
        }
        let planned =
            (count * total) as u128 * self.duration.0.as_nanos() / every.0.as_nanos().max(1);
        if planned > MAX_PLANNED_REQUESTS as u128 {
            return err(
                self.callers.count.span(),
                format!(
                    "this world plans about {planned} caller requests ({} callers in all for {} at one per {}); a scenario file plans at most {MAX_PLANNED_REQUESTS}",
                    count * total,
                    humantime::format_duration(self.duration.0),
                    humantime::format_duration(every.0)
                ),
            );
        }
        let bursts = matches!(self.callers.pattern, PatternSpec::Bursts { .. });
        let wakeups = total as u128 * self.duration.0.as_nanos() / every.0.as_nanos().max(1);
        let io = self.callers.resource_server && !self.callers.io_time.0.is_zero();
        let per_request = if bursts { 0 } else { 2 } + if io { 2 } else { 0 };
        let events = planned * per_request + if bursts { 2 * wakeups } else { 0 };
        // Shards run only without a schedule (see `shard_credentials`).
        let credentials = self.world.credentials.max(1);
        let shard = self.world.shard_credentials;
        let per_executor = if shard > 0 && shard < credentials && self.schedule.is_empty() {
            (events * u128::from(shard)).div_ceil(u128::from(credentials))
        } else {
            events
        };
        if per_executor > MAX_PLANNED_EVENTS_PER_EXECUTOR as u128 {
            return err(
                self.callers.count.span(),
                format!(
                    "this world plans about {per_executor} executor events on one executor ({planned} caller requests in all); a run stops at {} events, so a file plans at most {MAX_PLANNED_EVENTS_PER_EXECUTOR} per executor: run independent credentials in shards ([world] shard_credentials, without a schedule) or plan fewer",
                    crate::world::DEFAULT_MAX_STEPS
                ),
            );
        }
        if self.schedule.len() > MAX_SCHEDULE {
            return Err(ScenarioFileError::new(format!(
                "{} scheduled actions; a scenario has at most {MAX_SCHEDULE}",
                self.schedule.len()
            )));
        }
        let end = self.duration.0 + self.settle.0;
        for entry in &self.schedule {
            let a = entry.get_ref();
            if a.at() > end {
                return err(
                    entry.span(),
                    format!(
                        "this action at {} comes after the world ends ({} of workload and {} to settle)",
                        humantime::format_duration(a.at()),
                        humantime::format_duration(self.duration.0),
                        humantime::format_duration(self.settle.0)
                    ),
                );
            }
            match a.to_action() {
                Action::Crash { proc, .. }
                | Action::CrashOnNextSave { proc, .. }
                | Action::Shutdown { proc, .. }
                | Action::JumpWall { proc, .. }
                | Action::Suspend { proc, .. }
                | Action::Login { proc } => {
                    if proc as u64 >= total {
                        return err(
                            entry.span(),
                            format!(
                                "process {proc} does not exist: this world has {total} (numbered from 0)"
                            ),
                        );
                    }
                }
                Action::Revoke { cred }
                | Action::RevokeAccess { cred }
                | Action::Overwrite { cred }
                | Action::StoreOutage { cred, .. }
                | Action::WriteNewer { cred } => {
                    if cred as u64 >= self.world.credentials {
                        return err(
                            entry.span(),
                            format!(
                                "credential {cred} does not exist: this world has {} (numbered from 0)",
                                self.world.credentials
                            ),
                        );
                    }
                }
            }
        }
        match (self.expect.reauthorization, &self.expect.reauthorization_reason) {
            (ReauthName::ExactlyOnce, None) => {
                return Err(ScenarioFileError::new(
                    "[expect] reauthorization = \"exactly-once\" needs reauthorization_reason",
                ))
            }
            (ReauthName::Never | ReauthName::Allowed, Some(_)) => {
                return Err(ScenarioFileError::new(
                    "[expect] reauthorization_reason is for reauthorization = \"exactly-once\" only",
                ))
            }
            _ => {}
        }
        self.world().validate().map_err(ScenarioFileError::new)
    }

    /// The world this file describes.
    pub fn world(&self) -> WorldConfig {
        let p = &self.provider;
        let lifetime = p
            .access_token_lifetime
            .map_or(Duration::from_secs(3600), |d| d.0);
        let mut profile =
            Profile::by_name(&p.profile, lifetime).unwrap_or_else(|_| Profile::strict(lifetime));
        if let Some(d) = p.access_token_lifetime {
            profile.at_lifetime = d.0;
        }
        macro_rules! set {
            ($field:ident, $v:expr_2021) => {
                if let Some(v) = $v {
                    profile.$field = v;
                }
            };
        }
        set!(rotate, p.rotate);
        set!(reuse_revokes_family, p.reuse_revokes_family);
        set!(grace, p.grace.map(|d| d.0));
        set!(
            rt_idle_expiry,
            p.refresh_token_idle_expiry.map(|d| Some(d.0))
        );
        set!(
            rt_absolute_expiry,
            p.refresh_token_absolute_expiry.map(|d| Some(d.0))
        );
        set!(
            refresh_kills_old_access_token,
            p.refresh_kills_old_access_token
        );
        set!(live_rt_cap, p.live_refresh_token_cap.map(Some));
        set!(errors, p.errors.map(ErrorsName::style));
        set!(expires, p.expires.map(ExpiresName::style));
        set!(form_encoded, p.form_encoded);
        set!(issues_refresh_token, p.issues_refresh_token);
        set!(omit_refresh_token, p.omit_refresh_token.map(|r| r.0));

        let mut c = WorldConfig::base(&self.name, profile);
        c.duration = self.duration.0;
        c.settle = self.settle.0;
        c.heal_at = self.heal_at.map(|d| d.0);
        c.provider_skew_secs = p.clock_skew_secs;
        c.credentials = self.world.credentials as usize;
        c.processes = self.world.processes as usize;
        c.initial = match self.world.initial {
            InitialName::Fresh => Initial::Fresh,
            InitialName::Aged => Initial::Aged,
            InitialName::Expired => Initial::Expired,
        };
        c.process_skew_secs = self.world.process_clock_skew_secs;
        c.shard_credentials = self.world.shard_credentials.min(MAX_CREDENTIALS) as usize;
        let k = &self.callers;
        c.callers = *k.count.get_ref() as usize;
        c.pattern = match k.pattern {
            PatternSpec::Steady { mean } => Pattern::Steady { mean: mean.0 },
            PatternSpec::Bursts { first, every } => Pattern::Bursts {
                first: first.0,
                every: every.0,
            },
        };
        c.io_time = k.io_time.0;
        c.caller_timeout = k.timeout.map(|d| d.0);
        c.resource_server = k.resource_server;
        c.step_up_every = k.step_up_every;
        c.jitter = self.engine.jitter;
        c.eager = self.engine.eager;
        c.wait_timeout = self.engine.wait_timeout.0;
        let f = &self.faults;
        let ms = |d: Dur| d.0.as_millis().min(u64::MAX as u128) as u64;
        c.faults.latency_ms = (ms(f.latency.0), ms(f.latency.1));
        c.faults.latency_tail = f.latency_tail.0;
        c.faults.retry_after_secs = f.retry_after.0.as_secs();
        c.faults.retry_after_date = f.retry_after_as_date;
        c.faults.store_latency_ms = (ms(f.store_latency.0), ms(f.store_latency.1));
        for (kind, rate) in &f.rates {
            c.faults.set_rate(kind.0, rate.0);
        }
        c.schedule = self
            .schedule
            .iter()
            .map(|e| (e.get_ref().at(), e.get_ref().to_action()))
            .collect();
        let e = &self.expect;
        c.reauth = match e.reauthorization {
            ReauthName::Never => ReauthExpect::Never,
            ReauthName::Allowed => ReauthExpect::Allowed,
            ReauthName::ExactlyOnce => {
                ReauthExpect::ExactlyOnce(e.reauthorization_reason.clone().unwrap_or_default())
            }
        };
        c.allow_revoked_family = e.replays_allowed;
        c.exact_calls_per_credential = e.exact_calls_per_credential;
        c.max_calls_per_credential = e.max_calls_per_credential;
        c.check_unauthorized_retries = e.unauthorized_retries;
        c.check_convergence = e.store_converges;
        c.lifetime_known = e.lifetime_known;
        c
    }

    /// The file that describes `world` (every setting written out, so a user sees them all;
    /// scheduled actions after the world's end, which never happen, are left out).
    pub fn from_world(world: &WorldConfig, description: &str) -> ScenarioFile {
        let p = &world.profile;
        ScenarioFile {
            name: world.scenario.clone(),
            description: description.into(),
            duration: Dur(world.duration),
            settle: Dur(world.settle),
            heal_at: world.heal_at.map(Dur),
            provider: ProviderSection {
                profile: p.name.into(),
                access_token_lifetime: Some(Dur(p.at_lifetime)),
                rotate: Some(p.rotate),
                reuse_revokes_family: Some(p.reuse_revokes_family),
                grace: Some(Dur(p.grace)),
                refresh_token_idle_expiry: p.rt_idle_expiry.map(Dur),
                refresh_token_absolute_expiry: p.rt_absolute_expiry.map(Dur),
                refresh_kills_old_access_token: Some(p.refresh_kills_old_access_token),
                live_refresh_token_cap: p.live_rt_cap,
                errors: Some(ErrorsName::of(p.errors)),
                expires: Some(ExpiresName::of(p.expires)),
                form_encoded: Some(p.form_encoded),
                issues_refresh_token: Some(p.issues_refresh_token),
                omit_refresh_token: Some(Rate(p.omit_refresh_token)),
                clock_skew_secs: world.provider_skew_secs,
            },
            world: WorldSection {
                credentials: world.credentials as u64,
                processes: world.processes as u64,
                initial: match world.initial {
                    Initial::Fresh => InitialName::Fresh,
                    Initial::Aged => InitialName::Aged,
                    Initial::Expired => InitialName::Expired,
                },
                process_clock_skew_secs: world.process_skew_secs,
                shard_credentials: world.shard_credentials as u64,
            },
            callers: CallersSection {
                count: Spanned::new(0..0, world.callers as u64),
                pattern: match world.pattern {
                    Pattern::Steady { mean } => PatternSpec::Steady { mean: Dur(mean) },
                    Pattern::Bursts { first, every } => PatternSpec::Bursts {
                        first: Dur(first),
                        every: Dur(every),
                    },
                },
                io_time: Dur(world.io_time),
                timeout: world.caller_timeout.map(Dur),
                resource_server: world.resource_server,
                step_up_every: world.step_up_every,
            },
            engine: EngineSection {
                jitter: world.jitter,
                eager: world.eager,
                wait_timeout: Dur(world.wait_timeout),
            },
            faults: FaultsSection::from(&world.faults),
            // Actions after the world's end never happen (a recipe may schedule past it).
            schedule: world
                .schedule
                .iter()
                .filter(|(at, _)| *at <= world.duration + world.settle)
                .map(|(at, a)| Spanned::new(0..0, ScheduledAction::from_action(*at, a)))
                .collect(),
            expect: ExpectSection {
                reauthorization: match world.reauth {
                    ReauthExpect::Never => ReauthName::Never,
                    ReauthExpect::Allowed => ReauthName::Allowed,
                    ReauthExpect::ExactlyOnce(_) => ReauthName::ExactlyOnce,
                },
                reauthorization_reason: match &world.reauth {
                    ReauthExpect::ExactlyOnce(r) => Some(r.clone()),
                    _ => None,
                },
                replays_allowed: world.allow_revoked_family,
                exact_calls_per_credential: world.exact_calls_per_credential,
                max_calls_per_credential: world.max_calls_per_credential,
                unauthorized_retries: world.check_unauthorized_retries,
                store_converges: world.check_convergence,
                lifetime_known: world.lifetime_known,
            },
        }
    }

    /// The file as TOML text, with a header comment naming its source.
    ///
    /// # Errors
    /// Never in practice (every value is representable); a message if serialization fails.
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| e.to_string())
    }
}

impl ErrorsName {
    fn style(self) -> ErrorStyle {
        match self {
            ErrorsName::Standard => ErrorStyle::Standard,
            ErrorsName::Http200 => ErrorStyle::Http200,
            ErrorsName::SlackEnvelope => ErrorStyle::SlackEnvelope,
        }
    }

    fn of(s: ErrorStyle) -> ErrorsName {
        match s {
            ErrorStyle::Standard => ErrorsName::Standard,
            ErrorStyle::Http200 => ErrorsName::Http200,
            ErrorStyle::SlackEnvelope => ErrorsName::SlackEnvelope,
        }
    }
}

impl ExpiresName {
    fn style(self) -> ExpiresStyle {
        match self {
            ExpiresName::Number => ExpiresStyle::Number,
            ExpiresName::String => ExpiresStyle::String,
            ExpiresName::MissingIssuedAtMs => ExpiresStyle::MissingIssuedAtMs,
            ExpiresName::Odd => ExpiresStyle::Odd,
        }
    }

    fn of(s: ExpiresStyle) -> ExpiresName {
        match s {
            ExpiresStyle::Number => ExpiresName::Number,
            ExpiresStyle::String => ExpiresName::String,
            ExpiresStyle::MissingIssuedAtMs => ExpiresName::MissingIssuedAtMs,
            ExpiresStyle::Odd => ExpiresName::Odd,
        }
    }
}

/// The fuzz target's check of one input (`fuzz/fuzz_targets/scenario_file.rs`, and the
/// committed corpus replayed by `sim/tests/scenario_files.rs`): never a panic; a refusal names
/// a line of the file and stays short; an accepted file is a valid world within the limits,
/// and written back out it reads as the same world.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match ScenarioFile::parse(&text) {
        Err(e) => {
            let shown = e.to_string();
            if let Some(line) = e.line() {
                let lines = text.split('\n').count();
                assert!(
                    (1..=lines).contains(&line),
                    "line {line} of a {lines}-line file"
                );
            }
            assert!(
                shown.len() < 4096,
                "a {}-byte message for a {}-byte file",
                shown.len(),
                data.len()
            );
        }
        Ok(file) => {
            let world = file.world();
            world.validate().expect("an accepted file is a valid world");
            let total = (world.credentials * world.processes * world.callers) as u64;
            assert!((1..=MAX_TOTAL_CALLERS).contains(&total));
            assert!(world.schedule.len() <= MAX_SCHEDULE);
            let again = file.to_toml().expect("an accepted file writes out");
            let back = ScenarioFile::parse(&again)
                .unwrap_or_else(|e| panic!("written back, it does not read: {e}\n{again}"));
            let j = |w: &WorldConfig| serde_json::to_value(w).expect("json");
            assert_eq!(
                j(&back.world()),
                j(&world),
                "the round trip changed the world"
            );
        }
    }
}

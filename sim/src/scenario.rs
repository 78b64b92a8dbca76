//! The named scenarios (described for users in `docs/scenarios.md`), each a world recipe whose
//! parameters are drawn from the seed, plus swarm runs and the large fleet run.

use std::path::Path;
use std::time::Duration;

use crate::provider::{ExpiresStyle, Profile};
use crate::rng::SimRng;
use crate::scenario_file::{ScenarioFile, ScenarioFileError};
use crate::world::{Action, Faults, Initial, Pattern, ReauthExpect, WorldConfig};

/// A named scenario: a built-in recipe, or a world read from a scenario file.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Name used on the command line.
    pub name: &'static str,
    /// Catalogue number: a theme letter and a number (`A1`, `E21`), or `profiles`, `swarm` and
    /// `target` for the worlds outside the catalogue (see `docs/scenarios.md`).
    pub reference: &'static str,
    /// One line on what it checks.
    pub summary: &'static str,
    /// Whether the default suite runs it.
    pub in_suite: bool,
    /// Set when the world is read from a scenario file (the seed then drives only what
    /// happens inside it): the file's path and content.
    file: Option<(&'static Path, &'static ScenarioFile)>,
    build: fn(&mut SimRng) -> WorldConfig,
}

impl Scenario {
    /// The world for `seed`'s draws.
    pub fn build(&self, rng: &mut SimRng) -> WorldConfig {
        match self.file {
            None => (self.build)(rng),
            Some((_, file)) => file.world(),
        }
    }

    /// The scenario described by the scenario file at `path`
    /// ([`crate::scenario_file`]).
    ///
    /// The file is read and checked once and kept for the rest of the process (it is leaked,
    /// so that a `Scenario` stays a small `Copy` value like the built-in ones; a process loads
    /// a handful of files at most).
    ///
    /// # Errors
    /// The file's path, line, column and what is wrong.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioFileError> {
        let file = ScenarioFile::load(path)?;
        let file: &'static ScenarioFile = Box::leak(Box::new(file));
        let path: &'static Path = Box::leak(path.to_path_buf().into_boxed_path());
        Ok(Scenario {
            name: Box::leak(file.name.clone().into_boxed_str()),
            reference: "file",
            summary: Box::leak(
                if file.description.is_empty() {
                    format!("from {}", path.display())
                } else {
                    file.description.clone()
                }
                .into_boxed_str(),
            ),
            in_suite: false,
            file: Some((path, file)),
            build: |_| unreachable_world(),
        })
    }

    /// The scenario file it was read from, if any.
    pub fn file(&self) -> Option<&'static Path> {
        self.file.map(|(path, _)| path)
    }

    /// The command-line arguments that select it again: `--scenario NAME` or
    /// `--scenario-file PATH` (quoted for a POSIX shell when it needs to be).
    ///
    /// ```
    /// let sc = keepfresh_sim::scenario::by_name("stampede").unwrap();
    /// assert_eq!(sc.selector(), "--scenario stampede");
    /// ```
    pub fn selector(&self) -> String {
        match self.file() {
            None => format!("--scenario {}", self.name),
            Some(p) => format!("--scenario-file {}", shell_quote(&p.display().to_string())),
        }
    }
}

/// Never called: a file scenario builds from its file.
fn unreachable_world() -> WorldConfig {
    WorldConfig::base("file", strict())
}

/// `s` as one word for a POSIX shell.
pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

const H: u64 = 3600;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn strict() -> Profile {
    Profile::strict(secs(H))
}

fn profile(name: &str) -> Profile {
    Profile::by_name(name, secs(H)).expect("known profile")
}

/// Every scenario, in catalogue order.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario { name: "stampede", reference: "A1", summary: "N callers hit an expired token at once: exactly one token-endpoint call", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("stampede", strict());
            c.initial = Initial::Expired;
            c.callers = r.range(1, 2000) as usize;
            c.pattern = Pattern::Bursts { first: Duration::ZERO, every: secs(10 * H) };
            c.duration = secs(60);
            c.settle = secs(30);
            c.exact_calls_per_credential = Some(1);
            c
        }},
        Scenario { name: "storm-401", reference: "A2", summary: "401s for the previous token while a proactive refresh is in flight: zero extra refreshes", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("storm-401", Profile { at_lifetime: secs(H), ..profile("github-user") });
            c.callers = r.range(20, 200) as usize;
            c.pattern = Pattern::Steady { mean: secs(5) };
            c.io_time = Duration::from_millis(r.range(50, 2000));
            c.faults.latency_ms = (500, 3000);
            c.duration = secs(3 * H);
            c.max_calls_per_credential = Some(3 * H / (H * 6 / 10) + 1);
            c
        }},
        Scenario { name: "shared-store", reference: "A3", summary: "several processes share one store: adopt the winner's tokens, never replay", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("shared-store", strict());
            c.processes = r.range(2, 5) as usize;
            c.initial = if r.chance(0.5) { Initial::Expired } else { Initial::Aged };
            c.duration = secs(6 * H);
            c
        }},
        Scenario { name: "lease-reread", reference: "A4", summary: "a process that waited for the lease re-reads the store instead of refreshing", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("lease-reread", strict());
            c.processes = r.range(2, 6) as usize;
            c.initial = Initial::Expired;
            c.pattern = Pattern::Bursts { first: Duration::ZERO, every: secs(H / 2) };
            c.faults.latency_ms = (1000, 8000);
            c.faults.store_latency_ms = (1, 50);
            c.duration = secs(2 * H);
            c
        }},
        Scenario { name: "scopes", reference: "A5", summary: "credentials for different resources never share a refresh result", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("scopes", strict());
            c.credentials = r.range(2, 4) as usize;
            c.processes = 2;
            c.initial = Initial::Fresh;
            c.duration = secs(3 * H);
            c
        }},
        Scenario { name: "unrelated-writer", reference: "A6", summary: "another writer rewrites the store while rotations are persisted", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("unrelated-writer", strict());
            c.processes = 2;
            c.faults.store_latency_ms = (5, 400);
            for k in 0..40 {
                c.schedule.push((secs(k * 300 + r.range(0, 299)), Action::Overwrite { cred: 0 }));
            }
            c.duration = secs(3 * H);
            c
        }},
        Scenario { name: "rewritten-during-save-retry", reference: "A6", summary: "an unrelated writer rewrites the replaced set while saves of its rotation fail and are retried: the engine never goes back to it", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("rewritten-during-save-retry", Profile::strict(secs(r.range(300, 1200))));
            c.processes = r.range(1, 2) as usize;
            c.faults.store_write_fail = 0.5 + r.unit() * 0.4;
            c.faults.store_latency_ms = (5, 400);
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 60)) };
            let every = r.range(20, 120);
            for k in 0..(2 * H / every) {
                c.schedule.push((secs(k * every + r.range(0, every - 1)), Action::Overwrite { cred: 0 }));
            }
            c.heal_at = Some(secs(2 * H - 600));
            c.duration = secs(2 * H);
            c
        }},
        Scenario { name: "lost-response-grace", reference: "B7a", summary: "rotation answer lost, replay inside the provider's grace window succeeds", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("lost-response-grace", profile(if r.chance(0.5) { "okta" } else { "auth0" }));
            c.faults.p_lost = 0.3;
            c.faults.latency_ms = (20, 300);
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "lost-response-no-grace", reference: "B7b", summary: "rotation answer lost without grace: ReauthRequired(ResponseLost) exactly once", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("lost-response-no-grace", strict());
            c.initial = Initial::Expired;
            c.pattern = Pattern::Bursts { first: Duration::ZERO, every: secs(60) };
            c.faults.p_lost = 1.0;
            c.heal_at = Some(secs(r.range(1, 30)));
            c.duration = secs(H / 2);
            c.reauth = ReauthExpect::ExactlyOnce("ResponseLost".into());
            c.allow_revoked_family = true;
            c
        }},
        Scenario { name: "engine-owns-retries", reference: "B8", summary: "transient failures are retried by the engine only: no replay, no family revoke", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("engine-owns-retries", strict());
            c.faults.p_not_delivered = 0.2;
            c.faults.p_5xx = 0.2;
            c.faults.latency_tail = 0.1;
            c.processes = r.range(1, 3) as usize;
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "save-fails", reference: "C9", summary: "saves fail after a rotation: serve from memory, retry the save, never re-authorize", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("save-fails", strict());
            c.faults.store_write_fail = 0.2 + r.unit() * 0.6;
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "crash-before-save", reference: "C10", summary: "crash between the provider's answer and the save; restart reads the old refresh token", in_suite: true, file: None, build: |r| {
            let grace = r.chance(0.5);
            let mut c = WorldConfig::base("crash-before-save", if grace { profile("okta") } else { strict() });
            c.initial = Initial::Expired;
            c.schedule.push((Duration::ZERO, Action::CrashOnNextSave { proc: 0, restart_after: secs(r.range(1, 20)) }));
            c.duration = secs(2 * H);
            if grace {
                c.reauth = ReauthExpect::Never;
            } else {
                c.reauth = ReauthExpect::Allowed;
                c.allow_revoked_family = true;
            }
            c
        }},
        Scenario { name: "slow-store", reference: "C11", summary: "slow or hung persistence is bounded by the store timeout", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("slow-store", strict());
            c.faults.store_latency_ms = (100, 3000);
            c.faults.store_hang = 0.1 + r.unit() * 0.2;
            c.processes = r.range(1, 3) as usize;
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "rt-omitted", reference: "C12", summary: "answers that omit refresh_token keep the old one; new ones are never overwritten", in_suite: true, file: None, build: |r| {
            let mut p = strict();
            p.omit_refresh_token = 0.2 + r.unit() * 0.6;
            let mut c = WorldConfig::base("rt-omitted", p);
            c.processes = r.range(1, 3) as usize;
            c.duration = secs(6 * H);
            c
        }},
        Scenario { name: "restart-keeps-expiry", reference: "C13", summary: "restarts reload the absolute expiry, never re-derive it from expires_in", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("restart-keeps-expiry", strict());
            c.initial = Initial::Aged;
            for k in 0..6 {
                c.schedule.push((secs(k * 1800 + r.range(1, 1700)), Action::Shutdown { proc: 0, restart_after: secs(r.range(1, 600)) }));
            }
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "clock-skew", reference: "D14", summary: "client, provider and resource server clocks disagree by minutes", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("clock-skew", strict());
            c.provider_skew_secs = r.range(0, 600) as i64 - 300;
            c.process_skew_secs = 300;
            c.processes = 2;
            c.faults.p_429 = 0.1;
            c.faults.retry_after_date = true;
            c.schedule.push((secs(H), Action::Crash { proc: 0, restart_after: secs(30) }));
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "clock-jump", reference: "D15", summary: "wall-clock steps (suspend, NTP) do not move monotonic deadlines", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("clock-jump", strict());
            for k in 0..4 {
                let secs_ = r.range(0, 7200) as i64 - 3600;
                c.schedule.push((secs(k * 2700 + 100), Action::JumpWall { proc: 0, secs: secs_ }));
            }
            c.duration = secs(4 * H);
            // A stepped wall clock only matters for stored expiry; serving uses monotonic time.
            c
        }},
        Scenario { name: "odd-expires-in", reference: "D16", summary: "expires_in missing, a string, 0, negative, huge, float: defined policy, no loop", in_suite: true, file: None, build: |r| {
            let mut p = strict();
            p.expires = match r.below(3) { 0 => ExpiresStyle::Odd, 1 => ExpiresStyle::String, _ => ExpiresStyle::MissingIssuedAtMs };
            let mut c = WorldConfig::base("odd-expires-in", p);
            // The engine may assume a lifetime other than the real one: the resource server
            // arbitrates; the oracle allows what the provider really issued.
            c.duration = secs(3 * H);
            c.lifetime_known = false;
            c.max_calls_per_credential = Some(3 * H / 30 + 2);
            c
        }},
        Scenario { name: "short-lifetime", reference: "D17", summary: "60 s tokens with a larger refresh margin: one refresh per lifetime, no loop", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("short-lifetime", Profile::strict(secs(r.range(40, 90))));
            c.pattern = Pattern::Steady { mean: secs(5) };
            c.duration = secs(H);
            let life = c.profile.at_lifetime.as_secs();
            // The skew allowance (capped at half the lifetime) makes the serving deadline, hence the
            // refresh point, fall at half the lifetime at the latest.
            c.max_calls_per_credential = Some(H / (life / 2) + 2);
            c
        }},
        Scenario { name: "synchronized-expiry", reference: "D18", summary: "many tokens minted together: jitter spreads refreshes (peak rate reported)", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("synchronized-expiry", strict());
            c.credentials = r.range(50, 300) as usize;
            c.callers = 2;
            c.jitter = r.chance(0.8);
            c.pattern = Pattern::Steady { mean: secs(30) };
            c.duration = secs(3 * H);
            c
        }},
        Scenario { name: "outage-5xx", reference: "E19", summary: "5xx and timeout bursts: keep serving, back off with jitter, never clear tokens", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("outage-5xx", strict());
            c.faults.p_5xx = 0.9;
            c.faults.p_not_delivered = 0.5;
            c.faults.latency_tail = 0.2;
            c.heal_at = Some(secs(r.range(H / 2, 3 * H)));
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "rate-limited", reference: "E20", summary: "429/503 with Retry-After in both forms; callers share one negative cache", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("rate-limited", strict());
            c.faults.p_429 = 0.5;
            c.faults.p_503 = 0.5;
            c.faults.retry_after_date = r.chance(0.5);
            c.faults.retry_after_secs = r.range(1, 600);
            c.callers = r.range(10, 500) as usize;
            c.pattern = Pattern::Steady { mean: secs(10) };
            c.heal_at = Some(secs(2 * H));
            c.duration = secs(3 * H);
            c.max_calls_per_credential = Some(2 * H / (c.faults.retry_after_secs.max(1)) + 3 * H / (H * 6 / 10) + 4);
            c
        }},
        Scenario { name: "invalid-grant", reference: "E21", summary: "a revoked grant: ReauthRequired(InvalidGrant) once, never retried in a loop", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("invalid-grant", strict());
            c.processes = r.range(1, 3) as usize;
            c.schedule.push((secs(r.range(60, 2 * H)), Action::Revoke { cred: 0 }));
            c.duration = secs(4 * H);
            c.reauth = ReauthExpect::ExactlyOnce("InvalidGrant".into());
            c.allow_revoked_family = true;
            c.max_calls_per_credential = Some(4 * H / (H * 6 / 10) + 2 * c.processes as u64);
            c
        }},
        Scenario { name: "error-as-200", reference: "E22", summary: "HTTP 200 with error bodies (GitHub), HTML or empty bodies", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("error-as-200", Profile { at_lifetime: secs(H), ..profile("github-user") });
            c.faults.p_malformed = 0.1 + r.unit() * 0.2;
            c.faults.latency_ms = (20, 100);
            c.reauth = ReauthExpect::Allowed;
            c.allow_revoked_family = true;
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "transient-invalid-client", reference: "E23", summary: "one transient invalid_client does not poison the credential", in_suite: true, file: None, build: |_| {
            let mut c = WorldConfig::base("transient-invalid-client", strict());
            c.faults.p_invalid_client = 0.3;
            c.heal_at = Some(secs(H / 2));
            c.reauth = ReauthExpect::Allowed;
            c.allow_revoked_family = false;
            c.check_convergence = false;
            c.duration = secs(3 * H);
            c
        }},
        Scenario { name: "vendor-formats", reference: "E24", summary: "form-encoded responses and Slack's ok:false envelope", in_suite: true, file: None, build: |r| {
            let mut p = if r.chance(0.5) { Profile { at_lifetime: secs(H), ..profile("slack") } } else { strict() };
            if p.name == "strict" {
                p.form_encoded = true;
            }
            let mut c = WorldConfig::base("vendor-formats", p);
            c.faults.p_5xx = 0.1;
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "revoked-token-401", reference: "F25", summary: "the resource server rejects a token the engine thinks valid: invalidate, refresh once, retry once", in_suite: true, file: None, build: |r| {
            // Tokens outlive the run: every refresh is caused by a 401 after the provider
            // revoked the access tokens (an admin action), at 2 to 6 random times.
            let mut c = WorldConfig::base("revoked-token-401", Profile { at_lifetime: secs(8 * H), ..profile("github-user") });
            c.processes = r.range(1, 3) as usize;
            c.callers = r.range(10, 300) as usize;
            c.pattern = Pattern::Steady { mean: secs(20) };
            c.io_time = Duration::from_millis(r.range(10, 3000));
            c.duration = secs(3 * H);
            let revocations = r.range(2, 6);
            for _ in 0..revocations {
                c.schedule.push((secs(r.range(10 * 60, 3 * H - 10 * 60)), Action::RevokeAccess { cred: 0 }));
            }
            c.schedule.sort_by_key(|(at, _)| *at);
            // One refresh per revocation and process at most (each process learns of the
            // revocation from its own 401), plus the start.
            c.max_calls_per_credential = Some(revocations * c.processes as u64 + 2);
            c.check_unauthorized_retries = true;
            c
        }},
        Scenario { name: "step-up-403", reference: "F26", summary: "403 insufficient_scope is a step-up, never a refresh: refreshes stay at one per token lifetime", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("step-up-403", strict());
            c.callers = r.range(10, 200) as usize;
            c.pattern = Pattern::Steady { mean: secs(30) };
            c.step_up_every = r.range(2, 10);
            c.duration = secs(4 * H);
            // One refresh per lifetime at most (1 h tokens), plus the start: a 403 that caused
            // refreshes would blow through this at these request rates.
            c.max_calls_per_credential = Some(4 + 2);
            c
        }},
        Scenario { name: "long-streams", reference: "F27", summary: "callers holding tokens for long I/O never block others", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("long-streams", strict());
            c.io_time = secs(r.range(60, 1800));
            c.callers = 50;
            c.pattern = Pattern::Steady { mean: secs(120) };
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "cancelled-callers", reference: "G28", summary: "callers cancel mid-refresh: the refresh completes and is persisted for the others", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("cancelled-callers", strict());
            c.initial = Initial::Expired;
            c.caller_timeout = Some(Duration::from_millis(r.range(1, 500)));
            c.faults.latency_ms = (200, 2000);
            c.callers = r.range(5, 100) as usize;
            c.duration = secs(3 * H);
            c
        }},
        Scenario { name: "shutdown-mid-refresh", reference: "G29", summary: "shutdown during an in-flight refresh leaves no half-written store", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("shutdown-mid-refresh", strict());
            c.initial = Initial::Expired;
            c.faults.latency_ms = (1000, 5000);
            c.schedule.push((Duration::from_millis(r.range(1, 3000)), Action::Shutdown { proc: 0, restart_after: secs(5) }));
            c.duration = secs(2 * H);
            c
        }},
        Scenario { name: "no-refresh-token", reference: "H31", summary: "no refresh token issued: re-authorization surfaces before the token expires", in_suite: true, file: None, build: |_| {
            let mut p = strict();
            p.issues_refresh_token = false;
            let mut c = WorldConfig::base("no-refresh-token", p);
            c.duration = secs(2 * H);
            c.reauth = ReauthExpect::ExactlyOnce("NoRefreshToken".into());
            c.exact_calls_per_credential = Some(0);
            c.check_convergence = false;
            c
        }},
        Scenario { name: "store-outage", reference: "J38", summary: "the shared store is unreachable for minutes at a time: no replay, no lost rotation, recovery after", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("store-outage", strict());
            c.processes = r.range(2, 4) as usize;
            c.initial = Initial::Aged;
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 60)) };
            for k in 0..r.range(3, 4) {
                let at = secs(k * H + r.range(0, H - 1));
                c.schedule.push((at, Action::StoreOutage { cred: 0, duration: secs(r.range(300, 2400)) }));
            }
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "lease-faults", reference: "J39", summary: "lease operations and store reads fail or hang: processes sharing a store never redeem a spent refresh token", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("lease-faults", strict());
            c.processes = r.range(2, 4) as usize;
            c.initial = if r.chance(0.5) { Initial::Expired } else { Initial::Aged };
            c.faults.lease_fail = 0.1 + r.unit() * 0.4;
            c.faults.lease_hang = r.unit() * 0.1;
            c.faults.load_fail = 0.05 + r.unit() * 0.25;
            c.faults.load_hang = r.unit() * 0.05;
            c.faults.latency_ms = (100, 2000);
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 60)) };
            c.heal_at = Some(secs(3 * H));
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "store-lies", reference: "J45", summary: "the store acknowledges saves it loses and answers reads with older sets: no process goes back to a set it replaced or sends a refresh token it saw rotated; what the lies cost is the store's", in_suite: true, file: None, build: |r| {
            // 10-60 min tokens: more refreshes, hence more saves and reads for the store to lie about.
            let life = secs(r.range(600, H));
            let p = if r.chance(0.5) { Profile { at_lifetime: life, ..profile("okta") } } else { Profile::strict(life) };
            let mut c = WorldConfig::base("store-lies", p);
            c.processes = r.range(1, 3) as usize;
            c.initial = [Initial::Fresh, Initial::Aged, Initial::Expired][r.below(3)];
            // One lie, the other, or both.
            let which = r.below(3);
            if which != 1 {
                c.faults.save_lost = 0.1 + r.unit() * 0.5;
            }
            if which != 0 {
                c.faults.stale_read = 0.1 + r.unit() * 0.6;
            }
            c.faults.store_latency_ms = (0, r.range(1, 200));
            c.eager = r.chance(0.3);
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 120)) };
            c.heal_at = Some(secs(r.range(H, 4 * H)));
            c.duration = secs(5 * H);
            c
        }},
        Scenario { name: "suspend", reference: "K40", summary: "the host sleeps for hours (monotonic clock stopped, wall clock running): no expired token served after resume", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("suspend", strict());
            c.processes = r.range(1, 2) as usize;
            c.eager = r.chance(0.5);
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 60)) };
            // Longer than the 1 h token lifetime: the token held at the suspend is long expired
            // at the resume, though the host's monotonic clock says little time passed.
            let at = r.range(600, 3000);
            let slept = r.range(H, 6 * H);
            c.schedule.push((secs(at), Action::Suspend { proc: 0, duration: secs(slept) }));
            c.duration = secs(at + slept + H);
            c
        }},
        Scenario { name: "login-during-refresh", reference: "K41", summary: "a login lands while a refresh is in flight: the flight's older result never overwrites it", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("login-during-refresh", strict());
            c.processes = r.range(1, 2) as usize;
            // Without jitter and with the eager timer, every process refreshes the login tokens
            // at exactly 75 % of their life (2700 s); the answer takes 9.1-9.9 s (inside the
            // default 10 s refresh timeout: with slower answers every refresh is abandoned as
            // ambiguous and the world tests timeouts instead), and the new login lands 0.5-9 s
            // into it.
            c.jitter = false;
            c.eager = true;
            c.faults.latency_ms = (9_100, 9_900);
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 60)) };
            let proc = r.below(c.processes);
            c.schedule.push((secs(2700) + Duration::from_millis(r.range(500, 9000)), Action::Login { proc }));
            c.duration = secs(3 * H);
            c
        }},
        Scenario { name: "newer-during-save-retry", reference: "K42", summary: "another writer stores a newer set while a save is being retried: the retry never writes the older set over it", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("newer-during-save-retry", strict());
            c.processes = r.range(1, 2) as usize;
            c.initial = Initial::Expired;
            c.faults.store_write_fail = 0.5 + r.unit() * 0.4;
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 60)) };
            for k in 0..3 {
                c.schedule.push((secs(k * H + r.range(0, 600)), Action::WriteNewer { cred: 0 }));
            }
            c.heal_at = Some(secs(3 * H));
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "panicking-listener", reference: "K44", summary: "an event listener of the host's panics: the credential keeps serving and recovers", in_suite: true, file: None, build: |r| {
            let mut c = WorldConfig::base("panicking-listener", strict());
            c.processes = r.range(1, 2) as usize;
            c.initial = [Initial::Fresh, Initial::Aged, Initial::Expired][r.below(3)];
            c.faults.listener_panics = 0.02 + r.unit() * 0.2;
            c.eager = r.chance(0.5);
            c.pattern = Pattern::Steady { mean: secs(r.range(5, 60)) };
            c.heal_at = Some(secs(r.range(H, 3 * H)));
            c.duration = secs(4 * H);
            c
        }},
        Scenario { name: "profiles", reference: "profiles", summary: "steady traffic against a provider profile drawn from the seed", in_suite: true, file: None, build: |r| {
            let name = Profile::NAMES[r.below(Profile::NAMES.len())];
            let mut c = WorldConfig::base("profiles", profile(name));
            c.processes = r.range(1, 3) as usize;
            c.duration = secs(c.profile.at_lifetime.as_secs().max(H) * 3);
            c.pattern = Pattern::Steady { mean: secs(c.profile.at_lifetime.as_secs() / 20) };
            c
        }},
        Scenario { name: "swarm", reference: "swarm", summary: "fault kinds and rates themselves drawn from the seed", in_suite: true, file: None, build: swarm },
        Scenario { name: "fleet", reference: "target", summary: "24 h of 10,000 credentials with 1 h tokens and 100 callers each", in_suite: false, file: None, build: |_| fleet(10_000, 100) },
    ]
}

/// A swarm world: which faults are on, and how strongly, is drawn from the seed.
fn swarm(r: &mut SimRng) -> WorldConfig {
    let name = ["strict", "okta", "auth0", "slack", "google", "xero"][r.below(6)];
    let mut c = WorldConfig::base("swarm", profile(name));
    let mut f = Faults::none();
    let p = |r: &mut SimRng, max: f64| if r.chance(0.4) { r.unit() * max } else { 0.0 };
    f.p_not_delivered = p(r, 0.3);
    f.p_5xx = p(r, 0.5);
    f.p_429 = p(r, 0.3);
    f.p_503 = p(r, 0.3);
    f.retry_after_date = r.chance(0.5);
    f.retry_after_secs = r.range(1, 300);
    f.store_write_fail = p(r, 0.5);
    f.store_hang = p(r, 0.1);
    f.store_latency_ms = if r.chance(0.3) {
        (0, r.range(1, 2000))
    } else {
        (0, 0)
    };
    f.latency_ms = (r.range(1, 100), r.range(100, 3000));
    f.latency_tail = p(r, 0.1);
    c.faults = f;
    c.processes = r.range(1, 4) as usize;
    c.callers = r.range(1, 100) as usize;
    c.initial = [Initial::Fresh, Initial::Aged, Initial::Expired][r.below(3)];
    c.pattern = if r.chance(0.7) {
        Pattern::Steady {
            mean: secs(r.range(1, 600)),
        }
    } else {
        Pattern::Bursts {
            first: secs(r.range(0, 600)),
            every: secs(r.range(60, 3600)),
        }
    };
    c.jitter = r.chance(0.8);
    c.eager = r.chance(0.3);
    c.duration = secs(r.range(1, 6) * H);
    c.heal_at = Some(secs(r.range(0, c.duration.as_secs())));
    let procs = c.processes;
    for _ in 0..r.range(0, 3) {
        let t = secs(r.range(0, c.duration.as_secs()));
        let a = match r.below(3) {
            0 => Action::Shutdown {
                proc: r.below(procs),
                restart_after: secs(r.range(1, 300)),
            },
            1 => Action::Overwrite { cred: 0 },
            _ => Action::JumpWall {
                proc: r.below(procs),
                secs: r.range(0, 7200) as i64 - 3600,
            },
        };
        c.schedule.push((t, a));
    }
    // The store's lies, drawn last: a seed's other draws are those it had before they existed.
    c.faults.save_lost = p(r, 0.3);
    c.faults.stale_read = p(r, 0.4);
    c
}

/// The throughput target world: `credentials` credentials with 1 h tokens and `callers`
/// callers each for 24 simulated hours.
///
/// Request pattern: every caller wakes at independent, jittered intervals of 30 min on
/// average (uniform in 15–45 min), so 100 callers make one credential see a request every 18 s
/// on average: 48 requests per caller per day, 48 million requests in all for 10,000
/// credentials. Tokens start at random ages so the fleet is in steady state.
pub fn fleet(credentials: usize, callers: usize) -> WorldConfig {
    let mut c = WorldConfig::base("fleet", strict());
    c.credentials = credentials;
    c.callers = callers;
    c.initial = Initial::Aged;
    c.pattern = Pattern::Steady { mean: secs(1800) };
    c.duration = secs(24 * H);
    c.settle = secs(60);
    c.resource_server = false;
    c.max_steps = u64::MAX;
    // Independent credentials in cache-sized shards (see `WorldConfig::shard_credentials`).
    c.shard_credentials = FLEET_SHARD;
    c
}

/// Credentials per shard of the fleet run: small enough that a shard's working set (engines,
/// stores, provider records, executor) stays in the CPU caches.
///
/// Measured on one core of a 2-core EPYC VM (fleet, seed 1, CPU seconds, best of 2):
/// 100 → 10.3 s, 50 → 9.9 s, 25 → 9.5 s, 20 → 9.4 s, 10 → 8.8 s, 5 → 8.4 s. The instruction
/// count is the same at every size (cachegrind: 1.009 G per 100 credentials), so the
/// difference is the memory hierarchy: a credential's part of a world is about 12 KB of heap,
/// and a shard of 100 outgrows the 32 KB first-level data cache many times over. Credentials
/// share nothing, so the size only decides which credentials share an executor and which seed
/// each shard draws: every oracle runs in every shard either way.
pub const FLEET_SHARD: usize = 10;

/// The scenario called `name`.
///
/// # Errors
/// The list of known names.
pub fn by_name(name: &str) -> Result<Scenario, String> {
    all().into_iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<_> = all().iter().map(|s| s.name).collect();
        format!(
            "unknown scenario {name:?}; known scenarios: {}",
            names.join(", ")
        )
    })
}

/// How a command line picks a scenario: `--scenario NAME` or `--scenario-file PATH`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ScenarioArgs {
    /// Scenario name (see `list`).
    #[arg(long, conflicts_with = "scenario_file")]
    pub scenario: Option<String>,
    /// A scenario file of your own (TOML; `scenario show NAME` prints a built-in one as a
    /// file to start from).
    #[arg(long, value_name = "PATH")]
    pub scenario_file: Option<std::path::PathBuf>,
}

impl ScenarioArgs {
    /// The chosen scenario, `None` when neither flag is given.
    ///
    /// # Errors
    /// An unknown name (with the list of names), or a scenario file that does not load (with
    /// its position).
    pub fn pick(&self) -> Result<Option<Scenario>, String> {
        match (&self.scenario, &self.scenario_file) {
            (Some(_), Some(_)) => Err("give --scenario or --scenario-file, not both".into()),
            (Some(name), None) => by_name(name).map(Some),
            (None, Some(path)) => Scenario::from_file(path)
                .map(Some)
                .map_err(|e| e.to_string()),
            (None, None) => Ok(None),
        }
    }
}

//! `keepfresh-sim probe`: finds out what a token endpoint really does with refresh tokens, by
//! spending a few of them under a budget stated up front.
//!
//! Questions, in order: does it rotate refresh tokens; does reusing a spent one revoke the
//! whole grant (checked by using the newest token afterwards); how long is its grace window
//! (bisected); do access tokens live as long as `expires_in` says and does a refresh kill the
//! old access token (both need a resource URL that accepts the access token); and what N
//! concurrent refreshes of one refresh token do, repeated: how many succeed, whether the grant
//! forked into two live chains, whether a late request revoked the winners. Only follow-up
//! requests can tell these apart: the answers themselves look alike.
//!
//! Every request is logged with fingerprints in place of tokens, and each finding cites the
//! requests that prove it.

mod report;
mod wire;

use std::time::Duration;

use keepfresh::oauth::{ClientAuth, HttpRefresher};
use keepfresh::{AccessToken, ClientSecret, ErrorClass, RefreshToken, TokenResponse};

pub use report::{Answer, Finding, PlannedStep, ProbeReport};
pub use wire::Exchange;

use crate::http::{HttpProvider, ServeConfig};
use crate::load::grants::GrantSourceArgs;
use report::{plan_text, verdicts};
use wire::Wire;

/// The token endpoint to probe and the client to probe it as. `Debug` never shows the secret.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Token endpoint URL.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// A confidential client's secret.
    pub client_secret: Option<ClientSecret>,
    /// How the secret is sent.
    pub client_auth: ClientAuth,
    /// RFC 8707 resources sent on every refresh.
    pub resources: Vec<String>,
    /// Scope sent on every refresh.
    pub scope: Option<String>,
    /// A URL that answers 200 to a live access token and 401 to a dead one.
    pub resource_url: Option<String>,
}

/// How much the probe may do.
///
/// # Default
/// Spend every refresh token given; 2 requests at once, 3 rounds; grace window searched up to
/// 60 s to 1 s; access-token lifetime watched for up to 60 s; 30 s per request.
///
/// ```
/// use keepfresh_sim::probe::ProbeLimits;
/// assert!(ProbeLimits::default().validate().is_ok());
/// assert!(ProbeLimits { at_once: 1, ..ProbeLimits::default() }.validate().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct ProbeLimits {
    /// Refresh tokens it may spend (`None`: all given).
    pub spend: Option<usize>,
    /// Concurrent refreshes of one refresh token per round.
    pub at_once: usize,
    /// Concurrent rounds.
    pub rounds: usize,
    /// The longest grace window looked for.
    pub grace_max: Duration,
    /// Bisection stops when the grace window is known to this.
    pub grace_resolution: Duration,
    /// The longest wait for an access token to die.
    pub lifetime_wait: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for ProbeLimits {
    fn default() -> Self {
        ProbeLimits {
            spend: None,
            at_once: 2,
            rounds: 3,
            grace_max: Duration::from_secs(60),
            grace_resolution: Duration::from_secs(1),
            lifetime_wait: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

impl ProbeLimits {
    /// Checks the limits.
    ///
    /// # Errors
    /// Fewer than 2 requests at once or more than 64, no round or more than 100, a zero
    /// resolution or timeout, waits over a day.
    ///
    /// See the [type-level example](ProbeLimits).
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=64).contains(&self.at_once) {
            return Err(format!(
                "requests at once must be between 2 and 64, got {}",
                self.at_once
            ));
        }
        if !(1..=100).contains(&self.rounds) {
            return Err(format!(
                "rounds must be between 1 and 100, got {}",
                self.rounds
            ));
        }
        if self.grace_resolution.is_zero() || self.timeout.is_zero() {
            return Err("the grace resolution and the request timeout must be positive".into());
        }
        let day = Duration::from_secs(86_400);
        if self.grace_max > day || self.lifetime_wait > day {
            return Err("waits are limited to a day".into());
        }
        if self.spend == Some(0) {
            return Err("a probe needs at least one refresh token to spend".into());
        }
        Ok(())
    }

    /// Bisection steps the grace search may take after its first two trials.
    fn bisections(&self) -> usize {
        let ratio = self.grace_max.as_secs_f64() / self.grace_resolution.as_secs_f64();
        if ratio <= 1.0 {
            0
        } else {
            (ratio.log2().ceil() as usize).min(32)
        }
    }

    /// The plan: each step's most grants and token requests, in order.
    fn plan(&self, resource: bool) -> Vec<PlannedStep> {
        let grace_trials = 2 + self.bisections();
        let mut plan = vec![PlannedStep {
            step: "rotation",
            grants: 1,
            token_requests: 1,
            what: "one refresh: is a new refresh token issued?".into(),
        }];
        if resource {
            plan.push(PlannedStep {
                step: "old_access_token",
                grants: 0,
                token_requests: 1,
                what: "refresh again on the same grant; is the previous access token still \
                       accepted?"
                    .into(),
            });
            plan.push(PlannedStep {
                step: "access_lifetime",
                grants: 0,
                token_requests: 0,
                what: format!(
                    "watch the newest access token at the resource for up to {} s",
                    self.lifetime_wait.as_secs_f64()
                ),
            });
        }
        plan.push(PlannedStep {
            step: "reuse_and_grace",
            grants: grace_trials,
            token_requests: 3 * grace_trials,
            what: format!(
                "per trial: refresh, wait, present the spent token again, then the newest; \
                 bisect the grace window up to {} s to {} s (each refused reuse may revoke a \
                 grant)",
                self.grace_max.as_secs_f64(),
                self.grace_resolution.as_secs_f64()
            ),
        });
        plan.push(PlannedStep {
            step: "concurrent",
            grants: self.rounds,
            token_requests: self.rounds * 2 * self.at_once,
            what: format!(
                "{} round(s): {} refreshes of one token at once, then one refresh of each \
                 refresh token they returned",
                self.rounds, self.at_once
            ),
        });
        plan
    }
}

/// The grants the probe may spend, in order, with the budget.
struct Pool {
    tokens: std::vec::IntoIter<RefreshToken>,
    left: usize,
    spent: usize,
}

impl Pool {
    fn take(&mut self) -> Option<RefreshToken> {
        if self.left == 0 {
            return None;
        }
        let t = self.tokens.next()?;
        self.left -= 1;
        self.spent += 1;
        Some(t)
    }
}

/// A grant's newest state as the probe knows it.
struct Chain {
    refresh: RefreshToken,
    access: Option<Issued>,
}

/// An access token, its stated `expires_in`, and when (probe seconds) its answer arrived.
#[derive(Clone)]
struct Issued {
    token: AccessToken,
    expires_in: Option<i64>,
    received_s: f64,
}

struct Probe<'a> {
    wire: Wire,
    limits: &'a ProbeLimits,
    pool: Pool,
    chain: Option<Chain>,
    findings: Vec<Finding>,
    rotates: Option<bool>,
}

fn unknown(question: &'static str, why: impl Into<String>, evidence: Vec<usize>) -> Finding {
    let why = why.into();
    Finding {
        question,
        summary: format!("not determined: {why}"),
        answer: Answer::Unknown { why },
        evidence,
    }
}

/// The refresh token a successful answer leaves the grant with (the old one when the answer
/// carries none), and whether it is new.
fn next_refresh(old: &RefreshToken, r: &TokenResponse) -> (RefreshToken, bool) {
    match r.refresh_token() {
        Some(n) if n.expose_secret() != old.expose_secret() => (n.clone(), true),
        _ => (old.clone(), false),
    }
}

impl Probe<'_> {
    /// The live chain's refresh token, or a fresh grant from the pool.
    fn live(&mut self) -> Option<RefreshToken> {
        if let Some(c) = &self.chain {
            return Some(c.refresh.clone());
        }
        let t = self.pool.take()?;
        self.chain = Some(Chain {
            refresh: t.clone(),
            access: None,
        });
        Some(t)
    }

    fn advance(&mut self, old: &RefreshToken, r: &TokenResponse) -> RefreshToken {
        let (next, _) = next_refresh(old, r);
        self.chain = Some(Chain {
            refresh: next.clone(),
            access: Some(Issued {
                token: r.access_token().clone(),
                expires_in: r.expires_in(),
                received_s: self.wire.now_s(),
            }),
        });
        next
    }

    async fn rotation(&mut self) -> bool {
        self.wire.set_step("rotation");
        let Some(rt) = self.live() else {
            self.findings
                .push(unknown("rotation", "no refresh token to spend", vec![]));
            return false;
        };
        let (id, result) = self.wire.refresh(&rt).await;
        match result {
            Ok(r) => {
                let omitted = r.refresh_token().is_none();
                let (_, rotates) = next_refresh(&rt, &r);
                self.advance(&rt, &r);
                self.rotates = Some(rotates);
                let summary = match (rotates, omitted) {
                    (true, _) => "yes: the refresh answer carries a new refresh token".to_owned(),
                    (false, true) => {
                        "no: the answer carries no refresh token (the old one stays in use)"
                            .to_owned()
                    }
                    (false, false) => "no: the answer carries the same refresh token".to_owned(),
                };
                self.findings.push(Finding {
                    question: "rotation",
                    answer: Answer::Rotation { rotates, omitted },
                    summary,
                    evidence: vec![id],
                });
                true
            }
            Err(e) => {
                self.chain = None;
                self.findings.push(unknown(
                    "rotation",
                    format!(
                        "the first refresh failed ({}: {}); check the client and the refresh \
                         tokens",
                        e.class(),
                        self.wire.scrub(e.message())
                    ),
                    vec![id],
                ));
                false
            }
        }
    }

    async fn old_access_token(&mut self) {
        self.wire.set_step("old_access_token");
        let Some((refresh, old_at)) = self.chain.as_ref().and_then(|c| {
            c.access
                .as_ref()
                .map(|a| (c.refresh.clone(), a.token.clone()))
        }) else {
            self.findings.push(unknown(
                "old_access_token",
                "no access token from the rotation step",
                vec![],
            ));
            return;
        };
        let (a, before) = self.wire.resource(&old_at).await;
        if before != Some(200) {
            self.findings.push(unknown(
                "old_access_token",
                format!(
                    "the resource did not accept a fresh access token ({}); is the resource \
                     URL right?",
                    before.map_or("unreachable".into(), |s| format!("HTTP {s}"))
                ),
                vec![a],
            ));
            return;
        }
        let (b, result) = self.wire.refresh(&refresh).await;
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                self.chain = None;
                self.findings.push(unknown(
                    "old_access_token",
                    format!("the second refresh failed ({})", e.class()),
                    vec![a, b],
                ));
                return;
            }
        };
        self.advance(&refresh, &r);
        let (c, after) = self.wire.resource(&old_at).await;
        let (d, new) = self.wire.resource(r.access_token()).await;
        let evidence = vec![a, b, c, d];
        let finding = match (after, new) {
            (Some(401 | 403), Some(200)) => Finding {
                question: "old_access_token",
                answer: Answer::OldAccessToken { killed: true },
                summary: "killed: the access token issued before a refresh is refused after it"
                    .into(),
                evidence,
            },
            (Some(200), Some(200)) => Finding {
                question: "old_access_token",
                answer: Answer::OldAccessToken { killed: false },
                summary: "kept: the previous access token is still accepted after a refresh".into(),
                evidence,
            },
            _ => unknown(
                "old_access_token",
                "the resource answered neither 200 nor 401 as expected",
                evidence,
            ),
        };
        self.findings.push(finding);
    }

    async fn access_lifetime(&mut self) {
        self.wire.set_step("access_lifetime");
        let Some(Issued {
            token: at,
            expires_in,
            received_s: received,
        }) = self.chain.as_ref().and_then(|c| c.access.clone())
        else {
            self.findings.push(unknown(
                "access_lifetime",
                "no access token to watch",
                vec![],
            ));
            return;
        };
        // An expires_in worth checking: positive and below ten years.
        let stated = expires_in.filter(|e| *e > 0 && *e < 10 * 365 * 86_400);
        let wait = self.limits.lifetime_wait.as_secs_f64();
        let margin = stated.map_or(0.0, |e| (e as f64 * 0.1).clamp(0.5, 60.0));
        let limit = stated.map_or(wait, |e| (e as f64 + margin).min(wait));
        let step = (limit / 20.0).max(0.05);
        let mut evidence = Vec::new();
        let mut alive_at = 0.0;
        let mut dead_at = None;
        let mut age = 0.0;
        loop {
            let target = received + age;
            let now = self.wire.now_s();
            if target > now {
                tokio::time::sleep(Duration::from_secs_f64(target - now)).await;
            }
            let measured = self.wire.now_s() - received;
            let (id, status) = self.wire.resource(&at).await;
            evidence.push(id);
            match status {
                Some(200) => alive_at = measured,
                Some(401 | 403) => {
                    dead_at = Some(measured);
                    break;
                }
                _ => {
                    self.findings.push(unknown(
                        "access_lifetime",
                        "the resource answered neither 200 nor 401",
                        evidence,
                    ));
                    return;
                }
            }
            if age >= limit {
                break;
            }
            age = (age + step).min(limit);
        }
        // Cite the first request, the last alive one and the first dead one.
        let cited = if evidence.len() > 3 {
            vec![
                evidence[0],
                evidence[evidence.len() - 2],
                evidence[evidence.len() - 1],
            ]
        } else {
            evidence
        };
        let (judgement, summary) = match (expires_in, stated, dead_at) {
            (None, _, Some(d)) => (
                "no_expires_in",
                format!("no expires_in sent; the token died between {alive_at:.1} s and {d:.1} s"),
            ),
            (None, _, None) => (
                "no_expires_in",
                format!("no expires_in sent; the token still worked after {alive_at:.1} s"),
            ),
            (Some(e), None, _) => (
                "absurd",
                format!(
                    "expires_in {e} is absurd; the token {} after {alive_at:.1} s",
                    if dead_at.is_some() {
                        "died"
                    } else {
                        "still worked"
                    }
                ),
            ),
            (Some(e), Some(_), Some(d)) if d < e as f64 - margin => (
                "shorter",
                format!(
                    "dies early: expires_in says {e} s, but it died between {alive_at:.1} s and \
                     {d:.1} s"
                ),
            ),
            (Some(e), Some(_), Some(d)) => (
                "honest",
                format!("honest: expires_in {e} s, died between {alive_at:.1} s and {d:.1} s"),
            ),
            (Some(e), Some(_), None) if alive_at >= e as f64 + margin - step => (
                "longer",
                format!("outlives expires_in {e} s: still accepted at {alive_at:.1} s"),
            ),
            (Some(e), Some(_), None) => (
                "unchecked_end",
                format!(
                    "still accepted at {alive_at:.1} s of the stated {e} s; a longer \
                     --lifetime-wait would check the end"
                ),
            ),
        };
        self.findings.push(Finding {
            question: "access_lifetime",
            answer: Answer::AccessLifetime {
                expires_in,
                alive_at_s: alive_at,
                dead_at_s: dead_at,
                judgement,
            },
            summary,
            evidence: cited,
        });
    }

    /// One reuse trial: rotate, wait `age`, present the spent token, and when refused, the
    /// newest one. `None` when it could not be run.
    async fn reuse_trial(&mut self, age: Duration) -> Option<Trial> {
        let rt = self.live()?;
        let (a, r) = self.wire.refresh(&rt).await;
        let Ok(r) = r else {
            self.chain = None;
            return Some(Trial::Broken(vec![a]));
        };
        let newest = self.advance(&rt, &r);
        if newest.expose_secret() == rt.expose_secret() {
            return Some(Trial::Broken(vec![a]));
        }
        let rotated_at = self.wire.now_s();
        tokio::time::sleep(age).await;
        let measured = self.wire.now_s() - rotated_at;
        let (b, again) = self.wire.refresh(&rt).await;
        match again {
            Ok(r2) => {
                // Keep the newest refresh token the provider handed out.
                let (n2, _) = next_refresh(&rt, &r2);
                if n2.expose_secret() != rt.expose_secret() {
                    self.advance(&rt, &r2);
                }
                Some(Trial::Accepted {
                    age: measured,
                    ids: vec![a, b],
                })
            }
            Err(e) if e.class() == ErrorClass::InvalidGrant => {
                let (c, check) = self.wire.refresh(&newest).await;
                let revoked = match check {
                    Ok(r3) => {
                        self.advance(&newest, &r3);
                        false
                    }
                    Err(e) if e.class() == ErrorClass::InvalidGrant => {
                        self.chain = None;
                        true
                    }
                    Err(_) => {
                        self.chain = None;
                        return Some(Trial::Broken(vec![a, b, c]));
                    }
                };
                Some(Trial::Refused {
                    age: measured,
                    revoked,
                    ids: vec![a, b, c],
                })
            }
            Err(_) => {
                self.chain = None;
                Some(Trial::Broken(vec![a, b]))
            }
        }
    }

    async fn reuse_and_grace(&mut self) {
        self.wire.set_step("reuse_and_grace");
        if self.rotates != Some(true) {
            let why = "refresh tokens do not rotate, so none is ever spent";
            self.findings.push(unknown("reuse", why, vec![]));
            self.findings.push(unknown("grace", why, vec![]));
            return;
        }
        let mut evidence = Vec::new();
        let mut accepted_at = 0.0f64;
        let mut refused_at: Option<f64> = None;
        let mut reuse: Option<(bool, Vec<usize>)> = None;
        let mut note = None;
        // Trial ages: 0, then the longest, then bisection.
        let mut lo = 0.0f64;
        let mut hi = self.limits.grace_max.as_secs_f64();
        let resolution = self.limits.grace_resolution.as_secs_f64();
        let mut trials = 0usize;
        let max_trials = 2 + self.limits.bisections();
        while trials < max_trials {
            let age = match trials {
                0 => 0.0,
                1 => hi,
                _ => {
                    if hi - lo <= resolution {
                        break;
                    }
                    (lo + hi) / 2.0
                }
            };
            trials += 1;
            let Some(trial) = self.reuse_trial(Duration::from_secs_f64(age)).await else {
                note = Some("the budget ran out");
                break;
            };
            match trial {
                Trial::Broken(ids) => {
                    evidence.extend(ids);
                    note = Some("a refresh failed for another reason than a spent token");
                    break;
                }
                Trial::Accepted { age, ids } => {
                    evidence.extend(ids);
                    accepted_at = accepted_at.max(age);
                    lo = lo.max(age);
                    if trials == 2 {
                        break; // accepted at the longest age tried
                    }
                }
                Trial::Refused { age, revoked, ids } => {
                    reuse = Some((revoked, ids.clone()));
                    evidence.extend(ids);
                    refused_at = Some(refused_at.map_or(age, |r: f64| r.min(age)));
                    hi = hi.min(age);
                    if trials == 1 {
                        break; // refused at once: no grace window
                    }
                }
            }
        }
        match reuse {
            Some((revoked, ids)) => self.findings.push(Finding {
                question: "reuse",
                answer: Answer::Reuse {
                    family_revoked: revoked,
                },
                summary: if revoked {
                    "family revoked: a spent refresh token is refused, and the newest one is \
                     refused after it"
                        .into()
                } else {
                    "error only: a spent refresh token is refused, the newest one still works"
                        .into()
                },
                evidence: ids,
            }),
            None => self.findings.push(unknown(
                "reuse",
                note.unwrap_or("a spent refresh token was never refused within the grace search"),
                evidence.clone(),
            )),
        }
        let grace = match (refused_at, note) {
            (Some(r), _) if accepted_at == 0.0 && lo == 0.0 && trials == 1 => Finding {
                question: "grace",
                answer: Answer::Grace {
                    at_least_s: 0.0,
                    below_s: Some(r),
                },
                summary: format!("none: a spent refresh token is refused at once ({r:.2} s)"),
                evidence,
            },
            (Some(r), _) => Finding {
                question: "grace",
                answer: Answer::Grace {
                    at_least_s: accepted_at,
                    below_s: Some(r),
                },
                summary: format!(
                    "a spent refresh token is still accepted at {accepted_at:.2} s, refused at \
                     {r:.2} s"
                ),
                evidence,
            },
            (None, None) => Finding {
                question: "grace",
                answer: Answer::Grace {
                    at_least_s: accepted_at,
                    below_s: None,
                },
                summary: format!(
                    "at least {accepted_at:.2} s: a spent refresh token was accepted at every \
                     age tried (raise --grace-max to look further)"
                ),
                evidence,
            },
            (None, Some(why)) => unknown("grace", why, evidence),
        };
        self.findings.push(grace);
    }

    async fn concurrent(&mut self) {
        self.wire.set_step("concurrent");
        let n = self.limits.at_once;
        let mut succeeded = Vec::new();
        let (mut forked, mut revoked, mut one) = (0, 0, 0);
        let mut evidence = Vec::new();
        let mut note: Option<String> = None;
        for _ in 0..self.limits.rounds {
            let Some(rt) = self.live() else {
                note = Some("the budget ran out".into());
                break;
            };
            let gate = std::sync::Arc::new(tokio::sync::Barrier::new(n));
            let wire = &self.wire;
            let calls = (0..n).map(|_| {
                let gate = gate.clone();
                let rt = rt.clone();
                async move {
                    gate.wait().await;
                    wire.refresh(&rt).await
                }
            });
            let answers = futures::future::join_all(calls).await;
            let mut live_chains: Vec<TokenResponse> = Vec::new();
            let mut chains: Vec<RefreshToken> = Vec::new();
            let mut ok = 0;
            for (id, r) in answers {
                evidence.push(id);
                if let Ok(r) = r {
                    ok += 1;
                    let (next, _) = next_refresh(&rt, &r);
                    if !chains
                        .iter()
                        .any(|c| c.expose_secret() == next.expose_secret())
                    {
                        chains.push(next);
                    }
                }
            }
            succeeded.push(ok);
            if ok == 0 {
                self.chain = None;
                note = Some("no request of a round succeeded".into());
                continue;
            }
            if self.rotates != Some(true) {
                one += 1;
                self.chain = Some(Chain {
                    refresh: rt.clone(),
                    access: None,
                });
                continue;
            }
            // Which of the returned refresh tokens still work?
            for c in &chains {
                let (id, r) = self.wire.refresh(c).await;
                evidence.push(id);
                if let Ok(r) = r {
                    live_chains.push(r);
                }
            }
            match live_chains.len() {
                0 => revoked += 1,
                1 => one += 1,
                _ => forked += 1,
            }
            self.chain = live_chains.first().map(|r| Chain {
                refresh: r
                    .refresh_token()
                    .cloned()
                    .unwrap_or_else(|| chains[0].clone()),
                access: None,
            });
        }
        evidence.sort_unstable();
        let rounds = succeeded.len();
        if rounds == 0 {
            self.findings.push(unknown(
                "concurrent",
                note.unwrap_or_else(|| "no round ran".into()),
                evidence,
            ));
            return;
        }
        let ok_text: Vec<String> = succeeded.iter().map(|k| format!("{k}/{n}")).collect();
        let mut summary = format!(
            "{rounds} round(s) of {n} at once, succeeded {}: ",
            ok_text.join(", ")
        );
        let mut parts = Vec::new();
        if forked > 0 {
            parts.push(format!(
                "FORKED in {forked} (two or more refresh tokens from one parent stayed live)"
            ));
        }
        if revoked > 0 {
            parts.push(format!(
                "winners REVOKED in {revoked} (a late request killed the whole grant)"
            ));
        }
        if one > 0 {
            parts.push(format!("one live chain in {one}"));
        }
        summary.push_str(&parts.join("; "));
        if let Some(why) = note {
            summary.push_str(&format!(" (stopped early: {why})"));
        }
        self.findings.push(Finding {
            question: "concurrent",
            answer: Answer::Concurrent {
                at_once: n,
                rounds,
                succeeded,
                forked,
                winners_revoked: revoked,
                one_chain: one,
            },
            summary,
            evidence,
        });
    }
}

enum Trial {
    Accepted {
        age: f64,
        ids: Vec<usize>,
    },
    Refused {
        age: f64,
        revoked: bool,
        ids: Vec<usize>,
    },
    Broken(Vec<usize>),
}

/// Runs the probe against `endpoint`, spending at most `limits.spend` of `grants`. `announce`
/// receives the plan before anything is sent.
///
/// # Errors
/// Invalid limits, no grant, an endpoint the refresher refuses (bad URL, plain HTTP to a
/// remote host).
///
/// ```
/// use keepfresh::RefreshToken;
/// use keepfresh_sim::http::{HttpProvider, ServeConfig};
/// use keepfresh_sim::probe::{probe, Answer, Endpoint, ProbeLimits};
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() {
/// let server = HttpProvider::start(ServeConfig::new("strict"), 0).await.unwrap();
/// let grants: Vec<_> = (0..6)
///     .map(|_| RefreshToken::new(server.login().refresh_token.unwrap()))
///     .collect();
/// let endpoint = Endpoint {
///     token_url: server.token_url(), client_id: "probe".into(), client_secret: None,
///     client_auth: Default::default(), resources: vec![], scope: None,
///     resource_url: None,
/// };
/// let limits = ProbeLimits { rounds: 1, grace_max: std::time::Duration::from_millis(200), ..Default::default() };
/// let report = probe(&endpoint, grants, &limits, |_| {}).await.unwrap();
/// assert_eq!(report.finding("rotation").unwrap().answer, Answer::Rotation { rotates: true, omitted: false });
/// assert!(report.grants_spent <= 6);
/// # }
/// ```
pub async fn probe(
    endpoint: &Endpoint,
    grants: Vec<RefreshToken>,
    limits: &ProbeLimits,
    announce: impl FnOnce(&str),
) -> Result<ProbeReport, String> {
    limits.validate()?;
    if grants.is_empty() {
        return Err("no refresh token to spend".into());
    }
    let mut b = HttpRefresher::builder(endpoint.token_url.clone(), endpoint.client_id.clone())
        .client_auth(endpoint.client_auth)
        .timeout(limits.timeout);
    if let Some(s) = &endpoint.client_secret {
        b = b.client_secret(s.clone());
    }
    for r in &endpoint.resources {
        b = b.resource(r.clone());
    }
    let refresher = b.build().map_err(|e| e.to_string())?;
    let wire = Wire::new(
        refresher,
        endpoint.resource_url.clone(),
        endpoint.scope.clone(),
        limits.timeout,
    )?;
    if let Some(secret) = &endpoint.client_secret {
        wire.know(secret.expose_secret());
    }
    for g in &grants {
        wire.know(g.expose_secret());
    }
    let given = grants.len();
    let allowed = limits.spend.unwrap_or(given).min(given);
    let plan = limits.plan(wire.has_resource());
    announce(&plan_text(&endpoint.token_url, given, allowed, &plan));
    let mut p = Probe {
        wire,
        limits,
        pool: Pool {
            tokens: grants.into_iter(),
            left: allowed,
            spent: 0,
        },
        chain: None,
        findings: Vec::new(),
        rotates: None,
    };
    if p.rotation().await {
        if p.wire.has_resource() {
            p.old_access_token().await;
            p.access_lifetime().await;
        } else {
            let why = "needs --resource-url";
            p.findings.push(unknown("old_access_token", why, vec![]));
            p.findings.push(unknown("access_lifetime", why, vec![]));
        }
        p.reuse_and_grace().await;
        p.concurrent().await;
    }
    let findings = p.findings;
    Ok(ProbeReport {
        target: endpoint.token_url.clone(),
        grants_given: given,
        grants_allowed: allowed,
        grants_spent: p.pool.spent,
        plan,
        verdicts: verdicts(&findings),
        findings,
        exchanges: p.wire.exchanges(),
        elapsed_s: p.wire.now_s(),
    })
}

/// Options of `keepfresh-sim probe`.
///
/// Secrets never come from the command line: refresh tokens from `--grants-file` (a private
/// file, one per line) or the `KEEPFRESH_REFRESH_TOKENS` variable (whitespace-separated), or
/// minted by `--mint-command`; a client secret from `KEEPFRESH_CLIENT_SECRET` or
/// `--client-secret-file`. Without `--token-url`, the built-in mock provider (`--profile`) is
/// probed with grants it mints.
///
/// ```
/// use clap::Parser;
/// use keepfresh_sim::probe::ProbeArgs;
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     probe: ProbeArgs,
/// }
/// let cli = Cli::try_parse_from(["probe", "--profile", "okta", "--grace-max", "2"]).unwrap();
/// assert_eq!(cli.probe.profile.as_deref(), Some("okta"));
/// // The probe's own --mint-count default (load's is 10).
/// assert_eq!(cli.probe.grants.mint_count, 8);
/// // No secret on the command line.
/// assert!(Cli::try_parse_from(["probe", "--refresh-token", "rt"]).is_err());
/// ```
#[derive(Clone, Debug, clap::Args)]
#[command(
    mut_arg("grants_file", |a| a.help(
        "A private file of refresh tokens the probe may spend, one per line (else \
         KEEPFRESH_REFRESH_TOKENS)",
    )),
    mut_arg("mint_command", |a| a.help(
        "A command that prints one new refresh token per run (run --mint-count times)",
    )),
    mut_arg("mint_count", |a| a.help("How many times to run --mint-command").default_value("8")),
)]
pub struct ProbeArgs {
    /// Built-in mock provider profile to probe (default strict when no --token-url).
    #[arg(long, conflicts_with = "token_url")]
    pub profile: Option<String>,
    /// Built-in provider: grants to mint for the probe.
    #[arg(long, default_value_t = 16, conflicts_with = "token_url")]
    pub mock_grants: usize,
    /// Built-in provider: the seed of its token values.
    #[arg(long, default_value_t = 0, conflicts_with = "token_url")]
    pub seed: u64,
    /// Built-in provider: access-token lifetime (s) where the profile lets it be set.
    #[arg(long, conflicts_with = "token_url")]
    pub access_lifetime: Option<u64>,
    /// Built-in provider: storage latency of a rotation (ms).
    #[arg(long, default_value_t = 0, conflicts_with = "token_url")]
    pub storage_latency_ms: u64,
    /// Built-in provider: non-atomic reuse check (forks the grant under concurrent refresh).
    #[arg(long, conflicts_with = "token_url")]
    pub racy_reuse_check: bool,
    /// Built-in provider: grace window override (ms).
    #[arg(long, conflicts_with = "token_url")]
    pub grace_ms: Option<u64>,
    /// Built-in provider: state this `expires_in` (s) whatever the true lifetime.
    #[arg(long, conflicts_with = "token_url")]
    pub stated_lifetime: Option<u64>,
    /// The token endpoint to probe.
    #[arg(long, requires = "client_id")]
    pub token_url: Option<String>,
    /// Client id at --token-url.
    #[arg(long, requires = "token_url")]
    pub client_id: Option<String>,
    /// A file holding the client secret (else KEEPFRESH_CLIENT_SECRET, if set).
    #[arg(long, requires = "token_url")]
    pub client_secret_file: Option<std::path::PathBuf>,
    /// How the client secret is sent: basic or post.
    #[arg(long, default_value = "basic", value_parser = ["basic", "post"])]
    pub client_auth: String,
    /// The refresh tokens the probe may spend: --grants-file, --mint-command, --mint-count
    /// (worded for the probe by the `mut_arg`s above).
    #[command(flatten)]
    pub grants: GrantSourceArgs,
    /// RFC 8707 resource sent on every refresh (repeatable).
    #[arg(long, requires = "token_url")]
    pub resource: Vec<String>,
    /// Scope sent on every refresh.
    #[arg(long, requires = "token_url")]
    pub scope: Option<String>,
    /// A URL that answers 200 to a live access token and 401 to a dead one (built-in: its own).
    #[arg(long, requires = "token_url")]
    pub resource_url: Option<String>,
    /// Spend at most this many of the refresh tokens (default: all given).
    #[arg(long)]
    pub spend: Option<usize>,
    /// Concurrent refreshes of one refresh token per round.
    #[arg(long, default_value_t = 2)]
    pub at_once: usize,
    /// Concurrent rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Longest grace window looked for (s).
    #[arg(long, default_value_t = 60.0)]
    pub grace_max: f64,
    /// Grace window resolution (ms).
    #[arg(long, default_value_t = 1000)]
    pub grace_resolution_ms: u64,
    /// Longest wait for an access token to die (s).
    #[arg(long, default_value_t = 60.0)]
    pub lifetime_wait: f64,
    /// Per-request timeout (s).
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v).map_err(|_| format!("{name} must be a non-negative number"))
}

impl ProbeArgs {
    fn limits(&self) -> Result<ProbeLimits, String> {
        let limits = ProbeLimits {
            spend: self.spend,
            at_once: self.at_once,
            rounds: self.rounds,
            grace_max: seconds("--grace-max", self.grace_max)?,
            grace_resolution: Duration::from_millis(self.grace_resolution_ms),
            lifetime_wait: seconds("--lifetime-wait", self.lifetime_wait)?,
            timeout: Duration::from_secs(self.timeout),
        };
        limits.validate()?;
        Ok(limits)
    }

    fn serve_config(&self) -> Result<ServeConfig, String> {
        let mut c = ServeConfig::new(self.profile.clone().unwrap_or_else(|| "strict".into()))
            .seed(self.seed)
            .storage_latency(Duration::from_millis(self.storage_latency_ms))
            .racy_reuse_check(self.racy_reuse_check);
        if let Some(s) = self.access_lifetime {
            c = c.access_lifetime(Duration::from_secs(s));
        }
        if let Some(g) = self.grace_ms {
            c = c.grace(Duration::from_millis(g));
        }
        if let Some(s) = self.stated_lifetime {
            c = c.stated_lifetime(Duration::from_secs(s));
        }
        c.validate()?;
        Ok(c)
    }

    fn external(&self, url: &str) -> Result<(Endpoint, Vec<RefreshToken>), String> {
        let secret = crate::load::secret_from(
            self.client_secret_file.as_deref(),
            "KEEPFRESH_CLIENT_SECRET",
            "--client-secret-file",
        )?
        .map(ClientSecret::new);
        let grants = self.grants.read(
            "no refresh tokens: give --grants-file, --mint-command or KEEPFRESH_REFRESH_TOKENS",
        )?;
        Ok((
            Endpoint {
                token_url: url.to_owned(),
                client_id: self.client_id.clone().unwrap_or_default(),
                client_secret: secret,
                client_auth: if self.client_auth == "post" {
                    ClientAuth::Post
                } else {
                    ClientAuth::Basic
                },
                resources: self.resource.clone(),
                scope: self.scope.clone(),
                resource_url: self.resource_url.clone(),
            },
            grants,
        ))
    }
}

/// Runs `probe` from its options: the plan on standard error first, then the report (text or
/// `--json`) on standard output.
///
/// Exit codes: 0 when the probe ran (whatever it found), 1 when not even one refresh worked
/// (nothing could be determined), 2 for bad options or an endpoint that cannot be probed.
pub fn run_probe(args: ProbeArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    let fail = |e: String| {
        eprintln!("keepfresh-sim probe: {e}");
        ExitCode::from(2)
    };
    let limits = match args.limits() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let json = args.json;
    let result = runtime.block_on(async move {
        let (endpoint, grants, _server) = match &args.token_url {
            Some(url) => {
                let (e, g) = args.external(url)?;
                (e, g, None)
            }
            None => {
                if args.mock_grants == 0 || args.mock_grants > 1000 {
                    return Err("--mock-grants must be between 1 and 1000".to_owned());
                }
                let server = HttpProvider::start(args.serve_config()?, 0).await?;
                let grants = (0..args.mock_grants)
                    .map(|_| RefreshToken::new(server.login().refresh_token.unwrap_or_default()))
                    .collect();
                let endpoint = Endpoint {
                    token_url: server.token_url(),
                    client_id: "keepfresh-probe".into(),
                    client_secret: None,
                    client_auth: ClientAuth::Basic,
                    resources: Vec::new(),
                    scope: None,
                    resource_url: Some(server.resource_url()),
                };
                (endpoint, grants, Some(server))
            }
        };
        probe(&endpoint, grants, &limits, |plan| eprint!("{plan}")).await
    });
    match result {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into())
                );
            } else {
                print!("{report}");
            }
            match report.finding("rotation").map(|f| &f.answer) {
                Some(Answer::Unknown { .. }) | None => ExitCode::from(1),
                Some(_) => ExitCode::SUCCESS,
            }
        }
        Err(e) => fail(e),
    }
}

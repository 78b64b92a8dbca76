//! What a probe found: one finding per question, each citing the requests that prove it, and
//! the verdicts a user can act on.

use std::fmt;

use serde::Serialize;

use super::wire::Exchange;

/// The answer to one of the probe's questions.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// Rotation: whether each refresh issues a new refresh token.
    Rotation {
        /// A new refresh token on refresh.
        rotates: bool,
        /// The answer carried no refresh token at all (the old one stays in use).
        omitted: bool,
    },
    /// What presenting a spent refresh token does (after any grace window).
    Reuse {
        /// The whole grant died: the newest refresh token was refused afterwards.
        family_revoked: bool,
    },
    /// How long a spent refresh token stays redeemable, as an interval in seconds. Ages run
    /// from the rotation's answer to the replay's send: short of the server's by one transit.
    Grace {
        /// Accepted at this age (0 when never).
        at_least_s: f64,
        /// Refused at this age (`None`: never refused up to the longest age tried).
        below_s: Option<f64>,
    },
    /// The access token's real lifetime against its `expires_in`.
    AccessLifetime {
        /// `expires_in` as sent.
        expires_in: Option<i64>,
        /// Last age (s) at which the resource accepted the token.
        alive_at_s: f64,
        /// First age (s) at which it refused it (`None`: not seen within the wait).
        dead_at_s: Option<f64>,
        /// `honest`, `shorter` (dies before `expires_in`), `longer` (outlives it),
        /// `unchecked_end` (the wait ended before `expires_in`), `no_expires_in`, `absurd`.
        judgement: &'static str,
    },
    /// Whether a refresh kills the access token issued before it.
    OldAccessToken {
        /// The old access token was refused after the refresh.
        killed: bool,
    },
    /// N concurrent refreshes of one refresh token, repeated.
    Concurrent {
        /// Requests per round.
        at_once: usize,
        /// Rounds run.
        rounds: usize,
        /// Successful answers per round.
        succeeded: Vec<usize>,
        /// Rounds after which two or more chains stayed live.
        forked: usize,
        /// Rounds after which every winner's refresh token was dead (a late request
        /// revoked the grant).
        winners_revoked: usize,
        /// Rounds with exactly one live chain afterwards.
        one_chain: usize,
    },
    /// The question could not be answered (budget, missing option, odd answers).
    Unknown {
        /// Why.
        why: String,
    },
}

/// One question, its answer, the requests that prove it, and what to do about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `rotation`, `reuse`, `grace`, `access_lifetime`, `old_access_token`, `concurrent`.
    pub question: &'static str,
    /// The answer.
    #[serde(flatten)]
    pub answer: Answer,
    /// One readable sentence.
    pub summary: String,
    /// The request numbers that prove it.
    pub evidence: Vec<usize>,
}

/// A probe step's promise, printed before anything is spent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// The step.
    pub step: &'static str,
    /// Refresh tokens (grants) it may spend at most.
    pub grants: usize,
    /// Token-endpoint requests it may send at most.
    pub token_requests: usize,
    /// What it does.
    pub what: String,
}

/// Everything a probe did and found. No secret appears in it.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// The token endpoint probed.
    pub target: String,
    /// Refresh tokens given.
    pub grants_given: usize,
    /// The most the probe was allowed to spend.
    pub grants_allowed: usize,
    /// Refresh tokens it took from the given ones.
    pub grants_spent: usize,
    /// The plan shown up front.
    pub plan: Vec<PlannedStep>,
    /// The findings.
    pub findings: Vec<Finding>,
    /// What to do about them.
    pub verdicts: Vec<String>,
    /// Every request sent.
    pub exchanges: Vec<Exchange>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

impl ProbeReport {
    /// The finding for `question`, if the probe asked it.
    ///
    /// ```
    /// # use keepfresh_sim::probe::ProbeReport;
    /// # fn f(r: &ProbeReport) { let _ = r.finding("rotation"); }
    /// ```
    pub fn finding(&self, question: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.question == question)
    }
}

/// The plan as printed before the probe spends anything.
pub(crate) fn plan_text(
    target: &str,
    given: usize,
    allowed: usize,
    plan: &[PlannedStep],
) -> String {
    let mut s = format!(
        "probe of {target}: {given} refresh token(s) given; at most {allowed} will be spent \
         (each may end up rotated away or revoked)\n"
    );
    for p in plan {
        s.push_str(&format!(
            "  {:<18} up to {} grant(s), {} token request(s): {}\n",
            p.step, p.grants, p.token_requests, p.what
        ));
    }
    s
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "findings ({} of {} allowed grants spent, {} requests, {:.1} s):",
            self.grants_spent,
            self.grants_allowed,
            self.exchanges.len(),
            self.elapsed_s
        )?;
        for x in &self.findings {
            let ids: Vec<String> = x.evidence.iter().map(|i| format!("#{i}")).collect();
            writeln!(f, "  {:<17} {}", x.question, x.summary)?;
            if !ids.is_empty() {
                writeln!(f, "  {:<17} proof: {}", "", ids.join(" "))?;
            }
        }
        writeln!(f, "verdict:")?;
        for v in &self.verdicts {
            writeln!(f, "  - {v}")?;
        }
        writeln!(
            f,
            "requests (tokens shown as fingerprints: first 8 hex digits of their SHA-256):"
        )?;
        let mut step = "";
        let mut i = 0;
        while i < self.exchanges.len() {
            let e = &self.exchanges[i];
            if e.step != step {
                step = e.step;
                writeln!(f, "  {step}:")?;
            }
            // A run of identical resource checks (the lifetime watch) prints as first and last.
            let same = |x: &Exchange| {
                x.kind == "resource"
                    && x.kind == e.kind
                    && x.step == e.step
                    && x.presented == e.presented
                    && x.outcome == e.outcome
            };
            let run = self.exchanges[i..].iter().take_while(|x| same(x)).count();
            writeln!(f, "    {e}")?;
            if run >= 3 {
                writeln!(f, "    ... {} more identical checks", run - 2)?;
                writeln!(f, "    {}", self.exchanges[i + run - 1])?;
                i += run;
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

/// The verdicts that follow from the findings.
pub(crate) fn verdicts(findings: &[Finding]) -> Vec<String> {
    let get = |q: &str| findings.iter().find(|f| f.question == q).map(|f| &f.answer);
    let mut v = Vec::new();
    if let Some(Answer::Unknown { why }) = get("rotation") {
        v.push(format!(
            "nothing could be determined: {why}; the other questions need a working refresh"
        ));
        return v;
    }
    if let Some(Answer::Concurrent {
        forked,
        winners_revoked,
        ..
    }) = get("concurrent")
    {
        if *forked > 0 {
            v.push(
                "this provider forks grants under concurrent refresh: never let two processes \
                 refresh one grant (one refresh per grant at a time, e.g. a shared store with a \
                 lease); a forked grant leaves a second live refresh token nobody tracks"
                    .to_owned(),
            );
        }
        if *winners_revoked > 0 {
            v.push(
                "a late concurrent refresh revokes the whole grant, the winner's tokens \
                 included: two refreshes of one grant at once log the user out; refresh each \
                 grant from one place at a time"
                    .to_owned(),
            );
        }
    }
    match (get("rotation"), get("reuse"), get("grace")) {
        (Some(Answer::Rotation { rotates: false, .. }), _, _) => v.push(
            "refresh tokens do not rotate: a lost answer or a concurrent refresh costs nothing, \
             but the refresh token is a long-lived secret: store it encrypted"
                .to_owned(),
        ),
        (Some(Answer::Rotation { rotates: true, .. }), reuse, grace) => {
            let revokes = matches!(
                reuse,
                Some(Answer::Reuse {
                    family_revoked: true
                })
            );
            let grace_s = match grace {
                Some(Answer::Grace { at_least_s, .. }) => *at_least_s,
                _ => 0.0,
            };
            if grace_s > 0.0 {
                v.push(format!(
                    "refresh tokens rotate with a grace window of at least {grace_s:.1} s: a \
                     refresh whose answer was lost can be retried with the same token within it; \
                     save the new refresh token before using the new access token"
                ));
            } else {
                v.push(
                    "refresh tokens rotate with no grace window: save the new refresh token \
                     before using the new access token, never retry a refresh with a spent \
                     token, and keep the request timeout short (a lost answer means a new login)"
                        .to_owned(),
                );
            }
            if revokes {
                v.push(
                    "reusing a spent refresh token revokes the whole grant: a client that \
                     replays one (a stale copy in another process, a retry) logs the user out"
                        .to_owned(),
                );
            }
        }
        _ => {}
    }
    if let Some(Answer::AccessLifetime {
        judgement: "shorter",
        alive_at_s,
        ..
    }) = get("access_lifetime")
    {
        v.push(format!(
            "access tokens die before their expires_in: refresh by {alive_at_s:.0} s of age, \
             not by expires_in, and retry a 401 once after a refresh"
        ));
    }
    if let Some(Answer::OldAccessToken { killed: true }) = get("old_access_token") {
        v.push(
            "a refresh kills the access token issued before it: requests in flight with the old \
             token get 401; retry them once with the new one"
                .to_owned(),
        );
    }
    if v.is_empty() {
        v.push("nothing risky found in the questions the budget allowed".to_owned());
    }
    v
}

//! The simulated network between a process and the mock provider: latency, transport faults and
//! lost answers, behind the engine's [`Refresher`] trait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::oauth::{parse_retry_after, parse_token_response, HttpAnswer};
use keepfresh::{RefreshError, RefreshRequest, Refresher, TokenResponse};
use parking_lot::Mutex;

use super::State;
use crate::exec::ExecHandle;
use crate::provider::{Answer, CallOutcome};

/// A [`Refresher`] that reaches the mock provider through the simulated network.
pub struct ProviderClient {
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) exec: ExecHandle,
    pub(crate) cred: usize,
    pub(crate) proc: usize,
}

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderClient")
            .field("cred", &self.cred)
            .field("proc", &self.proc)
            .finish()
    }
}

enum Fault {
    None,
    NotDelivered,
    ServerError,
    RateLimited,
    Unavailable,
    InvalidClient,
    Malformed,
    Lost { hang: bool },
}

/// Tracks one call in flight: overlap detection, and an answer lost if the call is dropped
/// (engine timeout, process crash) after the provider committed a rotation.
struct InFlight {
    state: Arc<Mutex<State>>,
    exec: ExecHandle,
    cred: usize,
    proc: usize,
    committed: Option<String>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        s.inflight[self.cred] -= 1;
        s.proc_inflight[self.proc] -= 1;
        if let Some(rt) = self.committed.take() {
            let now = self.exec.now();
            s.provider.mark_undelivered(&rt, now);
        }
    }
}

#[async_trait]
impl Refresher for ProviderClient {
    async fn refresh(&self, request: RefreshRequest) -> Result<TokenResponse, RefreshError> {
        let rt = request
            .refresh_token
            .as_ref()
            .map(|r| r.expose_secret().to_owned());
        let (latency, fault) = {
            let mut s = self.state.lock();
            s.inflight[self.cred] += 1;
            s.proc_inflight[self.proc] += 1;
            let now = self.exec.now();
            if s.inflight[self.cred] > 1 {
                s.violate_correctness(
                    now,
                    format!(
                        "two token-endpoint calls in flight at once for credential c{}",
                        self.cred
                    ),
                );
            }
            if rt
                .as_ref()
                .is_some_and(|rt| s.seen_rotated[self.proc].contains(rt))
            {
                s.violate_correctness(
                    now,
                    format!(
                        "p{} sent a refresh token whose rotation answer it had received: it knew the token was spent",
                        self.proc
                    ),
                );
            }
            s.metrics.token_calls.push(now.as_nanos());
            s.series_add(now, true, 0);
            let recent = s.last_delivered[self.cred]
                .is_some_and(|t| now.saturating_duration_since(t) < crate::world::DUPLICATE_WINDOW);
            if s.inflight[self.cred] > 1 || recent {
                s.metrics.duplicate_calls += 1;
            }
            let healed = s.healed;
            let f = s.faults;
            let rng = &mut s.rng;
            let mut latency = rng.range(f.latency_ms.0, f.latency_ms.1);
            if rng.chance(f.latency_tail) {
                latency *= 10;
            }
            let fault = if healed {
                Fault::None
            } else if rng.chance(f.p_not_delivered) {
                Fault::NotDelivered
            } else if rng.chance(f.p_5xx) {
                Fault::ServerError
            } else if rng.chance(f.p_429) {
                Fault::RateLimited
            } else if rng.chance(f.p_503) {
                Fault::Unavailable
            } else if rng.chance(f.p_invalid_client) {
                Fault::InvalidClient
            } else if rng.chance(f.p_malformed) {
                Fault::Malformed
            } else if rng.chance(f.p_lost) {
                Fault::Lost {
                    hang: rng.chance(0.5),
                }
            } else {
                Fault::None
            };
            (Duration::from_millis(latency), fault)
        };
        let mut guard = InFlight {
            state: self.state.clone(),
            exec: self.exec.clone(),
            cred: self.cred,
            proc: self.proc,
            committed: None,
        };
        self.exec.sleep(latency / 2).await;
        enum Step {
            Answer(Answer),
            Fail(RefreshError),
            Lost { hang: bool },
        }
        let step = {
            let mut s = self.state.lock();
            let now = self.exec.now();
            let retry_after = |s: &State| {
                let secs = s.faults.retry_after_secs;
                if s.faults.retry_after_date {
                    let at = s.provider.wall(now) + time::Duration::seconds(secs as i64 + 1);
                    httpdate::fmt_http_date(at.into())
                } else {
                    secs.to_string()
                }
            };
            match fault {
                Fault::NotDelivered => {
                    s.provider.count(CallOutcome::NotDelivered);
                    s.trace_line(now, format!("c{} provider: connect timeout", self.cred));
                    Step::Fail(RefreshError::transient("connect timeout (not sent)"))
                }
                Fault::ServerError => {
                    s.provider.count(CallOutcome::ServerError);
                    Step::Answer(Answer {
                        status: 502,
                        content_type: "text/html",
                        retry_after: None,
                        body: b"<html><body>Bad Gateway</body></html>".to_vec(),
                        outcome: CallOutcome::ServerError,
                    })
                }
                Fault::RateLimited | Fault::Unavailable => {
                    let (status, outcome) = match fault {
                        Fault::RateLimited => (429, CallOutcome::RateLimited),
                        _ => (503, CallOutcome::Unavailable),
                    };
                    s.provider.count(outcome);
                    Step::Answer(Answer {
                        status,
                        content_type: "application/json",
                        retry_after: Some(retry_after(&s)),
                        body: br#"{"error":"temporarily_unavailable"}"#.to_vec(),
                        outcome,
                    })
                }
                Fault::InvalidClient => Step::Answer(s.provider.invalid_client()),
                Fault::Malformed | Fault::Lost { .. } | Fault::None => {
                    let replays = s.provider.replays.len();
                    let a = s.provider.refresh(now, rt.as_deref());
                    if s.provider.replays.len() > replays {
                        self.blame_store(&mut s, rt.as_deref(), now);
                    }
                    let rotated = a.outcome == CallOutcome::Ok;
                    if rotated {
                        if s.unsaved_since[self.cred].is_none() {
                            s.unsaved_since[self.cred] = Some(now);
                        }
                        s.last_committed[self.proc] = rt.clone();
                        guard.committed = rt.clone();
                    }
                    match fault {
                        Fault::Malformed => {
                            s.provider.count(CallOutcome::Malformed);
                            // A proxy swallowed the provider's answer: the rotation happened.
                            if let Some(rt) = guard.committed.take() {
                                s.provider.mark_undelivered(&rt, now);
                            }
                            Step::Answer(Answer {
                                status: 200,
                                content_type: "text/html",
                                retry_after: None,
                                body: b"<html>gateway login page</html>".to_vec(),
                                outcome: CallOutcome::Malformed,
                            })
                        }
                        Fault::Lost { hang } => {
                            s.provider.count(CallOutcome::LostAfterCommit);
                            if let Some(rt) = guard.committed.take() {
                                s.provider.mark_undelivered(&rt, now);
                            }
                            s.trace_line(
                                now,
                                format!("c{} provider: answer lost after commit", self.cred),
                            );
                            Step::Lost { hang }
                        }
                        _ => Step::Answer(a),
                    }
                }
            }
        };
        let answer = match step {
            Step::Answer(a) => a,
            Step::Fail(e) => return Err(e),
            Step::Lost { hang } => {
                if hang {
                    futures::future::pending::<()>().await;
                }
                self.exec.sleep(latency / 2).await;
                return Err(RefreshError::ambiguous("connection reset by peer"));
            }
        };
        self.exec.sleep(latency / 2).await;
        guard.committed = None;
        // An HTTP-date `Retry-After` is read against the provider's `Date` header, as
        // `keepfresh::oauth::HttpRefresher` does: the client's own wall clock may be skewed or
        // stepped, and a date read against it can look hours away.
        let server_date = {
            let s = self.state.lock();
            s.provider.wall(self.exec.now())
        };
        let parsed_retry = answer
            .retry_after
            .as_deref()
            .and_then(|v| parse_retry_after(v, server_date));
        let result = parse_token_response(HttpAnswer {
            status: answer.status,
            content_type: Some(answer.content_type),
            retry_after: parsed_retry,
            body: &answer.body,
        });
        let mut s = self.state.lock();
        let now = self.exec.now();
        let line = match &result {
            Ok(_) => format!(
                "c{} p{} provider: {}",
                self.cred,
                self.proc,
                answer.outcome.name()
            ),
            Err(e) => format!(
                "c{} p{} provider: {} -> {e}",
                self.cred,
                self.proc,
                answer.outcome.name()
            ),
        };
        s.trace_line(now, line);
        if let Ok(r) = &result {
            let access = r.access_token().expose_secret().to_owned();
            let refresh = r.refresh_token().map(|t| t.expose_secret().to_owned());
            if let (Some(sent), Some(new)) = (&rt, &refresh)
                && sent != new
            {
                s.seen_rotated[self.proc].insert(sent.clone());
            }
            s.record_delivered(self.cred, self.proc, now, access, refresh.or(rt));
        }
        result
    }
}

impl ProviderClient {
    /// Attributes the replay the provider just recorded: to the store when a lie of the store
    /// hid the rotation from this process (it never received the rotation answer itself).
    fn blame_store(&self, s: &mut State, rt: Option<&str>, now: keepfresh::runtime::MonoTime) {
        let Some(rt) = rt else { return };
        if s.seen_rotated[self.proc].contains(rt) || !s.store_misled(self.proc, rt) {
            return;
        }
        if let Some(r) = s.provider.replays.last_mut()
            && !r.excused
        {
            r.excused = true;
            r.store_lie = true;
            s.trace_line(
                    now,
                    format!(
                        "c{} p{}: the store hid this refresh token's rotation (a lost save or a stale read): the replay is the store's failure",
                        self.cred, self.proc
                    ),
                );
        }
    }
}

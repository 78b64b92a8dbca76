//! The callers of a process: each request, what it was served, and what the oracles learn from
//! it.

use super::*;

/// What a process's caller requests share (one reference count per request, not two).
pub(super) struct Caller {
    pub(crate) w: Arc<Shared>,
    pub(crate) client: Arc<dyn ProcessClient>,
}

pub(super) async fn issue(caller: &Arc<Caller>, i: usize, group: Group) {
    // A request that needs nothing but its token, which the client hands out at once (the
    // fleet's every request but a refresh's first): the same steps as `request` polled once
    // to completion, without building, boxing and dropping its future and the client's.
    if !caller.w.cfg.resource_server
        && let Some(t) = caller.client.token_now()
    {
        request_now(&caller.w, i, &t);
        return;
    }
    let mut fut = Box::pin(request(caller.clone(), i));
    let first =
        futures::future::poll_fn(|cx| Poll::Ready(poll_catching_injected(fut.as_mut(), cx))).await;
    match first {
        Some(Poll::Pending) => caller.w.exec.spawn_in(group, fut),
        Some(Poll::Ready(())) => {}
        // A callback panicked inside this request: like a host's request task, the request is
        // gone, and the process's other requests go on.
        None => {}
    }
}

/// Runs `f` to completion unless it unwinds with an [`InjectedPanic`] (`None`).
pub(super) async fn catching_injected<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    futures::future::poll_fn(|cx| match poll_catching_injected(f.as_mut(), cx) {
        None => Poll::Ready(None),
        Some(Poll::Ready(v)) => Poll::Ready(Some(v)),
        Some(Poll::Pending) => Poll::Pending,
    })
    .await
}

/// A request served at once with `t` (see [`issue`]): the bookkeeping of [`request`] and
/// [`served`] for a request that starts, is served and ends at this instant, under one lock.
fn request_now(w: &Arc<Shared>, i: usize, t: &keepfresh::Token) {
    let now = w.exec.now();
    let cred = w.procs[i].cred;
    let mut s = w.state.lock();
    // `request`'s start: the request is counted (and pending until `served` resolves it, at
    // once, under this same lock).
    s.metrics.requests += 1;
    let valid_at_start = s.valid_token_at(cred, now);
    check_served(
        w,
        &mut s,
        i,
        now,
        Duration::ZERO,
        valid_at_start,
        Ok((t.generation(), t.access_token().expose_secret())),
    );
}

pub(super) async fn request(caller: Arc<Caller>, i: usize) {
    let (w, client) = (&caller.w, &caller.client);
    let host = &w.procs[i].host;
    let start = w.exec.now();
    // Waits are measured on the host's clock: a caller does not wait while its host sleeps.
    let start_mono = host.mono_at(start);
    let (mut pending, valid_at_start) = {
        let mut s = w.state.lock();
        s.pending_callers += 1;
        s.metrics.requests += 1;
        let valid = s.valid_token_at(w.procs[i].cred, start);
        let pending = Pending {
            state: &w.state,
            armed: true,
        };
        (pending, valid)
    };
    let result = match w.cfg.caller_timeout {
        None => client.token().await,
        Some(limit) => {
            let t = std::pin::pin!(client.token());
            match select(t, w.exec.sleep_on(host, limit)).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => {
                    w.state.lock().metrics.abandoned += 1;
                    return;
                }
            }
        }
    };
    // Without a resource server the request ends with its answer: resolved under the same
    // lock as the serving checks.
    let last = !w.cfg.resource_server;
    let token = match served(w, i, start_mono, valid_at_start, result, &mut pending, last) {
        Some(t) => t,
        None => return,
    };
    if !w.cfg.resource_server {
        return;
    }
    if !w.cfg.io_time.is_zero() {
        w.exec.sleep_on(host, w.cfg.io_time).await;
    }
    // The resource server answers with a status and an RFC 6750 challenge; the caller acts on
    // the engine's reading of it, as a host would.
    let (status, challenge) = {
        let mut s = w.state.lock();
        let answer = s
            .provider
            .check_resource(token.access.expose_secret(), w.exec.now());
        s.metrics.rs_requests += 1;
        let every = w.cfg.step_up_every;
        let step_up = every > 0 && s.metrics.rs_requests % every == 0;
        match answer {
            ResourceAnswer::Unauthorized => (401, r#"Bearer error="invalid_token""#),
            ResourceAnswer::Forbidden => (403, r#"Bearer error="insufficient_scope""#),
            ResourceAnswer::Ok if step_up => (
                403,
                r#"Bearer error="insufficient_scope", scope="admin:org""#,
            ),
            ResourceAnswer::Ok => (200, ""),
        }
    };
    match classify_resource_answer(status, Some(challenge).filter(|c| !c.is_empty())) {
        ResourceVerdict::InvalidToken => {}
        ResourceVerdict::InsufficientScope { .. } => {
            w.state.lock().metrics.rs_step_up += 1;
            return;
        }
        _ => return,
    }
    {
        let mut s = w.state.lock();
        s.metrics.rs_unauthorized += 1;
        s.reported_rejected[i].insert(token.access.expose_secret().to_owned());
    }
    client.unauthorized(&token);
    let retry_start = w.exec.now();
    let retry_valid = w.state.lock().valid_token_at(w.procs[i].cred, retry_start);
    let retry_mono = host.mono_at(retry_start);
    let again = client.token().await;
    if let Some(t2) = served(w, i, retry_mono, retry_valid, again, &mut pending, false) {
        let mut s = w.state.lock();
        let now = w.exec.now();
        let access = t2.access.expose_secret();
        if s.provider.check_resource(access, now) == ResourceAnswer::Unauthorized {
            // Blamed only for a token the process was told was rejected: a revocation no 401
            // has reported yet is one no client can know of.
            if s.reported_rejected[i].contains(access) {
                s.metrics.rs_unauthorized_after_retry += 1;
            } else {
                s.metrics.rs_retry_revoked_unreported += 1;
            }
        }
    }
}

/// Records a caller's result and checks the serving invariants.
///
/// `start_mono` is when the request started on the host's monotonic clock. With `last`, or when
/// nothing is served, the request resolves here (`pending`).
pub(super) fn served(
    w: &Arc<Shared>,
    i: usize,
    start_mono: MonoTime,
    valid_at_start: bool,
    result: Result<crate::strategy::ServedToken, ClientError>,
    pending: &mut Pending<'_>,
    last: bool,
) -> Option<crate::strategy::ServedToken> {
    let now = w.exec.now();
    let wait = w.procs[i]
        .host
        .mono_at(now)
        .saturating_duration_since(start_mono);
    let mut s = w.state.lock();
    if last || result.is_err() {
        pending.resolve(&mut s);
    }
    let view = match &result {
        Ok(t) => Ok((t.generation, t.access.expose_secret())),
        Err(e) => Err(e),
    };
    if check_served(w, &mut s, i, now, wait, valid_at_start, view) {
        result.ok()
    } else {
        None
    }
}

/// The serving checks and figures of one caller's result (`Ok`: the served token's generation
/// and access token), at `now`, after waiting `wait` on its host's clock; whether a token was
/// served.
fn check_served(
    w: &Shared,
    s: &mut State,
    i: usize,
    now: MonoTime,
    wait: Duration,
    valid_at_start: bool,
    result: Result<(u64, &str), &ClientError>,
) -> bool {
    s.metrics.waits.record(wait.as_nanos() as u64);
    if !wait.is_zero() {
        s.series_add(now, false, wait.as_nanos() as u64);
        s.metrics.blocked += 1;
        s.metrics.blocked_waits.record(wait.as_nanos() as u64);
        if let Some(b) = s.metrics.caller_bucket(now.as_nanos()) {
            b.blocked += 1;
            b.blocked_wait_ns += wait.as_nanos() as u64;
        }
        if valid_at_start {
            s.metrics.blocked_while_valid += 1;
        }
    }
    if result.is_err() && s.valid_token_at(w.procs[i].cred, now) {
        s.metrics.errors_while_valid += 1;
    }
    // The engine bounds every wait by its wait timeout (plus the one refresh round it may
    // follow); a caller waiting longer was forgotten.
    if !wait.is_zero() && wait > w.cfg.wait_timeout + w.cfg.wait_timeout / 2 {
        s.violate(
            FailureKind::Liveness,
            now,
            format!(
                "p{i}: a caller waited {:.3}s, past its deadline",
                wait.as_secs_f64()
            ),
        );
    }
    match result {
        Ok((generation, access)) => {
            s.metrics.served += 1;
            let known = if s.gen_cache[i].0 == generation {
                Some((s.gen_cache[i].1, s.gen_cache[i].2))
            } else {
                let rec = s.provider.access_record(access);
                if let Some(r) = rec {
                    s.gen_cache[i] = (generation, r.expires, r.family);
                    s.check_not_back(i, r.family, r.seq, now);
                }
                rec.map(|r| (r.expires, r.family))
            };
            let Some((expires, family)) = known else {
                s.violate_correctness(
                    now,
                    format!("p{i} served an access token the provider never issued"),
                );
                return false;
            };
            let past = now > expires.saturating_add(s.skew_tolerance);
            if past && !s.lifetime_known {
                s.metrics.served_past_true_expiry += 1;
            } else if past {
                let late = now.saturating_duration_since(expires);
                s.violate_correctness(
                    now,
                    format!(
                        "p{i} served an access token {:.3}s after it expired",
                        late.as_secs_f64()
                    ),
                );
            } else if expires.saturating_duration_since(now) < Duration::from_secs(60) {
                s.metrics.near_expiry += 1;
            }
            let cred = w.procs[i].cred;
            // A store that lost the login's save, or a stale read, can hand the older grant
            // back: the store's failure.
            let store_lied = s.misled[i] || s.lost_grant[cred];
            if let Some(login) = s.login_floor[i].filter(|&l| family < l && !store_lied) {
                s.violate_correctness(
                    now,
                    format!(
                        "p{i} served a token of grant {family} after its login installed grant {login} (the login was overwritten)"
                    ),
                );
            }
            let h = generation ^ (i as u64) << 40 ^ now.as_nanos().rotate_left(17);
            s.trace.mix(&h.to_le_bytes());
            true
        }
        Err(e) => {
            let key = match e {
                ClientError::Reauth(r) => format!("reauth:{r}"),
                ClientError::Timeout => "timeout".into(),
                ClientError::Refresh(c) => format!("refresh:{c}"),
                ClientError::Other(o) => format!("other:{o}"),
            };
            if key.contains(SECRET_MARKER) {
                s.violate_correctness(now, "a secret appeared in an error message".into());
            }
            *s.metrics.errors.entry(key.clone()).or_default() += 1;
            if let Some(b) = s.metrics.caller_bucket(now.as_nanos()) {
                b.errors += 1;
            }
            s.trace.mix(key.as_bytes());
            false
        }
    }
}

pub(super) async fn perform(w: &Arc<Shared>, action: Action) {
    match action {
        Action::Crash {
            proc,
            restart_after,
        } => {
            kill(w, proc);
            w.exec.sleep(restart_after).await;
            start_process(w, proc);
        }
        Action::CrashOnNextSave {
            proc,
            restart_after,
        } => {
            w.state.lock().crash_on_save[proc] = true;
            let w2 = w.clone();
            w.exec.spawn_in(Group::WORLD, async move {
                // Wait for the crash to happen (the process's group dies), then restart.
                loop {
                    w2.exec.sleep(Duration::from_secs(1)).await;
                    if !w2.state.lock().crash_on_save[proc] {
                        break;
                    }
                }
                w2.exec.sleep(restart_after).await;
                w2.procs[proc].client.lock().take();
                start_process(&w2, proc);
            });
        }
        Action::Revoke { cred } => {
            let mut s = w.state.lock();
            let f = s.families[cred];
            s.provider.revoke_family(f, "revoked by the user");
        }
        Action::RevokeAccess { cred } => {
            let mut s = w.state.lock();
            let f = s.families[cred];
            s.provider.revoke_access_tokens(f);
        }
        Action::Overwrite { cred } => {
            if let Some(st) = w.stores[cred].snapshot() {
                w.stores[cred].rewrite(&st);
                w.state.lock().remember_replaced(cred, Some(st));
            }
        }
        Action::JumpWall { proc, secs } => {
            w.procs[proc]
                .offset
                .fetch_add(secs * 1_000_000_000, Ordering::Relaxed);
            // Stored tokens are placed on the clock by wall time: a stepped clock shifts them.
            w.state.lock().skew_tolerance += Duration::from_secs(secs.unsigned_abs());
        }
        Action::Shutdown {
            proc,
            restart_after,
        } => {
            let client = w.procs[proc].client.lock().clone();
            if let Some(c) = client
                && catching_injected(c.shutdown()).await.is_none()
            {
                let now = w.exec.now();
                w.state
                    .lock()
                    .trace_line(now, format!("p{proc} panicked while shutting down"));
            }
            kill(w, proc);
            w.exec.sleep(restart_after).await;
            start_process(w, proc);
        }
        Action::StoreOutage { cred, duration } => {
            let now = w.exec.now();
            let mut s = w.state.lock();
            if s.healed {
                s.trace_line(now, format!("c{cred} store outage skipped: healed"));
                return;
            }
            let until = now.saturating_add(duration);
            s.outage_until[cred] = s.outage_until[cred].max(until);
            let line = format!(
                "c{cred} store outage until {:.3}s: every operation fails",
                s.outage_until[cred].as_duration().as_secs_f64()
            );
            s.trace_line(now, line);
        }
        Action::Suspend { proc, duration } => suspend(w, proc, duration),
        Action::Login { proc } => login(w, proc),
        Action::WriteNewer { cred } => {
            let w2 = w.clone();
            w.exec.spawn_in(Group::WORLD, async move {
                while !write_newer(&w2, cred) {
                    w2.exec.sleep(Duration::from_millis(100)).await;
                }
            });
        }
    }
}

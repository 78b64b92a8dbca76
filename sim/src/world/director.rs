//! The scheduled actions the director carries out on hosts and stores: suspend and resume,
//! a login, another writer's newer set, a crash.

use super::*;

pub(super) async fn director(w: Arc<Shared>) {
    let cfg = w.cfg.clone();
    let mut plan: Vec<(Duration, Option<Action>)> = cfg
        .schedule
        .iter()
        .map(|(t, a)| (*t, Some(a.clone())))
        .collect();
    plan.push((cfg.heal_time(), None));
    plan.sort_by_key(|(t, _)| *t);
    for (t, action) in plan {
        w.exec.sleep_until(MonoTime::from_duration(t)).await;
        let now = w.exec.now();
        match action {
            None => {
                {
                    let mut s = w.state.lock();
                    s.healed = true;
                    s.trace_line(now, "faults healed".into());
                }
                // Suspended hosts wake with the heal, as outages end.
                for p in 0..w.procs.len() {
                    resume_host(&w, p);
                }
            }
            Some(a) => {
                w.state.lock().trace_line(now, format!("director: {a:?}"));
                perform(&w, a).await;
            }
        }
    }
    // Liveness: after the faults healed and the workload ended, every process must hand out
    // a token again (unless the scenario ends in re-authorization).
    let probe_at = MonoTime::from_duration(cfg.duration.max(cfg.heal_time()) + cfg.settle);
    w.exec.sleep_until(probe_at).await;
    if cfg.reauth != ReauthExpect::Never || cfg.allow_revoked_family {
        return;
    }
    for i in 0..w.procs.len() {
        {
            let s = w.state.lock();
            let fam = s.families[w.procs[i].cred];
            if s.provider.family_revoked(fam).is_some() {
                continue;
            }
        }
        let client = w.procs[i].client.lock().clone();
        let Some(client) = client else { continue };
        let start = w.exec.now();
        let r = client.token().await;
        let now = w.exec.now();
        let mut s = w.state.lock();
        match r {
            Ok(_) => {}
            Err(e) => {
                s.violate(
                    FailureKind::Liveness,
                    now,
                    format!(
                        "p{i} did not recover after faults healed: {e:?} (phase {}), asked at {:.3}s",
                        client.health().phase,
                        start.as_duration().as_secs_f64()
                    ),
                );
                return;
            }
        }
        if client.health().persist_pending {
            s.violate(
                FailureKind::Liveness,
                now,
                format!("p{i} still has an unsaved token set after faults healed"),
            );
        }
    }
}

/// Suspends process `proc`'s host for `duration` (until the world heals at the latest): its
/// group stops running and its monotonic clock stands still.
///
/// The model has no network that outlives a sleeping host (a request the provider commits
/// while the host sleeps, its answer lost at resume): a suspend due while the process has a
/// token-endpoint call in flight starts as soon as the call ends.
pub(super) fn suspend(w: &Arc<Shared>, proc: usize, duration: Duration) {
    let w2 = w.clone();
    w.exec.spawn_in(Group::WORLD, async move {
        while w2.state.lock().proc_inflight[proc] > 0 {
            w2.exec.sleep(Duration::from_millis(10)).await;
        }
        let now = w2.exec.now();
        {
            let mut s = w2.state.lock();
            if s.healed || !w2.procs[proc].host.suspend(now) {
                s.trace_line(
                    now,
                    format!("p{proc} suspend skipped: healed or already asleep"),
                );
                return;
            }
            s.trace_line(now, format!("p{proc} host suspended"));
        }
        w2.exec.freeze(*w2.procs[proc].group.lock());
        w2.exec.sleep(duration).await;
        // Only this suspend: the heal may have ended it already.
        if w2.procs[proc].host.suspended_since() == Some(now) {
            resume_host(&w2, proc);
        }
    });
}

/// Resumes process `proc`'s host if it is suspended.
pub(super) fn resume_host(w: &Arc<Shared>, proc: usize) {
    let now = w.exec.now();
    let Some(slept) = w.procs[proc].host.resume(now) else {
        return;
    };
    w.exec.thaw(*w.procs[proc].group.lock());
    w.state.lock().trace_line(
        now,
        format!(
            "p{proc} host resumed after {:.3}s; its monotonic clock lost that much",
            slept.as_secs_f64()
        ),
    );
}

/// A new login in process `proc`: the provider authorizes a new grant for the process's
/// credential, and the process's client installs its tokens (in the process, so a crash or a
/// suspend of the process delays or loses the installation with it).
pub(super) fn login(w: &Arc<Shared>, proc: usize) {
    let now = w.exec.now();
    let cred = w.procs[proc].cred;
    let client = w.procs[proc].client.lock().clone();
    let Some(client) = client else {
        w.state
            .lock()
            .trace_line(now, format!("p{proc} login skipped: the process is down"));
        return;
    };
    let offset = w.procs[proc].offset.load(Ordering::Relaxed);
    let (family, set) = {
        let mut s = w.state.lock();
        let (family, at, rt, _) = s.provider.login(now);
        s.families[cred] = family;
        s.record_delivered(cred, proc, now, at.clone(), rt.clone());
        s.trace_line(
            now,
            format!("c{cred} provider: login in p{proc}, grant {family}"),
        );
        // The process reads the answer's lifetime on its own wall clock.
        let issued = wall_at(now, offset);
        let life = w.cfg.profile.at_lifetime;
        let set = TokenSet::new(
            AccessToken::new(at),
            rt.map(RefreshToken::new),
            issued,
            issued + life,
        );
        (family, set)
    };
    w.logins.lock()[cred] = set.clone();
    let w2 = w.clone();
    let group = *w.procs[proc].group.lock();
    w.exec.spawn_in(group, async move {
        let r = client.login(set).await;
        let now = w2.exec.now();
        let mut s = w2.state.lock();
        match r {
            Ok(()) => {
                s.login_floor[proc] = Some(family);
                s.trace_line(
                    now,
                    format!("p{proc} installed the login of grant {family}"),
                );
            }
            Err(e) => s.trace_line(now, format!("p{proc} login not installed: {e:?}")),
        }
    });
}

/// [`Action::WriteNewer`]'s writer: when a rotation of credential `cred` is not yet durable and
/// no token-endpoint call is in flight, redeems the provider's newest refresh token and stores
/// the answer by compare-and-swap. Returns whether it is done (written, or given up at the
/// heal).
pub(super) fn write_newer(w: &Arc<Shared>, cred: usize) -> bool {
    let now = w.exec.now();
    let mut s = w.state.lock();
    if s.healed {
        s.trace_line(now, format!("c{cred} newer write skipped: healed"));
        return true;
    }
    let family = s.families[cred];
    if s.unsaved_since[cred].is_none()
        || s.inflight[cred] > 0
        || s.provider.family_revoked(family).is_some()
    {
        return false;
    }
    let Some(rt) = s.provider.current_refresh_token(family).map(str::to_owned) else {
        return false;
    };
    let answer = s.provider.refresh(now, Some(&rt));
    let parsed = keepfresh::oauth::parse_token_response(keepfresh::oauth::HttpAnswer {
        status: answer.status,
        content_type: Some(answer.content_type),
        retry_after: None,
        body: &answer.body,
    });
    let Ok(r) = parsed else {
        s.trace_line(now, format!("c{cred} another writer's refresh failed"));
        return true;
    };
    let access = r.access_token().expose_secret().to_owned();
    let refresh = r
        .refresh_token()
        .map(|t| t.expose_secret().to_owned())
        .unwrap_or(rt);
    let issued = wall_at(now, 0);
    let set = TokenSet::new(
        AccessToken::new(access.clone()),
        Some(RefreshToken::new(refresh.clone())),
        issued,
        issued + w.cfg.profile.at_lifetime,
    );
    let store = &w.stores[cred];
    let prior = store.snapshot();
    let expected = prior.as_ref().map(|p| p.version);
    // The memory store answers at once.
    let saved = futures::FutureExt::now_or_never(store.save(expected, &set));
    if let Some(Ok(keepfresh::store::SaveOutcome::Saved(_))) = saved {
        s.remember_replaced(cred, prior.clone());
        s.check_store_write(
            cred,
            prior.as_ref().map(|p| &p.tokens),
            &set,
            "another writer",
            now,
        );
        // The credential's newest rotation is durable now; the one being retried is older.
        if let Some(since) = s.unsaved_since[cred].take() {
            let d = now.saturating_duration_since(since).as_nanos() as u64;
            s.metrics.max_unsaved_window_ns = s.metrics.max_unsaved_window_ns.max(d);
        }
    }
    s.record_delivered(cred, usize::MAX, now, access, Some(refresh));
    s.trace_line(
        now,
        format!("c{cred} another writer redeemed the newest refresh token and stored the answer during a save retry"),
    );
    true
}

pub(super) fn kill(w: &Arc<Shared>, proc: usize) {
    let group = *w.procs[proc].group.lock();
    let cred = w.procs[proc].cred;
    // A rotation the dying process received but had not saved is lost with it.
    {
        let mut s = w.state.lock();
        let now = w.exec.now();
        let f = s.families[cred];
        let newest = s.provider.current_refresh_token(f).map(str::to_owned);
        let stored = w.stores[cred].snapshot().and_then(|st| {
            st.tokens
                .refresh_token()
                .map(|r| r.expose_secret().to_owned())
        });
        if let Some(newest) = &newest {
            // A rotation this process received that the store does not hold dies with it.
            let received = s.delivered[cred]
                .iter()
                .any(|d| d.proc == proc && d.refresh.as_ref() == Some(newest));
            if received && stored.as_ref() != Some(newest) {
                s.metrics.tokens_lost += 1;
            }
        }
        if let (Some(stored), Some(newest)) = (stored, newest)
            && stored != newest
        {
            s.provider.mark_undelivered(&stored, now);
        }
    }
    w.exec.kill(group);
    w.procs[proc].client.lock().take();
}

//! The rules of one flight: lease, re-read, the provider's answer, saving along the lineage,
//! keeping the lease until durable. Each function leaves the plan in the stage that expects the
//! answer to the effect it returns.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::plan::{Saving, Stage};
use super::replaced::Probe;
use super::{Effect, Feedback, Plan, Report};
use crate::refresher::{ErrorClass, RefreshError, RefreshRequest};
use crate::runtime::MonoTime;
use crate::secret::RefreshToken;
use crate::store::{LeaseOutcome, SaveOutcome, StoreError, Stored, Version};
use crate::token::{TokenResponse, TokenSet};

/// Saves redone at once because the store held this flight's parent set (or a set this process
/// replaced) at another version; past it, such a save backs off as after a failure.
const MAX_PARENT_REWRITES: u32 = 3;
/// First and longest pause between looks at the store while another process holds the lease.
const LEASE_POLL_FIRST: Duration = Duration::from_millis(10);
const LEASE_POLL_MAX: Duration = Duration::from_millis(250);

impl Plan {
    pub(super) fn begin(&mut self) -> Effect {
        if !self.has_store {
            self.stage = Stage::Calling;
            return Effect::Call(self.request());
        }
        if let Some(lease) = &self.lease {
            // Carried from the plan whose set is not yet durable. It may have run out while
            // that plan retried its save, and been taken (and even given back) by another
            // process since: renew it before relying on it.
            self.stage = Stage::RenewCarried;
            return Effect::Renew {
                lease: lease.clone(),
                ttl: self.policy.lease_ttl(),
            };
        }
        self.stage = Stage::Leasing;
        self.try_lease()
    }

    /// The carried lease renewed: still ours, read on; gone, take one anew (waiting like any
    /// other process if someone holds it). Unknown (the store failed): it may still be ours and
    /// it guards a set that is not durable yet, so it is kept (giving it back would let another
    /// process refresh from the durable parent, whose refresh token this process already
    /// spent) and the re-read goes on, as after a failed renewal before a save.
    pub(super) fn on_carried_renewed(&mut self, feedback: Feedback) -> Effect {
        match feedback {
            Feedback::Renewed(Ok(true)) => {}
            Feedback::Renewed(Ok(false)) => {
                self.lease = None;
                self.outbox.push_back(Report::LeaseLost);
                self.stage = Stage::Leasing;
                return self.try_lease();
            }
            _ => self.outbox.push_back(Report::LeaseLost),
        }
        self.stage = Stage::Reread;
        Effect::Load
    }

    pub(super) fn try_lease(&mut self) -> Effect {
        Effect::TryLease {
            ttl: self.policy.lease_ttl(),
        }
    }

    pub(super) fn on_lease(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        match feedback {
            Feedback::Lease(Ok(LeaseOutcome::Acquired(lease))) => {
                self.lease = Some(lease);
                self.stage = Stage::Reread;
                Effect::Load
            }
            Feedback::Lease(Ok(LeaseOutcome::Unsupported)) => {
                self.stage = Stage::Reread;
                Effect::Load
            }
            Feedback::Lease(Ok(LeaseOutcome::Held)) => {
                if !self.announced_busy {
                    self.announced_busy = true;
                    self.outbox.push_back(Report::LeaseBusy);
                }
                if now >= self.give_up {
                    return self.poll_sleep(now);
                }
                self.stage = Stage::PollLoad;
                Effect::Load
            }
            Feedback::Lease(Err(e)) if !self.policy.fail_open() => self.fail(
                RefreshError::transient(format!("the store's refresh lease failed: {e}")),
            ),
            Feedback::Lease(Err(_)) => {
                self.stage = Stage::Reread;
                Effect::Load
            }
            _ => self.fail(RefreshError::transient(
                "unexpected answer to a lease request",
            )),
        }
    }

    pub(super) fn poll_sleep(&mut self, now: MonoTime) -> Effect {
        if now >= self.give_up {
            return self.fail(RefreshError::transient(
                "another process holds the refresh lease and produced no tokens in time",
            ));
        }
        // The holder usually finishes within one provider round trip: poll soon, then less and
        // less often (10 ms doubling to 250 ms), jittered so waiting processes do not align.
        let ceiling = LEASE_POLL_FIRST
            .saturating_mul(1 << self.polls.min(5))
            .min(LEASE_POLL_MAX);
        self.polls += 1;
        let pause = ceiling.mul_f64(0.5 + 0.5 * self.rng.unit());
        self.stage = Stage::PollSleep;
        Effect::Sleep {
            until: now.saturating_add(pause).min(self.give_up),
        }
    }

    pub(super) fn on_reread(&mut self, feedback: Feedback) -> Effect {
        match feedback {
            Feedback::Loaded(Ok(Some(stored))) => {
                if self.is_newer(&stored) {
                    return self.finish_with(Report::Adopted(stored));
                }
                if !self.expects(stored.version) && self.is_older(&stored) {
                    // The store is behind this process: refresh from the set held, never from
                    // the stored one (its refresh token is spent), and keep expecting the
                    // version our lineage wrote; the save puts the lineage back if needed.
                    self.outbox.push_back(Report::StoreBehind);
                } else {
                    // Our own set (or our durable parent): refresh from it, expecting its version.
                    self.expected = Some(stored.version);
                }
            }
            Feedback::Loaded(Ok(None)) => {
                // Emptied by someone (or never written): a save must expect an empty store.
                self.expected = None;
            }
            Feedback::Loaded(Err(e)) => {
                if !self.policy.fail_open() {
                    return self.fail(RefreshError::transient(format!(
                        "the store could not be re-read before refreshing: {e}"
                    )));
                }
            }
            _ => return self.fail(RefreshError::transient("unexpected answer to a store read")),
        }
        self.stage = Stage::Calling;
        Effect::Call(self.request())
    }

    pub(super) fn on_called(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        let Feedback::Called {
            result,
            issued,
            issued_wall,
        } = feedback
        else {
            return self.fail(RefreshError::ambiguous(
                "the provider call produced no answer",
            ));
        };
        match result {
            Ok(response) => self.accept(now, response, issued, issued_wall),
            Err(error) if error.class() == ErrorClass::InvalidGrant && self.has_store => {
                // The refresh token we started from is dead, owed or not.
                self.owed = None;
                self.stage = Stage::InvalidGrantLoad { error };
                Effect::Load
            }
            Err(error) => self.fail(error),
        }
    }

    /// Turns the provider's answer into the new set: keeps the old refresh token when none is
    /// sent, keeps a rotated one even from an answer without an access token, keeps the scope
    /// when none is sent, and validates the lifetime.
    pub(super) fn accept(
        &mut self,
        now: MonoTime,
        response: TokenResponse,
        issued: MonoTime,
        issued_wall: OffsetDateTime,
    ) -> Effect {
        let old_rt = self.refresh_token().cloned();
        let (access, new_rt, expires_in, scope) = response.into_parts();
        let rotated = new_rt.as_ref().is_some_and(|n| Some(n) != old_rt.as_ref());
        let refresh_token = new_rt.or(old_rt);
        let scope = scope.or_else(|| self.base().and_then(|b| b.scope()).map(str::to_owned));
        if access.is_empty() {
            let error =
                RefreshError::transient("the token endpoint answered without an access token");
            let kept = match (rotated, self.start.base.as_deref()) {
                (true, Some(base)) => {
                    let mut set = base.clone();
                    set.set_refresh_token(refresh_token.clone());
                    Some(Arc::new(set))
                }
                _ => None,
            };
            let kept_alone = match (&kept, rotated, self.start.base.is_none()) {
                (None, true, true) => refresh_token.clone(),
                _ => None,
            };
            self.outbox.push_back(Report::Malformed {
                kept_refresh_token: kept.is_some() || kept_alone.is_some(),
            });
            if let Some(rt) = kept_alone {
                // Only a refresh token was known: keep the rotated one in its place (in memory;
                // a store holds whole token sets, and there is no access token to save).
                self.outbox.push_back(Report::RefreshTokenRotated(rt));
            }
            return match kept {
                Some(set) if self.has_store => {
                    self.pending = Some((set, Saving::Kept { error }));
                    self.before_save()
                }
                kept => self.finish_with(failed(error, kept, false)),
            };
        }
        let (lifetime, adjustment) = self.policy.lifetime(expires_in);
        if let Some(adjustment) = adjustment {
            self.outbox.push_back(Report::LifetimeAdjusted {
                adjustment,
                used: lifetime,
            });
        }
        let expires_at = time::Duration::try_from(lifetime)
            .ok()
            .and_then(|l| issued_wall.checked_add(l));
        let Some(expires_at) = expires_at else {
            return self.fail(RefreshError::transient(
                "the token's expiry is out of the calendar's range",
            ));
        };
        // `issued_at` never goes back along a lineage: after the wall clock was set back, a
        // refreshed set must not look older than the set it replaced (a host that passes its
        // first tokens at every start would otherwise see them win `Precedence::Newer` over the
        // store's newer set, and redeem a spent refresh token). `expires_at` stays on the wall
        // clock the expiry is judged by.
        let issued_at = match self.start.base.as_deref() {
            Some(base) => issued_wall.max(base.issued_at()),
            None => issued_wall,
        };
        let mut set = TokenSet::new(access, refresh_token, issued_at, expires_at);
        if let Some(scope) = scope {
            set = set.with_scope(scope);
        }
        self.pending = Some((
            Arc::new(set),
            Saving::Refreshed {
                issued,
                lifetime,
                rotated,
            },
        ));
        if !self.has_store {
            return self.report_saved(now, None, false);
        }
        self.before_save()
    }

    pub(super) fn before_save(&mut self) -> Effect {
        if self.lease.is_some() {
            self.stage = Stage::RenewBeforeSave;
            return self.renew();
        }
        self.save()
    }

    pub(super) fn renew(&mut self) -> Effect {
        match &self.lease {
            Some(lease) => Effect::Renew {
                lease: lease.clone(),
                ttl: self.policy.lease_ttl(),
            },
            None => self.save(),
        }
    }

    pub(super) fn on_renewed(&mut self, feedback: Feedback) {
        match feedback {
            Feedback::Renewed(Ok(true)) => {}
            // The store no longer knows the lease: another process may take it. Save anyway (the
            // compare-and-swap protects the store), but there is nothing left to release.
            Feedback::Renewed(Ok(false)) => {
                self.lease = None;
                self.outbox.push_back(Report::LeaseLost);
            }
            // Unknown: the lease may still be ours; keep it and renew again before the next save.
            _ => self.outbox.push_back(Report::LeaseLost),
        }
    }

    pub(super) fn save(&mut self) -> Effect {
        let Some((set, _)) = &self.pending else {
            return self.finish();
        };
        let effect = Effect::Save {
            expected: self.expected,
            set: set.clone(),
        };
        self.stage = Stage::Saving;
        effect
    }

    pub(super) fn on_saved(&mut self, now: MonoTime, feedback: Feedback) -> Effect {
        let Some((set, _)) = &self.pending else {
            return self.finish();
        };
        let set = set.clone();
        match feedback {
            Feedback::Saved(Ok(SaveOutcome::Saved(v))) => self.report_saved(now, Some(v), false),
            Feedback::Saved(Ok(SaveOutcome::Conflict(held))) => {
                self.outbox.push_back(Report::Conflict);
                match held {
                    // Our own write landed although its answer was lost.
                    Some(h) if h.tokens == *set => self.report_saved(now, Some(h.version), false),
                    // Our parent, rewritten at another version, or a set this process
                    // replaced, back in the store (a save it acknowledged and lost): older than
                    // ours, still ours to replace. Never given up for: going back to it would
                    // send its spent refresh token.
                    Some(h) if self.base().is_some_and(|b| h.tokens == *b) || self.is_older(&h) => {
                        if self.base().is_none_or(|b| h.tokens != *b) {
                            self.outbox.push_back(Report::StoreBehind);
                        }
                        self.expected = Some(h.version);
                        if self.parent_rewrites < MAX_PARENT_REWRITES {
                            self.parent_rewrites += 1;
                            return self.save();
                        }
                        // The store keeps changing under our saves (an unrelated writer in a
                        // loop): back off as after a failed save, and retry.
                        self.save_attempts += 1;
                        self.outbox.push_back(Report::SaveFailed {
                            attempt: self.save_attempts,
                            error: StoreError::new(
                                crate::store::StoreErrorKind::Io,
                                "the store kept changing under the save",
                            ),
                        });
                        self.report_saved(now, None, true)
                    }
                    // Another lineage's set (a login, another process) or an emptied store:
                    // never overwrite it.
                    other => self.superseded(other),
                }
            }
            Feedback::Saved(Err(error)) => {
                self.save_attempts += 1;
                self.outbox.push_back(Report::SaveFailed {
                    attempt: self.save_attempts,
                    error,
                });
                self.report_saved(now, None, true)
            }
            _ => {
                self.save_attempts += 1;
                self.outbox.push_back(Report::SaveFailed {
                    attempt: self.save_attempts,
                    error: StoreError::new(
                        crate::store::StoreErrorKind::Io,
                        "unexpected answer to a save",
                    ),
                });
                self.report_saved(now, None, true)
            }
        }
    }

    /// Reports the first save's result (or, for an owed save, its landing), then either
    /// finishes or waits to retry.
    pub(super) fn report_saved(
        &mut self,
        now: MonoTime,
        version: Option<Version>,
        owed: bool,
    ) -> Effect {
        let Some((set, saving)) = self.pending.take() else {
            return self.finish();
        };
        if !matches!(saving, Saving::Kept { .. }) {
            self.owed = None;
        }
        if let Some(v) = version {
            self.expected = Some(v);
        }
        match saving {
            Saving::Refreshed {
                issued,
                lifetime,
                rotated,
            } => self.outbox.push_back(Report::Refreshed {
                set: set.clone(),
                issued,
                lifetime,
                rotated,
                version,
                pending: owed,
            }),
            Saving::Kept { error } => self
                .outbox
                .push_back(failed(error, Some(set.clone()), owed)),
            Saving::Owed => {
                if let Some(v) = version {
                    self.outbox.push_back(Report::Durable { version: v });
                }
            }
        }
        if !owed {
            return self.finish();
        }
        self.pending = Some((set, Saving::Owed));
        self.stage = Stage::RetryWait;
        let mut delay = self
            .policy
            .backoff_delay(self.save_attempts, None, &mut self.rng);
        if self.lease.is_some() {
            // Renewed before every retry: keep the waits well inside its time-to-live.
            delay = delay.min(self.policy.lease_ttl() / 3);
        }
        Effect::Sleep {
            until: now.saturating_add(delay),
        }
    }

    pub(super) fn superseded(&mut self, held: Option<Stored>) -> Effect {
        let Some((set, saving)) = self.pending.take() else {
            return self.finish();
        };
        match (saving, held) {
            (Saving::Owed, held) => self.outbox.push_back(Report::Superseded(held)),
            (_, Some(h)) => {
                // The provider answered a refresh of the base, whose answer gives way to the
                // store's set: the base is older than anything held from now on all the same.
                if let Some(base) = self.start.base.clone() {
                    self.outbox.push_back(Report::RefreshedFrom(base));
                }
                self.outbox.push_back(Report::Adopted(h))
            }
            // The store was emptied under a first save: serve the new set from memory, but do
            // not resurrect the store's content (a logout, or another process's invalid_grant).
            (
                Saving::Refreshed {
                    issued,
                    lifetime,
                    rotated,
                },
                None,
            ) => {
                self.outbox.push_back(Report::Refreshed {
                    set,
                    issued,
                    lifetime,
                    rotated,
                    version: None,
                    pending: false,
                });
                self.outbox.push_back(Report::Superseded(None));
            }
            (Saving::Kept { error }, None) => {
                self.outbox.push_back(failed(error, Some(set), false));
                self.outbox.push_back(Report::Superseded(None));
            }
        }
        self.finish()
    }

    /// Ends the flight with a failure (no kept set).
    pub(super) fn fail(&mut self, error: RefreshError) -> Effect {
        self.finish_with(failed(error, None, false))
    }

    pub(super) fn finish_with(&mut self, report: Report) -> Effect {
        let failed = matches!(report, Report::Failed { .. });
        if !failed {
            // A new set (or the store's) supersedes a carried owed save.
            self.owed = None;
        }
        self.outbox.push_back(report);
        if let (true, Some(owed), None) = (failed, self.owed.take(), &self.pending) {
            // This refresh failed, but the set it started from is still not durable: go on
            // saving it (and keep the lease until it lands).
            self.pending = Some((owed, Saving::Owed));
            self.stage = Stage::RetryWait;
            return Effect::Sleep { until: self.now };
        }
        self.finish()
    }

    /// Releases the lease, then is done (queued reports go out first, see `step`).
    pub(super) fn finish(&mut self) -> Effect {
        if let Some(lease) = self.lease.take() {
            self.stage = Stage::Finishing;
            return Effect::Release { lease };
        }
        self.stage = Stage::Done;
        Effect::Done
    }

    pub(super) fn request(&self) -> RefreshRequest {
        let mut r = RefreshRequest::new(self.refresh_token().cloned());
        r.scope = self.base().and_then(|b| b.scope()).map(str::to_owned);
        r.attempt = self.start.attempt;
        r
    }

    pub(super) fn refresh_token(&self) -> Option<&RefreshToken> {
        self.start
            .base
            .as_deref()
            .and_then(|b| b.refresh_token())
            .or(self.start.refresh_token.as_ref())
    }

    /// Whether `version` is one this flight's lineage wrote or read (the store at it holds our
    /// set or our durable parent).
    pub(super) fn expects(&self, version: Version) -> bool {
        Some(version) == self.expected || Some(version) == self.start.expected
    }

    /// Whether the store holds a set this process has moved past: one it replaced (the same
    /// set, or its access token), or one carrying a refresh token of a replaced set that the
    /// set held no longer carries (spent, or given up for a login). Such a set is older than
    /// ours whatever its version: a store shows one after losing an acknowledged save, or from
    /// a stale replica.
    pub(super) fn is_older(&self, stored: &Stored) -> bool {
        let (access, refresh) = (stored.tokens.access_token(), stored.tokens.refresh_token());
        let ours_access = self.base().map(|b| b.access_token());
        let ours_refresh = self.refresh_token();
        let refresh = refresh.filter(|_| refresh != ours_refresh);
        let access = Some(access).filter(|a| Some(*a) != ours_access);
        if self.start.replaced.is_empty() {
            return false;
        }
        // The stored set's hashes once, not once per remembered set.
        let probe = Probe::new(&stored.tokens, access, refresh);
        self.start.replaced.iter().any(|r| r.matches(&probe))
    }

    /// Whether the store holds a set of another lineage than the one this flight started from:
    /// not its base set, and not a set it moved past (its durable parent among them).
    ///
    /// At a version this lineage wrote or read, an honest store holds our base or our durable
    /// parent; any other set there was written by someone else after the store lost our save
    /// and handed its version out again (a Redis failover rolls its counter back too).
    pub(super) fn is_newer(&self, stored: &Stored) -> bool {
        if self.is_older(stored) {
            return false;
        }
        match self.start.base.as_deref() {
            // Known by a refresh token alone: the set at the version the builder read is the
            // one that refresh token was given over.
            None => !self.expects(stored.version),
            Some(ours) => {
                ours.refresh_token() != stored.tokens.refresh_token()
                    || ours.access_token() != stored.tokens.access_token()
            }
        }
    }
}

pub(super) fn failed(error: RefreshError, kept: Option<Arc<TokenSet>>, pending: bool) -> Report {
    Report::Failed {
        error,
        kept,
        pending,
    }
}

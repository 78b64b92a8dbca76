//! What the credential does with each [`Report`] of the plan carrying out its flight: the
//! machine learns the result, the token set and store version are updated, waiters are woken.

use std::sync::Arc;

use super::engine::{grant_for, After, Core, Inner, Job};
use crate::event::Event;
use crate::flight::Report;
use crate::machine::{Grant, Input};
use crate::runtime::MonoTime;
use crate::store::Version;

impl Inner {
    /// Applies one report of the plan carrying out `job`.
    pub(crate) fn apply(self: &Arc<Self>, job: &Job, report: Report) {
        let mut after = After::default();
        let ambiguous = matches!(&report, Report::Failed { error, .. } if error.class() == crate::refresher::ErrorClass::Ambiguous);
        {
            let mut core = self.core.lock();
            let now = self.common.rt.now();
            if job.epoch != core.epoch {
                // A login superseded this flight: nothing it reports applies any more.
                return;
            }
            let ours = core.machine.flight() == Some(job.flight);
            match report {
                Report::LeaseBusy => after.events.push(Event::LeaseBusy { at: now }),
                Report::LeaseLost => after.events.push(Event::LeaseLost { at: now }),
                Report::Conflict => after.events.push(Event::StoreConflict { at: now }),
                Report::Cleared => after.events.push(Event::StoreCleared { at: now }),
                Report::StoreBehind => after.events.push(Event::StoreBehind { at: now }),
                Report::RefreshedFrom(set) if ours => core.retire(set),
                Report::RefreshTokenRotated(rt) if ours && core.tokens.is_none() => {
                    core.active_mut().refresh_only = Some(rt);
                }
                Report::LifetimeAdjusted { adjustment, used } => {
                    after.events.push(Event::LifetimeAdjusted {
                        at: now,
                        adjustment,
                        used,
                    })
                }
                Report::Malformed { kept_refresh_token } => {
                    after.events.push(Event::MalformedResponse {
                        at: now,
                        kept_refresh_token,
                    })
                }
                Report::SaveFailed { attempt, error } => {
                    let generation = core
                        .persist_pending()
                        .unwrap_or(core.machine.generation() + 1);
                    after.events.push(Event::PersistFailed {
                        at: now,
                        generation,
                        attempt,
                        error,
                    });
                }
                Report::Refreshed {
                    set,
                    issued,
                    lifetime,
                    rotated,
                    version,
                    pending,
                } if ours => {
                    let grant = Grant::new(issued, lifetime, set.refresh_token().is_some());
                    core.install(set.clone(), true);
                    if let Some(a) = core.active.as_deref_mut() {
                        a.refresh_only = None;
                        a.last_error = None;
                    }
                    core.machine.handle(Input::RefreshSucceeded {
                        now,
                        flight: job.flight,
                        grant,
                    });
                    let generation = core.machine.generation();
                    after.events.push(Event::Refreshed {
                        at: now,
                        flight: job.flight,
                        generation,
                        access_token: set.access_token().fingerprint(),
                        refresh_token: set.refresh_token().map(|r| r.fingerprint()),
                        rotated,
                        lifetime,
                    });
                    note_saved(&mut core, generation, version, pending, now, &mut after);
                    self.end_flight(&mut core, job.flight, &mut after);
                }
                Report::Adopted(stored) if ours => {
                    let set = Arc::new(stored.tokens);
                    let grant = grant_for(&set, now, self.common.rt.wall());
                    core.install(set.clone(), false);
                    core.version = Some(stored.version);
                    core.clear_for_new_set();
                    core.machine.handle(Input::RefreshSucceeded {
                        now,
                        flight: job.flight,
                        grant,
                    });
                    after.events.push(Event::Adopted {
                        at: now,
                        generation: core.machine.generation(),
                        access_token: set.access_token().fingerprint(),
                    });
                    self.end_flight(&mut core, job.flight, &mut after);
                }
                Report::Failed {
                    error,
                    kept,
                    pending,
                } if ours => {
                    if let Some(set) = kept {
                        core.install(set, true);
                        let generation = core.machine.generation();
                        note_saved(&mut core, generation, None, pending, now, &mut after);
                    }
                    after.events.push(Event::RefreshFailed {
                        at: now,
                        flight: job.flight,
                        class: error.class(),
                        retry_after: error.retry_after(),
                    });
                    core.machine.handle(Input::RefreshFailed {
                        now,
                        flight: job.flight,
                        class: error.class(),
                        retry_after: error.retry_after(),
                    });
                    core.active_mut().last_error = Some(error);
                    self.end_flight(&mut core, job.flight, &mut after);
                }
                Report::Durable { version } => {
                    core.version = Some(version);
                    if let Some(generation) = core.take_persist_pending() {
                        after.events.push(Event::Persisted {
                            at: now,
                            generation,
                            version,
                        });
                    }
                }
                Report::Superseded(held) if core.persist_pending().is_some() => {
                    core.take_persist_pending();
                    {
                        after.events.push(Event::SaveSuperseded {
                            at: now,
                            adopted: held.is_some(),
                        });
                        if let Some(stored) = held {
                            self.authorize_locked(
                                &mut core,
                                Arc::new(stored.tokens),
                                Some(stored.version),
                                false,
                                &mut after,
                            );
                        }
                    }
                }
                // A result for a flight the machine no longer runs (superseded by a login
                // or an adopted set): dropped.
                _ => {}
            }
            core.settle();
            self.publish_locked(&mut core, &mut after.events);
        }
        self.run_after(after);
        if ambiguous {
            // The retry after an ambiguous answer runs on the timer, caller or not.
            self.start_timer();
        }
        self.nudge();
    }
}

fn note_saved(
    core: &mut Core,
    generation: u64,
    version: Option<Version>,
    pending: bool,
    now: MonoTime,
    after: &mut After,
) {
    if pending {
        core.active_mut().persist_pending = Some(generation);
        return;
    }
    core.take_persist_pending();
    if let Some(version) = version {
        core.version = Some(version);
        after.events.push(Event::Persisted {
            at: now,
            generation,
            version,
        });
    }
}

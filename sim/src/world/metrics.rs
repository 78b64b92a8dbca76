//! What a run measured, and how it failed.

use super::*;

/// How a run failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailureKind {
    /// An invariant was broken.
    Correctness,
    /// Something never happened: a deadlock, a waiter past its deadline, no recovery.
    Liveness,
    /// The simulated code panicked.
    Crash,
}

impl FailureKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            FailureKind::Correctness => 10,
            FailureKind::Liveness => 11,
            FailureKind::Crash => 12,
        }
    }
}

/// The first invariant violation of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// Kind.
    pub kind: FailureKind,
    /// What went wrong (never contains a secret).
    pub message: String,
    /// Simulated time of detection, seconds.
    pub at_secs: f64,
}

/// Log2 histogram of durations.
#[derive(Clone, Debug)]
pub struct Histogram {
    pub(crate) buckets: [u64; 65],
    pub(crate) count: u64,
    pub(crate) max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; 65],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Records one duration in nanoseconds.
    #[inline]
    pub fn record(&mut self, nanos: u64) {
        self.buckets[(64 - nanos.leading_zeros()) as usize] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
    }

    /// Upper bound of the bucket holding quantile `q`, in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return if i == 0 {
                    0
                } else {
                    (1u64 << (i - 1)).saturating_mul(2).min(self.max)
                };
            }
        }
        self.max
    }

    /// Largest value.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// What callers saw in one time bucket of [`Metrics::series`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerBucket {
    /// Requests that did not get a token at once.
    pub blocked: u64,
    /// Their waits summed, ns (with `blocked`, the mean wait).
    pub blocked_wait_ns: u64,
    /// Requests that got an error.
    pub errors: u64,
}

/// Counters the oracles and reports use.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Token-endpoint call start times (ns).
    pub token_calls: Vec<u64>,
    /// Caller requests.
    pub requests: u64,
    /// Tokens served.
    pub served: u64,
    /// Caller errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Caller waits.
    pub waits: Histogram,
    /// Served with less than 60 s of true life left.
    pub near_expiry: u64,
    /// Served after the provider's true expiry where the provider did not state it.
    pub served_past_true_expiry: u64,
    /// Resource-server 401s seen by callers.
    pub rs_unauthorized: u64,
    /// 401s again after the one retry, for a token the process had been told was rejected.
    pub rs_unauthorized_after_retry: u64,
    /// 401s again after the one retry, for a token revoked since it was issued that no 401 had
    /// reported to the process yet (no client can know of it; not a failure).
    pub rs_retry_revoked_unreported: u64,
    /// Resource requests checked by the resource server.
    pub rs_requests: u64,
    /// Resource-server 403 `insufficient_scope` answers (step-ups; never a refresh).
    pub rs_step_up: u64,
    /// Re-authorization signals.
    pub reauths: u64,
    /// Persist failures signalled.
    pub persist_failures: u64,
    /// Requests abandoned by callers (cancellation).
    pub abandoned: u64,
    /// Per time bucket: (token calls, max caller wait ns).
    pub series: Vec<(u64, u64)>,
    /// Per time bucket of [`Metrics::series`] (same width, same start): what callers saw.
    pub caller_series: Vec<CallerBucket>,
    /// Width of a series bucket, ns.
    pub bucket_ns: u64,
    /// Largest time between a provider commit and the next successful store write, ns.
    pub max_unsaved_window_ns: u64,
    /// Caller requests that did not get a token at once (waited at all).
    pub blocked: u64,
    /// Waits of the blocked requests.
    pub blocked_waits: Histogram,
    /// Blocked requests that started while an access token the credential had received was
    /// still valid at the resource server.
    pub blocked_while_valid: u64,
    /// Caller errors while an access token the credential had received was still valid.
    pub errors_while_valid: u64,
    /// Token-endpoint calls that started while another call for the same credential was in
    /// flight, or within [`DUPLICATE_WINDOW`] of a refresh answer delivered for it.
    pub duplicate_calls: u64,
    /// Replays of rotated refresh tokens outside any grace window whose rotation answer had
    /// reached the client (not excused by a lost answer).
    pub unexcused_replays: u64,
    /// Credentials whose family the provider revoked for refresh-token reuse.
    pub families_revoked_by_reuse: u64,
    /// Process instances that reported that re-authorization is required.
    pub reauth_processes: u64,
    /// Of those, instances started after a crash or restart.
    pub reauth_after_restart: u64,
    /// Rotated refresh tokens a process had received but not stored when it stopped.
    pub tokens_lost: u64,
    /// Event-listener panics injected into processes.
    pub listener_panics: u64,
    /// Lies the store told: saves it acknowledged and lost, reads it answered with an older set.
    pub store_lies: u64,
    /// Replays of rotated refresh tokens that a lie of the store hid from the process that
    /// replayed (excused: the store's failure, not the engine's).
    pub replays_blamed_on_store: u64,
}

impl Metrics {
    /// The caller bucket of simulated time `at_ns` (`None` past the series' end).
    pub(crate) fn caller_bucket(&mut self, at_ns: u64) -> Option<&mut CallerBucket> {
        let b = (at_ns / self.bucket_ns.max(1)) as usize;
        if b >= self.series.len() {
            return None;
        }
        if self.caller_series.len() < self.series.len() {
            self.caller_series
                .resize(self.series.len(), CallerBucket::default());
        }
        self.caller_series.get_mut(b)
    }

    /// Adds the figures of an independent shard of the same world.
    pub(crate) fn absorb(&mut self, o: Metrics) {
        self.token_calls.extend(o.token_calls);
        self.requests += o.requests;
        self.served += o.served;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.waits.merge(&o.waits);
        self.near_expiry += o.near_expiry;
        self.served_past_true_expiry += o.served_past_true_expiry;
        self.rs_unauthorized += o.rs_unauthorized;
        self.rs_unauthorized_after_retry += o.rs_unauthorized_after_retry;
        self.rs_retry_revoked_unreported += o.rs_retry_revoked_unreported;
        self.rs_requests += o.rs_requests;
        self.rs_step_up += o.rs_step_up;
        self.reauths += o.reauths;
        self.persist_failures += o.persist_failures;
        self.abandoned += o.abandoned;
        if self.series.len() < o.series.len() {
            self.series.resize(o.series.len(), (0, 0));
        }
        for (a, b) in self.series.iter_mut().zip(o.series.iter()) {
            a.0 += b.0;
            a.1 = a.1.max(b.1);
        }
        if self.caller_series.len() < o.caller_series.len() {
            self.caller_series
                .resize(o.caller_series.len(), CallerBucket::default());
        }
        for (a, b) in self.caller_series.iter_mut().zip(o.caller_series.iter()) {
            a.blocked += b.blocked;
            a.blocked_wait_ns += b.blocked_wait_ns;
            a.errors += b.errors;
        }
        self.bucket_ns = self.bucket_ns.max(o.bucket_ns);
        self.max_unsaved_window_ns = self.max_unsaved_window_ns.max(o.max_unsaved_window_ns);
        self.blocked += o.blocked;
        self.blocked_waits.merge(&o.blocked_waits);
        self.blocked_while_valid += o.blocked_while_valid;
        self.errors_while_valid += o.errors_while_valid;
        self.duplicate_calls += o.duplicate_calls;
        self.unexcused_replays += o.unexcused_replays;
        self.families_revoked_by_reuse += o.families_revoked_by_reuse;
        self.reauth_processes += o.reauth_processes;
        self.reauth_after_restart += o.reauth_after_restart;
        self.tokens_lost += o.tokens_lost;
        self.listener_panics += o.listener_panics;
        self.store_lies += o.store_lies;
        self.replays_blamed_on_store += o.replays_blamed_on_store;
    }
}

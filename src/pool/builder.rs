//! [`CredentialPoolBuilder`]: the pool's runtime and idle timeout.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use super::scheduler::Timers;
use super::{CredentialPool, Shared};
use crate::runtime::Runtime;
use crate::sync::Mutex;

/// Builder of a [`CredentialPool`].
///
/// # Default
/// | setting | default |
/// |---|---|
/// | [`runtime`](CredentialPoolBuilder::runtime) | [`Runtime::tokio`] with the `tokio` feature; required without it |
/// | [`idle_timeout`](CredentialPoolBuilder::idle_timeout) | none: entries stay until removed |
/// | `metrics_subject` (feature `metrics`) | [`SubjectLabel::Hashed`](crate::metrics::SubjectLabel::Hashed) |
///
/// ```
/// use keepfresh::pool::CredentialPool;
/// use keepfresh::runtime::{ManualClock, Runtime};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let pool = CredentialPool::builder()
///     .runtime(Runtime::manual(&clock))
///     .idle_timeout(Duration::from_secs(30 * 60))
///     .build();
/// assert!(pool.is_empty());
/// ```
pub struct CredentialPoolBuilder {
    runtime: Option<Runtime>,
    idle_timeout: Option<Duration>,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::SubjectLabel>,
}

impl fmt::Debug for CredentialPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialPoolBuilder")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl CredentialPoolBuilder {
    pub(super) fn new() -> Self {
        CredentialPoolBuilder {
            runtime: None,
            idle_timeout: None,
            #[cfg(feature = "metrics")]
            metrics: Some(crate::metrics::SubjectLabel::Hashed),
        }
    }

    /// The runtime every pooled credential and the pool's scheduler run on.
    ///
    /// See the [builder example](CredentialPoolBuilder).
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Evicts entries not looked up ([`get`](CredentialPool::get),
    /// [`get_or_build`](CredentialPool::get_or_build)) for `timeout`: once their credential
    /// has no other handle and no refresh or owed save in progress, they are removed and shut
    /// down. Entries are looked at every quarter of `timeout` (at least every second), so one
    /// goes at most a quarter of `timeout` late. Whole seconds count.
    ///
    /// See the [builder example](CredentialPoolBuilder).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// How the pool's credentials are labelled in metrics, which it installs on each
    /// ([`metrics::install`](crate::metrics::install)); `None` installs none.
    ///
    /// ```
    /// use keepfresh::metrics::SubjectLabel;
    /// let pool = keepfresh::pool::CredentialPool::builder()
    ///     .metrics_subject(Some(SubjectLabel::Omitted))
    ///     .build();
    /// # drop(pool);
    /// ```
    #[cfg(feature = "metrics")]
    pub fn metrics_subject(mut self, subject: Option<crate::metrics::SubjectLabel>) -> Self {
        self.metrics = subject;
        self
    }

    /// The pool. Without a runtime (and without the `tokio` feature) it builds nothing: every
    /// [`get_or_build`](CredentialPool::get_or_build) answers with a configuration error.
    ///
    /// See the [builder example](CredentialPoolBuilder).
    pub fn build(self) -> CredentialPool {
        let runtime = self.runtime.or_else(default_runtime);
        let shared = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            shards: std::array::from_fn(|_| Mutex::new(Default::default())),
            bindings: Mutex::new(Default::default()),
            commons: Mutex::new(Vec::new()),
            runtime,
            idle_timeout: self.idle_timeout,
            timers: Timers::default(),
            next_build: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics: self.metrics,
        });
        CredentialPool { shared }
    }
}

#[cfg(feature = "tokio")]
fn default_runtime() -> Option<Runtime> {
    Some(Runtime::tokio())
}

#[cfg(not(feature = "tokio"))]
fn default_runtime() -> Option<Runtime> {
    None
}

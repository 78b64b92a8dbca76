//! A shared store with the faults real persistence shows: failed writes, slow or hung writes,
//! failed or hung reads and lease operations, outage windows in which every operation fails, a
//! process that dies between the provider's answer and the save, and lies: a save acknowledged
//! and lost, a read answered with an older set. Every write that lands is checked against the
//! provider's issue order: a store never goes back to an older set.
//!
//! The store behind the faults is the simulator's [`MemoryStore`], or a host's
//! own [`TokenStore`] put in by [`crate::lab`]: every operation of a host's store is driven to
//! completion at once, on the executor's thread, so it takes no virtual time (the simulated
//! latency is the fault layer's) and nothing else in the world runs in between.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keepfresh::store::{
    Lease, LeaseOutcome, MemoryStore, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore,
    Version,
};
use keepfresh::TokenSet;
use parking_lot::Mutex;

use super::{FailureKind, State};
use crate::exec::{ExecHandle, Group};

/// The store a credential's processes share, behind the fault layer.
#[derive(Clone)]
pub(crate) enum Backing {
    /// The simulator's own store.
    Memory(MemoryStore),
    /// A host's store (the lab).
    Host(HostStore),
}

/// A host's store and what it reported that the world must turn into a failure.
#[derive(Clone)]
pub(crate) struct HostStore {
    pub(crate) store: Arc<dyn TokenStore>,
    /// The first panic or stuck operation of a host's store in this world, reported by the
    /// fault layer after the operation (never under the world's lock) or at the end of the run.
    pub(crate) incident: Arc<Mutex<Option<String>>>,
    /// Set at the first incident: from then on every operation fails at once, without calling
    /// the store (the run has failed; it only winds down).
    pub(crate) broken: Arc<std::sync::atomic::AtomicBool>,
    /// Real time an operation may take before it is reported as stuck.
    pub(crate) op_limit: Duration,
    /// A multi-thread tokio runtime whose context each operation runs in: its workers drive
    /// the timers and sockets the store registers, and wake this thread.
    #[cfg(feature = "load")]
    pub(crate) tokio: Option<tokio::runtime::Handle>,
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl HostStore {
    /// Runs one operation of the host's store to completion on this thread. A panic or an
    /// operation still pending after [`HostStore::op_limit`] of real time is recorded as the
    /// world's incident and answered with an I/O error.
    fn drive<T>(
        &self,
        op: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.broken.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::new(
                StoreErrorKind::Io,
                "the store under test failed earlier in this run",
            ));
        }
        #[cfg(feature = "load")]
        let _runtime = self.tokio.as_ref().map(tokio::runtime::Handle::enter);
        let mut fut = std::pin::pin!(fut);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let deadline = Instant::now() + self.op_limit;
        loop {
            match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
                Ok(Poll::Ready(r)) => return r,
                Ok(Poll::Pending) => {}
                Err(payload) => {
                    let msg = crate::lab::panic_text(payload.as_ref());
                    self.record(format!("the store under test panicked in {op}: {msg}"));
                    return Err(StoreError::new(
                        StoreErrorKind::Io,
                        "the store under test panicked",
                    ));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.record(format!(
                    "the store under test did not complete {op} within {:?} of real time (it waits on something outside the store: a runtime's timer or I/O reactor, another task)",
                    self.op_limit
                ));
                return Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    "the store under test is stuck",
                ));
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    fn record(&self, msg: String) {
        self.broken
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut i = self.incident.lock();
        if i.is_none() {
            *i = Some(msg);
        }
    }
}

impl Backing {
    /// What the store holds now, read from outside the fault layer: the memory store's
    /// content, or what the host's store's own `load` answers (`None` on an error).
    pub(crate) fn snapshot(&self) -> Option<Stored> {
        match self {
            Backing::Memory(m) => m.snapshot(),
            Backing::Host(h) => h.drive("load", h.store.load()).ok().flatten(),
        }
    }

    /// An unrelated writer rewrites `st` (the content just read): the same tokens at a new
    /// version (a compare-and-swap on `st`'s version for a host's store).
    pub(crate) fn rewrite(&self, st: &Stored) {
        match self {
            Backing::Memory(m) => {
                m.overwrite(Some(st.tokens.clone()));
            }
            Backing::Host(h) => {
                let _ = h.drive("save", h.store.save(Some(st.version), &st.tokens));
            }
        }
    }

    /// The first incident of a host's store not yet reported.
    pub(crate) fn take_incident(&self) -> Option<String> {
        match self {
            Backing::Memory(_) => None,
            Backing::Host(h) => h.incident.lock().take(),
        }
    }

    pub(crate) async fn load(&self) -> Result<Option<Stored>, StoreError> {
        match self {
            Backing::Memory(m) => m.load().await,
            Backing::Host(h) => h.drive("load", h.store.load()),
        }
    }

    pub(crate) async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        match self {
            Backing::Memory(m) => m.save(expected, tokens).await,
            Backing::Host(h) => h.drive("save", h.store.save(expected, tokens)),
        }
    }

    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        match self {
            Backing::Memory(m) => m.clear(expected).await,
            Backing::Host(h) => h.drive("clear", h.store.clear(expected)),
        }
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        match self {
            Backing::Memory(m) => m.try_lease(ttl).await,
            Backing::Host(h) => h.drive("try_lease", h.store.try_lease(ttl)),
        }
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        match self {
            Backing::Memory(m) => m.release(lease).await,
            Backing::Host(h) => h.drive("release", h.store.release(lease)),
        }
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Backing::Memory(m) => m.renew_lease(lease, ttl).await,
            Backing::Host(h) => h.drive("renew_lease", h.store.renew_lease(lease, ttl)),
        }
    }
}

/// One process's view of the store shared with the other processes of a credential.
pub struct FaultyStore {
    pub(crate) inner: Backing,
    pub(crate) state: Arc<Mutex<State>>,
    pub(crate) exec: ExecHandle,
    pub(crate) cred: usize,
    pub(crate) proc: usize,
    pub(crate) group: Group,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("cred", &self.cred)
            .field("proc", &self.proc)
            .finish()
    }
}

enum WriteFault {
    None,
    Fail(&'static str),
    Hang,
    Crash,
    /// Acknowledged and not persisted (if the compare-and-swap matches).
    Lost,
}

/// What happens to a read, a clear or a lease operation.
enum OpFault {
    None,
    Fail(&'static str),
    Hang,
}

/// The operations other than a save, for fault decisions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Load,
    Clear,
    Lease,
}

const OUTAGE: &str = "store unreachable (simulated outage)";

impl FaultyStore {
    async fn delay(&self) {
        let d = {
            let mut s = self.state.lock();
            let (lo, hi) = s.faults.store_latency_ms;
            if hi == 0 {
                return;
            }
            let ms = s.rng.range(lo, hi);
            Duration::from_millis(ms)
        };
        self.exec.sleep(d).await;
    }

    fn write_fault(&self, tokens: &TokenSet) -> WriteFault {
        let mut s = self.state.lock();
        // The armed crash hits the save of a set the provider answered this process with —
        // between the answer and its save — not a save of tokens it already had (the start-up
        // save of a builder, a login).
        let answered = s.delivered[self.cred]
            .iter()
            .any(|d| d.proc == self.proc && d.access == tokens.access_token().expose_secret());
        if s.crash_on_save[self.proc] && answered {
            s.crash_on_save[self.proc] = false;
            return WriteFault::Crash;
        }
        if s.healed {
            return WriteFault::None;
        }
        if s.store_out(self.cred, self.exec.now()) {
            return WriteFault::Fail(OUTAGE);
        }
        let (fail, hang, lost) = (
            s.faults.store_write_fail,
            s.faults.store_hang,
            s.faults.save_lost,
        );
        if s.rng.chance(fail) {
            WriteFault::Fail("disk full (simulated)")
        } else if s.rng.chance(hang) {
            WriteFault::Hang
        } else if s.rng.chance(lost) {
            WriteFault::Lost
        } else {
            WriteFault::None
        }
    }

    fn op_fault(&self, op: Op) -> OpFault {
        let mut s = self.state.lock();
        if s.healed {
            return OpFault::None;
        }
        if s.store_out(self.cred, self.exec.now()) {
            return OpFault::Fail(OUTAGE);
        }
        let (fail, hang, what, name) = match op {
            Op::Load => (
                s.faults.load_fail,
                s.faults.load_hang,
                "read failed (simulated)",
                "read",
            ),
            Op::Lease => (
                s.faults.lease_fail,
                s.faults.lease_hang,
                "lease service unreachable (simulated)",
                "lease operation",
            ),
            Op::Clear => return OpFault::None,
        };
        let fault = if s.rng.chance(fail) {
            OpFault::Fail(what)
        } else if s.rng.chance(hang) {
            OpFault::Hang
        } else {
            return OpFault::None;
        };
        let now = self.exec.now();
        let how = if matches!(fault, OpFault::Hang) {
            "hangs"
        } else {
            "fails"
        };
        s.trace_line(now, format!("p{} store: {name} {how}", self.proc));
        fault
    }

    /// A stale read, if one is drawn: one of the sets the store held before its latest writes.
    fn stale_read(&self) -> Option<Stored> {
        let mut s = self.state.lock();
        let rate = s.faults.stale_read;
        let depth = s.store_history[self.cred].len();
        if s.healed || depth == 0 || !s.rng.chance(rate) {
            return None;
        }
        let back = s.rng.range(1, depth as u64) as usize;
        let stale = s.store_history[self.cred][depth - back].clone();
        s.misled[self.proc] = true;
        s.metrics.store_lies += 1;
        let now = self.exec.now();
        s.trace_line(
            now,
            format!(
                "p{} store: stale read, the set of version {} ({back} write(s) behind)",
                self.proc, stale.version.0
            ),
        );
        Some(stale)
    }

    /// A save the store acknowledges and loses, when the compare-and-swap matches: answers the
    /// version the save would have had (the next write that lands gets it too).
    fn lose(&self, expected: Option<Version>, tokens: &TokenSet) -> Option<SaveOutcome> {
        let prior = self.inner.snapshot()?;
        if Some(prior.version) != expected {
            return None;
        }
        let mut s = self.state.lock();
        let now = self.exec.now();
        let version = Version(prior.version.0 + 1);
        let order = |t: &TokenSet| {
            s.provider.issue_order(
                t.access_token().expose_secret(),
                t.refresh_token().map(|r| r.expose_secret()),
            )
        };
        if let (Some(new), Some(old)) = (order(tokens), order(&prior.tokens))
            && new.family > old.family
        {
            s.lost_grant[self.cred] = true;
        }
        // Every rotation from the stored set's refresh token up to the lost set's is hidden:
        // a process holding one of those tokens finds the store behind its own set, not the
        // rotation that spent its token.
        if let Some(old) = prior.tokens.refresh_token().map(|r| r.expose_secret()) {
            let new = tokens.refresh_token().map(|r| r.expose_secret());
            let hidden = new
                .map(|new| s.provider.refresh_tokens_between(old, new))
                .unwrap_or_default();
            s.left_by_lost_save.insert(old.to_owned());
            s.left_by_lost_save.extend(hidden);
        }
        s.metrics.store_lies += 1;
        s.trace_line(
            now,
            format!(
                "p{} store: save acknowledged at version {} and lost",
                self.proc, version.0
            ),
        );
        Some(SaveOutcome::Saved(version))
    }

    /// Turns a panic or a stuck operation of a host's store into the run's failure (nothing
    /// for the simulator's memory store).
    fn flush_incident(&self) {
        if let Some(msg) = self.inner.take_incident() {
            let now = self.exec.now();
            self.state.lock().violate(FailureKind::Crash, now, msg);
        }
    }

    /// Applies `op`'s fault, if any: an error to return, or a hang (never returns).
    async fn fault(&self, op: Op) -> Result<(), StoreError> {
        match self.op_fault(op) {
            OpFault::None => Ok(()),
            OpFault::Fail(what) => Err(StoreError::new(StoreErrorKind::Io, what)),
            OpFault::Hang => futures::future::pending().await,
        }
    }
}

#[async_trait]
impl TokenStore for FaultyStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        self.delay().await;
        self.fault(Op::Load).await?;
        if let Some(stale) = self.stale_read() {
            return Ok(Some(stale));
        }
        let r = self.inner.load().await;
        self.flush_incident();
        r
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.delay().await;
        let fault = self.write_fault(tokens);
        if let WriteFault::Lost = fault
            && let Some(outcome) = self.lose(expected, tokens)
        {
            return Ok(outcome);
        }
        match fault {
            WriteFault::None | WriteFault::Lost => {
                // The memory store answers at once: nothing else runs between the read of the
                // previous content and the write.
                let prior = self.inner.snapshot();
                let outcome = self.inner.save(expected, tokens).await;
                self.flush_incident();
                let outcome = outcome?;
                if let SaveOutcome::Saved(_) = outcome {
                    let now = self.exec.now();
                    let mut s = self.state.lock();
                    s.check_store_write(
                        self.cred,
                        prior.as_ref().map(|p| &p.tokens),
                        tokens,
                        &format!("p{}", self.proc),
                        now,
                    );
                    s.remember_replaced(self.cred, prior);
                }
                Ok(outcome)
            }
            WriteFault::Fail(what) => Err(StoreError::new(StoreErrorKind::Io, what)),
            WriteFault::Hang => futures::future::pending().await,
            WriteFault::Crash => {
                {
                    let mut s = self.state.lock();
                    let now = self.exec.now();
                    s.trace_line(
                        now,
                        format!("p{} crashed between answer and save", self.proc),
                    );
                    if let Some(rt) = s.last_committed[self.proc].take() {
                        s.provider.mark_undelivered(&rt, now);
                    }
                }
                self.exec.kill(self.group);
                futures::future::pending().await
            }
        }
    }

    async fn clear(&self, expected: Version) -> Result<bool, StoreError> {
        self.delay().await;
        self.fault(Op::Clear).await?;
        let prior = self.inner.snapshot();
        let cleared = self.inner.clear(expected).await;
        self.flush_incident();
        let cleared = cleared?;
        if cleared {
            self.state.lock().remember_replaced(self.cred, prior);
        }
        Ok(cleared)
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        self.fault(Op::Lease).await?;
        let r = self.inner.try_lease(ttl).await;
        self.flush_incident();
        r
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        self.fault(Op::Lease).await?;
        let r = self.inner.release(lease).await;
        self.flush_incident();
        r
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.fault(Op::Lease).await?;
        let r = self.inner.renew_lease(lease, ttl).await;
        self.flush_incident();
        r
    }
}

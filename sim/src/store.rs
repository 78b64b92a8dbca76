//! A shared store with the faults real persistence shows: failed writes, slow or hung writes,
//! failed or hung reads and lease operations, outage windows in which every operation fails, and
//! a process that dies between the provider's answer and the save. Every write that lands is
//! checked against the provider's issue order: a store never goes back to an older set.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::store::{
    Lease, LeaseOutcome, MemoryStore, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore,
    Version,
};
use keepfresh::TokenSet;
use parking_lot::Mutex;

use crate::exec::{ExecHandle, Group};
use crate::world::State;

/// One process's view of a [`MemoryStore`] shared with the other processes of a credential.
pub struct FaultyStore {
    pub(crate) inner: MemoryStore,
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

    fn write_fault(&self) -> WriteFault {
        let mut s = self.state.lock();
        if std::mem::take(&mut s.crash_on_save[self.proc]) {
            return WriteFault::Crash;
        }
        if s.healed {
            return WriteFault::None;
        }
        if s.store_out(self.cred, self.exec.now()) {
            return WriteFault::Fail(OUTAGE);
        }
        let (fail, hang) = (s.faults.store_write_fail, s.faults.store_hang);
        if s.rng.chance(fail) {
            WriteFault::Fail("disk full (simulated)")
        } else if s.rng.chance(hang) {
            WriteFault::Hang
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
        self.inner.load().await
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.delay().await;
        match self.write_fault() {
            WriteFault::None => {
                // The memory store answers at once: nothing else runs between the read of the
                // previous content and the write.
                let prior = self.inner.snapshot();
                let outcome = self.inner.save(expected, tokens).await?;
                if let SaveOutcome::Saved(_) = outcome {
                    let now = self.exec.now();
                    self.state.lock().check_store_write(
                        self.cred,
                        prior.as_ref().map(|p| &p.tokens),
                        tokens,
                        &format!("p{}", self.proc),
                        now,
                    );
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
        self.inner.clear(expected).await
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        self.fault(Op::Lease).await?;
        self.inner.try_lease(ttl).await
    }

    async fn release(&self, lease: Lease) -> Result<(), StoreError> {
        self.fault(Op::Lease).await?;
        self.inner.release(lease).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool, StoreError> {
        self.fault(Op::Lease).await?;
        self.inner.renew_lease(lease, ttl).await
    }
}

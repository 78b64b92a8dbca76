//! A shared store with the faults real persistence shows: failed writes, slow or hung writes,
//! and a process that dies between the provider's answer and the save.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keepfresh::store::{
    LeaseOutcome, MemoryStore, SaveOutcome, StoreError, StoreErrorKind, Stored, TokenStore, Version,
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
    pub(crate) proc: usize,
    pub(crate) group: Group,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("proc", &self.proc)
            .finish()
    }
}

enum WriteFault {
    None,
    Fail,
    Hang,
    Crash,
}

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
        let (fail, hang) = (s.faults.store_write_fail, s.faults.store_hang);
        if s.rng.chance(fail) {
            WriteFault::Fail
        } else if s.rng.chance(hang) {
            WriteFault::Hang
        } else {
            WriteFault::None
        }
    }
}

#[async_trait]
impl TokenStore for FaultyStore {
    async fn load(&self) -> Result<Option<Stored>, StoreError> {
        self.delay().await;
        self.inner.load().await
    }

    async fn save(
        &self,
        expected: Option<Version>,
        tokens: &TokenSet,
    ) -> Result<SaveOutcome, StoreError> {
        self.delay().await;
        match self.write_fault() {
            WriteFault::None => self.inner.save(expected, tokens).await,
            WriteFault::Fail => Err(StoreError::new(StoreErrorKind::Io, "disk full (simulated)")),
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
        self.inner.clear(expected).await
    }

    async fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        self.inner.try_lease(ttl).await
    }

    async fn release(&self, lease: keepfresh::store::Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }

    async fn renew_lease(
        &self,
        lease: &keepfresh::store::Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.renew_lease(lease, ttl).await
    }
}

//! The refresh lease and the write lock of a local store, as advisory locks (`flock`) on two
//! sidecar files, plus the notice a waiting process gets when the lease is given back.
//!
//! Why sidecars: the data file is replaced by rename on every save, so a lock on it would guard
//! an inode that is about to disappear. Why `flock`: it belongs to an open file, so the OS drops
//! it when the holder dies, and two opens in one process exclude each other as two processes do.
//! A lease also has a time-to-live inside this process: a flight that vanished without giving
//! its lease back (its task was dropped) does not block the process's next flight forever.
//! Across processes the lock ends when its holder releases it or exits.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use parking_lot::Mutex;

use super::{fsx, io_error, sidecar};
use crate::runtime::{Clock, MonoTime, SystemClock};
use crate::store::{Lease, LeaseOutcome, StoreError};

/// The locks of one store. Handles on the same path in one process share their state through a
/// process-wide table, so they see each other's leases without a system call.
pub(crate) struct Locks {
    lease_path: PathBuf,
    write_path: PathBuf,
    shared: Arc<Mutex<PathState>>,
}

#[derive(Default)]
struct PathState {
    /// The lease this process holds on the path: its id, the locked file and when it runs out.
    held: Option<(u64, File, MonoTime)>,
    /// Bumped on every save, clear and release seen by this process, and when a watcher thread
    /// sees another process give the lease back.
    generation: u64,
    watcher_running: bool,
    waiters: Vec<Waker>,
}

static TABLE: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<PathState>>>>> = OnceLock::new();
static NEXT_LEASE: AtomicU64 = AtomicU64::new(1);

/// Holds the write lock until dropped (closing the file unlocks it).
pub(crate) struct WriteGuard(#[allow(dead_code)] File);

impl Locks {
    pub(crate) fn new(base: &Path) -> Locks {
        let lease_path = sidecar(base, ".lease");
        let write_path = sidecar(base, ".lock");
        let shared = TABLE
            .get_or_init(Default::default)
            .lock()
            .entry(lease_path.clone())
            .or_default()
            .clone();
        Locks {
            lease_path,
            write_path,
            shared,
        }
    }

    /// Takes the short lock that makes read-compare-write atomic; blocks while another writer
    /// (a save takes milliseconds) has it.
    pub(crate) fn write_lock(&self) -> Result<WriteGuard, StoreError> {
        let file = fsx::open_lock_file(&self.write_path)?;
        file.lock()
            .map_err(|e| io_error(&self.write_path, "cannot lock", &e))?;
        Ok(WriteGuard(file))
    }

    pub(crate) fn try_lease(&self, ttl: Duration) -> Result<LeaseOutcome, StoreError> {
        let now = SystemClock.monotonic();
        let mut state = self.shared.lock();
        if let Some((_, _, until)) = &state.held {
            if *until > now {
                return Ok(LeaseOutcome::Held);
            }
            // Ran out inside this process: its flight is gone; closing the file unlocks it.
            state.held = None;
            wake(&mut state);
        }
        let file = fsx::open_lock_file(&self.lease_path)?;
        match file.try_lock() {
            Ok(()) => {
                let id = NEXT_LEASE.fetch_add(1, Ordering::Relaxed);
                state.held = Some((id, file, now.saturating_add(ttl)));
                Ok(LeaseOutcome::Acquired(Lease { id }))
            }
            Err(TryLockError::WouldBlock) => Ok(LeaseOutcome::Held),
            Err(TryLockError::Error(e)) => Err(io_error(&self.lease_path, "cannot lock", &e)),
        }
    }

    pub(crate) fn renew(&self, lease: &Lease, ttl: Duration) -> bool {
        let now = SystemClock.monotonic();
        let mut state = self.shared.lock();
        match &mut state.held {
            Some((id, _, until)) if *id == lease.id && *until > now => {
                *until = now.saturating_add(ttl);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn release(&self, lease: &Lease) {
        let mut state = self.shared.lock();
        if matches!(&state.held, Some((id, _, _)) if *id == lease.id) {
            state.held = None;
            wake(&mut state);
        }
    }

    /// Tells waiters in this process that the store changed.
    pub(crate) fn notify(&self) {
        wake(&mut self.shared.lock());
    }

    /// Resolves at the next change seen by this process, or when the lease file's lock is
    /// free (another process gave the lease back or died).
    pub(crate) fn changed(&self) -> Changed {
        let mut state = self.shared.lock();
        let seen = state.generation;
        if !state.watcher_running {
            state.watcher_running = true;
            let shared = Arc::clone(&self.shared);
            let path = self.lease_path.clone();
            let spawned = std::thread::Builder::new()
                .name("keepfresh-lease-watch".into())
                .spawn(move || watch(&path, &shared));
            if spawned.is_err() {
                // No thread: the waiter falls back to its poll interval.
                state.watcher_running = false;
            }
        }
        Changed {
            shared: Arc::clone(&self.shared),
            seen,
        }
    }
}

/// Blocks until the lease file can be locked shared, that is until no one holds the lease,
/// then wakes the waiters. One such thread runs per path at a time.
fn watch(path: &Path, shared: &Mutex<PathState>) {
    if let Ok(file) = fsx::open_lock_file(path)
        && file.lock_shared().is_ok()
    {
        let _ = file.unlock();
    }
    let mut state = shared.lock();
    state.watcher_running = false;
    wake(&mut state);
}

fn wake(state: &mut PathState) {
    state.generation += 1;
    for w in state.waiters.drain(..) {
        w.wake();
    }
}

/// The future of [`Locks::changed`].
pub(crate) struct Changed {
    shared: Arc<Mutex<PathState>>,
    seen: u64,
}

impl Future for Changed {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shared.lock();
        if state.generation != self.seen {
            return Poll::Ready(());
        }
        if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            state.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

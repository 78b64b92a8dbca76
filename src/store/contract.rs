//! The behaviour every [`TokenStore`] owes the engine, as checks any store can run from a test:
//! versions, compare-and-swap conflicts, clear-if, lease exclusivity and expiry, renewal after
//! expiry, concurrent writers and change notices.
//!
//! Implement [`Fixture`] for your store (how to make an empty one, and how to open another
//! handle on the same one, as another process would), then run [`Contract::check`]:
//!
//! ```
//! use async_trait::async_trait;
//! use keepfresh::runtime::Runtime;
//! use keepfresh::store::contract::{Contract, Fixture};
//! use keepfresh::store::MemoryStore;
//!
//! struct Memory;
//!
//! #[async_trait]
//! impl Fixture for Memory {
//!     type Store = MemoryStore;
//!     async fn fresh(&mut self) -> MemoryStore {
//!         MemoryStore::new()
//!     }
//!     async fn reopen(&mut self, store: &MemoryStore) -> MemoryStore {
//!         store.clone()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let report = Contract::new(Runtime::tokio()).check(&mut Memory).await.unwrap();
//! assert!(report.passed.contains(&"lease expiry"));
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{join_all, select, Either};

use super::{Lease, LeaseOutcome, SaveOutcome, Stored, TokenStore, Version};
use crate::runtime::Runtime;
use crate::secret::{AccessToken, RefreshToken};
use crate::token::TokenSet;

/// How the suite makes the store under test.
#[async_trait]
pub trait Fixture: Send {
    /// The store type.
    type Store: TokenStore;
    /// A new, empty store (a new file, a new key prefix…).
    async fn fresh(&mut self) -> Self::Store;
    /// Another handle on the same store, opened as another process would open it.
    async fn reopen(&mut self, store: &Self::Store) -> Self::Store;
}

/// Which lease behaviour the store promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Leases {
    /// No leases: `try_lease` answers [`LeaseOutcome::Unsupported`].
    Unsupported,
    /// Leases that run out after their time-to-live, so a handle can take over from a holder
    /// that stopped (Redis, memory; a file store within one process).
    Expiring,
}

/// The suite's settings. See the [module example](self).
#[derive(Clone, Debug)]
pub struct Contract {
    runtime: Runtime,
    leases: Leases,
    notifies: bool,
    lease_ttl: Duration,
    writers: usize,
}

/// What a passing run checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The checks that ran and passed, by name.
    pub passed: Vec<&'static str>,
}

/// A broken promise: which check, and what the store did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The check's name.
    pub check: &'static str,
    /// What was expected and what happened (never token material: the suite's tokens are
    /// labels such as `rt-2`).
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store contract, {}: {}", self.check, self.message)
    }
}

impl std::error::Error for Violation {}

type Checked = Result<(), String>;

macro_rules! ensure {
    ($cond:expr_2021, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

impl Contract {
    /// The full suite, for a store with expiring leases and without change notices; sleeps
    /// and timeouts run on `runtime`.
    ///
    /// See the [module example](self).
    pub fn new(runtime: Runtime) -> Contract {
        Contract {
            runtime,
            leases: Leases::Expiring,
            notifies: false,
            lease_ttl: Duration::from_millis(300),
            writers: 8,
        }
    }

    /// The lease behaviour to check (default [`Leases::Expiring`]).
    ///
    /// ```
    /// # use keepfresh::store::contract::{Contract, Leases};
    /// let c = Contract::new(keepfresh::runtime::Runtime::tokio()).leases(Leases::Unsupported);
    /// # let _ = c;
    /// ```
    pub fn leases(mut self, leases: Leases) -> Contract {
        self.leases = leases;
        self
    }

    /// Also check that [`TokenStore::changed`] wakes a waiter when another handle saves and
    /// gives the lease back (default off).
    ///
    /// ```
    /// # use keepfresh::store::contract::Contract;
    /// let c = Contract::new(keepfresh::runtime::Runtime::tokio()).notifies(true);
    /// # let _ = c;
    /// ```
    pub fn notifies(mut self, notifies: bool) -> Contract {
        self.notifies = notifies;
        self
    }

    /// The time-to-live of the leases in the expiry check (default 300 ms; the check waits
    /// about this long).
    ///
    /// ```
    /// # use keepfresh::store::contract::Contract;
    /// # use std::time::Duration;
    /// let c = Contract::new(keepfresh::runtime::Runtime::tokio()).lease_ttl(Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    pub fn lease_ttl(mut self, ttl: Duration) -> Contract {
        self.lease_ttl = ttl;
        self
    }

    /// Runs every check that applies, each on a fresh store.
    ///
    /// See the [module example](self).
    ///
    /// # Errors
    /// Every check that failed, with what the store did.
    pub async fn check<F: Fixture>(&self, fixture: &mut F) -> Result<Report, Vec<Violation>> {
        let mut passed = Vec::new();
        let mut failed = Vec::new();
        let mut record = |check: &'static str, result: Checked| match result {
            Ok(()) => passed.push(check),
            Err(message) => failed.push(Violation { check, message }),
        };
        record("empty store", self.empty(fixture).await);
        record("round trip", self.round_trip(fixture).await);
        record("versions increase", self.versions(fixture).await);
        record("compare-and-swap", self.conflicts(fixture).await);
        record("clear-if", self.clear_if(fixture).await);
        record("concurrent writers", self.concurrent_writers(fixture).await);
        match self.leases {
            Leases::Unsupported => record("no leases", self.no_leases(fixture).await),
            Leases::Expiring => {
                record("lease exclusivity", self.lease_exclusive(fixture).await);
                record("foreign release", self.foreign_release(fixture).await);
                record("concurrent leases", self.concurrent_leases(fixture).await);
                record("lease expiry", self.lease_expiry(fixture).await);
            }
        }
        if self.notifies {
            record("change notice", self.change_notice(fixture).await);
        }
        if failed.is_empty() {
            Ok(Report { passed })
        } else {
            Err(failed)
        }
    }

    async fn empty<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        ensure!(load(&s).await?.is_none(), "a fresh store is not empty");
        ensure!(
            !s.clear(Version(0)).await.map_err(err)?,
            "clear on an empty store reported that it cleared something"
        );
        Ok(())
    }

    async fn round_trip<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        let full = set(1).with_scope("read write");
        let v = saved(s.save(None, &full).await.map_err(err)?)?;
        let other = f.reopen(&s).await;
        let got = load(&other).await?.ok_or("saved tokens are not there")?;
        ensure!(
            got.version == v,
            "load gives version {:?}, save said {v:?}",
            got.version
        );
        ensure!(
            got.tokens == full,
            "the token set read back differs from the one saved"
        );
        // A set without a refresh token round-trips as such.
        let bare = TokenSet::new(AccessToken::new("at-bare"), None, at(0), at(60));
        saved(s.save(Some(v), &bare).await.map_err(err)?)?;
        let got = load(&other).await?.ok_or("saved tokens are not there")?;
        ensure!(
            got.tokens == bare,
            "a set without refresh token changed on the way"
        );
        Ok(())
    }

    async fn versions<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        let v1 = saved(s.save(None, &set(1)).await.map_err(err)?)?;
        let v2 = saved(s.save(Some(v1), &set(2)).await.map_err(err)?)?;
        ensure!(v2 > v1, "the version went from {v1:?} to {v2:?}, not up");
        let other = f.reopen(&s).await;
        let v3 = saved(other.save(Some(v2), &set(3)).await.map_err(err)?)?;
        ensure!(v3 > v2, "the version went from {v2:?} to {v3:?}, not up");
        let got = load(&s).await?.ok_or("tokens vanished")?;
        ensure!(
            got.version == v3 && got.tokens == set(3),
            "a handle does not see what another handle saved"
        );
        Ok(())
    }

    async fn conflicts<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        let v1 = saved(s.save(None, &set(1)).await.map_err(err)?)?;
        let v2 = saved(s.save(Some(v1), &set(2)).await.map_err(err)?)?;
        for (label, expected) in [("an empty store", None), ("a stale version", Some(v1))] {
            match s.save(expected, &set(9)).await.map_err(err)? {
                SaveOutcome::Conflict(Some(now)) => ensure!(
                    now.version == v2 && now.tokens == set(2),
                    "a save expecting {label} conflicted, but reported other content"
                ),
                other => return Err(format!("a save expecting {label} gave {}", outcome(&other))),
            }
        }
        let got = load(&s).await?.ok_or("tokens vanished")?;
        ensure!(
            got.version == v2 && got.tokens == set(2),
            "a conflicting save changed the store"
        );
        Ok(())
    }

    async fn clear_if<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        let v1 = saved(s.save(None, &set(1)).await.map_err(err)?)?;
        let v2 = saved(s.save(Some(v1), &set(2)).await.map_err(err)?)?;
        ensure!(
            !s.clear(v1).await.map_err(err)?,
            "clear with a stale version cleared"
        );
        ensure!(
            load(&s).await?.is_some(),
            "a refused clear emptied the store"
        );
        ensure!(
            s.clear(v2).await.map_err(err)?,
            "clear with the current version refused"
        );
        ensure!(load(&s).await?.is_none(), "a clear left tokens behind");
        match s.save(Some(v2), &set(3)).await.map_err(err)? {
            SaveOutcome::Conflict(None) => {}
            other => {
                return Err(format!(
                "a save expecting the cleared version gave {} (must conflict: the store is empty)",
                outcome(&other)
            ))
            }
        }
        let v3 = saved(s.save(None, &set(3)).await.map_err(err)?)?;
        ensure!(
            v3 > v2,
            "after a clear the version went back from {v2:?} to {v3:?}: a writer that read before the clear could overwrite"
        );
        Ok(())
    }

    async fn concurrent_writers<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        let v1 = saved(s.save(None, &set(1)).await.map_err(err)?)?;
        let mut handles = Vec::new();
        for _ in 0..self.writers {
            handles.push(f.reopen(&s).await);
        }
        let sets: Vec<TokenSet> = (0..self.writers).map(|i| set(100 + i)).collect();
        let results = join_all(
            handles
                .iter()
                .zip(&sets)
                .map(|(h, tokens)| h.save(Some(v1), tokens)),
        )
        .await;
        let mut winners = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r.map_err(err)? {
                SaveOutcome::Saved(v) => winners.push((i, v)),
                SaveOutcome::Conflict(_) => {}
            }
        }
        ensure!(
            winners.len() == 1,
            "{} of {} writers expecting the same version saved; exactly one may",
            winners.len(),
            self.writers
        );
        let (i, v) = winners[0];
        let got = load(&s).await?.ok_or("tokens vanished")?;
        ensure!(
            got.version == v && got.tokens == sets[i],
            "the store does not hold the winning writer's set"
        );
        Ok(())
    }

    async fn no_leases<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        ensure!(
            s.try_lease(self.lease_ttl).await.map_err(err)? == LeaseOutcome::Unsupported,
            "a store declared without leases handed one out"
        );
        Ok(())
    }

    async fn lease_exclusive<F: Fixture>(&self, f: &mut F) -> Checked {
        let a = f.fresh().await;
        let b = f.reopen(&a).await;
        let ttl = Duration::from_secs(30);
        let la = acquired(a.try_lease(ttl).await.map_err(err)?)?;
        ensure!(
            b.try_lease(ttl).await.map_err(err)? == LeaseOutcome::Held,
            "a second handle got the lease while the first held it"
        );
        ensure!(
            a.try_lease(ttl).await.map_err(err)? == LeaseOutcome::Held,
            "the holder's handle got the lease a second time"
        );
        ensure!(
            a.renew_lease(&la, ttl).await.map_err(err)?,
            "renewing a held lease failed"
        );
        a.release(la.clone()).await.map_err(err)?;
        let lb = acquired(b.try_lease(ttl).await.map_err(err)?)?;
        ensure!(
            !a.renew_lease(&la, ttl).await.map_err(err)?,
            "a released lease could be renewed"
        );
        b.release(lb).await.map_err(err)?;
        Ok(())
    }

    async fn foreign_release<F: Fixture>(&self, f: &mut F) -> Checked {
        let a = f.fresh().await;
        let b = f.reopen(&a).await;
        let ttl = Duration::from_secs(30);
        let lb = acquired(b.try_lease(ttl).await.map_err(err)?)?;
        let forged = Lease {
            id: lb.id.wrapping_add(0x5eed),
        };
        a.release(forged.clone()).await.map_err(err)?;
        ensure!(
            a.try_lease(ttl).await.map_err(err)? == LeaseOutcome::Held,
            "releasing a lease that is not the holder's freed it"
        );
        ensure!(
            !a.renew_lease(&forged, ttl).await.map_err(err)?,
            "a lease the handle never held could be renewed"
        );
        b.release(lb).await.map_err(err)?;
        Ok(())
    }

    async fn concurrent_leases<F: Fixture>(&self, f: &mut F) -> Checked {
        let s = f.fresh().await;
        let mut handles = Vec::new();
        for _ in 0..self.writers {
            handles.push(f.reopen(&s).await);
        }
        let ttl = Duration::from_secs(30);
        let results = join_all(handles.iter().map(|h| h.try_lease(ttl))).await;
        let mut got = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            if let LeaseOutcome::Acquired(l) = r.map_err(err)? {
                got.push((i, l));
            }
        }
        ensure!(
            got.len() == 1,
            "{} of {} handles asking at once got the lease; exactly one may",
            got.len(),
            self.writers
        );
        let (i, lease) = got.pop().ok_or("no lease")?;
        handles[i].release(lease).await.map_err(err)?;
        Ok(())
    }

    async fn lease_expiry<F: Fixture>(&self, f: &mut F) -> Checked {
        let a = f.fresh().await;
        let b = f.reopen(&a).await;
        let ttl = self.lease_ttl;
        let la = acquired(a.try_lease(ttl).await.map_err(err)?)?;
        let taken_at = self.runtime.now();
        let deadline = taken_at.saturating_add(ttl * 20 + Duration::from_secs(5));
        let lb = loop {
            match b.try_lease(ttl).await.map_err(err)? {
                LeaseOutcome::Acquired(l) => break l,
                LeaseOutcome::Held if self.runtime.now() < deadline => {
                    let pause = ttl / 10;
                    self.runtime
                        .sleep_until(self.runtime.now().saturating_add(pause))
                        .await;
                }
                LeaseOutcome::Held => {
                    return Err(format!(
                        "a lease with a time-to-live of {ttl:?} was still held after {:?}",
                        self.runtime.now().saturating_duration_since(taken_at)
                    ))
                }
                LeaseOutcome::Unsupported => return Err("the store has no leases".into()),
            }
        };
        let waited = self.runtime.now().saturating_duration_since(taken_at);
        ensure!(
            waited >= ttl,
            "another handle took the lease {waited:?} after it was taken, before its time-to-live of {ttl:?} ran out"
        );
        ensure!(
            !a.renew_lease(&la, ttl).await.map_err(err)?,
            "the old holder renewed a lease that ran out and was taken"
        );
        a.release(la).await.map_err(err)?;
        let c = f.reopen(&a).await;
        ensure!(
            c.try_lease(ttl).await.map_err(err)? == LeaseOutcome::Held,
            "the old holder's release freed the new holder's lease"
        );
        ensure!(
            b.renew_lease(&lb, ttl).await.map_err(err)?,
            "the new holder could not renew its lease"
        );
        b.release(lb).await.map_err(err)?;
        Ok(())
    }

    async fn change_notice<F: Fixture>(&self, f: &mut F) -> Checked {
        let a = f.fresh().await;
        let b = f.reopen(&a).await;
        let ttl = Duration::from_secs(30);
        let lease = match b.try_lease(ttl).await.map_err(err)? {
            LeaseOutcome::Acquired(l) => Some(l),
            _ => None,
        };
        let waiting = a.changed();
        let writer = async {
            let saved = b.save(None, &set(1)).await;
            if let Some(l) = lease {
                let _ = b.release(l).await;
            }
            saved
        };
        let (notice, saved) =
            futures::join!(self.bounded(waiting, Duration::from_secs(10)), writer);
        saved.map_err(err)?;
        match notice {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(format!("changed() failed: {e}")),
            None => Err("changed() did not resolve within 10 s of a save and release".into()),
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
        limit: Duration,
    ) -> Option<T> {
        let fut = std::pin::pin!(fut);
        let sleep = self
            .runtime
            .sleep_until(self.runtime.now().saturating_add(limit));
        match select(fut, sleep).await {
            Either::Left((v, _)) => Some(v),
            Either::Right(_) => None,
        }
    }
}

fn at(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_900_000_000 + seconds)
}

/// A distinct, labelled token set.
fn set(n: usize) -> TokenSet {
    TokenSet::new(
        AccessToken::new(format!("at-{n}")),
        Some(RefreshToken::new(format!("rt-{n}"))),
        at(n as i64),
        at(n as i64 + 3600),
    )
}

async fn load<S: TokenStore>(s: &S) -> Result<Option<Stored>, String> {
    s.load().await.map_err(err)
}

fn err(e: super::StoreError) -> String {
    format!("the store failed: {e}")
}

fn saved(o: SaveOutcome) -> Result<Version, String> {
    match o {
        SaveOutcome::Saved(v) => Ok(v),
        other => Err(format!(
            "expected the save to succeed, got {}",
            outcome(&other)
        )),
    }
}

fn acquired(o: LeaseOutcome) -> Result<Lease, String> {
    match o {
        LeaseOutcome::Acquired(l) => Ok(l),
        other => Err(format!("expected to get the lease, got {other:?}")),
    }
}

fn outcome(o: &SaveOutcome) -> String {
    match o {
        SaveOutcome::Saved(v) => format!("Saved({v:?})"),
        SaveOutcome::Conflict(None) => "Conflict(empty)".into(),
        SaveOutcome::Conflict(Some(s)) => format!("Conflict(at {:?})", s.version),
    }
}

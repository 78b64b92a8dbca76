//! [`FaultKind`]: the one list of fault kinds, shared by the world's configuration, the
//! command line (`--disable-fault`), shrinking and the reports.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A kind of fault a world can inject: a rate drawn per operation ([`FaultKind::is_rate`]) or
/// a scheduled action of the director.
///
/// ```
/// use keepfresh_sim::world::FaultKind;
/// let k: FaultKind = "stale_read".parse().unwrap();
/// assert_eq!(k, FaultKind::StaleRead);
/// assert_eq!(k.to_string(), "stale_read");
/// assert!(k.is_rate() && !FaultKind::Suspend.is_rate());
/// assert!("stale-read".parse::<FaultKind>().unwrap_err().contains("stale_read"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "&'static str")]
pub enum FaultKind {
    /// A token request that never reaches the provider.
    NotDelivered,
    /// HTTP 5xx from the token endpoint.
    Http5xx,
    /// HTTP 429 with `Retry-After`.
    Http429,
    /// HTTP 503 with `Retry-After`.
    Http503,
    /// `invalid_client`.
    InvalidClient,
    /// A malformed answer.
    Malformed,
    /// An answer lost after the provider committed the refresh.
    Lost,
    /// A store write that fails.
    StoreWriteFail,
    /// A store write that hangs.
    StoreHang,
    /// A lease operation that fails.
    LeaseFail,
    /// A lease operation that hangs.
    LeaseHang,
    /// A store read that fails.
    LoadFail,
    /// A store read that hangs.
    LoadHang,
    /// A save acknowledged and not persisted.
    SaveLost,
    /// A read answered with an older set.
    StaleRead,
    /// An event listener that panics.
    ListenerPanics,
    /// A window in which every store operation fails (scheduled).
    StoreOutage,
    /// A host that suspends: its monotonic clock stops (scheduled).
    Suspend,
    /// A login arriving during a refresh (scheduled).
    Login,
    /// Another writer storing a newer set during a save retry (scheduled).
    NewerWrite,
}

impl FaultKind {
    /// Every fault kind, rates first.
    pub const ALL: [FaultKind; 20] = [
        FaultKind::NotDelivered,
        FaultKind::Http5xx,
        FaultKind::Http429,
        FaultKind::Http503,
        FaultKind::InvalidClient,
        FaultKind::Malformed,
        FaultKind::Lost,
        FaultKind::StoreWriteFail,
        FaultKind::StoreHang,
        FaultKind::LeaseFail,
        FaultKind::LeaseHang,
        FaultKind::LoadFail,
        FaultKind::LoadHang,
        FaultKind::SaveLost,
        FaultKind::StaleRead,
        FaultKind::ListenerPanics,
        FaultKind::StoreOutage,
        FaultKind::Suspend,
        FaultKind::Login,
        FaultKind::NewerWrite,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::NotDelivered => "not_delivered",
            FaultKind::Http5xx => "5xx",
            FaultKind::Http429 => "429",
            FaultKind::Http503 => "503",
            FaultKind::InvalidClient => "invalid_client",
            FaultKind::Malformed => "malformed",
            FaultKind::Lost => "lost",
            FaultKind::StoreWriteFail => "store_write_fail",
            FaultKind::StoreHang => "store_hang",
            FaultKind::LeaseFail => "lease_fail",
            FaultKind::LeaseHang => "lease_hang",
            FaultKind::LoadFail => "load_fail",
            FaultKind::LoadHang => "load_hang",
            FaultKind::SaveLost => "save_lost",
            FaultKind::StaleRead => "stale_read",
            FaultKind::ListenerPanics => "listener_panics",
            FaultKind::StoreOutage => "store_outage",
            FaultKind::Suspend => "suspend",
            FaultKind::Login => "login",
            FaultKind::NewerWrite => "newer_write",
        }
    }

    /// Whether it is a rate in [`Faults`](super::Faults) (else a scheduled action).
    pub fn is_rate(self) -> bool {
        !matches!(
            self,
            FaultKind::StoreOutage | FaultKind::Suspend | FaultKind::Login | FaultKind::NewerWrite
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<FaultKind> for &'static str {
    fn from(k: FaultKind) -> Self {
        k.name()
    }
}

impl FromStr for FaultKind {
    type Err = String;

    /// # Errors
    /// An unknown name, with the list of known ones.
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {s:?}; known: {}", known.join(", "))
            })
    }
}

//! The operating system's clocks.
//!
//! The monotonic clock must keep counting while the machine is suspended: a token issued before
//! a four-hour laptop sleep is four hours older after it. `std::time::Instant` does not count
//! suspend on Linux (`CLOCK_MONOTONIC`) nor on macOS (`mach_absolute_time`), so on those systems
//! [`SystemClock`] reads `CLOCK_BOOTTIME` (Linux, Android) or `CLOCK_MONOTONIC` (Apple, where
//! it counts sleep) through `rustix`: one vDSO call, as cheap as `Instant::now()`. Elsewhere it
//! falls back to `Instant`, says so through [`Clock::counts_suspend`], and the
//! [`Runtime`](super::Runtime) then corrects it with the wall clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Clock, MonoTime};

/// The engine's monotonic clock reads this at the process's first reading: far from zero, so
/// that tokens issued before the process started can be placed on it.
pub(crate) const ORIGIN_OFFSET: Duration = Duration::from_secs(1_000 * 86_400);

#[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
mod raw {
    use std::time::Duration;

    pub(super) const COUNTS_SUSPEND: bool = true;

    #[inline]
    pub(super) fn read() -> Duration {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let id = rustix::time::ClockId::Boottime;
        #[cfg(target_vendor = "apple")]
        let id = rustix::time::ClockId::Monotonic;
        let ts = rustix::time::clock_gettime(id);
        // Both fields are non-negative for these clocks.
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
mod raw {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    pub(super) const COUNTS_SUSPEND: bool = false;

    #[inline]
    pub(super) fn read() -> Duration {
        static BASE: OnceLock<Instant> = OnceLock::new();
        BASE.get_or_init(Instant::now).elapsed()
    }
}

/// The raw reading at the process's first use, so that `MonoTime` starts at `ORIGIN_OFFSET`.
fn origin() -> Duration {
    static ORIGIN: OnceLock<Duration> = OnceLock::new();
    *ORIGIN.get_or_init(raw::read)
}

/// The current reading of the system's monotonic clock.
#[inline]
pub(crate) fn now() -> MonoTime {
    let at = raw::read();
    MonoTime::from_duration(at.saturating_sub(origin()) + ORIGIN_OFFSET)
}

/// The `Instant` at which a timer for `deadline` should fire: now plus what remains. A timer
/// that spans a suspend fires late (timers follow `Instant`); deadlines are re-checked against
/// [`now`] when it fires.
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn instant_for(deadline: MonoTime) -> Instant {
    Instant::now() + deadline.saturating_duration_since(now())
}

/// The operating system's clocks: a monotonic clock that counts suspend where the system has
/// one, and the UTC wall clock.
///
/// ```
/// use keepfresh::runtime::{Clock, SystemClock};
/// let c = SystemClock;
/// let a = c.monotonic();
/// assert!(c.monotonic() >= a);
/// # #[cfg(target_os = "linux")]
/// assert!(c.counts_suspend());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn monotonic(&self) -> MonoTime {
        now()
    }
    fn wall(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
    fn counts_suspend(&self) -> bool {
        raw::COUNTS_SUSPEND
    }
}

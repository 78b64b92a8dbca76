//! The operating system's clocks.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{Clock, MonoTime};

pub(crate) fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Where the system clock's [`MonoTime`] starts: far enough from zero that a token issued before
/// the process started (restored from a store) keeps its true issue time on this clock, for any
/// lifetime up to the policy's maximum of 400 days.
pub(crate) const ORIGIN_OFFSET: Duration = Duration::from_secs(1_000 * 86_400);

/// The `MonoTime` of an `Instant` on the system clock.
pub(crate) fn mono_of(at: Instant) -> MonoTime {
    MonoTime::from_duration(at.saturating_duration_since(origin()) + ORIGIN_OFFSET)
}

/// The `Instant` of a `MonoTime` on the system clock (`None` before the process's origin).
pub(crate) fn instant_of(t: MonoTime) -> Option<Instant> {
    origin().checked_add(t.as_duration().checked_sub(ORIGIN_OFFSET)?)
}

/// The system clocks: `Instant` for monotonic time, `OffsetDateTime::now_utc` for wall time.
///
/// ```
/// use keepfresh::runtime::{Clock, SystemClock};
/// let a = SystemClock.monotonic();
/// let b = SystemClock.monotonic();
/// assert!(b >= a);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn monotonic(&self) -> MonoTime {
        mono_of(Instant::now())
    }
    fn wall(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
    fn instant_of(&self, t: MonoTime) -> Option<Instant> {
        instant_of(t)
    }
}

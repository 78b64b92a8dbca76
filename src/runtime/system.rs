//! The operating system's clocks.

use std::sync::OnceLock;
use std::time::Instant;

use time::OffsetDateTime;

use super::{Clock, MonoTime};

pub(crate) fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
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
        MonoTime::from_duration(origin().elapsed())
    }
    fn wall(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

//! The seams between the engine and the outside world: time, timers and task spawning.
//!
//! The engine never names an async runtime. It reads time from a [`Clock`], waits with a
//! [`Sleep`] and runs detached refreshes with a [`Spawn`]; a [`Runtime`] bundles the three. The
//! `tokio` feature provides [`Runtime::tokio`]; [`ManualClock`] is a hand-driven clock and timer
//! for tests; the simulator (`keepfresh-sim`) plugs in its own deterministic executor.

mod manual;
mod system;
#[cfg(feature = "tokio")]
mod tokio_rt;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use time::OffsetDateTime;

pub use manual::{ManualClock, ManualSpawner};
pub use system::SystemClock;
#[cfg(feature = "tokio")]
pub use tokio_rt::TokioExecutor;

/// A point on a monotonic clock, counted in nanoseconds from the clock's own origin.
///
/// Monotonic time never jumps backwards or forwards with wall-clock changes (NTP steps,
/// suspend/resume), so every deadline inside the engine is a `MonoTime`. Wall-clock time is used
/// only for the absolute expiry that is persisted.
///
/// ```
/// use keepfresh::runtime::MonoTime;
/// use std::time::Duration;
///
/// let t = MonoTime::from_nanos(1_000);
/// let later = t + Duration::from_micros(1);
/// assert_eq!(later.as_nanos(), 2_000);
/// assert_eq!(later.saturating_duration_since(t), Duration::from_micros(1));
/// assert_eq!(t.saturating_duration_since(later), Duration::ZERO);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(u64);

impl MonoTime {
    /// The clock's origin.
    pub const ZERO: MonoTime = MonoTime(0);
    /// The latest representable instant; used as "never".
    pub const MAX: MonoTime = MonoTime(u64::MAX);

    /// A time `nanos` nanoseconds after the clock's origin.
    ///
    /// ```
    /// # use keepfresh::runtime::MonoTime;
    /// assert_eq!(MonoTime::from_nanos(5).as_nanos(), 5);
    /// ```
    pub const fn from_nanos(nanos: u64) -> Self {
        MonoTime(nanos)
    }

    /// A time `d` after the clock's origin, saturating at [`MonoTime::MAX`].
    ///
    /// ```
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// assert_eq!(MonoTime::from_duration(Duration::from_secs(1)).as_nanos(), 1_000_000_000);
    /// ```
    pub fn from_duration(d: Duration) -> Self {
        MonoTime(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the clock's origin.
    ///
    /// ```
    /// # use keepfresh::runtime::MonoTime;
    /// assert_eq!(MonoTime::ZERO.as_nanos(), 0);
    /// ```
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the clock's origin as a [`Duration`].
    ///
    /// ```
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// assert_eq!(MonoTime::from_nanos(1_500_000_000).as_duration(), Duration::from_millis(1_500));
    /// ```
    pub const fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self - earlier`, or zero when `earlier` is later.
    ///
    /// ```
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// let a = MonoTime::from_nanos(10);
    /// assert_eq!(a.saturating_duration_since(MonoTime::from_nanos(4)), Duration::from_nanos(6));
    /// ```
    pub fn saturating_duration_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`MonoTime::MAX`].
    ///
    /// ```
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// assert_eq!(MonoTime::MAX.saturating_add(Duration::from_secs(1)), MonoTime::MAX);
    /// ```
    pub fn saturating_add(self, d: Duration) -> MonoTime {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime(self.0.saturating_add(add))
    }

    /// `self - d`, saturating at [`MonoTime::ZERO`].
    ///
    /// ```
    /// # use keepfresh::runtime::MonoTime;
    /// # use std::time::Duration;
    /// assert_eq!(MonoTime::from_nanos(5).saturating_sub(Duration::from_secs(1)), MonoTime::ZERO);
    /// ```
    pub fn saturating_sub(self, d: Duration) -> MonoTime {
        let sub = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime(self.0.saturating_sub(sub))
    }
}

impl std::ops::Add<Duration> for MonoTime {
    type Output = MonoTime;
    fn add(self, rhs: Duration) -> MonoTime {
        self.saturating_add(rhs)
    }
}

/// Seconds with three decimals: `86464868.963s`.
///
/// Rounded to the millisecond from the exact nanoseconds, half up, in integers: exact at any
/// magnitude (an `f64` of seconds carries about 15 ns of error past 10⁸ s) and several times
/// cheaper than formatting a float, which matters where every event is traced.
///
/// ```
/// # use keepfresh::runtime::MonoTime;
/// assert_eq!(format!("{:?}", MonoTime::from_nanos(1_234_499_999)), "1.234s");
/// assert_eq!(format!("{:?}", MonoTime::from_nanos(1_234_500_000)), "1.235s");
/// assert_eq!(format!("{}", MonoTime::from_nanos(999_999_999)), "1.000s");
/// assert_eq!(format!("{}", MonoTime::MAX), "18446744073.710s");
/// ```
impl fmt::Debug for MonoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 / 1_000_000 + u64::from(self.0 % 1_000_000 >= 500_000);
        write!(f, "{}.{:03}s", ms / 1000, ms % 1000)
    }
}

impl fmt::Display for MonoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A source of monotonic and wall-clock time.
///
/// `monotonic` is on the hot path of [`Credential::token`](crate::Credential::token): keep it
/// cheap (one `clock_gettime` for real clocks, one atomic load for manual ones).
pub trait Clock: Send + Sync + 'static {
    /// The current monotonic time.
    fn monotonic(&self) -> MonoTime;
    /// The current wall-clock time, used only for persisted absolute expiry.
    fn wall(&self) -> OffsetDateTime;

    /// Whether [`monotonic`](Clock::monotonic) keeps counting while the machine is suspended
    /// (the default says no). When it does not, the [`Runtime`] corrects it with the wall
    /// clock: time the wall clock moved beyond the monotonic clock (a suspend, or a forward
    /// step) is added, so a token is served only while both clocks say it is valid.
    fn counts_suspend(&self) -> bool {
        false
    }

    /// The wall clock as nanoseconds since the Unix epoch; what the [`Runtime`] reads to correct
    /// a clock that does not count suspend. The default converts [`wall`](Clock::wall); a clock
    /// that has the number at hand can answer more cheaply.
    fn wall_unix_nanos(&self) -> i128 {
        self.wall().unix_timestamp_nanos()
    }
}

/// A timer: a future that completes at a monotonic deadline of the same runtime's [`Clock`].
pub trait Sleep: Send + Sync + 'static {
    /// A future that completes once the clock reads `deadline` or later.
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()>;
}

/// Runs a detached task to completion (a refresh, a save retry, the eager timer).
pub trait Spawn: Send + Sync + 'static {
    /// Starts `task`; it must be polled to completion even if nobody awaits its result.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// The clock, timer and spawner an engine runs on.
///
/// # Examples
/// A runtime built from a [`ManualClock`] (clock and timer) and a spawner of your choice:
/// ```
/// use keepfresh::runtime::{ManualClock, Runtime, Spawn};
/// use futures::future::BoxFuture;
/// use std::sync::Arc;
///
/// struct ThreadSpawner;
/// impl Spawn for ThreadSpawner {
///     fn spawn(&self, task: BoxFuture<'static, ()>) {
///         std::thread::spawn(move || futures::executor::block_on(task));
///     }
/// }
///
/// let clock = ManualClock::new();
/// let rt = Runtime::new(Arc::new(clock.clone()), Arc::new(clock.clone()), Arc::new(ThreadSpawner));
/// assert_eq!(rt.now(), clock.now());
/// ```
#[derive(Clone)]
pub struct Runtime {
    clock: Arc<dyn Clock>,
    sleep: Arc<dyn Sleep>,
    spawn: Arc<dyn Spawn>,
    /// `None` when the clock counts suspend.
    gap: Option<Arc<SuspendGap>>,
}

/// Time the wall clock ran ahead of a monotonic clock that stops during suspend.
struct SuspendGap {
    mono0: MonoTime,
    wall0: i128,
    /// The largest excess of wall-clock progress over monotonic progress seen, in nanoseconds.
    gap: AtomicU64,
}

impl SuspendGap {
    fn correct(&self, mono: MonoTime, wall_unix_nanos: i128) -> MonoTime {
        let wall_ns = wall_unix_nanos - self.wall0;
        let mono_ns = i128::from(mono.as_nanos()) - i128::from(self.mono0.as_nanos());
        let excess = u64::try_from((wall_ns - mono_ns).max(0)).unwrap_or(u64::MAX);
        let seen = self.gap.load(Ordering::Relaxed);
        let gap = if excess > seen {
            self.gap.fetch_max(excess, Ordering::Relaxed).max(excess)
        } else {
            seen
        };
        MonoTime::from_nanos(mono.as_nanos().saturating_add(gap))
    }

    fn current(&self) -> u64 {
        self.gap.load(Ordering::Relaxed)
    }
}

impl Runtime {
    /// Bundles a clock, a timer and a spawner. The timer must follow the same clock.
    ///
    /// See the [type-level example](Runtime#examples).
    pub fn new(clock: Arc<dyn Clock>, sleep: Arc<dyn Sleep>, spawn: Arc<dyn Spawn>) -> Self {
        let gap = (!clock.counts_suspend()).then(|| {
            Arc::new(SuspendGap {
                mono0: clock.monotonic(),
                wall0: clock.wall_unix_nanos(),
                gap: AtomicU64::new(0),
            })
        });
        Runtime {
            clock,
            sleep,
            spawn,
            gap,
        }
    }

    /// The current monotonic time, counting suspend: the clock's reading when it counts suspend
    /// itself, else the clock's reading plus the time the wall clock ran ahead of it.
    ///
    /// ```
    /// # use keepfresh::runtime::{ManualClock, Runtime};
    /// # use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let rt = Runtime::manual(&clock);
    /// clock.advance(Duration::from_secs(2));
    /// assert_eq!(rt.now().as_duration(), Duration::from_secs(2));
    /// // A suspend: the wall clock moves on, the manual monotonic clock does not.
    /// clock.jump_wall(time::Duration::hours(4));
    /// assert_eq!(rt.now().as_duration(), Duration::from_secs(2 + 4 * 3600));
    /// ```
    #[inline]
    pub fn now(&self) -> MonoTime {
        let mono = self.clock.monotonic();
        match &self.gap {
            None => mono,
            Some(gap) => gap.correct(mono, self.clock.wall_unix_nanos()),
        }
    }

    /// The current wall-clock time.
    ///
    /// ```
    /// # use keepfresh::runtime::{ManualClock, Runtime};
    /// let clock = ManualClock::new();
    /// let rt = Runtime::manual(&clock);
    /// assert_eq!(rt.wall(), clock.wall_now());
    /// ```
    pub fn wall(&self) -> OffsetDateTime {
        self.clock.wall()
    }

    /// A future that completes at `deadline`.
    ///
    /// ```
    /// # use keepfresh::runtime::{ManualClock, Runtime, MonoTime};
    /// # use futures::FutureExt;
    /// # use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let rt = Runtime::manual(&clock);
    /// let mut timer = rt.sleep_until(MonoTime::from_duration(Duration::from_secs(1)));
    /// assert!((&mut timer).now_or_never().is_none());
    /// clock.advance(Duration::from_secs(1));
    /// assert!(timer.now_or_never().is_some());
    /// ```
    pub fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        // The timer follows the clock's own reading, which lags `now()` by the suspend gap.
        let raw = match &self.gap {
            None => deadline,
            Some(gap) => MonoTime::from_nanos(deadline.as_nanos().saturating_sub(gap.current())),
        };
        self.sleep.sleep_until(raw)
    }

    /// Starts a detached task.
    ///
    /// ```
    /// # use keepfresh::runtime::{ManualClock, Runtime};
    /// # use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    /// let clock = ManualClock::new();
    /// let rt = Runtime::manual(&clock);
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let flag = ran.clone();
    /// rt.spawn(Box::pin(async move { flag.store(true, Ordering::SeqCst) }));
    /// clock.run_until_stalled();
    /// assert!(ran.load(Ordering::SeqCst));
    /// ```
    pub fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.spawn.spawn(task)
    }

    /// A runtime fully driven by hand: `clock` is the clock and the timer, and spawned tasks run
    /// on the clock's own queue when [`ManualClock::run_until_stalled`] or
    /// [`ManualClock::advance`] is called. Deterministic; for tests.
    ///
    /// ```
    /// # use keepfresh::runtime::{ManualClock, Runtime};
    /// let clock = ManualClock::new();
    /// let rt = Runtime::manual(&clock);
    /// assert_eq!(rt.now().as_nanos(), 0);
    /// ```
    pub fn manual(clock: &ManualClock) -> Self {
        Runtime::new(
            Arc::new(clock.clone()),
            Arc::new(clock.clone()),
            Arc::new(clock.spawner()),
        )
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("now", &self.now())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::MonoTime;
    use proptest::prelude::*;

    /// The reference: the nanoseconds as a decimal string, cut after the millisecond digit,
    /// plus one millisecond (carried through the digits) when the cut-off part is half a
    /// millisecond or more.
    fn by_digits(nanos: u64) -> String {
        let digits = format!("{nanos:010}");
        let (head, tail) = digits.split_at(digits.len() - 6);
        let mut d: Vec<u8> = head.bytes().map(|b| b - b'0').collect();
        if tail.as_bytes()[0] >= b'5' {
            let mut i = d.len();
            loop {
                i -= 1;
                if d[i] == 9 {
                    d[i] = 0;
                    if i == 0 {
                        d.insert(0, 1);
                        break;
                    }
                } else {
                    d[i] += 1;
                    break;
                }
            }
        }
        let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
        let (secs, ms) = s.split_at(s.len() - 3);
        let secs = secs.trim_start_matches('0');
        format!("{}.{ms}s", if secs.is_empty() { "0" } else { secs })
    }

    proptest! {
        #[test]
        fn debug_rounds_to_the_millisecond_half_up(nanos in any::<u64>(), near in 0u64..2_000_000) {
            prop_assert_eq!(format!("{:?}", MonoTime::from_nanos(nanos)), by_digits(nanos));
            // Around a rounding edge, and around the largest values.
            let edge = (nanos / 1_000_000).saturating_mul(1_000_000).saturating_add(near);
            prop_assert_eq!(format!("{:?}", MonoTime::from_nanos(edge)), by_digits(edge));
            let top = u64::MAX - near;
            prop_assert_eq!(format!("{}", MonoTime::from_nanos(top)), by_digits(top));
        }
    }
}

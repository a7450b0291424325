//! [`Clock`]: the wall clock the caches and stores read, replaceable by a
//! [`ManualClock`] in tests.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The wall clock used for entry ages and TTLs.
///
/// [`Clock::system`] (the default) reads the system's wall clock cheaply: on Linux the
/// kernel's coarse real-time clock (`CLOCK_REALTIME_COARSE`, a few nanoseconds to read,
/// updated every tick, i.e. 1–10 ms), elsewhere [`SystemTime::now`]. Cache ages are
/// compared with settings of seconds or more, so a few milliseconds of resolution cost
/// nothing, while a precise clock read (20–30 ns) would double the cost of a hit.
/// [`Clock::precise`] always reads [`SystemTime::now`]. A [`ManualClock`] gives a clock
/// that moves only when told, so that tests of staleness and expiry need no sleep.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use echocache_core::{Clock, ManualClock};
///
/// let manual = ManualClock::new(SystemTime::UNIX_EPOCH);
/// let clock: Clock = manual.clock();
/// manual.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(90));
/// ```
#[derive(Clone, Default)]
pub struct Clock(Source);

#[derive(Clone, Default)]
enum Source {
    #[default]
    System,
    Precise,
    Manual(Arc<AtomicU64>),
}

/// Reads the coarse real-time clock: a few nanoseconds, tick resolution.
#[cfg(target_os = "linux")]
#[inline]
fn coarse_now() -> SystemTime {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    match (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => {
            SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
        }
        // A clock set before 1970 (or an impossible reading): take the precise clock.
        _ => SystemTime::now(),
    }
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn coarse_now() -> SystemTime {
    SystemTime::now()
}

impl Clock {
    /// The system's wall clock, read cheaply at tick resolution (see the type's docs).
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// The system's wall clock read with full precision ([`SystemTime::now`]).
    pub fn precise() -> Self {
        Self(Source::Precise)
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            Source::System => coarse_now(),
            Source::Precise => SystemTime::now(),
            Source::Manual(nanos) => {
                SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.load(Ordering::Acquire))
            }
        }
    }

    /// The time to stamp a value written now with (an entry's `written_at`): as
    /// [`now`](Self::now), but [`Clock::system`] reads [`SystemTime::now`] here, with full
    /// precision. Other processes (Go services among them) compare `written_at` with their
    /// own clocks, and a coarse reading lies up to a tick (4 ms here) in the past: a value
    /// would look older than it is, and a write that landed later could carry an earlier
    /// time. Stamping happens on writes only, never on a hit.
    #[inline]
    pub fn stamp(&self) -> SystemTime {
        match &self.0 {
            Source::System => SystemTime::now(),
            _ => self.now(),
        }
    }

    /// Whether this is a manual (test) clock.
    pub fn is_manual(&self) -> bool {
        matches!(self.0, Source::Manual(_))
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::System"),
            Source::Precise => f.write_str("Clock::Precise"),
            Source::Manual(_) => write!(f, "Clock::Manual({:?})", self.now()),
        }
    }
}

/// A clock that moves only when [`advance`](ManualClock::advance)d or
/// [`set`](ManualClock::set): for tests of ages and TTLs without sleeping.
///
/// Clones share the same time. Times before the Unix epoch are clamped to it.
#[derive(Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A manual clock reading `start`.
    pub fn new(start: SystemTime) -> Self {
        let clock = Self(Arc::new(AtomicU64::new(0)));
        clock.set(start);
        clock
    }

    /// A [`Clock`] that reads this manual clock, to hand to a cache or a store.
    pub fn clock(&self) -> Clock {
        Clock(Source::Manual(Arc::clone(&self.0)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(by))
            });
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: SystemTime) {
        let nanos = to
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.0.store(nanos, Ordering::Release);
    }

    /// The current time of this clock.
    pub fn now(&self) -> SystemTime {
        self.clock().now()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        manual.clock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let manual = ManualClock::new(start);
        let clock = manual.clock();
        assert_eq!(clock.now(), start);
        manual.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), start + Duration::from_millis(1500));
        manual.set(SystemTime::UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(clock.now(), SystemTime::UNIX_EPOCH);
        assert!(clock.is_manual());
        assert!(!Clock::system().is_manual());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_system_clock_agrees_with_the_precise_one_to_the_tick() {
        // The tick, as the kernel reports it for this clock (4 ms at HZ=250).
        let res = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
        let tick = Duration::new(res.tv_sec as u64, res.tv_nsec as u32);
        assert!(
            tick > Duration::ZERO && tick < Duration::from_secs(1),
            "{tick:?}"
        );
        let before = SystemTime::now();
        let coarse = Clock::system().now();
        let after = Clock::precise().now();
        // Read after `before`: it is at most the last tick's time, never older than one
        // tick before `before` (being descheduled in between only makes it newer). Twice
        // the tick: a reading can fall just as the tick's update is being published.
        let lag = before.duration_since(coarse).unwrap_or(Duration::ZERO);
        assert!(
            lag <= tick * 2,
            "coarse clock {lag:?} behind, tick {tick:?}"
        );
        assert!(
            coarse <= after,
            "the coarse clock is never ahead of the precise one"
        );
    }
}

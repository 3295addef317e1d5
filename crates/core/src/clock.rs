//! Time as a parameter: every expiry, skew and cache age is computed from a [`Clock`], so tests
//! move time instead of sleeping. `SystemTime::now` is banned elsewhere by clippy.
//!
//! Two readings: the wall clock ([`Clock::now`]), for what is compared with other machines'
//! times (token expiry, JWT claims, stored times), and a monotonic one ([`Clock::monotonic`]),
//! for what only measures time passing here (rate limits, cache ages, cooldowns) and must not
//! jump when the wall clock is set.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use time::{Duration, OffsetDateTime};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now(&self) -> OffsetDateTime;

    /// Seconds since the Unix epoch, as JWT claims and the store count them.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Time since a fixed origin in this process; never goes back. The default is the real
    /// monotonic clock's.
    fn monotonic(&self) -> std::time::Duration {
        real_monotonic()
    }
}

/// The process's monotonic clock, from its first reading.
fn real_monotonic() -> std::time::Duration {
    #[allow(clippy::disallowed_methods)] // the one place that reads the monotonic clock
    fn read() -> std::time::Instant {
        std::time::Instant::now()
    }
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    read().saturating_duration_since(*ORIGIN.get_or_init(read))
}

pub type SharedClock = Arc<dyn Clock>;

/// Waits until `clock`'s monotonic reading reaches `at` (a reading of the same clock), on
/// tokio's timer: at once when it already has. A manual clock moved past `at` in the meantime
/// does not cut the wait short; it shortens the next one.
pub async fn sleep_until(clock: &dyn Clock, at: std::time::Duration) {
    let left = at.saturating_sub(clock.monotonic());
    if !left.is_zero() {
        tokio::time::sleep(left).await;
    }
}

/// How long something took, on the real monotonic clock, for figures that are only reported
/// (metrics histograms, log fields, a command's summary) and never decide anything: a manual
/// clock moved during a measured call would otherwise record the step as its duration.
/// Whatever acts on time passing (cache ages, cooldowns, rate limits, timeouts) reads the
/// injected [`Clock`] instead. Tests also use it for the real time they give another process
/// (a child server, a browser) before giving up.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(std::time::Duration);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(real_monotonic())
    }

    pub fn elapsed(&self) -> std::time::Duration {
        real_monotonic().saturating_sub(self.0)
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// The seconds alone, without working out the calendar date as `now` does.
    #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
    fn unix(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            Err(_) => self.now().unix_timestamp(),
        }
    }
}

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// A clock that starts at the real time plus an offset that tests (and the emulator's
/// control API) can move forward or back. Its monotonic reading is the real one plus every
/// step forward ([`ManualClock::advance`] by a positive amount); it never goes back.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
    ahead: Mutex<std::time::Duration>,
}

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves this clock by `by` (negative goes back, on the wall clock only).
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
        if let Ok(forward) = std::time::Duration::try_from(by) {
            let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
            *ahead = ahead.saturating_add(forward);
        }
    }

    /// Sets the offset from real time.
    pub fn set_offset(&self, offset: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) = offset;
    }

    pub fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        SystemClock.now() + self.offset()
    }

    fn monotonic(&self) -> std::time::Duration {
        let ahead = *self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        real_monotonic().saturating_add(ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_counts_the_same_seconds_as_its_date() {
        let before = SystemClock.now().unix_timestamp();
        let unix = SystemClock.unix();
        let after = SystemClock.now().unix_timestamp();
        assert!(before <= unix && unix <= after, "{before} {unix} {after}");
    }

    #[test]
    fn manual_clock_moves_by_its_offset() {
        let clock = ManualClock::new();
        let before = clock.unix();
        clock.advance(Duration::hours(2));
        let after = clock.unix();
        assert!((after - before - 7200).abs() <= 1, "{before} -> {after}");
        clock.set_offset(Duration::ZERO);
        assert!((clock.unix() - before).abs() <= 1);
    }

    #[test]
    fn manual_clock_moves_its_monotonic_reading_forward_only() {
        let clock = ManualClock::new();
        let before = clock.monotonic();
        clock.advance(Duration::minutes(5));
        let after = clock.monotonic();
        assert!(after - before >= std::time::Duration::from_secs(300));
        assert!(after - before < std::time::Duration::from_secs(301));
        clock.advance(Duration::minutes(-10));
        assert!(clock.monotonic() >= after);
        clock.set_offset(Duration::ZERO);
        assert!(clock.monotonic() >= after);
    }
}

//! Time as a parameter: every expiry, skew and cache age is computed from a [`Clock`], so tests
//! move time instead of sleeping. `SystemTime::now` is banned elsewhere by clippy.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now(&self) -> OffsetDateTime;

    /// Seconds since the Unix epoch, as JWT claims and the store count them.
    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place that reads the system clock
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

/// A clock that starts at the real time plus an offset that tests (and the emulator's
/// control API) can move forward or back.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves this clock by `by` (negative goes back).
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        *offset += by;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! Per-grant backoff after transient upstream failures: exponential with equal jitter, capped
//! ([`grantkeeper_core::backoff`]), and
//! never shorter than the provider's `Retry-After`. While a grant backs off, nobody asks the
//! provider for it again, so a struggling token endpoint is not hammered by retries.
//!
//! In memory and per process: another instance learns of the trouble from the grant's
//! `failing` state and its own first failure.

use grantkeeper_core::{Backoff, Jitter};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use time::OffsetDateTime;

/// Above this many entries, those whose wait is long over are dropped (a grant that failed
/// once and was never asked for again must not stay forever).
const PRUNE_ABOVE: usize = 10_000;

struct Entry {
    /// Consecutive failures so far.
    failures: u32,
    until: OffsetDateTime,
}

#[derive(Default)]
pub(crate) struct Backoffs {
    map: Mutex<HashMap<String, Entry>>,
}

impl Backoffs {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long the grant must still wait, if it must.
    pub(crate) fn waiting(&self, sub: &str, now: OffsetDateTime) -> Option<Duration> {
        let map = self.map();
        let entry = map.get(sub)?;
        let left = Duration::try_from(entry.until - now).ok()?;
        (!left.is_zero()).then_some(left)
    }

    /// Counts a failure and returns how long the grant now waits.
    pub(crate) fn fail(
        &self,
        sub: &str,
        now: OffsetDateTime,
        retry_after: Option<Duration>,
        base: Duration,
        max: Duration,
    ) -> Duration {
        let mut map = self.map();
        if map.len() > PRUNE_ABOVE {
            let horizon = now - max;
            map.retain(|_, e| e.until > horizon);
        }
        let failures = map.get(sub).map_or(0, |e| e.failures);
        let backoff = Backoff {
            first: base,
            longest: max,
            jitter: Jitter::Equal,
        };
        let wait = backoff
            .delay(failures, grantkeeper_core::random::u64())
            .max(retry_after.unwrap_or_default());
        let until = now
            .checked_add(time::Duration::try_from(wait).unwrap_or(time::Duration::DAY))
            .unwrap_or(now);
        map.insert(
            sub.to_owned(),
            Entry {
                failures: failures.saturating_add(1),
                until,
            },
        );
        wait
    }

    pub(crate) fn clear(&self, sub: &str) {
        self.map().remove(sub);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_wins_when_longer_and_success_clears() {
        let b = Backoffs::default();
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(300));
        let w = b.fail("a", now, Some(Duration::from_secs(120)), base, max);
        assert_eq!(w, Duration::from_secs(120));
        assert_eq!(b.waiting("a", now), Some(Duration::from_secs(120)));
        assert_eq!(b.waiting("a", now + time::Duration::seconds(121)), None);
        assert_eq!(b.waiting("b", now), None);
        // The second failure doubles the base, still below Retry-After.
        let w = b.fail("a", now, Some(Duration::from_secs(1)), base, max);
        assert!(
            w >= Duration::from_secs(1) && w <= Duration::from_secs(2),
            "{w:?}"
        );
        b.clear("a");
        assert_eq!(b.waiting("a", now), None);
    }
}

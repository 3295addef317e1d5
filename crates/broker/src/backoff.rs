//! Per-grant backoff after transient upstream failures: exponential with jitter, capped, and
//! never shorter than the provider's `Retry-After`. While a grant backs off, nobody asks the
//! provider for it again, so a struggling token endpoint is not hammered by retries.
//!
//! In memory and per process: another instance learns of the trouble from the grant's
//! `failing` state and its own first failure.

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
        let wait = delay(failures, base, max, grantkeeper_core::random::u64())
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

/// `base * 2^failures`, capped at `max`, with "equal jitter": between half and all of it, so
/// that grants failing together spread out but none retries much sooner than planned.
fn delay(failures: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
    let full = base.checked_mul(factor).unwrap_or(max).min(max);
    let half = full / 2;
    let span = u64::try_from((full - half).as_millis()).unwrap_or(u64::MAX);
    let extra = if span == 0 { 0 } else { random % (span + 1) };
    half + Duration::from_millis(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_capped_and_jittered() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        for random in [0, 1, 499, 500, u64::MAX] {
            for n in 0..40 {
                let full = (base * 2u32.pow(n.min(20))).min(max);
                let d = delay(n, base, max, random);
                assert!(d <= full && d >= full / 2, "{n}: {d:?} vs {full:?}");
            }
        }
        assert_eq!(delay(0, base, max, 0), Duration::from_millis(500));
        assert_eq!(delay(3, base, max, 4000), Duration::from_secs(8));
        assert_eq!(delay(30, base, max, 0), Duration::from_secs(150));
    }

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

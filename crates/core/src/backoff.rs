//! Exponential backoff for the retries whose next attempt is a time kept between attempts
//! (a grant's in the broker, a queued revocation's and a webhook delivery's in the store)
//! rather than a sleep inside a loop: the wait after a number of consecutive failures.
//!
//! One formula for all of them: the first wait doubling at each failure up to the longest,
//! then spread at random so that what failed together (an outage) does not come due together.

use std::time::Duration;

/// How the wait is spread at random.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Between half and all of the wait ("equal jitter"): nothing retries later than planned.
    Equal,
    /// The wait plus up to a quarter more: nothing retries sooner than planned.
    UpToAQuarterMore,
}

/// An exponential backoff's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure (before jitter).
    pub first: Duration,
    /// The longest wait (before jitter).
    pub longest: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// The wait after `failures` failures beyond the first (0: the first wait), spread by
    /// `random` (a uniformly random number; [`crate::random::u64`] outside tests).
    pub fn delay(&self, failures: u32, random: u64) -> Duration {
        let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
        let full = self
            .first
            .checked_mul(factor)
            .unwrap_or(self.longest)
            .min(self.longest);
        let pick = |span: Duration| {
            let span = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
            let extra = if span == 0 { 0 } else { random % (span + 1) };
            Duration::from_millis(extra)
        };
        match self.jitter {
            Jitter::Equal => {
                let half = full / 2;
                half + pick(full - half)
            }
            Jitter::UpToAQuarterMore => full + pick(full / 4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn equal_jitter_doubles_caps_and_stays_within_half() {
        let b = Backoff {
            first: SECOND,
            longest: Duration::from_secs(300),
            jitter: Jitter::Equal,
        };
        for random in [0, 1, 499, 500, u64::MAX] {
            for n in 0..40 {
                let full = (SECOND * 2u32.pow(n.min(20))).min(b.longest);
                let d = b.delay(n, random);
                assert!(d <= full && d >= full / 2, "{n}: {d:?} vs {full:?}");
            }
        }
        assert_eq!(b.delay(0, 0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 4000), Duration::from_secs(8));
        assert_eq!(b.delay(30, 0), Duration::from_secs(150));
    }

    #[test]
    fn a_quarter_more_never_retries_sooner() {
        let b = Backoff {
            first: Duration::from_secs(10),
            longest: Duration::from_secs(3600),
            jitter: Jitter::UpToAQuarterMore,
        };
        for random in [0, 1, 2500, 2501, u64::MAX] {
            let first = b.delay(0, random);
            assert!(
                first >= b.first && first <= b.first + b.first / 4,
                "{first:?}"
            );
            let third = b.delay(2, random);
            assert!(third >= Duration::from_secs(40) && third <= Duration::from_secs(50));
            for n in [9, 30, u32::MAX] {
                let late = b.delay(n, random);
                assert!(late >= b.longest && late <= b.longest + b.longest / 4);
            }
        }
        assert_eq!(b.delay(0, 0), b.first);
        assert_eq!(b.delay(0, 2500), b.first + b.first / 4);
    }
}

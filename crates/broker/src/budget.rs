//! The upstream budget shared by every refresh of this process: at most `concurrency`
//! refreshes in flight, started at most `rate` per second (`[broker] refresh_concurrency` and
//! `upstream_rate`), so that a burst of expiring grants or a sweep cannot flood the token
//! endpoint.

use grantkeeper_core::SharedClock;
use grantkeeper_core::clock::sleep_until;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};

pub(crate) struct Budget {
    slots: Semaphore,
    /// Seconds between two starts, and when the next may start (the clock's monotonic
    /// reading).
    pace: Option<(Duration, Mutex<Duration>)>,
    clock: SharedClock,
}

impl Budget {
    pub(crate) fn new(concurrency: usize, rate_per_sec: Option<f64>, clock: SharedClock) -> Budget {
        let pace = rate_per_sec.filter(|r| r.is_finite() && *r > 0.0).map(|r| {
            (
                Duration::from_secs_f64(1.0 / r),
                Mutex::new(clock.monotonic()),
            )
        });
        Budget {
            slots: Semaphore::new(concurrency.max(1)),
            pace,
            clock,
        }
    }

    /// Waits for a slot and for the pace; the permit is the slot.
    pub(crate) async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        let permit = self.slots.acquire().await.ok();
        if let Some((interval, next)) = &self.pace {
            let start = {
                let mut next = next.lock().await;
                let start = (*next).max(self.clock.monotonic());
                *next = start + *interval;
                start
            };
            sleep_until(self.clock.as_ref(), start).await;
        }
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_core::SystemClock;
    use tokio::time::Instant;

    // The pace is kept on the injected clock but waited out on tokio's timer: what this
    // checks is that wait, measured on tokio's paused clock (which only the waits move).
    #[allow(clippy::disallowed_methods)]
    #[tokio::test(start_paused = true)]
    async fn starts_are_paced_and_slots_bounded() {
        let budget = Budget::new(2, Some(10.0), SystemClock::shared());
        let begin = Instant::now();
        let a = budget.acquire().await;
        let b = budget.acquire().await;
        assert!(a.is_some() && b.is_some());
        // Both slots are taken: a third waits until one is given back.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), budget.acquire())
                .await
                .is_err()
        );
        drop(a);
        let _c = budget.acquire().await;
        // Starts were spaced by 100 ms each on the paused clock.
        assert!(Instant::now() - begin >= Duration::from_millis(200));
    }
}

//! The cooldown after a refresh caused by an API's 401: for `rejection_cooldown` after such a
//! refresh, another 401 for the grant costs no refresh, and the API's answer is passed on. An
//! API path that always answers 401 would otherwise cost a token-endpoint call per call made to
//! it, and a caller that repeats it would get the client throttled by Google for every user.
//!
//! In memory and per process, as the backoff is: behind N instances, a grant is refreshed for
//! 401s at most N times per cooldown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use time::OffsetDateTime;

/// Above this many entries, those whose cooldown is over are dropped.
const PRUNE_ABOVE: usize = 10_000;

pub(crate) struct Cooldowns {
    length: Duration,
    /// When each grant was last refreshed because an API refused its token.
    since: Mutex<HashMap<String, OffsetDateTime>>,
}

impl Cooldowns {
    pub(crate) fn new(length: Duration) -> Cooldowns {
        Cooldowns {
            length,
            since: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, OffsetDateTime>> {
        self.since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn end(&self, since: OffsetDateTime) -> OffsetDateTime {
        since
            .checked_add(time::Duration::try_from(self.length).unwrap_or(time::Duration::DAY))
            .unwrap_or(since)
    }

    /// True while the grant's last refresh for a 401 is less than the cooldown old.
    pub(crate) fn cooling(&self, sub: &str, now: OffsetDateTime) -> bool {
        !self.length.is_zero()
            && self
                .map()
                .get(sub)
                .is_some_and(|since| now < self.end(*since))
    }

    /// The grant was just refreshed because an API refused its token.
    pub(crate) fn start(&self, sub: &str, now: OffsetDateTime) {
        if self.length.is_zero() {
            return;
        }
        let mut map = self.map();
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, since| now < self.end(*since));
        }
        map.insert(sub.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_cools_down_for_the_length_given() {
        let c = Cooldowns::new(Duration::from_secs(30));
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        assert!(!c.cooling("a", t0));
        c.start("a", t0);
        assert!(c.cooling("a", t0 + time::Duration::seconds(29)));
        assert!(!c.cooling("b", t0));
        assert!(!c.cooling("a", t0 + time::Duration::seconds(30)));
        let off = Cooldowns::new(Duration::ZERO);
        off.start("a", t0);
        assert!(!off.cooling("a", t0));
    }
}

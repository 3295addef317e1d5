//! Rate limits: a token bucket per client IP on the sign-in endpoints (`POST /authcode`, and
//! the console's `POST /admin/login`, which guesses API keys), and per API key on `/v1`.
//!
//! The buckets are governor's (GCRA) on the injected clock's monotonic reading. They live in
//! moka caches bounded in entries, and a bucket idle for as long as it takes to fill again is
//! dropped (a new one starts full, so nothing is lost): memory stays bounded however many
//! clients come. When the cache is full, the least used buckets go first. Each
//! instance counts alone, so behind a load balancer of N instances a client may get up to N
//! times the rate; the limits are a guard against floods and guessing, not a quota.
//!
//! The client IP is the connection's peer (the server must be run with
//! `into_make_service_with_connect_info::<SocketAddr>()`). When that peer is one of
//! `limits.trusted_proxies`, `X-Forwarded-For` is read from the right: proxies append the
//! address they were reached from and keep what came before, so the right-most address that is
//! not a trusted proxy is the first one no trusted party vouches for, the client's; everything
//! left of it is the client's to write. IPv6 clients are counted per /64, the block one host
//! usually holds. Without a known address the sign-in limit cannot tell clients apart and lets
//! the request through (logged once).
//!
//! Leaves to others: the answer (`rate_limited`, 429, `Retry-After`) is [`ApiError`]'s.

use crate::config::{LimitSettings, RateSettings};
use crate::error::ApiError;
use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use governor::Quota;
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use grantkeeper_core::SharedClock;
use ipnet::IpNet;
use moka::sync::Cache;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Most client IPs whose buckets are kept.
const IP_CAPACITY: u64 = 100_000;
/// Most API keys whose buckets are kept.
const KEY_CAPACITY: u64 = 10_000;

/// Token buckets by key, `rate` per period and up to `burst` at once: governor's GCRA, on the
/// injected clock's monotonic reading, with one state per key in a bounded cache.
pub struct RateLimiter<K: Hash + Eq + Clone + Send + Sync + 'static> {
    gcra: governor::RateLimiter<K, Buckets<K>, Monotonic, NoOpMiddleware<Duration>>,
}

/// The clock governor reads: grantkeeper's, so that tests move time instead of sleeping.
struct Monotonic(SharedClock);

impl governor::clock::Clock for Monotonic {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.0.monotonic()
    }
}

/// governor's per-key state (one theoretical arrival time each) in a moka cache bounded in
/// entries: governor's own keyed stores grow with every key until pruned. A state idle for as
/// long as the bucket takes to fill again is dropped; a new one starts full, so nothing is lost.
/// Idleness is moka's own (real) time: it decides memory only, never an answer.
struct Buckets<K>(Cache<K, Arc<InMemoryState>>);

impl<K: Hash + Eq + Clone + Send + Sync + 'static> StateStore for Buckets<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0
            .get_with_by_ref(key, Arc::default)
            .measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> RateLimiter<K> {
    pub fn new(rate: RateSettings, capacity: u64, clock: SharedClock) -> RateLimiter<K> {
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        // Validated settings have a rate of at least one per period; a zero interval (more
        // than one per nanosecond) is no limit worth keeping apart from the smallest.
        let interval = rate.per / rate.rate.max(1);
        let quota = Quota::with_period(interval)
            .unwrap_or(Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        // An idle bucket is full again after burst x interval; forgetting it then changes
        // nothing.
        let refill = quota
            .burst_size_replenished_in()
            .max(Duration::from_secs(1));
        let buckets = Buckets(
            Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(refill)
                .build(),
        );
        RateLimiter {
            gcra: governor::RateLimiter::new(quota, buckets, Monotonic(clock)),
        }
    }

    /// Takes a token for `key`; when none is left, `Err` with the wait until one is back,
    /// in whole seconds (at least one).
    pub fn check(&self, key: K) -> Result<(), Duration> {
        self.gcra.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.gcra.clock().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Duration::from_secs(secs.max(1))
        })
    }
}

/// The limits of one server.
pub struct Limits {
    sign_in: Option<RateLimiter<IpAddr>>,
    v1: Option<RateLimiter<String>>,
    trusted_proxies: Vec<IpNet>,
    warned_no_address: AtomicBool,
}

impl Limits {
    pub fn new(settings: &LimitSettings, clock: &SharedClock) -> Limits {
        Limits {
            sign_in: settings
                .sign_in
                .map(|r| RateLimiter::new(r, IP_CAPACITY, clock.clone())),
            v1: settings
                .v1
                .map(|r| RateLimiter::new(r, KEY_CAPACITY, clock.clone())),
            trusted_proxies: settings.trusted_proxies.clone(),
            warned_no_address: AtomicBool::new(false),
        }
    }

    /// Counts a sign-in attempt of the request's client; `rate_limited` when over the limit.
    pub fn check_sign_in(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Result<(), ApiError> {
        let Some(limiter) = &self.sign_in else {
            return Ok(());
        };
        let peer = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let Some(ip) = client_ip(headers, peer, &self.trusted_proxies) else {
            if !self.warned_no_address.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the sign-in rate limit cannot see client addresses: serve the router \
                     with into_make_service_with_connect_info::<SocketAddr>()"
                );
            }
            return Ok(());
        };
        limiter
            .check(bucket_address(ip))
            .map_err(|retry_after| ApiError::RateLimited { retry_after })
    }

    /// Counts a `/v1` request of an authenticated key; `rate_limited` when over the limit.
    pub fn check_key(&self, key_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.v1 else {
            return Ok(());
        };
        limiter.check(key_id.to_owned()).map_err(|retry_after| {
            tracing::info!(%key_id, "API key over its rate limit");
            ApiError::RateLimited { retry_after }
        })
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the right-most
/// `X-Forwarded-For` address (all the header's lines, in order) that is not a trusted proxy.
/// When every listed address is trusted, the left-most; when an entry is not an address, the
/// last trusted hop before it (what a trusted proxy vouched for ends there).
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let entries: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|line| match line.to_str() {
            Ok(text) => text.split(',').map(forwarded_address).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect();
    let mut client = peer;
    for entry in entries.into_iter().rev() {
        match entry {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return Some(ip),
            None => break,
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, also with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as some load balancers write it.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The address a bucket is kept for: IPv4 as is (also when mapped into IPv6), IPv6 by /64.
fn bucket_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use grantkeeper_core::ManualClock;

    fn limiter(rate: u32, per: u64, burst: u32) -> (RateLimiter<&'static str>, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let rate = RateSettings {
            rate,
            per: Duration::from_secs(per),
            burst,
        };
        (RateLimiter::new(rate, 100, clock.clone()), clock)
    }

    #[test]
    fn a_burst_then_a_wait_in_whole_seconds() {
        let (l, clock) = limiter(1, 60, 3);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait.as_secs() >= 59 && wait.as_secs() <= 60, "{wait:?}");
        assert_eq!(wait.subsec_nanos(), 0);
        // Another key has its own bucket.
        assert!(l.check("b").is_ok());
        // One token is back after the wait, not two.
        clock.advance(time::Duration::seconds(60));
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_err());
        // A bucket idle long enough is full again, and no fuller.
        clock.advance(time::Duration::hours(1));
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        assert!(l.check("a").is_err());
    }

    #[test]
    fn the_wait_is_rounded_up_to_whole_seconds() {
        // 50 a second: the next token is 20 ms away, announced as one second.
        let (l, clock) = limiter(50, 1, 1);
        assert!(l.check("k").is_ok());
        assert_eq!(l.check("k"), Err(Duration::from_secs(1)));
        clock.advance(time::Duration::milliseconds(20));
        assert!(l.check("k").is_ok());
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", line.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_a_trusted_peer() {
        let h = forwarded(&["203.0.113.7, 10.0.0.1"]);
        let peer = ip("10.0.0.2");
        assert_eq!(client_ip(&h, peer, &[]), peer);
        assert_eq!(client_ip(&h, peer, &nets(&["192.168.0.0/16"])), peer);
        assert_eq!(
            client_ip(&HeaderMap::new(), None, &nets(&["0.0.0.0/0"])),
            None
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        // The client wrote the left-most entry itself; the proxy appended what it saw.
        let h = forwarded(&["192.0.2.1, 203.0.113.7"]);
        assert_eq!(client_ip(&h, peer, &trusted), ip("203.0.113.7"));
        // Through two proxies of ours.
        let h = forwarded(&["192.0.2.1, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(client_ip(&h, peer, &trusted), ip("203.0.113.7"));
        // Several header lines are one list, in order.
        let h = forwarded(&["192.0.2.1", "203.0.113.7", "10.1.2.3"]);
        assert_eq!(client_ip(&h, peer, &trusted), ip("203.0.113.7"));
        // Ports and IPv4 mapped into IPv6 are read as the address.
        let h = forwarded(&["203.0.113.8:4711"]);
        assert_eq!(client_ip(&h, peer, &trusted), ip("203.0.113.8"));
        let h = forwarded(&["[2001:db8::1]:443"]);
        assert_eq!(client_ip(&h, peer, &trusted), ip("2001:db8::1"));
        assert_eq!(
            client_ip(
                &forwarded(&["203.0.113.9"]),
                ip("::ffff:127.0.0.1"),
                &trusted
            ),
            ip("203.0.113.9")
        );
        // No header, or only trusted hops: the nearest that is known.
        assert_eq!(client_ip(&HeaderMap::new(), peer, &trusted), peer);
        let h = forwarded(&["10.9.9.9, 10.1.2.3"]);
        assert_eq!(client_ip(&h, peer, &trusted), ip("10.9.9.9"));
        // Garbage ends what the trusted hops vouch for.
        let h = forwarded(&["192.0.2.1, garbage, 10.1.2.3"]);
        assert_eq!(client_ip(&h, peer, &trusted), ip("10.1.2.3"));
        let h = forwarded(&["garbage"]);
        assert_eq!(client_ip(&h, peer, &trusted), peer);
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a = bucket_address("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = bucket_address("2001:db8:1:2:bbbb::9".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(
            bucket_address("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}

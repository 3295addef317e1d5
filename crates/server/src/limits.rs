//! Rate limits: a token bucket per client IP on the sign-in endpoints (`POST /authcode`, and
//! the console's `POST /admin/login`, which guesses API keys), and per API key on `/v1`.
//!
//! Buckets live in moka caches bounded in entries, and a bucket idle for as long as it takes
//! to fill again is dropped (a new one starts full, so nothing is lost): memory stays bounded
//! however many clients come. When the cache is full, the least used buckets go first. Each
//! instance counts alone, so behind a load balancer of N instances a client may get up to N
//! times the rate; the limits are a guard against floods and guessing, not a quota.
//!
//! The client IP is the connection's peer (the server must be run with
//! `into_make_service_with_connect_info::<SocketAddr>()`), or, with
//! `limits.trust_forwarded_for`, the left-most `X-Forwarded-For` address. IPv6 clients are
//! counted per /64, the block one host usually holds. Without a known address the sign-in
//! limit cannot tell clients apart and lets the request through (logged once).
//!
//! Leaves to others: the answer (`rate_limited`, 429, `Retry-After`) is [`ApiError`]'s.

use crate::config::{LimitSettings, RateSettings};
use crate::error::ApiError;
use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use moka::sync::Cache;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most client IPs whose buckets are kept.
const IP_CAPACITY: u64 = 100_000;
/// Most API keys whose buckets are kept.
const KEY_CAPACITY: u64 = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key: `rate` per period, up to `burst` at once.
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Cache<K, Arc<Mutex<Bucket>>>,
}

impl<K: Hash + Eq + Send + Sync + 'static> RateLimiter<K> {
    pub fn new(rate: RateSettings, capacity: u64) -> RateLimiter<K> {
        let per_second = f64::from(rate.rate) / rate.per.as_secs_f64().max(f64::MIN_POSITIVE);
        let burst = f64::from(rate.burst.max(1));
        // An idle bucket is full again after burst / rate; forgetting it then changes nothing.
        let refill = Duration::try_from_secs_f64(burst / per_second)
            .unwrap_or(Duration::from_secs(86_400))
            .max(Duration::from_secs(1));
        RateLimiter {
            per_second,
            burst,
            buckets: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(refill)
                .build(),
        }
    }

    /// Takes a token for `key`; when none is left, `Err` with the wait until one is back,
    /// in whole seconds (at least one).
    pub fn check(&self, key: K) -> Result<(), Duration> {
        let bucket = self.buckets.get_with(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                at: Instant::now(),
            }))
        });
        // Never held across an await; a poisoned bucket is still a valid count.
        let mut b = bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / self.per_second).ceil().max(1.0);
        Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(86_400)))
    }
}

/// The limits of one server.
pub struct Limits {
    sign_in: Option<RateLimiter<IpAddr>>,
    v1: Option<RateLimiter<String>>,
    trust_forwarded_for: bool,
    warned_no_address: AtomicBool,
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Limits {
        Limits {
            sign_in: settings.sign_in.map(|r| RateLimiter::new(r, IP_CAPACITY)),
            v1: settings.v1.map(|r| RateLimiter::new(r, KEY_CAPACITY)),
            trust_forwarded_for: settings.trust_forwarded_for,
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
        let Some(ip) = client_ip(headers, peer, self.trust_forwarded_for) else {
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

/// The client's address: the left-most `X-Forwarded-For` entry when trusted (and valid),
/// else the peer's.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer
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

    fn limiter(rate: u32, per: u64, burst: u32) -> RateLimiter<&'static str> {
        RateLimiter::new(
            RateSettings {
                rate,
                per: Duration::from_secs(per),
                burst,
            },
            100,
        )
    }

    #[test]
    fn a_burst_then_a_wait_in_whole_seconds() {
        let l = limiter(1, 60, 3);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait.as_secs() >= 1 && wait.as_secs() <= 60, "{wait:?}");
        assert_eq!(wait.subsec_nanos(), 0);
        // Another key has its own bucket.
        assert!(l.check("b").is_ok());
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(&h, Some(peer), false), Some(peer));
        assert_eq!(
            client_ip(&h, Some(peer), true),
            Some("203.0.113.7".parse().unwrap())
        );
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(&h, Some(peer), true), Some(peer));
        assert_eq!(client_ip(&HeaderMap::new(), None, true), None);
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

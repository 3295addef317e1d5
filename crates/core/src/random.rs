//! Unpredictable identifiers and secrets from the operating system's CSPRNG.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `n` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom reads getrandom(2), which does not fail on Linux once the system has
    // booted. Should it ever, predictable secrets are worse than no process at all.
    if SystemRandom::new().fill(&mut out).is_err() {
        std::process::abort();
    }
    out
}

/// A URL-safe random token of `N` random bytes (base64url, no padding).
pub fn token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<N>())
}

/// A random `u64`, for jitter and sampling.
pub fn u64() -> u64 {
    u64::from_le_bytes(bytes::<8>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_differ_and_have_the_expected_length() {
        let a = super::token::<32>();
        let b = super::token::<32>();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
    }
}

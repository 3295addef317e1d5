//! Fingerprints of refresh tokens, so that a RISC `token-revoked` event (which names a token
//! by hash, never by value) can find its grant although the store holds the token sealed.
//! Here because every part that holds a fresh refresh token (sign-in, the broker's refresh)
//! and the one that looks a token up (the RISC receiver) must compute it the same way.

use crate::{ExposeSecret, SecretString};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Fingerprints of a refresh token, so a RISC `token-revoked` event can find its grant
/// without the store holding the token: `hash` is base64(SHA-512(SHA-512(token))) as Google
/// sends it; `prefix_hash` is hex SHA-256 of the token's first 16 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFingerprint {
    pub hash: String,
    pub prefix_hash: String,
}

/// `hash`: base64 of SHA-512(SHA-512(token)), the form Google's RISC events carry;
/// `prefix_hash`: hex SHA-256 of the token's first 16 characters (the `token_identifier_alg`
/// `prefix` form).
pub fn fingerprint(token: &SecretString) -> TokenFingerprint {
    let text = token.expose_secret();
    let once = digest::digest(&digest::SHA512, text.as_bytes());
    let twice = digest::digest(&digest::SHA512, once.as_ref());
    let prefix: String = text.chars().take(16).collect();
    TokenFingerprint {
        hash: STANDARD.encode(twice.as_ref()),
        prefix_hash: hex::encode(digest::digest(&digest::SHA256, prefix.as_bytes()).as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_forms() {
        let fp = fingerprint(&SecretString::from("1//0abcdefghijklmnopqrstuvwxyz"));
        assert_eq!(fp.prefix_hash.len(), 64);
        assert!(fp.prefix_hash.chars().all(|c| c.is_ascii_hexdigit()));
        // 64 bytes of SHA-512 in padded base64.
        assert_eq!(fp.hash.len(), 88);
        assert!(!fp.hash.contains("abcdefghijklmnop"));
        let same_prefix = fingerprint(&SecretString::from("1//0abcdefghijklZZZZ"));
        assert_eq!(fp.prefix_hash, same_prefix.prefix_hash);
        assert_ne!(fp.hash, same_prefix.hash);

        // SHA-512(SHA-512("abc")), computed independently.
        let once = digest::digest(&digest::SHA512, b"abc");
        let twice = digest::digest(&digest::SHA512, once.as_ref());
        assert_eq!(
            fingerprint(&SecretString::from("abc")).hash,
            STANDARD.encode(twice.as_ref())
        );
        assert_eq!(
            fingerprint(&SecretString::from("abc")).prefix_hash,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

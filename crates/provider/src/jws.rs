//! The compact JWS framing (RFC 7515) of the tokens the provider signs: ID tokens and security
//! event tokens are read here, by the same code, and by no other.
//!
//! A token is three base64url parts: a JSON header, a JSON payload and an RS256 signature over
//! the first two as sent. The header is read before any key is looked up, so that `alg: none`
//! or HS256 are refused by name; the signature is checked with the key the keystore parsed once
//! per JWKS fetch; only then is the payload decoded, straight into the caller's claim type.
//!
//! jsonwebtoken's `decode` is not used: it hands its `DecodingKey` to a process-wide crypto
//! provider that rebuilds the RSA key (and its Montgomery context) at every verification, reads
//! the header a second time and the claims twice, and its `Header` cannot hold `alg: none` to
//! refuse it by name.
//!
//! Leaves to others: which key a `kid` names (the keystore) and what the claims must say
//! (`claims` for ID tokens, `risc` for security events).

use crate::error::{IdTokenError, echo};
use crate::keystore::JwksKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The one algorithm Google signs ID tokens and security events with.
pub(crate) const ALGORITHM: &str = "RS256";

/// The header fields that decide which key, if any, may verify the token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub kid: String,
}

/// Reads the header before any key is looked up: RS256, a `kid`, and no critical extension.
pub(crate) fn parse_header(token: &str) -> Result<Header, IdTokenError> {
    #[derive(Deserialize)]
    struct Raw {
        alg: Option<String>,
        kid: Option<String>,
        crit: Option<serde::de::IgnoredAny>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::Malformed);
    };
    let raw: Raw = decode_part(header)?;
    let alg = raw.alg.ok_or(IdTokenError::Malformed)?;
    if alg != ALGORITHM {
        return Err(IdTokenError::UnsupportedAlgorithm(
            echo(&alg).chars().take(32).collect(),
        ));
    }
    // We understand no header extension, so one marked critical cannot be honoured.
    if raw.crit.is_some() {
        return Err(IdTokenError::Malformed);
    }
    match raw.kid {
        Some(kid) if !kid.is_empty() => Ok(Header { kid }),
        _ => Err(IdTokenError::Malformed),
    }
}

/// Checks the token's RS256 signature with `key`, then reads its payload as `T`, before any
/// claim rule is applied. The header was read (and its `alg` checked) by [`parse_header`].
/// Errors are [`IdTokenError::BadSignature`] or [`IdTokenError::Malformed`].
pub(crate) fn decode_signed<T: DeserializeOwned>(
    token: &str,
    key: &JwksKey,
) -> Result<T, IdTokenError> {
    let (message, signature) = token.rsplit_once('.').ok_or(IdTokenError::Malformed)?;
    let (_, payload) = message.split_once('.').ok_or(IdTokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| IdTokenError::Malformed)?;
    if !key.verifies_rs256(message.as_bytes(), &signature) {
        return Err(IdTokenError::BadSignature);
    }
    decode_part(payload)
}

/// One base64url part of the token, as JSON.
fn decode_part<T: DeserializeOwned>(part: &str) -> Result<T, IdTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdTokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| IdTokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encode(header: serde_json::Value) -> String {
        format!(
            "{}.e30.c2ln",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap())
        )
    }

    #[test]
    fn header_rules() {
        assert_eq!(
            parse_header(&encode(json!({"alg": "RS256", "kid": "k1", "typ": "JWT"}))),
            Ok(Header { kid: "k1".into() })
        );
        for alg in ["none", "HS256", "ES256", "RS512", "rs256"] {
            assert_eq!(
                parse_header(&encode(json!({"alg": alg, "kid": "k1"}))),
                Err(IdTokenError::UnsupportedAlgorithm(alg.into()))
            );
        }
        assert_eq!(
            parse_header(&encode(json!({"alg": "RS256"}))),
            Err(IdTokenError::Malformed)
        );
        assert_eq!(
            parse_header(&encode(json!({"kid": "k"}))),
            Err(IdTokenError::Malformed)
        );
        assert_eq!(
            parse_header(&encode(
                json!({"alg": "RS256", "kid": "k", "crit": ["b64"]})
            )),
            Err(IdTokenError::Malformed)
        );
        for bad in ["", "a.b", "a.b.c.d", "!!!.e30.c2ln", "e30.e30.c2ln"] {
            assert_eq!(parse_header(bad), Err(IdTokenError::Malformed), "{bad}");
        }
        let long = "X".repeat(500);
        let Err(IdTokenError::UnsupportedAlgorithm(shown)) =
            parse_header(&encode(json!({"alg": long, "kid": "k"})))
        else {
            panic!("expected UnsupportedAlgorithm")
        };
        assert_eq!(shown.len(), 32);
    }
}

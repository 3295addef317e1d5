//! Compact JWS as Google writes it: RS256 ID tokens and security event tokens, plus the
//! deliberately spoiled variants the fault injection hands out.

use crate::keys::SigningKey;
use crate::util::{b64url, b64url_decode};
use aws_lc_rs::hmac;
use serde_json::{Value, json};
use std::sync::Arc;

/// Signs `claims` with `key` (RS256), with the header Google uses.
pub(crate) fn sign_rs256(key: &SigningKey, typ: &str, claims: &Value) -> anyhow::Result<String> {
    let header = json!({"alg": "RS256", "kid": key.kid, "typ": typ});
    let input = signing_input(&header, claims);
    let sig = key.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64url(&sig)))
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// An unsigned token (`alg: none`), which no verifier may accept.
pub(crate) fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!("{}.", signing_input(&header, claims))
}

/// HS256 keyed with the public key: the algorithm confusion attack.
pub(crate) fn hs256_with_public_key(key: &SigningKey, claims: &Value) -> String {
    let header = json!({"alg": "HS256", "kid": key.kid, "typ": "JWT"});
    let input = signing_input(&header, claims);
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key.public_der()),
        input.as_bytes(),
    );
    format!("{input}.{}", b64url(mac.as_ref()))
}

/// A genuine signature with one bit flipped.
pub(crate) fn flip_signature(token: &str) -> String {
    let Some((input, sig)) = token.rsplit_once('.') else {
        return token.to_owned();
    };
    let mut bytes = b64url_decode(sig).unwrap_or_default();
    if let Some(b) = bytes.get_mut(10) {
        *b ^= 0x01;
    }
    format!("{input}.{}", b64url(&bytes))
}

/// Verifies an RS256 token against `keys` by `kid`; the header and claims when it holds.
pub(crate) fn verify(token: &str, keys: &[Arc<SigningKey>]) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
    if header.get("alg")?.as_str()? != "RS256" {
        return None;
    }
    let kid = header.get("kid")?.as_str()?;
    let key = keys.iter().find(|k| k.kid == kid)?;
    let sig = b64url_decode(s)?;
    let input_len = h.len() + 1 + c.len();
    if !key.verify(token.get(..input_len)?.as_bytes(), &sig) {
        return None;
    }
    let claims: Value = serde_json::from_slice(&b64url_decode(c)?).ok()?;
    Some((header, claims))
}

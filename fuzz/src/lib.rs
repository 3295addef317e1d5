//! What the fuzz targets share: a fixed RSA key (keys/signing-key.pem, made for these targets
//! and trusted by nothing else), the JWK set that publishes it, and the input format that turns
//! fuzz bytes into a compact JWS.
//!
//! Token input format (targets `id_token_parse`, `id_token_verify`, `security_event`):
//!
//! - first byte even: the rest is the token as text (invalid UTF-8 replaced);
//! - first byte odd: the rest is `HEADER 0x00 PAYLOAD`, arbitrary bytes that become the
//!   token's first two base64url parts, so that the fuzzer mutates the JSON itself. With bit 1
//!   of the first byte set, the token is signed RS256 by the fixed key (and passes the
//!   signature check) in the targets that verify; otherwise it carries a signature that does
//!   not verify.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use grantkeeper_provider::fuzzing::Verifier;
use std::sync::OnceLock;

/// The `kid` of the fixed key in the JWK set.
pub const KID: &str = "fuzz-rs256";

const SIGNING_KEY_PEM: &str = include_str!("../keys/signing-key.pem");

/// A 2048-bit modulus of nobody's key, published under another kid, as Google publishes two
/// or three keys at once.
const OTHER_MODULUS: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

/// The fixed key. Panics (at the first input, as a setup failure) if the PEM is unreadable.
pub fn key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        let body: String = SIGNING_KEY_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(body)
            .expect("keys/signing-key.pem is base64");
        KeyPair::from_pkcs8(&der).expect("keys/signing-key.pem is a PKCS#8 RSA key")
    })
}

/// The JWK set the verifier fetches: the fixed key, a second RSA key and an EC key that is
/// skipped.
pub fn jwks() -> Vec<u8> {
    let public = key().public_key();
    let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
    let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
    format!(
        r#"{{"keys": [
            {{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "{KID}", "n": "{n}", "e": "{e}"}},
            {{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "other", "n": "{OTHER_MODULUS}", "e": "AQAB"}},
            {{"kty": "EC", "use": "sig", "alg": "ES256", "kid": "ec", "crv": "P-256",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}
        ]}}"#
    )
    .into_bytes()
}

/// The verifier of every token target: Google's rules at a fixed time, with [`jwks`].
pub fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::new(jwks()).expect("the fuzz verifier builds"))
}

/// RS256 over `message` with the fixed key.
pub fn sign(message: &[u8]) -> Vec<u8> {
    let pair = key();
    let mut signature = vec![0u8; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message,
        &mut signature,
    )
    .expect("RS256 signing with the fixed key");
    signature
}

/// A compact JWS of `header` and `payload` (any bytes), signed by the fixed key or not.
pub fn compact(header: &[u8], payload: &[u8], signed: bool) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = if signed {
        sign(message.as_bytes())
    } else {
        // As long as a real signature, so that only its value is wrong.
        vec![0x5a; 256]
    };
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The token that a fuzz input stands for (see the module's documentation); `None` for an
/// empty input. Targets that never check a signature pass `may_sign: false` and spare the
/// signing.
pub fn token(data: &[u8], may_sign: bool) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        return Some(String::from_utf8_lossy(rest).into_owned());
    }
    let (header, payload) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    Some(compact(header, payload, may_sign && mode & 2 != 0))
}

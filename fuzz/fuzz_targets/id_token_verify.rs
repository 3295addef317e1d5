//! The full verification of an ID token against a fixed RSA JWK set: header, key lookup in the
//! key cache, RS256 signature, claims. Inputs of the signed form reach the claim rules with
//! made-up headers and payloads.

#![no_main]

use grantkeeper_fuzz::{token, verifier};
use grantkeeper_provider::fuzzing::CLIENT_ID;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(token) = token(data, true) else {
        return;
    };
    let verified = verifier().verify_id_token(&token);
    if let Ok(claims) = &verified {
        assert_eq!(claims.aud, CLIENT_ID);
        // A token that verifies meets the same claim rules when read without its signature.
        assert_eq!(
            verifier().check_unverified_id_token(&token).as_ref(),
            Ok(claims)
        );
    }
    // Every refusal is a property of the token: the keys are in memory.
    if let Err(e) = &verified {
        assert!(!e.is_transient(), "{e}");
    }
});

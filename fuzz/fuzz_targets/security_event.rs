//! A security event token (RISC push body): the claim rules on its payload as it stands, then
//! the full verification against a fixed RSA JWK set.

#![no_main]

use grantkeeper_fuzz::{token, verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(token) = token(data, true) else {
        return;
    };
    let unverified = verifier().check_unverified_security_event(&token);
    let verified = verifier().verify_security_event(&token);
    match &verified {
        Ok(event) => {
            assert!(!event.jti.is_empty());
            // A token that verifies meets the same claim rules when read without its
            // signature.
            let Ok(same) = &unverified else {
                panic!("verified, but refused unverified: {unverified:?}")
            };
            assert_eq!(same.jti, event.jti);
            assert_eq!(same.event.name(), event.event.name());
        }
        Err(e) => {
            assert!(!e.is_transient(), "{e}");
            assert!(e.rfc8935_code().is_some());
        }
    }
});

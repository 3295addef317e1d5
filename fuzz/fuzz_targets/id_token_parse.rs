//! An arbitrary string read as an ID token, without its signature: the header rules (RS256, a
//! kid, no `crit`) and every claim rule on whatever payload it carries.

#![no_main]

use grantkeeper_fuzz::{token, verifier};
use grantkeeper_provider::fuzzing::{CLIENT_ID, NOW};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(token) = token(data, false) else {
        return;
    };
    if let Ok(claims) = verifier().check_unverified_id_token(&token) {
        assert_eq!(claims.aud, CLIENT_ID);
        assert!(!claims.sub.is_empty());
        assert!(claims.iat <= claims.exp);
        assert!(claims.exp > NOW - 300);
    }
});

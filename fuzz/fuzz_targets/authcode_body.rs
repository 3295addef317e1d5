//! The body of `POST /authcode` in each content type it is accepted as. A refusal never
//! quotes the body.
//!
//! Input: the first byte picks the content type (`% 3`: raw, form, JSON); with bit 2 set, the
//! rest is `QUERY_PLATFORM 0x00 BODY`, else all of it is the body.

#![no_main]

use grantkeeper_core::ExposeSecret;
use grantkeeper_server::fuzzing::{AuthcodeBody, parse_authcode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let kind = match mode % 3 {
        0 => AuthcodeBody::Raw,
        1 => AuthcodeBody::Form,
        _ => AuthcodeBody::Json,
    };
    let (query, body) = match (mode & 4 != 0, rest.iter().position(|&b| b == 0)) {
        (true, Some(i)) => (
            Some(String::from_utf8_lossy(&rest[..i]).into_owned()),
            &rest[i + 1..],
        ),
        _ => (None, rest),
    };
    match parse_authcode(kind, body, query) {
        Ok((code, _platform)) => {
            let code = code.expose_secret();
            assert!(!code.is_empty() && code.len() <= 4096);
            assert!(code.bytes().all(|b| b.is_ascii_graphic()));
        }
        Err(e) => {
            // A refusal never quotes the code: no long word of the message comes from the
            // body. The one that quotes something, a platform it does not know, keeps 20
            // characters of it.
            let message = e.to_string();
            if let Some(platform) =
                message.strip_prefix("platform must be web, android or ios, not ")
            {
                assert!(platform.len() <= 2 + 20 * 10, "{message:?}");
                return;
            }
            for word in message.split_whitespace().filter(|w| w.len() > 16) {
                let quoted = body.windows(word.len()).any(|w| w == word.as_bytes());
                assert!(!quoted, "the body quoted in {message:?}");
            }
        }
    }
});

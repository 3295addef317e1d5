//! client_secret.json as Google Cloud console downloads it. A refusal never quotes the file.

#![no_main]

use grantkeeper_core::ExposeSecret;
use grantkeeper_server::config::parse_client_secret;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_client_secret(&text, Path::new("client_secret.json")) {
        Ok((client_id, secret)) => {
            assert!(text.contains(client_id.as_str()) || text.contains('\\'));
            let _ = secret.expose_secret().len();
        }
        Err(e) => {
            assert_eq!(e.key, "provider.client_secret_file");
            // Only the file's name and what kind of problem it has, nothing of its content.
            let problem = e.problem.as_str();
            let known = [
                "the file has no \"web\" client",
                "the client has no client_secret",
            ];
            let kind = problem
                .strip_prefix("client_secret.json is not a client secret file (")
                .and_then(|rest| rest.strip_suffix(')'));
            assert!(
                known.contains(&problem)
                    || matches!(
                        kind,
                        Some(
                            "invalid JSON" | "unexpected fields" | "truncated JSON" | "unreadable"
                        )
                    ),
                "{problem:?}"
            );
        }
    }
});

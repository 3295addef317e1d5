//! grantkeeper.toml: the TOML and its keys, then the validation into typed settings. No error
//! may quote a secret the file holds.

#![no_main]

use grantkeeper_server::config::{Settings, parse_config};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// The values of the secret keys written in `text` that a message could be searched for:
/// long, token-like, and written only once (so that no other key's value holds them).
fn secrets(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            if !matches!(
                key.trim(),
                "client_secret" | "master_key" | "webhook_secret" | "pkcs11_pin"
            ) {
                return None;
            }
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            let token_like =
                value.len() >= 16 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            (token_like && text.matches(value).count() == 1).then_some(value)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let secrets = secrets(&text);
    let no_secret = |message: String| {
        for secret in &secrets {
            assert!(!message.contains(secret), "a secret in {message:?}");
        }
    };
    let mut file = match parse_config(&text) {
        Ok(file) => file,
        Err(e) => return no_secret(e.to_string()),
    };
    // The file it names is the other target's business (client_secret_json); reading
    // whatever path an input makes up is not this one's.
    file.provider.client_secret_file = None;
    if let Err(e) = Settings::from_file(&file, Path::new("/nonexistent/grantkeeper")) {
        no_secret(e.to_string());
    }
});

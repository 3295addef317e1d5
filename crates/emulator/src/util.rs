//! Small helpers shared by the emulator's modules: digests, encodings, private files.

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// SHA-256 of an issued code or token: the only form in which one is kept.
pub(crate) type Hash = [u8; 32];

pub(crate) fn sha256(data: &[u8]) -> Hash {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// `n` random characters of `[a-z0-9]`, the alphabet of Google client id suffixes.
pub(crate) fn lower_alnum(n: usize) -> String {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = String::with_capacity(n);
    while s.len() < n {
        for b in grantkeeper_core::random::bytes::<32>() {
            // 252 = 7 * 36: rejecting the top values keeps the alphabet uniform.
            if b < 252
                && s.len() < n
                && let Some(&c) = ALPHABET.get(usize::from(b % 36))
            {
                s.push(char::from(c));
            }
        }
    }
    s
}

/// `n` random decimal digits, the first one not zero.
pub(crate) fn digits(n: usize) -> String {
    let mut s = String::with_capacity(n);
    while s.len() < n {
        for b in grantkeeper_core::random::bytes::<32>() {
            if b < 250 && s.len() < n {
                let d = b % 10;
                if s.is_empty() && d == 0 {
                    continue;
                }
                s.push(char::from(b'0' + d));
            }
        }
    }
    s
}

pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// JSON that can sit inside a `<script>` element without closing it.
pub(crate) fn script_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Writes a file readable by its owner only, replacing it atomically.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
    }
    std::fs::rename(&tmp, path)
}

/// Locks that survive a panicking holder: the emulator's state stays usable for the next test.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// The origin (`scheme://host[:port]`) of a URL, as browsers send it in `Origin`.
pub(crate) fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// True for the loopback hosts that Google lets through without registration.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_alphabets() {
        let s = lower_alnum(32);
        assert_eq!(s.len(), 32);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let d = digits(12);
        assert_eq!(d.len(), 12);
        assert!(!d.starts_with('0'));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert!(!script_json(&serde_json::json!("</script>")).contains('<'));
    }
}

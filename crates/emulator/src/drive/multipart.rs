//! `multipart/related` bodies of `uploadType=multipart` (RFC 2387): a JSON metadata part, then
//! the media part with its own `Content-Type`. The body is already in memory and capped, so a
//! plain split is enough; a streaming multipart crate would add nothing here. Bare LF line
//! ends are accepted besides CRLF, and a media part in `Content-Transfer-Encoding: base64`
//! (as some browser samples send it) is decoded.

use axum::body::Bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

pub(crate) struct Part {
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
}

/// The `boundary` parameter of a `multipart/related` (or `multipart/mixed`) content type.
pub(crate) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim().to_ascii_lowercase();
    if kind != "multipart/related" && kind != "multipart/mixed" {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The parts of `body`, in order; `None` when it is not a well-formed multipart body.
pub(crate) fn parse(body: &Bytes, boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("--{boundary}");
    let delim = delimiter.as_bytes();
    // The first delimiter may open the body or follow a preamble line.
    let first = if body.starts_with(delim) {
        0
    } else {
        find(body, format!("\n{delimiter}").as_bytes(), 0)? + 1
    };
    let mut pos = first + delim.len();
    let mut parts = Vec::new();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(parts);
        }
        // The rest of the delimiter line (transport padding) ends with LF.
        pos = find(body, b"\n", pos)? + 1;
        let next = find(body, format!("\n{delimiter}").as_bytes(), pos)?;
        let mut end = next;
        if end > pos && body.get(end - 1) == Some(&b'\r') {
            end -= 1;
        }
        parts.push(part(body.slice(pos..end))?);
        pos = next + 1 + delim.len();
    }
}

fn part(raw: Bytes) -> Option<Part> {
    // Headers end at the first empty line; a part may have none.
    let (head_end, body_start) = if raw.starts_with(b"\r\n") {
        (0, 2)
    } else if raw.starts_with(b"\n") {
        (0, 1)
    } else {
        match (find(&raw, b"\r\n\r\n", 0), find(&raw, b"\n\n", 0)) {
            (Some(a), Some(b)) if b < a => (b, b + 2),
            (Some(a), _) => (a, a + 4),
            (None, Some(b)) => (b, b + 2),
            (None, None) => return None,
        }
    };
    let head = std::str::from_utf8(raw.get(..head_end)?).ok()?;
    let mut content_type = None;
    let mut base64 = false;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
            base64 = value.eq_ignore_ascii_case("base64");
        }
    }
    let mut body = raw.slice(body_start..);
    if base64 {
        let compact: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        body = Bytes::from(STANDARD.decode(compact).ok()?);
    }
    Some(Part { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_related_parts() {
        let body = Bytes::from_static(
            b"--b1\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{\"name\":\"a\"}\r\n\
              --b1\r\nContent-Type: text/plain\r\n\r\nline1\r\nline2\r\n--b1--\r\n",
        );
        let parts = parse(&body, "b1").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[0].body[..], b"{\"name\":\"a\"}");
        assert_eq!(parts[1].content_type.as_deref(), Some("text/plain"));
        assert_eq!(&parts[1].body[..], b"line1\r\nline2");
    }

    #[test]
    fn takes_lf_preambles_and_base64() {
        let body = Bytes::from_static(
            b"preamble\n--x\nContent-Type: application/json\n\n{}\n--x\n\
              Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n\
              AAEC\n--x--",
        );
        let parts = parse(&body, "x").unwrap();
        assert_eq!(&parts[1].body[..], &[0u8, 1, 2]);
        assert_eq!(
            boundary("multipart/related; boundary=\"x y\"").as_deref(),
            Some("x y")
        );
        assert_eq!(boundary("application/json"), None);
        assert!(parse(&Bytes::from_static(b"--x\r\nno end"), "x").is_none());
        assert!(parse(&Bytes::from_static(b"nothing"), "x").is_none());
    }
}

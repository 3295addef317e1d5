//! One round trip to the provider: send, read a bounded body, map transport failures.

use crate::error::{ProviderError, echo, parse_retry_after};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::time::Duration;
use zeroize::Zeroizing;

/// Largest answer read from the provider; discovery, JWKS and token answers are a few KiB.
const MAX_BODY: usize = 256 * 1024;

/// A complete answer. The body is wiped on drop: token answers hold tokens.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Zeroizing<Vec<u8>>,
}

impl Answer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(self.headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()))
    }

    pub(crate) fn header(&self, name: reqwest::header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::protocol(format!(
                "answer larger than {MAX_BODY} bytes (HTTP {status})"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Timeouts and connection failures are transient. The message names the kind of failure and
/// its root cause (e.g. "Connection refused"); reqwest's own message would carry the URL,
/// which is harmless for these endpoints but noisy.
fn transport_error(e: reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "failed while reading the answer"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut root: &dyn std::error::Error = &e;
    while let Some(source) = root.source() {
        root = source;
    }
    ProviderError::Unavailable {
        status: None,
        detail: echo(&format!("{what}: {root}")),
        retry_after: None,
    }
}

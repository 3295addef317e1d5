//! Google API calls made as a user: `ANY /v1/users/{sub}/google/{path}` -> `{api_base}/{path}`.
//!
//! Only the methods Google's APIs use are routed here ([`METHODS`]; others answer 405 before
//! anything else). The query string and the body go upstream as they came, and of the headers
//! only those an API call needs ([`FORWARDED`]: content negotiation, the body's type and
//! encoding, conditional requests, ranges, Google's upload protocols); everything else, the
//! caller's credentials and address, its browser's Origin and cookies, any API key of its own,
//! stays here, so that a key with only `proxy` scope cannot make the call say more than the
//! user's token says. The answer comes back as Google gave it, streamed, error JSON included. A
//! 401 from the API means the access token died early (revoked, or rotated out): the broker
//! refreshes once and the call is retried once, which needs the body again, so bodies up to
//! 1 MiB are buffered; larger ones stream and are not retried. A grant refreshed after a 401
//! within `broker.rejection_cooldown` is not refreshed again for another 401: the API's 401 is
//! passed back. A body larger than `limits.proxy_body_limit` is refused with 413, before the
//! call when its length is declared, else as soon as it is read past the limit.

use crate::app::App;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use grantkeeper_broker::{AccessToken, TokenRequest};
use grantkeeper_core::{ExposeSecret, Metrics, Stopwatch};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use url::Url;

/// Bodies up to this size are kept so that the call can be retried after a refresh.
pub const REPLAYABLE: usize = 1024 * 1024;

/// The methods of Google's APIs; others are refused (405) before the call.
pub const METHODS: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Request headers passed upstream, all others dropped. Content-Length is not among them: the
/// HTTP client writes it for the body it sends.
pub const FORWARDED: [&str; 15] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-encoding",
    "content-range",
    "content-type",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "range",
    // Resumable and multipart uploads (Drive, YouTube, Cloud Storage's JSON API).
    "x-upload-content-type",
    "x-upload-content-length",
];

/// Request headers passed upstream by prefix: the upload protocol of Google's newer APIs
/// (`X-Goog-Upload-Protocol`, `-Command`, `-Offset`, `-Header-Content-Type`...).
const FORWARDED_PREFIXES: [&str; 1] = ["x-goog-upload-"];

/// Response headers that belong to the upstream connection (RFC 9110 §7.6.1), or that would
/// set a cookie of Google's on grantkeeper's origin.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "set-cookie"
    )
}

fn is_forwarded(name: &HeaderName) -> bool {
    let name = name.as_str();
    FORWARDED.contains(&name) || FORWARDED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The caller's headers that go upstream.
fn forwarded_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        if is_forwarded(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// The part of the request path after `/google/`.
pub fn upstream_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/users/")?;
    let (_, after) = rest.split_once("/google/")?;
    Some(after)
}

/// `{api_base}/{path}`, refusing anything that could leave `api_base`: dot segments (also
/// percent-encoded), empty segments, backslashes, and results on another origin or path.
pub fn upstream_url(api_base: &Url, path: &str, query: Option<&str>) -> Result<Url, ApiError> {
    let refuse = || {
        ApiError::InvalidRequest(
            "the API path must be a plain relative path under the API base, like drive/v3/files"
                .to_owned(),
        )
    };
    if path.is_empty() || path.contains('\\') || path.contains('#') {
        return Err(refuse());
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment).ok_or_else(refuse)?;
        if segment.is_empty()
            || decoded == "."
            || decoded == ".."
            || decoded.contains('/')
            || decoded.contains('\\')
        {
            return Err(refuse());
        }
    }
    let base = api_base.as_str().trim_end_matches('/');
    let mut text = format!("{base}/{path}");
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        text.push('?');
        text.push_str(q);
    }
    let url = Url::parse(&text).map_err(|_| refuse())?;
    let base_path = api_base.path().trim_end_matches('/');
    if url.origin() != api_base.origin() || !url.path().starts_with(&format!("{base_path}/")) {
        return Err(refuse());
    }
    Ok(url)
}

/// A path segment percent-decoded, or `None` when it holds an escape that is not `%` and two
/// hex digits (decoders pass those through as text; the proxy refuses them) or does not decode
/// to UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let well_formed = s.split('%').skip(1).all(|rest| {
        rest.as_bytes()
            .get(..2)
            .is_some_and(|pair| pair.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

enum Outgoing {
    Buffered(Bytes),
    /// The body, and whether it went past the limit while streaming (the call then fails).
    Streaming(reqwest::Body, Arc<AtomicBool>),
}

fn too_large(limit: u64) -> ApiError {
    ApiError::PayloadTooLarge {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

/// Reads up to [`REPLAYABLE`] bytes; beyond that, the rest streams behind what was read. No
/// more than `limit` bytes in all.
async fn take_body(body: Body, limit: u64) -> Result<Outgoing, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::InvalidRequest("the request body could not be read".to_owned())
        })?;
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > limit {
            return Err(too_large(limit));
        }
        if buf.len() > REPLAYABLE {
            let head =
                futures_util::stream::once(async move { Ok::<Bytes, axum::Error>(buf.freeze()) });
            let exceeded = Arc::new(AtomicBool::new(false));
            let flag = exceeded.clone();
            let mut seen = 0u64;
            let limited = head.chain(stream).map(move |c| {
                let c = c?;
                seen += c.len() as u64;
                if seen > limit {
                    flag.store(true, Ordering::Relaxed);
                    return Err(axum::Error::new("the request body is too large"));
                }
                Ok(c)
            });
            return Ok(Outgoing::Streaming(
                reqwest::Body::wrap_stream(limited),
                exceeded,
            ));
        }
    }
    Ok(Outgoing::Buffered(buf.freeze()))
}

async fn send(
    app: &App,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    token: &AccessToken,
    body: reqwest::Body,
) -> Result<reqwest::Response, ApiError> {
    app.api_http()
        .request(method.clone(), url.clone())
        .headers(headers.clone())
        .bearer_auth(token.token.expose_secret())
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() || e.is_connect() {
                ApiError::UpstreamUnavailable {
                    message: "the Google API did not answer in time".to_owned(),
                    retry_after: Some(std::time::Duration::from_secs(1)),
                }
            } else if e.is_body() || e.is_request() {
                ApiError::Upstream("the request could not be sent to the Google API".to_owned())
            } else {
                ApiError::Upstream("the Google API call failed".to_owned())
            }
        })
}

/// Calls the API as the user and answers what it answered.
pub async fn forward(app: &App, sub: &str, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = upstream_path(parts.uri.path())
        .ok_or_else(|| ApiError::NotFound("no such endpoint".to_owned()))?;
    let url = upstream_url(&app.settings().api_base, path, parts.uri.query())?;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = app.settings().limits.proxy_body_limit;
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let headers = forwarded_headers(&parts.headers);
    // Timed from here: what comes before is the caller's request being checked.
    let started = Stopwatch::start();
    let answered = call(app, sub, &parts, &url, &headers, body).await;
    let class = match &answered {
        Ok(response) => Metrics::status_class(response.status().as_u16()),
        Err(_) => "error",
    };
    app.metrics().proxy(class, started.elapsed());
    let response = answered?;
    let status = response.status();
    let mut out = Response::builder().status(status.as_u16());
    for (name, value) in response.headers() {
        if !is_hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    out.body(Body::from_stream(response.bytes_stream()))
        .map_err(|e| ApiError::Internal(format!("building the proxied answer: {e}")))
}

/// Gets the user's token and calls the API (once more after a 401, when the body allows).
async fn call(
    app: &App,
    sub: &str,
    parts: &axum::http::request::Parts,
    url: &Url,
    headers: &HeaderMap,
    body: Body,
) -> Result<reqwest::Response, ApiError> {
    let token = app
        .broker()
        .access_token(sub, &TokenRequest::default())
        .await?;
    let limit = app.settings().limits.proxy_body_limit;
    let outgoing = take_body(body, limit).await?;
    let response = match outgoing {
        Outgoing::Buffered(bytes) => {
            let first = send(
                app,
                &parts.method,
                url,
                headers,
                &token,
                bytes.clone().into(),
            )
            .await?;
            if first.status() != StatusCode::UNAUTHORIZED {
                return Ok(first);
            }
            tracing::info!(%sub, "the API refused the access token");
            match app
                .broker()
                .refresh_after_rejection(sub, &token.token)
                .await?
            {
                Some(fresh) => send(app, &parts.method, url, headers, &fresh, bytes.into()).await?,
                // Refreshed for a 401 moments ago: the API's answer stands.
                None => first,
            }
        }
        Outgoing::Streaming(body, exceeded) => {
            match send(app, &parts.method, url, headers, &token, body).await {
                Err(_) if exceeded.load(Ordering::Relaxed) => return Err(too_large(limit)),
                other => other?,
            }
        }
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://www.googleapis.com").unwrap()
    }

    #[test]
    fn plain_paths_are_joined_under_the_base() {
        let u = upstream_url(&base(), "drive/v3/files", Some("spaces=appDataFolder")).unwrap();
        assert_eq!(
            u.as_str(),
            "https://www.googleapis.com/drive/v3/files?spaces=appDataFolder"
        );
        let nested = Url::parse("http://127.0.0.1:8080/_google").unwrap();
        let u = upstream_url(&nested, "drive/v3/files/abc", None).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/_google/drive/v3/files/abc"
        );
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            "",
            "../x",
            "drive/../../x",
            "drive/%2e%2e/x",
            "drive/%2E./x",
            "a//b",
            "/evil",
            "a\\b",
            "drive/%2fetc",
            "x/.",
            "%zz",
            "drive/%2",
            "drive/%ff",
        ] {
            assert!(
                upstream_url(&base(), bad, None).is_err(),
                "{bad:?} was accepted"
            );
        }
        // A scheme-looking first segment stays a path on the API's own host.
        let u = upstream_url(&base(), "http:x", None).unwrap();
        assert_eq!(u.host_str(), Some("www.googleapis.com"));
    }

    #[test]
    fn only_the_headers_of_an_api_call_are_forwarded() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer gk_key"),
            ("cookie", "gk_session=x"),
            ("connection", "keep-alive"),
            ("x-forwarded-for", "192.0.2.1"),
            ("forwarded", "for=192.0.2.1"),
            ("origin", "https://evil.example"),
            ("x-api-key", "k"),
            ("x-goog-api-key", "k"),
            ("x-goog-user-project", "someone-elses"),
            ("x-http-method-override", "DELETE"),
            ("user-agent", "curl/8"),
            ("host", "evil.example"),
            ("content-length", "2"),
            ("content-type", "application/json"),
            ("if-none-match", "\"etag\""),
            ("range", "bytes=0-9"),
            ("x-upload-content-type", "text/plain"),
            ("x-goog-upload-protocol", "resumable"),
        ] {
            h.append(name, value.parse().unwrap());
        }
        let out = forwarded_headers(&h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-type",
                "if-none-match",
                "range",
                "x-goog-upload-protocol",
                "x-upload-content-type"
            ]
        );
    }

    #[test]
    fn the_path_after_google() {
        assert_eq!(
            upstream_path("/v1/users/123/google/drive/v3/files"),
            Some("drive/v3/files")
        );
        assert_eq!(upstream_path("/v1/users/123/token"), None);
    }
}

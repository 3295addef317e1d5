//! Who may drive the control API. It hands out client secrets and issued tokens, mints codes,
//! revokes users and delivers security events, so a web page the developer happens to visit
//! must not reach it: a request from another origin (`Origin`), one addressed to a host name
//! that is not loopback (`Host`: DNS rebinding), and a body that is not JSON (a cross-site
//! form or a `text/plain` fetch, which browsers send without asking) are refused before any
//! handler runs. Clients that are not browsers (tests, benchmarks, curl) send no `Origin` and
//! are unaffected.

use crate::Inner;
use crate::error::ControlError;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The largest control request body read (the handlers' own limit is axum's default).
const MAX_BODY: usize = 2 * 1024 * 1024;

fn forbidden(message: impl Into<String>) -> ControlError {
    ControlError {
        status: StatusCode::FORBIDDEN,
        error: "forbidden",
        message: message.into(),
    }
}

fn not_json() -> ControlError {
    ControlError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        error: "unsupported_media_type",
        message: "control requests with a body must be Content-Type: application/json".into(),
    }
}

/// The host name of a `Host` header value (`name[:port]`, `[v6]:port`), lowercased.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `localhost`, a name under it, or a loopback address.
pub(crate) fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The origin a same-origin page of this request would send, for its scheme and `Host`.
fn own_origins(host: &str, base_origin: &str) -> [String; 3] {
    [
        format!("http://{host}"),
        format!("https://{host}"),
        base_origin.to_owned(),
    ]
}

/// Refuses what a cross-site page could send: a foreign `Origin`, a `Host` that is not
/// loopback (unless the emulator was exposed on purpose), and a body that is not JSON.
fn check_headers(inner: &Inner, request: &Request) -> Result<(), ControlError> {
    let headers = request.headers();
    // HTTP/2 carries the host in the URI (`:authority`) rather than a Host header.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !inner.control_any_host.load(Ordering::Relaxed) && !is_loopback_name(&host_name(&host)) {
        return Err(forbidden(
            "the control API answers only requests addressed to a loopback host (localhost, 127.0.0.1, [::1])",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        if !own_origins(&host, &inner.base_origin).contains(&origin) {
            return Err(forbidden(
                "the control API answers only pages of its own origin",
            ));
        }
    }
    Ok(())
}

/// Whether a `Content-Type` value is JSON (`application/json`, parameters allowed).
fn is_json(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The control API's gate: headers first, then the body of a request that can carry one.
pub(crate) async fn control_gate(
    State(inner): State<Arc<Inner>>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(refused) = check_headers(&inner, &request) {
        tracing::warn!(reason = %refused.message, "control API request refused");
        return refused.into_response();
    }
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    if content_type.as_deref().is_some_and(|ct| !is_json(ct)) {
        return not_json().into_response();
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return ControlError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "payload_too_large",
            message: format!("control request bodies are at most {MAX_BODY} bytes"),
        }
        .into_response();
    };
    // A body without a Content-Type is what a cross-site `no-cors` request can send.
    if content_type.is_none() && !bytes.is_empty() {
        return not_json().into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_of_host_headers() {
        assert_eq!(host_name("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("LocalHost"), "localhost");
        assert_eq!(host_name("evil.example:80"), "evil.example");
        for loopback in [
            "localhost",
            "app.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
        ] {
            assert!(is_loopback_name(loopback), "{loopback}");
        }
        for other in [
            "evil.example",
            "10.0.0.1",
            "0.0.0.0",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_name(other), "{other}");
        }
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json("application/jsonp"));
    }
}

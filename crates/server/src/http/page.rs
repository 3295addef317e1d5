//! The demo web page (`web/` at the top of the repository, embedded in the binary): sign in
//! with Google Identity Services' code model, see what the server keeps, use Drive on the
//! offline path. Served by `grantkeeper dev`, and by `serve` with `server.demo_page = true`.
//!
//! The page loads Google's script from `https://accounts.google.com/gsi/client` when the
//! provider is Google, and `{issuer}/gsi/client` otherwise (the emulator serves the same
//! surface there): nothing else differs between the two.

use crate::app::App;
use crate::error::{ApiError, exchange_error};
use crate::http::extract::session_user;
use axum::Router;
use axum::extract::State;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use grantkeeper_core::scopes::DRIVE_APPDATA;
use serde_json::json;
use url::Url;

const INDEX: &str = include_str!("../../../../web/index.html");
const SCRIPT: &str = include_str!("../../../../web/app.js");
const STYLE: &str = include_str!("../../../../web/app.css");

/// Where Google serves Identity Services.
const GOOGLE_GSI: &str = "https://accounts.google.com/gsi/client";

pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(index))
        .route("/web/app.js", get(script))
        .route("/web/app.css", get(style))
        .route("/favicon.ico", get(icon))
}

/// The page's icon, also at `/favicon.ico`, which browsers ask for by themselves (from the
/// consent popup too).
const ICON: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' fill='#0b57d0'/><path d='M10 15v-3a6 6 0 0 1 12 0v3' fill='none' stroke='#fff' stroke-width='2.5'/><rect x='8' y='15' width='16' height='11' rx='2' fill='#fff'/></svg>";

/// The Identity Services script for the configured provider.
pub fn gsi_script_url(issuer: &Url, google: bool) -> String {
    if google {
        GOOGLE_GSI.to_owned()
    } else {
        format!("{}/gsi/client", issuer.as_str().trim_end_matches('/'))
    }
}

fn origin_of(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization()).filter(|o| o != "null")
}

/// The page's policy: scripts from this server and the provider's Identity Services only.
fn content_security_policy(gsi: &str, google: bool) -> String {
    let provider = origin_of(gsi).unwrap_or_default();
    let (frames, connect, styles) = if google {
        (
            "https://accounts.google.com/gsi/",
            "'self' https://accounts.google.com/gsi/",
            "'self' https://accounts.google.com/gsi/style",
        )
    } else {
        ("'self'", "'self'", "'self'")
    };
    format!(
        "default-src 'self'; script-src 'self' {provider}; connect-src {connect}; \
         frame-src {frames}; style-src {styles}; img-src 'self' data: https: {provider}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

async fn index(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    // The discovery document also proves the provider reachable before the page promises a
    // working button.
    app.provider().discovery().await.map_err(exchange_error)?;
    let provider = &app.settings().provider;
    let google = provider.issuer.host_str() == Some("accounts.google.com");
    let gsi = gsi_script_url(&provider.issuer, google);
    let config = json!({
        "client_id": provider.client_id,
        "gsi_script": gsi,
        "provider": if google { "google" } else { "emulator" },
        "sign_in_scope": format!("openid email profile {DRIVE_APPDATA}"),
        "drive_scope": DRIVE_APPDATA,
        // `dev` mounts the emulator on this origin; its control API lets a person play
        // Google's part (revoke a grant as a password change would).
        "emulator_control": (app.dev_mode() && !google)
            .then(|| format!("{}/_emulator", provider.issuer.as_str().trim_end_matches('/'))),
        // Whether this browser has a live session: a signed-out load then asks nothing of
        // `/me` (whose 401 a browser logs as an error).
        "signed_in": session_user(&app, &headers).await.is_ok(),
    });
    // `<` is escaped so that no value can close the script element.
    let config = config.to_string().replace('<', "\\u003c");
    let html = INDEX.replace("{\"config\": \"here\"}", &config);
    let csp = content_security_policy(&gsi, google);
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(CONTENT_SECURITY_POLICY, v);
    }
    // `same-origin`, not `no-referrer`: the latter makes browsers send `Origin: null` with the
    // page's own POSTs, which the sign-in gate refuses.
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    // GIS popups talk to their opener: the page must not sever it.
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin-allow-popups"),
    );
    Ok(response)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_or_the_issuer_serves_identity_services() {
        let google = Url::parse("https://accounts.google.com").unwrap();
        assert_eq!(gsi_script_url(&google, true), GOOGLE_GSI);
        let emulator = Url::parse("http://127.0.0.1:8080/_google").unwrap();
        assert_eq!(
            gsi_script_url(&emulator, false),
            "http://127.0.0.1:8080/_google/gsi/client"
        );
    }

    #[test]
    fn the_policy_admits_the_provider_script_only() {
        let csp = content_security_policy("http://127.0.0.1:8090/gsi/client", false);
        assert!(csp.contains("script-src 'self' http://127.0.0.1:8090;"));
        assert!(!csp.contains("unsafe-inline"));
        let csp = content_security_policy(GOOGLE_GSI, true);
        assert!(csp.contains("script-src 'self' https://accounts.google.com;"));
        assert!(csp.contains("frame-src https://accounts.google.com/gsi/"));
    }

    #[test]
    fn the_page_has_the_config_slot() {
        assert!(INDEX.contains("{\"config\": \"here\"}"));
    }
}

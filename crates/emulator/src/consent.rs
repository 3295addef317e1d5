//! The authorization endpoint: a server-rendered account chooser and granular consent page,
//! and its answer in redirect mode (302 to the registered URI) or popup mode (a page that
//! `postMessage`s the result to the opener, as Google Identity Services' popup does).

use crate::Inner;
use crate::oauth::new_code;
use crate::state::{NewCode, Pkce, PkceMethod};
use crate::users::{TEST_USERS, normalise_email};
use crate::util::{self, html_escape, is_loopback_host, lock, read};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use grantkeeper_core::Scopes;
use grantkeeper_core::scopes::{EMAIL, OPENID, PROFILE, normalise};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// Where the consent form posts, relative to the base.
pub(crate) const SUBMIT_PATH: &str = "/o/oauth2/consent";

/// The authorization request parameters the emulator understands; others are ignored.
#[derive(Deserialize, Default, Clone, Debug)]
pub(crate) struct AuthParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    access_type: Option<String>,
    prompt: Option<String>,
    include_granted_scopes: Option<String>,
    login_hint: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    nonce: Option<String>,
    /// The opener's origin for `redirect_uri=postmessage`.
    origin: Option<String>,
}

enum Mode {
    Redirect(String),
    Popup { origin: String },
}

/// A request that passed validation.
struct Valid {
    client_id: String,
    mode: Mode,
    /// Normalised, in the order requested, without duplicates.
    requested: Vec<String>,
    offline: bool,
    consent: bool,
    none: bool,
    include_granted: bool,
    pkce: Option<Pkce>,
    nonce: Option<String>,
    state: Option<String>,
    login_hint: Option<String>,
}

fn is_identity(scope: &str) -> bool {
    matches!(scope, OPENID | EMAIL | PROFILE)
}

fn describe(scope: &str) -> &str {
    match scope {
        OPENID => "Associate you with your personal info on Google",
        EMAIL => "See your primary Google Account email address",
        PROFILE => {
            "See your personal info, including any personal info you've made publicly available"
        }
        grantkeeper_core::scopes::DRIVE_APPDATA => {
            "See, create, and delete its own configuration data in your Google Drive"
        }
        other => other,
    }
}

/// Google's "Access blocked" page for requests that cannot be answered to the app.
fn error_page(status: StatusCode, error: &str, detail: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Error {code}: {e}</title>{STYLE}</head><body><main>\
         <h1>Access blocked: this app's request is invalid</h1>\
         <p class=\"error\">Error {code}: {e}</p><p>{d}</p></main></body></html>",
        code = status.as_u16(),
        e = html_escape(error),
        d = html_escape(detail),
    );
    (status, Html(body)).into_response()
}

/// The origin a popup answer goes to, from `storagerelay://http/host:port?id=…`.
fn storagerelay_origin(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("storagerelay://")?;
    let rest = rest.split(['?', '#']).next()?;
    let (scheme, host) = rest.split_once('/')?;
    if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
        return None;
    }
    let url = url::Url::parse(&format!("{scheme}://{host}")).ok()?;
    Some(util::origin_of(&url))
}

/// Why a request cannot be answered to the app: shown to the user as a 400 page.
struct Blocked {
    error: &'static str,
    detail: &'static str,
}

impl IntoResponse for Blocked {
    fn into_response(self) -> Response {
        error_page(StatusCode::BAD_REQUEST, self.error, self.detail)
    }
}

fn bad(error: &'static str, detail: &'static str) -> Blocked {
    Blocked { error, detail }
}

fn validate(inner: &Inner, p: &AuthParams) -> Result<Valid, Blocked> {
    let Some(client_id) = p.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(bad(
            "invalid_request",
            "Missing required parameter: client_id",
        ));
    };
    let mode = answer_mode(inner, client_id, p)?;
    if p.response_type.as_deref() != Some("code") {
        return Err(bad(
            "unsupported_response_type",
            "The emulator answers response_type=code only.",
        ));
    }
    let requested = requested_scopes(p)?;
    let prompts = prompt_values(p)?;
    let offline = match p.access_type.as_deref() {
        None | Some("online") => false,
        Some("offline") => true,
        Some(_) => {
            return Err(bad(
                "invalid_request",
                "Invalid parameter value for access_type.",
            ));
        }
    };
    Ok(Valid {
        client_id: client_id.to_owned(),
        // GIS popup codes always yield refresh tokens: the code client asks for offline access.
        offline: offline || matches!(mode, Mode::Popup { .. }),
        mode,
        requested,
        consent: prompts.contains(&"consent"),
        none: prompts.contains(&"none"),
        include_granted: p.include_granted_scopes.as_deref() == Some("true"),
        pkce: pkce_challenge(p)?,
        nonce: p.nonce.clone(),
        state: p.state.clone(),
        login_hint: p.login_hint.clone(),
    })
}

/// How the answer reaches the app: a redirect to a URI registered for the web client, or a
/// popup's message to an origin registered for it (or on loopback).
fn answer_mode(inner: &Inner, client_id: &str, p: &AuthParams) -> Result<Mode, Blocked> {
    let clients = read(&inner.clients);
    let Some(client) = clients
        .get(client_id)
        .filter(|c| c.kind == crate::clients::ClientKind::Web)
    else {
        return Err(bad("invalid_client", "The OAuth client was not found."));
    };
    let Some(redirect_uri) = p.redirect_uri.as_deref().filter(|r| !r.is_empty()) else {
        return Err(bad(
            "invalid_request",
            "Missing required parameter: redirect_uri",
        ));
    };
    if redirect_uri != "postmessage" && !redirect_uri.starts_with("storagerelay://") {
        return if client.accepts_redirect(&inner.base_origin, redirect_uri) {
            Ok(Mode::Redirect(redirect_uri.to_owned()))
        } else {
            Err(bad(
                "redirect_uri_mismatch",
                "The redirect URI in the request does not match the ones authorized for the OAuth client.",
            ))
        };
    }
    let origin = if redirect_uri == "postmessage" {
        p.origin.clone()
    } else {
        storagerelay_origin(redirect_uri)
    };
    let origin_allowed = |origin: &str| {
        url::Url::parse(origin).is_ok_and(|u| {
            let o = util::origin_of(&u);
            u.host_str().is_some_and(is_loopback_host)
                || client
                    .all_javascript_origins(&inner.base_origin)
                    .contains(&o)
        })
    };
    match origin {
        Some(o) if origin_allowed(&o) => Ok(Mode::Popup {
            origin: url::Url::parse(&o)
                .map(|u| util::origin_of(&u))
                .unwrap_or(o),
        }),
        Some(_) => Err(bad(
            "origin_mismatch",
            "The JavaScript origin of the request is not registered for this client.",
        )),
        None => Err(bad(
            "invalid_request",
            "The popup's origin could not be determined.",
        )),
    }
}

/// The scopes asked for, normalised, in the order requested, without duplicates; one at least.
fn requested_scopes(p: &AuthParams) -> Result<Vec<String>, Blocked> {
    let mut requested: Vec<String> = Vec::new();
    for s in p
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_ascii_whitespace()
    {
        let n = normalise(s).to_owned();
        if !requested.contains(&n) {
            requested.push(n);
        }
    }
    if requested.is_empty() {
        return Err(bad("invalid_request", "Missing required parameter: scope"));
    }
    Ok(requested)
}

/// The `prompt` values: `none` alone, or any of `consent` and `select_account`.
fn prompt_values(p: &AuthParams) -> Result<Vec<&str>, Blocked> {
    let prompts: Vec<&str> = p
        .prompt
        .as_deref()
        .unwrap_or_default()
        .split_ascii_whitespace()
        .collect();
    if prompts
        .iter()
        .any(|x| !matches!(*x, "none" | "consent" | "select_account"))
        || (prompts.contains(&"none") && prompts.len() > 1)
    {
        return Err(bad(
            "invalid_request",
            "Invalid parameter value for prompt.",
        ));
    }
    Ok(prompts)
}

/// The PKCE challenge the code will be bound to, if any.
fn pkce_challenge(p: &AuthParams) -> Result<Option<Pkce>, Blocked> {
    let Some(challenge) = p.code_challenge.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let Some(method) = PkceMethod::parse(p.code_challenge_method.as_deref()) else {
        return Err(bad(
            "invalid_request",
            "Invalid code_challenge_method: use S256 or plain.",
        ));
    };
    Ok(Some(Pkce {
        challenge: challenge.to_owned(),
        method,
    }))
}

/// `GET /o/oauth2/v2/auth`.
pub(crate) async fn page(
    State(inner): State<Arc<Inner>>,
    Query(params): Query<AuthParams>,
) -> Response {
    let v = match validate(&inner, &params) {
        Ok(v) => v,
        Err(blocked) => return blocked.into_response(),
    };
    if v.none {
        return silent(&inner, &v);
    }
    render(&inner, &params, &v)
}

/// `prompt=none`: answer at once when the hinted user already granted everything requested.
fn silent(inner: &Inner, v: &Valid) -> Response {
    let Some(email) = v.login_hint.as_deref().and_then(normalise_email) else {
        return deny(inner, v, "login_required");
    };
    let granted = lock(&inner.state).granted(&email, &v.client_id);
    let covered = granted.is_some_and(|g| v.requested.iter().all(|s| g.contains(s)));
    if !covered {
        return deny(inner, v, "consent_required");
    }
    allow(inner, v, &email, v.requested.clone(), "none")
}

fn render(inner: &Inner, p: &AuthParams, v: &Valid) -> Response {
    let hint = v.login_hint.as_deref().and_then(normalise_email);
    let mut accounts: Vec<String> = TEST_USERS.iter().map(|s| (*s).to_owned()).collect();
    if let Some(h) = &hint
        && !accounts.contains(h)
    {
        accounts.insert(0, h.clone());
    }
    let selected = hint
        .clone()
        .unwrap_or_else(|| accounts.first().cloned().unwrap_or_default());
    let mut account_html = String::new();
    // Stable ids for browser tests: `account-<n>` in the order shown, `scope-<n>` in the order
    // requested (README, "Consent page").
    for (i, a) in accounts.iter().enumerate() {
        let checked = if *a == selected { " checked" } else { "" };
        account_html.push_str(&format!(
            "<label class=\"account\"><input type=\"radio\" id=\"account-{i}\" name=\"account\" \
             value=\"{e}\"{checked}> {e}</label>",
            e = html_escape(a)
        ));
    }
    let mut scope_html = String::new();
    for (i, s) in v.requested.iter().enumerate() {
        let e = html_escape(s);
        // Identity scopes cannot be unticked: a disabled box shows them, a hidden field sends them.
        if is_identity(s) {
            scope_html.push_str(&format!(
                "<li><label><input type=\"checkbox\" id=\"scope-{i}\" checked disabled \
                 aria-describedby=\"scope-{i}-name\"> {d}</label>\
                 <input type=\"hidden\" name=\"grant\" value=\"{e}\">\
                 <small id=\"scope-{i}-name\">{e}</small></li>",
                d = html_escape(describe(s)),
            ));
        } else {
            scope_html.push_str(&format!(
                "<li><label><input type=\"checkbox\" id=\"scope-{i}\" name=\"grant\" value=\"{e}\" checked \
                 aria-describedby=\"scope-{i}-name\"> {d}</label>\
                 <small id=\"scope-{i}-name\">{e}</small></li>",
                d = html_escape(describe(s)),
            ));
        }
    }
    let mut hidden = String::new();
    let fields = [
        ("client_id", &p.client_id),
        ("redirect_uri", &p.redirect_uri),
        ("response_type", &p.response_type),
        ("scope", &p.scope),
        ("state", &p.state),
        ("access_type", &p.access_type),
        ("prompt", &p.prompt),
        ("include_granted_scopes", &p.include_granted_scopes),
        ("login_hint", &p.login_hint),
        ("code_challenge", &p.code_challenge),
        ("code_challenge_method", &p.code_challenge_method),
        ("nonce", &p.nonce),
        ("origin", &p.origin),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                html_escape(value)
            ));
        }
    }
    // The consent screen names the app as its project's "App name" says, as Google's does.
    let app = read(&inner.clients).app_name.clone();
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in - Google Accounts (grantkeeper emulator)</title>{STYLE}</head><body>\
         <form method=\"post\" action=\"{action}\"><main>{hidden}\
         <p class=\"brand\">Google <span>emulator</span></p>\
         <h1>{app} wants access to your Google Account</h1>\
         <p class=\"client\">Client: <code>{client}</code></p>\
         <fieldset><legend>Choose an account</legend>{account_html}\
         <label class=\"other\">Or use another account: \
         <input type=\"email\" id=\"email-other\" name=\"email_other\" autocomplete=\"email\" \
         placeholder=\"someone@example.com\"></label>\
         </fieldset>\
         <fieldset><legend>Select what {app} can access</legend><ul>{scope_html}</ul></fieldset>\
         </main><div class=\"buttons\"><button type=\"submit\" name=\"action\" value=\"allow\" id=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"action\" value=\"cancel\" id=\"cancel\">Cancel</button></div>\
         </form></body></html>",
        app = html_escape(&app),
        client = html_escape(&v.client_id),
        action = html_escape(&inner.url(SUBMIT_PATH)),
    );
    let mut res = Html(body).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    res
}

/// `POST /o/oauth2/consent`: the consent form's answer.
pub(crate) async fn submit(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Unreadable form.",
        );
    };
    let first = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let params = AuthParams {
        client_id: first("client_id"),
        redirect_uri: first("redirect_uri"),
        response_type: first("response_type"),
        scope: first("scope"),
        state: first("state"),
        access_type: first("access_type"),
        prompt: first("prompt"),
        include_granted_scopes: first("include_granted_scopes"),
        login_hint: first("login_hint"),
        code_challenge: first("code_challenge"),
        code_challenge_method: first("code_challenge_method"),
        nonce: first("nonce"),
        origin: first("origin"),
    };
    let v = match validate(&inner, &params) {
        Ok(v) => v,
        Err(blocked) => return blocked.into_response(),
    };
    if first("action").as_deref() != Some("allow") {
        return deny(&inner, &v, "access_denied");
    }
    let typed = first("email_other").filter(|e| !e.trim().is_empty());
    let Some(email) = typed
        .or_else(|| first("account"))
        .as_deref()
        .and_then(normalise_email)
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Choose an account or type a valid email address.",
        );
    };
    let ticked: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "grant")
        .map(|(_, v)| normalise(v).to_owned())
        .collect();
    let granted: Vec<String> = v
        .requested
        .iter()
        .filter(|s| is_identity(s) || ticked.contains(s))
        .cloned()
        .collect();
    if granted.is_empty() {
        return deny(&inner, &v, "access_denied");
    }
    allow(&inner, &v, &email, granted, "consent")
}

fn allow(inner: &Inner, v: &Valid, email: &str, granted: Vec<String>, prompt: &str) -> Response {
    let scopes = Scopes::from_iter(&granted);
    let redirect = match &v.mode {
        Mode::Redirect(uri) => uri.clone(),
        Mode::Popup { .. } => "postmessage".to_owned(),
    };
    let settings = inner.settings();
    let now = inner.now(&settings);
    let code = new_code();
    lock(&inner.state).mint_code(
        util::sha256(code.as_bytes()),
        NewCode {
            client: v.client_id.clone(),
            azp: None,
            email: email.to_owned(),
            scopes: scopes.clone(),
            redirect,
            offline: v.offline,
            consent: v.consent,
            include_granted: v.include_granted,
            pkce: v.pkce.clone(),
            nonce: v.nonce.clone(),
        },
        now + settings.code_ttl_secs,
        now,
    );
    let scope = scopes.to_string();
    match &v.mode {
        Mode::Redirect(uri) => {
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = &v.state {
                pairs.push(("state", s));
            }
            pairs.push(("code", &code));
            pairs.push(("scope", &scope));
            pairs.push(("authuser", "0"));
            pairs.push(("prompt", prompt));
            pairs.push(("iss", &inner.base));
            redirect_to(uri, &pairs)
        }
        Mode::Popup { origin } => {
            let mut msg = json!({"code": code, "scope": scope, "authuser": "0", "prompt": prompt});
            if let (Some(s), Some(o)) = (&v.state, msg.as_object_mut()) {
                o.insert("state".into(), s.clone().into());
            }
            popup(&msg, origin)
        }
    }
}

fn deny(_inner: &Inner, v: &Valid, error: &str) -> Response {
    match &v.mode {
        Mode::Redirect(uri) => {
            let mut pairs: Vec<(&str, &str)> = vec![("error", error)];
            if let Some(s) = &v.state {
                pairs.push(("state", s));
            }
            redirect_to(uri, &pairs)
        }
        Mode::Popup { origin } => {
            let mut msg = json!({"error": error});
            if let (Some(s), Some(o)) = (&v.state, msg.as_object_mut()) {
                o.insert("state".into(), s.clone().into());
            }
            popup(&msg, origin)
        }
    }
}

fn redirect_to(uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(uri) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri_mismatch",
            "Bad redirect URI.",
        );
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    let mut res = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// The popup's last page: hands the result to the opener at `origin` and closes.
fn popup(message: &serde_json::Value, origin: &str) -> Response {
    let data = util::script_json(message);
    let target = util::script_json(&serde_json::Value::String(origin.to_owned()));
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Signing in…</title></head><body><p id=\"status\">Signing in…</p><script>\
         (function () {{ var data = {data}; var origin = {target};\
         if (window.opener) {{ window.opener.postMessage(data, origin); window.close(); }}\
         else {{ document.getElementById('status').textContent = 'You can close this window.'; }}\
         }})();</script></body></html>"
    );
    Html(body).into_response()
}

/// Compact enough for Google Identity Services' 500x600 popup; the buttons stay in view at the
/// bottom of the window whatever its height (the choices scroll above them), as Google's
/// consent screen keeps them.
const STYLE: &str = "<style>\
body{font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#f1f3f4;margin:0;color:#202124}\
form{display:flex;flex-direction:column;height:100vh;box-sizing:border-box;padding:1rem 0}\
form main{flex:1 1 auto;overflow:auto;width:100%}\
main{max-width:34rem;margin:0 auto;background:#fff;border:1px solid #dadce0;border-radius:8px 8px 0 0;\
padding:1rem 1.25rem .25rem;word-wrap:break-word;overflow-wrap:anywhere;box-sizing:border-box}\
.brand{font-size:1.1rem;margin:0 0 .4rem}.brand span{font-size:.8rem;color:#5f6368}\
h1{font-size:1.2rem;font-weight:400;margin:.2rem 0}.client{color:#5f6368;font-size:.75rem;word-break:break-all;margin:.2rem 0 .5rem}\
fieldset{border:1px solid #dadce0;border-radius:6px;margin:.6rem 0;padding:.3rem .7rem .5rem;min-width:0}\
legend{padding:0 .3rem}\
label{display:block;margin:.25rem 0}.account,li label{display:flex;align-items:baseline;gap:.3rem}\
ul{list-style:none;padding:0;margin:0}\
li{margin:.3rem 0}li small{display:block;color:#5f6368;font-size:.75rem;margin-left:1.6rem;word-break:break-all}\
.other input{width:100%;box-sizing:border-box;padding:.35rem;font:inherit}\
.buttons{flex:none;display:flex;flex-direction:row-reverse;gap:.6rem;width:100%;max-width:34rem;margin:0 auto;\
padding:.6rem 1.25rem;background:#fff;border:1px solid #dadce0;border-top-color:#e8eaed;border-radius:0 0 8px 8px;box-sizing:border-box}\
button{padding:.45rem 1.4rem;min-height:2.5rem;border-radius:4px;border:1px solid #dadce0;background:#fff;font-size:.95rem}\
#allow{background:#1a73e8;border-color:#1a73e8;color:#fff}.error{color:#d93025}\
@media (max-width:36rem){form{padding:0}main{margin:0;border:0;border-radius:0}.buttons{margin:0;border-width:1px 0 0;border-radius:0}}\
</style>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storagerelay_gives_the_opener_origin() {
        assert_eq!(
            storagerelay_origin("storagerelay://http/127.0.0.1:8080?id=auth123").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            storagerelay_origin("storagerelay://https/app.example.com?id=x").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(storagerelay_origin("storagerelay://ftp/x"), None);
    }
}

//! Cross-Account Protection: security event tokens (RFC 8417, Google's RISC profile) signed
//! with the emulator's RISC key and pushed to a receiver, as Google pushes them to an app.

use crate::Inner;
use crate::control::parse;
use crate::error::{ControlError, json};
use crate::jwt;
use crate::users::{normalise_email, sub_for};
use crate::util::read;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const RISC_EVENTS: &str = "https://schemas.openid.net/secevent/risc/event-type/";
const OAUTH_EVENTS: &str = "https://schemas.openid.net/secevent/oauth/event-type/";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitRequest {
    email: Option<String>,
    event: String,
    /// Optional when the deployment named its receiver.
    receiver: Option<String>,
    reason: Option<String>,
    state: Option<String>,
}

/// The event type URI of a short event name; the token events live under `oauth`.
fn event_uri(name: &str) -> Option<String> {
    match name {
        "tokens-revoked" => Some(format!("{OAUTH_EVENTS}{name}")),
        "sessions-revoked"
        | "account-disabled"
        | "account-enabled"
        | "account-purged"
        | "account-credential-change-required"
        | "verification" => Some(format!("{RISC_EVENTS}{name}")),
        _ => None,
    }
}

/// Where an event may go: the deployment's own receiver when it named one (the default when the
/// call names none), else a receiver on a loopback host. Never elsewhere: the control API must
/// not make the emulator post signed tokens to hosts of a caller's choosing.
fn receiver(inner: &Inner, asked: Option<&str>) -> Result<url::Url, ControlError> {
    let asked = match asked {
        None => None,
        Some(text) => Some(
            url::Url::parse(text)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| ControlError::bad("receiver must be an http(s) URL"))?,
        ),
    };
    let refused = || ControlError {
        status: StatusCode::FORBIDDEN,
        error: "forbidden",
        message: "security events are delivered only to this deployment's own receiver".into(),
    };
    match (inner.risc_receiver.get(), asked) {
        (Some(own), None) => Ok(own.clone()),
        (Some(own), Some(asked)) if asked == *own => Ok(asked),
        (Some(_), Some(_)) => Err(refused()),
        (None, None) => Err(ControlError::bad("receiver is required")),
        (None, Some(asked)) => {
            let loopback = match asked.host() {
                Some(url::Host::Domain(name)) => crate::guard::is_loopback_name(name),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback { Ok(asked) } else { Err(refused()) }
        }
    }
}

/// `POST /_emulator/risc`: builds, signs and delivers one security event token.
pub(crate) async fn emit(
    State(inner): State<Arc<Inner>>,
    body: Bytes,
) -> Result<Response, ControlError> {
    let req: EmitRequest = parse(&body)?;
    let uri = event_uri(&req.event).ok_or_else(|| {
        ControlError::bad(
            "event must be sessions-revoked, tokens-revoked, account-disabled, account-enabled, \
             account-purged, account-credential-change-required or verification",
        )
    })?;
    let receiver = receiver(&inner, req.receiver.as_deref())?;
    let issuer = format!("{}/", inner.base);
    let mut event = serde_json::Map::new();
    let email = match (&req.email, req.event.as_str()) {
        (_, "verification") => None,
        (Some(e), _) => {
            Some(normalise_email(e).ok_or_else(|| ControlError::bad("not an email address"))?)
        }
        (None, _) => return Err(ControlError::bad("email is required for this event")),
    };
    if let Some(email) = &email {
        event.insert(
            "subject".into(),
            json!({"subject_type": "iss-sub", "iss": issuer, "sub": sub_for(email)}),
        );
    }
    if req.event == "verification" {
        event.insert("state".into(), req.state.clone().unwrap_or_default().into());
    }
    if let Some(reason) = &req.reason {
        event.insert("reason".into(), reason.clone().into());
    }
    let settings = inner.settings();
    let now = inner.now(&settings);
    let jti = grantkeeper_core::random::token::<16>();
    let aud = read(&inner.clients).web.to_string();
    let claims = json!({
        "iss": issuer,
        "aud": aud,
        "iat": now,
        "jti": jti,
        "events": { uri: Value::Object(event) },
    });
    let key = inner
        .risc_key()
        .await
        .map_err(|e| ControlError::internal(&e))?;
    let set =
        jwt::sign_rs256(&key, "secevent+jwt", &claims).map_err(|e| ControlError::internal(&e))?;

    // A user who removed the app's access has no grants left at Google either.
    if req.event == "tokens-revoked"
        && let Some(email) = &email
    {
        crate::util::lock(&inner.state).revoke_user(email);
    }

    let delivered = inner
        .http
        .post(receiver)
        .header("content-type", "application/secevent+jwt")
        .header("accept", "application/json")
        .body(set)
        .send()
        .await;
    match delivered {
        Ok(res) => Ok(json(
            StatusCode::OK,
            &json!({"receiver_status": res.status().as_u16(), "jti": jti}),
        )),
        Err(e) => Err(ControlError {
            status: StatusCode::BAD_GATEWAY,
            error: "delivery_failed",
            message: format!("the receiver could not be reached: {}", e.without_url()),
        }),
    }
}

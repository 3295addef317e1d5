//! The answers of the HTTP contract that are more than a status: users and grants, sign-ins,
//! pages of users, and the hand-out's token. Other front ends of the same data (the command
//! line's `--json`) use them too, so that both say the same.

use axum::Json;
use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_broker::AccessToken;
use grantkeeper_core::{ExposeSecret, Scopes};
use grantkeeper_store::{GrantRecord, UserPage, UserRecord};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// The user object of the HTTP contract: the profile of their last verified ID token.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserJson {
    /// The user's Google ID, stable for the account.
    sub: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
    picture: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    locale: Option<String>,
}

impl From<&UserRecord> for UserJson {
    fn from(u: &UserRecord) -> Self {
        let p = &u.profile;
        UserJson {
            sub: p.sub.clone(),
            email: p.email.clone(),
            email_verified: p.email_verified,
            name: p.name.clone(),
            picture: p.picture.clone(),
            given_name: p.given_name.clone(),
            family_name: p.family_name.clone(),
            locale: p.locale.clone(),
        }
    }
}

/// The user's grant: what grantkeeper holds for them and how it stands.
#[derive(Serialize, ToSchema)]
#[schema(as = Grant)]
pub struct GrantJson {
    /// `active` (refresh token held, last refresh fine), `failing` (transient upstream errors;
    /// still usable), `needs_consent` (no refresh token held: sign in again with consent) or
    /// `revoked`.
    #[schema(schema_with = grant_state_schema)]
    state: &'static str,
    /// The scopes the user granted.
    scopes: Vec<String>,
    /// When the state last changed.
    #[schema(format = DateTime)]
    updated_at: String,
    /// Why it is in this state, for people.
    reason: Option<String>,
    #[schema(format = DateTime)]
    last_refresh_at: Option<String>,
}

fn grant_state_schema() -> utoipa::openapi::Object {
    super::openapi::string_enum(&["active", "failing", "needs_consent", "revoked"])
}

impl From<&GrantRecord> for GrantJson {
    fn from(g: &GrantRecord) -> Self {
        GrantJson {
            state: g.state.as_str(),
            scopes: g.scopes.to_vec(),
            updated_at: rfc3339(g.updated_at),
            reason: g.reason.clone(),
            last_refresh_at: g.last_refresh_at.map(rfc3339),
        }
    }
}

/// A sign-in's answer (`POST /authcode`), and the signed-in user's (`GET /me`, with `grant`).
#[derive(Serialize, ToSchema)]
#[schema(as = SignIn)]
pub(crate) struct SignInJson {
    user: UserJson,
    granted_scopes: Vec<String>,
    /// A refresh token is held: the app's services can act for the user offline.
    offline_access: bool,
    /// No refresh token is held: the client must sign in again with `prompt=consent`.
    needs_consent: bool,
    /// `GET /me` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<GrantJson>,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn sign_in_answer(
    user: &UserRecord,
    grant: &GrantRecord,
    with_grant: bool,
) -> SignInJson {
    SignInJson {
        user: user.into(),
        granted_scopes: grant.scopes.to_vec(),
        offline_access: !grant.needs_consent(),
        needs_consent: grant.needs_consent(),
        grant: with_grant.then(|| grant.into()),
    }
}

/// A user and their grant.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserWithGrant {
    user: UserJson,
    grant: GrantJson,
}

/// A user and their grant as `GET /v1/users/{sub}` answers them (also each element of a
/// `GET /v1/users` page), for other front ends of the same data (the command line's `--json`).
pub fn user_answer(user: &UserRecord, grant: &GrantRecord) -> serde_json::Value {
    serde_json::to_value(UserWithGrant {
        user: user.into(),
        grant: grant.into(),
    })
    .unwrap_or_default()
}

/// A page of users, in `sub` order.
#[derive(Serialize, ToSchema)]
#[schema(as = UserPage)]
pub(crate) struct UserPageJson {
    users: Vec<UserWithGrant>,
    /// The `cursor` of the next page; null on the last.
    next_cursor: Option<String>,
}

/// The hand-out's answer (`POST /v1/users/{sub}/token`). Written by [`token_json`] without a
/// serializer; this type describes it (and checks it, in the tests below).
#[derive(ToSchema)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(deny_unknown_fields))]
#[schema(as = AccessToken)]
#[allow(dead_code, reason = "describes the JSON that token_json writes")]
pub(crate) struct AccessTokenJson {
    /// The user's access token, for `Authorization: Bearer` at Google's APIs.
    access_token: String,
    /// When it expires (RFC 3339): at least `min_ttl` seconds from now.
    #[schema(format = DateTime)]
    expires_at: String,
    /// The scopes it carries.
    scopes: Vec<String>,
}

/// `GET /v1/users/{sub}`'s answer.
pub(crate) fn user(user: &UserRecord, grant: &GrantRecord) -> Response {
    Json(UserWithGrant {
        user: user.into(),
        grant: grant.into(),
    })
    .into_response()
}

/// A page of `GET /v1/users`: its `next_cursor` is the last `sub`, base64url.
pub(crate) fn user_page(page: &UserPage) -> Response {
    Json(UserPageJson {
        users: page
            .users
            .iter()
            .map(|(u, g)| UserWithGrant {
                user: u.into(),
                grant: g.into(),
            })
            .collect(),
        next_cursor: page.next.as_ref().map(|s| URL_SAFE_NO_PAD.encode(s)),
    })
    .into_response()
}

/// The hand-out's answer, never cached by intermediaries.
pub(crate) fn token(token: &AccessToken) -> Response {
    let expires_at = token.expires_at.format(&Rfc3339).unwrap_or_default();
    let json = token_json(token.token.expose_secret(), &expires_at, &token.scopes);
    // Built by hand, with static header values: a body of bytes would first be labelled
    // `application/octet-stream`, and header values from text are checked byte by byte.
    let mut response = Response::new(Body::from(json));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `{"access_token": ..., "expires_at": ..., "scopes": [...]}`, written straight into one
/// buffer: the hand-out is the API's hot path, and its three fields need no serializer.
pub(crate) fn token_json(access_token: &str, expires_at: &str, scopes: &Scopes) -> Vec<u8> {
    let scope_bytes: usize = scopes.iter().map(|s| s.len() + 3).sum();
    let mut out = Vec::with_capacity(access_token.len() + expires_at.len() + scope_bytes + 64);
    out.extend_from_slice(b"{\"access_token\":");
    json_string(&mut out, access_token);
    out.extend_from_slice(b",\"expires_at\":");
    json_string(&mut out, expires_at);
    out.extend_from_slice(b",\"scopes\":[");
    for (i, scope) in scopes.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, scope);
    }
    out.extend_from_slice(b"]}");
    out
}

/// `s` as a JSON string (RFC 8259 section 7): quote, backslash and control characters escaped,
/// everything else as it is (UTF-8 stays UTF-8).
#[allow(
    clippy::indexing_slicing,
    reason = "a nibble (b >> 4, b & 0xf) always indexes within the 16 hex digits"
)]
fn json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut unicode = *b"\\u0000";
    out.push(b'"');
    // Tokens, times and scopes need no escape: one pass without branches (so it vectorizes)
    // says so, and the string is copied whole.
    let clean = s.bytes().fold(true, |clean, b| {
        clean & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if clean {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                unicode[4] = HEX[usize::from(b >> 4)];
                unicode[5] = HEX[usize::from(b & 0xf)];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(s.as_bytes().get(plain..i).unwrap_or_default());
        out.extend_from_slice(escaped);
        plain = i + 1;
    }
    out.extend_from_slice(s.as_bytes().get(plain..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn json_strings_round_trip_through_a_json_parser() {
        for s in [
            "",
            "ya29.a0AfB_byC-x_y",
            "say \"hi\"",
            "back\\slash",
            "tab\tnew\nline\rret",
            "\u{0}\u{1}\u{1f} \u{7f}",
            "caf\u{e9} \u{1f600} \u{2028}",
            "</script>",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s, "{}", String::from_utf8_lossy(&out));
        }
        let mut out = Vec::new();
        json_string(&mut out, "\u{1}\"");
        assert_eq!(out, br#""\u0001\"""#);
    }

    #[test]
    fn the_token_answer_is_the_json_the_contract_gives() {
        let scopes = Scopes::from_iter(["openid", "https://www.googleapis.com/auth/drive.appdata"]);
        let out = token_json("ya29.tok\"en", "2026-12-03T17:00:00Z", &scopes);
        let v: Value = serde_json::from_slice(&out).unwrap();
        // Exactly the fields the OpenAPI document's `AccessToken` describes.
        let _: AccessTokenJson = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({
                "access_token": "ya29.tok\"en",
                "expires_at": "2026-12-03T17:00:00Z",
                "scopes": ["https://www.googleapis.com/auth/drive.appdata", "openid"],
            })
        );
        let none: Value =
            serde_json::from_slice(&token_json("t", "x", &Scopes::from_iter::<[&str; 0]>([])))
                .unwrap();
        assert_eq!(
            none,
            json!({"access_token": "t", "expires_at": "x", "scopes": []})
        );
    }
}

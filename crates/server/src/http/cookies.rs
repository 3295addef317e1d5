//! Cookies: the session cookie of browsers and apps (`gk_session`, its value the secret of an
//! [`ops::sessions`](crate::ops::sessions) session), and the reading and writing shared with
//! the console's own cookie.

use crate::app::App;
use crate::ops::NewSession;
use axum::http::HeaderMap;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use grantkeeper_core::{ExposeSecret, SecretString};

pub const COOKIE_NAME: &str = "gk_session";

/// The value of the request's cookie `name`, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    CookieJar::from_headers(headers)
        .get(name)
        .map(|c| c.value().to_owned())
}

/// A `Set-Cookie` value: HttpOnly, on `path`, with `same_site`, for `max_age` seconds (0 removes
/// the cookie), and Secure unless the server runs without TLS (`dev`).
pub(crate) fn set_cookie(
    name: &'static str,
    value: &str,
    path: &'static str,
    same_site: SameSite,
    max_age: u64,
    secure: bool,
) -> String {
    Cookie::build((name, value.to_owned()))
        .path(path)
        .http_only(true)
        .same_site(same_site)
        .max_age(time::Duration::seconds(
            i64::try_from(max_age).unwrap_or(i64::MAX),
        ))
        .secure(secure)
        .build()
        .to_string()
}

/// The session secret named by the request's cookie, if any.
pub fn session_secret(headers: &HeaderMap) -> Option<SecretString> {
    cookie(headers, COOKIE_NAME).map(SecretString::from)
}

/// The `Set-Cookie` value that hands a new session to the client.
pub(crate) fn session_cookie(app: &App, session: &NewSession) -> String {
    session_cookie_value(app, session.secret.expose_secret(), session.ttl.as_secs())
}

/// A `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_session_cookie(app: &App) -> String {
    session_cookie_value(app, "", 0)
}

fn session_cookie_value(app: &App, value: &str, max_age: u64) -> String {
    set_cookie(
        COOKIE_NAME,
        value,
        "/",
        SameSite::Lax,
        max_age,
        app.settings().secure_cookies,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::http::header::COOKIE;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; gk_session=abc ; b=2"),
        );
        assert_eq!(session_secret(&h).unwrap().expose_secret(), "abc");
        let mut none = HeaderMap::new();
        none.append(COOKIE, HeaderValue::from_static("gk_sessionx=1"));
        assert!(session_secret(&none).is_none());
    }

    #[test]
    fn set_cookie_values_carry_their_attributes() {
        let dev = set_cookie(COOKIE_NAME, "abc", "/", SameSite::Lax, 60, false);
        let parsed = Cookie::parse(dev.clone()).unwrap();
        assert_eq!((parsed.name(), parsed.value()), (COOKIE_NAME, "abc"));
        assert_eq!(parsed.path(), Some("/"));
        assert_eq!(parsed.http_only(), Some(true));
        assert_eq!(parsed.same_site(), Some(SameSite::Lax));
        assert_eq!(parsed.max_age(), Some(time::Duration::seconds(60)));
        assert!(!dev.contains("Secure"), "{dev}");
        let served = set_cookie("gk_admin", "", "/admin", SameSite::Strict, 0, true);
        for attribute in [
            "gk_admin=;",
            "Path=/admin",
            "SameSite=Strict",
            "Max-Age=0",
            "Secure",
        ] {
            assert!(served.contains(attribute), "{served}");
        }
    }
}

//! ID-token claim rules (reference §4.4), checked against the injected clock once the token's
//! framing and signature have been read by [`crate::jws`].

use crate::error::IdTokenError;
use grantkeeper_core::UserProfile;
use serde::{Deserialize, Serialize};

/// The claims of a verified ID token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub picture: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub locale: Option<String>,
    pub hd: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

impl IdTokenClaims {
    /// The user as grantkeeper stores them; `sub` is the key.
    pub fn profile(&self) -> UserProfile {
        UserProfile {
            sub: self.sub.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            name: self.name.clone(),
            picture: self.picture.clone(),
            given_name: self.given_name.clone(),
            family_name: self.family_name.clone(),
            locale: self.locale.clone(),
            hd: self.hd.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn value(&self) -> bool {
        match self {
            Flag::Bool(b) => *b,
            Flag::Text(t) => t.eq_ignore_ascii_case("true"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum NumericDate {
    Int(i64),
    Float(f64),
}

impl NumericDate {
    fn value(&self) -> Option<i64> {
        match self {
            NumericDate::Int(i) => Some(*i),
            #[allow(clippy::cast_possible_truncation)] // JWT dates are whole seconds in practice
            NumericDate::Float(f) if f.is_finite() => Some(f.trunc() as i64),
            NumericDate::Float(_) => None,
        }
    }
}

/// The payload as signed, before any rule is applied.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Option<Audience>,
    pub azp: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<Flag>,
    pub name: Option<String>,
    pub picture: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub locale: Option<String>,
    pub hd: Option<String>,
    pub iat: Option<NumericDate>,
    pub exp: Option<NumericDate>,
}

/// What a token must satisfy, drawn from the settings and the discovery document.
pub(crate) struct ClaimRules<'a> {
    /// The issuer with its scheme, no trailing slash.
    pub issuer: &'a str,
    /// The issuer without its scheme, accepted when Google's quirks are on.
    pub bare_issuer: Option<&'a str>,
    pub client_id: &'a str,
    pub authorized_parties: &'a [String],
    pub leeway_secs: i64,
    pub max_lifetime_secs: i64,
}

impl ClaimRules<'_> {
    fn issuer_ok(&self, iss: &str) -> bool {
        let iss = crate::discovery::trim_slash(iss);
        iss == self.issuer || self.bare_issuer.is_some_and(|bare| iss == bare)
    }

    fn party_ok(&self, azp: &str) -> bool {
        azp == self.client_id || self.authorized_parties.iter().any(|p| p == azp)
    }
}

/// Applies the rules of reference §4.4 to a payload whose signature has been verified.
pub(crate) fn check_claims(
    raw: RawClaims,
    rules: &ClaimRules<'_>,
    now: i64,
) -> Result<IdTokenClaims, IdTokenError> {
    let iss = raw.iss.ok_or(IdTokenError::WrongIssuer)?;
    if !rules.issuer_ok(&iss) {
        return Err(IdTokenError::WrongIssuer);
    }

    // A single audience, ours. An array is tolerated only as a one-element spelling of that:
    // any other audience in it is a party we do not trust to hold our user's token.
    let aud = match raw.aud {
        Some(Audience::One(aud)) => aud,
        Some(Audience::Many(mut many)) if many.len() == 1 => many.remove(0),
        _ => return Err(IdTokenError::WrongAudience),
    };
    if aud != rules.client_id {
        return Err(IdTokenError::WrongAudience);
    }

    match raw.azp.as_deref() {
        Some(azp) if !rules.party_ok(azp) => return Err(IdTokenError::UnauthorizedParty),
        // Without azp the presenter is the audience, which must then be us.
        None if aud != rules.client_id => return Err(IdTokenError::UnauthorizedParty),
        _ => {}
    }

    let sub = raw.sub.filter(|s| !s.is_empty());
    let Some(sub) = sub else {
        return Err(IdTokenError::MissingSubject);
    };

    let exp = raw
        .exp
        .as_ref()
        .and_then(NumericDate::value)
        .ok_or(IdTokenError::Malformed)?;
    let iat = raw
        .iat
        .as_ref()
        .and_then(NumericDate::value)
        .ok_or(IdTokenError::Malformed)?;
    if exp <= now.saturating_sub(rules.leeway_secs) {
        return Err(IdTokenError::Expired);
    }
    if iat > now.saturating_add(rules.leeway_secs) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if exp < iat {
        return Err(IdTokenError::Malformed);
    }
    if exp.saturating_sub(iat) > rules.max_lifetime_secs {
        return Err(IdTokenError::LifetimeTooLong);
    }

    Ok(IdTokenClaims {
        iss,
        sub,
        aud,
        azp: raw.azp,
        email: raw.email,
        email_verified: raw.email_verified.as_ref().is_some_and(Flag::value),
        name: raw.name,
        picture: raw.picture,
        given_name: raw.given_name,
        family_name: raw.family_name,
        locale: raw.locale,
        hd: raw.hd,
        iat,
        exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_750_000_000;
    const WEB: &str = "web.apps.googleusercontent.com";
    const ANDROID: &str = "android.apps.googleusercontent.com";

    fn parties() -> Vec<String> {
        vec![ANDROID.to_owned()]
    }

    fn rules<'a>(parties: &'a [String], quirks: bool) -> ClaimRules<'a> {
        ClaimRules {
            issuer: "https://accounts.google.com",
            bare_issuer: quirks.then_some("accounts.google.com"),
            client_id: WEB,
            authorized_parties: parties,
            leeway_secs: 60,
            max_lifetime_secs: 86_400,
        }
    }

    fn payload() -> serde_json::Value {
        json!({
            "iss": "https://accounts.google.com",
            "azp": WEB,
            "aud": WEB,
            "sub": "110169484474386276334",
            "email": "ada@example.com",
            "email_verified": true,
            "name": "Ada Lovelace",
            "iat": NOW - 10,
            "exp": NOW + 3590,
        })
    }

    fn check(payload: serde_json::Value, quirks: bool) -> Result<IdTokenClaims, IdTokenError> {
        let parties = parties();
        let raw: RawClaims = serde_json::from_value(payload).unwrap();
        check_claims(raw, &rules(&parties, quirks), NOW)
    }

    fn with(mut p: serde_json::Value, key: &str, value: serde_json::Value) -> serde_json::Value {
        p[key] = value;
        p
    }

    fn without(mut p: serde_json::Value, key: &str) -> serde_json::Value {
        p.as_object_mut().unwrap().remove(key);
        p
    }

    #[test]
    fn a_web_token_passes_and_becomes_a_profile() {
        let c = check(payload(), false).unwrap();
        assert_eq!(c.sub, "110169484474386276334");
        assert_eq!(c.aud, WEB);
        let p = c.profile();
        assert_eq!(p.sub, c.sub);
        assert_eq!(p.email.as_deref(), Some("ada@example.com"));
        assert!(p.email_verified);
        assert_eq!(p.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(p.hd, None);
    }

    #[test]
    fn issuer_spellings() {
        let bare = with(payload(), "iss", json!("accounts.google.com"));
        assert!(check(bare.clone(), true).is_ok());
        assert_eq!(check(bare, false), Err(IdTokenError::WrongIssuer));
        let slash = with(payload(), "iss", json!("https://accounts.google.com/"));
        assert!(check(slash, false).is_ok());
        let other = with(payload(), "iss", json!("https://evil.example.com"));
        assert_eq!(check(other, true), Err(IdTokenError::WrongIssuer));
        assert_eq!(
            check(without(payload(), "iss"), true),
            Err(IdTokenError::WrongIssuer)
        );
    }

    #[test]
    fn audience_rules() {
        assert!(check(with(payload(), "aud", json!([WEB])), false).is_ok());
        for aud in [
            json!("other"),
            json!([WEB, "other"]),
            json!([]),
            json!(["other"]),
        ] {
            assert_eq!(
                check(with(payload(), "aud", aud.clone()), false),
                Err(IdTokenError::WrongAudience),
                "{aud}"
            );
        }
        assert_eq!(
            check(without(payload(), "aud"), false),
            Err(IdTokenError::WrongAudience)
        );
    }

    #[test]
    fn authorized_parties() {
        assert!(check(with(payload(), "azp", json!(ANDROID)), false).is_ok());
        assert!(check(without(payload(), "azp"), false).is_ok());
        assert_eq!(
            check(with(payload(), "azp", json!("ios.unknown")), false),
            Err(IdTokenError::UnauthorizedParty)
        );
    }

    #[test]
    fn time_rules_with_leeway() {
        let at = |iat: i64, exp: i64| with(with(payload(), "iat", json!(iat)), "exp", json!(exp));
        assert!(
            check(at(NOW - 3600, NOW - 30), false).is_ok(),
            "inside the leeway"
        );
        assert_eq!(
            check(at(NOW - 3600, NOW - 60), false),
            Err(IdTokenError::Expired)
        );
        assert!(
            check(at(NOW + 60, NOW + 3660), false).is_ok(),
            "inside the leeway"
        );
        assert_eq!(
            check(at(NOW + 61, NOW + 3661), false),
            Err(IdTokenError::IssuedInFuture)
        );
        assert!(check(at(NOW - 10, NOW - 10 + 86_400), false).is_ok());
        assert_eq!(
            check(at(NOW - 10, NOW - 9 + 86_400), false),
            Err(IdTokenError::LifetimeTooLong)
        );
        assert_eq!(
            check(at(NOW, NOW - 1 + 30), false).map(|c| c.exp),
            Ok(NOW + 29)
        );
        assert_eq!(
            check(at(NOW + 30, NOW + 20), false),
            Err(IdTokenError::Malformed)
        );
        assert_eq!(
            check(without(payload(), "exp"), false),
            Err(IdTokenError::Malformed)
        );
        assert_eq!(
            check(without(payload(), "iat"), false),
            Err(IdTokenError::Malformed)
        );
        assert!(check(at(NOW, NOW + 3600), false).is_ok());
        let float = with(payload(), "exp", json!((NOW + 100) as f64 + 0.5));
        assert_eq!(check(float, false).map(|c| c.exp), Ok(NOW + 100));
    }

    #[test]
    fn subject_required() {
        assert_eq!(
            check(without(payload(), "sub"), false),
            Err(IdTokenError::MissingSubject)
        );
        assert_eq!(
            check(with(payload(), "sub", json!("")), false),
            Err(IdTokenError::MissingSubject)
        );
    }

    #[test]
    fn email_verified_as_bool_or_text() {
        for (value, want) in [
            (json!(true), true),
            (json!("true"), true),
            (json!(false), false),
            (json!("false"), false),
            (json!("yes"), false),
        ] {
            let c = check(with(payload(), "email_verified", value.clone()), false).unwrap();
            assert_eq!(c.email_verified, want, "{value}");
        }
        assert!(
            !check(without(payload(), "email_verified"), false)
                .unwrap()
                .email_verified
        );
    }
}

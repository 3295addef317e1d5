//! OAuth scope sets. Google answers the short identity scopes in their long form
//! (`email` -> `https://www.googleapis.com/auth/userinfo.email`), so every set is normalised
//! before it is compared or stored.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;

pub const OPENID: &str = "openid";
pub const EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";
pub const PROFILE: &str = "https://www.googleapis.com/auth/userinfo.profile";
pub const DRIVE_APPDATA: &str = "https://www.googleapis.com/auth/drive.appdata";

/// Maps one scope to its canonical spelling.
pub fn normalise(scope: &str) -> &str {
    match scope {
        "email" => EMAIL,
        "profile" => PROFILE,
        other => other,
    }
}

/// A normalised, ordered set of scopes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parses a space-delimited scope string (the `scope` field of a token response).
    pub fn parse(s: &str) -> Self {
        Self::from_iter(s.split_ascii_whitespace())
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(normalise(scope))
    }

    /// True when every scope of `other` is in `self`.
    pub fn contains_all(&self, other: &Scopes) -> bool {
        other.0.is_subset(&self.0)
    }

    /// The scopes of `wanted` that `self` lacks.
    pub fn missing(&self, wanted: &Scopes) -> Scopes {
        Scopes(wanted.0.difference(&self.0).cloned().collect())
    }

    pub fn union(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.union(&other.0).cloned().collect())
    }

    /// True when an identity scope was granted, so the token endpoint returns an ID token.
    pub fn has_identity(&self) -> bool {
        self.contains(OPENID) || self.contains(EMAIL) || self.contains(PROFILE)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Scopes {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Scopes(
            iter.into_iter()
                .map(|s| normalise(s.as_ref().trim()).to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }
}

/// Space-delimited, as OAuth writes scopes on the wire.
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

/// JSON form: an array of strings.
impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(deserializer)?;
        Ok(Scopes::from_iter(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_scopes_are_normalised() {
        let s =
            Scopes::parse("email profile openid https://www.googleapis.com/auth/userinfo.email");
        assert_eq!(s.len(), 3);
        assert!(s.contains("email"));
        assert!(s.contains(EMAIL));
        assert!(s.has_identity());
        assert_eq!(s.to_string(), format!("{EMAIL} {PROFILE} openid"));
    }

    #[test]
    fn missing_and_union() {
        let held = Scopes::parse("openid email");
        let wanted = Scopes::parse("email https://www.googleapis.com/auth/drive.appdata");
        assert!(!held.contains_all(&wanted));
        assert_eq!(
            held.missing(&wanted).to_vec(),
            vec![DRIVE_APPDATA.to_owned()]
        );
        assert!(held.union(&wanted).contains_all(&wanted));
        assert!(!Scopes::parse(DRIVE_APPDATA).has_identity());
    }
}

//! Grant states and the user profile taken from a verified ID token.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a user's offline grant stands (design.md, "Grant states").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// A refresh token is held and the last refresh went well.
    Active,
    /// Transient upstream errors; still usable, retried with backoff.
    Failing,
    /// No refresh token is held: the client must sign in again with consent.
    NeedsConsent,
    /// invalid_grant, a RISC revocation, or disconnect.
    Revoked,
}

impl GrantState {
    pub const ALL: [GrantState; 4] = [
        GrantState::Active,
        GrantState::Failing,
        GrantState::NeedsConsent,
        GrantState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Failing => "failing",
            GrantState::NeedsConsent => "needs_consent",
            GrantState::Revoked => "revoked",
        }
    }

    /// True when the grant can still mint access tokens.
    pub fn is_usable(self) -> bool {
        matches!(self, GrantState::Active | GrantState::Failing)
    }
}

impl fmt::Display for GrantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown grant state {0:?}")]
pub struct UnknownGrantState(pub String);

impl FromStr for GrantState {
    type Err = UnknownGrantState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GrantState::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| UnknownGrantState(s.to_owned()))
    }
}

/// A user as the ID token describes them. `sub` is the only key; everything else may change
/// or be absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub picture: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub locale: Option<String>,
    /// Hosted domain, present for Workspace accounts only.
    pub hd: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_states_round_trip() {
        for g in GrantState::ALL {
            assert_eq!(g.as_str().parse::<GrantState>().unwrap(), g);
            assert_eq!(serde_json_like(g), g.as_str());
        }
        assert!("deleted".parse::<GrantState>().is_err());
        assert!(GrantState::Failing.is_usable());
        assert!(!GrantState::NeedsConsent.is_usable());
    }

    fn serde_json_like(g: GrantState) -> String {
        g.to_string()
    }
}

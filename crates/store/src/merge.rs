//! The sign-in merge rules of [`UserStore::record_sign_in`](crate::UserStore::record_sign_in)
//! as one pure function: every backend reads the held grant under its own lock, asks this
//! module what to write, and writes it. The rules live here once, not once per database.

use crate::{GrantRecord, SignIn};
use grantkeeper_core::{GrantState, Scopes};

/// Why a grant became `active` at sign-in.
pub(crate) const REASON_REFRESH_TOKEN: &str = "refresh token received at sign-in";
/// Why a new grant starts in `needs_consent`.
pub(crate) const REASON_NO_REFRESH_TOKEN: &str = "signed in without a refresh token";

/// A change of state that the backend records as a grant event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StateChange {
    pub from: Option<GrantState>,
    pub to: GrantState,
    pub reason: &'static str,
}

/// The grant row to write, and the event to append with it.
#[derive(Debug)]
pub(crate) struct Merged {
    pub grant: GrantRecord,
    pub change: Option<StateChange>,
}

/// Applies `sign_in` to the `held` grant (none for a user's first sign-in).
pub(crate) fn merge_sign_in(held: Option<GrantRecord>, sign_in: &SignIn) -> Merged {
    let at = sign_in.at;
    let before = held.as_ref().map(|g| g.state);
    let was_usable = before.is_some_and(GrantState::is_usable);
    let mut grant = held.unwrap_or_else(|| GrantRecord {
        sub: sign_in.profile.sub.clone(),
        state: GrantState::NeedsConsent,
        scopes: Scopes::default(),
        refresh_token: None,
        refresh_token_received_at: None,
        access_token: None,
        reason: None,
        state_changed_at: at,
        updated_at: at,
        last_refresh_at: None,
        last_error: None,
        version: 0,
    });

    let (state, reason) = match &sign_in.refresh_token {
        Some(token) => {
            grant.refresh_token = Some(token.clone());
            grant.refresh_token_received_at = Some(at);
            // The error belonged to the token just replaced.
            grant.last_error = None;
            (GrantState::Active, REASON_REFRESH_TOKEN)
        }
        // Never erase the held token: Google sends one only on consent.
        None => (
            before.unwrap_or(GrantState::NeedsConsent),
            REASON_NO_REFRESH_TOKEN,
        ),
    };

    // A usable grant keeps what it covered (incremental authorization); a dead one covers
    // only what was just granted.
    grant.scopes = if was_usable {
        grant.scopes.union(&sign_in.granted_scopes)
    } else {
        sign_in.granted_scopes.clone()
    };
    if let Some(access) = &sign_in.access_token {
        grant.access_token = Some(access.clone());
    }
    grant.updated_at = at;
    grant.version += 1;

    let change = (before != Some(state)).then(|| {
        grant.state = state;
        grant.reason = Some(reason.to_owned());
        grant.state_changed_at = at;
        StateChange {
            from: before,
            to: state,
            reason,
        }
    });
    Merged { grant, change }
}

//! The rules that decide what a write becomes, as pure functions: the sign-in merge of
//! [`UserStore::record_sign_in`](crate::UserStore::record_sign_in), and the refresh and state
//! rules of [`GrantStore`](crate::GrantStore). Every backend reads what is
//! held under its own lock, checks the fence, asks this module what to write, and writes it.
//! The rules live here once, not once per database.

use crate::{GrantRecord, RefreshSuccess, SignIn, StateUpdate, StoreError};
use grantkeeper_core::{GrantState, Scopes};
use time::OffsetDateTime;

/// Why a grant became `active` at sign-in.
pub(crate) const REASON_REFRESH_TOKEN: &str = "refresh token received at sign-in";
/// Why a new grant starts in `needs_consent`.
pub(crate) const REASON_NO_REFRESH_TOKEN: &str = "signed in without a refresh token";
/// Why a `failing` grant became `active` again.
pub(crate) const REASON_REFRESHED: &str = "refresh succeeded";

/// A change of state that the backend records as a grant event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StateChange {
    pub from: Option<GrantState>,
    pub to: GrantState,
    pub reason: String,
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
            reason: reason.to_owned(),
        }
    });
    Merged { grant, change }
}

/// The fence of every grant write but sign-in's: the caller read `expected` and may write only
/// over that version.
pub(crate) fn check_fence(held: &GrantRecord, expected: Option<i64>) -> Result<(), StoreError> {
    match expected {
        Some(version) if version != held.version => Err(StoreError::Conflict),
        _ => Ok(()),
    }
}

/// Applies a successful refresh to the `held` grant (already fenced).
///
/// A `failing` grant becomes `active`. A `revoked` or `needs_consent` grant keeps its state:
/// only a sign-in with consent revives a grant (the broker does not refresh those, so this
/// meets only a refresh that raced an operator's unfenced change).
pub(crate) fn merge_refresh(held: GrantRecord, refresh: &RefreshSuccess) -> Merged {
    let at = refresh.at;
    let mut grant = held;
    grant.access_token = Some(refresh.access_token.clone());
    if let Some(token) = &refresh.refresh_token {
        grant.refresh_token = Some(token.clone());
        grant.refresh_token_received_at = Some(at);
    }
    // The response names what the grant covers now; an empty `scope` says nothing.
    if let Some(scopes) = refresh.scopes.as_ref().filter(|s| !s.is_empty()) {
        grant.scopes = scopes.clone();
    }
    // The error belonged to the attempts this refresh ends.
    grant.last_error = None;
    grant.last_refresh_at = Some(at);
    grant.updated_at = at;
    grant.version += 1;
    let change = (grant.state == GrantState::Failing)
        .then(|| change_state(&mut grant, GrantState::Active, REASON_REFRESHED, at));
    Merged { grant, change }
}

/// Applies a state change decided outside the store to the `held` grant (already fenced).
///
/// The state written is the one asked for, except where it would break what the states mean
/// (design.md, "Grant states"):
/// - `failing` degrades a usable grant; it does not revive a `revoked` or `needs_consent`
///   one, which keeps its state (a transient error says nothing about consent);
/// - `active` or `failing` without a held refresh token (none held, or `drop_tokens`) is
///   `needs_consent`: a usable grant holds a token by definition.
///
/// `reason` becomes the grant's reason only when the state changes; `error`, when given,
/// replaces `last_error`.
pub(crate) fn merge_state_update(held: GrantRecord, update: &StateUpdate) -> Merged {
    let at = update.at;
    let mut grant = held;
    if update.drop_tokens {
        grant.refresh_token = None;
        grant.refresh_token_received_at = None;
        grant.access_token = None;
    }
    if let Some(error) = &update.error {
        grant.last_error = Some(error.clone());
    }
    grant.updated_at = at;
    grant.version += 1;
    let state = settle(grant.state, update.state, grant.refresh_token.is_some());
    let change =
        (state != grant.state).then(|| change_state(&mut grant, state, &update.reason, at));
    Merged { grant, change }
}

/// The state a grant in `held` takes when `wanted` is asked for (see [`merge_state_update`]).
fn settle(held: GrantState, wanted: GrantState, holds_token: bool) -> GrantState {
    match wanted {
        GrantState::Failing if !held.is_usable() => held,
        GrantState::Active | GrantState::Failing if !holds_token => GrantState::NeedsConsent,
        wanted => wanted,
    }
}

fn change_state(
    grant: &mut GrantRecord,
    to: GrantState,
    reason: &str,
    at: OffsetDateTime,
) -> StateChange {
    let from = grant.state;
    grant.state = to;
    grant.reason = Some(reason.to_owned());
    grant.state_changed_at = at;
    StateChange {
        from: Some(from),
        to,
        reason: reason.to_owned(),
    }
}

//! Users, grants and the grant history. A sign-in is one call of `grantkeeper_sign_in`
//! (migration 14), or of `grantkeeper_sign_in_unless_blocked` (migration 28): one round trip.

use super::statements::{SIGN_IN, SIGN_IN_UNLESS_BLOCKED};
use super::{PostgresStore, retrying};
use crate::rows::{self, Columns};
use crate::sql::{Arg, profile_args};
use crate::{GrantEvent, Result, SignIn, SignInBlock, SignInOutcome, SignInRecorded, StoreError};
use time::OffsetDateTime;

impl PostgresStore {
    /// A sign-in in one function call: one round trip.
    pub(super) async fn sign_in_call(
        &self,
        sign_in: &SignIn,
        unless_blocked: bool,
    ) -> Result<SignInRecorded> {
        let args = sign_in_args(sign_in);
        let sql = if unless_blocked {
            SIGN_IN_UNLESS_BLOCKED
        } else {
            SIGN_IN
        };
        let found = retrying(|| async {
            Ok(super::bound(&sql.into(), &args)
                .fetch_all(&self.pool)
                .await?)
        })
        .await?;
        let row = found
            .first()
            .ok_or_else(|| StoreError::Corrupt("a sign-in answered no row".into()))?;
        if unless_blocked && let Some(reason) = row.opt_text("blocked_reason")? {
            let blocked_at = row.int("blocked_at")?;
            return Ok(SignInRecorded::Blocked(SignInBlock {
                sub: sign_in.profile.sub.clone(),
                reason,
                blocked_at: OffsetDateTime::from_unix_timestamp(blocked_at).map_err(|_| {
                    StoreError::Corrupt("sign_in_blocks.blocked_at is out of range".into())
                })?,
            }));
        }
        outcome(row, sign_in.at).map(SignInRecorded::Recorded)
    }
}

/// `grantkeeper_sign_in`'s arguments: the profile, the granted scopes, the tokens, the session.
fn sign_in_args(sign_in: &SignIn) -> Vec<Arg> {
    let rt = sign_in.refresh_token.as_ref();
    let access = sign_in.access_token.as_ref();
    let session = sign_in.session.as_ref();
    let mut args = profile_args(sign_in);
    args.extend(args![
        sign_in.granted_scopes.to_string(),
        rt.map(|t| t.sealed.as_slice()),
        rt.map(|t| t.fingerprint.hash.as_str()),
        rt.map(|t| t.fingerprint.prefix_hash.as_str()),
        access.map(|t| t.sealed.as_slice()),
        access.map(|t| t.expires_at),
        session.map(|s| s.id_hash.as_str()),
        session.map(|s| s.created_at),
        session.map(|s| s.expires_at)
    ]);
    args
}

/// The function's row: the user and grant as written, whether the user is new, and the event.
fn outcome(row: &dyn Columns, at: OffsetDateTime) -> Result<SignInOutcome> {
    let (user, grant) = rows::user_with_grant(row)?;
    let event = match row.opt_int("event_id")? {
        None => None,
        Some(id) => Some(GrantEvent {
            id,
            sub: user.profile.sub.clone(),
            from: row
                .opt_text("event_from")?
                .map(|s| rows::parse_state(&s, "event_from"))
                .transpose()?,
            to: rows::parse_state(&row.text("event_to")?, "event_to")?,
            reason: row.text("event_reason")?,
            at,
        }),
    };
    Ok(SignInOutcome {
        user,
        grant,
        created: row.flag("created")?,
        event,
    })
}

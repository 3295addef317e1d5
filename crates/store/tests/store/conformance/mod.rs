//! What every backend of the store must do, written against the traits only.
//!
//! Each check is a `pub async fn` taking the store (and, for a few, a second handle on the same
//! database, or a second, independent database). A backend runs the whole list with
//! [`conformance_suite!`], giving functions that make a fresh, isolated database.

pub mod activity;
pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod grants;
pub mod jobs;
pub mod keys;
pub mod leases;
pub mod outbox;
pub mod revocations;
pub mod risc;
pub mod rotation;
pub mod sessions;
pub mod transfer;
pub mod users;

use grantkeeper_core::{GrantState, Scopes, UserProfile};
use grantkeeper_store::{
    GrantRecord, SealedAccessToken, SealedRefreshToken, SharedStore, SignIn, StateUpdate,
    TokenFingerprint,
};
use std::any::Any;
use time::OffsetDateTime;
use time::macros::datetime;

/// A fresh database for one check.
pub struct Fixture {
    pub store: SharedStore,
    /// Keeps the database alive for the check (a temp dir, say).
    pub _keep: Box<dyn Any + Send>,
}

/// Expands to one `#[tokio::test]` per check. `fresh` makes a [`Fixture`]; `pair` makes a
/// fixture and a second, independently opened store on the same database. Both answer None
/// when the backend's server is not there to test against (the runner has said so): the
/// check then returns without running. Checks of the `@twin` list get two fresh databases.
macro_rules! conformance_suite {
    (fresh: $fresh:path, pair: $pair:path) => {
        conformance_suite!(@store $fresh;
            users::sign_in_creates_user_and_grant,
            users::sign_in_without_refresh_token_needs_consent,
            users::sign_in_without_refresh_token_keeps_the_held_one,
            users::new_refresh_token_replaces_the_held_one,
            users::scopes_unite_while_usable,
            users::needs_consent_takes_the_granted_scopes,
            users::access_token_replaced_only_when_given,
            users::events_only_on_state_change,
            users::version_increments_on_every_sign_in,
            users::profile_is_replaced,
            users::unknown_user_is_none,
            users::concurrent_sign_ins_keep_the_refresh_token,
            users::revoked_stays_revoked_without_refresh_token,
            users::failing_grant_stays_usable,
            users::ping_answers,
            jobs::a_job_holds_the_users_whose_grant_holds_its_scopes,
            jobs::an_item_goes_to_one_claim_and_again_when_its_lease_ends,
            jobs::a_report_settles_only_what_its_lease_holds,
            jobs::retries_end_in_failure_on_the_last_attempt,
            jobs::a_lease_that_runs_out_on_the_last_attempt_fails,
            jobs::a_lease_is_renewed_by_its_holder_only,
            jobs::a_cancelled_job_offers_nothing,
            jobs::a_keyed_job_is_joined_while_it_runs,
            jobs::idle_grants_spread_over_time,
            jobs::refresh_slots_are_taken_in_order_within_the_horizon,
            jobs::concurrent_claims_never_share_an_item,
            jobs::concurrent_slot_takers_share_the_rate,
            grants::grant_is_the_users_grant,
            grants::refresh_is_recorded,
            grants::refresh_replaces_refresh_token_and_scopes_when_given,
            grants::refresh_is_fenced,
            grants::refresh_revives_a_failing_grant,
            grants::refresh_does_not_revive_a_revoked_grant,
            grants::concurrent_refreshes_one_wins,
            grants::state_update_to_failing,
            grants::state_update_to_revoked_keeps_tokens,
            grants::state_update_to_revoked_drops_tokens,
            grants::state_update_is_fenced,
            grants::state_update_events_only_on_change,
            grants::state_update_guards,
            grants::unknown_user_is_not_found,
            grants::list_users_pages_by_sub,
            grants::list_users_limits,
            grants::delete_user_cascades_but_keeps_audit,
            sessions::session_lifecycle,
            sessions::session_expiry_is_exclusive,
            sessions::session_for_unknown_user_is_not_found,
            sessions::duplicate_session_already_exists,
            sessions::delete_user_sessions,
            sessions::purge_expired_sessions,
            sessions::sign_in_keeps_the_newest_sessions_of_the_user,
            sessions::created_sessions_are_bounded_too,
            sessions::expired_sessions_go_when_a_session_is_written,
            sessions::sessions_of_one_second_are_told_apart_by_hash,
            sessions::expired_sessions_do_not_count_against_the_bound,
            keys::ensure_data_key_inserts_once,
            keys::concurrent_ensure_data_key_has_one_winner,
            rotation::sealed_values_are_counted_by_key_id,
            rotation::a_new_key_becomes_active_only_over_the_key_seen_active,
            rotation::concurrent_rotations_have_one_winner,
            rotation::values_outside_a_key_are_paged_by_row,
            rotation::a_reseal_skips_a_value_replaced_since_it_was_read,
            rotation::a_key_is_retired_only_when_it_seals_nothing,
            rotation::a_rewrap_is_fenced_by_the_wrapping_read,
            rotation::a_value_under_a_key_that_is_not_active_is_refused,
            api_keys::api_key_lifecycle,
            api_keys::duplicate_api_key_already_exists,
            api_keys::api_keys_list_oldest_first,
            audit::audit_batch_is_appended_in_order,
            audit::audit_filters_combine,
            audit::audit_limits,
            outbox::events_are_due_at_once_oldest_first,
            outbox::failed_events_wait_for_their_next_attempt,
            outbox::delivered_events_are_done,
            outbox::outbox_unknown_event_is_not_found,
            leases::refresh_lease_is_exclusive_until_it_ends,
            leases::refresh_lease_is_free_once_released,
            leases::refresh_recorded_with_its_lease_given_back,
            leases::refresh_lease_taken_with_the_grant_read_under_it,
            leases::refresh_lease_of_unknown_user_is_not_found,
            leases::refresh_lease_race_one_wins,
            transfer::export_rows_have_one_shape,
            activity::activity_adds_sum_counts_and_max_durations,
            activity::activity_batches_merge_and_minutes_are_whole,
            activity::activity_range_is_half_open_and_ordered,
            activity::activity_is_pruned_by_age,
            activity::grants_are_counted_by_state,
            admin::admin_session_lifecycle,
            admin::admin_session_of_unknown_key_is_not_found,
            admin::duplicate_admin_session_already_exists,
            admin::purge_expired_admin_sessions,
            admin::search_users_by_email_ignoring_ascii_case,
            admin::search_users_by_sub_prefix,
            admin::search_text_has_no_wildcards,
            admin::search_users_by_state,
            admin::search_users_pages_by_sub,
            admin::search_without_conditions_lists_every_user,
            risc::security_events_are_recorded_once,
            risc::security_events_are_pruned_by_age,
            risc::concurrent_receipts_of_one_event_record_it_once,
            risc::sign_in_block_lifecycle,
            risc::sign_in_block_needs_no_user_and_outlives_one,
            risc::a_blocked_sign_in_writes_nothing,
            risc::users_are_found_by_exact_email,
            risc::users_are_found_by_refresh_token_fingerprint,
            risc::a_shared_prefix_finds_every_grant,
            risc::lookups_are_capped,
            revocations::revocations_are_due_in_order_of_their_next_attempt,
            revocations::failed_revocations_wait_and_count_their_attempts,
            revocations::revoked_entries_are_deleted_once,
            revocations::duplicate_revocation_id_already_exists,
            revocations::a_revocation_queued_with_its_state_change_commits_with_it,
            revocations::a_revocation_queued_with_its_state_change_fails_with_it,
            revocations::queued_revocations_outlive_their_user,
        );
        conformance_suite!(@pair $pair;
            users::concurrent_sign_ins_across_instances,
            keys::ensure_data_key_race_across_instances,
            rotation::concurrent_rotations_across_instances,
            grants::concurrent_refreshes_across_instances,
            leases::refresh_lease_race_across_instances,
            activity::concurrent_activity_adds_across_instances,
            risc::concurrent_receipts_across_instances,
            revocations::an_entry_revoked_by_another_instance_is_gone_for_both,
        );
        conformance_suite!(@twin $fresh;
            transfer::export_imports_into_a_fresh_store,
            transfer::imported_store_keeps_working,
            transfer::import_refuses_what_does_not_fit,
            transfer::an_export_without_the_newer_kinds_imports,
            rotation::a_retired_key_moves_with_an_export,
            rotation::an_export_without_retirements_imports,
            rotation::an_export_without_sources_imports_as_local_keys,
            rotation::an_import_keeps_values_under_keys_not_yet_retired,
        );
    };
    (@store $fresh:path; $($module:ident :: $name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(fixture) = $fresh().await else { return };
            crate::conformance::$module::$name(fixture.store.clone()).await;
            drop(fixture);
        }
    )*};
    (@twin $fresh:path; $($module:ident :: $name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(source) = $fresh().await else { return };
            let Some(target) = $fresh().await else { return };
            crate::conformance::$module::$name(source.store.clone(), target.store.clone()).await;
            drop((source, target));
        }
    )*};
    (@pair $pair:path; $($module:ident :: $name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((fixture, second)) = $pair().await else { return };
            crate::conformance::$module::$name(fixture.store.clone(), second).await;
            drop(fixture);
        }
    )*};
}

/// A fixed instant, so that every stored time is known exactly.
pub fn t(seconds: i64) -> OffsetDateTime {
    datetime!(2025-03-01 12:00 UTC) + time::Duration::seconds(seconds)
}

pub const OPENID_EMAIL: &str = "openid email";
pub const DRIVE: &str = "https://www.googleapis.com/auth/drive.appdata";

pub fn profile(sub: &str) -> UserProfile {
    UserProfile {
        sub: sub.to_owned(),
        email: Some(format!("{sub}@example.com")),
        email_verified: true,
        name: Some(format!("User {sub}")),
        picture: Some(format!("https://example.com/{sub}.png")),
        given_name: Some("User".into()),
        family_name: Some(sub.to_owned()),
        locale: Some("en".into()),
        hd: None,
    }
}

/// Sealed bytes are opaque to the store but for their header (the vault's format 1 under key
/// 1, the first key a store makes, so that they are under the active key of a store that has
/// one); these include bytes no text encoding would keep.
pub fn refresh(tag: &str) -> SealedRefreshToken {
    let mut sealed = vec![1, 0, 0, 0, 1, 0x00, 0xff, 0xfe];
    sealed.extend_from_slice(tag.as_bytes());
    SealedRefreshToken {
        sealed,
        fingerprint: TokenFingerprint {
            hash: format!("hash-of-{tag}"),
            prefix_hash: format!("prefix-of-{tag}"),
        },
    }
}

pub fn access(tag: &str, expires_at: OffsetDateTime) -> SealedAccessToken {
    let mut sealed = vec![1, 0, 0, 0, 1, 0x80];
    sealed.extend_from_slice(tag.as_bytes());
    SealedAccessToken { sealed, expires_at }
}

pub fn sign_in(
    sub: &str,
    scopes: &str,
    refresh_token: Option<SealedRefreshToken>,
    at: OffsetDateTime,
) -> SignIn {
    SignIn {
        profile: profile(sub),
        granted_scopes: Scopes::parse(scopes),
        refresh_token,
        access_token: Some(access(
            &format!("{sub}-{}", at.unix_timestamp()),
            at + time::Duration::hours(1),
        )),
        at,
        session: None,
    }
}

/// A user signed in with a refresh token at `t(0)`: an `active` grant at version 1.
pub async fn signed_in(store: &SharedStore, sub: &str) -> GrantRecord {
    store
        .record_sign_in(sign_in(sub, OPENID_EMAIL, Some(refresh(sub)), t(0)))
        .await
        .unwrap()
        .grant
}

/// A state change as the broker, RISC or an operator asks for it.
pub fn state_update(state: GrantState, reason: &str, error: Option<&str>, at: i64) -> StateUpdate {
    StateUpdate {
        state,
        reason: reason.to_owned(),
        error: error.map(str::to_owned),
        drop_tokens: false,
        at: t(at),
    }
}

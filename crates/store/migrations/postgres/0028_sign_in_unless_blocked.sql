-- A sign-in that first checks the account's sign-in block (Cross-Account Protection), in the
-- same transaction and round trip as its writes: blocked, it writes nothing and answers one row
-- whose user and grant columns are null and whose `blocked_reason` and `blocked_at` name the
-- block; else it is `grantkeeper_sign_in` (migration 14) with two null columns more.
-- `grantkeeper_sign_in` stays, for the instances of an older version still calling it.
CREATE FUNCTION grantkeeper_sign_in_unless_blocked(
    p_sub TEXT, p_email TEXT, p_email_verified BOOLEAN, p_name TEXT, p_picture TEXT,
    p_given_name TEXT, p_family_name TEXT, p_locale TEXT, p_hd TEXT, p_at BIGINT,
    p_scopes TEXT, p_refresh_token BYTEA, p_rt_hash TEXT, p_rt_prefix_hash TEXT,
    p_access_token BYTEA, p_access_token_expires_at BIGINT,
    p_session_id_hash TEXT, p_session_created_at BIGINT, p_session_expires_at BIGINT)
RETURNS TABLE (
    sub TEXT, email TEXT, email_verified BOOLEAN, name TEXT, picture TEXT, given_name TEXT,
    family_name TEXT, locale TEXT, hd TEXT, created_at BIGINT, user_updated_at BIGINT,
    last_sign_in_at BIGINT,
    grant_sub TEXT, state TEXT, scopes TEXT, refresh_token BYTEA, rt_hash TEXT,
    rt_prefix_hash TEXT, refresh_token_received_at BIGINT, access_token BYTEA,
    access_token_expires_at BIGINT, reason TEXT, state_changed_at BIGINT,
    grant_updated_at BIGINT, last_refresh_at BIGINT, last_error TEXT, version BIGINT,
    created BOOLEAN, event_id BIGINT, event_from TEXT, event_to TEXT, event_reason TEXT,
    blocked_reason TEXT, blocked_at BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_block sign_in_blocks%ROWTYPE;
BEGIN
    SELECT * INTO v_block FROM sign_in_blocks b WHERE b.sub = p_sub;
    IF FOUND THEN
        RETURN QUERY
            SELECT NULL::TEXT, NULL::TEXT, NULL::BOOLEAN, NULL::TEXT, NULL::TEXT, NULL::TEXT,
                   NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT,
                   NULL::BIGINT,
                   NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BYTEA, NULL::TEXT,
                   NULL::TEXT, NULL::BIGINT, NULL::BYTEA,
                   NULL::BIGINT, NULL::TEXT, NULL::BIGINT,
                   NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::BIGINT,
                   NULL::BOOLEAN, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT,
                   v_block.reason, v_block.blocked_at;
        RETURN;
    END IF;
    RETURN QUERY
        SELECT s.*, NULL::TEXT, NULL::BIGINT
          FROM grantkeeper_sign_in(
              p_sub, p_email, p_email_verified, p_name, p_picture, p_given_name,
              p_family_name, p_locale, p_hd, p_at, p_scopes, p_refresh_token, p_rt_hash,
              p_rt_prefix_hash, p_access_token, p_access_token_expires_at,
              p_session_id_hash, p_session_created_at, p_session_expires_at) AS s;
END;
$$;

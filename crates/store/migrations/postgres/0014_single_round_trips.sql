-- The hot paths as functions, so that each is one round trip from grantkeeper to the server:
-- a sign-in (user, grant, event, session), a refresh lease with the grant read under it, and a
-- recorded refresh with its lease given back. Each keeps the semantics of the statements it
-- replaces: the grant row is locked while its next value is decided (concurrent writers of one
-- grant queue on it, in any instance), writes are fenced by `version`, and an event (the
-- webhook's outbox) is written in the transaction of the change it describes. The merge rules
-- are those of the store's `merge` module, which SQLite runs in Rust; the conformance suite
-- holds the two to the same behaviour. Each statement of a function sees what committed
-- before it (READ COMMITTED takes a snapshot per statement), so a lease taken after another
-- holder's commit reads the grant as that holder left it.

-- The union of two normalised, space-delimited scope sets, in byte order as Rust's set keeps it.
CREATE FUNCTION grantkeeper_scope_union(a TEXT, b TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(string_agg(s, ' ' ORDER BY s COLLATE "C"), '')
      FROM (SELECT DISTINCT s FROM regexp_split_to_table(a || ' ' || b, '\s+') AS s
             WHERE s <> '') AS t
$$;

CREATE FUNCTION grantkeeper_sign_in(
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
    created BOOLEAN, event_id BIGINT, event_from TEXT, event_to TEXT, event_reason TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_created BOOLEAN;
    v_held grants%ROWTYPE;
    v_before TEXT;
    v_state TEXT;
    v_reason TEXT;
    v_event_id BIGINT;
BEGIN
    -- The user row, inserted or updated, stays locked until commit: a concurrent sign-in of
    -- the same user waits here, then merges into what this one commits.
    INSERT INTO users AS u (sub, email, email_verified, name, picture, given_name, family_name,
                            locale, hd, created_at, updated_at, last_sign_in_at)
    VALUES (p_sub, p_email, p_email_verified, p_name, p_picture, p_given_name, p_family_name,
            p_locale, p_hd, p_at, p_at, p_at)
    ON CONFLICT (sub) DO UPDATE SET
        email = excluded.email, email_verified = excluded.email_verified,
        name = excluded.name, picture = excluded.picture, given_name = excluded.given_name,
        family_name = excluded.family_name, locale = excluded.locale, hd = excluded.hd,
        updated_at = excluded.updated_at, last_sign_in_at = excluded.last_sign_in_at
    RETURNING (u.xmax = 0) INTO v_created;

    SELECT * INTO v_held FROM grants g WHERE g.sub = p_sub FOR UPDATE;
    IF p_refresh_token IS NOT NULL THEN
        v_reason := 'refresh token received at sign-in';
    ELSE
        v_reason := 'signed in without a refresh token';
    END IF;
    IF NOT FOUND THEN
        v_state := CASE WHEN p_refresh_token IS NULL THEN 'needs_consent' ELSE 'active' END;
        INSERT INTO grants (sub, state, scopes, refresh_token, rt_hash, rt_prefix_hash,
                            refresh_token_received_at, access_token, access_token_expires_at,
                            reason, state_changed_at, updated_at, last_refresh_at, last_error,
                            version)
        VALUES (p_sub, v_state, p_scopes, p_refresh_token, p_rt_hash, p_rt_prefix_hash,
                CASE WHEN p_refresh_token IS NULL THEN NULL ELSE p_at END,
                p_access_token, p_access_token_expires_at,
                v_reason, p_at, p_at, NULL, NULL, 1);
    ELSE
        v_before := v_held.state;
        -- Never erase the held token: Google sends one only on consent.
        v_state := CASE WHEN p_refresh_token IS NULL THEN v_before ELSE 'active' END;
        UPDATE grants g SET
            refresh_token = COALESCE(p_refresh_token, g.refresh_token),
            rt_hash = COALESCE(p_rt_hash, g.rt_hash),
            rt_prefix_hash = COALESCE(p_rt_prefix_hash, g.rt_prefix_hash),
            refresh_token_received_at =
                CASE WHEN p_refresh_token IS NULL THEN g.refresh_token_received_at ELSE p_at END,
            -- The error belonged to the token just replaced.
            last_error = CASE WHEN p_refresh_token IS NULL THEN g.last_error ELSE NULL END,
            -- A usable grant keeps what it covered; a dead one covers what was just granted.
            scopes = CASE WHEN v_before IN ('active', 'failing')
                          THEN grantkeeper_scope_union(g.scopes, p_scopes) ELSE p_scopes END,
            access_token = COALESCE(p_access_token, g.access_token),
            access_token_expires_at = CASE WHEN p_access_token IS NULL
                                           THEN g.access_token_expires_at
                                           ELSE p_access_token_expires_at END,
            updated_at = p_at,
            version = g.version + 1,
            state = v_state,
            reason = CASE WHEN v_state <> v_before THEN v_reason ELSE g.reason END,
            state_changed_at = CASE WHEN v_state <> v_before THEN p_at ELSE g.state_changed_at END
        WHERE g.sub = p_sub;
    END IF;
    IF v_before IS DISTINCT FROM v_state THEN
        INSERT INTO grant_events (sub, from_state, to_state, reason, at, next_attempt_at)
        VALUES (p_sub, v_before, v_state, v_reason, p_at, p_at)
        RETURNING id INTO v_event_id;
    END IF;
    IF p_session_id_hash IS NOT NULL THEN
        INSERT INTO sessions (id_hash, sub, created_at, expires_at)
        VALUES (p_session_id_hash, p_sub, p_session_created_at, p_session_expires_at);
    END IF;
    RETURN QUERY
        SELECT u.sub, u.email, u.email_verified, u.name, u.picture, u.given_name, u.family_name,
               u.locale, u.hd, u.created_at, u.updated_at, u.last_sign_in_at,
               g.sub, g.state, g.scopes, g.refresh_token, g.rt_hash, g.rt_prefix_hash,
               g.refresh_token_received_at, g.access_token, g.access_token_expires_at,
               g.reason, g.state_changed_at, g.updated_at, g.last_refresh_at, g.last_error,
               g.version,
               v_created, v_event_id,
               CASE WHEN v_event_id IS NULL THEN NULL ELSE v_before END,
               CASE WHEN v_event_id IS NULL THEN NULL ELSE v_state END,
               CASE WHEN v_event_id IS NULL THEN NULL ELSE v_reason END
          FROM users u JOIN grants g ON g.sub = u.sub
         WHERE u.sub = p_sub;
END;
$$;

-- Takes or extends the refresh lease of `p_sub` for `p_owner` (as the statement it replaces)
-- and, when the lease is held, answers the grant as it is under it; no row when another owner
-- holds an unexpired lease.
CREATE FUNCTION grantkeeper_lease_refresh(
    p_sub TEXT, p_owner TEXT, p_until BIGINT, p_now BIGINT)
RETURNS TABLE (
    sub TEXT, state TEXT, scopes TEXT, refresh_token BYTEA, rt_hash TEXT, rt_prefix_hash TEXT,
    refresh_token_received_at BIGINT, access_token BYTEA, access_token_expires_at BIGINT,
    reason TEXT, state_changed_at BIGINT, grant_updated_at BIGINT, last_refresh_at BIGINT,
    last_error TEXT, version BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_taken INTEGER;
BEGIN
    INSERT INTO refresh_leases AS l (sub, owner, lease_until) VALUES (p_sub, p_owner, p_until)
    ON CONFLICT (sub) DO UPDATE
       SET owner = excluded.owner, lease_until = excluded.lease_until
     WHERE l.lease_until <= p_now OR l.owner = excluded.owner;
    GET DIAGNOSTICS v_taken = ROW_COUNT;
    IF v_taken = 1 THEN
        RETURN QUERY
            SELECT g.sub, g.state, g.scopes, g.refresh_token, g.rt_hash, g.rt_prefix_hash,
                   g.refresh_token_received_at, g.access_token, g.access_token_expires_at,
                   g.reason, g.state_changed_at, g.updated_at, g.last_refresh_at,
                   g.last_error, g.version
              FROM grants g WHERE g.sub = p_sub;
    END IF;
END;
$$;

-- Records a successful refresh if the grant still has `p_expected_version` (outcome `ok`, with
-- the row as written), else writes nothing (`conflict`, or `not_found` without a grant). A
-- `failing` grant becomes `active`, with its event. With `p_owner`, that owner's lease is given
-- back in the same transaction.
CREATE FUNCTION grantkeeper_record_refresh(
    p_sub TEXT, p_expected_version BIGINT, p_access_token BYTEA,
    p_access_token_expires_at BIGINT, p_refresh_token BYTEA, p_rt_hash TEXT,
    p_rt_prefix_hash TEXT, p_scopes TEXT, p_at BIGINT, p_owner TEXT)
RETURNS TABLE (
    outcome TEXT,
    sub TEXT, state TEXT, scopes TEXT, refresh_token BYTEA, rt_hash TEXT, rt_prefix_hash TEXT,
    refresh_token_received_at BIGINT, access_token BYTEA, access_token_expires_at BIGINT,
    reason TEXT, state_changed_at BIGINT, grant_updated_at BIGINT, last_refresh_at BIGINT,
    last_error TEXT, version BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_held grants%ROWTYPE;
BEGIN
    SELECT * INTO v_held FROM grants g WHERE g.sub = p_sub FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'not_found'::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BYTEA,
            NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BYTEA, NULL::BIGINT, NULL::TEXT,
            NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::BIGINT;
        RETURN;
    END IF;
    IF v_held.version <> p_expected_version THEN
        RETURN QUERY SELECT 'conflict'::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BYTEA,
            NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BYTEA, NULL::BIGINT, NULL::TEXT,
            NULL::BIGINT, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::BIGINT;
        RETURN;
    END IF;
    UPDATE grants g SET
        access_token = p_access_token,
        access_token_expires_at = p_access_token_expires_at,
        refresh_token = COALESCE(p_refresh_token, g.refresh_token),
        rt_hash = COALESCE(p_rt_hash, g.rt_hash),
        rt_prefix_hash = COALESCE(p_rt_prefix_hash, g.rt_prefix_hash),
        refresh_token_received_at =
            CASE WHEN p_refresh_token IS NULL THEN g.refresh_token_received_at ELSE p_at END,
        -- The response names what the grant covers now; an empty `scope` says nothing.
        scopes = CASE WHEN p_scopes IS NULL OR p_scopes = '' THEN g.scopes ELSE p_scopes END,
        last_error = NULL,
        last_refresh_at = p_at,
        updated_at = p_at,
        version = g.version + 1,
        state = CASE WHEN g.state = 'failing' THEN 'active' ELSE g.state END,
        reason = CASE WHEN g.state = 'failing' THEN 'refresh succeeded' ELSE g.reason END,
        state_changed_at = CASE WHEN g.state = 'failing' THEN p_at ELSE g.state_changed_at END
    WHERE g.sub = p_sub;
    IF v_held.state = 'failing' THEN
        INSERT INTO grant_events (sub, from_state, to_state, reason, at, next_attempt_at)
        VALUES (p_sub, 'failing', 'active', 'refresh succeeded', p_at, p_at);
    END IF;
    IF p_owner IS NOT NULL THEN
        DELETE FROM refresh_leases l WHERE l.sub = p_sub AND l.owner = p_owner;
    END IF;
    RETURN QUERY
        SELECT 'ok'::TEXT, g.sub, g.state, g.scopes, g.refresh_token, g.rt_hash,
               g.rt_prefix_hash, g.refresh_token_received_at, g.access_token,
               g.access_token_expires_at, g.reason, g.state_changed_at, g.updated_at,
               g.last_refresh_at, g.last_error, g.version
          FROM grants g WHERE g.sub = p_sub;
END;
$$;

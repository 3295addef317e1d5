//! Code exchange (web and native), refresh and revocation against the emulator.

use super::support::{Env, Secrets};
use grantkeeper_core::scopes::{DRIVE_APPDATA, EMAIL};
use grantkeeper_core::{Clock, ExposeSecret, SecretString};
use grantkeeper_provider::{IdTokenError, ProviderError};

#[tokio::test]
async fn a_web_popup_code_is_exchanged_with_postmessage() {
    let env = Env::start().await;
    let provider = env.provider();
    let before = env.clock.now();
    let code = env.web_code("ada@example.com").await;
    let t = provider.exchange_code(&code, "postmessage").await.unwrap();

    assert!(!t.access_token.expose_secret().is_empty());
    assert!(
        t.refresh_token.is_some(),
        "first offline consent yields a refresh token"
    );
    assert!(t.expires_in > 0 && t.expires_in <= 3600, "{}", t.expires_in);
    assert!(t.token_type.eq_ignore_ascii_case("bearer"));
    assert!(
        t.scope.contains(EMAIL) && t.scope.contains(DRIVE_APPDATA),
        "{}",
        t.scope
    );
    assert!(t.received_at >= before - time::Duration::seconds(1));

    let claims = provider
        .verify_id_token(t.id_token.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.aud, env.web_client_id());
    assert_eq!(claims.azp.as_deref(), Some(env.web_client_id().as_str()));
    assert_eq!(claims.email.as_deref(), Some("ada@example.com"));
    assert!(claims.email_verified);
    assert!(!claims.sub.is_empty());
    let profile = claims.profile();
    assert_eq!(profile.sub, claims.sub);
    assert_eq!(profile.email, claims.email);

    // Single use.
    let err = provider
        .exchange_code(&code, "postmessage")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidGrant { ref error, .. } if error == "invalid_grant"),
        "{err:?}"
    );
    assert!(!err.is_transient());

    let mut secrets = Secrets::default();
    secrets.add(&code);
    secrets.add_response(&t);
    secrets.assert_absent(&err);
    secrets.assert_absent_debug(&t);
}

#[tokio::test]
async fn a_native_code_is_exchanged_with_an_empty_redirect_uri() {
    let env = Env::start().await;
    let android = env.emulator.android_client_id();
    let provider = env.provider();

    let code = env.native_code("droid@example.com", &android).await;
    let t = provider.exchange_code(&code, "").await.unwrap();
    let id_token = t.id_token.clone().unwrap();
    let claims = provider.verify_id_token(&id_token).await.unwrap();
    assert_eq!(claims.aud, env.web_client_id());
    assert_eq!(claims.azp.as_deref(), Some(android.as_str()));

    // The same token is refused by a server that did not configure the Android client.
    let strict = env.provider_with(|s| s.authorized_parties.clear());
    assert_eq!(
        strict.verify_id_token(&id_token).await.unwrap_err(),
        IdTokenError::UnauthorizedParty
    );
    let ios_only = env.provider_with(|s| s.authorized_parties = vec![env.emulator.ios_client_id()]);
    assert_eq!(
        ios_only.verify_id_token(&id_token).await.unwrap_err(),
        IdTokenError::UnauthorizedParty
    );

    // Sending `postmessage` for a native code is Google's redirect_uri_mismatch: the code is
    // dead for this exchange.
    let code = env.native_code("droid@example.com", &android).await;
    let err = provider
        .exchange_code(&code, "postmessage")
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidGrant { ref error, .. } if error == "redirect_uri_mismatch"),
        "{err:?}"
    );
    let mut secrets = Secrets::default();
    secrets.add(&code);
    secrets.assert_absent(&err);

    // And a web code exchanged with an empty redirect URI likewise.
    let code = env.web_code("ada@example.com").await;
    let err = provider.exchange_code(&code, "").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidGrant { ref error, .. } if error == "redirect_uri_mismatch"),
        "{err:?}"
    );
}

#[tokio::test]
async fn refresh_mints_an_access_token_and_keeps_the_refresh_token() {
    let env = Env::start().await;
    let provider = env.provider();
    let first = env.sign_in(&provider, "grace@example.com").await;
    let refresh_token = first.refresh_token.clone().unwrap();

    let t = provider.refresh(&refresh_token).await.unwrap();
    assert!(
        t.refresh_token.is_none(),
        "Google does not rotate refresh tokens"
    );
    assert_ne!(
        t.access_token.expose_secret(),
        first.access_token.expose_secret()
    );
    assert!(t.expires_in > 0);
    assert!(t.scope.contains(DRIVE_APPDATA), "{}", t.scope);
    if let Some(id_token) = &t.id_token {
        let claims = provider.verify_id_token(id_token).await.unwrap();
        assert_eq!(claims.email.as_deref(), Some("grace@example.com"));
    }
    // The refresh token still works.
    provider.refresh(&refresh_token).await.unwrap();
    assert_eq!(env.stats().await["refreshes"], 2);
}

#[tokio::test]
async fn revoking_twice_is_fine_and_kills_the_grant() {
    let env = Env::start().await;
    let provider = env.provider();
    let t = env.sign_in(&provider, "linus@example.com").await;
    let refresh_token = t.refresh_token.clone().unwrap();

    provider.revoke(&refresh_token).await.unwrap();
    provider.revoke(&refresh_token).await.unwrap();
    // Revoking an access token of a dead grant is also "already gone".
    provider.revoke(&t.access_token).await.unwrap();
    provider
        .revoke(&SecretString::from("1//never-issued"))
        .await
        .unwrap();

    let err = provider.refresh(&refresh_token).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidGrant { ref error, .. } if error == "invalid_grant"),
        "{err:?}"
    );
    let mut secrets = Secrets::default();
    secrets.add_response(&t);
    secrets.assert_absent(&err);
}

#[tokio::test]
async fn a_grant_revoked_by_the_user_is_invalid_grant() {
    let env = Env::start().await;
    let provider = env.provider();
    let t = env.sign_in(&provider, "mallory@example.com").await;
    env.revoke_user("mallory@example.com").await;
    let err = provider
        .refresh(t.refresh_token.as_ref().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidGrant { .. }), "{err:?}");
}

//! A data dir keeps the project, keys, grants and refresh tokens across restarts, as hashes.

use super::helpers::*;
use serde_json::json;
use std::path::Path;

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_restarted_emulator_honours_what_it_issued() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestEmu::start_with(Some(dir.path().to_path_buf()), true).await;
    let (web_id, web_secret) = (t.web_id.clone(), t.web_secret.clone());
    let android = t.emu.android_client_id();
    let kid = t.jwks().await.keys[0].common.key_id.clone().unwrap();

    let scope = format!("openid email {DRIVE_APPDATA}");
    let alice = t.sign_in("alice@example.com", &scope).await;
    let bob = t.sign_in("bob@example.com", &scope).await;
    let pending = t.popup_code("carol@example.com", "openid").await;
    let revoked = t.sign_in("dave@example.com", &scope).await;
    t.post_form("/revoke", &[("token", revoked.str("refresh_token"))])
        .await;
    let alice_sub = t.verify_id_token(alice.str("id_token")).await["sub"].clone();
    let issued: Vec<String> = [&alice, &bob, &revoked]
        .iter()
        .flat_map(|a| {
            ["access_token", "refresh_token", "id_token"]
                .iter()
                .map(|f| a.str(f).to_owned())
                .collect::<Vec<_>>()
        })
        .chain([pending.clone()])
        .collect();
    t.stop().await;

    // Nothing on disk holds an issued code or token.
    for f in all_files(dir.path()) {
        let content = std::fs::read_to_string(&f).unwrap_or_default();
        for token in &issued {
            assert!(
                !content.contains(token.as_str()),
                "{} holds an issued token",
                f.display()
            );
        }
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.path().join("client_secret.json")), 0o600);
        assert_eq!(
            mode(
                &dir.path()
                    .join("emulator")
                    .join("keys")
                    .join(format!("{kid}.pem"))
            ),
            0o600
        );
    }

    // A new process on a new port: same project, same keys, same grants.
    let t = TestEmu::start_with(Some(dir.path().to_path_buf()), true).await;
    assert_eq!(t.web_id, web_id);
    assert_eq!(t.web_secret, web_secret);
    assert_eq!(t.emu.android_client_id(), android);
    assert_eq!(
        t.jwks().await.keys[0].common.key_id.as_deref(),
        Some(kid.as_str())
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("client_secret.json")).unwrap())
            .unwrap();
    assert_eq!(file["web"]["token_uri"], t.url("/token"));
    assert_eq!(file["web"]["client_id"], web_id);

    let r = t.refresh(alice.str("refresh_token")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(t.verify_id_token(r.str("id_token")).await["sub"], alice_sub);
    // The grant is remembered: the next consent gives no second refresh token.
    let again = t.sign_in("alice@example.com", &scope).await;
    assert!(again.body.get("refresh_token").is_none());
    // Access tokens issued before the restart still work until they expire.
    assert_eq!(t.userinfo(bob.str("access_token")).await.status, 200);
    // A code minted before the restart can be exchanged once.
    assert_eq!(t.exchange(&pending, "postmessage").await.status, 200);
    // Revocations stick.
    t.refresh(revoked.str("refresh_token"))
        .await
        .assert_error(400, "invalid_grant", None);

    // A revocation after the restart survives the next one too.
    let r = t
        .post_form("/revoke", &[("token", bob.str("refresh_token"))])
        .await;
    assert_eq!(r.status, 200);
    let rotated = t.post_json("/_emulator/keys/rotate", json!({})).await;
    let new_kid = rotated.str("kid").to_owned();
    t.stop().await;
    let t = TestEmu::start_with(Some(dir.path().to_path_buf()), true).await;
    t.refresh(bob.str("refresh_token"))
        .await
        .assert_error(400, "invalid_grant", None);
    assert_eq!(t.refresh(alice.str("refresh_token")).await.status, 200);
    let kids: Vec<String> = t
        .jwks()
        .await
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(kids, vec![new_kid.clone(), kid]);
    let a = t.sign_in("erin@example.com", "openid").await;
    assert_eq!(peek(a.str("id_token")).0["kid"], new_kid);
}

//! Who may call Drive: Bearer tokens the emulator issued, the scopes they carry, and whose
//! files they reach (reference §8.1, §8.4, §10.9).

use super::helpers::*;
use serde_json::json;

const APP_DATA_ONLY: &str = "openid email https://www.googleapis.com/auth/drive.appdata";
const INVALID_TOKEN: &str =
    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"";

fn assert_invalid_credentials(a: &Answer, expired: bool) {
    assert_eq!(a.status, 401, "{}", a.text);
    let e = &a.body["error"];
    assert_eq!(e["code"], 401);
    assert_eq!(e["message"], "Invalid Credentials");
    assert_eq!(e["status"], "UNAUTHENTICATED");
    assert_eq!(
        e["errors"],
        json!([{"message": "Invalid Credentials", "domain": "global", "reason": "authError",
                "location": "Authorization", "locationType": "header"}])
    );
    if expired {
        assert_eq!(
            e["details"][0]["reason"], "ACCESS_TOKEN_EXPIRED",
            "{}",
            a.text
        );
    } else {
        assert!(e.get("details").is_none(), "{}", a.text);
    }
    assert_eq!(a.header("www-authenticate"), Some(INVALID_TOKEN));
}

#[tokio::test]
async fn no_token_is_login_required() {
    let t = TestEmu::start().await;
    let anonymous = t.drive_with(None);
    for a in [
        anonymous.list(&[("spaces", "appDataFolder")]).await,
        anonymous.get("/drive/v3/files/appDataFolder").await,
        anonymous.delete("1abc").await,
    ] {
        assert_eq!(a.status, 401, "{}", a.text);
        let e = &a.body["error"];
        assert_eq!(e["message"], "Login Required.");
        assert_eq!(e["status"], "UNAUTHENTICATED");
        assert_eq!(
            e["errors"],
            json!([{"message": "Login Required.", "domain": "global", "reason": "required",
                    "location": "Authorization", "locationType": "header"}])
        );
        assert_eq!(e["details"][0]["reason"], "CREDENTIALS_MISSING");
        assert_eq!(
            e["details"][0]["metadata"]["service"],
            "drive.googleapis.com"
        );
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"https://accounts.google.com/\"")
        );
    }
    let list = anonymous.list(&[]).await;
    assert_eq!(
        list.body["error"]["details"][0]["metadata"]["method"],
        "google.apps.drive.v3.DriveFiles.List"
    );
}

#[tokio::test]
async fn expired_tokens_are_invalid_credentials() {
    let t = TestEmu::start().await;
    // A short-lived token, then the emulator's clock moved past it.
    t.settings(json!({"access_token_ttl_secs": 10})).await;
    let short = t.drive("alice@example.com", APP_DATA_ONLY).await;
    assert_eq!(short.list(&[("spaces", "appDataFolder")]).await.status, 200);
    t.clock.advance(time::Duration::seconds(11));
    assert_invalid_credentials(&short.list(&[("spaces", "appDataFolder")]).await, true);

    // A normal token, then the clock offset setting moved past its hour.
    t.settings(json!({"access_token_ttl_secs": 3600})).await;
    let hour = t.drive("bob@example.com", APP_DATA_ONLY).await;
    let id = hour.create_app_data("a.json").await;
    t.settings(json!({"clock_offset_secs": 3601})).await;
    assert_invalid_credentials(&hour.get(&format!("/drive/v3/files/{id}")).await, true);
    // The refresh token still works: a new access token reads the same file.
    t.settings(json!({"clock_offset_secs": 0})).await;
    let again = t.drive("bob@example.com", APP_DATA_ONLY).await;
    assert_eq!(
        again.get(&format!("/drive/v3/files/{id}")).await.status,
        200
    );

    // Tokens the emulator never issued, and other schemes.
    assert_invalid_credentials(&t.drive_with(Some("ya29.a0nothing")).list(&[]).await, false);
    let basic = t
        .http
        .get(t.url("/drive/v3/files"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_invalid_credentials(&Answer::from(basic).await, false);
}

#[tokio::test]
async fn revoked_tokens_are_invalid_credentials() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    alice.create_app_data("a.json").await;
    let token = alice.token.clone().unwrap();
    let r = t.post_form("/revoke", &[("token", &token)]).await;
    assert_eq!(r.status, 200);
    assert_invalid_credentials(&alice.list(&[("spaces", "appDataFolder")]).await, false);

    // Revoking the user (a password change) does the same.
    let bob = t.drive("bob@example.com", APP_DATA_ONLY).await;
    t.post_json("/_emulator/users/bob@example.com/revoke", json!({}))
        .await;
    assert_invalid_credentials(&bob.list(&[("spaces", "appDataFolder")]).await, false);
    // The files outlive the grant: a new consent finds them again.
    let back = t.drive("alice@example.com", APP_DATA_ONLY).await;
    assert_eq!(
        ids(&back.list(&[("spaces", "appDataFolder")]).await).len(),
        1
    );
}

#[tokio::test]
async fn tokens_without_a_drive_scope_are_refused() {
    let t = TestEmu::start().await;
    let plain = t.drive("alice@example.com", "openid email profile").await;
    let list = plain.list(&[("spaces", "appDataFolder")]).await;
    assert_eq!(list.status, 403);
    assert_eq!(
        list.body,
        json!({"error": {
            "code": 403,
            "message": "Request had insufficient authentication scopes.",
            "errors": [{"message": "Insufficient Permission", "domain": "global",
                        "reason": "insufficientPermissions"}],
            "status": "PERMISSION_DENIED",
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": "drive.googleapis.com",
                             "method": "google.apps.drive.v3.DriveFiles.List"},
            }],
        }})
    );
    assert!(
        list.header("www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    let get = plain.get("/drive/v3/files/appDataFolder").await;
    assert_eq!(get.status, 403);
    assert_eq!(
        get.body["error"]["details"][0]["metadata"]["method"],
        "google.apps.drive.v3.DriveFiles.Get"
    );
    let create = plain
        .create(json!({"name": "a", "parents": ["appDataFolder"]}), &[])
        .await;
    assert_drive_error(
        &create,
        403,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
    );
}

#[tokio::test]
async fn the_app_data_folder_needs_drive_appdata() {
    let t = TestEmu::start().await;
    let app_data_message = "The granted scopes do not allow use of the Application Data folder.";
    let file_only = t
        .drive("alice@example.com", &format!("openid {DRIVE_FILE}"))
        .await;
    let create = file_only
        .create(json!({"name": "a.json", "parents": ["appDataFolder"]}), &[])
        .await;
    assert_drive_error(&create, 403, "insufficientScopes", app_data_message);
    let upload = file_only
        .upload_multipart(
            json!({"name": "a.json", "parents": ["appDataFolder"]}),
            "text/plain",
            b"x",
            &[],
        )
        .await;
    assert_drive_error(&upload, 403, "insufficientScopes", app_data_message);
    let list = file_only.list(&[("spaces", "appDataFolder")]).await;
    assert_drive_error(&list, 403, "insufficientScopes", app_data_message);
    let folder = file_only.get("/drive/v3/files/appDataFolder").await;
    assert_drive_error(&folder, 403, "insufficientScopes", app_data_message);
    assert!(
        t.get("/_emulator/drive?email=alice@example.com").await.body["files"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // drive.file reaches My Drive: no parents means My Drive.
    let mine = file_only
        .create(json!({"name": "mine.txt"}), &[("fields", "id,spaces")])
        .await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert_eq!(mine.body["spaces"], json!(["drive"]));
    assert_eq!(
        ids(&file_only.list(&[]).await),
        vec![mine.str("id").to_owned()]
    );

    // A file in appDataFolder written with drive.appdata is out of drive.file's reach.
    let app = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let id = app.create_app_data("secret.json").await;
    let denied = file_only.patch(&id, json!({"name": "x"}), &[]).await;
    assert_drive_error(&denied, 403, "insufficientScopes", app_data_message);
    assert_eq!(file_only.delete(&id).await.status, 403);
    // And drive.appdata alone cannot write outside it.
    let outside = app.create(json!({"name": "loose.txt"}), &[]).await;
    assert_drive_error(
        &outside,
        403,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
    );
    assert_eq!(app.delete(mine.str("id")).await.status, 403);
}

#[tokio::test]
async fn another_users_files_are_not_found() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let bob = t.drive("bob@example.com", APP_DATA_ONLY).await;
    let made = alice
        .upload_multipart(
            json!({"name": "a.json", "parents": ["appDataFolder"]}),
            "application/json",
            b"{}",
            &[],
        )
        .await;
    let id = made.str("id").to_owned();
    let not_found = format!("File not found: {id}.");
    assert_drive_error(
        &bob.get(&format!("/drive/v3/files/{id}")).await,
        404,
        "notFound",
        &not_found,
    );
    assert_drive_error(&bob.download(&id).await, 404, "notFound", &not_found);
    assert_drive_error(
        &bob.patch(&id, json!({"name": "mine"}), &[]).await,
        404,
        "notFound",
        &not_found,
    );
    assert_drive_error(
        &bob.patch_content(&id, "text/plain", b"x".to_vec(), &[])
            .await,
        404,
        "notFound",
        &not_found,
    );
    assert_drive_error(&bob.delete(&id).await, 404, "notFound", &not_found);
    // Nor can bob put a file in alice's folder.
    let alice_folder = alice
        .get("/drive/v3/files/appDataFolder?fields=id")
        .await
        .str("id")
        .to_owned();
    let into = bob
        .create(json!({"name": "x", "parents": [alice_folder]}), &[])
        .await;
    assert_eq!(into.status, 404, "{}", into.text);
    assert!(ids(&bob.list(&[("spaces", "appDataFolder")]).await).is_empty());
    // Alice's file is untouched, and her other clients (same project) see it.
    assert_eq!(alice.download(&id).await.bytes, b"{}");
    let android = t.emu.android_client_id();
    let code = t
        .code(json!({"email": "alice@example.com", "scope": APP_DATA_ONLY, "azp": android}))
        .await;
    let native = t.exchange(&code, "").await;
    let phone = t.drive_with(Some(native.str("access_token")));
    assert_eq!(
        ids(&phone.list(&[("spaces", "appDataFolder")]).await),
        vec![id]
    );
}

#[tokio::test]
async fn stats_count_drive_calls() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let bob = t.drive("bob@example.com", APP_DATA_ONLY).await;
    alice.create_app_data("a.json").await;
    alice.list(&[("spaces", "appDataFolder")]).await;
    alice.list(&[]).await; // refused for its spaces, but authenticated
    bob.list(&[("spaces", "appDataFolder")]).await;
    t.drive_with(None).list(&[]).await;
    t.drive_with(Some("ya29.nope")).list(&[]).await;
    let s = t.stats().await;
    assert_eq!(s["drive_requests"], 6);
    assert_eq!(
        s["drive_requests_by_email"],
        json!({"alice@example.com": 3, "bob@example.com": 1})
    );
}

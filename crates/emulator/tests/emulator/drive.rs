//! Drive v3 files in appDataFolder: folder alias, create, upload, download, update, delete,
//! listing with spaces, q, fields and pages (reference §8).

use super::helpers::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const APP_DATA_ONLY: &str = "openid email https://www.googleapis.com/auth/drive.appdata";

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `2024-05-01T10:00:00.000Z`: RFC 3339, UTC, milliseconds.
fn assert_drive_time(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert_eq!(s.len(), 24, "{s}");
    assert!(s.ends_with('Z'), "{s}");
    assert_eq!(&s[10..11], "T", "{s}");
    assert_eq!(&s[19..20], ".", "{s}");
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
}

#[tokio::test]
async fn the_app_data_folder_alias_names_a_stable_real_folder() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let a = alice.get("/drive/v3/files/appDataFolder?fields=id").await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(keys(&a.body), set(&["id"]));
    let id = a.str("id").to_owned();
    assert!(id.starts_with("0A") && id != "appDataFolder", "{id}");

    let full = alice.get("/drive/v3/files/appDataFolder").await;
    assert_eq!(
        keys(&full.body),
        set(&["kind", "id", "name", "mimeType"]),
        "default fields"
    );
    assert_eq!(full.body["kind"], "drive#file");
    assert_eq!(full.body["mimeType"], "application/vnd.google-apps.folder");
    // The real id names the same folder.
    let by_id = alice
        .get(&format!("/drive/v3/files/{id}?fields=id,spaces"))
        .await;
    assert_eq!(by_id.body, json!({"id": id, "spaces": ["appDataFolder"]}));

    // Stable for the user across sign-ins, different for another user.
    let again = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let a2 = again.get("/drive/v3/files/appDataFolder?fields=id").await;
    assert_eq!(a2.str("id"), id);
    let bob = t.drive("bob@example.com", APP_DATA_ONLY).await;
    let b = bob.get("/drive/v3/files/appDataFolder?fields=id").await;
    assert_ne!(b.str("id"), id);
    let control = t.get("/_emulator/drive?email=alice@example.com").await;
    assert_eq!(control.body["app_data_folder_id"], id);
    // The folder has no content to download.
    let media = alice.download("appDataFolder").await;
    assert_drive_error(
        &media,
        403,
        "fileNotDownloadable",
        "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
    );
}

#[tokio::test]
async fn create_upload_and_download_files_in_app_data() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let folder = alice
        .get("/drive/v3/files/appDataFolder?fields=id")
        .await
        .str("id")
        .to_owned();

    // Metadata only: the default answer has the four default fields.
    let a = alice
        .create(
            json!({"name": "a.json", "parents": ["appDataFolder"], "mimeType": "application/json"}),
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(keys(&a.body), set(&["kind", "id", "name", "mimeType"]));
    assert_eq!(a.body["name"], "a.json");
    assert_eq!(a.body["mimeType"], "application/json");
    let id = a.str("id").to_owned();
    assert!(id.starts_with('1') && id.len() == 33, "{id}");

    // The whole resource: int64s as strings, times with milliseconds, the real parent id.
    let f = alice.get(&format!("/drive/v3/files/{id}?fields=*")).await;
    assert_eq!(f.status, 200, "{}", f.text);
    assert_eq!(f.body["kind"], "drive#file");
    assert_eq!(f.body["parents"], json!([folder]));
    assert_eq!(f.body["spaces"], json!(["appDataFolder"]));
    assert_eq!(f.body["size"], "0");
    assert_eq!(f.body["version"], "1");
    assert_eq!(f.body["md5Checksum"], "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(f.body["trashed"], false);
    assert_drive_time(&f.body["createdTime"]);
    assert_drive_time(&f.body["modifiedTime"]);
    assert_eq!(alice.download(&id).await.bytes, b"");

    // Multipart: the metadata part, then the media part with its own type.
    let m = alice
        .upload_multipart(
            json!({"name": "settings.json", "parents": ["appDataFolder"]}),
            "text/plain",
            b"hello",
            &[(
                "fields",
                "id,name,mimeType,size,md5Checksum,parents,version",
            )],
        )
        .await;
    assert_eq!(m.status, 200, "{}", m.text);
    assert_eq!(m.body["mimeType"], "text/plain");
    assert_eq!(m.body["size"], "5");
    assert_eq!(m.body["md5Checksum"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(m.body["parents"], json!([folder]));
    assert_eq!(m.body["version"], "1");
    let d = alice.download(m.str("id")).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.bytes, b"hello");
    assert_eq!(d.header("content-type"), Some("text/plain"));

    // Every byte value survives the round trip.
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let b = alice
        .upload_multipart(
            json!({"name": "blob.bin", "parents": ["appDataFolder"], "mimeType": "application/x-test"}),
            "application/octet-stream",
            &binary,
            &[("fields", "id,mimeType,md5Checksum,size")],
        )
        .await;
    assert_eq!(b.body["mimeType"], "application/x-test", "metadata wins");
    assert_eq!(b.body["md5Checksum"], md5_hex(&binary));
    assert_eq!(b.body["size"], "4096");
    assert_eq!(alice.download(b.str("id")).await.bytes, binary);

    // A simple upload has no metadata and so lands in My Drive: it needs drive or drive.file.
    let media = alice
        .send(
            alice
                .req(
                    reqwest::Method::POST,
                    "/upload/drive/v3/files?uploadType=media",
                )
                .header("content-type", "text/csv")
                .body("a,b\n"),
        )
        .await;
    assert_drive_error(
        &media,
        403,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
    );
    let both = t
        .drive(
            "alice@example.com",
            &format!("{APP_DATA_ONLY} {DRIVE_FILE}"),
        )
        .await;
    let media = both
        .send(
            both.req(
                reqwest::Method::POST,
                "/upload/drive/v3/files?uploadType=media&fields=id,name,mimeType,spaces,size",
            )
            .header("content-type", "text/csv; charset=utf-8")
            .body("a,b\n"),
        )
        .await;
    assert_eq!(media.status, 200, "{}", media.text);
    assert_eq!(media.body["name"], "Untitled");
    assert_eq!(media.body["mimeType"], "text/csv");
    assert_eq!(media.body["spaces"], json!(["drive"]));
    assert_eq!(both.download(media.str("id")).await.bytes, b"a,b\n");
    // My Drive files are not in the Application Data folder.
    let listed = both.list(&[("spaces", "appDataFolder")]).await;
    assert_eq!(ids(&listed).len(), 3);
    assert!(!ids(&listed).contains(&media.str("id").to_owned()));
    let mine = both.list(&[]).await;
    assert_eq!(ids(&mine), vec![media.str("id").to_owned()]);
}

#[tokio::test]
async fn updates_change_name_and_content_and_bump_the_version() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let fields = [(
        "fields",
        "name,version,md5Checksum,size,modifiedTime,mimeType",
    )];
    let created = alice
        .upload_multipart(
            json!({"name": "a.json", "parents": ["appDataFolder"], "mimeType": "application/json"}),
            "application/json",
            b"{\"v\":1}",
            &[("fields", "id,modifiedTime")],
        )
        .await;
    let id = created.str("id").to_owned();

    t.clock.advance(time::Duration::seconds(5));
    let renamed = alice.patch(&id, json!({"name": "b.json"}), &fields).await;
    assert_eq!(renamed.status, 200, "{}", renamed.text);
    assert_eq!(renamed.body["name"], "b.json");
    assert_eq!(renamed.body["version"], "2");
    assert_eq!(renamed.body["md5Checksum"], md5_hex(b"{\"v\":1}"));
    assert!(
        renamed.str("modifiedTime") > created.str("modifiedTime"),
        "{} then {}",
        created.text,
        renamed.text
    );

    let replaced = alice
        .patch_content(
            &id,
            "application/json",
            b"{\"v\":2,\"more\":true}".to_vec(),
            &fields,
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(replaced.body["version"], "3");
    assert_eq!(replaced.body["name"], "b.json");
    assert_eq!(replaced.body["size"], "19");
    assert_eq!(
        replaced.body["md5Checksum"],
        md5_hex(b"{\"v\":2,\"more\":true}")
    );
    assert_ne!(replaced.body["md5Checksum"], renamed.body["md5Checksum"]);
    assert_eq!(alice.download(&id).await.bytes, b"{\"v\":2,\"more\":true}");

    // Multipart update: metadata and content together.
    let both = alice
        .send(
            alice
                .req(
                    reqwest::Method::PATCH,
                    &format!("/upload/drive/v3/files/{id}"),
                )
                .query(&[("uploadType", "multipart")])
                .query(&fields)
                .header(
                    "content-type",
                    format!("multipart/related; boundary={MULTIPART_BOUNDARY}"),
                )
                .body(multipart_body(
                    &json!({"name": "c.json"}),
                    "application/json",
                    b"[]",
                )),
        )
        .await;
    assert_eq!(both.status, 200, "{}", both.text);
    assert_eq!(both.body["name"], "c.json");
    assert_eq!(both.body["version"], "4");
    assert_eq!(both.body["md5Checksum"], md5_hex(b"[]"));

    // appProperties merge; null removes a key.
    alice
        .patch(&id, json!({"appProperties": {"a": "1", "b": "2"}}), &[])
        .await;
    let props = alice
        .patch(
            &id,
            json!({"appProperties": {"a": null}}),
            &[("fields", "appProperties,version")],
        )
        .await;
    assert_eq!(
        props.body,
        json!({"appProperties": {"b": "2"}, "version": "6"})
    );

    // Parents move only through addParents/removeParents; read-only fields stay read-only.
    let moved = alice.patch(&id, json!({"parents": ["root"]}), &[]).await;
    assert_drive_error(
        &moved,
        403,
        "fieldNotWritable",
        "The parents field is not directly writable in update requests. Use the addParents and \
         removeParents parameters instead.",
    );
    let sized = alice.patch(&id, json!({"size": "1"}), &[]).await;
    assert_eq!(sized.status, 403);
    assert_eq!(
        sized.body["error"]["errors"][0]["reason"],
        "fieldNotWritable"
    );
    let bad_json = alice
        .send(
            alice
                .req(reqwest::Method::PATCH, &format!("/drive/v3/files/{id}"))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_drive_error(&bad_json, 400, "parseError", "Parse Error");
    // None of the refused calls changed the file.
    let f = alice
        .get(&format!("/drive/v3/files/{id}?fields=version,name"))
        .await;
    assert_eq!(f.body, json!({"version": "6", "name": "c.json"}));
}

#[tokio::test]
async fn deleted_files_are_not_found() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let id = alice.create_app_data("gone.json").await;
    let d = alice.delete(&id).await;
    assert_eq!(d.status, 204);
    assert!(d.bytes.is_empty());
    let g = alice.get(&format!("/drive/v3/files/{id}")).await;
    assert_eq!(
        g.body,
        json!({"error": {
            "code": 404,
            "message": format!("File not found: {id}."),
            "errors": [{
                "message": format!("File not found: {id}."),
                "domain": "global",
                "reason": "notFound",
                "location": "fileId",
                "locationType": "parameter",
            }],
        }})
    );
    assert_eq!(g.status, 404);
    assert_eq!(alice.delete(&id).await.status, 404);
    assert_eq!(alice.download(&id).await.status, 404);

    // A folder takes its content with it.
    let folder = alice
        .create(
            json!({"name": "dir", "parents": ["appDataFolder"],
                   "mimeType": "application/vnd.google-apps.folder"}),
            &[],
        )
        .await
        .str("id")
        .to_owned();
    let inner = alice
        .upload_multipart(
            json!({"name": "in.txt", "parents": [folder]}),
            "text/plain",
            b"x",
            &[("fields", "id,spaces")],
        )
        .await;
    assert_eq!(
        inner.body["spaces"],
        json!(["appDataFolder"]),
        "{}",
        inner.text
    );
    let listed = alice
        .list(&[
            ("spaces", "appDataFolder"),
            ("q", &format!("'{folder}' in parents")),
        ])
        .await;
    assert_eq!(ids(&listed), vec![inner.str("id").to_owned()]);
    assert_eq!(alice.delete(&folder).await.status, 204);
    assert_eq!(alice.download(inner.str("id")).await.status, 404);
    // The Application Data folder itself cannot be deleted.
    assert_eq!(alice.delete("appDataFolder").await.status, 403);
    let none = alice.list(&[("spaces", "appDataFolder")]).await;
    assert_eq!(ids(&none), Vec::<String>::new());
}

#[tokio::test]
async fn listing_under_drive_appdata_alone_needs_spaces_app_data_folder() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let a = alice.create_app_data("a.json").await;
    let b = alice.create_app_data("b.json").await;

    let spaces_message = "The granted scopes do not give access to all of the requested spaces.";
    let without = alice.list(&[]).await;
    assert_drive_error(&without, 403, "insufficientScopes", spaces_message);
    // A q naming the folder is not a spaces parameter.
    let by_parent = alice.list(&[("q", "'appDataFolder' in parents")]).await;
    assert_drive_error(&by_parent, 403, "insufficientScopes", spaces_message);
    let mixed = alice.list(&[("spaces", "drive,appDataFolder")]).await;
    assert_drive_error(&mixed, 403, "insufficientScopes", spaces_message);

    let with = alice.list(&[("spaces", "appDataFolder")]).await;
    assert_eq!(with.status, 200, "{}", with.text);
    assert_eq!(
        with.body,
        json!({
            "kind": "drive#fileList",
            "incompleteSearch": false,
            "files": [
                {"kind": "drive#file", "id": a, "name": "a.json", "mimeType": "application/octet-stream"},
                {"kind": "drive#file", "id": b, "name": "b.json", "mimeType": "application/octet-stream"},
            ],
        })
    );
    let bad = alice.list(&[("spaces", "photos")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["errors"][0]["location"], "spaces");
}

#[tokio::test]
async fn q_fields_and_order_select_files() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let a = alice.create_app_data("a.json").await;
    t.clock.advance(time::Duration::seconds(1));
    let b = alice.create_app_data("b.json").await;
    t.clock.advance(time::Duration::seconds(1));
    let old = alice.create_app_data("old.json").await;
    alice.patch(&old, json!({"trashed": true}), &[]).await;

    let q = |q: &'static str| [("spaces", "appDataFolder"), ("q", q)];
    let by_name = alice.list(&q("name = 'a.json'")).await;
    assert_eq!(ids(&by_name), vec![a.clone()]);
    let live = alice
        .list(&q("'appDataFolder' in parents and trashed = false"))
        .await;
    assert_eq!(ids(&live), vec![a.clone(), b.clone()]);
    // Trashed files are listed unless the query says otherwise.
    assert_eq!(
        ids(&alice.list(&[("spaces", "appDataFolder")]).await).len(),
        3
    );
    let either = alice
        .list(&q(
            "(name = 'b.json' or name = 'old.json') and not trashed = true",
        ))
        .await;
    assert_eq!(ids(&either), vec![b.clone()]);

    for malformed in [
        "name = 'a.json' and",
        "name = a.json",
        "name == 'a.json'",
        "'appDataFolder' in children",
        "size > 3",
    ] {
        let r = alice
            .list(&[("spaces", "appDataFolder"), ("q", malformed)])
            .await;
        assert_eq!(
            r.body,
            json!({"error": {"code": 400, "message": "Invalid Value", "errors": [{
                "message": "Invalid Value", "domain": "global", "reason": "invalid",
                "location": "q", "locationType": "parameter"}]}}),
            "{malformed}"
        );
        assert_eq!(r.status, 400);
    }

    let selected = alice
        .list(&[
            ("spaces", "appDataFolder"),
            ("q", "trashed = false"),
            ("fields", "nextPageToken,files(id,name,modifiedTime,size)"),
        ])
        .await;
    assert_eq!(keys(&selected.body), set(&["files"]), "no next page here");
    for f in selected.body["files"].as_array().unwrap() {
        assert_eq!(keys(f), set(&["id", "name", "modifiedTime", "size"]));
    }
    let all = alice
        .list(&[
            ("spaces", "appDataFolder"),
            ("fields", "*"),
            ("pageSize", "1"),
        ])
        .await;
    assert_eq!(
        keys(&all.body),
        set(&["kind", "incompleteSearch", "nextPageToken", "files"])
    );
    assert_eq!(
        all.body["files"][0]["md5Checksum"],
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    let bad_fields = alice
        .list(&[("spaces", "appDataFolder"), ("fields", "files(id")])
        .await;
    assert_eq!(bad_fields.status, 400);
    assert_eq!(
        bad_fields.body["error"]["errors"][0]["reason"],
        "invalidParameter"
    );

    let by_name_desc = alice
        .list(&[("spaces", "appDataFolder"), ("orderBy", "name desc")])
        .await;
    assert_eq!(ids(&by_name_desc), vec![old.clone(), b.clone(), a.clone()]);
    let newest = alice
        .list(&[
            ("spaces", "appDataFolder"),
            ("orderBy", "modifiedTime desc"),
            ("pageSize", "1"),
        ])
        .await;
    assert_eq!(ids(&newest), vec![old.clone()]);
    for (name, value) in [("pageSize", "0"), ("pageSize", "1001"), ("orderBy", "size")] {
        let r = alice
            .list(&[("spaces", "appDataFolder"), (name, value)])
            .await;
        assert_eq!(r.status, 400, "{name}={value}");
        assert_eq!(r.body["error"]["errors"][0]["location"], name);
    }
}

#[tokio::test]
async fn pages_of_two_walk_five_files() {
    let t = TestEmu::start().await;
    let alice = t.drive("alice@example.com", APP_DATA_ONLY).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(alice.create_app_data(&format!("f{i}.json")).await);
    }
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut query = vec![("spaces", "appDataFolder"), ("pageSize", "2")];
        if let Some(tok) = &token {
            query.push(("pageToken", tok.as_str()));
        }
        let page = alice.list(&query).await;
        assert_eq!(page.status, 200, "{}", page.text);
        pages.push(ids(&page).len());
        seen.extend(ids(&page));
        match page.body.get("nextPageToken") {
            Some(next) => token = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(seen, created, "every file once, in creation order");

    // A page token belongs to its search.
    let first = alice
        .list(&[("spaces", "appDataFolder"), ("pageSize", "2")])
        .await;
    let tok = first.str("nextPageToken");
    let other = alice
        .list(&[
            ("spaces", "appDataFolder"),
            ("pageSize", "2"),
            ("q", "trashed = false"),
            ("pageToken", tok),
        ])
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.body["error"]["errors"][0]["location"], "pageToken");
    let garbage = alice
        .list(&[("spaces", "appDataFolder"), ("pageToken", "nonsense")])
        .await;
    assert_eq!(garbage.status, 400);
}

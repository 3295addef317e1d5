//! Invariant 1: tokens never reach the database in plaintext, a log line or a response.

use super::harness::{TestApp, captured_logs};

#[tokio::test]
async fn no_issued_token_reaches_the_database_the_logs_or_a_response() {
    let t = TestApp::start().await;
    let emails = ["leak-web@example.com", "leak-android@example.com"];
    let web_code = t.web_code(emails[0]).await;
    let web = t.authcode_web(&web_code).await;
    assert_eq!(web.status, 200, "{}", web.text);
    let android_code = t
        .mobile_code(emails[1], t.emulator.android_client_id())
        .await;
    let android = t.authcode_android(&android_code).await;
    assert_eq!(android.status, 200, "{}", android.text);
    // A refused reuse and a session lookup exercise the error and session paths too.
    let reuse = t.authcode_web(&web_code).await;
    assert_eq!(reuse.status, 400);
    let me = t.get("/me", web.session_cookie().as_deref()).await;
    assert_eq!(me.status, 200);

    let mut secrets = vec![web_code, android_code, web.session_cookie().unwrap()];
    for email in emails {
        let issued = t.issued_tokens(email).await;
        assert!(
            issued.len() >= 3,
            "expected access, refresh and ID tokens for {email}: {issued:?}"
        );
        secrets.extend(issued);
    }
    // The session secret alone, without the cookie name.
    let session_secret = secrets[2].trim_start_matches("gk_session=").to_owned();
    secrets.push(session_secret);

    let mut stored = Vec::new();
    for entry in std::fs::read_dir(t.db_dir()).unwrap() {
        let path = entry.unwrap().path();
        stored.extend(std::fs::read(&path).unwrap());
    }
    assert!(stored.len() > 4096, "the database files were not found");
    let logs = captured_logs();
    assert!(
        logs.contains("signed in"),
        "logs were not captured at trace level"
    );
    let answers = [web.text, android.text, reuse.text, me.text];
    for secret in &secrets {
        let needle = secret.as_bytes();
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle),
            "a secret of {} bytes is in the database files",
            needle.len()
        );
        assert!(
            !logs.contains(secret.as_str()),
            "a secret of {} bytes is in the logs",
            needle.len()
        );
        for a in &answers {
            assert!(
                !a.contains(secret.as_str()),
                "a secret is in a response body"
            );
        }
    }
}

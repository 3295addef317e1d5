//! `[limits]`: the sign-in rate limit per client IP, the `/v1` limit per API key, and the
//! largest proxied body.

use super::harness::{Answer, Options, TestApp, no_rate_limits};
use grantkeeper_core::ManualClock;
use grantkeeper_server::apikeys::KeyScope::{Proxy, UsersRead};
use grantkeeper_server::config::{LimitsSection, Settings};
use std::sync::Arc;

async fn with_limits(limits: LimitsSection) -> TestApp {
    with_limits_on(limits, None).await
}

async fn with_limits_on(limits: LimitsSection, clock: Option<Arc<ManualClock>>) -> TestApp {
    TestApp::start_with(Options {
        limits,
        clock,
        ..Options::default()
    })
    .await
}

/// Time passing for the limits: the clock moves, nobody sleeps.
fn wait_out(clock: &ManualClock, secs: u64) {
    clock.advance(time::Duration::seconds(i64::try_from(secs).unwrap()));
}

/// The Retry-After of a 429, in whole seconds.
#[track_caller]
fn retry_after(a: &Answer) -> u64 {
    let v = a
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After on {} {}", a.status, a.text));
    let secs: u64 = v.to_str().unwrap().parse().unwrap();
    assert!(secs >= 1, "Retry-After {secs}");
    secs
}

/// A sign-in attempt that costs nothing but the limit's token (no X-Requested-With).
async fn cheap_attempt(t: &TestApp) -> Answer {
    t.post_authcode("", Some("text/plain"), &[], b"x".to_vec())
        .await
}

async fn emails(t: &TestApp) -> Vec<String> {
    let page = t.app.store().list_users(None, 500).await.unwrap();
    page.users
        .iter()
        .filter_map(|(u, _)| u.profile.email.clone())
        .collect()
}

#[tokio::test]
async fn sign_ins_beyond_the_burst_are_refused_until_the_bucket_refills() {
    let clock = ManualClock::new();
    let t = with_limits_on(
        LimitsSection {
            authcode_per_minute: Some(60),
            authcode_burst: Some(2),
            ..no_rate_limits()
        },
        Some(clock.clone()),
    )
    .await;
    let code = t.web_code("limited@example.com").await;
    // The burst goes on attempts refused for other reasons: every attempt counts.
    let mut refused = None;
    for _ in 0..20 {
        let a = cheap_attempt(&t).await;
        if a.status == 429 {
            refused = Some(a);
            break;
        }
        a.assert_error(403, "csrf");
    }
    let refused = refused.expect("the burst of 2 was never exhausted");
    refused.assert_error(429, "rate_limited");
    retry_after(&refused);

    let a = t.authcode_web(&code).await;
    a.assert_error(429, "rate_limited");
    let wait = retry_after(&a);
    assert!(wait <= 60, "Retry-After {wait} for a rate of one a second");
    assert!(
        emails(&t).await.is_empty(),
        "a refused sign-in wrote a user"
    );
    assert_eq!(
        t.stats().await["code_exchanges"],
        0,
        "a refused sign-in reached Google"
    );

    // After Retry-After, the same (unused) code goes through.
    let mut answer = a;
    for _ in 0..10 {
        wait_out(&clock, retry_after(&answer));
        answer = t.authcode_web(&code).await;
        if answer.status != 429 {
            break;
        }
    }
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(emails(&t).await, ["limited@example.com"]);
}

/// A sign-in attempt (refused for its missing X-Requested-With, but counted) whose request
/// carries `X-Forwarded-For: {forwarded}`; its status.
async fn forwarded_attempt(t: &TestApp, forwarded: &str) -> u16 {
    t.http
        .post(format!("{}/authcode", t.url))
        .header("x-forwarded-for", forwarded)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn one_attempt_behind(trusted_proxies: &[&str]) -> LimitsSection {
    LimitsSection {
        authcode_per_minute: Some(1),
        authcode_burst: Some(1),
        trusted_proxies: trusted_proxies.iter().map(|p| (*p).to_owned()).collect(),
        ..no_rate_limits()
    }
}

/// Behind a load balancer that appends the address it was reached from (nginx's
/// `$proxy_add_x_forwarded_for`), what the client wrote on the left changes nothing: the
/// right-most address that is not a trusted proxy is the one counted.
#[tokio::test]
async fn a_spoofed_forwarded_address_does_not_escape_the_sign_in_limit() {
    // The test's requests come from 127.0.0.1: the load balancer, as the server sees it.
    let t = with_limits(one_attempt_behind(&["127.0.0.1", "10.0.0.0/8"])).await;
    assert_eq!(forwarded_attempt(&t, "192.0.2.1, 203.0.113.7").await, 403);
    for n in 2..=8 {
        assert_eq!(
            forwarded_attempt(&t, &format!("192.0.2.{n}, 203.0.113.7")).await,
            429,
            "a client that picks its left-most address was let through"
        );
    }
    // Through a second proxy of ours, the same client is still the same.
    assert_eq!(
        forwarded_attempt(&t, "192.0.2.9, 203.0.113.7, 10.1.2.3").await,
        429
    );
    // Another client behind the same load balancer has its own budget.
    assert_eq!(forwarded_attempt(&t, "192.0.2.1, 203.0.113.8").await, 403);
    assert_eq!(forwarded_attempt(&t, "203.0.113.8").await, 429);
}

#[tokio::test]
async fn forwarded_addresses_are_read_only_from_a_trusted_peer() {
    // The peer (127.0.0.1) is not a proxy of ours: the header is the client's to write, and
    // every attempt comes from that one peer.
    let t = with_limits(one_attempt_behind(&["10.0.0.0/8"])).await;
    assert_eq!(forwarded_attempt(&t, "203.0.113.1").await, 403);
    assert_eq!(forwarded_attempt(&t, "203.0.113.2").await, 429);
    // None listed (the default): the same.
    let t = with_limits(one_attempt_behind(&[])).await;
    assert_eq!(forwarded_attempt(&t, "203.0.113.1").await, 403);
    assert_eq!(forwarded_attempt(&t, "203.0.113.2").await, 429);
}

/// `trust_forwarded_for`, replaced by `trusted_proxies`: `true` trusted the left-most address,
/// so it is refused with the way to the new key; `false` changed nothing and still starts,
/// with a warning, and the header stays unread.
#[tokio::test]
async fn the_old_trust_forwarded_for_key() {
    let mut file = grantkeeper_server::config::parse_config(
        "[provider]\nclient_id = \"id\"\nclient_secret = \"secret\"\n",
    )
    .unwrap();
    file.limits.trust_forwarded_for = Some(true);
    let e = Settings::from_file(&file, std::path::Path::new("/tmp")).unwrap_err();
    assert_eq!(e.key, "limits.trust_forwarded_for", "{e}");
    assert!(e.to_string().contains("limits.trusted_proxies"), "{e}");

    let t = with_limits(LimitsSection {
        trust_forwarded_for: Some(false),
        ..one_attempt_behind(&[])
    })
    .await;
    assert!(
        t.app.settings().warnings[0].contains("trust_forwarded_for is deprecated"),
        "{:?}",
        t.app.settings().warnings
    );
    assert_eq!(forwarded_attempt(&t, "203.0.113.1").await, 403);
    assert_eq!(forwarded_attempt(&t, "203.0.113.2").await, 429);
}

#[tokio::test]
async fn console_sign_in_attempts_are_limited_with_an_html_page() {
    let t = with_limits(LimitsSection {
        authcode_per_minute: Some(1),
        authcode_burst: Some(2),
        ..no_rate_limits()
    })
    .await;
    let attempt = || async {
        let r = t
            .http
            .post(format!("{}/admin/login", t.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("api_key=gk_guess&csrf=x")
            .send()
            .await
            .unwrap();
        Answer::from_response(r).await
    };
    for _ in 0..2 {
        // No double-submit cookie: refused, but counted.
        assert_eq!(attempt().await.status, 403);
    }
    let a = attempt().await;
    assert_eq!(a.status, 429, "{}", a.text);
    retry_after(&a);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"),
        "{:?}",
        a.headers
    );
    assert!(a.text.contains(r#"data-code="rate_limited""#), "{}", a.text);
    // `/authcode` shares the per-IP budget of sign-in attempts.
    cheap_attempt(&t).await.assert_error(429, "rate_limited");
}

#[tokio::test]
async fn each_api_key_has_its_own_limit() {
    let clock = ManualClock::new();
    let t = with_limits_on(
        LimitsSection {
            v1_per_second: Some(1),
            v1_burst: Some(2),
            ..no_rate_limits()
        },
        Some(clock.clone()),
    )
    .await;
    let busy = t.api_key(&[UsersRead]).await;
    let other = t.api_key(&[UsersRead]).await;
    let mut refused = None;
    for _ in 0..20 {
        let a = t.v1("GET", "/v1/users", Some(&busy), None).await;
        if a.status == 429 {
            refused = Some(a);
            break;
        }
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let refused = refused.expect("the burst of 2 was never exhausted");
    refused.assert_error(429, "rate_limited");
    let mut wait = retry_after(&refused);

    let a = t.v1("GET", "/v1/users", Some(&other), None).await;
    assert_eq!(a.status, 200, "the other key is not limited: {}", a.text);
    // Unauthenticated calls are refused as such, not counted against a key.
    t.v1("GET", "/v1/users", Some("gk_unknown"), None)
        .await
        .assert_error(401, "unauthorized");

    let mut answer = None;
    for _ in 0..10 {
        wait_out(&clock, wait);
        let a = t.v1("GET", "/v1/users", Some(&busy), None).await;
        if a.status != 429 {
            answer = Some(a);
            break;
        }
        wait = retry_after(&a);
    }
    let answer = answer.expect("the key was never allowed again");
    assert_eq!(answer.status, 200, "{}", answer.text);
}

#[tokio::test]
async fn a_rate_of_zero_turns_the_limits_off() {
    let t = with_limits(LimitsSection {
        authcode_per_minute: Some(0),
        authcode_burst: Some(1),
        v1_per_second: Some(0),
        v1_burst: Some(1),
        ..LimitsSection::default()
    })
    .await;
    for _ in 0..30 {
        cheap_attempt(&t).await.assert_error(403, "csrf");
    }
    let key = t.api_key(&[UsersRead]).await;
    for _ in 0..30 {
        let a = t.v1("GET", "/v1/users", Some(&key), None).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
}

#[tokio::test]
async fn a_proxied_body_over_the_limit_is_refused_with_413() {
    let t = with_limits(LimitsSection {
        proxy_body_limit: Some(1024),
        ..no_rate_limits()
    })
    .await;
    let sub = t.signed_in("big@example.com").await;
    let key = t.api_key(&[Proxy]).await;
    let url = format!("{}/v1/users/{sub}/google/upload/drive/v3/files", t.url);

    // Declared by Content-Length: refused before anything is read.
    let r = t
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/octet-stream")
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap();
    Answer::from_response(r)
        .await
        .assert_error(413, "payload_too_large");

    // Streamed without a length: refused once read past the limit.
    let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(vec![b'b'; 1024]));
    let r = t
        .http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    Answer::from_response(r)
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(
        t.stats().await["drive_requests"],
        0,
        "nothing went upstream"
    );

    // Within the limit, the call goes through to the API.
    let r = t
        .http
        .get(format!(
            "{}/v1/users/{sub}/google/drive/v3/files?spaces=appDataFolder",
            t.url
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

//! A running emulator and typed helpers to talk to it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_core::{ExposeSecret, ManualClock, SharedClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

pub const DRIVE_APPDATA: &str = "https://www.googleapis.com/auth/drive.appdata";
pub const DRIVE_FILE: &str = "https://www.googleapis.com/auth/drive.file";
pub const EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";
pub const PROFILE: &str = "https://www.googleapis.com/auth/userinfo.profile";

pub struct TestEmu {
    pub emu: Emulator,
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub web_id: String,
    pub web_secret: String,
    server: tokio::task::JoinHandle<()>,
}

/// A response's status, headers and body (JSON when it parses, else a string; the raw bytes
/// too).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub async fn from(res: reqwest::Response) -> Answer {
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap().to_vec();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
            bytes,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn str(&self, field: &str) -> &str {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {}", self.text))
    }

    /// Asserts an OAuth error answer.
    pub fn assert_error(&self, status: u16, error: &str, description: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.body["error"], error, "{}", self.text);
        if let Some(d) = description {
            assert_eq!(self.body["error_description"], d, "{}", self.text);
        }
    }
}

impl TestEmu {
    pub async fn start() -> TestEmu {
        Self::start_with(None, true).await
    }

    pub async fn start_with(data_dir: Option<PathBuf>, control_api: bool) -> TestEmu {
        Self::launch(data_dir, control_api, "").await
    }

    /// An emulator whose base URL has a path, `prefix` (e.g. `/_google`), as when it is
    /// mounted inside another server.
    pub async fn start_under(prefix: &str) -> TestEmu {
        Self::launch(None, true, prefix).await
    }

    async fn launch(data_dir: Option<PathBuf>, control_api: bool, prefix: &str) -> TestEmu {
        let clock = ManualClock::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}{prefix}");
        let shared: SharedClock = clock.clone();
        let emu = Emulator::open(EmulatorOptions {
            base_url: base.parse().unwrap(),
            data_dir,
            clock: shared,
            control_api,
        })
        .await
        .unwrap();
        let router = if prefix.is_empty() {
            emu.router()
        } else {
            axum::Router::new().nest(prefix, emu.router())
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let web = emu.web_client();
        TestEmu {
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            clock,
            web_id: web.client_id.clone(),
            web_secret: web.client_secret.expose_secret().to_owned(),
            emu,
            server,
        }
    }

    /// Stops serving and drops the emulator, as a process exit would.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        drop(self.emu);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::from(self.http.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Answer {
        Answer::from(
            self.http
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn put_json(&self, path: &str, body: Value) -> Answer {
        Answer::from(
            self.http
                .put(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        Answer::from(
            self.http
                .post(self.url(path))
                .form(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn settings(&self, patch: Value) {
        let a = self.put_json("/_emulator/settings", patch).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }

    pub async fn faults(&self, config: Value) {
        let a = self.put_json("/_emulator/faults", config).await;
        assert_eq!(a.status, 200, "{}", a.text);
    }

    /// Mints a code through the control API.
    pub async fn code(&self, req: Value) -> String {
        let a = self.post_json("/_emulator/codes", req).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.str("code").to_owned()
    }

    /// A GIS popup code for `email` with `scope`.
    pub async fn popup_code(&self, email: &str, scope: &str) -> String {
        self.code(json!({"email": email, "scope": scope, "redirect_uri": "postmessage"}))
            .await
    }

    /// Exchanges a code as the web client with form credentials.
    pub async fn exchange(&self, code: &str, redirect_uri: &str) -> Answer {
        self.post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", &self.web_id),
                ("client_secret", &self.web_secret),
                ("redirect_uri", redirect_uri),
            ],
        )
        .await
    }

    /// Mints a popup code and exchanges it; the token answer.
    pub async fn sign_in(&self, email: &str, scope: &str) -> Answer {
        let code = self.popup_code(email, scope).await;
        let a = self.exchange(&code, "postmessage").await;
        assert_eq!(a.status, 200, "{}", a.text);
        a
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &self.web_id),
                ("client_secret", &self.web_secret),
            ],
        )
        .await
    }

    pub async fn userinfo(&self, access_token: &str) -> Answer {
        Answer::from(
            self.http
                .get(self.url("/oauth2/v3/userinfo"))
                .bearer_auth(access_token)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn jwks(&self) -> JwkSet {
        let a = self.get("/oauth2/v3/certs").await;
        assert_eq!(a.status, 200);
        serde_json::from_value(a.body).unwrap()
    }

    /// Verifies an ID token as grantkeeper will: RS256 by kid from the JWK set, `aud` = the web
    /// client, `iss` = the base URL, not expired. Returns the claims.
    pub async fn verify_id_token(&self, token: &str) -> Value {
        verify_with_jwks(token, &self.jwks().await, &self.web_id, &[&self.base])
    }

    pub async fn stats(&self) -> Value {
        self.get("/_emulator/stats").await.body
    }
}

pub fn verify_with_jwks(token: &str, jwks: &JwkSet, aud: &str, iss: &[&str]) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid");
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} not published"));
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[aud]);
    v.set_issuer(iss);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims
}

/// The decoded header and claims of a JWT, without verifying anything.
pub fn peek(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let h = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    let c = URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&c).unwrap(),
    )
}

/// The space-separated scope string as a sorted list.
pub fn scope_set(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_ascii_whitespace().map(str::to_owned).collect();
    v.sort();
    v
}

pub fn sorted(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

pub fn now() -> i64 {
    use grantkeeper_core::Clock;
    grantkeeper_core::SystemClock.unix()
}

/// A Drive API caller: one user's access token against a running emulator.
pub struct Drive<'a> {
    pub t: &'a TestEmu,
    pub token: Option<String>,
}

pub const MULTIPART_BOUNDARY: &str = "grantkeeper-test-boundary";

impl TestEmu {
    /// Signs `email` in with `scope` and answers a Drive caller holding the access token.
    pub async fn drive(&self, email: &str, scope: &str) -> Drive<'_> {
        let a = self.sign_in(email, scope).await;
        Drive {
            t: self,
            token: Some(a.str("access_token").to_owned()),
        }
    }

    /// A Drive caller that sends no Authorization header, or the given token.
    pub fn drive_with(&self, token: Option<&str>) -> Drive<'_> {
        Drive {
            t: self,
            token: token.map(str::to_owned),
        }
    }
}

impl Drive<'_> {
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.t.http.request(method, self.t.url(path));
        match &self.token {
            Some(tok) => r.bearer_auth(tok),
            None => r,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        Answer::from(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    /// `GET /drive/v3/files` with the given query string.
    pub async fn list(&self, query: &[(&str, &str)]) -> Answer {
        self.send(
            self.req(reqwest::Method::GET, "/drive/v3/files")
                .query(query),
        )
        .await
    }

    /// Metadata-only create.
    pub async fn create(&self, metadata: Value, query: &[(&str, &str)]) -> Answer {
        self.send(
            self.req(reqwest::Method::POST, "/drive/v3/files")
                .query(query)
                .json(&metadata),
        )
        .await
    }

    /// Metadata-only create in appDataFolder; the new file's id.
    pub async fn create_app_data(&self, name: &str) -> String {
        let a = self
            .create(json!({"name": name, "parents": ["appDataFolder"]}), &[])
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.str("id").to_owned()
    }

    /// `POST /upload/drive/v3/files?uploadType=multipart`.
    pub async fn upload_multipart(
        &self,
        metadata: Value,
        media_type: &str,
        content: &[u8],
        query: &[(&str, &str)],
    ) -> Answer {
        self.send(
            self.req(reqwest::Method::POST, "/upload/drive/v3/files")
                .query(&[("uploadType", "multipart")])
                .query(query)
                .header(
                    "content-type",
                    format!("multipart/related; boundary={MULTIPART_BOUNDARY}"),
                )
                .body(multipart_body(&metadata, media_type, content)),
        )
        .await
    }

    /// `PATCH /drive/v3/files/{id}` with a metadata body.
    pub async fn patch(&self, id: &str, metadata: Value, query: &[(&str, &str)]) -> Answer {
        self.send(
            self.req(reqwest::Method::PATCH, &format!("/drive/v3/files/{id}"))
                .query(query)
                .json(&metadata),
        )
        .await
    }

    /// `PATCH /upload/drive/v3/files/{id}?uploadType=media`.
    pub async fn patch_content(
        &self,
        id: &str,
        media_type: &str,
        content: Vec<u8>,
        query: &[(&str, &str)],
    ) -> Answer {
        self.send(
            self.req(
                reqwest::Method::PATCH,
                &format!("/upload/drive/v3/files/{id}"),
            )
            .query(&[("uploadType", "media")])
            .query(query)
            .header("content-type", media_type)
            .body(content),
        )
        .await
    }

    pub async fn download(&self, id: &str) -> Answer {
        self.get(&format!("/drive/v3/files/{id}?alt=media")).await
    }

    pub async fn delete(&self, id: &str) -> Answer {
        self.send(self.req(reqwest::Method::DELETE, &format!("/drive/v3/files/{id}")))
            .await
    }
}

/// A `multipart/related` body as Google's client libraries send it.
pub fn multipart_body(metadata: &Value, media_type: &str, content: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{MULTIPART_BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
         --{MULTIPART_BOUNDARY}\r\nContent-Type: {media_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{MULTIPART_BOUNDARY}--\r\n").as_bytes());
    body
}

/// The ids of a FileList's files, in order.
pub fn ids(list: &Answer) -> Vec<String> {
    list.body["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files in {}", list.text))
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts a Drive error answer: status, `errors[0].reason` and the message.
pub fn assert_drive_error(a: &Answer, status: u16, reason: &str, message: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.text);
    assert_eq!(a.body["error"]["code"], status, "{}", a.text);
    assert_eq!(a.body["error"]["message"], message, "{}", a.text);
    assert_eq!(a.body["error"]["errors"][0]["reason"], reason, "{}", a.text);
}

/// Hex MD5 of a byte string, computed the way the test expects Google to.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(data))
}

//! The Google emulator on 127.0.0.1:0 with a Cloud KMS key and a service account.

use grantkeeper_core::{ManualClock, SharedClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_keysource::{CloudKms, Credentials};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

pub const KEY: &str = "projects/demo/locations/global/keyRings/grantkeeper/cryptoKeys/master";

pub struct Emu {
    pub base: String,
    pub host: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
    _emu: Emulator,
}

impl Emu {
    /// An emulator with the key [`KEY`].
    pub async fn start() -> Emu {
        let clock = ManualClock::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let shared: SharedClock = clock.clone();
        let emu = Emulator::open(EmulatorOptions {
            base_url: base.parse().unwrap(),
            data_dir: None,
            clock: shared,
            control_api: true,
        })
        .await
        .unwrap();
        let router = emu.router();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        let emu = Emu {
            base,
            host: addr.to_string(),
            http: reqwest::Client::new(),
            clock,
            dir: tempfile::tempdir().unwrap(),
            server,
            _emu: emu,
        };
        emu.post("/_emulator/kms/keys", json!({"name": KEY}), 201)
            .await;
        emu
    }

    /// Stops answering: connections are refused from now on.
    pub async fn stop(&self) {
        self.server.abort();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    pub async fn post(&self, path: &str, body: Value, status: u16) -> Value {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(&body),
            status,
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Value {
        self.send(
            self.http.put(format!("{}{path}", self.base)).json(&body),
            200,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("{}{path}", self.base)), 200)
            .await
    }

    async fn send(&self, req: reqwest::RequestBuilder, status: u16) -> Value {
        let res = req.send().await.unwrap();
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A new service account's key file, written in the test's directory.
    pub async fn key_file(&self, name: &str) -> (PathBuf, Value) {
        let file = self
            .post("/_emulator/service-accounts", json!({"name": name}), 201)
            .await;
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        (path, file)
    }

    /// A client of [`KEY`] with a new service account's key file.
    pub async fn client(&self) -> (CloudKms, Value) {
        let (path, file) = self.key_file("grantkeeper").await;
        let credentials = Credentials::key_file(&path, "GOOGLE_APPLICATION_CREDENTIALS").unwrap();
        (self.kms(KEY, credentials), file)
    }

    pub fn kms(&self, key: &str, credentials: Credentials) -> CloudKms {
        CloudKms::new(key, &self.base, credentials, self.clock.clone()).unwrap()
    }

    /// Calls to Cloud KMS so far, answered or not.
    pub async fn kms_requests(&self) -> u64 {
        self.get("/_emulator/stats").await["kms_requests"]
            .as_u64()
            .unwrap()
    }

    pub async fn tokens_issued(&self) -> u64 {
        self.get("/_emulator/stats").await["service_account_tokens"]
            .as_u64()
            .unwrap()
    }
}

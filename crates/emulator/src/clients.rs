//! The emulator's one "project" and its OAuth clients: a web client with a secret, an Android
//! and an iOS client id, and any further clients a test registers. Ids and secrets are created
//! once and kept in `DIR/emulator/clients.json`, so that a restarted emulator is the same
//! project to the apps configured against it.

use crate::util::{self, write_private};
use grantkeeper_core::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A client id and its secret, as Google's console shows a web client.
#[derive(Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ClientKind {
    Web,
    Android,
    Ios,
}

impl ClientKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClientKind::Web => "web",
            ClientKind::Android => "android",
            ClientKind::Ios => "ios",
        }
    }
}

/// One registered client.
pub(crate) struct Client {
    pub(crate) id: Arc<str>,
    pub(crate) kind: ClientKind,
    pub(crate) secret: Option<SecretString>,
    /// Registered beyond the defaults that follow the emulator's base URL.
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) javascript_origins: Vec<String>,
}

/// On-disk form of a client. The secret is on disk as Google keeps it: the app needs it back.
#[derive(Serialize, Deserialize)]
struct ClientFile {
    client_id: String,
    #[serde(rename = "type")]
    kind: ClientKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    javascript_origins: Vec<String>,
}

/// The name a project's OAuth consent screen shows (Google's "App name"), when its clients
/// file names none.
pub(crate) const APP_NAME: &str = "grantkeeper demo";

fn app_name() -> String {
    APP_NAME.to_owned()
}

#[derive(Serialize, Deserialize)]
struct ProjectFile {
    project_id: String,
    /// Older files have none: they get [`APP_NAME`].
    #[serde(default = "app_name")]
    app_name: String,
    project_number: String,
    web: String,
    android: String,
    ios: String,
    clients: Vec<ClientFile>,
}

pub(crate) struct Clients {
    pub(crate) project_id: String,
    /// What the consent page calls the app.
    pub(crate) app_name: String,
    project_number: String,
    pub(crate) web: Arc<str>,
    pub(crate) android: Arc<str>,
    pub(crate) ios: Arc<str>,
    /// In creation order; `by_id` indexes it.
    list: Vec<Client>,
    by_id: HashMap<Arc<str>, usize>,
    path: Option<PathBuf>,
}

fn new_client(project_number: &str, kind: ClientKind) -> Client {
    let id = format!(
        "{project_number}-{}.apps.googleusercontent.com",
        util::lower_alnum(32)
    );
    let secret = (kind == ClientKind::Web).then(|| {
        // 21 random bytes are 28 base64url characters, the length of Google's secrets.
        SecretString::from(format!(
            "GOCSPX-{}",
            grantkeeper_core::random::token::<21>()
        ))
    });
    Client {
        id: Arc::from(id),
        kind,
        secret,
        redirect_uris: Vec::new(),
        javascript_origins: Vec::new(),
    }
}

impl Clients {
    /// Loads the project from `dir/clients.json`, or creates it (and saves it when `dir` is set).
    pub(crate) fn open(dir: Option<&Path>) -> anyhow::Result<Clients> {
        let path = dir.map(|d| d.join("clients.json"));
        if let Some(p) = path.as_deref().filter(|p| p.exists()) {
            let raw = std::fs::read(p)?;
            let file: ProjectFile = serde_json::from_slice(&raw)
                .map_err(|e| anyhow::anyhow!("{} is not a valid clients file: {e}", p.display()))?;
            let mut clients = Clients {
                project_id: file.project_id,
                app_name: file.app_name,
                project_number: file.project_number,
                web: Arc::from(file.web),
                android: Arc::from(file.android),
                ios: Arc::from(file.ios),
                list: Vec::new(),
                by_id: HashMap::new(),
                path: path.clone(),
            };
            for c in file.clients {
                clients.push(Client {
                    id: Arc::from(c.client_id),
                    kind: c.kind,
                    secret: c.client_secret.map(SecretString::from),
                    redirect_uris: c.redirect_uris,
                    javascript_origins: c.javascript_origins,
                });
            }
            for id in [&clients.web, &clients.android, &clients.ios] {
                if !clients.by_id.contains_key(id) {
                    anyhow::bail!("{} lacks the client {id}", p.display());
                }
            }
            return Ok(clients);
        }
        let project_number = util::digits(12);
        let web = new_client(&project_number, ClientKind::Web);
        let android = new_client(&project_number, ClientKind::Android);
        let ios = new_client(&project_number, ClientKind::Ios);
        let mut clients = Clients {
            project_id: format!("grantkeeper-emulator-{}", util::digits(6)),
            app_name: app_name(),
            web: web.id.clone(),
            android: android.id.clone(),
            ios: ios.id.clone(),
            project_number,
            list: Vec::new(),
            by_id: HashMap::new(),
            path,
        };
        clients.push(web);
        clients.push(android);
        clients.push(ios);
        clients.save()?;
        Ok(clients)
    }

    fn push(&mut self, client: Client) {
        self.by_id.insert(client.id.clone(), self.list.len());
        self.list.push(client);
    }

    fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = ProjectFile {
            project_id: self.project_id.clone(),
            app_name: self.app_name.clone(),
            project_number: self.project_number.clone(),
            web: self.web.to_string(),
            android: self.android.to_string(),
            ios: self.ios.to_string(),
            clients: self
                .list
                .iter()
                .map(|c| ClientFile {
                    client_id: c.id.to_string(),
                    kind: c.kind,
                    client_secret: c.secret.as_ref().map(|s| s.expose_secret().to_owned()),
                    redirect_uris: c.redirect_uris.clone(),
                    javascript_origins: c.javascript_origins.clone(),
                })
                .collect(),
        };
        write_private(path, &serde_json::to_vec_pretty(&file)?)?;
        Ok(())
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Client> {
        self.by_id.get(id).and_then(|&i| self.list.get(i))
    }

    pub(crate) fn web_client(&self) -> OAuthClient {
        let secret = self
            .get(&self.web)
            .and_then(|c| c.secret.clone())
            .unwrap_or_else(|| SecretString::from(String::new()));
        OAuthClient {
            client_id: self.web.to_string(),
            client_secret: secret,
        }
    }

    /// Registers a new client of the project and saves the project.
    pub(crate) fn create(
        &mut self,
        kind: ClientKind,
        redirect_uris: Vec<String>,
        javascript_origins: Vec<String>,
    ) -> anyhow::Result<&Client> {
        let mut client = new_client(&self.project_number, kind);
        client.redirect_uris = redirect_uris;
        client.javascript_origins = javascript_origins;
        let id = client.id.clone();
        self.push(client);
        self.save()?;
        self.get(&id)
            .ok_or_else(|| anyhow::anyhow!("client vanished after creation"))
    }

    /// Replaces the extra redirect URIs and JavaScript origins of a client.
    pub(crate) fn update(
        &mut self,
        id: &str,
        redirect_uris: Option<Vec<String>>,
        javascript_origins: Option<Vec<String>>,
    ) -> anyhow::Result<Option<&Client>> {
        let Some(&i) = self.by_id.get(id) else {
            return Ok(None);
        };
        if let Some(c) = self.list.get_mut(i) {
            if let Some(r) = redirect_uris {
                c.redirect_uris = r;
            }
            if let Some(o) = javascript_origins {
                c.javascript_origins = o;
            }
        }
        self.save()?;
        Ok(self.list.get(i))
    }

    pub(crate) fn others(&self) -> impl Iterator<Item = &Client> {
        self.list
            .iter()
            .filter(|c| c.id != self.web && c.id != self.android && c.id != self.ios)
    }

    /// True for the native (Android or iOS) clients that may present codes of this project.
    pub(crate) fn is_native(&self, id: &str) -> bool {
        self.get(id)
            .is_some_and(|c| matches!(c.kind, ClientKind::Android | ClientKind::Ios))
    }
}

impl Client {
    /// Redirect URIs the consent page accepts: the default one at the emulator's origin plus
    /// any registered through the control API.
    pub(crate) fn accepts_redirect(&self, base_origin: &str, uri: &str) -> bool {
        default_redirect_uris(base_origin).iter().any(|d| d == uri)
            || self.redirect_uris.iter().any(|r| r == uri)
    }

    pub(crate) fn all_redirect_uris(&self, base_origin: &str) -> Vec<String> {
        let mut all = default_redirect_uris(base_origin);
        all.extend(self.redirect_uris.iter().cloned());
        all
    }

    pub(crate) fn all_javascript_origins(&self, base_origin: &str) -> Vec<String> {
        let mut all = vec![base_origin.to_owned()];
        all.extend(self.javascript_origins.iter().cloned());
        all
    }

    pub(crate) fn to_json(&self, with_secret: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "client_id": &*self.id,
            "type": self.kind.as_str(),
            "redirect_uris": self.redirect_uris,
            "javascript_origins": self.javascript_origins,
        });
        if let (true, Some(secret), Some(obj)) = (with_secret, &self.secret, v.as_object_mut()) {
            obj.insert(
                "client_secret".into(),
                secret.expose_secret().to_owned().into(),
            );
        }
        v
    }
}

/// The redirect URI every web client of the emulator has registered: a callback on the origin
/// the emulator is served from (the dev server's own origin when it is nested there).
pub(crate) fn default_redirect_uris(base_origin: &str) -> Vec<String> {
    vec![format!("{base_origin}/oauth2/callback")]
}

//! What the emulator remembers about users, grants, codes and tokens, and the rules Google
//! applies to them: single-use codes bound to client, redirect URI and PKCE; one refresh token
//! per first offline consent; the per (user, client) cap; testing-mode and idle expiry; whole
//! grant revocation. The Drive files of each user live in [`drive`], journaled the same way.
//!
//! Every change is an [`Event`]: applied to the in-memory maps and, with a data dir, appended
//! to a JSON-lines journal that is replayed (and compacted) at open. Codes and tokens are only
//! ever held as SHA-256 hashes, in memory as on disk; the tokens themselves go to the caller.
//! All operations are O(1) hash map work apart from walks bounded by the refresh token cap.

mod drive;

pub(crate) use drive::{FOLDER_MIME, FileMeta, Space};

use crate::error::OAuthError;
use crate::settings::Settings;
use crate::util::{self, Hash};
use grantkeeper_core::Scopes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A refresh token not used for six months stops working.
pub(crate) const IDLE_EXPIRY_SECS: i64 = 182 * 86_400;
/// Refresh tokens of an app in testing mode die a week after consent.
pub(crate) const TESTING_MODE_SECS: i64 = 7 * 86_400;
/// Last use of a refresh token is journaled at this granularity, far below the idle expiry.
const USE_JOURNAL_SECS: i64 = 86_400;
/// Expired codes and access tokens are forgotten this long after they expire.
const FORGET_AFTER_SECS: i64 = 3_600;

/// A SHA-256 that the journal writes in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct HexHash(pub(crate) Hash);

impl Serialize for HexHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for HexHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        <[u8; 32] as hex::FromHex>::from_hex(&s)
            .ok()
            .map(HexHash)
            .ok_or_else(|| serde::de::Error::custom("not a hex SHA-256"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum PkceMethod {
    S256,
    #[serde(rename = "plain")]
    Plain,
}

impl PkceMethod {
    pub(crate) fn parse(s: Option<&str>) -> Option<PkceMethod> {
        match s {
            None | Some("plain") => Some(PkceMethod::Plain),
            Some("S256") => Some(PkceMethod::S256),
            Some(_) => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Pkce {
    pub(crate) challenge: String,
    pub(crate) method: PkceMethod,
}

impl Pkce {
    fn accepts(&self, verifier: &str) -> bool {
        match self.method {
            PkceMethod::Plain => verifier == self.challenge,
            PkceMethod::S256 => util::b64url(&util::sha256(verifier.as_bytes())) == self.challenge,
        }
    }
}

/// One change of state, as journaled.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Event {
    Code {
        h: HexHash,
        client: String,
        azp: Option<String>,
        email: String,
        scope: String,
        redirect: String,
        offline: bool,
        consent: bool,
        incl: bool,
        pkce: Option<Pkce>,
        nonce: Option<String>,
        exp: i64,
    },
    CodeUsed {
        h: HexHash,
    },
    Grant {
        id: u64,
        email: String,
        client: String,
        scope: String,
        offline: bool,
    },
    Revoke {
        id: u64,
        email: String,
        client: String,
    },
    Rt {
        h: HexHash,
        id: u64,
        email: String,
        client: String,
        iat: i64,
        exp: Option<i64>,
    },
    RtUsed {
        h: HexHash,
        at: i64,
    },
    RtDead {
        h: HexHash,
    },
    At {
        h: HexHash,
        id: u64,
        email: String,
        client: String,
        azp: String,
        scope: String,
        exp: i64,
        offline: bool,
    },
    /// A Drive file created or changed: its whole metadata.
    DriveFile {
        email: String,
        file: FileMeta,
    },
    DriveDel {
        email: String,
        id: String,
    },
}

/// A code about to be minted.
pub(crate) struct NewCode {
    /// The client that will exchange it (a web client for native codes too).
    pub(crate) client: String,
    /// The native client that presented it, for `azp`.
    pub(crate) azp: Option<String>,
    pub(crate) email: String,
    pub(crate) scopes: Scopes,
    /// What the exchange must send: `postmessage`, `""` or the exact URI.
    pub(crate) redirect: String,
    pub(crate) offline: bool,
    pub(crate) consent: bool,
    pub(crate) include_granted: bool,
    pub(crate) pkce: Option<Pkce>,
    pub(crate) nonce: Option<String>,
}

/// The parts of an exchange request the rules look at.
pub(crate) struct Exchange<'a> {
    pub(crate) client: &'a str,
    pub(crate) code: &'a Hash,
    pub(crate) redirect_uri: Option<&'a str>,
    pub(crate) verifier: Option<&'a str>,
}

/// What a code redeemed grants: the parts of its record an exchange goes on with.
struct Redeemed {
    email: Arc<str>,
    client: Arc<str>,
    azp: Arc<str>,
    scopes: Scopes,
    offline: bool,
    consent: bool,
    include_granted: bool,
    nonce: Option<String>,
}

/// Hashes of the tokens the caller minted for this operation.
pub(crate) struct Fresh {
    pub(crate) access: Hash,
    pub(crate) refresh: Hash,
}

/// What a successful exchange or refresh granted.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) scopes: Arc<Scopes>,
    pub(crate) refresh_issued: bool,
    pub(crate) email: Arc<str>,
    pub(crate) client: Arc<str>,
    pub(crate) azp: Arc<str>,
    pub(crate) nonce: Option<String>,
}

/// What an access token stands for.
pub(crate) struct AccessView {
    pub(crate) email: Arc<str>,
    pub(crate) client: Arc<str>,
    pub(crate) azp: Arc<str>,
    pub(crate) scopes: Arc<Scopes>,
    pub(crate) exp: i64,
    pub(crate) offline: bool,
}

#[derive(Default, Serialize, Clone)]
pub(crate) struct Stats {
    pub(crate) code_exchanges: u64,
    pub(crate) refreshes: u64,
    pub(crate) refresh_tokens_issued: u64,
    pub(crate) revocations: u64,
    pub(crate) refreshes_by_email: HashMap<String, u64>,
    /// Refreshes by the Unix second (of the emulator's clock) they were answered in: what a
    /// test of a rate budget counts.
    pub(crate) refreshes_by_second: std::collections::BTreeMap<i64, u64>,
    pub(crate) drive_requests_by_email: HashMap<String, u64>,
}

struct Grant {
    id: u64,
    scopes: Arc<Scopes>,
    offline: bool,
    /// Live refresh tokens, oldest first: the cap kills from the front.
    refresh: VecDeque<Hash>,
}

struct User {
    email: Arc<str>,
    grants: HashMap<Arc<str>, Grant>,
}

struct CodeRec {
    client: Arc<str>,
    azp: Option<Arc<str>>,
    email: Arc<str>,
    scopes: Scopes,
    redirect: String,
    offline: bool,
    consent: bool,
    include_granted: bool,
    pkce: Option<Pkce>,
    nonce: Option<String>,
    exp: i64,
    used: bool,
}

struct RefreshRec {
    grant: u64,
    email: Arc<str>,
    client: Arc<str>,
    iat: i64,
    last_used: i64,
    used_journaled: i64,
    exp: Option<i64>,
}

impl RefreshRec {
    fn alive(&self, now: i64) -> bool {
        self.exp.is_none_or(|e| now < e) && now - self.last_used < IDLE_EXPIRY_SECS
    }
}

struct AccessRec {
    grant: u64,
    email: Arc<str>,
    client: Arc<str>,
    azp: Arc<str>,
    scopes: Arc<Scopes>,
    exp: i64,
    offline: bool,
}

/// The journal is rewritten with only the live state once it holds this many events more
/// than twice the live state: amortised O(1) per event, and a bounded file under load.
const MIN_COMPACTION_EVENTS: u64 = 100_000;

/// The journal file, one JSON event per line.
struct Journal {
    file: std::fs::File,
    path: PathBuf,
    appended: u64,
    compact_after: u64,
}

impl Journal {
    fn append(&mut self, event: &Event) {
        let mut line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a journal event");
                return;
            }
        };
        line.push(b'\n');
        // One write per event: O(1), and complete lines survive a process exit. No fsync:
        // the emulator is a development tool, not a bank.
        if let Err(e) = self.file.write_all(&line) {
            tracing::error!(error = %e, "cannot append to the emulator journal");
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    users: HashMap<Arc<str>, User>,
    codes: HashMap<Hash, CodeRec>,
    code_expiry: VecDeque<(i64, Hash)>,
    refresh: HashMap<Hash, RefreshRec>,
    access: HashMap<Hash, AccessRec>,
    access_expiry: VecDeque<(i64, Hash)>,
    next_grant: u64,
    drive: drive::DriveState,
    pub(crate) stats: Stats,
    journal: Option<Journal>,
    /// The latest "now" an operation ran at, for compactions triggered by an append.
    last_now: i64,
    compaction_floor: u64,
}

impl State {
    /// Replays `dir/journal.jsonl`, rewrites it with only what is still alive, and keeps it
    /// open for appending. Without `dir` the state lives in memory only.
    pub(crate) fn open(dir: Option<&Path>, now: i64) -> anyhow::Result<State> {
        let mut state = State {
            next_grant: 1,
            compaction_floor: MIN_COMPACTION_EVENTS,
            ..State::default()
        };
        let Some(dir) = dir else {
            return Ok(state);
        };
        let path = dir.join("journal.jsonl");
        if path.exists() {
            let file = std::fs::File::open(&path)?;
            let mut bad = 0usize;
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Event>(&line) {
                    Ok(ev) => state.apply(ev),
                    // A line cut short by a crash: skip it and keep the rest.
                    Err(_) => bad += 1,
                }
            }
            if bad > 0 {
                tracing::warn!(lines = bad, "skipped unreadable emulator journal lines");
            }
        }
        state.prune(now);
        state.drive.load_blobs(dir)?;
        state.compact(&path, now)?;
        Ok(state)
    }

    fn compact(&mut self, path: &Path, now: i64) -> anyhow::Result<()> {
        let tmp: PathBuf = path.with_extension("jsonl.tmp");
        let snapshot = self.snapshot(now);
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut out = std::io::BufWriter::new(options.open(&tmp)?);
            for ev in &snapshot {
                serde_json::to_writer(&mut out, ev)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        self.journal = Some(Journal {
            file,
            path: path.to_path_buf(),
            appended: 0,
            compact_after: self.compaction_floor.max(2 * snapshot.len() as u64),
        });
        Ok(())
    }

    /// The events that rebuild the live part of the state.
    fn snapshot(&self, now: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for (h, c) in &self.codes {
            if c.exp <= now {
                continue;
            }
            out.push(Event::Code {
                h: HexHash(*h),
                client: c.client.to_string(),
                azp: c.azp.as_deref().map(str::to_owned),
                email: c.email.to_string(),
                scope: c.scopes.to_string(),
                redirect: c.redirect.clone(),
                offline: c.offline,
                consent: c.consent,
                incl: c.include_granted,
                pkce: c.pkce.clone(),
                nonce: c.nonce.clone(),
                exp: c.exp,
            });
            if c.used {
                out.push(Event::CodeUsed { h: HexHash(*h) });
            }
        }
        for user in self.users.values() {
            for (client, g) in &user.grants {
                out.push(Event::Grant {
                    id: g.id,
                    email: user.email.to_string(),
                    client: client.to_string(),
                    scope: g.scopes.to_string(),
                    offline: g.offline,
                });
                for h in &g.refresh {
                    let Some(r) = self.refresh.get(h) else {
                        continue;
                    };
                    if !r.alive(now) {
                        continue;
                    }
                    out.push(Event::Rt {
                        h: HexHash(*h),
                        id: g.id,
                        email: user.email.to_string(),
                        client: client.to_string(),
                        iat: r.iat,
                        exp: r.exp,
                    });
                    if r.last_used != r.iat {
                        out.push(Event::RtUsed {
                            h: HexHash(*h),
                            at: r.last_used,
                        });
                    }
                }
            }
        }
        for (h, a) in &self.access {
            if a.exp <= now || !self.grant_is(&a.email, &a.client, a.grant) {
                continue;
            }
            out.push(Event::At {
                h: HexHash(*h),
                id: a.grant,
                email: a.email.to_string(),
                client: a.client.to_string(),
                azp: a.azp.to_string(),
                scope: a.scopes.to_string(),
                exp: a.exp,
                offline: a.offline,
            });
        }
        self.drive.snapshot(&mut out);
        out
    }

    /// Applies and journals one event.
    fn commit(&mut self, event: Event) {
        let mut due = None;
        if let Some(j) = &mut self.journal {
            j.append(&event);
            j.appended += 1;
            if j.appended >= j.compact_after {
                due = Some(j.path.clone());
            }
        }
        self.apply(event);
        if let Some(path) = due
            && let Err(e) = self.compact(&path, self.last_now)
        {
            tracing::error!(error = %e, "cannot compact the emulator journal");
            if let Some(j) = &mut self.journal {
                j.appended = 0;
            }
        }
    }

    fn user_mut(&mut self, email: &str) -> &mut User {
        self.users
            .entry(Arc::from(email))
            .or_insert_with_key(|k| User {
                email: k.clone(),
                grants: HashMap::new(),
            })
    }

    fn intern_email(&mut self, email: &str) -> Arc<str> {
        self.user_mut(email).email.clone()
    }

    fn grant_is(&self, email: &str, client: &str, id: u64) -> bool {
        self.users
            .get(email)
            .and_then(|u| u.grants.get(client))
            .is_some_and(|g| g.id == id)
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Code {
                h,
                client,
                azp,
                email,
                scope,
                redirect,
                offline,
                consent,
                incl,
                pkce,
                nonce,
                exp,
            } => {
                let email = self.intern_email(&email);
                let code = CodeRec {
                    client: Arc::from(client),
                    azp: azp.map(Arc::from),
                    email,
                    scopes: Scopes::parse(&scope),
                    redirect,
                    offline,
                    consent,
                    include_granted: incl,
                    pkce,
                    nonce,
                    exp,
                    used: false,
                };
                self.codes.insert(h.0, code);
                self.code_expiry.push_back((exp, h.0));
            }
            Event::CodeUsed { h } => {
                if let Some(c) = self.codes.get_mut(&h.0) {
                    c.used = true;
                }
            }
            Event::Grant {
                id,
                email,
                client,
                scope,
                offline,
            } => self.apply_grant(id, &email, client, &scope, offline),
            Event::Revoke { id, email, client } => self.apply_revoke(id, &email, &client),
            Event::Rt {
                h,
                id,
                email,
                client,
                iat,
                exp,
            } => self.apply_refresh_token(h.0, id, &email, &client, iat, exp),
            Event::RtUsed { h, at } => {
                if let Some(r) = self.refresh.get_mut(&h.0) {
                    r.last_used = r.last_used.max(at);
                    r.used_journaled = r.last_used;
                }
            }
            Event::RtDead { h } => self.apply_refresh_token_dead(&h.0),
            Event::At {
                h,
                id,
                email,
                client,
                azp,
                scope,
                exp,
                offline,
            } => {
                let access = AccessRec {
                    grant: id,
                    email: self.intern_email(&email),
                    client: Arc::from(client),
                    azp: Arc::from(azp),
                    scopes: Arc::new(Scopes::parse(&scope)),
                    exp,
                    offline,
                };
                self.insert_access(h.0, access);
            }
            Event::DriveFile { email, file } => self.drive.apply_file(&email, file),
            Event::DriveDel { email, id } => self.drive.apply_delete(&email, &id),
        }
    }

    /// A grant made or widened: the same id updates it in place; another id replaces it, and
    /// the refresh tokens of the one replaced are forgotten.
    fn apply_grant(&mut self, id: u64, email: &str, client: String, scope: &str, offline: bool) {
        self.next_grant = self.next_grant.max(id + 1);
        let scopes = Arc::new(Scopes::parse(scope));
        let user = self.user_mut(email);
        let stale = match user.grants.get_mut(client.as_str()) {
            Some(g) if g.id == id => {
                g.scopes = scopes;
                g.offline = offline;
                None
            }
            _ => {
                let old = user.grants.insert(
                    Arc::from(client),
                    Grant {
                        id,
                        scopes,
                        offline,
                        refresh: VecDeque::new(),
                    },
                );
                old.map(|g| g.refresh)
            }
        };
        for h in stale.into_iter().flatten() {
            self.refresh.remove(&h);
        }
    }

    /// The grant `id` of (user, client) removed with its refresh tokens; a newer grant stays.
    fn apply_revoke(&mut self, id: u64, email: &str, client: &str) {
        let removed = self.users.get_mut(email).and_then(|u| {
            if u.grants.get(client).is_some_and(|g| g.id == id) {
                u.grants.remove(client)
            } else {
                None
            }
        });
        for h in removed.into_iter().flat_map(|g| g.refresh) {
            self.refresh.remove(&h);
        }
    }

    /// A refresh token of grant `id`; ignored when that grant is gone.
    fn apply_refresh_token(
        &mut self,
        h: Hash,
        id: u64,
        email: &str,
        client: &str,
        iat: i64,
        exp: Option<i64>,
    ) {
        let user = self.user_mut(email);
        let email = user.email.clone();
        let Some((client, grant)) = user
            .grants
            .get_key_value(client)
            .map(|(k, _)| k.clone())
            .and_then(|k| user.grants.get_mut(&k).map(|g| (k, g)))
        else {
            return;
        };
        if grant.id != id {
            return;
        }
        grant.refresh.push_back(h);
        self.refresh.insert(
            h,
            RefreshRec {
                grant: id,
                email,
                client,
                iat,
                last_used: iat,
                used_journaled: iat,
                exp,
            },
        );
    }

    /// A refresh token gone, from the tokens and from its grant's queue.
    fn apply_refresh_token_dead(&mut self, h: &Hash) {
        if let Some(r) = self.refresh.remove(h)
            && let Some(g) = self
                .users
                .get_mut(&*r.email)
                .and_then(|u| u.grants.get_mut(&*r.client))
        {
            g.refresh.retain(|x| x != h);
        }
    }

    fn insert_access(&mut self, h: Hash, rec: AccessRec) {
        self.access_expiry.push_back((rec.exp, h));
        self.access.insert(h, rec);
    }

    /// Forgets codes and access tokens that expired a while ago: amortised O(1) per insert.
    pub(crate) fn prune(&mut self, now: i64) {
        self.last_now = now;
        while let Some(&(exp, h)) = self.code_expiry.front() {
            if exp + FORGET_AFTER_SECS > now {
                break;
            }
            self.code_expiry.pop_front();
            if self.codes.get(&h).is_some_and(|c| c.exp == exp) {
                self.codes.remove(&h);
            }
        }
        while let Some(&(exp, h)) = self.access_expiry.front() {
            if exp + FORGET_AFTER_SECS > now {
                break;
            }
            self.access_expiry.pop_front();
            if self.access.get(&h).is_some_and(|a| a.exp == exp) {
                self.access.remove(&h);
            }
        }
    }

    pub(crate) fn mint_code(&mut self, h: Hash, code: NewCode, exp: i64, now: i64) {
        self.prune(now);
        self.commit(Event::Code {
            h: HexHash(h),
            client: code.client,
            azp: code.azp,
            email: code.email,
            scope: code.scopes.to_string(),
            redirect: code.redirect,
            offline: code.offline,
            consent: code.consent,
            incl: code.include_granted,
            pkce: code.pkce,
            nonce: code.nonce,
            exp,
        });
    }

    /// The `authorization_code` grant, after client authentication.
    pub(crate) fn exchange(
        &mut self,
        req: &Exchange<'_>,
        fresh: &Fresh,
        now: i64,
        settings: &Settings,
    ) -> Result<Issued, OAuthError> {
        let code = self.redeem_code(req, now)?;
        self.commit(Event::CodeUsed {
            h: HexHash(*req.code),
        });
        let (grant_id, grant_scopes) = self.absorb_consent(&code);
        let scopes = if code.include_granted {
            grant_scopes.clone()
        } else {
            Arc::new(code.scopes)
        };

        // A refresh token only on the first offline consent (none held alive), or whenever
        // the user was made to consent again.
        let (email, client) = (code.email, code.client);
        let refresh_issued =
            code.offline && (code.consent || !self.has_live_refresh(&email, &client, now));
        if refresh_issued {
            self.issue_refresh(
                fresh.refresh,
                grant_id,
                &email,
                &client,
                &grant_scopes,
                now,
                settings,
            );
        }
        self.prune(now);
        self.commit(Event::At {
            h: HexHash(fresh.access),
            id: grant_id,
            email: email.to_string(),
            client: client.to_string(),
            azp: code.azp.to_string(),
            scope: scopes.to_string(),
            exp: now + settings.access_token_ttl_secs,
            offline: code.offline,
        });
        self.stats.code_exchanges += 1;
        if refresh_issued {
            self.stats.refresh_tokens_issued += 1;
        }
        Ok(Issued {
            scopes,
            refresh_issued,
            email,
            client,
            azp: code.azp,
            nonce: code.nonce,
        })
    }

    /// What an unused, unexpired code grants, once the request matches what it is bound to:
    /// the client, the redirect URI and the PKCE challenge. Google's errors otherwise.
    fn redeem_code(&self, req: &Exchange<'_>, now: i64) -> Result<Redeemed, OAuthError> {
        let code = self
            .codes
            .get(req.code)
            .filter(|c| !c.used && now < c.exp)
            .ok_or_else(|| OAuthError::invalid_grant("Bad Request"))?;
        if &*code.client != req.client {
            return Err(OAuthError::invalid_grant("Bad Request"));
        }
        let Some(redirect_uri) = req.redirect_uri else {
            return Err(OAuthError::bad(
                "invalid_request",
                "Missing required parameter: redirect_uri",
            ));
        };
        if redirect_uri != code.redirect {
            return Err(OAuthError::bad("redirect_uri_mismatch", "Bad Request"));
        }
        if let Some(pkce) = &code.pkce {
            match req.verifier {
                None | Some("") => return Err(OAuthError::invalid_grant("Missing code verifier.")),
                Some(v) if !pkce.accepts(v) => {
                    return Err(OAuthError::invalid_grant("Invalid code verifier."));
                }
                Some(_) => {}
            }
        }
        Ok(Redeemed {
            email: code.email.clone(),
            client: code.client.clone(),
            azp: code.azp.clone().unwrap_or_else(|| code.client.clone()),
            scopes: code.scopes.clone(),
            offline: code.offline,
            consent: code.consent,
            include_granted: code.include_granted,
            nonce: code.nonce.clone(),
        })
    }

    /// The grant of (user, client) absorbs what this consent granted: its id and scopes after.
    fn absorb_consent(&mut self, code: &Redeemed) -> (u64, Arc<Scopes>) {
        let existing = self
            .users
            .get(&*code.email)
            .and_then(|u| u.grants.get(&*code.client))
            .map(|g| (g.id, g.scopes.clone(), g.offline));
        match existing {
            Some((id, scopes, was_offline)) => {
                let merged = scopes.union(&code.scopes);
                if merged != *scopes || (code.offline && !was_offline) {
                    self.commit(Event::Grant {
                        id,
                        email: code.email.to_string(),
                        client: code.client.to_string(),
                        scope: merged.to_string(),
                        offline: was_offline || code.offline,
                    });
                }
                (id, Arc::new(merged))
            }
            None => {
                let id = self.next_grant;
                self.commit(Event::Grant {
                    id,
                    email: code.email.to_string(),
                    client: code.client.to_string(),
                    scope: code.scopes.to_string(),
                    offline: code.offline,
                });
                (id, Arc::new(code.scopes.clone()))
            }
        }
    }

    fn has_live_refresh(&self, email: &str, client: &str, now: i64) -> bool {
        self.users
            .get(email)
            .and_then(|u| u.grants.get(client))
            .is_some_and(|g| {
                g.refresh
                    .iter()
                    .any(|h| self.refresh.get(h).is_some_and(|r| r.alive(now)))
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_refresh(
        &mut self,
        h: Hash,
        grant_id: u64,
        email: &str,
        client: &str,
        scopes: &Scopes,
        now: i64,
        settings: &Settings,
    ) {
        // Dead tokens leave the queue first; then the oldest live ones beyond the cap.
        let queue: Vec<Hash> = self
            .users
            .get(email)
            .and_then(|u| u.grants.get(client))
            .map(|g| g.refresh.iter().copied().collect())
            .unwrap_or_default();
        let (live, dead): (Vec<Hash>, Vec<Hash>) = queue
            .into_iter()
            .partition(|h| self.refresh.get(h).is_some_and(|r| r.alive(now)));
        for d in dead {
            self.commit(Event::RtDead { h: HexHash(d) });
        }
        let excess = (live.len() + 1).saturating_sub(settings.refresh_token_cap);
        for old in live.into_iter().take(excess) {
            self.commit(Event::RtDead { h: HexHash(old) });
        }
        let identity_only = scopes.iter().all(|s| {
            matches!(
                s,
                grantkeeper_core::scopes::OPENID
                    | grantkeeper_core::scopes::EMAIL
                    | grantkeeper_core::scopes::PROFILE
            )
        });
        let exp = (settings.testing_mode && !identity_only).then_some(now + TESTING_MODE_SECS);
        self.commit(Event::Rt {
            h: HexHash(h),
            id: grant_id,
            email: email.to_owned(),
            client: client.to_owned(),
            iat: now,
            exp,
        });
    }

    /// The `refresh_token` grant, after client authentication.
    pub(crate) fn refresh(
        &mut self,
        client: &str,
        token: &Hash,
        requested: Option<Scopes>,
        access: &Hash,
        now: i64,
        settings: &Settings,
    ) -> Result<Issued, OAuthError> {
        let Some(rec) = self.refresh.get(token) else {
            return Err(OAuthError::expired_or_revoked());
        };
        if !rec.alive(now) {
            self.commit(Event::RtDead { h: HexHash(*token) });
            return Err(OAuthError::expired_or_revoked());
        }
        if &*rec.client != client {
            return Err(OAuthError::bad("unauthorized_client", "Unauthorized"));
        }
        let (email, client, grant_id) = (rec.email.clone(), rec.client.clone(), rec.grant);
        let (grant_scopes, offline) = match self
            .users
            .get(&*email)
            .and_then(|u| u.grants.get(&*client))
            .filter(|g| g.id == grant_id)
        {
            Some(g) => (g.scopes.clone(), g.offline),
            None => {
                self.commit(Event::RtDead { h: HexHash(*token) });
                return Err(OAuthError::expired_or_revoked());
            }
        };
        let scopes = match requested {
            Some(r) if !r.is_empty() => {
                if !grant_scopes.contains_all(&r) {
                    return Err(OAuthError::bad(
                        "invalid_scope",
                        "Some requested scopes were not granted.",
                    ));
                }
                Arc::new(r)
            }
            _ => grant_scopes,
        };
        if let Some(r) = self.refresh.get_mut(token) {
            r.last_used = now;
            if now - r.used_journaled >= USE_JOURNAL_SECS {
                self.commit(Event::RtUsed {
                    h: HexHash(*token),
                    at: now,
                });
            }
        }
        self.prune(now);
        self.commit(Event::At {
            h: HexHash(*access),
            id: grant_id,
            email: email.to_string(),
            client: client.to_string(),
            azp: client.to_string(),
            scope: scopes.to_string(),
            exp: now + settings.access_token_ttl_secs,
            offline,
        });
        self.stats.refreshes += 1;
        *self.stats.refreshes_by_second.entry(now).or_default() += 1;
        *self
            .stats
            .refreshes_by_email
            .entry(email.to_string())
            .or_default() += 1;
        Ok(Issued {
            scopes,
            refresh_issued: false,
            azp: client.clone(),
            email,
            client,
            nonce: None,
        })
    }

    /// Revokes the whole grant a refresh or access token belongs to. False when the token is
    /// unknown, expired or already revoked.
    pub(crate) fn revoke_token(&mut self, h: &Hash, now: i64) -> bool {
        self.last_now = now;
        let target = if let Some(r) = self.refresh.get(h).filter(|r| r.alive(now)) {
            Some((r.email.clone(), r.client.clone(), r.grant))
        } else {
            self.access
                .get(h)
                .filter(|a| now < a.exp)
                .map(|a| (a.email.clone(), a.client.clone(), a.grant))
        };
        match target {
            Some((email, client, id)) if self.grant_is(&email, &client, id) => {
                self.commit(Event::Revoke {
                    id,
                    email: email.to_string(),
                    client: client.to_string(),
                });
                self.stats.revocations += 1;
                true
            }
            _ => false,
        }
    }

    /// Revokes every grant of a user; how many there were.
    pub(crate) fn revoke_user(&mut self, email: &str) -> usize {
        let grants: Vec<(Arc<str>, u64)> = self
            .users
            .get(email)
            .map(|u| u.grants.iter().map(|(c, g)| (c.clone(), g.id)).collect())
            .unwrap_or_default();
        for (client, id) in &grants {
            self.commit(Event::Revoke {
                id: *id,
                email: email.to_owned(),
                client: client.to_string(),
            });
        }
        self.stats.revocations += grants.len() as u64;
        grants.len()
    }

    /// The live access token `h`, if any.
    pub(crate) fn access(&self, h: &Hash, now: i64) -> Option<AccessView> {
        let a = self.access.get(h).filter(|a| now < a.exp)?;
        if !self.grant_is(&a.email, &a.client, a.grant) {
            return None;
        }
        Some(AccessView {
            email: a.email.clone(),
            client: a.client.clone(),
            azp: a.azp.clone(),
            scopes: a.scopes.clone(),
            exp: a.exp,
            offline: a.offline,
        })
    }

    /// The live access token `h`, or whether it is one the emulator issued that has expired
    /// (as opposed to revoked, forgotten or never issued).
    pub(crate) fn access_or_expired(&self, h: &Hash, now: i64) -> Result<AccessView, bool> {
        self.access(h, now).ok_or_else(|| {
            self.access
                .get(h)
                .is_some_and(|a| a.exp <= now && self.grant_is(&a.email, &a.client, a.grant))
        })
    }

    /// The scopes a user has granted to a client, for `prompt=none`.
    pub(crate) fn granted(&self, email: &str, client: &str) -> Option<Arc<Scopes>> {
        self.users
            .get(email)
            .and_then(|u| u.grants.get(client))
            .map(|g| g.scopes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(client: &str) -> NewCode {
        NewCode {
            client: client.to_owned(),
            azp: None,
            email: "alice@example.com".to_owned(),
            scopes: Scopes::parse("openid"),
            redirect: "postmessage".to_owned(),
            offline: true,
            consent: false,
            include_granted: false,
            pkce: None,
            nonce: None,
        }
    }

    fn h(n: u64) -> Hash {
        util::sha256(&n.to_le_bytes())
    }

    #[test]
    fn the_journal_compacts_under_load_and_replays() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::default();
        let now = 1_700_000_000;
        let mut state = State::open(Some(dir.path()), now).unwrap();
        state.mint_code(h(0), code("web"), now + 600, now);
        let fresh = Fresh {
            access: h(1),
            refresh: h(2),
        };
        let req = Exchange {
            client: "web",
            code: &h(0),
            redirect_uri: Some("postmessage"),
            verifier: None,
        };
        assert!(
            state
                .exchange(&req, &fresh, now, &settings)
                .unwrap()
                .refresh_issued
        );
        state.compaction_floor = 50;
        if let Some(j) = &mut state.journal {
            j.compact_after = 50;
        }
        // Short-lived access tokens: most of what is journaled dies quickly.
        let short = Settings {
            access_token_ttl_secs: 1,
            ..Settings::default()
        };
        for i in 0..500 {
            let t = now + i64::try_from(i).unwrap() * 4000;
            state
                .refresh("web", &h(2), None, &h(1000 + i), t, &short)
                .unwrap();
        }
        let lines = std::fs::read_to_string(dir.path().join("journal.jsonl"))
            .unwrap()
            .lines()
            .count();
        assert!(lines < 120, "journal not compacted: {lines} lines");
        drop(state);

        let mut again = State::open(Some(dir.path()), now + 500 * 4000).unwrap();
        assert!(
            again
                .refresh("web", &h(2), None, &h(5000), now + 500 * 4000, &settings)
                .is_ok()
        );
        assert!(
            again
                .refresh("other", &h(2), None, &h(5001), now + 500 * 4000, &settings)
                .is_err()
        );
    }
}

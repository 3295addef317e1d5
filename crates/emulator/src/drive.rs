//! Google Drive v3 `files` endpoints as an app keeping data in its appDataFolder sees them
//! (reference §8): list, get (also `alt=media`), metadata create, media and multipart
//! uploads, metadata and content updates, delete.
//!
//! Owns the access rules: Bearer access tokens this emulator issued (401 `required` /
//! `authError` in Google's envelope otherwise), `drive.appdata` for anything in the Application
//! Data folder, `spaces=appDataFolder` when that is the only Drive scope, the `appDataFolder`
//! and `root` aliases with stable real ids per (user, project), and the File and FileList
//! shapes with `fields` selection. Files of other users are not found.
//!
//! Leaves the files themselves (and their journal and blobs) to [`crate::state`]. The `drive`
//! space (My Drive) is kept just far enough to answer calls made with `drive` or `drive.file`
//! scopes coherently; resumable uploads, shared drives, permissions, revisions and
//! `addParents`/`removeParents` are not served.

mod fields;
mod multipart;
mod query;

use crate::Inner;
use crate::error::{ControlError, DriveError, json};
use crate::settings::Endpoint;
use crate::state::{AccessView, FOLDER_MIME, FileMeta, Space};
use crate::users::normalise_email;
use crate::util::{self, lock, read};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use fields::Selection;
use grantkeeper_core::Scopes;
use grantkeeper_core::scopes::DRIVE_APPDATA;
use query::Query as DriveQuery;
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

const DRIVE: &str = "https://www.googleapis.com/auth/drive";
const DRIVE_FILE: &str = "https://www.googleapis.com/auth/drive.file";
const DRIVE_READONLY: &str = "https://www.googleapis.com/auth/drive.readonly";
const DRIVE_METADATA: &str = "https://www.googleapis.com/auth/drive.metadata";
const DRIVE_METADATA_READONLY: &str = "https://www.googleapis.com/auth/drive.metadata.readonly";

/// Simple and multipart uploads carry at most this much content; more needs a resumable
/// upload, which the emulator does not serve.
pub(crate) const MAX_CONTENT: usize = 5 * 1024 * 1024;
/// Room for the metadata part and the multipart framing around the largest content.
const MAX_UPLOAD_BODY: usize = MAX_CONTENT + 256 * 1024;
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
const DEFAULT_MIME: &str = "application/octet-stream";
/// Digests of larger content are computed off the async worker threads.
const INLINE_DIGEST_BYTES: usize = 256 * 1024;
/// Google's page tokens start so; the rest is opaque.
const PAGE_TOKEN_PREFIX: &str = "~!!~";
/// Google's own name for the folder is not known (reference §11).
const APP_DATA_FOLDER_NAME: &str = "Application Data";

const LIST: &str = "google.apps.drive.v3.DriveFiles.List";
const GET: &str = "google.apps.drive.v3.DriveFiles.Get";
const CREATE: &str = "google.apps.drive.v3.DriveFiles.Create";
const UPDATE: &str = "google.apps.drive.v3.DriveFiles.Update";
const DELETE: &str = "google.apps.drive.v3.DriveFiles.Delete";

pub(crate) fn router() -> Router<Arc<Inner>> {
    Router::new()
        .route("/drive/v3/files", get(list).post(create))
        .route(
            "/drive/v3/files/{file_id}",
            get(get_file).patch(update).delete(delete),
        )
        .route("/upload/drive/v3/files", post(upload_create))
        .route("/upload/drive/v3/files/{file_id}", patch(upload_update))
}

/// The real id of one of a user's two root folders: stable per (project, user, folder), in the
/// shape of Google's root folder ids.
pub(crate) fn folder_id(project: &str, email: &str, space: Space) -> String {
    let d = util::sha256(
        format!(
            "grantkeeper-emulator/drive/{project}/{email}/{}",
            space.as_str()
        )
        .as_bytes(),
    );
    format!("0A{}Uk9PVA", util::b64url(d.get(..12).unwrap_or_default()))
}

/// Who is calling, with what scopes.
struct Caller {
    email: Arc<str>,
    scopes: Arc<Scopes>,
    app_data_id: String,
    root_id: String,
}

impl Caller {
    fn any(&self, scopes: &[&str]) -> bool {
        scopes.iter().any(|s| self.scopes.contains(s))
    }

    fn has_drive_scope(&self) -> bool {
        self.scopes.contains(DRIVE_APPDATA)
            || self.any(&[
                DRIVE,
                DRIVE_FILE,
                DRIVE_READONLY,
                DRIVE_METADATA,
                DRIVE_METADATA_READONLY,
            ])
    }

    /// `drive.appdata` is the only way into the Application Data folder; the `drive` space
    /// takes any of the general Drive scopes, by kind of access.
    fn check(&self, space: Space, drive_scopes: &[&str]) -> Result<(), DriveError> {
        match space {
            Space::AppData if self.scopes.contains(DRIVE_APPDATA) => Ok(()),
            Space::AppData => Err(DriveError::app_data_denied()),
            Space::Drive if self.any(drive_scopes) => Ok(()),
            Space::Drive => Err(DriveError::insufficient_permissions()),
        }
    }

    fn read(&self, space: Space) -> Result<(), DriveError> {
        self.check(
            space,
            &[
                DRIVE,
                DRIVE_FILE,
                DRIVE_READONLY,
                DRIVE_METADATA,
                DRIVE_METADATA_READONLY,
            ],
        )
    }

    fn download(&self, space: Space) -> Result<(), DriveError> {
        self.check(space, &[DRIVE, DRIVE_FILE, DRIVE_READONLY])
    }

    fn write(&self, space: Space) -> Result<(), DriveError> {
        self.check(space, &[DRIVE, DRIVE_FILE])
    }

    /// The root folder `id` names (by alias or real id), if it names one.
    fn root(&self, id: &str) -> Option<Space> {
        if id == "appDataFolder" || id == self.app_data_id {
            Some(Space::AppData)
        } else if id == "root" || id == self.root_id {
            Some(Space::Drive)
        } else {
            None
        }
    }

    fn root_id(&self, space: Space) -> &str {
        match space {
            Space::AppData => &self.app_data_id,
            Space::Drive => &self.root_id,
        }
    }

    fn alias(&self, id: &str) -> Option<String> {
        self.root(id).map(|s| self.root_id(s).to_owned())
    }

    fn folder_json(&self, space: Space) -> Value {
        json!({
            "kind": "drive#file",
            "id": self.root_id(space),
            "name": match space {
                Space::AppData => APP_DATA_FOLDER_NAME,
                Space::Drive => "My Drive",
            },
            "mimeType": FOLDER_MIME,
            "spaces": [space.as_str()],
            "starred": false,
            "trashed": false,
            "explicitlyTrashed": false,
            "ownedByMe": true,
        })
    }
}

/// Counts the call, applies the `drive` fault, and authenticates the Bearer token.
async fn begin(
    inner: &Inner,
    headers: &HeaderMap,
    method: &'static str,
) -> Result<Caller, Response> {
    inner.drive_requests.fetch_add(1, AtomicOrdering::Relaxed);
    if let Some(fault) = inner.gate(Endpoint::Drive).await {
        return Err(fault);
    }
    authenticate(inner, headers).map_err(|e| e.for_method(method).into_response())
}

/// The live access token of the request's `Authorization: Bearer`, as every Google API reads
/// it; Google's 401 otherwise.
pub(crate) fn bearer(inner: &Inner, headers: &HeaderMap) -> Result<AccessView, DriveError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(DriveError::login_required());
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| DriveError::invalid_credentials(false))?;
    let settings = inner.settings();
    let now = inner.now(&settings);
    lock(&inner.state)
        .access_or_expired(&util::sha256(token.as_bytes()), now)
        .map_err(DriveError::invalid_credentials)
}

fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<Caller, DriveError> {
    let view = bearer(inner, headers)?;
    lock(&inner.state).count_drive_request(&view.email);
    let project = read(&inner.clients).project_id.clone();
    let caller = Caller {
        app_data_id: folder_id(&project, &view.email, Space::AppData),
        root_id: folder_id(&project, &view.email, Space::Drive),
        email: view.email,
        scopes: view.scopes,
    };
    if !caller.has_drive_scope() {
        return Err(DriveError::insufficient_permissions());
    }
    Ok(caller)
}

/// Query parameters; the first occurrence of a name wins, and bad escapes never fail a call.
fn params(raw: Option<String>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(raw) = raw {
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    map
}

fn param<'a>(p: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    p.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The `fields` parameter, or `default`.
fn selection(p: &HashMap<String, String>, default: &str) -> Result<Selection, DriveError> {
    match param(p, "fields") {
        Some(f) => Selection::parse(f).map_err(DriveError::invalid_fields),
        None => Selection::parse(default).map_err(|_| DriveError::internal()),
    }
}

const FILE_DEFAULT_FIELDS: &str = "kind,id,name,mimeType";
const LIST_DEFAULT_FIELDS: &str =
    "kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)";

fn render(value: &Value, selection: &Selection) -> Response {
    json(StatusCode::OK, &selection.apply(value))
}

/// RFC 3339 in UTC with milliseconds, as Drive writes times.
fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// A File resource with every field the emulator keeps; int64 values are strings.
pub(crate) fn file_json(f: &FileMeta) -> Value {
    let mut o = Map::new();
    o.insert("kind".into(), "drive#file".into());
    o.insert("id".into(), f.id.clone().into());
    o.insert("name".into(), f.name.clone().into());
    o.insert("mimeType".into(), f.mime.clone().into());
    if let Some(d) = &f.description {
        o.insert("description".into(), d.clone().into());
    }
    o.insert("starred".into(), f.starred.into());
    o.insert("trashed".into(), f.trashed.into());
    o.insert("explicitlyTrashed".into(), f.trashed.into());
    o.insert("parents".into(), json!([f.parent]));
    o.insert("spaces".into(), json!([f.space.as_str()]));
    o.insert("version".into(), f.version.to_string().into());
    o.insert("createdTime".into(), rfc3339_ms(f.created).into());
    o.insert("modifiedTime".into(), rfc3339_ms(f.modified).into());
    o.insert("modifiedByMeTime".into(), rfc3339_ms(f.modified).into());
    o.insert("modifiedByMe".into(), true.into());
    o.insert("ownedByMe".into(), true.into());
    if f.is_folder() {
        o.insert("quotaBytesUsed".into(), "0".into());
    } else {
        o.insert("size".into(), f.size.to_string().into());
        o.insert("quotaBytesUsed".into(), f.size.to_string().into());
        o.insert("md5Checksum".into(), f.md5.clone().into());
        o.insert("sha256Checksum".into(), f.sha256.clone().into());
    }
    if !f.app_properties.is_empty() {
        o.insert("appProperties".into(), json!(f.app_properties));
    }
    if !f.properties.is_empty() {
        o.insert("properties".into(), json!(f.properties));
    }
    Value::Object(o)
}

fn not_downloadable() -> DriveError {
    DriveError::forbidden(
        "fileNotDownloadable",
        "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
    )
}

// ---------------------------------------------------------------------------------------
// files.list

/// `GET /drive/v3/files`.
async fn list(
    State(inner): State<Arc<Inner>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = match begin(&inner, &headers, LIST).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    list_files(&inner, &caller, &params(raw)).unwrap_or_else(|e| e.for_method(LIST).into_response())
}

#[derive(Clone, Copy)]
enum OrderKey {
    Created,
    Modified,
    Name,
    Folder,
    Size,
    Starred,
    /// Times the emulator does not keep: every file ties.
    Untracked,
}

fn parse_order(s: &str) -> Option<Vec<(OrderKey, bool)>> {
    s.split(',')
        .map(|item| {
            let mut words = item.split_ascii_whitespace();
            let key = match words.next()? {
                "createdTime" => OrderKey::Created,
                "modifiedTime" | "modifiedByMeTime" | "recency" | "viewedByMeTime" => {
                    OrderKey::Modified
                }
                "name" | "name_natural" => OrderKey::Name,
                "folder" => OrderKey::Folder,
                "quotaBytesUsed" => OrderKey::Size,
                "starred" => OrderKey::Starred,
                "sharedWithMeTime" => OrderKey::Untracked,
                _ => return None,
            };
            let desc = match words.next() {
                None => false,
                Some(w) if w.eq_ignore_ascii_case("desc") => true,
                Some(w) if w.eq_ignore_ascii_case("asc") => false,
                Some(_) => return None,
            };
            words.next().is_none().then_some((key, desc))
        })
        .collect()
}

fn compare(a: &FileMeta, b: &FileMeta, order: &[(OrderKey, bool)]) -> Ordering {
    for (key, desc) in order {
        let o = match key {
            OrderKey::Created => a.created.cmp(&b.created),
            OrderKey::Modified => a.modified.cmp(&b.modified),
            OrderKey::Name => a.name.cmp(&b.name),
            // Folders first.
            OrderKey::Folder => b.is_folder().cmp(&a.is_folder()),
            OrderKey::Size => a.size.cmp(&b.size),
            OrderKey::Starred => a.starred.cmp(&b.starred),
            OrderKey::Untracked => Ordering::Equal,
        };
        let o = if *desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    // Creation order: stable, so that pages neither repeat nor skip.
    a.created
        .cmp(&b.created)
        .then_with(|| a.seq.cmp(&b.seq))
        .then_with(|| a.id.cmp(&b.id))
}

/// What a page token is bound to: the same search, whatever the page size.
fn search_fingerprint(p: &HashMap<String, String>) -> String {
    let key = format!(
        "{}\n{}\n{}",
        param(p, "q").unwrap_or_default(),
        param(p, "spaces").unwrap_or_default(),
        param(p, "orderBy").unwrap_or_default()
    );
    hex::encode(util::sha256(key.as_bytes()).get(..8).unwrap_or_default())
}

fn page_token(offset: usize, fingerprint: &str) -> String {
    format!(
        "{PAGE_TOKEN_PREFIX}{}",
        util::b64url(format!("{offset}:{fingerprint}").as_bytes())
    )
}

fn read_page_token(token: &str, fingerprint: &str) -> Option<usize> {
    let raw = util::b64url_decode(token.strip_prefix(PAGE_TOKEN_PREFIX)?)?;
    let text = String::from_utf8(raw).ok()?;
    let (offset, fp) = text.split_once(':')?;
    (fp == fingerprint).then_some(())?;
    offset.parse().ok()
}

fn list_files(
    inner: &Inner,
    caller: &Caller,
    p: &HashMap<String, String>,
) -> Result<Response, DriveError> {
    let fields = selection(p, LIST_DEFAULT_FIELDS)?;
    let mut spaces = Vec::new();
    for s in param(p, "spaces").unwrap_or("drive").split(',') {
        spaces.push(match s.trim() {
            "drive" => Space::Drive,
            "appDataFolder" => Space::AppData,
            _ => return Err(DriveError::invalid_value("spaces")),
        });
    }
    if spaces.contains(&Space::Drive) {
        caller
            .read(Space::Drive)
            .map_err(|_| DriveError::spaces_denied())?;
    }
    if spaces.contains(&Space::AppData) {
        caller.read(Space::AppData)?;
    }
    let page_size = match param(p, "pageSize") {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| DriveError::invalid_value("pageSize"))?,
    };
    let query = match param(p, "q") {
        None => None,
        Some(q) => Some(
            DriveQuery::parse(q, |a| caller.alias(a))
                .ok_or_else(|| DriveError::invalid_value("q"))?,
        ),
    };
    let order = match param(p, "orderBy") {
        None => Vec::new(),
        Some(o) => parse_order(o).ok_or_else(|| DriveError::invalid_value("orderBy"))?,
    };
    let fingerprint = search_fingerprint(p);
    let offset = match param(p, "pageToken") {
        None => 0,
        Some(t) => read_page_token(t, &fingerprint)
            .ok_or_else(|| DriveError::invalid_value("pageToken"))?,
    };
    let mut files = lock(&inner.state).drive_list(&caller.email, |f| {
        spaces.contains(&f.space) && query.as_ref().is_none_or(|q| q.matches(f))
    });
    files.sort_by(|a, b| compare(a, b, &order));
    let page: Vec<Value> = files
        .iter()
        .skip(offset)
        .take(page_size)
        .map(file_json)
        .collect();
    let mut body = Map::new();
    body.insert("kind".into(), "drive#fileList".into());
    body.insert("incompleteSearch".into(), false.into());
    let next = offset.saturating_add(page_size);
    if next < files.len() {
        body.insert(
            "nextPageToken".into(),
            page_token(next, &fingerprint).into(),
        );
    }
    body.insert("files".into(), Value::Array(page));
    Ok(render(&Value::Object(body), &fields))
}

// ---------------------------------------------------------------------------------------
// files.get

/// `GET /drive/v3/files/{fileId}` (`alt=media` for the content).
async fn get_file(
    State(inner): State<Arc<Inner>>,
    Path(file_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = match begin(&inner, &headers, GET).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    get_inner(&inner, &caller, &file_id, &params(raw))
        .unwrap_or_else(|e| e.for_method(GET).into_response())
}

fn get_inner(
    inner: &Inner,
    caller: &Caller,
    id: &str,
    p: &HashMap<String, String>,
) -> Result<Response, DriveError> {
    let fields = selection(p, FILE_DEFAULT_FIELDS)?;
    let media = match param(p, "alt") {
        None | Some("json") => false,
        Some("media") => true,
        Some(_) => return Err(DriveError::invalid_value("alt")),
    };
    if let Some(space) = caller.root(id) {
        caller.read(space)?;
        if media {
            return Err(not_downloadable());
        }
        return Ok(render(&caller.folder_json(space), &fields));
    }
    let (meta, content) = lock(&inner.state)
        .drive_get(&caller.email, id)
        .ok_or_else(|| DriveError::not_found(id))?;
    caller.read(meta.space)?;
    if !media {
        return Ok(render(&file_json(&meta), &fields));
    }
    caller.download(meta.space)?;
    if meta.is_folder() {
        return Err(not_downloadable());
    }
    let mut res = (StatusCode::OK, content).into_response();
    let content_type = HeaderValue::from_str(&meta.mime)
        .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_MIME));
    res.headers_mut().insert(header::CONTENT_TYPE, content_type);
    Ok(res)
}

// ---------------------------------------------------------------------------------------
// Request bodies

/// The writable metadata a create or update names. `Some(None)` clears a value.
#[derive(Default)]
struct MetaPatch {
    name: Option<String>,
    mime: Option<String>,
    description: Option<Option<String>>,
    starred: Option<bool>,
    trashed: Option<bool>,
    created: Option<i64>,
    modified: Option<i64>,
    parents: Option<Vec<String>>,
    app_properties: Option<BTreeMap<String, Option<String>>>,
    properties: Option<BTreeMap<String, Option<String>>>,
}

/// Fields a client can read but never write.
const READ_ONLY: [&str; 12] = [
    "size",
    "md5Checksum",
    "sha1Checksum",
    "sha256Checksum",
    "version",
    "spaces",
    "quotaBytesUsed",
    "headRevisionId",
    "ownedByMe",
    "explicitlyTrashed",
    "modifiedByMeTime",
    "owners",
];

fn invalid_field(name: &str) -> DriveError {
    DriveError::bad_request(format!("Invalid value for field {name}."))
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, DriveError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(DriveError::parse_error()),
    }
}

fn opt_string(o: &Map<String, Value>, name: &str) -> Result<Option<Option<String>>, DriveError> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(invalid_field(name)),
    }
}

fn opt_bool(o: &Map<String, Value>, name: &str) -> Result<Option<bool>, DriveError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid_field(name)),
    }
}

fn opt_time(o: &Map<String, Value>, name: &str) -> Result<Option<i64>, DriveError> {
    match opt_string(o, name)?.flatten() {
        None => Ok(None),
        Some(s) => OffsetDateTime::parse(&s, &Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .map(Some)
            .ok_or_else(|| invalid_field(name)),
    }
}

fn opt_map(
    o: &Map<String, Value>,
    name: &str,
) -> Result<Option<BTreeMap<String, Option<String>>>, DriveError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), Some(s.clone()))),
                Value::Null => Ok((k.clone(), None)),
                _ => Err(invalid_field(name)),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(invalid_field(name)),
    }
}

impl MetaPatch {
    fn read(body: &[u8], creating: bool) -> Result<MetaPatch, DriveError> {
        let o = json_object(body)?;
        if READ_ONLY.iter().any(|f| o.contains_key(*f)) {
            return Err(DriveError::not_writable(
                "The resource body includes fields which are not directly writable.",
            ));
        }
        if o.contains_key("id") {
            return Err(DriveError::bad_request(
                "The emulator does not take client-chosen file ids.",
            ));
        }
        if !creating && o.contains_key("parents") {
            return Err(DriveError::not_writable(
                "The parents field is not directly writable in update requests. Use the \
                 addParents and removeParents parameters instead.",
            ));
        }
        if !creating && o.contains_key("createdTime") {
            return Err(DriveError::not_writable(
                "The resource body includes fields which are not directly writable.",
            ));
        }
        let parents = match o.get("parents") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| invalid_field("parents"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(invalid_field("parents")),
        };
        Ok(MetaPatch {
            name: opt_string(&o, "name")?.flatten(),
            mime: opt_string(&o, "mimeType")?.flatten(),
            description: opt_string(&o, "description")?,
            starred: opt_bool(&o, "starred")?,
            trashed: opt_bool(&o, "trashed")?,
            created: opt_time(&o, "createdTime")?,
            modified: opt_time(&o, "modifiedTime")?,
            parents,
            app_properties: opt_map(&o, "appProperties")?,
            properties: opt_map(&o, "properties")?,
        })
    }
}

fn merge_props(
    target: &mut BTreeMap<String, String>,
    patch: Option<BTreeMap<String, Option<String>>>,
) {
    for (k, v) in patch.into_iter().flatten() {
        match v {
            Some(v) => {
                target.insert(k, v);
            }
            None => {
                target.remove(&k);
            }
        }
    }
}

/// A media type without its parameters.
fn bare_type(content_type: Option<&str>) -> Option<String> {
    content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// The content and metadata of an upload request.
struct Upload {
    meta: MetaPatch,
    content: Bytes,
    media_type: Option<String>,
}

async fn read_upload(
    p: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    creating: bool,
) -> Result<Upload, DriveError> {
    let multipart = match param(p, "uploadType") {
        Some("media") => false,
        Some("multipart") => true,
        Some("resumable") => {
            return Err(DriveError::bad_request(
                "grantkeeper's emulator takes uploadType=media and uploadType=multipart only.",
            ));
        }
        _ => return Err(DriveError::invalid_value("uploadType")),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD_BODY) {
        return Err(DriveError::too_large(MAX_CONTENT));
    }
    // Reading stops at the limit; a body cut short by the client ends the same way, and no
    // one is left to read that answer.
    let bytes = axum::body::to_bytes(body, MAX_UPLOAD_BODY)
        .await
        .map_err(|_| DriveError::too_large(MAX_CONTENT))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let upload = if multipart {
        let boundary = content_type
            .and_then(multipart::boundary)
            .ok_or_else(|| DriveError::bad_request("Bad content type. Please use multipart."))?;
        let mut parts = multipart::parse(&bytes, &boundary)
            .ok_or_else(|| DriveError::bad_request("Malformed multipart body."))?
            .into_iter();
        let (Some(meta), Some(media), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(DriveError::bad_request("Malformed multipart body."));
        };
        Upload {
            meta: MetaPatch::read(&meta.body, creating)?,
            media_type: bare_type(media.content_type.as_deref()),
            content: media.body,
        }
    } else {
        Upload {
            meta: MetaPatch::default(),
            media_type: bare_type(content_type),
            content: bytes,
        }
    };
    if upload.content.len() > MAX_CONTENT {
        return Err(DriveError::too_large(MAX_CONTENT));
    }
    Ok(upload)
}

/// New content, digested and (with a data dir) written to its blob.
struct NewContent {
    bytes: Bytes,
    md5: String,
    sha256: String,
    blob: Option<String>,
}

async fn new_content(inner: &Inner, bytes: Bytes) -> Result<NewContent, DriveError> {
    fn digests(data: &[u8]) -> (String, String) {
        use md5::{Digest, Md5};
        (
            hex::encode(Md5::digest(data).as_slice()),
            hex::encode(util::sha256(data)),
        )
    }
    let (md5, sha256) = if bytes.len() <= INLINE_DIGEST_BYTES {
        digests(&bytes)
    } else {
        let b = bytes.clone();
        tokio::task::spawn_blocking(move || digests(&b))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "digesting Drive content failed");
                DriveError::internal()
            })?
    };
    let blob = match &inner.state_dir {
        Some(dir) if !bytes.is_empty() => {
            let name = grantkeeper_core::random::token::<18>();
            let path = dir.join("drive").join(&name);
            let data = bytes.clone();
            tokio::task::spawn_blocking(move || util::write_private(&path, &data))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot write Drive content");
                    DriveError::internal()
                })?;
            Some(name)
        }
        _ => None,
    };
    Ok(NewContent {
        bytes,
        md5,
        sha256,
        blob,
    })
}

/// Removes blobs no file refers to any more; a failure only leaves a file for the next
/// start to collect.
async fn drop_blobs(inner: &Inner, names: Vec<String>) {
    let Some(dir) = inner.state_dir.clone() else {
        return;
    };
    if names.is_empty() {
        return;
    }
    let removal = tokio::task::spawn_blocking(move || {
        for name in names {
            if let Err(e) = std::fs::remove_file(dir.join("drive").join(&name))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, "cannot remove old Drive content");
            }
        }
    });
    if let Err(e) = removal.await {
        tracing::warn!(error = %e, "cannot remove old Drive content");
    }
}

// ---------------------------------------------------------------------------------------
// files.create

/// `POST /drive/v3/files`: metadata only.
async fn create(
    State(inner): State<Arc<Inner>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match begin(&inner, &headers, CREATE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let p = params(raw);
    let result = async {
        let fields = selection(&p, FILE_DEFAULT_FIELDS)?;
        let meta = MetaPatch::read(&body, true)?;
        create_file(&inner, &caller, meta, Bytes::new(), None, &fields).await
    }
    .await;
    result.unwrap_or_else(|e| e.for_method(CREATE).into_response())
}

/// `POST /upload/drive/v3/files?uploadType=media|multipart`.
async fn upload_create(
    State(inner): State<Arc<Inner>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match begin(&inner, &headers, CREATE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let p = params(raw);
    let result = async {
        let fields = selection(&p, FILE_DEFAULT_FIELDS)?;
        let up = read_upload(&p, &headers, body, true).await?;
        create_file(&inner, &caller, up.meta, up.content, up.media_type, &fields).await
    }
    .await;
    result.unwrap_or_else(|e| e.for_method(CREATE).into_response())
}

async fn create_file(
    inner: &Inner,
    caller: &Caller,
    meta: MetaPatch,
    content: Bytes,
    media_type: Option<String>,
    fields: &Selection,
) -> Result<Response, DriveError> {
    let parents = meta.parents.clone().unwrap_or_default();
    if parents.len() > 1 {
        return Err(DriveError::forbidden(
            "cannotAddParent",
            "Increasing the number of parents is not allowed.",
        ));
    }
    // Without a parent the file goes to My Drive, as Google puts it.
    let (parent, space, parent_is_root) = match parents.first() {
        None => (caller.root_id.clone(), Space::Drive, true),
        Some(p) => match caller.root(p) {
            Some(space) => (caller.root_id(space).to_owned(), space, true),
            None => {
                let found = lock(&inner.state)
                    .drive_get_meta(&caller.email, p)
                    .map(|m| (m.space, m.is_folder()));
                match found {
                    Some((space, true)) => (p.clone(), space, false),
                    Some((_, false)) => {
                        return Err(DriveError::bad_request(
                            "The specified parent is not a folder.",
                        ));
                    }
                    None => return Err(DriveError::not_found(p)),
                }
            }
        },
    };
    caller.write(space)?;
    let mime = meta
        .mime
        .clone()
        .or(media_type)
        .unwrap_or_else(|| DEFAULT_MIME.to_owned());
    if mime == FOLDER_MIME && !content.is_empty() {
        return Err(DriveError::bad_request("A folder cannot have content."));
    }
    let settings = inner.settings();
    let now = inner.now_ms(&settings);
    let content = new_content(inner, content).await?;
    let mut app_properties = BTreeMap::new();
    merge_props(&mut app_properties, meta.app_properties);
    let mut properties = BTreeMap::new();
    merge_props(&mut properties, meta.properties);
    let file = FileMeta {
        id: format!("1{}", grantkeeper_core::random::token::<24>()),
        name: meta.name.unwrap_or_else(|| "Untitled".to_owned()),
        mime,
        space,
        parent,
        created: meta.created.unwrap_or(now),
        modified: meta.modified.unwrap_or(now),
        version: 1,
        seq: 0,
        trashed: meta.trashed.unwrap_or(false),
        starred: meta.starred.unwrap_or(false),
        description: meta.description.flatten(),
        app_properties,
        properties,
        size: content.bytes.len() as u64,
        md5: content.md5,
        sha256: content.sha256,
        blob: content.blob.clone(),
    };
    let created =
        lock(&inner.state).drive_create(&caller.email, file.clone(), content.bytes, parent_is_root);
    if let Err(e) = created {
        drop_blobs(inner, content.blob.into_iter().collect()).await;
        return Err(e);
    }
    Ok(render(&file_json(&file), fields))
}

// ---------------------------------------------------------------------------------------
// files.update

/// `PATCH /drive/v3/files/{fileId}`: metadata.
async fn update(
    State(inner): State<Arc<Inner>>,
    Path(file_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match begin(&inner, &headers, UPDATE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let p = params(raw);
    let result = async {
        let fields = selection(&p, FILE_DEFAULT_FIELDS)?;
        let meta = MetaPatch::read(&body, false)?;
        update_file(&inner, &caller, &file_id, &p, meta, None, &fields).await
    }
    .await;
    result.unwrap_or_else(|e| e.for_method(UPDATE).into_response())
}

/// `PATCH /upload/drive/v3/files/{fileId}?uploadType=media|multipart`: content (and metadata).
async fn upload_update(
    State(inner): State<Arc<Inner>>,
    Path(file_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match begin(&inner, &headers, UPDATE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let p = params(raw);
    let result = async {
        let fields = selection(&p, FILE_DEFAULT_FIELDS)?;
        let up = read_upload(&p, &headers, body, false).await?;
        let content = Some((up.content, up.media_type));
        update_file(&inner, &caller, &file_id, &p, up.meta, content, &fields).await
    }
    .await;
    result.unwrap_or_else(|e| e.for_method(UPDATE).into_response())
}

fn root_folder_untouchable() -> DriveError {
    DriveError::forbidden(
        "insufficientFilePermissions",
        "The user does not have sufficient permissions for this file.",
    )
}

async fn update_file(
    inner: &Inner,
    caller: &Caller,
    id: &str,
    p: &HashMap<String, String>,
    meta: MetaPatch,
    content: Option<(Bytes, Option<String>)>,
    fields: &Selection,
) -> Result<Response, DriveError> {
    if param(p, "addParents").is_some() || param(p, "removeParents").is_some() {
        return Err(DriveError::bad_request(
            "grantkeeper's emulator does not move files (addParents, removeParents).",
        ));
    }
    if caller.root(id).is_some() {
        return Err(root_folder_untouchable());
    }
    let space = lock(&inner.state)
        .drive_get_meta(&caller.email, id)
        .map(|m| m.space)
        .ok_or_else(|| DriveError::not_found(id))?;
    caller.write(space)?;
    let (new, media_type) = match content {
        Some((bytes, media_type)) => (Some(new_content(inner, bytes).await?), media_type),
        None => (None, None),
    };
    let new_blob = new.as_ref().and_then(|n| n.blob.clone());
    let settings = inner.settings();
    let now = inner.now_ms(&settings);
    let bytes = new.as_ref().map(|n| n.bytes.clone());
    let result = lock(&inner.state).drive_update(
        &caller.email,
        id,
        |f| {
            let was_folder = f.is_folder();
            if let Some(name) = meta.name {
                f.name = name;
            }
            if let Some(mime) = meta.mime.or(media_type.filter(|_| new.is_some())) {
                f.mime = mime;
            }
            if f.is_folder() != was_folder {
                return Err(DriveError::bad_request(
                    "A file cannot become a folder, nor a folder a file.",
                ));
            }
            if let Some(d) = meta.description {
                f.description = d;
            }
            if let Some(s) = meta.starred {
                f.starred = s;
            }
            if let Some(t) = meta.trashed {
                f.trashed = t;
            }
            merge_props(&mut f.app_properties, meta.app_properties);
            merge_props(&mut f.properties, meta.properties);
            if let Some(n) = new {
                if was_folder {
                    return Err(DriveError::bad_request("A folder cannot have content."));
                }
                f.size = n.bytes.len() as u64;
                f.md5 = n.md5;
                f.sha256 = n.sha256;
                f.blob = n.blob;
            }
            f.version += 1;
            f.modified = meta.modified.unwrap_or(now);
            Ok(())
        },
        bytes,
    );
    match result {
        Ok((file, stale)) => {
            drop_blobs(inner, stale.into_iter().collect()).await;
            Ok(render(&file_json(&file), fields))
        }
        Err(e) => {
            drop_blobs(inner, new_blob.into_iter().collect()).await;
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------
// files.delete

/// `DELETE /drive/v3/files/{fileId}`: the file, and for a folder everything in it.
async fn delete(
    State(inner): State<Arc<Inner>>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match begin(&inner, &headers, DELETE).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let result = async {
        if caller.root(&file_id).is_some() {
            return Err(root_folder_untouchable());
        }
        let space = lock(&inner.state)
            .drive_get_meta(&caller.email, &file_id)
            .map(|m| m.space)
            .ok_or_else(|| DriveError::not_found(&file_id))?;
        caller.write(space)?;
        let blobs = lock(&inner.state).drive_delete(&caller.email, &file_id)?;
        drop_blobs(&inner, blobs).await;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.unwrap_or_else(|e: DriveError| e.for_method(DELETE).into_response())
}

// ---------------------------------------------------------------------------------------
// Control API

/// `GET /_emulator/drive?email=`: every file of the user, with all its metadata.
pub(crate) async fn control_files(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ControlError> {
    let email = q
        .get("email")
        .and_then(|e| normalise_email(e))
        .ok_or_else(|| ControlError::bad("email is required"))?;
    let mut files = lock(&inner.state).drive_list(&email, |_| true);
    files.sort_by(|a, b| compare(a, b, &[]));
    let project = read(&inner.clients).project_id.clone();
    Ok(json(
        StatusCode::OK,
        &json!({
            "email": email,
            "app_data_folder_id": folder_id(&project, &email, Space::AppData),
            "root_folder_id": folder_id(&project, &email, Space::Drive),
            "files": files.iter().map(file_json).collect::<Vec<_>>(),
        }),
    ))
}

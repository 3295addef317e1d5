//! The Drive files the emulator keeps for each user of its one project: metadata in memory and
//! in the journal, content in memory and, with a data dir, in one blob file per content version
//! under `DIR/emulator/drive/` (so that the journal, which is rewritten at every compaction,
//! never carries megabytes of content).
//!
//! Files are keyed by user and id, so another user's file is simply not there. Every operation
//! is a hash map access or a walk over the files of one user. Access rules (scopes, spaces,
//! aliases) belong to the HTTP layer; this layer only keeps the files consistent.

use super::{Event, State};
use crate::error::DriveError;
use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// The MIME type of a folder.
pub(crate) const FOLDER_MIME: &str = "application/vnd.google-apps.folder";

/// The two spaces a file can live in; a file never moves between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Space {
    #[serde(rename = "appDataFolder")]
    AppData,
    #[serde(rename = "drive")]
    Drive,
}

impl Space {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Space::AppData => "appDataFolder",
            Space::Drive => "drive",
        }
    }
}

/// A file's metadata, as journaled: the whole resource, so that replay is a plain insert.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FileMeta {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mime: String,
    pub(crate) space: Space,
    pub(crate) parent: String,
    /// Unix milliseconds.
    pub(crate) created: i64,
    pub(crate) modified: i64,
    pub(crate) version: u64,
    /// Creation order among all files, assigned by [`State::drive_create`]: the default list
    /// order, also for files created in the same millisecond.
    #[serde(default)]
    pub(crate) seq: u64,
    #[serde(default)]
    pub(crate) trashed: bool,
    #[serde(default)]
    pub(crate) starred: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) app_properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) properties: BTreeMap<String, String>,
    pub(crate) size: u64,
    /// Hex digests of the content.
    pub(crate) md5: String,
    pub(crate) sha256: String,
    /// The blob file holding the content (data dir only, never for empty content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) blob: Option<String>,
}

impl FileMeta {
    pub(crate) fn is_folder(&self) -> bool {
        self.mime == FOLDER_MIME
    }
}

struct FileRec {
    meta: FileMeta,
    content: Bytes,
}

#[derive(Default)]
pub(crate) struct DriveState {
    users: HashMap<Arc<str>, HashMap<String, FileRec>>,
    next_seq: u64,
}

impl DriveState {
    pub(super) fn apply_file(&mut self, email: &str, file: FileMeta) {
        self.next_seq = self.next_seq.max(file.seq + 1);
        let files = match self.users.get_mut(email) {
            Some(f) => f,
            None => self.users.entry(Arc::from(email)).or_default(),
        };
        match files.get_mut(&file.id) {
            Some(rec) => rec.meta = file,
            None => {
                files.insert(
                    file.id.clone(),
                    FileRec {
                        meta: file,
                        content: Bytes::new(),
                    },
                );
            }
        }
    }

    pub(super) fn apply_delete(&mut self, email: &str, id: &str) {
        if let Some(files) = self.users.get_mut(email) {
            files.remove(id);
            if files.is_empty() {
                self.users.remove(email);
            }
        }
    }

    pub(super) fn snapshot(&self, out: &mut Vec<Event>) {
        for (email, files) in &self.users {
            for rec in files.values() {
                out.push(Event::DriveFile {
                    email: email.to_string(),
                    file: rec.meta.clone(),
                });
            }
        }
    }

    /// After a replay: reads the content of every file from its blob, forgets files whose blob
    /// is gone, and removes blobs no file refers to (left by a crash between writing a blob and
    /// journaling it, or between journaling a replacement and removing the old one).
    pub(super) fn load_blobs(&mut self, dir: &Path) -> anyhow::Result<()> {
        let blobs = dir.join("drive");
        std::fs::create_dir_all(&blobs)?;
        let mut referenced = HashSet::new();
        let mut lost = 0usize;
        for files in self.users.values_mut() {
            files.retain(|_, rec| {
                let Some(name) = &rec.meta.blob else {
                    return true;
                };
                match std::fs::read(blobs.join(name)) {
                    Ok(data) if data.len() as u64 == rec.meta.size => {
                        referenced.insert(name.clone());
                        rec.content = Bytes::from(data);
                        true
                    }
                    _ => {
                        lost += 1;
                        false
                    }
                }
            });
        }
        self.users.retain(|_, files| !files.is_empty());
        if lost > 0 {
            tracing::warn!(files = lost, "forgot Drive files whose content is missing");
        }
        for entry in std::fs::read_dir(&blobs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

impl State {
    /// A file of `email` with its content.
    pub(crate) fn drive_get(&self, email: &str, id: &str) -> Option<(FileMeta, Bytes)> {
        let rec = self.drive.users.get(email)?.get(id)?;
        Some((rec.meta.clone(), rec.content.clone()))
    }

    /// The files of `email` that `keep` accepts, in no particular order.
    pub(crate) fn drive_list(
        &self,
        email: &str,
        keep: impl Fn(&FileMeta) -> bool,
    ) -> Vec<FileMeta> {
        self.drive
            .users
            .get(email)
            .map(|files| {
                files
                    .values()
                    .filter(|r| keep(&r.meta))
                    .map(|r| r.meta.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds a new file. A parent that is not one of the user's root folders must be one of
    /// the user's folders, in the file's space.
    pub(crate) fn drive_create(
        &mut self,
        email: &str,
        mut file: FileMeta,
        content: Bytes,
        parent_is_root: bool,
    ) -> Result<(), DriveError> {
        if !parent_is_root {
            match self.drive_get_meta(email, &file.parent) {
                Some(p) if p.is_folder() && p.space == file.space => {}
                Some(p) if p.is_folder() => {
                    return Err(DriveError::forbidden(
                        "cannotMoveBetweenSpaces",
                        "Files cannot be moved between spaces.",
                    ));
                }
                Some(_) => {
                    return Err(DriveError::bad_request(
                        "The specified parent is not a folder.",
                    ));
                }
                None => return Err(DriveError::not_found(&file.parent)),
            }
        }
        file.seq = self.drive.next_seq;
        let id = file.id.clone();
        self.commit(Event::DriveFile {
            email: email.to_owned(),
            file,
        });
        self.drive_set_content(email, &id, content);
        Ok(())
    }

    /// Changes a file through `change` and journals the result; with `content`, replaces the
    /// content too. Answers the new metadata and the blob the old content was in, if it is no
    /// longer used.
    pub(crate) fn drive_update(
        &mut self,
        email: &str,
        id: &str,
        change: impl FnOnce(&mut FileMeta) -> Result<(), DriveError>,
        content: Option<Bytes>,
    ) -> Result<(FileMeta, Option<String>), DriveError> {
        let mut meta = self
            .drive_get_meta(email, id)
            .ok_or_else(|| DriveError::not_found(id))?
            .clone();
        let old_blob = meta.blob.clone();
        change(&mut meta)?;
        let stale = old_blob.filter(|b| meta.blob.as_ref() != Some(b));
        self.commit(Event::DriveFile {
            email: email.to_owned(),
            file: meta.clone(),
        });
        if let Some(c) = content {
            self.drive_set_content(email, id, c);
        }
        Ok((meta, stale))
    }

    /// Deletes a file and, for a folder, everything under it. Answers the blobs to remove.
    pub(crate) fn drive_delete(
        &mut self,
        email: &str,
        id: &str,
    ) -> Result<Vec<String>, DriveError> {
        if self.drive_get_meta(email, id).is_none() {
            return Err(DriveError::not_found(id));
        }
        // One pass over the user's files builds the child lists; the walk is then linear.
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(files) = self.drive.users.get(email) {
            for rec in files.values() {
                children
                    .entry(rec.meta.parent.clone())
                    .or_default()
                    .push(rec.meta.id.clone());
            }
        }
        let mut doomed = vec![id.to_owned()];
        let mut i = 0;
        while let Some(current) = doomed.get(i).cloned() {
            if let Some(kids) = children.remove(&current) {
                doomed.extend(kids);
            }
            i += 1;
        }
        let mut blobs = Vec::new();
        for file_id in doomed {
            if let Some(b) = self
                .drive_get_meta(email, &file_id)
                .and_then(|m| m.blob.clone())
            {
                blobs.push(b);
            }
            self.commit(Event::DriveDel {
                email: email.to_owned(),
                id: file_id,
            });
        }
        Ok(blobs)
    }

    /// Counts an authenticated Drive call for the stats.
    pub(crate) fn count_drive_request(&mut self, email: &str) {
        match self.stats.drive_requests_by_email.get_mut(email) {
            Some(n) => *n += 1,
            None => {
                self.stats
                    .drive_requests_by_email
                    .insert(email.to_owned(), 1);
            }
        }
    }

    pub(crate) fn drive_get_meta(&self, email: &str, id: &str) -> Option<&FileMeta> {
        Some(&self.drive.users.get(email)?.get(id)?.meta)
    }

    fn drive_set_content(&mut self, email: &str, id: &str, content: Bytes) {
        if let Some(rec) = self
            .drive
            .users
            .get_mut(email)
            .and_then(|files| files.get_mut(id))
        {
            rec.content = content;
        }
    }
}

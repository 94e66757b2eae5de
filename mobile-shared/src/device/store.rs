//! The device's local store: plain files in one directory, each written atomically (temporary
//! file, fsync, rename, fsync of the directory), so that a phone killed at any instant finds
//! either the old or the new version of every file, never a torn one.
//!
//! ```text
//! <dir>/session.json        who is logged in, tokens, peer and storage ids, actor id
//! <dir>/docs/<id>.am        each document, saved whole by automerge
//! <dir>/docs/<id>.sync      the sync state with the server (written after the document)
//! <dir>/outbox/<n>.json     each queued command, named by its sequence number
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::DocumentId;

/// The directory layout of one device's store.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    root: PathBuf,
}

impl Files {
    /// Opens (creating if needed) the store at `root`, and removes temporaries left by a crash.
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        let files = Self {
            root: root.to_path_buf(),
        };
        for dir in [files.root.clone(), files.docs(), files.outbox()] {
            fs::create_dir_all(&dir)?;
            for entry in fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    fs::remove_file(path)?;
                }
            }
        }
        Ok(files)
    }

    pub(crate) fn session(&self) -> PathBuf {
        self.root.join("session.json")
    }

    pub(crate) fn docs(&self) -> PathBuf {
        self.root.join("docs")
    }

    pub(crate) fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }

    pub(crate) fn document(&self, id: &DocumentId) -> PathBuf {
        self.docs().join(format!("{id}.am"))
    }

    pub(crate) fn sync_state(&self, id: &DocumentId) -> PathBuf {
        self.docs().join(format!("{id}.sync"))
    }

    /// Every document id with a saved document.
    pub(crate) fn document_ids(&self) -> io::Result<Vec<DocumentId>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.docs())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "am")
                && let Some(id) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(DocumentId::parse)
            {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Deletes a document and its sync state (sync state first: a state without its document
    /// would be meaningless, a document without its state only syncs from scratch).
    pub(crate) fn remove_document(&self, id: &DocumentId) -> io::Result<()> {
        remove_if_present(&self.sync_state(id))?;
        remove_if_present(&self.document(id))?;
        sync_dir(&self.docs())
    }
}

/// Reads a file, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Removes a file and makes the removal durable.
pub(crate) fn remove_durably(path: &Path) -> io::Result<()> {
    remove_if_present(path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes renames and removals in `dir` durable (a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(handle) => handle.sync_all().or(Ok(())),
        Err(_) => Ok(()),
    }
}

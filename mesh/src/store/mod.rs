//! The node's on-disk store: one sled database in the data dir. This is the only module that
//! touches sled; everything else sees typed methods.
//!
//! Layout: `<data_dir>/store/` is the sled database. Its `meta` tree holds a format marker and
//! the schema version, checked on every open so that a data dir written by a newer huiyan, or by
//! something else entirely, is refused with a clear message instead of being misread.
//!
//! Durability: every method that acknowledges a write returns only after sled has flushed it to
//! disk (`fsync`), so a kill at any moment loses nothing that was acknowledged.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

mod blob;
mod local;
pub use local::KeyValue;
mod log;
pub use log::Head;

/// The schema this build writes and the newest it can read.
pub const SCHEMA_VERSION: u32 = 1;

const FORMAT_MARKER: &[u8] = b"huiyan-store";
const META_TREE: &str = "meta";
const KEY_FORMAT: &str = "format";
const KEY_SCHEMA: &str = "schema";

/// An open store. Cheap to clone; all clones share one database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, checking its format and schema version.
    pub fn open(data_dir: &Path) -> Result<Store, Error> {
        let path = data_dir.join("store");
        let store_err = |reason: String| Error::Store {
            path: data_dir.to_owned(),
            reason,
        };
        fs::create_dir_all(&path).map_err(|e| store_err(format!("cannot create it: {e}")))?;
        refuse_foreign_dir(&path).map_err(|reason| Error::StoreForeign {
            path: data_dir.to_owned(),
            reason,
        })?;

        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if is_lock_error(&io) => Error::StoreLocked {
                    path: data_dir.to_owned(),
                },
                other => store_err(format!("cannot open the database: {other}")),
            })?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(|e| store_err(e.to_string()))?;
        let store = Store {
            db,
            meta,
            path: data_dir.to_owned(),
        };
        store.check_schema()?;
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), Error> {
        let format = self.meta.get(KEY_FORMAT).map_err(|e| self.err(e))?;
        let schema = self.meta.get(KEY_SCHEMA).map_err(|e| self.err(e))?;
        match (format, schema) {
            (Some(format), Some(schema)) if format.as_ref() == FORMAT_MARKER => {
                let found = <[u8; 4]>::try_from(schema.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::StoreForeign {
                        path: self.path.clone(),
                        reason: "its schema version is unreadable".into(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(Error::StoreTooNew {
                        path: self.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                Ok(())
            }
            (None, None) if self.is_empty() => {
                self.meta
                    .insert(KEY_FORMAT, FORMAT_MARKER)
                    .map_err(|e| self.err(e))?;
                self.meta
                    .insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| self.err(e))?;
                self.flush()
            }
            _ => Err(Error::StoreForeign {
                path: self.path.clone(),
                reason: "its database has no huiyan format marker".into(),
            }),
        }
    }

    fn is_empty(&self) -> bool {
        self.meta.is_empty()
            && self.db.tree_names().iter().all(|name| {
                name.as_ref() == META_TREE.as_bytes() || name.as_ref() == b"__sled__default"
            })
            && self.db.is_empty()
    }

    fn err(&self, e: sled::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Blocks until everything written so far is on disk.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(drop).map_err(|e| self.err(e))
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// A cheap read that proves the database answers; used by readiness and the watchdog.
    pub fn check_health(&self) -> Result<(), Error> {
        self.meta.get(KEY_SCHEMA).map(drop).map_err(|e| self.err(e))
    }

    /// Adds one to a durable counter in the meta tree and returns the new value. The node uses
    /// it to count its starts; it returns only once the new value is on disk.
    pub fn bump_counter(&self, name: &str) -> Result<u64, Error> {
        let key = format!("counter/{name}");
        let next = self
            .meta
            .update_and_fetch(key.as_bytes(), |old| {
                let n = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes);
                Some(n.unwrap_or(0).saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(|e| self.err(e))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        self.flush()?;
        Ok(next)
    }
}

/// A directory that has files but not those of a sled database is someone else's.
fn refuse_foreign_dir(path: &Path) -> Result<(), String> {
    let names: Vec<String> = fs::read_dir(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .filter_map(|entry| {
            entry
                .ok()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    let looks_like_sled = names.iter().any(|n| n == "conf") && names.iter().any(|n| n == "db");
    if names.is_empty() || looks_like_sled {
        Ok(())
    } else {
        Err(format!(
            "{} has files that are not a sled database",
            path.display()
        ))
    }
}

fn is_lock_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.to_string().contains("lock")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Reopens in the same process; sled's flusher thread may hold the lock a moment after drop.
    fn reopen(dir: &Path) -> Store {
        for _ in 0..100 {
            match Store::open(dir) {
                Err(Error::StoreLocked { .. }) => std::thread::sleep(Duration::from_millis(20)),
                other => return other.unwrap(),
            }
        }
        panic!("store still locked after 2 s");
    }

    #[test]
    fn reopen_keeps_durable_counters() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.bump_counter("starts").unwrap(), 1);
        drop(store);
        let store = reopen(dir.path());
        assert_eq!(store.bump_counter("starts").unwrap(), 2);
        store.check_health().unwrap();
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .meta
            .insert(KEY_SCHEMA, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        store.flush().unwrap();
        drop(store);
        let err = (0..100)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                Store::open(dir.path()).unwrap_err()
            })
            .find(|e| !matches!(e, Error::StoreLocked { .. }))
            .unwrap();
        assert!(matches!(err, Error::StoreTooNew { found: 2, .. }), "{err}");
        assert!(err.to_string().contains("newer huiyan"), "{err}");
    }

    #[test]
    fn refuses_a_foreign_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("store")).unwrap();
        fs::write(dir.path().join("store/photos.jpg"), b"not ours").unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::StoreForeign { .. }), "{err}");
    }
}

//! Blobs: content-addressed files too large for a log entry (agreement PDFs, recordings), kept
//! in `<data_dir>/blobs/<sha256 hex>`. A record refers to a blob by its SHA-256 and size.
//!
//! A blob is written to a temporary file, flushed, renamed into place and the directory
//! flushed, so it is either whole or absent after a crash; its name is its hash, so a corrupt
//! copy is detected by hashing it again ([`Store::blob_verify`]).

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use super::Store;
use crate::Error;
use crate::log::entry::sha256;
use crate::replica::hex;

impl Store {
    fn blob_dir(&self) -> PathBuf {
        self.path.join("blobs")
    }

    /// The file of blob `hash` (lower-case hex SHA-256), whether or not it exists.
    pub fn blob_path(&self, hash: &str) -> Option<PathBuf> {
        let valid = hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        valid.then(|| self.blob_dir().join(hash))
    }

    /// Stores `bytes`; returns their SHA-256 (hex) once they are durable.
    pub fn blob_put(&self, bytes: &[u8]) -> Result<String, Error> {
        let hash = hex(&sha256(bytes));
        let dir = self.blob_dir();
        let err = |what: &str, e: std::io::Error| Error::Store {
            path: self.path.clone(),
            reason: format!("blob {hash}: {what}: {e}"),
        };
        let path = dir.join(&hash);
        if path.exists() {
            return Ok(hash);
        }
        fs::create_dir_all(&dir).map_err(|e| err("cannot create the blob dir", e))?;
        let tmp = dir.join(format!(".{hash}.tmp"));
        let mut file = fs::File::create(&tmp).map_err(|e| err("cannot create", e))?;
        file.write_all(bytes).map_err(|e| err("cannot write", e))?;
        file.sync_all().map_err(|e| err("cannot flush", e))?;
        fs::rename(&tmp, &path).map_err(|e| err("cannot move into place", e))?;
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("cannot flush the blob dir", e))?;
        Ok(hash)
    }

    /// The bytes of blob `hash`, if this node holds it.
    pub fn blob_get(&self, hash: &str) -> Result<Option<Vec<u8>>, Error> {
        let Some(path) = self.blob_path(hash) else {
            return Ok(None);
        };
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Store {
                path: self.path.clone(),
                reason: format!("blob {hash}: cannot read: {e}"),
            }),
        }
    }

    /// Whether the blob held under `hash` still hashes to it.
    pub fn blob_verify(&self, hash: &str) -> Result<bool, Error> {
        Ok(self
            .blob_get(hash)?
            .is_some_and(|bytes| hex(&sha256(&bytes)) == hash))
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn blobs_are_stored_by_hash_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let hash = store.blob_put(b"%PDF-1.7 agreement").unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(store.blob_put(b"%PDF-1.7 agreement").unwrap(), hash);
        assert_eq!(
            store.blob_get(&hash).unwrap().unwrap(),
            b"%PDF-1.7 agreement"
        );
        assert!(store.blob_verify(&hash).unwrap());
        assert_eq!(store.blob_get(&"0".repeat(64)).unwrap(), None);
        assert_eq!(store.blob_get("../../etc/passwd").unwrap(), None);
        std::fs::write(store.blob_path(&hash).unwrap(), b"tampered").unwrap();
        assert!(!store.blob_verify(&hash).unwrap());
    }
}

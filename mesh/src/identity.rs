//! Node identity: the one Ed25519 key of a node, its file on disk and its PeerId.
//!
//! The key is created on the node by `huiyan keygen` and never copied elsewhere. Its PeerId is
//! the node's name in the roster; the same key signs the node's log entries and authenticates
//! its QUIC endpoints. The file holds the libp2p protobuf encoding of the keypair.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub use libp2p_identity::{Keypair, PeerId, PublicKey};

use crate::Error;

/// Creates a new Ed25519 key at `path` with mode 0600 and returns its PeerId.
///
/// Refuses to overwrite an existing file: a node's identity must never change by accident.
pub fn generate_key_file(path: &Path) -> Result<PeerId, Error> {
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair.to_protobuf_encoding().map_err(|e| Error::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let io_err = |e: std::io::Error| Error::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::KeyExists {
                path: path.to_owned(),
            },
            _ => io_err(e),
        })?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err)?;
    Ok(keypair.public().to_peer_id())
}

/// Reads the node key at `path`.
pub fn load_key_file(path: &Path) -> Result<Keypair, Error> {
    let key_err = |reason: String| Error::Key {
        path: path.to_owned(),
        reason,
    };
    let meta = fs::metadata(path).map_err(|e| key_err(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(key_err(format!(
            "mode {:o} lets other users read it; run `chmod 600` on it",
            meta.permissions().mode() & 0o777
        )));
    }
    let bytes = fs::read(path).map_err(|e| key_err(e.to_string()))?;
    let keypair = Keypair::from_protobuf_encoding(&bytes)
        .map_err(|_| key_err("not a huiyan node key (made by `huiyan keygen`)".into()))?;
    if keypair.key_type() != libp2p_identity::KeyType::Ed25519 {
        return Err(key_err("the key is not Ed25519".into()));
    }
    Ok(keypair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_loads_with_the_same_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let peer = generate_key_file(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_key_file(&path).unwrap().public().to_peer_id(), peer);
    }

    #[test]
    fn refuses_to_overwrite_and_to_read_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        generate_key_file(&path).unwrap();
        assert!(matches!(
            generate_key_file(&path),
            Err(Error::KeyExists { .. })
        ));

        let bad = dir.path().join("bad.key");
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&bad)
            .unwrap();
        fs::write(&bad, b"hello").unwrap();
        let err = load_key_file(&bad).unwrap_err().to_string();
        assert!(err.contains("not a huiyan node key"), "{err}");
    }
}

//! Storage of the signed site logs in the `log` tree of the store.
//!
//! Key: one byte giving the origin's length, the origin PeerId bytes, then the seq as 8 bytes
//! big-endian, so one origin's entries sort by seq and a prefix scan walks one log. Value: the
//! canonical entry encoding (`docs/log-format.md`). Entries are written in sled batches, which
//! sled applies atomically, and flushed before the write is acknowledged; a batch of synced
//! entries costs one flush (group commit).
//!
//! This module stores what it is given: verification is the caller's (`sync::admit`).

use std::collections::BTreeMap;

use libp2p::identity::PeerId;

use super::Store;
use crate::Error;
use crate::log::{Entry, Hash};

const LOG_TREE: &str = "log";

fn key(origin: &PeerId, seq: u64) -> Vec<u8> {
    let o = origin.to_bytes();
    let mut k = Vec::with_capacity(1 + o.len() + 8);
    k.push(o.len() as u8);
    k.extend_from_slice(&o);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn prefix(origin: &PeerId) -> Vec<u8> {
    let mut k = key(origin, 0);
    k.truncate(k.len() - 8);
    k
}

/// The last entry held of one origin's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash,
    /// Its hybrid logical clock.
    pub hlc: crate::hlc::HlcTime,
}

impl Store {
    fn log_tree(&self) -> Result<sled::Tree, Error> {
        self.db.open_tree(LOG_TREE).map_err(|e| self.err(e))
    }

    fn decode_stored(&self, v: &[u8]) -> Result<Entry, Error> {
        Entry::decode(v).map_err(|e| Error::Store {
            path: self.path.clone(),
            reason: format!("a stored log entry does not decode ({e}); restore from a backup"),
        })
    }

    /// Writes entries atomically and returns once they are on disk.
    pub fn log_append(&self, entries: &[Entry]) -> Result<(), Error> {
        self.log_insert(entries)?;
        self.flush()
    }

    /// Writes entries atomically without flushing; call [`Store::flush`] before acknowledging.
    /// Lets several writers share one flush.
    pub fn log_insert(&self, entries: &[Entry]) -> Result<(), Error> {
        let tree = self.log_tree()?;
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(key(&e.origin, e.seq), e.encode());
        }
        tree.apply_batch(batch).map_err(|e| self.err(e))
    }

    /// One entry.
    pub fn log_get(&self, origin: &PeerId, seq: u64) -> Result<Option<Entry>, Error> {
        let tree = self.log_tree()?;
        match tree.get(key(origin, seq)).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(self.decode_stored(&v)?)),
            None => Ok(None),
        }
    }

    /// Entries `from..=to` of `origin`, oldest first, at most `limit`.
    pub fn log_range(
        &self,
        origin: &PeerId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        let tree = self.log_tree()?;
        let mut out = Vec::new();
        for kv in tree.range(key(origin, from)..=key(origin, to)).take(limit) {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            out.push(self.decode_stored(&v)?);
        }
        Ok(out)
    }

    /// The head of every log held.
    pub fn log_heads(&self) -> Result<BTreeMap<PeerId, Head>, Error> {
        let tree = self.log_tree()?;
        let mut heads = BTreeMap::new();
        let mut cursor: Vec<u8> = Vec::new();
        // Jump from one origin's prefix to the next: a handful of seeks, not a full scan.
        while let Some(kv) = tree.range(cursor.clone()..).next() {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            let n = usize::from(k[0]);
            let p = k[..1 + n].to_vec();
            let origin = PeerId::from_bytes(&p[1..]).map_err(|_| Error::Store {
                path: self.path.clone(),
                reason: "a log key names no PeerId; restore from a backup".into(),
            })?;
            if let Some(last) = tree.scan_prefix(&p).next_back() {
                let (_, v) = last.map_err(|e| self.err(e))?;
                let e = self.decode_stored(&v)?;
                heads.insert(
                    origin,
                    Head {
                        seq: e.seq,
                        hash: e.hash(),
                        hlc: e.hlc,
                    },
                );
            }
            let mut next = p;
            next.extend_from_slice(&[0xff; 9]);
            cursor = next;
        }
        Ok(heads)
    }

    /// Number of entries held of `origin`'s log.
    pub fn log_len(&self, origin: &PeerId) -> Result<u64, Error> {
        let tree = self.log_tree()?;
        Ok(tree.scan_prefix(prefix(origin)).count() as u64)
    }

    /// Every entry held, by origin then seq (for digests and tests).
    pub fn log_all(&self) -> Result<Vec<Entry>, Error> {
        let tree = self.log_tree()?;
        let mut out = Vec::new();
        for kv in tree.iter() {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            out.push(self.decode_stored(&v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::log::entry::tests::chain;

    #[test]
    fn appended_entries_survive_reopen_with_heads() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let ca = chain(&a, 5, "public");
        let cb = chain(&b, 2, "mediation");
        {
            let store = Store::open(dir.path()).unwrap();
            store.log_append(&ca).unwrap();
            store.log_append(&cb).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let heads = store.log_heads().unwrap();
        assert_eq!(heads.len(), 2);
        let ha = heads[&a.public().to_peer_id()];
        assert_eq!((ha.seq, ha.hash), (5, ca[4].hash()));
        assert_eq!(heads[&b.public().to_peer_id()].seq, 2);
        let r = store.log_range(&a.public().to_peer_id(), 2, 4, 10).unwrap();
        assert_eq!(r, ca[1..4].to_vec());
        assert_eq!(
            store
                .log_range(&a.public().to_peer_id(), 2, 9, 2)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store.log_get(&b.public().to_peer_id(), 2).unwrap(),
            Some(cb[1].clone())
        );
        assert_eq!(store.log_len(&a.public().to_peer_id()).unwrap(), 5);
        assert_eq!(store.log_all().unwrap().len(), 7);
    }
}

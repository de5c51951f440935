//! Node-local state that never leaves the node and is not part of any log: sign-in sessions,
//! rate-limit windows, queue bookkeeping. Small values by key in named trees (`local/<name>`).
//!
//! Writes are durable when they return, like every acknowledged write of the store.

use super::Store;
use crate::Error;

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

impl Store {
    fn local_tree(&self, tree: &str) -> Result<sled::Tree, Error> {
        self.db
            .open_tree(format!("local/{tree}"))
            .map_err(|e| self.err(e))
    }

    /// Stores `value` under `key` in the local tree `tree`; returns once it is on disk.
    pub fn local_put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.local_tree(tree)?
            .insert(key, value)
            .map_err(|e| self.err(e))?;
        self.flush()
    }

    /// The value under `key` in the local tree `tree`.
    pub fn local_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let value = self.local_tree(tree)?.get(key).map_err(|e| self.err(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// Removes `key` from the local tree `tree`; returns once that is on disk.
    pub fn local_remove(&self, tree: &str, key: &[u8]) -> Result<(), Error> {
        self.local_tree(tree)?
            .remove(key)
            .map_err(|e| self.err(e))?;
        self.flush()
    }

    /// Every (key, value) of the local tree `tree`, by key.
    pub fn local_scan(&self, tree: &str) -> Result<Vec<KeyValue>, Error> {
        self.local_tree(tree)?
            .iter()
            .map(|kv| {
                kv.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn local_values_round_trip_and_stay_apart_by_tree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.local_put("sessions", b"a", b"1").unwrap();
        store.local_put("sessions", b"b", b"2").unwrap();
        store.local_put("other", b"a", b"x").unwrap();
        assert_eq!(store.local_get("sessions", b"a").unwrap().unwrap(), b"1");
        store.local_remove("sessions", b"a").unwrap();
        assert_eq!(store.local_get("sessions", b"a").unwrap(), None);
        let all = store.local_scan("sessions").unwrap();
        assert_eq!(all, vec![(b"b".to_vec(), b"2".to_vec())]);
        assert_eq!(store.local_get("other", b"a").unwrap().unwrap(), b"x");
    }
}

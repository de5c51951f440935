//! Signed append-only site logs: the entry format and its verification (sans-IO).
//!
//! Storage lives in `store::log`; replication in `sync` and `swarm`.

pub mod codec;
pub mod entry;

pub use entry::{Body, Draft, Entry, Hash, Refusal, ZERO_HASH};

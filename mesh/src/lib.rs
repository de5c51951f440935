//! The mesh side of huiyan: node identity, the roster of sites, the on-disk store, the signed
//! site logs and how they move between sites (see `docs/log-format.md` and `docs/mesh.md`).
//!
//! This crate knows nothing of HTTP, browsers or media; the node wires it up.
//!
//! # Limitations
//!
//! - TODO(#3): DNS names in the roster are not resolved (no libp2p `dns` transport yet); roster
//!   `mesh` addresses must be IP addresses for a site to be dialled.
//! - mDNS runs only on nodes listening on a non-loopback address, IPv4 only; its test stands in
//!   for the multicast itself (loopback has none) and checks what the swarm does with what mDNS
//!   finds.
//! - The hub is the only relay, and a relayed connection is not upgraded by hole punching
//!   (DCUtR): it is replaced only when a plain direct dial succeeds.

pub mod diag;
pub mod hlc;
pub mod identity;
pub mod log;
pub mod netem;
pub mod replica;
pub mod roster;
pub mod scope;
pub mod store;
pub mod swarm;
pub mod sync;
pub mod vv;
pub mod wire;

use std::path::PathBuf;

/// Errors of the mesh crate. Each says what was wrong and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("node key {path} already exists; refusing to overwrite a node identity")]
    KeyExists { path: PathBuf },
    #[error("data dir {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    #[error(
        "data dir {path} was written by a newer huiyan (store schema {found}, this build reads up \
         to {supported}); run the newer huiyan or restore a backup made by this version"
    )]
    StoreTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "data dir {path} holds data that is not a huiyan store ({reason}); point `data_dir` at an \
         empty or huiyan directory"
    )]
    StoreForeign { path: PathBuf, reason: String },
    #[error(
        "data dir {path} is in use by another process (is another huiyan running with it?); stop \
         it or choose another `data_dir`"
    )]
    StoreLocked { path: PathBuf },
    #[error("record refused: {reason}")]
    Record { reason: String },
    #[error("mesh: {reason}")]
    Mesh { reason: String },
}

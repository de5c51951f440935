//! The mesh side of huiyan: node identity, the roster of sites, the on-disk store and (as the
//! replication lands) the signed site logs and how they move between sites.
//!
//! This crate knows nothing of HTTP, browsers or media; the node wires it up.
//!
//! # Limitations
//!
//! - The signed logs and their replication are not here yet. TODO(#3).
//! - The store holds only its own metadata so far; the logs arrive with #3.

pub mod diag;
pub mod identity;
pub mod roster;
pub mod store;

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
}

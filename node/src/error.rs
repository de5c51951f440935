//! Errors of the node, each with the process exit code it maps to.

use std::net::SocketAddr;
use std::path::PathBuf;

use huiyan_mesh::diag::Diagnostic;

/// Exit code for a refusal to start because of configuration or environment (`EX_USAGE`-like).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", render(.0))]
    Config(Vec<Diagnostic>),
    #[error(transparent)]
    Mesh(#[from] huiyan_mesh::Error),
    #[error(
        "the roster has no peer_id for site `{site}`; this node's key {key_file} has PeerId \
         {peer_id}: add `peer_id = \"{peer_id}\"` to that site in {roster}"
    )]
    NotEnrolled {
        site: String,
        key_file: PathBuf,
        peer_id: String,
        roster: PathBuf,
    },
    #[error(
        "the key {key_file} has PeerId {actual}, but the roster {roster} names {expected} for site \
         `{site}`; use that site's own key, or update the roster if the key was rotated"
    )]
    WrongKey {
        site: String,
        key_file: PathBuf,
        actual: String,
        expected: String,
        roster: PathBuf,
    },
    #[error(
        "the node key {key_file} is missing; create it with `huiyan keygen --out {key_file}` and \
         put the PeerId it prints in the roster"
    )]
    NoKey { key_file: PathBuf },
    #[error("TLS: {0}; check [tls] cert and key in the site config (PEM files)")]
    Tls(String),
    #[error(
        "cannot listen on {addr} for {what}: {reason}; free the port or change `listen.{what}` in \
         the site config"
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    /// A command-line argument is wrong; the message says which and how to write it.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Runtime(_) => EXIT_FAILURE,
            _ => EXIT_CONFIG,
        }
    }
}

fn render(found: &[Diagnostic]) -> String {
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    format!(
        "the configuration has {} error(s):\n{}",
        found.len(),
        lines.join("\n")
    )
}

//! The media relay between sites: QUIC (quinn) links authenticated by the roster keys that
//! carry one copy of each stream a remote site wants, within a per-link budget, with forward
//! error correction and retransmission across lossy links.
//!
//! See `docs/relay.md` for the protocol and the design.

pub mod budget;
pub mod core;
pub mod fec;
pub mod link;
pub mod net;
pub mod tls;
pub mod wire;

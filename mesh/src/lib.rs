//! huiyan-mesh: identity, the roster, the store and the replicated signed site logs.
//!
//! # Limitations
//!
//! - TODO(#3): mDNS discovery and relay v2 on the hub are not implemented; peers are dialled at
//!   their roster addresses only.

pub mod hlc;
pub mod log;
pub mod scope;
pub mod sync;
pub mod vv;
pub mod wire;

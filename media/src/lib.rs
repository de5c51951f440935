//! huiyan-media: calls between browsers through the node's selective forwarding unit.
//!
//! - [`sfu`]: the sans-IO forwarding core (routing table, simulcast layer choice, retransmit
//!   buffers, keyframe-request rate limiting, SSRC / sequence / timestamp rewriting).
//! - [`room`]: room kinds, owners, participant limits and who may publish.
//! - [`token`]: join tokens issued by the node API and checked by the signaling.
//! - [`signal`]: the JSON signaling protocol spoken over the node's `/ws`.
//! - [`driver`]: the IO side: one UDP port (and ICE-TCP on the same port number) shared by
//!   every WebRTC session, webrtc-rs `rtc` peer connections, and the SFU core.
//! - [`mux`]: which session a datagram on the shared port belongs to.
//! - [`metrics`]: the counters exported on the node's `/metrics`.
//! - [`record`]: the sans-IO WebM writer that records a publisher from its RTP packets.
//! - [`relay`]: the media relay between sites over quinn (rooms across sites, one copy per
//!   link, budget, FEC and NACK, outages); its sans-IO core lives beside the SFU in the engine.
//!
//! See `docs/media.md` for how webrtc-rs 0.21 is used and why the driver speaks to its sans-IO
//! core directly, and `docs/relay.md` for the relay.
//!
//! # Limitations
//!
//! - One peer connection per direction and per remote publisher: a browser publishes on one
//!   connection and subscribes to each other participant on its own connection (all on the one
//!   node port). A single connection with renegotiation is TODO(#4).
//! - VP8 and Opus only; H.264 and VP9/AV1 SVC are not negotiated. TODO(#4).
//! - NACKs for packets no longer in the retransmit buffer are not forwarded to the publisher.
//! - Climbing to a higher simulcast layer is a trial, not a probe: GCC's estimate grows while a
//!   subscriber gets less than its link carries, so on a capped link a failed climb costs about
//!   a second of frozen video, at intervals growing from 10 to 80 s. Probing with padding or
//!   RTX first is TODO(#4).
//! - Host candidates carry one IP, `[listen] rtc_advertise` or its default; with a wildcard bind
//!   every answer offers that one address (no `IP_PKTINFO`, no candidate per interface).
//!   TODO(#4).
//! - Recording ([`record`]) keeps one simulcast layer (the middle one, 640x360 from the call
//!   page) and writes no Cues: browsers seek in the files by reading ahead. A file whose
//!   publisher changes resolution mid-stream keeps the first keyframe's size in its header.
//!   Audio and video are aligned by their arrival times, not by RTCP sender reports: lip sync
//!   is as good as the network's jitter (tens of milliseconds). Only publishers on this node
//!   are tapped: a member that reaches the room through the relay is not recorded. TODO(#6)
//! - The relay's tree is rooted at each room's home site: members at two other sites reach
//!   each other through the home, and a room whose home nobody can reach is unreachable.
//!   TODO(#5)
//! - Any roster site may attach to any room; correction rooms should only be reachable from
//!   sites allowed that office's correction scope. TODO(#5)
//! - The layer wanted across a relay link is the highest any local subscriber's size allows,
//!   not its bandwidth. TODO(#5)
//! - Room limits count members of every site, but simultaneous joins at two sites can pass a
//!   limit by one. TODO(#5)
//! - After an outage a site that comes back through the hub and then directly can make the
//!   room's home drop its members and add them again (the hub's `left` overtakes the direct
//!   re-attach): browsers re-subscribe. TODO(#5)

pub mod driver;
pub mod metrics;
pub mod mux;
pub mod record;
pub mod relay;
pub mod room;
pub mod sfu;
pub mod signal;
pub mod token;

/// Everything that can go wrong in huiyan-media.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A participant tried to join twice.
    #[error("participant {participant} has already joined a room; leave first")]
    AlreadyJoined {
        /// The participant.
        participant: u64,
    },
    /// An operation needs a joined participant.
    #[error("participant {participant} has not joined a room; send `join` first")]
    NotJoined {
        /// The participant.
        participant: u64,
    },
    /// A subscription names a publisher that is not in the subscriber's room.
    #[error("participant {publisher} does not publish in this room")]
    UnknownPublisher {
        /// The publisher asked for.
        publisher: u64,
    },
    /// A join token was refused.
    #[error("join token refused: {0}")]
    Token(#[from] token::TokenError),
    /// Room policy refused an action.
    #[error("{0}")]
    Room(#[from] room::RoomError),
    /// The WebRTC stack refused an SDP or failed.
    #[error("WebRTC: {reason}")]
    Rtc {
        /// What the stack said.
        reason: String,
    },
    /// A socket could not be bound or used.
    #[error("media socket {addr}: {source}")]
    Io {
        /// The address involved.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The home site of a room did not answer in time.
    #[error("the home site of room `{room}` cannot be reached now; try again in a moment")]
    RoomUnreachable {
        /// The room.
        room: String,
    },
    /// The relay between sites could not start.
    #[error("media relay: {reason}")]
    Relay {
        /// What went wrong.
        reason: String,
    },
    /// The media engine task has stopped.
    #[error("the media engine has stopped")]
    EngineStopped,
}

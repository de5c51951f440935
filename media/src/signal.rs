//! The signaling protocol between a browser and its node, spoken as JSON text messages over the
//! node's `/ws` WebSocket. One message per WebSocket frame; each has a `type`.
//!
//! A call, from the browser's side:
//!
//! 1. `join` with a token from `POST /api/v1/media/token`; the node answers `joined` with the
//!    participant id and who already publishes (`peers`).
//! 2. `publish` with an SDP offer (audio and simulcast video, `sendonly`); the node answers
//!    `answer` for connection `"publish"`.
//! 3. For each publisher (in `joined.peers`, or announced later by `published`): `subscribe`
//!    with an SDP offer of `recvonly` audio and video; the node answers `answer` for connection
//!    `"sub:<publisher>"`.
//! 4. On a network change, `restart` with an ICE-restart offer for a connection.
//! 5. `leave`, or just close the socket.
//!
//! The node tells each member when someone publishes (`published`), leaves (`left`), when one
//! of its own connections fails (`connection` with state `failed`: the browser should restart
//! ICE or rejoin), and the layer and estimate of its subscriptions (`quality`); a `keepalive`
//! every few seconds lets the browser notice a socket that died without closing. Every refusal is
//! an `error` with a stable `code` and a message saying what to do; the socket stays open.

use serde::{Deserialize, Serialize};

use crate::room::{Role, RoomKind};

/// Largest signaling message accepted, in bytes. SDP offers with simulcast are about 6 KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How often the node sends [`ServerMessage::Keepalive`], in seconds. The call page treats a
/// socket that brought nothing for four times as long as dead and rejoins.
pub const KEEPALIVE_SECONDS: u64 = 5;

/// A message from the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Join the room the token names.
    Join {
        /// The join token.
        token: String,
    },
    /// Publish audio and video; `sdp` is the offer.
    Publish {
        /// SDP offer.
        sdp: String,
        /// Frame heights of the simulcast layers, lowest first (e.g. `[180, 360, 720]`).
        #[serde(default)]
        layer_heights: Vec<u32>,
    },
    /// Receive one publisher's tracks; `sdp` is the offer.
    Subscribe {
        /// The publisher's participant id.
        publisher: u64,
        /// SDP offer with `recvonly` transceivers.
        sdp: String,
        /// Receive audio only.
        #[serde(default)]
        audio_only: bool,
        /// Largest frame height worth receiving, in pixels.
        #[serde(default)]
        max_height: Option<u32>,
    },
    /// Change the size wanted from a publisher.
    Prefs {
        /// The publisher.
        publisher: u64,
        /// Largest frame height worth receiving.
        max_height: Option<u32>,
    },
    /// Stop receiving a publisher.
    Unsubscribe {
        /// The publisher.
        publisher: u64,
    },
    /// ICE restart of one connection: `sdp` is an offer created with `iceRestart: true`.
    Restart {
        /// `"publish"` or `"sub:<publisher>"`.
        pc: String,
        /// SDP offer.
        sdp: String,
    },
    /// A trickled ICE candidate of the browser for one connection.
    Candidate {
        /// `"publish"` or `"sub:<publisher>"`.
        pc: String,
        /// The candidate line (`candidate:...`); empty at the end of gathering.
        candidate: String,
        /// Its `sdpMid`.
        #[serde(default)]
        sdp_mid: Option<String>,
        /// Its `sdpMLineIndex`.
        #[serde(default)]
        sdp_mline_index: Option<u16>,
    },
    /// Leave the room; the socket may stay open for another join.
    Leave,
}

/// A publisher visible to the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its participant id.
    pub participant: u64,
    /// Its opaque account id (from its token).
    pub sub: String,
    /// Whether it publishes audio.
    pub audio: bool,
    /// Whether it publishes video.
    pub video: bool,
    /// The site its browser is connected to, when that is another site (relayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// A message from the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        /// This participant's id.
        participant: u64,
        /// The room id.
        room: String,
        /// Its kind.
        kind: RoomKind,
        /// This participant's role.
        role: Role,
        /// Whether this participant may publish.
        may_publish: bool,
        /// Publishers already in the room.
        peers: Vec<PeerInfo>,
    },
    /// The SDP answer for a connection.
    Answer {
        /// `"publish"` or `"sub:<publisher>"`.
        pc: String,
        /// SDP answer.
        sdp: String,
    },
    /// Someone (now) publishes; subscribe to see them.
    Published(PeerInfo),
    /// A participant left; drop its subscription connection.
    Left {
        /// Its participant id.
        participant: u64,
    },
    /// A connection of this browser changed state (`connected`, `disconnected`, `failed`, ...).
    Connection {
        /// `"publish"` or `"sub:<publisher>"`.
        pc: String,
        /// The new state.
        state: String,
    },
    /// The state of a subscription, every few seconds.
    Quality {
        /// The publisher.
        publisher: u64,
        /// Video layer received (0 = smallest), if any.
        layer: Option<usize>,
        /// The node's estimate of the bandwidth to this browser, in kbit/s.
        estimate_kbps: Option<u64>,
    },
    /// Whether a remote publisher's video is held back because a link between the sites is
    /// too thin: the browser receives its audio only meanwhile, and should say why.
    Relay {
        /// The publisher.
        publisher: u64,
        /// Video held back for lack of bandwidth between sites.
        video_limited: bool,
    },
    /// Sent every [`KEEPALIVE_SECONDS`] whatever else is sent, so that a browser can tell a
    /// dead socket (a network that dropped without closing it) from a quiet one.
    Keepalive,
    /// A request was refused; nothing changed.
    Error {
        /// Stable machine-readable code.
        code: ErrorCode,
        /// What was wrong and what to do.
        message: String,
    },
}

/// Stable error codes of the signaling protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not a known message, or a missing field.
    BadMessage,
    /// Larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// Token malformed or forged.
    BadToken,
    /// Token expired.
    TokenExpired,
    /// No such room.
    UnknownRoom,
    /// The room is full.
    RoomFull,
    /// The role may not do that here.
    Forbidden,
    /// `join` first.
    NotJoined,
    /// Already joined.
    AlreadyJoined,
    /// The SDP could not be used.
    BadSdp,
    /// No such publisher in the room.
    UnknownPublisher,
    /// Too many requests; slow down.
    RateLimited,
    /// The node failed; try again.
    Internal,
}

impl ServerMessage {
    /// An error message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    /// The JSON text of this message.
    pub fn to_json(&self) -> String {
        // Serializing these plain enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Parse one text frame from a browser, or say why it was refused.
pub fn parse_client(text: &str) -> Result<ClientMessage, ServerMessage> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ServerMessage::error(
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes is over the limit of {MAX_MESSAGE_BYTES}",
                text.len()
            ),
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        ServerMessage::error(
            ErrorCode::BadMessage,
            format!("not a signaling message ({e}); see docs/media.md for the protocol"),
        )
    })
}

impl From<&crate::Error> for ServerMessage {
    fn from(err: &crate::Error) -> Self {
        use crate::room::RoomError;
        use crate::token::TokenError;
        let code = match err {
            crate::Error::AlreadyJoined { .. } => ErrorCode::AlreadyJoined,
            crate::Error::NotJoined { .. } => ErrorCode::NotJoined,
            crate::Error::UnknownPublisher { .. } => ErrorCode::UnknownPublisher,
            crate::Error::Token(TokenError::Expired { .. }) => ErrorCode::TokenExpired,
            crate::Error::Token(_) => ErrorCode::BadToken,
            crate::Error::Room(RoomError::Unknown { .. })
            | crate::Error::RoomUnreachable { .. } => ErrorCode::UnknownRoom,
            crate::Error::Room(RoomError::Full { .. }) => ErrorCode::RoomFull,
            crate::Error::Room(RoomError::MayNotPublish { .. }) => ErrorCode::Forbidden,
            crate::Error::Rtc { .. } => ErrorCode::BadSdp,
            crate::Error::Io { .. } | crate::Error::Relay { .. } | crate::Error::EngineStopped => {
                ErrorCode::Internal
            }
        };
        ServerMessage::error(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_from_the_documented_json() {
        let msg = parse_client(r#"{"type":"join","token":"t"}"#).unwrap();
        assert_eq!(msg, ClientMessage::Join { token: "t".into() });
        let msg =
            parse_client(r#"{"type":"subscribe","publisher":3,"sdp":"v=0","audio_only":true}"#)
                .unwrap();
        assert_eq!(
            msg,
            ClientMessage::Subscribe {
                publisher: 3,
                sdp: "v=0".into(),
                audio_only: true,
                max_height: None
            }
        );
        assert_eq!(
            parse_client(r#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave
        );
    }

    #[test]
    fn garbage_and_oversized_messages_get_clear_codes() {
        for text in [
            "",
            "{",
            "[]",
            r#"{"type":"fly"}"#,
            r#"{"type":"join"}"#,
            "\u{0}",
        ] {
            match parse_client(text) {
                Err(ServerMessage::Error {
                    code: ErrorCode::BadMessage,
                    message,
                }) => {
                    assert!(message.contains("not a signaling message"), "{message}")
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let big = format!(
            r#"{{"type":"join","token":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(matches!(
            parse_client(&big),
            Err(ServerMessage::Error {
                code: ErrorCode::TooLarge,
                ..
            })
        ));
    }

    #[test]
    fn server_messages_serialize_with_a_type_tag() {
        let json = ServerMessage::error(ErrorCode::RoomFull, "full").to_json();
        assert_eq!(
            json,
            r#"{"type":"error","code":"room_full","message":"full"}"#
        );
        let json = ServerMessage::Left { participant: 4 }.to_json();
        assert_eq!(json, r#"{"type":"left","participant":4}"#);
    }
}

//! The relay's wire format, version 1 (docs/relay.md is the reference).
//!
//! - **Control** travels on one bidirectional QUIC stream per connection, opened by the dialer:
//!   frames of a 4-byte big-endian length and one JSON object with a `type`
//!   ([`Control`]). The first frame each way is `hello` with the protocol version; a peer
//!   speaking another major version is closed with a clear reason. Frames over
//!   [`MAX_CONTROL_FRAME`] close the connection.
//! - **Media** travels in QUIC datagrams ([`Datagram`]): RTP (header fields the SFU needs and
//!   the payload, untouched), XOR parity for forward error correction, padding for bandwidth
//!   probes, and fragments of any of these when they exceed the path's datagram size.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::room::{Role, RoomKind};

/// The control protocol's version. A change that old nodes cannot ignore bumps it.
pub const VERSION: u32 = 1;
/// Largest control frame accepted, in bytes (a room snapshot of 100 members is ~20 KiB).
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;

/// A track published somewhere in the mesh: its origin site and the origin's track number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// The site whose SFU receives the track from the browser.
    pub origin: String,
    /// The track number at the origin.
    pub track: u64,
}

/// A participant somewhere in the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId {
    /// The site the participant's browser is connected to.
    pub origin: String,
    /// The participant number at the origin.
    pub participant: u64,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    /// Opus.
    Audio,
    /// VP8, one layer or a simulcast of up to three.
    Video,
}

/// A published track as announced across the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    /// The track number at the origin.
    pub track: u64,
    /// The number the sender of this message puts in media datagrams of this track.
    pub tag: u32,
    /// Audio or video.
    pub kind: TrackKind,
    /// RTP clock rate, Hz.
    pub clock_rate: u32,
    /// Frame heights of the layers, lowest first (empty for audio).
    #[serde(default)]
    pub layer_heights: Vec<Option<u32>>,
}

/// A participant of a room as announced across the mesh, with what it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Who.
    pub id: MemberId,
    /// Its opaque account id (never a person's name).
    pub sub: String,
    /// Its role in the room.
    pub role: Role,
    /// What it publishes.
    #[serde(default)]
    pub tracks: Vec<TrackInfo>,
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// First message each way.
    Hello {
        /// [`VERSION`] of the sender.
        version: u32,
        /// The sender's site id (informative: identity comes from the TLS certificate).
        site: String,
    },
    /// "Make me part of this room through you": the receiver becomes the sender's upstream.
    Attach {
        /// Global room id, `home/room`.
        room: String,
    },
    /// The sender no longer needs the room through the receiver.
    Detach {
        /// Global room id.
        room: String,
    },
    /// The room's policy, from its home (relayed down unchanged).
    Room {
        /// Global room id.
        room: String,
        /// What kind of room.
        kind: RoomKind,
        /// Most participants at once, across all sites.
        limit: usize,
        /// Opaque owner id.
        owner: String,
    },
    /// The home has no such room.
    NoRoom {
        /// Global room id.
        room: String,
    },
    /// Every member the sender knows in the room, except those learned from the receiver.
    /// Replaces what the receiver learned from the sender before (sent on every attach).
    Members {
        /// Global room id.
        room: String,
        /// The members.
        members: Vec<Member>,
    },
    /// A member joined or changed what it publishes.
    Member {
        /// Global room id.
        room: String,
        /// The member, complete.
        member: Member,
    },
    /// A member left.
    Left {
        /// Global room id.
        room: String,
        /// Who.
        id: MemberId,
    },
    /// The sender wants a stream up to `layer` (0 = audio or the lowest video layer), or no
    /// longer wants it (`layer` absent).
    Want {
        /// The stream.
        stream: StreamId,
        /// Highest layer wanted.
        #[serde(default)]
        layer: Option<u8>,
    },
    /// Please get a keyframe of this layer from the publisher.
    Keyframe {
        /// The stream.
        stream: StreamId,
        /// The layer.
        layer: u8,
    },
    /// These packets did not arrive; resend them.
    Nack {
        /// The stream's tag on this link.
        tag: u32,
        /// The layer.
        layer: u8,
        /// Sequence numbers (the publisher's, per layer).
        seqs: Vec<u16>,
    },
    /// What the sender forwards of a stream now. `limited`: a layer the receiver wants is
    /// held back because a link on the way is too thin.
    Carried {
        /// The stream.
        stream: StreamId,
        /// Layers forwarded, lowest first.
        layers: Vec<u8>,
        /// Whether a wanted layer is held back for lack of bandwidth.
        limited: bool,
    },
}

/// Why a control frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Longer than [`MAX_CONTROL_FRAME`].
    #[error("control frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not a control message of this version.
    #[error("not a relay control message: {0}")]
    Malformed(String),
}

impl Control {
    /// The frame for this message: length, then JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain types cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + json.len());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }

    /// Parse one frame body (without its length).
    pub fn decode(body: &[u8]) -> Result<Control, WireError> {
        if body.len() > MAX_CONTROL_FRAME {
            return Err(WireError::TooLarge(body.len()));
        }
        serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

/// Header of a forwarded RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaHeader {
    /// The stream's tag on this link.
    pub tag: u32,
    /// Layer, 0 = audio or the lowest video layer.
    pub layer: u8,
    /// The publisher's RTP sequence number for this layer.
    pub seq: u16,
    /// The publisher's RTP timestamp.
    pub ts: u32,
    /// RTP marker bit (end of a video frame).
    pub marker: bool,
    /// Sent again in answer to a NACK.
    pub retransmission: bool,
    /// First packet of this layer since the sender (re)started forwarding it: sequence
    /// numbers before it were never sent on this link and must not be NACKed.
    pub restart: bool,
}

/// Header of a parity packet over a group of packets (see [`super::fec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParityHeader {
    /// The stream's tag on this link.
    pub tag: u32,
    /// Layer.
    pub layer: u8,
    /// First sequence number of the group.
    pub base: u16,
    /// Bit `i` set: packet `base + i` is covered.
    pub mask: u16,
    /// 0: P, the XOR of the covered packets; 1: Q, their sum weighted by 2^i in GF(2⁸).
    pub which: u8,
}

/// One relay datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    /// An RTP packet.
    Media(MediaHeader, Bytes),
    /// Parity over a group of RTP packets (lengths, timestamps, markers and payloads).
    Parity(ParityHeader, Bytes),
    /// Filler for bandwidth probes; the receiver drops it.
    Padding(usize),
}

const T_MEDIA: u8 = 0x10;
const T_PARITY: u8 = 0x11;
const T_PADDING: u8 = 0x12;
const T_FRAGMENT: u8 = 0x1f;
/// Bytes of a media header.
pub const MEDIA_HEADER: usize = 13;
/// Bytes of a fragment header.
const FRAGMENT_HEADER: usize = 5;

impl Datagram {
    /// Encode into one buffer (may be larger than the path allows: see [`fragment`]).
    pub fn encode(&self) -> Bytes {
        match self {
            Datagram::Media(h, payload) => {
                let mut b = BytesMut::with_capacity(MEDIA_HEADER + payload.len());
                b.put_u8(T_MEDIA);
                let flags =
                    u8::from(h.marker) | u8::from(h.retransmission) << 1 | u8::from(h.restart) << 2;
                b.put_u8(flags);
                b.put_u32(h.tag);
                b.put_u8(h.layer);
                b.put_u16(h.seq);
                b.put_u32(h.ts);
                b.put_slice(payload);
                b.freeze()
            }
            Datagram::Parity(h, payload) => {
                let mut b = BytesMut::with_capacity(11 + payload.len());
                b.put_u8(T_PARITY);
                b.put_u32(h.tag);
                b.put_u8(h.layer);
                b.put_u16(h.base);
                b.put_u16(h.mask);
                b.put_u8(h.which);
                b.put_slice(payload);
                b.freeze()
            }
            Datagram::Padding(len) => {
                let mut b = BytesMut::zeroed((*len).max(1));
                b[0] = T_PADDING;
                b.freeze()
            }
        }
    }

    /// Decode one (reassembled) datagram; `None` for garbage.
    pub fn decode(mut data: Bytes) -> Option<Datagram> {
        if data.is_empty() {
            return None;
        }
        let len = data.len();
        match data.get_u8() {
            T_MEDIA if data.len() >= MEDIA_HEADER - 1 => {
                let flags = data.get_u8();
                let header = MediaHeader {
                    tag: data.get_u32(),
                    layer: data.get_u8(),
                    seq: data.get_u16(),
                    ts: data.get_u32(),
                    marker: flags & 1 != 0,
                    retransmission: flags & 2 != 0,
                    restart: flags & 4 != 0,
                };
                Some(Datagram::Media(header, data))
            }
            T_PARITY if data.len() >= 10 => {
                let header = ParityHeader {
                    tag: data.get_u32(),
                    layer: data.get_u8(),
                    base: data.get_u16(),
                    mask: data.get_u16(),
                    which: data.get_u8(),
                };
                (header.which <= 1).then_some(Datagram::Parity(header, data))
            }
            T_PADDING => Some(Datagram::Padding(len)),
            _ => None,
        }
    }
}

/// Split an encoded datagram into pieces of at most `max` bytes (one piece when it fits).
/// `id` must differ between consecutive fragmented datagrams of a link.
pub fn fragment(encoded: Bytes, max: usize, id: u16) -> Vec<Bytes> {
    if encoded.len() <= max {
        return vec![encoded];
    }
    let chunk = max.saturating_sub(FRAGMENT_HEADER).max(64);
    let count = encoded.len().div_ceil(chunk);
    if count > usize::from(u8::MAX) {
        return Vec::new(); // cannot happen with RTP sizes; never send garbage
    }
    (0..count)
        .map(|i| {
            let piece = &encoded[i * chunk..((i + 1) * chunk).min(encoded.len())];
            let mut b = BytesMut::with_capacity(FRAGMENT_HEADER + piece.len());
            b.put_u8(T_FRAGMENT);
            b.put_u16(id);
            b.put_u8(i as u8);
            b.put_u8(count as u8);
            b.put_slice(piece);
            b.freeze()
        })
        .collect()
}

/// Reassembles fragmented datagrams of one link. Bounded: at most [`Reassembly::MAX_PENDING`]
/// partial datagrams, each kept at most [`Reassembly::MAX_AGE`].
#[derive(Debug, Default)]
pub struct Reassembly {
    pending: HashMap<u16, Partial>,
    order: VecDeque<u16>,
}

#[derive(Debug)]
struct Partial {
    started: Instant,
    pieces: Vec<Option<Bytes>>,
    have: usize,
}

impl Reassembly {
    /// Most partial datagrams kept.
    pub const MAX_PENDING: usize = 32;
    /// Longest a partial datagram waits for its other pieces.
    pub const MAX_AGE: Duration = Duration::from_secs(1);

    /// Take one received QUIC datagram; returns a whole relay datagram when one is complete.
    pub fn push(&mut self, now: Instant, mut data: Bytes) -> Option<Bytes> {
        if data.first() != Some(&T_FRAGMENT) {
            return Some(data);
        }
        if data.len() < FRAGMENT_HEADER {
            return None;
        }
        data.advance(1);
        let id = data.get_u16();
        let index = usize::from(data.get_u8());
        let count = usize::from(data.get_u8());
        if count < 2 || index >= count {
            return None;
        }
        self.expire(now);
        let partial = self.pending.entry(id).or_insert_with(|| Partial {
            started: now,
            pieces: vec![None; count],
            have: 0,
        });
        if !self.order.contains(&id) {
            self.order.push_back(id);
        }
        if partial.pieces.len() != count {
            return None;
        }
        if partial.pieces[index].is_none() {
            partial.pieces[index] = Some(data);
            partial.have += 1;
        }
        if partial.have < count {
            while self.order.len() > Self::MAX_PENDING {
                if let Some(old) = self.order.pop_front() {
                    self.pending.remove(&old);
                }
            }
            return None;
        }
        let partial = self.pending.remove(&id)?;
        self.order.retain(|x| *x != id);
        let mut whole = BytesMut::new();
        for piece in partial.pieces.into_iter().flatten() {
            whole.put_slice(&piece);
        }
        Some(whole.freeze())
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&old) = self.order.front() {
            let stale = self
                .pending
                .get(&old)
                .is_none_or(|p| now.saturating_duration_since(p.started) > Self::MAX_AGE);
            if !stale {
                break;
            }
            self.order.pop_front();
            self.pending.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip_as_documented_json() {
        let msg = Control::Want {
            stream: StreamId {
                origin: "bureau".into(),
                track: 7,
            },
            layer: Some(1),
        };
        let frame = msg.encode();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let json: serde_json::Value = serde_json::from_slice(&frame[4..]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"want","stream":{"origin":"bureau","track":7},"layer":1})
        );
        assert_eq!(Control::decode(&frame[4..]).unwrap(), msg);
        assert!(matches!(
            Control::decode(b"{\"type\":\"fly\"}"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            Control::decode(&vec![b' '; MAX_CONTROL_FRAME + 1]),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn datagrams_round_trip() {
        let media = Datagram::Media(
            MediaHeader {
                tag: 9,
                layer: 2,
                seq: 65_535,
                ts: 123_456,
                marker: true,
                retransmission: false,
                restart: true,
            },
            Bytes::from_static(b"vp8 payload"),
        );
        assert_eq!(Datagram::decode(media.encode()).unwrap(), media);
        let parity = Datagram::Parity(
            ParityHeader {
                tag: 1,
                layer: 0,
                base: 10,
                mask: 0b1011,
                which: 1,
            },
            Bytes::from_static(b"xor"),
        );
        assert_eq!(Datagram::decode(parity.encode()).unwrap(), parity);
        assert_eq!(
            Datagram::decode(Datagram::Padding(300).encode()),
            Some(Datagram::Padding(300))
        );
        for garbage in [&b""[..], b"\x10\x00", b"\x42hello", b"\x11short"] {
            assert_eq!(Datagram::decode(Bytes::copy_from_slice(garbage)), None);
        }
    }

    #[test]
    fn large_datagrams_are_fragmented_and_reassembled_in_any_order() {
        let now = Instant::now();
        let big: Bytes = (0..3000u32).map(|i| i as u8).collect::<Vec<_>>().into();
        let mut pieces = fragment(big.clone(), 1200, 5);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.len() <= 1200));
        pieces.reverse();
        let mut r = Reassembly::default();
        assert_eq!(r.push(now, pieces[0].clone()), None);
        assert_eq!(
            r.push(now, pieces[0].clone()),
            None,
            "a duplicate is ignored"
        );
        assert_eq!(r.push(now, pieces[1].clone()), None);
        assert_eq!(r.push(now, pieces[2].clone()), Some(big));
        // A small datagram passes untouched; a lone fragment expires.
        assert_eq!(fragment(Bytes::from_static(b"x"), 1200, 6).len(), 1);
        let late = fragment(Bytes::from(vec![1u8; 2000]), 1200, 7);
        assert_eq!(r.push(now, late[0].clone()), None);
        assert_eq!(r.push(now + Duration::from_secs(2), late[1].clone()), None);
        assert!(r.pending.len() <= 1);
    }
}

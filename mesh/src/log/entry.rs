//! The log entry: its fields, its canonical binary encoding (format version 1), what is signed,
//! and the checks an entry must pass before a node stores it.
//!
//! `docs/log-format.md` is the normative description; this module is its implementation and the
//! two must change together. Storage and transport are left to `store::log` and `sync`.

use libp2p::identity::{Keypair, PeerId, PublicKey};
use sha2::{Digest, Sha256};

use super::codec::{DecodeError, Reader, put_bytes, put_uvarint};
use crate::hlc::HlcTime;

/// The entry format version this code writes and the only one it reads.
pub const FORMAT_VERSION: u8 = 1;
/// Prefix of the signed message, so a log signature can never be replayed as another signature
/// made with the same node key (libp2p handshakes, media endpoint).
pub const SIGNING_DOMAIN: &[u8] = b"huiyan/log-entry/v1\0";
/// Largest payload accepted, in bytes. Records are small JSON documents; 64 KiB leaves room and
/// keeps one entry well under a sync batch.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Largest scope name, in bytes.
pub const MAX_SCOPE: usize = 128;
/// Largest kind name, in bytes.
pub const MAX_KIND: usize = 64;
/// Largest origin (PeerId multihash) in bytes.
const MAX_ORIGIN: usize = 64;
/// Largest signature in bytes (Ed25519 signatures are 64).
const MAX_SIGNATURE: usize = 128;

const FLAG_WITHHELD: u8 = 0x01;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Hash used as `prev` by the first entry of every log.
pub const ZERO_HASH: Hash = [0; 32];

/// Why an entry was refused. Each reason has a fixed label used in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The bytes do not decode as a version-1 entry.
    Malformed,
    /// The origin is not a site of the roster.
    UnknownOrigin,
    /// The signature does not verify with the origin's key.
    BadSignature,
    /// `prev` is not the hash of the entry before it.
    BrokenChain,
    /// The entry does not directly follow the last one held from its origin.
    SeqGap,
    /// A different entry with the same origin and seq is already held (the origin forked).
    Conflict,
    /// The payload belongs to a scope this site may not hold; only the header was kept.
    OutOfScope,
    /// The payload was withheld by the sender although this site may hold the scope.
    Withheld,
}

impl Refusal {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [Refusal; 8] = [
        Refusal::Malformed,
        Refusal::UnknownOrigin,
        Refusal::BadSignature,
        Refusal::BrokenChain,
        Refusal::SeqGap,
        Refusal::Conflict,
        Refusal::OutOfScope,
        Refusal::Withheld,
    ];

    /// Fixed label (snake case).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownOrigin => "unknown_origin",
            Refusal::BadSignature => "bad_signature",
            Refusal::BrokenChain => "broken_chain",
            Refusal::SeqGap => "seq_gap",
            Refusal::Conflict => "conflict",
            Refusal::OutOfScope => "out_of_scope",
            Refusal::Withheld => "withheld",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The payload of an entry, or what remains of it at a site that may not hold its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The payload bytes.
    Full(Vec<u8>),
    /// The payload was withheld; its length and hash keep the chain and signature checkable.
    Withheld {
        /// Payload length in bytes.
        len: u64,
        /// SHA-256 of the payload.
        hash: Hash,
    },
}

impl Body {
    /// Payload length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Full(p) => p.len() as u64,
            Body::Withheld { len, .. } => *len,
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// SHA-256 of the payload.
    pub fn hash(&self) -> Hash {
        match self {
            Body::Full(p) => sha256(p),
            Body::Withheld { hash, .. } => *hash,
        }
    }

    /// The payload when held.
    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            Body::Full(p) => Some(p),
            Body::Withheld { .. } => None,
        }
    }
}

/// One entry of a site's append-only log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// PeerId of the site that wrote the entry; its key signs it.
    pub origin: PeerId,
    /// Position in the origin's log, from 1, without gaps.
    pub seq: u64,
    /// Hash of the previous entry of the same log ([`ZERO_HASH`] for seq 1).
    pub prev: Hash,
    /// Hybrid logical clock at the origin when written.
    pub hlc: HlcTime,
    /// Record scope, deciding which sites may hold the payload.
    pub scope: String,
    /// Record kind (`case`, `call`, `checkin`, ...), for the views.
    pub kind: String,
    /// The payload, or its hash when withheld.
    pub body: Body,
    /// Ed25519 signature over [`SIGNING_DOMAIN`] followed by the header.
    pub signature: Vec<u8>,
}

/// Fields of a new entry before it is signed.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    /// Position in the log.
    pub seq: u64,
    /// Hash of the previous entry.
    pub prev: Hash,
    /// Timestamp.
    pub hlc: HlcTime,
    /// Scope name.
    pub scope: &'a str,
    /// Kind name.
    pub kind: &'a str,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Checks a scope name: 1..=128 bytes of `a-z 0-9 - _ . /`, or `*` is refused (it is a roster
/// wildcard, not a scope).
pub fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SCOPE
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_./".contains(&b))
}

/// Checks a kind name: 1..=64 bytes of `a-z 0-9 - _ .`.
pub fn valid_kind(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_KIND
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// The Ed25519 public key embedded in an Ed25519 PeerId (identity multihash), if any.
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok()
}

impl Entry {
    /// Signs a draft with the origin's key. Fails when the draft breaks a format limit.
    pub fn sign(key: &Keypair, draft: Draft<'_>) -> Result<Entry, &'static str> {
        if draft.seq == 0 {
            return Err("seq starts at 1");
        }
        if !valid_scope(draft.scope) {
            return Err("scope must be 1-128 characters of a-z, 0-9, '-', '_', '.', '/'");
        }
        if !valid_kind(draft.kind) {
            return Err("kind must be 1-64 characters of a-z, 0-9, '-', '_', '.'");
        }
        if draft.payload.len() > MAX_PAYLOAD {
            return Err("payload is larger than 64 KiB");
        }
        let mut e = Entry {
            origin: key.public().to_peer_id(),
            seq: draft.seq,
            prev: draft.prev,
            hlc: draft.hlc,
            scope: draft.scope.to_owned(),
            kind: draft.kind.to_owned(),
            body: Body::Full(draft.payload),
            signature: Vec::new(),
        };
        e.signature = key
            .sign(&e.signed_message())
            .map_err(|_| "the node key cannot sign")?;
        Ok(e)
    }

    /// The header: every field except the payload bytes and the signature, with the payload
    /// represented by its length and SHA-256. See `docs/log-format.md`.
    pub fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(160);
        h.push(FORMAT_VERSION);
        put_bytes(&mut h, &self.origin.to_bytes());
        put_uvarint(&mut h, self.seq);
        h.extend_from_slice(&self.prev);
        h.extend_from_slice(&self.hlc.0.to_be_bytes());
        put_bytes(&mut h, self.scope.as_bytes());
        put_bytes(&mut h, self.kind.as_bytes());
        put_uvarint(&mut h, self.body.len());
        h.extend_from_slice(&self.body.hash());
        h
    }

    /// The exact bytes the origin signs: [`SIGNING_DOMAIN`] followed by [`Entry::header`].
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = SIGNING_DOMAIN.to_vec();
        m.extend_from_slice(&self.header());
        m
    }

    /// The entry hash: SHA-256 of the header. The next entry's `prev` must equal it. A withheld
    /// entry has the same hash as the full one.
    pub fn hash(&self) -> Hash {
        sha256(&self.header())
    }

    /// True when the payload is held.
    pub fn is_full(&self) -> bool {
        matches!(self.body, Body::Full(_))
    }

    /// The same entry with its payload replaced by length and hash.
    pub fn withheld(&self) -> Entry {
        Entry {
            body: Body::Withheld {
                len: self.body.len(),
                hash: self.body.hash(),
            },
            ..self.clone()
        }
    }

    /// Canonical encoding used on disk and on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len() as usize);
        out.push(FORMAT_VERSION);
        out.push(if self.is_full() { 0 } else { FLAG_WITHHELD });
        put_bytes(&mut out, &self.origin.to_bytes());
        put_uvarint(&mut out, self.seq);
        out.extend_from_slice(&self.prev);
        out.extend_from_slice(&self.hlc.0.to_be_bytes());
        put_bytes(&mut out, self.scope.as_bytes());
        put_bytes(&mut out, self.kind.as_bytes());
        match &self.body {
            Body::Full(p) => put_bytes(&mut out, p),
            Body::Withheld { len, hash } => {
                put_uvarint(&mut out, *len);
                out.extend_from_slice(hash);
            }
        }
        put_bytes(&mut out, &self.signature);
        out
    }

    /// Decodes one entry, refusing anything that is not the canonical version-1 encoding.
    /// Does not check the signature or the chain: see [`Entry::check_signature`].
    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != FORMAT_VERSION {
            return Err(DecodeError {
                offset: 0,
                reason: "unknown entry format version",
            });
        }
        let flags = r.u8()?;
        if flags & !FLAG_WITHHELD != 0 {
            return Err(DecodeError {
                offset: 1,
                reason: "unknown flag bits",
            });
        }
        let origin = PeerId::from_bytes(r.bytes(MAX_ORIGIN)?).map_err(|_| DecodeError {
            offset: 2,
            reason: "origin is not a PeerId",
        })?;
        let seq = r.uvarint()?;
        if seq == 0 {
            return Err(r.err("seq 0 is not allowed"));
        }
        let prev = r.array::<32>()?;
        if seq == 1 && prev != ZERO_HASH {
            return Err(r.err("first entry must have a zero prev hash"));
        }
        let hlc = HlcTime(r.u64_be()?);
        let scope = r.str(MAX_SCOPE)?;
        if !valid_scope(scope) {
            return Err(r.err("invalid scope name"));
        }
        let kind = r.str(MAX_KIND)?;
        if !valid_kind(kind) {
            return Err(r.err("invalid kind name"));
        }
        let body = if flags & FLAG_WITHHELD == 0 {
            Body::Full(r.bytes(MAX_PAYLOAD)?.to_vec())
        } else {
            let len = r.uvarint()?;
            if len > MAX_PAYLOAD as u64 {
                return Err(r.err("payload length above the allowed maximum"));
            }
            Body::Withheld {
                len,
                hash: r.array::<32>()?,
            }
        };
        let signature = r.bytes(MAX_SIGNATURE)?.to_vec();
        if !r.is_empty() {
            return Err(r.err("trailing bytes after the entry"));
        }
        Ok(Entry {
            origin,
            seq,
            prev,
            hlc,
            scope: scope.to_owned(),
            kind: kind.to_owned(),
            body,
            signature,
        })
    }

    /// Verifies the signature with the key embedded in the origin PeerId.
    pub fn check_signature(&self) -> Result<(), Refusal> {
        let key = public_key_of(&self.origin).ok_or(Refusal::UnknownOrigin)?;
        if key.verify(&self.signed_message(), &self.signature) {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }

    /// Checks that this entry directly follows `head` (seq and hash of the last held entry of
    /// the same origin, `None` for an empty log). An entry at or below the head is a duplicate
    /// (`Ok(false)`) when its hash matches `held_hash`, else a conflict.
    pub fn check_follows(&self, head: Option<(u64, Hash)>) -> Result<(), Refusal> {
        let (seq, hash) = head.unwrap_or((0, ZERO_HASH));
        if self.seq != seq + 1 {
            return Err(Refusal::SeqGap);
        }
        if self.prev != hash {
            return Err(Refusal::BrokenChain);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn chain(key: &Keypair, n: u64, scope: &str) -> Vec<Entry> {
        let mut prev = ZERO_HASH;
        (1..=n)
            .map(|seq| {
                let payload = format!("{{\"n\":{seq}}}").into_bytes();
                let hlc = HlcTime::new(1_000 + seq, 0);
                let d = Draft {
                    seq,
                    prev,
                    hlc,
                    scope,
                    kind: "case",
                    payload,
                };
                let e = Entry::sign(key, d).unwrap();
                prev = e.hash();
                e
            })
            .collect()
    }

    #[test]
    fn encode_decode_round_trip_and_signature_verifies() {
        let key = Keypair::generate_ed25519();
        for e in chain(&key, 3, "mediation") {
            let b = e.encode();
            let d = Entry::decode(&b).unwrap();
            assert_eq!(d, e);
            assert_eq!(d.encode(), b);
            d.check_signature().unwrap();
        }
    }

    #[test]
    fn withheld_entry_keeps_hash_and_signature() {
        let key = Keypair::generate_ed25519();
        let e = &chain(&key, 1, "correction/office-1")[0];
        let w = e.withheld();
        assert_eq!(w.hash(), e.hash());
        w.check_signature().unwrap();
        let d = Entry::decode(&w.encode()).unwrap();
        assert_eq!(d, w);
        assert!(d.body.payload().is_none());
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let key = Keypair::generate_ed25519();
        let mut e = chain(&key, 1, "mediation").remove(0);
        e.body = Body::Full(b"{\"n\":2}".to_vec());
        assert_eq!(e.check_signature(), Err(Refusal::BadSignature));
    }

    #[test]
    fn signature_by_another_key_fails() {
        let key = Keypair::generate_ed25519();
        let other = Keypair::generate_ed25519();
        let mut e = chain(&key, 1, "mediation").remove(0);
        e.signature = other.sign(&e.signed_message()).unwrap();
        assert_eq!(e.check_signature(), Err(Refusal::BadSignature));
    }

    #[test]
    fn chain_checks_report_gap_and_broken_link() {
        let key = Keypair::generate_ed25519();
        let c = chain(&key, 3, "mediation");
        c[0].check_follows(None).unwrap();
        c[1].check_follows(Some((1, c[0].hash()))).unwrap();
        assert_eq!(
            c[2].check_follows(Some((1, c[0].hash()))),
            Err(Refusal::SeqGap)
        );
        assert_eq!(
            c[1].check_follows(Some((1, [7; 32]))),
            Err(Refusal::BrokenChain)
        );
    }

    #[test]
    fn decoder_refuses_garbage_without_panicking() {
        let key = Keypair::generate_ed25519();
        let b = chain(&key, 2, "mediation")[1].encode();
        for cut in 0..b.len() {
            assert!(Entry::decode(&b[..cut]).is_err());
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(Entry::decode(&extra).is_err());
        let mut v2 = b.clone();
        v2[0] = 2;
        assert!(Entry::decode(&v2).is_err());
    }

    #[test]
    fn sign_refuses_bad_names() {
        let key = Keypair::generate_ed25519();
        let d = |scope, kind| Draft {
            seq: 1,
            prev: ZERO_HASH,
            hlc: HlcTime(1),
            scope,
            kind,
            payload: vec![],
        };
        assert!(Entry::sign(&key, d("*", "case")).is_err());
        assert!(Entry::sign(&key, d("Case", "case")).is_err());
        assert!(Entry::sign(&key, d("a", "x y")).is_err());
        assert!(Entry::sign(&key, d("correction/office-1", "checkin")).is_ok());
    }
}

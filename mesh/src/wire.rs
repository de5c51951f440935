//! Sync messages exchanged over the catch-up request/response protocol, and their encoding.
//!
//! Every message starts with a version byte and a tag. Entry batches are zstd-compressed as a
//! whole, which on thin links pays for the framing many times over (JSON payloads and repeated
//! origins compress well; hashes and signatures do not). Decoding is bounded: a message and a
//! decompressed batch have fixed maximum sizes, so a peer cannot make us allocate without limit.
//! The byte layout is documented in `docs/log-format.md`.

use libp2p::identity::PeerId;

use crate::log::codec::{DecodeError, Reader, put_bytes, put_uvarint};
use crate::vv::VersionVector;

/// Version byte of every sync message.
pub const WIRE_VERSION: u8 = 1;
/// Largest request accepted, in bytes (a version vector of a large mesh fits easily).
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest response accepted on the wire, in bytes.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;
/// Largest decompressed batch, in bytes.
pub const MAX_BATCH_RAW: usize = 8 * 1024 * 1024;
/// Most entries in one batch.
pub const MAX_BATCH_ENTRIES: usize = 4096;
/// zstd level for batches: level 9 costs a few ms per 100 KiB on a small CPU and gains several
/// percent over the default on thin links, where every byte is ~30 µs of airtime.
const ZSTD_LEVEL: i32 = 9;

/// A catch-up request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// "These are my holdings; what are yours?"
    Heads(VersionVector),
    /// "Send the entries `from..=to` of `origin`'s log."
    Range {
        /// Log asked for.
        origin: PeerId,
        /// First seq wanted.
        from: u64,
        /// Last seq wanted.
        to: u64,
    },
}

/// A catch-up response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The responder's holdings.
    Heads(VersionVector),
    /// Encoded entries, oldest first (possibly fewer than asked for).
    Batch(Vec<Vec<u8>>),
    /// The request was refused, with a fixed reason.
    Refused(String),
}

impl Request {
    /// Encodes the request.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        match self {
            Request::Heads(vv) => {
                out.push(1);
                vv.encode(&mut out);
            }
            Request::Range { origin, from, to } => {
                out.push(2);
                put_bytes(&mut out, &origin.to_bytes());
                put_uvarint(&mut out, *from);
                put_uvarint(&mut out, *to);
            }
        }
        out
    }

    /// Decodes a request.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        if r.u8()? != WIRE_VERSION {
            return Err(r.err("unknown sync message version"));
        }
        let req = match r.u8()? {
            1 => Request::Heads(VersionVector::decode(&mut r)?),
            2 => {
                let origin = PeerId::from_bytes(r.bytes(64)?)
                    .map_err(|_| r.err("origin is not a PeerId"))?;
                let from = r.uvarint()?;
                let to = r.uvarint()?;
                if from == 0 || to < from {
                    return Err(r.err("empty or inverted range"));
                }
                Request::Range { origin, from, to }
            }
            _ => return Err(r.err("unknown request tag")),
        };
        if !r.is_empty() {
            return Err(r.err("trailing bytes after request"));
        }
        Ok(req)
    }
}

impl Response {
    /// Encodes the response, compressing batches.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        match self {
            Response::Heads(vv) => {
                out.push(1);
                vv.encode(&mut out);
            }
            Response::Batch(entries) => {
                out.push(2);
                let mut raw = Vec::new();
                put_uvarint(&mut raw, entries.len() as u64);
                for e in entries {
                    put_bytes(&mut raw, e);
                }
                put_uvarint(&mut out, raw.len() as u64);
                // Compressing an in-memory buffer only fails on allocation failure.
                let z = zstd::bulk::compress(&raw, ZSTD_LEVEL).unwrap_or_default();
                out.extend_from_slice(&z);
            }
            Response::Refused(reason) => {
                out.push(3);
                put_bytes(&mut out, reason.as_bytes());
            }
        }
        out
    }

    /// Decodes a response, decompressing batches within [`MAX_BATCH_RAW`].
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        if r.u8()? != WIRE_VERSION {
            return Err(r.err("unknown sync message version"));
        }
        match r.u8()? {
            1 => {
                let vv = VersionVector::decode(&mut r)?;
                if !r.is_empty() {
                    return Err(r.err("trailing bytes after response"));
                }
                Ok(Response::Heads(vv))
            }
            2 => {
                let raw_len = r.uvarint()?;
                if raw_len > MAX_BATCH_RAW as u64 {
                    return Err(r.err("batch larger than allowed"));
                }
                let z = r.take(b.len() - r.pos())?;
                let raw = zstd::bulk::decompress(z, raw_len as usize)
                    .map_err(|_| r.err("batch does not decompress"))?;
                if raw.len() as u64 != raw_len {
                    return Err(r.err("batch length does not match"));
                }
                let mut br = Reader::new(&raw);
                let n = br.uvarint()?;
                if n > MAX_BATCH_ENTRIES as u64 {
                    return Err(br.err("too many entries in batch"));
                }
                let mut entries = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    entries.push(br.bytes(MAX_BATCH_RAW)?.to_vec());
                }
                if !br.is_empty() {
                    return Err(br.err("trailing bytes in batch"));
                }
                Ok(Response::Batch(entries))
            }
            3 => {
                let s = r.str(1024)?.to_owned();
                if !r.is_empty() {
                    return Err(r.err("trailing bytes after response"));
                }
                Ok(Response::Refused(s))
            }
            _ => Err(r.err("unknown response tag")),
        }
    }
}

/// A head announcement published over gossipsub: the sender's holdings.
pub fn encode_heads(vv: &VersionVector) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    vv.encode(&mut out);
    out
}

/// Decodes a head announcement.
pub fn decode_heads(b: &[u8]) -> Result<VersionVector, DecodeError> {
    let mut r = Reader::new(b);
    if r.u8()? != WIRE_VERSION {
        return Err(r.err("unknown sync message version"));
    }
    let vv = VersionVector::decode(&mut r)?;
    if !r.is_empty() {
        return Err(r.err("trailing bytes after heads"));
    }
    Ok(vv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let vv: VersionVector = [(PeerId::random(), 4)].into_iter().collect();
        for req in [
            Request::Heads(vv.clone()),
            Request::Range {
                origin: PeerId::random(),
                from: 3,
                to: 9,
            },
        ] {
            assert_eq!(Request::decode(&req.encode()).unwrap(), req);
        }
        let batch = Response::Batch(vec![b"abc".to_vec(), vec![7; 1000]]);
        for resp in [
            Response::Heads(vv.clone()),
            batch,
            Response::Refused("nope".into()),
        ] {
            assert_eq!(Response::decode(&resp.encode()).unwrap(), resp);
        }
        assert_eq!(decode_heads(&encode_heads(&vv)).unwrap(), vv);
    }

    #[test]
    fn batches_compress_repetitive_json() {
        let e: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("{{\"case\":{i},\"status\":\"open\",\"room\":\"scenic-1\"}}").into())
            .collect();
        let raw: usize = e.iter().map(Vec::len).sum();
        let enc = Response::Batch(e).encode();
        assert!(enc.len() < raw / 2, "{} vs {}", enc.len(), raw);
    }

    #[test]
    fn decoders_refuse_bad_input_without_panicking() {
        assert!(Request::decode(&[]).is_err());
        assert!(Request::decode(&[1, 2, 0]).is_err());
        assert!(Request::decode(&[1, 9]).is_err());
        assert!(Response::decode(&[1, 2, 5, 1, 2, 3]).is_err());
        let mut huge = vec![1, 2];
        put_uvarint(&mut huge, u64::MAX / 2);
        assert!(Response::decode(&huge).is_err());
        let good = Response::Batch(vec![b"x".to_vec()]).encode();
        for cut in 0..good.len() {
            assert!(Response::decode(&good[..cut]).is_err());
        }
    }
}

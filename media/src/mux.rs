//! Demultiplexing of the node's one media port: which session a datagram (or a TCP stream)
//! belongs to.
//!
//! A datagram from a known remote address goes to the session that learned that address. From
//! an unknown address only a STUN Binding request is accepted: its `USERNAME` attribute is
//! `<our ufrag>:<their ufrag>` (RFC 8445 section 7.2.2), and our ufrag names the session. The
//! ICE agent of that session then checks the request's integrity with its own password, so a
//! forged request cannot take over a session.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;
const STUN_BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
/// Most remote addresses remembered per session (ICE tries a few candidate pairs each).
const MAX_ADDRS_PER_SESSION: usize = 16;

/// The local ufrag named by a STUN Binding request, or `None` for anything else.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if datagram.len() < 20 || datagram[0] & 0xc0 != 0 {
        return None;
    }
    let msg_type = u16::from_be_bytes([datagram[0], datagram[1]]);
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let cookie = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    if msg_type != STUN_BINDING_REQUEST || cookie != STUN_MAGIC_COOKIE {
        return None;
    }
    let attrs = datagram.get(20..20 + length)?;
    let mut at = 0;
    while at + 4 <= attrs.len() {
        let typ = u16::from_be_bytes([attrs[at], attrs[at + 1]]);
        let len = usize::from(u16::from_be_bytes([attrs[at + 2], attrs[at + 3]]));
        let value = attrs.get(at + 4..at + 4 + len)?;
        if typ == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Routes datagrams to sessions by remote address, learning addresses from STUN requests.
#[derive(Debug)]
pub struct Demux<K> {
    by_ufrag: HashMap<String, K>,
    by_addr: HashMap<SocketAddr, K>,
    addrs_of: HashMap<K, Vec<SocketAddr>>,
}

impl<K: Copy + Eq + Hash> Default for Demux<K> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            addrs_of: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Route STUN requests for `ufrag` to `key`. Returns false when another session holds it.
    pub fn add_ufrag(&mut self, ufrag: &str, key: K) -> bool {
        match self.by_ufrag.get(ufrag) {
            Some(existing) if *existing != key => false,
            _ => {
                self.by_ufrag.insert(ufrag.to_owned(), key);
                true
            }
        }
    }

    /// The session a datagram from `from` belongs to, if any.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<K> {
        if let Some(key) = self.by_addr.get(&from) {
            return Some(*key);
        }
        let ufrag = stun_local_ufrag(datagram)?;
        let key = *self.by_ufrag.get(ufrag)?;
        let addrs = self.addrs_of.entry(key).or_default();
        if addrs.len() >= MAX_ADDRS_PER_SESSION {
            let oldest = addrs.remove(0);
            self.by_addr.remove(&oldest);
        }
        addrs.push(from);
        self.by_addr.insert(from, key);
        Some(key)
    }

    /// Forget a session: its ufrags and addresses.
    pub fn remove(&mut self, key: K) {
        self.by_ufrag.retain(|_, k| *k != key);
        for addr in self.addrs_of.remove(&key).unwrap_or_default() {
            self.by_addr.remove(&addr);
        }
    }

    /// Number of remembered remote addresses (for tests and metrics).
    pub fn addr_count(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN Binding request with a USERNAME attribute (no integrity; the mux does not check).
    fn binding(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&STUN_BINDING_REQUEST.to_be_bytes());
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn the_username_names_our_ufrag() {
        assert_eq!(stun_local_ufrag(&binding("abcd:wxyz")), Some("abcd"));
        assert_eq!(stun_local_ufrag(&binding("abc")), Some("abc"));
        assert_eq!(stun_local_ufrag(b"\x80\x60rtp-looking-packet-bytes"), None);
        let mut truncated = binding("abcd:wxyz");
        truncated.truncate(26);
        assert_eq!(stun_local_ufrag(&truncated), None);
    }

    #[test]
    fn sessions_learn_addresses_from_stun_and_keep_them() {
        let mut demux = Demux::new();
        assert!(demux.add_ufrag("aaaa", 1u64));
        assert!(demux.add_ufrag("bbbb", 2u64));
        assert!(
            !demux.add_ufrag("aaaa", 2u64),
            "a ufrag belongs to one session"
        );
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();

        assert_eq!(
            demux.route(a, b"\x80\x60media"),
            None,
            "unknown address, not STUN"
        );
        assert_eq!(demux.route(a, &binding("aaaa:x")), Some(1));
        assert_eq!(demux.route(a, b"\x80\x60media"), Some(1));
        assert_eq!(demux.route(b, &binding("bbbb:y")), Some(2));
        assert_eq!(
            demux.route(b, &binding("cccc:y")),
            Some(2),
            "known address wins"
        );

        demux.remove(1);
        assert_eq!(demux.route(a, b"\x80\x60media"), None);
        assert_eq!(demux.addr_count(), 1);
    }
}

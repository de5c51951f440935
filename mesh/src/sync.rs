//! The catch-up state machine (sans-IO): version vectors in, range requests out; batches in,
//! entries to apply out.
//!
//! The driver (`swarm`) tells the [`Planner`] what it learns — peers connecting and leaving,
//! their holdings (from head announcements and `Heads` answers), responses and failures — and
//! asks it which ranges to request next. The planner
//!
//! - asks only for what is missing, oldest first per origin, in chunks of
//!   [`SyncConfig::chunk_entries`];
//! - keeps at most [`SyncConfig::window`] requests in flight per peer (backpressure: a slow
//!   link gets no more work than it can carry) and at most that many batches buffered per peer;
//! - prefers, as the source of a range, the origin itself, then peers whose scopes cover ours
//!   (they never have to withhold a payload from us), then any peer that holds it;
//! - resumes where it stopped after a drop: its only durable input is the local version vector,
//!   and a lost request simply becomes missing again.
//!
//! [`admit`] decides, for one decoded entry, whether it is stored, stored as a header only
//! (out of scope), ignored (duplicate) or refused, with a typed [`Refusal`].

use std::collections::BTreeMap;

use libp2p::identity::PeerId;

use crate::log::{Entry, Hash, Refusal};
use crate::scope;
use crate::vv::{Range, VersionVector};

/// Tuning of catch-up. Defaults are sized for 256 kbit/s links with 300 ms RTT.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Entries asked for per request. Default 128: ~80 KiB of typical records, ~30 KiB once
    /// compressed, about one second of a 256 kbit/s link — long enough to amortise one RTT,
    /// short enough that a drop loses little.
    pub chunk_entries: u64,
    /// Requests in flight per peer. Default 3: keeps a 300 ms RTT link busy while a batch is
    /// being verified and stored, and bounds buffered batches to 3 per peer.
    pub window: usize,
    /// How long a peer that sent a refused entry or batch is skipped as a source for that
    /// origin, in ms. Default 30 000: long enough not to hammer it, short enough to recover.
    pub penalty_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            chunk_entries: 128,
            window: 3,
            penalty_ms: 30_000,
        }
    }
}

/// What the planner knows about one peer.
#[derive(Debug, Clone, Default)]
struct PeerSync {
    connected: bool,
    /// The peer's scopes cover ours.
    covers_us: bool,
    /// Its holdings, as last announced.
    remote: VersionVector,
    in_flight: usize,
    /// When we first saw it holding something we lack (ms), cleared when caught up.
    behind_since_ms: Option<u64>,
    /// When its last head announcement arrived (ms).
    heard_ms: Option<u64>,
    last_error: Option<String>,
    /// origin -> skip this peer as a source of that origin until (ms).
    penalties: BTreeMap<PeerId, u64>,
}

#[derive(Debug, Clone)]
struct InFlight {
    peer: PeerId,
    to: u64,
}

/// Sync status of one peer, for `/api/v1/sync` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// The peer.
    pub peer: PeerId,
    /// Connected now.
    pub connected: bool,
    /// Entries it holds that we lack.
    pub lag_entries: u64,
    /// Seconds since we first saw it ahead of us (0 when caught up).
    pub lag_seconds: f64,
    /// When its last head announcement arrived (wall clock, ms). Announcements come at least
    /// every `Timing::heads_interval`, so a silence much longer than that means the peer is cut
    /// off even while its connection waits out the idle timeout.
    pub heard_ms: Option<u64>,
    /// Last sync error with this peer.
    pub last_error: Option<String>,
    /// Its holdings as last announced.
    pub remote: VersionVector,
}

/// The catch-up planner of one node.
#[derive(Debug)]
pub struct Planner {
    cfg: SyncConfig,
    local: VersionVector,
    peers: BTreeMap<PeerId, PeerSync>,
    /// (origin, from) -> request in flight.
    in_flight: BTreeMap<(PeerId, u64), InFlight>,
    /// (origin, from) -> (source peer, entries from..) received but not yet applied.
    buffered: BTreeMap<(PeerId, u64), (PeerId, Vec<Entry>)>,
    /// (origin, from) -> to: handed out by `take_ready`, being verified and stored.
    applying: BTreeMap<(PeerId, u64), u64>,
}

impl Planner {
    /// A planner starting from the durable local holdings.
    pub fn new(cfg: SyncConfig, local: VersionVector) -> Self {
        Self {
            cfg,
            local,
            peers: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            buffered: BTreeMap::new(),
            applying: BTreeMap::new(),
        }
    }

    /// Local holdings as the planner knows them.
    pub fn local(&self) -> &VersionVector {
        &self.local
    }

    /// A peer connected. `covers_us`: its roster scopes cover ours.
    pub fn on_connected(&mut self, peer: PeerId, covers_us: bool) {
        let p = self.peers.entry(peer).or_default();
        p.connected = true;
        p.covers_us = covers_us;
    }

    /// The last connection to a peer closed: its requests are forgotten (the ranges become
    /// missing again); batches already received stay buffered.
    pub fn on_disconnected(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.connected = false;
            p.in_flight = 0;
        }
        self.in_flight.retain(|_, f| f.peer != *peer);
    }

    /// A peer announced (or answered) its holdings.
    pub fn on_heads(&mut self, peer: PeerId, vv: VersionVector, now_ms: u64) {
        let p = self.peers.entry(peer).or_default();
        p.heard_ms = Some(now_ms);
        for (o, s) in vv.iter() {
            p.remote.raise(*o, s);
        }
        self.refresh_lag(now_ms);
    }

    /// An entry of `origin` up to `seq` is durable locally (applied from sync or appended).
    pub fn on_applied(&mut self, origin: PeerId, seq: u64, now_ms: u64) {
        self.local.raise(origin, seq);
        self.refresh_lag(now_ms);
    }

    fn refresh_lag(&mut self, now_ms: u64) {
        for p in self.peers.values_mut() {
            if self.local.lag_behind(&p.remote) == 0 {
                p.behind_since_ms = None;
            } else if p.behind_since_ms.is_none() {
                p.behind_since_ms = Some(now_ms);
            }
        }
    }

    /// Chooses the next requests to send: at most `window` in flight per peer.
    pub fn next_requests(&mut self, now_ms: u64) -> Vec<(PeerId, Range)> {
        // What any connected peer holds that we lack, per origin: (origin, highest seq).
        let mut best: BTreeMap<PeerId, u64> = BTreeMap::new();
        for p in self.peers.values().filter(|p| p.connected) {
            for (o, s) in p.remote.iter() {
                let e = best.entry(*o).or_insert(0);
                *e = (*e).max(s);
            }
        }

        let mut out = Vec::new();
        for (origin, top) in best {
            let mut next = self.local.get(&origin) + 1;
            while next <= top {
                // Skip over what is already asked for or received.
                if let Some(end) = self.covered_until(origin, next) {
                    next = end + 1;
                    continue;
                }
                let Some(peer) = self.pick_source(origin, next, now_ms) else {
                    break;
                };
                let held = self.peers[&peer].remote.get(&origin);
                let gap_end = self
                    .next_covered_start(origin, next)
                    .map_or(u64::MAX, |s| s - 1);
                let to = (next + self.cfg.chunk_entries - 1)
                    .min(held)
                    .min(top)
                    .min(gap_end);
                self.in_flight.insert((origin, next), InFlight { peer, to });
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.in_flight += 1;
                }
                out.push((
                    peer,
                    Range {
                        origin,
                        from: next,
                        to,
                    },
                ));
                next = to + 1;
            }
        }
        out
    }

    /// If `seq` of `origin` is inside a range in flight or buffered, the end of that range.
    fn covered_until(&self, origin: PeerId, seq: u64) -> Option<u64> {
        let lo = (origin, 0);
        let hi = (origin, seq);
        let f = self
            .in_flight
            .range(lo..=hi)
            .next_back()
            .filter(|(_, f)| f.to >= seq);
        if let Some((_, f)) = f {
            return Some(f.to);
        }
        let a = self
            .applying
            .range(lo..=hi)
            .next_back()
            .filter(|(_, to)| **to >= seq);
        if let Some((_, to)) = a {
            return Some(*to);
        }
        self.buffered
            .range(lo..=hi)
            .next_back()
            .map(|((_, from), (_, es))| from + es.len() as u64 - 1)
            .filter(|end| *end >= seq)
    }

    /// Start of the next range in flight or buffered after `seq`.
    fn next_covered_start(&self, origin: PeerId, seq: u64) -> Option<u64> {
        let lo = (origin, seq + 1);
        let hi = (origin, u64::MAX);
        let a = self.in_flight.range(lo..=hi).next().map(|((_, s), _)| *s);
        let b = self.buffered.range(lo..=hi).next().map(|((_, s), _)| *s);
        let c = self.applying.range(lo..=hi).next().map(|((_, s), _)| *s);
        a.into_iter().chain(b).chain(c).min()
    }

    fn pick_source(&self, origin: PeerId, seq: u64, now_ms: u64) -> Option<PeerId> {
        let budget = self.cfg.window;
        let buffered_from =
            |peer: &PeerId| self.buffered.values().filter(|(p, _)| p == peer).count();
        // The range right after our holdings is what every buffered batch waits for: it may
        // go to a peer whose budget is full of such batches (else, when only that peer can
        // serve it in full, nothing moves again). Buffered batches stay bounded: every other
        // range still counts them.
        let head = seq == self.local.get(&origin) + 1;
        self.peers
            .iter()
            .filter(|(id, p)| {
                p.connected
                    && p.remote.get(&origin) >= seq
                    && p.in_flight < budget
                    && (head || p.in_flight + buffered_from(id) < budget)
                    && p.penalties
                        .get(&origin)
                        .is_none_or(|until| *until <= now_ms)
            })
            // Rank: the origin itself, then covering peers, then the least busy.
            .min_by_key(|(id, p)| (**id != origin, !p.covers_us, p.in_flight))
            .map(|(id, _)| *id)
    }

    /// A batch arrived for the request (`origin`, `from`). Entries must be consecutive from
    /// `from`; anything else is the peer's fault and is dropped with an error.
    pub fn on_batch(
        &mut self,
        peer: PeerId,
        origin: PeerId,
        from: u64,
        entries: Vec<Entry>,
        now_ms: u64,
    ) {
        self.finish_request(&peer, origin, from);
        let shaped = entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.origin == origin && e.seq == from + i as u64);
        if !shaped {
            self.on_peer_fault(
                peer,
                origin,
                "batch does not match the range asked for",
                now_ms,
            );
            return;
        }
        if entries.is_empty() {
            // The peer no longer holds what it announced (e.g. it lost unflushed data).
            self.on_peer_fault(peer, origin, "peer answered an empty batch", now_ms);
            return;
        }
        self.buffered.insert((origin, from), (peer, entries));
    }

    /// A request failed (timeout, connection lost, refused).
    pub fn on_request_failed(&mut self, peer: PeerId, origin: PeerId, from: u64, error: String) {
        self.finish_request(&peer, origin, from);
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_error = Some(error);
        }
    }

    fn finish_request(&mut self, peer: &PeerId, origin: PeerId, from: u64) {
        if self.in_flight.remove(&(origin, from)).is_some()
            && let Some(p) = self.peers.get_mut(peer)
        {
            p.in_flight = p.in_flight.saturating_sub(1);
        }
    }

    /// A peer sent something refused for `origin`: skip it as a source of that origin for a
    /// while and drop what else it sent for that origin.
    pub fn on_peer_fault(&mut self, peer: PeerId, origin: PeerId, error: &str, now_ms: u64) {
        let until = now_ms + self.cfg.penalty_ms;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_error = Some(error.to_owned());
            p.penalties.insert(origin, until);
        }
        self.buffered
            .retain(|(o, _), (p, _)| !(*o == origin && *p == peer));
    }

    /// Takes the next batch that directly follows the local holdings, trimmed of anything
    /// already held. The caller verifies and stores it, then reports `on_applied`.
    pub fn take_ready(&mut self) -> Option<(PeerId, Vec<Entry>)> {
        let keys: Vec<(PeerId, u64)> = self.buffered.keys().copied().collect();
        for key @ (origin, from) in keys {
            let have = self.local.get(&origin);
            let len = self.buffered[&key].1.len() as u64;
            if from + len - 1 <= have {
                self.buffered.remove(&key);
                continue;
            }
            if from <= have + 1 {
                let (peer, mut entries) = self.buffered.remove(&key)?;
                entries.drain(..(have + 1 - from) as usize);
                self.applying.insert((origin, have + 1), from + len - 1);
                return Some((peer, entries));
            }
        }
        None
    }

    /// The batch starting at (`origin`, `first`) handed out by `take_ready` was processed
    /// (stored in full or in part; `on_applied` reports how far).
    pub fn finish_apply(&mut self, origin: PeerId, first: u64) {
        self.applying.remove(&(origin, first));
    }

    /// Status of every known peer.
    pub fn status(&self, now_ms: u64) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(id, p)| PeerStatus {
                peer: *id,
                connected: p.connected,
                lag_entries: self.local.lag_behind(&p.remote),
                lag_seconds: p
                    .behind_since_ms
                    .map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1e3),
                heard_ms: p.heard_ms,
                last_error: p.last_error.clone(),
                remote: p.remote.clone(),
            })
            .collect()
    }

    /// Requests in flight (all peers).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// What to do with one received entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Store it as received.
    Store(Entry),
    /// Its scope may not be held here: store the header only (the payload is dropped). Counted
    /// as a refusal with reason [`Refusal::OutOfScope`].
    StoreWithheld(Entry),
    /// Already held, identical.
    Duplicate,
}

/// Decides what to do with `entry`, received from a peer.
///
/// - `member`: whether the origin is a site of the roster;
/// - `head`: seq and hash of the last entry held from that origin;
/// - `held`: hash of the held entry at a given seq (for duplicates);
/// - `my_scopes`: our roster scope patterns.
pub fn admit(
    entry: Entry,
    member: bool,
    head: Option<(u64, Hash)>,
    held: impl Fn(u64) -> Option<Hash>,
    my_scopes: &[String],
) -> Result<Admission, Refusal> {
    if !member {
        return Err(Refusal::UnknownOrigin);
    }
    entry.check_signature()?;
    admit_verified(entry, head, held, my_scopes)
}

/// [`admit`] for an entry of a roster origin whose signature is already checked (signatures
/// need no log state, so the caller checks them before it locks the log heads).
pub fn admit_verified(
    entry: Entry,
    head: Option<(u64, Hash)>,
    held: impl Fn(u64) -> Option<Hash>,
    my_scopes: &[String],
) -> Result<Admission, Refusal> {
    let have = head.map_or(0, |(s, _)| s);
    if entry.seq <= have {
        return match held(entry.seq) {
            Some(h) if h == entry.hash() => Ok(Admission::Duplicate),
            _ => Err(Refusal::Conflict),
        };
    }
    entry.check_follows(head)?;
    let allowed = scope::allows(my_scopes, &entry.scope);
    match (entry.is_full(), allowed) {
        (true, true) | (false, false) => Ok(Admission::Store(entry)),
        (true, false) => Ok(Admission::StoreWithheld(entry.withheld())),
        (false, true) => Err(Refusal::Withheld),
    }
}

/// Chooses what to send for a range request: the entries in order, with the payload withheld
/// wherever the requester may not hold the scope, stopping once `max_bytes` of encoded entries
/// are collected (always at least one entry).
pub fn serve<I>(entries: I, requester_scopes: &[String], max_bytes: usize) -> Vec<Vec<u8>>
where
    I: IntoIterator<Item = Entry>,
{
    let mut out = Vec::new();
    let mut total = 0;
    for e in entries {
        let bytes = if e.is_full() && !scope::allows(requester_scopes, &e.scope) {
            e.withheld().encode()
        } else {
            e.encode()
        };
        total += bytes.len();
        out.push(bytes);
        if total >= max_bytes {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::log::entry::tests::chain;

    fn scopes(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn requests_only_missing_chunks_within_the_window() {
        let origin = PeerId::random();
        let hub = PeerId::random();
        let local: VersionVector = [(origin, 10)].into_iter().collect();
        let cfg = SyncConfig {
            chunk_entries: 5,
            window: 2,
            penalty_ms: 1000,
        };
        let mut p = Planner::new(cfg, local);
        p.on_connected(hub, true);
        p.on_heads(hub, [(origin, 40)].into_iter().collect(), 0);
        let reqs = p.next_requests(0);
        assert_eq!(
            reqs,
            vec![
                (
                    hub,
                    Range {
                        origin,
                        from: 11,
                        to: 15
                    }
                ),
                (
                    hub,
                    Range {
                        origin,
                        from: 16,
                        to: 20
                    }
                ),
            ]
        );
        // Window full: nothing more until an answer.
        assert!(p.next_requests(0).is_empty());
        assert_eq!(p.status(5_000)[0].lag_entries, 30);
        assert_eq!(p.status(5_000)[0].lag_seconds, 5.0);
        // The last announcement's time is kept: a peer silent since is visible as such.
        assert_eq!(p.status(5_000)[0].heard_ms, Some(0));
        p.on_heads(hub, [(origin, 40)].into_iter().collect(), 4_000);
        assert_eq!(p.status(5_000)[0].heard_ms, Some(4_000));
    }

    #[test]
    fn out_of_order_batches_wait_and_resume_after_drop() {
        let key = Keypair::generate_ed25519();
        let origin = key.public().to_peer_id();
        let c = chain(&key, 6, "public");
        let hub = PeerId::random();
        let cfg = SyncConfig {
            chunk_entries: 2,
            window: 3,
            penalty_ms: 1000,
        };
        let mut p = Planner::new(cfg, VersionVector::new());
        p.on_connected(hub, true);
        p.on_heads(hub, [(origin, 6)].into_iter().collect(), 0);
        assert_eq!(p.next_requests(0).len(), 3);

        // The second chunk arrives first: nothing is ready until the first arrives.
        p.on_batch(hub, origin, 3, c[2..4].to_vec(), 0);
        assert!(p.take_ready().is_none());
        p.on_batch(hub, origin, 1, c[0..2].to_vec(), 0);
        let (_, ready) = p.take_ready().unwrap();
        assert_eq!(ready.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        // While it is being applied, nothing follows and nothing is asked again.
        assert!(p.take_ready().is_none());
        assert!(p.next_requests(0).is_empty());
        p.on_applied(origin, 2, 0);
        p.finish_apply(origin, 1);
        let (_, ready) = p.take_ready().unwrap();
        assert_eq!(ready[0].seq, 3);
        p.on_applied(origin, 4, 0);
        p.finish_apply(origin, 3);

        // The link drops with chunk 5..6 in flight; after reconnecting it is asked again.
        p.on_disconnected(&hub);
        assert!(p.next_requests(0).is_empty());
        p.on_connected(hub, true);
        assert_eq!(
            p.next_requests(0),
            vec![(
                hub,
                Range {
                    origin,
                    from: 5,
                    to: 6
                }
            )]
        );
    }

    #[test]
    fn the_range_everything_waits_for_goes_to_a_peer_with_a_full_buffer() {
        let key = Keypair::generate_ed25519();
        let origin = key.public().to_peer_id();
        let c = chain(&key, 8, "correction/office-1");
        let (hub, scenic) = (PeerId::random(), PeerId::random());
        let cfg = SyncConfig {
            chunk_entries: 2,
            window: 3,
            penalty_ms: 1000,
        };
        let mut p = Planner::new(cfg, VersionVector::new());
        let vv: VersionVector = [(origin, 8)].into_iter().collect();
        p.on_connected(hub, true);
        p.on_heads(hub, vv.clone(), 0);
        // 1..2 went to the hub and was lost; 3..8 arrived and wait for it.
        let sent = p.next_requests(0);
        assert_eq!(sent.len(), 3);
        p.on_request_failed(hub, origin, 1, "timeout".into());
        p.on_batch(hub, origin, 3, c[2..4].to_vec(), 0);
        p.on_batch(hub, origin, 5, c[4..6].to_vec(), 0);
        let more = p.next_requests(0);
        p.on_batch(hub, origin, 7, c[6..8].to_vec(), 0);
        assert!(
            more.iter().all(|(_, r)| r.from == 1 || r.from == 7),
            "{more:?}"
        );

        // Only the scenic room (withheld copies) has budget left, yet 1..2 goes to the hub.
        p.on_connected(scenic, false);
        p.on_heads(scenic, vv, 0);
        if more.iter().any(|(_, r)| r.from == 1) {
            p.on_request_failed(hub, origin, 1, "timeout".into());
        }
        let r = p.next_requests(0);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0, hub);
        assert_eq!((r[0].1.from, r[0].1.to), (1, 2));
    }

    #[test]
    fn prefers_the_origin_then_covering_peers_and_skips_penalised_ones() {
        let origin = PeerId::random();
        let (scenic, hub) = (PeerId::random(), PeerId::random());
        let cfg = SyncConfig {
            chunk_entries: 100,
            window: 1,
            penalty_ms: 1000,
        };
        let mut p = Planner::new(cfg, VersionVector::new());
        let vv: VersionVector = [(origin, 3)].into_iter().collect();
        p.on_connected(scenic, false);
        p.on_connected(hub, true);
        p.on_heads(scenic, vv.clone(), 0);
        p.on_heads(hub, vv.clone(), 0);
        let r = p.next_requests(0);
        assert_eq!(r[0].0, hub);

        p.on_request_failed(hub, origin, 1, "timeout".into());
        p.on_peer_fault(hub, origin, "bad signature", 0);
        assert_eq!(p.next_requests(10)[0].0, scenic);

        p.on_request_failed(scenic, origin, 1, "timeout".into());
        p.on_connected(origin, false);
        p.on_heads(origin, vv, 0);
        assert_eq!(p.next_requests(10)[0].0, origin);
    }

    #[test]
    fn misshapen_or_empty_batches_are_faults() {
        let key = Keypair::generate_ed25519();
        let origin = key.public().to_peer_id();
        let c = chain(&key, 4, "public");
        let hub = PeerId::random();
        let mut p = Planner::new(SyncConfig::default(), VersionVector::new());
        p.on_connected(hub, true);
        p.on_heads(hub, [(origin, 4)].into_iter().collect(), 0);
        p.next_requests(0);
        p.on_batch(hub, origin, 1, c[1..3].to_vec(), 0);
        assert!(p.take_ready().is_none());
        assert_eq!(
            p.status(0)[0].last_error.as_deref(),
            Some("batch does not match the range asked for")
        );
    }

    #[test]
    fn admission_covers_every_refusal() {
        let key = Keypair::generate_ed25519();
        let c = chain(&key, 3, "correction/office-1");
        let office = scopes(&["public", "correction/office-1"]);
        let scenic = scopes(&["public"]);
        let none = |_| None;

        assert_eq!(
            admit(c[0].clone(), false, None, none, &office),
            Err(Refusal::UnknownOrigin)
        );
        assert_eq!(
            admit(c[0].clone(), true, None, none, &office),
            Ok(Admission::Store(c[0].clone()))
        );
        assert_eq!(
            admit(c[1].clone(), true, None, none, &office),
            Err(Refusal::SeqGap)
        );
        let head = Some((1, [9; 32]));
        assert_eq!(
            admit(c[1].clone(), true, head, none, &office),
            Err(Refusal::BrokenChain)
        );

        // A scenic site keeps only the header of a correction record.
        let got = admit(c[0].clone(), true, None, none, &scenic).unwrap();
        assert_eq!(got, Admission::StoreWithheld(c[0].withheld()));
        // An office may hold it, so a withheld copy is refused.
        assert_eq!(
            admit(c[0].withheld(), true, None, none, &office),
            Err(Refusal::Withheld)
        );

        let mut t = c[0].clone();
        t.body = crate::log::Body::Full(b"{}".to_vec());
        assert_eq!(
            admit(t, true, None, none, &office),
            Err(Refusal::BadSignature)
        );

        let h0 = c[0].hash();
        let head = Some((1, h0));
        assert_eq!(
            admit(c[0].clone(), true, head, |_| Some(h0), &office),
            Ok(Admission::Duplicate)
        );
        let other = chain(&key, 1, "public").remove(0);
        assert_eq!(
            admit(other, true, head, |_| Some(h0), &office),
            Err(Refusal::Conflict)
        );
    }

    #[test]
    fn serve_withholds_out_of_scope_payloads_and_bounds_bytes() {
        let key = Keypair::generate_ed25519();
        let c = chain(&key, 10, "correction/office-1");
        let out = serve(c.clone(), &scopes(&["public"]), usize::MAX);
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|b| !Entry::decode(b).unwrap().is_full()));
        let out = serve(c.clone(), &scopes(&["*"]), 1);
        assert_eq!(out.len(), 1);
        assert!(Entry::decode(&out[0]).unwrap().is_full());
    }
}

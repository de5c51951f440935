//! The [`Mesh`] handle the node drives: local appends (acknowledged once durable), queries,
//! sync status and metrics. It owns the local log writer; the network side lives in `swarm`.
//!
//! Every write to the logs — local appends and entries applied from sync — goes through one
//! `Writer` lock that keeps the head (seq, hash) of every log, so verification and storage see
//! one consistent view. Flushing happens outside the lock: concurrent writers share a flush
//! (group commit), and the durable version vector is raised only after the flush returns, so a
//! node never serves or announces an entry it could still lose.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::identity::{Keypair, PeerId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::Error;
use crate::hlc::{Hlc, HlcTime};
use crate::log::{Draft, Entry, Hash, Refusal, ZERO_HASH};
use crate::roster::Roster;
use crate::store::{Head, Store};
use crate::sync::{Admission, admit, admit_verified};
use crate::vv::VersionVector;

/// Wall clock in ms since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Heads of every log and the clock, guarded together.
#[derive(Debug)]
pub(crate) struct Writer {
    heads: BTreeMap<PeerId, Head>,
    hlc: Hlc,
}

/// Label set of per-reason and per-peer metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    pub peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DirLabel {
    pub direction: String,
}

/// The mesh metrics, registered by the node into its `/metrics` registry.
#[derive(Debug, Default, Clone)]
pub(crate) struct Metrics {
    pub refused_entries: Family<ReasonLabel, Counter>,
    pub refused_peers: Counter,
    pub sync_bytes: Family<DirLabel, Counter>,
    pub lag_entries: Family<PeerLabel, Gauge>,
    pub lag_seconds: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    pub connected_peers: Gauge,
    pub relayed_peers: Gauge,
    pub mdns_ignored: Counter,
    pub appended: Counter,
    pub applied: Counter,
}

/// A log entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Site id of the origin (`?` if it left the roster).
    pub origin: String,
    /// PeerId of the origin.
    pub origin_peer: String,
    /// Seq in the origin's log.
    pub seq: u64,
    /// Wall-clock part of the HLC, ms since the Unix epoch.
    pub time_ms: u64,
    /// Full HLC value.
    pub hlc: u64,
    /// Scope.
    pub scope: String,
    /// Kind.
    pub kind: String,
    /// The JSON payload; `null` when withheld because this site may not hold the scope.
    pub payload: serde_json::Value,
    /// True when only the header is held here.
    pub withheld: bool,
    /// Entry hash, hex.
    pub hash: String,
}

/// Per-peer sync state for `/api/v1/sync`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSyncStatus {
    /// Site id.
    pub site: String,
    /// PeerId.
    pub peer_id: String,
    /// A connection is open now.
    pub connected: bool,
    /// How: `direct`, or `relayed` through the hub; absent when not connected.
    pub connection: Option<&'static str>,
    /// Entries the peer holds that we lack.
    pub lag_entries: u64,
    /// Seconds we have been behind the peer.
    pub lag_seconds: f64,
    /// Last sync error with the peer.
    pub last_error: Option<String>,
}

/// This node's part in the hub relay, for `/api/v1/sync`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayStatus {
    /// `server` on the hub, `client` on a site that can reach a hub, `none` otherwise.
    pub role: &'static str,
    /// A client holds a reservation at the hub: peers that cannot dial it reach it there.
    pub reserved: bool,
}

/// One origin of the version vector.
#[derive(Debug, Clone, Serialize)]
pub struct VvItem {
    /// Site id.
    pub site: String,
    /// PeerId.
    pub peer_id: String,
    /// Highest seq held.
    pub seq: u64,
}

/// The answer of `/api/v1/sync`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    /// This site.
    pub site: String,
    /// This node's PeerId.
    pub peer_id: String,
    /// Durable holdings.
    pub version_vector: Vec<VvItem>,
    /// SHA-256 over the hashes of all entries held, by origin then seq (hex): two nodes with the
    /// same digest hold the same entries.
    pub digest: String,
    /// Entries held in total.
    pub entries: u64,
    /// Bytes of the encoded entries held (signatures included).
    pub log_bytes: u64,
    /// Every roster peer.
    pub peers: Vec<PeerSyncStatus>,
    /// The hub relay as this node sees it.
    pub relay: RelayStatus,
    /// Entries refused, by reason.
    pub refused: BTreeMap<String, u64>,
}

/// Messages from the handle to the swarm task.
#[derive(Debug)]
pub(crate) enum Command {
    /// The local log grew; announce it.
    Appended,
    /// Peers found on the LAN (by mDNS, or by a test standing in for it).
    Discovered(Vec<(PeerId, libp2p::Multiaddr)>),
    /// Stop the swarm task.
    Shutdown,
}

pub(crate) struct Shared {
    pub me: PeerId,
    pub site: String,
    pub key: Keypair,
    pub store: Store,
    pub roster: Roster,
    pub my_scopes: Vec<String>,
    pub writer: Mutex<Writer>,
    pub durable: RwLock<VersionVector>,
    pub peers: RwLock<Vec<crate::sync::PeerStatus>>,
    /// Connected roster peers: `true` when reached only through the relay.
    pub links: RwLock<BTreeMap<PeerId, bool>>,
    pub relay: RwLock<RelayStatus>,
    pub refused: Mutex<BTreeMap<Refusal, u64>>,
    pub metrics: Metrics,
    pub cmd: mpsc::Sender<Command>,
    /// The durable version vector, for [`Mesh::watch`]: raised after every flush.
    pub changes: watch::Sender<VersionVector>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("me", &self.me)
            .field("site", &self.site)
            .finish()
    }
}

/// What happened to a batch handed to [`Shared::apply`].
#[derive(Debug)]
pub(crate) struct Applied {
    /// Highest seq now durable for the origin (0 if none).
    pub up_to: u64,
    /// Entries newly stored.
    pub stored: usize,
    /// The refusal that stopped the batch, with the seq refused.
    pub refused: Option<(Refusal, u64)>,
}

impl Shared {
    pub(crate) fn new(
        key: Keypair,
        site: String,
        roster: Roster,
        store: Store,
        cmd: mpsc::Sender<Command>,
    ) -> Result<Shared, Error> {
        let me = key.public().to_peer_id();
        let my_scopes = roster
            .site(&site)
            .map(|s| s.scopes.clone())
            .unwrap_or_default();
        let heads = store.log_heads()?;
        let last = heads.values().map(|h| h.hlc).max().unwrap_or_default();
        let durable: VersionVector = heads.iter().map(|(o, h)| (*o, h.seq)).collect();
        let (changes, _) = watch::channel(durable.clone());
        let metrics = Metrics::default();
        for r in Refusal::ALL {
            let _ = metrics.refused_entries.get_or_create(&ReasonLabel {
                reason: r.as_str().into(),
            });
        }
        for d in ["in", "out"] {
            let _ = metrics.sync_bytes.get_or_create(&DirLabel {
                direction: d.into(),
            });
        }
        Ok(Shared {
            me,
            site,
            key,
            store,
            roster,
            my_scopes,
            writer: Mutex::new(Writer {
                heads,
                hlc: Hlc::starting_after(last),
            }),
            durable: RwLock::new(durable),
            peers: RwLock::new(Vec::new()),
            links: RwLock::new(BTreeMap::new()),
            relay: RwLock::new(RelayStatus {
                role: "none",
                reserved: false,
            }),
            refused: Mutex::new(BTreeMap::new()),
            metrics,
            cmd,
            changes,
        })
    }

    pub(crate) fn site_of(&self, peer: &PeerId) -> String {
        self.roster
            .site_by_peer(peer)
            .map_or_else(|| "?".to_owned(), |s| s.id.clone())
    }

    pub(crate) fn durable_vv(&self) -> VersionVector {
        self.durable.read().map(|v| v.clone()).unwrap_or_default()
    }

    fn raise_durable(&self, origin: PeerId, seq: u64) {
        if let Ok(mut d) = self.durable.write() {
            d.raise(origin, seq);
            self.changes.send_replace(d.clone());
        }
    }

    pub(crate) fn count_refusal(&self, r: Refusal) {
        self.metrics
            .refused_entries
            .get_or_create(&ReasonLabel {
                reason: r.as_str().into(),
            })
            .inc();
        if let Ok(mut m) = self.refused.lock() {
            *m.entry(r).or_insert(0) += 1;
        }
    }

    /// Appends a record to this site's log; returns once it is durable.
    pub(crate) fn append(&self, scope: &str, kind: &str, payload: Vec<u8>) -> Result<u64, Error> {
        if !crate::scope::allows(&self.my_scopes, scope) {
            return Err(Error::Record {
                reason: format!(
                    "this site may not hold scope `{scope}` (roster scopes: {}); use one of them",
                    self.my_scopes.join(", ")
                ),
            });
        }
        let seq = {
            let mut w = self.writer.lock().map_err(|_| poisoned())?;
            let (seq, prev) = w
                .heads
                .get(&self.me)
                .map_or((1, ZERO_HASH), |h| (h.seq + 1, h.hash));
            let hlc = w.hlc.tick(wall_ms());
            let draft = Draft {
                seq,
                prev,
                hlc,
                scope,
                kind,
                payload,
            };
            let entry =
                Entry::sign(&self.key, draft).map_err(|r| Error::Record { reason: r.into() })?;
            self.store.log_insert(std::slice::from_ref(&entry))?;
            w.heads.insert(
                self.me,
                Head {
                    seq,
                    hash: entry.hash(),
                    hlc,
                },
            );
            seq
        };
        // Group commit: the flush covers every insert made before it, ours included.
        self.store.flush()?;
        self.raise_durable(self.me, seq);
        self.metrics.appended.inc();
        let _ = self.cmd.try_send(Command::Appended);
        Ok(seq)
    }

    /// Verifies and stores a batch of consecutive entries of one origin received from a peer.
    /// Stops at the first refusal; everything before it is stored.
    pub(crate) fn apply(&self, entries: Vec<Entry>) -> Result<Applied, Error> {
        let mut refused = None;
        let mut stored = Vec::new();
        let Some(origin) = entries.first().map(|e| e.origin) else {
            return Ok(Applied {
                up_to: 0,
                stored: 0,
                refused: None,
            });
        };
        let member = self.roster.site_by_peer(&origin).is_some();
        // Signatures first, without the writer lock: they need no log state, and an Ed25519
        // check costs far more than everything else here (appends wait for that lock).
        let mut entries = entries;
        let mut bad_signature = None;
        if member && let Some(bad) = entries.iter().position(|e| e.check_signature().is_err()) {
            bad_signature = Some((Refusal::BadSignature, entries[bad].seq));
            entries.truncate(bad);
        }
        let up_to = {
            let mut w = self.writer.lock().map_err(|_| poisoned())?;
            let mut head = w.heads.get(&origin).map(|h| (h.seq, h.hash));
            let mut last_hlc = None;
            for e in entries {
                let seq = e.seq;
                let held = |s: u64| -> Option<Hash> {
                    self.store
                        .log_get(&origin, s)
                        .ok()
                        .flatten()
                        .map(|e| e.hash())
                };
                let admitted = if member {
                    admit_verified(e, head, held, &self.my_scopes)
                } else {
                    admit(e, member, head, held, &self.my_scopes)
                };
                match admitted {
                    Ok(Admission::Duplicate) => {}
                    Ok(Admission::Store(e)) => {
                        head = Some((e.seq, e.hash()));
                        last_hlc = Some(e.hlc);
                        stored.push(e);
                    }
                    Ok(Admission::StoreWithheld(e)) => {
                        // The payload is dropped here and never written: only the header.
                        self.count_refusal(Refusal::OutOfScope);
                        tracing::debug!(origin = %origin, seq, "payload out of scope; kept header");
                        head = Some((e.seq, e.hash()));
                        last_hlc = Some(e.hlc);
                        stored.push(e);
                    }
                    Err(r) => {
                        refused = Some((r, seq));
                        break;
                    }
                }
            }
            // A bad signature stops the batch where it is, unless something earlier did.
            if refused.is_none() {
                refused = bad_signature;
            }
            self.store.log_insert(&stored)?;
            if let (Some((seq, hash)), Some(hlc)) = (head, last_hlc) {
                w.heads.insert(origin, Head { seq, hash, hlc });
                w.hlc.observe(hlc);
            }
            head.map_or(0, |(s, _)| s)
        };
        if !stored.is_empty() {
            self.store.flush()?;
            self.raise_durable(origin, up_to);
            self.metrics.applied.inc_by(stored.len() as u64);
        }
        if let Some((r, _)) = refused {
            self.count_refusal(r);
        }
        Ok(Applied {
            up_to,
            stored: stored.len(),
            refused,
        })
    }

    fn record(&self, e: &Entry) -> Record {
        let payload = match e.body.payload() {
            Some(p) => serde_json::from_slice(p).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(p).into_owned())
            }),
            None => serde_json::Value::Null,
        };
        Record {
            origin: self.site_of(&e.origin),
            origin_peer: e.origin.to_base58(),
            seq: e.seq,
            time_ms: e.hlc.wall_ms(),
            hlc: e.hlc.0,
            scope: e.scope.clone(),
            kind: e.kind.clone(),
            payload,
            withheld: !e.is_full(),
            hash: hex(&e.hash()),
        }
    }
}

/// Appends a record to this site's log while the node is not running (`huiyan user add` on a
/// stopped node, the demo's first accounts): the same signed, durable append as
/// [`Mesh::append`], without the swarm. The store must be this site's own.
pub fn append_offline(
    key: Keypair,
    site: &str,
    roster: Roster,
    store: Store,
    scope: &str,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<u64, Error> {
    let bytes = serde_json::to_vec(payload).map_err(|e| Error::Record {
        reason: e.to_string(),
    })?;
    // Nobody listens: there is no swarm to announce the new head to until the node starts.
    let (cmd, _) = mpsc::channel(1);
    Shared::new(key, site.to_owned(), roster, store, cmd)?.append(scope, kind, bytes)
}

fn poisoned() -> Error {
    Error::Record {
        reason: "the log writer failed earlier; restart the node".into(),
    }
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The node's handle on the mesh. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub(crate) shared: Arc<Shared>,
}

impl Mesh {
    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.shared.me
    }

    /// Appends a record (JSON payload) to this site's log. Returns (origin PeerId, seq) once the
    /// entry is on disk. Blocking: call from `spawn_blocking` in async code, or use
    /// [`Mesh::append_async`].
    pub fn append(
        &self,
        scope: &str,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<(PeerId, u64), Error> {
        let bytes = serde_json::to_vec(payload).map_err(|e| Error::Record {
            reason: e.to_string(),
        })?;
        let seq = self.shared.append(scope, kind, bytes)?;
        Ok((self.shared.me, seq))
    }

    /// [`Mesh::append`] on the blocking pool.
    pub async fn append_async(
        &self,
        scope: String,
        kind: String,
        payload: serde_json::Value,
    ) -> Result<(PeerId, u64), Error> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.append(&scope, &kind, &payload))
            .await
            .map_err(|e| Error::Record {
                reason: format!("append task failed: {e}"),
            })?
    }

    /// Resolves an origin given as a site id or a PeerId.
    pub fn resolve_origin(&self, origin: &str) -> Option<PeerId> {
        if let Some(site) = self.shared.roster.site(origin) {
            return site.peer_id;
        }
        origin.parse().ok()
    }

    /// Records held of `origin` with seq > `after`, oldest first, at most `limit`.
    pub fn records(&self, origin: &PeerId, after: u64, limit: usize) -> Result<Vec<Record>, Error> {
        let to = self.shared.durable_vv().get(origin);
        if to <= after {
            return Ok(Vec::new());
        }
        let entries = self.shared.store.log_range(origin, after + 1, to, limit)?;
        Ok(entries.iter().map(|e| self.shared.record(e)).collect())
    }

    /// Records of every origin held, seq > `after` per origin, at most `limit` in total.
    pub fn all_records(&self, after: u64, limit: usize) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        for (o, _) in self.shared.durable_vv().iter() {
            if out.len() >= limit {
                break;
            }
            out.extend(self.records(o, after, limit - out.len())?);
        }
        Ok(out)
    }

    /// The durable version vector.
    pub fn version_vector(&self) -> VersionVector {
        self.shared.durable_vv()
    }

    /// Watches the durable version vector: it changes after every local append and every batch
    /// applied from a peer, once the entries are on disk. Views derived from the logs follow it.
    pub fn watch(&self) -> watch::Receiver<VersionVector> {
        self.shared.changes.subscribe()
    }

    /// Whether a connection to the node of `site` is open now. Cheap: no store access.
    pub fn is_connected(&self, site: &str) -> bool {
        self.peer_is(site, |p| p.connected)
    }

    /// Whether `site` is connected and its last head announcement arrived within `within`:
    /// a cut link shows here after about `within`, while the connection itself stays up until
    /// the idle timeout (90 s by default) so that a short outage resumes where it stopped.
    /// This node counts as heard.
    pub fn is_heard_within(&self, site: &str, within: Duration) -> bool {
        let since = wall_ms().saturating_sub(within.as_millis() as u64);
        self.peer_is(site, |p| {
            p.connected && p.heard_ms.is_some_and(|t| t >= since)
        })
    }

    /// `test` on the sync status of `site`'s peer; true for this node, false for a site
    /// without a peer id or never seen.
    fn peer_is(&self, site: &str, test: impl Fn(&crate::sync::PeerStatus) -> bool) -> bool {
        let Some(peer) = self.shared.roster.site(site).and_then(|s| s.peer_id) else {
            return false;
        };
        if peer == self.shared.me {
            return true;
        }
        self.shared
            .peers
            .read()
            .is_ok_and(|peers| peers.iter().any(|p| p.peer == peer && test(p)))
    }

    /// Sync status: version vector, digest, peers with lag and last error, refusals.
    pub fn status(&self) -> Result<SyncStatus, Error> {
        let s = &self.shared;
        let vv = s.durable_vv();
        let mut digest = sha2::Sha256::default();
        let mut entries = 0;
        let mut log_bytes = 0;
        for (o, top) in vv.iter() {
            for e in s.store.log_range(o, 1, top, usize::MAX)? {
                sha2::Digest::update(&mut digest, e.hash());
                entries += 1;
                log_bytes += e.encode().len() as u64;
            }
        }
        let digest = hex(&sha2::Digest::finalize(digest));
        let known = s.peers.read().map(|p| p.clone()).unwrap_or_default();
        let links = s.links.read().map(|l| l.clone()).unwrap_or_default();
        let peers = s
            .roster
            .sites
            .iter()
            .filter(|site| site.peer_id.is_some_and(|p| p != s.me))
            .map(|site| {
                let pid = site.peer_id.unwrap_or(s.me);
                let k = known.iter().find(|k| k.peer == pid);
                PeerSyncStatus {
                    site: site.id.clone(),
                    peer_id: pid.to_base58(),
                    connected: k.is_some_and(|k| k.connected),
                    connection: links
                        .get(&pid)
                        .map(|relayed| if *relayed { "relayed" } else { "direct" }),
                    lag_entries: k.map_or(0, |k| k.lag_entries),
                    lag_seconds: k.map_or(0.0, |k| k.lag_seconds),
                    last_error: k.and_then(|k| k.last_error.clone()),
                }
            })
            .collect();
        let version_vector = vv
            .iter()
            .map(|(o, seq)| VvItem {
                site: s.site_of(o),
                peer_id: o.to_base58(),
                seq,
            })
            .collect();
        let refused = s
            .refused
            .lock()
            .map(|m| m.iter().map(|(r, n)| (r.as_str().to_owned(), *n)).collect())
            .unwrap_or_default();
        Ok(SyncStatus {
            site: s.site.clone(),
            peer_id: s.me.to_base58(),
            version_vector,
            digest,
            entries,
            log_bytes,
            peers,
            relay: s.relay.read().map(|r| r.clone()).unwrap_or_default(),
            refused,
        })
    }

    /// Registers the mesh metrics (prefix `mesh_`, under the node registry prefix `huiyan_`).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = &self.shared.metrics;
        let r = registry.sub_registry_with_prefix("mesh");
        r.register(
            "refused_entries",
            "Entries refused, by reason",
            m.refused_entries.clone(),
        );
        r.register(
            "refused_peers",
            "Connections refused: peer not in the roster",
            m.refused_peers.clone(),
        );
        r.register(
            "sync_bytes",
            "Catch-up message bytes, by direction",
            m.sync_bytes.clone(),
        );
        r.register(
            "peer_lag_entries",
            "Entries a peer holds that we lack",
            m.lag_entries.clone(),
        );
        r.register(
            "peer_lag_seconds",
            "Seconds we have been behind a peer",
            m.lag_seconds.clone(),
        );
        r.register(
            "connected_peers",
            "Roster peers connected now",
            m.connected_peers.clone(),
        );
        r.register(
            "relayed_peers",
            "Roster peers reached only through the hub relay",
            m.relayed_peers.clone(),
        );
        r.register(
            "mdns_ignored",
            "Peers found by mDNS that are not in the roster (ignored)",
            m.mdns_ignored.clone(),
        );
        r.register(
            "appended",
            "Records appended to this site's log",
            m.appended.clone(),
        );
        r.register(
            "applied",
            "Entries applied from other sites",
            m.applied.clone(),
        );
    }

    /// Stops the swarm task (the store stays open).
    pub async fn shutdown(&self) {
        let _ = self.shared.cmd.send(Command::Shutdown).await;
    }

    /// Hands the swarm peers as if mDNS had found them on the LAN: roster peers get the
    /// address and are dialled, others are ignored. For tests: mDNS itself never runs on
    /// loopback.
    #[doc(hidden)]
    pub async fn inject_discovery(&self, found: Vec<(PeerId, libp2p::Multiaddr)>) {
        let _ = self.shared.cmd.send(Command::Discovered(found)).await;
    }

    /// Current clock of this node (for tests and diagnostics).
    pub fn hlc(&self) -> HlcTime {
        self.shared
            .writer
            .lock()
            .map(|w| w.hlc.last())
            .unwrap_or_default()
    }
}

//! Counters of the media engine, exported by the node on `/metrics` (Prometheus text).
//!
//! The engine updates plain atomics; [`MediaMetrics::register`] hands them to the node's
//! prometheus-client registry (prefix `huiyan`) under `media`, so they read `huiyan_media_*`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of the per-subscriber estimate gauge.
pub type SubscriberLabel = Vec<(String, String)>;

/// Every media metric of one node.
#[derive(Debug, Clone, Default)]
pub struct MediaMetrics {
    /// Signaling sessions (joined participants) now.
    pub sessions: Gauge,
    /// WebRTC peer connections now.
    pub peer_connections: Gauge,
    /// Published tracks now.
    pub tracks: Gauge,
    /// RTP packets forwarded to subscribers.
    pub forwarded_packets: Counter,
    /// Payload bytes forwarded to subscribers.
    pub forwarded_bytes: Counter,
    /// Sequence numbers NACKed by subscribers.
    pub nacks: Counter,
    /// NACKed packets resent from the retransmit buffers.
    pub retransmissions: Counter,
    /// PLIs received from subscribers.
    pub plis: Counter,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: Counter,
    /// Simulcast layer switches.
    pub layer_switches: Counter,
    /// Datagrams dropped because no session claimed them.
    pub unmatched_datagrams: Counter,
    /// Files being recorded now (one per publisher of a recorded room).
    pub recordings: Gauge,
    /// Bytes of finished recordings.
    pub recorded_bytes: Counter,
    /// Packet copies (and tap events) a recording's full queue did not take.
    pub recording_dropped_packets: Counter,
    /// Estimated bandwidth to each subscriber connection, bit/s.
    pub subscriber_estimate_bps: Family<SubscriberLabel, Gauge<u64, AtomicU64>>,
}

impl MediaMetrics {
    /// Fresh metrics, shared by the engine and the node.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Register every metric under `media_` in `registry` (the node's, prefixed `huiyan`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("media");
        r.register("sessions", "Joined participants", self.sessions.clone());
        r.register(
            "peer_connections",
            "WebRTC peer connections",
            self.peer_connections.clone(),
        );
        r.register("tracks", "Published tracks", self.tracks.clone());
        r.register(
            "forwarded_packets",
            "RTP packets forwarded to subscribers",
            self.forwarded_packets.clone(),
        );
        r.register(
            "forwarded_bytes",
            "RTP payload bytes forwarded to subscribers",
            self.forwarded_bytes.clone(),
        );
        r.register(
            "nacks",
            "Sequence numbers NACKed by subscribers",
            self.nacks.clone(),
        );
        r.register(
            "retransmissions",
            "Packets resent from retransmit buffers",
            self.retransmissions.clone(),
        );
        r.register("plis", "PLIs received from subscribers", self.plis.clone());
        r.register(
            "keyframe_requests",
            "Keyframe requests sent to publishers",
            self.keyframe_requests.clone(),
        );
        r.register(
            "layer_switches",
            "Simulcast layer switches",
            self.layer_switches.clone(),
        );
        r.register(
            "unmatched_datagrams",
            "Datagrams on the media port that no session claimed",
            self.unmatched_datagrams.clone(),
        );
        r.register(
            "recordings",
            "Files being recorded now",
            self.recordings.clone(),
        );
        r.register(
            "recorded_bytes",
            "Bytes of finished recordings",
            self.recorded_bytes.clone(),
        );
        r.register(
            "recording_dropped_packets",
            "Packet copies a recording's full queue did not take",
            self.recording_dropped_packets.clone(),
        );
        r.register(
            "subscriber_estimate_bps",
            "Estimated bandwidth to each subscriber connection (bit/s)",
            self.subscriber_estimate_bps.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_the_media_prefix() {
        let metrics = MediaMetrics::new();
        metrics.forwarded_packets.inc_by(3);
        let mut registry = Registry::with_prefix("huiyan");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("huiyan_media_forwarded_packets_total 3"),
            "{text}"
        );
        assert!(text.contains("huiyan_media_sessions 0"), "{text}");
    }
}

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
/// Labels of the relay's per-link metrics: `peer` (the remote site), and for stream counts
/// `direction` (`send` or `receive`).
pub type LinkLabel = Vec<(String, String)>;
/// A gauge of floating-point values.
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A gauge of bit rates.
pub type RateGauge = Gauge<u64, AtomicU64>;

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
    /// Relay: 1 while the QUIC connection to the peer site is up.
    pub relay_link_up: Family<LinkLabel, Gauge>,
    /// Relay: media budget of the link, bit/s.
    pub relay_budget_bps: Family<LinkLabel, RateGauge>,
    /// Relay: capacity estimate of the link, bit/s.
    pub relay_estimate_bps: Family<LinkLabel, RateGauge>,
    /// Relay: what the link sent over the last second (UDP bytes), bit/s.
    pub relay_sent_bps: Family<LinkLabel, RateGauge>,
    /// Relay: smoothed round-trip time of the link.
    pub relay_rtt_seconds: Family<LinkLabel, FloatGauge>,
    /// Relay: fraction of packets lost on the link (last 2 s).
    pub relay_loss_ratio: Family<LinkLabel, FloatGauge>,
    /// Relay: streams carried, per direction.
    pub relay_streams: Family<LinkLabel, Gauge>,
    /// Relay: layers carried (audio counts one), per direction.
    pub relay_layers: Family<LinkLabel, Gauge>,
    /// Relay: packets rebuilt from parity.
    pub relay_recovered: Family<LinkLabel, Counter>,
    /// Relay: packets that came back after a NACK.
    pub relay_retransmitted: Family<LinkLabel, Counter>,
    /// Relay: sequence numbers NACKed.
    pub relay_nacked: Family<LinkLabel, Counter>,
    /// Relay: packets given up on.
    pub relay_lost: Family<LinkLabel, Counter>,
    /// Relay: datagrams dropped unsent because quinn's send queue was full.
    pub relay_send_drops: Family<LinkLabel, Counter>,
    /// Relay: handshakes refused because the peer was not the roster site expected.
    pub relay_refused: Counter,
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
        let gauges: [(&str, &str, &Family<LinkLabel, Gauge>); 3] = [
            (
                "relay_link_up",
                "1 while the relay connection to the peer site is up",
                &self.relay_link_up,
            ),
            (
                "relay_streams",
                "Streams the relay link carries, per direction",
                &self.relay_streams,
            ),
            (
                "relay_layers",
                "Layers the relay link carries (audio counts one), per direction",
                &self.relay_layers,
            ),
        ];
        for (name, help, metric) in gauges {
            r.register(name, help, metric.clone());
        }
        let rates: [(&str, &str, &Family<LinkLabel, RateGauge>); 3] = [
            (
                "relay_budget_bps",
                "Media budget of the relay link (bit/s)",
                &self.relay_budget_bps,
            ),
            (
                "relay_estimate_bps",
                "Capacity estimate of the relay link (bit/s)",
                &self.relay_estimate_bps,
            ),
            (
                "relay_sent_bps",
                "What the relay link sent over the last second (bit/s)",
                &self.relay_sent_bps,
            ),
        ];
        for (name, help, metric) in rates {
            r.register(name, help, metric.clone());
        }
        r.register(
            "relay_rtt_seconds",
            "Smoothed round-trip time of the relay link",
            self.relay_rtt_seconds.clone(),
        );
        r.register(
            "relay_loss_ratio",
            "Fraction of packets lost on the relay link (last 2 s)",
            self.relay_loss_ratio.clone(),
        );
        let counters: [(&str, &str, &Family<LinkLabel, Counter>); 5] = [
            (
                "relay_send_drops",
                "Relay datagrams dropped unsent: the link's send queue was full",
                &self.relay_send_drops,
            ),
            (
                "relay_recovered_packets",
                "Relayed packets rebuilt from parity",
                &self.relay_recovered,
            ),
            (
                "relay_retransmitted_packets",
                "Relayed packets that came back after a NACK",
                &self.relay_retransmitted,
            ),
            (
                "relay_nacks",
                "Sequence numbers NACKed on the relay link",
                &self.relay_nacked,
            ),
            (
                "relay_lost_packets",
                "Relayed packets given up on",
                &self.relay_lost,
            ),
        ];
        for (name, help, metric) in counters {
            r.register(name, help, metric.clone());
        }
        r.register(
            "relay_refused",
            "Relay handshakes refused: the peer was not the roster site expected",
            self.relay_refused.clone(),
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

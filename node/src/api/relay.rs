//! `GET /api/v1/media/links`: the media relay's links to other sites — for each remote site
//! the budget, the measured rate, RTT and loss, and the streams and layers carried each way.
//!
//! The relay itself lives in `huiyan_media::relay`; this module only shows its report.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use huiyan_media::relay::core::{CarriedStream, LinkReport};
use huiyan_media::relay::wire::TrackKind;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::problem::Problem;
use crate::node::Node;

/// This node's relay links.
#[derive(Debug, Serialize, ToSchema)]
pub struct MediaLinks {
    /// This site's id.
    site: String,
    /// The site's configured uplink, kbit/s (`uplink_kbps`).
    uplink_kbps: u32,
    /// One entry per remote site the relay has had a connection with.
    links: Vec<MediaLink>,
}

/// The relay link to one remote site.
#[derive(Debug, Serialize, ToSchema)]
pub struct MediaLink {
    /// The remote site's id.
    site: String,
    /// Its names from the roster.
    name_zh: String,
    name_en: String,
    /// Whether the QUIC connection is up.
    up: bool,
    /// Seconds since it came up or went down.
    for_seconds: u64,
    /// Media budget of the link, bit/s: the capacity estimate within this link's share of the
    /// site uplink, less FEC and a reserve for retransmissions.
    budget_bps: u64,
    /// This link's share of the site uplink, bit/s.
    share_bps: u64,
    /// Capacity estimate from quinn's RTT and loss and from probes, bit/s.
    estimate_bps: u64,
    /// What the link sent over the last second (UDP, all overhead), bit/s.
    rate_bps: u64,
    /// quinn's congestion window over its round trip, bit/s (never below the budget).
    quinn_window_bps: u64,
    /// Smoothed round-trip time, ms.
    rtt_ms: f64,
    /// Fraction of packets lost over the last 2 s (0.03 = 3 %).
    loss: f64,
    /// Packets per FEC group, when forward error correction is on.
    fec_packets: Option<usize>,
    /// Parity packets per FEC group (1: any one loss is rebuilt; 2: any two).
    fec_parity: Option<usize>,
    /// Whether a bandwidth probe is under way.
    probing: bool,
    /// Streams this node sends to the remote site.
    sending: Vec<RelayedStream>,
    /// Streams this node receives from it.
    receiving: Vec<RelayedStream>,
    /// Received packets rebuilt from parity.
    recovered_packets: u64,
    /// Received packets that came back after a NACK.
    retransmitted_packets: u64,
    /// Sequence numbers this node NACKed (each try counts).
    nacked_packets: u64,
    /// Received packets given up on.
    lost_packets: u64,
    /// Packets this node resent on the remote site's NACKs.
    resent_packets: u64,
}

/// A stream on a relay link.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayedStream {
    /// The site whose browser publishes it.
    origin: String,
    /// Its track number at the origin.
    track: u64,
    /// `audio` or `video`.
    kind: String,
    /// Layers carried, lowest first (0 is audio or the smallest video).
    layers: Vec<u8>,
    /// A layer the far side wants is held back because a link is too thin.
    limited: bool,
}

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new().routes(routes!(get_links))
}

fn streams(list: Vec<CarriedStream>) -> Vec<RelayedStream> {
    list.into_iter()
        .map(|s| RelayedStream {
            origin: s.stream.origin,
            track: s.stream.track,
            kind: match s.kind {
                TrackKind::Audio => "audio",
                TrackKind::Video => "video",
            }
            .to_owned(),
            layers: s.layers,
            limited: s.limited,
        })
        .collect()
}

fn link(node: &Node, r: LinkReport) -> MediaLink {
    let site = node.roster.site(&r.site);
    MediaLink {
        name_zh: site.map(|s| s.name_zh.clone()).unwrap_or_default(),
        name_en: site.map(|s| s.name_en.clone()).unwrap_or_default(),
        site: r.site,
        up: r.up,
        for_seconds: r.for_seconds,
        budget_bps: r.budget_bps,
        share_bps: r.cap_bps,
        estimate_bps: r.estimate_bps,
        rate_bps: r.sent_bps,
        quinn_window_bps: r.quinn_bps,
        rtt_ms: (r.rtt_ms * 10.0).round() / 10.0,
        loss: (r.loss * 10_000.0).round() / 10_000.0,
        fec_packets: r.fec.map(|(k, _)| k),
        fec_parity: r.fec.map(|(_, p)| p),
        probing: r.probing,
        sending: streams(r.sending),
        receiving: streams(r.receiving),
        recovered_packets: r.rx.recovered,
        retransmitted_packets: r.rx.retransmitted,
        nacked_packets: r.rx.nacked,
        lost_packets: r.rx.lost,
        resent_packets: r.tx.retransmissions,
    }
}

/// The media relay's links to other sites.
#[utoipa::path(get, path = "/api/v1/media/links", tag = "media",
    responses(
        (status = 200, description = "Budget, rate, RTT, loss and streams per remote site",
            body = MediaLinks),
        (status = 503, description = "The media engine has stopped")))]
async fn get_links(State(node): State<Arc<Node>>) -> Result<Json<MediaLinks>, Problem> {
    let reports = node.media.relay_links().await.map_err(|e| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "media_stopped",
            format!("{e}; the node logged the cause, tell IT"),
        )
    })?;
    Ok(Json(MediaLinks {
        site: node.config.site.clone(),
        uplink_kbps: node.config.uplink_kbps,
        links: reports.into_iter().map(|r| link(&node, r)).collect(),
    }))
}

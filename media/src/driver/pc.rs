//! Building webrtc-rs `rtc` peer connections for the two roles a browser connection plays:
//! publishing (browser sends audio and simulcast video) and subscribing (browser receives one
//! publisher's tracks from the SFU).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, PacketReport, Registry,
    Slot, TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_simulcast_extension_headers,
    configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};

use crate::Error;

/// Opus as browsers send it.
pub fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// VP8, the one video codec every browser simulcasts.
pub fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

fn rtc_err(e: impl std::fmt::Display) -> Error {
    Error::Rtc {
        reason: e.to_string(),
    }
}

fn media_engine() -> Result<MediaEngine, Error> {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus(),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .map_err(rtc_err)?;
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8(),
                payload_type: 96,
            },
            RtpCodecKind::Video,
        )
        .map_err(rtc_err)?;
    Ok(engine)
}

/// What the send-side estimator of a subscriber connection last said, for the engine to read.
#[derive(Debug, Default)]
pub struct LinkEstimate {
    /// GCC's target, bit/s; 0 until the first feedback.
    pub bps: AtomicU64,
    /// GCC's smoothed loss of the packets sent on the connection, in thousandths.
    pub loss_permille: AtomicU64,
}

/// A bandwidth estimator that publishes its target and loss for the engine to read.
pub struct SharedEstimate<E> {
    inner: E,
    shared: Arc<LinkEstimate>,
}

impl<E: BandwidthEstimator> BandwidthEstimator for SharedEstimate<E> {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        self.publish();
    }
    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        self.publish();
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }
    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

impl<E: BandwidthEstimator> SharedEstimate<E> {
    fn publish(&self) {
        let bps = self.inner.target_bitrate();
        if bps.is_finite() && bps > 0.0 {
            self.shared.bps.store(bps as u64, Ordering::Relaxed);
        }
        if let Some(loss) = self.inner.stats().packet_loss
            && loss.is_finite()
        {
            let permille = (loss.clamp(0.0, 1.0) * 1000.0).round() as u64;
            self.shared.loss_permille.store(permille, Ordering::Relaxed);
        }
    }
}

/// Where the node's media port can be reached, for the host candidates of every answer.
#[derive(Debug, Clone, Copy)]
pub struct Reachable {
    /// UDP address (the advertised IP and the bound port).
    pub udp: SocketAddr,
    /// Whether to offer ICE-TCP (passive) on the same address.
    pub tcp: bool,
}

/// The role of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The browser sends.
    Publish,
    /// The browser receives.
    Subscribe,
}

/// A new peer connection; for subscribers also the shared estimate its GCC writes.
pub fn build(role: Role, now: Instant) -> Result<(RTCPeerConnection, Arc<LinkEstimate>), Error> {
    let mut engine = media_engine()?;
    let estimate = Arc::new(LinkEstimate::default());
    let registry = match role {
        Role::Publish => {
            // Ask the browser for lost packets, report reception, and give its GCC the
            // transport-wide feedback it adapts its simulcast encodings to.
            configure_simulcast_extension_headers(&mut engine).map_err(rtc_err)?;
            let registry = configure_nack(Registry::new(), &mut engine);
            let registry = configure_twcc_receiver_only(registry, &mut engine).map_err(rtc_err)?;
            configure_rtcp_reports(registry)
        }
        Role::Subscribe => {
            // No NACK responder: the SFU answers NACKs from its own buffers. But the browser
            // must be told it may send NACK and PLI.
            for (typ, parameter) in [("nack", ""), ("nack", "pli"), ("ccm", "fir")] {
                engine.register_feedback(
                    RTCPFeedback {
                        typ: typ.to_owned(),
                        parameter: parameter.to_owned(),
                    },
                    RtpCodecKind::Video,
                );
            }
            let estimator = SharedEstimate {
                inner: Gcc::default(),
                shared: estimate.clone(),
            };
            // Send-side estimation like `configure_congestion_control`, but without its pacer:
            // the SFU already fits what it sends to the estimate by choosing layers, and a pacer
            // starting from GCC's low initial rate held forwarded media for seconds (measured
            // with bench-sfu: p99 delay 3.6 s at 1.6 Mbit/s per subscriber).
            for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
                engine.register_feedback(
                    RTCPFeedback {
                        typ: "transport-cc".to_owned(),
                        parameter: String::new(),
                    },
                    kind,
                );
                engine
                    .register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
                        },
                        kind,
                        None,
                    )
                    .map_err(rtc_err)?;
            }
            let registry = Registry::new()
                .with(
                    Slot::CongestionControl,
                    CongestionControlBuilder::new(estimator).build(),
                )
                .with(Slot::TwccSender, TwccSenderBuilder::new().build())
                .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build());
            configure_rtcp_reports(registry)
        }
    };
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build();
    let pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(rtc_err)?;
    Ok((pc, estimate))
}

/// Add the node's host candidates (UDP, and passive TCP on the same port) before the answer.
pub fn add_host_candidates(pc: &mut RTCPeerConnection, at: Reachable) -> Result<(), Error> {
    let mut configs = vec![CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: at.udp.ip().to_string(),
            port: at.udp.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }];
    if at.tcp {
        configs.push(CandidateHostConfig {
            base_config: CandidateConfig {
                network: "tcp".to_owned(),
                address: at.udp.ip().to_string(),
                port: at.udp.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type: rtc::ice::tcp_type::TcpType::Passive,
        });
    }
    for config in configs {
        let candidate = config.new_candidate_host().map_err(rtc_err)?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(rtc_err)?;
        pc.add_local_candidate(init).map_err(rtc_err)?;
    }
    Ok(())
}

/// The `a=ice-ufrag` of an SDP (the first one; bundle makes them all equal).
pub fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// What a publisher's offer sends: audio, video, and the simulcast rids of the video.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OfferedMedia {
    /// An audio m-line that sends.
    pub audio: bool,
    /// A video m-line that sends.
    pub video: bool,
    /// The simulcast rids of the video, in the order the offer lists them.
    pub rids: Vec<String>,
}

/// Read what a publish offer sends (only the first audio and first video m-line count).
pub fn offered_media(sdp: &str) -> OfferedMedia {
    let mut out = OfferedMedia::default();
    let mut section: Option<&str> = None;
    let mut sends = true;
    let mut rids = Vec::new();
    let finish =
        |section: Option<&str>, sends: bool, rids: &mut Vec<String>, out: &mut OfferedMedia| {
            match section {
                Some("audio") if sends => out.audio = true,
                Some("video") if sends && !out.video => {
                    out.video = true;
                    out.rids = std::mem::take(rids);
                }
                _ => {}
            }
            rids.clear();
        };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            finish(section, sends, &mut rids, &mut out);
            section = rest.split(' ').next();
            sends = true;
        } else if line == "a=recvonly" || line == "a=inactive" {
            sends = false;
        } else if let Some((id, dir)) = line
            .strip_prefix("a=rid:")
            .and_then(|rid| rid.split_once(' '))
            && dir.starts_with("send")
        {
            rids.push(id.to_owned());
        }
    }
    finish(section, sends, &mut rids, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:AbCd\r\na=sendonly\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:AbCd\r\na=sendonly\r\n\
        a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n";

    #[test]
    fn a_publish_offer_is_read_for_audio_video_and_rids() {
        assert_eq!(
            offered_media(OFFER),
            OfferedMedia {
                audio: true,
                video: true,
                rids: vec!["q".into(), "h".into(), "f".into()]
            }
        );
        assert_eq!(sdp_ufrag(OFFER), Some("AbCd"));
        let recv = OFFER.replace("a=sendonly", "a=recvonly");
        assert_eq!(offered_media(&recv), OfferedMedia::default());
    }

    #[test]
    fn both_roles_build() {
        build(Role::Publish, Instant::now()).unwrap();
        build(Role::Subscribe, Instant::now()).unwrap();
    }
}

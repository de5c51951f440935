//! Synthetic WebRTC clients for relay scenarios and benchmarks: real ICE, DTLS and SRTP
//! (webrtc-rs `rtc` peer connections on loopback) and the node's real `/ws` signaling, with a
//! publisher that sends VP8-framed video at a steady rate and a viewer that counts bytes and
//! reassembles frames.
//!
//! A browser's own bitrate adaptation makes byte counts drift by more than the 5 % a one-copy
//! check needs, and seven Chromiums do not fit a 2-core CI machine: these clients do.
//!
//! Frame payloads: a VP8 payload descriptor (start bit on the first packet of a frame, keyframe
//! bit in the next byte), then frame number (u32), packet index and count (u8 each) and the
//! send time in µs since the client's epoch (u64), then filler.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![RTCPFeedback {
            typ: "nack".into(),
            parameter: "pli".into(),
        }],
    }
}

fn peer() -> Result<RTCPeerConnection> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8(),
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )?;
    Ok(RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(engine)
        .build(Instant::now())?)
}

async fn signal(ws: &mut Ws, msg: Value) -> Result<()> {
    ws.send(Message::text(msg.to_string())).await?;
    Ok(())
}

/// The next message of one of `kinds`, skipping others; `error` messages fail.
async fn expect(ws: &mut Ws, kinds: &[&str]) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .with_context(|| format!("no {kinds:?} within 30 s"))?
            .context("socket closed")??;
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text)?;
            if v["type"] == "error" {
                bail!("node refused: {v}");
            }
            if kinds.iter().any(|k| v["type"] == *k) {
                return Ok(v);
            }
        }
    }
}

async fn join(web: SocketAddr, room: &str, role: &str, who: &str) -> Result<(Ws, Value)> {
    let response = reqwest::Client::new()
        .post(format!("http://{web}/api/v1/media/token"))
        .json(&json!({ "room": room, "sub": who, "role": role }))
        .send()
        .await?;
    let status = response.status();
    let token: Value = response.json().await?;
    if !status.is_success() {
        bail!("token refused ({status}): {token}");
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{web}/ws")).await?;
    signal(&mut ws, json!({ "type": "join", "token": token["token"] })).await?;
    let joined = expect(&mut ws, &["joined"]).await?;
    Ok((ws, joined))
}

async fn negotiate(
    pc: &mut RTCPeerConnection,
    ws: &mut Ws,
    local: SocketAddr,
    mut request: Value,
) -> Result<()> {
    let offer = pc.create_offer(None)?;
    pc.set_local_description(Instant::now(), offer.clone())?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    request["sdp"] = json!(offer.sdp);
    signal(ws, request).await?;
    let answer = expect(ws, &["answer"]).await?;
    let sdp = answer["sdp"].as_str().context("answer sdp")?.to_owned();
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp)?)?;
    Ok(())
}

/// Drive one peer connection on its own socket until `stop`.
async fn drive(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    mut on_message: impl FnMut(RTCMessage) + Send,
    mut on_tick: impl FnMut(&mut RTCPeerConnection, Instant) + Send,
    tick: Duration,
) -> Result<()> {
    let local = socket.local_addr()?;
    let mut buf = vec![0u8; 2048];
    let mut next_tick = Instant::now();
    let mut connected = false;
    while !stop.load(Ordering::Relaxed) {
        while let Some(out) = pc.poll_write() {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
        while let Some(event) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                connected = state == RTCPeerConnectionState::Connected;
            }
        }
        while let Some(msg) = pc.poll_read() {
            on_message(msg.message);
        }
        let now = Instant::now();
        let mut due = 0;
        while connected && now >= next_tick && due < 8 {
            on_tick(&mut pc, now);
            next_tick += tick;
            due += 1;
        }
        if next_tick < now {
            next_tick = now + tick;
        }
        let deadline = pc
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(50))
            .min(if connected {
                next_tick
            } else {
                now + Duration::from_millis(50)
            });
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, from) = r?;
                pc.handle_read(TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext {
                        local_addr: local,
                        peer_addr: from,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(&buf[..n]),
                })?;
            }
            () = tokio::time::sleep(deadline.saturating_duration_since(Instant::now())) => {
                pc.handle_timeout(Instant::now())?;
            }
        }
    }
    Ok(())
}

/// A synthetic video publisher: `fps` frames per second of `packets` (at most 32) packets of
/// `size` bytes,
/// a keyframe every second and on every PLI.
#[derive(Debug)]
pub struct Publisher {
    /// Its participant id at its node.
    pub participant: u64,
    /// Frames sent so far.
    pub frames: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    _ws: Ws,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// The time origin of send times in payloads (one per test process).
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Join `room` at the node `web` and publish synthetic video.
pub async fn publish(
    web: SocketAddr,
    room: &str,
    who: &str,
    fps: u32,
    packets: u8,
    size: usize,
) -> Result<Publisher> {
    let packets = packets.clamp(1, 32);
    let (mut ws, joined) = join(web, room, "owner", who).await?;
    let participant = joined["participant"].as_u64().context("participant")?;
    let mut pc = peer()?;
    let ssrc = 0x2345_6789;
    let sender = pc.add_track(MediaStreamTrack::new(
        format!("{who}-stream"),
        "video".into(),
        "video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec: vp8(),
            ..Default::default()
        }],
    ))?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let request = json!({ "type": "publish" });
    negotiate(&mut pc, &mut ws, socket.local_addr()?, request).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let pli = Arc::new(AtomicBool::new(true));
    let (f, p) = (frames.clone(), pli.clone());
    let mut seq: u16 = 0;
    let mut frame: u32 = 0;
    let on_message = move |msg: RTCMessage| {
        if let RTCMessage::RtcpPacket(_, packets) = msg
            && packets
                .iter()
                .any(|r| r.as_any().is::<PictureLossIndication>())
        {
            p.store(true, Ordering::Relaxed);
        }
    };
    let on_tick = move |pc: &mut RTCPeerConnection, now: Instant| {
        let Some(mut sender) = pc.rtp_sender(sender) else {
            return;
        };
        let key = frame.is_multiple_of(fps) || pli.swap(false, Ordering::Relaxed);
        let sent_us = now.duration_since(epoch()).as_micros() as u64;
        for index in 0..packets {
            let mut payload = vec![0u8; size.max(16)];
            payload[0] = if index == 0 { 0x10 } else { 0x00 };
            payload[1] = if key { 0x00 } else { 0x01 };
            payload[2..6].copy_from_slice(&frame.to_be_bytes());
            payload[6] = index;
            payload[7] = packets;
            payload[8..16].copy_from_slice(&sent_us.to_be_bytes());
            seq = seq.wrapping_add(1);
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: frame.wrapping_mul(90_000 / fps),
                    ssrc,
                    marker: index + 1 == packets,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            let _ = sender.write_rtp(now, packet);
        }
        frame = frame.wrapping_add(1);
        f.fetch_add(1, Ordering::Relaxed);
    };
    let interval = Duration::from_micros(1_000_000 / u64::from(fps.max(1)));
    let task = tokio::spawn(drive(
        pc,
        socket,
        stop.clone(),
        on_message,
        on_tick,
        interval,
    ));
    Ok(Publisher {
        participant,
        frames,
        stop,
        _ws: ws,
        task,
    })
}

/// One frame as a viewer reassembles it.
#[derive(Debug, Clone, Default)]
pub struct FrameState {
    /// Which packet indexes arrived (bit per index).
    pub got: u32,
    /// Packets in the frame.
    pub count: u8,
    /// When the publisher sent it, µs since [`epoch`].
    pub sent_us: u64,
    /// When its last missing packet arrived, µs since [`epoch`].
    pub complete_us: Option<u64>,
}

/// What a viewer received.
#[derive(Debug, Default)]
pub struct Received {
    /// RTP packets.
    pub packets: u64,
    /// RTP payload bytes.
    pub bytes: u64,
    /// Frames by number.
    pub frames: BTreeMap<u32, FrameState>,
}

impl Received {
    /// Frames sent in `[from_us, to_us)` that arrived complete (at any time), and those sent.
    pub fn complete_between(&self, from_us: u64, to_us: u64) -> usize {
        self.frames
            .values()
            .filter(|f| (from_us..to_us).contains(&f.sent_us) && f.complete_us.is_some())
            .count()
    }

    /// Freeze time over frames sent in `[from_us, to_us)`, µs: frames are shown in order as
    /// soon as they are complete; a gap between two shown frames longer than
    /// `max(3 × interval, interval + 150 ms)` counts as a freeze (WebRTC's definition).
    pub fn freeze_us(&self, from_us: u64, to_us: u64, interval_us: u64) -> u64 {
        let threshold = (3 * interval_us).max(interval_us + 150_000);
        let mut shown: Option<u64> = None;
        let mut frozen = 0;
        for f in self.frames.values() {
            if !(from_us..to_us).contains(&f.sent_us) {
                continue;
            }
            let Some(done) = f.complete_us else {
                continue;
            };
            let at = shown.map_or(done, |s| s.max(done));
            if let Some(prev) = shown {
                let gap = at - prev;
                if gap > threshold {
                    frozen += gap;
                }
            }
            shown = Some(at);
        }
        frozen
    }
}

/// A synthetic viewer of one publisher.
#[derive(Debug)]
pub struct Viewer {
    /// What it received.
    pub received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    _ws: Ws,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

impl Viewer {
    /// Packets received so far.
    pub fn packets(&self) -> u64 {
        self.received.lock().map(|r| r.packets).unwrap_or(0)
    }
}

/// Join `room` at the node `web` and receive the first publisher that appears there.
pub async fn view(web: SocketAddr, room: &str, who: &str) -> Result<Viewer> {
    let (mut ws, joined) = join(web, room, "viewer", who).await?;
    let publisher = match joined["peers"].as_array().and_then(|p| p.first()) {
        Some(peer) => peer["participant"].as_u64(),
        None => expect(&mut ws, &["published"]).await?["participant"].as_u64(),
    }
    .context("publisher id")?;
    let mut pc = peer()?;
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let request = json!({ "type": "subscribe", "publisher": publisher });
    negotiate(&mut pc, &mut ws, socket.local_addr()?, request).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(Received::default()));
    let r = received.clone();
    let on_message = move |msg: RTCMessage| {
        let RTCMessage::RtpPacket(_, packet) = msg else {
            return;
        };
        let p = &packet.payload;
        let Ok(mut r) = r.lock() else {
            return;
        };
        r.packets += 1;
        r.bytes += p.len() as u64;
        if p.len() < 16 {
            return;
        }
        let frame = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
        let count = p[7];
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&p[8..16]);
        let now_us = epoch().elapsed().as_micros() as u64;
        let f = r.frames.entry(frame).or_default();
        f.count = count;
        f.sent_us = u64::from_be_bytes(sent);
        f.got |= 1u32.checked_shl(u32::from(p[6])).unwrap_or(0);
        if f.got.count_ones() >= u32::from(count) && f.complete_us.is_none() {
            f.complete_us = Some(now_us);
        }
    };
    let task = tokio::spawn(drive(
        pc,
        socket,
        stop.clone(),
        on_message,
        |_, _| {},
        Duration::from_secs(3600),
    ));
    Ok(Viewer {
        received,
        stop,
        _ws: ws,
        task,
    })
}

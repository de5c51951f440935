//! Benchmark: how many RTP packets one node forwards per CPU-second, one publisher to many
//! subscribers, with real ICE, DTLS and SRTP.
//!
//! `cargo build --release -p huiyan && cargo run --release -p huiyan-tests --bin bench-sfu`
//! Optional arguments: `SUBSCRIBERS PACKETS_PER_SECOND SECONDS` (default 50 1000 10).
//!
//! Starts a bureau node with a conference room, joins one synthetic publisher and the
//! subscribers over the node's `/ws` signaling (webrtc-rs `rtc` peer connections on loopback),
//! sends VP8-framed packets carrying their send time, and prints one JSON line: `publishers`,
//! `subscribers`, `forwarded_packets_per_second`, `node_cpu_seconds`,
//! `forwarded_packets_per_cpu_second`, `p99_forward_delay_us`, `drops`; also
//! `sent_packets_per_second` (what the synthetic publisher managed to send of the offered rate)
//! and `node_cpu_share` (node CPU seconds per second: below 1, the node was not the bottleneck).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use huiyan_tests::TestMesh;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

const PAYLOAD: usize = 1000;
const ROOM: &str = "bench";
/// Most ticks a driver catches up on in one turn.
const MAX_BURST: u32 = 32;

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn signal(ws: &mut Ws, msg: Value) -> Result<()> {
    ws.send(Message::text(msg.to_string())).await?;
    Ok(())
}

/// The next message of `kind`, skipping others.
async fn expect(ws: &mut Ws, kind: &str) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .with_context(|| format!("no `{kind}` within 20 s"))?
            .context("socket closed")??;
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text)?;
            if v["type"] == "error" {
                bail!("node refused: {v}");
            }
            if v["type"] == kind {
                return Ok(v);
            }
        }
    }
}

async fn join(web: SocketAddr, role: &str, who: &str) -> Result<(Ws, Value)> {
    let token: Value = reqwest::Client::new()
        .post(format!("http://{web}/api/v1/media/token"))
        .json(&json!({ "room": ROOM, "sub": who, "role": role }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{web}/ws")).await?;
    signal(&mut ws, json!({ "type": "join", "token": token["token"] })).await?;
    let joined = expect(&mut ws, "joined").await?;
    Ok((ws, joined))
}

/// Offer (with a host candidate on `local`), send it with `request`, apply the answer.
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
    let answer = expect(ws, "answer").await?;
    let sdp = answer["sdp"].as_str().context("answer sdp")?.to_owned();
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp)?)?;
    Ok(())
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    measuring: AtomicBool,
    stop: AtomicBool,
}

/// Drive one peer connection on its own socket until `stop`; `on_tick` may send.
async fn drive(
    mut pc: RTCPeerConnection,
    socket: UdpSocket,
    counters: Arc<Counters>,
    mut on_rtp: impl FnMut(&rtc::rtp::Packet),
    mut on_tick: impl FnMut(&mut RTCPeerConnection, Instant),
    tick: Duration,
) -> Result<()> {
    let local = socket.local_addr()?;
    let mut buf = vec![0u8; 2048];
    let mut next_tick = Instant::now();
    let mut connected = false;
    while !counters.stop.load(Ordering::Relaxed) {
        while let Some(out) = pc.poll_write() {
            let _ = socket.send_to(&out.message, out.transport.peer_addr).await;
        }
        while let Some(event) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                connected = state == RTCPeerConnectionState::Connected;
            }
        }
        while let Some(msg) = pc.poll_read() {
            if let RTCMessage::RtpPacket(_, packet) = msg.message {
                on_rtp(&packet);
            }
        }
        // Every tick that is due runs now: the timer wakes us at millisecond granularity, so
        // at 1000 ticks per second and above several are due at once. A backlog beyond
        // MAX_BURST (a stall of this task) is skipped rather than sent as one burst.
        let now = Instant::now();
        let mut due = 0;
        while connected && now >= next_tick && due < MAX_BURST {
            on_tick(&mut pc, now);
            next_tick += tick;
            due += 1;
        }
        if connected && next_tick < now {
            next_tick = now + tick;
        }
        let deadline = pc
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(100))
            .min(if connected {
                next_tick
            } else {
                now + Duration::from_millis(100)
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

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is index 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let subscribers = args.first().copied().unwrap_or(50) as usize;
    let rate = args.get(1).copied().unwrap_or(1000);
    let seconds = args.get(2).copied().unwrap_or(10);

    // One bureau node with a conference room.
    let mesh = TestMesh::single();
    let site = mesh.site("bureau").clone();
    let mut config = std::fs::read_to_string(&site.config)?;
    config.push_str(
        "\n[[rooms]]\nid = \"bench\"\nkind = \"conference\"\nname_zh = \"压测\"\nname_en = \"Bench\"\n",
    );
    std::fs::write(&site.config, config)?;
    let mut node = mesh.start("bureau");
    tokio::task::block_in_place(|| node.wait_ready(Duration::from_secs(30)));
    let web = site.web;
    let counters = Arc::new(Counters::default());
    let delays = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let epoch = Instant::now();

    // The publisher.
    let (mut ws, joined) = join(web, "owner", "publisher").await?;
    let publisher = joined["participant"].as_u64().context("participant")?;
    let mut pc = peer()?;
    let ssrc = 0x1234_5678;
    let sender = pc.add_track(MediaStreamTrack::new(
        "bench".into(),
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
    negotiate(
        &mut pc,
        &mut ws,
        socket.local_addr()?,
        json!({ "type": "publish" }),
    )
    .await?;
    let c = counters.clone();
    let mut seq: u16 = 0;
    let interval = Duration::from_micros(1_000_000 / rate.max(1));
    let publisher_task = tokio::spawn(drive(
        pc,
        socket,
        counters.clone(),
        |_| {},
        move |pc, now| {
            let Some(mut sender) = pc.rtp_sender(sender) else {
                return;
            };
            seq = seq.wrapping_add(1);
            let mut payload = vec![0u8; PAYLOAD];
            payload[0] = 0x10; // VP8 descriptor: start of partition 0
            payload[1] = if seq % 30 == 1 { 0x00 } else { 0x01 }; // keyframe every 30 packets
            let sent_us = now.duration_since(epoch).as_micros() as u64;
            payload[2..10].copy_from_slice(&sent_us.to_be_bytes());
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: u32::from(seq) * 3000,
                    ssrc,
                    marker: true,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            if sender.write_rtp(now, packet).is_ok() && c.measuring.load(Ordering::Relaxed) {
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
        },
        interval,
    ));
    // Keep the publisher's socket open.
    let _publisher_ws = ws;

    // The subscribers.
    let mut tasks = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..subscribers {
        let (mut ws, _) = join(web, "viewer", &format!("viewer-{i}")).await?;
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
        let c = counters.clone();
        let d = delays.clone();
        tasks.push(tokio::spawn(drive(
            pc,
            socket,
            counters.clone(),
            move |packet| {
                if !c.measuring.load(Ordering::Relaxed) || packet.payload.len() < 10 {
                    return;
                }
                c.received.fetch_add(1, Ordering::Relaxed);
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&packet.payload[2..10]);
                let sent_us = u64::from_be_bytes(sent);
                let now_us = epoch.elapsed().as_micros() as u64;
                if let Ok(mut d) = d.lock() {
                    d.push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
                }
            },
            |_, _| {},
            Duration::from_secs(3600),
        )));
        sockets.push(ws);
    }

    // Warm up (connections, first keyframes), then measure.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pid = node.child.id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    counters.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    counters.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    // Let packets in flight land before counting drops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    counters.stop.store(true, Ordering::Relaxed);

    let sent = counters.sent.load(Ordering::Relaxed);
    let received = counters.received.load(Ordering::Relaxed);
    let mut d = delays.lock().map(|d| d.clone()).unwrap_or_default();
    d.sort_unstable();
    let p99 = d.get(d.len() * 99 / 100).copied().unwrap_or(0);
    let expected = sent * subscribers as u64;
    println!(
        "{}",
        json!({
            "bench": "sfu-forwarding",
            "publishers": 1,
            "subscribers": subscribers,
            "offered_packets_per_second": rate,
            "sent_packets_per_second": (sent as f64 / elapsed).round(),
            "node_cpu_share": (cpu / elapsed * 100.0).round() / 100.0,
            "forwarded_packets_per_second": (received as f64 / elapsed).round(),
            "node_cpu_seconds": (cpu * 100.0).round() / 100.0,
            "forwarded_packets_per_cpu_second": if cpu > 0.0 { (received as f64 / cpu).round() } else { 0.0 },
            "p99_forward_delay_us": p99,
            "drops": expected.saturating_sub(received),
        })
    );
    drop(sockets);
    publisher_task.abort();
    for t in tasks {
        t.abort();
    }
    node.stop(Duration::from_secs(5));
    Ok(())
}

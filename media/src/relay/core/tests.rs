//! Relay cores of several sites against each other, over simulated links with delay, loss,
//! a rate limit and cuts, under a virtual clock.

use super::*;
use crate::room::RoomKind;

/// A deterministic random source (xorshift).
struct Rng(u64);

impl Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0 < p
    }
}

/// One direction of a simulated link.
#[derive(Clone)]
struct Pipe {
    rate_bps: u64,
    delay: Duration,
    loss: f64,
    busy_until: Option<Instant>,
    sample: PathSample,
}

enum Msg {
    Control(Control),
    Datagram(Bytes),
}

#[derive(Default)]
struct Seen {
    media: BTreeMap<(StreamId, u8), BTreeSet<u16>>,
    media_times: Vec<(Instant, StreamId, u8)>,
    members: Vec<Member>,
    left: Vec<MemberId>,
    keyframes: Vec<(Instant, StreamId, u8)>,
    limited: Vec<(Instant, StreamId, bool)>,
    rooms: Vec<(String, Option<RoomPolicy>)>,
}

struct Sim {
    now: Instant,
    nodes: BTreeMap<String, Relay>,
    pipes: HashMap<(String, String), Pipe>,
    /// Pairs that can reach each other (sorted), and those connected.
    reachable: BTreeSet<(String, String)>,
    connected: BTreeSet<(String, String)>,
    inflight: Vec<(Instant, u64, String, String, Msg)>,
    sent: u64,
    seen: BTreeMap<String, Seen>,
    rng: Rng,
    next_sample: Instant,
    next_dial: Instant,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a < b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

impl Sim {
    fn new(sites: &[&str], config: impl Fn(&str) -> RelayConfig) -> Sim {
        let now = Instant::now();
        let mut sim = Sim {
            now,
            nodes: BTreeMap::new(),
            pipes: HashMap::new(),
            reachable: BTreeSet::new(),
            connected: BTreeSet::new(),
            inflight: Vec::new(),
            sent: 0,
            seen: BTreeMap::new(),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            next_sample: now,
            next_dial: now,
        };
        for a in sites {
            sim.nodes.insert(a.to_string(), Relay::new(config(a)));
            sim.seen.insert(a.to_string(), Seen::default());
            for b in sites {
                if a != b {
                    sim.set_pipe(a, b, 0, 150, 0.0);
                    sim.reachable.insert(pair(a, b));
                }
            }
        }
        sim
    }

    /// Both directions between `a` and `b`: rate (0 = unlimited), one-way delay, loss.
    fn set_pipe(&mut self, a: &str, b: &str, rate_bps: u64, delay_ms: u64, loss: f64) {
        for (x, y) in [(a, b), (b, a)] {
            let pipe = self
                .pipes
                .entry((x.to_owned(), y.to_owned()))
                .or_insert(Pipe {
                    rate_bps,
                    delay: Duration::ZERO,
                    loss,
                    busy_until: None,
                    sample: PathSample::default(),
                });
            pipe.rate_bps = rate_bps;
            pipe.delay = Duration::from_millis(delay_ms);
            pipe.loss = loss;
        }
    }

    fn cut(&mut self, a: &str, b: &str, cut: bool) {
        if cut {
            self.reachable.remove(&pair(a, b));
        } else {
            self.reachable.insert(pair(a, b));
        }
    }

    fn node(&mut self, site: &str) -> &mut Relay {
        self.nodes.get_mut(site).unwrap()
    }

    fn seen(&self, site: &str) -> &Seen {
        &self.seen[site]
    }

    /// Send over a pipe: returns the delivery time, or None when dropped.
    fn transmit(&mut self, from: &str, to: &str, bytes: usize, reliable: bool) -> Option<Instant> {
        let now = self.now;
        let pipe = self.pipes.get_mut(&(from.to_owned(), to.to_owned()))?;
        let wire = bytes as u64 + 60;
        pipe.sample.sent_bytes += wire;
        pipe.sample.sent_packets += 1;
        let lost_bytes = &mut pipe.sample.lost_bytes;
        let start = pipe.busy_until.map_or(now, |b| b.max(now));
        let queue = start.saturating_duration_since(now);
        if !reliable && pipe.rate_bps > 0 && queue > Duration::from_millis(500)
            || !reliable && self.rng.chance(pipe.loss)
        {
            *lost_bytes += wire;
            pipe.sample.lost_packets += 1;
            return None;
        }
        let tx = if pipe.rate_bps > 0 {
            Duration::from_secs_f64(wire as f64 * 8.0 / pipe.rate_bps as f64)
        } else {
            Duration::ZERO
        };
        pipe.busy_until = Some(start + tx);
        // A reliable message that QUIC would resend arrives a round trip later at worst;
        // its delay is modelled by the pipe's, which is enough for these scenarios.
        Some(start + tx + pipe.delay)
    }

    fn drain(&mut self) {
        let sites: Vec<String> = self.nodes.keys().cloned().collect();
        for site in sites {
            while let Some(out) = self.node(&site).poll_output() {
                let now = self.now;
                match out {
                    Output::Control { to, msg } => {
                        if self.connected.contains(&pair(&site, &to)) {
                            let len = msg.encode().len();
                            if let Some(at) = self.transmit(&site, &to, len, true) {
                                self.inflight.push((
                                    at,
                                    {
                                        self.sent += 1;
                                        self.sent
                                    },
                                    site.clone(),
                                    to,
                                    Msg::Control(msg),
                                ));
                            }
                        }
                    }
                    Output::Datagram { to, data } => {
                        assert!(data.len() <= 1200, "datagram of {} bytes", data.len());
                        if self.connected.contains(&pair(&site, &to))
                            && let Some(at) = self.transmit(&site, &to, data.len(), false)
                        {
                            self.inflight.push((
                                at,
                                {
                                    self.sent += 1;
                                    self.sent
                                },
                                site.clone(),
                                to,
                                Msg::Datagram(data),
                            ));
                        }
                    }
                    Output::Media {
                        stream,
                        layer,
                        packet,
                    } => {
                        let seen = self.seen.get_mut(&site).unwrap();
                        seen.media
                            .entry((stream.clone(), layer))
                            .or_default()
                            .insert(packet.seq);
                        seen.media_times.push((now, stream, layer));
                    }
                    Output::Member { member, .. } => {
                        self.seen.get_mut(&site).unwrap().members.push(member)
                    }
                    Output::Left { id, .. } => self.seen.get_mut(&site).unwrap().left.push(id),
                    Output::Keyframe { stream, layer } => self
                        .seen
                        .get_mut(&site)
                        .unwrap()
                        .keyframes
                        .push((now, stream, layer)),
                    Output::Limited { stream, limited } => self
                        .seen
                        .get_mut(&site)
                        .unwrap()
                        .limited
                        .push((now, stream, limited)),
                    Output::Room { room, policy } => {
                        self.seen.get_mut(&site).unwrap().rooms.push((room, policy))
                    }
                }
            }
        }
    }

    /// Connections follow what the cores want and what the network allows.
    fn manage_links(&mut self) {
        let now = self.now;
        // Cuts close connections.
        let cut: Vec<(String, String)> = self
            .connected
            .iter()
            .filter(|p| !self.reachable.contains(*p))
            .cloned()
            .collect();
        for (a, b) in cut {
            self.connected.remove(&(a.clone(), b.clone()));
            self.inflight
                .retain(|(_, _, f, t, _)| pair(f, t) != (a.clone(), b.clone()));
            self.node(&a).link_down(now, &b);
            self.node(&b).link_down(now, &a);
        }
        if now < self.next_dial {
            return;
        }
        self.next_dial = now + Duration::from_millis(500);
        let sites: Vec<String> = self.nodes.keys().cloned().collect();
        for a in &sites {
            let wanted = self.node(a).wanted_links(now);
            for b in wanted {
                let p = pair(a, &b);
                if self.connected.contains(&p) {
                    continue;
                }
                if self.reachable.contains(&p) {
                    self.connected.insert(p);
                    for pipe in self.pipes.values_mut() {
                        pipe.busy_until = None;
                    }
                    self.node(a).link_up(now, &b, 1200);
                    self.node(&b).link_up(now, a, 1200);
                } else {
                    self.node(a).dial_failed(now, &b);
                }
            }
        }
    }

    /// Run until `until`, calling `each` every millisecond step first.
    fn run_for(&mut self, ms: u64, mut each: impl FnMut(&mut Sim)) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            each(self);
            self.manage_links();
            // Deliveries due.
            let now = self.now;
            let mut due = Vec::new();
            let mut i = 0;
            while i < self.inflight.len() {
                if self.inflight[i].0 <= now {
                    due.push(self.inflight.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|(at, n, ..)| (*at, *n));
            for (_, _, from, to, msg) in due {
                match msg {
                    Msg::Control(msg) => {
                        if std::env::var_os("SIM_TRACE").is_some() {
                            eprintln!("{now:?} {from} -> {to}: {msg:?}");
                        }
                        self.node(&to).on_control(now, &from, msg)
                    }
                    Msg::Datagram(data) => self.node(&to).on_datagram(now, &from, data),
                }
            }
            if now >= self.next_sample {
                self.next_sample = now + Duration::from_millis(250);
                let connected: Vec<(String, String)> = self.connected.iter().cloned().collect();
                for (a, b) in connected {
                    for (x, y) in [(&a, &b), (&b, &a)] {
                        let pipe = &self.pipes[&(x.clone(), y.clone())];
                        let back = &self.pipes[&(y.clone(), x.clone())];
                        let queue = pipe
                            .busy_until
                            .map_or(Duration::ZERO, |b| b.saturating_duration_since(now));
                        let mut sample = pipe.sample;
                        sample.rtt = pipe.delay + back.delay + queue;
                        self.node(x).path_sample(now, y, sample, 1200);
                    }
                }
            }
            let sites: Vec<String> = self.nodes.keys().cloned().collect();
            for site in sites {
                if self.node(&site).poll_timeout().is_some_and(|t| t <= now) {
                    self.node(&site).handle_timeout(now);
                }
            }
            self.drain();
            self.now += Duration::from_millis(1);
        }
    }
}

const ROOM: &str = "bureau/med";

fn config(site: &str) -> RelayConfig {
    RelayConfig::new(site, Some("hub".into()), 8192)
}

fn track(track: u64, kind: TrackKind, layer_heights: Vec<Option<u32>>) -> TrackInfo {
    let clock_rate = if kind == TrackKind::Audio {
        48_000
    } else {
        90_000
    };
    TrackInfo {
        track,
        tag: 0,
        kind,
        clock_rate,
        layer_heights,
    }
}

/// A publisher's media: audio every 20 ms, two video layers (~150 and ~500 kbit/s).
struct Publisher {
    site: String,
    audio: u64,
    video: u64,
    seq: [u16; 3],
    sent: BTreeMap<(u64, u8), u64>,
}

impl Publisher {
    fn new(sim: &mut Sim, site: &str, participant: u64) -> Publisher {
        let now = sim.now;
        let node = sim.node(site);
        node.local_join(now, ROOM, participant, "caller", Role::Speaker);
        let audio = track(10, TrackKind::Audio, vec![]);
        let video = track(11, TrackKind::Video, vec![Some(180), Some(360)]);
        node.local_publish(now, ROOM, participant, vec![audio, video]);
        Publisher {
            site: site.into(),
            audio: 10,
            video: 11,
            seq: [0; 3],
            sent: BTreeMap::new(),
        }
    }

    /// Called every millisecond.
    fn tick(&mut self, sim: &mut Sim, ms: u64) {
        let now = sim.now;
        let mut emit = |sim: &mut Sim, track: u64, layer: u8, size: usize, seq: &mut u16| {
            let packet = RelayPacket {
                seq: *seq,
                ts: (ms * 90) as u32,
                marker: true,
                payload: Bytes::from(vec![layer; size]),
            };
            *seq = seq.wrapping_add(1);
            sim.node(&self.site).local_rtp(now, track, layer, packet);
            *self.sent.entry((track, layer)).or_default() += 1;
        };
        if ms.is_multiple_of(20) {
            emit(sim, self.audio, 0, 120, &mut self.seq[0]);
        }
        if ms.is_multiple_of(50) {
            emit(sim, self.video, 0, 900, &mut self.seq[1]);
        }
        if ms.is_multiple_of(15) {
            emit(sim, self.video, 1, 950, &mut self.seq[2]);
        }
    }
}

fn stream(origin: &str, track: u64) -> StreamId {
    StreamId {
        origin: origin.into(),
        track,
    }
}

/// scenic-2 joins the bureau's room with a viewer who wants everything it gets offered.
fn viewer_joins(sim: &mut Sim, site: &str) {
    let now = sim.now;
    sim.node(site)
        .local_join(now, ROOM, 500, "viewer", Role::Viewer);
}

/// Mirror of the engine: once a member with tracks appears, want all its tracks.
fn want_all(sim: &mut Sim, site: &str) {
    let now = sim.now;
    let members = sim.seen(site).members.clone();
    for m in members {
        for t in &m.tracks {
            let id = stream(&m.id.origin, t.track);
            let layer = match t.kind {
                TrackKind::Audio => 0,
                TrackKind::Video => 1,
            };
            sim.node(site).set_local_want(now, &id, Some(layer));
        }
    }
}

fn home_sim(sites: &[&str]) -> Sim {
    let mut sim = Sim::new(sites, config);
    let now = sim.now;
    sim.node("bureau")
        .define_room(RoomPolicy::new(ROOM, RoomKind::Mediation, "mediator"));
    let _ = now;
    sim
}

#[test]
fn a_remote_viewer_joins_learns_the_room_and_receives_both_layers() {
    let mut sim = home_sim(&["bureau", "scenic-2", "hub"]);
    let mut publisher = Publisher::new(&mut sim, "bureau", 1);
    viewer_joins(&mut sim, "scenic-2");
    let mut ms = 0;
    sim.run_for(8000, |sim| {
        publisher.tick(sim, ms);
        want_all(sim, "scenic-2");
        ms += 1;
    });
    let seen = sim.seen("scenic-2");
    assert!(
        seen.rooms
            .iter()
            .any(|(r, p)| r == ROOM && p.as_ref().is_some_and(|p| p.kind == RoomKind::Mediation))
    );
    let member = seen
        .members
        .last()
        .expect("the bureau's publisher is announced");
    assert_eq!(member.id.origin, "bureau");
    assert_eq!(member.tracks.len(), 2);
    for layer in [0, 1] {
        let got = seen
            .media
            .get(&(stream("bureau", 11), layer))
            .map_or(0, |s| s.len());
        assert!(got > 50, "layer {layer}: {got} packets");
    }
    assert!(seen.media.contains_key(&(stream("bureau", 10), 0)), "audio");
    // The bureau was asked for keyframes when video layers started crossing the link.
    assert!(!sim.seen("bureau").keyframes.is_empty());
    // The bureau sees the viewer as a member too.
    assert!(
        sim.seen("bureau")
            .members
            .iter()
            .any(|m| m.id.origin == "scenic-2"),
        "{:?}",
        sim.seen("bureau").members
    );
    // Nothing goes to the hub: it is not on the way.
    let hub_link = sim.nodes["bureau"].report(sim.now);
    assert!(hub_link.iter().all(|l| l.site != "hub"));
}

#[test]
fn three_percent_loss_at_300ms_is_repaired_by_parity_and_nacks() {
    let mut sim = home_sim(&["bureau", "scenic-2"]);
    sim.set_pipe("bureau", "scenic-2", 2_000_000, 150, 0.03);
    let mut publisher = Publisher::new(&mut sim, "bureau", 1);
    viewer_joins(&mut sim, "scenic-2");
    let mut ms = 0;
    let mut first_seq = None;
    sim.run_for(30_000, |sim| {
        publisher.tick(sim, ms);
        want_all(sim, "scenic-2");
        if ms == 8000 {
            first_seq = Some(publisher.seq[2]);
        }
        ms += 1;
    });
    // Of the middle layer's packets sent from 8 s until 2 s before the end, how many arrived.
    let first = first_seq.unwrap();
    let last = publisher.seq[2].wrapping_sub(150);
    let got = &sim.seen("scenic-2").media[&(stream("bureau", 11), 1)];
    let wanted = (first..last).count();
    let arrived = (first..last).filter(|s| got.contains(s)).count();
    let ratio = arrived as f64 / wanted as f64;
    assert!(
        ratio > 0.995,
        "{arrived} of {wanted} packets ({ratio:.4})\n{:#?}\n{:#?}",
        sim.nodes["scenic-2"].report(sim.now),
        sim.nodes["bureau"].report(sim.now)
    );
    let report = sim.nodes["scenic-2"].report(sim.now);
    let link = report.iter().find(|l| l.site == "bureau").unwrap();
    assert!(link.rx.recovered > 20, "{:?}", link.rx);
    assert!(link.rx.retransmitted > 0, "{:?}", link.rx);
    let sender = sim.nodes["bureau"].report(sim.now);
    let link = sender.iter().find(|l| l.site == "scenic-2").unwrap();
    assert_eq!(link.fec, Some((8, 2)), "{link:?}");
    assert!(
        link.sending.iter().any(|s| s.layers == vec![0, 1]),
        "both video layers fit 2 Mbit/s: {:?}",
        link.sending
    );
}

#[test]
fn a_thin_link_carries_audio_only_says_why_and_video_returns_when_it_widens() {
    let mut sim = home_sim(&["bureau", "scenic-2"]);
    sim.set_pipe("bureau", "scenic-2", 2_000_000, 50, 0.0);
    let mut publisher = Publisher::new(&mut sim, "bureau", 1);
    viewer_joins(&mut sim, "scenic-2");
    let mut ms = 0;
    let step = |sim: &mut Sim, publisher: &mut Publisher, dur: u64, ms: &mut u64| {
        sim.run_for(dur, |sim| {
            publisher.tick(sim, *ms);
            want_all(sim, "scenic-2");
            *ms += 1;
        });
    };
    step(&mut sim, &mut publisher, 6000, &mut ms);
    sim.set_pipe("bureau", "scenic-2", 128_000, 50, 0.0);
    let cut_at = sim.now;
    step(&mut sim, &mut publisher, 20_000, &mut ms);
    let video = stream("bureau", 11);
    let limited_at = sim
        .seen("scenic-2")
        .limited
        .iter()
        .find(|(t, s, l)| *t > cut_at && *s == video && *l)
        .map(|(t, ..)| *t)
        .expect("the viewer's node is told that video is held back");
    assert!(
        limited_at - cut_at < Duration::from_secs(8),
        "{:?}",
        limited_at - cut_at
    );
    // In the last 5 s: audio arrives, video does not.
    let recent = |sim: &Sim, s: &StreamId| {
        sim.seen("scenic-2")
            .media_times
            .iter()
            .filter(|(t, id, _)| *t > sim.now - Duration::from_secs(5) && id == s)
            .count()
    };
    assert!(
        recent(&sim, &stream("bureau", 10)) > 150,
        "audio keeps flowing"
    );
    assert_eq!(recent(&sim, &video), 0, "no video on a 128 kbit/s link");

    sim.set_pipe("bureau", "scenic-2", 2_000_000, 50, 0.0);
    let widened = sim.now;
    step(&mut sim, &mut publisher, 40_000, &mut ms);
    let back = sim
        .seen("scenic-2")
        .media_times
        .iter()
        .find(|(t, id, _)| *t > widened && *id == video)
        .map(|(t, ..)| *t)
        .expect("video returns");
    assert!(
        back - widened < Duration::from_secs(30),
        "{:?}",
        back - widened
    );
    assert!(
        sim.seen("scenic-2")
            .limited
            .iter()
            .any(|(t, s, l)| *t > widened && *s == video && !*l)
    );
}

#[test]
fn a_cut_link_keeps_everyone_in_the_room_and_media_resumes_with_a_keyframe() {
    let mut sim = home_sim(&["bureau", "scenic-2"]);
    sim.set_pipe("bureau", "scenic-2", 2_000_000, 150, 0.0);
    let mut publisher = Publisher::new(&mut sim, "bureau", 1);
    viewer_joins(&mut sim, "scenic-2");
    let mut ms = 0;
    let run = |sim: &mut Sim, publisher: &mut Publisher, dur: u64, ms: &mut u64| {
        sim.run_for(dur, |sim| {
            publisher.tick(sim, *ms);
            want_all(sim, "scenic-2");
            *ms += 1;
        });
    };
    run(&mut sim, &mut publisher, 5000, &mut ms);
    sim.cut("bureau", "scenic-2", true);
    run(&mut sim, &mut publisher, 30_000, &mut ms);
    assert!(
        sim.seen("scenic-2").left.is_empty(),
        "the viewer still sees the publisher"
    );
    assert!(
        sim.seen("bureau").left.is_empty(),
        "the bureau still sees the viewer"
    );
    sim.cut("bureau", "scenic-2", false);
    let back = sim.now;
    run(&mut sim, &mut publisher, 5000, &mut ms);
    let video = stream("bureau", 11);
    let resumed = sim
        .seen("scenic-2")
        .media_times
        .iter()
        .find(|(t, id, _)| *t > back && *id == video)
        .map(|(t, ..)| *t)
        .expect("video resumes");
    assert!(
        resumed - back < Duration::from_millis(1500),
        "{:?}",
        resumed - back
    );
    assert!(
        sim.seen("bureau")
            .keyframes
            .iter()
            .any(|(t, s, _)| *t >= back && *s == video),
        "a keyframe is asked for when the video layer starts again"
    );
}

#[test]
fn members_behind_a_link_down_past_the_hold_leave() {
    let mut sim = Sim::new(&["bureau", "scenic-2"], |site| RelayConfig {
        hold: Duration::from_secs(5),
        ..config(site)
    });
    sim.node("bureau")
        .define_room(RoomPolicy::new(ROOM, RoomKind::Mediation, "mediator"));
    let mut publisher = Publisher::new(&mut sim, "bureau", 1);
    viewer_joins(&mut sim, "scenic-2");
    let mut ms = 0;
    sim.run_for(3000, |sim| {
        publisher.tick(sim, ms);
        ms += 1;
    });
    sim.cut("bureau", "scenic-2", true);
    sim.run_for(7000, |_| {});
    assert_eq!(sim.seen("scenic-2").left.len(), 1);
    assert_eq!(sim.seen("bureau").left.len(), 1);
}

#[test]
fn sites_that_cannot_reach_each_other_meet_through_the_hub_one_copy_per_link() {
    let mut sim = home_sim(&["bureau", "scenic-2", "office-1", "hub"]);
    sim.cut("bureau", "scenic-2", true);
    sim.cut("bureau", "office-1", true);
    let mut publisher = Publisher::new(&mut sim, "bureau", 1);
    viewer_joins(&mut sim, "scenic-2");
    viewer_joins(&mut sim, "office-1");
    let mut ms = 0;
    sim.run_for(12_000, |sim| {
        publisher.tick(sim, ms);
        want_all(sim, "scenic-2");
        want_all(sim, "office-1");
        ms += 1;
    });
    let video = stream("bureau", 11);
    for site in ["scenic-2", "office-1"] {
        let got = sim
            .seen(site)
            .media
            .get(&(video.clone(), 1))
            .map_or(0, |s| s.len());
        assert!(got > 100, "{site} got {got} packets through the hub");
    }
    // The bureau sends the hub one copy for both viewers' sites.
    let bureau = sim.nodes["bureau"].report(sim.now);
    let to_hub = bureau
        .iter()
        .find(|l| l.site == "hub")
        .expect("bureau–hub link");
    let sent = publisher.sent[&(11, 1)] + publisher.sent[&(11, 0)] + publisher.sent[&(10, 0)];
    assert!(
        to_hub.tx.media_packets <= sent,
        "{} packets to the hub for {sent} published",
        to_hub.tx.media_packets
    );
    assert!(bureau.iter().all(|l| l.site == "hub" || !l.up));
    let hub = sim.nodes["hub"].report(sim.now);
    for site in ["scenic-2", "office-1"] {
        let link = hub.iter().find(|l| l.site == site).unwrap();
        assert!(link.sending.iter().any(|s| s.stream == video), "{link:?}");
    }
    // The viewers know each other through the hub as well.
    assert!(
        sim.seen("scenic-2")
            .members
            .iter()
            .any(|m| m.id.origin == "office-1")
    );
}

#[test]
fn a_lookup_learns_the_policy_or_that_the_room_does_not_exist() {
    let mut sim = home_sim(&["bureau", "scenic-2"]);
    let now = sim.now;
    sim.node("scenic-2").lookup_room(now, ROOM);
    sim.node("scenic-2").lookup_room(now, "bureau/nope");
    sim.run_for(2000, |_| {});
    let rooms = &sim.seen("scenic-2").rooms;
    assert!(rooms.iter().any(|(r, p)| r == ROOM && p.is_some()));
    assert!(rooms.iter().any(|(r, p)| r == "bureau/nope" && p.is_none()));
    // Without participants the interest lapses and the link is no longer wanted.
    sim.run_for(61_000, |_| {});
    assert!(sim.nodes["scenic-2"].wanted_links(sim.now).is_empty());
}

#[test]
fn a_direct_cut_reroutes_through_the_hub_and_back_without_anyone_leaving() {
    let mut sim = home_sim(&["bureau", "scenic-2", "hub"]);
    let mut publisher = Publisher::new(&mut sim, "bureau", 1);
    viewer_joins(&mut sim, "scenic-2");
    let mut ms = 0;
    let run = |sim: &mut Sim, publisher: &mut Publisher, dur: u64, ms: &mut u64| {
        sim.run_for(dur, |sim| {
            publisher.tick(sim, *ms);
            want_all(sim, "scenic-2");
            *ms += 1;
        });
    };
    run(&mut sim, &mut publisher, 5000, &mut ms);
    sim.cut("bureau", "scenic-2", true);
    let cut = sim.now;
    run(&mut sim, &mut publisher, 20_000, &mut ms);
    let video = stream("bureau", 11);
    let via_hub = sim
        .seen("scenic-2")
        .media_times
        .iter()
        .filter(|(t, id, _)| *t > cut + Duration::from_secs(8) && *id == video)
        .count();
    assert!(via_hub > 300, "{via_hub} video packets through the hub");
    sim.cut("bureau", "scenic-2", false);
    let back = sim.now;
    run(&mut sim, &mut publisher, 10_000, &mut ms);
    assert!(
        sim.seen("scenic-2").left.is_empty(),
        "{:?}",
        sim.seen("scenic-2").left
    );
    assert!(
        sim.seen("bureau").left.is_empty(),
        "{:?}",
        sim.seen("bureau").left
    );
    // Direct again: the bureau sends to scenic-2, no longer to the hub.
    let report = sim.nodes["bureau"].report(sim.now);
    let direct = report.iter().find(|l| l.site == "scenic-2").unwrap();
    assert!(
        direct.sending.iter().any(|s| s.stream == video),
        "{direct:?}"
    );
    let hub = report.iter().find(|l| l.site == "hub").unwrap();
    assert!(hub.sending.is_empty(), "{hub:?}");
    let after = sim
        .seen("scenic-2")
        .media_times
        .iter()
        .filter(|(t, id, _)| *t > back + Duration::from_secs(5) && *id == video)
        .count();
    assert!(after > 200, "{after} video packets after the return");
}

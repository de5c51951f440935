//! The recording tap and its writer task.
//!
//! While a room is recorded, the engine copies every packet it receives from the room's
//! publishers (audio, and one simulcast layer of video) into a bounded channel, before the SFU
//! rewrites anything; a full channel drops the copy and counts it
//! (`huiyan_media_recording_dropped_packets_total`), so the forwarding path never waits. The
//! writer task turns each publisher's packets into one WebM file ([`crate::record::Recorder`])
//! under the directory it was given, buffered (at most [`WRITE_CHUNK`] bytes held per file)
//! and flushed to disk when the publisher leaves, republishes, or the recording stops. Each
//! finished file is reported as a [`RecordedFile`]; what becomes of it is the caller's
//! business.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Command;
use crate::metrics::MediaMetrics;
use crate::record::{RecordStats, Recorder, RtpIn, TrackKind};
use crate::sfu::ParticipantId;

/// Capacity of a recorded room's tap, in packets: about two seconds of two publishers.
pub const TAP_QUEUE: usize = 2048;
/// Bytes a file's writer holds before writing them out.
pub const WRITE_CHUNK: usize = 256 * 1024;
/// Keyframe requests for a recording, at most one per publisher this often.
const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// What the engine tells a recording's writer.
#[derive(Debug)]
pub(crate) enum TapEvent {
    /// A participant publishes (again): start its file.
    Publishing {
        participant: ParticipantId,
        /// The opaque subject of the participant's join token.
        sub: String,
        audio: bool,
        video: bool,
    },
    /// A copy of a received packet.
    Packet {
        participant: ParticipantId,
        kind: TrackKind,
        arrival: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
    },
    /// The participant left or stopped publishing: close its file.
    Gone { participant: ParticipantId },
}

/// A finished recording of one publisher.
#[derive(Debug, Clone)]
pub struct RecordedFile {
    /// The room recorded.
    pub room: String,
    /// The subject of the publisher's join token (an opaque id, never a name).
    pub sub: String,
    /// The complete WebM file.
    pub path: PathBuf,
    /// Wall-clock start and end, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// See `started_unix_ms`.
    pub ended_unix_ms: u64,
    /// Media duration in milliseconds.
    pub duration_ms: u64,
    /// Frames, drops and bytes.
    pub stats: RecordStats,
}

/// The simulcast layer recorded out of `layers` (lowest quality first): the middle one of
/// three (640x360 from the call page), the top one of two, the only one otherwise. Enough to
/// see faces and documents held up, at a third of the full layer's size.
pub(crate) fn recorded_layer(layers: usize) -> usize {
    if layers >= 2 { 1 } else { 0 }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Writing {
    recorder: Recorder,
    file: File,
    path: PathBuf,
    sub: String,
    buffer: Vec<u8>,
    started: Instant,
    started_unix_ms: u64,
    last_keyframe_request: Option<Instant>,
    failed: bool,
}

impl Writing {
    fn write_out(&mut self) {
        if self.failed || self.buffer.is_empty() {
            self.buffer.clear();
            return;
        }
        if let Err(e) = self.file.write_all(&self.buffer) {
            error_once(&self.path, &e);
            self.failed = true;
        }
        self.buffer.clear();
    }
}

fn error_once(path: &std::path::Path, e: &std::io::Error) {
    tracing::error!(path = %path.display(), error = %e, "cannot write a recording; it stops");
}

/// The writer task of one recorded room: runs until the engine drops the tap.
pub(crate) async fn write_room(
    room: String,
    dir: PathBuf,
    mut events: mpsc::Receiver<TapEvent>,
    commands: mpsc::Sender<Command>,
    done: mpsc::Sender<RecordedFile>,
    metrics: Arc<MediaMetrics>,
) {
    let mut writing: HashMap<ParticipantId, Writing> = HashMap::new();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot create the recordings dir");
    }
    info!(%room, "recording started");
    while let Some(event) = events.recv().await {
        match event {
            TapEvent::Publishing {
                participant,
                sub,
                audio,
                video,
            } => {
                if let Some(old) = writing.remove(&participant) {
                    finish(&room, old, &done, &metrics).await;
                }
                let started_unix_ms = unix_ms();
                let path = dir.join(format!("{room}-{participant}-{started_unix_ms}.webm"));
                match File::create(&path) {
                    Ok(file) => {
                        debug!(%room, participant, "recording a publisher");
                        metrics.recordings.inc();
                        writing.insert(
                            participant,
                            Writing {
                                recorder: Recorder::new(video, audio, "huiyan"),
                                file,
                                path,
                                sub,
                                buffer: Vec::new(),
                                started: Instant::now(),
                                started_unix_ms,
                                last_keyframe_request: None,
                                failed: false,
                            },
                        );
                    }
                    Err(e) => error_once(&path, &e),
                }
            }
            TapEvent::Packet {
                participant,
                kind,
                arrival,
                seq,
                timestamp,
                marker,
                payload,
            } => {
                let Some(w) = writing.get_mut(&participant) else {
                    continue;
                };
                let ms = arrival.saturating_duration_since(w.started).as_millis() as u64;
                let packet = RtpIn {
                    seq,
                    timestamp,
                    marker,
                    payload: &payload,
                };
                w.recorder.push(kind, ms, packet);
                w.buffer.extend(w.recorder.take_output());
                if w.buffer.len() >= WRITE_CHUNK {
                    w.write_out();
                }
                let due = w
                    .last_keyframe_request
                    .is_none_or(|at| at.elapsed() >= KEYFRAME_INTERVAL);
                if due && w.recorder.wants_keyframe() {
                    w.last_keyframe_request = Some(Instant::now());
                    let _ = commands.try_send(Command::TapKeyframe { participant });
                }
            }
            TapEvent::Gone { participant } => {
                if let Some(old) = writing.remove(&participant) {
                    finish(&room, old, &done, &metrics).await;
                }
            }
        }
    }
    for (_, old) in writing.drain() {
        finish(&room, old, &done, &metrics).await;
    }
    info!(%room, "recording stopped");
}

/// Writes the end of a file, patches its duration, flushes it and reports it (or removes it
/// when nothing playable was recorded).
async fn finish(
    room: &str,
    mut w: Writing,
    done: &mpsc::Sender<RecordedFile>,
    metrics: &MediaMetrics,
) {
    metrics.recordings.dec();
    let recorder = std::mem::replace(&mut w.recorder, Recorder::new(false, false, ""));
    let finished = recorder.finish();
    w.buffer.extend_from_slice(&finished.tail);
    w.write_out();
    let result = (|| -> std::io::Result<()> {
        if let Some((offset, bytes)) = finished.duration_patch {
            w.file.seek(SeekFrom::Start(offset))?;
            w.file.write_all(&bytes)?;
        }
        w.file.sync_all()
    })();
    if let Err(e) = &result {
        error_once(&w.path, e);
    }
    if w.failed || result.is_err() || finished.is_empty() {
        if finished.is_empty() {
            debug!(%room, "nothing playable was recorded for a publisher");
        }
        let _ = std::fs::remove_file(&w.path);
        return;
    }
    metrics.recorded_bytes.inc_by(finished.stats.bytes);
    let file = RecordedFile {
        room: room.to_owned(),
        sub: w.sub,
        path: w.path,
        started_unix_ms: w.started_unix_ms,
        ended_unix_ms: unix_ms(),
        duration_ms: finished.duration_ms,
        stats: finished.stats,
    };
    if done.send(file).await.is_err() {
        warn!(%room, "a recording finished but nobody takes it; it stays in the recordings dir");
    }
}

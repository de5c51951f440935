//! Recordings of mediation sessions: switching the SFU's recording of a case's rooms on and
//! off, storing each finished file with the case, and serving it to mediators.
//!
//! While a case's recording flag is on, the media engine writes one WebM file per publishing
//! participant of the case's main and side rooms under `<data_dir>/recordings/` (see
//! `huiyan_media::record`). A finished file is moved into the blob store
//! (`<data_dir>/blobs/<sha256>`) and a `mediation.recording` record names it in the case's
//! scope, so the record travels wherever the case does. The file itself stays on the node that
//! recorded it: TODO(#6) copy the blob to the bureau when the link allows.
//!
//! Recording needs every party's consent: the caller's came with the call, the invited party's
//! is given on the invitation page (`mediation.consent`). Inviting the other party stops a
//! running recording until they consented to it; without their consent the case is not
//! recorded (`no_recording_consent`). A party who refused is not left out of a recording of the
//! others: the session is simply not recorded.
//!
//! Every playback is audited (`recording.play`): a request for the file from its first byte
//! (a player's first request; the range requests that follow while it plays or seeks are not
//! audited again).

use std::collections::HashSet;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use huiyan_media::driver::RecordedFile;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::mediation::{audit_event, case_for, write};
use crate::api::problem::Problem;
use crate::auth::{ClientAddr, Mediator};
use crate::mediation::{self, Case, RecordingRecord};
use crate::node::Node;

/// Finished files waiting to be stored, per case being recorded.
const FILE_QUEUE: usize = 16;
/// The largest part of a file one response carries; a player asks for the rest.
const MAX_RANGE: u64 = 8 * 1024 * 1024;

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(list_recordings))
        .routes(routes!(play_recording))
}

/// The cases whose rooms this node records now.
#[derive(Debug, Default)]
pub struct Recordings {
    active: Mutex<HashSet<String>>,
}

impl Recordings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts or stops recording the case's rooms on this node (nothing if the session runs on
/// another site, or if it is already in that state).
pub async fn switch(node: &Arc<Node>, case: &Case, on: bool) -> Result<(), Problem> {
    if case.site != node.config.site {
        return Ok(());
    }
    let changed = if on {
        node.recordings.lock().insert(case.case.clone())
    } else {
        node.recordings.lock().remove(&case.case)
    };
    if !changed {
        return Ok(());
    }
    let (main, side) = case.media_rooms();
    let failed = |e| Problem::internal("cannot switch the recording", e);
    if on {
        let (files, received) = mpsc::channel(FILE_QUEUE);
        let dir = node.config.data_dir.join("recordings");
        for room in [&main, &side] {
            node.media
                .start_recording(room, dir.clone(), files.clone())
                .await
                .map_err(failed)?;
        }
        tokio::spawn(store_files(
            node.clone(),
            case.case.clone(),
            case.scope.clone(),
            received,
        ));
        tracing::info!(case = %case.case, "recording on");
    } else {
        for room in [&main, &side] {
            node.media.stop_recording(room).await.map_err(failed)?;
        }
        tracing::info!(case = %case.case, "recording off");
    }
    Ok(())
}

/// Stores each finished file of a case as a blob and records it, until the recording stops.
async fn store_files(
    node: Arc<Node>,
    case: String,
    scope: String,
    mut files: mpsc::Receiver<RecordedFile>,
) {
    while let Some(file) = files.recv().await {
        let n = node.clone();
        let path = file.path.clone();
        let stored = tokio::task::spawn_blocking(move || n.store.blob_put_file(&path)).await;
        let (sha256, size) = match stored {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                tracing::error!(case = %case, error = %e, "cannot store a recording");
                continue;
            }
            Err(e) => {
                tracing::error!(case = %case, error = %e, "cannot store a recording");
                continue;
            }
        };
        let role = file
            .sub
            .strip_prefix(&format!("{case}-"))
            .filter(|r| ["mediator", "applicant", "respondent"].contains(r))
            .unwrap_or("participant")
            .to_owned();
        let room = if file.room.ends_with("-side") {
            "side"
        } else {
            "main"
        };
        let record = RecordingRecord {
            case: case.clone(),
            sha256,
            size,
            duration_ms: file.duration_ms,
            role,
            room: room.to_owned(),
            site: node.config.site.clone(),
            started_ms: file.started_unix_ms,
            ended_ms: file.ended_unix_ms,
        };
        match write(&node, &scope, mediation::KIND_RECORDING, &record).await {
            Ok(()) => tracing::info!(
                case = %case,
                role = %record.role,
                bytes = size,
                duration_ms = record.duration_ms,
                "recording stored"
            ),
            Err(e) => tracing::error!(case = %case, error = ?e, "cannot record a recording"),
        }
    }
}

/// The recordings of a case, oldest first.
#[utoipa::path(get, path = "/api/v1/mediation/cases/{case}/recordings", tag = "mediation",
    params(("case" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The recordings", body = Vec<RecordingRecord>),
        (status = 403, description = "Not a mediator of the case's site"),
        (status = 404, description = "No such case here"),
    ))]
async fn list_recordings(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Path(id): Path<String>,
) -> Result<Json<Vec<RecordingRecord>>, Problem> {
    case_for(&node, &staff, &id)?;
    Ok(Json(node.views.mediation().recordings(&id).to_vec()))
}

/// One recording as a WebM file (HTTP range requests supported). Every playback is audited.
#[utoipa::path(get, path = "/api/v1/mediation/cases/{case}/recordings/{sha256}",
    tag = "mediation",
    params(
        ("case" = String, Path, description = "Case id"),
        ("sha256" = String, Path, description = "The recording's SHA-256, as listed"),
    ),
    responses(
        (status = 200, description = "The file", content_type = "video/webm"),
        (status = 206, description = "Part of the file", content_type = "video/webm"),
        (status = 403, description = "Not a mediator of the case's site"),
        (status = 404, description = "No such recording, or its file is not on this node"),
        (status = 416, description = "A range outside the file"),
    ))]
async fn play_recording(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    from: ClientAddr,
    Path((id, sha256)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    case_for(&node, &staff, &id)?;
    let record = node
        .views
        .mediation()
        .recordings(&id)
        .iter()
        .find(|r| r.sha256 == sha256)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no recording `{sha256}` in case `{id}`")))?;
    let not_here = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "recording_not_here",
            format!(
                "the file is kept at site `{}` and has not been copied here; play it there",
                record.site
            ),
        )
    };
    let path = node.store.blob_path(&sha256).ok_or_else(not_here)?;
    let mut file = tokio::fs::File::open(&path).await.map_err(|_| not_here())?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Problem::internal("cannot read the recording", e))?
        .len();

    // The range asked for, if any.
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| parse_range(v, size))
                .ok_or_else(|| {
                    Problem::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "bad_range",
                        format!(
                            "ask for one range of bytes within 0-{}",
                            size.saturating_sub(1)
                        ),
                    )
                })?,
        ),
    };
    let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
    if start == 0 {
        audit_event(&node, &staff.account.username, "recording.play", &id, from).await;
    }
    let end = if range.is_some() {
        end.min(start + MAX_RANGE - 1)
    } else {
        end
    };
    let len = if size == 0 { 0 } else { end + 1 - start };
    if range.is_none() && len > MAX_RANGE {
        // A whole large file in one go: stream it.
        let stream = futures::stream::unfold(file, |mut file| async move {
            let mut chunk = vec![0u8; 64 * 1024];
            match file.read(&mut chunk).await {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk)),
                        file,
                    ))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let response = (
            [
                (header::CONTENT_TYPE, "video/webm".to_owned()),
                (header::ACCEPT_RANGES, "bytes".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            axum::body::Body::from_stream(stream),
        );
        return Ok(response.into_response());
    }
    file.seek(SeekFrom::Start(start))
        .await
        .map_err(|e| Problem::internal("cannot read the recording", e))?;
    let mut body = vec![0u8; len as usize];
    file.read_exact(&mut body)
        .await
        .map_err(|e| Problem::internal("cannot read the recording", e))?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "video/webm".to_owned()),
            (header::ACCEPT_RANGES, "bytes".to_owned()),
        ],
        body,
    )
        .into_response();
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let content_range = format!("bytes {start}-{end}/{size}");
        if let Ok(value) = content_range.parse() {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` within a file of `size` bytes: the first and last
/// byte. Several ranges are not supported (browsers ask for one).
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_read_as_browsers_send_them() {
        assert_eq!(parse_range("bytes=0-", 1000), Some((0, 999)));
        assert_eq!(parse_range("bytes=100-199", 1000), Some((100, 199)));
        assert_eq!(parse_range("bytes=900-5000", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}

//! Calls: `POST /api/v1/media/token` issues join tokens, `GET /ws` carries the signaling of
//! one browser (JSON text frames, see `huiyan_media::signal`).
//!
//! The media engine itself (sockets, peer connections, SFU) lives in `huiyan-media`; this module
//! only bridges HTTP and WebSocket to its handle.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use huiyan_media::room::Role;
use huiyan_media::signal::{ErrorCode, KEEPALIVE_SECONDS, MAX_MESSAGE_BYTES, ServerMessage};
use huiyan_media::token::{Claims, unix_now};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::node::Node;

/// How long a token request waits for a remote room's home site to describe the room.
/// 8 s: a home that cannot be reached directly is asked through the hub after 3 s.
const LOOKUP_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);
/// Longest token lifetime a caller may ask for: 12 h, one working day of a duty lawyer.
const MAX_TTL_SECONDS: u64 = 12 * 3600;
/// Default token lifetime: 1 h, enough to queue for and hold a call.
const DEFAULT_TTL_SECONDS: u64 = 3600;

/// A request for a join token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Room id: one of this site's `[[rooms]]`, or `site/room` for a room of any site of the
    /// roster (calls across sites go through the media relay).
    room: String,
    /// Opaque id of the caller (account or device), shown to the room. Never a person's name.
    sub: String,
    /// `owner`, `speaker` or `viewer`.
    #[schema(value_type = String)]
    role: Role,
    /// Lifetime in seconds. Default 3600, at most 43200.
    ttl_seconds: Option<u64>,
}

/// A join token and where to use it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `{"type":"join","token":...}` on `/ws`.
    token: String,
    /// The room's global id, `site/room`.
    room: String,
    /// Expiry, seconds since the Unix epoch.
    expires: u64,
}

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(issue_token))
        .route("/ws", get(signaling))
}

/// Issue a token to join a room of this node.
// TODO(#4): gate on the caller's account and role once accounts exist (issue #6); for now any
// client of the node may ask for a token to any of its rooms, with any role (docs/media.md).
#[utoipa::path(post, path = "/api/v1/media/token", tag = "media",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A join token", body = TokenResponse),
        (status = 400, description = "Unknown room, empty sub, or ttl out of range"),
        (status = 503, description = "The room's home site cannot be reached now")))]
async fn issue_token(State(node): State<Arc<Node>>, Json(req): Json<TokenRequest>) -> Response {
    let bad =
        |msg: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": msg }))).into_response();
    // Room ids are global: `site/room`; a bare id is a room of this site.
    let (home, local) = match req.room.split_once('/') {
        Some((home, local)) => (home.to_owned(), local.to_owned()),
        None => (node.config.site.clone(), req.room.clone()),
    };
    let room = format!("{home}/{local}");
    if home == node.config.site {
        if !node.config.rooms.iter().any(|r| r.id == local) {
            return bad(format!(
                "no room `{local}` on this node; see the site config's [[rooms]]"
            ));
        }
    } else if node.roster.site(&home).is_none() {
        return bad(format!("no site `{home}` in the roster; use `site/room`"));
    } else {
        match node.media.resolve_room(&room, LOOKUP_WITHIN).await {
            Ok(Some(_)) => {}
            Ok(None) => return bad(format!("site `{home}` has no room `{local}`")),
            Err(e) => {
                let body = Json(json!({ "error": e.to_string() }));
                return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
            }
        }
    }
    if req.sub.is_empty() || req.sub.len() > 128 {
        return bad("`sub` must be 1 to 128 characters".into());
    }
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return bad(format!("`ttl_seconds` must be 1 to {MAX_TTL_SECONDS}"));
    }
    let expires = unix_now() + ttl;
    let token = node.media.issue_token(&Claims {
        room: room.clone(),
        sub: req.sub,
        role: req.role,
        exp: expires,
    });
    Json(TokenResponse {
        token,
        room,
        expires,
    })
    .into_response()
}

/// The signaling WebSocket of one browser.
async fn signaling(State(node): State<Arc<Node>>, ws: WebSocketUpgrade) -> Response {
    // Frames up to 4x the protocol limit are read and refused with `too_large`; beyond that
    // the WebSocket layer closes the socket (code 1009).
    ws.max_message_size(4 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve_socket(node, socket))
}

async fn serve_socket(node: Arc<Node>, mut socket: WebSocket) {
    let mut session = match node.media.open_session().await {
        Ok(session) => session,
        Err(e) => {
            let msg = ServerMessage::error(ErrorCode::Internal, e.to_string());
            let _ = socket.send(Message::Text(msg.to_json().into())).await;
            return;
        }
    };
    let period = std::time::Duration::from_secs(KEEPALIVE_SECONDS);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                let msg = ServerMessage::Keepalive.to_json();
                if socket.send(Message::Text(msg.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let msg = ServerMessage::error(
                            ErrorCode::BadMessage,
                            "binary frames are not signaling; send JSON text",
                        );
                        if socket.send(Message::Text(msg.to_json().into())).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                if let Err(refusal) = session.handle_text(text.as_str())
                    && socket.send(Message::Text(refusal.to_json().into())).await.is_err()
                {
                    break;
                }
            }
            event = session.events.recv() => {
                let Some(event) = event else { break };
                if socket.send(Message::Text(event.to_json().into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Start the media engine on the site's `[listen] rtc` port with the site's rooms, and the
/// relay between sites on `[listen] media` with the roster's keys and addresses; register the
/// metrics. Called once at start-up, inside the node's runtime.
pub async fn start(
    config: &crate::config::SiteConfig,
    roster: &huiyan_mesh::roster::Roster,
    key: &huiyan_mesh::identity::Keypair,
    metrics: &crate::metrics::Metrics,
) -> Result<huiyan_media::driver::MediaHandle, crate::error::Error> {
    use huiyan_media::driver::{MediaOptions, start};
    use huiyan_media::metrics::MediaMetrics;
    use huiyan_media::relay::net::{RelayOptions, RelayPeer};
    use huiyan_media::room::{RoomKind, RoomPolicy};

    let mut options = MediaOptions::new(config.listen.rtc);
    options.advertise = config.listen.rtc_advertise;
    for room in &config.rooms {
        // check-config has validated the kind against ROOM_KINDS, which match RoomKind.
        let Ok(kind) = serde_json::from_value::<RoomKind>(json!(room.kind)) else {
            continue;
        };
        let id = format!("{}/{}", config.site, room.id);
        options
            .rooms
            .push(RoomPolicy::new(id, kind, config.site.clone()));
    }
    let hub = roster
        .sites
        .iter()
        .find(|s| s.role == huiyan_mesh::roster::Role::Hub)
        .map(|s| s.id.clone());
    let peers = roster
        .sites
        .iter()
        .filter(|s| s.id != config.site)
        .filter_map(|s| {
            Some(RelayPeer {
                site: s.id.clone(),
                peer_id: s.peer_id?,
                addr: s.media.to_string(),
            })
        })
        .collect();
    options.relay = Some(RelayOptions {
        listen: config.listen.media,
        key: key.clone(),
        site: config.site.clone(),
        hub,
        uplink_kbps: config.uplink_kbps,
        peers,
    });
    let media_metrics = MediaMetrics::new();
    media_metrics.register(
        &mut metrics
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    let (handle, _task) = start(options, media_metrics).await.map_err(|e| {
        let (what, addr) = match &e {
            huiyan_media::Error::Io { addr, .. } if *addr == config.listen.media => {
                ("media", *addr)
            }
            huiyan_media::Error::Relay { .. } => ("media", config.listen.media),
            _ => ("rtc", config.listen.rtc),
        };
        crate::error::Error::Bind {
            what,
            addr,
            reason: e.to_string(),
        }
    })?;
    Ok(handle)
}

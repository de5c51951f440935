//! Mediation: the public side (room info, signboard QR codes, joining a queue, waiting, taking
//! part in the session, confirming the agreement) and the mediator's side (queue, presence,
//! cases, invitations, side rooms, recording flag, agreements).
//!
//! Public callers have no account: joining a queue returns a call token (a node session whose
//! subject is `caller:<call>:<role>`) bound to that call; it is all they can use. Mediators act
//! on the rooms of the units they hold the `mediator` role on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use huiyan_media::room::{Role as MediaRole, RoomKind, RoomPolicy};
use huiyan_media::token::{Claims, unix_now};
use huiyan_mesh::replica::wall_ms;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::Role;
use crate::agreement::{self, Agreement, AgreementText};
use crate::api::new_id;
use crate::api::problem::{Body, Problem};
use crate::audit::{self, Event};
use crate::auth::{ClientAddr, Mediator, Staff, caller_subject};
use crate::mediation::{
    self, AgreementDraft, Call, CallForm, CallRecord, CallStateRecord, CallStatus, Case,
    CaseStatus, Confirmation, Consent, ConsentRecord, Lang, Party, PartyRole, Place, Step,
};
use crate::node::Node;
use crate::rooms::RoomInfo;

/// A mediator counts as present this long after their console last said so.
const PRESENCE_FRESH: Duration = Duration::from_secs(60);
/// Lifetime of the media tokens handed out for a session: long enough for a long session;
/// the apps ask for a new one when they rejoin.
const MEDIA_TOKEN_SECONDS: u64 = 4 * 3600;
/// Calls one address may place per hour (a flood of fake calls would hide the real ones).
const CALLS_PER_HOUR: u32 = 10;

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(list_rooms))
        .routes(routes!(room_info))
        .routes(routes!(room_qr))
        .routes(routes!(place_call))
        .routes(routes!(call_status, leave_call))
        .routes(routes!(confirm_agreement))
        .routes(routes!(give_consent))
        .routes(routes!(get_queue))
        .routes(routes!(set_presence))
        .routes(routes!(take_call))
        .routes(routes!(list_cases))
        .routes(routes!(get_case, update_case))
        .routes(routes!(invite))
        .routes(routes!(join_session))
        .routes(routes!(draft_agreement))
        .routes(routes!(agreement_pdf))
        .routes(routes!(end_session))
}

// ----- Node-local state -------------------------------------------------------------------

/// Which mediators are at their console now, per room of this node, and calls placed per
/// address (rate limit). Node-local: nothing here is a record.
#[derive(Debug, Default)]
pub struct Desk {
    present: Mutex<HashMap<String, HashMap<String, Instant>>>,
    calls_from: Mutex<HashMap<std::net::IpAddr, (Instant, u32)>>,
}

impl Desk {
    /// Mediators present in `room` now.
    pub fn mediators(&self, room: &str) -> usize {
        let present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        present.get(room).map_or(0, |m| {
            m.values()
                .filter(|seen| seen.elapsed() < PRESENCE_FRESH)
                .count()
        })
    }

    fn mark(&self, room: &str, username: &str, available: bool) {
        let mut present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        let room = present.entry(room.to_owned()).or_default();
        if available {
            room.insert(username.to_owned(), Instant::now());
        } else {
            room.remove(username);
        }
    }

    /// Rooms with a presence entry (staffed or not).
    pub fn rooms(&self) -> Vec<String> {
        let present = self.present.lock().unwrap_or_else(|p| p.into_inner());
        present.keys().cloned().collect()
    }

    /// Counts a call (or question) from `ip`; false past the hourly limit.
    pub(crate) fn may_place_call(&self, ip: std::net::IpAddr) -> bool {
        let mut map = self.calls_from.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (since, _)| since.elapsed() < Duration::from_secs(3600));
        }
        let slot = map.entry(ip).or_insert((Instant::now(), 0));
        if slot.0.elapsed() > Duration::from_secs(3600) {
            *slot = (Instant::now(), 0);
        }
        slot.1 += 1;
        slot.1 <= CALLS_PER_HOUR
    }
}

/// Writes a presence record for every room of this node whose staffing changed. Run every few
/// seconds by the node.
pub async fn publish_presence(node: &Node) {
    let Some(mesh) = node.mesh.get() else {
        return;
    };
    let mut rooms = node.desk.rooms();
    rooms.retain(|r| node.config.rooms.iter().any(|own| &own.id == r));
    for room in rooms {
        let staffed = node.desk.mediators(&room) > 0;
        if node.views.mediation().staffed(&room) == staffed {
            continue;
        }
        let payload = serde_json::to_value(mediation::Presence {
            room: room.clone(),
            staffed,
        })
        .unwrap_or_default();
        let appended = mesh
            .append_async(
                mediation::PRESENCE_SCOPE.into(),
                mediation::KIND_PRESENCE.into(),
                payload,
            )
            .await;
        match appended {
            Ok(_) => tracing::info!(%room, staffed, "room staffing changed"),
            Err(e) => tracing::error!(error = %e, "cannot record room staffing"),
        }
    }
    if let Some(mesh) = node.mesh.get() {
        let n = mesh.clone();
        let views = &node.views;
        let _ = tokio::task::block_in_place(|| views.catch_up(&n));
    }
}

// ----- Helpers ------------------------------------------------------------------------------

fn mesh(node: &Node) -> Result<huiyan_mesh::replica::Mesh, Problem> {
    node.mesh.get().cloned().ok_or_else(Problem::starting)
}

/// Appends a record and waits until the views hold it.
pub(crate) async fn write(
    node: &Arc<Node>,
    scope: &str,
    kind: &str,
    payload: impl Serialize,
) -> Result<(), Problem> {
    let mesh = mesh(node)?;
    let payload = serde_json::to_value(payload).unwrap_or_default();
    mesh.append_async(scope.into(), kind.into(), payload)
        .await
        .map_err(|e| Problem::internal("cannot store the record", e))?;
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.views.catch_up(&mesh))
        .await
        .map_err(|e| Problem::internal("cannot update the views", e))?
        .map_err(|e| Problem::internal("cannot update the views", e))?;
    Ok(())
}

pub(crate) async fn audit_event(
    node: &Node,
    who: &str,
    action: &str,
    target: &str,
    from: ClientAddr,
) {
    if let Some(mesh) = node.mesh.get() {
        let event = Event {
            who: who.to_owned(),
            action: action.to_owned(),
            target: Some(target.to_owned()),
            from: from.0,
        };
        if let Err(e) = audit::record(mesh, &node.config.site, event).await {
            tracing::error!(error = %e, "cannot write an audit record");
        }
    }
}

/// The room by id, from this node's config or the directory of every site's rooms.
fn room(node: &Node, id: &str) -> Result<RoomInfo, Problem> {
    let own = crate::rooms::own_rooms(&node.config)
        .into_iter()
        .find(|r| r.id == id);
    own.or_else(|| node.views.rooms().room(id).cloned())
        .filter(|r| r.kind == "mediation")
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no mediation room `{id}`; scan the signboard again or ask the staff"
            ))
        })
}

/// The bureau's mediation room, offered when a room is closed or out of reach.
fn fallback_room(node: &Node, not: &str) -> Option<RoomInfo> {
    let bureau = node
        .roster
        .sites
        .iter()
        .find(|s| s.role == huiyan_mesh::roster::Role::Bureau)?;
    let own = crate::rooms::own_rooms(&node.config);
    let dir = node.views.rooms();
    let candidates: Vec<RoomInfo> = if bureau.id == node.config.site {
        own
    } else {
        dir.of_site(&bureau.id).to_vec()
    };
    candidates
        .into_iter()
        .find(|r| r.kind == "mediation" && r.id != not)
}

/// Whether the room's node can be reached from here and has a mediator at work.
fn availability(node: &Node, room: &RoomInfo) -> (bool, bool) {
    if room.site == node.config.site {
        return (true, node.desk.mediators(&room.id) > 0);
    }
    let reachable = node.mesh.get().is_some_and(|m| m.is_connected(&room.site));
    (
        reachable,
        reachable && node.views.mediation().staffed(&room.id),
    )
}

fn holds_everything(node: &Node) -> bool {
    node.me.scopes.iter().any(|s| s == "*")
}

/// A token to join `room` on this node's `/ws`, valid for four hours.
pub(crate) fn media_token(node: &Node, room: &str, sub: &str, role: MediaRole) -> String {
    node.media.issue_token(&Claims {
        room: room.to_owned(),
        sub: sub.to_owned(),
        role,
        exp: unix_now() + MEDIA_TOKEN_SECONDS,
    })
}

/// Defines the case's two media rooms on this node (again after a restart; defining is
/// idempotent).
async fn define_case_rooms(node: &Node, case: &Case) -> Result<(), Problem> {
    let (main, side) = case.media_rooms();
    for id in [main, side] {
        let policy = RoomPolicy::new(id, RoomKind::Mediation, case.mediator.clone());
        node.media
            .define_room(policy)
            .await
            .map_err(|e| Problem::internal("cannot open the session room", e))?;
    }
    Ok(())
}

// ----- Public: rooms ------------------------------------------------------------------------

/// A room as the public app sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicRoom {
    room: RoomInfo,
    /// The room's node can be reached from this node.
    reachable: bool,
    /// A mediator is at work in the room.
    staffed: bool,
    /// Callers waiting now.
    waiting: usize,
    /// Expected wait for a caller joining now, in seconds.
    expected_wait_s: u64,
    /// Why a call cannot go to this room now (`unreachable`, `unstaffed`), if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_reason: Option<&'static str>,
    /// The room offered instead (the bureau's mediation centre), when this one is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    alternative: Option<RoomInfo>,
}

/// The rooms of this site and of every other site this node knows of.
#[utoipa::path(get, path = "/api/v1/rooms", tag = "mediation",
    responses((status = 200, description = "Rooms, this site's first", body = Vec<RoomInfo>)))]
async fn list_rooms(State(node): State<Arc<Node>>) -> Json<Vec<RoomInfo>> {
    let mut rooms = crate::rooms::own_rooms(&node.config);
    for site in &node.roster.sites {
        if site.id != node.config.site {
            rooms.extend(node.views.rooms().of_site(&site.id).iter().cloned());
        }
    }
    Json(rooms)
}

/// A mediation room: names, whether it is open, the queue.
#[utoipa::path(get, path = "/api/v1/rooms/{id}", tag = "mediation",
    params(("id" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The room", body = PublicRoom),
        (status = 404, description = "No such mediation room"),
    ))]
async fn room_info(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<PublicRoom>, Problem> {
    let room = room(&node, &id)?;
    let (reachable, staffed) = availability(&node, &room);
    let mediators = if room.site == node.config.site {
        node.desk.mediators(&room.id)
    } else {
        1
    };
    let view = node.views.mediation();
    let waiting = view.queue(&room.id).len();
    let expected_wait_s = view.expected_wait(waiting + 1, mediators);
    drop(view);
    let closed_reason = match (reachable, staffed) {
        (false, _) => Some("unreachable"),
        (true, false) => Some("unstaffed"),
        _ => None,
    };
    let alternative = closed_reason.and_then(|_| fallback_room(&node, &room.id));
    Ok(Json(PublicRoom {
        room,
        reachable,
        staffed,
        waiting,
        expected_wait_s,
        closed_reason,
        alternative,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QrQuery {
    /// `svg` (default, a printable signboard with the room's names) or `png` (the code only).
    format: Option<String>,
}

/// The room's public entry URL: the hub's address for phones on mobile data.
fn entry_url(node: &Node, room: &str) -> String {
    let hub = node
        .roster
        .sites
        .iter()
        .find(|s| s.role == huiyan_mesh::roster::Role::Hub)
        .unwrap_or(&node.me);
    let local = hub.web.host == "127.0.0.1" || hub.web.host == "localhost";
    let scheme = if local { "http" } else { "https" };
    format!("{scheme}://{}/m/{room}", hub.web)
}

/// The signboard QR code of a room, pointing at its public entry URL.
#[utoipa::path(get, path = "/api/v1/rooms/{id}/qr", tag = "mediation",
    params(("id" = String, Path, description = "Room id"), QrQuery),
    responses(
        (status = 200, description = "SVG signboard or PNG code"),
        (status = 400, description = "Unknown format"),
        (status = 404, description = "No such mediation room"),
    ))]
async fn room_qr(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    Query(q): Query<QrQuery>,
) -> Result<Response, Problem> {
    let room = room(&node, &id)?;
    let url = entry_url(&node, &room.id);
    match q.format.as_deref().unwrap_or("svg") {
        "svg" => {
            let svg = crate::qr::signboard_svg(&url, &room)
                .map_err(|e| Problem::internal("cannot make the QR code", e))?;
            Ok((
                [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
                svg,
            )
                .into_response())
        }
        "png" => {
            let png = crate::qr::png(&url)
                .map_err(|e| Problem::internal("cannot make the QR code", e))?;
            Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
        }
        other => Err(Problem::bad_request(
            "bad_format",
            format!("format `{other}` is not offered; use svg or png"),
        )),
    }
}

// ----- Public: calls ------------------------------------------------------------------------

/// A call to a mediation room.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCall {
    room: String,
    #[serde(default)]
    lang: Lang,
    form: CallForm,
    consent: Consent,
    /// Ask to be called back by phone instead of waiting on the line.
    #[serde(default)]
    callback: bool,
    /// The room the caller first chose, when this call goes to the alternative.
    #[serde(default)]
    rerouted_from: Option<String>,
}

/// A call placed: keep the token, it is the caller's only key to the call.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlacedCall {
    call: String,
    /// Send as `Authorization: Bearer` on the call's routes.
    token: String,
    status: CallStatus,
    position: Option<usize>,
    expected_wait_s: u64,
}

fn invalid_form(problems: Vec<(&'static str, String)>) -> Problem {
    let code = problems.first().map_or("invalid_form", |(c, _)| c);
    let text: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
    Problem::bad_request(code, text.join("; "))
}

/// Joins a room's queue (or asks for a callback) with the form and the caller's consent.
#[utoipa::path(post, path = "/api/v1/mediation/calls", tag = "mediation", request_body = NewCall,
    responses(
        (status = 201, description = "Queued", body = PlacedCall),
        (status = 400, description = "Missing consent or an invalid form field (the code says \
            which)"),
        (status = 404, description = "No such mediation room"),
        (status = 409, description = "The room is closed; the answer names the alternative"),
        (status = 429, description = "Too many calls from this address"),
    ))]
async fn place_call(
    State(node): State<Arc<Node>>,
    from: ClientAddr,
    Body(req): Body<NewCall>,
) -> Result<Response, Problem> {
    let room = room(&node, &req.room)?;
    if !req.consent.online {
        return Err(Problem::bad_request(
            "consent_required",
            "the caller must consent to an online mediation session",
        ));
    }
    let problems = req.form.problems();
    if !problems.is_empty() {
        return Err(invalid_form(problems));
    }
    if req.callback && req.form.phone.is_none() {
        return Err(Problem::bad_request(
            "phone_required",
            "a callback needs a phone number",
        ));
    }
    // A callback request is taken whatever the room's state: it reaches the room by sync.
    let (reachable, staffed) = availability(&node, &room);
    let open = reachable && staffed;
    if !req.callback && !open {
        let reason = if reachable {
            "unstaffed"
        } else {
            "unreachable"
        };
        let alt = fallback_room(&node, &room.id).map_or_else(String::new, |a| a.id);
        return Err(Problem::new(
            StatusCode::CONFLICT,
            if reachable {
                "room_unstaffed"
            } else {
                "room_unreachable"
            },
            format!(
                "room `{}` cannot take calls now ({reason}); call `{alt}` instead, or ask for \
                 a callback",
                room.id
            ),
        ));
    }
    let ip = from.0.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !node.desk.may_place_call(ip) {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many calls from this address; try again in an hour",
        ));
    }

    let call = new_id();
    let scope = mediation::call_scope(holds_everything(&node), &node.config.site, &room.site);
    let record = CallRecord {
        call: call.clone(),
        room: room.id.clone(),
        room_site: room.site.clone(),
        entry_site: node.config.site.clone(),
        lang: req.lang,
        form: req.form,
        consent: req.consent,
        callback: req.callback,
        rerouted_from: req.rerouted_from,
    };
    write(&node, &scope, mediation::KIND_CALL, &record).await?;
    let (token, _) = node
        .sessions
        .create(&format!("caller:{call}:applicant"))
        .map_err(|e| Problem::internal("cannot store the call token", e))?;
    let view = node.views.mediation();
    let placed = view.call(&call);
    let position = placed.and_then(|c| view.position(c));
    let mediators = node.desk.mediators(&room.id).max(1);
    let body = PlacedCall {
        call,
        token,
        status: placed.map_or(CallStatus::Waiting, |c| c.status),
        position,
        expected_wait_s: position.map_or(0, |p| view.expected_wait(p, mediators)),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A public participant: the caller or an invited party, by their call token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub call: String,
    pub role: PartyRole,
}

impl FromRequestParts<Arc<Node>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Caller, Problem> {
        let refused = || {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "bad_call_token",
                "this call's token is missing, expired or not for this call; place the call \
                 again",
            )
        };
        let subject = caller_subject(parts, node, "caller:").ok_or_else(refused)?;
        let (call, role) = subject.split_once(':').ok_or_else(refused)?;
        let role = match role {
            "applicant" => PartyRole::Applicant,
            "respondent" => PartyRole::Respondent,
            _ => return Err(refused()),
        };
        Ok(Caller {
            call: call.to_owned(),
            role,
        })
    }
}

fn own_call(caller: &Caller, id: &str) -> Result<(), Problem> {
    if caller.call == id {
        Ok(())
    } else {
        Err(Problem::forbidden("this token is for another call"))
    }
}

/// The session part of a call's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    case: String,
    number: String,
    status: CaseStatus,
    /// The session is being recorded.
    recording: bool,
    /// Where this party is now.
    place: Place,
    /// Join the media room with this token (on this node's `/ws`).
    media_token: String,
    media_room: String,
}

/// The agreement as a party sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgreementView {
    version: u32,
    terms: Vec<String>,
    /// The whole text as the PDF prints it (Chinese; English for callers who chose English
    /// or Korean, with a note that the Chinese text prevails).
    #[schema(value_type = Object)]
    document: Option<AgreementText>,
    /// Roles that have confirmed this version.
    confirmed: Vec<PartyRole>,
    /// All parties have confirmed: the signed agreement is kept with the case.
    complete: bool,
}

/// A call as its caller sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    call: String,
    room: String,
    /// This participant's role.
    role: PartyRole,
    status: CallStatus,
    position: Option<usize>,
    expected_wait_s: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agreement: Option<AgreementView>,
}

fn agreement_view(
    node: &Node,
    view: &mediation::Mediation,
    case: &Case,
    lang: agreement::Lang,
) -> Option<AgreementView> {
    let draft = view.draft(&case.case)?;
    let confirmations: Vec<Confirmation> = view
        .confirmations(&case.case)
        .into_iter()
        .cloned()
        .collect();
    let document = agreement_of(node, case, draft, &confirmations, false)
        .ok()
        .map(|a| agreement::text(&a, lang));
    let confirmed: Vec<PartyRole> = view
        .confirmations(&case.case)
        .iter()
        .map(|c| c.role)
        .collect();
    // An agreement binds both sides: it is complete when the applicant and the respondent have
    // confirmed the same version.
    let complete = [PartyRole::Applicant, PartyRole::Respondent]
        .iter()
        .all(|r| confirmed.contains(r));
    Some(AgreementView {
        version: draft.version,
        terms: draft.terms.clone(),
        document,
        confirmed,
        complete,
    })
}

/// Where the call stands: position and expected wait, then the session and the agreement.
#[utoipa::path(get, path = "/api/v1/mediation/calls/{call}", tag = "mediation",
    params(("call" = String, Path, description = "Call id")),
    responses(
        (status = 200, description = "The call", body = CallView),
        (status = 401, description = "No valid call token"),
        (status = 403, description = "The token is for another call"),
    ))]
async fn call_status(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CallView>, Problem> {
    own_call(&caller, &id)?;
    let (call, case) = {
        let view = node.views.mediation();
        let call: Call = view
            .call(&id)
            .cloned()
            .ok_or_else(|| Problem::not_found("the call is not known here yet; retry"))?;
        let case = call.case.as_deref().and_then(|c| view.case(c)).cloned();
        (call, case)
    };
    // A party joins the session once they consented to it online (the invited party on the
    // invitation page, after the call was placed).
    let consented = node
        .views
        .mediation()
        .consent(&id, caller.role)
        .is_some_and(|c| c.online);
    let mut session = None;
    if let Some(case) = &case
        && call.status == CallStatus::Taken
        && case.site == node.config.site
        && consented
    {
        define_case_rooms(&node, case).await?;
        let place = case.party(caller.role).map_or(Place::Main, |p| p.place);
        let (main, side) = case.media_rooms();
        let media_room = if place == Place::Side { side } else { main };
        let sub = format!("{}-{}", case.case, role_name(caller.role));
        session = Some(SessionView {
            case: case.case.clone(),
            number: case.number.clone(),
            status: case.status,
            recording: case.recording,
            place,
            media_token: media_token(&node, &media_room, &sub, MediaRole::Speaker),
            media_room,
        });
    }
    // TODO(#5): a session on another site's node (a call entered through the hub) is joined
    // through the media relay; until then the caller's session is offered only on its node.
    let view = node.views.mediation();
    let position = view.position(&call);
    let mediators = node.desk.mediators(&call.record.room).max(1);
    Ok(Json(CallView {
        call: id,
        room: call.record.room.clone(),
        role: caller.role,
        status: call.status,
        position,
        expected_wait_s: position.map_or(0, |p| view.expected_wait(p, mediators)),
        session,
        agreement: case.as_ref().and_then(|c| {
            let lang = match call.record.lang {
                Lang::Zh => agreement::Lang::Zh,
                Lang::En | Lang::Ko => agreement::Lang::En,
            };
            agreement_view(&node, &view, c, lang)
        }),
    }))
}

fn role_name(role: PartyRole) -> &'static str {
    match role {
        PartyRole::Applicant => "applicant",
        PartyRole::Respondent => "respondent",
    }
}

/// Leaves the queue (or ends one's part in the call).
#[utoipa::path(delete, path = "/api/v1/mediation/calls/{call}", tag = "mediation",
    params(("call" = String, Path, description = "Call id")),
    responses(
        (status = 204, description = "Left"),
        (status = 401, description = "No valid call token"),
    ))]
async fn leave_call(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    own_call(&caller, &id)?;
    let scope = node.views.mediation().call(&id).map(|c| c.scope.clone());
    let scope = scope.ok_or_else(|| Problem::not_found("no such call"))?;
    let waiting = node
        .views
        .mediation()
        .call(&id)
        .is_some_and(|c| matches!(c.status, CallStatus::Waiting | CallStatus::Callback));
    if waiting && caller.role == PartyRole::Applicant {
        let state = CallStateRecord {
            call: id,
            status: CallStatus::Left,
            case: None,
            by: None,
        };
        write(&node, &scope, mediation::KIND_CALL_STATE, &state).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A party's confirmation of the agreement.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// The draft version shown to the party.
    version: u32,
    /// The party's full name, as typed.
    name: String,
    /// The drawn signature: a PNG, base64 (a `data:image/png;base64,` prefix is accepted).
    signature_png: String,
}

/// Confirms the agreement shown: name and drawn signature.
#[utoipa::path(post, path = "/api/v1/mediation/calls/{call}/confirm", tag = "mediation",
    params(("call" = String, Path, description = "Call id")),
    request_body = Confirm,
    responses(
        (status = 204, description = "Confirmed"),
        (status = 400, description = "No name, or not a PNG signature"),
        (status = 409, description = "The agreement changed since it was shown"),
    ))]
async fn confirm_agreement(
    State(node): State<Arc<Node>>,
    caller: Caller,
    from: ClientAddr,
    Path(id): Path<String>,
    Body(req): Body<Confirm>,
) -> Result<StatusCode, Problem> {
    own_call(&caller, &id)?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > mediation::MAX_NAME {
        return Err(Problem::bad_request(
            "name_missing",
            "type your full name to confirm",
        ));
    }
    agreement::check_text("your name", name)
        .map_err(|e| Problem::bad_request("name_unprintable", e.to_string()))?;
    let b64 = req
        .signature_png
        .strip_prefix("data:image/png;base64,")
        .unwrap_or(&req.signature_png);
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| Problem::bad_request("signature_invalid", "the signature is not base64"))?;
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") || png.len() > mediation::MAX_SIGNATURE {
        return Err(Problem::bad_request(
            "signature_invalid",
            format!(
                "the signature must be a PNG of at most {} KB; draw it again",
                mediation::MAX_SIGNATURE / 1024
            ),
        ));
    }
    let (case, scope) = {
        let view = node.views.mediation();
        let call = view
            .call(&id)
            .ok_or_else(|| Problem::not_found("no such call"))?;
        let case = call
            .case
            .as_deref()
            .and_then(|c| view.case(c))
            .cloned()
            .ok_or_else(|| Problem::not_found("the call has no case yet"))?;
        let current = view.draft(&case.case).map(|d| d.version);
        if current != Some(req.version) {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "agreement_changed",
                "the agreement changed since it was shown; read it again",
            ));
        }
        (case, call.scope.clone())
    };
    let confirmation = Confirmation {
        case: case.case.clone(),
        version: req.version,
        role: caller.role,
        name: name.to_owned(),
        signature_png: base64::engine::general_purpose::STANDARD.encode(&png),
        signed_ms: wall_ms(),
    };
    // The confirmation must print: the name in the agreement font, the signature a real one.
    {
        let view = node.views.mediation();
        let draft = view
            .draft(&case.case)
            .cloned()
            .ok_or_else(|| Problem::not_found("no agreement to confirm"))?;
        drop(view);
        agreement_of(
            &node,
            &case,
            &draft,
            std::slice::from_ref(&confirmation),
            true,
        )?;
    }
    write(&node, &scope, mediation::KIND_CONFIRM, &confirmation).await?;
    audit_event(
        &node,
        &format!("caller:{id}"),
        "agreement.confirm",
        &case.case,
        from,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The invited party's consent, given on the invitation page: to the online session (required
/// to join it) and to its recording (the mediator may record only with it). Asked again, the
/// newest answer counts; withdrawing the consent to recording stops a running recording.
#[utoipa::path(post, path = "/api/v1/mediation/calls/{call}/consent", tag = "mediation",
    params(("call" = String, Path, description = "Call id")),
    request_body = Consent,
    responses(
        (status = 204, description = "Kept"),
        (status = 400, description = "No consent to the online session"),
        (status = 409, description = "The caller consented with the call already"),
    ))]
async fn give_consent(
    State(node): State<Arc<Node>>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<Consent>,
) -> Result<StatusCode, Problem> {
    own_call(&caller, &id)?;
    if caller.role != PartyRole::Respondent {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "consent_given",
            "the caller's consent came with the call; place a new call to change it",
        ));
    }
    if !req.online {
        return Err(Problem::bad_request(
            "consent_required",
            "the invited party must consent to an online mediation session to join it",
        ));
    }
    let (scope, case) = {
        let view = node.views.mediation();
        let call = view
            .call(&id)
            .ok_or_else(|| Problem::not_found("the call is not known here yet; retry"))?;
        let case = call.case.as_deref().and_then(|c| view.case(c)).cloned();
        (call.scope.clone(), case)
    };
    let record = ConsentRecord {
        call: id,
        role: caller.role,
        consent: req,
    };
    write(&node, &scope, mediation::KIND_CONSENT, &record).await?;
    // Consent withdrawn while recording: the recording stops.
    if let Some(mut case) = case.filter(|c| c.recording && !req.recording) {
        case.recording = false;
        write(&node, &case.scope, mediation::KIND_CASE, &case).await?;
        crate::api::recording::switch(&node, &case, false).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

// ----- Staff: the mediator's console --------------------------------------------------------

/// The room must be of this node and the mediator must hold the role on its site.
fn mediator_of(node: &Node, staff: &Staff, room_id: &str) -> Result<RoomInfo, Problem> {
    let room = room(node, room_id)?;
    if room.site != node.config.site {
        return Err(Problem::bad_request(
            "other_site",
            format!(
                "room `{room_id}` is run by the node of site `{}`; use that site's console",
                room.site
            ),
        ));
    }
    staff.require(node, Role::Mediator, &room.site)?;
    Ok(room)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RoomQuery {
    /// A mediation room of this node.
    room: String,
}

/// A waiting call as the queue shows it: no names or phone numbers until it is taken.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    call: String,
    waited_s: u64,
    lang: Lang,
    amount_cny: Option<f64>,
    /// The room the caller first chose, when it was closed and the caller came here.
    rerouted_from: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    room: RoomInfo,
    waiting: Vec<QueueItem>,
    callbacks: Vec<QueueItem>,
    /// Mediators at their console in this room now.
    mediators: usize,
}

fn queue_item(c: &Call) -> QueueItem {
    QueueItem {
        call: c.record.call.clone(),
        waited_s: wall_ms().saturating_sub(c.created_ms) / 1000,
        lang: c.record.lang,
        amount_cny: c.record.form.amount_cny,
        rerouted_from: c.record.rerouted_from.clone(),
    }
}

/// The queue of a room.
#[utoipa::path(get, path = "/api/v1/mediation/queue", tag = "mediation", params(RoomQuery),
    responses(
        (status = 200, description = "Waiting calls, first come first", body = QueueView),
        (status = 403, description = "Not a mediator of the room"),
    ))]
async fn get_queue(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Query(q): Query<RoomQuery>,
) -> Result<Json<QueueView>, Problem> {
    let room = mediator_of(&node, &staff, &q.room)?;
    let view = node.views.mediation();
    Ok(Json(QueueView {
        waiting: view.queue(&room.id).into_iter().map(queue_item).collect(),
        callbacks: view
            .callbacks(&room.id)
            .into_iter()
            .map(queue_item)
            .collect(),
        mediators: node.desk.mediators(&room.id),
        room,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceUpdate {
    room: String,
    /// True while the mediator's console is open and taking calls; send every 20 s.
    available: bool,
}

/// The console says the mediator is (or is no longer) taking calls in a room.
#[utoipa::path(post, path = "/api/v1/mediation/presence", tag = "mediation",
    request_body = PresenceUpdate,
    responses(
        (status = 204, description = "Noted"),
        (status = 403, description = "Not a mediator of the room"),
    ))]
async fn set_presence(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Body(req): Body<PresenceUpdate>,
) -> Result<StatusCode, Problem> {
    let room = mediator_of(&node, &staff, &req.room)?;
    node.desk
        .mark(&room.id, &staff.account.username, req.available);
    publish_presence(&node).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A case as the mediator sees it, with the caller's form.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseView {
    case: Case,
    #[serde(skip_serializing_if = "Option::is_none")]
    form: Option<CallForm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agreement: Option<AgreementView>,
}

fn case_view(node: &Node, case: Case) -> CaseView {
    let view = node.views.mediation();
    let form = case
        .call
        .as_deref()
        .and_then(|c| view.call(c))
        .map(|c| c.record.form.clone());
    let agreement = agreement_view(node, &view, &case, agreement::Lang::Zh);
    CaseView {
        case,
        form,
        agreement,
    }
}

/// Takes the call: opens its case and its session rooms.
#[utoipa::path(post, path = "/api/v1/mediation/calls/{call}/take", tag = "mediation",
    params(("call" = String, Path, description = "Call id")),
    responses(
        (status = 201, description = "The case of the call", body = CaseView),
        (status = 403, description = "Not a mediator of the call's room"),
        (status = 409, description = "The call is no longer waiting"),
    ))]
async fn take_call(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    from: ClientAddr,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let call = node
        .views
        .mediation()
        .call(&id)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no call `{id}`")))?;
    mediator_of(&node, &staff, &call.record.room)?;
    if !matches!(call.status, CallStatus::Waiting | CallStatus::Callback) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "call_not_waiting",
            "this call was taken or left already; refresh the queue",
        ));
    }
    let n = node
        .store
        .bump_counter(&format!("cases/{}", mediation::today()))
        .map_err(|e| Problem::internal("cannot number the case", e))?;
    let case = Case {
        case: new_id(),
        number: format!("{}-{}-{n:03}", node.config.site, mediation::today()),
        call: Some(id.clone()),
        room: call.record.room.clone(),
        site: node.config.site.clone(),
        scope: call.scope.clone(),
        mediator: staff.account.username.clone(),
        parties: vec![Party {
            role: PartyRole::Applicant,
            name: call.record.form.name.clone().unwrap_or_default(),
            phone: call.record.form.phone.clone(),
            place: Place::Main,
        }],
        category: String::new(),
        claim: call.record.form.what_happened.clone(),
        amount_cny: call.record.form.amount_cny,
        status: CaseStatus::InMediation,
        steps: vec![Step {
            at_ms: wall_ms(),
            by: staff.account.username.clone(),
            text: "call taken".into(),
        }],
        outcome: String::new(),
        recording: false,
        opened_ms: wall_ms(),
    };
    // Audited before it is read: the mediator now sees the caller's details.
    audit_event(
        &node,
        &staff.account.username,
        "case.open",
        &case.case,
        from,
    )
    .await;
    write(&node, &call.scope, mediation::KIND_CASE, &case).await?;
    let state = CallStateRecord {
        call: id,
        status: CallStatus::Taken,
        case: Some(case.case.clone()),
        by: Some(staff.account.username.clone()),
    };
    write(&node, &call.scope, mediation::KIND_CALL_STATE, &state).await?;
    define_case_rooms(&node, &case).await?;
    Ok((StatusCode::CREATED, Json(case_view(&node, case))).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CasesQuery {
    /// Only the cases of this room.
    room: Option<String>,
}

/// A case in a list: no personal data.
#[derive(Debug, Serialize, ToSchema)]
pub struct CaseSummary {
    case: String,
    number: String,
    room: String,
    status: CaseStatus,
    category: String,
    mediator: String,
    opened_ms: u64,
}

/// The cases of the rooms the mediator works in, newest first.
#[utoipa::path(get, path = "/api/v1/mediation/cases", tag = "mediation", params(CasesQuery),
    responses(
        (status = 200, description = "Cases", body = Vec<CaseSummary>),
        (status = 403, description = "Not a mediator"),
    ))]
async fn list_cases(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Query(q): Query<CasesQuery>,
) -> Result<Json<Vec<CaseSummary>>, Problem> {
    let view = node.views.mediation();
    let mut list: Vec<CaseSummary> = view
        .cases()
        .filter(|c| q.room.as_ref().is_none_or(|r| &c.room == r))
        .filter(|c| staff.account.has(&node.org, Role::Mediator, &c.site))
        .map(|c| CaseSummary {
            case: c.case.clone(),
            number: c.number.clone(),
            room: c.room.clone(),
            status: c.status,
            category: c.category.clone(),
            mediator: c.mediator.clone(),
            opened_ms: c.opened_ms,
        })
        .collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.opened_ms));
    Ok(Json(list))
}

pub(crate) fn case_for(node: &Node, staff: &Staff, id: &str) -> Result<Case, Problem> {
    let case = node
        .views
        .mediation()
        .case(id)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no case `{id}` here")))?;
    staff.require(node, Role::Mediator, &case.site)?;
    Ok(case)
}

/// One case, with the caller's form and the agreement. Every read is audited.
#[utoipa::path(get, path = "/api/v1/mediation/cases/{case}", tag = "mediation",
    params(("case" = String, Path, description = "Case id")),
    responses(
        (status = 200, description = "The case", body = CaseView),
        (status = 403, description = "Not a mediator of the case's site"),
        (status = 404, description = "No such case here"),
    ))]
async fn get_case(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    from: ClientAddr,
    Path(id): Path<String>,
) -> Result<Json<CaseView>, Problem> {
    let case = case_for(&node, &staff, &id)?;
    audit_event(&node, &staff.account.username, "case.read", &id, from).await;
    Ok(Json(case_view(&node, case)))
}

/// Changes to a case; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseChange {
    status: Option<CaseStatus>,
    category: Option<String>,
    claim: Option<String>,
    outcome: Option<String>,
    /// A step to note (appended with time and mediator).
    step: Option<String>,
    /// The parties' names and phones (the roles present replace the old entries).
    parties: Option<Vec<PartyChange>>,
    /// Start or stop recording; everyone's page shows it.
    recording: Option<bool>,
    /// Move a party to the side room and back.
    place: Option<PlaceChange>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartyChange {
    role: PartyRole,
    name: String,
    phone: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceChange {
    role: PartyRole,
    place: Place,
}

/// Changes a case: status, facts, parties, a step, recording, a party's place.
#[utoipa::path(patch, path = "/api/v1/mediation/cases/{case}", tag = "mediation",
    params(("case" = String, Path, description = "Case id")),
    request_body = CaseChange,
    responses(
        (status = 200, description = "The case as changed", body = CaseView),
        (status = 400, description = "An invalid field"),
        (status = 403, description = "Not a mediator of the case's site"),
    ))]
async fn update_case(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Path(id): Path<String>,
    Body(change): Body<CaseChange>,
) -> Result<Json<CaseView>, Problem> {
    let mut case = case_for(&node, &staff, &id)?;
    let too_long = |s: &str| s.chars().count() > mediation::MAX_TEXT;
    for text in [
        &change.category,
        &change.claim,
        &change.outcome,
        &change.step,
    ]
    .into_iter()
    .flatten()
    {
        if too_long(text) {
            return Err(Problem::bad_request(
                "text_too_long",
                format!("a field is longer than {} characters", mediation::MAX_TEXT),
            ));
        }
    }
    if change.recording == Some(true) {
        // Every party consents: the caller with the call, the invited party on their page.
        let refused = |role| {
            case.call.as_deref().is_some_and(|c| {
                !node
                    .views
                    .mediation()
                    .consent(c, role)
                    .is_some_and(|k| k.recording)
            })
        };
        if refused(PartyRole::Applicant) {
            return Err(Problem::bad_request(
                "no_recording_consent",
                "the caller did not consent to a recording",
            ));
        }
        if case.party(PartyRole::Respondent).is_some() && refused(PartyRole::Respondent) {
            return Err(Problem::bad_request(
                "no_recording_consent",
                "the invited party has not consented to a recording",
            ));
        }
    }
    let me = staff.account.username.clone();
    if let Some(s) = change.status {
        case.status = s;
        case.steps.push(Step {
            at_ms: wall_ms(),
            by: me.clone(),
            text: format!("status: {}", serde_json::to_value(s).unwrap_or_default()),
        });
    }
    if let Some(v) = change.category {
        case.category = v;
    }
    if let Some(v) = change.claim {
        case.claim = v;
    }
    if let Some(v) = change.outcome {
        case.outcome = v;
    }
    if let Some(text) = change.step {
        case.steps.push(Step {
            at_ms: wall_ms(),
            by: me.clone(),
            text,
        });
    }
    if let Some(parties) = change.parties {
        for p in parties {
            if p.name.chars().count() > mediation::MAX_NAME {
                return Err(Problem::bad_request(
                    "name_too_long",
                    "a party's name is too long",
                ));
            }
            let place = case.party(p.role).map_or(Place::Main, |old| old.place);
            case.parties.retain(|old| old.role != p.role);
            case.parties.push(Party {
                role: p.role,
                name: p.name,
                phone: p.phone,
                place,
            });
        }
        case.parties.sort_by_key(|p| p.role);
    }
    if let Some(on) = change.recording {
        case.recording = on;
    }
    if let Some(pc) = change.place {
        let party = case
            .parties
            .iter_mut()
            .find(|p| p.role == pc.role)
            .ok_or_else(|| Problem::bad_request("no_such_party", "that party has not joined"))?;
        party.place = pc.place;
    }
    write(&node, &case.scope, mediation::KIND_CASE, &case).await?;
    if let Some(on) = change.recording {
        // The flag is shown to everyone from the record; the SFU records while it is on.
        crate::api::recording::switch(&node, &case, on).await?;
    }
    Ok(Json(case_view(&node, case)))
}

/// An invitation for the other party.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    /// Open on the other party's phone.
    link: String,
}

/// Invites the other party: a link to the session for their phone.
#[utoipa::path(post, path = "/api/v1/mediation/cases/{case}/invite", tag = "mediation",
    params(("case" = String, Path, description = "Case id")),
    responses(
        (status = 201, description = "The link", body = Invitation),
        (status = 403, description = "Not a mediator of the case's site"),
    ))]
async fn invite(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let mut case = case_for(&node, &staff, &id)?;
    let call = case
        .call
        .clone()
        .ok_or_else(|| Problem::bad_request("no_call", "this case has no call to join"))?;
    let (token, _) = node
        .sessions
        .create(&format!("caller:{call}:respondent"))
        .map_err(|e| Problem::internal("cannot store the invitation", e))?;
    let new_party = case.party(PartyRole::Respondent).is_none();
    if new_party {
        case.parties.push(Party {
            role: PartyRole::Respondent,
            name: String::new(),
            phone: None,
            place: Place::Main,
        });
    }
    // A running recording stops before the invited party joins, unless they consented to it
    // already (invited again); they are asked on the invitation page (`give_consent`).
    let consented = node
        .views
        .mediation()
        .consent(&call, PartyRole::Respondent)
        .is_some_and(|c| c.recording);
    let was_recording = !consented && std::mem::replace(&mut case.recording, false);
    if new_party || was_recording {
        write(&node, &case.scope, mediation::KIND_CASE, &case).await?;
    }
    if was_recording {
        crate::api::recording::switch(&node, &case, false).await?;
    }
    let link = format!("/tianchi.html?call={call}#invite={token}");
    Ok((StatusCode::CREATED, Json(Invitation { link })).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JoinQuery {
    /// `main` (default) or `side`.
    room: Option<Place>,
}

/// A media token for the mediator.
#[derive(Debug, Serialize, ToSchema)]
pub struct Join {
    media_token: String,
    media_room: String,
}

/// The mediator joins the session (its main room, or the side room).
#[utoipa::path(post, path = "/api/v1/mediation/cases/{case}/join", tag = "mediation",
    params(("case" = String, Path, description = "Case id"), JoinQuery),
    responses(
        (status = 200, description = "A media token", body = Join),
        (status = 403, description = "Not a mediator of the case's site"),
    ))]
async fn join_session(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Path(id): Path<String>,
    Query(q): Query<JoinQuery>,
) -> Result<Json<Join>, Problem> {
    let case = case_for(&node, &staff, &id)?;
    if case.site != node.config.site {
        return Err(Problem::bad_request(
            "other_site",
            format!("the session runs on site `{}`; join there", case.site),
        ));
    }
    define_case_rooms(&node, &case).await?;
    let (main, side) = case.media_rooms();
    let media_room = if q.room == Some(Place::Side) {
        side
    } else {
        main
    };
    let sub = format!("{}-mediator", case.case);
    Ok(Json(Join {
        media_token: media_token(&node, &media_room, &sub, MediaRole::Owner),
        media_room,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftRequest {
    /// The agreed terms, one per item.
    terms: Vec<String>,
}

/// Drafts the agreement both parties are asked to confirm.
#[utoipa::path(post, path = "/api/v1/mediation/cases/{case}/agreement", tag = "mediation",
    params(("case" = String, Path, description = "Case id")),
    request_body = DraftRequest,
    responses(
        (status = 201, description = "The draft, shown to both parties", body = CaseView),
        (status = 400, description = "No terms, or a term too long"),
        (status = 403, description = "Not a mediator of the case's site"),
    ))]
async fn draft_agreement(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Path(id): Path<String>,
    Body(req): Body<DraftRequest>,
) -> Result<Response, Problem> {
    let case = case_for(&node, &staff, &id)?;
    let terms: Vec<String> = req
        .terms
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if terms.is_empty()
        || terms
            .iter()
            .any(|t| t.chars().count() > mediation::MAX_TEXT)
    {
        return Err(Problem::bad_request(
            "terms_invalid",
            format!(
                "give at least one term, each at most {} characters",
                mediation::MAX_TEXT
            ),
        ));
    }
    let version = node
        .views
        .mediation()
        .draft(&id)
        .map_or(1, |d| d.version + 1);
    let draft = AgreementDraft {
        case: id,
        version,
        terms,
        by: staff.account.username.clone(),
        created_ms: wall_ms(),
    };
    // The draft must print: the same checks the signed agreement will pass, but signatures.
    agreement_of(&node, &case, &draft, &[], false)?;
    write(&node, &case.scope, mediation::KIND_AGREEMENT, &draft).await?;
    Ok((StatusCode::CREATED, Json(case_view(&node, case))).into_response())
}

/// Builds the printable agreement of `case` from its draft and the confirmations given (the
/// newest of each role). With `images`, the drawn signatures are decoded and checked too.
fn agreement_of(
    node: &Node,
    case: &Case,
    draft: &AgreementDraft,
    confirmations: &[Confirmation],
    images: bool,
) -> Result<Agreement, Problem> {
    let bad = |code: &'static str, e: agreement::Error| Problem::bad_request(code, e.to_string());
    let site = node.roster.site(&case.site);
    let own = crate::rooms::own_rooms(&node.config);
    let dir = node.views.rooms();
    let room = own
        .iter()
        .chain(dir.of_site(&case.site))
        .find(|r| r.id == case.room);
    let mediator_name = node
        .views
        .accounts()
        .get(&case.mediator)
        .map_or_else(|| case.mediator.clone(), |a| a.display_name.clone());
    let category = serde_json::from_value(serde_json::Value::String(case.category.clone()))
        .unwrap_or(agreement::Category::Other);
    let mut parties = Vec::new();
    for role in [PartyRole::Applicant, PartyRole::Respondent] {
        let confirmed = confirmations.iter().rev().find(|c| c.role == role);
        let name = confirmed
            .map(|c| c.name.clone())
            .or_else(|| case.party(role).map(|p| p.name.clone()))
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "—".to_owned());
        let role = match role {
            PartyRole::Applicant => agreement::Role::Applicant,
            PartyRole::Respondent => agreement::Role::Respondent,
        };
        parties.push((agreement::Party::new(role, name), confirmed));
    }
    let mut a = Agreement {
        template_version: agreement::TEMPLATE_VERSION,
        case_id: case.case.clone(),
        case_number: case.number.clone(),
        site_name_zh: site.map_or_else(|| case.site.clone(), |s| s.name_zh.clone()),
        site_name_en: site.map_or_else(|| case.site.clone(), |s| s.name_en.clone()),
        room_name_zh: room.map_or_else(|| case.room.clone(), |r| r.name_zh.clone()),
        room_name_en: room.map_or_else(|| case.room.clone(), |r| r.name_en.clone()),
        mediator_name,
        created_ms: draft.created_ms,
        category,
        claim: if case.claim.trim().is_empty() {
            "—".to_owned()
        } else {
            case.claim.clone()
        },
        amount: case
            .amount_cny
            .map(|y| agreement::Cny((y * 100.0).round() as u64)),
        terms: draft.terms.clone(),
        parties: parties.iter().map(|(p, _)| p.clone()).collect(),
    };
    for (i, (_, confirmed)) in parties.iter().enumerate() {
        let Some(c) = confirmed else { continue };
        if images {
            let png = base64::engine::general_purpose::STANDARD
                .decode(&c.signature_png)
                .map_err(|_| {
                    Problem::bad_request("signature_invalid", "the signature is not base64")
                })?;
            a.sign(i, png, c.signed_ms)
                .map_err(|e| bad("signature_invalid", e))?;
        }
    }
    a.check().map_err(|e| match e {
        agreement::Error::UnsupportedChars { .. } => bad("text_unprintable", e),
        other => bad("agreement_invalid", other),
    })?;
    Ok(a)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PdfQuery {
    /// `zh` (default, the agreement) or `en` (a translation for reference).
    lang: Option<String>,
}

/// The signed agreement as a PDF. It is made from the signed records, so every node that holds
/// the case (its site, the bureau, the hub) gives the same document. Every export is audited.
#[utoipa::path(get, path = "/api/v1/mediation/cases/{case}/agreement.pdf", tag = "mediation",
    params(("case" = String, Path, description = "Case id"), PdfQuery),
    responses(
        (status = 200, description = "The PDF", content_type = "application/pdf"),
        (status = 403, description = "Not a mediator of the case's site"),
        (status = 409, description = "Not signed by both parties yet"),
    ))]
async fn agreement_pdf(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    from: ClientAddr,
    Path(id): Path<String>,
    Query(q): Query<PdfQuery>,
) -> Result<Response, Problem> {
    let lang: agreement::Lang = q
        .lang
        .as_deref()
        .unwrap_or("zh")
        .parse()
        .map_err(|e: String| Problem::bad_request("bad_lang", e))?;
    let case = case_for(&node, &staff, &id)?;
    let (draft, confirmations) = {
        let view = node.views.mediation();
        let draft = view.draft(&id).cloned();
        let confirmations: Vec<Confirmation> =
            view.confirmations(&id).into_iter().cloned().collect();
        (draft, confirmations)
    };
    let unsigned = || {
        Problem::new(
            StatusCode::CONFLICT,
            "agreement_unsigned",
            "both parties must confirm the agreement before it is printed",
        )
    };
    let draft = draft.ok_or_else(unsigned)?;
    let a = agreement_of(&node, &case, &draft, &confirmations, true)?;
    if !a.is_signed() {
        return Err(unsigned());
    }
    audit_event(&node, &staff.account.username, "export", &id, from).await;
    let pdf = tokio::task::spawn_blocking(move || agreement::render_pdf(&a, lang))
        .await
        .map_err(|e| Problem::internal("cannot render the agreement", e))?
        .map_err(|e| Problem::internal("cannot render the agreement", e))?;
    let disposition = format!("attachment; filename=\"agreement-{}.pdf\"", case.number);
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        pdf,
    )
        .into_response())
}

/// Ends the session: the call is done; the case keeps its status.
#[utoipa::path(post, path = "/api/v1/mediation/cases/{case}/end", tag = "mediation",
    params(("case" = String, Path, description = "Case id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 403, description = "Not a mediator of the case's site"),
    ))]
async fn end_session(
    State(node): State<Arc<Node>>,
    Mediator(staff): Mediator,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let mut case = case_for(&node, &staff, &id)?;
    if case.recording {
        // The session ends, and its recording with it.
        case.recording = false;
        write(&node, &case.scope, mediation::KIND_CASE, &case).await?;
    }
    crate::api::recording::switch(&node, &case, false).await?;
    if let Some(call) = case.call.clone() {
        let state = CallStateRecord {
            call,
            status: CallStatus::Done,
            case: Some(case.case.clone()),
            by: Some(staff.account.username.clone()),
        };
        write(&node, &case.scope, mediation::KIND_CALL_STATE, &state).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

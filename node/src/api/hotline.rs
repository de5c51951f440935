//! The legal-advice hotline's API: the caller's side (join, wait, call, callback, rating,
//! questions outside duty hours) and the duty lawyer's (desk, state, accept, end, note, answer),
//! and the figures. See docs/hotline.md.
//!
//! Callers have no account: joining returns a token (a node session whose subject is
//! `hotline:<call>`; `hotline-question:<id>` for a question) that is their only key.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use huiyan_media::room::{Role as MediaRole, RoomKind, RoomPolicy};
use huiyan_mesh::replica::wall_ms;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::Role;
use crate::api::mediation::{audit_event, write};
use crate::api::new_id;
use crate::api::problem::{Body, Problem};
use crate::auth::{ClientAddr, DutyLawyer, Staff, caller_subject};
use crate::hotline::{
    self, AcceptRecord, AnswerRecord, Call, CallEvent, CallRecord, CallStateRecord, CallStatus,
    Lang, LawyerRecord, LawyerState, NoteRecord, QuestionRecord, RatingRecord, Stats,
};
use crate::mediation;
use crate::node::Node;

/// How long a console poll waits for the caller's site to describe the call's media room.
const ROOM_LOOKUP: std::time::Duration = std::time::Duration::from_secs(3);

pub fn routes() -> OpenApiRouter<Arc<Node>> {
    OpenApiRouter::new()
        .routes(routes!(hotline_info))
        .routes(routes!(join))
        .routes(routes!(call_status, leave))
        .routes(routes!(ask_callback))
        .routes(routes!(rate))
        .routes(routes!(ask_question))
        .routes(routes!(get_question))
        .routes(routes!(desk))
        .routes(routes!(set_state))
        .routes(routes!(accept))
        .routes(routes!(end_call))
        .routes(routes!(write_note))
        .routes(routes!(answer_question))
        .routes(routes!(stats))
}

// ----- Helpers ------------------------------------------------------------------------------

fn topics() -> Vec<Topic> {
    hotline::TOPICS
        .iter()
        .map(|(id, zh, en, ko)| Topic {
            id: (*id).to_owned(),
            zh: (*zh).to_owned(),
            en: (*en).to_owned(),
            ko: (*ko).to_owned(),
        })
        .collect()
}

fn check_topic(topic: Option<&str>) -> Result<(), Problem> {
    match topic {
        Some(t) if !hotline::is_topic(t) => {
            let ids: Vec<&str> = hotline::TOPICS.iter().map(|t| t.0).collect();
            Err(Problem::bad_request(
                "unknown_topic",
                format!("no topic `{t}`; use one of: {}", ids.join(", ")),
            ))
        }
        _ => Ok(()),
    }
}

fn check_phone(phone: Option<&str>, required: bool) -> Result<(), Problem> {
    match phone {
        None if required => Err(Problem::bad_request(
            "phone_required",
            "a callback needs a phone number",
        )),
        Some(p) if !mediation::phone_ok(p) => {
            Err(Problem::bad_request("phone_invalid", mediation::PHONE_RULE))
        }
        _ => Ok(()),
    }
}

fn check_text(field: &str, text: &str, code_missing: &'static str) -> Result<(), Problem> {
    if text.trim().is_empty() {
        return Err(Problem::bad_request(
            code_missing,
            format!("`{field}` is empty"),
        ));
    }
    if text.chars().count() > hotline::MAX_TEXT {
        return Err(Problem::bad_request(
            "text_too_long",
            format!("`{field}` is longer than {} characters", hotline::MAX_TEXT),
        ));
    }
    Ok(())
}

/// Whether the hotline takes calls at this node now, and if not why.
fn closed_reason(node: &Node, now: u64) -> Option<&'static str> {
    let schedule = schedule(node);
    if !schedule.open_at(now) {
        return Some("off_hours");
    }
    let home = hotline::dispatch::home(node)?;
    (!hotline::dispatch::reachable(node, home)).then_some("unreachable")
}

/// The schedule the home published; the home's own config on the home.
fn schedule(node: &Node) -> hotline::Schedule {
    if hotline::dispatch::home(node) == Some(node.config.site.as_str()) {
        return node.config.hotline.schedule();
    }
    node.views.hotline().schedule().cloned().unwrap_or_default()
}

fn media_room(call: &CallRecord) -> String {
    format!("{}/hotline-{}", call.entry_site, call.call)
}

/// A speaker's token to the call's room (caller or lawyer: both talk).
fn media_token(node: &Node, room: &str, sub: &str) -> String {
    super::mediation::media_token(node, room, sub, MediaRole::Speaker)
}

/// Defines the call's media room on this node, the caller's (again after a restart: defining
/// is idempotent).
async fn define_room(node: &Node, call: &CallRecord) -> Result<(), Problem> {
    let policy = RoomPolicy::new(media_room(call), RoomKind::Hotline, "hotline");
    node.media
        .define_room(policy)
        .await
        .map_err(|e| Problem::internal("cannot open the call's room", e))
}

fn known_call(node: &Node, id: &str) -> Result<Call, Problem> {
    node.views
        .hotline()
        .call(id)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no hotline call `{id}`")))
}

async fn call_event(
    node: &Arc<Node>,
    call: &str,
    event: CallEvent,
    phone: Option<String>,
    by: Option<String>,
) -> Result<(), Problem> {
    let record = CallStateRecord {
        call: call.to_owned(),
        event,
        phone,
        by,
    };
    write(node, hotline::SCOPE, hotline::KIND_CALL_STATE, &record).await
}

// ----- Public: the hotline and joining it --------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct Topic {
    id: String,
    zh: String,
    en: String,
    ko: String,
}

/// The hotline as a caller sees it before joining.
#[derive(Debug, Serialize, ToSchema)]
pub struct HotlineInfo {
    open: bool,
    /// `off_hours` or `unreachable` (this site cannot reach the bureau now).
    closed_reason: Option<&'static str>,
    /// When it opens next, outside duty hours, ms since the Unix epoch.
    next_open_ms: Option<u64>,
    topics: Vec<Topic>,
    waiting: usize,
    /// Expected wait for a caller joining now, seconds.
    expected_wait_s: u64,
    lawyers_available: usize,
}

/// Whether the hotline is open, how many wait and for how long.
#[utoipa::path(get, path = "/api/v1/hotline", tag = "hotline",
    responses((status = 200, description = "The hotline now", body = HotlineInfo)))]
async fn hotline_info(State(node): State<Arc<Node>>) -> Json<HotlineInfo> {
    let now = wall_ms();
    let closed_reason = closed_reason(&node, now);
    let view = node.views.hotline();
    let waiting = view.queue().len();
    Json(HotlineInfo {
        open: closed_reason.is_none(),
        next_open_ms: (closed_reason == Some("off_hours"))
            .then(|| schedule(&node).next_open(now))
            .flatten(),
        closed_reason,
        topics: topics(),
        waiting,
        expected_wait_s: view.expected_wait(waiting + 1),
        lawyers_available: view.lawyers_available(),
    })
}

/// A caller joining the queue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCall {
    /// One of the topics of `GET /api/v1/hotline`.
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    lang: Lang,
    /// Ask to be called back by phone instead of waiting on the line.
    #[serde(default)]
    callback: bool,
    #[serde(default)]
    phone: Option<String>,
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

/// The caller of a hotline call, by the call's token.
#[derive(Debug, Clone)]
pub struct HotlineCaller {
    pub call: String,
}

fn refused() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "bad_call_token",
        "this token is missing, expired or not a hotline call's; join the hotline again",
    )
}

impl FromRequestParts<Arc<Node>> for HotlineCaller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Problem> {
        let call = caller_subject(parts, node, "hotline:").ok_or_else(refused)?;
        Ok(HotlineCaller { call })
    }
}

fn own(caller: &HotlineCaller, id: &str) -> Result<(), Problem> {
    if caller.call == id {
        Ok(())
    } else {
        Err(Problem::forbidden("this token is for another call"))
    }
}

/// Joins the queue (or asks for a callback).
#[utoipa::path(post, path = "/api/v1/hotline/calls", tag = "hotline", request_body = NewCall,
    responses(
        (status = 201, description = "Queued", body = PlacedCall),
        (status = 400, description = "Unknown topic, or a missing or invalid phone number"),
        (status = 409, description = "The hotline is closed (`hotline_closed`), or this caller's \
            call is still live (`already_in_queue`)"),
        (status = 429, description = "Too many calls from this address"),
    ))]
async fn join(
    State(node): State<Arc<Node>>,
    from: ClientAddr,
    parts: Parts,
    Body(req): Body<NewCall>,
) -> Result<Response, Problem> {
    if let Some(live) = caller_subject(&parts, &node, "hotline:")
        && node
            .views
            .hotline()
            .call(&live)
            .is_some_and(|c| !c.status().finished())
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "already_in_queue",
            format!("this caller's call `{live}` is still live; keep using it, or leave it first"),
        ));
    }
    check_topic(req.topic.as_deref())?;
    check_phone(req.phone.as_deref(), req.callback)?;
    let now = wall_ms();
    if let Some(reason) = closed_reason(&node, now) {
        let why = match reason {
            "off_hours" => "it is outside duty hours",
            _ => "this site cannot reach the bureau now",
        };
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "hotline_closed",
            format!("the hotline takes no calls now ({why}); leave a question instead"),
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
    let record = CallRecord {
        call: new_id(),
        entry_site: node.config.site.clone(),
        topic: req.topic,
        lang: req.lang,
        callback: req.callback,
        phone: req.phone,
    };
    define_room(&node, &record).await?;
    write(&node, hotline::SCOPE, hotline::KIND_CALL, &record).await?;
    node.hotline_live.caller_seen(&record.call);
    let (token, _) = node
        .sessions
        .create(&format!("hotline:{}", record.call))
        .map_err(|e| Problem::internal("cannot store the call token", e))?;
    let view = node.views.hotline();
    let call = view.call(&record.call);
    let position = call.and_then(|c| view.position(c));
    let body = PlacedCall {
        call: record.call.clone(),
        token,
        status: call.map_or(CallStatus::Waiting, Call::status),
        position,
        expected_wait_s: position.map_or(0, |p| view.expected_wait(p)),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A call as its caller sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    call: String,
    status: CallStatus,
    /// A lawyer is being offered the call now.
    offered: bool,
    position: Option<usize>,
    expected_wait_s: u64,
    /// The caller asked to be called back by phone: the lawyer answers by phone, not video.
    callback: bool,
    /// The site of the lawyer who answered.
    lawyer_site: Option<String>,
    /// Join the call's media room with this token (on this node's `/ws`), once connected.
    media_room: Option<String>,
    media_token: Option<String>,
    rated: bool,
}

/// Where the call stands. Asking is also the caller's heartbeat: a caller silent for 15 s is
/// dropped, and a dropped caller who asks again within 2 minutes is back in their place.
#[utoipa::path(get, path = "/api/v1/hotline/calls/{call}", tag = "hotline",
    params(("call" = String, Path, description = "Call id")),
    responses(
        (status = 200, description = "The call", body = CallView),
        (status = 401, description = "No valid call token"),
        (status = 403, description = "The token is for another call"),
    ))]
async fn call_status(
    State(node): State<Arc<Node>>,
    caller: HotlineCaller,
    Path(id): Path<String>,
) -> Result<Json<CallView>, Problem> {
    own(&caller, &id)?;
    node.hotline_live.caller_seen(&id);
    let call = known_call(&node, &id)?;
    if call.status() == CallStatus::Dropped {
        call_event(&node, &id, CallEvent::Back, None, None).await?;
    }
    let connected = call.status() == CallStatus::Connected;
    let media = connected && call.callback_phone.is_none();
    if media {
        define_room(&node, &call.record).await?;
    }
    let view = node.views.hotline();
    let call = view.call(&id).cloned().unwrap_or(call);
    let position = view.position(&call);
    let room = media_room(&call.record);
    Ok(Json(CallView {
        status: call.status(),
        offered: view.open_offer(&call, wall_ms()).is_some(),
        position,
        expected_wait_s: position.map_or(0, |p| view.expected_wait(p)),
        callback: call.callback_phone.is_some(),
        lawyer_site: call.answer.as_ref().map(|a| a.site.clone()),
        media_token: media.then(|| media_token(&node, &room, &format!("caller-{id}"))),
        media_room: media.then_some(room),
        rated: call.rating.is_some(),
        call: id,
    }))
}

/// Leaves the queue, or hangs up.
#[utoipa::path(delete, path = "/api/v1/hotline/calls/{call}", tag = "hotline",
    params(("call" = String, Path, description = "Call id")),
    responses(
        (status = 204, description = "Left (or nothing to leave)"),
        (status = 401, description = "No valid call token"),
    ))]
async fn leave(
    State(node): State<Arc<Node>>,
    caller: HotlineCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    own(&caller, &id)?;
    let call = known_call(&node, &id)?;
    match call.status() {
        CallStatus::Waiting | CallStatus::Callback | CallStatus::Dropped => {
            call_event(&node, &id, CallEvent::Left, None, None).await?;
        }
        CallStatus::Connected => call_event(&node, &id, CallEvent::Ended, None, None).await?,
        _ => {}
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    phone: String,
}

/// Turns the wait into a callback request; the caller keeps their place.
#[utoipa::path(post, path = "/api/v1/hotline/calls/{call}/callback", tag = "hotline",
    params(("call" = String, Path, description = "Call id")), request_body = CallbackRequest,
    responses(
        (status = 204, description = "The call waits for a callback"),
        (status = 400, description = "Invalid phone number"),
        (status = 409, description = "The call is not waiting"),
    ))]
async fn ask_callback(
    State(node): State<Arc<Node>>,
    caller: HotlineCaller,
    Path(id): Path<String>,
    Body(req): Body<CallbackRequest>,
) -> Result<StatusCode, Problem> {
    own(&caller, &id)?;
    check_phone(Some(&req.phone), true)?;
    let call = known_call(&node, &id)?;
    if !matches!(call.status(), CallStatus::Waiting | CallStatus::Dropped) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not_waiting",
            "only a waiting call can become a callback request",
        ));
    }
    call_event(&node, &id, CallEvent::Callback, Some(req.phone), None).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rating {
    /// 1 to 5.
    stars: u8,
}

/// The caller rates the call, once, after it ended.
#[utoipa::path(post, path = "/api/v1/hotline/calls/{call}/rating", tag = "hotline",
    params(("call" = String, Path, description = "Call id")), request_body = Rating,
    responses(
        (status = 204, description = "Rated"),
        (status = 400, description = "Stars out of 1 to 5"),
        (status = 409, description = "The call has not ended, or is rated already"),
    ))]
async fn rate(
    State(node): State<Arc<Node>>,
    caller: HotlineCaller,
    Path(id): Path<String>,
    Body(req): Body<Rating>,
) -> Result<StatusCode, Problem> {
    own(&caller, &id)?;
    if !(1..=5).contains(&req.stars) {
        return Err(Problem::bad_request(
            "stars_invalid",
            "`stars` must be 1 to 5",
        ));
    }
    let call = known_call(&node, &id)?;
    if call.status() != CallStatus::Ended {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not_ended",
            "a call can be rated once it has ended",
        ));
    }
    if call.rating.is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "already_rated",
            "this call is rated already",
        ));
    }
    let record = RatingRecord {
        call: id,
        stars: req.stars,
    };
    write(&node, hotline::SCOPE, hotline::KIND_RATING, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- Public: questions outside duty hours ------------------------------------------------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuestion {
    #[serde(default)]
    topic: Option<String>,
    text: String,
    /// How a lawyer reaches the caller.
    phone: String,
    #[serde(default)]
    lang: Lang,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AskedQuestion {
    question: String,
    /// Send as `Authorization: Bearer` to read the answer.
    token: String,
}

/// Leaves a question for the lawyers (when the hotline is closed, or any time).
#[utoipa::path(post, path = "/api/v1/hotline/questions", tag = "hotline",
    request_body = NewQuestion,
    responses(
        (status = 201, description = "Kept for the lawyers", body = AskedQuestion),
        (status = 400, description = "Unknown topic, empty or long text, invalid phone"),
        (status = 429, description = "Too many from this address"),
    ))]
async fn ask_question(
    State(node): State<Arc<Node>>,
    from: ClientAddr,
    Body(req): Body<NewQuestion>,
) -> Result<Response, Problem> {
    check_topic(req.topic.as_deref())?;
    check_text("text", &req.text, "text_missing")?;
    check_phone(Some(&req.phone), true)?;
    let ip = from.0.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if !node.desk.may_place_call(ip) {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many questions from this address; try again in an hour",
        ));
    }
    let record = QuestionRecord {
        question: new_id(),
        entry_site: node.config.site.clone(),
        topic: req.topic,
        text: req.text,
        phone: req.phone,
        lang: req.lang,
    };
    write(&node, hotline::SCOPE, hotline::KIND_QUESTION, &record).await?;
    let (token, _) = node
        .sessions
        .create(&format!("hotline-question:{}", record.question))
        .map_err(|e| Problem::internal("cannot store the question's token", e))?;
    let body = AskedQuestion {
        question: record.question,
        token,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionView {
    question: String,
    topic: Option<String>,
    text: String,
    asked_ms: u64,
    answer: Option<String>,
    answered_ms: Option<u64>,
}

/// A question and its answer, for whoever asked it.
#[utoipa::path(get, path = "/api/v1/hotline/questions/{question}", tag = "hotline",
    params(("question" = String, Path, description = "Question id")),
    responses(
        (status = 200, description = "The question", body = QuestionView),
        (status = 401, description = "No valid token for this question"),
    ))]
async fn get_question(
    State(node): State<Arc<Node>>,
    parts: Parts,
    Path(id): Path<String>,
) -> Result<Json<QuestionView>, Problem> {
    if caller_subject(&parts, &node, "hotline-question:").as_deref() != Some(id.as_str()) {
        return Err(refused());
    }
    let view = node.views.hotline();
    let q = view
        .question(&id)
        .ok_or_else(|| Problem::not_found("the question is not known here yet; retry"))?;
    Ok(Json(QuestionView {
        question: id.clone(),
        topic: q.record.topic.clone(),
        text: q.record.text.clone(),
        asked_ms: q.asked_ms,
        answer: q.answer.as_ref().map(|(a, _)| a.text.clone()),
        answered_ms: q.answer.as_ref().map(|(_, t)| *t),
    }))
}

// ----- Duty lawyers -------------------------------------------------------------------------

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    username: String,
    /// The site of the console the lawyer last set their state from.
    site: String,
    state: LawyerState,
    reason: Option<String>,
    since_ms: u64,
    after_call_until_ms: Option<u64>,
    on_shift: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferView {
    offer: String,
    call: String,
    topic: Option<String>,
    lang: Lang,
    callback: bool,
    expires_ms: u64,
}

/// The call a lawyer is in.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentCall {
    call: String,
    topic: Option<String>,
    lang: Lang,
    callback: bool,
    /// The number to call back, for a callback request.
    phone: Option<String>,
    /// The call's media room and a token to join it on this node's `/ws`; none for a callback,
    /// nor until this node has the room's description from the caller's site (ask again).
    media_room: Option<String>,
    media_token: Option<String>,
    started_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToNote {
    call: String,
    topic: Option<String>,
    ended_ms: u64,
}

/// A queued call as lawyers see it: no phone number.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueItem {
    call: String,
    topic: Option<String>,
    lang: Lang,
    waited_s: u64,
    status: CallStatus,
    /// The lawyer it is offered to now.
    offered_to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LawyerView {
    username: String,
    site: String,
    state: LawyerState,
    /// Seconds since the lawyer became available, while available.
    idle_s: Option<u64>,
    /// The home reaches the lawyer's site (as this node sees it: this node reaches it).
    reachable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuestionItem {
    question: String,
    topic: Option<String>,
    text: String,
    phone: String,
    lang: Lang,
    asked_ms: u64,
    answer: Option<String>,
}

/// The lawyer's console.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeskView {
    me: Me,
    open: bool,
    offer: Option<OfferView>,
    current: Option<CurrentCall>,
    to_note: Option<ToNote>,
    queue: Vec<QueueItem>,
    lawyers: Vec<LawyerView>,
    questions: Vec<QuestionItem>,
    topics: Vec<Topic>,
}

/// Whether this node can admit the lawyer to the media room of `me`'s current call: defined
/// here (the caller is at this site), or looked up over the relay at the caller's site once;
/// until the answer comes the console gets no media token and asks again at its next poll.
async fn media_ready(node: &Node, me: &str) -> bool {
    let room = node
        .views
        .hotline()
        .current_call(me)
        .map(|c| media_room(&c.record));
    let Some(room) = room else {
        return false;
    };
    matches!(
        node.media.resolve_room(&room, ROOM_LOOKUP).await,
        Ok(Some(_))
    )
}

/// The call `username` is in; its media token only when `media_ready`.
fn current_call(node: &Node, call: &Call, username: &str, media_ready: bool) -> CurrentCall {
    let callback = call.callback_phone.is_some();
    let room = (!callback && media_ready).then(|| media_room(&call.record));
    CurrentCall {
        call: call.record.call.clone(),
        topic: call.record.topic.clone(),
        lang: call.record.lang,
        callback,
        phone: call.callback_phone.clone(),
        media_token: room.as_ref().map(|room| {
            media_token(
                node,
                room,
                &format!("lawyer-{username}-{}", call.record.call),
            )
        }),
        media_room: room,
        started_ms: call.answer.as_ref().map_or(0, |a| a.at_ms),
    }
}

/// The console's view: own state, the offer, the call, the queue, the lawyers, questions.
/// Asking is also the console's heartbeat: a lawyer whose console is silent for 60 s goes
/// offline.
#[utoipa::path(get, path = "/api/v1/hotline/desk", tag = "hotline",
    responses(
        (status = 200, description = "The desk", body = DeskView),
        (status = 403, description = "Not a duty lawyer"),
    ))]
async fn desk(State(node): State<Arc<Node>>, DutyLawyer(staff): DutyLawyer) -> Json<DeskView> {
    let me = staff.account.username.clone();
    node.hotline_live.console_seen(&me);
    let now = wall_ms();
    let schedule = schedule(&node);
    let open = closed_reason(&node, now).is_none();
    let reachable = |site: &str| hotline::dispatch::reachable(&node, site);
    let media_ready = media_ready(&node, &me).await;
    let view = node.views.hotline();
    let lawyer = view.lawyer(&me);
    let my_state = lawyer.map_or(LawyerState::Offline, |l| view.state_of(l));
    let to_note = view
        .calls()
        .filter(|c| {
            c.status() == CallStatus::Ended
                && c.note.is_none()
                && c.answer.as_ref().is_some_and(|a| a.lawyer == me)
        })
        .max_by_key(|c| c.ended_ms)
        .map(|c| ToNote {
            call: c.record.call.clone(),
            topic: c.record.topic.clone(),
            ended_ms: c.ended_ms.unwrap_or(0),
        });
    let queue = view
        .queue()
        .into_iter()
        .map(|c| QueueItem {
            call: c.record.call.clone(),
            topic: c.record.topic.clone(),
            lang: c.record.lang,
            waited_s: now.saturating_sub(c.joined_ms) / 1000,
            status: c.status(),
            offered_to: view.open_offer(c, now).map(|o| o.record.lawyer.clone()),
        })
        .collect();
    let lawyers = view
        .lawyers()
        .map(|l| {
            let state = view.state_of(l);
            LawyerView {
                username: l.record.username.clone(),
                site: l.record.site.clone(),
                state,
                idle_s: (state == LawyerState::Available)
                    .then(|| now.saturating_sub(l.since_ms) / 1000),
                reachable: reachable(&l.record.site),
            }
        })
        .collect();
    let mut questions: Vec<QuestionItem> = view
        .questions()
        .map(|q| QuestionItem {
            question: q.record.question.clone(),
            topic: q.record.topic.clone(),
            text: q.record.text.clone(),
            phone: q.record.phone.clone(),
            lang: q.record.lang,
            asked_ms: q.asked_ms,
            answer: q.answer.as_ref().map(|(a, _)| a.text.clone()),
        })
        .collect();
    questions.sort_by_key(|q| (q.answer.is_some(), q.asked_ms));
    Json(DeskView {
        me: Me {
            site: lawyer.map_or_else(|| node.config.site.clone(), |l| l.record.site.clone()),
            state: my_state,
            reason: lawyer.and_then(|l| l.record.reason.clone()),
            since_ms: lawyer.map_or(0, |l| l.since_ms),
            after_call_until_ms: lawyer
                .filter(|_| my_state == LawyerState::AfterCall)
                .and_then(|l| l.record.until_ms),
            on_shift: schedule.on_duty(&me, now),
            username: me.clone(),
        },
        open,
        offer: view.offer_to(&me, now).and_then(|o| {
            let call = view.call(&o.record.call)?;
            Some(OfferView {
                offer: o.record.offer.clone(),
                call: call.record.call.clone(),
                topic: call.record.topic.clone(),
                lang: call.record.lang,
                callback: call.callback_phone.is_some(),
                expires_ms: o.record.expires_ms,
            })
        }),
        current: view
            .current_call(&me)
            .map(|c| current_call(&node, c, &me, media_ready)),
        to_note,
        queue,
        lawyers,
        questions,
        topics: topics(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateChange {
    /// `available`, `break` or `offline`.
    state: LawyerState,
}

async fn set_lawyer(
    node: &Arc<Node>,
    username: &str,
    state: LawyerState,
    until_ms: Option<u64>,
) -> Result<(), Problem> {
    let record = LawyerRecord {
        username: username.to_owned(),
        site: node.config.site.clone(),
        state,
        reason: None,
        until_ms,
    };
    write(node, hotline::SCOPE, hotline::KIND_LAWYER, &record).await
}

/// The lawyer sets their state.
#[utoipa::path(post, path = "/api/v1/hotline/state", tag = "hotline",
    request_body = StateChange,
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "Not a state a lawyer sets"),
        (status = 403, description = "Not a duty lawyer"),
        (status = 409, description = "Not on shift now (`off_shift`), or in a call (`on_call`)"),
    ))]
async fn set_state(
    State(node): State<Arc<Node>>,
    DutyLawyer(staff): DutyLawyer,
    Body(req): Body<StateChange>,
) -> Result<StatusCode, Problem> {
    let me = staff.account.username.as_str();
    node.hotline_live.console_seen(me);
    if !matches!(
        req.state,
        LawyerState::Available | LawyerState::Break | LawyerState::Offline
    ) {
        return Err(Problem::bad_request(
            "bad_state",
            "a lawyer sets `available`, `break` or `offline`; after-call work and calls follow \
             from the calls",
        ));
    }
    if node.views.hotline().current_call(me).is_some() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "on_call",
            "end the call first",
        ));
    }
    if req.state == LawyerState::Available && !schedule(&node).on_duty(me, wall_ms()) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "off_shift",
            "you are not on a duty shift now; see the hotline's schedule",
        ));
    }
    set_lawyer(&node, me, req.state, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts an offer: the call starts.
#[utoipa::path(post, path = "/api/v1/hotline/offers/{offer}/accept", tag = "hotline",
    params(("offer" = String, Path, description = "Offer id")),
    responses(
        (status = 200, description = "The call", body = CurrentCall),
        (status = 403, description = "The offer is another lawyer's"),
        (status = 404, description = "No such offer"),
        (status = 409, description = "The offer ran out or the call went to another lawyer"),
    ))]
async fn accept(
    State(node): State<Arc<Node>>,
    DutyLawyer(staff): DutyLawyer,
    from: ClientAddr,
    Path(id): Path<String>,
) -> Result<Json<CurrentCall>, Problem> {
    let me = staff.account.username.clone();
    let gone = || {
        Problem::new(
            StatusCode::CONFLICT,
            "offer_gone",
            "this offer ran out or the call went to another lawyer",
        )
    };
    let offer = node
        .views
        .hotline()
        .offer(&id)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("no offer `{id}`")))?;
    if offer.record.lawyer != me {
        return Err(Problem::forbidden("this offer is another lawyer's"));
    }
    if !offer.open(wall_ms()) {
        return Err(gone());
    }
    let record = AcceptRecord {
        offer: id,
        call: offer.record.call.clone(),
        lawyer: me.clone(),
        site: node.config.site.clone(),
    };
    write(&node, hotline::SCOPE, hotline::KIND_ACCEPT, &record).await?;
    audit_event(&node, &me, "hotline.answer", &record.call, from).await;
    let media_ready = media_ready(&node, &me).await;
    let view = node.views.hotline();
    let call = view
        .call(&record.call)
        .filter(|c| c.answer.as_ref().is_some_and(|a| a.lawyer == me))
        .ok_or_else(gone)?;
    Ok(Json(current_call(&node, call, &me, media_ready)))
}

/// Ends the call (or the callback); the lawyer goes to after-call work.
#[utoipa::path(post, path = "/api/v1/hotline/calls/{call}/end", tag = "hotline",
    params(("call" = String, Path, description = "Call id")),
    responses(
        (status = 204, description = "Ended"),
        (status = 403, description = "Not this lawyer's call"),
        (status = 409, description = "The call is not in progress"),
    ))]
async fn end_call(
    State(node): State<Arc<Node>>,
    DutyLawyer(staff): DutyLawyer,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let me = staff.account.username.clone();
    let call = known_call(&node, &id)?;
    if call.answer.as_ref().is_none_or(|a| a.lawyer != me) {
        return Err(Problem::forbidden(
            "this call was answered by another lawyer",
        ));
    }
    if call.status() != CallStatus::Connected {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not_in_call",
            "the call is not in progress",
        ));
    }
    call_event(&node, &id, CallEvent::Ended, None, Some(me.clone())).await?;
    let until = wall_ms() + u64::from(schedule(&node).after_call_seconds) * 1000;
    set_lawyer(&node, &me, LawyerState::AfterCall, Some(until)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// One of the topics.
    category: String,
    note: String,
}

/// The lawyer's note and category of a call they answered.
#[utoipa::path(post, path = "/api/v1/hotline/calls/{call}/note", tag = "hotline",
    params(("call" = String, Path, description = "Call id")), request_body = NoteRequest,
    responses(
        (status = 204, description = "Kept"),
        (status = 400, description = "Unknown category, empty or long note"),
        (status = 403, description = "Not this lawyer's call"),
    ))]
async fn write_note(
    State(node): State<Arc<Node>>,
    DutyLawyer(staff): DutyLawyer,
    Path(id): Path<String>,
    Body(req): Body<NoteRequest>,
) -> Result<StatusCode, Problem> {
    let me = staff.account.username.clone();
    let call = known_call(&node, &id)?;
    if call.answer.as_ref().is_none_or(|a| a.lawyer != me) {
        return Err(Problem::forbidden(
            "this call was answered by another lawyer",
        ));
    }
    check_topic(Some(&req.category))?;
    check_text("note", &req.note, "note_missing")?;
    let record = NoteRecord {
        call: id,
        by: me,
        category: req.category,
        note: req.note,
    };
    write(&node, hotline::SCOPE, hotline::KIND_NOTE, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    text: String,
}

/// A lawyer answers a question left outside duty hours.
#[utoipa::path(post, path = "/api/v1/hotline/questions/{question}/answer", tag = "hotline",
    params(("question" = String, Path, description = "Question id")),
    request_body = AnswerRequest,
    responses(
        (status = 204, description = "Answered"),
        (status = 400, description = "Empty or long answer"),
        (status = 404, description = "No such question"),
        (status = 409, description = "Answered already"),
    ))]
async fn answer_question(
    State(node): State<Arc<Node>>,
    DutyLawyer(staff): DutyLawyer,
    Path(id): Path<String>,
    Body(req): Body<AnswerRequest>,
) -> Result<StatusCode, Problem> {
    check_text("text", &req.text, "text_missing")?;
    let answered = node
        .views
        .hotline()
        .question(&id)
        .map(|q| q.answer.is_some())
        .ok_or_else(|| Problem::not_found(format!("no question `{id}`")))?;
    if answered {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "already_answered",
            "another lawyer answered this question already",
        ));
    }
    let record = AnswerRecord {
        question: id,
        by: staff.account.username,
        text: req.text,
    };
    write(&node, hotline::SCOPE, hotline::KIND_ANSWER, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Calls that joined since then, ms since the Unix epoch. Default: the last 24 hours.
    since_ms: Option<u64>,
}

/// The hotline's figures, overall and per lawyer.
#[utoipa::path(get, path = "/api/v1/hotline/stats", tag = "hotline", params(StatsQuery),
    responses(
        (status = 200, description = "The figures", body = Stats),
        (status = 403, description = "Not a duty lawyer, admin or viewer"),
    ))]
async fn stats(
    State(node): State<Arc<Node>>,
    staff: Staff,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Stats>, Problem> {
    let allowed = [Role::DutyLawyer, Role::Admin, Role::Viewer]
        .iter()
        .any(|r| staff.account.has_role(*r));
    if !allowed {
        return Err(Problem::forbidden(
            "the hotline's figures are for duty lawyers, admins and viewers",
        ));
    }
    let since = q
        .since_ms
        .unwrap_or_else(|| wall_ms().saturating_sub(hotline::STATS_WINDOW_MS));
    Ok(Json(node.views.hotline().stats(since)))
}

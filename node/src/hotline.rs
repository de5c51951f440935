//! The legal-advice video hotline: one queue of callers for the whole mesh, answered by the
//! duty lawyers on shift at any site (see docs/hotline.md).
//!
//! Everything is a record in scope [`SCOPE`]; the queue, the lawyers' states and the figures are
//! a view of them that every node derives alike. Offers are written by one node only, the
//! hotline's home (the bureau), in [`dispatch`]; whether an offer was taken is settled from the
//! records alone (see [`Hotline::settle`]), so that every node agrees on who answered a call.

pub mod dispatch;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use huiyan_mesh::replica::Record;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use schedule::{Schedule, Shift};

/// Scope of every hotline record: held by every site (a lawyer anywhere may take any call).
pub const SCOPE: &str = "hotline";

pub const KIND_SCHEDULE: &str = "hotline.schedule";
pub const KIND_CALL: &str = "hotline.call";
pub const KIND_CALL_STATE: &str = "hotline.call.state";
pub const KIND_LAWYER: &str = "hotline.lawyer";
pub const KIND_OFFER: &str = "hotline.offer";
pub const KIND_OFFER_END: &str = "hotline.offer.end";
pub const KIND_ACCEPT: &str = "hotline.accept";
pub const KIND_NOTE: &str = "hotline.note";
pub const KIND_RATING: &str = "hotline.rating";
pub const KIND_QUESTION: &str = "hotline.question";
pub const KIND_ANSWER: &str = "hotline.answer";

/// How long an offer waits for the lawyer, ms.
pub const OFFER_MS: u64 = 20_000;
/// A waiting caller not heard from for this long is dropped, ms.
pub const DROP_AFTER_MS: u64 = 15_000;
/// A dropped caller who returns within this time gets their place back, ms.
pub const REJOIN_WITHIN_MS: u64 = 120_000;
/// Talk time assumed for the expected wait until a call has ended, seconds.
pub const DEFAULT_TALK_SECONDS: u64 = 5 * 60;
/// Answered within this many seconds counts for the service level.
pub const SERVICE_LEVEL_SECONDS: u64 = 60;
/// The figures cover the last 24 hours unless asked otherwise, ms.
pub const STATS_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Longest question or note, characters.
pub const MAX_TEXT: usize = 2000;

/// Topics a caller may choose, and categories of the lawyer's note: (id, Chinese, English,
/// Korean).
pub const TOPICS: [(&str, &str, &str, &str); 7] = [
    ("consumer", "消费纠纷", "Consumer", "소비자 분쟁"),
    ("labour", "劳动争议", "Labour", "노동 분쟁"),
    ("family", "婚姻家庭", "Marriage and family", "혼인·가족"),
    ("traffic", "交通事故", "Traffic accident", "교통사고"),
    (
        "property",
        "房产物业",
        "Property and housing",
        "부동산·주택",
    ),
    ("contract", "合同纠纷", "Contract", "계약 분쟁"),
    ("other", "其他", "Other", "기타"),
];

pub fn is_topic(id: &str) -> bool {
    TOPICS.iter().any(|(t, ..)| *t == id)
}

/// The UI language of a caller (the lawyer sees it with the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Zh,
    En,
    Ko,
}

// ----- Records ------------------------------------------------------------------------------

/// `hotline.call`: a caller joined the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call: String,
    /// The site whose node the caller talks to (the media room's home).
    pub entry_site: String,
    #[serde(default)]
    pub topic: Option<String>,
    pub lang: Lang,
    /// A callback request from the start (the caller does not wait on the line).
    #[serde(default)]
    pub callback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// What happened to a call, as `hotline.call.state` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallEvent {
    /// The caller's page stopped asking (the caller keeps their place for a while).
    Dropped,
    /// The dropped caller came back.
    Back,
    /// The caller asked to be called back instead of waiting (with a phone number).
    Callback,
    /// The caller left the queue before being answered.
    Left,
    /// The caller was dropped for too long.
    Abandoned,
    /// The answered call ended (either side hung up, or the callback was made).
    Ended,
}

/// `hotline.call.state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallStateRecord {
    pub call: String,
    pub event: CallEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Username of the lawyer, when one acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A lawyer's state, as they (or the dispatcher) set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LawyerState {
    Available,
    Break,
    AfterCall,
    Offline,
    /// Derived, never recorded: in a call.
    OnCall,
}

/// `hotline.lawyer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LawyerRecord {
    pub username: String,
    /// The site whose console the lawyer uses.
    pub site: String,
    pub state: LawyerState,
    /// Why (`missed_offer` when the dispatcher paused the lawyer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `after_call`: when the lawyer is available again by themselves, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// `hotline.offer`: written by the home only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferRecord {
    pub offer: String,
    pub call: String,
    pub lawyer: String,
    pub site: String,
    /// The offer may be accepted until then, ms since the Unix epoch.
    pub expires_ms: u64,
}

/// Why an offer ended without an acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferEnd {
    /// Not accepted in time: the lawyer is paused.
    Expired,
    /// The lawyer went away, or the caller did.
    Withdrawn,
}

/// `hotline.offer.end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferEndRecord {
    pub offer: String,
    pub reason: OfferEnd,
}

/// `hotline.accept`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptRecord {
    pub offer: String,
    pub call: String,
    pub lawyer: String,
    pub site: String,
}

/// `hotline.note`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NoteRecord {
    pub call: String,
    pub by: String,
    pub category: String,
    pub note: String,
}

/// `hotline.rating`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingRecord {
    pub call: String,
    pub stars: u8,
}

/// `hotline.question`: left outside duty hours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionRecord {
    pub question: String,
    pub entry_site: String,
    #[serde(default)]
    pub topic: Option<String>,
    pub text: String,
    pub phone: String,
    pub lang: Lang,
}

/// `hotline.answer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    pub question: String,
    pub by: String,
    pub text: String,
}

// ----- The view -----------------------------------------------------------------------------

/// Where a call stands, derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Waiting,
    Callback,
    Dropped,
    Connected,
    Ended,
    Left,
    Abandoned,
}

impl CallStatus {
    /// In the queue: waiting on the line, or for a callback.
    pub fn queued(self) -> bool {
        matches!(self, CallStatus::Waiting | CallStatus::Callback)
    }

    pub fn finished(self) -> bool {
        matches!(
            self,
            CallStatus::Ended | CallStatus::Left | CallStatus::Abandoned
        )
    }
}

/// Who took a call, settled from the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub offer: String,
    pub lawyer: String,
    pub site: String,
    pub at_ms: u64,
}

/// A call as the view holds it.
#[derive(Debug, Clone)]
pub struct Call {
    pub record: CallRecord,
    /// Queue order: (hlc, origin) of the call record.
    pub order: (u64, String),
    pub joined_ms: u64,
    /// The newest event other than `Ended`, by (hlc, origin).
    event: Option<(u64, String, CallEvent, u64)>,
    pub callback_phone: Option<String>,
    pub answer: Option<Answer>,
    pub ended_ms: Option<u64>,
    pub note: Option<NoteRecord>,
    pub rating: Option<u8>,
    /// Offers of this call, oldest first.
    pub offers: Vec<String>,
}

impl Call {
    pub fn status(&self) -> CallStatus {
        if self.ended_ms.is_some() {
            return if self.answer.is_some() {
                CallStatus::Ended
            } else {
                CallStatus::Left
            };
        }
        if self.answer.is_some() {
            return CallStatus::Connected;
        }
        match self.event.as_ref().map(|e| e.2) {
            Some(CallEvent::Left) => CallStatus::Left,
            Some(CallEvent::Abandoned) => CallStatus::Abandoned,
            Some(CallEvent::Dropped) => CallStatus::Dropped,
            _ if self.callback_phone.is_some() => CallStatus::Callback,
            _ => CallStatus::Waiting,
        }
    }

    /// When the newest event happened (for a dropped call: since when), ms.
    pub fn event_ms(&self) -> Option<u64> {
        self.event.as_ref().map(|e| e.3)
    }

    /// Seconds from joining to being answered.
    pub fn wait_s(&self) -> Option<u64> {
        self.answer
            .as_ref()
            .map(|a| a.at_ms.saturating_sub(self.joined_ms) / 1000)
    }

    /// Seconds from being answered to the end.
    pub fn talk_s(&self) -> Option<u64> {
        let at = self.answer.as_ref()?.at_ms;
        Some(self.ended_ms?.saturating_sub(at) / 1000)
    }
}

/// An offer as the view holds it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub record: OfferRecord,
    /// (hlc, origin) of its end record, if any.
    pub ended: Option<(u64, String, OfferEnd)>,
    /// Acceptances: (hlc, origin, time).
    accepts: Vec<(u64, String, u64)>,
}

impl Offer {
    /// Open to acceptance at `now`: neither ended nor run out.
    pub fn open(&self, now: u64) -> bool {
        self.ended.is_none() && now <= self.record.expires_ms
    }

    /// The acceptance that counts, if any: made before the offer ran out and before it ended.
    fn counted_accept(&self) -> Option<&(u64, String, u64)> {
        self.accepts
            .iter()
            .filter(|(hlc, origin, at)| {
                *at <= self.record.expires_ms
                    && self
                        .ended
                        .as_ref()
                        .is_none_or(|(eh, eo, _)| (hlc, origin) < (eh, eo))
            })
            .min_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
    }
}

/// A lawyer as the view holds them.
#[derive(Debug, Clone)]
pub struct Lawyer {
    pub record: LawyerRecord,
    version: (u64, String),
    /// Since when the recorded state holds, ms.
    pub since_ms: u64,
}

/// A question left outside duty hours, and its answer.
#[derive(Debug, Clone)]
pub struct Question {
    pub record: QuestionRecord,
    pub asked_ms: u64,
    pub answer: Option<(AnswerRecord, u64)>,
}

/// Everything the hotline derives from the logs.
#[derive(Debug, Default)]
pub struct Hotline {
    schedule: Option<(u64, String, Schedule)>,
    calls: BTreeMap<String, Call>,
    offers: BTreeMap<String, Offer>,
    lawyers: BTreeMap<String, Lawyer>,
    questions: BTreeMap<String, Question>,
    /// Records that came before the call or offer they are about, replayed when it arrives.
    early: Vec<Record>,
}

fn version(r: &Record) -> (u64, String) {
    (r.hlc, r.origin_peer.clone())
}

impl Hotline {
    pub fn apply(&mut self, r: &Record) {
        if r.withheld || !r.kind.starts_with("hotline.") {
            return;
        }
        // The error's text may quote a field (a phone number): only its category is logged.
        if let Err(e) = self.apply_one(r) {
            tracing::warn!(origin = %r.origin, seq = r.seq, kind = %r.kind, error = ?e.classify(),
                "unreadable hotline record ignored");
        }
    }

    fn apply_one(&mut self, r: &Record) -> Result<(), serde_json::Error> {
        let p = r.payload.clone();
        match r.kind.as_str() {
            KIND_SCHEDULE => {
                let s: Schedule = serde_json::from_value(p)?;
                if self
                    .schedule
                    .as_ref()
                    .is_none_or(|(h, o, _)| (r.hlc, &r.origin_peer) > (*h, o))
                {
                    self.schedule = Some((r.hlc, r.origin_peer.clone(), s));
                }
            }
            KIND_CALL => {
                let c: CallRecord = serde_json::from_value(p)?;
                let id = c.call.clone();
                self.calls.entry(id.clone()).or_insert_with(|| Call {
                    callback_phone: c.callback.then(|| c.phone.clone()).flatten(),
                    record: c,
                    order: version(r),
                    joined_ms: r.time_ms,
                    event: None,
                    answer: None,
                    ended_ms: None,
                    note: None,
                    rating: None,
                    offers: Vec::new(),
                });
                self.replay_early(&id);
            }
            KIND_CALL_STATE => {
                let s: CallStateRecord = serde_json::from_value(p)?;
                let Some(call) = self.calls.get_mut(&s.call) else {
                    self.early.push(r.clone());
                    return Ok(());
                };
                match s.event {
                    CallEvent::Ended => {
                        call.ended_ms = Some(call.ended_ms.map_or(r.time_ms, |t| t.min(r.time_ms)));
                    }
                    event => {
                        if event == CallEvent::Callback {
                            call.callback_phone = s.phone.or(call.callback_phone.take());
                        }
                        let newer = call
                            .event
                            .as_ref()
                            .is_none_or(|(h, o, _, _)| (r.hlc, &r.origin_peer) > (*h, o));
                        // Leaving and abandoning are final; a later event cannot undo them.
                        let final_now = call
                            .event
                            .as_ref()
                            .is_some_and(|e| matches!(e.2, CallEvent::Left | CallEvent::Abandoned));
                        if newer && !final_now {
                            call.event = Some((r.hlc, r.origin_peer.clone(), event, r.time_ms));
                        }
                    }
                }
            }
            KIND_LAWYER => {
                let l: LawyerRecord = serde_json::from_value(p)?;
                let newer = self
                    .lawyers
                    .get(&l.username)
                    .is_none_or(|old| version(r) > old.version);
                if newer {
                    self.lawyers.insert(
                        l.username.clone(),
                        Lawyer {
                            record: l,
                            version: version(r),
                            since_ms: r.time_ms,
                        },
                    );
                }
            }
            KIND_OFFER => {
                let o: OfferRecord = serde_json::from_value(p)?;
                let Some(call) = self.calls.get_mut(&o.call) else {
                    self.early.push(r.clone());
                    return Ok(());
                };
                if !call.offers.contains(&o.offer) {
                    call.offers.push(o.offer.clone());
                }
                let id = o.offer.clone();
                self.offers.entry(id.clone()).or_insert(Offer {
                    record: o,
                    ended: None,
                    accepts: Vec::new(),
                });
                self.replay_early(&id);
            }
            KIND_OFFER_END => {
                let e: OfferEndRecord = serde_json::from_value(p)?;
                let Some(offer) = self.offers.get_mut(&e.offer) else {
                    self.early.push(r.clone());
                    return Ok(());
                };
                let earlier = offer
                    .ended
                    .as_ref()
                    .is_none_or(|(h, o, _)| (r.hlc, &r.origin_peer) < (*h, o));
                if earlier {
                    offer.ended = Some((r.hlc, r.origin_peer.clone(), e.reason));
                }
                let call = offer.record.call.clone();
                self.settle(&call);
            }
            KIND_ACCEPT => {
                let a: AcceptRecord = serde_json::from_value(p)?;
                let Some(offer) = self.offers.get_mut(&a.offer) else {
                    self.early.push(r.clone());
                    return Ok(());
                };
                if offer.record.lawyer == a.lawyer && offer.record.call == a.call {
                    offer
                        .accepts
                        .push((r.hlc, r.origin_peer.clone(), r.time_ms));
                }
                self.settle(&a.call);
            }
            KIND_NOTE => {
                let n: NoteRecord = serde_json::from_value(p)?;
                match self.calls.get_mut(&n.call) {
                    Some(call) => call.note = Some(n),
                    None => self.early.push(r.clone()),
                }
            }
            KIND_RATING => {
                let n: RatingRecord = serde_json::from_value(p)?;
                match self.calls.get_mut(&n.call) {
                    Some(call) => call.rating = Some(n.stars),
                    None => self.early.push(r.clone()),
                }
            }
            KIND_QUESTION => {
                let q: QuestionRecord = serde_json::from_value(p)?;
                let id = q.question.clone();
                self.questions.entry(id.clone()).or_insert(Question {
                    record: q,
                    asked_ms: r.time_ms,
                    answer: None,
                });
                self.replay_early(&id);
            }
            KIND_ANSWER => {
                let a: AnswerRecord = serde_json::from_value(p)?;
                match self.questions.get_mut(&a.question) {
                    Some(q) => q.answer = Some((a, r.time_ms)),
                    None => self.early.push(r.clone()),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies again the records that waited for `id` (a call, an offer or a question).
    fn replay_early(&mut self, id: &str) {
        let waiting: Vec<Record> = {
            let (about, rest) = std::mem::take(&mut self.early).into_iter().partition(|r| {
                r.payload
                    .as_object()
                    .is_some_and(|o| o.values().any(|v| v.as_str() == Some(id)))
            });
            self.early = rest;
            about
        };
        for r in waiting {
            self.apply(&r);
        }
    }

    /// Who answered `call`: the earliest counted acceptance over all its offers. Every node
    /// holding the same records settles the same way, whatever order they came in.
    fn settle(&mut self, call_id: &str) {
        let Some(call) = self.calls.get(call_id) else {
            return;
        };
        let best = call
            .offers
            .iter()
            .filter_map(|id| self.offers.get(id))
            .filter_map(|o| o.counted_accept().map(|a| (a, o)))
            .min_by(|(a, _), (b, _)| (a.0, &a.1).cmp(&(b.0, &b.1)))
            .map(|((_, _, at), o)| Answer {
                offer: o.record.offer.clone(),
                lawyer: o.record.lawyer.clone(),
                site: o.record.site.clone(),
                at_ms: *at,
            });
        if let Some(call) = self.calls.get_mut(call_id) {
            call.answer = best;
        }
    }

    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref().map(|(_, _, s)| s)
    }

    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    pub fn offer(&self, id: &str) -> Option<&Offer> {
        self.offers.get(id)
    }

    pub fn question(&self, id: &str) -> Option<&Question> {
        self.questions.get(id)
    }

    pub fn questions(&self) -> impl Iterator<Item = &Question> {
        self.questions.values()
    }

    pub fn lawyer(&self, username: &str) -> Option<&Lawyer> {
        self.lawyers.get(username)
    }

    pub fn lawyers(&self) -> impl Iterator<Item = &Lawyer> {
        self.lawyers.values()
    }

    /// The open offer of `call` at `now`, if any.
    pub fn open_offer(&self, call: &Call, now: u64) -> Option<&Offer> {
        let offer = self.offers.get(call.offers.last()?)?;
        (call.answer.is_none() && offer.open(now)).then_some(offer)
    }

    /// The open offer made to `lawyer` at `now`, if any.
    pub fn offer_to(&self, lawyer: &str, now: u64) -> Option<&Offer> {
        self.calls
            .values()
            .filter_map(|c| self.open_offer(c, now))
            .find(|o| o.record.lawyer == lawyer)
    }

    /// The call `lawyer` is in, if any.
    pub fn current_call(&self, lawyer: &str) -> Option<&Call> {
        self.calls.values().find(|c| {
            c.status() == CallStatus::Connected
                && c.answer.as_ref().is_some_and(|a| a.lawyer == lawyer)
        })
    }

    /// The lawyer's state, with being in a call derived.
    pub fn state_of(&self, lawyer: &Lawyer) -> LawyerState {
        if self.current_call(&lawyer.record.username).is_some() {
            LawyerState::OnCall
        } else {
            lawyer.record.state
        }
    }

    /// The queue: calls waiting on the line or for a callback, first come first served.
    pub fn queue(&self) -> Vec<&Call> {
        let mut q: Vec<&Call> = self
            .calls
            .values()
            .filter(|c| c.status().queued())
            .collect();
        q.sort_by(|a, b| a.order.cmp(&b.order));
        q
    }

    /// A call's place in the queue (1 = next). A dropped call is given the place it will have
    /// when its caller returns.
    pub fn position(&self, call: &Call) -> Option<usize> {
        let status = call.status();
        if !(status.queued() || status == CallStatus::Dropped) {
            return None;
        }
        let ahead = self
            .calls
            .values()
            .filter(|c| c.status().queued() && c.order < call.order)
            .count();
        Some(ahead + 1)
    }

    /// Lawyers available for a call now.
    pub fn lawyers_available(&self) -> usize {
        self.lawyers()
            .filter(|l| self.state_of(l) == LawyerState::Available)
            .count()
    }

    /// Lawyers taking calls now (available or in a call).
    pub fn working_lawyers(&self) -> usize {
        self.lawyers
            .values()
            .filter(|l| {
                matches!(
                    self.state_of(l),
                    LawyerState::Available | LawyerState::OnCall
                )
            })
            .count()
    }

    /// The expected wait at `position`: the median talk time of the last 50 calls (or
    /// [`DEFAULT_TALK_SECONDS`]) for every call ahead, shared by the lawyers at work.
    pub fn expected_wait(&self, position: usize) -> u64 {
        let mut ended: Vec<&Call> = self
            .calls
            .values()
            .filter(|c| c.talk_s().is_some())
            .collect();
        ended.sort_by_key(|c| std::cmp::Reverse(c.ended_ms));
        let talks: Vec<u64> = ended.iter().take(50).filter_map(|c| c.talk_s()).collect();
        let typical = crate::mediation::typical_length(talks, DEFAULT_TALK_SECONDS, 30);
        crate::mediation::wait_for(position, typical, self.working_lawyers())
    }

    /// The figures of the calls that joined since `since_ms`.
    pub fn stats(&self, since_ms: u64) -> Stats {
        let calls: Vec<&Call> = self
            .calls
            .values()
            .filter(|c| c.joined_ms >= since_ms)
            .collect();
        let answered: Vec<&Call> = calls
            .iter()
            .copied()
            .filter(|c| c.answer.is_some())
            .collect();
        let abandoned = calls
            .iter()
            .filter(|c| matches!(c.status(), CallStatus::Left | CallStatus::Abandoned))
            .count();
        let mut waits: Vec<u64> = answered.iter().filter_map(|c| c.wait_s()).collect();
        waits.sort_unstable();
        let within = waits
            .iter()
            .filter(|w| **w <= SERVICE_LEVEL_SECONDS)
            .count();
        let settled = answered.len() + abandoned;
        let mut per_lawyer: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
        for c in &answered {
            if let Some(a) = &c.answer {
                per_lawyer.entry(a.lawyer.as_str()).or_default().push(c);
            }
        }
        Stats {
            since_ms,
            waiting: calls.iter().filter(|c| c.status().queued()).count(),
            answered: answered.len(),
            abandoned,
            avg_wait_s: mean(&waits),
            p90_wait_s: percentile(&waits, 0.9),
            service_level: (settled > 0).then(|| within as f64 / settled as f64),
            lawyers: per_lawyer
                .into_iter()
                .map(|(username, calls)| {
                    let talks: Vec<u64> = calls.iter().filter_map(|c| c.talk_s()).collect();
                    let ratings: Vec<u64> = calls
                        .iter()
                        .filter_map(|c| c.rating.map(u64::from))
                        .collect();
                    LawyerStats {
                        username: username.to_owned(),
                        answered: calls.len(),
                        avg_talk_s: mean(&talks),
                        avg_rating: mean(&ratings),
                    }
                })
                .collect(),
        }
    }
}

fn mean(values: &[u64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<u64>() as f64 / values.len() as f64)
}

/// The `p` percentile of sorted `values`, nearest rank.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The hotline's figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    pub since_ms: u64,
    /// Calls in the queue now.
    pub waiting: usize,
    pub answered: usize,
    /// Left or dropped for good before being answered.
    pub abandoned: usize,
    /// Average wait of the answered calls, seconds.
    pub avg_wait_s: Option<f64>,
    /// 90th percentile of the wait of the answered calls, seconds (nearest rank).
    pub p90_wait_s: Option<u64>,
    /// Share of the answered and abandoned calls answered within 60 s.
    pub service_level: Option<f64>,
    pub lawyers: Vec<LawyerStats>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LawyerStats {
    pub username: String,
    pub answered: usize,
    /// Average time in the call, seconds.
    pub avg_talk_s: Option<f64>,
    /// Average of the callers' ratings (1 to 5).
    pub avg_rating: Option<f64>,
}

/// The hotline's figures in `/metrics` (the last 24 hours), refreshed by the hotline's tick.
#[derive(Debug, Default)]
pub struct HotlineMetrics {
    waiting: Gauge,
    answered: Gauge,
    abandoned: Gauge,
    lawyers_available: Gauge,
    wait_p90_seconds: Gauge,
    service_level: Gauge<f64, AtomicU64>,
}

impl HotlineMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let mut r = |name: &str, help: &str, metric: Gauge| {
            registry.register(format!("hotline_{name}"), help, metric);
        };
        r(
            "waiting",
            "Hotline calls in the queue now",
            self.waiting.clone(),
        );
        r(
            "answered",
            "Hotline calls answered in the last 24 hours",
            self.answered.clone(),
        );
        r(
            "abandoned",
            "Hotline calls abandoned in the last 24 hours",
            self.abandoned.clone(),
        );
        r(
            "lawyers_available",
            "Duty lawyers available now",
            self.lawyers_available.clone(),
        );
        r(
            "wait_p90_seconds",
            "90th percentile of the wait of answered hotline calls, last 24 hours",
            self.wait_p90_seconds.clone(),
        );
        registry.register(
            "hotline_service_level",
            "Share of hotline calls answered within 60 s, last 24 hours",
            self.service_level.clone(),
        );
    }

    /// Sets the gauges from the view (when `/metrics` is read).
    pub fn update(&self, view: &Hotline, now: u64) {
        let stats = view.stats(now.saturating_sub(STATS_WINDOW_MS));
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.waiting.set(n(stats.waiting));
        self.answered.set(n(stats.answered));
        self.abandoned.set(n(stats.abandoned));
        self.lawyers_available.set(n(view.lawyers_available()));
        self.wait_p90_seconds.set(
            stats
                .p90_wait_s
                .map_or(0, |w| i64::try_from(w).unwrap_or(i64::MAX)),
        );
        self.service_level.set(stats.service_level.unwrap_or(0.0));
    }
}

#[cfg(test)]
mod tests;

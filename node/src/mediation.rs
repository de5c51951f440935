//! Video mediation (天池和 and the bureau's mediation centre): calls from the public, the
//! queue of each mediation room, cases, and agreements signed by both parties.
//!
//! Everything is a record, and the state is a view of the records:
//!
//! | kind | written when |
//! | --- | --- |
//! | `mediation.call` | a caller joins a room's queue (form, consent) or asks for a callback |
//! | `mediation.call.state` | a call is taken, left, or ends |
//! | `mediation.case` | a case is opened or changed (the whole case; the newest version wins) |
//! | `mediation.agreement` | a mediator drafts the agreement for both parties |
//! | `mediation.confirm` | a party confirms the agreement with its name and drawn signature |
//! | `mediation.consent` | the invited party consents (or not) to the session and its recording |
//! | `mediation.presence` | a room becomes staffed or unstaffed |
//! | `mediation.recording` | a recording of one participant is complete and stored |
//!
//! Records about a call go into scope `mediation/<site>`, where the site is the caller's entry
//! site, or the room's own site when the entry site holds every scope (the hub, the bureau).
//! Either way the entry site, the room's site, the bureau and the hub hold them, and no other
//! scenic room or office does. Presence records (no personal data) go into `mediation`.

use std::collections::BTreeMap;

use huiyan_mesh::replica::Record;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const KIND_CALL: &str = "mediation.call";
pub const KIND_CALL_STATE: &str = "mediation.call.state";
pub const KIND_CASE: &str = "mediation.case";
pub const KIND_AGREEMENT: &str = "mediation.agreement";
pub const KIND_CONFIRM: &str = "mediation.confirm";
pub const KIND_CONSENT: &str = "mediation.consent";
pub const KIND_PRESENCE: &str = "mediation.presence";
pub const KIND_RECORDING: &str = "mediation.recording";
/// Scope of presence records.
pub const PRESENCE_SCOPE: &str = "mediation";

/// Longest free text of a form field, in characters.
pub const MAX_TEXT: usize = 2000;
/// Longest name, in characters.
pub const MAX_NAME: usize = 100;
/// The median of recent session `lengths` (seconds), `default` when there are none yet, at least
/// `floor`: what a session typically takes, for expected waits.
pub fn typical_length(mut lengths: Vec<u64>, default: u64, floor: u64) -> u64 {
    lengths.sort_unstable();
    lengths
        .get(lengths.len() / 2)
        .copied()
        .unwrap_or(default)
        .max(floor)
}

/// The expected wait, seconds, at queue `position` (1 is next) with `servers` serving sessions
/// of `typical` seconds.
pub fn wait_for(position: usize, typical: u64, servers: usize) -> u64 {
    position.saturating_sub(1) as u64 * typical / servers.max(1) as u64
}

/// What `phone_invalid` says.
pub const PHONE_RULE: &str = "`phone` must be 5 to 20 digits (with + - ( ) and spaces allowed)";

/// Whether `phone` looks like a phone number: 5 to 20 digits, with `+ - ( )` and spaces.
pub fn phone_ok(phone: &str) -> bool {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    phone
        .chars()
        .all(|c| c.is_ascii_digit() || "+- ()".contains(c))
        && (5..=20).contains(&digits)
}
/// Largest drawn signature, PNG bytes (a 600×200 canvas is 10–30 KB).
pub const MAX_SIGNATURE: usize = 40 * 1024;
/// Expected length of a mediation session when none has finished yet: 15 minutes.
pub const DEFAULT_SESSION_SECONDS: u64 = 15 * 60;

/// Today's date in China (UTC+8) as `yyyymmdd`, for case numbers.
pub fn today() -> String {
    let secs = huiyan_mesh::replica::wall_ms() / 1000 + 8 * 3600;
    let days = (secs / 86_400) as i64;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// The scope of the records of a call entering at `entry` for a room at `room_site`.
pub fn call_scope(entry_holds_everything: bool, entry: &str, room_site: &str) -> String {
    if entry_holds_everything {
        format!("mediation/{room_site}")
    } else {
        format!("mediation/{entry}")
    }
}

/// The UI language a caller chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Zh,
    En,
    Ko,
}

/// What a caller writes before joining the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallForm {
    /// What happened, in the caller's words.
    pub what_happened: String,
    /// Who the dispute is with (a shop, a driver, a hotel...).
    pub other_party: String,
    /// The amount in dispute, in yuan.
    #[serde(default)]
    pub amount_cny: Option<f64>,
    /// The caller's name, for the case and the agreement.
    #[serde(default)]
    pub name: Option<String>,
    /// A phone number for a callback (optional).
    #[serde(default)]
    pub phone: Option<String>,
}

impl CallForm {
    /// Everything wrong with the form, as error codes with English messages.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let chars = |s: &str| s.chars().count();
        if self.what_happened.trim().is_empty() {
            out.push(("what_happened_missing", "say what happened".to_owned()));
        } else if chars(&self.what_happened) > MAX_TEXT {
            out.push((
                "what_happened_too_long",
                format!("`what_happened` is longer than {MAX_TEXT} characters"),
            ));
        }
        if self.other_party.trim().is_empty() {
            out.push(("other_party_missing", "name the other party".to_owned()));
        } else if chars(&self.other_party) > MAX_NAME {
            out.push((
                "other_party_too_long",
                format!("`other_party` is longer than {MAX_NAME} characters"),
            ));
        }
        if let Some(a) = self.amount_cny
            && !(a.is_finite() && (0.0..=1e9).contains(&a))
        {
            out.push((
                "amount_invalid",
                "`amount_cny` must be a number of yuan from 0 to 1,000,000,000".to_owned(),
            ));
        }
        if self.name.as_deref().is_some_and(|n| chars(n) > MAX_NAME) {
            out.push((
                "name_too_long",
                format!("`name` is longer than {MAX_NAME} characters"),
            ));
        }
        if self.phone.as_deref().is_some_and(|p| !phone_ok(p)) {
            out.push(("phone_invalid", PHONE_RULE.to_owned()));
        }
        out
    }
}

/// The caller's consent, required before a call is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// To an online (video) mediation session.
    pub online: bool,
    /// To the session being recorded and kept with the case.
    pub recording: bool,
}

/// The payload of a `mediation.consent` record: a party's consent given on their own page (the
/// invited party's; the caller's comes with the call). The newest one counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub call: String,
    pub role: PartyRole,
    pub consent: Consent,
}

/// The payload of a `mediation.call` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call: String,
    pub room: String,
    pub room_site: String,
    pub entry_site: String,
    pub lang: Lang,
    pub form: CallForm,
    pub consent: Consent,
    /// The caller asked to be called back instead of waiting.
    #[serde(default)]
    pub callback: bool,
    /// Why the caller is in this room's queue when it is not the room they scanned (failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerouted_from: Option<String>,
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// In the queue.
    Waiting,
    /// Waiting to be called back by phone.
    Callback,
    /// A mediator took it; the session runs in the case's room.
    Taken,
    /// The caller left the queue.
    Left,
    /// The session ended.
    Done,
}

/// The payload of a `mediation.call.state` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallStateRecord {
    pub call: String,
    pub status: CallStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// Username of the mediator, when one acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A case's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    New,
    InMediation,
    Agreed,
    NotAgreed,
    Referred,
    Closed,
}

/// A party's role in a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartyRole {
    /// The caller who asked for mediation (申请人).
    Applicant,
    /// The other party (被申请人).
    Respondent,
}

/// Where a party is during a session: with everyone, or in the private side room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    #[default]
    Main,
    Side,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Party {
    pub role: PartyRole,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default)]
    pub place: Place,
}

/// One step of the mediation, as the mediator notes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub at_ms: u64,
    pub by: String,
    pub text: String,
}

/// The payload of a `mediation.case` record: the whole case as of this version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Case {
    pub case: String,
    /// Human-readable number, `<site>-<yyyymmdd>-<n>`.
    pub number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    pub room: String,
    /// The site whose node runs the case's session.
    pub site: String,
    /// The record scope of the case (see the module docs).
    pub scope: String,
    pub mediator: String,
    pub parties: Vec<Party>,
    pub category: String,
    pub claim: String,
    #[serde(default)]
    pub amount_cny: Option<f64>,
    pub status: CaseStatus,
    pub steps: Vec<Step>,
    pub outcome: String,
    /// The session is being recorded (everyone's page shows it).
    #[serde(default)]
    pub recording: bool,
    pub opened_ms: u64,
}

impl Case {
    /// The media room of the case's session, and of its private side room.
    pub fn media_rooms(&self) -> (String, String) {
        (
            format!("case-{}", self.case),
            format!("case-{}-side", self.case),
        )
    }

    pub fn party(&self, role: PartyRole) -> Option<&Party> {
        self.parties.iter().find(|p| p.role == role)
    }
}

/// The payload of a `mediation.agreement` record: what both parties are asked to sign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgreementDraft {
    pub case: String,
    /// Drafts of a case are numbered from 1; a confirmation names the version it confirms.
    pub version: u32,
    pub terms: Vec<String>,
    pub by: String,
    /// When it was drawn up (the agreement's date), ms since the Unix epoch.
    pub created_ms: u64,
}

/// The payload of a `mediation.confirm` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    pub case: String,
    pub version: u32,
    pub role: PartyRole,
    /// The name the party typed.
    pub name: String,
    /// The drawn signature, PNG, base64.
    pub signature_png: String,
    /// When the party confirmed, ms since the Unix epoch.
    pub signed_ms: u64,
}

/// The payload of a `mediation.presence` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub room: String,
    pub staffed: bool,
}

/// A call as the view holds it.
#[derive(Debug, Clone)]
pub struct Call {
    pub record: CallRecord,
    pub scope: String,
    pub hlc: u64,
    pub created_ms: u64,
    pub status: CallStatus,
    pub status_hlc: u64,
    pub case: Option<String>,
}

/// The payload of a `mediation.recording` record: one participant's WebM file, kept as a blob
/// on the node that recorded it. No personal data: the participant is named by role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingRecord {
    pub case: String,
    /// SHA-256 of the file (lower-case hex): its name in the blob store.
    pub sha256: String,
    /// File size, bytes.
    pub size: u64,
    /// Media duration, milliseconds.
    pub duration_ms: u64,
    /// Whose picture and voice: `mediator`, `applicant`, `respondent` (or `participant`).
    pub role: String,
    /// `main` or `side` room.
    pub room: String,
    /// The site whose node holds the file.
    pub site: String,
    /// Wall-clock start and end, ms since the Unix epoch.
    pub started_ms: u64,
    pub ended_ms: u64,
}

/// A versioned value: the newest by (hlc, origin) wins.
#[derive(Debug, Clone)]
struct Versioned<T> {
    hlc: u64,
    origin: String,
    value: T,
}

fn newer<T>(slot: Option<&Versioned<T>>, r: &Record) -> bool {
    slot.is_none_or(|v| (r.hlc, &r.origin_peer) > (v.hlc, &v.origin))
}

/// Everything mediation derives from the logs.
#[derive(Debug, Default)]
pub struct Mediation {
    calls: BTreeMap<String, Call>,
    cases: BTreeMap<String, Versioned<Case>>,
    /// Newest draft per case.
    drafts: BTreeMap<String, AgreementDraft>,
    /// Confirmations per case, per role (newest wins).
    confirmations: BTreeMap<(String, PartyRole), Confirmation>,
    /// Consents given on a party's page, per call and role (newest wins).
    consents: BTreeMap<(String, PartyRole), Versioned<Consent>>,
    presence: BTreeMap<String, Versioned<bool>>,
    /// Recordings per case, in the order they were stored.
    recordings: BTreeMap<String, Vec<RecordingRecord>>,
    /// Seconds of finished sessions, newest last (at most 50), for the expected wait.
    session_seconds: Vec<u64>,
    /// Taken time per call, to measure session length when it ends.
    taken_ms: BTreeMap<String, u64>,
}

impl Mediation {
    pub fn apply(&mut self, r: &Record) {
        if r.withheld || !r.kind.starts_with("mediation.") {
            return;
        }
        let p = r.payload.clone();
        let ok = match r.kind.as_str() {
            KIND_CALL => serde_json::from_value(p).map(|c| self.apply_call(r, c)),
            KIND_CALL_STATE => serde_json::from_value(p).map(|s| self.apply_state(r, s)),
            KIND_CASE => serde_json::from_value(p).map(|c: Case| {
                if newer(self.cases.get(&c.case), r) {
                    let value = Versioned {
                        hlc: r.hlc,
                        origin: r.origin_peer.clone(),
                        value: c,
                    };
                    self.cases.insert(value.value.case.clone(), value);
                }
            }),
            KIND_AGREEMENT => serde_json::from_value(p).map(|d: AgreementDraft| {
                let replace = self
                    .drafts
                    .get(&d.case)
                    .is_none_or(|old| d.version > old.version);
                if replace {
                    self.drafts.insert(d.case.clone(), d);
                }
            }),
            KIND_CONFIRM => serde_json::from_value(p).map(|c: Confirmation| {
                self.confirmations.insert((c.case.clone(), c.role), c);
            }),
            KIND_CONSENT => serde_json::from_value(p).map(|c: ConsentRecord| {
                let key = (c.call, c.role);
                if newer(self.consents.get(&key), r) {
                    let value = Versioned {
                        hlc: r.hlc,
                        origin: r.origin_peer.clone(),
                        value: c.consent,
                    };
                    self.consents.insert(key, value);
                }
            }),
            KIND_RECORDING => serde_json::from_value(p).map(|rec: RecordingRecord| {
                let list = self.recordings.entry(rec.case.clone()).or_default();
                if !list.iter().any(|old| old.sha256 == rec.sha256) {
                    list.push(rec);
                }
            }),
            KIND_PRESENCE => serde_json::from_value(p).map(|pr: Presence| {
                if newer(self.presence.get(&pr.room), r) {
                    let value = Versioned {
                        hlc: r.hlc,
                        origin: r.origin_peer.clone(),
                        value: pr.staffed,
                    };
                    self.presence.insert(pr.room, value);
                }
            }),
            _ => Ok(()),
        };
        if ok.is_err() {
            tracing::warn!(origin = %r.origin, seq = r.seq, kind = %r.kind, "unreadable record");
        }
    }

    fn apply_call(&mut self, r: &Record, c: CallRecord) {
        let status = if c.callback {
            CallStatus::Callback
        } else {
            CallStatus::Waiting
        };
        // A state record may have arrived first (from another origin); keep it.
        let (status, status_hlc, case) = match self.calls.get(&c.call) {
            Some(old) if old.status_hlc > 0 => (old.status, old.status_hlc, old.case.clone()),
            _ => (status, 0, None),
        };
        self.calls.insert(
            c.call.clone(),
            Call {
                scope: r.scope.clone(),
                hlc: r.hlc,
                created_ms: r.time_ms,
                status,
                status_hlc,
                case,
                record: c,
            },
        );
    }

    fn apply_state(&mut self, r: &Record, s: CallStateRecord) {
        if s.status == CallStatus::Taken {
            self.taken_ms.insert(s.call.clone(), r.time_ms);
        }
        if s.status == CallStatus::Done
            && let Some(t) = self.taken_ms.remove(&s.call)
        {
            if self.session_seconds.len() == 50 {
                self.session_seconds.remove(0);
            }
            self.session_seconds
                .push(r.time_ms.saturating_sub(t) / 1000);
        }
        let entry = self.calls.entry(s.call.clone()).or_insert_with(|| Call {
            // The call itself has not arrived yet: a placeholder the call record fills in.
            record: CallRecord {
                call: s.call.clone(),
                room: String::new(),
                room_site: String::new(),
                entry_site: String::new(),
                lang: Lang::Zh,
                form: CallForm {
                    what_happened: String::new(),
                    other_party: String::new(),
                    amount_cny: None,
                    name: None,
                    phone: None,
                },
                consent: Consent {
                    online: false,
                    recording: false,
                },
                callback: false,
                rerouted_from: None,
            },
            scope: r.scope.clone(),
            hlc: 0,
            created_ms: r.time_ms,
            status: CallStatus::Waiting,
            status_hlc: 0,
            case: None,
        });
        if r.hlc > entry.status_hlc {
            entry.status = s.status;
            entry.status_hlc = r.hlc;
            if s.case.is_some() {
                entry.case = s.case;
            }
        }
    }

    pub fn call(&self, id: &str) -> Option<&Call> {
        self.calls.get(id).filter(|c| c.hlc > 0)
    }

    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.get(id).map(|v| &v.value)
    }

    pub fn cases(&self) -> impl Iterator<Item = &Case> {
        self.cases.values().map(|v| &v.value)
    }

    /// The calls waiting in `room`'s queue, first come first.
    pub fn queue(&self, room: &str) -> Vec<&Call> {
        let mut q: Vec<&Call> = self
            .calls
            .values()
            .filter(|c| c.hlc > 0 && c.record.room == room && c.status == CallStatus::Waiting)
            .collect();
        q.sort_by_key(|c| c.hlc);
        q
    }

    /// Callback requests of `room`, oldest first.
    pub fn callbacks(&self, room: &str) -> Vec<&Call> {
        let mut q: Vec<&Call> = self
            .calls
            .values()
            .filter(|c| c.hlc > 0 && c.record.room == room && c.status == CallStatus::Callback)
            .collect();
        q.sort_by_key(|c| c.hlc);
        q
    }

    /// A call's place in its queue (1 = next), if it is waiting.
    pub fn position(&self, call: &Call) -> Option<usize> {
        self.queue(&call.record.room)
            .iter()
            .position(|c| c.record.call == call.record.call)
            .map(|i| i + 1)
    }

    /// The expected wait at `position` with `mediators` mediators at work: the median length
    /// of the last sessions (or [`DEFAULT_SESSION_SECONDS`]) for every call ahead, shared by
    /// the mediators.
    pub fn expected_wait(&self, position: usize, mediators: usize) -> u64 {
        let typical = typical_length(self.session_seconds.clone(), DEFAULT_SESSION_SECONDS, 60);
        wait_for(position, typical, mediators)
    }

    /// Whether the room was staffed as of the last presence record held.
    pub fn staffed(&self, room: &str) -> bool {
        self.presence.get(room).is_some_and(|v| v.value)
    }

    /// The recordings of `case`, oldest first.
    pub fn recordings(&self, case: &str) -> &[RecordingRecord] {
        self.recordings.get(case).map_or(&[], Vec::as_slice)
    }

    pub fn draft(&self, case: &str) -> Option<&AgreementDraft> {
        self.drafts.get(case)
    }

    /// The consent of a party of `call`: the caller's came with the call; the invited party's
    /// is `None` until they answered on their page.
    pub fn consent(&self, call: &str, role: PartyRole) -> Option<Consent> {
        match role {
            PartyRole::Applicant => self.calls.get(call).map(|c| c.record.consent),
            PartyRole::Respondent => self.consents.get(&(call.to_owned(), role)).map(|v| v.value),
        }
    }

    /// The confirmations of the current draft of `case`.
    pub fn confirmations(&self, case: &str) -> Vec<&Confirmation> {
        let Some(version) = self.drafts.get(case).map(|d| d.version) else {
            return Vec::new();
        };
        self.confirmations
            .iter()
            .filter(|((c, _), conf)| c == case && conf.version == version)
            .map(|(_, conf)| conf)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hlc: u64, kind: &str, payload: impl Serialize) -> Record {
        Record {
            origin: "scenic-2".into(),
            origin_peer: "p".into(),
            seq: hlc,
            time_ms: hlc * 1000,
            hlc,
            scope: "mediation/scenic-2".into(),
            kind: kind.into(),
            payload: serde_json::to_value(payload).unwrap(),
            withheld: false,
            hash: String::new(),
        }
    }

    fn call(id: &str) -> CallRecord {
        CallRecord {
            call: id.into(),
            room: "scenic-2-mediation".into(),
            room_site: "scenic-2".into(),
            entry_site: "scenic-2".into(),
            lang: Lang::Ko,
            form: CallForm {
                what_happened: "charged twice".into(),
                other_party: "a taxi".into(),
                amount_cny: Some(200.0),
                name: None,
                phone: None,
            },
            consent: Consent {
                online: true,
                recording: true,
            },
            callback: false,
            rerouted_from: None,
        }
    }

    #[test]
    fn the_queue_is_first_come_first_served_and_states_apply_in_any_order() {
        let mut m = Mediation::default();
        m.apply(&record(1, KIND_CALL, call("a")));
        m.apply(&record(2, KIND_CALL, call("b")));
        // The state of c arrives before c itself (from another origin).
        let taken = CallStateRecord {
            call: "c".into(),
            status: CallStatus::Taken,
            case: Some("k".into()),
            by: Some("li".into()),
        };
        m.apply(&record(5, KIND_CALL_STATE, taken));
        m.apply(&record(3, KIND_CALL, call("c")));
        let q: Vec<&str> = m
            .queue("scenic-2-mediation")
            .iter()
            .map(|c| c.record.call.as_str())
            .collect();
        assert_eq!(q, ["a", "b"]);
        assert_eq!(m.call("c").unwrap().status, CallStatus::Taken);
        assert_eq!(m.position(m.call("b").unwrap()), Some(2));
        assert_eq!(m.expected_wait(2, 1), DEFAULT_SESSION_SECONDS);
        assert_eq!(m.expected_wait(1, 1), 0);
        let done = CallStateRecord {
            call: "c".into(),
            status: CallStatus::Done,
            case: None,
            by: None,
        };
        m.apply(&record(605, KIND_CALL_STATE, done));
        assert_eq!(m.expected_wait(2, 1), 600);
        assert_eq!(m.expected_wait(3, 2), 600);
    }

    #[test]
    fn the_invited_partys_newest_consent_counts_whatever_the_order() {
        let mut m = Mediation::default();
        m.apply(&record(1, KIND_CALL, call("c1")));
        assert_eq!(
            m.consent("c1", PartyRole::Applicant).map(|c| c.recording),
            Some(true)
        );
        assert_eq!(
            m.consent("c1", PartyRole::Respondent),
            None,
            "not asked yet"
        );
        let answer = |recording| ConsentRecord {
            call: "c1".into(),
            role: PartyRole::Respondent,
            consent: Consent {
                online: true,
                recording,
            },
        };
        // The later answer (yes) arrives first; the earlier one (no) does not undo it.
        m.apply(&record(5, KIND_CONSENT, answer(true)));
        m.apply(&record(3, KIND_CONSENT, answer(false)));
        assert_eq!(
            m.consent("c1", PartyRole::Respondent).map(|c| c.recording),
            Some(true)
        );
    }

    #[test]
    fn forms_say_everything_that_is_wrong() {
        let mut f = call("a").form;
        assert!(f.problems().is_empty());
        f.what_happened = " ".into();
        f.amount_cny = Some(-1.0);
        f.phone = Some("call me".into());
        let codes: Vec<&str> = f.problems().iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codes,
            ["what_happened_missing", "amount_invalid", "phone_invalid"]
        );
    }

    #[test]
    fn today_is_a_date() {
        let t = today();
        assert_eq!(t.len(), 8);
        assert!(t.starts_with("20"), "{t}");
    }

    #[test]
    fn scopes_keep_calls_on_the_sites_that_handle_them() {
        assert_eq!(
            call_scope(false, "scenic-2", "scenic-2"),
            "mediation/scenic-2"
        );
        assert_eq!(
            call_scope(false, "scenic-2", "bureau"),
            "mediation/scenic-2"
        );
        assert_eq!(call_scope(true, "hub", "scenic-2"), "mediation/scenic-2");
    }
}

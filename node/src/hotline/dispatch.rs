//! The hotline's moving parts: the home's dispatcher (offers, their ends, pausing a lawyer who
//! missed one), and on every node the liveness of its own callers and lawyers (dropped callers,
//! consoles gone quiet, after-call work running out).
//!
//! [`decide`] is the dispatcher's whole policy, a pure function of the view, the time and which
//! sites the home reaches; [`run`] applies it and the liveness rules every [`TICK`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huiyan_mesh::replica::wall_ms;

use super::{
    CallEvent, CallStateRecord, Hotline, LawyerRecord, LawyerState, OfferEnd, OfferEndRecord,
    OfferRecord, Schedule,
};
use crate::node::Node;

/// How often the hotline looks at its queue.
pub const TICK: Duration = Duration::from_millis(250);
/// How long the home waits past an offer's end for an acceptance still on its way, ms.
pub const GRACE_MS: u64 = 2_000;
/// A lawyer whose console has not asked for 60 s is taken offline.
pub const CONSOLE_QUIET: Duration = Duration::from_secs(60);
/// A site counts as reachable while its head announcements (every 20 s) keep arriving: one
/// silent for 45 s is treated as cut off, long before its connection times out.
pub const HEARD_WITHIN: Duration = Duration::from_secs(45);

/// What the dispatcher writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// End an offer; pause the lawyer who let it run out.
    End {
        end: OfferEndRecord,
        pause: Option<LawyerRecord>,
    },
    Offer(OfferRecord),
}

/// The dispatcher's decisions at `now`: end offers that ran out or lost their lawyer or caller,
/// then offer the first waiting calls to the free lawyers who have been idle longest.
pub fn decide(
    view: &Hotline,
    schedule: &Schedule,
    now: u64,
    reachable: impl Fn(&str) -> bool,
    mut new_id: impl FnMut() -> String,
) -> Vec<Action> {
    let mut actions = Vec::new();
    // Lawyers with an offer still pending (not ended in the records).
    let mut offered = HashSet::new();
    for call in view.calls() {
        let Some(offer) = call.offers.last().and_then(|id| view.offer(id)) else {
            continue;
        };
        if offer.ended.is_some() || call.answer.is_some() {
            continue;
        }
        // Whatever happens to the offer now, its lawyer gets no other in this round.
        offered.insert(offer.record.lawyer.clone());
        let lawyer = view.lawyer(&offer.record.lawyer);
        let end = |reason| OfferEndRecord {
            offer: offer.record.offer.clone(),
            reason,
        };
        if now > offer.record.expires_ms + GRACE_MS {
            let pause = lawyer
                .filter(|l| l.record.state == LawyerState::Available)
                .map(|l| LawyerRecord {
                    username: l.record.username.clone(),
                    site: l.record.site.clone(),
                    state: LawyerState::Break,
                    reason: Some("missed_offer".into()),
                    until_ms: None,
                });
            actions.push(Action::End {
                end: end(OfferEnd::Expired),
                pause,
            });
            continue;
        }
        let lawyer_gone = lawyer.is_none_or(|l| {
            view.state_of(l) != LawyerState::Available
                || l.record.site != offer.record.site
                || !reachable(&l.record.site)
        });
        if lawyer_gone || !call.status().queued() {
            actions.push(Action::End {
                end: end(OfferEnd::Withdrawn),
                pause: None,
            });
        }
    }

    let mut free: Vec<_> = view
        .lawyers()
        .filter(|l| {
            view.state_of(l) == LawyerState::Available
                && !offered.contains(&l.record.username)
                && reachable(&l.record.site)
                && schedule.on_duty(&l.record.username, now)
        })
        .collect();
    free.sort_by(|a, b| (a.since_ms, &a.record.username).cmp(&(b.since_ms, &b.record.username)));
    let waiting = view.queue().into_iter().filter(|c| {
        let pending = c
            .offers
            .last()
            .and_then(|id| view.offer(id))
            .is_some_and(|o| o.ended.is_none());
        !pending
    });
    for (call, lawyer) in waiting.zip(free) {
        actions.push(Action::Offer(OfferRecord {
            offer: new_id(),
            call: call.record.call.clone(),
            lawyer: lawyer.record.username.clone(),
            site: lawyer.record.site.clone(),
            expires_ms: now + super::OFFER_MS,
        }));
    }
    actions
}

/// Node-local liveness: when this node last heard from each of its callers and lawyers.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    callers: Mutex<HashMap<String, Instant>>,
    consoles: Mutex<HashMap<String, Instant>>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            callers: Mutex::default(),
            consoles: Mutex::default(),
        }
    }
}

impl Liveness {
    pub fn caller_seen(&self, call: &str) {
        let mut m = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(call.to_owned(), Instant::now());
    }

    pub fn console_seen(&self, username: &str) {
        let mut m = self.consoles.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(username.to_owned(), Instant::now());
    }

    /// How long since the caller was heard from; since the node started for a caller never
    /// heard from (this node restarted).
    fn caller_quiet(&self, call: &str) -> Duration {
        let m = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        m.get(call).unwrap_or(&self.started).elapsed()
    }

    fn console_quiet(&self, username: &str) -> Duration {
        let m = self.consoles.lock().unwrap_or_else(|p| p.into_inner());
        m.get(username).unwrap_or(&self.started).elapsed()
    }
}

/// The hotline's home: the roster's bureau.
pub fn home(node: &Node) -> Option<&str> {
    node.roster
        .sites
        .iter()
        .find(|s| s.role == huiyan_mesh::roster::Role::Bureau)
        .map(|s| s.id.as_str())
}

/// Whether `site` is reachable from this node now: see [`HEARD_WITHIN`].
pub fn reachable(node: &Node, site: &str) -> bool {
    node.mesh
        .get()
        .is_some_and(|m| m.is_heard_within(site, HEARD_WITHIN))
}

/// Runs the hotline's rules every [`TICK`] until the node stops.
pub async fn run(node: Arc<Node>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if node.mesh.get().is_none() {
            continue;
        }
        for (kind, payload) in liveness_records(&node) {
            write(&node, kind, payload).await;
        }
        if home(&node) == Some(node.config.site.as_str()) {
            dispatch(&node).await;
        }
    }
}

async fn write(node: &Arc<Node>, kind: &str, payload: impl serde::Serialize) {
    if let Err(e) = crate::api::mediation::write(node, super::SCOPE, kind, payload).await {
        tracing::error!(%kind, error = %e.message, "hotline: cannot write a record");
    }
}

/// The records this node owes about its own callers and lawyers.
fn liveness_records(node: &Node) -> Vec<(&'static str, serde_json::Value)> {
    let now = wall_ms();
    let site = node.config.site.as_str();
    let view = node.views.hotline();
    let mut out = Vec::new();
    let state = |call: &str, event| {
        let r = CallStateRecord {
            call: call.to_owned(),
            event,
            phone: None,
            by: None,
        };
        (
            super::KIND_CALL_STATE,
            serde_json::to_value(r).unwrap_or_default(),
        )
    };
    for call in view.calls().filter(|c| c.record.entry_site == site) {
        let quiet = node.hotline_live.caller_quiet(&call.record.call);
        match call.status() {
            super::CallStatus::Waiting if quiet.as_millis() as u64 > super::DROP_AFTER_MS => {
                out.push(state(&call.record.call, CallEvent::Dropped));
            }
            super::CallStatus::Dropped
                if call
                    .event_ms()
                    .is_some_and(|t| now.saturating_sub(t) > super::REJOIN_WITHIN_MS) =>
            {
                out.push(state(&call.record.call, CallEvent::Abandoned));
            }
            _ => {}
        }
    }
    let after_call_s = view
        .schedule()
        .map_or(super::schedule::DEFAULT_AFTER_CALL_SECONDS, |s| {
            s.after_call_seconds
        });
    let after_call = Duration::from_secs(after_call_s.into());
    for lawyer in view.lawyers().filter(|l| l.record.site == site) {
        let r = &lawyer.record;
        let next = match view.state_of(lawyer) {
            LawyerState::Offline | LawyerState::OnCall => None,
            _ if node.hotline_live.console_quiet(&r.username) > CONSOLE_QUIET => {
                Some(LawyerState::Offline)
            }
            LawyerState::AfterCall
                if r.until_ms.is_some_and(|t| now >= t)
                    || now.saturating_sub(lawyer.since_ms) > after_call.as_millis() as u64 =>
            {
                Some(LawyerState::Available)
            }
            _ => None,
        };
        if let Some(state) = next {
            let record = LawyerRecord {
                username: r.username.clone(),
                site: site.to_owned(),
                state,
                reason: None,
                until_ms: None,
            };
            out.push((
                super::KIND_LAWYER,
                serde_json::to_value(record).unwrap_or_default(),
            ));
        }
    }
    out
}

/// The home's part: publish the schedule, then apply [`decide`].
async fn dispatch(node: &Arc<Node>) {
    let schedule = node.config.hotline.schedule();
    if node.views.hotline().schedule() != Some(&schedule) {
        write(node, super::KIND_SCHEDULE, &schedule).await;
    }
    if node.mesh.get().is_none() {
        return;
    }
    let actions = decide(
        &node.views.hotline(),
        &schedule,
        wall_ms(),
        |site| reachable(node, site),
        crate::api::new_id,
    );
    for action in actions {
        match action {
            Action::End { end, pause } => {
                tracing::info!(offer = %end.offer, reason = ?end.reason, "hotline: offer ended");
                write(node, super::KIND_OFFER_END, &end).await;
                if let Some(pause) = pause {
                    tracing::info!(lawyer = %pause.username,
                        "hotline: lawyer paused after a missed offer");
                    write(node, super::KIND_LAWYER, &pause).await;
                }
            }
            Action::Offer(offer) => {
                tracing::info!(offer = %offer.offer, lawyer = %offer.lawyer, site = %offer.site,
                    "hotline: call offered");
                write(node, super::KIND_OFFER, &offer).await;
            }
        }
    }
}

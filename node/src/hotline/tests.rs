use super::dispatch::{Action, decide};
use super::*;

/// Builds records as the logs of several sites would hold them; the clock is in seconds.
struct Log {
    hlc: u64,
    view: Hotline,
    ids: u32,
}

impl Log {
    fn new() -> Self {
        Self {
            hlc: 0,
            view: Hotline::default(),
            ids: 0,
        }
    }

    fn record(&mut self, at_s: u64, origin: &str, kind: &str, payload: impl Serialize) -> Record {
        self.hlc += 1;
        Record {
            origin: origin.into(),
            origin_peer: format!("peer-{origin}"),
            seq: self.hlc,
            time_ms: at_s * 1000,
            hlc: at_s * 1_000_000 + self.hlc,
            scope: SCOPE.into(),
            kind: kind.into(),
            payload: serde_json::to_value(payload).unwrap(),
            withheld: false,
            hash: String::new(),
        }
    }

    fn add(&mut self, at_s: u64, origin: &str, kind: &str, payload: impl Serialize) {
        let r = self.record(at_s, origin, kind, payload);
        self.view.apply(&r);
    }

    fn call(&mut self, at_s: u64, id: &str) {
        let c = CallRecord {
            call: id.into(),
            entry_site: "scenic-2".into(),
            topic: Some("labour".into()),
            lang: Lang::Zh,
            callback: false,
            phone: None,
        };
        self.add(at_s, "scenic-2", KIND_CALL, c);
    }

    fn event(&mut self, at_s: u64, call: &str, event: CallEvent) {
        let s = CallStateRecord {
            call: call.into(),
            event,
            phone: (event == CallEvent::Callback).then(|| "13800000000".into()),
            by: None,
        };
        self.add(at_s, "scenic-2", KIND_CALL_STATE, s);
    }

    fn lawyer(&mut self, at_s: u64, name: &str, site: &str, state: LawyerState) {
        let l = LawyerRecord {
            username: name.into(),
            site: site.into(),
            state,
            reason: None,
            until_ms: None,
        };
        self.add(at_s, site, KIND_LAWYER, l);
    }

    /// Runs the dispatcher at `at_s` with every site reachable but `cut`, and applies what it
    /// writes; returns the offers as (call, lawyer) and the ended offers.
    fn dispatch(&mut self, at_s: u64, cut: &[&str]) -> (Vec<(String, String)>, Vec<OfferEnd>) {
        let ids = &mut self.ids;
        let actions = decide(
            &self.view,
            &Schedule::default(),
            at_s * 1000,
            |site| !cut.contains(&site),
            || {
                *ids += 1;
                format!("o{ids}")
            },
        );
        let (mut offers, mut ends) = (Vec::new(), Vec::new());
        for a in actions {
            match a {
                Action::Offer(o) => {
                    offers.push((o.call.clone(), o.lawyer.clone()));
                    self.add(at_s, "bureau", KIND_OFFER, o);
                }
                Action::End { end, pause } => {
                    ends.push(end.reason);
                    self.add(at_s, "bureau", KIND_OFFER_END, end);
                    if let Some(p) = pause {
                        self.add(at_s, "bureau", KIND_LAWYER, p);
                    }
                }
            }
        }
        (offers, ends)
    }

    fn offer_of(&self, call: &str) -> OfferRecord {
        let c = self.view.call(call).unwrap();
        self.view
            .offer(c.offers.last().unwrap())
            .unwrap()
            .record
            .clone()
    }

    fn accept(&mut self, at_s: u64, call: &str) {
        let o = self.offer_of(call);
        let a = AcceptRecord {
            offer: o.offer,
            call: o.call,
            lawyer: o.lawyer,
            site: o.site.clone(),
        };
        self.add(at_s, &o.site, KIND_ACCEPT, a);
    }

    fn status(&self, call: &str) -> CallStatus {
        self.view.call(call).unwrap().status()
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect()
}

#[test]
fn calls_go_in_order_to_the_lawyer_idle_longest() {
    let mut log = Log::new();
    log.lawyer(10, "li", "office-1", LawyerState::Available);
    log.lawyer(5, "zhang", "bureau", LawyerState::Available);
    log.call(20, "a");
    log.call(21, "b");
    log.call(22, "c");
    let (offers, _) = log.dispatch(23, &[]);
    assert_eq!(offers, pairs(&[("a", "zhang"), ("b", "li")]));
    assert!(log.dispatch(24, &[]).0.is_empty(), "no lawyer is free");
    assert_eq!(log.view.position(log.view.call("c").unwrap()), Some(3));

    log.accept(25, "a");
    assert_eq!(log.status("a"), CallStatus::Connected);
    assert_eq!(
        log.view.state_of(log.view.lawyer("zhang").unwrap()),
        LawyerState::OnCall
    );
    assert_eq!(log.view.position(log.view.call("c").unwrap()), Some(2));
}

#[test]
fn an_offer_not_taken_in_20_s_moves_on_and_pauses_the_lawyer() {
    let mut log = Log::new();
    log.lawyer(1, "zhang", "bureau", LawyerState::Available);
    log.lawyer(2, "li", "office-1", LawyerState::Available);
    log.call(10, "a");
    assert_eq!(log.dispatch(10, &[]).0, pairs(&[("a", "zhang")]));
    // Within the offer and its grace nothing moves.
    assert_eq!(log.dispatch(31, &[]), (vec![], vec![]));
    let (offers, ends) = log.dispatch(33, &[]);
    assert_eq!(ends, [OfferEnd::Expired]);
    let zhang = log.view.lawyer("zhang").unwrap();
    assert_eq!(zhang.record.state, LawyerState::Break);
    assert_eq!(zhang.record.reason.as_deref(), Some("missed_offer"));
    // The call is offered again at the next look, to the next lawyer.
    let offers = if offers.is_empty() {
        log.dispatch(34, &[]).0
    } else {
        offers
    };
    assert_eq!(offers, pairs(&[("a", "li")]));
    // A late acceptance of the first offer does not count.
    let first = log.view.call("a").unwrap().offers[0].clone();
    let late = AcceptRecord {
        offer: first,
        call: "a".into(),
        lawyer: "zhang".into(),
        site: "bureau".into(),
    };
    log.add(35, "bureau", KIND_ACCEPT, late);
    assert_eq!(log.status("a"), CallStatus::Waiting);
    log.accept(36, "a");
    assert_eq!(
        log.view.call("a").unwrap().answer.as_ref().unwrap().lawyer,
        "li"
    );
}

#[test]
fn an_acceptance_made_in_time_wins_in_any_order_of_arrival() {
    // The same records applied in two orders settle the same way.
    let mut log = Log::new();
    log.lawyer(1, "zhang", "bureau", LawyerState::Available);
    log.call(10, "a");
    log.dispatch(10, &[]);
    let o = log.offer_of("a");
    let accept = log.record(
        29,
        "bureau",
        KIND_ACCEPT,
        AcceptRecord {
            offer: o.offer.clone(),
            call: "a".into(),
            lawyer: "zhang".into(),
            site: "bureau".into(),
        },
    );
    let end = log.record(
        33,
        "bureau",
        KIND_OFFER_END,
        OfferEndRecord {
            offer: o.offer.clone(),
            reason: OfferEnd::Expired,
        },
    );
    for r in [&accept, &end] {
        log.view.apply(r);
    }
    // Another node gets the acceptance and the end first, and only then the call and the offer.
    let call = log.view.call("a").unwrap().record.clone();
    let call_rec = log.record(10, "scenic-2", KIND_CALL, call);
    let offer_rec = log.record(10, "bureau", KIND_OFFER, o);
    let mut other = Hotline::default();
    for r in [&accept, &end, &call_rec, &offer_rec] {
        other.apply(r);
    }
    assert_eq!(log.status("a"), CallStatus::Connected);
    assert_eq!(other.call("a").unwrap().status(), CallStatus::Connected);
}

#[test]
fn unreachable_or_departed_lawyers_lose_their_offers_and_are_skipped() {
    let mut log = Log::new();
    log.lawyer(1, "zhang", "bureau", LawyerState::Available);
    log.lawyer(2, "li", "office-1", LawyerState::Available);
    log.call(10, "a");
    log.call(11, "b");
    assert_eq!(
        log.dispatch(11, &[]).0,
        pairs(&[("a", "zhang"), ("b", "li")])
    );
    // office-1 is cut off: li's offer is withdrawn, and b waits for zhang.
    let (offers, ends) = log.dispatch(12, &["office-1"]);
    assert_eq!(ends, [OfferEnd::Withdrawn]);
    assert!(offers.is_empty());
    assert!(log.dispatch(13, &["office-1"]).0.is_empty());
    // zhang goes on break: the offer of a is withdrawn without a pause.
    log.lawyer(14, "zhang", "bureau", LawyerState::Break);
    let (_, ends) = log.dispatch(14, &["office-1"]);
    assert_eq!(ends, [OfferEnd::Withdrawn]);
    assert_eq!(
        log.view.lawyer("zhang").unwrap().record.reason,
        None,
        "going on break is not a missed offer"
    );
    log.lawyer(15, "zhang", "bureau", LawyerState::Available);
    assert_eq!(log.dispatch(15, &["office-1"]).0, pairs(&[("a", "zhang")]));
}

#[test]
fn dropped_and_callback_callers_keep_their_place() {
    let mut log = Log::new();
    log.call(1, "a");
    log.call(2, "b");
    log.call(3, "c");
    log.event(10, "b", CallEvent::Dropped);
    let pos = |log: &Log, id| log.view.position(log.view.call(id).unwrap());
    assert_eq!(
        pos(&log, "c"),
        Some(2),
        "a dropped caller is not waited for"
    );
    assert_eq!(pos(&log, "b"), Some(2), "its place is kept");
    log.event(20, "b", CallEvent::Back);
    assert_eq!(pos(&log, "b"), Some(2));
    assert_eq!(pos(&log, "c"), Some(3));
    log.event(21, "b", CallEvent::Callback);
    assert_eq!(log.status("b"), CallStatus::Callback);
    assert_eq!(pos(&log, "b"), Some(2));
    log.event(22, "a", CallEvent::Left);
    log.event(23, "a", CallEvent::Back);
    assert_eq!(log.status("a"), CallStatus::Left, "leaving is final");
    assert_eq!(pos(&log, "b"), Some(1));
}

#[test]
fn figures_count_waits_abandons_and_ratings() {
    let mut log = Log::new();
    log.lawyer(0, "zhang", "bureau", LawyerState::Available);
    // a: answered after 10 s, talks 100 s, rated 4. b: answered after 92 s. c: left.
    log.call(100, "a");
    log.dispatch(100, &[]);
    log.accept(110, "a");
    log.call(120, "b");
    log.call(130, "c");
    log.event(140, "c", CallEvent::Left);
    log.event(210, "a", CallEvent::Ended);
    log.add(
        211,
        "scenic-2",
        KIND_RATING,
        RatingRecord {
            call: "a".into(),
            stars: 4,
        },
    );
    log.lawyer(212, "zhang", "bureau", LawyerState::Available);
    log.dispatch(212, &[]);
    log.accept(212, "b");
    let s = log.view.stats(0);
    assert_eq!((s.answered, s.abandoned, s.waiting), (2, 1, 0));
    assert_eq!(s.avg_wait_s, Some(51.0));
    assert_eq!(s.p90_wait_s, Some(92));
    assert_eq!(s.service_level, Some(1.0 / 3.0));
    assert_eq!(s.lawyers.len(), 1);
    assert_eq!(s.lawyers[0].answered, 2);
    assert_eq!(s.lawyers[0].avg_talk_s, Some(100.0));
    assert_eq!(s.lawyers[0].avg_rating, Some(4.0));
    assert!(
        log.view.stats(125_000).answered == 0,
        "a window leaves earlier calls out"
    );
}

//! The hotline's duty schedule: shifts by weekday and China time (UTC+8), each naming the
//! lawyers on duty. No shift at all means the hotline is always open.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Weekday names as the config writes them, Monday first.
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

const DAY_MS: u64 = 86_400_000;
const MINUTE_MS: u64 = 60_000;
/// China Standard Time, UTC+8, in ms.
const CHINA_OFFSET_MS: u64 = 8 * 3600 * 1000;

/// One shift: on `days`, from `start` to `end` (China time, `HH:MM`; an `end` at or before
/// `start` runs past midnight into the next day).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shift {
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
    /// Who is on duty; empty: every duty lawyer.
    #[serde(default)]
    pub lawyers: Vec<String>,
}

/// `HH:MM` as minutes after midnight, if it is a time of day.
pub fn minutes(hhmm: &str) -> Option<u64> {
    let (h, m) = hhmm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u64, u64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl Shift {
    /// Everything wrong with the shift, as messages.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.days.is_empty() {
            out.push("a shift needs at least one day".to_owned());
        }
        for d in &self.days {
            if !DAYS.contains(&d.as_str()) {
                out.push(format!("unknown day `{d}`; use {}", DAYS.join(", ")));
            }
        }
        for t in [&self.start, &self.end] {
            if minutes(t).is_none() {
                out.push(format!(
                    "`{t}` is not a time of day; write HH:MM, like \"08:30\""
                ));
            }
        }
        out
    }

    /// Whether the shift covers the instant `ms` (since the Unix epoch).
    pub fn covers(&self, ms: u64) -> bool {
        let (Some(start), Some(end)) = (minutes(&self.start), minutes(&self.end)) else {
            return false;
        };
        let local = ms + CHINA_OFFSET_MS;
        let minute = (local % DAY_MS) / MINUTE_MS;
        let day = weekday(local / DAY_MS);
        let yesterday = weekday(local / DAY_MS + 6);
        let works = |d: usize| self.days.iter().any(|x| x == DAYS[d]);
        if start < end {
            works(day) && (start..end).contains(&minute)
        } else {
            // Past midnight: the evening of a working day, or the morning after one.
            (works(day) && minute >= start) || (works(yesterday) && minute < end)
        }
    }

    fn names(&self, username: &str) -> bool {
        self.lawyers.is_empty() || self.lawyers.iter().any(|l| l == username)
    }
}

/// Day of the week (0 = Monday) of a day number since 1970-01-01 (a Thursday).
fn weekday(day: u64) -> usize {
    ((day + 3) % 7) as usize
}

/// The duty schedule, and how long after-call work lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    pub shifts: Vec<Shift>,
    /// Seconds of after-call work before a lawyer is available again by themselves.
    #[serde(default = "default_after_call")]
    pub after_call_seconds: u32,
}

/// Default after-call work: 60 s to write the note before the next call is offered.
pub const DEFAULT_AFTER_CALL_SECONDS: u32 = 60;

fn default_after_call() -> u32 {
    DEFAULT_AFTER_CALL_SECONDS
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            shifts: Vec::new(),
            after_call_seconds: DEFAULT_AFTER_CALL_SECONDS,
        }
    }
}

impl Schedule {
    /// Whether the hotline is open at `ms`.
    pub fn open_at(&self, ms: u64) -> bool {
        self.shifts.is_empty() || self.shifts.iter().any(|s| s.covers(ms))
    }

    /// Whether `username` is on duty at `ms`.
    pub fn on_duty(&self, username: &str, ms: u64) -> bool {
        self.shifts.is_empty()
            || self
                .shifts
                .iter()
                .any(|s| s.covers(ms) && s.names(username))
    }

    /// The next time the hotline opens after `ms`, to the minute, within a week.
    pub fn next_open(&self, ms: u64) -> Option<u64> {
        let first = (ms / MINUTE_MS + 1) * MINUTE_MS;
        (0..7 * 24 * 60)
            .map(|i| first + i * MINUTE_MS)
            .find(|t| self.open_at(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 (a Monday) at `hh:mm` China time, in ms since the Unix epoch.
    fn monday(hh: u64, mm: u64) -> u64 {
        // 2026-12-07 00:00 UTC+8 = 2026-12-06 16:00 UTC.
        let days = 20_794; // days from 1970-01-01 to 2026-12-07
        days * DAY_MS + (hh * 60 + mm) * MINUTE_MS - CHINA_OFFSET_MS
    }

    fn shift(days: &[&str], start: &str, end: &str) -> Shift {
        Shift {
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            start: start.into(),
            end: end.into(),
            lawyers: vec![],
        }
    }

    #[test]
    fn shifts_cover_their_days_and_hours_in_china_time() {
        assert_eq!(weekday(20_794), 0, "2026-12-07 is a Monday");
        let day = shift(&["mon", "tue"], "08:30", "17:30");
        assert!(!day.covers(monday(8, 29)));
        assert!(day.covers(monday(8, 30)));
        assert!(day.covers(monday(17, 29)));
        assert!(!day.covers(monday(17, 30)));
        assert!(day.covers(monday(9, 0) + DAY_MS), "Tuesday");
        assert!(!day.covers(monday(9, 0) + 2 * DAY_MS), "Wednesday");
        let night = shift(&["sun"], "20:00", "08:00");
        assert!(night.covers(monday(7, 59)), "Sunday night runs into Monday");
        assert!(!night.covers(monday(8, 0)));
        assert!(
            !night.covers(monday(21, 0)),
            "Monday evening is not Sunday's"
        );
    }

    #[test]
    fn the_schedule_says_who_is_on_duty_and_when_it_opens() {
        let mut s = Schedule::default();
        assert!(s.open_at(monday(3, 0)), "no shifts: always open");
        let mut morning = shift(&["mon"], "08:00", "12:00");
        morning.lawyers = vec!["zhang".into()];
        s.shifts.push(morning);
        assert!(s.on_duty("zhang", monday(9, 0)));
        assert!(!s.on_duty("li", monday(9, 0)));
        assert!(!s.open_at(monday(13, 0)));
        assert_eq!(s.next_open(monday(6, 0)), Some(monday(8, 0)));
        assert_eq!(s.next_open(monday(13, 0)), Some(monday(8, 0) + 7 * DAY_MS));
    }

    #[test]
    fn bad_shifts_say_what_is_wrong() {
        let s = shift(&["monday"], "8:30", "25:00");
        assert_eq!(s.problems().len(), 3, "{:?}", s.problems());
        assert!(shift(&["fri"], "08:30", "17:30").problems().is_empty());
    }
}

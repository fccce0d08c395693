//! Silences (maintenance windows) from rule files, and the gate that keeps silenced alerts
//! away from receivers.
//!
//! ```toml
//! [[silence]]
//! comment = "UPS-2 battery replacement, change 4711"
//! rule = "ups_*"                               # optional glob on rule names
//! match = { site = "dc1", ups = "ups-2" }      # optional tag globs ("!glob" excludes)
//! start = "2026-11-24T08:00:00Z"               # optional RFC 3339 (Z or ±HH:MM)
//! end = "2026-11-24T12:00:00+01:00"
//! daily = { from = "02:00", to = "04:00", timezone = "Europe/Berlin" }
//!                                              # optional, may cross midnight; local time
//!                                              # of the IANA zone (DST included), else UTC
//! ```
//!
//! A silence needs a rule glob or a tag match (or both), and a time window: `start`/`end`,
//! `daily`, or both (then both must hold). A rule glob also covers the rule's stale alerts
//! (`<rule>:stale`).
//!
//! Semantics (see [`Gate`]): silencing decides *notification*, never *history*. Every event is
//! still written to InfluxDB; a silenced one carries the field `silenced = true` and is not
//! sent to the alert router. A firing alert that was silenced is held: when the silence ends
//! while it still fires, it is sent then (a maintenance window must not swallow a flood that
//! outlasts it), and if it resolves first, receivers hear nothing at all. A resolve of an
//! alert receivers were told about is always sent, silence or not, so nothing stays firing in
//! a receiver forever. Silences are judged on the wall clock at the time of the decision.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use globset::GlobMatcher;

use crate::model::{Event, EventState, SeriesKey};

use super::config::{TagMatcher, STALE_SUFFIX};

const DAY_S: i64 = 86_400;
const NS: i64 = 1_000_000_000;

/// A daily window in seconds after midnight; `from > to` crosses midnight. Midnight is UTC's,
/// or the time zone's when one is given, so a local maintenance window stays at the same
/// local hours across daylight-saving changes.
#[derive(Clone, Debug, PartialEq)]
pub struct DailyWindow {
    pub from: u32,
    pub to: u32,
    /// `timezone = "Europe/Berlin"` (IANA, from the system's tz database).
    pub zone: Option<jiff::tz::TimeZone>,
}

impl DailyWindow {
    /// Seconds after local midnight of `ts_ns`.
    fn second_of_day(&self, ts_ns: i64) -> u32 {
        let utc = || u32::try_from(ts_ns.div_euclid(NS).rem_euclid(DAY_S)).unwrap_or(0);
        let Some(zone) = &self.zone else {
            return utc();
        };
        match jiff::Timestamp::from_nanosecond(i128::from(ts_ns)) {
            Ok(t) => {
                let local = zone.to_datetime(t);
                u32::from(local.hour() as u8) * 3600
                    + u32::from(local.minute() as u8) * 60
                    + u32::from(local.second() as u8)
            }
            Err(_) => utc(),
        }
    }

    pub fn contains(&self, ts_ns: i64) -> bool {
        let sod = self.second_of_day(ts_ns);
        if self.from < self.to {
            sod >= self.from && sod < self.to
        } else {
            sod >= self.from || sod < self.to
        }
    }
}

/// One validated `[[silence]]`.
#[derive(Clone, Debug)]
pub struct Silence {
    pub comment: String,
    /// Rule-name glob (source text, matcher).
    pub rule: Option<(String, GlobMatcher)>,
    pub matchers: Vec<TagMatcher>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    pub daily: Option<DailyWindow>,
    pub origin: PathBuf,
    pub line: usize,
}

impl Silence {
    pub fn active_at(&self, now_ns: i64) -> bool {
        self.start_ns.is_none_or(|s| now_ns >= s)
            && self.end_ns.is_none_or(|e| now_ns < e)
            && self.daily.as_ref().is_none_or(|d| d.contains(now_ns))
    }

    /// Whether the silence covers this rule and series (time aside).
    pub fn covers(&self, rule: &str, series: &SeriesKey) -> bool {
        let base = rule.strip_suffix(STALE_SUFFIX).unwrap_or(rule);
        self.rule
            .as_ref()
            .is_none_or(|(_, g)| g.is_match(base) || g.is_match(rule))
            && self.matchers.iter().all(|m| m.matches(&series.tags))
    }

    pub fn silences(&self, ev: &Event, now_ns: i64) -> bool {
        self.active_at(now_ns) && self.covers(&ev.rule, &ev.series)
    }
}

/// `HH:MM` (or `HH:MM:SS`) → seconds after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let mut parts = s.trim().split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let sec: u32 = match parts.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    Some(h * 3600 + m * 60 + sec)
}

/// A maintenance window needs its time of day spelled out: a bare date is refused.
pub use crate::time::parse_rfc3339;

/// What to do with one event's notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Send to the alert router.
    Notify,
    /// Write with `silenced = true`, do not send.
    Silenced,
}

type AlertKey = (Arc<str>, SeriesKey);

/// Remembers silenced firing alerts so they can be sent when their silence ends.
#[derive(Clone, Debug, Default)]
pub struct Silencer {
    held: HashMap<AlertKey, Event>,
}

impl Silencer {
    pub fn gate(&mut self, silences: &[Arc<Silence>], ev: &Event, now_ns: i64) -> Gate {
        let key = (ev.rule.clone(), ev.series.clone());
        match ev.state {
            EventState::Firing => {
                if silences.iter().any(|s| s.silences(ev, now_ns)) {
                    // Escalations too: while a silence covers an alert, nothing new about
                    // it is sent; the latest state goes out when the silence ends.
                    self.held.insert(key, ev.clone());
                    metrics::counter!("sitewatch_rules_silenced_total", "rule" => ev.rule.to_string())
                        .increment(1);
                    Gate::Silenced
                } else {
                    self.held.remove(&key);
                    Gate::Notify
                }
            }
            EventState::Resolved => {
                if self.held.remove(&key).is_some() {
                    // Receivers never heard of it.
                    Gate::Silenced
                } else {
                    Gate::Notify
                }
            }
        }
    }

    /// Held firing alerts whose silences have all ended: send them now (they are already in
    /// the events history).
    pub fn release(&mut self, silences: &[Arc<Silence>], now_ns: i64) -> Vec<Event> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.held.retain(|_, ev| {
            if silences.iter().any(|s| s.silences(ev, now_ns)) {
                true
            } else {
                out.push(ev.clone());
                false
            }
        });
        out.sort_by_key(|e| e.timestamp_ns);
        out
    }

    pub fn is_held(&self, rule: &Arc<str>, series: &SeriesKey) -> bool {
        self.held.contains_key(&(rule.clone(), series.clone()))
    }

    /// Silenced firing alerts not yet sent.
    pub fn held(&self) -> impl Iterator<Item = &Event> {
        self.held.values()
    }

    /// Drops the held alerts of the series `gone` says (a cluster unit handed to another
    /// member, which holds them from the unit's checkpoint).
    pub(crate) fn forget(&mut self, gone: impl Fn(&SeriesKey) -> bool) {
        self.held.retain(|(_, series), _| !gone(series));
    }

    pub(crate) fn restore(&mut self, events: Vec<Event>) {
        for ev in events {
            self.held.insert((ev.rule.clone(), ev.series.clone()), ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldValue, Severity, TagSet};
    use crate::rules::config::parse_rule_file;
    use std::path::Path;

    const S: i64 = NS;
    /// 2026-11-24T00:00:00Z
    const DAY0: i64 = 1_795_478_400 * S;

    fn silences(text: &str) -> Vec<Arc<Silence>> {
        parse_rule_file(text, Path::new("s.toml"))
            .unwrap()
            .silences
            .into_iter()
            .map(Arc::new)
            .collect()
    }

    fn ev(rule: &str, tags: &[(&str, &str)], state: EventState, ts: i64) -> Event {
        Event {
            labels: Vec::new(),
            annotations: Vec::new(),
            rule: rule.into(),
            series: SeriesKey::new("ups", TagSet::new(tags.iter().copied())),
            field: "f".into(),
            severity: Severity::Critical,
            state,
            value: FieldValue::Float(1.0),
            threshold: None,
            started_ns: ts,
            timestamp_ns: ts,
            message: "m".into(),
        }
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_rfc3339("2026-11-24T00:00:00Z"), Some(DAY0));
        assert_eq!(parse_rfc3339("2026-11-24T01:00:00+01:00"), Some(DAY0));
        assert_eq!(parse_rfc3339("2026-11-23T23:30:00-00:30"), Some(DAY0));
        assert_eq!(parse_rfc3339("2026-11-24T00:00:00.5Z"), Some(DAY0 + S / 2));
        for bad in [
            "",
            "2026-11-24",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-24T00:00:00+25:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(parse_hhmm("02:30"), Some(9000));
        assert_eq!(parse_hhmm("23:59:59"), Some(86399));
        for bad in ["24:00", "2", "02:60", "a:b", "01:02:03:04"] {
            assert_eq!(parse_hhmm(bad), None, "{bad}");
        }
    }

    /// A local maintenance window (02:00-04:00 Berlin) stays at the same local hours in
    /// winter (UTC+1) and summer (UTC+2); an unknown zone is refused with the fix.
    #[test]
    fn daily_windows_follow_the_time_zone_across_dst() {
        let set = silences(
            r#"
[[silence]]
rule = "x"
daily = { from = "02:00", to = "04:00", timezone = "Europe/Berlin" }
"#,
        );
        let w = set[0].daily.clone().unwrap();
        let at = |s: &str| parse_rfc3339(s).unwrap();
        // Winter: 02:00-04:00 CET = 01:00-03:00 UTC.
        assert!(!w.contains(at("2026-01-15T00:59:59Z")));
        assert!(w.contains(at("2026-01-15T01:00:00Z")));
        assert!(w.contains(at("2026-01-15T02:59:59Z")));
        assert!(!w.contains(at("2026-01-15T03:00:00Z")));
        // Summer: 02:00-04:00 CEST = 00:00-02:00 UTC.
        assert!(w.contains(at("2026-07-15T00:00:00Z")));
        assert!(w.contains(at("2026-07-15T01:59:59Z")));
        assert!(!w.contains(at("2026-07-15T02:00:00Z")));
        // Without a zone the same window is UTC.
        let utc = DailyWindow { zone: None, ..w };
        assert!(utc.contains(at("2026-07-15T02:00:00Z")));

        let err = crate::rules::config::parse_rule_file(
            "[[silence]]\nrule = \"x\"\ndaily = { from = \"02:00\", to = \"04:00\", timezone = \"Mars/Olympus\" }\n",
            std::path::Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("s.toml:3") && err.contains("Mars/Olympus") && err.contains("IANA"),
            "{err}"
        );
    }

    #[test]
    fn windows_and_matchers() {
        let set = silences(
            r#"
[[silence]]
comment = "ups-2 battery swap"
match = { ups = "ups-2" }
start = "2026-11-24T08:00:00Z"
end = "2026-11-24T12:00:00Z"

[[silence]]
rule = "backup_*"
daily = { from = "23:00", to = "01:00" }
"#,
        );
        let h = 3600 * S;
        // (silence index, rule, tags, time, expected)
        type Case<'a> = (usize, &'a str, &'a [(&'a str, &'a str)], i64, bool);
        let cases: &[Case] = &[
            (0, "ups_on_battery", &[("ups", "ups-2")], DAY0 + 8 * h, true),
            (
                0,
                "ups_on_battery",
                &[("ups", "ups-2")],
                DAY0 + 12 * h,
                false,
            ),
            (
                0,
                "ups_on_battery",
                &[("ups", "ups-2")],
                DAY0 + 8 * h - 1,
                false,
            ),
            (
                0,
                "ups_on_battery",
                &[("ups", "ups-1")],
                DAY0 + 9 * h,
                false,
            ),
            (
                0,
                "ups_on_battery:stale",
                &[("ups", "ups-2")],
                DAY0 + 9 * h,
                true,
            ),
            (1, "backup_running", &[], DAY0 + 23 * h + 5, true),
            (1, "backup_running", &[], DAY0 + 24 * h + 30 * 60 * S, true),
            (1, "backup_running", &[], DAY0 + 2 * h, false),
            (1, "backup_running:stale", &[], DAY0 + 23 * h, true),
            (1, "ups_on_battery", &[], DAY0 + 23 * h + 5, false),
        ];
        for (i, (idx, rule, tags, ts, want)) in cases.iter().enumerate() {
            let e = ev(rule, tags, EventState::Firing, *ts);
            assert_eq!(set[*idx].silences(&e, *ts), *want, "case {i}");
        }
    }

    #[test]
    fn validation_names_file_line_and_fix() {
        let cases: &[(&str, &str)] = &[
            (
                "start = \"2026-11-24T08:00:00Z\"\nend = \"2026-11-25T00:00:00Z\"",
                "neither rule nor match",
            ),
            ("rule = \"x\"", "no time window"),
            ("rule = \"x\"\nstart = \"tomorrow\"", "not an RFC 3339 time"),
            (
                "rule = \"x\"\nstart = \"2026-11-24T08:00:00Z\"\nend = \"2026-11-24T07:00:00Z\"",
                "not after start",
            ),
            (
                "rule = \"x\"\ndaily = { from = \"2:00\", to = \"2:00\" }",
                "two different HH:MM",
            ),
            (
                "rule = \"[\"\ndaily = { from = \"01:00\", to = \"02:00\" }",
                "not a valid rule name glob",
            ),
        ];
        for (body, want) in cases {
            let text = format!("\n[[silence]]\n{body}\n");
            let e = parse_rule_file(&text, Path::new("s.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.starts_with("s.toml:"), "{e}");
        }
    }

    proptest::proptest! {
        /// Times come from people: any text gives a time or None, never a panic.
        #[test]
        fn time_parsers_never_panic(s in "[0-9TZtz:+. -]{0,30}") {
            let _ = parse_rfc3339(&s);
            let _ = parse_hhmm(&s);
        }

        #[test]
        fn daily_window_contains_from_not_to(from in 0u32..86_400, to in 0u32..86_400, day in 0i64..40_000) {
            proptest::prop_assume!(from != to);
            let w = DailyWindow { from, to, zone: None };
            let base = day * DAY_S * NS;
            proptest::prop_assert!(w.contains(base + i64::from(from) * NS));
            proptest::prop_assert!(!w.contains(base + i64::from(to) * NS));
        }
    }

    /// Firing while silenced is held and sent when the silence ends if still firing; a resolve
    /// of a never-notified alert is not sent; a resolve of a notified one always is.
    #[test]
    fn gate_holds_and_releases() {
        let set = silences(
            "[[silence]]\nmatch = { ups = \"ups-2\" }\nstart = \"2026-11-24T08:00:00Z\"\nend = \"2026-11-24T09:00:00Z\"\n",
        );
        let h = 3600 * S;
        let in_window = DAY0 + 8 * h + 60 * S;
        let after = DAY0 + 9 * h;
        let tags: &[(&str, &str)] = &[("ups", "ups-2")];
        let mut g = Silencer::default();

        // Fires and resolves inside the window: nothing reaches receivers.
        let f = ev("a", tags, EventState::Firing, in_window);
        assert_eq!(g.gate(&set, &f, in_window), Gate::Silenced);
        let r = ev("a", tags, EventState::Resolved, in_window + S);
        assert_eq!(g.gate(&set, &r, in_window + S), Gate::Silenced);
        assert!(g.release(&set, after).is_empty());

        // Fires inside, still firing after: released exactly once at the end.
        let f = ev("b", tags, EventState::Firing, in_window);
        assert_eq!(g.gate(&set, &f, in_window), Gate::Silenced);
        assert!(g.release(&set, in_window + 10 * S).is_empty());
        let out = g.release(&set, after);
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].rule, "b");
        assert!(g.release(&set, after + S).is_empty());
        let r = ev("b", tags, EventState::Resolved, after + S);
        assert_eq!(g.gate(&set, &r, after + S), Gate::Notify);

        // Notified before the window: its resolve inside the window is still sent.
        let f = ev("c", tags, EventState::Firing, DAY0);
        assert_eq!(g.gate(&set, &f, DAY0), Gate::Notify);
        let r = ev("c", tags, EventState::Resolved, in_window);
        assert_eq!(g.gate(&set, &r, in_window), Gate::Notify);

        // Other series are untouched.
        let f = ev("d", &[("ups", "ups-1")], EventState::Firing, in_window);
        assert_eq!(g.gate(&set, &f, in_window), Gate::Notify);
    }
}

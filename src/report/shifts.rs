//! The report's time zone: shift boundaries (local wall-clock start times, so a 06:00 shift
//! starts at 06:00 on both sides of a DST change) and local times for display, via `jiff`
//! and the system tz database.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::error::ReportError;

#[derive(Clone, Debug)]
pub struct Shifts {
    tz: TimeZone,
    tz_name: String,
    /// Local start times, sorted, at least one.
    starts: Vec<Time>,
}

/// One shift on one day: the incidents whose firing falls in `[start_ns, end_ns)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShiftSlot {
    pub start_ns: i64,
    pub end_ns: i64,
    /// `2026-03-28 22:00–06:00`.
    pub label: String,
    /// `22:00–06:00`: the same shift on every day.
    pub name: String,
}

impl Shifts {
    pub fn parse(list: &str, tz_name: &str) -> Result<Shifts, ReportError> {
        let tz = if tz_name.eq_ignore_ascii_case("utc") {
            TimeZone::UTC
        } else {
            TimeZone::get(tz_name).map_err(|e| ReportError::BadTimeZone {
                value: tz_name.to_string(),
                problem: e.to_string(),
            })?
        };
        let bad = |problem: String| ReportError::BadShifts {
            value: list.to_string(),
            problem,
        };
        let mut starts = Vec::new();
        for part in list.split(',').map(str::trim) {
            let (h, m) = part
                .split_once(':')
                .ok_or_else(|| bad(format!("{part:?} is not HH:MM")))?;
            let num = |s: &str, hi: i8| -> Option<i8> {
                (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| s.parse::<i8>().ok())
                    .flatten()
                    .filter(|v| *v <= hi)
            };
            let (Some(h), Some(m)) = (num(h, 23), num(m, 59)) else {
                return Err(bad(format!("{part:?} is not HH:MM (00:00..23:59)")));
            };
            let t = Time::new(h, m, 0, 0).map_err(|e| bad(e.to_string()))?;
            if starts.contains(&t) {
                return Err(bad(format!("{part} is given twice")));
            }
            starts.push(t);
        }
        starts.sort();
        Ok(Shifts {
            tz,
            tz_name: tz_name.to_string(),
            starts,
        })
    }

    /// `06:00–14:00`, ... in the order of the day.
    pub fn names(&self) -> Vec<String> {
        (0..self.starts.len())
            .map(|i| {
                let end = self.starts.get(i + 1).unwrap_or(&self.starts[0]);
                format!(
                    "{}–{}",
                    self.starts[i].strftime("%H:%M"),
                    end.strftime("%H:%M")
                )
            })
            .collect()
    }

    pub fn tz_name(&self) -> &str {
        &self.tz_name
    }

    fn zoned(&self, ns: i64) -> jiff::Zoned {
        Timestamp::from_nanosecond(i128::from(ns))
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(self.tz.clone())
    }

    /// `2026-11-01 07:03:05 CET`: local time with the zone's abbreviation.
    pub fn local(&self, ns: i64) -> String {
        self.zoned(ns).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
    }

    /// `07:03`, or `07:03:05` `with_seconds`: local clock time for plot axes.
    pub fn clock(&self, ns: i64, with_seconds: bool) -> String {
        let f = if with_seconds { "%H:%M:%S" } else { "%H:%M" };
        self.zoned(ns).strftime(f).to_string()
    }

    /// The instant of local `time` on `date`; a start inside a DST gap moves past the gap.
    fn instant(&self, date: Date, time: Time) -> i64 {
        date.to_datetime(time)
            .to_zoned(self.tz.clone())
            .map(|z| z.timestamp().as_nanosecond())
            .ok()
            .and_then(|n| i64::try_from(n).ok())
            .unwrap_or(i64::MAX)
    }

    /// The shift `ns` falls in.
    pub fn slot_of(&self, ns: i64) -> ShiftSlot {
        let z = self.zoned(ns);
        let (mut date, time) = (z.date(), z.time());
        let idx = match self.starts.iter().rposition(|s| *s <= time) {
            Some(i) => i,
            // Before the first start of the day: the last shift of the day before.
            None => {
                date = date.yesterday().unwrap_or(date);
                self.starts.len() - 1
            }
        };
        let start = self.starts[idx];
        let (end_date, end) = match self.starts.get(idx + 1) {
            Some(next) => (date, *next),
            None => (date.tomorrow().unwrap_or(date), self.starts[0]),
        };
        let name = self.names().swap_remove(idx);
        ShiftSlot {
            start_ns: self.instant(date, start),
            end_ns: self.instant(end_date, end),
            label: format!("{} {name}", date.strftime("%Y-%m-%d")),
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_time;

    fn ns(t: &str) -> i64 {
        parse_time(t).unwrap()
    }

    #[test]
    fn shifts_follow_local_time_across_dst() {
        let s = Shifts::parse("06:00, 14:00,22:00", "Europe/Berlin").unwrap();
        // 2026-03-29: CET -> CEST at 01:00 UTC. 04:30 UTC is 06:30 CEST: the day shift,
        // though it is still 05:30 in winter time.
        let day = s.slot_of(ns("2026-03-29T04:30:00Z"));
        assert_eq!(day.label, "2026-03-29 06:00–14:00");
        assert_eq!(day.start_ns, ns("2026-03-29T04:00:00Z"));
        // 03:30 UTC is 05:30 CEST: the night shift that began at 22:00 CET the day before,
        // one hour shorter than usual.
        let night = s.slot_of(ns("2026-03-29T03:30:00Z"));
        assert_eq!(night.label, "2026-03-28 22:00–06:00");
        assert_eq!(night.name, "22:00–06:00");
        assert_eq!(night.start_ns, ns("2026-03-28T21:00:00Z"));
        assert_eq!(night.end_ns - night.start_ns, 7 * 3_600_000_000_000);
        // The autumn change: 2026-10-25 CEST -> CET at 01:00 UTC; the night is 9 h long.
        let long = s.slot_of(ns("2026-10-25T02:00:00Z"));
        assert_eq!(long.label, "2026-10-24 22:00–06:00");
        assert_eq!(long.end_ns - long.start_ns, 9 * 3_600_000_000_000);
        assert_eq!(
            s.slot_of(ns("2026-10-25T05:00:00Z")).label,
            "2026-10-25 06:00–14:00"
        );
        assert_eq!(
            s.local(ns("2026-10-25T05:00:00Z")),
            "2026-10-25 06:00:00 CET"
        );
    }

    #[test]
    fn a_single_shift_spans_the_day_and_bad_input_is_explained() {
        let s = Shifts::parse("07:00", "UTC").unwrap();
        let slot = s.slot_of(ns("2026-11-01T03:00:00Z"));
        assert_eq!(slot.label, "2026-10-31 07:00–07:00");
        assert_eq!(slot.end_ns - slot.start_ns, 86_400_000_000_000);
        for bad in ["", "6:00", "24:00", "06:00,06:00", "06-00"] {
            let e = Shifts::parse(bad, "UTC").unwrap_err().to_string();
            assert!(e.contains("--shifts"), "{e}");
        }
        let e = Shifts::parse("06:00", "Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--timezone") && e.contains("IANA"), "{e}");
    }
}

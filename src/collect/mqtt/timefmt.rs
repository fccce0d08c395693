//! Payload timestamps: numbers by unit, RFC 3339 strings, and strings in a layout of their own
//! or in local time (`"Time":"2026-12-01T07:00:00"` from Tasmota) with an IANA time zone.
//!
//! ```toml
//! timestamp = "Time"
//! timestamp_timezone = "Europe/Berlin"          # the device's zone; DST from the tz database
//! timestamp_format = "%d.%m.%Y %H:%M:%S"        # optional strftime layout (else ISO 8601)
//! timestamp_fallback = "receive_time"           # a bad timestamp: receive time, counted
//! ```
//!
//! Time zones and layouts are done by [`jiff`]: it is maintained, reads the system's tz
//! database (`/usr/share/zoneinfo`, which distributions keep current with the DST rules of
//! every zone) and resolves local times in DST gaps and folds explicitly, where a hand-made
//! offset table would silently be an hour off twice a year. A local time that occurs twice
//! (the autumn fold) is read as the earlier one, a time that does not exist (the spring gap)
//! as the instant after the gap ("compatible" resolution, as RFC 5545 and Temporal do).

use jiff::civil::DateTime;
use jiff::fmt::strtime;
use jiff::tz::TimeZone;
use serde_json::Value;

use super::config::TimestampUnit;
use crate::text::preview;
use crate::time::parse_rfc3339;

/// How a subscription reads its payload timestamps.
#[derive(Debug, Clone)]
pub struct TimestampSpec {
    unit: TimestampUnit,
    layout: Option<Box<str>>,
    tz: Option<(Box<str>, TimeZone)>,
}

/// Directives that give a layout its own offset or zone.
const OFFSET_DIRECTIVES: &[&str] = &["%z", "%:z", "%::z", "%:::z", "%Z", "%Q", "%:Q"];

impl TimestampSpec {
    /// The error names the key (`timestamp_format` or `timestamp_timezone`) and the problem.
    pub fn compile(
        unit: TimestampUnit,
        layout: Option<&str>,
        tz: Option<&str>,
    ) -> Result<TimestampSpec, (&'static str, String)> {
        let tz = match tz {
            None => None,
            Some(name) => {
                let zone = TimeZone::get(name).map_err(|e| {
                    (
                        "timestamp_timezone",
                        format!(
                            "{name:?} is not a time zone of the system's tz database ({e}); \
                             use an IANA name such as \"Europe/Berlin\" or \"UTC\" (and install \
                             the tzdata package)"
                        ),
                    )
                })?;
                Some((Box::from(name), zone))
            }
        };
        if let Some(layout) = layout {
            if matches!(
                unit,
                TimestampUnit::S | TimestampUnit::Ms | TimestampUnit::Us | TimestampUnit::Ns
            ) {
                return Err((
                    "timestamp_format",
                    "is for string timestamps; remove timestamp_unit (numbers are still read \
                     by magnitude) or the layout"
                        .into(),
                ));
            }
            let has_offset = OFFSET_DIRECTIVES.iter().any(|d| layout.contains(d));
            if !has_offset && tz.is_none() {
                return Err((
                    "timestamp_format",
                    format!(
                        "{layout:?} has no offset (%z); set timestamp_timezone to the zone the \
                         device's clock runs in, e.g. \"Europe/Berlin\" or \"UTC\""
                    ),
                ));
            }
            // The layout must be able to read back a full date and time it wrote.
            let probe = jiff::Timestamp::from_second(1_764_572_405)
                .expect("a valid instant")
                .to_zoned(TimeZone::UTC);
            let text = strtime::format(layout, &probe).map_err(|e| {
                (
                    "timestamp_format",
                    format!("{layout:?} is not a valid layout: {e}"),
                )
            })?;
            let parsed = strtime::parse(layout, &text).and_then(|t| t.to_datetime());
            if parsed.is_err() {
                return Err((
                    "timestamp_format",
                    format!(
                        "{layout:?} does not give a whole date and time (it needs a year, \
                         month, day, hour and minute, e.g. \"%Y-%m-%d %H:%M:%S\")"
                    ),
                ));
            }
        }
        Ok(TimestampSpec {
            unit,
            layout: layout.map(Box::from),
            tz,
        })
    }

    /// Numbers and RFC 3339 strings only, as before layouts and zones.
    pub fn plain(unit: TimestampUnit) -> TimestampSpec {
        TimestampSpec {
            unit,
            layout: None,
            tz: None,
        }
    }

    pub fn unit(&self) -> TimestampUnit {
        self.unit
    }

    /// `v` as ns since the epoch; the error says what was wrong with it.
    pub fn parse(&self, v: &Value) -> Result<i64, String> {
        let Value::String(s) = v else {
            return json_timestamp(v, self.unit);
        };
        let s = s.trim();
        if let Some(layout) = &self.layout {
            let t = strtime::parse(&**layout, s).map_err(|e| {
                format!(
                    "{} does not match timestamp_format {layout:?}: {e}",
                    quoted(s)
                )
            })?;
            if t.offset().is_some() {
                return t
                    .to_timestamp()
                    .map(ns)
                    .map_err(|e| format!("{}: {e}", quoted(s)));
            }
            let dt = t.to_datetime().map_err(|e| format!("{}: {e}", quoted(s)))?;
            return self.local(dt, s);
        }
        if self.tz.is_some() {
            if let Some(n) = crate::time::parse_rfc3339(s) {
                return Ok(n);
            }
            if let Ok(dt) = s.parse::<DateTime>() {
                return self.local(dt, s);
            }
        }
        json_timestamp(v, self.unit)
    }

    fn local(&self, dt: DateTime, s: &str) -> Result<i64, String> {
        let Some((name, tz)) = &self.tz else {
            return Err(format!(
                "{} has no offset and no timestamp_timezone is set",
                quoted(s)
            ));
        };
        tz.to_ambiguous_zoned(dt)
            .compatible()
            .map(|z| ns(z.timestamp()))
            .map_err(|e| format!("{} in {name}: {e}", quoted(s)))
    }
}

fn ns(t: jiff::Timestamp) -> i64 {
    // jiff's range (years -9999..=9999) fits i64 ns only from 1677 to 2262; clamp outside, the
    // range check against receive time rejects those anyway.
    t.as_nanosecond().clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn quoted(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// How a numeric or text timestamp of `unit` becomes ns since the epoch.
fn unit_multiplier(unit: TimestampUnit, magnitude: f64) -> i64 {
    match unit {
        TimestampUnit::S => 1_000_000_000,
        TimestampUnit::Ms => 1_000_000,
        TimestampUnit::Us => 1_000,
        TimestampUnit::Ns => 1,
        TimestampUnit::Auto | TimestampUnit::Rfc3339 => {
            if magnitude < 1e11 {
                1_000_000_000
            } else if magnitude < 1e14 {
                1_000_000
            } else if magnitude < 1e17 {
                1_000
            } else {
                1
            }
        }
    }
}

pub(crate) fn int_timestamp(raw: i64, unit: TimestampUnit) -> Option<i64> {
    raw.checked_mul(unit_multiplier(unit, raw.unsigned_abs() as f64))
}

pub(crate) fn json_timestamp(v: &Value, unit: TimestampUnit) -> Result<i64, String> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                int_timestamp(i, unit).ok_or_else(|| format!("{i} overflows"))
            } else if let Some(ns) = decimal_timestamp(&n.to_string(), unit) {
                // `1700000000.25` read as decimal digits: exact, where f64 is 128 ns off.
                Ok(ns)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                float_timestamp(f, unit)
            }
        }
        Value::String(s) => {
            if unit == TimestampUnit::Auto || unit == TimestampUnit::Rfc3339 {
                if let Some(ns) = parse_rfc3339(s) {
                    return Ok(ns);
                }
            }
            match s.trim().parse::<f64>() {
                Ok(f) if unit != TimestampUnit::Rfc3339 => match s.trim().parse::<i64>() {
                    Ok(i) => int_timestamp(i, unit).ok_or_else(|| format!("{i} overflows")),
                    Err(_) => float_timestamp(f, unit),
                },
                _ => Err(format!(
                    "{} is neither an RFC 3339 time nor a number",
                    preview(s)
                )),
            }
        }
        other => Err(format!("expected a number or a string, got {other}")),
    }
}

/// A plain decimal (`[-]digits.digits`, no exponent) timestamp as exact ns; sub-ns digits
/// are cut. `None` for other notations or overflow.
pub(crate) fn decimal_timestamp(text: &str, unit: TimestampUnit) -> Option<i64> {
    let (neg, t) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = t.split_once('.')?;
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    let mult = unit_multiplier(unit, whole as f64);
    let digits = mult.ilog10() as usize;
    let mut frac_ns: i64 = 0;
    for i in 0..digits {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        frac_ns = frac_ns * 10 + d;
    }
    let ns = whole.checked_mul(mult)?.checked_add(frac_ns)?;
    Some(if neg { -ns } else { ns })
}

fn float_timestamp(f: f64, unit: TimestampUnit) -> Result<i64, String> {
    if !f.is_finite() {
        return Err(format!("{f} is not a finite number"));
    }
    let ns = f * unit_multiplier(unit, f.abs()) as f64;
    // i64 range, with margin for the float rounding at the edges.
    if ns.abs() < 9.2e18 {
        Ok(ns.round() as i64)
    } else {
        Err(format!("{f} overflows"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spec(layout: Option<&str>, tz: Option<&str>) -> TimestampSpec {
        TimestampSpec::compile(TimestampUnit::Auto, layout, tz).unwrap()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn local_times_with_a_zone() {
        // Tasmota: ISO 8601 without offset, the device's local time.
        let berlin = spec(None, Some("Europe/Berlin"));
        // 2026-12-01 07:00 CET (+01:00) = 06:00 UTC.
        assert_eq!(
            berlin.parse(&json!("2026-12-01T07:00:00")),
            Ok(1_796_104_800 * S)
        );
        // Summer: CEST (+02:00).
        assert_eq!(
            berlin.parse(&json!("2026-07-01T07:00:00")),
            Ok(1_782_882_000 * S)
        );
        // Offsets in the payload still win; numbers still work.
        assert_eq!(
            berlin.parse(&json!("2026-12-01T07:00:00Z")),
            Ok(1_796_108_400 * S)
        );
        assert_eq!(berlin.parse(&json!(1_796_108_400)), Ok(1_796_108_400 * S));
        // The spring gap (02:30 does not exist on 2026-03-29): the instant after it.
        assert_eq!(
            berlin.parse(&json!("2026-03-29T02:30:00")),
            berlin.parse(&json!("2026-03-29T03:30:00"))
        );
        // The autumn fold (02:30 happens twice on 2026-10-25): the earlier, still CEST.
        assert_eq!(
            berlin.parse(&json!("2026-10-25T02:30:00")),
            Ok(berlin.parse(&json!("2026-10-25T02:30:00+02:00")).unwrap())
        );
        assert!(berlin.parse(&json!("yesterday")).is_err());
        // Without a zone a local time is not guessed.
        assert!(TimestampSpec::plain(TimestampUnit::Auto)
            .parse(&json!("2026-12-01T07:00:00"))
            .is_err());
    }

    #[test]
    fn layouts() {
        let de = spec(Some("%d.%m.%Y %H:%M:%S"), Some("Europe/Berlin"));
        assert_eq!(
            de.parse(&json!("01.12.2026 07:00:00")),
            Ok(1_796_104_800 * S)
        );
        let e = de.parse(&json!("2026-12-01 07:00")).unwrap_err();
        assert!(
            e.contains("timestamp_format") && e.contains("2026-12-01 07:00"),
            "{e}"
        );
        let with_offset = spec(Some("%Y/%m/%d %H:%M:%S%.f %z"), None);
        assert_eq!(
            with_offset.parse(&json!("2026/12/01 07:00:00.25 +0100")),
            Ok(1_796_104_800 * S + 250_000_000)
        );
        let utc = spec(Some("%Y%m%d%H%M%S"), Some("UTC"));
        assert_eq!(utc.parse(&json!("20261201070000")), Ok(1_796_108_400 * S));
    }

    #[test]
    fn config_errors() {
        for (layout, tz, key, wants) in [
            (None, Some("Mars/Olympus"), "timestamp_timezone", "IANA"),
            (
                Some("%d.%m.%Y %H:%M"),
                None,
                "timestamp_format",
                "no offset",
            ),
            (
                Some("%H:%M:%S"),
                Some("UTC"),
                "timestamp_format",
                "whole date",
            ),
            (
                Some("%Y-%m-%d %J"),
                Some("UTC"),
                "timestamp_format",
                "not a valid layout",
            ),
        ] {
            let (k, e) = TimestampSpec::compile(TimestampUnit::Auto, layout, tz).unwrap_err();
            assert_eq!(k, key, "{e}");
            assert!(e.contains(wants), "{layout:?} {tz:?}: {e}");
        }
        let (k, _) = TimestampSpec::compile(TimestampUnit::Ms, Some("%Y-%m-%d %H:%M"), Some("UTC"))
            .unwrap_err();
        assert_eq!(k, "timestamp_format");
    }

    proptest! {
        #[test]
        fn layouts_never_panic(layout in "(%[a-zA-Z:.%]|[ -~]){0,12}", input in ".{0,30}") {
            if let Ok(s) = TimestampSpec::compile(TimestampUnit::Auto, Some(&layout), Some("UTC")) {
                let _ = s.parse(&json!(input));
            }
        }

        /// Any local time written in a layout reads back as that local time in the zone.
        #[test]
        fn local_times_round_trip(secs in 946_684_800i64..4_000_000_000) {
            let tz = TimeZone::get("America/New_York").unwrap();
            let z = jiff::Timestamp::from_second(secs).unwrap().to_zoned(tz.clone());
            let text = strtime::format("%Y-%m-%d %H:%M:%S %z", &z).unwrap();
            let s = spec(Some("%Y-%m-%d %H:%M:%S %z"), None);
            prop_assert_eq!(s.parse(&json!(text)), Ok(secs * S));
            // Without the offset, the same local time resolves to the same instant except in
            // the fold hour, where the earlier of the two is taken.
            let local = strtime::format("%Y-%m-%d %H:%M:%S", &z).unwrap();
            let got = spec(Some("%Y-%m-%d %H:%M:%S"), Some("America/New_York")).parse(&json!(local)).unwrap();
            prop_assert!(got == secs * S || got == (secs - 3600) * S, "{local}: {got}");
        }
    }
}

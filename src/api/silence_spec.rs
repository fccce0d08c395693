//! What a silence made through the API says: the checks on the body of
//! `POST /api/v1/silences` (every problem a 400 naming the key), times read in an IANA time
//! zone (daylight-saving included), and the [`Silence`] the engine gates on.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{input, ApiError};
use crate::rules::config::TagMatcher;
use crate::rules::silence::{parse_hhmm, DailyWindow, Silence};

/// Longest silence accepted: one that must hold longer belongs in a rule file, where it is
/// reviewed like any other configuration.
pub const MAX_LENGTH: Duration = Duration::from_secs(30 * 86_400);
/// At most this many tag matchers per silence.
pub const MAX_MATCHERS: usize = 20;
/// Longest accepted glob (rule or tag) and tag name.
pub const MAX_PATTERN: usize = 200;

const KEYS: &[&str] = &[
    "matchers",
    "rule",
    "starts_at",
    "ends_at",
    "duration",
    "timezone",
    "daily",
    "created_by",
    "comment",
];

/// `daily = {from, to}`: local `HH:MM` of the silence's time zone (UTC without one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DailySpec {
    pub from: String,
    pub to: String,
}

/// One silence as made and as saved (times RFC 3339 in UTC).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matchers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(with = "rfc3339")]
    pub starts_at: Timestamp,
    #[serde(with = "rfc3339")]
    pub ends_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<DailySpec>,
    pub created_by: String,
    pub comment: String,
    #[serde(with = "rfc3339")]
    pub created_at: Timestamp,
    /// Who expired it early (`DELETE`), if someone did; `ends_at` is then that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_by: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// The body of `POST /api/v1/silences` as a [`Record`] with id `id`, judged at `now`.
pub fn from_body(body: &[u8], id: String, now: Timestamp) -> Result<Record, ApiError> {
    let value: Value = input::json_body(body, "add a silence")?;
    let Value::Object(obj) = value else {
        return Err(bad(
            "add a silence: the body must be a JSON object such as {\"matchers\": {\"rack\": \"r1\"}, \"duration\": \"2h\", \"created_by\": \"alice\", \"comment\": \"...\"}",
        ));
    };
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "`{k}` is not a key of a silence; the keys are {}",
            KEYS.join(", ")
        )));
    }
    let text = |key: &str| -> Result<Option<String>, ApiError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => Err(bad(format!(
                "`{key}` must be a string, not {}",
                kind_of(other)
            ))),
        }
    };
    let matchers = matchers_of(&obj)?;
    let rule = text("rule")?.filter(|r| !r.is_empty());
    let timezone = text("timezone")?.filter(|z| !z.is_empty());
    let zone = timezone.as_deref().map(zone_of).transpose()?;
    let daily = daily_of(&obj)?;
    let created_by = input::person("created_by", &text("created_by")?.unwrap_or_default())?;
    let comment = input::comment("comment", &text("comment")?.unwrap_or_default())?;
    if comment.is_empty() {
        return Err(bad(
            "`comment` is required: say why (change number, what is being repaired); it is shown with the silence and in the log",
        ));
    }

    let starts_at = match text("starts_at")? {
        Some(s) => parse_time("starts_at", &s, zone.as_ref(), timezone.as_deref())?,
        None => now,
    };
    let ends_at = match (text("ends_at")?, text("duration")?) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "give either `ends_at` (a time) or `duration` (e.g. \"2h\", from starts_at), not both",
            ))
        }
        (Some(e), None) => parse_time("ends_at", &e, zone.as_ref(), timezone.as_deref())?,
        (None, Some(d)) => {
            let length = humantime::parse_duration(&d).map_err(|e| {
                bad(format!(
                    "`duration` = {d:?} is not a duration ({e}); write e.g. \"90m\" or \"2h\""
                ))
            })?;
            let length = jiff::SignedDuration::try_from(length.min(MAX_LENGTH * 2))
                .map_err(|e| bad(format!("`duration` = {d:?}: {e}")))?;
            starts_at.max(now).checked_add(length).map_err(|e| {
                bad(format!("`duration` = {d:?} ends beyond any time: {e}"))
            })?
        }
        (None, None) => {
            return Err(bad(
                "a silence needs an end: `ends_at` (e.g. \"2026-12-01T18:00\" with `timezone`, or RFC 3339) or `duration` (e.g. \"2h\")",
            ))
        }
    };
    let record = Record {
        id,
        matchers,
        rule,
        starts_at,
        ends_at,
        timezone,
        daily,
        created_by,
        comment,
        created_at: now,
        expired_by: None,
    };
    check_times(&record, now)?;
    // Globs and windows are compiled here once, so a silence that is accepted can be loaded.
    compile(&record, Path::new("silences"))?;
    Ok(record)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn matchers_of(obj: &Map<String, Value>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    match obj.get("matchers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (tag, v) in m {
                let Value::String(glob) = v else {
                    return Err(bad(format!(
                        "`matchers.{tag}` must be a glob string such as \"r1\", \"r1*\" or \"!spare*\", not {}",
                        kind_of(v)
                    )));
                };
                out.insert(tag.trim().to_string(), glob.trim().to_string());
            }
        }
        Some(other) => {
            return Err(bad(format!(
                "`matchers` must be an object of tag → glob, e.g. {{\"rack\": \"r1\", \"site\": \"dc1\"}}, not {}",
                kind_of(other)
            )))
        }
    }
    Ok(out)
}

fn daily_of(obj: &Map<String, Value>) -> Result<Option<DailySpec>, ApiError> {
    match obj.get("daily") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(d)) => {
            let part = |k: &str| {
                match d.get(k) {
                Some(Value::String(s)) => Ok(s.trim().to_string()),
                _ => Err(bad(format!(
                    "`daily.{k}` must be a local time \"HH:MM\", e.g. {{\"from\": \"02:00\", \"to\": \"04:00\"}}"
                ))),
            }
            };
            if let Some(k) = d.keys().find(|k| *k != "from" && *k != "to") {
                return Err(bad(format!(
                    "`daily.{k}` is not a key of a daily window; give from and to (the time zone is the silence's `timezone`)"
                )));
            }
            Ok(Some(DailySpec {
                from: part("from")?,
                to: part("to")?,
            }))
        }
        Some(other) => Err(bad(format!(
            "`daily` must be an object {{\"from\": \"HH:MM\", \"to\": \"HH:MM\"}}, not {}",
            kind_of(other)
        ))),
    }
}

/// An IANA time zone from the system's database.
pub fn zone_of(name: &str) -> Result<TimeZone, ApiError> {
    TimeZone::get(name).map_err(|e| {
        bad(format!(
            "`timezone` = {name:?} is not a time zone this system knows ({e}); use an IANA name such as \"Europe/Berlin\" or \"America/New_York\" (Debian package tzdata)"
        ))
    })
}

/// RFC 3339 with an offset, or a local date-time without one (`2026-12-01T18:00`) read in
/// `zone`. A local time that does not exist (the hour skipped when clocks go forward) or
/// happens twice (when they go back) is refused rather than guessed.
pub fn parse_time(
    key: &str,
    text: &str,
    zone: Option<&TimeZone>,
    zone_name: Option<&str>,
) -> Result<Timestamp, ApiError> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let Ok(local) = text.parse::<jiff::civil::DateTime>() else {
        return Err(bad(format!(
            "`{key}` = {text:?} is not a time; write RFC 3339 (\"2026-12-01T18:00:00Z\", \"2026-12-01T18:00:00+01:00\") or a local \"2026-12-01T18:00\" with `timezone`"
        )));
    };
    let (Some(zone), Some(name)) = (zone, zone_name) else {
        return Err(bad(format!(
            "`{key}` = {text:?} has no offset: add one (\"Z\", \"+01:00\") or give `timezone` (e.g. \"Europe/Berlin\") to read it as local time there"
        )));
    };
    let ambiguous = zone.to_ambiguous_timestamp(local);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { .. } => ambiguous
            .unambiguous()
            .map_err(|e| bad(format!("`{key}` = {text:?} in {name}: {e}"))),
        AmbiguousOffset::Gap { before, after } => Err(bad(format!(
            "`{key}` = {text:?} does not exist in {name}: clocks go from {before} to {after} then; give a time outside the change or an offset"
        ))),
        AmbiguousOffset::Fold { before, after } => Err(bad(format!(
            "`{key}` = {text:?} happens twice in {name} (offset {before}, then {after}): add the offset you mean, e.g. \"{text}{before}\""
        ))),
    }
}

/// End after start, not in the past, not longer than [`MAX_LENGTH`].
fn check_times(r: &Record, now: Timestamp) -> Result<(), ApiError> {
    if r.ends_at <= now {
        return Err(bad(format!(
            "`ends_at` ({}) is in the past (now is {now}): a silence must end in the future",
            r.ends_at
        )));
    }
    if r.ends_at <= r.starts_at {
        return Err(bad(format!(
            "`ends_at` ({}) is not after `starts_at` ({}): the end is when notifications resume",
            r.ends_at, r.starts_at
        )));
    }
    let length = r.ends_at.duration_since(r.starts_at);
    if length.as_secs() > MAX_LENGTH.as_secs() as i64 {
        return Err(bad(format!(
            "the silence would last {}; at most {} days are accepted through the API (a longer one belongs in a rule file's [[silence]])",
            humantime::format_duration(Duration::from_secs(length.as_secs().max(0) as u64)),
            MAX_LENGTH.as_secs() / 86_400
        )));
    }
    Ok(())
}

/// The [`Silence`] the engine gates on (`origin` names the silences file in its debug form).
/// Also re-checks a record read back from the file.
pub fn compile(r: &Record, origin: &Path) -> Result<Silence, ApiError> {
    if r.matchers.is_empty() && r.rule.is_none() {
        return Err(bad(
            "a silence must say what it mutes: `matchers` (e.g. {\"rack\": \"r1\"}) and/or `rule` (a glob on rule names, e.g. \"ups_*\")",
        ));
    }
    if r.matchers.len() > MAX_MATCHERS {
        return Err(bad(format!(
            "`matchers` has {} tags; at most {MAX_MATCHERS} are accepted",
            r.matchers.len()
        )));
    }
    let mut matchers = Vec::with_capacity(r.matchers.len());
    for (tag, glob) in &r.matchers {
        if tag.len() > MAX_PATTERN || glob.len() > MAX_PATTERN {
            return Err(bad(format!(
                "`matchers.{}` is too long; tag names and globs have at most {MAX_PATTERN} bytes",
                input_preview(tag)
            )));
        }
        let m = TagMatcher::parse(tag, glob)
            .map_err(|(problem, _)| bad(format!("`matchers`: {problem}; use *, ? and {{a,b}} wildcards, e.g. \"r1*\", or \"!glob\" to exclude")))?;
        matchers.push(m);
    }
    let rule = match &r.rule {
        None => None,
        Some(g) if g.len() > MAX_PATTERN => {
            return Err(bad(format!(
                "`rule` is {} bytes long; at most {MAX_PATTERN} are accepted",
                g.len()
            )))
        }
        Some(g) => match globset::GlobBuilder::new(g).build() {
            Ok(m) => Some((g.clone(), m.compile_matcher())),
            Err(e) => {
                return Err(bad(format!(
                    "`rule` = {g:?} is not a valid rule name glob: {}; write e.g. \"ups_*\"",
                    e.kind()
                )))
            }
        },
    };
    let zone = r.timezone.as_deref().map(zone_of).transpose()?;
    let daily = match &r.daily {
        None => None,
        Some(d) => match (parse_hhmm(&d.from), parse_hhmm(&d.to)) {
            (Some(from), Some(to)) if from != to => Some(DailyWindow {
                from,
                to,
                zone: zone.clone(),
            }),
            _ => {
                return Err(bad(format!(
                    "`daily` = {{from: {:?}, to: {:?}}} is not a window of two different HH:MM times; write e.g. {{\"from\": \"02:00\", \"to\": \"04:30\"}} (local time of `timezone`, may cross midnight)",
                    d.from, d.to
                )))
            }
        },
    };
    Ok(Silence {
        comment: format!("{} (by {})", r.comment, r.created_by),
        rule,
        matchers,
        start_ns: Some(ns_of(r.starts_at)),
        end_ns: Some(ns_of(r.ends_at)),
        daily,
        origin: origin.to_path_buf(),
        line: 0,
    })
}

fn input_preview(s: &str) -> String {
    s.chars().take(20).collect::<String>() + "…"
}

/// Nanoseconds since the epoch, clamped to the engine's `i64` clock (years 1678-2262).
pub fn ns_of(t: Timestamp) -> i64 {
    let ns = t.as_nanosecond();
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

/// Times saved and shown as RFC 3339 in UTC (`2026-12-01T18:00:00Z`).
mod rfc3339 {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    fn add(body: Value) -> Result<Record, ApiError> {
        from_body(
            body.to_string().as_bytes(),
            "0123456789abcdef".into(),
            now(),
        )
    }

    fn base() -> Value {
        serde_json::json!({
            "matchers": {"rack": "r1"},
            "duration": "2h",
            "created_by": "alice",
            "comment": "PDU swap, change 4711",
        })
    }

    fn with(k: &str, v: Value) -> Value {
        let mut b = base();
        b[k] = v;
        b
    }

    fn without(k: &str) -> Value {
        let mut b = base();
        b.as_object_mut().unwrap().remove(k);
        b
    }

    fn refused(body: Value) -> String {
        let e = add(body).unwrap_err();
        assert_eq!(e.status(), 400, "{e}");
        e.to_string()
    }

    #[test]
    fn a_duration_runs_from_now() {
        let r = add(base()).unwrap();
        assert_eq!(r.starts_at, now());
        assert_eq!(r.ends_at.to_string(), "2026-12-01T14:00:00Z");
        assert_eq!(r.created_by, "alice");
        let s = compile(&r, Path::new("silences.json")).unwrap();
        assert!(s.active_at(ns_of(now())));
        assert!(!s.active_at(ns_of(r.ends_at)));
    }

    #[test]
    fn every_problem_is_a_400_naming_the_key() {
        let cases: Vec<(Value, &str)> = vec![
            (without("matchers"), "must say what it mutes"),
            (
                with("matchers", serde_json::json!({"rack": "r[1"})),
                "not a valid glob",
            ),
            (
                with("matchers", serde_json::json!(["rack"])),
                "`matchers` must be an object",
            ),
            (
                with("matchers", serde_json::json!({"rack": 1})),
                "`matchers.rack` must be a glob",
            ),
            (with("rule", serde_json::json!("[")), "`rule`"),
            (
                with("timezone", serde_json::json!("Mars/Olympus")),
                "`timezone` = \"Mars/Olympus\"",
            ),
            (without("created_by"), "`created_by` is required"),
            (without("comment"), "`comment` is required"),
            (
                with("duration", serde_json::json!("soon")),
                "`duration` = \"soon\"",
            ),
            (
                with("duration", serde_json::json!("40d")),
                "at most 30 days",
            ),
            (
                with("ends_at", serde_json::json!("2026-12-01T13:00:00Z")),
                "either `ends_at`",
            ),
            (without("duration"), "needs an end"),
            (with("silly", serde_json::json!(1)), "`silly` is not a key"),
            (
                with("daily", serde_json::json!({"from": "02:00", "to": "02:00"})),
                "`daily`",
            ),
            (
                with(
                    "daily",
                    serde_json::json!({"from": "02:00", "until": "03:00"}),
                ),
                "`daily.until`",
            ),
            (
                with("created_by", serde_json::json!(7)),
                "`created_by` must be a string",
            ),
        ];
        for (body, want) in cases {
            let e = refused(body.clone());
            assert!(e.contains(want), "{body}: {e}");
        }
        let mut past = without("duration");
        past["ends_at"] = serde_json::json!("2026-12-01T11:00:00Z");
        assert!(refused(past).contains("in the past"));
        let mut reversed = without("duration");
        reversed["starts_at"] = serde_json::json!("2026-12-02T11:00:00Z");
        reversed["ends_at"] = serde_json::json!("2026-12-02T10:00:00Z");
        assert!(refused(reversed).contains("not after `starts_at`"));
        let mut local = without("duration");
        local["ends_at"] = serde_json::json!("2026-12-01T18:00");
        assert!(refused(local).contains("has no offset"));
        assert!(from_body(b"[1]", "x".into(), now()).is_err());
        assert!(from_body(b"", "x".into(), now()).is_err());
    }

    /// A local end is read in the silence's zone, with that day's offset: New York is UTC-5
    /// in December and UTC-4 in July.
    #[test]
    fn local_times_follow_the_zone_across_dst() {
        let ny = zone_of("America/New_York").unwrap();
        let t = |s| parse_time("ends_at", s, Some(&ny), Some("America/New_York"));
        assert_eq!(
            t("2026-12-01T18:00").unwrap().to_string(),
            "2026-12-01T23:00:00Z"
        );
        assert_eq!(
            t("2026-07-01T18:00").unwrap().to_string(),
            "2026-07-01T22:00:00Z"
        );
        assert_eq!(
            t("2026-12-01T18:00:30").unwrap().to_string(),
            "2026-12-01T23:00:30Z"
        );
        // An offset wins over the zone.
        assert_eq!(
            t("2026-12-01T18:00:00+01:00").unwrap().to_string(),
            "2026-12-01T17:00:00Z"
        );
        // 2026-03-08 02:30 does not exist in New York; 2026-11-01 01:30 happens twice.
        let gap = t("2026-03-08T02:30").unwrap_err().to_string();
        assert!(gap.contains("does not exist"), "{gap}");
        let fold = t("2026-11-01T01:30").unwrap_err().to_string();
        assert!(
            fold.contains("happens twice") && fold.contains("-04"),
            "{fold}"
        );
        assert!(t("tomorrow")
            .unwrap_err()
            .to_string()
            .contains("is not a time"));

        let mut body = without("duration");
        body["timezone"] = serde_json::json!("America/New_York");
        body["ends_at"] = serde_json::json!("2026-12-01T18:00");
        let r = add(body).unwrap();
        assert_eq!(r.ends_at.to_string(), "2026-12-01T23:00:00Z");
    }

    /// A daily window in Kolkata (UTC+5:30, no DST) and one in Berlin across its DST change.
    #[test]
    fn daily_windows_use_the_silence_zone() {
        let mut body = with("daily", serde_json::json!({"from": "17:00", "to": "18:00"}));
        body["timezone"] = serde_json::json!("Asia/Kolkata");
        body["duration"] = serde_json::json!("24h");
        let s = compile(&add(body).unwrap(), Path::new("s.json")).unwrap();
        let at = |x: &str| ns_of(x.parse::<Timestamp>().unwrap());
        // 17:00-18:00 IST = 11:30-12:30 UTC.
        assert!(s.active_at(at("2026-12-01T12:00:00Z")));
        assert!(!s.active_at(at("2026-12-01T12:30:00Z")));
        assert!(!s.active_at(at("2026-12-02T11:29:59Z")));
        assert!(s.active_at(at("2026-12-02T11:30:00Z")));

        let mut record = add(base()).unwrap();
        record.timezone = Some("Europe/Berlin".into());
        record.daily = Some(DailySpec {
            from: "02:00".into(),
            to: "04:00".into(),
        });
        record.starts_at = "2026-03-20T00:00:00Z".parse().unwrap();
        record.ends_at = "2026-04-10T00:00:00Z".parse().unwrap();
        let s = compile(&record, Path::new("s.json")).unwrap();
        // Before 2026-03-29, 02:00 Berlin is 01:00 UTC; after, 00:00 UTC.
        assert!(s.active_at(at("2026-03-25T01:30:00Z")));
        assert!(!s.active_at(at("2026-03-25T00:30:00Z")));
        assert!(s.active_at(at("2026-04-02T00:30:00Z")));
        assert!(!s.active_at(at("2026-04-02T02:30:00Z")));
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut r = add(with("rule", serde_json::json!("ups_*"))).unwrap();
        r.timezone = Some("Asia/Kolkata".into());
        r.daily = Some(DailySpec {
            from: "23:00".into(),
            to: "01:00".into(),
        });
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains("\"ends_at\":\"2026-12-01T14:00:00Z\""),
            "{text}"
        );
        let back: Record = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    proptest! {
        /// Whatever arrives, the parser answers a record or a 400, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = from_body(&bytes, "x".into(), now());
        }

        #[test]
        fn arbitrary_json_never_panics(
            keys in proptest::collection::vec(proptest::sample::select(KEYS), 0..9),
            values in proptest::collection::vec(
                prop_oneof![
                    Just(Value::Null),
                    any::<i64>().prop_map(Value::from),
                    "[ -~]{0,20}".prop_map(Value::from),
                    "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9](:[0-5][0-9])?(Z|[+-][01][0-9]:[0-5][0-9])?".prop_map(Value::from),
                    "[0-9]{1,6}[smhd]".prop_map(Value::from),
                    Just(serde_json::json!({"rack": "r*"})),
                    Just(serde_json::json!({"from": "23:00", "to": "01:00"})),
                    Just(Value::from("Europe/Berlin")),
                ],
                9,
            ),
        ) {
            let mut obj = Map::new();
            for (k, v) in keys.iter().zip(values) {
                obj.insert((*k).to_string(), v);
            }
            let _ = from_body(Value::Object(obj).to_string().as_bytes(), "x".into(), now());
        }
    }
}

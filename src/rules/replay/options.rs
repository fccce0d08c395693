//! What to replay: the time range from the CLI arguments, window and tick; compact durations
//! for the report.

use std::time::Duration;

use crate::time::{format_time, parse_time, NS_PER_SEC};

use super::error::ReplayError;

/// Compact duration, rounded to the second (`1h 2m 3s`); sub-second durations in ms.
pub fn format_duration_ns(ns: i64) -> String {
    let ns = ns.max(0);
    if ns < NS_PER_SEC {
        return format!("{}ms", ns / 1_000_000);
    }
    let secs = (ns + NS_PER_SEC / 2) / NS_PER_SEC;
    humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
}

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub from_ns: i64,
    pub until_ns: i64,
    /// Length of one query window; smaller bounds memory on sites with many series.
    pub window: Duration,
    /// Engine clock step (see [`Engine::tick`]).
    pub tick: Duration,
}

impl ReplayOptions {
    /// The range from the CLI's `--since` or `--from`/`--until` (RFC 3339); `until` defaults to
    /// `now_ns`. Window and tick default to 1 h and 1 s.
    pub fn from_args(
        since: Option<Duration>,
        from: Option<&str>,
        until: Option<&str>,
        now_ns: i64,
    ) -> Result<ReplayOptions, ReplayError> {
        let bad = |flag: &'static str, value: &str, problem: String| ReplayError::BadTime {
            flag,
            value: value.to_string(),
            problem,
        };
        let until_ns = match until {
            Some(u) => parse_time(u).map_err(|p| bad("--until", u, p))?,
            None => now_ns,
        };
        let from_ns = match (since, from) {
            (_, Some(f)) => parse_time(f).map_err(|p| bad("--from", f, p))?,
            (Some(d), None) => {
                until_ns.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
            (None, None) => {
                return Err(bad(
                    "--since/--from",
                    "",
                    "say which history to replay: --since 7d, or --from TIME [--until TIME]".into(),
                ))
            }
        };
        if from_ns >= until_ns {
            return Err(ReplayError::EmptyRange {
                from: format_time(from_ns),
                until: format_time(until_ns),
            });
        }
        Ok(ReplayOptions {
            from_ns,
            until_ns,
            window: Duration::from_secs(3600),
            tick: Duration::from_secs(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NS_PER_SEC;

    #[test]
    fn parses_and_formats_times() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2026-11-23T16:14:09Z", 1_795_450_449 * S),
            ("2026-11-23T18:14:09+02:00", 1_795_450_449 * S),
            ("2026-11-23 16:14:09.25z", 1_795_450_449 * S + 250_000_000),
            ("2026-11-23", 1_795_392_000 * S),
            ("2024-02-29T00:00:00-00:30", 1_709_166_600 * S),
        ];
        for (text, ns) in cases {
            assert_eq!(parse_time(text), Ok(ns), "{text}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-11-23T16:14:09",
            "2026-02-30",
            "2025-02-29",
            "2026-13-01",
            "26-11-23",
            "2026-11-23T24:00:00Z",
            "2026-11-23T16:14Z",
            "2026-11-23T16:14:09.Z",
            "2026-11-23T16:14:09+0200",
            "1969-12-31T23:59:59Z",
            "2262-04-12T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time(1_795_450_449 * S), "2026-11-23T16:14:09Z");
        assert_eq!(
            format_time(1_795_450_449 * S + 250_000_000),
            "2026-11-23T16:14:09.250Z"
        );
        assert_eq!(format_duration_ns(3723 * S + 400_000_000), "1h 2m 3s");
        assert_eq!(format_duration_ns(250_000_000), "250ms");
    }

    #[test]
    fn options_from_cli_arguments() {
        let now = 1_000_000 * S;
        let o = ReplayOptions::from_args(Some(Duration::from_secs(3600)), None, None, now).unwrap();
        assert_eq!((o.from_ns, o.until_ns), (now - 3600 * S, now));
        let o = ReplayOptions::from_args(
            None,
            Some("1970-01-01T00:00:10Z"),
            Some("1970-01-01T00:00:20Z"),
            now,
        )
        .unwrap();
        assert_eq!((o.from_ns, o.until_ns), (10 * S, 20 * S));
        let e = ReplayOptions::from_args(None, None, None, now).unwrap_err();
        assert!(e.to_string().contains("--since 7d"), "{e}");
        let e = ReplayOptions::from_args(None, Some("1970-01-02"), Some("1970-01-01"), now)
            .unwrap_err();
        assert!(matches!(e, ReplayError::EmptyRange { .. }), "{e}");
        let e = ReplayOptions::from_args(None, Some("monday"), None, now).unwrap_err();
        assert!(e.to_string().starts_with("--from \"monday\""), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn time_parser_never_panics(s in "[0-9TZ:+\\-. ]{0,40}") {
            let _ = parse_time(&s);
        }

        #[test]
        fn times_round_trip(secs in 0i64..9_223_372_035, ms in 0i64..1000) {
            let ns = secs * S + ms * 1_000_000;
            proptest::prop_assert_eq!(parse_time(&format_time(ns)), Ok(ns));
        }
    }
}

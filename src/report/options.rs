//! What to report on: the time range (RFC 3339 or relative to now), filters, the context
//! window, shifts and time zone, and the output, from the command line.

use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobMatcher};

use crate::time::{format_time, parse_time};

use super::error::ReportError;
use super::shifts::Shifts;

/// `sitewatch report`: the incident report from the InfluxDB history.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[arg(long, short, env = "SITEWATCH_CONFIG")]
    pub config: PathBuf,
    /// Start of the range: RFC 3339 (2026-11-01T06:00:00Z), a date, `now` or relative (-24h).
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End of the range (exclusive); alerts still firing then are reported as open.
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub until: String,
    /// Only incidents of series with this `site` tag.
    #[arg(long)]
    pub site: Option<String>,
    /// Only incidents of rules matching this glob (`ups_*`; a stale alert is `<rule>:stale`).
    #[arg(long)]
    pub rule: Option<String>,
    /// Only incidents of series with this `device` tag.
    #[arg(long)]
    pub device: Option<String>,
    /// md (plots written beside --out) or html (one self-contained file).
    #[arg(long, default_value = "md")]
    pub format: String,
    /// Output file; default stdout (markdown then carries no plots).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How far before an incident other alerts of its device and site are listed, and how
    /// much of the metric is plotted before and after it.
    #[arg(long, default_value = "30m")]
    pub context: String,
    /// Local start times of the shifts, for the alerts-per-shift table.
    #[arg(long, default_value = "06:00,14:00,22:00")]
    pub shifts: String,
    /// IANA time zone of the shifts and of the times shown in the report.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// The parsed command line.
#[derive(Debug)]
pub struct ReportOptions {
    pub from_ns: i64,
    pub until_ns: i64,
    pub site: Option<String>,
    pub device: Option<String>,
    pub rule: Option<(String, GlobMatcher)>,
    pub context_ns: i64,
    pub shifts: Shifts,
    pub format: Format,
    pub out: Option<PathBuf>,
}

impl ReportOptions {
    pub fn from_args(args: &ReportArgs, now_ns: i64) -> Result<ReportOptions, ReportError> {
        let from_ns = parse_when("--from", &args.from, now_ns)?;
        let until_ns = parse_when("--until", &args.until, now_ns)?;
        if from_ns >= until_ns {
            return Err(ReportError::EmptyRange {
                from: format_time(from_ns),
                until: format_time(until_ns),
            });
        }
        let rule = match &args.rule {
            Some(g) => {
                let m = Glob::new(g)
                    .map_err(|e| ReportError::BadGlob {
                        glob: g.clone(),
                        problem: e.kind().to_string(),
                    })?
                    .compile_matcher();
                Some((g.clone(), m))
            }
            None => None,
        };
        let context =
            humantime::parse_duration(&args.context).map_err(|e| ReportError::BadContext {
                value: args.context.clone(),
                problem: e.to_string(),
            })?;
        let format = match args.format.as_str() {
            "md" | "markdown" => Format::Markdown,
            "html" => Format::Html,
            other => {
                return Err(ReportError::BadFormat {
                    value: other.to_string(),
                })
            }
        };
        Ok(ReportOptions {
            from_ns,
            until_ns,
            site: args.site.clone(),
            device: args.device.clone(),
            rule,
            context_ns: duration_ns(context),
            shifts: Shifts::parse(&args.shifts, &args.timezone)?,
            format,
            out: args.out.clone(),
        })
    }
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `now`, `-24h` (a humantime duration before now) or an RFC 3339 time / date.
pub fn parse_when(flag: &'static str, text: &str, now_ns: i64) -> Result<i64, ReportError> {
    let bad = |problem: String| ReportError::BadTime {
        flag,
        value: text.to_string(),
        problem,
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ns);
    }
    if let Some(ago) = t.strip_prefix('-') {
        let d = humantime::parse_duration(ago.trim()).map_err(|e| bad(e.to_string()))?;
        return Ok(now_ns.saturating_sub(duration_ns(d)));
    }
    parse_time(t).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_absolute_or_relative_to_now() {
        let now = 1_800_000_000 * 1_000_000_000i64;
        assert_eq!(parse_when("--until", "now", now).unwrap(), now);
        assert_eq!(
            parse_when("--from", "-24h", now).unwrap(),
            now - 86_400 * 1_000_000_000
        );
        assert_eq!(
            parse_when("--from", "2026-11-01T01:00:00+01:00", now).unwrap(),
            parse_time("2026-11-01T00:00:00Z").unwrap()
        );
        for bad in ["-", "-3 parsecs", "yesterday", "2026-13-01"] {
            let e = parse_when("--from", bad, now).unwrap_err().to_string();
            assert!(e.contains("--from") && e.contains("-24h"), "{e}");
        }
    }
}

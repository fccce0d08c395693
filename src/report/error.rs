//! What can go wrong in `sitewatch report`, with the fix for each.

use crate::rules::replay::ReplayError;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// InfluxDB unreachable, database missing, HTTP or query errors: the replay client's
    /// messages already name the URL and the fix.
    #[error(transparent)]
    Influx(#[from] ReplayError),
    #[error("InfluxDB at {url} has no measurement {measurement:?} in database {database:?}: sitewatch writes one point there per alert firing, acknowledge, escalation and resolve; check [influx] database and events_measurement, and that `sitewatch run` with rules has written to this server")]
    NoEvents {
        url: String,
        database: String,
        measurement: String,
    },
    #[error("{flag} {value:?}: {problem}; write an RFC 3339 time (2026-11-01T06:00:00Z, 2026-11-01T07:00:00+01:00), a date (2026-11-01), `now` or a time before now (-24h, -7d)")]
    BadTime {
        flag: &'static str,
        value: String,
        problem: String,
    },
    #[error("empty time range: --from {from} is not before --until {until}; pass an earlier --from or a later --until")]
    EmptyRange { from: String, until: String },
    #[error("--rule {glob:?}: {problem}; write a rule name or a glob such as 'ups_*'")]
    BadGlob { glob: String, problem: String },
    #[error("--context {value:?}: {problem}; write a duration such as 30m or 2h")]
    BadContext { value: String, problem: String },
    #[error("--shifts {value:?}: {problem}; write the local start times of the shifts, e.g. 06:00,14:00,22:00")]
    BadShifts { value: String, problem: String },
    #[error("--timezone {value:?}: {problem}; write an IANA time zone such as Europe/Berlin or UTC (the tz database comes from the tzdata package)")]
    BadTimeZone { value: String, problem: String },
    #[error("--format {value:?}: write md or html")]
    BadFormat { value: String },
    #[error("no TrueType font for the plots (looked for {tried}): install one with `sudo apt-get install -y fonts-dejavu-core`, or set SITEWATCH_REPORT_FONT to a .ttf file")]
    NoFont { tried: String },
    #[error("font {path}: not a TrueType/OpenType font; set SITEWATCH_REPORT_FONT to a .ttf file, or install fonts-dejavu-core")]
    BadFont { path: String },
    #[error("plot of incident {incident}: {problem}")]
    Plot { incident: usize, problem: String },
    #[error("cannot write {path}: {source}; check that the directory exists and is writable")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

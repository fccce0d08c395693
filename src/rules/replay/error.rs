//! What can go wrong in a replay, with the fix for each.

use crate::sink::influx::InfluxError;

impl ReplayError {
    /// A request to `url` that got no answer.
    pub(crate) fn unreachable(url: &str, e: reqwest::Error) -> ReplayError {
        let e = e.without_url();
        let detail = match crate::tls::send_failure(&e, "influx.tls") {
            ("tls", text) => text,
            (_, chain) => format!(
                "{chain}; check [influx] url and that the server is running and reachable from here"
            ),
        };
        ReplayError::Unreachable {
            url: url.to_string(),
            detail,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Config(#[from] InfluxError),
    /// `detail` carries the cause chain and what to do (for a refused certificate: which
    /// `[influx.tls]` key to set).
    #[error("cannot reach InfluxDB at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("InfluxDB at {url} answered HTTP {status} to the history query: {body}; {hint}")]
    Http {
        url: String,
        status: u16,
        body: String,
        hint: &'static str,
    },
    #[error("InfluxDB at {url} rejected the query `{query}`: {message}; {hint}")]
    Query {
        url: String,
        query: String,
        message: String,
        hint: &'static str,
    },
    #[error("InfluxDB at {url} sent an answer that is not InfluxQL JSON ({problem}) to `{query}`; is [influx] url an InfluxDB server?")]
    Response {
        url: String,
        query: String,
        problem: String,
    },
    #[error("{flag} {value:?}: {problem}; write e.g. 2026-11-01T00:00:00Z, 2026-11-01T02:00:00+02:00 or 2026-11-01")]
    BadTime {
        flag: &'static str,
        value: String,
        problem: String,
    },
    #[error("empty time range: from {from} is not before until {until}; pass an earlier --from or a later --until")]
    EmptyRange { from: String, until: String },
    #[error("--rule {name:?}: no such rule; loaded rules: {known}")]
    UnknownRule { name: String, known: String },
    #[error("no rules to test: the config has no [rules] files and no --rules FILE was given")]
    NoRules,
}

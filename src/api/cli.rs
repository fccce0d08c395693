//! What `sitewatch ack` and `sitewatch silence add|list|expire` send and print: one line a person reads, or the
//! server's JSON with `--json`.

use reqwest::Method;
use serde_json::{json, Value};

use super::client::{Instance, InstanceError};

/// `sitewatch ack ID --by NAME [--comment TEXT]`.
pub async fn ack(
    instance: &Instance,
    id: &str,
    by: &str,
    comment: &str,
    as_json: bool,
) -> Result<String, InstanceError> {
    let client = instance.client()?;
    let answer = client
        .call(
            Method::POST,
            &format!("api/v1/alerts/{id}/ack"),
            Some(&json!({ "by": by, "comment": comment })),
        )
        .await?;
    if as_json {
        return Ok(answer.to_string());
    }
    Ok(describe_ack(&answer["alert"]))
}

/// The flags of `sitewatch silence add`, which become the API's JSON body: what it mutes
/// (`--match` and/or `--rule`) and until when (`--duration`, or `--end` with an optional
/// `--start`); local times are read in `--timezone`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SilenceFlags {
    /// TAG=GLOB a series' tag must match (repeatable; "!GLOB" excludes).
    #[arg(long = "match", value_name = "TAG=GLOB")]
    pub matchers: Vec<String>,
    /// Glob on rule names, e.g. "ups_*".
    #[arg(long)]
    pub rule: Option<String>,
    /// How long from now (or from --start), e.g. 2h.
    #[arg(long, conflicts_with = "end")]
    pub duration: Option<String>,
    /// RFC 3339, or a local date-time (2026-12-01T18:00) in --timezone. Default: now.
    #[arg(long)]
    pub start: Option<String>,
    /// RFC 3339, or a local date-time (2026-12-01T18:00) in --timezone.
    #[arg(long, required_unless_present = "duration")]
    pub end: Option<String>,
    /// IANA time zone for local times and --daily, e.g. Europe/Berlin.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Only within this local window each day, e.g. 02:00-04:00 (may cross midnight).
    #[arg(long, value_name = "FROM-TO")]
    pub daily: Option<String>,
    /// Why (change number, what is repaired); required.
    #[arg(long)]
    pub comment: String,
    /// Who silences (default: $USER).
    #[arg(long, env = "USER")]
    pub by: String,
}

/// A flag the command line can refuse before asking the server.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("--match {0:?}: write TAG=GLOB, e.g. --match rack=r1 or --match rack='r1*'")]
    Match(String),
    #[error("--daily {0:?}: write FROM-TO in local time of --timezone, e.g. --daily 02:00-04:00")]
    Daily(String),
}

impl SilenceFlags {
    pub fn body(&self) -> Result<Value, FlagError> {
        let mut matchers = serde_json::Map::new();
        for m in &self.matchers {
            let Some((tag, glob)) = m.split_once('=') else {
                return Err(FlagError::Match(m.clone()));
            };
            matchers.insert(tag.trim().to_string(), json!(glob.trim()));
        }
        let mut body = json!({
            "matchers": matchers,
            "created_by": self.by,
            "comment": self.comment,
        });
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        };
        put("rule", &self.rule);
        put("duration", &self.duration);
        put("starts_at", &self.start);
        put("ends_at", &self.end);
        put("timezone", &self.timezone);
        if let Some(d) = &self.daily {
            let Some((from, to)) = d.split_once('-') else {
                return Err(FlagError::Daily(d.clone()));
            };
            body["daily"] = json!({ "from": from.trim(), "to": to.trim() });
        }
        Ok(body)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SilenceCliError {
    #[error(transparent)]
    Flag(#[from] FlagError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
}

impl From<super::client::ClientError> for SilenceCliError {
    fn from(e: super::client::ClientError) -> Self {
        SilenceCliError::Instance(e.into())
    }
}

/// `sitewatch silence add ...`: the new silence's id and window.
pub async fn silence_add(
    instance: &Instance,
    flags: &SilenceFlags,
    as_json: bool,
) -> Result<String, SilenceCliError> {
    let body = flags.body()?;
    let client = instance.client()?;
    let answer = client
        .call(Method::POST, "api/v1/silences", Some(&body))
        .await?;
    if as_json {
        return Ok(answer.to_string());
    }
    Ok(format!("added {}", describe_silence(&answer["silence"])))
}

/// `sitewatch silence list`: one line per silence.
pub async fn silence_list(instance: &Instance, as_json: bool) -> Result<String, InstanceError> {
    let answer = instance
        .client()?
        .call(Method::GET, "api/v1/silences", None)
        .await?;
    if as_json {
        return Ok(answer.to_string());
    }
    let lines: Vec<String> = answer["silences"]
        .as_array()
        .map(|a| a.iter().map(describe_silence).collect())
        .unwrap_or_default();
    if lines.is_empty() {
        return Ok("no silences".into());
    }
    Ok(lines.join("\n"))
}

/// `sitewatch silence expire ID --by NAME`.
pub async fn silence_expire(
    instance: &Instance,
    id: &str,
    by: &str,
    as_json: bool,
) -> Result<String, InstanceError> {
    let answer = instance
        .client()?
        .call(
            Method::DELETE,
            &format!("api/v1/silences/{id}"),
            Some(&json!({ "by": by })),
        )
        .await?;
    if as_json {
        return Ok(answer.to_string());
    }
    Ok(format!("expired {}", describe_silence(&answer["silence"])))
}

/// `ID STATE [source] what, when, by whom: comment`.
fn describe_silence(s: &Value) -> String {
    let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
    let mut what: Vec<String> = s["matchers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = s["rule"].as_str() {
        what.push(format!("rule={r}"));
    }
    let mut when = match (s["starts_at"].as_str(), s["ends_at"].as_str()) {
        (Some(a), Some(b)) => format!("{a} to {b}"),
        (None, Some(b)) => format!("until {b}"),
        (Some(a), None) => format!("from {a}"),
        (None, None) => String::new(),
    };
    if let Some(d) = s["daily"].as_object() {
        let zone = s["timezone"]
            .as_str()
            .or(d.get("timezone").and_then(Value::as_str))
            .unwrap_or("UTC");
        let part = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        when = format!("{when} daily {}-{} {zone}", part("from"), part("to"))
            .trim()
            .to_string();
    } else if let Some(z) = s["timezone"].as_str() {
        when = format!("{when} ({z})");
    }
    let who = match (s["source"].as_str(), s["created_by"].as_str()) {
        (Some("file"), _) => format!("in {}", text("file")),
        (_, Some(by)) => format!("by {by}"),
        _ => String::new(),
    };
    format!(
        "{} {} {} {when} {who}: {}",
        text("id"),
        text("state"),
        what.join(","),
        text("comment")
    )
}

fn describe_ack(alert: &Value) -> String {
    let s = |k: &str| alert[k].as_str().unwrap_or("?").to_string();
    let ack = &alert["acknowledged"];
    let by = ack["by"].as_str().unwrap_or("?");
    let at = ack["at"].as_str().unwrap_or("?");
    format!(
        "acknowledged {} ({} {} on {}) by {by} at {at}",
        s("id"),
        s("severity"),
        s("rule"),
        s("series"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_flags_become_the_api_body() {
        let flags = SilenceFlags {
            matchers: vec!["rack=r1".into(), "site = dc1".into()],
            end: Some("2026-12-01T18:00".into()),
            timezone: Some("Europe/Berlin".into()),
            daily: Some("02:00-04:00".into()),
            comment: "PDU swap".into(),
            by: "alice".into(),
            ..Default::default()
        };
        assert_eq!(
            flags.body().unwrap(),
            json!({
                "matchers": {"rack": "r1", "site": "dc1"},
                "ends_at": "2026-12-01T18:00",
                "timezone": "Europe/Berlin",
                "daily": {"from": "02:00", "to": "04:00"},
                "created_by": "alice",
                "comment": "PDU swap",
            })
        );
        let bad = SilenceFlags {
            matchers: vec!["rack".into()],
            ..Default::default()
        };
        assert!(bad.body().unwrap_err().to_string().contains("TAG=GLOB"));
        let bad = SilenceFlags {
            daily: Some("0200".into()),
            ..Default::default()
        };
        assert!(bad.body().unwrap_err().to_string().contains("--daily"));
    }

    #[test]
    fn the_silence_line_says_what_when_and_who() {
        let line = describe_silence(&json!({
            "id": "00ff00ff00ff00ff", "state": "active", "source": "api",
            "matchers": {"rack": "r1"}, "starts_at": "2026-12-01T10:00:00Z",
            "ends_at": "2026-12-01T12:00:00Z", "timezone": "Asia/Kolkata",
            "created_by": "alice", "comment": "PDU swap",
        }));
        assert_eq!(
            line,
            "00ff00ff00ff00ff active rack=r1 2026-12-01T10:00:00Z to 2026-12-01T12:00:00Z (Asia/Kolkata) by alice: PDU swap"
        );
        let line = describe_silence(&json!({
            "id": "file-00ff00ff00ff00ff", "state": "active", "source": "file",
            "file": "rules/maint.toml:4", "rule": "backup_*", "starts_at": null, "ends_at": null,
            "daily": {"from": "23:00", "to": "01:00", "timezone": "UTC"}, "comment": "backups",
        }));
        assert_eq!(
            line,
            "file-00ff00ff00ff00ff active rule=backup_* daily 23:00-01:00 UTC in rules/maint.toml:4: backups"
        );
    }

    #[test]
    fn the_ack_line_names_alert_and_person() {
        let line = describe_ack(&json!({
            "id": "00ff00ff00ff00ff",
            "rule": "inlet_hot",
            "severity": "critical",
            "series": "environment,rack=r1",
            "acknowledged": { "by": "alice", "at": "2026-12-01T10:00:00.000Z" }
        }));
        assert_eq!(
            line,
            "acknowledged 00ff00ff00ff00ff (critical inlet_hot on environment,rack=r1) by alice at 2026-12-01T10:00:00.000Z"
        );
    }
}

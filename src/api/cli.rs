//! What `sitewatch ack` (and the other API commands) print: one line a person reads, or the
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

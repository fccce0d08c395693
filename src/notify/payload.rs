//! Request bodies of each receiver kind, built from events by pure functions.

pub use crate::time::rfc3339_millis;
use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::model::{Acknowledgement, Event, EventState, Severity};

/// What the bodies need besides the events.
#[derive(Debug, Clone, Default)]
pub struct PayloadContext {
    /// Base of links to the alert's source (`generatorURL`, PagerDuty `client_url`).
    pub generator_url_base: Option<reqwest::Url>,
    /// Alertmanager: a firing alert's `endsAt` is this far after the send. Re-sends push it
    /// forward; if sitewatch dies the alert resolves by itself after this long.
    pub firing_validity: Duration,
}

/// PagerDuty's limit on `payload.summary`, in characters.
pub const PAGERDUTY_SUMMARY_MAX: usize = 1024;

/// The `endsAt` Alertmanager itself puts in webhook bodies for alerts still firing.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`. Alertmanager rejects a whole
/// POST with 400 for one bad name, and tag keys like `rack-id` are common.
pub fn label_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.as_bytes()[0].is_ascii_digit() {
        out.insert(0, '_');
    }
    out
}

/// Labels of the alert: series tags, then the rule's `labels` (which replace a tag of the
/// same name, as Prometheus rule labels do), then the identity labels `measurement`,
/// `field`, `severity` and `alertname` (= rule), which win a name clash.
pub fn labels(ev: &Event) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = ev
        .series
        .tags
        .iter()
        .map(|(k, v)| (label_name(k), v.to_string()))
        .collect();
    for (k, v) in &ev.labels {
        out.insert(label_name(k), v.clone());
    }
    out.insert("measurement".into(), ev.series.measurement.to_string());
    out.insert("field".into(), ev.field.to_string());
    out.insert("severity".into(), ev.severity.as_str().into());
    out.insert("alertname".into(), ev.rule.to_string());
    out
}

/// Annotations: `summary` (the rule's message), `value`, `threshold` (when the rule has
/// one) and `series`, then the rule's own `annotations` (`runbook_url`, ...), which replace
/// a built-in one of the same name.
pub fn annotations(ev: &Event) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert("summary".to_string(), summary_text(ev));
    out.insert("value".to_string(), ev.value.to_string());
    if let Some(t) = ev.threshold {
        out.insert("threshold".to_string(), format_number(t));
    }
    out.insert("series".to_string(), ev.series.to_string());
    for (k, v) in &ev.annotations {
        out.insert(k.to_string(), v.clone());
    }
    out
}

/// The rule's `runbook_url` annotation, if any.
fn runbook_url(ev: &Event) -> Option<&str> {
    ev.annotations
        .iter()
        .find(|(k, _)| &**k == "runbook_url")
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn summary_text(ev: &Event) -> String {
    if ev.message.trim().is_empty() {
        format!("{} on {}", ev.rule, ev.series)
    } else {
        ev.message.clone()
    }
}

fn format_number(v: f64) -> String {
    format!("{v}")
}

/// At most `max` characters of `s`, cut on a char boundary, with `…` marking a cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Stable identity of rule + series, shared by a trigger, its re-triggers and its resolve.
pub fn dedup_key(ev: &Event) -> String {
    format!("sitewatch-{}", ev.alert_id())
}

/// Fingerprint of a label set, in the 16-hex-digit form Alertmanager shows.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<&str> = labels
        .iter()
        .flat_map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    format!("{:016x}", crate::text::fnv1a(&parts))
}

/// `generator_url_base?rule=...&series=...`, when a base is configured.
pub fn generator_url(ctx: &PayloadContext, ev: &Event) -> Option<String> {
    let mut url = ctx.generator_url_base.clone()?;
    url.query_pairs_mut()
        .append_pair("rule", &ev.rule)
        .append_pair("series", &ev.series.to_string());
    Some(url.into())
}

fn to_object(map: BTreeMap<String, String>) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// `startsAt` / `endsAt` in ns. A firing alert ends `firing_validity` after the later of now
/// and its start; a resolved one at its event time, never before its start (Alertmanager
/// rejects `endsAt` < `startsAt` with 400).
fn alert_window(ev: &Event, ctx: &PayloadContext, now_ns: i64) -> (i64, i64) {
    let validity = i64::try_from(ctx.firing_validity.as_nanos()).unwrap_or(i64::MAX);
    let ends = match ev.state {
        EventState::Firing => now_ns.max(ev.started_ns).saturating_add(validity),
        EventState::Resolved => ev.timestamp_ns.max(ev.started_ns),
    };
    (ev.started_ns, ends)
}

/// Body of Alertmanager's `POST /api/v2/alerts`: a JSON array of alerts.
pub fn alertmanager_body(events: &[Event], ctx: &PayloadContext, now_ns: i64) -> Value {
    let alerts = events
        .iter()
        .map(|ev| {
            let (starts, ends) = alert_window(ev, ctx, now_ns);
            let mut alert = Map::new();
            alert.insert("labels".into(), to_object(labels(ev)));
            alert.insert("annotations".into(), to_object(annotations(ev)));
            alert.insert("startsAt".into(), rfc3339_millis(starts).into());
            alert.insert("endsAt".into(), rfc3339_millis(ends).into());
            if let Some(url) = generator_url(ctx, ev) {
                alert.insert("generatorURL".into(), url.into());
            }
            Value::Object(alert)
        })
        .collect();
    Value::Array(alerts)
}

/// A generic webhook body in the Alertmanager/Grafana webhook shape (version 4).
pub fn webhook_body(receiver: &str, events: &[Event], ctx: &PayloadContext) -> Value {
    let label_sets: Vec<BTreeMap<String, String>> = events.iter().map(labels).collect();
    let annotation_sets: Vec<BTreeMap<String, String>> = events.iter().map(annotations).collect();
    let alerts: Vec<Value> = events
        .iter()
        .zip(&label_sets)
        .zip(&annotation_sets)
        .map(|((ev, labels), annotations)| {
            let ends = match ev.state {
                EventState::Firing => ZERO_TIME.to_string(),
                EventState::Resolved => rfc3339_millis(ev.timestamp_ns.max(ev.started_ns)),
            };
            json!({
                "status": ev.state.as_str(),
                "labels": to_object(labels.clone()),
                "annotations": to_object(annotations.clone()),
                "startsAt": rfc3339_millis(ev.started_ns),
                "endsAt": ends,
                "generatorURL": generator_url(ctx, ev).unwrap_or_default(),
                "fingerprint": fingerprint(labels),
            })
        })
        .collect();
    let status = if events.iter().any(|e| e.state == EventState::Firing) {
        "firing"
    } else {
        "resolved"
    };
    let common_labels = common(&label_sets);
    let group_labels: BTreeMap<String, String> = common_labels
        .get("alertname")
        .map(|a| [("alertname".to_string(), a.clone())].into_iter().collect())
        .unwrap_or_default();
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    json!({
        "receiver": receiver,
        "status": status,
        "alerts": alerts,
        "groupLabels": to_object(group_labels),
        "commonLabels": to_object(common_labels),
        "commonAnnotations": to_object(common(&annotation_sets)),
        "externalURL": ctx.generator_url_base.as_ref().map(|u| u.to_string()).unwrap_or_default(),
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
    })
}

/// Key/value pairs present with the same value in every set.
fn common(sets: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = sets.split_first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|s| s.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// PagerDuty severity for an event severity.
pub fn pagerduty_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Ok => "info",
    }
}

/// PagerDuty `payload.source`: the device when the series names one, else the series.
fn pagerduty_source(ev: &Event) -> String {
    ["device", "host", "hostname", "agent"]
        .iter()
        .find_map(|k| ev.series.tags.get(k))
        .map(str::to_string)
        .unwrap_or_else(|| ev.series.to_string())
}

/// PagerDuty Events API v2 body: a trigger with details, or a resolve (which needs only the
/// routing and dedup keys).
pub fn pagerduty_body(routing_key: &str, ev: &Event, ctx: &PayloadContext) -> Value {
    let dedup = dedup_key(ev);
    if ev.state == EventState::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup,
        });
    }
    let mut details = Map::new();
    details.insert("rule".into(), ev.rule.to_string().into());
    details.insert("series".into(), ev.series.to_string().into());
    details.insert("field".into(), ev.field.to_string().into());
    details.insert("value".into(), ev.value.to_string().into());
    if let Some(t) = ev.threshold {
        details.insert("threshold".into(), format_number(t).into());
    }
    details.insert("started_at".into(), rfc3339_millis(ev.started_ns).into());
    for (k, v) in ev.series.tags.iter() {
        details
            .entry(format!("tag_{k}"))
            .or_insert_with(|| v.to_string().into());
    }
    for (k, v) in &ev.labels {
        details.insert(format!("label_{k}"), v.clone().into());
    }
    for (k, v) in &ev.annotations {
        details.insert(k.to_string(), v.clone().into());
    }
    let mut payload = Map::new();
    payload.insert(
        "summary".into(),
        truncate_chars(
            &format!(
                "[{}] {}",
                ev.severity.as_str().to_uppercase(),
                summary_text(ev)
            ),
            PAGERDUTY_SUMMARY_MAX,
        )
        .into(),
    );
    payload.insert("source".into(), pagerduty_source(ev).into());
    payload.insert("severity".into(), pagerduty_severity(ev.severity).into());
    payload.insert("timestamp".into(), rfc3339_millis(ev.timestamp_ns).into());
    payload.insert("component".into(), ev.series.measurement.to_string().into());
    if let Some(site) = ev.series.tags.get("site") {
        payload.insert("group".into(), site.into());
    }
    payload.insert("class".into(), ev.rule.to_string().into());
    payload.insert("custom_details".into(), Value::Object(details));
    let mut body = Map::new();
    body.insert("routing_key".into(), routing_key.into());
    body.insert("event_action".into(), "trigger".into());
    body.insert("dedup_key".into(), dedup.into());
    body.insert("payload".into(), Value::Object(payload));
    body.insert("client".into(), "sitewatch".into());
    if let Some(url) = generator_url(ctx, ev) {
        body.insert("client_url".into(), url.into());
    }
    if let Some(url) = runbook_url(ev) {
        body.insert("links".into(), json!([{ "href": url, "text": "Runbook" }]));
    }
    Value::Object(body)
}

/// Slack treats `&`, `<` and `>` as control characters in `text`.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack incoming-webhook body: `{"text": ...}` with a severity prefix.
pub fn slack_body(ev: &Event, ctx: &PayloadContext) -> Value {
    let head = match (ev.state, ev.severity) {
        (EventState::Resolved, s) => format!(":white_check_mark: *RESOLVED* (was {s})"),
        (EventState::Firing, Severity::Critical) => ":rotating_light: *CRITICAL*".to_string(),
        (EventState::Firing, Severity::Warning) => ":warning: *WARNING*".to_string(),
        (EventState::Firing, Severity::Ok) => ":information_source: *INFO*".to_string(),
    };
    let threshold = ev
        .threshold
        .map(|t| format!(" (threshold {})", format_number(t)))
        .unwrap_or_default();
    let mut text = format!(
        "{head} {}: {}\n`{}` {} = {}{threshold}",
        slack_escape(&ev.rule),
        slack_escape(&summary_text(ev)),
        slack_escape(&ev.series.to_string()),
        slack_escape(&ev.field),
        slack_escape(&ev.value.to_string()),
    );
    if let Some(url) = generator_url(ctx, ev) {
        text.push_str(&format!("\n<{url}|details>"));
    }
    if let Some(url) = runbook_url(ev) {
        text.push_str(&format!("\n<{}|runbook>", slack_escape(url)));
    }
    json!({ "text": text })
}

/// The firing alert with its acknowledgement as annotations (`acknowledged_by`,
/// `acknowledged_at`, `ack_comment`): what Alertmanager gets on every re-send once
/// acknowledged (it has no acknowledgement of its own), and webhooks in the ack.
pub fn with_ack(ev: &Event, ack: &Acknowledgement) -> Event {
    let mut ev = ev.clone();
    ev.annotations
        .retain(|(k, _)| !["acknowledged_by", "acknowledged_at", "ack_comment"].contains(&&**k));
    ev.annotations
        .push(("acknowledged_by".into(), ack.by.clone()));
    ev.annotations
        .push(("acknowledged_at".into(), rfc3339_millis(ack.at_ns)));
    if !ack.comment.is_empty() {
        ev.annotations
            .push(("ack_comment".into(), ack.comment.clone()));
    }
    ev
}

/// A webhook's acknowledgement: the webhook shape with `status = "acknowledged"` and an
/// `acknowledgement` object (`by`, `comment`, `at`).
pub fn webhook_ack_body(
    receiver: &str,
    ev: &Event,
    ack: &Acknowledgement,
    ctx: &PayloadContext,
) -> Value {
    let mut body = webhook_body(receiver, &[with_ack(ev, ack)], ctx);
    body["status"] = "acknowledged".into();
    body["alerts"][0]["status"] = "acknowledged".into();
    body["acknowledgement"] = json!({
        "by": ack.by,
        "comment": ack.comment,
        "at": rfc3339_millis(ack.at_ns),
    });
    body
}

/// PagerDuty's `acknowledge` event for the incident the trigger opened.
pub fn pagerduty_ack_body(routing_key: &str, ev: &Event) -> Value {
    json!({
        "routing_key": routing_key,
        "event_action": "acknowledge",
        "dedup_key": dedup_key(ev),
    })
}

/// Slack: who acknowledged which alert, and why.
pub fn slack_ack_body(ev: &Event, ack: &Acknowledgement, ctx: &PayloadContext) -> Value {
    let mut text = format!(
        ":eyes: *ACKNOWLEDGED* by {} ({}) {}: {}\n`{}`",
        slack_escape(&ack.by),
        ev.severity,
        slack_escape(&ev.rule),
        slack_escape(&summary_text(ev)),
        slack_escape(&ev.series.to_string()),
    );
    if !ack.comment.is_empty() {
        text.push_str(&format!("\n> {}", slack_escape(&ack.comment)));
    }
    if let Some(url) = generator_url(ctx, ev) {
        text.push_str(&format!("\n<{url}|details>"));
    }
    json!({ "text": text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FieldValue, SeriesKey, TagSet};
    use proptest::prelude::*;

    const T0: i64 = 1_714_564_800_250_000_000; // 2024-05-01T12:00:00.250Z

    fn event(state: EventState, severity: Severity) -> Event {
        Event {
            labels: Vec::new(),
            annotations: Vec::new(),
            rule: "rack_hot".into(),
            series: SeriesKey::new(
                "environment",
                TagSet::new([("site", "dc1"), ("rack-id", "r1"), ("device", "pdu-7")]),
            ),
            field: "temperature".into(),
            severity,
            state,
            value: FieldValue::Float(33.5),
            threshold: Some(32.0),
            started_ns: T0,
            timestamp_ns: T0 + 60_000_000_000,
            message: "rack r1 inlet 33.5 °C above 32".into(),
        }
    }

    fn ctx() -> PayloadContext {
        PayloadContext {
            generator_url_base: Some(reqwest::Url::parse("https://grafana.example/d/x").unwrap()),
            firing_validity: Duration::from_secs(180),
        }
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(T0), "2024-05-01T12:00:00.250Z");
        assert_eq!(
            rfc3339_millis(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(rfc3339_millis(-1_000_000), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_millis(i64::MAX), "2262-04-11T23:47:16.854Z");
    }

    proptest! {
        #[test]
        fn rfc3339_agrees_with_humantime(ns in 0i64..i64::MAX) {
            let st = std::time::UNIX_EPOCH + Duration::from_nanos(ns as u64);
            prop_assert_eq!(
                rfc3339_millis(ns),
                humantime::format_rfc3339_millis(st).to_string()
            );
        }

        #[test]
        fn truncation_is_bounded_and_a_prefix(s in "\\PC{0,2000}", max in 1usize..1100) {
            let t = truncate_chars(&s, max);
            prop_assert!(t.chars().count() <= max);
            let kept = t.strip_suffix('…').unwrap_or(&t);
            prop_assert!(s.starts_with(kept));
        }

        #[test]
        fn label_names_are_valid(s in "\\PC{0,40}") {
            let l = label_name(&s);
            let mut chars = l.chars();
            let first = chars.next().unwrap();
            prop_assert!(first.is_ascii_alphabetic() || first == '_');
            prop_assert!(chars.all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
    }

    #[test]
    fn truncates_multibyte_on_char_boundary() {
        let s = "é".repeat(2000);
        let t = truncate_chars(&s, PAGERDUTY_SUMMARY_MAX);
        assert_eq!(t.chars().count(), 1024);
        assert!(t.ends_with('…'));
        assert_eq!(truncate_chars("short", 1024), "short");
    }

    #[test]
    fn labels_sanitise_and_identity_wins() {
        let mut ev = event(EventState::Firing, Severity::Critical);
        ev.series.tags = ev
            .series
            .tags
            .merged([("severity", "spoofed"), ("9x", "y")]);
        let l = labels(&ev);
        assert_eq!(l["alertname"], "rack_hot");
        assert_eq!(l["severity"], "critical");
        assert_eq!(l["measurement"], "environment");
        assert_eq!(l["field"], "temperature");
        assert_eq!(l["rack_id"], "r1");
        assert_eq!(l["_9x"], "y");
        assert_eq!(l["site"], "dc1");
    }

    #[test]
    fn alertmanager_firing_shape() {
        let ev = event(EventState::Firing, Severity::Critical);
        let now = T0 + 120_000_000_000;
        let body = alertmanager_body(std::slice::from_ref(&ev), &ctx(), now);
        let expected = json!([{
            "labels": {
                "alertname": "rack_hot", "severity": "critical", "measurement": "environment",
                "field": "temperature", "site": "dc1", "rack_id": "r1", "device": "pdu-7"
            },
            "annotations": {
                "summary": "rack r1 inlet 33.5 °C above 32", "value": "33.5", "threshold": "32",
                "series": "environment,device=pdu-7,rack-id=r1,site=dc1"
            },
            "startsAt": "2024-05-01T12:00:00.250Z",
            "endsAt": "2024-05-01T12:05:00.250Z",
            "generatorURL": "https://grafana.example/d/x?rule=rack_hot&series=environment%2Cdevice%3Dpdu-7%2Crack-id%3Dr1%2Csite%3Ddc1"
        }]);
        assert_eq!(body, expected);
    }

    /// Rule labels and annotations reach every receiver: Alertmanager labels (a rule label
    /// replaces a tag, identity labels win), annotations, PagerDuty details and links, Slack.
    #[test]
    fn rule_labels_and_annotations_reach_every_receiver() {
        let mut ev = event(EventState::Firing, Severity::Critical);
        ev.labels = vec![
            ("site".into(), "hall-2".into()),
            ("team".into(), "facilities".into()),
        ];
        ev.annotations = vec![
            (
                "runbook_url".into(),
                "https://wiki.example/rb/rack_hot".into(),
            ),
            ("summary".into(), "Rack r1 is hot".into()),
        ];
        let l = labels(&ev);
        assert_eq!(l["team"], "facilities");
        assert_eq!(l["site"], "hall-2", "a rule label replaces the tag");
        assert_eq!(l["alertname"], "rack_hot");
        let a = annotations(&ev);
        assert_eq!(a["runbook_url"], "https://wiki.example/rb/rack_hot");
        assert_eq!(a["summary"], "Rack r1 is hot");
        assert_eq!(a["value"], "33.5");
        let am = alertmanager_body(std::slice::from_ref(&ev), &ctx(), T0);
        assert_eq!(am[0]["labels"]["team"], "facilities");
        assert_eq!(
            am[0]["annotations"]["runbook_url"],
            "https://wiki.example/rb/rack_hot"
        );
        let wh = webhook_body("ops", std::slice::from_ref(&ev), &ctx());
        assert_eq!(wh["alerts"][0]["labels"]["team"], "facilities");
        let pd = pagerduty_body("key", &ev, &ctx());
        assert_eq!(pd["payload"]["custom_details"]["label_team"], "facilities");
        assert_eq!(
            pd["payload"]["custom_details"]["runbook_url"],
            "https://wiki.example/rb/rack_hot"
        );
        assert_eq!(pd["links"][0]["href"], "https://wiki.example/rb/rack_hot");
        let slack = slack_body(&ev, &ctx());
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .contains("<https://wiki.example/rb/rack_hot|runbook>"),
            "{slack}"
        );
        // The fingerprint follows the labels, so a resolve with the same labels is the same
        // alert for Alertmanager-style receivers.
        let mut resolved = ev.clone();
        resolved.state = EventState::Resolved;
        assert_eq!(fingerprint(&labels(&resolved)), fingerprint(&l));
    }

    #[test]
    fn alertmanager_resolved_ends_at_event_time_never_before_start() {
        let mut ev = event(EventState::Resolved, Severity::Warning);
        let body = alertmanager_body(std::slice::from_ref(&ev), &PayloadContext::default(), 0);
        assert_eq!(body[0]["endsAt"], "2024-05-01T12:01:00.250Z");
        assert!(body[0].get("generatorURL").is_none());
        ev.timestamp_ns = T0 - 5_000_000_000;
        let body = alertmanager_body(&[ev], &PayloadContext::default(), 0);
        assert_eq!(body[0]["endsAt"], body[0]["startsAt"]);
    }

    #[test]
    fn webhook_shape() {
        let ev = event(EventState::Firing, Severity::Warning);
        let body = webhook_body("ops", std::slice::from_ref(&ev), &ctx());
        assert_eq!(body["receiver"], "ops");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["version"], "4");
        assert_eq!(body["groupLabels"], json!({"alertname": "rack_hot"}));
        assert_eq!(body["commonLabels"]["severity"], "warning");
        assert_eq!(body["commonAnnotations"]["value"], "33.5");
        let a = &body["alerts"][0];
        assert_eq!(a["status"], "firing");
        assert_eq!(a["labels"]["site"], "dc1");
        assert_eq!(a["annotations"]["threshold"], "32");
        assert_eq!(a["startsAt"], "2024-05-01T12:00:00.250Z");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["fingerprint"], fingerprint(&labels(&ev)));
        assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
        assert!(a["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("https://grafana"));

        let old = event(EventState::Resolved, Severity::Warning);
        let new = event(EventState::Firing, Severity::Critical);
        let body = webhook_body("ops", &[old, new], &ctx());
        assert_eq!(body["status"], "firing");
        assert_eq!(body["alerts"][0]["status"], "resolved");
        assert_eq!(body["alerts"][0]["endsAt"], "2024-05-01T12:01:00.250Z");
        assert!(body["commonLabels"].get("severity").is_none());
        assert_eq!(body["commonLabels"]["alertname"], "rack_hot");
    }

    #[test]
    fn acknowledgements_in_each_receivers_shape() {
        let fire = event(EventState::Firing, Severity::Critical);
        let ack = Acknowledgement {
            by: "alice".into(),
            comment: "on <my> way".into(),
            at_ns: T0,
        };
        // PagerDuty: acknowledge the incident the trigger opened.
        let pd = pagerduty_ack_body("KEY", &fire);
        assert_eq!(
            pd,
            json!({"routing_key": "KEY", "event_action": "acknowledge", "dedup_key": dedup_key(&fire)})
        );
        // Alertmanager: the firing alert with the ack as annotations, once each.
        let twice = with_ack(&with_ack(&fire, &ack), &ack);
        let am = alertmanager_body(std::slice::from_ref(&twice), &ctx(), T0);
        assert_eq!(am[0]["annotations"]["acknowledged_by"], "alice");
        assert_eq!(
            am[0]["annotations"]["acknowledged_at"],
            "2024-05-01T12:00:00.250Z"
        );
        assert_eq!(am[0]["annotations"]["ack_comment"], "on <my> way");
        assert_eq!(
            twice
                .annotations
                .iter()
                .filter(|(k, _)| &**k == "acknowledged_by")
                .count(),
            1
        );
        // Webhook: status acknowledged and who.
        let hook = webhook_ack_body("noc", &fire, &ack, &ctx());
        assert_eq!(hook["status"], "acknowledged");
        assert_eq!(hook["alerts"][0]["status"], "acknowledged");
        assert_eq!(hook["acknowledgement"]["by"], "alice");
        // Slack: escaped text naming the person.
        let slack = slack_ack_body(&fire, &ack, &ctx());
        let text = slack["text"].as_str().unwrap();
        assert!(text.starts_with(":eyes: *ACKNOWLEDGED* by alice"), "{text}");
        assert!(text.contains("on &lt;my&gt; way"), "{text}");
    }

    #[test]
    fn pagerduty_trigger_and_resolve_share_dedup_key() {
        let fire = event(EventState::Firing, Severity::Critical);
        let body = pagerduty_body("KEY", &fire, &ctx());
        assert_eq!(body["routing_key"], "KEY");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(
            body["payload"]["summary"],
            "[CRITICAL] rack r1 inlet 33.5 °C above 32"
        );
        assert_eq!(body["payload"]["source"], "pdu-7");
        assert_eq!(body["payload"]["severity"], "critical");
        assert_eq!(body["payload"]["component"], "environment");
        assert_eq!(body["payload"]["group"], "dc1");
        assert_eq!(body["payload"]["class"], "rack_hot");
        assert_eq!(body["payload"]["custom_details"]["value"], "33.5");
        assert_eq!(body["payload"]["custom_details"]["threshold"], "32");
        assert_eq!(body["payload"]["custom_details"]["tag_site"], "dc1");
        assert!(body["client_url"].as_str().is_some());

        let warn = event(EventState::Firing, Severity::Warning);
        let warn_body = pagerduty_body("KEY", &warn, &ctx());
        assert_eq!(warn_body["payload"]["severity"], "warning");

        let resolve = pagerduty_body(
            "KEY",
            &event(EventState::Resolved, Severity::Critical),
            &ctx(),
        );
        assert_eq!(
            resolve,
            json!({"routing_key": "KEY", "event_action": "resolve", "dedup_key": body["dedup_key"]})
        );
        assert_eq!(body["dedup_key"], warn_body["dedup_key"]);
        // Stable across builds: pinned value.
        assert_eq!(dedup_key(&fire), dedup_key(&fire.clone()));
        let mut other = fire.clone();
        other.series.tags = TagSet::new([("site", "dc2")]);
        assert_ne!(dedup_key(&fire), dedup_key(&other));
    }

    #[test]
    fn pagerduty_summary_truncated_and_source_falls_back_to_series() {
        let mut ev = event(EventState::Firing, Severity::Critical);
        ev.message = "ü".repeat(3000);
        ev.series.tags = TagSet::new([("rack", "r1")]);
        let body = pagerduty_body("K", &ev, &PayloadContext::default());
        let summary = body["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), PAGERDUTY_SUMMARY_MAX);
        assert_eq!(body["payload"]["source"], "environment,rack=r1");
        assert!(body.get("client_url").is_none());
    }

    #[test]
    fn slack_text() {
        let mut ev = event(EventState::Firing, Severity::Critical);
        ev.message = "a < b & c".into();
        let body = slack_body(&ev, &PayloadContext::default());
        assert_eq!(
            body,
            json!({"text": ":rotating_light: *CRITICAL* rack_hot: a &lt; b &amp; c\n`environment,device=pdu-7,rack-id=r1,site=dc1` temperature = 33.5 (threshold 32)"})
        );
        let body = slack_body(&event(EventState::Firing, Severity::Warning), &ctx());
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with(":warning: *WARNING* rack_hot:"), "{text}");
        assert!(text.contains("|details>"), "{text}");
        let body = slack_body(&event(EventState::Resolved, Severity::Critical), &ctx());
        assert!(body["text"]
            .as_str()
            .unwrap()
            .starts_with(":white_check_mark: *RESOLVED* (was critical) rack_hot"));
    }
}

//! The responder's loop end to end, through the built binary, Mosquitto, InfluxDB 1.6 and a
//! real Prometheus Alertmanager: an alert fires, goes to Alertmanager and the NOC webhook,
//! escalates after `escalate_after` to the duty manager's webhook, is acknowledged through
//! `POST /api/v1/alerts/{id}/ack` (the next escalation step never comes; the ack is in the
//! `alerts` measurement, an `acknowledged` events row, the webhooks and Alertmanager's
//! annotations), then resolves, and the resolve row carries time-to-ack and time-to-resolve.

mod common;

use std::time::{Duration, Instant};

use common::alertmanager::{http_get, Alertmanager, WebhookReceiver};
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::{line_protocol_rules_body, Sitewatch};
use common::{eventually, hour_ago_ns};
use serde_json::{json, Value};

const DB: &str = "responder";
const RULE: &str = "rack_inlet_hot";
const TOKEN: &str = "responder-test-token-0123456789";
/// The NOC webhook escalates to the manager after this long unacknowledged.
const NOC_ESCALATES_AFTER_S: u64 = 3;
/// The manager escalates to the director after this long: the ack must come first.
const MANAGER_ESCALATES_AFTER_S: u64 = 6;

const RULES: &str = r#"
[[rule]]
name = "rack_inlet_hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { critical = 30.0, critical_clear = 28.0 }
message = "{rack} inlet at {value} °C"
labels = { team = "facilities" }
annotations = { runbook_url = "https://wiki.example/rb/{rule}" }
"#;

/// Runs blocking harness calls without starving the runtime that serves the webhooks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn open_alerts(sw: &Sitewatch) -> Vec<Value> {
    let (status, body) = http_get(sw.metrics_port, "/api/v1/alerts").expect("GET /api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["alerts"].as_array().cloned().unwrap_or_default()
}

/// Alerts of the rule in the webhook's accepted requests with `status`, with the request.
fn hook_alerts(hook: &WebhookReceiver, status: &str) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for r in hook.accepted() {
        for a in r.body["alerts"].as_array().into_iter().flatten() {
            if a["labels"]["alertname"] == RULE && a["status"] == status {
                out.push((r.body.clone(), a.clone()));
            }
        }
    }
    out
}

async fn wait_hook(
    hook: &WebhookReceiver,
    status: &str,
    within: Duration,
    who: &str,
    sw: &Sitewatch,
) -> Vec<(Value, Value)> {
    let deadline = Instant::now() + within;
    loop {
        let got = hook_alerts(hook, status);
        if !got.is_empty() {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: no {status} alert within {within:?}; requests: {:#?}\nsitewatch log:\n{}",
            hook.requests(),
            sw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_ack(port: u16, id: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/alerts/{id}/ack"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("POST ack");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_escalates_until_acknowledged_and_resolves_with_response_times() {
    let (influx, broker, am) = blocking(|| {
        let influx = Influxd::start();
        influx.create_database(DB);
        (influx, Mosquitto::start(), Alertmanager::start())
    });
    let noc = WebhookReceiver::start().await;
    let manager = WebhookReceiver::start().await;
    let director = WebhookReceiver::start().await;
    let body = line_protocol_rules_body(&influx.url(), DB, broker.port, "responder", "env/#");
    let mut sw = Sitewatch::start_paused(&format!(
        r#"{body}
[api]
token = "{TOKEN}"

[notify]
[[notify.receiver]]
name = "alertmanager"
kind = "alertmanager"
url = "{am}"
repeat_interval = "1s"

[[notify.receiver]]
name = "noc"
kind = "webhook"
url = "{noc}"
repeat_interval = "1s"
escalate_after = "{NOC_ESCALATES_AFTER_S}s"
escalate_to = ["duty-manager"]

[[notify.receiver]]
name = "duty-manager"
kind = "webhook"
url = "{manager}"
escalate_after = "{MANAGER_ESCALATES_AFTER_S}s"
escalate_to = ["director"]

[[notify.receiver]]
name = "director"
kind = "webhook"
url = "{director}"
"#,
        am = am.url(),
        noc = noc.url("/noc"),
        manager = manager.url("/manager"),
        director = director.url("/director"),
    ));
    std::fs::write(sw.dir().join("rules.toml"), RULES).expect("rules");
    blocking(|| sw.launch());

    // The rack runs hot: the alert fires at once to Alertmanager and the NOC only.
    let base = hour_ago_ns();
    blocking(|| {
        broker.publish_lines("env/r1", &[format!("env,rack=r1 t=35 {base}")], 1);
    });
    let fired_at = Instant::now();
    wait_hook(&noc, "firing", Duration::from_secs(10), "noc", &sw).await;
    let fired_to_noc = fired_at.elapsed();
    let am_alert = eventually(Duration::from_secs(10), "the alert in Alertmanager", || {
        blocking(|| am.active_named(RULE)).into_iter().next()
    });
    assert_eq!(am_alert["labels"]["rack"], "r1");
    assert!(
        hook_alerts(&manager, "firing").is_empty(),
        "the duty manager gets alerts only by escalation"
    );
    let open = open_alerts(&sw);
    assert_eq!(open.len(), 1, "{open:#?}");
    let id = open[0]["id"].as_str().expect("alert id").to_string();
    assert_eq!(open[0]["acknowledged"], Value::Null);

    // Nobody acknowledges: after escalate_after it goes to the duty manager, one step.
    wait_hook(
        &manager,
        "firing",
        Duration::from_secs(NOC_ESCALATES_AFTER_S + 5),
        "duty manager",
        &sw,
    )
    .await;
    let escalated_after = fired_at.elapsed();
    assert!(
        escalated_after >= Duration::from_secs(NOC_ESCALATES_AFTER_S) - fired_to_noc,
        "escalated after {escalated_after:?}, before escalate_after"
    );
    let step = eventually(Duration::from_secs(10), "an escalated events row", || {
        let rows = blocking(|| {
            influx.rows(
                DB,
                "SELECT \"step\", \"receivers\", \"id\", \"message\" FROM \"events\" WHERE \"state\" = 'escalated'",
            )
        });
        rows.into_iter().next()
    });
    assert_eq!(step[1].as_i64(), Some(1), "{step:?}");
    assert_eq!(step[2], "duty-manager", "{step:?}");
    assert_eq!(step[3], id.as_str(), "{step:?}");

    // The API refuses an ack without the token and one without a name.
    let (status, body) = post_ack(sw.metrics_port, &id, None, json!({"by": "alice"})).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post_ack(sw.metrics_port, &id, Some(TOKEN), json!({"comment": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("by"),
        "{body}"
    );
    let (status, body) = post_ack(
        sw.metrics_port,
        "0000000000000000",
        Some(TOKEN),
        json!({"by": "alice"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Alice acknowledges it through the CLI, before the manager's step comes due.
    let out = blocking(|| {
        std::process::Command::new(common::sitewatch_bin())
            .args([
                "ack",
                &id,
                "--by",
                "alice",
                "--comment",
                "on my way to hall 2",
            ])
            .arg("--url")
            .arg(format!("http://127.0.0.1:{}", sw.metrics_port))
            .env("SITEWATCH_API_TOKEN", TOKEN)
            .env_remove("SITEWATCH_CONFIG")
            .output()
            .expect("run sitewatch ack")
    });
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "sitewatch ack failed: {line}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        line.starts_with(&format!("acknowledged {id} (critical {RULE}")),
        "{line}"
    );
    let acked_at = fired_at.elapsed();
    assert!(
        acked_at < Duration::from_secs(MANAGER_ESCALATES_AFTER_S + NOC_ESCALATES_AFTER_S),
        "the ack came too late for this test ({acked_at:?})"
    );
    let (status, body) = post_ack(sw.metrics_port, &id, Some(TOKEN), json!({"by": "bob"})).await;
    assert_eq!(status, 409, "a second ack: {body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("alice"),
        "{body}"
    );

    let listed = open_alerts(&sw);
    assert_eq!(listed[0]["acknowledged"]["by"], "alice", "{listed:#?}");
    // Both webhooks that have the alert hear who took it; Alertmanager gets annotations.
    let (body, _) = wait_hook(&noc, "acknowledged", Duration::from_secs(10), "noc", &sw)
        .await
        .remove(0);
    assert_eq!(body["acknowledgement"]["by"], "alice");
    assert_eq!(body["acknowledgement"]["comment"], "on my way to hall 2");
    wait_hook(
        &manager,
        "acknowledged",
        Duration::from_secs(10),
        "duty manager",
        &sw,
    )
    .await;
    // The NOC was re-sent the alert every second until then; the ack stops that.
    let noc_firing = hook_alerts(&noc, "firing").len();
    assert!(
        noc_firing >= 2,
        "re-sent while unacknowledged: {noc_firing}"
    );
    eventually(
        Duration::from_secs(10),
        "the ack in Alertmanager's annotations",
        || {
            blocking(|| am.active_named(RULE))
                .into_iter()
                .find(|a| a["annotations"]["acknowledged_by"] == "alice")
        },
    );

    // In InfluxDB: an acknowledged events row and the alerts measurement's acked row.
    let ack_row = eventually(
        Duration::from_secs(10),
        "an acknowledged events row",
        || {
            blocking(|| {
            influx.rows(
                DB,
                "SELECT \"acked_by\", \"comment\", \"time_to_ack_s\", \"id\" FROM \"events\" WHERE \"state\" = 'acknowledged'",
            )
        })
        .into_iter()
        .next()
        },
    );
    assert_eq!(ack_row[1], "alice");
    assert_eq!(ack_row[2], "on my way to hall 2");
    let tta = ack_row[3].as_f64().expect("time_to_ack_s");
    assert!(
        tta >= NOC_ESCALATES_AFTER_S as f64 && tta < acked_at.as_secs_f64() + 1.0,
        "time to ack {tta} s (acknowledged {acked_at:?} after firing)"
    );
    assert_eq!(ack_row[4], id.as_str());
    eventually(Duration::from_secs(10), "an acked alerts row", || {
        let rows = blocking(|| {
            influx.rows(
                DB,
                "SELECT last(\"acked\"), last(\"acked_by\") FROM \"alerts\" WHERE \"rule\" = 'rack_inlet_hot' AND time > now() - 3m",
            )
        });
        rows.first()
            .filter(|r| r.get(1) == Some(&Value::Bool(true)) && r.get(2) == Some(&json!("alice")))
            .cloned()
    });

    // The manager's step would have come due by now: it never does, the director hears nothing.
    let due = Duration::from_secs(NOC_ESCALATES_AFTER_S + MANAGER_ESCALATES_AFTER_S + 2);
    if let Some(wait) = due.checked_sub(fired_at.elapsed()) {
        tokio::time::sleep(wait).await;
    }
    assert!(
        director.requests().is_empty(),
        "escalation went on after the ack: {:#?}",
        director.requests()
    );
    let steps = blocking(|| {
        influx.rows(
            DB,
            "SELECT \"step\" FROM \"events\" WHERE \"state\" = 'escalated'",
        )
    });
    assert_eq!(steps.len(), 1, "one escalation step: {steps:?}");
    assert_eq!(
        hook_alerts(&noc, "firing").len(),
        noc_firing,
        "no re-sends once acknowledged"
    );

    // The rack cools down: the resolve carries the response times.
    blocking(|| {
        broker.publish_lines(
            "env/r1",
            &[format!("env,rack=r1 t=20 {}", base + 1_000_000_000)],
            1,
        );
    });
    wait_hook(&noc, "resolved", Duration::from_secs(10), "noc", &sw).await;
    wait_hook(
        &manager,
        "resolved",
        Duration::from_secs(10),
        "duty manager",
        &sw,
    )
    .await;
    let resolved = eventually(Duration::from_secs(10), "the resolved events row", || {
        blocking(|| {
            influx.rows(
                DB,
                "SELECT \"time_to_ack_s\", \"time_to_resolve_s\", \"acked_by\" FROM \"events\" WHERE \"state\" = 'resolved'",
            )
        })
        .into_iter()
        .next()
    });
    assert_eq!(resolved[1].as_f64(), Some(tta), "{resolved:?}");
    let ttr = resolved[2].as_f64().expect("time_to_resolve_s");
    assert!(
        ttr > tta && ttr < fired_at.elapsed().as_secs_f64() + 1.0,
        "time to resolve {ttr} s"
    );
    assert_eq!(resolved[3], "alice");
    assert!(open_alerts(&sw).is_empty());
    blocking(|| sw.terminate());
}

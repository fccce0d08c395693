//! Alert forwarding against a real Alertmanager and a local recording HTTP receiver (standing
//! in for webhooks, PagerDuty and Slack).

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sitewatch::model::{now_ns, Event, EventState, FieldValue, SeriesKey, Severity, TagSet};
use sitewatch::notify::{Notifier, NotifyConfig};
use sitewatch::pipeline::AlertNotice;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::alertmanager::{Alertmanager, WebhookReceiver};

struct Running {
    tx: mpsc::Sender<AlertNotice>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn send(&self, ev: Event) {
        self.tx
            .send(AlertNotice::Change(ev))
            .await
            .expect("notifier is running");
    }

    /// Cancels and waits for `run` to return; returns how long that took.
    async fn stop(self) -> Duration {
        let t = Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("notifier returned after shutdown")
            .expect("notifier task did not panic");
        t.elapsed()
    }
}

fn start(toml_src: &str) -> Running {
    #[derive(serde::Deserialize)]
    struct Root {
        notify: NotifyConfig,
    }
    let root: Root = toml::from_str(toml_src).unwrap_or_else(|e| panic!("{e}\n{toml_src}"));
    let notifier = Notifier::new(&root.notify).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(notifier.run(rx, shutdown.clone()));
    Running { tx, shutdown, task }
}

fn event(
    rule: &str,
    tags: &[(&str, &str)],
    severity: Severity,
    state: EventState,
    started_ns: i64,
) -> Event {
    Event {
        labels: Vec::new(),
        annotations: Vec::new(),
        rule: rule.into(),
        series: SeriesKey::new("environment", TagSet::new(tags.iter().copied())),
        field: "temperature_c".into(),
        severity,
        state,
        value: FieldValue::Float(33.5),
        threshold: Some(32.0),
        started_ns,
        timestamp_ns: now_ns(),
        message: format!("{rule}: inlet 33.5 °C above 32"),
    }
}

/// Polls a blocking check until it yields, without stalling the notifier's tasks.
async fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_fire_resend_escalate_resolve() {
    let am = Alertmanager::start();
    let n = start(&format!(
        r#"
        [notify]
        generator_url_base = "http://grafana.test/d/dc"
        [[notify.receiver]]
        name = "am"
        kind = "alertmanager"
        url = "{}"
        repeat_interval = "1s"
        "#,
        am.url()
    ));
    let tags = [("site", "dc1"), ("rack-id", "r7")];
    let started = now_ns();
    n.send(event(
        "am_rack_hot",
        &tags,
        Severity::Warning,
        EventState::Firing,
        started,
    ))
    .await;

    let alert = eventually(
        Duration::from_secs(10),
        "warning alert in Alertmanager",
        || am.active_named("am_rack_hot").into_iter().next(),
    )
    .await;
    let labels = &alert["labels"];
    assert_eq!(labels["severity"], "warning", "{alert:#}");
    assert_eq!(labels["site"], "dc1");
    // Tag keys are sanitised to valid label names (Alertmanager rejects `rack-id`).
    assert_eq!(labels["rack_id"], "r7");
    assert_eq!(labels["measurement"], "environment");
    assert_eq!(labels["field"], "temperature_c");
    let ann = &alert["annotations"];
    assert_eq!(ann["summary"], "am_rack_hot: inlet 33.5 °C above 32");
    assert_eq!(ann["value"], "33.5");
    assert_eq!(ann["threshold"], "32");
    assert_eq!(alert["status"]["state"], "active", "{alert:#}");
    assert!(alert["generatorURL"]
        .as_str()
        .unwrap()
        .starts_with("http://grafana.test/d/dc?rule=am_rack_hot"));
    let first_ends = alert["endsAt"].as_str().unwrap().to_string();

    // endsAt is 3 × repeat_interval ahead: without re-sends the alert would resolve after 3 s.
    // Outlive that and check it is still active with a later endsAt.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let alert = am
        .active_named("am_rack_hot")
        .into_iter()
        .next()
        .expect("firing alert kept alive by re-sends");
    assert!(
        alert["endsAt"].as_str().unwrap() > first_ends.as_str(),
        "endsAt did not move forward: {} vs {first_ends}",
        alert["endsAt"]
    );

    // Escalation: the warning alert is closed, the critical one fires.
    n.send(event(
        "am_rack_hot",
        &tags,
        Severity::Critical,
        EventState::Firing,
        started,
    ))
    .await;
    // Well within the 3 s the old alert's endsAt allows: it is closed explicitly, not left to
    // expire.
    eventually(
        Duration::from_millis(1500),
        "only the critical alert active",
        || {
            let active = am.active_named("am_rack_hot");
            let sevs: Vec<&str> = active
                .iter()
                .filter_map(|a| a["labels"]["severity"].as_str())
                .collect();
            (sevs == ["critical"]).then_some(())
        },
    )
    .await;

    n.send(event(
        "am_rack_hot",
        &tags,
        Severity::Critical,
        EventState::Resolved,
        started,
    ))
    .await;
    eventually(
        Duration::from_millis(1500),
        "alert resolved in Alertmanager",
        || am.active_named("am_rack_hot").is_empty().then_some(()),
    )
    .await;
    // And re-sends stop: it must not come back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(am.active_named("am_rack_hot").is_empty(), "{}", am.log());
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_alertmanager_webhook_shape() {
    let hook = WebhookReceiver::start().await;
    let n = start(&format!(
        r#"
        [notify]
        [[notify.receiver]]
        name = "tickets"
        kind = "webhook"
        url = "{}"
        headers = {{ Authorization = "Bearer test-token" }}
        "#,
        hook.url("/hooks/sitewatch")
    ));
    let started = now_ns() - 60_000_000_000;
    let fire = event(
        "wh_hot",
        &[("site", "dc1")],
        Severity::Critical,
        EventState::Firing,
        started,
    );
    n.send(fire.clone()).await;
    let got = hook.wait_accepted(1, Duration::from_secs(5)).await;
    let req = &got[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/sitewatch");
    assert_eq!(req.headers["authorization"], "Bearer test-token");
    assert_eq!(req.headers["content-type"], "application/json");
    let body = &req.body;
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for k in [
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "version",
        "groupKey",
        "truncatedAlerts",
    ] {
        assert!(keys.contains(&k), "missing {k} in {body:#}");
    }
    assert_eq!(body["receiver"], "tickets");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["version"], "4");
    assert_eq!(body["groupLabels"], json!({"alertname": "wh_hot"}));
    let alerts = body["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["status"], "firing");
    assert_eq!(
        a["labels"],
        json!({"alertname": "wh_hot", "severity": "critical", "site": "dc1",
               "measurement": "environment", "field": "temperature_c"})
    );
    assert_eq!(
        a["annotations"]["summary"],
        "wh_hot: inlet 33.5 °C above 32"
    );
    assert_eq!(a["annotations"]["value"], "33.5");
    assert_eq!(a["annotations"]["threshold"], "32");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(
        humantime::parse_rfc3339(a["startsAt"].as_str().unwrap()).unwrap(),
        std::time::UNIX_EPOCH + Duration::from_millis((started / 1_000_000) as u64)
    );
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    assert_eq!(body["commonLabels"], a["labels"]);

    let mut resolve = fire.clone();
    resolve.state = EventState::Resolved;
    n.send(resolve).await;
    let got = hook.wait_accepted(2, Duration::from_secs(5)).await;
    let body = &got[1].body;
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["alerts"][0]["status"], "resolved");
    assert_ne!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(body["alerts"][0]["fingerprint"], a["fingerprint"]);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_answering_500_twice_gets_the_alert_on_retry() {
    let hook = WebhookReceiver::start().await;
    hook.fail_next(2, 500);
    let n = start(&format!(
        r#"
        [notify]
        [[notify.receiver]]
        name = "flaky"
        kind = "webhook"
        url = "{}"
        max_retry_delay = "1s"
        "#,
        hook.url("/")
    ));
    n.send(event(
        "retry_hot",
        &[("site", "dc1")],
        Severity::Critical,
        EventState::Firing,
        now_ns(),
    ))
    .await;
    hook.wait_accepted(1, Duration::from_secs(10)).await;
    let all = hook.requests();
    assert_eq!(
        all.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    assert_eq!(all[0].body, all[2].body, "retries send the same alert");
    assert_eq!(all[2].body["alerts"][0]["labels"]["alertname"], "retry_hot");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_alert_is_not_retried_and_the_queue_moves_on() {
    let hook = WebhookReceiver::start().await;
    hook.fail_next(1, 400);
    let n = start(&format!(
        r#"
        [notify]
        [[notify.receiver]]
        name = "chat"
        kind = "slack"
        url = "{}"
        "#,
        hook.url("/services/T000/B000/XXXX")
    ));
    n.send(event(
        "slack_a",
        &[("site", "dc1")],
        Severity::Critical,
        EventState::Firing,
        now_ns(),
    ))
    .await;
    n.send(event(
        "slack_b",
        &[("site", "dc1")],
        Severity::Warning,
        EventState::Firing,
        now_ns(),
    ))
    .await;
    let got = hook.wait_accepted(1, Duration::from_secs(5)).await;
    // Give a wrongly retried first alert the chance to show up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let all = hook.requests();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].status, 400);
    let text = got[0].body["text"].as_str().unwrap();
    assert!(text.starts_with(":warning: *WARNING* slack_b:"), "{text}");
    assert_eq!(got[0].body.as_object().unwrap().len(), 1, "only `text`");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_hanging_receivers_do_not_delay_a_good_one() {
    let good = WebhookReceiver::start().await;
    let hanging = WebhookReceiver::start().await;
    hanging.set_delay(Duration::from_secs(60));
    // Nothing listens here: connections are refused.
    let dead_port = common::free_tcp_port();
    let n = start(&format!(
        r#"
        [notify]
        shutdown_grace = "1s"
        [[notify.receiver]]
        name = "dead"
        kind = "webhook"
        url = "http://127.0.0.1:{dead_port}/"
        [[notify.receiver]]
        name = "hanging"
        kind = "webhook"
        url = "{}"
        timeout = "30s"
        [[notify.receiver]]
        name = "good"
        kind = "webhook"
        url = "{}"
        "#,
        hanging.url("/"),
        good.url("/")
    ));
    let sent_at = Instant::now();
    for i in 0..5 {
        n.send(event(
            &format!("iso_{i}"),
            &[("site", "dc1")],
            Severity::Critical,
            EventState::Firing,
            now_ns(),
        ))
        .await;
    }
    let got = good.wait_accepted(5, Duration::from_secs(1)).await;
    let last = got.iter().map(|r| r.at).max().unwrap();
    let took = last.duration_since(sent_at);
    assert!(
        took < Duration::from_secs(1),
        "good receiver got all 5 after {took:?}"
    );
    let names: Vec<&str> = got
        .iter()
        .map(|r| r.body["alerts"][0]["labels"]["alertname"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["iso_0", "iso_1", "iso_2", "iso_3", "iso_4"],
        "in order"
    );
    // The hanging receiver holds its first request; the others wait in its queue.
    assert!(hanging.accepted().is_empty());
    // Shutdown is bounded by shutdown_grace even with a receiver that never answers.
    let stop = n.stop().await;
    assert!(stop < Duration::from_secs(3), "shutdown took {stop:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_trigger_and_resolve_share_dedup_key() {
    let pd = WebhookReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("pd.key");
    std::fs::write(&key_file, "R0UTINGKEY123\n").unwrap();
    let n = start(&format!(
        r#"
        [notify]
        [[notify.receiver]]
        name = "oncall"
        kind = "pagerduty"
        url = "{}"
        routing_key = {{ file = {:?} }}
        "#,
        pd.url("/v2/enqueue"),
        key_file
    ));
    let started = now_ns();
    let tags = [("site", "dc1"), ("device", "ups-3")];
    n.send(event(
        "pd_on_battery",
        &tags,
        Severity::Warning,
        EventState::Firing,
        started,
    ))
    .await;
    n.send(event(
        "pd_on_battery",
        &tags,
        Severity::Critical,
        EventState::Firing,
        started,
    ))
    .await;
    n.send(event(
        "pd_on_battery",
        &tags,
        Severity::Critical,
        EventState::Resolved,
        started,
    ))
    .await;
    let got = pd.wait_accepted(3, Duration::from_secs(5)).await;
    assert!(got.iter().all(|r| r.path == "/v2/enqueue"));
    let (w, c, r) = (&got[0].body, &got[1].body, &got[2].body);
    assert_eq!(w["routing_key"], "R0UTINGKEY123");
    assert_eq!(w["event_action"], "trigger");
    assert_eq!(w["payload"]["severity"], "warning");
    assert_eq!(w["payload"]["source"], "ups-3");
    assert_eq!(
        w["payload"]["summary"],
        "[WARNING] pd_on_battery: inlet 33.5 °C above 32"
    );
    assert_eq!(w["payload"]["custom_details"]["threshold"], "32");
    assert_eq!(c["event_action"], "trigger");
    assert_eq!(c["payload"]["severity"], "critical");
    assert_eq!(
        r,
        &json!({"routing_key": "R0UTINGKEY123", "event_action": "resolve", "dedup_key": w["dedup_key"]})
    );
    let dedup = w["dedup_key"].as_str().unwrap();
    assert!(!dedup.is_empty() && dedup.len() <= 255);
    assert_eq!(c["dedup_key"], w["dedup_key"]);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchers_route_by_severity_and_tag() {
    let crit = WebhookReceiver::start().await;
    let dc1 = WebhookReceiver::start().await;
    let all = WebhookReceiver::start().await;
    let n = start(&format!(
        r#"
        [notify]
        [[notify.receiver]]
        name = "crit"
        kind = "webhook"
        url = "{}"
        match = {{ severity = "critical" }}
        [[notify.receiver]]
        name = "dc1"
        kind = "webhook"
        url = "{}"
        match = {{ site = "dc1*", alertname = "route_*" }}
        [[notify.receiver]]
        name = "all"
        kind = "webhook"
        url = "{}"
        "#,
        crit.url("/"),
        dc1.url("/"),
        all.url("/")
    ));
    n.send(event(
        "route_warn",
        &[("site", "dc1a")],
        Severity::Warning,
        EventState::Firing,
        now_ns(),
    ))
    .await;
    n.send(event(
        "route_crit",
        &[("site", "dc2")],
        Severity::Critical,
        EventState::Firing,
        now_ns(),
    ))
    .await;
    let names = |r: &[common::alertmanager::Recorded]| -> Vec<String> {
        r.iter()
            .map(|x| {
                let a = &x.body["alerts"][0];
                format!(
                    "{}/{}",
                    a["labels"]["alertname"].as_str().unwrap(),
                    a["status"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(&all.wait_accepted(2, Duration::from_secs(5)).await),
        ["route_warn/firing", "route_crit/firing"]
    );
    // Same pipeline order: by the time `all` has both, the others have theirs too, but allow
    // them their own task scheduling.
    assert_eq!(
        names(&crit.wait_accepted(1, Duration::from_secs(5)).await),
        ["route_crit/firing"]
    );
    assert_eq!(
        names(&dc1.wait_accepted(1, Duration::from_secs(5)).await),
        ["route_warn/firing"]
    );

    // Escalation of the dc1 alert to critical: `crit` now gets it firing.
    n.send(event(
        "route_warn",
        &[("site", "dc1a")],
        Severity::Critical,
        EventState::Firing,
        now_ns(),
    ))
    .await;
    let got = crit.wait_accepted(2, Duration::from_secs(5)).await;
    assert_eq!(names(&got[1..]), ["route_warn/firing"]);
    n.stop().await;
    assert_eq!(crit.accepted().len(), 2);
    assert_eq!(dc1.accepted().len(), 2, "dc1 gets the escalation too");
    let body: &Value = &dc1.accepted()[1].body;
    // Webhook identity includes severity: the warning alert is closed with the critical one.
    assert_eq!(body["alerts"][0]["status"], "resolved");
    assert_eq!(body["alerts"][0]["labels"]["severity"], "warning");
    assert_eq!(body["alerts"][1]["status"], "firing");
    assert_eq!(body["alerts"][1]["labels"]["severity"], "critical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_alerts_are_delivered_on_shutdown() {
    let hook = WebhookReceiver::start().await;
    hook.set_delay(Duration::from_millis(100));
    let n = start(&format!(
        r#"
        [notify]
        shutdown_grace = "5s"
        [[notify.receiver]]
        name = "slowish"
        kind = "webhook"
        url = "{}"
        "#,
        hook.url("/")
    ));
    for i in 0..5 {
        n.send(event(
            &format!("sd_{i}"),
            &[],
            Severity::Warning,
            EventState::Firing,
            now_ns(),
        ))
        .await;
    }
    // Cancel at once: all five are still queued or in flight.
    let took = n.stop().await;
    assert_eq!(hook.accepted().len(), 5, "took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

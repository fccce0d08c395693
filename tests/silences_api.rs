//! Silences made through the API, end to end through the built binary: MQTT samples →
//! `sitewatch run` → rule → InfluxDB `events` and a webhook receiver. A silence added with a
//! local end time in America/New_York holds (the breach is written with `silenced = true`
//! and not sent), is still listed and still holds after a restart on the same state, and the
//! alert still firing is sent within a couple of seconds of its end. Also: writes without
//! the token (401) or with none configured (403), bad bodies (400 naming the key), a rule
//! file's silence listed and refused for DELETE (409), and `sitewatch silence add|list|expire`
//! expiring a silence at once.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::alertmanager::WebhookReceiver;
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;
use jiff::Timestamp;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{json, Value};

const DB: &str = "sitewatch";
const RULE: &str = "silence_e2e_hot";
const TOKEN: &str = "silences-e2e-token-0123456789";

const RULES: &str = r#"
[[rule]]
name = "silence_e2e_hot"
measurement = "environment"
field = "temperature"
match = { site = "*", rack = "*" }
above = { critical = 30.0, critical_clear = 28.0 }
message = "{rack}: inlet {value} °C"

[[silence]]
comment = "spare rack, nightly tests"
match = { rack = "r9" }
daily = { from = "01:00", to = "02:00", timezone = "Asia/Kolkata" }
"#;

/// Runs blocking harness calls without starving the runtime that serves the webhook.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

struct Stack {
    influx: Influxd,
    _broker: Mosquitto,
    hook: WebhookReceiver,
    sw: Sitewatch,
    mqtt: AsyncClient,
    mqtt_task: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.mqtt_task.abort();
    }
}

fn config(influx: &str, mqtt_port: u16, hook: &str) -> String {
    format!(
        r#"[influx]
url = "{influx}"
database = "{DB}"
flush_interval = "100ms"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "sitewatch-silences-e2e-{mqtt_port}"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/temperature"
measurement = "environment"
format = "number"
field = "temperature"

[rules]
files = ["rules.toml"]
state_file = "rules-state.json"

[notify]
[[notify.receiver]]
name = "hook"
kind = "webhook"
url = "{hook}"
"#
    )
}

impl Stack {
    async fn start() -> Stack {
        let (influx, broker) = blocking(|| {
            let influx = Influxd::start();
            influx.create_database(DB);
            (influx, Mosquitto::start())
        });
        let hook = WebhookReceiver::start().await;
        // First without [api] token: writes are refused (403) until one is configured.
        let mut sw =
            Sitewatch::start_paused(&config(&influx.url(), broker.port, &hook.url("/alerts")));
        std::fs::write(sw.dir().join("rules.toml"), RULES).unwrap();
        blocking(|| sw.launch());
        let mut opts = MqttOptions::new(
            format!("silences-publisher-{}", broker.port),
            "127.0.0.1",
            broker.port,
        );
        opts.set_keep_alive(Duration::from_secs(30));
        let (mqtt, mut eventloop) = AsyncClient::new(opts, 100);
        let mqtt_task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Stack {
            influx,
            _broker: broker,
            hook,
            sw,
            mqtt,
            mqtt_task,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.sw.metrics_port)
    }

    /// (status, JSON body) of a request, with the token when `token`.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: bool,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .timeout(Duration::from_secs(10));
        if token {
            req = req.bearer_auth(TOKEN);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// `sitewatch silence ...` against this instance; stdout, asserting success.
    fn cli(&self, args: &[&str]) -> String {
        let out = blocking(|| {
            Command::new(common::sitewatch_bin())
                .arg("silence")
                .args(args)
                .args(["--url", &self.url("")])
                .env("SITEWATCH_API_TOKEN", TOKEN)
                .env_remove("SITEWATCH_CONFIG")
                .output()
                .expect("run sitewatch silence")
        });
        assert!(
            out.status.success(),
            "sitewatch silence {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn publish(&self, rack: &str, value: f64) {
        self.mqtt
            .publish(
                format!("dc/dc1/{rack}/temperature"),
                QoS::AtLeastOnce,
                false,
                value.to_string(),
            )
            .await
            .expect("queue MQTT publish");
    }

    /// Publishes until a sample of `rack` is stored: the subscription is live end to end.
    async fn warm_up(&mut self, rack: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let q = format!("SELECT \"temperature\" FROM \"environment\" WHERE \"rack\" = '{rack}'");
        loop {
            self.publish(rack, 20.0).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !blocking(|| self.influx.rows(DB, &q)).is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no sample reached InfluxDB within 30 s; sitewatch log:\n{}",
                self.sw.log()
            );
        }
    }

    /// Arrival times of firing webhook alerts of the rule for `rack`.
    fn hook_firing(&self, rack: &str) -> Vec<Instant> {
        let mut out = Vec::new();
        for r in self.hook.accepted() {
            for a in r.body["alerts"].as_array().into_iter().flatten() {
                if a["labels"]["alertname"] == RULE
                    && a["labels"]["rack"] == rack
                    && a["status"] == "firing"
                {
                    out.push(r.at);
                }
            }
        }
        out
    }

    async fn wait_firing(&self, rack: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self.hook_firing(rack).first() {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "no firing alert for {rack} at the webhook within {within:?}; requests: {:#?}\nsitewatch log:\n{}",
                self.hook.requests(),
                self.sw.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `silenced` of the firing `events` rows for `rack` (null when not silenced).
    fn firing_rows(&self, rack: &str) -> Vec<Value> {
        let q = format!(
            "SELECT \"value\", \"silenced\" FROM \"events\" WHERE \"rule\" = '{RULE}' AND \"rack\" = '{rack}' AND \"state\" = 'firing'"
        );
        blocking(|| self.influx.rows(DB, &q))
            .into_iter()
            .map(|r| r[2].clone())
            .collect()
    }

    async fn wait_rows(&self, rack: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = self.firing_rows(rack);
            if !rows.is_empty() {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "no firing events row for {rack} within 10 s; sitewatch log:\n{}",
                self.sw.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM (state saved) and start again on the same config and state dir.
    fn restart(&mut self) {
        self.sw.terminate();
        blocking(|| self.sw.launch());
    }

    /// Adds `[api] token` (read from a file) to the config; takes effect on restart.
    fn configure_token(&self) {
        let token_file = self.sw.dir().join("api-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let text = std::fs::read_to_string(&self.sw.config).unwrap();
        std::fs::write(
            &self.sw.config,
            format!(
                "{text}\n[api]\ntoken = {{ file = {:?} }}\n",
                token_file.display().to_string()
            ),
        )
        .unwrap();
    }

    fn silence<'a>(list: &'a Value, id: &str) -> &'a Value {
        list["silences"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == id))
            .unwrap_or_else(|| panic!("silence {id} not listed: {list}"))
    }
}

/// Wall-clock time of an `Instant` in the past.
fn wall(at: Instant) -> Timestamp {
    Timestamp::now() - jiff::SignedDuration::try_from(at.elapsed()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_silence_in_a_time_zone_holds_across_a_restart_and_expires_on_time() {
    let mut st = Stack::start().await;

    // No token configured: reads work, writes are refused.
    let body = json!({"matchers": {"rack": "r1"}, "duration": "1h", "created_by": "alice", "comment": "x"});
    let (status, answer) = st
        .call("POST", "/api/v1/silences", Some(body.clone()), true)
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("[api] token"),
        "{answer}"
    );
    let (status, list) = st.call("GET", "/api/v1/silences", None, false).await;
    assert_eq!(status, 200);
    let file = &list["silences"][0];
    assert_eq!(file["source"], "file", "{list}");
    assert!(
        file["file"].as_str().unwrap().ends_with("rules.toml:10"),
        "{file}"
    );
    assert_eq!(file["daily"]["timezone"], "Asia/Kolkata");

    st.configure_token();
    st.restart();
    st.warm_up("warmup").await;

    // Writes need the token; bad bodies are 400s naming the key.
    let (status, answer) = st
        .call("POST", "/api/v1/silences", Some(body.clone()), false)
        .await;
    assert_eq!(status, 401, "{answer}");
    for (bad, key) in [
        (
            json!({"duration": "1h", "created_by": "a", "comment": "c"}),
            "`matchers`",
        ),
        (
            json!({"matchers": {"rack": "r1"}, "duration": "1h", "created_by": "a", "comment": "c", "timezone": "Mars/Olympus"}),
            "`timezone`",
        ),
        (
            json!({"matchers": {"rack": "r1"}, "duration": "1h", "comment": "c"}),
            "`created_by`",
        ),
        (
            json!({"matchers": {"rack": "r1"}, "duration": "1h", "created_by": "a"}),
            "`comment`",
        ),
        (
            json!({"matchers": {"rack": "r1"}, "ends_at": "2020-01-01T00:00:00Z", "created_by": "a", "comment": "c"}),
            "`ends_at`",
        ),
        (
            json!({"matchers": {"rack": "r[1"}, "duration": "1h", "created_by": "a", "comment": "c"}),
            "`matchers`",
        ),
    ] {
        let (status, answer) = st
            .call("POST", "/api/v1/silences", Some(bad.clone()), true)
            .await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(key),
            "{bad}: {answer}"
        );
    }

    // r1 silenced until a New York wall-clock time 25 s ahead, written without an offset.
    let ny = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let end_local = (Timestamp::now() + jiff::SignedDuration::from_secs(25))
        .to_zoned(ny.clone())
        .datetime()
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let (status, added) = st
        .call(
            "POST",
            "/api/v1/silences",
            Some(json!({
                "matchers": {"rack": "r1", "site": "dc*"},
                "ends_at": end_local,
                "timezone": "America/New_York",
                "created_by": "alice",
                "comment": "PDU swap on r1, change 4711",
            })),
            true,
        )
        .await;
    assert_eq!(status, 200, "{added}");
    let silence = &added["silence"];
    let id = silence["id"].as_str().unwrap().to_string();
    assert_eq!(silence["state"], "active");
    assert_eq!(silence["source"], "api");
    let end: Timestamp = silence["ends_at"].as_str().unwrap().parse().unwrap();
    let expected_end = jiff::civil::DateTime::strptime("%Y-%m-%dT%H:%M:%S", &end_local)
        .unwrap()
        .to_zoned(ny)
        .unwrap()
        .timestamp();
    assert_eq!(end, expected_end, "{silence}");
    assert!(
        silence["ends_at_local"]
            .as_str()
            .unwrap()
            .ends_with("[America/New_York]"),
        "{silence}"
    );

    // A breach on r1 is written silenced and not sent; r2's is sent (the path works).
    st.publish("r1", 35.0).await;
    st.publish("r2", 35.0).await;
    st.wait_firing("r2", Duration::from_secs(10)).await;
    assert_eq!(st.wait_rows("r1").await, vec![json!(true)]);
    assert_eq!(st.firing_rows("r2"), vec![Value::Null]);
    assert!(
        st.hook_firing("r1").is_empty(),
        "r1 was sent while silenced"
    );

    // A restart on the same state dir: the silence is read back and still holds.
    st.restart();
    assert!(std::fs::metadata(st.sw.dir().join("silences.json")).is_ok());
    let (_, list) = st.call("GET", "/api/v1/silences", None, false).await;
    let listed = Stack::silence(&list, &id);
    assert_eq!(listed["state"], "active", "{listed}");
    assert_eq!(listed["created_by"], "alice");
    st.publish("r1", 36.0).await;
    let (status, one) = st
        .call("GET", &format!("/api/v1/silences/{id}"), None, false)
        .await;
    assert_eq!((status, &one["silence"]["id"]), (200, &json!(id)));
    // A rule file's silence is edited in its file.
    let file_id = list["silences"][0]["id"].as_str().unwrap().to_string();
    let (status, answer) = st
        .call(
            "DELETE",
            &format!("/api/v1/silences/{file_id}?by=alice"),
            None,
            true,
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("edit "),
        "{answer}"
    );

    // Until the end nothing of r1 reaches the webhook; then the alert still firing is sent.
    let sent = st.wait_firing("r1", Duration::from_secs(40)).await;
    let sent_at = wall(sent);
    let late = sent_at.duration_since(end);
    assert!(
        late >= jiff::SignedDuration::from_millis(-100)
            && late <= jiff::SignedDuration::from_secs(3),
        "r1 sent {late:?} after the silence's end {end}"
    );
    println!("r1 sent {late:?} after the silence's end");
    let (_, list) = st.call("GET", "/api/v1/silences", None, false).await;
    assert_eq!(Stack::silence(&list, &id)["state"], "expired");

    // Through the command line: silence r3, a breach is held, expiring sends it at once.
    let line = st.cli(&[
        "add",
        "--match",
        "rack=r3",
        "--duration",
        "1h",
        "--timezone",
        "Asia/Kolkata",
        "--daily",
        "00:00-23:59",
        "--comment",
        "r3 fans",
        "--by",
        "bob",
    ]);
    assert!(
        line.starts_with("added ") && line.contains("rack=r3") && line.contains("by bob"),
        "{line}"
    );
    let r3 = line.split_whitespace().nth(1).unwrap().to_string();
    let listed = st.cli(&["list"]);
    assert!(
        listed.contains(&r3) && listed.contains("in ") && listed.contains(&id),
        "{listed}"
    );
    st.publish("r3", 35.0).await;
    assert_eq!(st.wait_rows("r3").await, vec![json!(true)]);
    assert!(st.hook_firing("r3").is_empty());
    let (status, _) = st
        .call(
            "DELETE",
            &format!("/api/v1/silences/{r3}?by=bob"),
            None,
            false,
        )
        .await;
    assert_eq!(status, 401);
    let t0 = Instant::now();
    let line = st.cli(&["expire", &r3, "--by", "bob"]);
    assert!(line.starts_with(&format!("expired {r3} expired")), "{line}");
    let sent = st.wait_firing("r3", Duration::from_secs(5)).await;
    let after = sent.duration_since(t0);
    println!("r3 sent {after:?} after `sitewatch silence expire` started");
    assert!(after < Duration::from_secs(3), "{after:?}");
    let (status, answer) = st
        .call(
            "DELETE",
            &format!("/api/v1/silences/{r3}?by=bob"),
            None,
            true,
        )
        .await;
    assert_eq!(status, 409, "{answer}");

    // Counted and logged with who.
    let metrics = st.sw.metrics();
    assert_eq!(
        common::sitewatch::metric_sum(
            &metrics,
            "sitewatch_api_silence_changes_total",
            &["action=\"expire\""]
        ),
        1.0
    );
    assert_eq!(
        common::sitewatch::metric_sum(
            &metrics,
            "sitewatch_api_silence_changes_total",
            &["action=\"add\""]
        ),
        1.0
    );
    let log = st.sw.log();
    assert!(
        log.contains("silence expired through the API") && log.contains("bob"),
        "{log}"
    );
}

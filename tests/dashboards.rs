//! Every query of the shipped Grafana dashboards (deploy/grafana/dashboards/*.json) runs
//! against data that went through the real pipeline: Mosquitto + snmpsim → `sitewatch run` →
//! InfluxDB, and sitewatch's own /metrics → VictoriaMetrics (PromQL) for the health board.
//!
//! Each panel target, annotation and template-variable query must parse and return at least
//! one row, once with the dashboard defaults ("All" = `.*`) and once with every variable set
//! to the concrete values its own variable query returns. A failure names the dashboard, the
//! panel and the query as sent.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::influx::{http, urlencode, Influxd, VictoriaMetrics};
use common::mosquitto::Mosquitto;
use common::snmp::Snmpsim;
use common::{eventually, free_tcp_port, require_binary, sitewatch_bin, ServiceProcess};

const DB: &str = "sitewatch";
const INFLUX_UID: &str = "sitewatch-influxdb";
const PROM_UID: &str = "sitewatch-prometheus";
/// Payload timestamps span this much of the recent past, so `for` durations elapse on the
/// samples' own clock and `$timeFilter` (last hour) covers everything.
const SPAN_S: i64 = 30 * 60;
const STEP_S: i64 = 20;
const RACKS: [&str; 4] = ["a01", "a02", "a03", "a04"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lang {
    InfluxQl,
    PromQl,
}

/// One query of a dashboard and where it lives.
struct Query {
    place: String,
    lang: Lang,
    text: String,
}

/// A template variable: its query and how "All" is spelled.
struct Variable {
    name: String,
    lang: Lang,
    query: String,
    include_all: bool,
    all_value: Option<String>,
}

struct Dashboard {
    file: String,
    title: String,
    variables: Vec<Variable>,
    queries: Vec<Query>,
}

fn datasource_lang(ds: &Value, place: &str) -> Lang {
    match ds["uid"].as_str() {
        Some(INFLUX_UID) => Lang::InfluxQl,
        Some(PROM_UID) => Lang::PromQl,
        other => panic!(
            "{place}: datasource uid {other:?} is not one the provisioning files define \
             ({INFLUX_UID}, {PROM_UID})"
        ),
    }
}

fn load(path: &Path) -> Dashboard {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {file}: {e}"));
    let d: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
    let title = d["title"].as_str().expect("dashboard title").to_string();
    assert!(
        d["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "{file}: no uid"
    );
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 39,
        "{file}: schemaVersion below 39 (Grafana 10.4)"
    );
    let mut queries = Vec::new();

    let mut panels: Vec<&Value> = d["panels"].as_array().expect("panels").iter().collect();
    // Collapsed rows carry their panels inside.
    let nested: Vec<&Value> = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten()
        .collect();
    panels.extend(nested);
    for p in panels {
        if p["type"] == "row" {
            continue;
        }
        let ptitle = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(
            !targets.is_empty(),
            "{file}: panel {ptitle:?} has no targets"
        );
        for t in targets {
            let place = format!("panel {ptitle:?} target {}", t["refId"]);
            let lang = datasource_lang(&t["datasource"], &format!("{file} {place}"));
            let text = match lang {
                Lang::InfluxQl => {
                    assert_eq!(
                        t["rawQuery"], true,
                        "{file} {place}: only raw InfluxQL is tested; set rawQuery"
                    );
                    t["query"].as_str()
                }
                Lang::PromQl => t["expr"].as_str(),
            }
            .unwrap_or_else(|| panic!("{file} {place}: no query text"))
            .to_string();
            queries.push(Query { place, lang, text });
        }
    }

    for a in d["annotations"]["list"]
        .as_array()
        .expect("annotations.list")
    {
        if a["builtIn"] == 1 {
            continue;
        }
        let name = a["name"].as_str().unwrap_or("?");
        let place = format!("annotation {name:?}");
        let lang = datasource_lang(&a["datasource"], &format!("{file} {place}"));
        assert_eq!(
            lang,
            Lang::InfluxQl,
            "{file} {place}: events live in InfluxDB"
        );
        let q = a["query"].as_str().expect("annotation query").to_string();
        assert_eq!(
            a["target"]["query"].as_str(),
            Some(q.as_str()),
            "{file} {place}: legacy `query` and `target.query` differ"
        );
        assert!(
            q.contains("WHERE") && q.contains("$timeFilter"),
            "{file} {place}: Grafana requires WHERE $timeFilter: {q}"
        );
        let text_col = a["textColumn"].as_str().unwrap_or("");
        assert!(
            !text_col.is_empty() && q.contains(&format!("\"{text_col}\"")),
            "{file} {place}: textColumn {text_col:?} is not selected by {q}"
        );
        queries.push(Query {
            place,
            lang,
            text: q,
        });
    }

    let mut variables = Vec::new();
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        let name = v["name"].as_str().expect("variable name").to_string();
        let place = format!("variable ${name}");
        let lang = datasource_lang(&v["datasource"], &format!("{file} {place}"));
        let query = match &v["query"] {
            Value::String(s) => s.clone(),
            q => q["query"].as_str().expect("variable query").to_string(),
        };
        variables.push(Variable {
            name,
            lang,
            query,
            include_all: v["includeAll"] == true,
            all_value: v["allValue"].as_str().map(str::to_string),
        });
    }
    Dashboard {
        file,
        title,
        variables,
        queries,
    }
}

fn load_all() -> Vec<Dashboard> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 6,
        "expected the six dashboards, found {paths:?}"
    );
    paths.iter().map(|p| load(p)).collect()
}

/// Grafana's regex escaping of a variable value inside `/.../`.
fn regex_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if "\\^$*+?.()|{}[]/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Replaces `$name` and `${name}` for every variable (longest names first).
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut out = text.to_string();
    for n in names {
        out = out
            .replace(&format!("${{{n}}}"), &values[n])
            .replace(&format!("${n}"), &values[n]);
    }
    out
}

fn builtins(lang: Lang) -> BTreeMap<String, String> {
    let pairs: &[(&str, &str)] = match lang {
        Lang::InfluxQl => &[("timeFilter", "time > now() - 1h"), ("__interval", "10s")],
        Lang::PromQl => &[("__rate_interval", "30s"), ("__range", "1h")],
    };
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// True when `$name` or `${name}` is left (a `$` that ends a regex, as in `/^dc1$/`, is not).
fn has_variable(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().any(|(i, c)| {
        *c == b'$'
            && b.get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_' || *n == b'{')
    })
}

/// The outcome of one query: rows it returned, or why it failed.
fn run_influxql(influx: &Influxd, q: &str) -> Result<usize, String> {
    let (status, body) = http(
        influx.port,
        "GET",
        &format!("/query?db={DB}&q={}", urlencode(q)),
        b"",
    )
    .map_err(|e| format!("request failed: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    let mut rows = 0;
    for r in v["results"].as_array().into_iter().flatten() {
        if let Some(e) = r["error"].as_str() {
            return Err(format!("InfluxDB error: {e}"));
        }
        for s in r["series"].as_array().into_iter().flatten() {
            rows += s["values"].as_array().map_or(0, Vec::len);
        }
    }
    Ok(rows)
}

fn run_promql(vm: &VictoriaMetrics, q: &str) -> Result<usize, String> {
    let (status, body) = http(
        vm.port,
        "GET",
        &format!("/api/v1/query?query={}", urlencode(q)),
        b"",
    )
    .map_err(|e| format!("request failed: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    if v["status"] != "success" {
        return Err(format!("query failed: {body}"));
    }
    Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
}

/// Values of a template variable, as Grafana would list them.
fn variable_values(
    var: &Variable,
    influx: &Influxd,
    vm: &VictoriaMetrics,
    known: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let q = substitute(&var.query, known);
    match var.lang {
        Lang::InfluxQl => {
            let v = influx.query(DB, &q);
            if let Some(e) = v["results"][0]["error"].as_str() {
                return Err(format!("InfluxDB error: {e}"));
            }
            // SHOW TAG VALUES answers columns key, value.
            let mut out: Vec<String> = v["results"][0]["series"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
                .filter_map(|row| row[1].as_str().map(str::to_string))
                .collect();
            out.sort();
            out.dedup();
            Ok(out)
        }
        Lang::PromQl => {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("only label_values(metric, label) is supported: {q}"))?;
            let (metric, label) = inner
                .rsplit_once(',')
                .ok_or_else(|| format!("label_values needs a metric and a label: {q}"))?;
            let (status, body) = http(
                vm.port,
                "GET",
                &format!(
                    "/api/v1/label/{}/values?match%5B%5D={}",
                    label.trim(),
                    urlencode(metric.trim())
                ),
                b"",
            )
            .map_err(|e| e.to_string())?;
            if status != 200 {
                return Err(format!("HTTP {status}: {body}"));
            }
            let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            Ok(v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect())
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The demo's traffic (deploy/demo/publish.sh), compressed: 30 minutes of readings every
/// 20 s, published at once with payload timestamps in the past, named as docs/naming.md says.
/// Rack a03 overheats past the critical level, the under-floor sensor gets wet, pdu-a03 L1
/// runs above 80 %.
fn demo_traffic() -> Vec<(String, Vec<String>)> {
    let start = now_ms() - SPAN_S * 1000;
    let steps = SPAN_S / STEP_S;
    let mut topics: Vec<(String, Vec<String>)> = Vec::new();
    for (r, rack) in RACKS.iter().enumerate() {
        let mut lines = Vec::new();
        for i in 0..steps {
            let ts = start + i * STEP_S * 1000;
            let base = 23.0 + r as f64 * 0.4 + ((i * 7 + r as i64 * 3) % 5) as f64 * 0.1;
            let temp = if *rack == "a03" && (30..60).contains(&i) {
                (base + (i - 30) as f64 * 0.8).min(33.5)
            } else {
                base
            };
            let hum = 45.0 + r as f64 + (i % 4) as f64 * 0.3;
            lines.push(format!(
                r#"{{"ts": {ts}, "device": "env-{rack}", "temperature": {temp:.1}, "humidity": {hum:.1}}}"#
            ));
        }
        topics.push((format!("dc/dc1/hall1/{rack}/env"), lines));
    }
    let leak = (0..steps)
        .map(|i| {
            let ts = start + i * STEP_S * 1000;
            format!(
                r#"{{"ts": {ts}, "device": "leak-hall1", "leak": {}}}"#,
                (45..55).contains(&i)
            )
        })
        .collect();
    topics.push(("dc/dc1/hall1/leak/underfloor-1".into(), leak));
    let mut pdu = Vec::new();
    for i in 0..steps {
        let ts_ns = (start + i * STEP_S * 1000) * 1_000_000;
        for (p, name) in ["pdu-a01", "pdu-a03"].iter().enumerate() {
            let rack = &name[4..];
            let mut total_w = 0.0;
            for (ph, phase) in ["L1", "L2", "L3"].iter().enumerate() {
                let mut amps = 6.0 + p as f64 * 2.0 + ph as f64 * 0.7 + (i % 6) as f64 * 0.2;
                if *name == "pdu-a03" && *phase == "L1" && (40..70).contains(&i) {
                    amps = 13.4 + (i % 3) as f64 * 0.2;
                }
                let watts = (amps * 230.0).round();
                total_w += watts;
                pdu.push(format!(
                    "pdu_phase,device={name},rack={rack},phase={phase} current_a={amps:.1},power_w={watts} {ts_ns}"
                ));
            }
            pdu.push(format!(
                "pdu,device={name},rack={rack} power_w={total_w} {ts_ns}"
            ));
        }
    }
    topics.push(("lp/dc1/hall1/pdu".into(), pdu));
    topics
}

/// `mosquitto_pub -l`: one message per stdin line, one connection per topic.
fn publish_lines(broker: &Mosquitto, topic: &str, lines: &[String]) {
    let bin = require_binary("mosquitto_pub", "mosquitto-clients");
    let mut child = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub");
    let mut stdin = child.stdin.take().expect("stdin");
    for l in lines {
        writeln!(stdin, "{l}").expect("write to mosquitto_pub");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub -t {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// snmprec community (file stem) → (device name, profile).
const SNMP_TARGETS: [(&str, &str, &str); 7] = [
    ("apc-ups", "ups-a", "apc-ups"),
    ("ups-mib", "ups-b", "ups-mib"),
    ("apc-rpdu2", "rpdu-a01", "apc-rpdu2"),
    ("apc-env", "inrow-a", "apc-env"),
    ("liebert-env", "crac-1", "liebert-env"),
    ("if-mib", "sw-core-1", "if-mib"),
    ("entity-sensor", "sensor-hub-1", "entity-sensor-mib"),
];

fn config(broker: &Mosquitto, influx: &Influxd, snmp: &str, metrics_port: u16) -> String {
    let mut c = format!(
        r#"[service]
log_level = "info"
listen = "127.0.0.1:{metrics_port}"

[influx]
url = "{influx_url}"
api = "v1"
database = "{DB}"
flush_interval = "200ms"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "sitewatch-dashboards-test"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{room}}/{{rack}}/env"
measurement = "environment"
format = "json"
fields = {{ temperature_c = "temperature", humidity_pct = "humidity" }}
tag_paths = {{ device = "device" }}
timestamp = "ts"
timestamp_unit = "ms"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{room}}/leak/{{sensor}}"
measurement = "leak"
format = "json"
fields = {{ leak = "leak" }}
tag_paths = {{ device = "device" }}
timestamp = "ts"
timestamp_unit = "ms"

[[mqtt.subscription]]
topic = "lp/{{site}}/{{room}}/pdu"
format = "line_protocol"

[rules]
files = ["rules/*.toml"]

[api]
token = "{API_TOKEN}"

# The NOC escalates to the manager after a second: the SLA board's escalation panels. Both
# point at a closed port (deliveries fail and retry; escalation does not depend on them).
[notify]
shutdown_grace = "1s"
[[notify.receiver]]
name = "noc"
kind = "webhook"
url = "http://127.0.0.1:{closed}/noc"
timeout = "1s"
escalate_after = "1s"
escalate_to = ["manager"]
[[notify.receiver]]
name = "manager"
kind = "webhook"
url = "http://127.0.0.1:{closed}/manager"
timeout = "1s"

[snmp]
profiles_dir = "{profiles}"
interval = "1s"
timeout = "500ms"
retries = 0
"#,
        influx_url = influx.url(),
        mqtt_port = broker.port,
        profiles = repo().join("mappings/snmp").display(),
        closed = free_tcp_port(),
    );
    for (community, name, profile) in SNMP_TARGETS {
        c.push_str(&format!(
            "\n[[snmp.target]]\nname = \"{name}\"\naddress = \"{snmp}\"\nversion = \"2c\"\n\
             community = \"{community}\"\nprofiles = [\"{profile}\"]\n\
             tags = {{ site = \"dc1\", room = \"hall1\" }}\n"
        ));
    }
    // A device that never answers: the network board's "down" and "failed polls" panels.
    let dead = common::free_udp_port();
    c.push_str(&format!(
        "\n[[snmp.target]]\nname = \"ups-dead\"\naddress = \"127.0.0.1:{dead}\"\n\
         version = \"2c\"\ncommunity = \"apc-ups\"\nprofiles = [\"apc-ups\"]\n\
         tags = {{ site = \"dc1\", room = \"hall1\" }}\n"
    ));
    c
}

const API_TOKEN: &str = "dashboards-test-token-0123456789";

/// The responder's loop on a rack that runs hot now: it fires, escalates (noc -> manager),
/// is acknowledged with `sitewatch ack` and resolves, so the SLA board has acknowledgements,
/// escalations and response times to show.
fn respond_to_a_hot_rack(
    broker: &Mosquitto,
    influx: &Influxd,
    metrics_port: u16,
    sw: &mut ServiceProcess,
) {
    let topic = "dc/dc1/hall1/a05/env";
    let now = now_ms();
    let hot: Vec<String> = (0..6)
        .map(|i| {
            format!(
                r#"{{"ts": {}, "device": "env-a05", "temperature": 35.0, "humidity": 45.0}}"#,
                now - 60_000 + i * 10_000
            )
        })
        .collect();
    publish_lines(broker, topic, &hot);
    let id = eventually(
        Duration::from_secs(20),
        "the a05 alert in /api/v1/alerts",
        || {
            let (_, body) = http(metrics_port, "GET", "/api/v1/alerts", b"").ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            v["alerts"]
                .as_array()?
                .iter()
                .find(|a| a["tags"]["rack"] == "a05")
                .and_then(|a| a["id"].as_str().map(str::to_string))
        },
    );
    eventually(Duration::from_secs(20), "an escalated events row", || {
        (count(
            influx,
            &format!("SELECT count(step) FROM events WHERE id = '{id}'"),
        ) >= 1)
            .then_some(())
    });
    let out = Command::new(sitewatch_bin())
        .args([
            "ack",
            &id,
            "--by",
            "dashboards-test",
            "--comment",
            "checking the CRAH",
        ])
        .arg("--url")
        .arg(format!("http://127.0.0.1:{metrics_port}"))
        .env("SITEWATCH_API_TOKEN", API_TOKEN)
        .env_remove("SITEWATCH_CONFIG")
        .output()
        .expect("run sitewatch ack");
    assert!(
        out.status.success(),
        "sitewatch ack: {}{}
sitewatch log:
{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sw.log()
    );
    let cool = format!(
        r#"{{"ts": {}, "device": "env-a05", "temperature": 21.0, "humidity": 45.0}}"#,
        now_ms()
    );
    publish_lines(broker, topic, &[cool]);
    eventually(
        Duration::from_secs(20),
        "a resolve with its response times",
        || {
            (count(
            influx,
            &format!("SELECT count(time_to_ack_s) FROM events WHERE state = 'resolved' AND id = '{id}'"),
        ) >= 1)
            .then_some(())
        },
    );
}

fn count(influx: &Influxd, q: &str) -> i64 {
    influx
        .rows(DB, q)
        .first()
        .and_then(|r| r.get(1))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// sitewatch's /metrics as Prometheus would scrape it (plus the `up` series a scrape adds),
/// pushed into VictoriaMetrics under job="sitewatch".
fn scrape_into(vm: &VictoriaMetrics, metrics_port: u16) {
    let (status, mut text) = http(metrics_port, "GET", "/metrics", b"").expect("scrape");
    assert_eq!(status, 200, "/metrics: {text}");
    text.push_str("up 1\n");
    let (status, body) = http(
        vm.port,
        "POST",
        "/api/v1/import/prometheus?extra_label=job%3Dsitewatch&extra_label=instance%3Dsitewatch-test",
        text.as_bytes(),
    )
    .expect("import into victoria-metrics");
    assert!(
        status == 204 || status == 200,
        "import: HTTP {status}: {body}"
    );
}

#[test]
fn every_dashboard_query_returns_data() {
    let dashboards = load_all();

    let broker = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database(DB);
    let sim = Snmpsim::start(&repo().join("tests/data/snmprec"));
    let vm = VictoriaMetrics::start();

    let dir = tempfile::tempdir().expect("temp dir");
    // Every shipped rule file, as `rules/*.toml` of the shipped configs loads them: the
    // events they write are what the annotations and alert panels show.
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    for file in ["facility", "environment", "power", "cooling"] {
        std::fs::copy(
            repo().join(format!("deploy/rules/{file}.toml")),
            dir.path().join(format!("rules/{file}.toml")),
        )
        .unwrap_or_else(|e| panic!("copy deploy/rules/{file}.toml: {e}"));
    }
    let metrics_port = free_tcp_port();
    let cfg_path = dir.path().join("sitewatch.toml");
    std::fs::write(
        &cfg_path,
        config(&broker, &influx, &sim.address(), metrics_port),
    )
    .unwrap();
    let mut cmd = Command::new(sitewatch_bin());
    cmd.arg("run").arg("--config").arg(&cfg_path);
    let mut sw = ServiceProcess::spawn("sitewatch", cmd, dir);
    sw.wait_for_tcp(metrics_port, Duration::from_secs(20));

    // The subscriptions are made once MQTT is connected; until then a QoS 1 publish to a
    // topic nobody subscribed to is simply gone.
    eventually(
        Duration::from_secs(20),
        "sitewatch connected to MQTT",
        || {
            let (_, m) = http(metrics_port, "GET", "/metrics", b"").ok()?;
            m.lines()
                .any(|l| l.starts_with("sitewatch_mqtt_connected") && l.ends_with(" 1"))
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let traffic = demo_traffic();
    std::thread::scope(|s| {
        for (topic, lines) in &traffic {
            let broker = &broker;
            s.spawn(move || publish_lines(broker, topic, lines));
        }
    });
    let steps = SPAN_S / STEP_S;
    let expect = |what: &str, check: &dyn Fn() -> bool, sw: &mut ServiceProcess| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !check() {
            sw.assert_running();
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\nevents: {:?}\nsitewatch log:\n{}",
                    influx.rows(DB, "SELECT rule, severity, state, message FROM events"),
                    sw.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    expect(
        "all MQTT samples stored",
        &|| {
            // SNMP devices write the same measurements; count the MQTT devices' own.
            count(
                &influx,
                "SELECT count(temperature_c) FROM environment WHERE device =~ /^env-a0/",
            ) == steps * 4
                && count(
                    &influx,
                    "SELECT count(leak) FROM leak WHERE device = 'leak-hall1'",
                ) == steps
                && count(
                    &influx,
                    "SELECT count(current_a) FROM pdu_phase WHERE device =~ /^pdu-a0/",
                ) == steps * 6
                && count(
                    &influx,
                    "SELECT count(power_w) FROM pdu WHERE device =~ /^pdu-a0/",
                ) == steps * 2
        },
        &mut sw,
    );
    expect(
        "rule events: rack a03 warning + critical, leak, pdu-a03 L1, each firing and resolved",
        &|| {
            let events = |rule: &str, state: &str, tag: &str| {
                count(
                    &influx,
                    &format!(
                        "SELECT count(duration_s) FROM events WHERE rule = '{rule}' AND \
                         state = '{state}' AND {tag}"
                    ),
                )
            };
            count(
                &influx,
                "SELECT count(duration_s) FROM events WHERE state = 'firing'",
            ) >= 4
                && count(
                    &influx,
                    "SELECT count(duration_s) FROM events WHERE state = 'resolved'",
                ) >= 3
                && events("rack_inlet_temperature", "firing", "rack = 'a03'") >= 2
                && events("rack_inlet_temperature", "resolved", "rack = 'a03'") >= 1
                && events("water_leak", "firing", "device = 'leak-hall1'") >= 1
                && events("water_leak", "resolved", "device = 'leak-hall1'") >= 1
                && events("pdu_phase_current", "firing", "device = 'pdu-a03'") >= 1
                && events("pdu_phase_current", "resolved", "device = 'pdu-a03'") >= 1
        },
        &mut sw,
    );
    respond_to_a_hot_rack(&broker, &influx, metrics_port, &mut sw);
    expect(
        "interface rates (two polls) and a failed poll",
        &|| {
            count(&influx, "SELECT count(in_bps) FROM interface") >= 1
                && count(
                    &influx,
                    "SELECT count(duration_s) FROM snmp_poll WHERE up = false",
                ) >= 1
        },
        &mut sw,
    );

    // Three scrapes a second apart, so rate() has samples to work with.
    for _ in 0..3 {
        scrape_into(&vm, metrics_port);
        std::thread::sleep(Duration::from_secs(1));
    }
    vm.force_flush();

    let mut failures = Vec::new();
    let mut ran = 0;
    for d in &dashboards {
        // Resolve the variables in order (later ones refer to earlier ones).
        let mut defaults: BTreeMap<String, String> = BTreeMap::new();
        let mut concrete: BTreeMap<String, String> = BTreeMap::new();
        for var in &d.variables {
            let mut known = builtins(var.lang);
            known.extend(concrete.clone());
            let values = match variable_values(var, &influx, &vm, &known) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!(
                        "{} ({}): variable ${}: {}\n    {e}",
                        d.title, d.file, var.name, var.query
                    ));
                    continue;
                }
            };
            ran += 1;
            if values.is_empty() {
                failures.push(format!(
                    "{} ({}): variable ${} has no values\n    {}",
                    d.title,
                    d.file,
                    var.name,
                    substitute(&var.query, &known)
                ));
                continue;
            }
            let all: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
            let (default, every) = if var.include_all {
                let every = format!("({})", all.join("|"));
                (
                    var.all_value.clone().unwrap_or_else(|| every.clone()),
                    every,
                )
            } else {
                (all[0].clone(), all[0].clone())
            };
            defaults.insert(var.name.clone(), default);
            concrete.insert(var.name.clone(), every);
        }

        for q in &d.queries {
            for (label, vars) in [("defaults", &defaults), ("concrete values", &concrete)] {
                let mut values = builtins(q.lang);
                values.extend(vars.clone());
                let text = substitute(&q.text, &values);
                if has_variable(&text) {
                    failures.push(format!(
                        "{} ({}): {}: unresolved variable in\n    {text}",
                        d.title, d.file, q.place
                    ));
                    continue;
                }
                let result = match q.lang {
                    Lang::InfluxQl => run_influxql(&influx, &text),
                    Lang::PromQl => run_promql(&vm, &text),
                };
                ran += 1;
                match result {
                    Ok(0) => failures.push(format!(
                        "{} ({}): {} returned no rows ({label})\n    {text}",
                        d.title, d.file, q.place
                    )),
                    Ok(_) => {}
                    Err(e) => failures.push(format!(
                        "{} ({}): {} failed ({label})\n    {text}\n    {e}",
                        d.title, d.file, q.place
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} dashboard queries failed:\n{}\n\nsitewatch log:\n{}",
        failures.len(),
        failures.join("\n"),
        sw.log()
    );
}

/// True when `name` is recorded by a `counter!`/`gauge!`/`histogram!` call (a `describe_*!`
/// alone exports nothing).
fn emitted(source: &str, name: &str) -> bool {
    // A histogram is exported as `<name>_bucket`, `_sum` and `_count`.
    let histogram = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .is_some_and(|base| recorded_by(source, base, &["histogram"]));
    histogram || recorded_by(source, name, &["counter", "gauge", "histogram"])
}

fn recorded_by(source: &str, name: &str, macros: &[&str]) -> bool {
    let quoted = format!("\"{name}\"");
    source.match_indices(&quoted).any(|(i, _)| {
        let before = source[..i].trim_end();
        let Some(before) = before.strip_suffix("!(") else {
            return false;
        };
        let mac: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        macros.contains(&mac.as_str())
    })
}

/// Health panels may show `or on() vector(0)` for counters that only exist after a failure;
/// that must not hide a misspelt metric, so every name must be one sitewatch emits.
#[test]
fn health_metric_names_exist_in_the_source() {
    let mut source = String::new();
    let mut stack = vec![repo().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                source.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut missing = Vec::new();
    let mut seen = 0;
    for d in load_all() {
        for q in d.queries.iter().filter(|q| q.lang == Lang::PromQl) {
            let mut rest = q.text.as_str();
            while let Some(i) = rest.find("sitewatch_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                seen += 1;
                if !emitted(&source, &name) {
                    missing.push(format!("{} {}: {name}", d.file, q.place));
                }
            }
        }
    }
    assert!(
        seen > 0,
        "no sitewatch_* metric referenced by any dashboard"
    );
    assert!(
        missing.is_empty(),
        "metrics no counter!/gauge!/histogram! in src/ records:\n{}",
        missing.join("\n")
    );
}

/// The provisioning files name the datasource uids the dashboards use and point the
/// dashboard provider at the folder the JSON is in.
#[test]
fn provisioning_matches_dashboards() {
    let prov = repo().join("deploy/grafana/provisioning");
    let ds = std::fs::read_to_string(prov.join("datasources/sitewatch.yaml"))
        .expect("datasources/sitewatch.yaml");
    for uid in [INFLUX_UID, PROM_UID] {
        assert!(
            ds.lines().any(|l| l.trim() == format!("uid: {uid}")),
            "datasources/sitewatch.yaml does not define uid {uid}"
        );
    }
    let compose_ds =
        std::fs::read_to_string(repo().join("deploy/compose/grafana-datasources.yaml"))
            .expect("deploy/compose/grafana-datasources.yaml");
    for uid in [INFLUX_UID, PROM_UID] {
        assert!(
            compose_ds
                .lines()
                .any(|l| l.trim() == format!("uid: {uid}")),
            "deploy/compose/grafana-datasources.yaml does not define uid {uid}"
        );
    }
    let dash = std::fs::read_to_string(prov.join("dashboards/sitewatch.yaml"))
        .expect("dashboards/sitewatch.yaml");
    assert!(dash.contains("type: file"), "{dash}");
    let path = dash
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(str::trim)
        .expect("dashboard provider options.path");

    // compose.yaml mounts files that exist, and the dashboards where the provider looks.
    let compose = std::fs::read_to_string(repo().join("deploy/compose.yaml")).unwrap();
    let mut mounts = 0;
    for l in compose.lines() {
        let Some(m) = l.trim().strip_prefix("- ./") else {
            continue;
        };
        let (src, dst) = m.split_once(':').expect("source:target");
        assert!(
            repo().join("deploy").join(src).exists(),
            "compose.yaml mounts missing deploy/{src}"
        );
        if src == "grafana/dashboards" {
            assert!(
                dst.starts_with(path),
                "dashboards mounted at {dst}, provider reads {path}"
            );
        }
        mounts += 1;
    }
    assert!(
        mounts >= 5,
        "compose.yaml: expected its config mounts, found {mounts}"
    );
}

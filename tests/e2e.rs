//! End to end through the real binary: MQTT (real mosquitto) → sitewatch → InfluxDB (real
//! influxd), with rules writing events, plus the `check` and `once` commands.

mod common;

use std::process::Command;
use std::time::Duration;

use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;
use common::{eventually, sitewatch_bin};
use serde_json::{json, Value};

const DB: &str = "e2e";

const RULES: &str = r#"
[[rule]]
name = "rack_inlet_temperature"
measurement = "environment"
field = "temperature"
match = { rack = "*" }
above = { warning = 27.0, warning_clear = 26.0 }
for = "2s"
message = "{rack}: inlet {value} °C above {threshold} °C"
"#;

fn config(mqtt: &Mosquitto, influx: &Influxd, client_id: &str) -> String {
    format!(
        r#"
[influx]
url = "{url}"
database = "{DB}"
flush_interval = "200ms"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client_id}"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{room}}/{{rack}}/env"
measurement = "environment"
format = "json"
fields = {{ temperature = "temperature", humidity = "humidity" }}
timestamp = "ts"
timestamp_unit = "ms"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{room}}/{{rack}}/power"
measurement = "rack_power"
format = "number"
field = "power_w"

[[mqtt.subscription]]
topic = "lp/{{site}}/#"
format = "line_protocol"

[rules]
files = ["rules/*.toml"]
"#,
        url = influx.url(),
        mqtt_port = mqtt.port,
    )
}

fn env_payload(ts_ms: i64, temperature: f64, humidity: f64) -> Vec<u8> {
    json!({"ts": ts_ms, "temperature": temperature, "humidity": humidity})
        .to_string()
        .into_bytes()
}

fn count(influx: &Influxd, q: &str) -> i64 {
    influx
        .rows(DB, q)
        .first()
        .and_then(|r| r.get(1))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A whole second well in the past, so payload timestamps are exact and never "future".
fn base_ms() -> i64 {
    let now_ms = (sitewatch::model::now_ns() / 1_000_000) as i64;
    (now_ms / 1000 - 120) * 1000
}

#[test]
fn mqtt_to_influx_exact_values_tags_timestamps_and_one_event_pair() {
    let mqtt = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database(DB);
    let mut sw = Sitewatch::start_paused(&config(&mqtt, &influx, "sitewatch-e2e-1"));
    std::fs::create_dir_all(sw.dir().join("rules")).unwrap();
    std::fs::write(sw.dir().join("rules/facility.toml"), RULES).unwrap();
    sw.launch();
    eventually(Duration::from_secs(10), "MQTT connected", || {
        (sw.metric("sitewatch_mqtt_connected", &[]) == 1.0).then_some(())
    });

    let t0 = base_ms();
    // Rack a01 crosses 27 °C; `for = 2s` (on payload time) and the 26 °C clear level decide
    // what fires: one firing at t0+3s, one resolved at t0+5s, nothing for the later 1 s spike.
    let series: [(i64, f64); 9] = [
        (0, 25.0),
        (1000, 28.0), // pending
        (3000, 28.5), // held 2 s: fires
        (4000, 26.5), // below 27 but above the clear level: still firing
        (5000, 25.5), // resolved
        (6000, 26.9), // below 27: nothing
        (7000, 29.0), // spike: pending
        (8000, 25.0), // gone before `for`: nothing
        (9000, 24.0),
    ];
    for (i, (dt, temp)) in series.iter().enumerate() {
        let humidity = 40.0 + i as f64;
        mqtt.publish(
            "dc/dc1/hall1/a01/env",
            &env_payload(t0 + dt, *temp, humidity),
            1,
            false,
        );
    }
    // Malformed payloads among good ones: the good ones must all land.
    mqtt.publish("dc/dc1/hall1/a02/env", b"not json at all", 1, false);
    mqtt.publish(
        "dc/dc1/hall1/a02/env",
        &env_payload(t0, 22.0, 30.0),
        1,
        false,
    );
    mqtt.publish("dc/dc1/hall1/a02/env", &[0xff, 0xfe, b'{', 0x80], 1, false);
    mqtt.publish(
        "dc/dc1/hall1/a02/env",
        &env_payload(t0 + 1000, 22.5, 31.0),
        1,
        false,
    );
    mqtt.publish("dc/dc1/hall1/a02/power", b"twelve hundred", 1, false);
    mqtt.publish("dc/dc1/hall1/a02/power", b"1234.5", 1, false);
    // Line protocol passthrough keeps its own types and timestamp; topic captures add tags.
    let lp_ts = (t0 + 500) as i128 * 1_000_000;
    mqtt.publish(
        "lp/dc1/pdu",
        format!("pdu,pdu=pdu-a01,phase=L1 current=7.5,outlets_on=12i,state=\"on\" {lp_ts}")
            .as_bytes(),
        1,
        false,
    );

    eventually(
        Duration::from_secs(15),
        "all good samples in InfluxDB",
        || {
            let env = count(&influx, "SELECT count(temperature) FROM environment");
            let power = count(&influx, "SELECT count(power_w) FROM rack_power");
            let pdu = count(&influx, "SELECT count(current) FROM pdu");
            (env == 11 && power == 1 && pdu == 1).then_some(())
        },
    );

    // Exact values, tags and nanosecond timestamps from the payload.
    let rows = influx.rows(
        DB,
        "SELECT temperature, humidity, site, room FROM environment WHERE rack = 'a01'",
    );
    let got: Vec<(i64, f64, f64, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_f64().unwrap(),
                r[2].as_f64().unwrap(),
                r[3].as_str().unwrap().to_string(),
                r[4].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(i64, f64, f64, String, String)> = series
        .iter()
        .enumerate()
        .map(|(i, (dt, temp))| {
            (
                (t0 + dt) * 1_000_000,
                *temp,
                40.0 + i as f64,
                "dc1".to_string(),
                "hall1".to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);

    let pdu = influx.rows(
        DB,
        "SELECT current, outlets_on, state, pdu, phase, site FROM pdu",
    );
    assert_eq!(
        pdu,
        vec![vec![
            json!(lp_ts as i64),
            json!(7.5),
            json!(12),
            json!("on"),
            json!("pdu-a01"),
            json!("L1"),
            json!("dc1"),
        ]]
    );
    // Plain numbers carry no timestamp: receive time, i.e. recent.
    let power = influx.rows(DB, "SELECT power_w, rack FROM rack_power");
    assert_eq!(power[0][1], json!(1234.5));
    assert_eq!(power[0][2], json!("a02"));
    let age_s = (sitewatch::model::now_ns() - power[0][0].as_i64().unwrap()) as f64 / 1e9;
    assert!(
        (0.0..60.0).contains(&age_s),
        "receive-time stamp is {age_s} s old"
    );

    // Exactly one firing and one resolved event, at the sample times that caused them.
    let events = eventually(Duration::from_secs(10), "two event rows", || {
        let rows = influx.rows(
            DB,
            "SELECT state, severity, value, threshold, message, rack, rule FROM events",
        );
        (rows.len() >= 2).then_some(rows)
    });
    assert_eq!(
        events,
        vec![
            vec![
                json!((t0 + 3000) * 1_000_000),
                json!("firing"),
                json!("warning"),
                json!(28.5),
                json!(27),
                json!("a01: inlet 28.5 °C above 27 °C"),
                json!("a01"),
                json!("rack_inlet_temperature"),
            ],
            vec![
                json!((t0 + 5000) * 1_000_000),
                json!("resolved"),
                json!("warning"),
                json!(25.5),
                json!(26),
                events[1][5].clone(),
                json!("a01"),
                json!("rack_inlet_temperature"),
            ],
        ]
    );

    // Every malformed payload was counted.
    let decode_errors = sw.metric("sitewatch_mqtt_decode_errors_total", &[]);
    assert_eq!(decode_errors, 3.0, "metrics:\n{}", sw.metrics());
    let written = sw.metric("sitewatch_influx_points_written_total", &[]);
    assert!(written >= 15.0, "points written: {written}");

    let status = sw.terminate().expect("sitewatch was running");
    assert!(status.success(), "exit {status}; log:\n{}", sw.log());
    // stderr is a file here, as under journald: plain text, no colour escape sequences.
    let log = sw.log();
    assert!(log.contains("sitewatch running"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a non-terminal log:\n{log}"
    );
}

#[test]
fn check_reports_file_and_line_and_once_prints_line_protocol() {
    let mqtt = Mosquitto::start();
    let influx = Influxd::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/facility.toml"), RULES).unwrap();

    // A valid config passes `check`.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config(&mqtt, &influx, "sitewatch-e2e-once")).unwrap();
    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rules: 1"), "{stdout}");
    assert!(stdout.contains("mqtt: 3 subscription(s)"), "{stdout}");

    // An unknown key: exit 1, file:line:column and the key in the message.
    let bad = dir.path().join("bad.toml");
    let text = config(&mqtt, &influx, "x").replace(
        "flush_interval = \"200ms\"",
        "flush_interval = \"200ms\"\nflush_intervall = \"1s\"",
    );
    let bad_line = text
        .lines()
        .position(|l| l.starts_with("flush_intervall"))
        .unwrap()
        + 1;
    std::fs::write(&bad, &text).unwrap();
    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("bad.toml:{bad_line}:1")) && stderr.contains("flush_intervall"),
        "{stderr}"
    );

    // A rule on the wrong side of its clear level: the rule file's line.
    let bad_rules = RULES.replace("warning_clear = 26.0", "warning_clear = 28.0");
    std::fs::write(dir.path().join("rules/facility.toml"), &bad_rules).unwrap();
    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let above_line = bad_rules
        .lines()
        .position(|l| l.starts_with("above"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "facility.toml:{above_line}: rule 'rack_inlet_temperature'"
        )) && stderr.contains("warning_clear"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("rules/facility.toml"), RULES).unwrap();

    // `once` listens for a moment and prints line protocol; retained messages count.
    let t0 = base_ms();
    mqtt.publish(
        "dc/dc1/hall1/a09/env",
        &env_payload(t0, 31.5, 50.0),
        1,
        true,
    );
    let out = Command::new(sitewatch_bin())
        .args(["once", "--mqtt-duration", "2s", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "environment,rack=a09,room=hall1,site=dc1 humidity=50.0,temperature=31.5 {}\n",
        t0 * 1_000_000
    );
    assert_eq!(stdout, want);
}

#[test]
fn unreadable_mqtt_secret_fails_check_and_stops_run_with_an_error() {
    let mqtt = Mosquitto::start();
    let influx = Influxd::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/facility.toml"), RULES).unwrap();
    let text = config(&mqtt, &influx, "sitewatch-e2e-secret").replace(
        "client_id = \"sitewatch-e2e-secret\"",
        "client_id = \"sitewatch-e2e-secret\"\nusername = \"sw\"\npassword = { env = \"SITEWATCH_E2E_UNSET_PASSWORD\" }",
    );
    let path = dir.path().join("sitewatch.toml");
    std::fs::write(
        &path,
        format!("[service]\nlisten = \"127.0.0.1:0\"\n{text}"),
    )
    .unwrap();

    for cmd in ["check", "run"] {
        let started = std::time::Instant::now();
        let out = Command::new(sitewatch_bin())
            .args([cmd, "--config"])
            .arg(&path)
            .env_remove("SITEWATCH_E2E_UNSET_PASSWORD")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("SITEWATCH_E2E_UNSET_PASSWORD"),
            "{cmd}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{cmd} took {:?}",
            started.elapsed()
        );
    }
}

/// The commented reference config is what operators copy from: it must stay valid.
#[test]
fn example_config_passes_check() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sitewatch.example.toml");
    let mut cmd = Command::new(sitewatch_bin());
    cmd.args(["check", "--config"]).arg(&example);
    for var in [
        "SITEWATCH_SNMP_COMMUNITY",
        "SITEWATCH_SNMP_AUTH",
        "SITEWATCH_SNMP_PRIV",
        "SITEWATCH_PD_ROUTING_KEY",
        "SITEWATCH_SLACK_URL",
        "SITEWATCH_TICKET_AUTH",
    ] {
        cmd.env(var, "example-secret-value");
    }
    cmd.env(
        "SITEWATCH_SLACK_URL",
        "https://hooks.example.net/services/example-secret-value",
    );
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("snmp: 2 target(s)"), "{stdout}");
    assert!(!stdout.contains("example-secret-value"), "{stdout}");
}

/// Each collector's and sink's own `example.toml` (beside its code) is valid: every
/// collector example with every sink example passes `check`, and `check` names each stage.
#[test]
fn folder_examples_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let collectors = [
        "src/collect/mqtt/example.toml",
        "src/collect/snmp/example.toml",
    ];
    let sinks = [
        "src/sink/influx/example.toml",
        "src/sink/remote_write/example.toml",
    ];
    let dir = tempfile::tempdir().unwrap();
    // The SNMP example names the default profiles_dir, relative to the config file.
    std::os::unix::fs::symlink(root.join("mappings"), dir.path().join("mappings")).unwrap();
    for collector in collectors {
        for sink in sinks {
            let text = format!(
                "{}\n{}",
                std::fs::read_to_string(root.join(collector)).unwrap(),
                std::fs::read_to_string(root.join(sink)).unwrap()
            );
            let path = dir.path().join("sitewatch.toml");
            std::fs::write(&path, text).unwrap();
            let out = Command::new(sitewatch_bin())
                .args(["check", "--config"])
                .arg(&path)
                .env("SITEWATCH_SNMP_COMMUNITY", "example-secret-value")
                .env("SITEWATCH_SNMP_AUTH", "example-secret-value")
                .env("SITEWATCH_SNMP_PRIV", "example-secret-value")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{collector} + {sink}: {}{stdout}",
                String::from_utf8_lossy(&out.stderr)
            );
            for stage in [collector, sink] {
                let name = stage.split('/').nth(2).unwrap();
                assert!(
                    stdout.contains(&format!("  {name}: ")),
                    "{collector} + {sink}: no line for {name}:\n{stdout}"
                );
            }
        }
    }
}

/// Every sink is optional, but a config must name at least one sink and one collector.
#[test]
fn check_requires_a_sink_and_a_collector() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[mqtt]\nhost = \"127.0.0.1\"\n[[mqtt.subscription]]\ntopic = \"t\"\nmeasurement = \"m\"\nformat = \"number\"\nfield = \"v\"\n",
            "no sink configured",
        ),
        ("[influx]\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"d\"\n", "no collector configured"),
    ];
    for (text, expected) in cases {
        let path = dir.path().join("sitewatch.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(sitewatch_bin())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            stderr.contains("sitewatch.toml"),
            "names the file: {stderr}"
        );
    }
}

/// SNMP through the binary: a live snmpd and an address nothing answers on. The dead device becomes an
/// `up = false` row in `snmp_poll` (alertable) and shows per device in `/metrics`; the live
/// one keeps its schedule.
#[test]
fn snmp_live_and_dead_devices_are_visible_in_influx_and_metrics() {
    use common::snmp::{Snmpd, SNMPD_COMMUNITY};
    let snmpd = Snmpd::start();
    let influx = Influxd::start();
    influx.create_database(DB);
    // A UDP port nobody answers on.
    let dead_port = common::free_udp_port();
    let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/snmp");
    let body = format!(
        r#"
[influx]
url = "{url}"
database = "{DB}"
flush_interval = "200ms"

[snmp]
profiles_dir = "{profiles}"
interval = "1s"
timeout = "300ms"
retries = 0

[[snmp.target]]
name = "switch-live"
address = "{live}"
version = "2c"
community = "{SNMPD_COMMUNITY}"
profiles = ["if-mib"]
tags = {{ site = "dc1" }}

[[snmp.target]]
name = "ups-dead"
address = "127.0.0.1:{dead_port}"
version = "2c"
community = "{SNMPD_COMMUNITY}"
profiles = ["ups-mib"]
tags = {{ site = "dc1" }}
"#,
        url = influx.url(),
        profiles = profiles.display(),
        live = snmpd.address(),
    );
    let mut sw = Sitewatch::start(&body, "info", &[]);

    let polls = |device: &str, result: &str| {
        sw.metric(
            "sitewatch_snmp_target_polls_total",
            &[
                &format!("device=\"{device}\""),
                &format!("result=\"{result}\""),
            ],
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    // Nothing bound on loopback answers with ICMP port unreachable: result "error" (a host
    // that drops packets gives "timeout"; tests/snmp_poll.rs covers that one).
    let failed = |device: &str| polls(device, "error") + polls(device, "timeout");
    while !(polls("switch-live", "ok") >= 3.0 && failed("ups-dead") >= 3.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "three polls of each device; metrics:\n{}\nlog:\n{}",
            sw.metrics(),
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(failed("switch-live"), 0.0);
    assert_eq!(polls("ups-dead", "ok"), 0.0);

    let up = |device: &str| {
        influx.rows(
            DB,
            &format!("SELECT up FROM snmp_poll WHERE device = '{device}'"),
        )
    };
    let dead = eventually(Duration::from_secs(10), "dead device rows", || {
        let rows = up("ups-dead");
        (rows.len() >= 2).then_some(rows)
    });
    assert!(dead.iter().all(|r| r[1] == json!(false)), "{dead:?}");
    let live = up("switch-live");
    assert!(
        live.len() >= 2 && live.iter().all(|r| r[1] == json!(true)),
        "{live:?}"
    );
    // The live device's interfaces landed, tagged with the device and the target's tags.
    let interfaces = count(
        &influx,
        "SELECT count(oper_status) FROM interface WHERE device = 'switch-live' AND site = 'dc1'",
    );
    assert!(interfaces >= 2, "interface rows: {interfaces}");
    let status = sw.terminate().expect("sitewatch was running");
    assert!(status.success(), "exit {status}; log:\n{}", sw.log());
}

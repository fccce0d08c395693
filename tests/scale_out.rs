//! Scale-out against real services: several `sitewatch run` processes in one MQTT shared
//! subscription group, and SNMP targets split with `--shard i/n`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::influx::{http, Influxd};
use common::mosquitto::Mosquitto;
use common::sitewatch::metric_sum;
use common::snmp::{Snmpd, SNMPD_COMMUNITY};
use common::{eventually, free_tcp_port, require_binary, sitewatch_bin, ServiceProcess};
use sitewatch::collect::shard::owner;

/// A `sitewatch run` with extra CLI arguments, its config written to a temp dir.
struct Instance {
    proc: ServiceProcess,
    metrics_port: u16,
}

impl Instance {
    fn start(name: &str, config: &str, args: &[&str]) -> Instance {
        let dir = tempfile::tempdir().expect("temp dir for sitewatch");
        let metrics_port = free_tcp_port();
        let path = dir.path().join("sitewatch.toml");
        std::fs::write(
            &path,
            format!(
                "[service]\nlog_level = \"info\"\nlisten = \"127.0.0.1:{metrics_port}\"\n\n{config}"
            ),
        )
        .expect("write sitewatch.toml");
        let mut cmd = Command::new(sitewatch_bin());
        cmd.arg("run").arg("--config").arg(&path).args(args);
        let mut proc = ServiceProcess::spawn(name, cmd, dir);
        proc.wait_for_tcp(metrics_port, Duration::from_secs(20));
        Instance { proc, metrics_port }
    }

    fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (status, body) =
            http(self.metrics_port, "GET", "/metrics", b"").expect("scrape /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        metric_sum(&body, name, labels)
    }
}

/// `mosquitto_pub -l`: one QoS 1 message per line over one connection.
fn publish_lines(port: u16, topic: &str, lines: &[String]) {
    let bin = require_binary("mosquitto_pub", "mosquitto-clients");
    let mut child = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-l"])
        .args(["-t", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mosquitto_pub");
    {
        let mut stdin = child.stdin.take().expect("mosquitto_pub stdin");
        for l in lines {
            writeln!(stdin, "{l}").expect("write to mosquitto_pub");
        }
    }
    let out = child.wait_with_output().expect("wait for mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count_points(influx: &Influxd, db: &str, query: &str) -> u64 {
    influx
        .rows(db, query)
        .first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

#[test]
fn share_group_stores_every_message_once_across_three_instances() {
    const MESSAGES: u64 = 600;
    let broker = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database("scale");
    let config = |i: usize| {
        format!(
            r#"
[influx]
url = "{url}"
database = "scale"
flush_interval = "200ms"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "sitewatch-scale-{i}"
share_group = "sitewatch"

[[mqtt.subscription]]
topic = "scale/{{sensor}}/reading"
measurement = "reading"
format = "json"
fields = {{ value = "v" }}
timestamp = "t"
"#,
            url = influx.url(),
            port = broker.port,
        )
    };
    let mut instances: Vec<Instance> = (1..=3)
        .map(|i| Instance::start(&format!("sitewatch-{i}"), &config(i), &[]))
        .collect();
    for (i, inst) in instances.iter_mut().enumerate() {
        eventually(Duration::from_secs(15), "instance connected", || {
            inst.proc.assert_running();
            (inst.metric("sitewatch_mqtt_connected", &[]) == 1.0).then_some(())
        });
        let _ = i;
    }
    // The SUBACK follows the CONNACK; give the broker a moment to register all three.
    std::thread::sleep(Duration::from_millis(500));

    // Unique timestamps: InfluxDB would merge two points of one series at one time, so the
    // point count equals the number of distinct messages stored.
    let base_ns: u64 = 1_700_000_000_000_000_000;
    let lines: Vec<String> = (0..MESSAGES)
        .map(|i| format!(r#"{{"v":{i},"t":{}}}"#, base_ns + i * 1_000_000))
        .collect();
    publish_lines(broker.port, "scale/s1/reading", &lines);

    let stored = eventually(Duration::from_secs(30), "all messages stored", || {
        let n = count_points(&influx, "scale", "SELECT count(value) FROM reading");
        (n >= MESSAGES).then_some(n)
    });
    assert_eq!(stored, MESSAGES, "no message lost, none invented");

    // Exactly once: the instances together decoded each message once (a duplicate delivery
    // would overwrite in InfluxDB and stay invisible in the count above).
    let per_instance: Vec<f64> = instances
        .iter()
        .map(|i| i.metric("sitewatch_mqtt_messages_total", &[]))
        .collect();
    assert_eq!(
        per_instance.iter().sum::<f64>(),
        MESSAGES as f64,
        "messages per instance {per_instance:?}"
    );
    for (i, n) in per_instance.iter().enumerate() {
        assert!(
            *n >= (MESSAGES / 10) as f64,
            "instance {} got {n} of {MESSAGES}: the group does not spread the load ({per_instance:?}); log:\n{}",
            i + 1,
            instances[i].proc.log()
        );
    }
    let values: BTreeSet<u64> = influx
        .rows("scale", "SELECT value FROM reading")
        .iter()
        .filter_map(|r| r.get(1).and_then(|v| v.as_f64()).map(|v| v as u64))
        .collect();
    assert_eq!(values.len() as u64, MESSAGES);
}

#[test]
fn snmp_shards_poll_each_target_exactly_once() {
    const SHARDS: u32 = 2;
    let agent = Snmpd::start();
    let influx = Influxd::start();
    let names: Vec<String> = (1..=8).map(|i| format!("pdu-{i:02}")).collect();
    let profiles_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/snmp");
    let mut targets = String::new();
    for n in &names {
        targets.push_str(&format!(
            "[[snmp.target]]\nname = \"{n}\"\naddress = \"{}\"\ncommunity = \"{SNMPD_COMMUNITY}\"\nprofiles = [\"if-mib\"]\n\n",
            agent.address()
        ));
    }
    let mut instances = Vec::new();
    for i in 1..=SHARDS {
        // One database per shard, so what each instance polled can be told apart.
        let db = format!("shard{i}");
        influx.create_database(&db);
        let config = format!(
            r#"
[influx]
url = "{url}"
database = "{db}"
flush_interval = "200ms"

[snmp]
profiles_dir = "{profiles_dir}"
interval = "1s"
timeout = "2s"

{targets}"#,
            url = influx.url(),
        );
        let shard = format!("{i}/{SHARDS}");
        instances.push(Instance::start(
            &format!("sitewatch-shard{i}"),
            &config,
            &["--shard", &shard],
        ));
    }

    let devices = |db: &str| -> BTreeSet<String> {
        influx
            .rows(db, "SHOW TAG VALUES FROM snmp_poll WITH KEY = \"device\"")
            .iter()
            .filter_map(|r| r.get(1).and_then(|v| v.as_str()).map(str::to_string))
            .collect()
    };
    let polled: Vec<BTreeSet<String>> = eventually(
        Duration::from_secs(20),
        "every target polled by some shard",
        || {
            let sets: Vec<BTreeSet<String>> = (1..=SHARDS)
                .map(|i| devices(&format!("shard{i}")))
                .collect();
            let all: BTreeSet<&String> = sets.iter().flatten().collect();
            (all.len() == names.len()).then_some(sets)
        },
    );
    // Two more polling rounds: a target polled by the wrong shard would show up by now.
    std::thread::sleep(Duration::from_secs(2));
    let polled_later: Vec<BTreeSet<String>> = (1..=SHARDS)
        .map(|i| devices(&format!("shard{i}")))
        .collect();
    assert_eq!(polled, polled_later);
    for i in 1..=SHARDS {
        let expected: BTreeSet<String> = names
            .iter()
            .filter(|n| owner(n, SHARDS) == i)
            .cloned()
            .collect();
        assert_eq!(
            polled[(i - 1) as usize],
            expected,
            "shard {i}/{SHARDS} polled the wrong targets; log:\n{}",
            instances[(i - 1) as usize].proc.log()
        );
        assert!(!expected.is_empty(), "8 names should give each shard some");
    }
    let up = count_points(
        &influx,
        "shard1",
        "SELECT count(up) FROM snmp_poll WHERE up = true",
    );
    assert!(up > 0, "shard 1 polls succeed");
}

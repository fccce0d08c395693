//! `sitewatch import telegraf` on a sample `telegraf.conf` (tests/data/telegraf/) whose SNMP
//! agent is the harness's snmpd, MQTT broker its mosquitto and output its influxd: the
//! imported config passes `check --connect`, and `sitewatch run` with it polls the agent and
//! ingests what the test publishes, with Telegraf's names, into InfluxDB.

mod common;

use std::process::Command;
use std::time::Duration;

use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::snmp::{Snmpd, SNMPD_COMMUNITY};
use common::{eventually, free_tcp_port, require_binary, sitewatch_bin, ServiceProcess};
use serde_json::json;

/// The agent's answer for `oid`, read with net-snmp's snmpget (independently of sitewatch).
fn snmpget(snmpd: &Snmpd, oid: &str) -> String {
    let bin = require_binary("snmpget", "snmp");
    let out = Command::new(bin)
        .args(["-v2c", "-c", SNMPD_COMMUNITY, "-Oqv", &snmpd.address(), oid])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_matches('"')
        .to_string()
}

#[test]
fn imported_telegraf_config_passes_check_and_polls_and_ingests_the_same_data() {
    let snmpd = Snmpd::start();
    let mqtt = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database("telegraf");
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/telegraf/telegraf.conf"),
    )
    .unwrap()
    .replace("SNMP_PORT", &snmpd.port.to_string())
    .replace("SNMP_COMMUNITY", SNMPD_COMMUNITY)
    .replace("MQTT_PORT", &mqtt.port.to_string())
    .replace("INFLUX_PORT", &influx.port.to_string());
    let telegraf_conf = dir.path().join("telegraf.conf");
    std::fs::write(&telegraf_conf, sample).unwrap();
    let config = dir.path().join("sitewatch.toml");

    let out = Command::new(sitewatch_bin())
        .args(["import", "telegraf"])
        .arg(&telegraf_conf)
        .arg("-o")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // What was not converted is named by table and key, on stderr and in the file.
    let text = std::fs::read_to_string(&config).unwrap();
    for want in [
        "[inputs.cpu]: no sitewatch equivalent",
        "[agent] round_interval: no sitewatch equivalent",
        "[inputs.mqtt_consumer[0]] topic_tag",
    ] {
        assert!(
            stderr.contains(&format!("import note: {want}")),
            "{want}:\n{stderr}"
        );
        assert!(text.contains(&format!("#   {want}")), "{want}:\n{text}");
    }
    assert!(dir
        .path()
        .join("telegraf-profiles/telegraf-snmp-1.toml")
        .exists());

    // The metrics endpoint on a free port, so the service can run beside others.
    let metrics_port = free_tcp_port();
    let text = format!("[service]\nlisten = \"127.0.0.1:{metrics_port}\"\n{text}");
    std::fs::write(&config, &text).unwrap();

    let out = Command::new(sitewatch_bin())
        .args(["check", "--connect", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{stdout}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("profiles telegraf-snmp-1"), "{stdout}");

    let log_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(sitewatch_bin());
    cmd.args(["run", "--config"]).arg(&config);
    let mut sw = ServiceProcess::spawn("sitewatch-import", cmd, log_dir);
    sw.wait_for_tcp(metrics_port, Duration::from_secs(10));
    // Published until the subscription is in place (a QoS 1 publish before it is not kept).
    let env = eventually(Duration::from_secs(15), "the MQTT value row", || {
        mqtt.publish("sensors/ams1/hall1/temp", b"21.5", 1, false);
        mqtt.publish(
            "meters/m1",
            br#"{"id":"m-17","power":{"w":1200.5}}"#,
            1,
            false,
        );
        let rows = influx.rows("telegraf", "SELECT value, site, room, dc, host FROM env");
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(
        &env[0][1..],
        &[
            json!(21.5),
            json!("ams1"),
            json!("hall1"),
            json!("ams1"),
            json!("edge-1")
        ],
        "{env:?}"
    );
    let meter = eventually(Duration::from_secs(10), "the json_v2 row", || {
        let rows = influx.rows("telegraf", "SELECT power_w, meter_id, dc FROM meter");
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(
        &meter[0][1..],
        &[json!(1200.5), json!("m-17"), json!("ams1")],
        "{meter:?}"
    );

    let system = eventually(Duration::from_secs(15), "the SNMP scalar row", || {
        let rows = influx.rows(
            "telegraf",
            "SELECT if_number, sys_name, agent_host, host FROM system",
        );
        (!rows.is_empty()).then_some(rows)
    });
    let if_number: i64 = snmpget(&snmpd, "1.3.6.1.2.1.2.1.0").parse().unwrap();
    assert_eq!(
        &system[0][1..],
        &[
            json!(if_number),
            json!(snmpget(&snmpd, "1.3.6.1.2.1.1.5.0")),
            json!("127.0.0.1"),
            json!("edge-1")
        ],
        "{system:?}"
    );
    // The table: the loopback interface's row, tagged by its index and ifDescr as Telegraf's.
    let lo_mtu: i64 = std::fs::read_to_string("/sys/class/net/lo/mtu")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let lo = eventually(Duration::from_secs(10), "the SNMP table row", || {
        let rows = influx.rows(
            "telegraf",
            "SELECT ifMtu, index FROM interface WHERE ifDescr = 'lo'",
        );
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(&lo[0][1..], &[json!(lo_mtu), json!("1")], "{lo:?}");
    sw.kill();
}

use std::path::Path;

use super::*;

const SAMPLE: &str = r#"
[global_tags]
dc = "ams1"

[agent]
interval = "5s"
metric_batch_size = 500
flush_interval = "1s"
round_interval = true

[[outputs.influxdb]]
urls = ["http://127.0.0.1:8086"]
database = "telegraf"
username = "tg"
password = "${INFLUX_PASSWORD}"
timeout = "5s"

[[inputs.snmp]]
agents = ["udp://127.0.0.1:1161", "udp://127.0.0.1:1162"]
version = 2
community = "public"
name = "system"

[[inputs.snmp.field]]
oid = "1.3.6.1.2.1.1.3.0"
name = "uptime"

[[inputs.snmp.field]]
oid = "1.3.6.1.2.1.1.5.0"
name = "sysName"
is_tag = true

[[inputs.snmp.table]]
name = "interface"
index_as_tag = true

[[inputs.snmp.table.field]]
oid = "1.3.6.1.2.1.2.2.1.2"
name = "ifDescr"
is_tag = true

[[inputs.snmp.table.field]]
oid = ".1.3.6.1.2.1.2.2.1.10"
name = "ifInOctets"

[[inputs.snmp.table.field]]
oid = "IF-MIB::ifOutOctets"
name = "ifOutOctets"

[[inputs.mqtt_consumer]]
servers = ["tcp://127.0.0.1:1883"]
topics = ["sensors/+/+/temp"]
qos = 1
data_format = "value"
data_type = "float"
name_override = "env"

[[inputs.mqtt_consumer.topic_parsing]]
topic = "sensors/+/+/temp"
tags = "_/site/room/_"

[[inputs.cpu]]
"#;

#[test]
fn converts_snmp_mqtt_output_and_tags_and_notes_the_rest() {
    let c = convert(SAMPLE, Path::new("telegraf.conf")).unwrap();
    let cfg: Table = c
        .config
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .parse()
        .unwrap();
    let influx = cfg["influx"].as_table().unwrap();
    assert_eq!(influx["database"].as_str(), Some("telegraf"));
    assert_eq!(influx["batch_size"].as_integer(), Some(500));
    assert_eq!(influx["password"]["env"].as_str(), Some("INFLUX_PASSWORD"));
    let service = cfg["service"].as_table().unwrap();
    assert_eq!(service["global_tags"]["dc"].as_str(), Some("ams1"));
    assert_eq!(service["host_tag"].as_bool(), Some(true));
    let target = &cfg["snmp"]["target"][0];
    assert_eq!(target["address"].as_str(), Some("127.0.0.1:1161"));
    assert_eq!(target["version"].as_str(), Some("2c"));
    assert_eq!(target["name"].as_str(), Some("127.0.0.1"));
    assert_eq!(target["tags"]["agent_host"].as_str(), Some("127.0.0.1"));
    // The second agent on the same host is named by its address: names must be unique.
    assert_eq!(
        cfg["snmp"]["target"][1]["name"].as_str(),
        Some("127.0.0.1:1162")
    );
    assert_eq!(cfg["snmp"]["interval"].as_str(), Some("5s"));
    let sub = &cfg["mqtt"]["subscription"][0];
    assert_eq!(sub["topic"].as_str(), Some("sensors/{site}/{room}/temp"));
    assert_eq!(sub["format"].as_str(), Some("number"));
    assert_eq!(sub["measurement"].as_str(), Some("env"));

    let (name, profile) = &c.profiles[0];
    assert_eq!(name, "telegraf-snmp-1.toml");
    let p: Table = profile.parse().unwrap();
    assert_eq!(p["scalar"][0]["oid"].as_str(), Some("1.3.6.1.2.1.1.3.0"));
    assert_eq!(p["table"][0]["oid"].as_str(), Some("1.3.6.1.2.1.2.2.1"));
    assert_eq!(p["table"][0]["index_tag"].as_str(), Some("index"));
    assert_eq!(p["table"][0]["column"].as_array().unwrap().len(), 2);

    let notes: Vec<String> = c.notes.iter().map(|n| n.to_string()).collect();
    for want in [
        "[inputs.snmp[0].field[1]] is_tag",
        "[inputs.snmp[0].table[0].field[2]] oid: \"IF-MIB::ifOutOctets\" is not numeric",
        "[inputs.cpu]: no sitewatch equivalent",
        "[agent] round_interval: no sitewatch equivalent",
        "[inputs.mqtt_consumer[0]] topic_tag",
    ] {
        assert!(
            notes.iter().any(|n| n.starts_with(want)),
            "{want}: {notes:#?}"
        );
    }
    for n in &notes {
        assert!(
            c.config.contains(&format!("#   {n}")),
            "{n} not in the output"
        );
    }
}

#[test]
fn a_file_that_is_not_toml_names_line_and_column() {
    let e = convert("[agent]\ninterval = \n", Path::new("t.conf")).unwrap_err();
    assert!(e.to_string().starts_with("t.conf:2:"), "{e}");
}

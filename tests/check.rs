//! `sitewatch check` through the real binary: `OK` only as the last line, warnings for rules
//! and silences that can never apply, and `check --connect` against the harness's real
//! mosquitto, influxd, VictoriaMetrics, snmpd and Alertmanager (all answer: exit 0; a missing
//! database, a wrong password, a stopped broker or remote-write receiver, a dead device and a
//! closed receiver port: exit 1, each row named).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::alertmanager::Alertmanager;
use common::influx::{Influxd, VictoriaMetrics};
use common::mosquitto::Mosquitto;
use common::sitewatch_bin;
use common::snmp::{Snmpd, SNMPD_COMMUNITY};

const RULES: &str = r#"[[rule]]
name = "inlet_hot"
measurement = "environment"
field = "temperature"
above = { warning = 27.0, warning_clear = 26.0 }

[[rule]]
name = "ups_on_battery"
measurement = "upss"
field = "on_battery"
equals = { critical = true }

[[silence]]
rule = "inlet_*"
daily = { from = "01:00", to = "02:00" }

[[silence]]
rule = "pdu_*"
daily = { from = "01:00", to = "02:00" }
"#;

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/site.toml"), RULES).unwrap();
    let path = dir.join("sitewatch.toml");
    std::fs::write(
        &path,
        format!("{body}\n[rules]\nfiles = [\"rules/*.toml\"]\n"),
    )
    .unwrap();
    path
}

fn check(path: &Path, extra: &[&str]) -> Output {
    Command::new(sitewatch_bin())
        .arg("check")
        .args(extra)
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last line is `<file>: OK (<n> warning(s))`, n the warning lines printed above it.
fn assert_ok_last(stdout: &str, path: &Path) {
    let warnings = stdout
        .lines()
        .filter(|l| l.starts_with("  warning: "))
        .count();
    assert!(warnings > 0, "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert_eq!(
        last,
        format!("{}: OK ({warnings} warning(s))", path.display()),
        "{stdout}"
    );
}

fn mqtt_body(port: u16, extra_subscription: &str) -> String {
    format!(
        r#"
[influx]
url = "http://127.0.0.1:1"
database = "d"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "sitewatch-check-test"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/env"
measurement = "environment"
format = "json"
fields = {{ temperature = "temperature" }}
{extra_subscription}
"#
    )
}

#[test]
fn warns_about_a_misspelled_measurement_and_a_silence_matching_no_rule_then_ok_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &mqtt_body(1883, ""));
    let out = check(&path, &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}{stdout}");
    let rules = dir.path().join("rules/site.toml");
    let rule_line = format!(
        "warning: {}:7: rule 'ups_on_battery' can never fire",
        rules.display()
    );
    assert!(stdout.contains(&rule_line), "{stdout}");
    assert!(
        stdout.contains("measurement \"upss\" (they write: environment)"),
        "{stdout}"
    );
    let silence_line = format!(
        "warning: {}:17: silence rule = \"pdu_*\" matches no rule",
        rules.display()
    );
    assert!(stdout.contains(&silence_line), "{stdout}");
    assert!(!stdout.contains("'inlet_hot'"), "{stdout}");
    assert!(!stdout.contains("\"inlet_*\""), "{stdout}");
    assert_ok_last(&stdout, &path);
    assert_eq!(stdout.matches(": OK").count(), 1, "{stdout}");

    // A line-protocol subscription names its own measurements: no rule is suspicious then.
    let path = write_config(
        dir.path(),
        &mqtt_body(
            1883,
            "[[mqtt.subscription]]\ntopic = \"lp/#\"\nformat = \"line_protocol\"\n",
        ),
    );
    let (stdout, stderr) = text(&check(&path, &[]));
    assert!(!stdout.contains("can never fire"), "{stderr}{stdout}");
    assert!(stdout.contains("matches no rule"), "{stdout}");
}

#[test]
fn a_failing_check_never_prints_ok() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}\n[notify]\n[[notify.receiver]]\nname = \"chat\"\nkind = \"slack\"\nurl = {{ env = \"SITEWATCH_CHECK_UNSET_URL\" }}\n",
        mqtt_body(1883, "")
    );
    let path = write_config(dir.path(), &body);
    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("SITEWATCH_CHECK_UNSET_URL")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stderr.contains("SITEWATCH_CHECK_UNSET_URL"), "{stderr}");
    assert!(!stdout.contains("OK"), "{stdout}");

    // A broker CA file that is not there fails check, naming the key, not the first connect.
    let missing = dir.path().join("no-such-ca.pem");
    let body = mqtt_body(1883, "").replace(
        "client_id = \"sitewatch-check-test\"",
        &format!(
            "client_id = \"sitewatch-check-test\"\ntls = {{ ca_file = {:?} }}",
            missing.display().to_string()
        ),
    );
    let path = write_config(dir.path(), &body);
    let (stdout, stderr) = text(&check(&path, &[]));
    assert!(
        stderr.contains("mqtt.tls")
            && stderr.contains("ca_file")
            && stderr.contains("no-such-ca.pem"),
        "{stderr}"
    );
    assert!(!stdout.contains("OK"), "{stdout}");
}

/// Every server the config names, as the harness runs them.
fn connect_body(
    influx: &Influxd,
    database: &str,
    remote_write_url: &str,
    mqtt_port: u16,
    snmp_address: &str,
    receiver_url: &str,
) -> String {
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/snmp");
    format!(
        r#"
[influx]
url = "{influx}"
database = "{database}"

[remote_write]
url = "{remote_write_url}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "sitewatch-check-connect"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/env"
measurement = "environment"
format = "json"
fields = {{ temperature = "temperature" }}

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/power"
measurement = "rack_power"
format = "number"
field = "power_w"

[snmp]
profiles_dir = "{profiles}"
timeout = "500ms"
retries = 0

[[snmp.target]]
name = "switch-1"
address = "{snmp_address}"
version = "2c"
community = "{SNMPD_COMMUNITY}"
profiles = ["if-mib"]

[notify]
[[notify.receiver]]
name = "am"
kind = "alertmanager"
url = "{receiver_url}"
"#,
        influx = influx.url(),
        profiles = profiles.display(),
    )
}

fn row<'a>(stdout: &'a str, component: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{component} ")))
        .unwrap_or_else(|| panic!("no {component} row:\n{stdout}"))
}

#[test]
fn check_connect_reaches_every_server_and_names_each_failure() {
    let mut mqtt = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database("site");
    let snmpd = Snmpd::start();
    let am = Alertmanager::start();
    let mut vm = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();

    let good = write_config(
        dir.path(),
        &connect_body(
            &influx,
            "site",
            &vm.remote_write_url(),
            mqtt.port,
            &snmpd.address(),
            &am.url(),
        ),
    );
    let out = check(&good, &["--connect", "--timeout", "5s"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}{stdout}");
    assert!(stdout.contains("COMPONENT"), "{stdout}");
    for component in ["influx", "remote_write", "mqtt", "snmp", "receiver"] {
        let r = row(&stdout, component);
        assert!(r.contains("  OK  "), "{r}\n{stdout}");
    }
    assert!(
        row(&stdout, "snmp").contains("sysObjectID 1.3.6.1.4.1.8072."),
        "{stdout}"
    );
    assert!(row(&stdout, "snmp").contains("profiles if-mib"), "{stdout}");
    assert!(
        row(&stdout, "mqtt").contains("dc/+/+/env")
            && row(&stdout, "mqtt").contains("dc/+/+/power"),
        "{stdout}"
    );
    // The probe wrote nothing: the empty write leaves the database without a measurement.
    let shown = influx.query("site", "SHOW MEASUREMENTS");
    assert!(
        shown["results"][0].get("series").is_none(),
        "the test write stored something: {shown}"
    );
    assert_ok_last(&stdout, &good);

    // A database that does not exist, a stopped broker, a port no agent listens on and a
    // receiver port nothing listens on: every row says what failed, exit 1, no OK.
    mqtt.stop();
    vm.stop();
    let dead_snmp = format!("127.0.0.1:{}", common::free_udp_port());
    let dead_am = format!("http://127.0.0.1:{}", common::free_tcp_port());
    let bad = write_config(
        dir.path(),
        &connect_body(
            &influx,
            "nosuchdb",
            &vm.remote_write_url(),
            mqtt.port,
            &dead_snmp,
            &dead_am,
        ),
    );
    let started = std::time::Instant::now();
    let out = check(&bad, &["--connect", "--timeout", "5s"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}{stdout}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "probes run concurrently under --timeout: {:?}",
        started.elapsed()
    );
    let influx_row = row(&stdout, "influx");
    assert!(
        influx_row.contains("FAILED")
            && influx_row.contains("\"nosuchdb\"")
            && influx_row.contains("404"),
        "{stdout}"
    );
    let mqtt_row = row(&stdout, "mqtt");
    assert!(
        mqtt_row.contains("FAILED") && mqtt_row.contains(&format!("127.0.0.1:{}", mqtt.port)),
        "{stdout}"
    );
    assert!(row(&stdout, "snmp").contains("FAILED"), "{stdout}");
    assert!(row(&stdout, "remote_write").contains("FAILED"), "{stdout}");
    assert!(row(&stdout, "receiver").contains("FAILED"), "{stdout}");
    assert!(
        stderr.contains("5 of 5 connection check(s) failed"),
        "{stderr}"
    );
    assert!(!stdout.contains(": OK"), "{stdout}");
}

#[test]
fn check_connect_names_a_refused_influx_password_and_accepts_the_right_one() {
    let mqtt = Mosquitto::start();
    let influx = Influxd::start_with_auth("sitewatch", "right-password", "site");
    let dir = tempfile::tempdir().unwrap();
    let body = |password: &str| {
        format!(
            "{}\n",
            mqtt_body(mqtt.port, "").replace(
                "url = \"http://127.0.0.1:1\"\ndatabase = \"d\"",
                &format!(
                    "url = \"{}\"\ndatabase = \"site\"\nusername = \"sitewatch\"\npassword = \"{password}\"",
                    influx.url()
                ),
            )
        )
    };
    let good = write_config(dir.path(), &body("right-password"));
    let out = check(&good, &["--connect", "--timeout", "5s"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}{stdout}");
    assert!(row(&stdout, "influx").contains("  OK  "), "{stdout}");

    let bad = write_config(dir.path(), &body("wrong-password"));
    let out = check(&bad, &["--connect", "--timeout", "5s"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}{stdout}");
    let influx_row = row(&stdout, "influx");
    assert!(
        influx_row.contains("FAILED")
            && influx_row.contains("HTTP 401")
            && influx_row.contains("username/password"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("wrong-password"),
        "the password is printed: {stdout}"
    );
    assert!(row(&stdout, "mqtt").contains("  OK  "), "{stdout}");
    assert!(
        stderr.contains("1 of 2 connection check(s) failed: influx"),
        "{stderr}"
    );
}

#[test]
fn check_connect_reads_a_modbus_device_and_names_one_that_does_not_answer() {
    use common::modbus::{ModbusServer, UnitData};
    let mqtt = Mosquitto::start();
    let mut unit = UnitData::default();
    unit.registers(false, 0, &[215]);
    let server = ModbusServer::start(&[(1u8, unit)].into());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("maps")).unwrap();
    std::fs::write(
        dir.path().join("maps/probe-meter.toml"),
        "description = \"one holding register\"\n\n[[point]]\nmeasurement = \"power_meter\"\nfield = \"voltage_v\"\naddress = 0\ntype = \"uint16\"\n",
    )
    .unwrap();
    let dead = common::free_tcp_port();
    let body = format!(
        "{}\n[modbus]\nmaps_dir = \"maps\"\ntimeout = \"500ms\"\nretries = 0\n\n\
         [[modbus.device]]\nname = \"meter-live\"\naddress = \"{live}\"\nunit_id = 1\nmap = \"probe-meter\"\n\n\
         [[modbus.device]]\nname = \"meter-dead\"\naddress = \"127.0.0.1:{dead}\"\nunit_id = 1\nmap = \"probe-meter\"\n",
        mqtt_body(mqtt.port, ""),
        live = server.address(),
    );
    let path = write_config(dir.path(), &body);
    let out = check(&path, &["--connect", "--timeout", "5s"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}{stdout}");
    let live = stdout
        .lines()
        .find(|l| l.starts_with("modbus") && l.contains("meter-live"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        live.contains("  OK  ") && live.contains("map probe-meter: one poll read 1 field(s)"),
        "{stdout}"
    );
    let dead_row = stdout
        .lines()
        .find(|l| l.starts_with("modbus") && l.contains("meter-dead"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(dead_row.contains("FAILED"), "{stdout}");
    // The unreachable InfluxDB on port 1 and the dead device are the two failures.
    assert!(
        stderr.contains("2 of 4 connection check(s) failed"),
        "{stderr}"
    );
}

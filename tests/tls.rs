//! TLS trust through the real binary: influxd 1.6 serving HTTPS with a certificate signed by
//! a CA the test makes (`common::pki`, the `openssl` tool), written to through
//! `[influx.tls] ca_file`; without it the write fails naming the unknown issuer and the key to
//! set, and the data is held until it can be written. Also: `SSL_CERT_FILE` as the system
//! store, `insecure_skip_verify` warning loudly, `check` naming a bad PEM file and its key,
//! a client identity that loads (or does not fit its key), and mutual TLS with a real
//! Alertmanager that demands client certificates (influxd 1.x cannot ask for one): the
//! receiver with `client_cert` delivers, the one without is refused and told what to set;
//! remote write to VictoriaMetrics serving HTTPS (`-tls`) through `ca_file`; and
//! `sitewatch rules test` reading its history over HTTPS through `[influx.tls]`.
//! (MQTT over mutual TLS, through the same `sitewatch::tls` module:
//! `tests/mqtt_collect.rs::mutual_tls_with_configured_ca_and_client_certificate`.)
//!
//! Run: `cargo test --test tls`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::alertmanager::Alertmanager;
use common::influx::{Influxd, VictoriaMetrics};
use common::mosquitto::Mosquitto;
use common::pki::TestPki;
use common::sitewatch::Sitewatch as Sw;
use common::sitewatch_bin;

const DB: &str = "tls";

fn lines(base: i64, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("load,sensor=s1 v={i}i {}", base + i as i64 * 1_000_000))
        .collect()
}

/// MQTT line protocol in, the HTTPS InfluxDB out; `tls` is the `[influx.tls]` table (TOML
/// lines, empty for none).
fn config(influx: &Influxd, broker: &Mosquitto, client_id: &str, tls: &str) -> String {
    format!(
        r#"[influx]
url = "{}"
database = "{DB}"
flush_interval = "100ms"
max_retry_delay = "300ms"
timeout = "2s"
spool_dir = "{{spool}}"
{tls}

[mqtt]
host = "127.0.0.1"
port = {}
client_id = "{client_id}"
keep_alive = "5s"
reconnect_backoff_max = "500ms"

[[mqtt.subscription]]
topic = "tls/lp/#"
format = "line_protocol"
qos = 1
"#,
        influx.url(),
        broker.port
    )
}

fn ca_table(pki: &TestPki) -> String {
    format!(
        "[influx.tls]\nca_file = {:?}\n",
        pki.ca_file.display().to_string()
    )
}

/// Polls `done` until it holds; after `secs` seconds fails with `what` and sitewatch's log.
fn wait_for(sw: &Sw, secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {secs} s; sitewatch log:\n{}",
            sw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first line of sitewatch's log with every one of `words`.
fn logged(sw: &Sw, words: &[&str]) -> String {
    let log = sw.log();
    log.lines()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no log line with {words:?}:\n{log}"))
}

/// Waits until exactly the `n` points of [`lines`] are in InfluxDB (read over HTTPS), each
/// with its value.
fn assert_all_stored(influx: &Influxd, base: i64, n: usize, sw: &Sw) {
    wait_for(sw, 40, &format!("all {n} points in InfluxDB"), || {
        let rows = influx.rows(DB, "SELECT v FROM load");
        assert!(
            rows.len() <= n,
            "{} points stored, {n} published",
            rows.len()
        );
        for r in &rows {
            let i = (r[0].as_i64().expect("epoch ns") - base) / 1_000_000;
            assert_eq!(r[1].as_i64(), Some(i), "v of message {i}");
        }
        rows.len() == n
    });
}

fn pki_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sitewatch-pki")
        .tempdir()
        .expect("temp dir for the test PKI")
}

/// A test PKI (in the returned dir), influxd serving HTTPS with its server certificate and
/// the test database, and a broker.
fn https_influx() -> (tempfile::TempDir, TestPki, Influxd, Mosquitto) {
    let dir = pki_dir();
    let pki = TestPki::make(dir.path());
    let influx = Influxd::start_https(&pki);
    influx.create_database(DB);
    (dir, pki, influx, Mosquitto::start())
}

#[test]
fn unknown_issuer_is_named_and_held_then_ca_file_writes_it() {
    let (_dir, pki, influx, broker) = https_influx();
    let base = common::hour_ago_ns();
    let n = 40;

    // No ca_file: the test CA is not a system root.
    let mut sw = Sw::start(&config(&influx, &broker, "sw-tls", ""), "info", &[]);
    broker.publish_lines("tls/lp/a", &lines(base, n), 1);
    wait_for(&sw, 20, "a write failed with kind=\"tls\"", || {
        sw.metric("sitewatch_influx_write_errors_total", &["kind=\"tls\""]) > 0.0
    });
    let said = logged(&sw, &["influx sink failing"]);
    assert!(
        said.contains("ERROR")
            && said.contains("unknown issuer")
            && said.contains("set influx.tls.ca_file"),
        "the error must name the problem and the option to set: {said}"
    );
    assert!(
        influx.rows(DB, "SELECT v FROM load").is_empty(),
        "nothing can be written without trusting the CA"
    );
    assert_eq!(sw.metric("sitewatch_influx_dropped_total", &[]), 0.0);
    let status = sw.terminate().expect("sitewatch was running");
    assert!(status.success(), "graceful stop: {status}\n{}", sw.log());

    // The operator sets ca_file: what was held (spool or broker) is written, nothing lost.
    let text = std::fs::read_to_string(&sw.config).expect("read config");
    let text = text.replace("\n[mqtt]\n", &format!("\n{}\n[mqtt]\n", ca_table(&pki)));
    std::fs::write(&sw.config, text).expect("write config");
    sw.launch();
    assert_all_stored(&influx, base, n, &sw);
    assert_eq!(sw.metric("sitewatch_influx_dropped_total", &[]), 0.0);
    assert_eq!(
        sw.metric("sitewatch_influx_write_errors_total", &["kind=\"tls\""]),
        0.0,
        "with ca_file the certificate is accepted:\n{}",
        sw.log()
    );
}

#[test]
fn ca_file_table_and_ssl_cert_file_both_trust_the_internal_ca() {
    let (_dir, pki, influx, broker) = https_influx();

    // [influx.tls] as its own table.
    let base = common::hour_ago_ns();
    let sw = Sw::start(
        &config(&influx, &broker, "sw-tls-table", &ca_table(&pki)),
        "info",
        &[],
    );
    broker.publish_lines("tls/lp/a", &lines(base, 20), 1);
    assert_all_stored(&influx, base, 20, &sw);
    drop(sw);

    // No tls table; the CA comes in as the system store (rustls-native-certs reads
    // SSL_CERT_FILE), so the public roots of the machine are replaced, not needed here.
    let base2 = base + 1_000_000_000;
    let ca = pki.ca_file.display().to_string();
    let sw = Sw::start(
        &config(&influx, &broker, "sw-tls-env", ""),
        "info",
        &[("SSL_CERT_FILE", &ca)],
    );
    broker.publish_lines("tls/lp/b", &lines(base2, 20), 1);
    wait_for(
        &sw,
        40,
        "the CA of SSL_CERT_FILE trusted: 20 more points",
        || influx.rows(DB, "SELECT v FROM load").len() == 40,
    );
    assert_eq!(sw.metric("sitewatch_influx_dropped_total", &[]), 0.0);
}

#[test]
fn insecure_skip_verify_writes_and_warns_at_start_and_in_check() {
    let (_dir, _pki, influx, broker) = https_influx();
    let base = common::hour_ago_ns();
    let body = config(
        &influx,
        &broker,
        "sw-tls-insecure",
        "[influx.tls]\ninsecure_skip_verify = true\n",
    );
    let sw = Sw::start(&body, "info", &[]);
    broker.publish_lines("tls/lp/a", &lines(base, 10), 1);
    assert_all_stored(&influx, base, 10, &sw);
    let warning = logged(&sw, &["insecure_skip_verify"]);
    assert!(
        warning.contains("WARN")
            && warning.contains("influx.tls")
            && warning.contains(&influx.url()),
        "the warning names the component and the URL: {warning}"
    );

    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&sw.config)
        .output()
        .expect("run sitewatch check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check: {stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("warning: influx.tls.insecure_skip_verify")
                && l.contains(&influx.url())),
        "check warns: {stdout}"
    );
}

/// `sitewatch check` on a config; (success, stdout + stderr).
fn check(dir: &Path, body: &str) -> (bool, String) {
    let path = dir.join("sitewatch.toml");
    std::fs::write(&path, body).expect("write config");
    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run sitewatch check");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_names_the_key_and_file_of_a_bad_pem_for_every_client() {
    let dir = pki_dir();
    let pki = TestPki::make(dir.path());
    let missing = dir.path().join("no-such-ca.pem");
    let not_pem = dir.path().join("not-a-cert.pem");
    std::fs::write(&not_pem, "hello").expect("write file");
    let mqtt = "[mqtt]\nhost = \"127.0.0.1\"\n[[mqtt.subscription]]\ntopic = \"a/#\"\nformat = \"line_protocol\"\n";
    let cases = [
        (
            format!(
                "[influx]\nurl = \"https://127.0.0.1:1\"\ndatabase = \"d\"\n[influx.tls]\nca_file = {:?}\n",
                missing.display().to_string()
            ),
            "influx.tls.ca_file",
            "no-such-ca.pem",
        ),
        (
            format!(
                "[remote_write]\nurl = \"https://127.0.0.1:1/api/v1/write\"\ntls = {{ ca_file = {:?} }}\n",
                not_pem.display().to_string()
            ),
            "remote_write.tls.ca_file",
            "not-a-cert.pem",
        ),
        (
            format!(
                "[influx]\nurl = \"https://127.0.0.1:1\"\ndatabase = \"d\"\n[influx.tls]\nclient_cert = {:?}\nclient_key = {:?}\n",
                pki.client_cert.display().to_string(),
                pki.server_key.display().to_string()
            ),
            "influx.tls.client_key",
            "server.key",
        ),
        (
            format!(
                "[influx]\nurl = \"http://127.0.0.1:1\"\ndatabase = \"d\"\n[notify]\n[[notify.receiver]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"https://127.0.0.1:1/hook\"\ntls = {{ ca_file = {:?} }}\n",
                missing.display().to_string()
            ),
            "notify.receiver[0].tls.ca_file",
            "no-such-ca.pem",
        ),
    ];
    for (body, key, file) in cases {
        let (ok, out) = check(dir.path(), &format!("{body}{mqtt}"));
        assert!(!ok, "check must fail:\n{body}\n{out}");
        assert!(
            out.contains(key) && out.contains(file),
            "names {key} and {file}: {out}"
        );
    }
    // The same files that are right pass.
    let (ok, out) = check(
        dir.path(),
        &format!(
            "[influx]\nurl = \"https://127.0.0.1:1\"\ndatabase = \"d\"\n[influx.tls]\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n{mqtt}",
            pki.ca_file.display().to_string(),
            pki.client_cert.display().to_string(),
            pki.client_key.display().to_string()
        ),
    );
    assert!(ok, "{out}");
}

#[test]
fn a_client_identity_loads_and_a_foreign_key_does_not_fit() {
    let dir = pki_dir();
    let pki = TestPki::make(dir.path());
    let tls = sitewatch::tls::TlsConfig {
        ca_file: Some(pki.ca_file.clone()),
        client_cert: Some(pki.client_cert.clone()),
        client_key: Some(pki.client_key.clone()),
        insecure_skip_verify: false,
    };
    let config = sitewatch::tls::client_config(Some(&tls), "influx.tls", "https://db")
        .expect("CA and client identity load");
    assert!(config.client_auth_cert_resolver.has_certs());
    let plain = sitewatch::tls::client_config(None, "influx.tls", "https://db").unwrap();
    assert!(!plain.client_auth_cert_resolver.has_certs());

    let wrong = sitewatch::tls::TlsConfig {
        client_key: Some(pki.server_key.clone()),
        ..tls
    };
    let e = sitewatch::tls::client_config(Some(&wrong), "influx.tls", "https://db")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("influx.tls.client_key (") && e.contains("does not fit client_cert"),
        "{e}"
    );
}

const RULES: &str = r#"
[[rule]]
name = "tls_rack_hot"
measurement = "environment"
field = "temperature"
match = { site = "*", rack = "*" }
above = { critical = 30.0, critical_clear = 28.0 }
message = "{rack}: inlet {value} °C above {threshold} °C"
"#;

#[test]
fn alertmanager_demanding_client_certificates_gets_the_alert_over_mutual_tls() {
    let dir = pki_dir();
    let pki = TestPki::make(dir.path());
    let am = Alertmanager::start_mutual_tls(&pki);
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let path = |p: &Path| format!("{:?}", p.display().to_string());
    let body = format!(
        r#"[influx]
url = "{influx}"
database = "{DB}"
flush_interval = "100ms"

[mqtt]
host = "127.0.0.1"
port = {mqtt}
client_id = "sw-tls-alerts"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/temperature"
measurement = "environment"
format = "number"
field = "temperature"

[rules]
files = ["rules.toml"]

[notify]
[[notify.receiver]]
name = "am-mtls"
kind = "alertmanager"
url = "{am}"
tls = {{ ca_file = {ca}, client_cert = {cert}, client_key = {key} }}

[[notify.receiver]]
name = "am-no-client-cert"
kind = "alertmanager"
url = "{am}"
max_retry_delay = "500ms"
tls = {{ ca_file = {ca} }}
"#,
        influx = influx.url(),
        mqtt = broker.port,
        am = am.url(),
        ca = path(&pki.ca_file),
        cert = path(&pki.client_cert),
        key = path(&pki.client_key),
    );
    let mut sw = Sw::start_paused(&body);
    std::fs::write(sw.dir().join("rules.toml"), RULES).expect("write rules");
    sw.launch();
    // Retained: the subscription may come after the publish.
    broker.publish("dc/dc1/r7/temperature", b"35.5", 1, true);

    wait_for(&sw, 20, "the alert in Alertmanager over mutual TLS", || {
        !am.active_named("tls_rack_hot").is_empty()
    });
    let alert = &am.active_named("tls_rack_hot")[0];
    assert_eq!(alert["labels"]["rack"], "r7", "{alert}");

    // The receiver without a client certificate is refused, counted, and told what to set.
    wait_for(
        &sw,
        20,
        "a kind=\"tls\" failure for the receiver without a client certificate",
        || {
            sw.metric(
                "sitewatch_notify_failures_total",
                &["receiver=\"am-no-client-cert\"", "kind=\"tls\""],
            ) > 0.0
        },
    );
    let said = logged(&sw, &["am-no-client-cert", "ERROR"]);
    assert!(
        said.contains("notify.receiver[1].tls.client_cert")
            && said.contains("notify.receiver[1].tls.client_key"),
        "names the keys to set: {said}"
    );
    assert_eq!(
        sw.metric("sitewatch_notify_failures_total", &["receiver=\"am-mtls\""]),
        0.0
    );
}

#[test]
fn remote_write_to_https_victoriametrics_through_ca_file() {
    let dir = pki_dir();
    let pki = TestPki::make(dir.path());
    let vm = VictoriaMetrics::start_https(&pki);
    let broker = Mosquitto::start();
    let body = format!(
        r#"[remote_write]
url = "{url}"
flush_interval = "100ms"
max_retry_delay = "300ms"
tls = {{ ca_file = {ca:?} }}

[mqtt]
host = "127.0.0.1"
port = {mqtt}
client_id = "sw-tls-rw"

[[mqtt.subscription]]
topic = "tls/lp/#"
format = "line_protocol"
qos = 1
"#,
        url = vm.remote_write_url(),
        ca = pki.ca_file.display().to_string(),
        mqtt = broker.port,
    );
    let sw = Sw::start(&body, "info", &[]);
    let base = common::hour_ago_ns();
    broker.publish_lines("tls/lp/a", &lines(base, 10), 1);
    // Read back over HTTPS, trusting the same CA.
    wait_for(&sw, 30, "10 samples in VictoriaMetrics", || {
        let stored: usize = vm
            .export("load_v")
            .iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum();
        stored == 10
    });
    assert_eq!(
        sw.metric("sitewatch_remote_write_requests_total", &["status=\"tls\""]),
        0.0
    );
}

#[test]
fn rules_test_reads_history_over_https_through_influx_tls() {
    let (_dir, pki, influx, _broker) = https_influx();
    // Ten minutes of one rack, 10 s apart, hot from minute 4 to 6.
    let from_s = common::hour_ago_ns() / 1_000_000_000;
    let history: String = (0..60)
        .map(|i| {
            let t = if (24..36).contains(&i) { 35.0 } else { 22.0 };
            format!(
                "environment,site=dc1,rack=r1 temperature={t} {}\n",
                from_s + i * 10
            )
        })
        .collect();
    let (status, body) = influx
        .call(
            "POST",
            &format!("/write?db={DB}&precision=s"),
            history.as_bytes(),
        )
        .expect("write history over HTTPS");
    assert_eq!(status, 204, "write: {body}");

    let work = tempfile::tempdir().expect("temp dir");
    std::fs::write(work.path().join("rules.toml"), RULES).expect("write rules");
    let run = |tls: &str| {
        let cfg = work.path().join("sitewatch.toml");
        std::fs::write(
            &cfg,
            format!(
                "[influx]\nurl = \"{}\"\ndatabase = \"{DB}\"\n{tls}\n[rules]\nfiles = [\"rules.toml\"]\n",
                influx.url()
            ),
        )
        .expect("write config");
        Command::new(sitewatch_bin())
            .args(["rules", "test", "--config"])
            .arg(&cfg)
            .args(["--since", "2h"])
            .env_remove("RUST_LOG")
            .output()
            .expect("run sitewatch rules test")
    };

    let out = run(&ca_table(&pki));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rules test over HTTPS: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rule tls_rack_hot") && stdout.contains("1 incident(s) (1 critical"),
        "{stdout}"
    );

    // Without the CA the read fails, saying why.
    let out = run("");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail without ca_file");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(
        stderr.contains("influx.tls.ca_file"),
        "the fix is named: {stderr}"
    );
}

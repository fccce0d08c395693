//! `sitewatch health`, as the Dockerfile's HEALTHCHECK runs it: against a real running
//! instance (real Mosquitto and InfluxDB), the address taken from the config named by
//! SITEWATCH_CONFIG, `--url` with and without a path, and a port where nothing listens. The
//! instance runs as in a container: WATCHDOG_USEC set but no NOTIFY_SOCKET, where the systemd
//! notifications must be silent no-ops.

mod common;

use std::process::{Command, Output};

use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;
use common::{free_tcp_port, sitewatch_bin};

fn health(args: &[&str], config_env: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(sitewatch_bin());
    cmd.arg("health").args(args).env_remove("SITEWATCH_CONFIG");
    if let Some(c) = config_env {
        cmd.env("SITEWATCH_CONFIG", c);
    }
    cmd.output().expect("run sitewatch health")
}

fn one_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        stdout.lines().count(),
        1,
        "not one line of output: {stdout:?} (stderr {:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim_end().to_string()
}

#[test]
fn health_reads_the_configured_listen_address_and_exits_by_status() {
    let mosquitto = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database("health");
    let body = format!(
        r#"
[influx]
url = "{url}"
database = "health"

[mqtt]
host = "127.0.0.1"
port = {mqtt}
client_id = "health-cli"

[[mqtt.subscription]]
topic = "x/{{a}}"
format = "number"
measurement = "m"
field = "v"
"#,
        url = influx.url(),
        mqtt = mosquitto.port,
    );
    let mut sw = Sitewatch::start(&body, "info", &[("WATCHDOG_USEC", "2000000")]);
    let port = sw.metrics_port;

    // The HEALTHCHECK: no flags, the config from SITEWATCH_CONFIG.
    let out = health(&[], Some(&sw.config));
    assert!(out.status.success(), "{out:?}");
    let line = one_line(&out);
    let want = format!("healthy: http://127.0.0.1:{port}/health 200 {{");
    assert!(line.starts_with(&want), "{line}");
    let report: serde_json::Value =
        serde_json::from_str(&line[want.len() - 1..]).expect("the report is JSON");
    assert!(report.is_object(), "{report}");

    // --url without a path asks /health; with a path, that path; --url wins over the config.
    let base = format!("http://127.0.0.1:{port}");
    let out = health(&["--url", &base], Some(&sw.config));
    assert!(out.status.success(), "{out:?}");
    assert!(one_line(&out).starts_with(&format!("healthy: {base}/health 200 ")));
    let out = health(&["--url", &format!("{base}/")], None);
    assert!(one_line(&out).starts_with(&format!("healthy: {base}/health 200 ")));
    let ready = format!("{base}/ready");
    let out = health(&["--url", &ready], None);
    let line = one_line(&out);
    assert!(line.contains(&format!("{ready} ")), "{line}");
    assert_eq!(
        out.status.success(),
        line.starts_with("healthy: "),
        "{line}"
    );

    // A path the service does not serve: unhealthy, exit 1, still one line.
    let out = health(&["--url", &format!("{base}/nope")], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(one_line(&out).starts_with(&format!("unhealthy: {base}/nope 404")));

    // Nothing listening: exit 1 and the reason on stderr.
    let closed = free_tcp_port();
    let out = health(&["--url", &format!("http://127.0.0.1:{closed}")], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no answer from http://127.0.0.1:{closed}/health")),
        "{stderr}"
    );

    let status = sw.terminate();
    assert!(status.is_some_and(|s| s.success()), "{}", sw.log());
    assert!(
        !sw.log().contains("cannot notify systemd"),
        "warned without a NOTIFY_SOCKET:\n{}",
        sw.log()
    );
}

//! `sitewatch rules test` end to end: a known history in a real influxd, the built binary
//! replays it and the printed incidents, durations and counts are checked exactly.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::influx::{http, Influxd};
use sitewatch::rules::replay::parse_time;

const DB: &str = "sitewatch";
const FROM: &str = "2026-01-05T10:00:00Z";
const UNTIL: &str = "2026-01-05T12:00:00Z";

const RULES: &str = r#"
[[rule]]
name = "rack_temp"
measurement = "environment"
field = "temperature"
match = { rack = "*" }
above = { warning = 27.0, warning_clear = 26.0, critical = 32.0, critical_clear = 31.0 }
for = "30s"

[[rule]]
name = "water_leak"
measurement = "leak"
field = "leak"
equals = { critical = true }
"#;

/// A stricter candidate: only the hot spell of the first incident would page, as a warning.
const CANDIDATE: &str = r#"
[[rule]]
name = "rack_temp"
measurement = "environment"
field = "temperature"
match = { rack = "*" }
above = { warning = 28.5, warning_clear = 27.5, critical = 34.0 }
for = "30s"
"#;

/// Rack r1 temperature by second of the two hours (10 s samples): a 10-minute warm spell with
/// a 60 s hot peak, a 20 s blip that `for` filters out, and a warm spell that lasts past the
/// end of the range. Rack r2 stays cool.
fn r1_temperature(t: i64) -> f64 {
    match t {
        1200..=1499 => 29.0,
        1500..=1559 => 33.0,
        1560..=1799 => 29.0,
        3000..=3019 => 30.0,
        6000.. => 28.0,
        _ => 24.0,
    }
}

fn write_history(influx: &Influxd) {
    let base_s = parse_time(FROM).unwrap() / 1_000_000_000;
    let mut lp = String::new();
    for t in (0..7200).step_by(10) {
        let ts = base_s + t;
        lp.push_str(&format!(
            "environment,rack=r1,site=dc1 temperature={},humidity=45 {ts}\n",
            r1_temperature(t)
        ));
        lp.push_str(&format!(
            "environment,rack=r2,site=dc1 temperature=22.5,humidity=40 {ts}\n"
        ));
        if t % 60 == 0 {
            let wet = (3600..3720).contains(&t);
            lp.push_str(&format!("leak,sensor=floor1 leak={wet} {ts}\n"));
        }
    }
    // Outside the replayed range: must not be read.
    lp.push_str(&format!(
        "environment,rack=r1,site=dc1 temperature=99 {}\n",
        base_s + 7200
    ));
    let (status, body) = http(
        influx.port,
        "POST",
        &format!("/write?db={DB}&precision=s"),
        lp.as_bytes(),
    )
    .expect("write history");
    assert_eq!(status, 204, "write: {body}");
}

fn write_config(dir: &Path, influx_url: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.join("candidate.toml"), CANDIDATE).unwrap();
    let cfg = dir.join("sitewatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[influx]\nurl = \"{influx_url}\"\ndatabase = \"{DB}\"\n\n[rules]\nfiles = [\"rules.toml\"]\n"
        ),
    )
    .unwrap();
    cfg
}

fn rules_test(cfg: &Path, extra: &[&str]) -> Output {
    Command::new(common::sitewatch_bin())
        .args(["rules", "test", "--config"])
        .arg(cfg)
        .args(extra)
        .env_remove("SITEWATCH_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run sitewatch rules test")
}

fn stdout_ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sitewatch rules test failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn replays_history_and_reports_incidents_exactly() {
    let influx = Influxd::start();
    influx.create_database(DB);
    write_history(&influx);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &influx.url());
    let rules_file = dir.path().join("rules.toml");

    // 25 min windows: the range is read in 5 queries per measurement, incidents span windows.
    let out = rules_test(&cfg, &["--from", FROM, "--until", UNTIL, "--window", "25m"]);
    let text = stdout_ok(&out);
    let expected = format!(
        "replay 2026-01-05T10:00:00Z .. 2026-01-05T12:00:00Z: 1560 samples from 3 series, 2 rule(s)

rule rack_temp (environment.temperature, {rules}:2): 2 incident(s) (1 critical, 1 warning), 1 still firing, 4 firing notification(s), 1440 samples from 2 series
  firing time 29m in total, longest 19m 30s
  critical 2026-01-05T10:20:30Z -> 2026-01-05T10:30:00Z  9m 30s  peak 33  environment,rack=r1,site=dc1
  warning  2026-01-05T11:40:30Z -> still firing  >= 19m 30s  peak 28  environment,rack=r1,site=dc1

rule water_leak (leak.leak, {rules}:10): 1 incident(s) (1 critical, 0 warning), 0 still firing, 1 firing notification(s), 120 samples from 1 series
  firing time 2m in total, longest 2m
  critical 2026-01-05T11:00:00Z -> 2026-01-05T11:02:00Z  2m  peak true  leak,sensor=floor1

summary: 2 rule(s), 3 incident(s) (2 critical, 1 warning), 1 still firing, 5 firing notification(s); 1560 samples, 3 series
",
        rules = rules_file.display()
    );
    assert_eq!(text, expected);

    // A candidate rule file, one rule, machine-readable output.
    let candidate = dir.path().join("candidate.toml");
    let out = rules_test(
        &cfg,
        &[
            "--from",
            FROM,
            "--until",
            UNTIL,
            "--rules",
            candidate.to_str().unwrap(),
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&stdout_ok(&out)).expect("JSON report");
    assert_eq!(report["samples"], 1440);
    assert_eq!(report["rules"].as_array().unwrap().len(), 1);
    let rule = &report["rules"][0];
    assert_eq!(rule["name"], "rack_temp");
    assert_eq!(
        (rule["warning"].clone(), rule["critical"].clone()),
        (1.into(), 0.into())
    );
    let inc = &rule["incidents"][0];
    assert_eq!(inc["severity"], "warning");
    assert_eq!(inc["start"], "2026-01-05T10:20:30Z");
    assert_eq!(inc["breach_start"], "2026-01-05T10:20:00Z");
    assert_eq!(inc["end"], "2026-01-05T10:30:00Z");
    assert_eq!(inc["duration_s"], 570.0);
    assert_eq!(inc["peak"], 33.0);
    assert_eq!(inc["still_firing"], false);

    // --rule filter and --since (relative to now: the history is older, so nothing fires).
    let out = rules_test(&cfg, &["--since", "1h", "--rule", "water_leak"]);
    let text = stdout_ok(&out);
    assert!(
        text.contains("rule water_leak (leak.leak")
            && text.contains("0 samples from 0 series")
            && text.contains("no samples: check the rule's measurement")
            && !text.contains("rack_temp"),
        "{text}"
    );

    // Mistakes are explained on stderr with exit code 1.
    let out = rules_test(&cfg, &["--since", "1h", "--rule", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--rule \"nope\": no such rule; loaded rules: rack_temp, water_leak"),
        "{err}"
    );
    let out = rules_test(&cfg, &["--from", "2026-01-05T10:00:00"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs a zone"),
        "{err}"
    );
}

#[test]
fn unreachable_influxdb_names_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_tcp_port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = write_config(dir.path(), &url);
    let out = rules_test(&cfg, &["--since", "1h"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach InfluxDB at {url}/query"))
            && err.contains("check [influx] url"),
        "{err}"
    );
}

#[test]
fn missing_database_is_explained() {
    let influx = Influxd::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &influx.url());
    let out = rules_test(&cfg, &["--since", "1h"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database not found: sitewatch") && err.contains("check [influx] database"),
        "{err}"
    );
}

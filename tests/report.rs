//! `sitewatch report` against the real pipeline: Mosquitto → `sitewatch run` (rules) →
//! InfluxDB 1.6 holds an hour of samples and the incidents they caused; acknowledgement and
//! escalation rows are added by line protocol, as the rules stage writes them. The report is
//! rendered as HTML and Markdown, its contents checked against what was written, and the
//! HTML rendered in headless Chromium: the screenshot must show a plot's line and a table,
//! and every image must have decoded.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::{line_protocol_rules_body, Sitewatch};
use common::{eventually, hour_ago_ns, require_binary, sitewatch_bin};
use serde_json::Value;
use sitewatch::model::{alert_id, SeriesKey, TagSet};
use sitewatch::rules::replay::format_duration_ns;

const DB: &str = "report";
const MIN: i64 = 60_000_000_000;
const SEC: i64 = 1_000_000_000;

const RULES: &str = r#"
[[rule]]
name = "rack_hot"
measurement = "env"
field = "t"
match = { rack = "*" }
above = { warning = 27.0, critical = 32.0 }
message = "{rack} inlet at {value}"

[[rule]]
name = "ups_battery_low"
measurement = "ups"
field = "battery_charge"
match = { device = "*" }
below = { warning = 50.0 }
message = "{device} battery at {value} %"
"#;

/// The plot's line colour (src/report/plot.rs LINE) and the table header background
/// (src/report/html.rs th).
const LINE: [u8; 3] = [31, 119, 180];
const TH: [u8; 3] = [0xee, 0xf1, 0xf5];

const R1: &[(&str, &str)] = &[("device", "r1"), ("rack", "r1"), ("site", "fra1")];
const R2: &[(&str, &str)] = &[("device", "r2"), ("rack", "r2"), ("site", "fra1")];
const UPS: &[(&str, &str)] = &[("device", "ups-a"), ("site", "fra1")];

fn tags_lp(tags: &[(&str, &str)]) -> String {
    tags.iter().map(|(k, v)| format!(",{k}={v}")).collect()
}

/// Rack r1: warning from +10m, critical +14m..+16m, resolved +20m; again +30m..+35m.
/// Rack r2: warning from +45m, still open. UPS: below 50 % from +8m to +25m.
fn samples(base: i64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut o = 0;
    while o <= 50 * MIN {
        let r1 = match o {
            o if (14 * MIN..16 * MIN).contains(&o) => 33.0,
            o if (10 * MIN..20 * MIN).contains(&o) || (30 * MIN..35 * MIN).contains(&o) => 29.0,
            _ => 22.0,
        };
        let r2 = if o >= 45 * MIN { 29.0 } else { 22.0 };
        let ups = if (8 * MIN..25 * MIN).contains(&o) {
            40.0
        } else {
            100.0
        };
        let t = base + o;
        lines.push(format!("env{} t={r1} {t}", tags_lp(R1)));
        lines.push(format!("env{} t={r2} {t}", tags_lp(R2)));
        lines.push(format!("ups{} battery_charge={ups} {t}", tags_lp(UPS)));
        o += 30 * SEC;
    }
    lines
}

fn id_of(rule: &str, measurement: &str, tags: &[(&str, &str)]) -> String {
    alert_id(
        rule,
        &SeriesKey::new(measurement, TagSet::new(tags.iter().copied())),
    )
}

/// An acknowledged or escalated row, shaped as schema.md (docs/report.md) says.
#[allow(clippy::too_many_arguments)]
fn lifecycle_row(
    rule: &str,
    measurement: &str,
    field: &str,
    tags: &[(&str, &str)],
    severity: &str,
    state: &str,
    fields: &str,
    t: i64,
) -> String {
    let series = format!("{measurement}{}", tags_lp(tags));
    format!(
        "events,rule={rule},severity={severity},state={state},source_measurement={measurement},field={field}{} id=\"{}\",series=\"{series}\",{fields} {t}",
        tags_lp(tags),
        id_of(rule, measurement, tags)
    )
}

fn write_lines(influx: &Influxd, lines: &[String]) {
    let (status, body) = influx
        .call(
            "POST",
            &format!("/write?db={DB}&precision=ns"),
            lines.join("\n").as_bytes(),
        )
        .expect("write to influxd");
    assert_eq!(status, 204, "write: {body}");
}

/// Runs `cmd` to its end, killing it after `limit` (a hung browser must not hang the test).
/// Output goes through files: a DOM dump is larger than a pipe's buffer.
fn run_bounded(mut cmd: Command, what: &str, limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr: std::fs::read(&err_path).unwrap_or_default(),
    }
}

fn report(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(sitewatch_bin());
    cmd.arg("report").arg("--config").arg(config).args(args);
    run_bounded(cmd, "sitewatch report", Duration::from_secs(30))
}

fn ok_report(config: &Path, args: &[&str]) -> String {
    let out = report(config, args);
    assert!(
        out.status.success(),
        "sitewatch report {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chromium(profile: &Path, args: &[String], what: &str) -> Output {
    let bin = require_binary("chromium", "chromium");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    let out = run_bounded(cmd, what, Duration::from_secs(40));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// RGB pixels of a PNG file.
fn decode_png(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let px = buf[..info.buffer_size()]
        .chunks(step)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, px)
}

fn count_near(px: &[[u8; 3]], c: [u8; 3], tol: u8) -> usize {
    px.iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(c[i]) <= tol))
        .count()
}

/// (time_ns, state, rule, time_to_resolve_s) of the events rows sitewatch wrote.
fn events(influx: &Influxd) -> Vec<(i64, String, String, Option<f64>)> {
    let v = influx.query_epoch_ns(
        DB,
        "SELECT \"message\", \"state\", \"rule\", \"time_to_resolve_s\" FROM \"events\"",
    );
    let rows = v["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rows.iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap_or_default(),
                r[2].as_str().unwrap_or_default().to_string(),
                r[3].as_str().unwrap_or_default().to_string(),
                r.get(4).and_then(Value::as_f64),
            )
        })
        .collect()
}

fn mean_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v.iter().sum::<f64>() / n as f64, median)
}

fn secs(s: f64) -> String {
    format_duration_ns((s * 1e9) as i64)
}

#[test]
fn incident_report_from_the_pipeline_in_html_and_markdown() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let broker = Mosquitto::start();
    let mut sw = Sitewatch::start_with_rules(
        &line_protocol_rules_body(&influx.url(), DB, broker.port, "report-test", "site/#"),
        RULES,
    );

    let base = hour_ago_ns();
    let lines = samples(base);
    // One topic, one connection: the samples arrive in time order.
    broker.publish_lines("site/fra1", &lines, 1);
    let n = lines.len() / 3;
    eventually(
        Duration::from_secs(20),
        "all samples and 3 resolves in InfluxDB",
        || {
            let count = |q: &str| {
                influx
                    .rows(DB, q)
                    .first()
                    .and_then(|r| r.get(1))
                    .and_then(Value::as_i64)
            };
            let done = count("SELECT count(\"t\") FROM \"env\"") == Some(2 * n as i64)
                && count("SELECT count(\"battery_charge\") FROM \"ups\"") == Some(n as i64)
                && count("SELECT count(\"message\") FROM \"events\" WHERE \"state\" = 'resolved'")
                    == Some(3);
            done.then_some(())
        },
    );

    // What the lead's acknowledge/escalation work writes, by hand: an escalation and acks
    // with and without time_to_ack_s (the report falls back to ack - firing).
    let r1_first = base + 10 * MIN;
    let ups_firing = base + 8 * MIN;
    let r1_second = base + 30 * MIN;
    write_lines(
        &influx,
        &[
            lifecycle_row(
                "rack_hot", "env", "t", R1, "warning", "escalated",
                "step=1i,receivers=\"oncall-2\",message=\"escalated to oncall-2\"",
                r1_first + 2 * MIN,
            ),
            lifecycle_row(
                "rack_hot", "env", "t", R1, "warning", "acknowledged",
                "acked_by=\"ana\",comment=\"on it | checking CRAC-2\",time_to_ack_s=180,message=\"acknowledged by ana: on it\"",
                r1_first + 3 * MIN,
            ),
            lifecycle_row(
                "ups_battery_low", "ups", "battery_charge", UPS, "warning", "acknowledged",
                "acked_by=\"bo\",comment=\"utility work\",time_to_ack_s=420,message=\"acknowledged by bo\"",
                ups_firing + 7 * MIN,
            ),
            lifecycle_row(
                "rack_hot", "env", "t", R1, "warning", "acknowledged",
                "acked_by=\"cy\",comment=\"door open\",message=\"acknowledged by cy\"",
                r1_second + MIN,
            ),
        ],
    );

    // Expected figures from what is stored: time_to_resolve_s where the stage wrote it,
    // else resolve - firing (the firing times are those of the samples above).
    let rows = events(&influx);
    let firing_of = |rule: &str, t: i64| -> i64 {
        rows.iter()
            .filter(|r| r.1 == "firing" && r.2 == rule && r.0 <= t)
            .map(|r| r.0)
            .filter(|f| [r1_first, r1_second, ups_firing].contains(f))
            .max()
            .expect("a firing before the resolve")
    };
    let ttr: Vec<f64> = rows
        .iter()
        .filter(|r| r.1 == "resolved")
        .map(|r| r.3.unwrap_or((r.0 - firing_of(&r.2, r.0)) as f64 / 1e9))
        .collect();
    assert_eq!(ttr.len(), 3, "{rows:?}");
    let (ttr_mean, ttr_median) = mean_median(ttr);
    let (tta_mean, tta_median) = mean_median(vec![180.0, 420.0, 60.0]);
    let mtta = format!(
        "mean {}, median {} (3 incidents)",
        secs(tta_mean),
        secs(tta_median)
    );
    let mttr = format!(
        "mean {}, median {} (3 incidents)",
        secs(ttr_mean),
        secs(ttr_median)
    );

    let out_dir = tempfile::tempdir().expect("temp dir");
    let from = format!("-{}s", (now_ns() - base) / SEC + 300);
    let html_path = out_dir.path().join("report.html");
    ok_report(
        &sw.config,
        &[
            "--from",
            &from,
            "--until",
            "now",
            "--format",
            "html",
            "--out",
            html_path.to_str().unwrap(),
            "--timezone",
            "Europe/Berlin",
        ],
    );
    let html = std::fs::read_to_string(&html_path).expect("the HTML report");
    for want in [
        "Incident 1: ups_battery_low (warning) on ups-a, site fra1",
        "Incident 2: rack_hot (critical) on r1, site fra1",
        "Incident 4: rack_hot (warning) on r2, site fra1",
        "<h3>Timeline</h3>",
        "severity warning → critical",
        "escalation step 1",
        "to oncall-2",
        "by ana: on it | checking CRAC-2",
        "not acknowledged",
        "open at the end of the range",
        "same site",
        &mtta,
        &mttr,
        "<dt>Incidents</dt><dd>4 (1 critical, 3 warning)</dd>",
        "<dt>Still open at the end of the range</dt><dd>1</dd>",
        "Incidents per shift (Europe/Berlin)",
        // The UPS went low 2 minutes before the rack first warmed.
        "<td>-2m</td>",
    ] {
        assert!(
            html.contains(want),
            "the HTML report lacks {want:?}:\n{html}"
        );
    }
    assert_eq!(
        html.matches("<img class=\"plot\"").count(),
        4,
        "a plot per incident"
    );
    assert!(!html.contains("<script"), "self-contained and script-free");

    // Markdown: plots beside the file, linked; tables; the same figures.
    let md_path = out_dir.path().join("pm.md");
    ok_report(
        &sw.config,
        &[
            "--from",
            &from,
            "--format",
            "md",
            "--out",
            md_path.to_str().unwrap(),
            "--rule",
            "rack_*",
            "--device",
            "r1",
        ],
    );
    let md = std::fs::read_to_string(&md_path).expect("the Markdown report");
    for want in [
        "## Incident 1: rack\\_hot (critical) on r1, site fra1",
        "## Incident 2: rack\\_hot (warning) on r1, site fra1",
        "| Time | Event | Severity | Since previous | Since firing | Detail |",
        "by ana: on it \\| checking CRAC-2",
        "![t around incident 1](pm-plots/incident-1.png)",
        "Only incidents with device = r1, rule matching rack\\_\\*.",
    ] {
        assert!(
            md.contains(want),
            "the Markdown report lacks {want:?}:\n{md}"
        );
    }
    assert!(!md.contains("## Incident 3"), "filtered to rack r1:\n{md}");
    let (w, h, px) = decode_png(&out_dir.path().join("pm-plots/incident-1.png"));
    assert!(w >= 600 && h >= 200);
    assert!(
        count_near(&px, LINE, 0) > 200,
        "the plot draws the metric's line"
    );

    // Nothing in the range: a report that says so, exit 0, on stdout.
    let empty = ok_report(&sw.config, &["--from", "-20d", "--until", "-19d"]);
    assert!(empty.contains("**No incidents** in this range."), "{empty}");

    // The HTML in a real browser: every image decoded, and the screenshot shows a plot's
    // line and a table.
    let profile = tempfile::tempdir().expect("profile dir");
    let probe = out_dir.path().join("probe.html");
    std::fs::write(
        &probe,
        html.replace(
            "</body>",
            "<script>addEventListener('load', () => { document.body.dataset.widths = \
             [...document.images].map(i => i.complete ? i.naturalWidth : -1).join(','); });\
             </script></body>",
        ),
    )
    .unwrap();
    let dom = chromium(
        profile.path(),
        &[
            "--virtual-time-budget=5000".into(),
            "--dump-dom".into(),
            format!("file://{}", probe.display()),
        ],
        "chromium --dump-dom",
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    let widths = dom
        .split("data-widths=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no data-widths in the DOM:\n{dom}"));
    let widths: Vec<i64> = widths.split(',').map(|w| w.parse().unwrap_or(-1)).collect();
    assert_eq!(widths.len(), 4, "{widths:?}");
    assert!(
        widths.iter().all(|w| *w > 0),
        "every <img> decoded: {widths:?}"
    );

    let shot: PathBuf = out_dir.path().join("shot.png");
    chromium(
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2400".into(),
            format!("file://{}", html_path.display()),
        ],
        "chromium --screenshot",
    );
    let (w, h, px) = decode_png(&shot);
    assert_eq!((w, h), (1280, 2400));
    let line = count_near(&px, LINE, 10);
    let header = count_near(&px, TH, 3);
    assert!(
        line > 300,
        "the screenshot shows a plot line ({line} pixels of it)"
    );
    assert!(
        header > 2000,
        "the screenshot shows tables ({header} header pixels)"
    );
    sw.terminate();
}

#[test]
fn influxdb_problems_say_which_url_and_what_to_do() {
    let influx = Influxd::start();
    influx.create_database("empty");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |db: &str| {
        let p = dir.path().join(format!("{db}.toml"));
        std::fs::write(
            &p,
            format!(
                "[influx]\nurl = \"{}\"\ndatabase = \"{db}\"\n",
                influx.url()
            ),
        )
        .unwrap();
        p
    };
    let stderr = |o: Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let url = influx.url();
    let e = stderr(report(&config("missing"), &["--from", "-1h"]));
    assert!(
        e.contains(&url) && e.contains("database not found") && e.contains("[influx] database"),
        "{e}"
    );
    let e = stderr(report(&config("empty"), &["--from", "-1h"]));
    assert!(
        e.contains(&url)
            && e.contains("no measurement \"events\"")
            && e.contains("events_measurement"),
        "{e}"
    );
    let port = common::free_tcp_port();
    let p = dir.path().join("down.toml");
    std::fs::write(
        &p,
        format!("[influx]\nurl = \"http://127.0.0.1:{port}\"\ndatabase = \"x\"\n"),
    )
    .unwrap();
    let e = stderr(report(&p, &["--from", "-1h"]));
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("cannot reach InfluxDB"),
        "{e}"
    );
}

fn now_ns() -> i64 {
    sitewatch::model::now_ns()
}

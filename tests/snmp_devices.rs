//! Conformance of the shipped profiles on recordings of real devices.
//!
//! Every case in `tests/data/devices/*.toml` names a recording (from PyPI `snmpsim-data`,
//! or the project's own in `tests/data/snmprec/`) and what the shipped profiles must make
//! of it: the detected profiles, exact values, fields that must be gaps, rows that must not
//! exist. Each case is checked offline (the recording decoded as `sitewatch profile test`
//! does) and live (snmpsim serving it, `probe` without `--profile`); the two must agree.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use sitewatch::collect::snmp::{probe, profile_test, ProfileSet, Recording, TargetConfig};
use sitewatch::model::{FieldValue, Sample};

use common::snmp::{snmpsim_data, Snmpsim};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    recording: String,
    source: String,
    device: String,
    profiles: Vec<String>,
    #[serde(default)]
    sample: Vec<Expected>,
    #[serde(default)]
    no_sample: Vec<NoSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    measurement: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    fields: BTreeMap<String, toml::Value>,
    #[serde(default)]
    absent: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSample {
    measurement: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn profiles() -> ProfileSet {
    ProfileSet::load_dir(&repo().join("mappings/snmp")).expect("shipped profiles load")
}

/// The recording's text: `snmpsim-data:PATH` (a real device, from PyPI) or `local:FILE`
/// (`tests/data/snmprec/`).
fn recording_text(spec: &str) -> String {
    if let Some(rel) = spec.strip_prefix("local:") {
        let p = repo().join("tests/data/snmprec").join(rel);
        return std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    let rel = spec
        .strip_prefix("snmpsim-data:")
        .unwrap_or_else(|| panic!("recording {spec:?} must start with snmpsim-data: or local:"));
    snmpsim_data(rel)
}

fn cases() -> Vec<(String, Case)> {
    let dir = repo().join("tests/data/devices");
    let mut out: Vec<(String, Case)> = std::fs::read_dir(&dir)
        .expect("tests/data/devices")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let case: Case =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(
                case.source == "recording" || case.source == "mib-facts",
                "{}: source must be recording or mib-facts",
                p.display()
            );
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, case)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no cases in {}", dir.display());
    out
}

fn describe(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|s| format!("  {} {:?}", s.series, s.fields))
        .collect::<Vec<_>>()
        .join("\n")
}

fn has_tags(s: &Sample, measurement: &str, tags: &BTreeMap<String, String>) -> bool {
    &*s.series.measurement == measurement
        && tags
            .iter()
            .all(|(k, v)| s.series.tags.get(k) == Some(v.as_str()))
}

fn same_value(got: &FieldValue, want: &toml::Value) -> bool {
    match (got, want) {
        (FieldValue::Float(g), toml::Value::Float(w)) => g == w,
        (FieldValue::Float(g), toml::Value::Integer(w)) => *g == *w as f64,
        (FieldValue::Int(g), toml::Value::Integer(w)) => g == w,
        (FieldValue::Str(g), toml::Value::String(w)) => &**g == w.as_str(),
        (FieldValue::Bool(g), toml::Value::Boolean(w)) => g == w,
        _ => false,
    }
}

/// Every mismatch between `samples` and the case, as lines (empty: conforms).
fn check(case: &Case, profiles: &[String], samples: &[Sample]) -> Vec<String> {
    let mut errors = Vec::new();
    if profiles != case.profiles.as_slice() {
        errors.push(format!(
            "detected profiles {profiles:?}, expected {:?}",
            case.profiles
        ));
    }
    for e in &case.sample {
        let mut found: Vec<&Sample> = samples
            .iter()
            .filter(|s| has_tags(s, &e.measurement, &e.tags))
            .collect();
        if found.len() > 1 {
            // Several rows carry these tags: the one with no other tag than `device` is meant.
            found.retain(|s| s.series.tags.iter().count() == e.tags.len() + 1);
        }
        if found.len() != 1 {
            errors.push(format!(
                "{} {:?}: {} samples match, expected exactly one",
                e.measurement,
                e.tags,
                found.len()
            ));
            continue;
        }
        let s = found[0];
        for (field, want) in &e.fields {
            match s.field(field) {
                Some(got) if same_value(got, want) => {}
                got => errors.push(format!("{}: {field} = {got:?}, expected {want}", s.series)),
            }
        }
        for field in &e.absent {
            if let Some(got) = s.field(field) {
                errors.push(format!(
                    "{}: {field} = {got:?} written, expected a gap",
                    s.series
                ));
            }
        }
    }
    for n in &case.no_sample {
        for s in samples
            .iter()
            .filter(|s| has_tags(s, &n.measurement, &n.tags))
        {
            errors.push(format!("{} must not be written: {:?}", s.series, s.fields));
        }
    }
    errors
}

/// Series → field names, without the poll's own health sample.
fn shape(samples: &[Sample]) -> BTreeMap<String, BTreeSet<String>> {
    samples
        .iter()
        .filter(|s| &*s.series.measurement != "snmp_poll")
        .map(|s| {
            (
                s.series.to_string(),
                s.fields.iter().map(|(k, _)| k.to_string()).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recording_is_detected_and_decoded_right() {
    let set = profiles();
    let cases = cases();
    let served = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut offline_shapes = BTreeMap::new();
    for (name, case) in &cases {
        let text = recording_text(&case.recording);
        std::fs::write(served.path().join(format!("{name}.snmprec")), &text).unwrap();
        let recording = Recording::parse(&text);
        let report = profile_test(&recording, &set, None, name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors = check(case, &report.profiles, &report.samples);
        if !errors.is_empty() {
            for err in errors {
                failures.push(format!("{name} ({}) offline: {err}", case.device));
            }
            failures.push(format!(
                "{name} offline output:\n{}",
                describe(&report.samples)
            ));
        }
        offline_shapes.insert(name.clone(), shape(&report.samples));
    }

    // The same recordings served by snmpsim, probed as a user would.
    let sim = Snmpsim::start(served.path());
    for (name, case) in &cases {
        let mut t = TargetConfig::v2c(name, &sim.address(), name);
        t.timeout = Some(std::time::Duration::from_secs(3));
        t.retries = Some(1);
        let report = match probe(t, &set, None).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name} live: probe failed: {e}"));
                continue;
            }
        };
        for err in check(case, &report.profiles, &report.samples) {
            failures.push(format!("{name} ({}) live: {err}", case.device));
        }
        // Counter rates exist only live (two polls); everything else must match offline.
        let counters: BTreeSet<String> = report
            .profiles
            .iter()
            .filter_map(|p| set.get(p))
            .flat_map(|p| p.counter_fields().map(str::to_string).collect::<Vec<_>>())
            .collect();
        let mut live = shape(&report.samples);
        for fields in live.values_mut() {
            fields.retain(|f| !counters.contains(f));
        }
        live.retain(|_, f| !f.is_empty());
        if Some(&live) != offline_shapes.get(name) {
            failures.push(format!(
                "{name}: live and offline decode differ:\n live: {live:?}\n offline: {:?}",
                offline_shapes.get(name)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Each shipped profile is proven on at least one recording, so a profile whose anchors or
/// sysObjectIDs stop matching real devices fails here.
#[test]
fn every_shipped_profile_has_a_recording() {
    let set = profiles();
    let covered: BTreeSet<String> = cases().into_iter().flat_map(|(_, c)| c.profiles).collect();
    let missing: Vec<&str> = set
        .names()
        .into_iter()
        .filter(|n| !covered.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "profiles without a conformance case in tests/data/devices/: {missing:?}"
    );
}

/// One line-protocol line as (series, field → value text), without its timestamp. Splits
/// on unescaped spaces and commas outside quoted strings.
fn parse_line(line: &str) -> (String, BTreeMap<String, String>) {
    let mut parts = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
                continue;
            }
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    assert!(parts.len() >= 2, "not line protocol: {line}");
    let mut fields = BTreeMap::new();
    let (mut field, mut quoted) = (String::new(), false);
    for c in parts[1].chars().chain([',']) {
        match c {
            '"' => {
                quoted = !quoted;
                field.push(c);
            }
            ',' if !quoted => {
                let (k, v) = field.split_once('=').expect("field=value");
                fields.insert(k.to_string(), v.to_string());
                field.clear();
            }
            _ => field.push(c),
        }
    }
    (parts[0].clone(), fields)
}

fn run_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sitewatch"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run sitewatch");
    assert!(
        out.status.success(),
        "sitewatch {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn samples_of(output: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    output
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(parse_line)
        .filter(|(series, _)| !series.starts_with("snmp_poll,"))
        .collect()
}

/// The support workflow: `probe --record` on a live agent, then `profile test` on the file,
/// shows what `probe` showed live (counter rates aside: a recording holds one reading).
#[test]
fn probe_record_then_profile_test_reproduces_the_live_probe() {
    let snmpd = common::snmp::Snmpd::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snmpd.snmprec");
    let addr = snmpd.address();
    let live = run_cli(&[
        "probe",
        "--community",
        common::snmp::SNMPD_COMMUNITY,
        "--record",
        file.to_str().unwrap(),
        &addr,
    ]);
    let recording = Recording::read(&file).expect("the recording was written");
    assert!(recording.len() > 100, "only {} objects", recording.len());
    assert_eq!(
        recording.skipped, 0,
        "what --record writes reads back: {:?}",
        recording.first_skipped
    );
    let offline = run_cli(&["profile", "test", "--device", &addr, file.to_str().unwrap()]);
    let profiles_line = |o: &str| {
        o.lines()
            .find(|l| l.starts_with("# profiles:"))
            .map(str::to_string)
    };
    assert_eq!(
        profiles_line(&live),
        profiles_line(&offline),
        "{live}\n{offline}"
    );
    assert!(
        offline.contains("<- 1.3.6.1.2.1.2.2.1.8."),
        "origins: {offline}"
    );

    let set = profiles();
    let counters: BTreeSet<String> = set
        .iter()
        .flat_map(|p| p.counter_fields().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let (live, offline) = (samples_of(&live), samples_of(&offline));
    assert!(!offline.is_empty(), "offline decode wrote nothing");
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        offline.keys().collect::<Vec<_>>(),
        "same series live and offline"
    );
    for (series, fields) in &live {
        let off = &offline[series];
        for (k, v) in fields {
            match off.get(k) {
                Some(o) => assert_eq!(o, v, "{series} {k}"),
                None => assert!(counters.contains(k), "{series}: {k} live only"),
            }
        }
        assert!(
            off.keys().all(|k| fields.contains_key(k)),
            "{series}: offline-only fields"
        );
    }
}

/// The table for the closing note and docs/profiles.md: every case, what was
/// detected, how many values were written and how many asserted values are right.
/// `cargo test --test snmp_devices -- --ignored --nocapture device_table`
#[tokio::test]
#[ignore = "prints a report; run by hand"]
async fn device_table() {
    let set = profiles();
    println!("| recording | device | source | detected profiles | samples | fields written | asserted right | wrong | gaps asserted |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, case) in cases() {
        let text = recording_text(&case.recording);
        let report = profile_test(&Recording::parse(&text), &set, None, &name)
            .await
            .unwrap();
        let values: Vec<&Sample> = report
            .samples
            .iter()
            .filter(|s| &*s.series.measurement != "snmp_poll")
            .collect();
        let written: usize = values.iter().map(|s| s.fields.len()).sum();
        let asserted: usize = case
            .sample
            .iter()
            .map(|e| e.fields.len() + e.absent.len())
            .sum::<usize>()
            + case.no_sample.len();
        let wrong = check(&case, &report.profiles, &report.samples).len();
        let gaps: usize =
            case.sample.iter().map(|e| e.absent.len()).sum::<usize>() + case.no_sample.len();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.recording,
            case.device,
            case.source,
            report.profiles.join(", "),
            values.len(),
            written,
            asserted.saturating_sub(wrong),
            wrong,
            gaps
        );
    }
}

//! SNMP poller against real agents: Net-SNMP `snmpd` (v2c and v3) and snmpsim serving the
//! `.snmprec` files in `tests/data/snmprec/` (one community per file).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sitewatch::collect::snmp::config::{AuthProtocol, PrivProtocol, SecurityLevel, SnmpVersion};
use sitewatch::collect::snmp::profile::parse_profile;
use sitewatch::collect::snmp::{
    probe, run, ProfileSet, SnmpConfig, TargetConfig, TargetPoller, POLL_MEASUREMENT,
};
use sitewatch::config::Secret;
use sitewatch::model::{FieldValue, Sample};
use tokio_util::sync::CancellationToken;

use common::snmp::{Snmpd, Snmpsim, SNMPD_COMMUNITY, SNMPD_V3_AUTH, SNMPD_V3_PRIV, SNMPD_V3_USER};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn profiles() -> ProfileSet {
    ProfileSet::load_dir(&repo().join("mappings/snmp")).expect("shipped profiles load")
}

fn fast_cfg() -> SnmpConfig {
    SnmpConfig {
        timeout: Duration::from_secs(2),
        retries: 1,
        ..SnmpConfig::default()
    }
}

fn describe(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|s| format!("{} {:?}", s.series, s.fields))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one sample of `measurement` whose tags include all of `tags`.
fn find<'a>(samples: &'a [Sample], measurement: &str, tags: &[(&str, &str)]) -> &'a Sample {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            &*s.series.measurement == measurement
                && tags.iter().all(|(k, v)| s.series.tags.get(k) == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {measurement} sample with {tags:?}; got:\n{}",
        describe(samples)
    );
    found[0]
}

fn count(samples: &[Sample], measurement: &str) -> usize {
    samples
        .iter()
        .filter(|s| &*s.series.measurement == measurement)
        .count()
}

#[track_caller]
fn num(s: &Sample, field: &str, expected: f64) {
    match s.field(field) {
        Some(FieldValue::Float(v)) => assert!(
            (v - expected).abs() < 1e-9,
            "{} {field}: {v} != {expected}",
            s.series
        ),
        other => panic!(
            "{} {field}: expected float {expected}, got {other:?}",
            s.series
        ),
    }
}

#[track_caller]
fn state(s: &Sample, field: &str, code: i64, name: &str) {
    assert_eq!(
        s.field(field),
        Some(&FieldValue::Int(code)),
        "{} {field}",
        s.series
    );
    assert_eq!(
        s.field(&format!("{field}_state")),
        Some(&FieldValue::Str(name.into())),
        "{} {field}_state",
        s.series
    );
}

#[track_caller]
fn missing(s: &Sample, field: &str) {
    assert!(
        s.field(field).is_none(),
        "{} {field} should be missing (sentinel), got {:?}",
        s.series,
        s.field(field)
    );
}

#[track_caller]
fn up(samples: &[Sample], device: &str) -> bool {
    let p = find(samples, POLL_MEASUREMENT, &[("device", device)]);
    match p.field("up") {
        Some(FieldValue::Bool(b)) => *b,
        other => panic!("snmp_poll up: {other:?}"),
    }
}

fn target(name: &str, address: &str, community: &str, profile: &str) -> TargetConfig {
    let mut t = TargetConfig::v2c(name, address, community);
    t.profiles = vec![profile.to_string()];
    t.tags.insert("site".into(), "lab".into());
    t
}

async fn poll_one(address: &str, community: &str, profile: &str, set: &ProfileSet) -> Vec<Sample> {
    let t = target(community, address, community, profile);
    let mut p = TargetPoller::new(&fast_cfg(), &t, set).expect("target builds");
    let s = p.poll().await;
    assert!(
        up(&s, community),
        "{community} poll failed:\n{}",
        describe(&s)
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpd_v2c_and_v3() {
    let agent = Snmpd::start();
    let set = profiles();

    // v2c: system group via probe, IF-MIB via the if-mib profile (auto-detected by the
    // Net-SNMP sysObjectID), rates from the probe's second poll.
    let t = TargetConfig::v2c("snmpd", &agent.address(), SNMPD_COMMUNITY);
    let report = probe(t.clone(), &set, None).await.expect("v2c probe");
    assert!(
        report.sys_object_id.starts_with("1.3.6.1.4.1.8072"),
        "{report:?}"
    );
    assert!(report.sys_descr.contains("Linux"), "{report:?}");
    assert!(
        report.profiles.contains(&"if-mib".to_string()),
        "{report:?}"
    );
    let lo = find(&report.samples, "interface", &[("ifName", "lo")]);
    state(lo, "oper_status", 1, "up");
    state(lo, "admin_status", 1, "up");
    assert_eq!(lo.series.tags.get("device"), Some("snmpd"));
    match lo.field("in_bps") {
        Some(FieldValue::Float(v)) => assert!(*v >= 0.0),
        other => panic!(
            "in_bps after two polls: {other:?}\n{}",
            describe(&report.samples)
        ),
    }
    let forced = probe(t, &set, Some("ups-mib"))
        .await
        .expect("forced profile");
    assert_eq!(forced.profiles, vec!["ups-mib".to_string()]);
    assert_eq!(
        count(&forced.samples, "ups"),
        0,
        "snmpd has no UPS-MIB objects"
    );

    // v3 authPriv (SHA + AES).
    let mut v3 = TargetConfig::v2c("snmpd-v3", &agent.address(), "unused");
    v3.community = None;
    v3.version = SnmpVersion::V3;
    v3.user = Some(SNMPD_V3_USER.into());
    v3.security_level = Some(SecurityLevel::AuthPriv);
    v3.auth_protocol = Some(AuthProtocol::Sha);
    v3.auth_password = Some(Secret::Inline(SNMPD_V3_AUTH.into()));
    v3.priv_protocol = Some(PrivProtocol::Aes);
    v3.priv_password = Some(Secret::Inline(SNMPD_V3_PRIV.into()));
    v3.profiles = vec!["if-mib".into()];
    let mut poller = TargetPoller::new(&fast_cfg(), &v3, &set).unwrap();
    let s = poller.poll().await;
    assert!(up(&s, "snmpd-v3"), "v3 poll failed:\n{}", describe(&s));
    let lo = find(&s, "interface", &[("ifName", "lo")]);
    state(lo, "oper_status", 1, "up");
    // The second poll reuses the v3 session: no engine discovery, so fewer exchanges.
    let requests = |s: &[Sample]| match find(s, POLL_MEASUREMENT, &[("device", "snmpd-v3")])
        .field("requests")
    {
        Some(FieldValue::Int(n)) => *n,
        other => panic!("requests field: {other:?}"),
    };
    let first = requests(&s);
    let s2 = poller.poll().await;
    assert!(
        up(&s2, "snmpd-v3"),
        "second v3 poll failed:\n{}",
        describe(&s2)
    );
    let second = requests(&s2);
    assert!(
        second < first,
        "v3 engine state not reused: {first} exchanges, then {second}"
    );

    // Wrong passwords: a clear authentication error, no data, no retry storm.
    for (auth, privp) in [
        ("wrong-auth-pass", SNMPD_V3_PRIV),
        (SNMPD_V3_AUTH, "wrong-priv-pass"),
    ] {
        let mut bad = v3.clone();
        bad.name = "snmpd-v3-bad".into();
        bad.auth_password = Some(Secret::Inline(auth.into()));
        bad.priv_password = Some(Secret::Inline(privp.into()));
        let mut poller = TargetPoller::new(&fast_cfg(), &bad, &set).unwrap();
        let started = std::time::Instant::now();
        let s = poller.poll().await;
        assert!(
            !up(&s, "snmpd-v3-bad"),
            "wrong password must not succeed:\n{}",
            describe(&s)
        );
        assert_eq!(
            count(&s, "interface"),
            0,
            "no garbage data:\n{}",
            describe(&s)
        );
        let p = find(&s, POLL_MEASUREMENT, &[("device", "snmpd-v3-bad")]);
        let err = match p.field("error") {
            Some(FieldValue::Str(e)) => e.to_string(),
            other => panic!("error field: {other:?}"),
        };
        let lower = err.to_lowercase();
        assert!(
            lower.contains("authentication") || lower.contains("priv"),
            "error should name the credential problem: {err}"
        );
        if auth != SNMPD_V3_AUTH {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "a wrong auth password is reported at once, not after timeouts: {err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmpsim_profiles_dead_target_and_wrap() {
    let data = repo().join("tests/data/snmprec");
    let sim = Snmpsim::start(&data);
    let addr = sim.address();
    let set = profiles();

    check_profiles(&addr, &set).await;
    check_poll_once(&addr, &set).await;
    check_index_lookup(&addr).await;
    check_dead_target_keeps_schedule(&addr, &set).await;
    check_wrapping_counter(&addr).await;
}

async fn check_profiles(addr: &str, set: &ProfileSet) {
    // RFC 1628 UPS-MIB
    let s = poll_one(addr, "ups-mib", "ups-mib", set).await;
    let ups = find(&s, "ups", &[("device", "ups-mib"), ("site", "lab")]);
    state(ups, "battery_status", 2, "normal");
    num(ups, "on_battery_s", 0.0);
    missing(ups, "battery_runtime_min"); // -1
    num(ups, "battery_charge_pct", 97.0); // Gauge32 where the MIB says INTEGER
    num(ups, "battery_voltage_v", 2184.0 * 0.1);
    missing(ups, "battery_current_a"); // 2147483647
    num(ups, "battery_temperature_c", 27.0);
    num(ups, "input_line_bads", 3.0);
    state(ups, "output_source", 5, "battery");
    num(ups, "output_frequency_hz", 500.0 * 0.1);
    num(ups, "alarms_present", 1.0);
    assert_eq!(count(&s, "ups_input"), 3);
    let l2 = find(&s, "ups_input", &[("line", "2")]);
    num(l2, "frequency_hz", 500.0 * 0.1);
    num(l2, "voltage_v", 231.0);
    num(l2, "current_a", 15.0 * 0.1);
    num(l2, "power_w", 3400.0);
    assert_eq!(count(&s, "ups_output"), 3);
    let o3 = find(&s, "ups_output", &[("line", "3")]);
    num(o3, "voltage_v", 231.0);
    num(o3, "current_a", 88.0 * 0.1);
    num(o3, "power_w", 1900.0);
    num(o3, "load_pct", 31.0);

    // APC UPS
    let s = poll_one(addr, "apc-ups", "apc-ups", set).await;
    let u = find(&s, "ups", &[]);
    state(u, "battery_status", 2, "normal");
    num(u, "battery_runtime_min", 120.0);
    assert_eq!(u.field("battery_replace"), Some(&FieldValue::Bool(false)));
    num(u, "battery_charge_pct", 1000.0 * 0.1);
    num(u, "battery_temperature_c", 253.0 * 0.1);
    num(u, "input_voltage_v", 2301.0 * 0.1);
    num(u, "input_frequency_hz", 500.0 * 0.1);
    // APC's upsBasicOutputStatus 3 onBattery, named in the common UPS vocabulary.
    state(u, "output_source", 3, "battery");
    num(u, "output_voltage_v", 2298.0 * 0.1);
    num(u, "output_frequency_hz", 499.0 * 0.1);
    num(u, "output_load_pct", 425.0 * 0.1);
    missing(u, "output_current_a");

    // APC rack PDU (rPDU2)
    let s = poll_one(addr, "apc-rpdu2", "apc-rpdu2", set).await;
    let d = find(&s, "pdu", &[("pdu_module", "1")]);
    state(d, "load_state", 2, "normal");
    num(d, "power_w", 3450.0); // 0.01 kW units, written in W
    num(d, "energy_kwh", 123456.0 * 0.1);
    assert_eq!(count(&s, "pdu_phase"), 3);
    let p1 = find(&s, "pdu_phase", &[("phase", "1")]);
    num(p1, "current_a", 52.0 * 0.1);
    num(p1, "power_w", 1190.0);
    let p3 = find(&s, "pdu_phase", &[("phase", "3")]);
    state(p3, "load_state", 3, "near_overload");
    num(p3, "current_a", 118.0 * 0.1);
    num(p3, "voltage_v", 230.0);
    missing(p3, "power_w"); // -1 = unsupported
    let b2 = find(&s, "pdu_bank", &[("bank", "2")]);
    state(b2, "load_state", 1, "low");
    num(b2, "current_a", 7.0 * 0.1);
    let rear = find(
        &s,
        "environment",
        &[("sensor", "Rack Rear"), ("sensor_index", "2")],
    );
    num(rear, "temperature_c", 352.0 * 0.1);
    missing(rear, "humidity_pct");
    num(
        find(&s, "environment", &[("sensor", "Rack Front")]),
        "humidity_pct",
        45.0,
    );

    // APC environment: InRow scalars, UIO probes (two-part index), fluid sensors
    let s = poll_one(addr, "apc-env", "apc-env", set).await;
    let c = find(&s, "cooling", &[]);
    num(c, "rack_inlet_c", 221.0 * 0.1);
    num(c, "supply_air_c", 180.0 * 0.1);
    num(c, "return_air_c", 345.0 * 0.1);
    // The InRow unit's own leak sensor (2 = leak) is a `leak` row like every other.
    let inrow_leak: Vec<&Sample> = s
        .iter()
        .filter(|x| &*x.series.measurement == "leak" && x.series.tags.get("sensor_index").is_none())
        .collect();
    assert_eq!(inrow_leak.len(), 1, "{}", describe(&s));
    assert_eq!(inrow_leak[0].field("leak"), Some(&FieldValue::Bool(true)));
    let cold = find(
        &s,
        "environment",
        &[("sensor_index", "1.1"), ("sensor", "Cold aisle")],
    );
    num(cold, "temperature_c", 21.0);
    num(cold, "humidity_pct", 44.0);
    state(cold, "alarm_status", 1, "normal");
    let hot = find(&s, "environment", &[("sensor_index", "2.1")]);
    missing(hot, "temperature_c"); // -1 = lost communication
    missing(hot, "humidity_pct");
    state(hot, "alarm_status", 3, "critical");
    // memFluidSensorStatusSensorState 2 none / 1 fluid: true = water.
    assert_eq!(
        find(&s, "leak", &[("sensor_index", "1")]).field("leak"),
        Some(&FieldValue::Bool(false))
    );
    assert_eq!(
        find(&s, "leak", &[("sensor_index", "2")]).field("leak"),
        Some(&FieldValue::Bool(true))
    );

    // ENTITY-SENSOR-MIB transform + entPhysicalName lookup
    let s = poll_one(addr, "entity-sensor", "entity-sensor-mib", set).await;
    assert_eq!(count(&s, "sensor"), 4);
    let t = find(
        &s,
        "sensor",
        &[
            ("ent_index", "1001"),
            ("sensor", "Inlet Temp"),
            ("sensor_type", "celsius"),
        ],
    );
    num(t, "value", 25.4);
    state(t, "oper_status", 1, "ok");
    assert_eq!(t.series.tags.get("units"), Some("celsius"));
    num(
        find(
            &s,
            "sensor",
            &[("sensor", "PSU1 12V"), ("sensor_type", "volts_dc")],
        ),
        "value",
        12.05,
    );
    num(
        find(
            &s,
            "sensor",
            &[("sensor", "PSU1 Power"), ("sensor_type", "watts")],
        ),
        "value",
        1530.0,
    );
    let leak = find(
        &s,
        "sensor",
        &[("sensor", "Leak Detector"), ("sensor_type", "truthvalue")],
    );
    // Unavailable: the value column's 0 is not a reading, so it is a gap.
    missing(leak, "value");
    state(leak, "oper_status", 2, "unavailable");

    // IF-MIB: tags from columns, status enums, counters → rates only from the second poll
    let t = target("if-mib", addr, "if-mib", "if-mib");
    let mut p = TargetPoller::new(&fast_cfg(), &t, set).unwrap();
    let first = p.poll().await;
    let e0 = find(
        &first,
        "interface",
        &[
            ("ifName", "eth0"),
            ("ifAlias", "uplink core-1"),
            ("ifindex", "1"),
        ],
    );
    num(e0, "speed_mbps", 10000.0);
    state(e0, "oper_status", 1, "up");
    missing(e0, "in_bps");
    let e1 = find(&first, "interface", &[("ifName", "eth1")]);
    assert_eq!(e1.series.tags.get("ifAlias"), None, "empty alias is no tag");
    state(e1, "admin_status", 2, "down");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = p.poll().await;
    let e0 = find(&second, "interface", &[("ifName", "eth0")]);
    num(e0, "in_bps", 0.0);
    num(e0, "in_errors_ps", 0.0);

    // Liebert GP environmental
    let s = poll_one(addr, "liebert-env", "liebert-env", set).await;
    let c = find(&s, "cooling", &[]);
    state(c, "system_state", 1, "on");
    num(c, "cooling_capacity_pct", 64.0);
    let t1 = find(&s, "cooling_temperature", &[("sensor", "1")]);
    num(t1, "temperature_c", 224.0 * 0.1);
    num(t1, "setpoint_c", 22.0);
    let t2 = find(&s, "cooling_temperature", &[("sensor", "2")]);
    missing(t2, "temperature_c"); // 2147483647 = not available
    num(t2, "high_threshold_c", 35.0);
    num(
        find(&s, "cooling_humidity", &[("sensor", "1")]),
        "humidity_pct",
        458.0 * 0.1,
    );
}

async fn check_poll_once(addr: &str, set: &ProfileSet) {
    let cfg = SnmpConfig {
        targets: vec![
            target("once-ups", addr, "ups-mib", "ups-mib"),
            // No profiles: auto-detected from sysObjectID 1.3.6.1.4.1.318.1.3.4.5.
            TargetConfig::v2c("once-pdu", addr, "apc-rpdu2"),
        ],
        ..fast_cfg()
    };
    let s = sitewatch::collect::snmp::poll_once(&cfg, set).await;
    assert!(up(&s, "once-ups") && up(&s, "once-pdu"), "{}", describe(&s));
    state(
        find(&s, "ups", &[("device", "once-ups")]),
        "battery_status",
        2,
        "normal",
    );
    assert_eq!(
        count(&s, "pdu_phase"),
        3,
        "auto-detected apc-rpdu2:\n{}",
        describe(&s)
    );
}

/// A lookup keyed by another column's value: phase rows get the name of their PDU module.
async fn check_index_lookup(addr: &str) {
    let text = r#"
name = "rpdu2-phase-lookup"
measurement = "pdu_phase"
[[table]]
oid = "1.3.6.1.4.1.318.1.1.26.6.3.1"
[[table.column]]
oid = "1.3.6.1.4.1.318.1.1.26.6.3.1.3"
tag = "phase"
[[table.column]]
oid = "1.3.6.1.4.1.318.1.1.26.6.3.1.2"
tag = "module"
[[table.column]]
oid = "1.3.6.1.4.1.318.1.1.26.6.3.1.5"
field = "current_a"
scale = 0.1
[[table.lookup]]
oid = "1.3.6.1.4.1.318.1.1.26.4.3.1.3"
tag = "pdu_name"
index_from = "module"
"#;
    let mut set = ProfileSet::default();
    set.insert(parse_profile(Path::new("lookup.toml"), text).unwrap())
        .unwrap();
    let s = poll_one(addr, "apc-rpdu2", "rpdu2-phase-lookup", &set).await;
    let p2 = find(
        &s,
        "pdu_phase",
        &[("phase", "2"), ("module", "1"), ("pdu_name", "RackPDU-R1")],
    );
    num(p2, "current_a", 61.0 * 0.1);
}

async fn check_dead_target_keeps_schedule(addr: &str, set: &ProfileSet) {
    // A "device" that swallows requests: a bound UDP socket nobody reads.
    let blackhole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = blackhole.local_addr().unwrap().to_string();
    let mut dead = target("dead", &dead_addr, "public", "ups-mib");
    // Its poll (2 × 0.8 s) outlasts its 1 s interval: it must skip, not overlap or stall others.
    dead.timeout = Some(Duration::from_millis(800));
    let cfg = SnmpConfig {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        retries: 1,
        targets: vec![
            target("live-a", addr, "ups-mib", "ups-mib"),
            target("live-b", addr, "apc-ups", "apc-ups"),
            dead,
        ],
        ..SnmpConfig::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(cfg, set.clone(), tx, shutdown.clone()));
    let mut samples = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4600);
    while let Ok(Some(b)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        samples.extend(b.samples);
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run() stops promptly on shutdown")
        .unwrap();

    for live in ["live-a", "live-b"] {
        let mut polls: Vec<i64> = samples
            .iter()
            .filter(|s| {
                &*s.series.measurement == POLL_MEASUREMENT
                    && s.series.tags.get("device") == Some(live)
            })
            .map(|s| {
                assert_eq!(s.field("up"), Some(&FieldValue::Bool(true)), "{live}");
                s.timestamp_ns
            })
            .collect();
        polls.sort();
        assert!(
            polls.len() >= 4,
            "{live} polled {} times in 4.6 s",
            polls.len()
        );
        for w in polls.windows(2) {
            let gap = (w[1] - w[0]) as f64 / 1e9;
            assert!(
                (0.8..1.35).contains(&gap),
                "{live} poll gap {gap} s: schedule disturbed"
            );
        }
    }
    let dead: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            &*s.series.measurement == POLL_MEASUREMENT
                && s.series.tags.get("device") == Some("dead")
        })
        .collect();
    assert!(!dead.is_empty(), "dead target yields a poll sample");
    for d in &dead {
        assert_eq!(d.field("up"), Some(&FieldValue::Bool(false)));
        match d.field("error") {
            Some(FieldValue::Str(e)) => assert!(e.contains("no response"), "{e}"),
            other => panic!("dead error field: {other:?}"),
        }
    }
    assert!(
        dead.len() <= 3,
        "a 1.6 s poll on a 1 s interval cannot run more than 3 times in 4.6 s: {}",
        dead.len()
    );
}

/// snmpsim's numeric variation runs ifInOctets at 1e9 counts/s, wrapping every ~4.3 s; five
/// intervals of ~1 s therefore contain at least one wrap, and every rate must still be right.
async fn check_wrapping_counter(addr: &str) {
    let text = r#"
name = "wrap-test"
measurement = "wrapif"
[[table]]
oid = "1.3.6.1.2.1.2.2.1"
[[table.column]]
oid = "1.3.6.1.2.1.2.2.1.10"
field = "in_bps"
type = "counter"
scale = 8.0
"#;
    let mut set = ProfileSet::default();
    set.insert(parse_profile(Path::new("wrap.toml"), text).unwrap())
        .unwrap();
    let t = target("wrap", addr, "wrap", "wrap-test");
    let mut p = TargetPoller::new(&fast_cfg(), &t, &set).unwrap();
    let mut rates = Vec::new();
    for i in 0..6 {
        let s = p.poll().await;
        assert!(up(&s, "wrap"), "{}", describe(&s));
        if i == 0 {
            // A counter's first reading has no rate, and a row without fields is not written.
            assert_eq!(count(&s, "wrapif"), 0, "first poll cannot have a rate");
            tokio::time::sleep(Duration::from_millis(1000)).await;
            continue;
        }
        let row = find(&s, "wrapif", &[]);
        match (i, row.field("in_bps")) {
            (_, Some(FieldValue::Float(r))) => rates.push(*r),
            (_, other) => panic!("poll {i}: no rate ({other:?}); a wrap was taken for a reset?"),
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    for r in &rates {
        let rel = (r - 8e9).abs() / 8e9;
        assert!(rel < 0.05, "rate {r} b/s is not 8e9 ± 5%: {rates:?}");
    }
}

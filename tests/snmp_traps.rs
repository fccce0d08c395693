//! SNMP trap/inform listener against Net-SNMP's own senders (`snmptrap`, `snmpinform`):
//! v1 enterprise traps, v2c traps with varbinds, informs that must be answered, wrong
//! communities, and a trap turned into an alarm by the rules engine. Plus a burst of 2,000
//! traps through the real binary, counted in `/metrics` and in InfluxDB.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use sitewatch::collect::snmp::config::{AuthProtocol, PrivProtocol, SecurityLevel};
use sitewatch::collect::snmp::trap::TrapUser;
use sitewatch::collect::snmp::{
    run, SnmpConfig, TargetConfig, TrapConfig, TrapError, TrapListener, TRAPS_MEASUREMENT,
};
use sitewatch::config::Secret;
use sitewatch::model::{EventState, FieldValue, Sample, Severity};
use sitewatch::pipeline::BatchReceiver;
use sitewatch::rules::{parse_rules, Engine, RuleSet};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use common::influx::Influxd;
use common::sitewatch::Sitewatch;
use common::{free_udp_port, require_binary};

const COMMUNITY: &str = "trap-ok";
const V3_USER: &str = "trapuser";
const V3_AUTH: &str = "trap-auth-pass";
const V3_PRIV: &str = "trap-priv-pass";

/// The listener started through `collect::snmp::run`, as the service does.
struct Harness {
    port: u16,
    rx: BatchReceiver,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    tmp: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let port = free_udp_port();
        // A target at the trap source address, so traps get its name as `device`. Its poll
        // interval is an hour and its stable start offset 1,245 s: no poll sample can show
        // up while these tests run (they assert that nothing but the expected traps arrive).
        let mut ups = TargetConfig::v2c("ups-lab", "127.0.0.1:1", "unused");
        ups.interval = Some(Duration::from_secs(3600));
        let cfg = SnmpConfig {
            targets: vec![ups],
            traps: Some(TrapConfig {
                listen: ([127, 0, 0, 1], port).into(),
                communities: vec![
                    Secret::Inline("other".into()),
                    Secret::Inline(COMMUNITY.into()),
                ],
                users: vec![TrapUser {
                    name: V3_USER.into(),
                    security_level: Some(SecurityLevel::AuthPriv),
                    auth_protocol: Some(AuthProtocol::Sha),
                    auth_password: Some(Secret::Inline(V3_AUTH.into())),
                    priv_protocol: Some(PrivProtocol::Aes),
                    priv_password: Some(Secret::Inline(V3_PRIV.into())),
                }],
                ..TrapConfig::default()
            }),
            ..SnmpConfig::default()
        };
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(cfg, Default::default(), tx, stop.clone()));
        let h = Harness {
            port,
            rx,
            stop,
            task,
            tmp: tempfile::tempdir().unwrap(),
        };
        // Wait until the port is taken, so the first trap is not sent into the void.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "trap listener did not bind 127.0.0.1:{port} within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h
    }

    fn agent(&self) -> String {
        format!("udp:127.0.0.1:{}", self.port)
    }

    /// Runs a Net-SNMP command with MIB loading off and its state files in a temp dir. Blocks
    /// this worker thread (snmpinform waits for its answer): tests use the multi-thread runtime
    /// so the listener keeps running on the other worker.
    fn net_snmp(&self, bin: &str, args: &[&str]) -> Output {
        let path = require_binary(bin, "snmp");
        net_snmp_cmd(&path, self.tmp.path(), args)
    }

    /// Next trap sample, or panic after `timeout`.
    async fn next_trap(&mut self, timeout: Duration) -> Sample {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let batch = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("a trap sample within the timeout")
                .expect("sample channel open");
            if let Some(s) = batch
                .samples
                .into_iter()
                .find(|s| s.series.measurement.as_ref() == TRAPS_MEASUREMENT)
            {
                return s;
            }
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("SNMP run stops on cancel")
            .unwrap();
    }
}

fn net_snmp_cmd(bin: &Path, state_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("MIBS", "")
        .env("MIBDIRS", state_dir)
        .env("SNMP_PERSISTENT_DIR", state_dir)
        .env("HOME", state_dir)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn text(s: &Sample, field: &str) -> String {
    match s.field(field) {
        Some(FieldValue::Str(v)) => v.to_string(),
        other => panic!("field {field} is {other:?} in {s:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_apc_enterprise_trap() {
    let mut h = Harness::start().await;
    let out = h.net_snmp(
        "snmptrap",
        &[
            "-v",
            "1",
            "-c",
            COMMUNITY,
            &h.agent(),
            "1.3.6.1.4.1.318",
            "127.0.0.1",
            "6",
            "5",
            "4200",
            "1.3.6.1.4.1.318.2.3.10.0",
            "s",
            "UPS: On battery power in response to an input power problem.",
        ],
    );
    assert_ok(&out, "snmptrap v1");
    let s = h.next_trap(Duration::from_secs(5)).await;
    let tags = &s.series.tags;
    assert_eq!(tags.get("trap_oid"), Some("1.3.6.1.4.1.318.0.5"), "{s:?}");
    assert_eq!(tags.get("trap_name"), Some("upsOnBattery"));
    assert_eq!(tags.get("source"), Some("127.0.0.1"));
    assert_eq!(tags.get("device"), Some("ups-lab"));
    assert_eq!(text(&s, "event"), "upsOnBattery");
    assert_eq!(s.field("uptime_s"), Some(&FieldValue::Float(42.0)));
    assert_eq!(s.field("count"), Some(&FieldValue::Int(1)));
    assert!(
        text(&s, "varbinds").contains("1.3.6.1.4.1.318.2.3.10.0=\"UPS: On battery power"),
        "{s:?}"
    );
    let age_ns = sitewatch::model::now_ns() - s.timestamp_ns;
    assert!(
        (0..10_000_000_000).contains(&age_ns),
        "receive time: {age_ns} ns ago"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2c_ups_mib_trap_with_varbinds_and_wrong_community() {
    let mut h = Harness::start().await;
    // Rejected first: if it were accepted it would be the first sample received.
    let out = h.net_snmp(
        "snmptrap",
        &[
            "-v",
            "2c",
            "-c",
            "wrong",
            &h.agent(),
            "",
            "1.3.6.1.6.3.1.1.5.1",
        ],
    );
    assert_ok(&out, "snmptrap v2c (wrong community)");
    let out = h.net_snmp(
        "snmptrap",
        &[
            "-v",
            "2c",
            "-c",
            COMMUNITY,
            &h.agent(),
            "12345",
            "1.3.6.1.2.1.33.2.1",
            "1.3.6.1.2.1.33.1.2.2.0",
            "i",
            "30",
            "1.3.6.1.2.1.33.1.2.3.0",
            "i",
            "42",
            "1.3.6.1.2.1.33.1.2.4.0",
            "i",
            "97",
        ],
    );
    assert_ok(&out, "snmptrap v2c");
    let s = h.next_trap(Duration::from_secs(5)).await;
    assert_eq!(
        s.series.tags.get("trap_name"),
        Some("upsTrapOnBattery"),
        "{s:?}"
    );
    assert_eq!(s.series.tags.get("trap_oid"), Some("1.3.6.1.2.1.33.2.1"));
    assert_eq!(s.series.tags.get("device"), Some("ups-lab"));
    assert_eq!(s.field("uptime_s"), Some(&FieldValue::Float(123.45)));
    assert_eq!(
        text(&s, "varbinds"),
        "1.3.6.1.2.1.33.1.2.2.0=30; 1.3.6.1.2.1.33.1.2.3.0=42; 1.3.6.1.2.1.33.1.2.4.0=97"
    );
    // Nothing else arrived: the wrong-community coldStart was dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        h.rx.try_recv().is_err(),
        "only the accepted trap is emitted"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inform_is_answered_and_wrong_community_is_not() {
    let mut h = Harness::start().await;
    // snmpinform waits for the Response and exits non-zero without one.
    let out = h.net_snmp(
        "snmpinform",
        &[
            "-v",
            "2c",
            "-c",
            COMMUNITY,
            "-t",
            "3",
            "-r",
            "0",
            &h.agent(),
            "",
            "1.3.6.1.6.3.1.1.5.3",
            "1.3.6.1.2.1.2.2.1.1.7",
            "i",
            "7",
        ],
    );
    assert_ok(&out, "snmpinform (answered)");
    let s = h.next_trap(Duration::from_secs(5)).await;
    assert_eq!(s.series.tags.get("trap_name"), Some("linkDown"), "{s:?}");
    assert_eq!(text(&s, "varbinds"), "1.3.6.1.2.1.2.2.1.1.7=7");

    let out = h.net_snmp(
        "snmpinform",
        &[
            "-v",
            "2c",
            "-c",
            "wrong",
            "-t",
            "1",
            "-r",
            "0",
            &h.agent(),
            "",
            "1.3.6.1.6.3.1.1.5.4",
        ],
    );
    assert!(
        !out.status.success(),
        "an inform with a wrong community must not be answered: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(h.rx.try_recv().is_err(), "rejected inform emitted nothing");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_fires_a_rule() {
    let mut h = Harness::start().await;
    let rules = parse_rules(
        r#"
[[rule]]
name = "ups_on_battery_trap"
measurement = "snmp_traps"
field = "event"
match = { device = "ups-lab" }
equals = { critical = "upsTrapOnBattery" }
message = "{device}: UPS on battery (trap)"

[[rule]]
name = "apc_on_battery_trap"
measurement = "snmp_traps"
field = "event"
match = { device = "*" }
equals = { critical = "upsOnBattery" }
message = "{device}: APC UPS on battery"
"#,
        Path::new("trap-rules.toml"),
    )
    .expect("rule parses");
    let mut engine = Engine::new(RuleSet::new(rules).unwrap());
    let out = h.net_snmp(
        "snmptrap",
        &[
            "-v",
            "2c",
            "-c",
            COMMUNITY,
            &h.agent(),
            "",
            "1.3.6.1.2.1.33.2.1",
        ],
    );
    assert_ok(&out, "snmptrap v2c");
    let s = h.next_trap(Duration::from_secs(5)).await;
    let mut events = Vec::new();
    engine.observe(&s, &mut events);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.rule.as_ref(), "ups_on_battery_trap");
    assert_eq!(e.severity, Severity::Critical);
    assert_eq!(e.state, EventState::Firing);
    assert_eq!(e.message, "ups-lab: UPS on battery (trap)");

    // APC: upsOnBattery fires, powerRestored resolves it (the listener writes the restore onto
    // the on-battery series).
    let apc = |h: &Harness, specific: &str| {
        let out = h.net_snmp(
            "snmptrap",
            &[
                "-v",
                "1",
                "-c",
                COMMUNITY,
                &h.agent(),
                "1.3.6.1.4.1.318",
                "127.0.0.1",
                "6",
                specific,
                "",
            ],
        );
        assert_ok(&out, "snmptrap v1 APC");
    };
    apc(&h, "5");
    let mut events = Vec::new();
    engine.observe(&h.next_trap(Duration::from_secs(5)).await, &mut events);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].rule.as_ref(), events[0].state),
        ("apc_on_battery_trap", EventState::Firing)
    );
    apc(&h, "9");
    let mut samples = Vec::new();
    while samples.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(5), h.rx.recv())
            .await
            .expect("powerRestored samples")
            .unwrap();
        samples.extend(batch.samples);
    }
    let mut events = Vec::new();
    for s in &samples {
        engine.observe(s, &mut events);
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].rule.as_ref(), events[0].state),
        ("apc_on_battery_trap", EventState::Resolved)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_failure_is_a_clear_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = TrapConfig {
        listen: taken.local_addr().unwrap(),
        communities: vec![Secret::Inline(COMMUNITY.into())],
        ..TrapConfig::default()
    };
    let err = match TrapListener::bind(&cfg, &[]).await {
        Ok(_) => panic!("binding a taken port must fail"),
        Err(e) => e,
    };
    assert!(matches!(err, TrapError::Bind { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&taken.local_addr().unwrap().to_string()) && msg.contains("already uses"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_auth_priv_trap_and_bad_credentials() {
    let mut h = Harness::start().await;
    let v3 = |h: &Harness, user: &str, auth: &str, privp: &str, trap: &str| {
        h.net_snmp(
            "snmptrap",
            &[
                "-v",
                "3",
                "-u",
                user,
                "-l",
                "authPriv",
                "-a",
                "SHA",
                "-A",
                auth,
                "-x",
                "AES",
                "-X",
                privp,
                &h.agent(),
                "",
                trap,
                "1.3.6.1.2.1.33.1.2.3.0",
                "i",
                "17",
            ],
        )
    };
    // Rejected first (wrong priv password, unknown user): only the good one may come out.
    assert_ok(
        &v3(
            &h,
            V3_USER,
            V3_AUTH,
            "wrong-priv-pass",
            "1.3.6.1.6.3.1.1.5.1",
        ),
        "snmptrap v3 (bad priv)",
    );
    assert_ok(
        &v3(
            &h,
            V3_USER,
            "wrong-auth-pass",
            V3_PRIV,
            "1.3.6.1.6.3.1.1.5.1",
        ),
        "snmptrap v3 (bad auth)",
    );
    assert_ok(
        &v3(&h, "nobody", V3_AUTH, V3_PRIV, "1.3.6.1.6.3.1.1.5.1"),
        "snmptrap v3 (unknown user)",
    );
    assert_ok(
        &v3(&h, V3_USER, V3_AUTH, V3_PRIV, "1.3.6.1.2.1.33.2.1"),
        "snmptrap v3",
    );
    let s = h.next_trap(Duration::from_secs(5)).await;
    assert_eq!(
        s.series.tags.get("trap_name"),
        Some("upsTrapOnBattery"),
        "{s:?}"
    );
    assert_eq!(text(&s, "varbinds"), "1.3.6.1.2.1.33.1.2.3.0=17");
    // The cached engine state serves the next trap from the same sender.
    assert_ok(
        &v3(&h, V3_USER, V3_AUTH, V3_PRIV, "1.3.6.1.6.3.1.1.5.4"),
        "snmptrap v3 (again)",
    );
    let s = h.next_trap(Duration::from_secs(5)).await;
    assert_eq!(s.series.tags.get("trap_name"), Some("linkUp"), "{s:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        h.rx.try_recv().is_err(),
        "rejected v3 traps emitted nothing"
    );
    h.stop().await;
}

/// BER tag-length-value (definite length, up to 64 KiB of content).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 128 {
        v.push(n as u8);
    } else if n < 256 {
        v.extend([0x81, n as u8]);
    } else {
        v.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

/// BER INTEGER content of a non-negative number.
fn ber_uint(n: u64) -> Vec<u8> {
    let mut b: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|&x| x == 0)
        .collect();
    if b.first().is_none_or(|&x| x & 0x80 != 0) {
        b.insert(0, 0);
    }
    b
}

/// BER OBJECT IDENTIFIER content (arcs after the first two in base 128).
fn ber_oid(arcs: &[u32]) -> Vec<u8> {
    let mut out = vec![(arcs[0] * 40 + arcs[1]) as u8];
    for &a in &arcs[2..] {
        let mut chunk = vec![(a & 0x7f) as u8];
        let mut rest = a >> 7;
        while rest > 0 {
            chunk.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        out.extend(chunk.into_iter().rev());
    }
    out
}

/// An SNMPv2c Trap-PDU, as a UPS would send it: sysUpTime.0, snmpTrapOID.0 and one varbind.
/// Trap `i` has its own trap OID (enterprise 99999, `.0.<i+1>`), so each one is its own
/// series in InfluxDB and every one can be counted there.
fn burst_trap(community: &str, i: u32) -> Vec<u8> {
    let varbind = |oid: &[u32], value: Vec<u8>| {
        let mut vb = tlv(0x06, &ber_oid(oid));
        vb.extend(value);
        tlv(0x30, &vb)
    };
    let mut vbs = varbind(
        &[1, 3, 6, 1, 2, 1, 1, 3, 0],
        tlv(0x43, &ber_uint(u64::from(i) * 100)),
    );
    vbs.extend(varbind(
        &[1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0],
        tlv(0x06, &ber_oid(&[1, 3, 6, 1, 4, 1, 99999, 0, i + 1])),
    ));
    vbs.extend(varbind(
        &[1, 3, 6, 1, 4, 1, 99999, 1, 0],
        tlv(0x02, &ber_uint(u64::from(i))),
    ));
    let mut pdu = tlv(0x02, &ber_uint(u64::from(i) + 1)); // request-id
    pdu.extend(tlv(0x02, &[0])); // error-status
    pdu.extend(tlv(0x02, &[0])); // error-index
    pdu.extend(tlv(0x30, &vbs));
    let mut msg = tlv(0x02, &[1]); // version: 2c
    msg.extend(tlv(0x04, community.as_bytes()));
    msg.extend(tlv(0xa7, &pdu));
    tlv(0x30, &msg)
}

/// Sum of the `drops` column of the UDP sockets bound to `port` (the kernel's own count,
/// independent of sitewatch's metric).
fn proc_udp_drops(port: u16) -> u64 {
    let want = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    (cols.len() > 12 && cols[1].ends_with(&want))
                        .then(|| cols[12].parse::<u64>().ok())
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// 2,000 v2c traps sent back to back from one socket (a power event on a whole feed) reach
/// the real binary whole: every one is counted in `sitewatch_snmp_traps_received_total` and
/// stored in InfluxDB, and `sitewatch_snmp_trap_kernel_drops_total` is in `/metrics` at 0
/// (as is the kernel's own count in /proc/net/udp).
#[test]
fn burst_of_2000_traps_is_received_whole() {
    const N: u32 = 2000;
    const DB: &str = "trap_burst";
    let influx = Influxd::start();
    influx.create_database(DB);
    let port = free_udp_port();
    let body = format!(
        r#"
[influx]
url = "{url}"
database = "{DB}"
flush_interval = "200ms"

[snmp]
profiles_dir = "{profiles}"

[snmp.traps]
listen = "127.0.0.1:{port}"
communities = ["{COMMUNITY}"]
receive_buffer = "4MiB"
"#,
        url = influx.url(),
        profiles = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mappings/snmp")
            .display(),
    );
    let mut sw = Sitewatch::start(&body, "info", &[]);
    common::eventually(Duration::from_secs(10), "trap listener up", || {
        (sw.metric("sitewatch_snmp_trap_listener_up", &[]) == 1.0).then_some(())
    });
    let granted = sw.metric("sitewatch_snmp_trap_receive_buffer_bytes", &[]);

    let traps: Vec<Vec<u8>> = (0..N).map(|i| burst_trap(COMMUNITY, i)).collect();
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    for t in &traps {
        sender.send_to(t, ("127.0.0.1", port)).expect("send trap");
    }
    let send_time = started.elapsed();

    let received = || sw.metric("sitewatch_snmp_traps_received_total", &["version=\"2c\""]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while received() < f64::from(N) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The listener reads the kernel's drop count 1 s after a burst.
    std::thread::sleep(Duration::from_millis(2500));
    let metrics = sw.metrics();
    let drops_line = metrics
        .lines()
        .find(|l| l.starts_with("sitewatch_snmp_trap_kernel_drops_total "));
    let got = received();
    let kernel = proc_udp_drops(port);
    eprintln!(
        "trap burst: sent {N} in {send_time:?}; received {got}; kernel drops: metric {drops_line:?}, /proc/net/udp {kernel}; receive buffer granted {granted} bytes"
    );
    assert_eq!(
        got,
        f64::from(N),
        "traps received of {N} (kernel drops in /proc/net/udp: {kernel}; receive buffer granted: {granted} bytes; if that is less than 8 MiB, net.core.rmem_max caps it)\nlog:\n{}",
        sw.log()
    );
    assert_eq!(
        drops_line,
        Some("sitewatch_snmp_trap_kernel_drops_total 0"),
        "kernel drop counter in /metrics:\n{metrics}"
    );
    assert!(
        metrics.contains("# HELP sitewatch_snmp_trap_kernel_drops_total"),
        "{metrics}"
    );
    assert_eq!(kernel, 0, "the kernel's own count of dropped datagrams");

    // And every one is stored: one series per trap OID.
    let stored = common::eventually(Duration::from_secs(20), "2,000 traps in InfluxDB", || {
        let rows = influx.rows(DB, "SELECT count(\"count\") FROM snmp_traps");
        let n = rows
            .first()
            .and_then(|r| r.get(1))
            .and_then(|v| v.as_u64())?;
        (n >= u64::from(N)).then_some(n)
    });
    assert_eq!(stored, u64::from(N));
    let status = sw.terminate().expect("sitewatch was running");
    assert!(status.success(), "exit {status}; log:\n{}", sw.log());
}

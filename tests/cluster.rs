//! Cluster mode against real services: three `sitewatch run` members coordinated by a
//! private etcd share SNMP targets (names pointing at one snmpd), write to one InfluxDB with
//! a `member` tag, and each reaches etcd through its own cuttable TCP proxy.
//!
//! `three_members_share_fail_over_rebalance_and_fence` (default suite, about a minute):
//! every target polled by exactly its assigned member; `kill -9` of one: its targets polled
//! by the others within failover_after + one interval (the takeover time is printed); it
//! returns: its targets move back with at most one interval of double polling; a member cut
//! off from etcd releases its targets before any other member polls them.
//!
//! `takeover_300_targets_10_kills` (#[ignore], docs/BENCHMARKS.md): the median and max
//! takeover over ten kills with 300 targets.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::alertmanager::WebhookReceiver;
use common::etcd::Etcd;
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;
use common::snmp::{Snmpd, SNMPD_COMMUNITY};
use common::tcp_proxy::TcpProxy;
use common::{eventually, sitewatch_bin};
use sitewatch::cluster::assignment::{owner, snmp_unit};

const FAILOVER: Duration = Duration::from_secs(3);
const INTERVAL: Duration = Duration::from_secs(1);
const DB: &str = "cluster";
const TRAP_COMMUNITY: &str = "sitewatch-traps";

/// One SNMPv2c trap (UPS-MIB upsTrapOnBattery) to 127.0.0.1:`port` with Net-SNMP's snmptrap.
fn send_trap(port: u16) {
    let bin = common::require_binary("snmptrap", "snmp");
    let state = tempfile::tempdir().expect("temp dir for snmptrap");
    let out = Command::new(bin)
        .args([
            "-v",
            "2c",
            "-c",
            TRAP_COMMUNITY,
            &format!("127.0.0.1:{port}"),
            "12345",
        ])
        .args(["1.3.6.1.2.1.33.2.1", "1.3.6.1.2.1.33.1.2.2.0", "i", "30"])
        .env("MIBS", "")
        .env("MIBDIRS", state.path())
        .env("SNMP_PERSISTENT_DIR", state.path())
        .env("HOME", state.path())
        .output()
        .expect("run snmptrap");
    assert!(
        out.status.success(),
        "snmptrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tests here each run three members (and their devices) against one etcd: run one at a
/// time, or on two cores their takeover times measure each other's load.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i64
}

struct Site {
    etcd: Etcd,
    _agent: Snmpd,
    influx: Influxd,
    targets: Vec<String>,
    members: Vec<Member>,
    /// MQTT partitions, rules and a webhook, for the tests of state moving with the work.
    alarms: Option<Alarms>,
}

/// What the members collect besides SNMP: `PARTITIONS` MQTT partitions (`site/hall-N/#`) of
/// line protocol, judged by one rule with a stale check, alerting one webhook.
struct Alarms {
    broker_port: u16,
    rules_file: std::path::PathBuf,
    webhook_url: String,
    _dir: tempfile::TempDir,
}

const PARTITIONS: usize = 6;
const RULES: &str = r#"
[[rule]]
name = "hall_hot"
measurement = "hall_temp"
field = "value"
match = { hall = "*", rack = "*" }
above = { critical = 30.0 }
message = "{hall}/{rack} at {value}"
stale_after = "8s"
"#;

struct Member {
    name: String,
    proxy: TcpProxy,
    trap_port: u16,
    sw: Sitewatch,
}

impl Site {
    fn start(targets: usize, members: usize) -> Site {
        Self::start_with(targets, members, None)
    }

    fn start_with(targets: usize, members: usize, alarms: Option<Alarms>) -> Site {
        let etcd = Etcd::start();
        let agent = Snmpd::start();
        let influx = Influxd::start();
        influx.create_database(DB);
        let targets: Vec<String> = (1..=targets).map(|i| format!("pdu-{i:03}")).collect();
        let mut site = Site {
            etcd,
            _agent: agent,
            influx,
            targets,
            members: Vec::new(),
            alarms,
        };
        for i in 1..=members {
            let m = site.start_member(&format!("m{i}"));
            site.members.push(m);
        }
        site
    }

    fn start_member(&self, name: &str) -> Member {
        let proxy = TcpProxy::start(self.etcd.client_port);
        let trap_port = common::free_udp_port();
        let profiles_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/snmp");
        let mut targets = String::new();
        for t in &self.targets {
            targets.push_str(&format!(
                "[[snmp.target]]\nname = \"{t}\"\naddress = \"{}\"\ncommunity = \"{SNMPD_COMMUNITY}\"\nprofiles = [\"if-mib-basic\"]\ntags = {{ member = \"{name}\" }}\n\n",
                self._agent.address()
            ));
        }
        // The same config for every member but its name, its metrics port and the `member`
        // tag that tells in InfluxDB who polled what: on its SNMP targets, and as a global tag
        // only without MQTT (there it would make every MQTT series a different series on
        // each member, whose state could not move).
        let body = format!(
            r#"
[cluster]
etcd = ["http://127.0.0.1:{proxy}"]
name = "{name}"
failover_after = "{failover}s"
# The partition below lasts less than this: the fenced member must stay released.
fail_static_after = "60s"

[influx]
url = "{url}"
database = "{DB}"
flush_interval = "200ms"

[snmp]
profiles_dir = "{profiles_dir}"
interval = "{interval}s"
timeout = "2s"
concurrency = 64

[snmp.traps]
listen = "127.0.0.1:{trap_port}"
communities = ["{TRAP_COMMUNITY}"]

{targets}"#,
            proxy = proxy.port,
            failover = FAILOVER.as_secs(),
            url = self.influx.url(),
            interval = INTERVAL.as_secs(),
        );
        let (body, service) = match &self.alarms {
            Some(a) => (
                format!("{body}\n{}", a.config()),
                "log_format = \"json\"".to_string(),
            ),
            // Traps from an address no target has carry no target tags: the member is a
            // global tag there.
            None => (
                body,
                format!("log_format = \"json\"\nglobal_tags = {{ member = \"{name}\" }}"),
            ),
        };
        let sw = Sitewatch::start_with_service(&service, &body, "info", &[]);
        Member {
            name: name.to_string(),
            proxy,
            trap_port,
            sw,
        }
    }

    fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .expect("member")
    }

    fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("member")
    }

    /// Every unit: the SNMP targets, and the MQTT partitions when the site has them.
    fn units(&self) -> Vec<String> {
        let mut units: Vec<String> = self.targets.iter().map(|t| snmp_unit(t)).collect();
        if self.alarms.is_some() {
            units.extend((1..=PARTITIONS).map(|h| format!("mqtt:hall-{h}")));
        }
        units
    }

    /// Waits until every running member sees `names` as the members and owns its share,
    /// every unit of it active (its rule state taken up).
    fn wait_settled(&self, names: &[&str], timeout: Duration) {
        let live: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let units = self.units();
        eventually(timeout, "cluster settled", || {
            for n in names {
                let m = self.member(n);
                let want = units.iter().filter(|u| owner(u, &live) == Some(n)).count() as f64;
                if m.sw.metric("sitewatch_cluster_members", &[]) != names.len() as f64
                    || m.sw.metric("sitewatch_cluster_owned_units", &[]) != want
                    || m.sw.metric("sitewatch_cluster_active_units", &[]) != want
                    || m.sw.metric("sitewatch_cluster_lease_ok", &[]) != 1.0
                {
                    return None;
                }
            }
            Some(())
        });
    }

    /// Poll times (ns) per (device, member) of `snmp_poll` rows in `[from, to)`.
    fn polls(&self, from: i64, to: i64) -> BTreeMap<(String, String), Vec<i64>> {
        let q = format!(
            "SELECT \"up\" FROM snmp_poll WHERE time >= {from} AND time < {to} GROUP BY \"device\", \"member\""
        );
        let v = self.influx.query_epoch_ns(DB, &q);
        let mut out = BTreeMap::new();
        for s in v["results"][0]["series"].as_array().into_iter().flatten() {
            let device = s["tags"]["device"].as_str().unwrap_or_default().to_string();
            let member = s["tags"]["member"].as_str().unwrap_or_default().to_string();
            let times: Vec<i64> = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r[0].as_i64())
                .collect();
            out.insert((device, member), times);
        }
        out
    }

    /// Which members polled each device in `[from, to)`.
    fn pollers(&self, from: i64, to: i64) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (d, m) in self.polls(from, to).into_keys() {
            out.entry(d).or_default().insert(m);
        }
        out
    }

    fn owned_by(&self, member: &str, live: &[&str]) -> Vec<String> {
        let live: Vec<String> = live.iter().map(|n| n.to_string()).collect();
        self.targets
            .iter()
            .filter(|t| owner(&snmp_unit(t), &live) == Some(member))
            .cloned()
            .collect()
    }

    /// After `member` returned at `returned_at`: every target of its share is polled by it
    /// again, none by another member more than one interval after it took the target back,
    /// and none goes without a poll for more than two intervals while it moves.
    fn assert_moved_back(&self, member: &str, all: &[&str], returned_at: i64) {
        // From two intervals before the return: the old owners' last polls are in it.
        let after = self.polls(returned_at - 2 * INTERVAL.as_nanos() as i64, now_ns());
        let (mut worst_gap, mut worst_overlap, mut moved) = (i64::MIN, i64::MIN, 0);
        for t in self.owned_by(member, all) {
            let back = after
                .get(&(t.clone(), member.to_string()))
                .and_then(|p| p.first().copied())
                .unwrap_or_else(|| panic!("{t} not polled by {member} after its return"));
            for ((d, m), times) in &after {
                if d == &t && m != member {
                    let last = *times.last().expect("a series has points");
                    let overlap = last - back;
                    assert!(
                        overlap <= INTERVAL.as_nanos() as i64,
                        "{t}: polled by {m} {:.2}s after {member} took it back",
                        overlap as f64 / 1e9
                    );
                    let gap = back - last;
                    worst_gap = worst_gap.max(gap);
                    worst_overlap = worst_overlap.max(overlap);
                    moved += 1;
                    assert!(
                        gap <= 2 * INTERVAL.as_nanos() as i64,
                        "{t}: {:.2}s without a poll while it moved from {m} to {member}",
                        gap as f64 / 1e9
                    );
                }
            }
        }
        println!(
            "{moved} targets moved back to {member}: longest time between the old owner's last poll and {member}'s first {:.2}s; {}",
            worst_gap as f64 / 1e9,
            if worst_overlap > 0 {
                format!("polled by both for at most {:.2}s", worst_overlap as f64 / 1e9)
            } else {
                "never polled by both".to_string()
            }
        );
    }

    /// Kills `victim` with SIGKILL and returns the takeover time: from the kill to the first
    /// poll by another member, over the victim's targets, the worst one.
    fn kill_and_measure(&mut self, victim: &str, live: &[&str]) -> Duration {
        let moved = self.owned_by(victim, live);
        assert!(!moved.is_empty(), "{victim} owns no target");
        let killed_at = now_ns();
        self.member_mut(victim).sw.kill9();
        let deadline = FAILOVER + INTERVAL + Duration::from_secs(10);
        eventually(
            deadline,
            "the dead member's targets polled by others",
            || {
                let polls = self.polls(killed_at, i64::MAX);
                let worst = moved
                    .iter()
                    .map(|t| first_poll_by_others(&polls, t, victim))
                    .collect::<Option<Vec<i64>>>()?
                    .into_iter()
                    .max()?;
                Some(Duration::from_nanos((worst - killed_at) as u64))
            },
        )
    }
}

impl Alarms {
    fn new(broker_port: u16, webhook_url: String) -> Alarms {
        let dir = tempfile::tempdir().expect("temp dir for rules");
        let rules_file = dir.path().join("rules.toml");
        std::fs::write(&rules_file, RULES).expect("write rules");
        Alarms {
            broker_port,
            rules_file,
            webhook_url,
            _dir: dir,
        }
    }

    fn config(&self) -> String {
        let mut partitions = String::new();
        for h in 1..=PARTITIONS {
            partitions.push_str(&format!(
                "[[mqtt.partition]]\nname = \"hall-{h}\"\ntopics = [\"site/hall-{h}/#\"]\n\n"
            ));
        }
        format!(
            r#"
[mqtt]
host = "127.0.0.1"
port = {port}
# The same on every member: each partition's session is `<client_id>-<partition>`, resumed
# by whichever member owns the partition.
client_id = "sw-cluster"

[[mqtt.subscription]]
topic = "site/#"
format = "line_protocol"
qos = 1

{partitions}
[rules]
files = ["{rules}"]

[notify]
[[notify.receiver]]
name = "noc"
kind = "webhook"
url = "{hook}"
"#,
            port = self.broker_port,
            rules = self.rules_file.display(),
            hook = self.webhook_url,
        )
    }
}

/// One `mosquitto_pub -l` per hall publishing QoS 1 line protocol at a steady pace until
/// stopped; hall 3 runs hot (35 °C), the others at 22 °C. Every message has its own
/// timestamp, so InfluxDB holds one point per message however often it is delivered.
struct Publishers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<usize>>,
}

const HOT_HALL: usize = 3;

impl Publishers {
    fn start(broker_port: u16, every: Duration) -> Publishers {
        use std::io::Write;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bin = common::require_binary("mosquitto_pub", "mosquitto-clients");
        let threads = (1..=PARTITIONS)
            .map(|h| {
                let stop = stop.clone();
                let bin = bin.clone();
                std::thread::spawn(move || {
                    let mut child = Command::new(bin)
                        .args(["-h", "127.0.0.1", "-p", &broker_port.to_string()])
                        .args(["-t", &format!("site/hall-{h}/r1/temp"), "-q", "1", "-l"])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("start mosquitto_pub");
                    let mut stdin = child.stdin.take().expect("stdin");
                    let value = if h == HOT_HALL { 35.0 } else { 22.0 };
                    let mut sent = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        writeln!(
                            stdin,
                            "hall_temp,hall=hall-{h},rack=r1 value={value},seq={sent}i {}",
                            now_ns()
                        )
                        .expect("write to mosquitto_pub");
                        sent += 1;
                        std::thread::sleep(every);
                    }
                    drop(stdin);
                    let out = child.wait_with_output().expect("wait for mosquitto_pub");
                    assert!(
                        out.status.success(),
                        "mosquitto_pub hall-{h}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    sent
                })
            })
            .collect();
        Publishers { stop, threads }
    }

    /// Stops publishing; the messages each hall sent, every one acknowledged by the broker.
    fn finish(self) -> Vec<usize> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("publisher thread"))
            .collect()
    }
}

/// The first poll of `target` by a member other than `member`.
fn first_poll_by_others(
    polls: &BTreeMap<(String, String), Vec<i64>>,
    target: &str,
    member: &str,
) -> Option<i64> {
    polls
        .iter()
        .filter(|((d, m), _)| d == target && m != member)
        .filter_map(|(_, times)| times.first().copied())
        .min()
}

/// User + system CPU seconds of process `pid` (Linux /proc, 100 ticks per second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').expect("comm in stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// The JSON log lines whose message is `message`, stamped after `after` (ns).
fn log_fields(log: &str, message: &str, after: i64) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .filter(|v| stamp_of(v).is_some_and(|t| t > after))
        .collect()
}

/// The time of the first JSON log line whose message is `message`, after `after` (ns).
fn log_time(log: &str, message: &str, after: i64) -> Option<i64> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .filter_map(|v| stamp_of(&v))
        .find(|&t| t > after)
}

#[test]
fn three_members_share_fail_over_rebalance_and_fence() {
    let _serial = one_at_a_time();
    let mut site = Site::start(30, 3);
    let all = ["m1", "m2", "m3"];
    site.wait_settled(&all, Duration::from_secs(30));

    // 1. Every target polled, each by exactly the member the assignment names.
    let from = now_ns();
    std::thread::sleep(3 * INTERVAL);
    let to = now_ns();
    let pollers = site.pollers(from, to);
    for t in &site.targets {
        let want: BTreeSet<String> = all
            .iter()
            .filter(|m| site.owned_by(m, &all).contains(t))
            .map(|m| m.to_string())
            .collect();
        assert_eq!(
            pollers.get(t),
            Some(&want),
            "{t}: polled by {:?}, assigned to {want:?}",
            pollers.get(t)
        );
    }
    for m in &all {
        let not_owner = site
            .member(m)
            .sw
            .metric("sitewatch_snmp_polls_total", &["result=\"not_owner\""]);
        assert!(not_owner > 0.0, "{m} counts the polls it leaves to others");
    }

    // A trap sent to every member (duplicated destinations) is recorded once, by the owner
    // of its source: all targets share 127.0.0.1, so the source is the unit.
    for m in &all {
        send_trap(site.member(m).trap_port);
    }
    let trap_owner = owner("snmp-trap-source:127.0.0.1", &all.map(String::from))
        .expect("an owner")
        .to_string();
    let recorded = eventually(Duration::from_secs(10), "the trap recorded", || {
        let v = site.influx.query_epoch_ns(
            DB,
            "SELECT count(\"count\") FROM snmp_traps GROUP BY \"member\"",
        );
        let series = v["results"][0]["series"].as_array()?.clone();
        let dropped: f64 = all
            .iter()
            .map(|m| {
                site.member(m).sw.metric(
                    "sitewatch_snmp_traps_dropped_total",
                    &["reason=\"not_owner\""],
                )
            })
            .sum();
        (dropped == 2.0).then_some(series)
    });
    assert_eq!(
        recorded.len(),
        1,
        "one member recorded the trap: {recorded:?}"
    );
    assert_eq!(recorded[0]["tags"]["member"], trap_owner.as_str());
    assert_eq!(
        recorded[0]["values"][0][1], 1,
        "recorded once: {recorded:?}"
    );

    // A second member configured with a taken name does not register: it waits as a
    // standby, owning nothing, and the cluster is unchanged.
    let twin = site.start_member("m1");
    eventually(
        Duration::from_secs(10),
        "the twin refuses the taken name",
        || {
            twin.sw
                .log()
                .contains("is registered under another lease")
                .then_some(())
        },
    );
    assert_eq!(twin.sw.metric("sitewatch_cluster_owned_units", &[]), 0.0);
    assert_eq!(twin.sw.metric("sitewatch_cluster_lease_ok", &[]), 0.0);
    drop(twin);
    site.wait_settled(&all, Duration::from_secs(5));

    // `sitewatch cluster status` reads etcd and assigns like the members do.
    let out = Command::new(sitewatch_bin())
        .args(["cluster", "status", "--config"])
        .arg(&site.member("m1").sw.config)
        .output()
        .expect("run sitewatch cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cluster status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 member(s), 30 unit(s)"), "{text}");
    for m in &all {
        let n = site.owned_by(m, &all).len();
        assert!(text.contains(&format!("member {m} ")), "{text}");
        assert!(
            text.contains(&format!("owns {n}: ")),
            "{m} owns {n}: {text}"
        );
        assert!(
            text.contains(&format!(
                "snmp targets {n}, modbus devices 0, mqtt partitions 0"
            )),
            "{text}"
        );
    }

    // 2. kill -9 of m3: its targets polled by the others within failover_after + 1 interval.
    let takeover = site.kill_and_measure("m3", &all);
    println!(
        "takeover after kill -9 of m3 ({} of 30 targets, failover_after 3s, interval 1s): {:.2}s",
        site.owned_by("m3", &all).len(),
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= FAILOVER + INTERVAL,
        "takeover took {takeover:?}, more than failover_after + one interval"
    );
    let two = ["m1", "m2"];
    site.wait_settled(&two, Duration::from_secs(10));

    // 3. m3 returns: its targets move back; none is polled by two members for more than
    // one interval, and no target goes without a poll for more than two.
    let returned_at = now_ns();
    site.member_mut("m3").sw.launch();
    site.wait_settled(&all, Duration::from_secs(20));
    std::thread::sleep(2 * INTERVAL);
    site.assert_moved_back("m3", &all, returned_at);
    println!(
        "rebalance after m3 returned: {} targets back on m3",
        site.owned_by("m3", &all).len()
    );

    // 4. m2 cut off from etcd (its proxy refuses; SNMP and InfluxDB still reachable): it
    // releases its targets before anyone else polls them.
    let m2_targets = site.owned_by("m2", &all);
    let cut_at = now_ns();
    site.member("m2").proxy.cut();
    site.wait_settled(&["m1", "m3"], Duration::from_secs(15));
    std::thread::sleep(INTERVAL);
    let log = site.member("m2").sw.log();
    let released = log_time(&log, "cluster units released", cut_at)
        .unwrap_or_else(|| panic!("m2 logged no release after the cut; log:\n{log}"));
    let fenced = log_time(&log, "cluster fencing: the etcd lease was not renewed in time; releasing every unit now, before etcd expires the lease and the other members take them", cut_at);
    assert!(fenced.is_some(), "m2 warned about fencing; log:\n{log}");
    let polls = site.polls(cut_at, i64::MAX);
    let first_other = m2_targets
        .iter()
        .filter_map(|t| first_poll_by_others(&polls, t, "m2"))
        .min()
        .expect("m2's targets polled by the others after the cut");
    let last_m2 = m2_targets
        .iter()
        .filter_map(|t| {
            polls
                .get(&(t.clone(), "m2".to_string()))
                .and_then(|p| p.last().copied())
        })
        .max()
        .unwrap_or(cut_at);
    println!(
        "partition of m2: released {:.2}s after the cut, first poll by another member {:.2}s after the cut, m2's last poll {:.2}s after the cut",
        (released - cut_at) as f64 / 1e9,
        (first_other - cut_at) as f64 / 1e9,
        (last_m2 - cut_at) as f64 / 1e9
    );
    assert!(
        released < first_other,
        "m2 released at +{:.2}s, after another member polled its target at +{:.2}s",
        (released - cut_at) as f64 / 1e9,
        (first_other - cut_at) as f64 / 1e9
    );
    assert!(
        last_m2 < first_other,
        "m2 polled after another member took over"
    );
    assert_eq!(
        site.member("m2")
            .sw
            .metric("sitewatch_cluster_lease_ok", &[]),
        0.0
    );
    assert_eq!(
        site.member("m2")
            .sw
            .metric("sitewatch_cluster_owned_units", &[]),
        0.0
    );

    // Healed: m2 registers again and takes its share back.
    site.member("m2").proxy.heal();
    site.wait_settled(&all, Duration::from_secs(20));
}

#[test]
fn cluster_status_fails_when_etcd_is_unreachable_and_shard_conflicts() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = common::free_tcp_port();
    let config = dir.path().join("sitewatch.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\netcd = [\"http://127.0.0.1:{closed}\"]\nname = \"m1\"\nfailover_after = \"3s\"\n\n\
             [influx]\nurl = \"http://127.0.0.1:{closed}\"\ndatabase = \"x\"\n\n\
             [snmp]\nprofiles_dir = \"{}\"\n\n[[snmp.target]]\nname = \"ups-1\"\naddress = \"127.0.0.1:1\"\ncommunity = \"public\"\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/snmp")
        ),
    )
    .unwrap();
    let out = Command::new(sitewatch_bin())
        .args(["cluster", "status", "--config"])
        .arg(&config)
        .output()
        .expect("run sitewatch cluster status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit 1 without etcd: {err}");
    assert!(
        err.contains("etcd cannot be reached") && err.contains(&closed.to_string()),
        "{err}"
    );

    let out = Command::new(sitewatch_bin())
        .args(["run", "--shard", "1/2", "--config"])
        .arg(&config)
        .output()
        .expect("run sitewatch run --shard");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--shard 1/2 and [cluster] are both set"),
        "{err}"
    );

    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run sitewatch check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("cluster: member \"m1\" of cluster \"default\""),
        "{text}"
    );
}

/// docs/BENCHMARKS.md: `cargo test --release --test cluster -- --ignored --nocapture`.
#[test]
#[ignore]
fn takeover_300_targets_10_kills() {
    let _serial = one_at_a_time();
    // Every part bound: the broker and the runtime serving the webhook live to the end.
    let LoadedSite {
        mut site,
        hook,
        publishers,
        _broker,
        _rt,
    } = LoadedSite::start();
    let all = ["m1", "m2", "m3"];
    let members: Vec<String> = all.map(String::from).to_vec();
    // Sizing: CPU (user + system clock ticks from /proc, finer than the whole seconds of
    // process_cpu_seconds_total) and memory of each member polling its ~100 targets each
    // second and taking its partitions' messages (6 x 20 per second in all).
    let cpu = |m: &Member| cpu_seconds(m.sw.pid().expect("member running"));
    let before: Vec<f64> = site.members.iter().map(cpu).collect();
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    for (m, b) in site.members.iter().zip(before) {
        println!(
            "sizing: {} polls {} targets every 1s and runs {} partition(s): {:.1}% of one core, {:.0} MiB resident",
            m.name,
            site.owned_by(&m.name, &all).len(),
            (1..=PARTITIONS)
                .filter(|h| owner(&format!("mqtt:hall-{h}"), &members) == Some(m.name.as_str()))
                .count(),
            100.0 * (cpu(m) - b) / window.as_secs_f64(),
            m.sw.metric("process_resident_memory_bytes", &[]) / (1024.0 * 1024.0)
        );
    }
    let mut times = Vec::new();
    let mut partition_times = Vec::new();
    for round in 0..10 {
        let victim = all[round % 3];
        let killed_at = now_ns();
        let t = site.kill_and_measure(victim, &all);
        let live: Vec<&str> = all.iter().copied().filter(|m| *m != victim).collect();
        site.wait_settled(&live, Duration::from_secs(20));
        // Partitions: from the kill to their session started on another member.
        let moved = (1..=PARTITIONS)
            .filter(|h| owner(&format!("mqtt:hall-{h}"), &members) == Some(victim))
            .count();
        let started: Vec<i64> = live
            .iter()
            .flat_map(|m| {
                log_fields(
                    &site.member(m).sw.log(),
                    "MQTT partition started: this member owns it now",
                    killed_at,
                )
            })
            .filter_map(|v| stamp_of(&v))
            .collect();
        assert_eq!(
            started.len(),
            moved,
            "every partition of {victim} started elsewhere once"
        );
        let p = started
            .iter()
            .max()
            .map(|t| Duration::from_nanos((t - killed_at) as u64));
        println!(
            "kill {}: {victim} ({} targets, {moved} partition(s)) taken over in {:.2}s, its partitions in {}",
            round + 1,
            site.owned_by(victim, &all).len(),
            t.as_secs_f64(),
            p.map_or("-".to_string(), |p| format!("{:.2}s", p.as_secs_f64()))
        );
        times.push(t);
        partition_times.extend(p);
        site.member_mut(victim).sw.launch();
        site.wait_settled(&all, Duration::from_secs(30));
    }
    let sent = publishers.finish();
    let stored = eventually(Duration::from_secs(30), "every message stored", || {
        let counts = stored_per_partition(&site);
        (counts == sent).then_some(counts)
    });
    let notified = hook_alarms(&hook);
    let median_of = |v: &mut Vec<Duration>| {
        v.sort();
        let n = v.len();
        ((v[(n - 1) / 2] + v[n / 2]) / 2, *v.last().unwrap())
    };
    let (median, max) = median_of(&mut times);
    let (p_median, p_max) = median_of(&mut partition_times);
    println!(
        "takeover over 10 kills, 300 targets, 3 members, failover_after 3s, interval 1s: median {:.2}s, max {:.2}s; MQTT partitions ({} moves): median {:.2}s, max {:.2}s; messages published {}, stored {}; notifications of the hot hall's alarm: {}",
        median.as_secs_f64(),
        max.as_secs_f64(),
        partition_times.len(),
        p_median.as_secs_f64(),
        p_max.as_secs_f64(),
        sent.iter().sum::<usize>(),
        stored.iter().sum::<usize>(),
        notified.len()
    );
    assert!(max <= FAILOVER + INTERVAL, "max takeover {max:?}");
    assert_eq!(notified.len(), 1, "{notified:?}");
}

/// The webhook's accepted `hall_hot` alerts (any status), as (status, hall, alertname).
fn hook_alarms(hook: &WebhookReceiver) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for r in hook.accepted() {
        for a in r.body["alerts"].as_array().into_iter().flatten() {
            let name = a["labels"]["alertname"].as_str().unwrap_or_default();
            if name.starts_with("hall_hot") {
                out.push((
                    a["status"].as_str().unwrap_or_default().to_string(),
                    a["labels"]["hall"].as_str().unwrap_or_default().to_string(),
                    name.to_string(),
                ));
            }
        }
    }
    out
}

/// Three members sharing 300 SNMP targets and the 6 partitions under load: settled, the
/// publishers running and the hot hall's alarm notified once.
struct LoadedSite {
    site: Site,
    hook: WebhookReceiver,
    publishers: Publishers,
    _broker: Mosquitto,
    /// Serves the webhook receiver: dropped last.
    _rt: tokio::runtime::Runtime,
}

impl LoadedSite {
    fn start() -> LoadedSite {
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let hook = rt.block_on(WebhookReceiver::start());
        let broker = Mosquitto::start();
        let alarms = Alarms::new(broker.port, hook.url("/noc"));
        let site = Site::start_with(300, 3, Some(alarms));
        site.wait_settled(&["m1", "m2", "m3"], Duration::from_secs(60));
        let publishers = Publishers::start(broker.port, Duration::from_millis(50));
        eventually(
            Duration::from_secs(20),
            "the hot hall's alarm notified",
            || (!hook_alarms(&hook).is_empty()).then_some(()),
        );
        LoadedSite {
            site,
            hook,
            publishers,
            _broker: broker,
            _rt: rt,
        }
    }
}

/// Waits until the hot hall's alarm is open on `m` (its API's list).
fn wait_alarm_on(m: &Member, what: &str) {
    let alarm = format!("hall_hot hall-{HOT_HALL}");
    eventually(Duration::from_secs(10), what, || {
        open_alarms(m).contains(&alarm).then_some(())
    });
}

/// Points stored per partition (`hall_temp` rows of each hall).
fn stored_per_partition(site: &Site) -> Vec<usize> {
    (1..=PARTITIONS)
        .map(|h| {
            site.influx
                .rows(
                    DB,
                    &format!("SELECT count(\"seq\") FROM hall_temp WHERE \"hall\" = 'hall-{h}'"),
                )
                .first()
                .and_then(|r| r.get(1))
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as usize
        })
        .collect()
}

/// The timestamp (ns) of a JSON log line.
fn stamp_of(v: &serde_json::Value) -> Option<i64> {
    v["timestamp"]
        .as_str()?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_nanosecond() as i64)
}

/// The rules of the alerts open on `m`, from its API.
fn open_alarms(m: &Member) -> Vec<String> {
    let Ok((200, body)) = common::alertmanager::http_get(m.sw.metrics_port, "/api/v1/alerts")
    else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} {}",
                a["rule"].as_str().unwrap_or(""),
                a["tags"]["hall"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Issue 16's bar: three members share 300 SNMP targets and 6 MQTT partitions under load.
/// `kill -9` of the member whose partition has a firing alarm: its targets are polled by
/// the others within failover_after + one interval, no MQTT message is lost, and the alarm
/// is still firing on the member that took the partition over, with one notification in
/// total. The member returns: the units move back (no target polled twice for more than an
/// interval), the alarm moves back with its partition, still one notification, and the
/// member that gave the partition up raises no false stale alarm. Then that member is cut off
/// from etcd: it stops its partitions' sessions before another member starts them, and the
/// alarm goes on from its last checkpoint. Every message published through all of it is
/// stored.
#[test]
fn three_members_300_targets_6_partitions_keep_data_and_alarm_across_kill_and_return() {
    let _serial = one_at_a_time();
    // Every part bound: the broker and the runtime serving the webhook live to the end.
    let LoadedSite {
        mut site,
        hook,
        publishers,
        _broker,
        _rt,
    } = LoadedSite::start();
    let all = ["m1", "m2", "m3"];
    let members: Vec<String> = all.map(String::from).to_vec();
    let hot_unit = format!("mqtt:hall-{HOT_HALL}");
    let victim = owner(&hot_unit, &members).expect("an owner").to_string();

    assert!(
        open_alarms(site.member(&victim)).contains(&format!("hall_hot hall-{HOT_HALL}")),
        "{victim} owns hall-{HOT_HALL} and has its alarm open"
    );
    // Under load for a while (checkpoints written, messages flowing on every partition).
    std::thread::sleep(3 * INTERVAL);

    let killed_at = now_ns();
    let takeover = site.kill_and_measure(&victim, &all);
    let live: Vec<&str> = all.iter().copied().filter(|m| *m != victim).collect();
    let handover_ms = live
        .iter()
        .flat_map(|m| {
            log_fields(
                &site.member(m).sw.log(),
                "cluster unit taken up with its rule state",
                killed_at,
            )
        })
        .filter_map(|v| v["took_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let live_names: Vec<String> = live.iter().map(|m| m.to_string()).collect();
    let heir = owner(&hot_unit, &live_names).expect("an heir").to_string();
    println!(
        "kill -9 of {victim} ({} targets, hall-{HOT_HALL} and {} other partition(s)): targets taken over in {:.2}s (the slowest handover, checkpoint read to unit active, {handover_ms} ms); hall-{HOT_HALL} goes to {heir}",
        site.owned_by(&victim, &all).len(),
        (1..=PARTITIONS)
            .filter(|h| *h != HOT_HALL && owner(&format!("mqtt:hall-{h}"), &members) == Some(&victim))
            .count(),
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= FAILOVER + INTERVAL,
        "takeover took {takeover:?}, more than failover_after + one interval"
    );
    site.wait_settled(&live, Duration::from_secs(15));
    wait_alarm_on(site.member(&heir), "the alarm open on the heir");
    assert_eq!(
        site.member(&heir).sw.metric("sitewatch_rules_firing", &[]),
        1.0,
        "{heir} holds the taken-over alarm as firing"
    );

    // The member returns: its units, the hot partition among them, move back to it.
    let returned_at = now_ns();
    site.member_mut(&victim).sw.launch();
    site.wait_settled(&all, Duration::from_secs(30));
    wait_alarm_on(
        site.member(&victim),
        "the alarm back on the returned member",
    );
    assert!(
        open_alarms(site.member(&heir)).is_empty(),
        "{heir} gave the alarm back with the partition"
    );
    std::thread::sleep(2 * INTERVAL);
    site.assert_moved_back(&victim, &all, returned_at);
    // Longer than stale_after (8 s): a member still judging a partition it gave up would
    // raise a stale alarm now.
    std::thread::sleep(Duration::from_secs(9));

    // The owner of the hot partition cut off from etcd (its proxy refuses; the broker and
    // InfluxDB still reachable): it stops every partition's session before another member
    // starts one, and the alarm moves on with its last checkpoint.
    let mine: Vec<usize> = (1..=PARTITIONS)
        .filter(|h| owner(&format!("mqtt:hall-{h}"), &members) == Some(victim.as_str()))
        .collect();
    let cut_at = now_ns();
    site.member(&victim).proxy.cut();
    site.wait_settled(&live, Duration::from_secs(15));
    for h in &mine {
        let partition = format!("hall-{h}");
        let of = |v: &serde_json::Value| v["partition"] == partition.as_str();
        let stopped = log_fields(
            &site.member(&victim).sw.log(),
            "MQTT partition stopped: this member lost it (the broker keeps its session for the next owner)",
            cut_at,
        )
        .into_iter()
        .filter(of)
        .find_map(|v| stamp_of(&v))
        .unwrap_or_else(|| panic!("{victim} did not stop {partition} after the cut"));
        let started = eventually(
            Duration::from_secs(10),
            "the partition started elsewhere",
            || {
                live.iter()
                    .flat_map(|m| {
                        log_fields(
                            &site.member(m).sw.log(),
                            "MQTT partition started: this member owns it now",
                            cut_at,
                        )
                    })
                    .filter(of)
                    .find_map(|v| stamp_of(&v))
            },
        );
        println!(
            "{victim} cut off from etcd: {partition} stopped there {:.2}s after the cut, started on another member {:.2}s after the cut",
            (stopped - cut_at) as f64 / 1e9,
            (started - cut_at) as f64 / 1e9
        );
        assert!(stopped < started, "{partition} ran on two members at once");
    }
    let heir_now = owner(&hot_unit, &live_names).expect("an owner");
    wait_alarm_on(
        site.member(heir_now),
        "the alarm open on the member that took over",
    );
    site.member(&victim).proxy.heal();
    site.wait_settled(&all, Duration::from_secs(30));
    wait_alarm_on(
        site.member(&victim),
        "the alarm back after the partition healed",
    );
    let sent = publishers.finish();

    // Every message stored: one point per message (its own timestamp), whoever held the
    // partition and however often the broker redelivered.
    let stored = eventually(Duration::from_secs(20), "every message stored", || {
        let counts = stored_per_partition(&site);
        (counts == sent).then_some(counts)
    });
    println!(
        "MQTT messages published per partition {sent:?}, stored {stored:?}: {} lost",
        sent.iter().sum::<usize>() - stored.iter().sum::<usize>()
    );

    let notified = hook_alarms(&hook);
    if notified.len() != 1 {
        for m in &all {
            for l in site.member(m).sw.log().lines() {
                if l.contains("hall-3") || l.contains("rule event") {
                    eprintln!("{m}: {l}");
                }
            }
        }
    }
    assert_eq!(
        notified,
        vec![(
            "firing".to_string(),
            format!("hall-{HOT_HALL}"),
            "hall_hot".to_string()
        )],
        "one notification in total: no resolve, no second page, no stale alarm"
    );
    for m in &all {
        let log = site.member(m).sw.log();
        assert!(
            !log.contains("hall_hot:stale"),
            "{m} raised a stale alarm:\n{log}"
        );
    }
}

/// Modbus devices are cluster units too: each polled by its owner only, and taken over by
/// the other member when its owner is killed.
#[test]
fn modbus_devices_are_shared_and_taken_over() {
    let _serial = one_at_a_time();
    let etcd = Etcd::start();
    let influx = Influxd::start();
    influx.create_database(DB);
    let server = common::modbus::ModbusServer::start(&BTreeMap::from([(
        1u8,
        common::modbus::UnitData::default(),
    )]));
    let devices: Vec<String> = (1..=8).map(|i| format!("meter-{i}")).collect();
    let mut body = format!(
        "[cluster]\netcd = [\"http://127.0.0.1:{}\"]\nname = \"NAME\"\nfailover_after = \"{}s\"\n\n\
         [influx]\nurl = \"{}\"\ndatabase = \"{DB}\"\nflush_interval = \"200ms\"\n\n\
         [modbus]\nmaps_dir = \"{}\"\ninterval = \"1s\"\ntimeout = \"1s\"\nretries = 0\n\n",
        etcd.client_port,
        FAILOVER.as_secs(),
        influx.url(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/modbus"),
    );
    for d in &devices {
        body.push_str(&format!(
            "[[modbus.device]]\nname = \"{d}\"\naddress = \"{}\"\nunit_id = 1\nmap = \"eastron-sdm630\"\n\n",
            server.address()
        ));
    }
    let start = |name: &str| {
        Sitewatch::start_with_service(
            &format!("log_format = \"json\"\nglobal_tags = {{ member = \"{name}\" }}"),
            &body.replace("NAME", name),
            "info",
            &[],
        )
    };
    let mut a = start("a");
    let b = start("b");
    let both: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let share = |m: &str, live: &[String]| -> BTreeSet<String> {
        devices
            .iter()
            .filter(|d| owner(&format!("modbus:{d}"), live) == Some(m))
            .cloned()
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        "both members hold their share",
        || {
            [("a", &a), ("b", &b)]
                .iter()
                .all(|(n, sw)| {
                    sw.metric("sitewatch_cluster_active_units", &[]) == share(n, &both).len() as f64
                        && sw.metric("sitewatch_cluster_members", &[]) == 2.0
                })
                .then_some(())
        },
    );
    let pollers = |from: i64| -> BTreeMap<String, BTreeSet<String>> {
        let v = influx.query_epoch_ns(
            DB,
            &format!("SELECT \"up\" FROM modbus_poll WHERE time >= {from} GROUP BY \"device\", \"member\""),
        );
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in v["results"][0]["series"].as_array().into_iter().flatten() {
            out.entry(s["tags"]["device"].as_str().unwrap_or_default().to_string())
                .or_default()
                .insert(s["tags"]["member"].as_str().unwrap_or_default().to_string());
        }
        out
    };
    let from = now_ns();
    std::thread::sleep(3 * INTERVAL);
    let seen = pollers(from);
    for d in &devices {
        let want: BTreeSet<String> = both
            .iter()
            .filter(|m| share(m, &both).contains(d))
            .cloned()
            .collect();
        assert_eq!(seen.get(d), Some(&want), "{d}: polled by {:?}", seen.get(d));
    }
    assert!(!share("a", &both).is_empty() && !share("b", &both).is_empty());

    let killed_at = now_ns();
    a.kill9();
    let taken = eventually(
        FAILOVER + INTERVAL + Duration::from_secs(10),
        "a's devices polled by b",
        || {
            let seen = pollers(killed_at);
            share("a", &both)
                .iter()
                .all(|d| seen.get(d).is_some_and(|m| m.contains("b")))
                .then(|| Duration::from_nanos((now_ns() - killed_at) as u64))
        },
    );
    println!(
        "Modbus: {} of {} devices taken over by b within {:.2}s of kill -9 of a",
        share("a", &both).len(),
        devices.len(),
        taken.as_secs_f64()
    );
    assert!(
        taken <= FAILOVER + INTERVAL + Duration::from_secs(1),
        "took {taken:?}"
    );
}

/// etcd behind TLS with client certificates (`--client-cert-auth`) and authentication on:
/// a member with the internal CA, its client certificate and its user's password registers
/// and owns its targets, and `sitewatch cluster status` reads the same etcd; a member with a
/// wrong password is refused by etcd, says so, and owns nothing.
#[test]
fn a_member_reaches_etcd_over_tls_with_a_client_certificate_and_a_password() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir for the PKI");
    let pki = common::pki::TestPki::make(dir.path());
    let etcd = Etcd::start_tls(&pki);
    let password = "sw-cluster-password-1";
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async {
        use etcd_client::{Certificate, ConnectOptions, Identity, Permission, TlsOptions};
        let read = |p: &std::path::Path| std::fs::read(p).expect("read PKI file");
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&pki.ca_file)))
            .identity(Identity::from_pem(
                read(&pki.client_cert),
                read(&pki.client_key),
            ));
        let mut c =
            etcd_client::Client::connect([etcd.url()], Some(ConnectOptions::new().with_tls(tls)))
                .await
                .expect("harness connects to etcd over TLS");
        c.user_add("root", "root-password-1", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        // The sitewatch user may read and write its prefix, nothing else.
        c.role_add("sitewatch").await.unwrap();
        c.role_grant_permission(
            "sitewatch",
            Permission::read_write("/sitewatch/").with_prefix(),
        )
        .await
        .unwrap();
        c.user_add("sitewatch", password, None).await.unwrap();
        c.user_grant_role("sitewatch", "sitewatch").await.unwrap();
        c.auth_enable().await.expect("enable etcd authentication");
    });
    let agent = Snmpd::start();
    let influx = Influxd::start();
    influx.create_database(DB);
    let body = |name: &str, password: &str| {
        let mut targets = String::new();
        for t in ["ups-1", "ups-2", "pdu-1"] {
            targets.push_str(&format!(
                "[[snmp.target]]\nname = \"{t}\"\naddress = \"{}\"\ncommunity = \"{SNMPD_COMMUNITY}\"\nprofiles = [\"if-mib-basic\"]\n\n",
                agent.address()
            ));
        }
        format!(
            "[cluster]\netcd = [\"{url}\"]\nname = \"{name}\"\nfailover_after = \"3s\"\nusername = \"sitewatch\"\npassword = \"{password}\"\n\n\
             [cluster.tls]\nca_file = \"{ca}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n\n\
             [influx]\nurl = \"{influx}\"\ndatabase = \"{DB}\"\nflush_interval = \"200ms\"\n\n\
             [snmp]\nprofiles_dir = \"{profiles}\"\ninterval = \"1s\"\ntimeout = \"2s\"\n\n{targets}",
            url = etcd.url(),
            ca = pki.ca_file.display(),
            cert = pki.client_cert.display(),
            key = pki.client_key.display(),
            influx = influx.url(),
            profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/snmp"),
        )
    };
    let member =
        Sitewatch::start_with_service("log_format = \"json\"", &body("m1", password), "info", &[]);
    eventually(
        Duration::from_secs(20),
        "m1 registered over TLS and owns every target",
        || {
            (member.metric("sitewatch_cluster_lease_ok", &[]) == 1.0
                && member.metric("sitewatch_cluster_active_units", &[]) == 3.0)
                .then_some(())
        },
    );
    let out = Command::new(sitewatch_bin())
        .args(["cluster", "status", "--config"])
        .arg(&member.config)
        .output()
        .expect("run sitewatch cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 member(s), 3 unit(s)"),
        "cluster status over TLS: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(&member.config)
        .output()
        .expect("run sitewatch check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("over TLS as user \"sitewatch\""), "{text}");

    let intruder = Sitewatch::start_with_service(
        "log_format = \"json\"",
        &body("m2", "wrong-password-1"),
        "info",
        &[],
    );
    eventually(Duration::from_secs(15), "m2 refused by etcd", || {
        let log = intruder.log();
        log.contains("etcd refused this member").then_some(())
    });
    let refused = intruder
        .log()
        .lines()
        .find(|l| l.contains("etcd refused this member"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        refused.contains("check [cluster] username and password"),
        "m2 names the fix: {refused}"
    );
    assert_eq!(intruder.metric("sitewatch_cluster_lease_ok", &[]), 0.0);
    assert_eq!(intruder.metric("sitewatch_cluster_active_units", &[]), 0.0);
    assert_eq!(
        member.metric("sitewatch_cluster_active_units", &[]),
        3.0,
        "m1 keeps every target"
    );
}

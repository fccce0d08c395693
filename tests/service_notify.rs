//! systemd's side of `Type=notify`, played by the test: a unix datagram socket as
//! NOTIFY_SOCKET, WATCHDOG_USEC and STATE_DIRECTORY set as systemd sets them, and the real
//! binary against real Mosquitto and InfluxDB. READY=1 must come only once the sink has
//! opened its spool and the trap listener holds its port; WATCHDOG=1 must keep coming; SIGHUP
//! is framed by RELOADING=1 and READY=1; SIGTERM sends STOPPING=1. The relative spool and
//! rules state file land in the state directory, not beside the config.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::free_udp_port;
use common::influx::Influxd;
use common::mosquitto::Mosquitto;
use common::sitewatch::Sitewatch;

const RULES: &str = r#"
[[rule]]
name = "rack_inlet_temperature"
measurement = "environment"
field = "temperature_c"
above = { warning = 27.0, warning_clear = 26.0 }
message = "inlet {value} C above {threshold} C"
"#;

/// Reads datagrams until one contains `line` (a whole line), returning every message read
/// on the way (including the matching one).
fn wait_for(sock: &UnixDatagram, line: &str, timeout: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {line:?} from sitewatch within {timeout:?}; messages so far: {seen:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = msg.lines().any(|l| l == line);
                seen.push(msg);
                if hit {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
}

fn port_is_bound(port: u16) -> bool {
    std::net::UdpSocket::bind(("127.0.0.1", port)).is_err()
}

#[test]
fn notify_ready_watchdog_reload_stopping_and_state_directory() {
    let mosquitto = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_database("notify");
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let trap_port = free_udp_port();
    let body = format!(
        r#"
[influx]
url = "{url}"
database = "notify"
flush_interval = "200ms"
spool_dir = "spool"

[mqtt]
host = "127.0.0.1"
port = {mqtt}
client_id = "notify-test"

[[mqtt.subscription]]
topic = "dc/{{site}}/{{rack}}/env"
measurement = "environment"
format = "json"
fields = {{ temperature_c = "t" }}

[snmp]
profiles_dir = "{profiles}"

[snmp.traps]
listen = "127.0.0.1:{trap_port}"
communities = ["public"]

[rules]
files = ["{rules}"]
state_file = "rules-state.json"
"#,
        url = influx.url(),
        mqtt = mosquitto.port,
        profiles = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("mappings/snmp")
            .display(),
        rules = rules.display(),
    );
    // 2 s watchdog: pings every second.
    let mut sw = Sitewatch::start(
        &body,
        "info",
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
            ("STATE_DIRECTORY", state_dir.to_str().unwrap()),
        ],
    );
    let mut seen = Vec::new();
    wait_for(&sock, "READY=1", Duration::from_secs(20), &mut seen);
    // Everything start-up opens is open by the time READY=1 is sent.
    assert!(
        state_dir.join("spool").is_dir(),
        "READY=1 before the InfluxDB sink opened its spool in $STATE_DIRECTORY; log:\n{}",
        sw.log()
    );
    assert!(
        port_is_bound(trap_port),
        "READY=1 before the trap listener bound 127.0.0.1:{trap_port}"
    );
    let ready = seen.last().unwrap().clone();
    assert!(
        ready
            .lines()
            .any(|l| l.starts_with("STATUS=running: collectors ")
                && l.contains("mqtt")
                && l.contains("snmp")),
        "READY=1 without a STATUS= line naming the collectors: {ready:?}"
    );
    // Relative writable paths go to the state directory, not beside the config.
    assert!(
        !sw.dir().join("spool").exists(),
        "the spool was made beside the config"
    );

    let before = seen.len();
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    assert!(seen.len() >= before + 2);

    sw.signal("-HUP");
    seen.clear();
    wait_for(&sock, "RELOADING=1", Duration::from_secs(10), &mut seen);
    let reloading = seen.last().unwrap();
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 without MONOTONIC_USEC: {reloading:?}"
    );
    wait_for(&sock, "READY=1", Duration::from_secs(10), &mut seen);
    assert!(
        seen.last()
            .unwrap()
            .contains("STATUS=running; SIGHUP reload: 1 rules"),
        "{seen:?}"
    );

    let exited = std::thread::spawn(move || {
        let status = sw.terminate();
        (status, sw)
    });
    seen.clear();
    wait_for(&sock, "STOPPING=1", Duration::from_secs(20), &mut seen);
    let (status, sw) = exited.join().unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "sitewatch did not stop cleanly: {status:?}; log:\n{}",
        sw.log()
    );
    assert!(
        state_dir.join("rules-state.json").is_file(),
        "the rules state file is not in $STATE_DIRECTORY; log:\n{}",
        sw.log()
    );
    assert!(!sw.dir().join("rules-state.json").exists());
}

//! SNMP agents for integration tests: Net-SNMP `snmpd` (real agent: system group, IF-MIB,
//! v2c and v3 users) and `snmpsim-command-responder` (serves `.snmprec` data files; the
//! community is the file name without `.snmprec`).

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{free_udp_port, require_binary, ServiceProcess};

pub const SNMPD_COMMUNITY: &str = "sitewatch-ro";
pub const SNMPD_V3_USER: &str = "swmon";
pub const SNMPD_V3_AUTH: &str = "authpass-9f3k";
pub const SNMPD_V3_PRIV: &str = "privpass-7d2m";

/// Sends a v2c GET sysUpTime.0 and waits for any answer: true once the agent is serving.
fn agent_answers(port: u16, community: &str) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(300)));
    // Hand-built v2c GetRequest for 1.3.6.1.2.1.1.3.0 (request id 1).
    let oid: [u8; 10] = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x03, 0x00];
    let mut varbind = vec![0x30, (oid.len() + 2) as u8];
    varbind.extend_from_slice(&oid);
    varbind.extend_from_slice(&[0x05, 0x00]);
    let mut vbl = vec![0x30, varbind.len() as u8];
    vbl.extend_from_slice(&varbind);
    let mut pdu_body = vec![0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00];
    pdu_body.extend_from_slice(&vbl);
    let mut pdu = vec![0xa0, pdu_body.len() as u8];
    pdu.extend_from_slice(&pdu_body);
    let mut msg_body = vec![0x02, 0x01, 0x01, 0x04, community.len() as u8];
    msg_body.extend_from_slice(community.as_bytes());
    msg_body.extend_from_slice(&pdu);
    let mut msg = vec![0x30, msg_body.len() as u8];
    msg.extend_from_slice(&msg_body);
    if sock.send_to(&msg, ("127.0.0.1", port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf).is_ok()
}

fn wait_for_agent(p: &mut ServiceProcess, port: u16, community: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        p.assert_running();
        if agent_answers(port, community) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} did not answer SNMP on 127.0.0.1:{port} within {timeout:?}; log:\n{}",
                p.name,
                p.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Net-SNMP agent with a v2c read-only community and a v3 user (SHA + AES, authPriv).
pub struct Snmpd {
    pub proc: ServiceProcess,
    pub port: u16,
}

impl Snmpd {
    pub fn start() -> Snmpd {
        let bin = require_binary("snmpd", "snmpd");
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir for snmpd");
            let port = free_udp_port();
            let persist = dir.path().join("persist");
            std::fs::create_dir_all(&persist).unwrap();
            let conf = dir.path().join("snmpd.conf");
            std::fs::write(
                &conf,
                format!(
                    "[snmp] persistentDir {persist}\n\
                     rocommunity {SNMPD_COMMUNITY} 127.0.0.1\n\
                     createUser {SNMPD_V3_USER} SHA \"{SNMPD_V3_AUTH}\" AES \"{SNMPD_V3_PRIV}\"\n\
                     rouser {SNMPD_V3_USER} priv\n\
                     sysName sitewatch-test-snmpd\n\
                     sysLocation test-lab\n\
                     sysContact ops@example.invalid\n",
                    persist = persist.display()
                ),
            )
            .unwrap();
            let mut proc = spawn_snmpd(&bin, "snmpd", dir, port);
            std::thread::sleep(Duration::from_millis(100));
            if let Some(child) = proc.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    // Most likely the port was taken in the meantime; try another.
                    continue;
                }
            }
            wait_for_agent(&mut proc, port, SNMPD_COMMUNITY, Duration::from_secs(10));
            return Snmpd { proc, port };
        }
        panic!("snmpd failed to start three times");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the agent (SIGKILL, like a device losing power); [`Snmpd::start_again`] brings
    /// it back on the same port and config.
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    pub fn start_again(&mut self) {
        let bin = require_binary("snmpd", "snmpd");
        // The temp dir moves into the new guard; the old guard gets a throwaway dir.
        let placeholder = tempfile::tempdir().expect("placeholder temp dir");
        let dir = std::mem::replace(&mut self.proc.dir, placeholder);
        self.proc = spawn_snmpd(&bin, "snmpd-again", dir, self.port);
        wait_for_agent(
            &mut self.proc,
            self.port,
            SNMPD_COMMUNITY,
            Duration::from_secs(10),
        );
    }
}

/// snmpd in the foreground on `port` with the `snmpd.conf` in `dir`.
fn spawn_snmpd(bin: &Path, name: &str, dir: tempfile::TempDir, port: u16) -> ServiceProcess {
    let persist = dir.path().join("persist");
    let mut cmd = Command::new(bin);
    cmd.args(["-f", "-Lo", "-C", "-c"])
        .arg(dir.path().join("snmpd.conf"))
        .arg(format!("udp:127.0.0.1:{port}"))
        // Keep the agent from loading (and complaining about) MIB text files.
        .env("MIBS", "")
        .env("MIBDIRS", dir.path())
        .env("SNMP_PERSISTENT_DIR", &persist);
    ServiceProcess::spawn(name, cmd, dir)
}

/// snmpsim serving every `*.snmprec` in `data_dir`; community = file stem.
pub struct Snmpsim {
    pub proc: ServiceProcess,
    pub port: u16,
}

impl Snmpsim {
    pub fn start(data_dir: &Path) -> Snmpsim {
        let bin = which("snmpsim-command-responder").unwrap_or_else(|| {
            panic!(
                "`snmpsim-command-responder` not found. Install it with: \
                 pip install snmpsim pysmi (snmpsim 1.2 imports pysmi without declaring it)"
            )
        });
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir for snmpsim");
            let port = free_udp_port();
            let cache = dir.path().join("cache");
            let mut cmd = Command::new(&bin);
            cmd.arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!("--cache-dir={}", cache.display()))
                .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
                .arg("--log-level=error")
                // snmpsim refuses to run as root unless told; tests in CI containers are root.
                .env("SNMPSIM_ALLOW_ROOT", "true");
            let mut proc = ServiceProcess::spawn("snmpsim", cmd, dir);
            std::thread::sleep(Duration::from_millis(200));
            if let Some(child) = proc.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    let log = proc.log();
                    if log.contains("No module named") {
                        panic!(
                            "snmpsim cannot start: {log}\nInstall its dependencies with: pip install snmpsim pysmi"
                        );
                    }
                    continue;
                }
            }
            let community = first_community(data_dir);
            wait_for_agent(&mut proc, port, &community, Duration::from_secs(30));
            return Snmpsim { proc, port };
        }
        panic!("snmpsim failed to start three times");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn first_community(data_dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(data_dir)
        .expect("read snmprec dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.path()
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".snmprec"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .next()
        .expect("data dir has at least one .snmprec file")
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".local/bin"));
    }
    dirs.push("/usr/local/bin".into());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The Python of the venv that holds `snmpsim-command-responder` (and `snmpsim-data`).
fn snmpsim_python() -> std::path::PathBuf {
    let bin = which("snmpsim-command-responder").unwrap_or_else(|| {
        panic!(
            "snmpsim not found on PATH. Install it with: pip install 'snmpsim==1.2.2' 'pysmi==1.6.3' 'snmpsim-data==1.0.1' (bash tests/run.sh does this in target/snmpsim-venv)"
        )
    });
    let python = bin.with_file_name("python3");
    assert!(
        python.exists(),
        "{} has no python3 beside it: install snmpsim in a virtualenv (bash tests/run.sh does)",
        bin.display()
    );
    python
}

/// A recording of a real device from the PyPI package `snmpsim-data`, by its path under the
/// package's data folder (`UPS/apc-8641.snmprec`); `.bz2` files are read decompressed.
pub fn snmpsim_data(rel: &str) -> String {
    let script = "import bz2, os, sys, snmpsim_data\n\
d = os.path.join(os.path.dirname(snmpsim_data.__file__), 'data', sys.argv[1])\n\
data = open(d, 'rb').read() if os.path.exists(d) else bz2.open(d + '.bz2').read()\n\
sys.stdout.buffer.write(data)";
    let out = Command::new(snmpsim_python())
        .args(["-c", script, rel])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "recording {rel} from snmpsim-data: {} (install it with pip install 'snmpsim-data==1.0.1' in snmpsim's venv; bash tests/run.sh does)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

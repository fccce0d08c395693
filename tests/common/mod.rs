//! Test harness: starts real services (InfluxDB, Mosquitto, VictoriaMetrics, snmpd, ...) on
//! free loopback ports in temp dirs and stops them when the guard drops.
//!
//! A missing binary fails the test with the exact install command; nothing is skipped.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod alertmanager;
pub mod etcd;
pub mod influx;
pub mod modbus;
pub mod mosquitto;
pub mod pki;
pub mod sitewatch;
pub mod snmp;
pub mod tcp_proxy;

/// A free TCP port on 127.0.0.1 (the kernel picks it; a tiny race with other processes is
/// accepted, every service start retries with a new port on failure).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback UDP port")
}

/// Finds a service binary in PATH or in the usual Debian locations, or panics with the
/// install command.
pub fn require_binary(name: &str, apt_package: &str) -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        candidates.push(Path::new(dir).join(name));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found. Install it with: sudo apt-get install -y {apt_package} \
                 (or run the README's test command, which installs everything)"
            )
        })
}

/// A running service process; killed (and its temp dir removed) on drop.
pub struct ServiceProcess {
    pub name: String,
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

impl ServiceProcess {
    /// Spawns `cmd` with stdout/stderr going to `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: tempfile::TempDir) -> ServiceProcess {
        let log_path = dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("create service log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        ServiceProcess {
            name: name.to_string(),
            child: Some(child),
            dir,
            log_path,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics with the service log if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited early ({status}); log:\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    /// Waits until `port` on 127.0.0.1 accepts TCP connections.
    pub fn wait_for_tcp(&mut self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not listen on 127.0.0.1:{port} within {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process (SIGKILL) but keeps the temp dir, so it can be restarted on the
    /// same data (outage tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nanoseconds since the epoch an hour ago (inside the decoders' accepted range), whole
/// seconds: a base for test points that are each their own timestamp.
pub fn hour_ago_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    (now - 3600) * 1_000_000_000
}

/// Path of the built `sitewatch` binary for end-to-end tests.
pub fn sitewatch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sitewatch"))
}

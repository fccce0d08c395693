//! A private single-node etcd (Debian `etcd-server`) on free loopback ports in a temp dir.

use std::process::Command;
use std::time::Duration;

use super::influx::http;
use super::{eventually, free_tcp_port, require_binary, ServiceProcess};

pub struct Etcd {
    pub proc: ServiceProcess,
    pub client_port: u16,
}

impl Etcd {
    /// Starts etcd and waits until it answers `/health` with a leader.
    pub fn start() -> Etcd {
        let bin = require_binary("etcd", "etcd-server");
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-etcd")
            .tempdir()
            .expect("temp dir for etcd");
        let client_port = free_tcp_port();
        let peer_port = free_tcp_port();
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(bin);
        cmd.arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            // No metrics/pprof listener beyond the client port; quiet logs.
            .arg("--log-level")
            .arg("warn")
            .arg("--logger")
            .arg("zap");
        let mut proc = ServiceProcess::spawn("etcd", cmd, dir);
        proc.wait_for_tcp(client_port, Duration::from_secs(20));
        eventually(Duration::from_secs(20), "etcd healthy", || {
            proc.assert_running();
            let (status, body) = http(client_port, "GET", "/health", b"").ok()?;
            (status == 200 && body.contains("true")).then_some(())
        });
        Etcd { proc, client_port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }
}

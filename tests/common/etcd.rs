//! A private single-node etcd (Debian `etcd-server`) on free loopback ports in a temp dir.

use std::process::Command;
use std::time::Duration;

use super::influx::http;
use super::pki::{https, TestPki};
use super::{eventually, free_tcp_port, require_binary, ServiceProcess};

pub struct Etcd {
    pub proc: ServiceProcess,
    pub client_port: u16,
    scheme: &'static str,
}

impl Etcd {
    /// Starts etcd and waits until it answers `/health` with a leader.
    pub fn start() -> Etcd {
        Self::start_with(None)
    }

    /// Starts etcd serving clients over TLS only, with `pki`'s server certificate, and
    /// requiring client certificates signed by `pki`'s CA (`--client-cert-auth`).
    pub fn start_tls(pki: &TestPki) -> Etcd {
        Self::start_with(Some(pki))
    }

    fn start_with(tls: Option<&TestPki>) -> Etcd {
        let bin = require_binary("etcd", "etcd-server");
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-etcd")
            .tempdir()
            .expect("temp dir for etcd");
        let client_port = free_tcp_port();
        let peer_port = free_tcp_port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
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
        if let Some(pki) = tls {
            cmd.arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&pki.ca_file);
        }
        let mut proc = ServiceProcess::spawn("etcd", cmd, dir);
        proc.wait_for_tcp(client_port, Duration::from_secs(20));
        let harness_tls = tls.map(|pki| pki.client_config(true));
        eventually(Duration::from_secs(20), "etcd healthy", || {
            proc.assert_running();
            let (status, body) = match &harness_tls {
                Some(t) => https(t, client_port, "GET", "/health", b"").ok()?,
                None => http(client_port, "GET", "/health", b"").ok()?,
            };
            (status == 200 && body.contains("true")).then_some(())
        });
        Etcd {
            proc,
            client_port,
            scheme,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }
}

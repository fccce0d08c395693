//! The real `sitewatch` binary as a service under test: config in a temp dir, `run`, stop
//! with SIGTERM (graceful: flush) or SIGKILL (crash), scrape its `/metrics`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::influx::http;
use super::{free_tcp_port, sitewatch_bin, ServiceProcess};

pub struct Sitewatch {
    pub metrics_port: u16,
    pub config_path: PathBuf,
    proc: ServiceProcess,
}

impl Sitewatch {
    /// Writes `config` (everything but the `[service]` table, which this adds) and the
    /// `(relative path, contents)` files next to it, then starts `sitewatch run`.
    pub fn start(config: &str, files: &[(&str, &str)]) -> Sitewatch {
        let dir = tempfile::tempdir().expect("temp dir for sitewatch");
        for (rel, contents) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("file has a parent")).expect("mkdir");
            std::fs::write(&p, contents).expect("write config file");
        }
        let metrics_port = free_tcp_port();
        let config_path = dir.path().join("sitewatch.toml");
        let text = format!(
            "[service]\nlog_level = \"info,sitewatch=debug\"\nlisten = \"127.0.0.1:{metrics_port}\"\n\n{config}"
        );
        std::fs::write(&config_path, text).expect("write sitewatch.toml");
        let mut cmd = Command::new(sitewatch_bin());
        cmd.arg("run").arg("--config").arg(&config_path);
        let mut proc = ServiceProcess::spawn("sitewatch", cmd, dir);
        proc.wait_for_tcp(metrics_port, Duration::from_secs(20));
        Sitewatch {
            metrics_port,
            config_path,
            proc,
        }
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) =
            http(self.metrics_port, "GET", "/metrics", b"").expect("scrape sitewatch /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    /// Sum of every sample of metric `name` whose label set contains all `labels`
    /// (`key="value"` strings); 0 when absent.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// SIGTERM, then waits for the exit status (graceful shutdown flushes buffered data).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.proc.child.as_mut().expect("sitewatch is running");
        let pid = child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -TERM {pid}");
        let status = child.wait().expect("wait for sitewatch");
        self.proc.child = None;
        status
    }

    /// SIGKILL: a crash, nothing flushed.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

/// Sums the samples of `name` in Prometheus text whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name || !labels.iter().all(|want| label_text.contains(want)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

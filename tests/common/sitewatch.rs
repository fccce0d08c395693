//! The real `sitewatch` binary as a service under test: config in its own temp dir, `run`,
//! stop with SIGTERM (graceful: flush) or SIGKILL (crash), restart on the same config and
//! spool, scrape its `/metrics`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::influx::http;
use super::{free_tcp_port, sitewatch_bin, ServiceProcess};

/// A `sitewatch run` process with a config in its own temp dir (kept across restarts, so a
/// restarted instance finds the same spool and MQTT client id).
pub struct Sitewatch {
    proc: Option<ServiceProcess>,
    pub metrics_port: u16,
    pub config: PathBuf,
    env: Vec<(String, String)>,
    runs: u32,
}

/// The start of most rule tests' configs: `[influx]` (database `db`, flushed every 100 ms),
/// `[mqtt]` with one QoS 1 line-protocol subscription on `topic`, and `[rules]` reading
/// `rules.toml` beside the config. Tests append their receivers, `[api]` and the like.
pub fn line_protocol_rules_body(
    influx_url: &str,
    db: &str,
    mqtt_port: u16,
    client_id: &str,
    topic: &str,
) -> String {
    format!(
        r#"[influx]
url = "{influx_url}"
database = "{db}"
flush_interval = "100ms"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{client_id}"

[[mqtt.subscription]]
topic = "{topic}"
format = "line_protocol"
qos = 1

[rules]
files = ["rules.toml"]
"#
    )
}

impl Sitewatch {
    /// `body` is everything but `[service]`; `{spool}` in it is replaced by a spool dir in
    /// the instance's temp dir.
    pub fn start(body: &str, log_level: &str, env: &[(&str, &str)]) -> Sitewatch {
        Self::start_with_service("", body, log_level, env)
    }

    /// Like [`Sitewatch::start`] with more `[service]` keys (`service_extra`, TOML lines).
    pub fn start_with_service(
        service_extra: &str,
        body: &str,
        log_level: &str,
        env: &[(&str, &str)],
    ) -> Sitewatch {
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-faults")
            .tempdir()
            .expect("temp dir");
        let dir_path = dir.keep();
        let metrics_port = free_tcp_port();
        let spool = dir_path.join("spool");
        let text = format!(
            "[service]\nlog_level = {log_level:?}\nlisten = \"127.0.0.1:{metrics_port}\"\n{service_extra}\n\n{}",
            body.replace("{spool}", &spool.display().to_string())
        );
        let config = dir_path.join("sitewatch.toml");
        std::fs::write(&config, text).expect("write config");
        let mut sw = Sitewatch {
            proc: None,
            metrics_port,
            config,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            runs: 0,
        };
        sw.launch();
        sw
    }

    /// Like [`Sitewatch::start`] with log level info, without launching (to add files first).
    pub fn start_paused(body: &str) -> Sitewatch {
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-faults")
            .tempdir()
            .expect("temp dir")
            .keep();
        let metrics_port = free_tcp_port();
        let spool = dir.join("spool");
        let text = format!(
            "[service]\nlog_level = \"info\"\nlisten = \"127.0.0.1:{metrics_port}\"\n\n{}",
            body.replace("{spool}", &spool.display().to_string())
        );
        let config = dir.join("sitewatch.toml");
        std::fs::write(&config, text).expect("write config");
        Sitewatch {
            proc: None,
            metrics_port,
            config,
            env: Vec::new(),
            runs: 0,
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref()?.child.as_ref().map(|c| c.id())
    }

    /// Like [`Sitewatch::start_paused`], with `rules` as `rules.toml` beside the config,
    /// then launched.
    pub fn start_with_rules(body: &str, rules: &str) -> Sitewatch {
        let mut sw = Self::start_paused(body);
        std::fs::write(sw.dir().join("rules.toml"), rules).expect("write rules.toml");
        sw.launch();
        sw
    }

    pub fn dir(&self) -> &Path {
        self.config.parent().expect("config has a dir")
    }

    pub fn launch(&mut self) {
        self.runs += 1;
        let mut cmd = Command::new(sitewatch_bin());
        cmd.arg("run").arg("--config").arg(&self.config);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // The guard's own temp dir holds this run's log; it is copied into ours when the run
        // ends, so a restarted instance keeps the spool and the logs of earlier runs.
        let guard_dir = tempfile::tempdir().expect("temp dir");
        let mut p = ServiceProcess::spawn(&format!("sitewatch-run{}", self.runs), cmd, guard_dir);
        p.wait_for_tcp(self.metrics_port, Duration::from_secs(20));
        self.proc = Some(p);
    }

    pub fn metrics(&self) -> String {
        let (status, body) =
            http(self.metrics_port, "GET", "/metrics", b"").expect("scrape /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body
    }

    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// Sends a signal (`"-HUP"`, ...) to the running instance.
    pub fn signal(&self, sig: &str) {
        let child = self
            .proc
            .as_ref()
            .and_then(|p| p.child.as_ref())
            .expect("sitewatch is running");
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGKILL: nothing is flushed.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
            self.keep_log(&p);
        }
    }

    /// SIGTERM and wait (graceful: flush or spool); the exit status, if it was running.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut p = self.proc.take()?;
        let status = p.child.as_mut().and_then(|child| {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            child.wait().ok()
        });
        p.child = None;
        self.keep_log(&p);
        status
    }

    fn keep_log(&self, p: &ServiceProcess) {
        let _ = std::fs::write(self.dir().join(format!("run{}.log", self.runs)), p.log());
    }

    pub fn log(&self) -> String {
        match &self.proc {
            Some(p) => p.log(),
            None => std::fs::read_to_string(self.dir().join(format!("run{}.log", self.runs)))
                .unwrap_or_default(),
        }
    }
}

impl Drop for Sitewatch {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// Sums the samples of `name` whose labels include all of `labels` (`key="value"`).
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

//! InfluxDB 1.x and VictoriaMetrics harness: real servers on free loopback ports in temp dirs,
//! with blocking query helpers (plain HTTP/1.0 over `TcpStream`, so tests need no extra
//! client crate and can call them from sync code or `spawn_blocking`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::pki::{https, TestPki};
use super::{free_tcp_port, require_binary, ServiceProcess};

/// Percent-encodes a query-string component.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Minimal blocking HTTP/1.0 request; returns (status, body). HTTP/1.0 makes the server close
/// the connection after the response, so reading to EOF gets the whole body.
pub fn http(
    port: u16,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(parse_answer(&raw))
}

/// (status, body) of a raw HTTP/1.x answer.
pub fn parse_answer(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, rest.to_string())
}

/// A real `influxd` (1.x) on a free port, data in a temp dir.
pub struct Influxd {
    pub port: u16,
    proc: ServiceProcess,
    /// Set when the server speaks HTTPS ([`Influxd::start_https`]): the harness's own queries
    /// trust the test CA.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Influxd {
    pub fn start() -> Influxd {
        Self::start_on(free_tcp_port())
    }

    /// Starts on a chosen HTTP port (outage tests point a writer at the port first).
    pub fn start_on(port: u16) -> Influxd {
        Self::start_with(port, None)
    }

    /// HTTPS only (`https-enabled`), with the server certificate of `pki`; the harness
    /// queries it trusting `pki`'s CA.
    pub fn start_https(pki: &TestPki) -> Influxd {
        Self::start_with(free_tcp_port(), Some(pki))
    }

    fn start_with(port: u16, pki: Option<&TestPki>) -> Influxd {
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-influxd")
            .tempdir()
            .expect("temp dir for influxd");
        let rpc_port = free_tcp_port();
        write_config(dir.path(), port, rpc_port, pki);
        let proc = spawn(dir);
        let tls = pki.map(|p| p.client_config(false));
        let mut influxd = Influxd { port, proc, tls };
        influxd.wait_ready();
        influxd
    }

    /// With `auth-enabled`: an admin `user`/`password` (the first user may be created without
    /// credentials) and `database`, created as that user. Requests without them get 401.
    pub fn start_with_auth(user: &str, password: &str, database: &str) -> Influxd {
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-influxd-auth")
            .tempdir()
            .expect("temp dir for influxd");
        let port = free_tcp_port();
        write_config(dir.path(), port, free_tcp_port(), None);
        let conf = dir.path().join("influxd.conf");
        let text = std::fs::read_to_string(&conf).expect("read influxd.conf");
        std::fs::write(
            &conf,
            text.replace("auth-enabled = false", "auth-enabled = true"),
        )
        .expect("write influxd.conf");
        let proc = spawn(dir);
        let mut influxd = Influxd {
            port,
            proc,
            tls: None,
        };
        influxd.wait_ready();
        let q = |influxql: String, creds: &str| {
            let path = format!("/query?q={}{creds}", urlencode(&influxql));
            let (status, body) = influxd.call("POST", &path, b"").expect("influxd /query");
            assert_eq!(status, 200, "{influxql}: {body}");
        };
        q(
            format!("CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES"),
            "",
        );
        let creds = format!("&u={}&p={}", urlencode(user), urlencode(password));
        q(format!("CREATE DATABASE \"{database}\""), &creds);
        influxd
    }

    /// One request to the server, over TLS when it speaks HTTPS.
    pub fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        match &self.tls {
            Some(tls) => https(tls, self.port, method, path_and_query, body),
            None => http(self.port, method, path_and_query, body),
        }
    }

    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.proc.assert_running();
            if let Ok((204, _)) = self.call("GET", "/ping", b"") {
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "influxd did not answer /ping on port {} within 30s; log:\n{}",
                    self.port,
                    self.proc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn create_database(&self, name: &str) {
        let q = format!("CREATE DATABASE \"{}\"", name.replace('"', "\\\""));
        let (status, body) = self
            .call("POST", &format!("/query?q={}", urlencode(&q)), b"")
            .expect("influxd /query");
        assert_eq!(status, 200, "CREATE DATABASE {name}: {body}");
    }

    /// Runs InfluxQL against `db`; timestamps come back as RFC 3339 with ns precision unless
    /// the query asks otherwise via `epoch` (see [`Influxd::query_epoch_ns`]).
    pub fn query(&self, db: &str, influxql: &str) -> serde_json::Value {
        self.query_path(&format!(
            "/query?db={}&q={}",
            urlencode(db),
            urlencode(influxql)
        ))
    }

    /// Like [`Influxd::query`] with integer ns timestamps.
    pub fn query_epoch_ns(&self, db: &str, influxql: &str) -> serde_json::Value {
        self.query_path(&format!(
            "/query?db={}&epoch=ns&q={}",
            urlencode(db),
            urlencode(influxql)
        ))
    }

    fn query_path(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.call("GET", path, b"").expect("influxd /query");
        assert_eq!(status, 200, "query {path}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query answer is not JSON ({e}): {body}"))
    }

    /// Rows of the first series of the first result as arrays, empty when there is none.
    pub fn rows(&self, db: &str, influxql: &str) -> Vec<Vec<serde_json::Value>> {
        let v = self.query_epoch_ns(db, influxql);
        v["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| r.as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills the server and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.proc.log_path)
            .expect("reopen influxd log");
        let cmd = command(self.proc.dir.path());
        self.proc.child =
            Some(spawn_with_log(cmd, log).unwrap_or_else(|e| panic!("restart influxd: {e}")));
        self.wait_ready();
    }

    /// Freezes the server (SIGSTOP): it keeps its sockets, accepts connections into the
    /// backlog and answers nothing, like a hung process. [`Influxd::resume`] undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .proc
            .child
            .as_ref()
            .expect("influxd is running")
            .id()
            .to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Stops the server (SIGKILL), keeping its data for [`Influxd::restart`].
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

fn write_config(dir: &Path, http_port: u16, rpc_port: u16, pki: Option<&TestPki>) {
    let d = dir.display();
    let https = match pki {
        Some(p) => format!(
            "  https-enabled = true\n  https-certificate = {:?}\n  https-private-key = {:?}\n",
            p.server_cert.display().to_string(),
            p.server_key.display().to_string()
        ),
        None => String::new(),
    };
    let conf = format!(
        r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{d}/meta"

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[coordinator]
  log-queries-after = "0s"

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
{https}
[logging]
  level = "warn"

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
"#
    );
    std::fs::write(dir.join("influxd.conf"), conf).expect("write influxd.conf");
}

fn command(dir: &Path) -> Command {
    let bin = require_binary("influxd", "influxdb");
    let mut cmd = Command::new(bin);
    cmd.arg("-config").arg(dir.join("influxd.conf"));
    cmd
}

fn spawn(dir: tempfile::TempDir) -> ServiceProcess {
    let cmd = command(dir.path());
    ServiceProcess::spawn("influxd", cmd, dir)
}

fn spawn_with_log(mut cmd: Command, log: std::fs::File) -> std::io::Result<std::process::Child> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// A real single-node VictoriaMetrics, which accepts InfluxDB line protocol on `/write` and
/// `/api/v2/write`.
pub struct VictoriaMetrics {
    pub port: u16,
    proc: ServiceProcess,
    /// [`VictoriaMetrics::start_https`]: the server's certificate and key, and the harness's
    /// client trusting the test CA.
    https: Option<(TlsFiles, Arc<rustls::ClientConfig>)>,
}

/// Server certificate and key (PEM).
type TlsFiles = (std::path::PathBuf, std::path::PathBuf);

impl VictoriaMetrics {
    pub fn start() -> VictoriaMetrics {
        Self::start_with(None)
    }

    /// HTTPS only (`-tls`), with `pki`'s server certificate; the harness trusts `pki`'s CA.
    pub fn start_https(pki: &TestPki) -> VictoriaMetrics {
        Self::start_with(Some(pki))
    }

    fn start_with(pki: Option<&TestPki>) -> VictoriaMetrics {
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-vm")
            .tempdir()
            .expect("temp dir for victoria-metrics");
        let port = free_tcp_port();
        let https = pki.map(|p| {
            (
                (p.server_cert.clone(), p.server_key.clone()),
                p.client_config(false),
            )
        });
        let cmd = vm_command(dir.path(), port, https.as_ref().map(|h| &h.0));
        let proc = ServiceProcess::spawn("victoria-metrics", cmd, dir);
        let mut vm = VictoriaMetrics { port, proc, https };
        vm.wait_healthy();
        vm
    }

    /// One request, over TLS when the server speaks HTTPS.
    fn call(&self, method: &str, path_and_query: &str) -> std::io::Result<(u16, String)> {
        match &self.https {
            Some((_, tls)) => https(tls, self.port, method, path_and_query, b""),
            None => http(self.port, method, path_and_query, b""),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.https.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn wait_healthy(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.proc.assert_running();
            if let Ok((200, _)) = self.call("GET", "/health") {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "victoria-metrics not healthy on {} within 30s; log:\n{}",
                    self.port,
                    self.proc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server (SIGSTOP): connections are accepted into the backlog and nothing
    /// is answered, like a hung process. [`VictoriaMetrics::resume`] undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self
            .proc
            .child
            .as_ref()
            .expect("victoria-metrics is running")
            .id()
            .to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Stops the server (SIGKILL), keeping its data for [`VictoriaMetrics::restart`]: the
    /// port refuses connections meanwhile.
    pub fn stop(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again on the same port and data (after [`VictoriaMetrics::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.proc.log_path)
            .expect("reopen victoria-metrics log");
        let cmd = vm_command(
            self.proc.dir.path(),
            self.port,
            self.https.as_ref().map(|h| &h.0),
        );
        self.proc.child = Some(
            spawn_with_log(cmd, log).unwrap_or_else(|e| panic!("restart victoria-metrics: {e}")),
        );
        self.wait_healthy();
    }

    /// The remote-write endpoint.
    pub fn remote_write_url(&self) -> String {
        format!("{}://127.0.0.1:{}/api/v1/write", self.scheme(), self.port)
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    /// Makes recently ingested samples searchable.
    pub fn force_flush(&self) {
        let _ = self.call("GET", "/internal/force_flush");
    }

    /// `/api/v1/export` for a series selector: one JSON object per series line, with
    /// `metric`, `values` and `timestamps` (ms).
    pub fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        self.force_flush();
        let (status, body) = self
            .call(
                "GET",
                &format!("/api/v1/export?match%5B%5D={}", urlencode(selector)),
            )
            .expect("victoria-metrics export");
        assert_eq!(status, 200, "export {selector}: {body}");
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line ({e}): {l}")))
            .collect()
    }

    /// Instant query through `/api/v1/query`.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        self.force_flush();
        let (status, body) = self
            .call("GET", &format!("/api/v1/query?query={}", urlencode(promql)))
            .expect("victoria-metrics query");
        assert_eq!(status, 200, "query {promql}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("query answer is not JSON ({e}): {body}"))
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

fn vm_command(dir: &Path, port: u16, tls: Option<&TlsFiles>) -> Command {
    let bin = require_binary("victoria-metrics", "victoria-metrics");
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.join("data").display()))
        // Make fresh samples queryable at once instead of after the default 30s.
        .arg("-search.latencyOffset=0s")
        .arg("-search.disableCache")
        .arg("-loggerLevel=ERROR")
        .arg("-retentionPeriod=100y");
    if let Some((cert, key)) = tls {
        cmd.arg("-tls")
            .arg(format!("-tlsCertFile={}", cert.display()))
            .arg(format!("-tlsKeyFile={}", key.display()));
    }
    cmd
}

impl Influxd {
    /// Every row of every series of an InfluxQL answer (ns timestamps) as a map from column
    /// to value, tags included (columns of `SELECT *`, or the series' tags with `GROUP BY`),
    /// with nulls and empty tags left out: exact rows to compare against.
    pub fn row_maps(
        &self,
        db: &str,
        influxql: &str,
    ) -> Vec<std::collections::BTreeMap<String, serde_json::Value>> {
        let v = self.query_epoch_ns(db, influxql);
        let mut out = Vec::new();
        for series in v["results"][0]["series"].as_array().into_iter().flatten() {
            let columns: Vec<String> = series["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect();
            for row in series["values"].as_array().into_iter().flatten() {
                // Tags of a `GROUP BY` series.
                let mut m: std::collections::BTreeMap<String, serde_json::Value> = series["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.as_str().is_some_and(|s| !s.is_empty()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (c, v) in columns.iter().zip(row.as_array().into_iter().flatten()) {
                    if !v.is_null() {
                        m.insert(c.clone(), v.clone());
                    }
                }
                out.push(m);
            }
        }
        out
    }
}

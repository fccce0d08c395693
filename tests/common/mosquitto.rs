//! Mosquitto (2.x) harness: a real broker on a free loopback port with persistence in a temp
//! dir, restartable on the same port and data, and a publisher that uses `mosquitto_pub`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_tcp_port, require_binary, ServiceProcess};

pub struct Mosquitto {
    /// Plain MQTT listener.
    pub port: u16,
    /// Mutual-TLS listener and its certificates, from [`Mosquitto::start_tls`].
    pub tls: Option<TlsListener>,
    proc: ServiceProcess,
    restarts: u32,
}

/// A TLS listener that requires a client certificate; all files are PEM in the broker's temp
/// dir. The server certificate is for `localhost` and 127.0.0.1.
pub struct TlsListener {
    pub port: u16,
    pub ca_file: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that did not sign anything here, for negative tests.
    pub other_ca_file: PathBuf,
}

impl Mosquitto {
    /// Starts a broker with `persistence true`, `max_inflight_messages 1000` and
    /// `max_queued_messages 100000` (the settings sitewatch's module docs recommend).
    pub fn start() -> Mosquitto {
        Self::start_with(false)
    }

    /// Like [`Mosquitto::start`], plus a mutual-TLS listener with certificates made by the
    /// `openssl` command line tool.
    pub fn start_tls() -> Mosquitto {
        Self::start_with(true)
    }

    /// A broker with the queue limits the README gives for production
    /// (`max_inflight_messages`, `max_queued_messages`), to prove they hold.
    pub fn start_with_limits(max_inflight: usize, max_queued: usize) -> Mosquitto {
        Self::start_configured(false, max_inflight, max_queued)
    }

    fn start_with(tls: bool) -> Mosquitto {
        Self::start_configured(tls, 1000, 100_000)
    }

    fn start_configured(tls: bool, max_inflight: usize, max_queued: usize) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("sitewatch-mosquitto")
            .tempdir()
            .expect("temp dir for mosquitto");
        let port = free_tcp_port();
        let tls = tls.then(|| make_certificates(dir.path(), free_tcp_port()));
        write_config(dir.path(), port, tls.as_ref(), max_inflight, max_queued);
        let proc = spawn("mosquitto", dir);
        let mut m = Mosquitto {
            port,
            tls,
            proc,
            restarts: 0,
        };
        m.proc.wait_for_tcp(port, Duration::from_secs(10));
        if let Some(tls_port) = m.tls.as_ref().map(|t| t.port) {
            m.proc.wait_for_tcp(tls_port, Duration::from_secs(10));
        }
        m
    }

    /// Stops the broker gracefully (SIGTERM, so it writes its persistence file) and starts it
    /// again on the same port and data: sessions and queued messages survive.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Like [`Mosquitto::restart`] but with the persistence file removed: the broker comes
    /// back without sessions, so clients must subscribe again.
    pub fn restart_without_state(&mut self) {
        self.stop();
        let db = self.proc.dir.path().join("mosquitto.db");
        if db.exists() {
            std::fs::remove_file(&db).expect("remove mosquitto.db");
        }
        self.start_again();
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.proc.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_again(&mut self) {
        self.restarts += 1;
        // The temp dir moves into the new guard; the old guard gets a throwaway dir.
        let placeholder = tempfile::tempdir().expect("placeholder temp dir");
        let dir = std::mem::replace(&mut self.proc.dir, placeholder);
        self.proc = spawn(&format!("mosquitto-restart{}", self.restarts), dir);
        self.proc.wait_for_tcp(self.port, Duration::from_secs(10));
    }

    /// Publishes `payload` (any bytes, passed on stdin) with `mosquitto_pub`; waits for it.
    /// An empty payload with `retain` deletes the topic's retained message.
    pub fn publish(&self, topic: &str, payload: &[u8], qos: u8, retain: bool) {
        let bin = require_binary("mosquitto_pub", "mosquitto-clients");
        let mut cmd = Command::new(bin);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", topic, "-q", &qos.to_string()])
            // `-s` refuses empty input; `-n` sends a zero-length payload.
            .arg(if payload.is_empty() { "-n" } else { "-s" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if retain {
            cmd.arg("-r");
        }
        let mut child = cmd.spawn().expect("start mosquitto_pub");
        child
            .stdin
            .take()
            .expect("mosquitto_pub stdin")
            .write_all(payload)
            .expect("write payload to mosquitto_pub");
        let out = child.wait_with_output().expect("wait for mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub -t {topic} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Publishes each of `lines` as its own message (`mosquitto_pub -l`, one connection) at
    /// `qos`; returns once the broker has acknowledged every one.
    pub fn publish_lines(&self, topic: &str, lines: &[String], qos: u8) {
        let bin = require_binary("mosquitto_pub", "mosquitto-clients");
        let mut child = Command::new(bin)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", topic, "-q", &qos.to_string(), "-l"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto_pub");
        let mut stdin = child.stdin.take().expect("mosquitto_pub stdin");
        for line in lines {
            writeln!(stdin, "{line}").expect("write to mosquitto_pub");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("wait for mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub -l -t {topic} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

fn write_config(
    dir: &Path,
    port: u16,
    tls: Option<&TlsListener>,
    max_inflight: usize,
    max_queued: usize,
) {
    let mut conf = format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence true\n\
         persistence_location {}/\n\
         max_inflight_messages {max_inflight}\n\
         max_queued_messages {max_queued}\n\
         log_dest stdout\n\
         log_type all\n",
        dir.display()
    );
    // Started as root, mosquitto 2 drops to the `mosquitto` user, which cannot write our
    // temp dir; stay the user we are.
    let uid = std::fs::metadata(dir).map(|m| m.uid()).unwrap_or(1);
    if uid == 0 {
        conf.push_str("user root\n");
    }
    if let Some(t) = tls {
        conf.push_str(&format!(
            "listener {} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            t.port,
            t.ca_file.display(),
            super::pki::TestPki::server_cert(dir).display(),
            super::pki::TestPki::server_key(dir).display(),
        ));
    }
    std::fs::write(dir.join("mosquitto.conf"), conf).expect("write mosquitto.conf");
}

/// The test PKI of [`super::pki`] in the broker's dir, served on `port`.
fn make_certificates(dir: &Path, port: u16) -> TlsListener {
    let pki = super::pki::TestPki::make(dir);
    TlsListener {
        port,
        ca_file: pki.ca_file,
        client_cert: pki.client_cert,
        client_key: pki.client_key,
        other_ca_file: pki.other_ca_file,
    }
}

fn spawn(name: &str, dir: tempfile::TempDir) -> ServiceProcess {
    let bin = require_binary("mosquitto", "mosquitto");
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(dir.path().join("mosquitto.conf"));
    ServiceProcess::spawn(name, cmd, dir)
}

//! A real Modbus TCP server for integration tests: pymodbus (PyPI) running
//! `tests/data/modbus/server.py` on a free loopback port, serving the registers a test gives
//! it, stopped on drop. Only the addresses given exist; a read of any other answers
//! "illegal data address", as a device without that register does.
//!
//! pymodbus missing fails the test with the install command; nothing is skipped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{free_tcp_port, ServiceProcess};

/// The version `tests/run.sh` installs.
pub const PYMODBUS_PIN: &str = "pymodbus==3.11.4";

/// The registers and bits of one unit id, by 0-based wire address.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UnitData {
    pub holding: BTreeMap<u16, u16>,
    pub input: BTreeMap<u16, u16>,
    pub coil: BTreeMap<u16, bool>,
    pub discrete: BTreeMap<u16, bool>,
}

impl UnitData {
    /// Puts `words` at `address` onward in the holding (`input = false`) or input table.
    pub fn registers(&mut self, input: bool, address: u16, words: &[u16]) {
        let table = if input {
            &mut self.input
        } else {
            &mut self.holding
        };
        for (i, w) in words.iter().enumerate() {
            table.insert(address + i as u16, *w);
        }
    }
}

/// A Python that can import pymodbus: the project's test venv first, then `python3` on PATH.
pub fn pymodbus_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/snmpsim-venv/bin/python3");
    let candidates = [venv, PathBuf::from("python3")];
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import pymodbus.server, pymodbus.datastore"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py.clone();
        }
    }
    panic!(
        "pymodbus not found. Install it with: target/snmpsim-venv/bin/pip install '{PYMODBUS_PIN}' \
         (bash tests/run.sh creates that virtualenv and installs it)"
    );
}

/// A running pymodbus TCP server.
pub struct ModbusServer {
    pub port: u16,
    proc: ServiceProcess,
}

impl ModbusServer {
    /// Serves `units` (unit id → registers) until dropped.
    pub fn start(units: &BTreeMap<u8, UnitData>) -> ModbusServer {
        let python = pymodbus_python();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/modbus/server.py");
        let spec = serde_json::json!({
            "units": units.iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>(),
        });
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("sitewatch-modbus")
                .tempdir()
                .expect("temp dir for the Modbus server");
            let spec_path = dir.path().join("registers.json");
            std::fs::write(&spec_path, spec.to_string()).expect("write register spec");
            let port = free_tcp_port();
            let mut cmd = Command::new(&python);
            cmd.arg(&script).arg(&spec_path).arg(port.to_string());
            let mut proc = ServiceProcess::spawn("pymodbus", cmd, dir);
            // A port taken between free_tcp_port and the bind: try another.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(child) = proc.child.as_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                }
                if std::net::TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    // Another process may have taken the port first (then pymodbus exits on
                    // its bind error): only a pymodbus still running owns it.
                    std::thread::sleep(Duration::from_millis(300));
                    let alive = proc
                        .child
                        .as_mut()
                        .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                    if alive {
                        return ModbusServer { port, proc };
                    }
                    break;
                }
                if std::time::Instant::now() > deadline {
                    panic!(
                        "pymodbus did not listen on 127.0.0.1:{port} within 20s; log:\n{}",
                        proc.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("pymodbus exited at start; log:\n{}", proc.log());
        }
        panic!("pymodbus failed to start three times");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}

//! Modbus collector end to end, through the `sitewatch` binary: a real Modbus TCP server
//! (pymodbus) holds known register values for each shipped register map, sitewatch polls
//! it and writes to a real InfluxDB, and the test reads back names, scaling, enum states,
//! gaps, health rows and metrics. A device that accepts connections but never answers must
//! not delay the others. `check` must reject a missing map and a broken map with file:line.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sitewatch::collect::modbus::map::{load_dir, RegisterMap, Table};
use sitewatch::collect::registers::{encode, Raw};

use common::influx::Influxd;
use common::modbus::{ModbusServer, UnitData};
use common::sitewatch::Sitewatch;
use common::{eventually, sitewatch_bin};

const DB: &str = "sitewatch_modbus";

fn maps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mappings/modbus")
}

fn shipped(name: &str) -> RegisterMap {
    let maps = load_dir(&maps_dir()).expect("shipped maps load");
    maps.get(name)
        .unwrap_or_else(|| panic!("no shipped map {name}"))
        .as_ref()
        .clone()
}

/// Writes `raw` where `map` keeps `measurement.field` (with `phase`, if given), encoded the
/// way the map says the device encodes it.
fn put(
    unit: &mut UnitData,
    map: &RegisterMap,
    measurement: &str,
    field: &str,
    phase: Option<&str>,
    raw: Raw,
) {
    let p = map
        .points
        .iter()
        .find(|p| {
            &*p.measurement == measurement
                && &*p.field == field
                && p.tags
                    .iter()
                    .find(|(k, _)| k == "phase")
                    .map(|(_, v)| v.as_str())
                    == phase
        })
        .unwrap_or_else(|| panic!("{} has no {measurement}.{field} {phase:?}", map.name));
    match p.table {
        Table::Coil | Table::Discrete => {
            let Raw::Bool(b) = raw else {
                panic!("bits take bools")
            };
            let t = if p.table == Table::Coil {
                &mut unit.coil
            } else {
                &mut unit.discrete
            };
            t.insert(p.address, b);
        }
        Table::Holding | Table::Input => {
            let words = encode(p.ty, p.layout, raw)
                .unwrap_or_else(|| panic!("{raw:?} does not fit {:?}", p.ty));
            unit.registers(p.table == Table::Input, p.address, &words);
        }
    }
}

/// A real meter answers for every register of its block, documented or not: zeros there.
fn zeros(unit: &mut UnitData, input: bool, from: u16, to: u16) {
    for a in from..=to {
        unit.registers(input, a, &[0]);
    }
}

fn f(v: f64) -> Raw {
    Raw::Float(v)
}

fn i(v: i128) -> Raw {
    Raw::Int(v)
}

/// Eastron meter on unit 1: every phase value and the totals. Phase 3's power factor
/// (input 34-35) is missing from the device, inside a batched read.
fn meter() -> UnitData {
    let m = shipped("eastron-sdm630");
    let mut u = UnitData::default();
    zeros(&mut u, true, 0, 75);
    let ph = "power_meter_phase";
    for (phase, v, a, w, va) in [
        ("1", 230.1, 12.5, 2800.5, 2876.25),
        ("2", 231.4, 10.25, 2300.0, 2371.5),
        ("3", 229.8, 8.0, 1800.0, 1838.4),
    ] {
        put(&mut u, &m, ph, "voltage_v", Some(phase), f(v));
        put(&mut u, &m, ph, "current_a", Some(phase), f(a));
        put(&mut u, &m, ph, "power_w", Some(phase), f(w));
        put(&mut u, &m, ph, "apparent_power_va", Some(phase), f(va));
    }
    put(&mut u, &m, ph, "power_factor", Some("1"), f(0.98));
    put(&mut u, &m, ph, "power_factor", Some("2"), f(0.97));
    u.input.remove(&34);
    u.input.remove(&35);
    let t = "power_meter";
    put(&mut u, &m, t, "power_w", None, f(6900.5));
    put(&mut u, &m, t, "apparent_power_va", None, f(7086.15));
    put(&mut u, &m, t, "power_factor", None, f(0.974));
    put(&mut u, &m, t, "frequency_hz", None, f(49.98));
    put(&mut u, &m, t, "energy_kwh", None, f(123456.7));
    put(&mut u, &m, t, "export_energy_kwh", None, f(0.0));
    u
}

/// DSE GenComm on unit 2: the oil pressure sender is open circuit (sentinel 0xFFFC).
fn genset() -> UnitData {
    let m = shipped("dse-gencomm");
    let mut u = UnitData::default();
    zeros(&mut u, false, 1024, 1057);
    let g = "genset";
    put(&mut u, &m, g, "oil_pressure_kpa", None, i(0xFFFC));
    put(&mut u, &m, g, "coolant_temperature_c", None, i(-5));
    put(&mut u, &m, g, "fuel_level_pct", None, i(87));
    put(&mut u, &m, g, "charge_alternator_voltage_v", None, i(274));
    put(&mut u, &m, g, "battery_voltage_v", None, i(136));
    put(&mut u, &m, g, "engine_speed_rpm", None, i(1500));
    put(&mut u, &m, g, "frequency_hz", None, i(500));
    let p = "genset_phase";
    for (phase, v, a, w) in [
        ("1", 2301, 1234, -1500),
        ("2", 2299, 1200, 2500),
        ("3", 2310, 1190, 2400),
    ] {
        put(&mut u, &m, p, "voltage_v", Some(phase), i(v));
        put(&mut u, &m, p, "current_a", Some(phase), i(a));
        put(&mut u, &m, p, "power_w", Some(phase), i(w));
    }
    u
}

/// Daikin chiller on unit 3, running; its firmware lacks the Units register (316), so that
/// read answers "illegal data address".
fn chiller() -> UnitData {
    let m = shipped("daikin-microtech3-chiller");
    let mut u = UnitData::default();
    zeros(&mut u, false, 0, 20);
    let c = "cooling";
    put(&mut u, &m, c, "alarm", None, Raw::Bool(true));
    put(&mut u, &m, c, "evaporator_flow", None, Raw::Bool(true));
    put(&mut u, &m, c, "chiller_on", None, Raw::Bool(true));
    put(&mut u, &m, c, "mode", None, i(2));
    put(&mut u, &m, c, "setpoint_c", None, i(70));
    put(&mut u, &m, c, "cooling_capacity_pct", None, i(655));
    put(&mut u, &m, c, "system_state", None, i(3));
    put(&mut u, &m, c, "chilled_water_return_c", None, i(120));
    put(&mut u, &m, c, "chilled_water_supply_c", None, i(65));
    u
}

/// Accepts TCP connections and never answers: a device that hangs.
fn black_hole() -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_millis(10)));
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
            held.push(s);
            if held.len() > 200 {
                break;
            }
        }
    });
    (port, h)
}

fn config(influx: &Influxd, server: &ModbusServer, dead_port: u16) -> String {
    format!(
        r#"
[influx]
url = "{url}"
database = "{DB}"
flush_interval = "200ms"

[modbus]
maps_dir = "{maps}"
interval = "1s"
timeout = "1s"
retries = 1

[[modbus.device]]
name = "meter-1"
address = "{addr}"
unit_id = 1
map = "eastron-sdm630"
tags = {{ site = "dc1", room = "hall1" }}

[[modbus.device]]
name = "genset-1"
address = "{addr}"
unit_id = 2
map = "dse-gencomm"

[[modbus.device]]
name = "chiller-1"
address = "{addr}"
unit_id = 3
map = "daikin-microtech3-chiller"

[[modbus.device]]
name = "dead-1"
address = "127.0.0.1:{dead_port}"
map = "eastron-sdm630"
timeout = "1500ms"
"#,
        url = influx.url(),
        maps = maps_dir().display(),
        addr = server.address(),
    )
}

/// The newest row of `select` (time first), once there is one.
fn last_row(influx: &Influxd, select: &str) -> Vec<Value> {
    eventually(Duration::from_secs(30), select, || {
        influx
            .rows(DB, &format!("{select} ORDER BY time DESC LIMIT 1"))
            .pop()
    })
}

/// `row` (without its time) equals `want`, numbers compared as numbers (InfluxDB's JSON
/// prints the float 8.0 as 8).
#[track_caller]
fn assert_row(row: &[Value], want: &[Value]) {
    let same = row.len() == want.len()
        && row
            .iter()
            .zip(want)
            .all(|(a, b)| match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            });
    assert!(same, "row {row:?}\nwant {want:?}");
}

#[test]
fn shipped_maps_land_in_influxdb_with_names_scale_states_and_gaps() {
    let influx = Influxd::start();
    influx.create_database(DB);
    let units: BTreeMap<u8, UnitData> = [(1, meter()), (2, genset()), (3, chiller())].into();
    let server = ModbusServer::start(&units);
    let (dead_port, _hole) = black_hole();
    let sw = Sitewatch::start(&config(&influx, &server, dead_port), "info", &[]);

    // Meter: float32 values as the device wrote them, tagged by phase and the config's tags.
    let row = last_row(
        &influx,
        "SELECT voltage_v, current_a, power_w, apparent_power_va, power_factor FROM power_meter_phase WHERE device = 'meter-1' AND phase = '1' AND site = 'dc1' AND room = 'hall1'",
    );
    assert_row(
        &row[1..],
        &[
            json!(230.1),
            json!(12.5),
            json!(2800.5),
            json!(2876.25),
            json!(0.98),
        ],
    );
    // Phase 3's power factor register does not exist on the device: a gap, not a zero, and
    // the batch it was planned in still delivers its other values.
    let row = last_row(
        &influx,
        "SELECT voltage_v, current_a, power_factor FROM power_meter_phase WHERE device = 'meter-1' AND phase = '3'",
    );
    assert_row(&row[1..], &[json!(229.8), json!(8.0), Value::Null]);
    let row = last_row(
        &influx,
        "SELECT power_w, frequency_hz, energy_kwh, export_energy_kwh, power_factor FROM power_meter WHERE device = 'meter-1'",
    );
    assert_row(
        &row[1..],
        &[
            json!(6900.5),
            json!(49.98),
            json!(123456.7),
            json!(0.0),
            json!(0.974),
        ],
    );

    // Genset: decimal scaling (274 × 0.1 = 27.4), a signed 16-bit, signed and unsigned
    // 32-bit values, and the sentinel 0xFFFC left out.
    let row = last_row(
        &influx,
        "SELECT oil_pressure_kpa, coolant_temperature_c, fuel_level_pct, charge_alternator_voltage_v, battery_voltage_v, engine_speed_rpm, frequency_hz FROM genset WHERE device = 'genset-1'",
    );
    assert_row(
        &row[1..],
        &[
            Value::Null,
            json!(-5.0),
            json!(87.0),
            json!(27.4),
            json!(13.6),
            json!(1500.0),
            json!(50.0),
        ],
    );
    let row = last_row(
        &influx,
        "SELECT voltage_v, current_a, power_w FROM genset_phase WHERE device = 'genset-1' AND phase = '1'",
    );
    assert_row(&row[1..], &[json!(230.1), json!(123.4), json!(-1500.0)]);

    // Chiller: enum as code + state + severity, bools, °C × 10; the Units register the
    // firmware lacks is a gap.
    let row = last_row(
        &influx,
        "SELECT system_state, system_state_state, system_state_severity, mode_state, alarm, evaporator_flow, setpoint_c, cooling_capacity_pct, chilled_water_supply_c, chilled_water_return_c, units FROM cooling WHERE device = 'chiller-1'",
    );
    assert_row(
        &row[1..],
        &[
            json!(3),
            json!("run"),
            json!(0),
            json!("cool"),
            json!(true),
            json!(true),
            json!(7.0),
            json!(65.5),
            json!(6.5),
            json!(12.0),
            Value::Null,
        ],
    );

    // Health rows: the answering devices are up and count their exception answers.
    let row = last_row(
        &influx,
        "SELECT up, read_errors, registers, requests FROM modbus_poll WHERE device = 'chiller-1'",
    );
    // Holding 4..=16 in one read (13 registers), then holding 315 alone: an exception.
    assert_row(&row[1..], &[json!(true), json!(1), json!(13), json!(2)]);
    let row = last_row(
        &influx,
        "SELECT up, read_errors FROM modbus_poll WHERE device = 'meter-1'",
    );
    assert_row(&row[1..], &[json!(true), json!(1)]);

    // The hung device: up = false with the reason, after timeout × (1 + retries).
    let row = last_row(
        &influx,
        "SELECT up, error FROM modbus_poll WHERE device = 'dead-1'",
    );
    assert_eq!(row[1], json!(false));
    let error = row[2].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("no answer from 127.0.0.1:{dead_port} unit 1"))
            && error.contains("1.5s"),
        "{error}"
    );

    // ... and it does not delay the others: with the dead device taking 3 s per poll, the
    // meter still writes a health row about every second.
    std::thread::sleep(Duration::from_secs(6));
    let times: Vec<i64> = influx
        .rows(
            DB,
            "SELECT up FROM modbus_poll WHERE device = 'meter-1' AND time > now() - 5s",
        )
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    assert!(
        times.len() >= 3,
        "meter polls in the last 5 s: {}",
        times.len()
    );
    // Were the meter waiting on the dead device, its polls would be 3 s apart; the bound
    // leaves room for a loaded machine.
    for w in times.windows(2) {
        let gap_s = (w[1] - w[0]) as f64 / 1e9;
        assert!(
            gap_s < 2.5,
            "meter polls {gap_s:.2} s apart while the dead device hangs"
        );
    }
    let dead_down: f64 = influx.rows(
        DB,
        "SELECT count(up) FROM modbus_poll WHERE device = 'dead-1' AND up = false",
    )[0][1]
        .as_f64()
        .unwrap();
    assert!(dead_down >= 2.0, "dead-1 down rows: {dead_down}");

    // Metrics: exceptions and timeouts counted by reason, polls by result.
    let m = sw.metrics();
    let metric = |name: &str, labels: &[&str]| common::sitewatch::metric_sum(&m, name, labels);
    assert!(
        metric(
            "sitewatch_modbus_errors_total",
            &["reason=\"illegal_address\""]
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric("sitewatch_modbus_errors_total", &["reason=\"timeout\""]) >= 1.0,
        "{m}"
    );
    assert!(
        metric("sitewatch_modbus_polls_total", &["result=\"ok\""]) >= 9.0,
        "{m}"
    );
    assert!(
        metric("sitewatch_modbus_polls_total", &["result=\"timeout\""]) >= 1.0,
        "{m}"
    );
    assert!(
        metric("sitewatch_modbus_device_up", &["device=\"dead-1\""]) == 0.0,
        "{m}"
    );
    assert!(
        metric("sitewatch_modbus_device_up", &["device=\"meter-1\""]) == 1.0,
        "{m}"
    );

    // `sitewatch once`: one poll of every device, as line protocol on stdout.
    let out = Command::new(sitewatch_bin())
        .args(["once", "--config"])
        .arg(&sw.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{stdout}"))
            .to_string()
    };
    let l = line("cooling,device=chiller-1 ");
    assert!(
        l.contains("system_state=3i")
            && l.contains("system_state_state=\"run\"")
            && l.contains("setpoint_c=7"),
        "{l}"
    );
    assert!(!l.contains("units"), "{l}");
    assert!(line("genset,device=genset-1 ").contains("battery_voltage_v=13.6"));
    assert!(line("modbus_poll,device=dead-1 ").contains("up=false"));
    drop(server);
}

fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(sitewatch_bin())
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_rejects_a_missing_map_and_a_broken_map_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    for entry in std::fs::read_dir(maps_dir()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, maps.join(p.file_name().unwrap())).unwrap();
    }
    let body = |map: &str| {
        format!(
            "[influx]\nurl = \"http://127.0.0.1:1\"\ndatabase = \"x\"\n\n[modbus]\nmaps_dir = \"maps\"\n\n[[modbus.device]]\nname = \"meter-1\"\naddress = \"127.0.0.1\"\nmap = \"{map}\"\n"
        )
    };
    let cfg = dir.path().join("sitewatch.toml");

    // The shipped maps pass, relative to the config file's directory.
    std::fs::write(&cfg, body("eastron-sdm630")).unwrap();
    let (code, stdout, stderr) = check(&cfg);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("modbus: 1 device(s), 3 register map(s)"),
        "{stdout}"
    );

    // A map that does not exist: the device's line in the config, and the known maps.
    std::fs::write(&cfg, body("eastron-sdm360")).unwrap();
    let (code, _, stderr) = check(&cfg);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("sitewatch.toml:11: [[modbus.device]] \"meter-1\": map \"eastron-sdm360\" does not exist")
            && stderr.contains("known maps: daikin-microtech3-chiller, dse-gencomm, eastron-sdm630"),
        "{stderr}"
    );

    // Overlapping registers in a map: that map's file and line.
    let broken = "description = \"x\"\n\n[[point]]\nmeasurement = \"m\"\nfield = \"a_v\"\naddress = 0\ntype = \"float32\"\n\n[[point]]\nmeasurement = \"m\"\nfield = \"b_v\"\naddress = 1\ntype = \"uint16\"\n";
    std::fs::write(maps.join("broken.toml"), broken).unwrap();
    std::fs::write(&cfg, body("eastron-sdm630")).unwrap();
    let (code, _, stderr) = check(&cfg);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "broken.toml:9: holding 1 (uint16) overlaps holding 0 (float32) defined at line 3"
        ),
        "{stderr}"
    );
}

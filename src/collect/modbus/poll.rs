//! One poll of one device over Modbus TCP: the planned reads, each bounded by the timeout and
//! retried on a broken connection, their words decoded into samples, and the `modbus_poll`
//! health sample.
//!
//! What can go wrong, and what it becomes:
//!
//! | what | the poll | counted as (`sitewatch_modbus_errors_total{reason}`) |
//! |---|---|---|
//! | no TCP connection (refused, unreachable, connect timeout) | `up = false`, `error` says why | `connect` |
//! | a request unanswered within `timeout`, after `retries` reconnects | `up = false` | `timeout` |
//! | the connection breaks or the answer does not match the request | reconnect and retry; `up = false` when retries run out | `transport` |
//! | the connection kept from the last poll was closed by the device (idle timeout) | one reconnect that does not count against `retries` | not an error |
//! | a gateway answers 0x0A/0x0B (the RTU device behind it is silent) | `up = false` | `gateway` |
//! | an exception for one read (illegal address, illegal function, busy, ...) | `up = true`; that read's fields are left out (a gap) | `illegal_address`, `illegal_function`, ... |
//! | a raw value listed in the map's `invalid` (a sentinel), NaN or infinity | that field is left out | not an error |
//!
//! A batched read answered with "illegal data address" is retried point by point, once, and
//! the device is remembered to need single reads for that batch: one register a firmware
//! does not have costs its own field, not its neighbours'.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_modbus::client::{Client, Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};

use super::map::{Point, RegisterMap, Table};
use super::plan::{self, Read};
use crate::collect::registers::{decode, Raw};
use crate::collect::schedule::PollResult;
use crate::model::{now_ns, FieldValue, Sample, SeriesKey, TagSet};

/// The health measurement written once per poll of each device.
pub const POLL_MEASUREMENT: &str = "modbus_poll";

/// A device as polled: its config, its map and the reads planned from it.
#[derive(Debug)]
pub struct DeviceRt {
    pub name: Arc<str>,
    /// `host:port`, resolved at each connect (a DNS change is followed).
    pub address: String,
    pub unit_id: u8,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub map: Arc<RegisterMap>,
    pub reads: Vec<Read>,
    /// `device` plus the config's tags: the health row's tags.
    pub base_tags: TagSet,
    /// Per point: its measurement with the base tags and the map's own tags.
    pub series: Vec<SeriesKey>,
}

impl DeviceRt {
    pub fn new(
        name: &str,
        address: String,
        unit_id: u8,
        timing: (Duration, Duration, u32),
        map: Arc<RegisterMap>,
        max_gap: u16,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> DeviceRt {
        let device_tag = [("device", name)];
        let config_tags = tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let base_tags = TagSet::new(config_tags.clone().chain(device_tag));
        let series = map
            .points
            .iter()
            .map(|p| {
                let point_tags = p.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                let tags = TagSet::new(config_tags.clone().chain(point_tags).chain(device_tag));
                SeriesKey::new(p.measurement.clone(), tags)
            })
            .collect();
        let reads = plan::plan(&map.points, map.max_gap.unwrap_or(max_gap));
        DeviceRt {
            name: name.into(),
            address,
            unit_id,
            interval: timing.0,
            timeout: timing.1,
            retries: timing.2,
            map,
            reads,
            base_tags,
            series,
        }
    }
}

/// What a device keeps between polls.
#[derive(Default)]
pub struct DeviceState {
    ctx: Option<Context>,
    /// Planned reads (by index) the device rejected as a batch: read point by point.
    split: HashSet<usize>,
    /// Points whose read failed last poll, so a lasting failure is logged once.
    failing: HashSet<usize>,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("connected", &self.ctx.is_some())
            .field("split", &self.split)
            .finish()
    }
}

/// Why a device did not answer; the text goes into `modbus_poll` `error`.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot resolve {address}: {message}")]
    Resolve { address: String, message: String },
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("no connection to {address} within {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    #[error("no answer from {address} unit {unit_id} to a read of {read} within {timeout:?}")]
    Timeout {
        address: String,
        unit_id: u8,
        read: String,
        timeout: Duration,
    },
    #[error("connection to {address} failed during a read of {read}: {message}")]
    Transport {
        address: String,
        read: String,
        message: String,
    },
    #[error("gateway {address} reports that unit {unit_id} does not answer ({code}); check the RTU wiring, the unit id and the gateway's serial settings")]
    Gateway {
        address: String,
        unit_id: u8,
        code: &'static str,
    },
}

impl PollError {
    /// The `reason` label of `sitewatch_modbus_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PollError::Resolve { .. }
            | PollError::Connect { .. }
            | PollError::ConnectTimeout { .. } => "connect",
            PollError::Timeout { .. } => "timeout",
            PollError::Transport { .. } => "transport",
            PollError::Gateway { .. } => "gateway",
        }
    }
}

/// The `reason` label of an exception answer.
pub fn exception_reason(code: ExceptionCode) -> &'static str {
    match code {
        ExceptionCode::IllegalFunction => "illegal_function",
        ExceptionCode::IllegalDataAddress => "illegal_address",
        ExceptionCode::IllegalDataValue => "illegal_value",
        ExceptionCode::ServerDeviceFailure => "device_failure",
        ExceptionCode::ServerDeviceBusy | ExceptionCode::Acknowledge => "busy",
        ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice => "gateway",
        _ => "exception",
    }
}

/// Words of a register read or bits of a coil/discrete read.
enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

enum ReadFailure {
    /// The device answered with an exception: this read has no data, the device is up.
    Exception(ExceptionCode),
    /// The device is not answering: the poll stops here.
    Down(PollError),
}

#[derive(Default)]
struct Stats {
    requests: u64,
    registers: u64,
    read_errors: u64,
    /// The connection is left from an earlier poll and has not answered in this one yet: a
    /// device or gateway that closes idle connections breaks it without being down, so its
    /// first transport error gets a reconnect that does not count against `retries`.
    reused: bool,
}

async fn connect(rt: &DeviceRt) -> Result<Context, PollError> {
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(
        rt.timeout,
        tokio::net::lookup_host(rt.address.as_str()),
    )
    .await
    {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => {
            return Err(PollError::Resolve {
                address: rt.address.clone(),
                message: e.to_string(),
            })
        }
        Err(_) => {
            return Err(PollError::Resolve {
                address: rt.address.clone(),
                message: format!("no answer from the resolver within {:?}", rt.timeout),
            })
        }
    };
    let Some(addr) = addrs.first().copied() else {
        return Err(PollError::Resolve {
            address: rt.address.clone(),
            message: "no address".into(),
        });
    };
    match tokio::time::timeout(
        rt.timeout,
        tokio_modbus::client::tcp::connect_slave(addr, Slave(rt.unit_id)),
    )
    .await
    {
        Ok(Ok(ctx)) => Ok(ctx),
        Ok(Err(source)) => Err(PollError::Connect {
            address: rt.address.clone(),
            source,
        }),
        Err(_) => Err(PollError::ConnectTimeout {
            address: rt.address.clone(),
            timeout: rt.timeout,
        }),
    }
}

async fn send(ctx: &mut Context, read: &Read) -> tokio_modbus::Result<Data> {
    Ok(match read.table {
        Table::Holding => ctx
            .read_holding_registers(read.start, read.count)
            .await?
            .map(Data::Words),
        Table::Input => ctx
            .read_input_registers(read.start, read.count)
            .await?
            .map(Data::Words),
        Table::Coil => ctx
            .read_coils(read.start, read.count)
            .await?
            .map(Data::Bits),
        Table::Discrete => ctx
            .read_discrete_inputs(read.start, read.count)
            .await?
            .map(Data::Bits),
    })
}

/// One request, reconnecting and retrying up to `retries` times when the connection fails.
async fn request(
    rt: &DeviceRt,
    state: &mut DeviceState,
    read: &Read,
    stats: &mut Stats,
) -> Result<Data, ReadFailure> {
    let mut attempt = 0;
    loop {
        let failure = match state.ctx.as_mut() {
            None => match connect(rt).await {
                Ok(ctx) => {
                    state.ctx = Some(ctx);
                    continue;
                }
                Err(e) => e,
            },
            Some(ctx) => {
                stats.requests += 1;
                match tokio::time::timeout(rt.timeout, send(ctx, read)).await {
                    Ok(Ok(Ok(data))) => {
                        let n = match &data {
                            Data::Words(w) => w.len(),
                            Data::Bits(b) => b.len(),
                        };
                        if n < usize::from(read.count) {
                            PollError::Transport {
                                address: rt.address.clone(),
                                read: read.location(),
                                message: format!("answer holds {n} values, {} asked", read.count),
                            }
                        } else {
                            stats.registers += u64::from(read.count);
                            stats.reused = false;
                            return Ok(data);
                        }
                    }
                    Ok(Ok(Err(
                        code @ (ExceptionCode::GatewayPathUnavailable
                        | ExceptionCode::GatewayTargetDevice),
                    ))) => {
                        return Err(ReadFailure::Down(PollError::Gateway {
                            address: rt.address.clone(),
                            unit_id: rt.unit_id,
                            code: if code == ExceptionCode::GatewayTargetDevice {
                                "exception 0x0B, target device failed to respond"
                            } else {
                                "exception 0x0A, gateway path unavailable"
                            },
                        }))
                    }
                    Ok(Ok(Err(code))) => {
                        stats.reused = false;
                        return Err(ReadFailure::Exception(code));
                    }
                    Ok(Err(e)) => PollError::Transport {
                        address: rt.address.clone(),
                        read: read.location(),
                        message: e.to_string(),
                    },
                    Err(_) => PollError::Timeout {
                        address: rt.address.clone(),
                        unit_id: rt.unit_id,
                        read: read.location(),
                        timeout: rt.timeout,
                    },
                }
            }
        };
        // The connection is in an unknown state (a late answer would be taken for the next
        // request's): drop it, and connect afresh for the retry.
        if let Some(mut ctx) = state.ctx.take() {
            let _ = tokio::time::timeout(Duration::from_millis(100), ctx.disconnect()).await;
        }
        if std::mem::take(&mut stats.reused) && matches!(failure, PollError::Transport { .. }) {
            tracing::debug!(device = %rt.name, error = %failure, "kept Modbus connection was closed; reconnecting");
            continue;
        }
        if attempt >= rt.retries {
            return Err(ReadFailure::Down(failure));
        }
        attempt += 1;
        tracing::debug!(device = %rt.name, error = %failure, attempt, "Modbus request failed; reconnecting");
    }
}

/// The raw value of `point` from the data of the read that covers it.
fn raw_of(point: &Point, read: &Read, data: &Data) -> Option<Raw> {
    let at = usize::from(point.address - read.start);
    match data {
        Data::Bits(bits) => bits.get(at).map(|&b| Raw::Bool(b)),
        Data::Words(words) => {
            let w = words.get(at..at + usize::from(point.ty.words()))?;
            decode(point.ty, point.layout, w, point.bit)
        }
    }
}

/// The fields one point's raw value becomes; empty for a sentinel or a non-finite number.
pub fn fields_of(point: &Point, raw: Raw) -> Vec<(Arc<str>, FieldValue)> {
    if point.invalid.iter().any(|s| s.matches(raw)) {
        return Vec::new();
    }
    match raw {
        Raw::Bool(b) => vec![(point.field.clone(), FieldValue::Bool(b))],
        Raw::Int(code) if point.states.is_some() || point.severity.is_some() => {
            let Ok(code) = i64::try_from(code) else {
                return Vec::new();
            };
            let mut out = vec![(point.field.clone(), FieldValue::Int(code))];
            if let Some(state) = point.states.as_ref().and_then(|m| m.get(&code)) {
                out.push((point.state_field.clone(), FieldValue::Str(state.clone())));
            }
            if let Some(sev) = point.severity.as_ref().and_then(|m| m.get(&code)) {
                out.push((point.severity_field.clone(), FieldValue::Int(*sev)));
            }
            out
        }
        raw => {
            let v = point.linear.apply(raw.as_f64());
            if v.is_finite() {
                vec![(point.field.clone(), FieldValue::Float(v))]
            } else {
                Vec::new()
            }
        }
    }
}

/// Polls `rt` once: its samples plus `modbus_poll`.
pub async fn poll_device(rt: &DeviceRt, state: &mut DeviceState) -> PollResult {
    let started = Instant::now();
    let ts = now_ns();
    let mut stats = Stats {
        reused: state.ctx.is_some(),
        ..Stats::default()
    };
    let mut raws: Vec<Option<Raw>> = vec![None; rt.map.points.len()];
    let mut failed_now: HashSet<usize> = HashSet::new();
    let mut down: Option<PollError> = None;

    'reads: for (ri, planned) in rt.reads.iter().enumerate() {
        let mut queue: Vec<Read> = if state.split.contains(&ri) {
            plan::single(&rt.map.points, planned)
        } else {
            vec![planned.clone()]
        };
        while let Some(read) = queue.pop() {
            match request(rt, state, &read, &mut stats).await {
                Ok(data) => {
                    for &i in &read.points {
                        raws[i] = raw_of(&rt.map.points[i], &read, &data);
                    }
                }
                Err(ReadFailure::Exception(ExceptionCode::IllegalDataAddress))
                    if read.points.len() > 1 =>
                {
                    tracing::info!(
                        device = %rt.name,
                        read = %read.location(),
                        "device rejects this batched read (illegal data address); reading its points one by one from now on"
                    );
                    state.split.insert(ri);
                    queue.extend(plan::single(&rt.map.points, &read));
                }
                Err(ReadFailure::Exception(code)) => {
                    let reason = exception_reason(code);
                    stats.read_errors += 1;
                    metrics::counter!("sitewatch_modbus_errors_total", "reason" => reason)
                        .increment(1);
                    for &i in &read.points {
                        failed_now.insert(i);
                        if !state.failing.contains(&i) {
                            let p = &rt.map.points[i];
                            tracing::warn!(
                                device = %rt.name,
                                map = %rt.map.name,
                                point = %p.location(),
                                field = %p.field,
                                exception = ?code,
                                "Modbus read answered with an exception; the field is left out until it reads again (check the register map {}:{} against the device's firmware)",
                                rt.map.path.display(),
                                p.line
                            );
                        }
                    }
                }
                Err(ReadFailure::Down(e)) => {
                    down = Some(e);
                    break 'reads;
                }
            }
        }
    }
    if down.is_none() {
        state.failing = failed_now;
    }

    let duration = started.elapsed().as_secs_f64();
    let result = match &down {
        None => "ok",
        Some(PollError::Timeout { .. } | PollError::ConnectTimeout { .. }) => "timeout",
        Some(_) => "error",
    };
    metrics::counter!("sitewatch_modbus_polls_total", "result" => result).increment(1);
    metrics::counter!(
        "sitewatch_modbus_device_polls_total",
        "device" => rt.name.to_string(),
        "result" => result
    )
    .increment(1);
    metrics::histogram!("sitewatch_modbus_poll_duration_seconds").record(duration);
    metrics::counter!("sitewatch_modbus_requests_total").increment(stats.requests);
    if let Some(e) = &down {
        metrics::counter!("sitewatch_modbus_errors_total", "reason" => e.reason()).increment(1);
    }

    let mut samples = build_samples(rt, &raws, ts);
    let mut health = Sample::new(SeriesKey::new(POLL_MEASUREMENT, rt.base_tags.clone()), ts)
        .with_field("up", FieldValue::Bool(down.is_none()))
        .with_field("duration_s", FieldValue::Float(duration))
        .with_field("registers", FieldValue::Int(stats.registers as i64))
        .with_field("requests", FieldValue::Int(stats.requests as i64))
        .with_field("read_errors", FieldValue::Int(stats.read_errors as i64));
    if let Some(e) = &down {
        // Debug: the schedule logs the device going down and coming back, once each.
        tracing::debug!(device = %rt.name, error = %e, "Modbus poll failed");
        health = health.with_field("error", FieldValue::Str(e.to_string().into()));
    }
    samples.push(health);
    PollResult {
        samples,
        up: down.is_none(),
        error: down.map(|e| e.to_string()),
    }
}

/// Groups the points' fields into one sample per series, in map order.
fn build_samples(rt: &DeviceRt, raws: &[Option<Raw>], ts: i64) -> Vec<Sample> {
    let mut samples: Vec<Sample> = Vec::new();
    let mut index: HashMap<&SeriesKey, usize> = HashMap::new();
    for (i, raw) in raws.iter().enumerate() {
        let Some(raw) = raw else { continue };
        let fields = fields_of(&rt.map.points[i], *raw);
        if fields.is_empty() {
            continue;
        }
        let key = &rt.series[i];
        let at = *index.entry(key).or_insert_with(|| {
            samples.push(Sample::new(key.clone(), ts));
            samples.len() - 1
        });
        samples[at].fields.extend(fields);
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn map(text: &str) -> RegisterMap {
        RegisterMap::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn fields_follow_naming_scale_enum_and_sentinels() {
        let m = map(r#"
[[point]]
measurement = "genset"
field = "battery_voltage_v"
address = 0
type = "uint16"
scale = 0.1
invalid = [65532]

[[point]]
measurement = "genset"
field = "control_mode"
address = 1
type = "uint16"
states = { 0 = "stop", 1 = "auto" }
severity = { 0 = 1, 1 = 0 }

[[point]]
measurement = "genset"
field = "alarm"
table = "coil"
address = 0
type = "bool"
"#);
        let p = &m.points;
        assert_eq!(
            fields_of(&p[0], Raw::Int(14)),
            vec![("battery_voltage_v".into(), FieldValue::Float(1.4))]
        );
        assert!(fields_of(&p[0], Raw::Int(65532)).is_empty());
        assert_eq!(
            fields_of(&p[1], Raw::Int(1)),
            vec![
                ("control_mode".into(), FieldValue::Int(1)),
                ("control_mode_state".into(), FieldValue::Str("auto".into())),
                ("control_mode_severity".into(), FieldValue::Int(0)),
            ]
        );
        // An unknown code keeps the code, without a state or severity to alarm on.
        assert_eq!(
            fields_of(&p[1], Raw::Int(9)),
            vec![("control_mode".into(), FieldValue::Int(9))]
        );
        assert_eq!(
            fields_of(&p[2], Raw::Bool(true)),
            vec![("alarm".into(), FieldValue::Bool(true))]
        );
    }

    #[test]
    fn non_finite_floats_are_gaps() {
        let m = map(
            "[[point]]\nmeasurement = \"m\"\nfield = \"x_v\"\naddress = 0\ntype = \"float32\"\n",
        );
        assert!(fields_of(&m.points[0], Raw::Float(f64::NAN)).is_empty());
        assert!(fields_of(&m.points[0], Raw::Float(f64::INFINITY)).is_empty());
    }

    #[test]
    fn samples_group_by_measurement_and_tags() {
        let m = Arc::new(map(r#"
[[point]]
measurement = "power_meter"
field = "voltage_v"
tags = { phase = "1" }
table = "input"
address = 0
type = "uint16"

[[point]]
measurement = "power_meter"
field = "current_a"
tags = { phase = "1" }
table = "input"
address = 1
type = "uint16"

[[point]]
measurement = "power_meter"
field = "voltage_v"
tags = { phase = "2" }
table = "input"
address = 2
type = "uint16"
"#));
        let tags = [("site".to_string(), "dc1".to_string())]
            .into_iter()
            .collect();
        let rt = DeviceRt::new(
            "m1",
            "127.0.0.1:502".into(),
            1,
            (Duration::from_secs(1), Duration::from_secs(1), 0),
            m,
            8,
            &tags,
        );
        assert_eq!(rt.reads.len(), 1);
        let s = build_samples(&rt, &[Some(Raw::Int(230)), Some(Raw::Int(5)), None], 7);
        assert_eq!(s.len(), 1, "phase 2 had no value: no sample");
        assert_eq!(
            s[0].series.to_string(),
            "power_meter,device=m1,phase=1,site=dc1"
        );
        assert_eq!(s[0].fields.len(), 2);
        assert_eq!(rt.base_tags.get("device"), Some("m1"));
    }

    /// A Modbus TCP server that answers one read of holding registers (all words `value`)
    /// per connection, then closes it: a gateway that drops idle connections.
    async fn one_answer_per_connection(value: u16) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 12];
                if s.read_exact(&mut req).await.is_err() {
                    continue;
                }
                let count = u16::from_be_bytes([req[10], req[11]]);
                let mut resp = req[..4].to_vec(); // transaction and protocol id
                resp.extend_from_slice(&(3 + 2 * count).to_be_bytes());
                resp.extend_from_slice(&[req[6], req[7], (2 * count) as u8]);
                for _ in 0..count {
                    resp.extend_from_slice(&value.to_be_bytes());
                }
                let _ = s.write_all(&resp).await;
                // Dropped here: the connection closes after one answer.
            }
        });
        port
    }

    #[tokio::test]
    async fn a_connection_closed_between_polls_is_reopened_without_a_failed_poll() {
        let port = one_answer_per_connection(230).await;
        let m = Arc::new(map(
            "[[point]]\nmeasurement = \"m\"\nfield = \"voltage_v\"\naddress = 3\ntype = \"uint16\"\n",
        ));
        // No retries: only the free reconnect of a kept connection can save the second poll.
        let rt = DeviceRt::new(
            "gw",
            format!("127.0.0.1:{port}"),
            1,
            (Duration::from_secs(1), Duration::from_secs(2), 0),
            m,
            8,
            &Default::default(),
        );
        let mut state = DeviceState::default();
        for poll in 0..3 {
            let r = poll_device(&rt, &mut state).await;
            assert!(r.up, "poll {poll}: {:?}", r.samples);
            assert_eq!(
                r.samples[0].field("voltage_v"),
                Some(&FieldValue::Float(230.0))
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_down_with_the_reason() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let m = Arc::new(map(
            "[[point]]\nmeasurement = \"m\"\nfield = \"x\"\naddress = 0\ntype = \"uint16\"\n",
        ));
        let rt = DeviceRt::new(
            "dead",
            format!("127.0.0.1:{port}"),
            1,
            (Duration::from_secs(1), Duration::from_millis(500), 1),
            m,
            8,
            &Default::default(),
        );
        let r = poll_device(&rt, &mut DeviceState::default()).await;
        assert!(!r.up);
        assert_eq!(r.samples.len(), 1);
        let h = &r.samples[0];
        assert_eq!(&*h.series.measurement, POLL_MEASUREMENT);
        assert_eq!(h.field("up"), Some(&FieldValue::Bool(false)));
        match h.field("error") {
            Some(FieldValue::Str(e)) => assert!(e.contains("cannot connect to 127.0.0.1"), "{e}"),
            other => panic!("no error field: {other:?}"),
        }
    }
}

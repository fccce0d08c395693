//! [`ModbusSource`]: the `[modbus]` table checked against the register maps, and the
//! collector the topology runs (one scheduled task per device, `--shard` honoured).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;

use super::config::ModbusConfig;
use super::map::{self, valid_name, MapError, RegisterMap};
use super::poll::{poll_device, DeviceRt, DeviceState};
use crate::collect::schedule::{run_device, DevicePoller, PollResult, Slot};
use crate::collect::shard::retain_owned;
use crate::collect::{BoxError, Source, SourceContext, SourceOptions};
use crate::config::{line_col, LoadedConfig};
use crate::model::Sample;

const POLLS_METRIC: &str = "sitewatch_modbus_polls_total";

#[derive(Debug, thiserror::Error)]
pub enum ModbusError {
    #[error(transparent)]
    Map(#[from] MapError),
    #[error("{path}:{line}: [[modbus.device]] {device:?}: {message}")]
    Device {
        path: PathBuf,
        line: usize,
        device: String,
        message: String,
    },
    #[error("{path}: [modbus]: {message}")]
    Config { path: PathBuf, message: String },
}

/// The Modbus collector: every device this instance polls, with its map and read plan.
#[derive(Debug)]
pub struct ModbusSource {
    devices: Vec<Arc<DeviceRt>>,
    concurrency: usize,
    maps: usize,
    left_to_other_shards: usize,
    /// Cluster mode: each device is the unit `modbus:<name>`, polled while this member owns it.
    cluster: Option<crate::cluster::Ownership>,
}

/// Builds the collector from `[modbus]`, or `None` without that table. Every device is checked
/// (map exists, address, timings) before the shard filter, so `check` on any instance catches
/// a mistake in any device.
pub fn source(
    cfg: &LoadedConfig,
    opts: SourceOptions,
) -> Result<Option<Box<dyn Source>>, BoxError> {
    let Some(mc) = &cfg.config.modbus else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&cfg.path).unwrap_or_default();
    let dir = crate::paths::find_mappings("modbus", &mc.maps_dir, &cfg.base_dir)
        .map_err(|e| cfg.invalid(format!("[modbus] maps_dir: {e}")))?;
    let maps = map::load_dir(&dir)?;
    let source = ModbusSource::build(mc, &maps, &cfg.path, &text, opts)?;
    Ok(Some(Box::new(source)))
}

impl ModbusSource {
    /// `config_text` is the config file's text, for the line numbers in messages.
    pub fn build(
        mc: &ModbusConfig,
        maps: &BTreeMap<String, Arc<RegisterMap>>,
        config_path: &std::path::Path,
        config_text: &str,
        opts: SourceOptions,
    ) -> Result<ModbusSource, ModbusError> {
        let table_error = |message: String| ModbusError::Config {
            path: config_path.to_path_buf(),
            message,
        };
        if mc.concurrency == 0 {
            return Err(table_error(
                "concurrency = 0 would never poll: use 1 or more".into(),
            ));
        }
        if mc.interval.is_zero() || mc.timeout.is_zero() {
            return Err(table_error(
                "interval and timeout must be longer than 0s".into(),
            ));
        }
        let mut devices = Vec::with_capacity(mc.devices.len());
        let mut names: HashMap<&str, usize> = HashMap::new();
        for d in &mc.devices {
            let name = d.name.get_ref().as_str();
            let line_of = |span: std::ops::Range<usize>| line_col(config_text, span.start).0;
            let fail = |span: std::ops::Range<usize>, message: String| ModbusError::Device {
                path: config_path.to_path_buf(),
                line: line_of(span),
                device: name.to_string(),
                message,
            };
            if name.trim().is_empty() {
                return Err(fail(
                    d.name.span(),
                    "name is empty: it becomes the `device` tag of every sample".into(),
                ));
            }
            if let Some(first) = names.insert(name, line_of(d.name.span())) {
                return Err(fail(
                    d.name.span(),
                    format!("a device of this name is already configured at line {first}; names identify devices (the `device` tag, --shard) and must be unique"),
                ));
            }
            let map = maps.get(d.map.get_ref()).ok_or_else(|| {
                fail(
                    d.map.span(),
                    format!(
                        "map {:?} does not exist in {}; known maps: {} (a map is a .toml file there, named without .toml)",
                        d.map.get_ref(),
                        mc.maps_dir.display(),
                        maps.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            let address = d.host_port();
            let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                return Err(fail(
                    d.address.span(),
                    format!("address {:?} is not host or host:port (e.g. \"10.0.0.30\" or \"gw-1:502\")", d.address.get_ref()),
                ));
            }
            for (k, v) in &d.tags {
                if k == "device" || !valid_name(k) || v.is_empty() {
                    return Err(fail(
                        d.name.span(),
                        format!("tag {k:?} = {v:?}: tag names are snake_case ASCII, values not empty, and `device` is set from `name`"),
                    ));
                }
            }
            let interval = d.interval.unwrap_or(mc.interval);
            let timeout = d.timeout.unwrap_or(mc.timeout);
            if interval.is_zero() || timeout.is_zero() {
                return Err(fail(
                    d.name.span(),
                    "interval and timeout must be longer than 0s".into(),
                ));
            }
            devices.push(Arc::new(DeviceRt::new(
                name,
                address,
                d.unit_id,
                (interval, timeout, d.retries.unwrap_or(mc.retries)),
                map.clone(),
                mc.max_gap,
                &d.tags,
            )));
        }
        let left_to_other_shards = match opts.shard {
            Some(shard) => retain_owned(&mut devices, shard, |d| &*d.name),
            None => 0,
        };
        Ok(ModbusSource {
            devices,
            concurrency: mc.concurrency,
            maps: maps.len(),
            left_to_other_shards,
            cluster: opts.cluster,
        })
    }

    pub fn devices(&self) -> &[Arc<DeviceRt>] {
        &self.devices
    }
}

/// One device on the shared schedule: its connection and read state live between polls.
struct ScheduledDevice {
    rt: Arc<DeviceRt>,
    state: DeviceState,
}

impl DevicePoller for ScheduledDevice {
    async fn poll(&mut self) -> PollResult {
        poll_device(&self.rt, &mut self.state).await
    }
}

/// Keeps the status board and the device's `up` gauge (the schedule logs the transitions).
fn on_transition(device: &str, before: Option<bool>, up: bool) {
    crate::status::device_result("modbus", before, up);
    metrics::gauge!("sitewatch_modbus_device_up", "device" => device.to_string()).set(if up {
        1.0
    } else {
        0.0
    });
}

#[async_trait]
impl Source for ModbusSource {
    fn name(&self) -> &'static str {
        "modbus"
    }

    fn measurements(&self) -> Option<Vec<String>> {
        let points = self.devices.iter().flat_map(|d| d.map.points.iter());
        let mut out: Vec<String> = points.map(|p| p.measurement.to_string()).collect();
        out.push(super::poll::POLL_MEASUREMENT.to_string());
        Some(out)
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "{} device(s), {} register map(s)",
            self.devices.len(),
            self.maps
        );
        if self.left_to_other_shards > 0 {
            s.push_str(&format!(
                ", {} left to other shards",
                self.left_to_other_shards
            ));
        }
        s
    }

    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        tracing::info!(
            devices = self.devices.len(),
            left_to_other_shards = self.left_to_other_shards,
            "Modbus collector polling"
        );
        crate::status::set_polled("modbus", self.devices.len());
        for result in ["ok", "timeout", "error", "skipped"] {
            metrics::counter!(POLLS_METRIC, "result" => result).increment(0);
        }
        let sem = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for rt in self.devices {
            for result in ["ok", "timeout", "error"] {
                metrics::counter!(
                    "sitewatch_modbus_device_polls_total",
                    "device" => rt.name.to_string(),
                    "result" => result
                )
                .increment(0);
            }
            let slot = Slot {
                collector: "Modbus",
                device: rt.name.clone(),
                address: rt.address.as_str().into(),
                interval: rt.interval,
                polls_metric: POLLS_METRIC,
                gate: self
                    .cluster
                    .as_ref()
                    .map(|o| o.gate(crate::cluster::assignment::modbus_unit(&rt.name))),
            };
            let name = rt.name.clone();
            let poller = ScheduledDevice {
                rt,
                state: DeviceState::default(),
            };
            tasks.spawn(run_device(
                slot,
                sem.clone(),
                ctx.tx.clone(),
                ctx.stop.clone(),
                poller,
                move |before, up| on_transition(&name, before, up),
            ));
        }
        drop(ctx.tx);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    async fn collect_once(&mut self, _listen_for: Duration) -> Result<Vec<Sample>, BoxError> {
        let sem = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, rt) in self.devices.iter().enumerate() {
            let rt = rt.clone();
            let sem = sem.clone();
            tasks.spawn(async move {
                let _permit = sem.acquire_owned().await;
                (i, poll_device(&rt, &mut DeviceState::default()).await)
            });
        }
        let mut results = Vec::with_capacity(self.devices.len());
        while let Some(r) = tasks.join_next().await {
            results.push(r?);
        }
        results.sort_by_key(|(i, _)| *i);
        Ok(results.into_iter().flat_map(|(_, r)| r.samples).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Shard;
    use std::path::Path;

    fn maps() -> BTreeMap<String, Arc<RegisterMap>> {
        let m = RegisterMap::parse(
            "description = \"t\"\n[[point]]\nmeasurement = \"m\"\nfield = \"x\"\naddress = 0\ntype = \"uint16\"\n",
            Path::new("maps/meter.toml"),
        )
        .unwrap();
        [("meter".to_string(), Arc::new(m))].into_iter().collect()
    }

    #[derive(serde::Deserialize)]
    struct Wrapper {
        modbus: ModbusConfig,
    }

    fn build(text: &str, shard: Option<Shard>) -> Result<ModbusSource, ModbusError> {
        let cfg = toml::from_str::<Wrapper>(text).unwrap().modbus;
        ModbusSource::build(
            &cfg,
            &maps(),
            Path::new("sw.toml"),
            text,
            SourceOptions {
                shard,
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_device_naming_a_missing_map_is_rejected_at_its_line() {
        let text = "[modbus]\n\n[[modbus.device]]\nname = \"m1\"\naddress = \"127.0.0.1\"\nmap = \"nope\"\n";
        let e = build(text, None).unwrap_err().to_string();
        assert!(
            e.starts_with("sw.toml:6: [[modbus.device]] \"m1\": map \"nope\" does not exist in mappings/modbus; known maps: meter"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_names_and_bad_addresses_are_rejected() {
        let dev = |n: &str, a: &str| {
            format!("[[modbus.device]]\nname = \"{n}\"\naddress = \"{a}\"\nmap = \"meter\"\n")
        };
        let text = format!("[modbus]\n{}{}", dev("m1", "h1"), dev("m1", "h2"));
        let e = build(&text, None).unwrap_err().to_string();
        assert!(
            e.contains("sw.toml:7:") && e.contains("already configured at line 3"),
            "{e}"
        );
        let text = format!("[modbus]\n{}", dev("m1", "h1:notaport"));
        let e = build(&text, None).unwrap_err().to_string();
        assert!(
            e.contains("sw.toml:4:") && e.contains("not host or host:port"),
            "{e}"
        );
    }

    #[test]
    fn shards_split_the_devices() {
        let mut text = String::from("[modbus]\n");
        for i in 0..30 {
            text.push_str(&format!(
                "[[modbus.device]]\nname = \"m{i}\"\naddress = \"127.0.0.1:{}\"\nmap = \"meter\"\nunit_id = 3\n",
                1000 + i
            ));
        }
        let all = build(&text, None).unwrap();
        assert_eq!(all.devices().len(), 30);
        assert_eq!(all.devices()[0].unit_id, 3);
        assert_eq!(all.devices()[0].address, "127.0.0.1:1000");
        let mut total = 0;
        for i in 1..=3 {
            let s = build(&text, Some(Shard::new(i, 3).unwrap())).unwrap();
            total += s.devices().len();
            assert!(s.describe().contains("left to other shards"));
        }
        assert_eq!(total, 30);
    }

    #[test]
    fn the_example_config_is_valid_against_the_shipped_maps() {
        let text = include_str!("example.toml");
        let cfg = toml::from_str::<Wrapper>(text).unwrap().modbus;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/modbus");
        let maps = map::load_dir(&dir).unwrap();
        let s = ModbusSource::build(
            &cfg,
            &maps,
            Path::new("example.toml"),
            text,
            SourceOptions::default(),
        )
        .unwrap();
        assert_eq!(s.devices().len(), 3);
        assert_eq!(s.devices()[1].unit_id, 10);
        assert_eq!(s.devices()[1].retries, 2);
        assert_eq!(s.devices()[2].address, "bms-gw-1.example.net:502");
    }
}

//! `sitewatch check --connect`: one probe per server the config names, all at once, each
//! bounded by the same timeout, so a wrong token, database, broker ACL or community shows
//! before deployment instead of as a silent gap in a graph.
//!
//! What each probe does, and why it writes nothing and pages no one:
//! - InfluxDB: an empty write to the configured database (v1, v3) or bucket (v2). The server
//!   checks the credentials, that the database or bucket exists and that the user may write
//!   to it before it reads the body, and stores nothing (1.x answers 204; 2.x refuses an
//!   empty body with 400 only after those checks). A `SHOW DATABASES` query would not prove
//!   the write permission, and a test point would stay in the operators' data.
//! - Remote write: an empty `WriteRequest` (no series): auth and path, nothing stored.
//! - MQTT: connect, subscribe to every filter, disconnect (`crate::collect::mqtt::reach`).
//! - SNMP: GET sysObjectID.0, then one poll as `run` does it: the profiles it detects.
//! - Modbus: one poll of each device (connect and its reads).
//! - Receivers: Alertmanager `GET /-/ready`; webhook, Slack and PagerDuty a `HEAD` on the URL,
//!   where any HTTP answer proves DNS, TCP and TLS (no alert is sent).

use std::sync::Arc;
use std::time::Duration;

use crate::collect::modbus::source::ModbusSource;
use crate::collect::modbus::{map, poll};
use crate::collect::{mqtt, snmp, SourceOptions};
use crate::config::LoadedConfig;
use crate::notify::config::{ReceiverConfig, ReceiverKind, PAGERDUTY_DEFAULT_URL};
use crate::sink::influx::client::{server_message, InfluxClient, Purpose};
use crate::sink::influx::{InfluxApi, InfluxConfig};
use crate::sink::remote_write::client::{Client as RemoteWriteClient, Verdict};
use crate::sink::remote_write::RemoteWriteConfig;

/// One line of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub component: String,
    pub target: String,
    pub ok: bool,
    pub detail: String,
}

type Probe = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

/// Runs every probe the config calls for, concurrently, each bounded by `timeout`; rows in
/// config order.
pub async fn probe_all(cfg: &LoadedConfig, timeout: Duration) -> Vec<Row> {
    let mut probes: Vec<(String, String, Probe)> = Vec::new();
    let c = &cfg.config;
    if let Some(influx) = &c.influx {
        let target = format!(
            "{} {}",
            crate::sink::url::redacted_url_text(&influx.url),
            influx_target(influx)
        );
        probes.push((
            "influx".into(),
            target,
            Box::pin(influx_probe(influx.clone())),
        ));
    }
    if let Some(rw) = &c.remote_write {
        probes.push((
            "remote_write".into(),
            rw.shown_url(),
            Box::pin(remote_write_probe(rw.clone())),
        ));
    }
    if let Some(m) = &c.mqtt {
        let m = m.clone();
        let target = format!("{}:{}", m.host.trim(), m.port);
        probes.push((
            "mqtt".into(),
            target,
            Box::pin(async move { mqtt::reach::reach(&m).await.map_err(|e| e.to_string()) }),
        ));
    }
    if let Some(s) = &c.snmp {
        let loaded = crate::paths::find_mappings("snmp", &s.profiles_dir, &cfg.base_dir)
            .map_err(|e| format!("[snmp] profiles_dir: {e}"))
            .and_then(|dir| snmp::ProfileSet::load_dir(&dir).map_err(|e| e.to_string()));
        match loaded {
            Ok(profiles) => {
                let profiles = Arc::new(profiles);
                for t in &s.targets {
                    let (s, t, profiles) = (s.clone(), t.clone(), profiles.clone());
                    let target = format!("{} ({})", t.name, t.address);
                    probes.push((
                        "snmp".into(),
                        target,
                        Box::pin(async move { snmp_probe(&s, &t, &profiles).await }),
                    ));
                }
            }
            Err(e) => probes.push((
                "snmp".into(),
                "profiles".into(),
                Box::pin(std::future::ready(Err(e))),
            )),
        }
    }
    if let Some(mc) = &c.modbus {
        let text = std::fs::read_to_string(&cfg.path).unwrap_or_default();
        let built = crate::paths::find_mappings("modbus", &mc.maps_dir, &cfg.base_dir)
            .map_err(|e| format!("[modbus] maps_dir: {e}"))
            .and_then(|dir| map::load_dir(&dir).map_err(|e| e.to_string()))
            .and_then(|maps| {
                ModbusSource::build(mc, &maps, &cfg.path, &text, SourceOptions::default())
                    .map_err(|e| e.to_string())
            });
        match built {
            Ok(source) => {
                for d in source.devices() {
                    let d = d.clone();
                    let target = format!("{} ({} unit {})", d.name, d.address, d.unit_id);
                    probes.push(("modbus".into(), target, Box::pin(modbus_probe(d))));
                }
            }
            Err(e) => probes.push((
                "modbus".into(),
                "maps".into(),
                Box::pin(std::future::ready(Err(e))),
            )),
        }
    }
    if let Some(n) = &c.notify {
        for (i, r) in n.receivers.iter().enumerate() {
            let r = r.clone();
            let target = format!("{} ({})", r.name, r.kind.as_str());
            probes.push((
                "receiver".into(),
                target,
                Box::pin(async move { receiver_probe(i, &r).await }),
            ));
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut rows = Vec::with_capacity(probes.len());
    for (i, (component, target, probe)) in probes.into_iter().enumerate() {
        rows.push(Row {
            component,
            target,
            ok: false,
            detail: String::new(),
        });
        tasks.spawn(async move {
            let result = match tokio::time::timeout(timeout, probe).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer within {} (raise --timeout, or check the address and firewall)",
                    humantime::format_duration(timeout)
                )),
            };
            (i, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // A probe task only ends by returning (none panics on bad input).
        if let Ok((i, result)) = joined {
            let row = &mut rows[i];
            match result {
                Ok(detail) => (row.ok, row.detail) = (true, detail),
                Err(detail) => row.detail = detail,
            }
        }
    }
    rows
}

/// The table `check --connect` prints: columns padded to the widest cell.
pub fn table(rows: &[Row]) -> String {
    let head = ["COMPONENT", "TARGET", "RESULT"];
    let cells: Vec<[&str; 3]> = rows
        .iter()
        .map(|r| {
            [
                r.component.as_str(),
                r.target.as_str(),
                if r.ok { "OK" } else { "FAILED" },
            ]
        })
        .collect();
    let width = |c: usize| {
        cells
            .iter()
            .map(|r| r[c].len())
            .chain([head[c].len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = format!(
        "{:w0$}  {:w1$}  {:w2$}  DETAIL\n",
        head[0], head[1], head[2]
    );
    for (c, r) in cells.iter().zip(rows) {
        out.push_str(&format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            c[0], c[1], c[2], r.detail
        ));
    }
    out
}

fn influx_target(cfg: &InfluxConfig) -> String {
    let name = |v: &Option<String>| v.clone().unwrap_or_default();
    match cfg.api {
        InfluxApi::V2 => format!("bucket {:?} org {:?}", name(&cfg.bucket), name(&cfg.org)),
        InfluxApi::V1 | InfluxApi::V3 => format!("database {:?}", name(&cfg.database)),
    }
}

async fn influx_probe(cfg: InfluxConfig) -> Result<String, String> {
    let client = InfluxClient::new(&cfg, Purpose::Write).map_err(|e| e.to_string())?;
    let resp = client
        .request(reqwest::Method::POST, client.endpoint().clone())
        .body("")
        .send()
        .await
        .map_err(|e| crate::tls::send_failure(&e, "influx.tls").1)?;
    let status = resp.status().as_u16();
    let message = server_message(resp.text().await.unwrap_or_default().trim());
    let what = influx_target(&cfg);
    match (status, cfg.api) {
        (200..=299, _) => Ok(format!("{what} accepts writes (empty test write, nothing stored)")),
        (400, InfluxApi::V2 | InfluxApi::V3) => Ok(format!(
            "{what} accepts this token (the empty test write was refused only for being empty: {message})"
        )),
        (401 | 403, _) => Err(format!(
            "HTTP {status} {message}: the credentials are refused or may not write to {what}; \
             fix [influx] username/password or token"
        )),
        (404, _) => Err(format!(
            "HTTP 404 {message}: {what} does not exist; create it or fix [influx] database/bucket"
        )),
        _ => Err(format!("HTTP {status} {message}")),
    }
}

async fn remote_write_probe(cfg: RemoteWriteConfig) -> Result<String, String> {
    use crate::sink::remote_write::encode;
    let client = RemoteWriteClient::new(&cfg).map_err(|e| e.to_string())?;
    let empty = encode::body(&encode::write_request(std::iter::empty()));
    match client.post(empty.into()).await {
        Verdict::Delivered => Ok("accepts writes (empty request, nothing stored)".into()),
        Verdict::Rejected { status, message } => Err(format!("HTTP {status} {message}")),
        Verdict::Retry { status, detail, .. } => Err(format!("{status}: {detail}")),
    }
}

async fn snmp_probe(
    cfg: &snmp::SnmpConfig,
    t: &snmp::TargetConfig,
    profiles: &snmp::ProfileSet,
) -> Result<String, String> {
    let (sys_object_id, chosen) = snmp::check_target(cfg, t, profiles)
        .await
        .map_err(|e| e.to_string())?;
    if chosen.is_empty() {
        return Err(format!(
            "sysObjectID {sys_object_id}: no profile matches; set profiles = [...] on the \
             target or write one (docs/profiles.md)"
        ));
    }
    Ok(format!(
        "sysObjectID {sys_object_id}, profiles {}",
        chosen.join(", ")
    ))
}

async fn modbus_probe(d: Arc<poll::DeviceRt>) -> Result<String, String> {
    let result = poll::poll_device(&d, &mut poll::DeviceState::default()).await;
    if result.up {
        // The map's own fields, not those of the `modbus_poll` health row.
        let fields: usize = result
            .samples
            .iter()
            .filter(|s| &*s.series.measurement != poll::POLL_MEASUREMENT)
            .map(|s| s.fields.len())
            .sum();
        Ok(format!(
            "map {}: one poll read {fields} field(s)",
            d.map.name
        ))
    } else {
        Err(result.error.unwrap_or_else(|| "no answer".into()))
    }
}

async fn receiver_probe(index: usize, r: &ReceiverConfig) -> Result<String, String> {
    let url = match (&r.url, r.kind) {
        (Some(s), _) => s.resolve().map_err(|e| format!("url: {e}"))?,
        (None, ReceiverKind::Pagerduty) => PAGERDUTY_DEFAULT_URL.to_string(),
        (None, _) => return Err("no url".into()),
    };
    let mut parsed = reqwest::Url::parse(&url).map_err(|e| format!("url: {e}"))?;
    // Webhook URLs often carry their token in the path: show only scheme, host and port.
    let shown = format!(
        "{}://{}{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or(""),
        parsed.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    let table = ReceiverConfig::tls_table(index);
    let http = crate::tls::http_client_builder(r.tls.as_ref(), &table, &shown)
        .map_err(|e| e.to_string())?
        .timeout(r.timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let request = if r.kind == ReceiverKind::Alertmanager {
        parsed
            .path_segments_mut()
            .map_err(|()| format!("{shown}: the URL cannot take a path"))?
            .pop_if_empty()
            .extend(["-", "ready"]);
        http.get(parsed)
    } else {
        http.head(parsed)
    };
    let resp = request.send().await.map_err(|e| {
        // reqwest's message holds the whole URL, token and all.
        let e = e.without_url();
        format!("{shown}: {}", crate::tls::send_failure(&e, &table).1)
    })?;
    let status = resp.status();
    match r.kind {
        ReceiverKind::Alertmanager if status.is_success() => Ok(format!("{shown} ready")),
        ReceiverKind::Alertmanager => Err(format!("{shown}/-/ready answered {status}")),
        _ => Ok(format!(
            "{shown} reachable (HEAD answered {status}; no alert sent)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_says_failed() {
        let rows = vec![
            Row {
                component: "influx".into(),
                target: "http://h:8086 database \"d\"".into(),
                ok: true,
                detail: "fine".into(),
            },
            Row {
                component: "mqtt".into(),
                target: "h:1883".into(),
                ok: false,
                detail: "refused".into(),
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("COMPONENT  TARGET"), "{t}");
        assert!(lines[2].contains("  FAILED  refused"), "{t}");
        let col = lines[0].find("RESULT").unwrap();
        assert_eq!(&lines[1][col..col + 2], "OK", "{t}");
    }
}

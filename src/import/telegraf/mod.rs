//! `sitewatch import telegraf telegraf.conf`: Telegraf's TOML read with the `toml` crate and
//! turned into a sitewatch config, plus one generated SNMP profile per `[[inputs.snmp]]`
//! (sitewatch reads OIDs through profiles, Telegraf lists them inline). Whatever has no
//! sitewatch equivalent is listed as a [`Note`] naming the Telegraf table and key: on stderr
//! and as comments at the top of the output. Option names: `docs/telegraf.md`.
//!
//! - [`snmp`]: `[[inputs.snmp]]` → `[[snmp.target]]` + a profile.
//! - [`mqtt`]: `[[inputs.mqtt_consumer]]` → `[mqtt]` + `[[mqtt.subscription]]`.
//! - [`influx`]: `[[outputs.influxdb]]` / `[[outputs.influxdb_v2]]` → `[influx]`.
//! - [`notes`]: what was not converted, and reading Telegraf's tables.

mod influx;
mod mqtt;
mod notes;
mod snmp;

use std::path::Path;

use toml::{Table, Value};

pub use notes::Note;
use notes::{str_of, Notes};
pub use snmp::PROFILES_DIR;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}:{line}:{column}: {message} (is this a Telegraf TOML config?)")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: nothing to convert: no [[inputs.snmp]] or [[inputs.mqtt_consumer]] converted; notes: {notes}")]
    NoInput { path: String, notes: String },
    #[error("{path}: no [[outputs.influxdb]] or [[outputs.influxdb_v2]] to write to: add one (sitewatch needs a sink)")]
    NoOutput { path: String },
}

/// The result: the config text (notes as comments on top), the profile files to write under
/// [`PROFILES_DIR`] (file name, text), and the notes.
#[derive(Debug)]
pub struct Conversion {
    pub config: String,
    pub profiles: Vec<(String, String)>,
    pub notes: Vec<Note>,
}

/// Converts the text of a Telegraf config; `origin` names it in errors.
pub fn convert(text: &str, origin: &Path) -> Result<Conversion, ImportError> {
    let root: Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map(|s| crate::text::line_col(text, s.start))
            .unwrap_or((1, 1));
        ImportError::Parse {
            path: origin.display().to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })?;
    let mut notes = Notes::default();
    let agent = root
        .get("agent")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    let mut out = Table::new();

    out.insert(
        "service".into(),
        Value::Table(service(&root, &agent, &mut notes)),
    );
    if let Some(sink) = influx::convert(&root, &agent, &mut notes) {
        out.insert("influx".into(), Value::Table(sink));
    }
    let (snmp, profiles) = snmp::convert(&root, &agent, &mut notes);
    let mqtt = mqtt::convert(&root, &mut notes);
    let has_input = snmp.is_some() || mqtt.is_some();
    if let Some(m) = mqtt {
        out.insert("mqtt".into(), Value::Table(m));
    }
    if let Some(s) = snmp {
        out.insert("snmp".into(), Value::Table(s));
    }
    for (section, tables) in [
        ("inputs", &["snmp", "mqtt_consumer"][..]),
        ("outputs", &["influxdb", "influxdb_v2"][..]),
    ] {
        if let Some(Value::Table(plugins)) = root.get(section) {
            for name in plugins.keys().filter(|n| !tables.contains(&n.as_str())) {
                notes.add(
                    &format!("{section}.{name}"),
                    "",
                    "no sitewatch equivalent; not converted",
                );
            }
        }
    }
    for k in root.keys() {
        if !["agent", "global_tags", "inputs", "outputs"].contains(&k.as_str()) {
            notes.add(k, "", "no sitewatch equivalent; not converted");
        }
    }
    let path = origin.display().to_string();
    if !has_input {
        let notes: Vec<String> = notes.0.iter().map(Note::to_string).collect();
        return Err(ImportError::NoInput {
            path,
            notes: notes.join("; "),
        });
    }
    if !out.contains_key("influx") {
        return Err(ImportError::NoOutput { path });
    }
    let mut config =
        format!(
        "# Converted from {} by `sitewatch import telegraf`; check it with `sitewatch check`.\n",
        origin.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    );
    if notes.0.is_empty() {
        config.push_str("# Everything was converted.\n");
    } else {
        config.push_str(
            "# Not converted, or converted with a difference (Telegraf table and key: why):\n",
        );
        for n in &notes.0 {
            config.push_str(&format!("#   {n}\n"));
        }
    }
    config.push('\n');
    // Serializing a toml::Table cannot fail: it holds only TOML values.
    config.push_str(&toml::to_string(&out).unwrap_or_default());
    Ok(Conversion {
        config,
        profiles,
        notes: notes.0,
    })
}

/// `[service]`: `[global_tags]` and the `host` tag (`[agent] hostname`, `omit_hostname`).
fn service(root: &Table, agent: &Table, notes: &mut Notes) -> Table {
    let mut s = Table::new();
    let mut tags = Table::new();
    if let Some(Value::Table(g)) = root.get("global_tags") {
        for (k, v) in g {
            match v.as_str() {
                Some(v) => {
                    tags.insert(k.clone(), Value::String(v.into()));
                }
                None => notes.add("global_tags", k, "not a string; not converted"),
            }
        }
    }
    let omit = agent
        .get("omit_hostname")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match str_of(agent, "hostname").filter(|h| !h.is_empty()) {
        Some(h) if !omit => {
            tags.insert("host".into(), Value::String(h.into()));
        }
        _ if !omit => {
            s.insert("host_tag".into(), Value::Boolean(true));
        }
        _ => {}
    }
    if !tags.is_empty() {
        s.insert("global_tags".into(), Value::Table(tags));
    }
    notes.unknown_keys(
        "agent",
        agent,
        &[
            "interval",
            "hostname",
            "omit_hostname",
            "metric_batch_size",
            "flush_interval",
            "metric_buffer_limit",
        ],
    );
    s
}

#[cfg(test)]
mod tests;

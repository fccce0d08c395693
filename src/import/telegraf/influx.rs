//! `[[outputs.influxdb]]` (1.x) and `[[outputs.influxdb_v2]]` → `[influx]`, with the batch and
//! flush settings of `[agent]`. sitewatch writes to one InfluxDB: the first output is
//! converted, any other is noted.

use toml::{Table, Value};

use super::notes::{plugins, secret, str_of, Notes};

pub(super) fn convert(root: &Table, agent: &Table, notes: &mut Notes) -> Option<Table> {
    let v1 = plugins(root, "outputs", "influxdb");
    let v2 = plugins(root, "outputs", "influxdb_v2");
    let all: Vec<(&str, usize, &Table)> = v1
        .iter()
        .enumerate()
        .map(|(i, t)| ("outputs.influxdb", i, *t))
        .chain(
            v2.iter()
                .enumerate()
                .map(|(i, t)| ("outputs.influxdb_v2", i, *t)),
        )
        .collect();
    let mut out = None;
    for (n, (kind, i, t)) in all.into_iter().enumerate() {
        let table = format!("{kind}[{i}]");
        if n > 0 {
            notes.add(
                &table,
                "",
                "sitewatch writes to one InfluxDB; only the first output is converted",
            );
            continue;
        }
        out = Some(one(kind == "outputs.influxdb_v2", t, &table, agent, notes));
    }
    out
}

fn one(v2: bool, t: &Table, table: &str, agent: &Table, notes: &mut Notes) -> Table {
    let mut s = Table::new();
    let urls: Vec<&str> = match t.get("urls") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    // Telegraf's default URL for both outputs.
    let url = urls.first().copied().unwrap_or("http://localhost:8086");
    if urls.len() > 1 {
        notes.add(
            table,
            "urls",
            format!("only the first URL ({url}) is converted; sitewatch writes to one server"),
        );
    }
    s.insert("url".into(), Value::String(url.into()));
    let mut known = vec!["urls", "timeout", "content_encoding"];
    if v2 {
        s.insert("api".into(), Value::String("v2".into()));
        if let Some(o) = str_of(t, "organization") {
            s.insert("org".into(), Value::String(o.into()));
        }
        if let Some(b) = str_of(t, "bucket") {
            s.insert("bucket".into(), Value::String(b.into()));
        }
        if let Some(tok) = str_of(t, "token") {
            s.insert("token".into(), secret(tok, notes, table, "token"));
        }
        known.extend(["organization", "bucket", "token"]);
    } else {
        s.insert("api".into(), Value::String("v1".into()));
        // Telegraf's default database.
        let db = str_of(t, "database").unwrap_or("telegraf");
        s.insert("database".into(), Value::String(db.into()));
        if let Some(rp) = str_of(t, "retention_policy").filter(|r| !r.is_empty()) {
            s.insert("retention_policy".into(), Value::String(rp.into()));
        }
        if let Some(u) = str_of(t, "username") {
            s.insert("username".into(), Value::String(u.into()));
        }
        if let Some(p) = str_of(t, "password") {
            s.insert("password".into(), secret(p, notes, table, "password"));
        }
        if t.contains_key("skip_database_creation") {
            notes.add(table, "skip_database_creation", "sitewatch never creates the database: create it before starting (check --connect says whether it exists)");
        }
        known.extend([
            "database",
            "retention_policy",
            "username",
            "password",
            "skip_database_creation",
        ]);
    }
    if let Some(to) = str_of(t, "timeout") {
        s.insert("timeout".into(), Value::String(to.into()));
    }
    if str_of(t, "content_encoding") == Some("gzip") {
        s.insert("gzip".into(), Value::Boolean(true));
    }
    if let Some(n) = agent.get("metric_batch_size").and_then(Value::as_integer) {
        s.insert("batch_size".into(), Value::Integer(n));
    }
    if let Some(f) = str_of(agent, "flush_interval") {
        s.insert("flush_interval".into(), Value::String(f.into()));
    }
    if let Some(n) = agent.get("metric_buffer_limit").and_then(Value::as_integer) {
        s.insert("buffer_limit".into(), Value::Integer(n));
    }
    notes.unknown_keys(table, t, &known);
    s
}

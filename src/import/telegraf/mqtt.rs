//! `[[inputs.mqtt_consumer]]` → `[mqtt]` (the broker: sitewatch holds one connection) and one
//! `[[mqtt.subscription]]` per topic (and per `[[json_v2]]` block). `topic_parsing` tags
//! become `{name}` levels of the topic template; `data_format` `value`, `influx`, `json_v2`
//! and `json` (its named keys) are converted.

use toml::{Table, Value};

use super::notes::{plugins, secret, str_of, sub_tables, Notes};

/// Telegraf's measurement name for this plugin unless `name_override`.
const DEFAULT_MEASUREMENT: &str = "mqtt_consumer";

pub(super) fn convert(root: &Table, notes: &mut Notes) -> Option<Table> {
    let inputs = plugins(root, "inputs", "mqtt_consumer");
    let mut broker: Option<(String, Table)> = None;
    let mut subscriptions = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let table = format!("inputs.mqtt_consumer[{i}]");
        let servers: Vec<&str> = match t.get("servers") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec!["tcp://127.0.0.1:1883"],
        };
        let Some(server) = servers.first().copied() else {
            notes.add(&table, "servers", "empty; not converted");
            continue;
        };
        if servers.len() > 1 {
            notes.add(
                &table,
                "servers",
                format!("sitewatch connects to one broker: only {server} is converted"),
            );
        }
        let conn = connection(t, &table, server, notes);
        match &broker {
            Some((first, _)) if first != server => {
                notes.add(&table, "", format!("broker {server} differs from {first}: sitewatch connects to one broker; this plugin is not converted"));
                continue;
            }
            Some(_) => {}
            None => broker = Some((server.to_string(), conn)),
        }
        subscriptions.extend(subscriptions_of(t, &table, notes));
        notes.unknown_keys(
            &table,
            t,
            &[
                "servers",
                "topics",
                "qos",
                "client_id",
                "username",
                "password",
                "data_format",
                "data_type",
                "topic_parsing",
                "json_v2",
                "tag_keys",
                "json_string_fields",
                "json_time_key",
                "json_time_format",
                "name_override",
                "tags",
                "topic_tag",
                "persistent_session",
                "keep_alive",
            ],
        );
    }
    let (_, mut m) = broker?;
    if subscriptions.is_empty() {
        return None;
    }
    m.insert("subscription".into(), Value::Array(subscriptions));
    Some(m)
}

fn connection(t: &Table, table: &str, server: &str, notes: &mut Notes) -> Table {
    let mut m = Table::new();
    let (scheme, rest) = server.split_once("://").unwrap_or(("tcp", server));
    let tls = matches!(scheme, "ssl" | "tls" | "mqtts");
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().unwrap_or(1883)),
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    m.insert("host".into(), Value::String(host.into()));
    m.insert("port".into(), Value::Integer(port.into()));
    if tls {
        m.insert("tls".into(), Value::Table(Table::new()));
        notes.add(table, "servers", "TLS: the system's CA store is trusted; set [mqtt.tls] ca_file/client_cert as Telegraf's tls_ca/tls_cert (docs/tls.md)");
    }
    if let Some(c) = str_of(t, "client_id").filter(|c| !c.is_empty()) {
        m.insert("client_id".into(), Value::String(c.into()));
    }
    if let Some(u) = str_of(t, "username") {
        m.insert("username".into(), Value::String(u.into()));
    }
    if let Some(p) = str_of(t, "password") {
        m.insert("password".into(), secret(p, notes, table, "password"));
    }
    // Telegraf's keep_alive is whole seconds.
    if let Some(k) = t.get("keep_alive").and_then(Value::as_integer) {
        m.insert("keep_alive".into(), Value::String(format!("{k}s")));
    }
    // Telegraf's persistent_session = true keeps the broker session: sitewatch's default
    // (clean_session = false) already does.
    if t.get("persistent_session").and_then(Value::as_bool) == Some(false) {
        m.insert("clean_session".into(), Value::Boolean(true));
    }
    m
}

/// The subscriptions of one plugin: per topic, and per `[[json_v2]]` block.
fn subscriptions_of(t: &Table, table: &str, notes: &mut Notes) -> Vec<Value> {
    let topics: Vec<&str> = match t.get("topics") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if topics.is_empty() {
        notes.add(table, "topics", "no topics; nothing to subscribe to");
    }
    let format = str_of(t, "data_format").unwrap_or("influx");
    let measurement = str_of(t, "name_override").unwrap_or(DEFAULT_MEASUREMENT);
    let qos = match t.get("qos").and_then(Value::as_integer) {
        Some(2) => {
            notes.add(
                table,
                "qos",
                "2 becomes 1: sitewatch stores before it acknowledges, which is QoS 1's guarantee",
            );
            1
        }
        Some(q) => q,
        None => {
            notes.add(
                table,
                "qos",
                "Telegraf's default is 0 (lost during an outage); sitewatch subscribes with 1",
            );
            1
        }
    };
    let parsing = sub_tables(t, "topic_parsing");
    let topic_tag = str_of(t, "topic_tag").unwrap_or("topic");
    let mut out = Vec::new();
    for topic in topics {
        let (template, captured) = template(topic, &parsing, table, notes);
        if !topic_tag.is_empty() {
            notes.add(table, "topic_tag", format!("{topic}: Telegraf tags each point with its whole topic ({topic_tag} = ...); sitewatch tags only the levels named in the template ({captured})"));
        }
        let mut base = Table::new();
        base.insert("topic".into(), Value::String(template.clone()));
        base.insert("qos".into(), Value::Integer(qos));
        if let Some(Value::Table(tags)) = t.get("tags") {
            base.insert("tags".into(), Value::Table(tags.clone()));
        }
        match format {
            "influx" => {
                base.insert("format".into(), Value::String("line_protocol".into()));
                out.push(Value::Table(base));
            }
            "value" => {
                base.insert("format".into(), Value::String("number".into()));
                base.insert("measurement".into(), Value::String(measurement.into()));
                base.insert("field".into(), Value::String("value".into()));
                if let Some(ty) = str_of(t, "data_type").and_then(field_type) {
                    base.insert("type".into(), Value::String(ty.into()));
                }
                out.push(Value::Table(base));
            }
            "json_v2" => {
                for (j, block) in sub_tables(t, "json_v2").into_iter().enumerate() {
                    let bt = format!("{table}.json_v2[{j}]");
                    if let Some(s) = json_v2(&base, block, &bt, measurement, notes) {
                        out.push(Value::Table(s));
                    }
                }
            }
            "json" => {
                if let Some(s) = json_v1(&base, t, table, measurement, notes) {
                    out.push(Value::Table(s));
                }
            }
            other => notes.add(
                table,
                "data_format",
                format!(
                    "{other:?} is not converted (sitewatch reads json, json_v2, influx and value)"
                ),
            ),
        }
    }
    out
}

/// A sitewatch topic template for `topic`: levels that a `topic_parsing` entry names as tags
/// become `{tag}` captures. Returns the template and the captured tag names, for the note.
fn template(topic: &str, parsing: &[&Table], table: &str, notes: &mut Notes) -> (String, String) {
    let levels: Vec<&str> = topic.split('/').collect();
    let Some((k, p)) = parsing.iter().enumerate().find(|(_, p)| {
        str_of(p, "topic").is_some_and(|pt| filter_covers(topic, pt) || filter_covers(pt, topic))
    }) else {
        return (topic.to_string(), "none".into());
    };
    let pt = format!("{table}.topic_parsing[{k}]");
    let pattern: Vec<&str> = str_of(p, "topic").unwrap_or(topic).split('/').collect();
    let tags: Vec<&str> = str_of(p, "tags")
        .map(|t| t.split('/').collect())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(pattern.len());
    let mut captured = Vec::new();
    for (i, level) in pattern.iter().enumerate() {
        match tags.get(i).copied().filter(|t| *t != "_" && !t.is_empty()) {
            Some(tag) => {
                out.push(format!("{{{tag}}}"));
                captured.push(tag);
            }
            None => out.push(level.to_string()),
        }
    }
    for key in ["measurement", "fields"] {
        if str_of(p, key).is_some_and(|v| v.split('/').any(|x| x != "_" && !x.is_empty())) {
            notes.add(&pt, key, "a measurement or field name taken from the topic is not converted; the subscription's own is used");
        }
    }
    if str_of(p, "types").is_some() {
        notes.add(&pt, "types", "not converted");
    }
    if pattern.len() != levels.len() && !topic.ends_with('#') {
        notes.add(
            &pt,
            "topic",
            format!("subscribes to {} instead of {topic}", out.join("/")),
        );
    }
    (
        out.join("/"),
        if captured.is_empty() {
            "none".into()
        } else {
            captured.join(", ")
        },
    )
}

/// Whether MQTT filter `filter` matches every topic `other` can (level by level).
fn filter_covers(filter: &str, other: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let o: Vec<&str> = other.split('/').collect();
    for (i, level) in f.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < o.len() && o[i] != "#" => {}
            l if o.get(i) == Some(&l) => {}
            _ => return false,
        }
    }
    f.len() == o.len()
}

fn field_type(telegraf: &str) -> Option<&'static str> {
    match telegraf {
        "float" => Some("float"),
        "int" | "integer" => Some("integer"),
        "uint" => Some("unsigned"),
        "bool" | "boolean" => Some("bool"),
        "string" => Some("string"),
        _ => None,
    }
}

fn timestamp_unit(format: &str) -> Option<&'static str> {
    match format {
        "unix" => Some("s"),
        "unix_ms" => Some("ms"),
        "unix_us" => Some("us"),
        "unix_ns" => Some("ns"),
        "rfc3339" | "RFC3339" | "2006-01-02T15:04:05Z07:00" => Some("rfc3339"),
        _ => None,
    }
}

/// A GJSON path sitewatch reads as it is: keys separated by dots, array indexes as numbers.
fn plain_path(p: &str) -> bool {
    !p.is_empty() && !p.contains(['#', '*', '?', '|', '@', '(', '{', '['])
}

fn json_v2(
    base: &Table,
    block: &Table,
    bt: &str,
    measurement: &str,
    notes: &mut Notes,
) -> Option<Table> {
    let mut s = base.clone();
    s.insert("format".into(), Value::String("json".into()));
    let m = str_of(block, "measurement_name").unwrap_or(measurement);
    s.insert("measurement".into(), Value::String(m.into()));
    let mut fields = Table::new();
    for (k, f) in sub_tables(block, "field").into_iter().enumerate() {
        let ft = format!("{bt}.field[{k}]");
        let Some(path) = str_of(f, "path").filter(|p| plain_path(p)) else {
            notes.add(
                &ft,
                "path",
                "a GJSON query (#, *, @, |) is not converted; sitewatch paths are dotted keys",
            );
            continue;
        };
        let name = str_of(f, "rename").unwrap_or(path).replace('.', "_");
        let mut spec = Table::new();
        spec.insert("path".into(), Value::String(path.into()));
        if let Some(ty) = str_of(f, "type").and_then(field_type) {
            spec.insert("type".into(), Value::String(ty.into()));
        }
        fields.insert(name, Value::Table(spec));
        notes.unknown_keys(&ft, f, &["path", "rename", "type"]);
    }
    let mut tag_paths = Table::new();
    for (k, tg) in sub_tables(block, "tag").into_iter().enumerate() {
        let tt = format!("{bt}.tag[{k}]");
        let Some(path) = str_of(tg, "path").filter(|p| plain_path(p)) else {
            notes.add(&tt, "path", "a GJSON query is not converted");
            continue;
        };
        let name = str_of(tg, "rename").unwrap_or(path).replace('.', "_");
        tag_paths.insert(name, Value::String(path.into()));
        notes.unknown_keys(&tt, tg, &["path", "rename", "type"]);
    }
    if let Some(p) = str_of(block, "timestamp_path") {
        s.insert("timestamp".into(), Value::String(p.into()));
        let format = str_of(block, "timestamp_format").unwrap_or("unix");
        match timestamp_unit(format) {
            Some(u) => {
                s.insert("timestamp_unit".into(), Value::String(u.into()));
            }
            None => {
                s.insert("timestamp_format".into(), Value::String(format.into()));
                notes.add(bt, "timestamp_format", format!("{format:?} is a Go time layout; sitewatch's timestamp_format is strftime-style: rewrite it (docs: src/collect/mqtt/README.md)"));
            }
        }
    }
    for key in ["object"] {
        if block.contains_key(key) {
            notes.add(bt, key, "json_v2 objects are not converted; name their values as [[json_v2.field]] paths or use [[mqtt.subscription.each]]");
        }
    }
    notes.unknown_keys(
        bt,
        block,
        &[
            "measurement_name",
            "field",
            "tag",
            "timestamp_path",
            "timestamp_format",
            "object",
        ],
    );
    if fields.is_empty() {
        notes.add(
            bt,
            "field",
            "no field converted; this subscription is left out",
        );
        return None;
    }
    Some(with_fields(s, fields, tag_paths))
}

/// Telegraf's `json` takes every numeric key; sitewatch needs them named, so only what the
/// config names is converted: `json_string_fields` as string fields, `tag_keys` as tags.
fn json_v1(
    base: &Table,
    t: &Table,
    table: &str,
    measurement: &str,
    notes: &mut Notes,
) -> Option<Table> {
    let mut s = base.clone();
    s.insert("format".into(), Value::String("json".into()));
    s.insert("measurement".into(), Value::String(measurement.into()));
    let names = |key: &str| -> Vec<String> {
        match t.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        }
    };
    let mut fields = Table::new();
    for f in names("json_string_fields") {
        let mut spec = Table::new();
        spec.insert("path".into(), Value::String(f.clone()));
        spec.insert("type".into(), Value::String("string".into()));
        fields.insert(f, Value::Table(spec));
    }
    let mut tag_paths = Table::new();
    for k in names("tag_keys") {
        tag_paths.insert(k.clone(), Value::String(k));
    }
    if let Some(k) = str_of(t, "json_time_key") {
        s.insert("timestamp".into(), Value::String(k.into()));
        if let Some(u) = str_of(t, "json_time_format").and_then(timestamp_unit) {
            s.insert("timestamp_unit".into(), Value::String(u.into()));
        }
    }
    notes.add(table, "data_format", "json: Telegraf stores every numeric key; sitewatch stores the fields it names: add the numeric ones to fields = { name = \"path\" } (or use json_v2 in Telegraf first)");
    if fields.is_empty() {
        notes.add(
            table,
            "data_format",
            "json without json_string_fields: no field to convert; this subscription is left out",
        );
        return None;
    }
    Some(with_fields(s, fields, tag_paths))
}

/// A json subscription with its (non-empty) `fields` and, when any, `tag_paths`.
fn with_fields(mut s: Table, fields: Table, tag_paths: Table) -> Table {
    s.insert("fields".into(), Value::Table(fields));
    if !tag_paths.is_empty() {
        s.insert("tag_paths".into(), Value::Table(tag_paths));
    }
    s
}

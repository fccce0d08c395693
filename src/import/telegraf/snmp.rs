//! `[[inputs.snmp]]` → `[[snmp.target]]` (one per agent) and a generated profile holding the
//! plugin's `[[inputs.snmp.field]]` (scalars) and `[[inputs.snmp.table]]` (tables), named on
//! each of its targets. OIDs must be numeric: MIB names (`IF-MIB::ifTable`) need the MIB
//! files Telegraf reads through net-snmp, and are noted instead.

use toml::{Table, Value};

use super::notes::{plugins, secret, str_of, sub_tables, Notes};

/// Where the generated profiles go, relative to the output config (its `profiles_dir`).
pub const PROFILES_DIR: &str = "telegraf-profiles";

/// The `[snmp]` table and the profile files (name, text).
pub(super) fn convert(
    root: &Table,
    agent: &Table,
    notes: &mut Notes,
) -> (Option<Table>, Vec<(String, String)>) {
    let inputs = plugins(root, "inputs", "snmp");
    if inputs.is_empty() {
        return (None, Vec::new());
    }
    let mut targets = Vec::new();
    let mut profiles = Vec::new();
    let mut intervals = Vec::new();
    let mut timeouts = Vec::new();
    let mut retries = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let table = format!("inputs.snmp[{i}]");
        let profile_name = format!("telegraf-snmp-{}", i + 1);
        let profile = profile(t, &table, &profile_name, notes);
        let interval = str_of(t, "interval")
            .or(str_of(agent, "interval"))
            .unwrap_or("10s");
        intervals.push(interval.to_string());
        if let Some(to) = str_of(t, "timeout") {
            timeouts.push(to.to_string());
        }
        if let Some(r) = t.get("retries").and_then(Value::as_integer) {
            retries.push(r);
        }
        for a in agents(t, &table, notes) {
            let mut target = target(
                t,
                &table,
                &a,
                profile.as_ref().map(|_| profile_name.as_str()),
                interval,
                notes,
            );
            // Names identify devices (the `device` tag) and must be unique: a second agent on
            // the same host (another port) is named by its whole address.
            let taken = |name: &Value| targets.iter().any(|t: &Value| t.get("name") == Some(name));
            if target.get("name").is_some_and(taken) {
                target.insert("name".into(), Value::String(a.clone()));
            }
            targets.push(Value::Table(target));
        }
        if let Some(text) = profile {
            profiles.push((format!("{profile_name}.toml"), text));
        }
        notes.unknown_keys(
            &table,
            t,
            &[
                "agents",
                "version",
                "community",
                "timeout",
                "retries",
                "interval",
                "name",
                "sec_name",
                "sec_level",
                "auth_protocol",
                "auth_password",
                "priv_protocol",
                "priv_password",
                "context_name",
                "agent_host_tag",
                "tags",
                "field",
                "table",
                "max_repetitions",
            ],
        );
    }
    let mut s = Table::new();
    s.insert("profiles_dir".into(), Value::String(PROFILES_DIR.into()));
    // One [snmp] for all plugins: their shared settings there, any difference per target.
    if let Some(to) = timeouts.first() {
        s.insert("timeout".into(), Value::String(to.clone()));
    }
    if let Some(r) = retries.first() {
        s.insert("retries".into(), Value::Integer(*r));
    }
    if timeouts.iter().any(|t| Some(t) != timeouts.first())
        || retries.iter().any(|r| Some(r) != retries.first())
    {
        notes.add(
            "inputs.snmp",
            "timeout",
            "the plugins' timeouts or retries differ; the first plugin's are used for all targets",
        );
    }
    if let Some(first) = intervals.first() {
        s.insert("interval".into(), Value::String(first.clone()));
    }
    s.insert("target".into(), Value::Array(targets));
    (Some(s), profiles)
}

/// `udp://host:port` (or a bare `host[:port]`) per agent; TCP is noted.
fn agents(t: &Table, table: &str, notes: &mut Notes) -> Vec<String> {
    let list: Vec<&str> = match t.get("agents") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        // Telegraf's default agent.
        _ => vec!["udp://127.0.0.1:161"],
    };
    let mut out = Vec::new();
    for a in list {
        match a.split_once("://") {
            Some(("udp" | "udp4" | "udp6", rest)) => out.push(rest.to_string()),
            Some((scheme, _)) => notes.add(table, "agents", format!("{a}: {scheme} transport is not supported (sitewatch polls over UDP); not converted")),
            None => out.push(a.to_string()),
        }
    }
    out
}

fn target(
    t: &Table,
    table: &str,
    address: &str,
    profile: Option<&str>,
    interval: &str,
    notes: &mut Notes,
) -> Table {
    let mut s = Table::new();
    let host = address
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok() && !h.ends_with(':'))
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    s.insert("name".into(), Value::String(host.into()));
    s.insert("address".into(), Value::String(address.into()));
    if str_of(t, "interval").is_some() {
        s.insert("interval".into(), Value::String(interval.into()));
    }
    let version = t.get("version").and_then(Value::as_integer).unwrap_or(2);
    match version {
        1 | 2 => {
            s.insert(
                "version".into(),
                Value::String(if version == 1 { "1" } else { "2c" }.into()),
            );
            // Telegraf's default community.
            let c = str_of(t, "community").unwrap_or("public");
            s.insert("community".into(), secret(c, notes, table, "community"));
        }
        _ => {
            s.insert("version".into(), Value::String("3".into()));
            if let Some(u) = str_of(t, "sec_name") {
                s.insert("user".into(), Value::String(u.into()));
            }
            if let Some(l) = str_of(t, "sec_level") {
                s.insert("security_level".into(), Value::String(l.into()));
            }
            for (from, to) in [
                ("auth_protocol", "auth_protocol"),
                ("priv_protocol", "priv_protocol"),
            ] {
                if let Some(p) = str_of(t, from).filter(|p| !p.is_empty()) {
                    s.insert(to.into(), Value::String(p.to_ascii_uppercase()));
                }
            }
            for key in ["auth_password", "priv_password"] {
                if let Some(p) = str_of(t, key) {
                    s.insert(key.into(), secret(p, notes, table, key));
                }
            }
        }
    }
    if let Some(c) = str_of(t, "context_name").filter(|c| !c.is_empty()) {
        s.insert("context".into(), Value::String(c.into()));
    }
    if let Some(m) = t.get("max_repetitions").and_then(Value::as_integer) {
        s.insert("max_repetitions".into(), Value::Integer(m));
    }
    if let Some(p) = profile {
        s.insert(
            "profiles".into(),
            Value::Array(vec![Value::String(p.into())]),
        );
    }
    // Telegraf tags every point with the agent's host (`agent_host`): kept, so dashboards
    // and queries built on it still work. sitewatch's own `device` tag is the target name.
    let mut tags = Table::new();
    let agent_tag = str_of(t, "agent_host_tag").unwrap_or("agent_host");
    tags.insert(agent_tag.into(), Value::String(host.into()));
    if let Some(Value::Table(extra)) = t.get("tags") {
        for (k, v) in extra {
            if let Some(v) = v.as_str() {
                tags.insert(k.clone(), Value::String(v.into()));
            }
        }
    }
    s.insert("tags".into(), Value::Table(tags));
    s
}

/// The profile text for the plugin's fields and tables, or `None` when it has neither.
fn profile(t: &Table, table: &str, name: &str, notes: &mut Notes) -> Option<String> {
    let measurement = str_of(t, "name").unwrap_or("snmp");
    let mut p = Table::new();
    p.insert("name".into(), Value::String(name.into()));
    p.insert(
        "description".into(),
        Value::String(format!(
            "Converted from Telegraf [{table}] by sitewatch import telegraf"
        )),
    );
    p.insert("measurement".into(), Value::String(measurement.into()));
    let mut scalars = Vec::new();
    for f in fields(t, table, notes) {
        if f.is_tag {
            notes.add(&f.table, "is_tag", format!("{}: a scalar cannot be a tag in a sitewatch profile; add it as a static tag on the target (tags = {{ ... }})", f.name));
            continue;
        }
        let mut s = Table::new();
        s.insert("oid".into(), Value::String(f.oid));
        s.insert("field".into(), Value::String(f.name));
        value_options(f.def, &f.table, &mut s, notes);
        scalars.push(Value::Table(s));
    }
    let mut tables = Vec::new();
    for (j, tt) in sub_tables(t, "table").into_iter().enumerate() {
        let tn = format!("{table}.table[{j}]");
        if let Some(x) = table_def(tt, &tn, notes) {
            tables.push(Value::Table(x));
        }
    }
    if scalars.is_empty() && tables.is_empty() {
        return None;
    }
    if !scalars.is_empty() {
        p.insert("scalar".into(), Value::Array(scalars));
    }
    if !tables.is_empty() {
        p.insert("table".into(), Value::Array(tables));
    }
    Some(format!(
        "# Generated by `sitewatch import telegraf` from [{table}]; reference: docs/profiles.md\n{}",
        toml::to_string(&p).unwrap_or_default()
    ))
}

fn table_def(tt: &Table, tn: &str, notes: &mut Notes) -> Option<Table> {
    let mut columns = Vec::new();
    let mut oids = Vec::new();
    for f in fields(tt, tn, notes) {
        let mut c = Table::new();
        c.insert("oid".into(), Value::String(f.oid.clone()));
        if f.is_tag {
            c.insert("tag".into(), Value::String(f.name));
        } else {
            c.insert("field".into(), Value::String(f.name));
            value_options(f.def, &f.table, &mut c, notes);
        }
        oids.push(f.oid);
        columns.push(Value::Table(c));
    }
    if columns.is_empty() {
        notes.add(tn, "", "no field with a numeric OID: a table read by its MIB name alone needs the MIB; list its columns as [[inputs.snmp.table.field]] with numeric oid");
        return None;
    }
    // sitewatch names the table by its entry OID: the columns' common parent.
    let entry = common_parent(&oids);
    let mut x = Table::new();
    x.insert("oid".into(), Value::String(entry));
    if let Some(m) = str_of(tt, "name") {
        x.insert("measurement".into(), Value::String(m.into()));
    }
    if tt.get("index_as_tag").and_then(Value::as_bool) == Some(true) {
        x.insert("index_tag".into(), Value::String("index".into()));
    }
    if tt.get("inherit_tags").is_some() {
        notes.add(
            tn,
            "inherit_tags",
            "scalar tags are not carried into tables; add them as static tags on the target",
        );
    }
    notes.unknown_keys(
        tn,
        tt,
        &["name", "oid", "field", "index_as_tag", "inherit_tags"],
    );
    x.insert("column".into(), Value::Array(columns));
    Some(x)
}

/// One `[[field]]` of a plugin or table with a numeric OID.
struct Field<'a> {
    def: &'a Table,
    /// Where it is, for notes: `inputs.snmp[0].table[1].field[2]`.
    table: String,
    oid: String,
    name: String,
    is_tag: bool,
}

/// The `[[field]]`s of `t` (at `table`) with a numeric OID; the others and unknown keys noted.
fn fields<'a>(t: &'a Table, table: &str, notes: &mut Notes) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    for (k, f) in sub_tables(t, "field").into_iter().enumerate() {
        let ft = format!("{table}.field[{k}]");
        notes.unknown_keys(&ft, f, &["oid", "name", "is_tag", "conversion"]);
        let Some(oid) = numeric_oid(f, &ft, notes) else {
            continue;
        };
        out.push(Field {
            def: f,
            name: str_of(f, "name").unwrap_or(&oid).to_string(),
            is_tag: f.get("is_tag").and_then(Value::as_bool) == Some(true),
            table: ft,
            oid,
        });
    }
    out
}

/// The OID without a leading dot, or `None` (noted) for a MIB name.
fn numeric_oid(f: &Table, ft: &str, notes: &mut Notes) -> Option<String> {
    let Some(oid) = str_of(f, "oid") else {
        notes.add(ft, "oid", "missing; not converted");
        return None;
    };
    let oid = oid.trim_start_matches('.');
    if oid.is_empty()
        || !oid
            .split('.')
            .all(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
    {
        notes.add(ft, "oid", format!("{oid:?} is not numeric: sitewatch reads numeric OIDs only (snmptranslate -On {oid} gives it)"));
        return None;
    }
    Some(oid.to_string())
}

/// Telegraf `conversion`: `float(N)` is a decimal scale, `float`/`int` keep the number,
/// `hwaddr`/`ipaddr`/others are noted.
fn value_options(f: &Table, ft: &str, out: &mut Table, notes: &mut Notes) {
    let Some(conv) = str_of(f, "conversion") else {
        return;
    };
    if let Some(n) = conv
        .strip_prefix("float(")
        .and_then(|r| r.strip_suffix(')'))
    {
        match n.parse::<i32>() {
            Ok(d) => {
                out.insert("scale".into(), Value::Float(10f64.powi(-d)));
            }
            Err(_) => notes.add(ft, "conversion", format!("{conv:?}: not converted")),
        }
        return;
    }
    match conv {
        "float" | "int" => notes.add(ft, "conversion", format!("{conv:?}: sitewatch writes the number as the agent sends it (integers stay integers)")),
        "string" => {
            out.insert("type".into(), Value::String("string".into()));
        }
        _ => notes.add(ft, "conversion", format!("{conv:?}: not converted")),
    }
}

/// The longest common prefix of the OIDs, minus the last arc when only one column (its
/// parent is the entry).
fn common_parent(oids: &[String]) -> String {
    let split: Vec<Vec<&str>> = oids.iter().map(|o| o.split('.').collect()).collect();
    let mut prefix: Vec<&str> = split[0].clone();
    for s in &split[1..] {
        let n = prefix.iter().zip(s).take_while(|(a, b)| a == b).count();
        prefix.truncate(n);
    }
    if prefix.len() == split[0].len() || split.len() == 1 {
        prefix.truncate(split[0].len().saturating_sub(1));
    }
    prefix.join(".")
}

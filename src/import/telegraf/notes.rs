//! What the import could not convert ([`Note`]s), and reading Telegraf's tables: shared by
//! every converter of this folder.

use std::fmt;

use toml::{Table, Value};

/// Something of the Telegraf file that was not (or not exactly) converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The Telegraf table, `inputs.snmp[0]`, `inputs.mqtt_consumer[1].json_v2[0]`.
    pub table: String,
    /// The key in it, or `""` for the whole table.
    pub key: String,
    pub why: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.as_str() {
            "" => write!(f, "[{}]: {}", self.table, self.why),
            key => write!(f, "[{}] {key}: {}", self.table, self.why),
        }
    }
}

/// Notes collected while converting; `table` is the Telegraf table being read.
#[derive(Default)]
pub(super) struct Notes(pub(super) Vec<Note>);

impl Notes {
    pub(super) fn add(&mut self, table: &str, key: &str, why: impl Into<String>) {
        self.0.push(Note {
            table: table.to_string(),
            key: key.to_string(),
            why: why.into(),
        });
    }

    /// Every key of `t` not in `known`: "no sitewatch equivalent".
    pub(super) fn unknown_keys(&mut self, table: &str, t: &Table, known: &[&str]) {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.add(table, k, "no sitewatch equivalent; not converted");
            }
        }
    }
}

/// Telegraf `"${VAR}"` / `"$VAR"` (environment substitution) becomes `{ env = "VAR" }`; any
/// other text stays inline, with a note to move it out of the file.
pub(super) fn secret(value: &str, notes: &mut Notes, table: &str, key: &str) -> Value {
    let var = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'));
    match var {
        Some(v) if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            let mut t = Table::new();
            t.insert("env".into(), Value::String(v.into()));
            Value::Table(t)
        }
        _ => {
            notes.add(
                table,
                key,
                "kept inline; move it to { env = \"VAR\" } or { file = \"...\" }",
            );
            Value::String(value.into())
        }
    }
}

pub(super) fn str_of<'a>(t: &'a Table, key: &str) -> Option<&'a str> {
    t.get(key).and_then(Value::as_str)
}

/// The `[[inputs.NAME]]` / `[[outputs.NAME]]` tables, whichever spelling (array or single).
pub(super) fn plugins<'a>(root: &'a Table, section: &str, name: &str) -> Vec<&'a Table> {
    match root.get(section).and_then(|s| s.get(name)) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_table).collect(),
        Some(Value::Table(t)) => vec![t],
        _ => Vec::new(),
    }
}

/// Sub-tables like `[[inputs.snmp.field]]`.
pub(super) fn sub_tables<'a>(t: &'a Table, key: &str) -> Vec<&'a Table> {
    match t.get(key) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_table).collect(),
        Some(Value::Table(t)) => vec![t],
        _ => Vec::new(),
    }
}

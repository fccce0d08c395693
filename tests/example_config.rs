//! The README says every option is in `deploy/sitewatch.example.toml`. The options are taken
//! from the config schema itself, not from a list that could go stale: for each table, a
//! config with an unknown key in it is parsed, and the `deny_unknown_fields` error lists the
//! table's keys ("expected one of `a`, `b`"). Each key must then appear in the example, set or
//! commented out (`# key = ...`), in that table's section or as an inline table's key.

use std::path::Path;

/// Table path (as in the example's headers) → a config that puts the probe key in it.
const TABLES: &[(&str, &str)] = &[
    ("service", "[service]\nzz_probe = 1\n"),
    ("influx", "[influx]\nzz_probe = 1\n"),
    ("influx.tls", "[influx]\ntls = { zz_probe = 1 }\n"),
    ("remote_write", "[remote_write]\nzz_probe = 1\n"),
    ("mqtt", "[mqtt]\nzz_probe = 1\n"),
    ("mqtt.subscription", "[[mqtt.subscription]]\nzz_probe = 1\n"),
    ("snmp", "[snmp]\nzz_probe = 1\n"),
    ("snmp.target", "[[snmp.target]]\nzz_probe = 1\n"),
    ("snmp.traps", "[snmp.traps]\nzz_probe = 1\n"),
    ("modbus", "[modbus]\nzz_probe = 1\n"),
    ("modbus.device", "[[modbus.device]]\nzz_probe = 1\n"),
    ("rules", "[rules]\nzz_probe = 1\n"),
    ("notify", "[notify]\nzz_probe = 1\n"),
    ("notify.receiver", "[[notify.receiver]]\nzz_probe = 1\n"),
    ("api", "[api]\nzz_probe = 1\n"),
    ("cluster", "[cluster]\nzz_probe = 1\n"),
];

/// The keys the schema accepts in a table, from its unknown-field error.
fn schema_keys(probe: &str) -> Vec<String> {
    let err = match sitewatch::config::parse(probe, Path::new("probe.toml")) {
        Ok(_) => panic!("the probe key was accepted: {probe}"),
        Err(e) => e.to_string(),
    };
    let list = err
        .split_once("expected one of ")
        .or_else(|| err.split_once("expected "))
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no key list in the error for {probe:?}: {err}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The example's text per table path: every section with that header (also commented out),
/// plus inline tables named by the path's last part in the parent's sections.
fn sections(example: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in example.lines() {
        let l = line.trim_start_matches('#').trim();
        if l.starts_with('[') {
            let name = l
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            out.push((name, String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

fn mentions(text: &str, key: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start_matches('#').trim_start();
        l.starts_with(&format!("{key} "))
            || l.starts_with(&format!("{key}="))
            || l.contains(&format!("{{ {key} ="))
            || l.contains(&format!(", {key} ="))
    })
}

#[test]
fn every_option_of_the_schema_is_in_the_example_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("deploy/sitewatch.example.toml")).unwrap();
    let sections = sections(&example);
    let mut missing = Vec::new();
    for (table, probe) in TABLES {
        let keys = schema_keys(probe);
        assert!(!keys.is_empty(), "{table}: no keys read from the schema");
        let (parent, last) = table.rsplit_once('.').unwrap_or(("", table));
        let text: String = sections
            .iter()
            .filter(|(name, _)| name == table)
            .map(|(_, t)| t.as_str())
            .chain(
                sections
                    .iter()
                    .filter(|(name, _)| name == parent)
                    .flat_map(|(_, t)| t.lines())
                    .filter(|l| {
                        l.trim_start_matches('#')
                            .trim_start()
                            .starts_with(&format!("{last} = {{"))
                    }),
            )
            .collect::<Vec<_>>()
            .join("\n");
        for key in keys {
            if !mentions(&text, &key)
                && !sections.iter().any(|(n, _)| n == &format!("{table}.{key}"))
            {
                missing.push(format!("[{table}] {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} option(s) of the schema are not in deploy/sitewatch.example.toml (add them, commented out if need be):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

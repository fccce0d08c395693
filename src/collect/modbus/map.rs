//! Register maps: which registers a kind of device has and how each becomes a field. One TOML
//! file per device model in `mappings/modbus/`; a device names its map by file name without
//! `.toml`. The schema is documented in `README.md` beside this file:
//!
//! ```toml
//! description = "Eastron SDM630 three-phase meter"
//! word_order = "big"          # defaults for every point below; "big" or "little"
//! byte_order = "big"
//! max_gap = 10                # registers a batched read may skip (default: [modbus] max_gap)
//!
//! [[point]]
//! measurement = "power_meter"
//! field = "voltage_v"
//! tags = { phase = "1" }
//! table = "input"             # holding (default) | input | coil | discrete
//! address = 0                 # 0-based address on the wire (register 30001 is input 0)
//! type = "float32"            # int16 uint16 int32 uint32 float32 int64 uint64 bool
//! scale = 0.1                 # value = raw × scale + offset, in decimal
//! offset = 0
//! invalid = [0xFFFF]          # raw values meaning "no reading": a gap, not a number
//! states = { 0 = "stopped", 1 = "running" }   # enum: field = code, field_state = text
//! severity = { 0 = 0, 1 = 2 } # enum: field_severity, 0 ok / 1 warning / 2 critical
//! bit = 3                     # type = "bool" on a register: that bit (0 = least significant)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::collect::registers::{DataType, Layout, Order, Raw};
use crate::collect::scale::Scale;
use crate::config::line_col;

/// The four Modbus tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Function 1, read/write bits.
    Coil,
    /// Function 2, read-only bits.
    Discrete,
    /// Function 3, read/write registers.
    #[default]
    Holding,
    /// Function 4, read-only registers.
    Input,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Most items one read may ask for (Modbus application protocol v1.1b3, 6.1-6.4).
    pub fn max_per_read(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read register map {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the register map directory {dir}: {source}; set [modbus] maps_dir to the folder holding the *.toml register maps (relative to the config file)")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// A raw value meaning "no reading".
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sentinel {
    Int(i128),
    Float(f64),
}

impl Sentinel {
    pub fn matches(self, raw: Raw) -> bool {
        match (self, raw) {
            (Sentinel::Int(s), Raw::Int(v)) => s == v,
            (Sentinel::Float(s), Raw::Float(v)) => s == v,
            (Sentinel::Int(s), Raw::Float(v)) => s as f64 == v,
            (Sentinel::Float(s), Raw::Int(v)) => s == v as f64,
            (_, Raw::Bool(_)) => false,
        }
    }
}

/// One register (or bit) and the field it becomes.
#[derive(Clone, Debug)]
pub struct Point {
    /// Line of the point in its map file, for messages.
    pub line: usize,
    pub measurement: Arc<str>,
    /// Tags the map adds to this point's sample (`phase = "1"`), sorted by name.
    pub tags: Vec<(String, String)>,
    pub field: Arc<str>,
    pub state_field: Arc<str>,
    pub severity_field: Arc<str>,
    pub table: Table,
    pub address: u16,
    pub ty: DataType,
    pub layout: Layout,
    pub bit: Option<u8>,
    pub linear: Scale,
    pub invalid: Vec<Sentinel>,
    pub states: Option<HashMap<i64, Arc<str>>>,
    pub severity: Option<HashMap<i64, i64>>,
}

impl Point {
    /// Registers (or bits) the point occupies.
    pub fn count(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.ty.words()
        }
    }

    /// Last address the point occupies.
    pub fn end(&self) -> u16 {
        self.address + (self.count() - 1)
    }

    /// Where it is, for messages: `input 30 (float32)`.
    pub fn location(&self) -> String {
        format!(
            "{} {} ({})",
            self.table.as_str(),
            self.address,
            self.ty.as_str()
        )
    }
}

/// A loaded, validated register map.
#[derive(Clone, Debug)]
pub struct RegisterMap {
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub max_gap: Option<u16>,
    pub points: Vec<Point>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    word_order: Order,
    #[serde(default)]
    byte_order: Order,
    max_gap: Option<u16>,
    #[serde(default, rename = "point")]
    points: Vec<toml::Spanned<PointDef>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointDef {
    measurement: String,
    field: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    table: Table,
    address: u32,
    #[serde(rename = "type")]
    ty: DataType,
    word_order: Option<Order>,
    byte_order: Option<Order>,
    bit: Option<u8>,
    scale: Option<f64>,
    offset: Option<f64>,
    #[serde(default)]
    invalid: Vec<toml::Value>,
    states: Option<BTreeMap<String, String>>,
    severity: Option<BTreeMap<String, i64>>,
}

/// A name as `docs/naming.md` wants it: snake_case ASCII, starting with a letter.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_code(s: &str) -> Option<i64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn sentinel(v: &toml::Value) -> Option<Sentinel> {
    match v {
        toml::Value::Integer(i) => Some(Sentinel::Int((*i).into())),
        toml::Value::Float(f) => Some(Sentinel::Float(*f)),
        // Strings for values a TOML integer (i64) cannot hold: "0xFFFFFFFFFFFFFFFF".
        toml::Value::String(s) => {
            let s = s.trim();
            let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => i128::from_str_radix(&hex.replace('_', ""), 16).ok()?,
                None => s.parse().ok()?,
            };
            Some(Sentinel::Int(n))
        }
        _ => None,
    }
}

impl RegisterMap {
    /// Parses and validates one map; `path` names it in messages and gives its name.
    pub fn parse(text: &str, path: &Path) -> Result<RegisterMap, MapError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let at = |offset: usize, message: String| MapError::Invalid {
            path: path.to_path_buf(),
            line: line_col(text, offset).0,
            message,
        };
        let file: MapFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            at(offset, e.message().trim().to_string())
        })?;
        let mut points = Vec::with_capacity(file.points.len());
        for spanned in &file.points {
            let start = spanned.span().start;
            let line = line_col(text, start).0;
            let d = spanned.get_ref();
            let fail = |m: String| at(start, m);
            for (what, n) in [("measurement", &d.measurement), ("field", &d.field)] {
                if !valid_name(n) {
                    return Err(fail(format!(
                        "{what} {n:?} is not snake_case ASCII (a-z, 0-9, _; starting with a letter); see docs/naming.md"
                    )));
                }
            }
            for (k, v) in &d.tags {
                if k == "device" {
                    return Err(fail(
                        "tag \"device\" is the device's name from the config; a map cannot set it"
                            .into(),
                    ));
                }
                if !valid_name(k) || v.is_empty() {
                    return Err(fail(format!(
                        "tag {k:?} = {v:?}: tag names are snake_case ASCII and values are not empty"
                    )));
                }
            }
            if d.table.is_bits() && d.ty != DataType::Bool {
                return Err(fail(format!(
                    "table {:?} holds single bits: use type = \"bool\" (not {:?})",
                    d.table.as_str(),
                    d.ty.as_str()
                )));
            }
            if let Some(bit) = d.bit {
                if d.ty != DataType::Bool || d.table.is_bits() {
                    return Err(fail(
                        "`bit` picks one bit of a holding or input register: use it with type = \"bool\" only".into(),
                    ));
                }
                if bit > 15 {
                    return Err(fail(format!(
                        "bit = {bit}: a register has bits 0 (least significant) to 15"
                    )));
                }
            }
            let count = if d.table.is_bits() {
                1
            } else {
                u32::from(d.ty.words())
            };
            if d.address + count - 1 > u32::from(u16::MAX) {
                return Err(fail(format!(
                    "address {} with {} register(s) goes past 65535, the last Modbus address",
                    d.address, count
                )));
            }
            let numeric = !matches!(d.ty, DataType::Bool);
            let is_enum = d.states.is_some() || d.severity.is_some();
            if (d.scale.is_some() || d.offset.is_some()) && (!numeric || is_enum) {
                return Err(fail(
                    "`scale` and `offset` apply to numbers only, not to bool or enum (`states`) points".into(),
                ));
            }
            if is_enum && (!numeric || d.ty == DataType::Float32) {
                return Err(fail(
                    "`states` and `severity` need an integer type (int16, uint16, int32, ...)"
                        .into(),
                ));
            }
            let linear = Scale::with_offset(d.scale.unwrap_or(1.0), d.offset.unwrap_or(0.0))
                .ok_or_else(|| {
                    fail("`scale` must be a finite non-zero number and `offset` finite".into())
                })?;
            let mut invalid = Vec::with_capacity(d.invalid.len());
            for v in &d.invalid {
                invalid.push(sentinel(v).ok_or_else(|| {
                    fail(format!(
                        "invalid = [.. {v} ..]: write raw values as numbers, or as a string such as \"0xFFFFFFFFFFFFFFFF\" for 64-bit values"
                    ))
                })?);
            }
            let states = match &d.states {
                None => None,
                Some(m) => {
                    let mut out = HashMap::new();
                    for (k, v) in m {
                        let code = parse_code(k).ok_or_else(|| {
                            fail(format!("states key {k:?} is not an integer code"))
                        })?;
                        if !valid_name(v) {
                            return Err(fail(format!(
                                "state {v:?} (code {k}) is not snake_case ASCII; see docs/naming.md"
                            )));
                        }
                        out.insert(code, Arc::<str>::from(v.as_str()));
                    }
                    Some(out)
                }
            };
            let severity = match &d.severity {
                None => None,
                Some(m) => {
                    let mut out = HashMap::new();
                    for (k, v) in m {
                        let code = parse_code(k).ok_or_else(|| {
                            fail(format!("severity key {k:?} is not an integer code"))
                        })?;
                        if !(0..=2).contains(v) {
                            return Err(fail(format!(
                                "severity of code {k} is {v}: use 0 (ok), 1 (warning) or 2 (critical)"
                            )));
                        }
                        out.insert(code, *v);
                    }
                    Some(out)
                }
            };
            points.push(Point {
                line,
                measurement: d.measurement.as_str().into(),
                tags: d.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                field: d.field.as_str().into(),
                state_field: format!("{}_state", d.field).into(),
                severity_field: format!("{}_severity", d.field).into(),
                table: d.table,
                address: d.address as u16,
                ty: d.ty,
                layout: Layout {
                    word_order: d.word_order.unwrap_or(file.word_order),
                    byte_order: d.byte_order.unwrap_or(file.byte_order),
                },
                bit: d.bit,
                linear,
                invalid,
                states,
                severity,
            });
        }
        check_overlaps(&points, path)?;
        check_duplicate_fields(&points, path)?;
        Ok(RegisterMap {
            name,
            path: path.to_path_buf(),
            description: file.description,
            max_gap: file.max_gap,
            points,
        })
    }

    pub fn load(path: &Path) -> Result<RegisterMap, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RegisterMap::parse(&text, path)
    }
}

/// Two points reading the same register (or bit) is a mistake in the map, except bits of one
/// status register, each picking a different bit.
fn check_overlaps(points: &[Point], path: &Path) -> Result<(), MapError> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by_key(|p| (p.table, p.address));
    for (i, a) in sorted.iter().enumerate() {
        for b in sorted[i + 1..].iter() {
            if b.table != a.table || b.address > a.end() {
                break;
            }
            let both_bits = a.bit.is_some() && b.bit.is_some() && a.count() == 1;
            if both_bits && a.bit != b.bit && a.address == b.address {
                continue;
            }
            let (first, second) = if a.line <= b.line { (a, b) } else { (b, a) };
            return Err(MapError::Invalid {
                path: path.to_path_buf(),
                line: second.line,
                message: format!(
                    "{} overlaps {} defined at line {}: each register belongs to one point (bits of a status register may be shared, each with its own `bit`)",
                    second.location(),
                    first.location(),
                    first.line
                ),
            });
        }
    }
    Ok(())
}

/// A field's identity: measurement, the point's tags, field name.
type FieldKey<'a> = (&'a str, &'a [(String, String)], &'a str);

fn check_duplicate_fields(points: &[Point], path: &Path) -> Result<(), MapError> {
    let mut seen: HashMap<FieldKey, usize> = HashMap::new();
    for p in points {
        let mut names = vec![&*p.field];
        if p.states.is_some() || p.severity.is_some() {
            names.push(&p.state_field);
            names.push(&p.severity_field);
        }
        for name in names {
            if let Some(first) = seen.insert((&p.measurement, &p.tags, name), p.line) {
                return Err(MapError::Invalid {
                    path: path.to_path_buf(),
                    line: p.line,
                    message: format!(
                        "field {name:?} of {} {:?} is already written by the point at line {first}",
                        p.measurement, p.tags
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Every `*.toml` map in `dir`, by name.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Arc<RegisterMap>>, MapError> {
    let entries = std::fs::read_dir(dir).map_err(|source| MapError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut maps = BTreeMap::new();
    for p in paths {
        let m = RegisterMap::load(&p)?;
        maps.insert(m.name.clone(), Arc::new(m));
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegisterMap, MapError> {
        RegisterMap::parse(text, Path::new("maps/test-meter.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("map must be rejected").to_string()
    }

    #[test]
    fn parses_points_with_defaults_and_overrides() {
        let m = parse(
            r#"
description = "test"
word_order = "little"

[[point]]
measurement = "power_meter"
field = "voltage_v"
tags = { phase = "1" }
table = "input"
address = 0
type = "float32"

[[point]]
measurement = "genset"
field = "mode"
address = 10
type = "uint16"
word_order = "big"
states = { 0 = "stop", "1" = "auto" }
severity = { 0 = 1 }

[[point]]
measurement = "genset"
field = "alarm"
table = "coil"
address = 3
type = "bool"
"#,
        )
        .unwrap();
        assert_eq!(m.name, "test-meter");
        assert_eq!(m.points.len(), 3);
        let v = &m.points[0];
        assert_eq!(v.line, 5);
        assert_eq!(v.table, Table::Input);
        assert_eq!(v.layout.word_order, Order::Little);
        assert_eq!(v.tags, vec![("phase".to_string(), "1".to_string())]);
        let mode = &m.points[1];
        assert_eq!(mode.table, Table::Holding);
        assert_eq!(mode.layout.word_order, Order::Big);
        assert_eq!(mode.states.as_ref().unwrap()[&1].as_ref(), "auto");
        assert_eq!(mode.severity.as_ref().unwrap()[&0], 1);
        assert_eq!(&*mode.state_field, "mode_state");
        assert_eq!(m.points[2].count(), 1);
    }

    #[test]
    fn overlapping_registers_are_rejected_with_both_lines() {
        let e = err(r#"
[[point]]
measurement = "m"
field = "a_v"
address = 10
type = "uint32"

[[point]]
measurement = "m"
field = "b_v"
address = 11
type = "uint16"
"#);
        assert!(
            e.starts_with("maps/test-meter.toml:8: holding 11 (uint16) overlaps holding 10 (uint32) defined at line 2"),
            "{e}"
        );
    }

    #[test]
    fn bits_of_one_register_may_share_it_but_not_a_bit() {
        let ok = r#"
[[point]]
measurement = "m"
field = "a"
address = 5
type = "bool"
bit = 0

[[point]]
measurement = "m"
field = "b"
address = 5
type = "bool"
bit = 1
"#;
        assert_eq!(parse(ok).unwrap().points.len(), 2);
        let e = err(&ok.replace("bit = 1", "bit = 0"));
        assert!(e.contains(":9: holding 5 (bool) overlaps"), "{e}");
        // Different tables do not overlap.
        let ok = ok.replace(
            "address = 5\ntype = \"bool\"\nbit = 1",
            "table = \"input\"\naddress = 5\ntype = \"bool\"\nbit = 0",
        );
        assert_eq!(parse(&ok).unwrap().points.len(), 2);
    }

    #[test]
    fn invalid_definitions_say_where_and_what() {
        let base = "[[point]]\nmeasurement = \"m\"\nfield = \"x\"\n";
        let cases = [
            (
                "address = 65535\ntype = \"uint32\"",
                ":1: address 65535 with 2 register(s) goes past 65535",
            ),
            (
                "table = \"coil\"\naddress = 1\ntype = \"uint16\"",
                "holds single bits",
            ),
            (
                "address = 1\ntype = \"uint16\"\nbit = 2",
                "`bit` picks one bit",
            ),
            ("address = 1\ntype = \"bool\"\nbit = 16", "bit = 16"),
            (
                "address = 1\ntype = \"bool\"\nscale = 2",
                "`scale` and `offset` apply to numbers only",
            ),
            (
                "address = 1\ntype = \"uint16\"\nscale = 0",
                "finite non-zero",
            ),
            (
                "address = 1\ntype = \"float32\"\nstates = { 1 = \"on\" }",
                "integer type",
            ),
            (
                "address = 1\ntype = \"uint16\"\nstates = { x = \"on\" }",
                "not an integer code",
            ),
            (
                "address = 1\ntype = \"uint16\"\nstates = { 1 = \"On Load\" }",
                "not snake_case",
            ),
            (
                "address = 1\ntype = \"uint16\"\nseverity = { 1 = 3 }",
                "use 0 (ok)",
            ),
            ("address = 1\ntype = \"uint24\"", "unknown variant `uint24`"),
            (
                "address = 1\ntype = \"uint16\"\nbogus = 1",
                "unknown field `bogus`",
            ),
            (
                "address = 1\ntype = \"uint16\"\ninvalid = [true]",
                "write raw values as numbers",
            ),
        ];
        for (body, want) in cases {
            let e = err(&format!("{base}{body}\n"));
            assert!(e.contains(want), "{body:?}: {e}");
            assert!(e.starts_with("maps/test-meter.toml:"), "{e}");
        }
        let e = err(
            "[[point]]\nmeasurement = \"Power\"\nfield = \"x\"\naddress = 1\ntype = \"uint16\"\n",
        );
        assert!(e.contains("measurement \"Power\" is not snake_case"), "{e}");
    }

    #[test]
    fn duplicate_fields_are_rejected() {
        let e = err(r#"
[[point]]
measurement = "m"
field = "x_v"
address = 1
type = "uint16"

[[point]]
measurement = "m"
field = "x_v"
address = 2
type = "uint16"
"#);
        assert!(
            e.contains(":8: field \"x_v\" of m [] is already written by the point at line 2"),
            "{e}"
        );
    }

    #[test]
    fn sentinels_match_raw_values() {
        let m = parse(
            "[[point]]\nmeasurement = \"m\"\nfield = \"x\"\naddress = 1\ntype = \"uint64\"\ninvalid = [65535, \"0xFFFFFFFFFFFFFFFF\", 1.5]\n",
        )
        .unwrap();
        let inv = &m.points[0].invalid;
        assert!(inv[0].matches(Raw::Int(65535)));
        assert!(inv[1].matches(Raw::Int(u64::MAX.into())));
        assert!(inv[2].matches(Raw::Float(1.5)));
        assert!(!inv[0].matches(Raw::Int(65534)));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_a_map_or_an_error_with_a_line(text in "\\PC{0,400}") {
            if let Err(e) = parse(&text) {
                proptest::prop_assert!(e.to_string().starts_with("maps/test-meter.toml:"), "{}", e);
            }
        }

        #[test]
        fn any_point_definition_is_accepted_or_rejected_with_its_line(
            address in 0u32..70_000,
            ty in proptest::sample::select(vec!["int16", "uint32", "float32", "uint64", "bool", "int8"]),
            table in proptest::sample::select(vec!["holding", "input", "coil", "discrete", "x"]),
            bit in proptest::option::of(0u8..20),
            scale in proptest::option::of(-5.0f64..5.0),
        ) {
            let mut text = format!(
                "[[point]]\nmeasurement = \"m\"\nfield = \"a\"\ntable = \"{table}\"\naddress = {address}\ntype = \"{ty}\"\n"
            );
            if let Some(b) = bit {
                text.push_str(&format!("bit = {b}\n"));
            }
            if let Some(s) = scale {
                text.push_str(&format!("scale = {s:?}\n"));
            }
            match parse(&text) {
                Ok(m) => {
                    let p = &m.points[0];
                    proptest::prop_assert!(u32::from(p.end()) <= 65_535);
                    proptest::prop_assert!(p.bit.is_none_or(|b| b < 16));
                    proptest::prop_assert!(!p.table.is_bits() || p.ty == DataType::Bool);
                }
                Err(e) => proptest::prop_assert!(e.to_string().starts_with("maps/test-meter.toml:"), "{}", e),
            }
        }
    }

    #[test]
    fn the_shipped_maps_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/modbus");
        let maps = load_dir(&dir).unwrap();
        assert!(maps.len() >= 3, "{:?}", maps.keys());
        for m in maps.values() {
            assert!(!m.points.is_empty(), "{} has no points", m.name);
            assert!(!m.description.is_empty(), "{} has no description", m.name);
        }
    }
}

//! Device profiles: which OIDs to read and how to turn them into fields and tags.
//!
//! Profiles are TOML files in `mappings/snmp/` (data, not code): a facility engineer adds a
//! device model without touching Rust. Schema:
//!
//! ```toml
//! name = "ups-mib"                          # unique; what targets list in `profiles`
//! description = "RFC 1628 UPS-MIB"
//! sys_object_id = ["1.3.6.1.4.1.534"]       # sysObjectID prefixes for auto-detection
//! measurement = "ups"                       # default measurement for scalars and tables
//!
//! [[scalar]]
//! oid = "1.3.6.1.2.1.33.1.2.1.0"
//! field = "battery_status"
//! enum = { 1 = "unknown", 2 = "normal", 3 = "low", 4 = "depleted" }
//!
//! [[scalar]]
//! oid = "1.3.6.1.2.1.33.1.2.5.0"
//! field = "battery_voltage_v"
//! scale = 0.1                               # raw × scale
//! invalid = [-1, 4294967295]                # sentinels → field left out
//!
//! [[table]]
//! oid = "1.3.6.1.2.1.33.1.3.3.1"            # the table's Entry
//! measurement = "ups_input"
//! index_tag = "line"                        # row index → tag
//! [[table.column]]
//! oid = "1.3.6.1.2.1.33.1.3.3.1.2"
//! field = "frequency_hz"
//! scale = 0.1
//! [[table.column]]
//! oid = "1.3.6.1.2.1.31.1.1.1.1"
//! tag = "name"                              # a column as a tag instead of a field
//! [[table.lookup]]
//! oid = "1.3.6.1.2.1.47.1.1.1.1.7"          # another table's column, same index …
//! tag = "sensor"
//! index_from = "phase_index"                # … or indexed by this row's column value
//! ```
//!
//! Value options (scalars and columns): `type` = `auto` (default) | `counter` | `timeticks` |
//! `string` | `truthvalue`; `scale`; `enum`; `invalid`.
//!
//! - **Decoding is by value**, not by the type the MIB promises: Integer, Gauge32,
//!   Unsigned32, Counter32/64 and TimeTicks all decode as numbers; OctetString as a string
//!   (UTF-8, lossy). Numeric fields are always **floats**, so a device that sends Gauge32
//!   where another sends INTEGER cannot create an InfluxDB field-type conflict.
//! - `enum` writes **two fields**: `<field>` = the integer code (for thresholds and graphs)
//!   and `<field>_state` = its name (for state rules and people); an unlisted code gives
//!   `unknown(<code>)`. Fields, not tags: a state change must not start a new series (it
//!   would break graphs and the rules engine's per-series state).
//! - `invalid` lists raw values that mean "no reading" (−1, 2147483647, 4294967295 …): the
//!   field is left out of the sample, never written as −1 % charge.
//! - `timeticks`: raw hundredths of a second → seconds (whatever wire type the device sent).
//! - `counter`: a per-second rate between two polls (× `scale`, e.g. 8 for octets → bits/s).
//!   Counter32 wraps at 2³², Counter64 at 2⁶⁴; a drop that is not a plausible wrap, or
//!   sysUpTime going backwards, is a reset: that interval is skipped and counted. The first
//!   poll of a counter yields no field.
//! - `truthvalue`: SNMPv2-TC TruthValue, 1 → true, 2 → false.
//!
//! Table `transform = "entity_sensor"` (ENTITY-SENSOR-MIB, entry `1.3.6.1.2.1.99.1.1.1`):
//! the poller also walks entPhySensorType/Scale/Precision/Value and writes per row the field
//! `value` = value × 10^(3·(scale−9)) / 10^precision (truthvalue sensors: 1.0 true, 0.0
//! false) and the tag `sensor_type` (celsius, amperes, …). Other columns work as usual.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::model::FieldValue;

use super::client::{ObjectId, SnmpValue};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read SNMP profiles from {path}: {source} (set [snmp] profiles_dir)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("profile name {name:?} is defined twice: {first} and {second}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    Auto,
    Counter,
    Timeticks,
    String,
    Truthvalue,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    EntitySensor,
}

// ---- file schema (serde) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    sys_object_id: Vec<Spanned<String>>,
    #[serde(default)]
    measurement: Option<String>,
    #[serde(default)]
    scalar: Vec<ScalarDef>,
    #[serde(default)]
    table: Vec<TableDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScalarDef {
    oid: Spanned<String>,
    field: String,
    #[serde(default)]
    measurement: Option<String>,
    #[serde(default, rename = "type")]
    kind: Kind,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default, rename = "enum")]
    enum_map: BTreeMap<String, String>,
    #[serde(default)]
    invalid: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnDef {
    oid: Spanned<String>,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default, rename = "type")]
    kind: Kind,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default, rename = "enum")]
    enum_map: BTreeMap<String, String>,
    #[serde(default)]
    invalid: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupDef {
    oid: Spanned<String>,
    tag: String,
    #[serde(default)]
    index_from: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableDef {
    oid: Spanned<String>,
    #[serde(default)]
    measurement: Option<String>,
    #[serde(default)]
    index_tag: Option<String>,
    #[serde(default)]
    transform: Option<Transform>,
    #[serde(default)]
    column: Vec<ColumnDef>,
    #[serde(default)]
    lookup: Vec<LookupDef>,
}

// ---- runtime model ----

/// How one OID's value becomes a field (or tag).
#[derive(Clone, Debug)]
pub struct ValueSpec {
    pub name: Arc<str>,
    pub state_name: Arc<str>,
    pub kind: Kind,
    pub scale: Option<f64>,
    pub enum_map: Option<Arc<HashMap<i64, Arc<str>>>>,
    pub invalid: Vec<i128>,
}

#[derive(Clone, Debug)]
pub struct Scalar {
    pub oid: ObjectId,
    pub measurement: Arc<str>,
    pub spec: ValueSpec,
}

#[derive(Clone, Debug)]
pub enum ColumnRole {
    Field,
    Tag,
}

#[derive(Clone, Debug)]
pub struct Column {
    pub oid: ObjectId,
    pub role: ColumnRole,
    pub spec: ValueSpec,
}

#[derive(Clone, Debug)]
pub struct Lookup {
    pub oid: ObjectId,
    pub tag: Arc<str>,
    /// Position in `Table::columns` whose raw value is the index into the looked-up column.
    pub index_from: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct Table {
    pub oid: ObjectId,
    pub measurement: Arc<str>,
    pub index_tag: Option<Arc<str>>,
    pub transform: Option<Transform>,
    pub columns: Vec<Column>,
    pub lookups: Vec<Lookup>,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub sys_object_ids: Vec<ObjectId>,
    pub scalars: Vec<Scalar>,
    pub tables: Vec<Table>,
}

impl Profile {
    /// True if any value in this profile is a counter (so a probe needs two polls).
    pub fn has_counters(&self) -> bool {
        self.scalars.iter().any(|s| s.spec.kind == Kind::Counter)
            || self
                .tables
                .iter()
                .flat_map(|t| &t.columns)
                .any(|c| c.spec.kind == Kind::Counter)
    }

    /// Length of the longest sysObjectID prefix matching `oid`, if any.
    pub fn match_len(&self, oid: &ObjectId) -> Option<usize> {
        self.sys_object_ids
            .iter()
            .filter(|p| oid.starts_with(p))
            .map(|p| p.0.len())
            .max()
    }
}

/// ENTITY-SENSOR-MIB entPhySensorEntry and its columns used by the transform.
pub const ENT_SENSOR_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 99, 1, 1, 1];
pub const ENT_SENSOR_TYPE: u32 = 1;
pub const ENT_SENSOR_SCALE: u32 = 2;
pub const ENT_SENSOR_PRECISION: u32 = 3;
pub const ENT_SENSOR_VALUE: u32 = 4;

/// All loaded profiles, by name.
#[derive(Clone, Debug, Default)]
pub struct ProfileSet {
    profiles: Vec<Arc<Profile>>,
}

impl ProfileSet {
    /// Loads every `*.toml` in `dir` (sorted by file name).
    pub fn load_dir(dir: &Path) -> Result<ProfileSet, ProfileError> {
        let io = |source| ProfileError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut set = ProfileSet::default();
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|source| ProfileError::Io {
                path: p.clone(),
                source,
            })?;
            set.insert(parse_profile(&p, &text)?)?;
        }
        Ok(set)
    }

    pub fn insert(&mut self, p: Profile) -> Result<(), ProfileError> {
        if let Some(old) = self.get(&p.name) {
            return Err(ProfileError::Duplicate {
                name: p.name.clone(),
                first: old.path.clone(),
                second: p.path,
            });
        }
        self.profiles.push(Arc::new(p));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|p| p.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|p| p.name.as_str()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.iter()
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// Profiles whose sysObjectID prefixes match, most specific first.
    pub fn detect(&self, sys_object_id: &ObjectId) -> Vec<Arc<Profile>> {
        let mut m: Vec<(usize, &Arc<Profile>)> = self
            .profiles
            .iter()
            .filter_map(|p| p.match_len(sys_object_id).map(|l| (l, p)))
            .collect();
        m.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        m.into_iter().map(|(_, p)| p.clone()).collect()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses one profile file; errors carry `file:line`.
pub fn parse_profile(path: &Path, text: &str) -> Result<Profile, ProfileError> {
    let file: ProfileFile = toml::from_str(text).map_err(|e| ProfileError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid = |span: std::ops::Range<usize>, message: String| ProfileError::Invalid {
        path: path.to_path_buf(),
        line: line_of(text, span.start),
        message,
    };
    let oid = |s: &Spanned<String>| ObjectId::parse(s.get_ref()).map_err(|m| invalid(s.span(), m));
    if file.name.trim().is_empty() {
        return Err(invalid(0..0, "profile name is empty".into()));
    }
    let default_measurement: Arc<str> = file
        .measurement
        .as_deref()
        .unwrap_or(file.name.as_str())
        .into();
    let mut sys_object_ids = Vec::new();
    for s in &file.sys_object_id {
        sys_object_ids.push(oid(s)?);
    }
    #[allow(clippy::too_many_arguments)]
    fn spec(
        name: &str,
        kind: Kind,
        scale: Option<f64>,
        enum_map: &BTreeMap<String, String>,
        invalid_vals: &[i64],
        err: &dyn Fn(String) -> ProfileError,
    ) -> Result<ValueSpec, ProfileError> {
        if name.trim().is_empty() {
            return Err(err("field/tag name is empty".into()));
        }
        if let Some(s) = scale {
            if !s.is_finite() || s == 0.0 {
                return Err(err(format!("scale {s} must be a finite non-zero number")));
            }
        }
        let enum_map = if enum_map.is_empty() {
            None
        } else {
            if matches!(kind, Kind::Counter | Kind::String | Kind::Truthvalue) {
                return Err(err(format!("enum cannot be combined with type {kind:?}")));
            }
            let mut m = HashMap::new();
            for (k, v) in enum_map {
                let code: i64 = k
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("enum key {k:?} is not an integer")))?;
                m.insert(code, Arc::<str>::from(v.as_str()));
            }
            Some(Arc::new(m))
        };
        Ok(ValueSpec {
            name: name.into(),
            state_name: format!("{name}_state").into(),
            kind,
            scale,
            enum_map,
            invalid: invalid_vals.iter().map(|&v| i128::from(v)).collect(),
        })
    }

    let mut scalars = Vec::new();
    for s in &file.scalar {
        let e = |m: String| invalid(s.oid.span(), m);
        scalars.push(Scalar {
            oid: oid(&s.oid)?,
            measurement: s
                .measurement
                .as_deref()
                .map(Arc::from)
                .unwrap_or_else(|| default_measurement.clone()),
            spec: spec(&s.field, s.kind, s.scale, &s.enum_map, &s.invalid, &e)?,
        });
    }
    let mut tables = Vec::new();
    for t in &file.table {
        let entry = oid(&t.oid)?;
        let te = |m: String| invalid(t.oid.span(), m);
        if t.transform == Some(Transform::EntitySensor) && entry.0 != ENT_SENSOR_ENTRY {
            return Err(te(format!(
                "transform = \"entity_sensor\" needs oid = \"{}\" (entPhySensorEntry)",
                ObjectId(ENT_SENSOR_ENTRY.to_vec())
            )));
        }
        let mut columns = Vec::new();
        for c in &t.column {
            let e = |m: String| invalid(c.oid.span(), m);
            let (role, name) = match (&c.field, &c.tag) {
                (Some(f), None) => (ColumnRole::Field, f),
                (None, Some(tg)) => (ColumnRole::Tag, tg),
                _ => return Err(e("a column needs exactly one of `field` or `tag`".into())),
            };
            if matches!(role, ColumnRole::Tag) && c.kind == Kind::Counter {
                return Err(e("a counter column cannot be a tag".into()));
            }
            columns.push(Column {
                oid: oid(&c.oid)?,
                role,
                spec: spec(name, c.kind, c.scale, &c.enum_map, &c.invalid, &e)?,
            });
        }
        let mut lookups = Vec::new();
        for l in &t.lookup {
            let e = |m: String| invalid(l.oid.span(), m);
            let index_from = match &l.index_from {
                None => None,
                Some(n) => Some(
                    columns
                        .iter()
                        .position(|c| &*c.spec.name == n.as_str())
                        .ok_or_else(|| {
                            e(format!("index_from {n:?} names no column of this table"))
                        })?,
                ),
            };
            if l.tag.trim().is_empty() {
                return Err(e("lookup tag name is empty".into()));
            }
            lookups.push(Lookup {
                oid: oid(&l.oid)?,
                tag: l.tag.as_str().into(),
                index_from,
            });
        }
        if columns.is_empty() && t.transform.is_none() {
            return Err(te("a table needs at least one [[table.column]]".into()));
        }
        tables.push(Table {
            oid: entry,
            measurement: t
                .measurement
                .as_deref()
                .map(Arc::from)
                .unwrap_or_else(|| default_measurement.clone()),
            index_tag: t.index_tag.as_deref().map(Arc::from),
            transform: t.transform,
            columns,
            lookups,
        });
    }
    Ok(Profile {
        name: file.name,
        description: file.description,
        path: path.to_path_buf(),
        sys_object_ids,
        scalars,
        tables,
    })
}

// ---- decoding ----

/// A raw number as the device sent it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Raw {
    Int(i128),
    Float(f64),
}

impl Raw {
    pub fn as_f64(self) -> f64 {
        match self {
            Raw::Int(i) => i as f64,
            Raw::Float(f) => f,
        }
    }
}

/// The numeric reading of a value, whatever its wire type. Strings that hold a number
/// (some agents send "23.5") count as numbers.
pub fn raw_number(v: &SnmpValue) -> Option<Raw> {
    match v {
        SnmpValue::Integer(i) => Some(Raw::Int(i128::from(*i))),
        SnmpValue::Counter32(c) | SnmpValue::Unsigned32(c) | SnmpValue::TimeTicks(c) => {
            Some(Raw::Int(i128::from(*c)))
        }
        SnmpValue::Counter64(c) => Some(Raw::Int(i128::from(*c))),
        SnmpValue::Boolean(b) => Some(Raw::Int(i128::from(*b))),
        SnmpValue::OctetString(s) => {
            let t = String::from_utf8_lossy(s);
            let t = t.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if let Ok(i) = t.parse::<i128>() {
                Some(Raw::Int(i))
            } else {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Raw::Float)
            }
        }
        _ => None,
    }
}

/// Text rendering of a value, for string fields and tags.
pub fn text_of(v: &SnmpValue) -> Option<String> {
    match v {
        SnmpValue::OctetString(s) | SnmpValue::Opaque(s) => {
            let t = String::from_utf8_lossy(s);
            Some(
                t.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string(),
            )
        }
        SnmpValue::ObjectId(o) => Some(o.to_string()),
        SnmpValue::IpAddress(a) => Some(format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        SnmpValue::Integer(i) => Some(i.to_string()),
        SnmpValue::Counter32(c) | SnmpValue::Unsigned32(c) | SnmpValue::TimeTicks(c) => {
            Some(c.to_string())
        }
        SnmpValue::Counter64(c) => Some(c.to_string()),
        SnmpValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What one value decodes to.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// Absent or a sentinel ("no reading"): no field.
    Missing,
    /// Present but not decodable as asked (a string where a number was expected, an
    /// out-of-range enum code …): no field, counted by the poller.
    Undecodable,
    /// Ready fields (one, or two for an enum).
    Fields(Vec<(Arc<str>, FieldValue)>),
    /// A counter reading; the poller turns two of them into a rate.
    Counter { value: u64, width: CounterWidth },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CounterWidth {
    Bits32,
    Bits64,
    /// Wire type was not a counter (a misreporting device): no wrap handling, a drop is a
    /// reset.
    Unknown,
}

impl ValueSpec {
    fn is_sentinel(&self, raw: Raw) -> bool {
        match raw {
            Raw::Int(i) => self.invalid.contains(&i),
            Raw::Float(f) => self.invalid.iter().any(|&s| s as f64 == f),
        }
    }

    fn scaled(&self, x: f64) -> f64 {
        self.scale.map_or(x, |s| x * s)
    }

    /// Decodes one value as a field.
    pub fn decode(&self, v: &SnmpValue) -> Decoded {
        match self.decode_inner(v) {
            Decoded::Missing
                if !v.is_absent() && !raw_number(v).is_some_and(|r| self.is_sentinel(r)) =>
            {
                Decoded::Undecodable
            }
            d => d,
        }
    }

    fn decode_inner(&self, v: &SnmpValue) -> Decoded {
        if v.is_absent() {
            return Decoded::Missing;
        }
        let one = |fv: FieldValue| Decoded::Fields(vec![(self.name.clone(), fv)]);
        match self.kind {
            Kind::String => match text_of(v) {
                Some(s) => one(FieldValue::Str(s.into())),
                None => Decoded::Missing,
            },
            Kind::Truthvalue => match raw_number(v) {
                Some(r) if self.is_sentinel(r) => Decoded::Missing,
                Some(Raw::Int(1)) => one(FieldValue::Bool(true)),
                Some(Raw::Int(2)) => one(FieldValue::Bool(false)),
                _ => Decoded::Missing,
            },
            Kind::Counter => {
                let width = match v {
                    SnmpValue::Counter32(_) => CounterWidth::Bits32,
                    SnmpValue::Counter64(_) => CounterWidth::Bits64,
                    _ => CounterWidth::Unknown,
                };
                match raw_number(v) {
                    Some(r) if self.is_sentinel(r) => Decoded::Missing,
                    Some(Raw::Int(i)) if (0..=i128::from(u64::MAX)).contains(&i) => {
                        Decoded::Counter {
                            value: i as u64,
                            width,
                        }
                    }
                    _ => Decoded::Missing,
                }
            }
            Kind::Timeticks => match raw_number(v) {
                Some(r) if self.is_sentinel(r) => Decoded::Missing,
                Some(r) => one(FieldValue::Float(self.scaled(r.as_f64() / 100.0))),
                None => Decoded::Missing,
            },
            Kind::Auto => {
                if let Some(map) = &self.enum_map {
                    return match raw_number(v) {
                        Some(r) if self.is_sentinel(r) => Decoded::Missing,
                        Some(Raw::Int(code)) => {
                            let Ok(code) = i64::try_from(code) else {
                                return Decoded::Missing;
                            };
                            let label: Arc<str> = map
                                .get(&code)
                                .cloned()
                                .unwrap_or_else(|| format!("unknown({code})").into());
                            Decoded::Fields(vec![
                                (self.name.clone(), FieldValue::Int(code)),
                                (self.state_name.clone(), FieldValue::Str(label)),
                            ])
                        }
                        _ => Decoded::Missing,
                    };
                }
                match v {
                    // A string stays a string unless the profile asked for arithmetic.
                    SnmpValue::OctetString(_) if self.scale.is_none() => match text_of(v) {
                        Some(s) => one(FieldValue::Str(s.into())),
                        None => Decoded::Missing,
                    },
                    SnmpValue::ObjectId(_) | SnmpValue::IpAddress(_) => match text_of(v) {
                        Some(s) => one(FieldValue::Str(s.into())),
                        None => Decoded::Missing,
                    },
                    _ => match raw_number(v) {
                        Some(r) if self.is_sentinel(r) => Decoded::Missing,
                        Some(r) => one(FieldValue::Float(self.scaled(r.as_f64()))),
                        None => Decoded::Missing,
                    },
                }
            }
        }
    }

    /// Decodes one value as a tag value (enum names replace codes).
    pub fn decode_tag(&self, v: &SnmpValue) -> Option<String> {
        if v.is_absent() {
            return None;
        }
        if let Some(r) = raw_number(v) {
            if self.is_sentinel(r) {
                return None;
            }
            if let (Some(map), Raw::Int(code)) = (&self.enum_map, r) {
                let code = i64::try_from(code).ok()?;
                return Some(
                    map.get(&code)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| format!("unknown({code})")),
                );
            }
        }
        text_of(v).filter(|s| !s.is_empty())
    }
}

/// ENTITY-SENSOR-MIB entPhySensorType names (RFC 3433 SensorDataType).
pub fn entity_sensor_type_name(code: i64) -> String {
    match code {
        1 => "other".into(),
        2 => "unknown".into(),
        3 => "volts_ac".into(),
        4 => "volts_dc".into(),
        5 => "amperes".into(),
        6 => "watts".into(),
        7 => "hertz".into(),
        8 => "celsius".into(),
        9 => "percent_rh".into(),
        10 => "rpm".into(),
        11 => "cmm".into(),
        12 => "truthvalue".into(),
        n => format!("unknown({n})"),
    }
}

/// entPhySensorValue × 10^(3·(scale−9)) / 10^precision; `None` for out-of-range inputs.
/// TruthValue sensors (type 12) map to 1.0 (true) / 0.0 (false).
pub fn entity_sensor_value(
    sensor_type: i64,
    scale: i64,
    precision: i64,
    value: i64,
) -> Option<f64> {
    if sensor_type == 12 {
        return match value {
            1 => Some(1.0),
            2 => Some(0.0),
            _ => None,
        };
    }
    if !(1..=17).contains(&scale) || !(-8..=9).contains(&precision) {
        return None;
    }
    let exp = 3 * (scale - 9) - precision;
    // Dividing by an exact power of ten keeps 254 × 10⁻¹ at 25.4 rather than 25.400000000000002.
    let v = if exp < 0 {
        value as f64 / 10f64.powi(-exp as i32)
    } else {
        value as f64 * 10f64.powi(exp as i32)
    };
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prof(text: &str) -> Result<Profile, ProfileError> {
        parse_profile(Path::new("test.toml"), text)
    }

    #[test]
    fn loads_and_decodes_scalar_options() {
        let p = prof(
            r#"
name = "t"
sys_object_id = ["1.3.6.1.4.1.318"]
measurement = "ups"
[[scalar]]
oid = "1.3.6.1.2.1.33.1.2.1.0"
field = "battery_status"
enum = { 1 = "unknown", 2 = "normal" }
[[scalar]]
oid = ".1.3.6.1.2.1.33.1.2.5.0"
field = "battery_voltage_v"
scale = 0.1
invalid = [-1, 4294967295]
"#,
        )
        .unwrap();
        assert_eq!(p.scalars.len(), 2);
        let st = &p.scalars[0].spec;
        assert_eq!(
            st.decode(&SnmpValue::Integer(2)),
            Decoded::Fields(vec![
                ("battery_status".into(), FieldValue::Int(2)),
                (
                    "battery_status_state".into(),
                    FieldValue::Str("normal".into())
                ),
            ])
        );
        assert_eq!(
            st.decode(&SnmpValue::Integer(9)),
            Decoded::Fields(vec![
                ("battery_status".into(), FieldValue::Int(9)),
                (
                    "battery_status_state".into(),
                    FieldValue::Str("unknown(9)".into())
                ),
            ])
        );
        let v = &p.scalars[1].spec;
        // Gauge32 where the MIB says INTEGER: still a number.
        assert_eq!(
            v.decode(&SnmpValue::Unsigned32(545)),
            Decoded::Fields(vec![("battery_voltage_v".into(), FieldValue::Float(54.5))])
        );
        assert_eq!(v.decode(&SnmpValue::Integer(-1)), Decoded::Missing);
        assert_eq!(v.decode(&SnmpValue::Unsigned32(u32::MAX)), Decoded::Missing);
        assert_eq!(v.decode(&SnmpValue::NoSuchObject), Decoded::Missing);
        assert_eq!(
            v.decode(&SnmpValue::OctetString(b"12.5".to_vec())),
            Decoded::Fields(vec![("battery_voltage_v".into(), FieldValue::Float(1.25))])
        );
        let set = {
            let mut s = ProfileSet::default();
            s.insert(p).unwrap();
            s
        };
        let d = set.detect(&ObjectId::parse("1.3.6.1.4.1.318.1.3.27").unwrap());
        assert_eq!(d.len(), 1);
        assert!(set
            .detect(&ObjectId::parse("1.3.6.1.4.1.9").unwrap())
            .is_empty());
    }

    #[test]
    fn errors_carry_line_numbers() {
        let e =
            prof("name = \"t\"\n\n[[scalar]]\noid = \"sysUpTime.0\"\nfield = \"x\"\n").unwrap_err();
        assert!(e.to_string().starts_with("test.toml:4:"), "{e}");
        let e = prof("name = \"t\"\n[[scalar]]\noid = \"1.3.6\"\nfield = \"x\"\nscael = 2\n")
            .unwrap_err();
        assert!(e.to_string().contains("scael"), "{e}");
        assert!(e.to_string().contains("line 5"), "{e}");
        let e = prof(
            "name = \"t\"\n[[table]]\noid = \"1.3.6.1\"\n[[table.column]]\noid = \"1.3.6.1.1\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("test.toml:5:"), "{e}");
    }

    #[test]
    fn timeticks_truthvalue_string_counter() {
        let mk = |kind| ValueSpec {
            name: "f".into(),
            state_name: "f_state".into(),
            kind,
            scale: None,
            enum_map: None,
            invalid: vec![],
        };
        assert_eq!(
            mk(Kind::Timeticks).decode(&SnmpValue::TimeTicks(720_000)),
            Decoded::Fields(vec![("f".into(), FieldValue::Float(7200.0))])
        );
        assert_eq!(
            mk(Kind::Truthvalue).decode(&SnmpValue::Integer(1)),
            Decoded::Fields(vec![("f".into(), FieldValue::Bool(true))])
        );
        assert_eq!(
            mk(Kind::String).decode(&SnmpValue::OctetString(b"ab\xffc\0".to_vec())),
            Decoded::Fields(vec![("f".into(), FieldValue::Str("ab\u{fffd}c".into()))])
        );
        assert_eq!(
            mk(Kind::Truthvalue).decode(&SnmpValue::Integer(7)),
            Decoded::Undecodable
        );
        assert_eq!(
            mk(Kind::Counter).decode(&SnmpValue::Integer(-5)),
            Decoded::Undecodable
        );
        assert_eq!(
            mk(Kind::Counter).decode(&SnmpValue::Counter64(5)),
            Decoded::Counter {
                value: 5,
                width: CounterWidth::Bits64
            }
        );
    }

    #[test]
    fn entity_sensor_arithmetic() {
        // 2345 at scale units (9), precision 1 → 234.5
        assert_eq!(entity_sensor_value(3, 9, 1, 2345), Some(234.5));
        // milli (8), precision 0: 1500 mA → 1.5 A
        assert_eq!(entity_sensor_value(5, 8, 0, 1500), Some(1.5));
        // kilo (10), precision 2: 123 → 1.23 k → 1230
        assert!((entity_sensor_value(6, 10, 2, 123).unwrap() - 1230.0).abs() < 1e-9);
        assert_eq!(entity_sensor_value(12, 9, 0, 1), Some(1.0));
        assert_eq!(entity_sensor_value(8, 0, 0, 1), None);
    }

    #[test]
    fn shipped_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/snmp");
        let set = ProfileSet::load_dir(&dir).unwrap();
        for name in [
            "ups-mib",
            "apc-ups",
            "apc-rpdu2",
            "apc-env",
            "entity-sensor-mib",
            "if-mib",
            "liebert-env",
        ] {
            assert!(set.get(name).is_some(), "{name} missing");
        }
        assert!(set.get("if-mib").unwrap().has_counters());
        let d = set.detect(&ObjectId::parse("1.3.6.1.4.1.318.1.3.4.5").unwrap());
        assert_eq!(d[0].name, "apc-rpdu2", "most specific first");
    }

    proptest::proptest! {
        #[test]
        fn profile_parser_never_panics(s in "[ -~\n]{0,200}") {
            let _ = prof(&s);
        }

        #[test]
        fn decode_never_panics(i in proptest::num::i64::ANY, bytes in proptest::collection::vec(0u8..=255, 0..16)) {
            let spec = ValueSpec {
                name: "f".into(), state_name: "f_state".into(), kind: Kind::Auto,
                scale: Some(0.1), enum_map: None, invalid: vec![-1],
            };
            let _ = spec.decode(&SnmpValue::Integer(i));
            let _ = spec.decode(&SnmpValue::OctetString(bytes.clone()));
            let _ = spec.decode_tag(&SnmpValue::OctetString(bytes));
        }
    }
}

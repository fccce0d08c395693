//! Device profiles: the schema of `mappings/snmp/*.toml` and the loaded set.
//!
//! Profiles are data, not code: a facility engineer adds a device model without touching
//! Rust. The full reference, with the detection order and the value options, is
//! `docs/profiles.md`; how values decode is in [`super::decode`], how a device is matched to
//! profiles in [`super::detect`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::decode::{InvalidWhen, Kind, ValueSpec};
use super::value::ObjectId;
use crate::collect::scale::Scale;

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
    #[error("{path}: `replaces` names {name:?}, which is no loaded profile (known: {known})")]
    UnknownReplaced {
        path: PathBuf,
        name: String,
        known: String,
    },
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    EntitySensor,
}

/// Where a profile stands in the detection order (`docs/profiles.md`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ProfileClass {
    /// A vendor's own MIB: tried first.
    #[default]
    Vendor,
    /// A standard MIB any vendor may serve (UPS-MIB, ENTITY-SENSOR-MIB).
    Standard,
    /// Served by nearly everything (IF-MIB): used when its sysObjectID matches or nothing
    /// else did.
    Generic,
}

// ---- file schema (serde) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    class: ProfileClass,
    #[serde(default)]
    sys_object_id: Vec<Spanned<String>>,
    #[serde(default)]
    anchors: Vec<Spanned<String>>,
    #[serde(default)]
    replaces: Vec<String>,
    #[serde(default)]
    measurement: Option<String>,
    #[serde(default)]
    scalar: Vec<ScalarDef>,
    #[serde(default)]
    table: Vec<TableDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidWhenDef {
    values: Vec<i64>,
    oid: Spanned<String>,
    equals: Vec<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityDef {
    #[serde(default)]
    ok: Vec<i64>,
    #[serde(default)]
    warning: Vec<i64>,
    #[serde(default)]
    critical: Vec<i64>,
}

/// The value options shared by scalars and columns (spelled out in both: serde's
/// `flatten` would lose the line numbers of errors and `Spanned` OIDs).
struct ValueDef<'a> {
    kind: Kind,
    scale: Option<f64>,
    divide: Option<f64>,
    true_values: Option<&'a Vec<i64>>,
    enum_map: &'a BTreeMap<String, String>,
    severity: Option<&'a SeverityDef>,
    invalid: &'a [i64],
    invalid_when: Option<&'a InvalidWhenDef>,
}

macro_rules! value_def {
    ($d:expr) => {
        ValueDef {
            kind: $d.kind,
            scale: $d.scale,
            divide: $d.divide,
            true_values: $d.true_values.as_ref(),
            enum_map: &$d.enum_map,
            severity: $d.severity.as_ref(),
            invalid: &$d.invalid,
            invalid_when: $d.invalid_when.as_ref(),
        }
    };
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
    #[serde(default)]
    divide: Option<f64>,
    #[serde(default)]
    true_values: Option<Vec<i64>>,
    #[serde(default, rename = "enum")]
    enum_map: BTreeMap<String, String>,
    #[serde(default)]
    severity: Option<SeverityDef>,
    #[serde(default)]
    invalid: Vec<i64>,
    #[serde(default)]
    invalid_when: Option<InvalidWhenDef>,
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
    #[serde(default)]
    divide: Option<f64>,
    #[serde(default)]
    true_values: Option<Vec<i64>>,
    #[serde(default, rename = "enum")]
    enum_map: BTreeMap<String, String>,
    #[serde(default)]
    severity: Option<SeverityDef>,
    #[serde(default)]
    invalid: Vec<i64>,
    #[serde(default)]
    invalid_when: Option<InvalidWhenDef>,
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
    rows_from: Option<Spanned<String>>,
    #[serde(default)]
    transform: Option<Transform>,
    #[serde(default)]
    column: Vec<ColumnDef>,
    #[serde(default)]
    lookup: Vec<LookupDef>,
}

// ---- runtime model ----

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
    /// A scalar holding the number of valid rows (upsInputNumLines).
    pub rows_from: Option<ObjectId>,
    pub transform: Option<Transform>,
    pub columns: Vec<Column>,
    pub lookups: Vec<Lookup>,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub class: ProfileClass,
    pub sys_object_ids: Vec<ObjectId>,
    pub anchors: Vec<ObjectId>,
    pub replaces: Vec<String>,
    pub scalars: Vec<Scalar>,
    pub tables: Vec<Table>,
}

impl Profile {
    /// True if any value in this profile is a counter (so a probe needs two polls).
    pub fn has_counters(&self) -> bool {
        self.counter_fields().next().is_some()
    }

    /// Names of the fields that are per-second rates of counters (written from the second
    /// poll on, never from a single reading such as a recording).
    pub fn counter_fields(&self) -> impl Iterator<Item = &str> {
        self.scalars
            .iter()
            .map(|s| &s.spec)
            .chain(
                self.tables
                    .iter()
                    .flat_map(|t| t.columns.iter().map(|c| &c.spec)),
            )
            .filter(|s| s.kind == Kind::Counter)
            .map(|s| &*s.name)
    }

    /// Length of the longest sysObjectID prefix matching `oid`, if any.
    pub fn match_len(&self, oid: &ObjectId) -> Option<usize> {
        self.sys_object_ids
            .iter()
            .filter(|p| oid.starts_with(p))
            .map(|p| p.0.len())
            .max()
    }

    /// OIDs the poll must GET besides the profile's own scalars: row counts and the
    /// scalars `invalid_when` looks at.
    pub fn context_oids(&self) -> impl Iterator<Item = &ObjectId> {
        let specs = self.scalars.iter().map(|s| &s.spec).chain(
            self.tables
                .iter()
                .flat_map(|t| t.columns.iter().map(|c| &c.spec)),
        );
        specs
            .filter_map(|s| s.invalid_when.as_ref().map(|w| &w.oid))
            .chain(self.tables.iter().filter_map(|t| t.rows_from.as_ref()))
    }
}

/// ENTITY-SENSOR-MIB entPhySensorEntry and its columns used by the transform.
pub const ENT_SENSOR_ENTRY: &[u32] = &[1, 3, 6, 1, 2, 1, 99, 1, 1, 1];
pub const ENT_SENSOR_TYPE: u32 = 1;
pub const ENT_SENSOR_SCALE: u32 = 2;
pub const ENT_SENSOR_PRECISION: u32 = 3;
pub const ENT_SENSOR_VALUE: u32 = 4;
/// entPhySensorOperStatus: 1 ok, 2 unavailable, 3 nonoperational.
pub const ENT_SENSOR_OPER_STATUS: u32 = 5;

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
        set.check_replaces()?;
        Ok(set)
    }

    /// Every `replaces` entry must name a loaded profile: a typo would silently poll a
    /// device twice.
    pub fn check_replaces(&self) -> Result<(), ProfileError> {
        for p in &self.profiles {
            for r in &p.replaces {
                if self.get(r).is_none() {
                    return Err(ProfileError::UnknownReplaced {
                        path: p.path.clone(),
                        name: r.clone(),
                        known: self.names().join(", "),
                    });
                }
            }
        }
        Ok(())
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

    /// Every anchor of every profile, sorted and without repeats: one GETNEXT each.
    pub fn anchors(&self) -> Vec<ObjectId> {
        let mut all: Vec<ObjectId> = self
            .profiles
            .iter()
            .flat_map(|p| p.anchors.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
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
    let sys_object_ids = file
        .sys_object_id
        .iter()
        .map(oid)
        .collect::<Result<_, _>>()?;
    let anchors = file.anchors.iter().map(oid).collect::<Result<_, _>>()?;
    if file.replaces.contains(&file.name) {
        return Err(invalid(0..0, "a profile cannot replace itself".into()));
    }
    let spec = |name: &str,
                d: &ValueDef<'_>,
                err: &dyn Fn(String) -> ProfileError|
     -> Result<ValueSpec, ProfileError> {
        if name.trim().is_empty() {
            return Err(err("field/tag name is empty".into()));
        }
        let scale = match d.scale {
            None => None,
            Some(s) => Some(
                Scale::from_f64(s)
                    .ok_or_else(|| err(format!("scale {s} must be a finite non-zero number")))?,
            ),
        };
        let scale = match d.divide {
            None => scale,
            Some(v) if v.is_finite() && v != 0.0 => Some(
                scale
                    .unwrap_or_else(|| Scale::from_f64(1.0).expect("1 is a scale"))
                    .divided_by(v),
            ),
            Some(v) => return Err(err(format!("divide {v} must be a finite non-zero number"))),
        };
        let mut out = ValueSpec::plain(name, d.kind);
        out.scale = scale;
        if let Some(t) = d.true_values {
            if d.kind != Kind::Bool {
                return Err(err("true_values needs type = \"bool\"".into()));
            }
            out.true_values = Some(t.iter().map(|&v| i128::from(v)).collect());
        }
        out.invalid = d.invalid.iter().map(|&v| i128::from(v)).collect();
        if !d.enum_map.is_empty() {
            if matches!(
                d.kind,
                Kind::Counter | Kind::String | Kind::Truthvalue | Kind::Bool
            ) {
                return Err(err(format!(
                    "enum cannot be combined with type {:?}",
                    d.kind
                )));
            }
            let mut m = HashMap::new();
            for (k, v) in d.enum_map {
                let code: i64 = k
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("enum key {k:?} is not an integer")))?;
                m.insert(code, Arc::<str>::from(v.as_str()));
            }
            out.enum_map = Some(Arc::new(m));
        }
        if let Some(sev) = d.severity {
            let Some(map) = &out.enum_map else {
                return Err(err("severity needs an enum".into()));
            };
            let mut m = HashMap::new();
            for (level, codes) in [(0, &sev.ok), (1, &sev.warning), (2, &sev.critical)] {
                for code in codes {
                    if !map.contains_key(code) {
                        return Err(err(format!(
                            "severity lists code {code}, which the enum does not name"
                        )));
                    }
                    if m.insert(*code, level).is_some() {
                        return Err(err(format!("severity lists code {code} twice")));
                    }
                }
            }
            out.severity = Some(Arc::new(m));
        }
        if let Some(w) = d.invalid_when {
            out.invalid_when = Some(InvalidWhen {
                values: w.values.iter().map(|&v| i128::from(v)).collect(),
                oid: ObjectId::parse(w.oid.get_ref()).map_err(|m| invalid(w.oid.span(), m))?,
                equals: w.equals.iter().map(|&v| i128::from(v)).collect(),
            });
        }
        Ok(out)
    };

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
            spec: spec(&s.field, &value_def!(s), &e)?,
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
            // A column may come from another table with the same index (IF-MIB joins
            // ifTable's status onto ifXTable's rows), so it need not sit under `entry`.
            let col_oid = oid(&c.oid)?;
            columns.push(Column {
                oid: col_oid,
                role,
                spec: spec(name, &value_def!(c), &e)?,
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
            rows_from: t.rows_from.as_ref().map(oid).transpose()?,
            transform: t.transform,
            columns,
            lookups,
        });
    }
    Ok(Profile {
        name: file.name,
        description: file.description,
        path: path.to_path_buf(),
        class: file.class,
        sys_object_ids,
        anchors,
        replaces: file.replaces,
        scalars,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::super::decode::{Decoded, ScalarValues};
    use super::super::value::SnmpValue;
    use super::*;
    use crate::model::FieldValue;

    fn prof(text: &str) -> Result<Profile, ProfileError> {
        parse_profile(Path::new("test.toml"), text)
    }

    #[test]
    fn loads_and_decodes_scalar_options() {
        let p = prof(
            r#"
name = "t"
class = "standard"
sys_object_id = ["1.3.6.1.4.1.318"]
anchors = ["1.3.6.1.2.1.33.1.1"]
measurement = "ups"
[[scalar]]
oid = "1.3.6.1.2.1.33.1.2.1.0"
field = "battery_status"
enum = { 1 = "unknown", 2 = "normal", 3 = "low", 4 = "depleted" }
severity = { ok = [2], warning = [3], critical = [4] }
[[scalar]]
oid = ".1.3.6.1.2.1.33.1.2.5.0"
field = "battery_voltage_v"
scale = 0.1
invalid = [-1, 4294967295]
[[scalar]]
oid = "1.3.6.1.2.1.33.1.2.3.0"
field = "battery_runtime_min"
invalid_when = { values = [0], oid = "1.3.6.1.2.1.33.1.2.1.0", equals = [2] }
[[table]]
oid = "1.3.6.1.2.1.33.1.3.3.1"
rows_from = "1.3.6.1.2.1.33.1.3.2.0"
[[table.column]]
oid = "1.3.6.1.2.1.33.1.3.3.1.3"
field = "voltage_v"
"#,
        )
        .unwrap();
        assert_eq!(p.class, ProfileClass::Standard);
        assert_eq!(p.anchors.len(), 1);
        assert_eq!(p.scalars.len(), 3);
        let none = ScalarValues::new();
        let st = &p.scalars[0].spec;
        assert_eq!(
            st.decode(&SnmpValue::Integer(3), &none),
            Decoded::Fields(vec![
                ("battery_status".into(), FieldValue::Int(3)),
                ("battery_status_state".into(), FieldValue::Str("low".into())),
                ("battery_status_severity".into(), FieldValue::Int(1)),
            ])
        );
        let v = &p.scalars[1].spec;
        // Gauge32 where the MIB says INTEGER: still a number; decimal scaling is exact.
        assert_eq!(
            v.decode(&SnmpValue::Unsigned32(545), &none),
            Decoded::Fields(vec![("battery_voltage_v".into(), FieldValue::Float(54.5))])
        );
        assert_eq!(v.decode(&SnmpValue::Integer(-1), &none), Decoded::Missing);
        assert_eq!(
            v.decode(&SnmpValue::Unsigned32(u32::MAX), &none),
            Decoded::Missing
        );
        assert_eq!(v.decode(&SnmpValue::NoSuchObject, &none), Decoded::Missing);
        let ctx: Vec<String> = p.context_oids().map(ToString::to_string).collect();
        assert_eq!(ctx, ["1.3.6.1.2.1.33.1.2.1.0", "1.3.6.1.2.1.33.1.3.2.0"]);
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
        let e = prof(
            "name = \"t\"\n[[scalar]]\noid = \"1.3.6.1.1.0\"\nfield = \"x\"\nenum = { 1 = \"a\" }\nseverity = { critical = [2] }\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("test.toml:3:"), "{e}");
        assert!(e.to_string().contains("code 2"), "{e}");
    }

    #[test]
    fn replaces_must_name_a_profile() {
        let mut set = ProfileSet::default();
        set.insert(prof("name = \"a\"\nreplaces = [\"ups-mbi\"]\n").unwrap())
            .unwrap();
        let e = set.check_replaces().unwrap_err();
        assert!(e.to_string().contains("ups-mbi"), "{e}");
        assert!(prof("name = \"a\"\nreplaces = [\"a\"]\n").is_err());
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
    }

    proptest::proptest! {
        #[test]
        fn profile_parser_never_panics(s in "[ -~\n]{0,200}") {
            let _ = prof(&s);
        }
    }
}

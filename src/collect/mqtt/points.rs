//! Point lists: payloads that carry their readings as a list of named points,
//! `{"ts":..., "points":[{"name":"CRAH-1 supply air","value":18.2,"unit":"C"}, ...]}`, or as
//! the entries of an object, `{"CRAH-1 supply air": 18.2, ...}`.
//!
//! Each point is stored under the name its *own* name maps to, never by its position: a
//! gateway that reorders, inserts or removes points cannot move a value under another name.
//! Points with the same tags and timestamp become one sample (one field each).
//!
//! ```toml
//! [mqtt.subscription.points]
//! path = "points"            # the array (or object) holding the points; "" = the payload
//! name = "name"              # key of a point's name (default "name"; object entries: the entry key)
//! value = "value"            # key of its value (default "value"; a plain number is its own value)
//! tags = { unit = "unit" }   # tags from keys of the point
//! timestamp = "ts"           # the point's own timestamp; else the subscription's `timestamp`
//! unknown = "drop"           # points not in `known`: "drop" (counted) or "keep" (sanitised name)
//! [mqtt.subscription.points.known]
//! "CRAH-1 supply air" = "crah1_supply_c"
//! "CRAH-1 return air" = { field = "crah1_return_c", type = "float" }
//! "CRAH-1 fan raw" = { field = "crah1_fan_pct", decode = "uint16", scale = 0.1 }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::path::JsonPath;
pub use super::points_spec::{KnownPoint, PointsConfig, UnknownPoints};
use super::values::ValueConv;

/// A compiled `points` table.
#[derive(Debug, Clone)]
pub(crate) struct PointList {
    pub(crate) path: JsonPath,
    name: Option<JsonPath>,
    value: Option<JsonPath>,
    pub(crate) tags: Vec<(Arc<str>, JsonPath)>,
    timestamp: Option<JsonPath>,
    unknown: UnknownPoints,
    name_tag: Option<Arc<str>>,
    field: Arc<str>,
    conv: ValueConv,
    known: HashMap<Box<str>, Known>,
}

#[derive(Debug, Clone)]
struct Known {
    field: Arc<str>,
    conv: ValueConv,
    tags: Vec<(Arc<str>, Arc<str>)>,
}

/// One point read from a payload, before it is grouped into samples.
#[derive(Debug)]
pub(crate) struct Point<'v> {
    /// The name as the device sent it.
    pub(crate) raw: String,
    /// The field (field mode) or the name-tag value (tag mode).
    pub(crate) name: Arc<str>,
    pub(crate) value: &'v Value,
    pub(crate) conv: &'v ValueConv,
    pub(crate) tags: Vec<(Arc<str>, Arc<str>)>,
    pub(crate) timestamp: Option<&'v Value>,
}

/// A point that was left out, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Skipped {
    /// Not in `known` with `unknown = "drop"`: the raw name.
    Unknown(String),
    /// The point has no usable name (missing, an object, or nothing left after sanitising).
    NoName(String),
}

impl PointList {
    /// Compiles `cfg`; errors name the key inside `points`.
    pub(crate) fn compile(cfg: &PointsConfig) -> Result<PointList, String> {
        let path =
            |key: &str, p: &str| JsonPath::parse(p).map_err(|e| format!("points.{key}: {e}"));
        if cfg.known.is_empty() && cfg.unknown == UnknownPoints::Drop {
            return Err(
                "points: no `known` table and unknown = \"drop\" would store nothing; list the \
                 points under [mqtt.subscription.points.known] (\"name as sent\" = \"field\"), \
                 or set unknown = \"keep\" to store every point under its sanitised name"
                    .into(),
            );
        }
        if cfg.field.is_some() && cfg.name_tag.is_none() {
            return Err(
                "points.field: only applies with points.name_tag (the name goes to that \
                        tag, the value to this field); without name_tag each point's name is \
                        its field"
                    .into(),
            );
        }
        let conv = ValueConv::compile(cfg.field_type, cfg.states.as_ref())
            .map_err(|e| format!("points: {e}"))?;
        let mut known = HashMap::new();
        for (raw, k) in &cfg.known {
            if k.field.is_empty() {
                return Err(format!("points.known.{raw:?}: the field name is empty"));
            }
            let ty = k.field_type.or(cfg.field_type);
            let states = k.states.as_ref().or(cfg.states.as_ref());
            let c = ValueConv::compile(ty, states)
                .and_then(|c| c.with_numeric(&k.numeric))
                .map_err(|e| format!("points.known.{raw:?}: {e}"))?;
            let mut tags = Vec::new();
            for (t, v) in &k.tags {
                if t.is_empty() || v.is_empty() {
                    return Err(format!(
                        "points.known.{raw:?}: tag {t:?} = {v:?}: keys and values must not be empty"
                    ));
                }
                tags.push((Arc::from(t.as_str()), Arc::from(v.as_str())));
            }
            known.insert(
                Box::from(raw.as_str()),
                Known {
                    field: Arc::from(k.field.as_str()),
                    conv: c,
                    tags,
                },
            );
        }
        let mut tags = Vec::new();
        for (name, p) in &cfg.tags {
            if name.is_empty() {
                return Err("points.tags: tag names must not be empty".into());
            }
            tags.push((Arc::from(name.as_str()), path("tags", p)?));
        }
        Ok(PointList {
            path: path("path", &cfg.path)?,
            name: cfg.name.as_deref().map(|p| path("name", p)).transpose()?,
            value: cfg.value.as_deref().map(|p| path("value", p)).transpose()?,
            tags,
            timestamp: cfg
                .timestamp
                .as_deref()
                .map(|p| path("timestamp", p))
                .transpose()?,
            unknown: cfg.unknown,
            name_tag: cfg.name_tag.as_deref().map(Arc::from),
            field: Arc::from(cfg.field.as_deref().unwrap_or("value")),
            conv,
            known,
        })
    }

    /// Field names the points can write (for the tag/field clash check).
    pub(crate) fn field_names(&self) -> Vec<&str> {
        match &self.name_tag {
            Some(_) => vec![&*self.field],
            None => self.known.values().map(|k| &*k.field).collect(),
        }
    }

    /// Tag names the points set.
    pub(crate) fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .map(|(n, _)| &**n)
            .chain(self.name_tag.as_deref())
            .chain(
                self.known
                    .values()
                    .flat_map(|k| k.tags.iter().map(|(t, _)| &**t)),
            )
    }

    /// The path of a point's own timestamp.
    pub(crate) fn timestamp_path(&self) -> Option<&JsonPath> {
        self.timestamp.as_ref()
    }

    /// With `name_tag`: the tag and the field every point is written as.
    pub(crate) fn name_tag(&self) -> Option<(&Arc<str>, &Arc<str>)> {
        self.name_tag.as_ref().map(|t| (t, &self.field))
    }

    /// The points of `doc`, in payload order; `None` when `path` holds no array or object.
    pub(crate) fn extract<'v>(
        &'v self,
        doc: &'v Value,
        skipped: &mut Vec<Skipped>,
    ) -> Option<Vec<Point<'v>>> {
        let container = self.path.get(doc)?;
        let entries: Vec<(Option<&'v str>, &'v Value)> = match container {
            Value::Array(items) => items.iter().map(|v| (None, v)).collect(),
            Value::Object(map) => map.iter().map(|(k, v)| (Some(k.as_str()), v)).collect(),
            _ => return None,
        };
        let mut out = Vec::with_capacity(entries.len());
        for (key, element) in entries {
            let raw: Option<String> = match (&self.name, key) {
                (Some(p), _) => p.get(element).and_then(name_text),
                (None, Some(k)) => Some(k.to_string()),
                (None, None) => element.get("name").and_then(name_text),
            };
            let Some(raw) = raw else {
                skipped.push(Skipped::NoName(preview(element)));
                continue;
            };
            let (name, conv, known_tags) = match self.known.get(raw.as_str()) {
                Some(k) => (k.field.clone(), &k.conv, &k.tags[..]),
                None => match self.unknown {
                    UnknownPoints::Drop => {
                        skipped.push(Skipped::Unknown(raw));
                        continue;
                    }
                    UnknownPoints::Keep => match sanitise(&raw) {
                        Some(s) => (Arc::from(s), &self.conv, &[][..]),
                        None => {
                            skipped.push(Skipped::NoName(raw));
                            continue;
                        }
                    },
                },
            };
            let value = match &self.value {
                Some(p) => p.get(element),
                None => match element {
                    Value::Object(m) => m.get("value"),
                    other => Some(other),
                },
            };
            let Some(value) = value else {
                continue;
            };
            let tags = self
                .tags
                .iter()
                .filter_map(|(n, p)| p.get(element).and_then(tag_text).map(|v| (n.clone(), v)))
                .chain(known_tags.iter().cloned())
                .collect();
            out.push(Point {
                raw,
                name,
                value,
                conv,
                tags,
                timestamp: self
                    .timestamp
                    .as_ref()
                    .and_then(|p| p.get(element))
                    .filter(|v| !v.is_null()),
            });
        }
        Some(out)
    }
}

fn name_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn tag_text(v: &Value) -> Option<Arc<str>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(Arc::from(s.as_str())),
        Value::Number(n) => Some(Arc::from(n.to_string())),
        Value::Bool(b) => Some(Arc::from(if *b { "true" } else { "false" })),
        _ => None,
    }
}

fn preview(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// A point's own name as a field name: ASCII letters and digits lower-cased, every run of
/// other characters one `_`, none at either end; a leading digit gets a `p_` prefix.
/// `CRAH-1 supply air` → `crah_1_supply_air`, `Temp °C` → `temp_c`. `None` if nothing is left.
pub fn sanitise(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    if out.is_empty() {
        return None;
    }
    if out.as_bytes()[0].is_ascii_digit() {
        out.insert_str(0, "p_");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn list(src: &str) -> PointList {
        let cfg: PointsConfig = toml::from_str(src).unwrap();
        PointList::compile(&cfg).unwrap()
    }

    #[test]
    fn sanitised_names() {
        assert_eq!(
            sanitise("CRAH-1 supply air").as_deref(),
            Some("crah_1_supply_air")
        );
        assert_eq!(sanitise("Temp °C").as_deref(), Some("temp_c"));
        assert_eq!(sanitise("  __x__ ").as_deref(), Some("x"));
        assert_eq!(sanitise("40001").as_deref(), Some("p_40001"));
        assert_eq!(sanitise("°%").as_deref(), None);
        assert_eq!(sanitise("").as_deref(), None);
    }

    #[test]
    fn points_are_found_by_name_in_arrays_and_objects() {
        let l = list(
            r#"
            path = "points"
            tags = { unit = "unit" }
            timestamp = "t"
            [known]
            "CRAH-1 supply air" = "crah1_supply_c"
            "CRAH-1 return air" = "crah1_return_c"
            "#,
        );
        let doc = json!({"points": [
            {"name": "CRAH-1 return air", "value": 28.1, "unit": "C", "t": 5},
            {"name": "CRAH-1 supply air", "value": 18.4, "unit": "C"},
            {"name": "CRAH-9 fan", "value": 40},
            {"value": 1}
        ]});
        let mut skipped = Vec::new();
        let points = l.extract(&doc, &mut skipped).unwrap();
        let got: Vec<_> = points
            .iter()
            .map(|p| {
                (
                    &*p.name,
                    p.value.clone(),
                    p.tags.clone(),
                    p.timestamp.cloned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "crah1_return_c",
                    json!(28.1),
                    vec![("unit".into(), "C".into())],
                    Some(json!(5))
                ),
                (
                    "crah1_supply_c",
                    json!(18.4),
                    vec![("unit".into(), "C".into())],
                    None
                ),
            ]
        );
        assert_eq!(
            skipped,
            vec![
                Skipped::Unknown("CRAH-9 fan".into()),
                Skipped::NoName("{\"value\":1}".into())
            ]
        );
        // Object entries: the key is the name, a plain value is its own value.
        let l = list("path = \"\"\nunknown = \"keep\"\n[known]\n\"Supply\" = \"supply_c\"");
        let doc = json!({"Supply": 18.0, "Fan speed %": {"value": 40}});
        let points = l.extract(&doc, &mut skipped).unwrap();
        let got: Vec<_> = points.iter().map(|p| (&*p.name, p.value.clone())).collect();
        assert_eq!(
            got,
            vec![("fan_speed", json!(40)), ("supply_c", json!(18.0))]
        );
        // No container: None.
        assert!(l.extract(&json!(5), &mut skipped).is_none());
    }

    #[test]
    fn known_points_take_scale_and_registers() {
        let l = list(
            "path = \"p\"\n[known]\n\"T\" = { field = \"t_c\", decode = \"int16\", scale = 0.1 }",
        );
        let doc = json!({"p": [{"name": "T", "value": 65526}]});
        let mut skipped = Vec::new();
        let points = l.extract(&doc, &mut skipped).unwrap();
        assert_eq!(
            points[0].conv.apply(points[0].value, false),
            Ok(Some(crate::model::FieldValue::Float(-1.0)))
        );
    }

    #[test]
    fn config_errors_say_what_to_do() {
        for (src, wants) in [
            ("path = \"p\"", "would store nothing"),
            ("path = \"p..q\"\nunknown = \"keep\"", "points.path"),
            (
                "path = \"p\"\nunknown = \"keep\"\nfield = \"v\"",
                "points.field",
            ),
            ("path = \"p\"\n[known]\n\"a\" = \"\"", "field name is empty"),
        ] {
            let cfg: PointsConfig = toml::from_str(src).unwrap();
            let e = PointList::compile(&cfg).unwrap_err();
            assert!(e.contains(wants), "{src}: {e}");
        }
        assert!(toml::from_str::<PointsConfig>("path = \"p\"\nunknwon = \"keep\"").is_err());
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "(name|value|unit|ts|.{0,6})".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    "(name|value|unit|ts|points|[a-z]{1,2})",
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Arbitrary documents never panic, and every point found is stored under the field its
        /// own name maps to (never another point's).
        #[test]
        fn points_land_under_their_own_names(doc in any_value(), keep in any::<bool>()) {
            let l = list(&format!(
                "path = \"points\"\nunknown = \"{}\"\ntimestamp = \"ts\"\ntags = {{ unit = \"unit\" }}\n[known]\nname = \"named\"\nvalue = \"valued\"",
                if keep { "keep" } else { "drop" }
            ));
            let mut skipped = Vec::new();
            let Some(points) = l.extract(&doc, &mut skipped) else { return Ok(()) };
            let container = doc.get("points").unwrap();
            let elements: Vec<&Value> = match container {
                Value::Array(a) => a.iter().collect(),
                Value::Object(m) => m.values().collect(),
                _ => unreachable!(),
            };
            prop_assert!(points.len() + skipped.len() <= elements.len());
            for p in &points {
                // The element the point came from has that name (or is the entry of that key).
                let from_own_name = elements.iter().any(|e| {
                    let raw = match container {
                        Value::Object(m) => m.iter().find(|(_, v)| std::ptr::eq(*v, *e)).map(|(k, _)| k.clone()),
                        _ => e.get("name").and_then(name_text),
                    };
                    let Some(raw) = raw else { return false };
                    let mapped = match raw.as_str() {
                        "name" => Some("named".to_string()),
                        "value" => Some("valued".to_string()),
                        r if keep => sanitise(r),
                        _ => None,
                    };
                    mapped.as_deref() == Some(&*p.name)
                        && (std::ptr::eq(p.value, *e) || e.get("value").is_some_and(|v| std::ptr::eq(p.value, v)))
                });
                prop_assert!(from_own_name, "{:?} from {}", p, doc);
            }
        }

        #[test]
        fn sanitise_gives_snake_case(s in ".{0,20}") {
            if let Some(n) = sanitise(&s) {
                prop_assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
                prop_assert!(!n.starts_with('_') && !n.ends_with('_') && !n.contains("__"));
                prop_assert!(!n.as_bytes()[0].is_ascii_digit());
            }
        }
    }
}

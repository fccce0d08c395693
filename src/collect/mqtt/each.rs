//! One sample per element: `[[mqtt.subscription.each]]` selects an array (or an object's
//! entries) and makes one sample of every element, with fields and tags read from the
//! element, and the element's index or key as a tag.
//!
//! - TTN v3 uplinks: one sample per receiving gateway of `uplink_message.rx_metadata[]`.
//! - Multi-channel meters: `"Power":[120,85]` → `channel=1 power_w=120`, `channel=2 power_w=85`
//!   (several `each` tables over arrays of the same length land in one sample per channel).
//! - Shelly Gen2 `NotifyStatus`: `"params":{"switch:0":{"apower":8.9}}` → `outlet=0`, with
//!   `key_prefix = "switch:"` selecting the components.
//!
//! ```toml
//! [[mqtt.subscription.each]]
//! path = "uplink_message.rx_metadata"   # the array or object; "" = the payload
//! measurement = "lorawan_gateway"       # default: the subscription's
//! key_tag = "channel"                   # tag with the element's index (arrays) or key (objects)
//! first_index = 1                       # index of the first array element (default 0)
//! key_prefix = "switch:"                # objects: only keys starting with it; the tag gets the rest
//! fields = { rssi_dbm = "rssi", snr_db = "snr" }     # paths inside the element
//! tags = { gateway = "gateway_ids.gateway_id" }       # paths inside the element
//! timestamp = "time"                    # inside the element; else the subscription's
//! ```

use std::sync::Arc;

use serde_json::Value;

use super::config::EachConfig;
use super::path::JsonPath;
use super::values::ValueConv;

/// A compiled `each` table.
#[derive(Debug, Clone)]
pub(crate) struct EachList {
    pub(crate) path: JsonPath,
    pub(crate) measurement: Option<Arc<str>>,
    pub(crate) key_tag: Option<Arc<str>>,
    key_prefix: Option<Box<str>>,
    first_index: usize,
    pub(crate) fields: Vec<(Arc<str>, JsonPath, ValueConv)>,
    pub(crate) tags: Vec<(Arc<str>, JsonPath)>,
    pub(crate) timestamp: Option<JsonPath>,
}

impl EachList {
    pub(crate) fn compile(n: usize, cfg: &EachConfig) -> Result<EachList, String> {
        let at = |key: &str| format!("each[{n}].{key}");
        let path = |key: &str, p: &str| JsonPath::parse(p).map_err(|e| format!("{}: {e}", at(key)));
        if cfg.fields.is_empty() {
            return Err(format!(
                "{}: at least one field, with paths inside the element, e.g. \
                 fields = {{ rssi_dbm = \"rssi\" }} (\"\" is the element itself)",
                at("fields")
            ));
        }
        if cfg.key_prefix.is_some() && cfg.key_tag.is_none() {
            return Err(format!(
                "{}: needs key_tag, the tag that gets the rest of the key",
                at("key_prefix")
            ));
        }
        if let Some(m) = &cfg.measurement {
            if m.trim().is_empty() {
                return Err(format!("{}: must not be empty", at("measurement")));
            }
        }
        let mut fields = Vec::new();
        for (name, spec) in &cfg.fields {
            if name.is_empty() {
                return Err(format!("{}: field names must not be empty", at("fields")));
            }
            let conv = ValueConv::compile(spec.field_type, spec.states.as_ref())
                .and_then(|c| c.with_numeric(&spec.numeric))
                .map_err(|e| format!("{}.{name}: {e}", at("fields")))?;
            fields.push((Arc::from(name.as_str()), path("fields", &spec.path)?, conv));
        }
        let mut tags = Vec::new();
        for (name, p) in &cfg.tags {
            if name.is_empty() {
                return Err(format!("{}: tag names must not be empty", at("tags")));
            }
            tags.push((Arc::from(name.as_str()), path("tags", p)?));
        }
        Ok(EachList {
            path: path("path", &cfg.path)?,
            measurement: cfg.measurement.as_deref().map(Arc::from),
            key_tag: cfg.key_tag.as_deref().map(Arc::from),
            key_prefix: cfg.key_prefix.as_deref().map(Box::from),
            first_index: cfg.first_index,
            fields,
            tags,
            timestamp: cfg
                .timestamp
                .as_deref()
                .map(|p| path("timestamp", p))
                .transpose()?,
        })
    }

    /// Tag names this table sets.
    pub(crate) fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .map(|(n, _)| &**n)
            .chain(self.key_tag.as_deref())
    }

    /// The selected elements of `doc` with the value of `key_tag` (index or key) for each;
    /// `None` when `path` holds no array or object.
    pub(crate) fn elements<'v>(&self, doc: &'v Value) -> Option<Vec<(Arc<str>, &'v Value)>> {
        match self.path.get(doc)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (Arc::from(i.saturating_add(self.first_index).to_string()), v))
                    .collect(),
            ),
            Value::Object(map) => Some(
                map.iter()
                    .filter_map(|(k, v)| {
                        let key = match &self.key_prefix {
                            Some(prefix) => k.strip_prefix(&**prefix)?,
                            None => k.as_str(),
                        };
                        (!key.is_empty()).then(|| (Arc::from(key), v))
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn each(src: &str) -> EachList {
        let cfg: EachConfig = toml::from_str(src).unwrap();
        EachList::compile(0, &cfg).unwrap()
    }

    #[test]
    fn arrays_and_prefixed_object_entries() {
        let e = each(
            "path = \"Power\"\nkey_tag = \"channel\"\nfirst_index = 1\nfields = { power_w = \"\" }",
        );
        let doc = json!({"Power": [120, 85]});
        let got: Vec<_> = e
            .elements(&doc)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(got, vec![("1".into(), json!(120)), ("2".into(), json!(85))]);
        let e = each("path = \"params\"\nkey_tag = \"outlet\"\nkey_prefix = \"switch:\"\nfields = { power_w = \"apower\" }");
        let doc = json!({"params": {"ts": 1.5, "switch:0": {"apower": 8.9}, "switch:": {}, "input:0": {}}});
        let got: Vec<_> = e
            .elements(&doc)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(got, vec!["0".to_string()]);
        assert!(e.elements(&json!({"params": 3})).is_none());
    }

    #[test]
    fn config_errors() {
        for (src, wants) in [
            ("path = \"p\"\nfields = {}", "each[0].fields"),
            (
                "path = \"p\"\nkey_prefix = \"s:\"\nfields = { a = \"a\" }",
                "each[0].key_prefix",
            ),
            ("path = \"p..q\"\nfields = { a = \"a\" }", "each[0].path"),
            (
                "path = \"p\"\nfields = { a = { path = \"a\", states = {} } }",
                "each[0].fields.a",
            ),
        ] {
            let cfg: EachConfig = toml::from_str(src).unwrap();
            let e = EachList::compile(0, &cfg).unwrap_err();
            assert!(e.contains(wants), "{src}: {e}");
        }
    }

    proptest! {
        #[test]
        fn elements_never_panic(n in 0usize..5, first in any::<usize>(), keys in proptest::collection::vec("[a-z:]{0,4}", 0..4)) {
            let e = each(&format!("path = \"\"\nkey_tag = \"k\"\nkey_prefix = \"a:\"\nfirst_index = {}\nfields = {{ v = \"\" }}", first.min(i64::MAX as usize)));
            let arr = Value::Array((0..n).map(|i| json!(i)).collect());
            prop_assert_eq!(e.elements(&arr).unwrap().len(), n);
            let obj = Value::Object(keys.iter().map(|k| (k.clone(), json!(1))).collect());
            for (k, _) in e.elements(&obj).unwrap() {
                prop_assert!(!k.is_empty());
            }
        }
    }
}

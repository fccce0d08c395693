//! Flat JSON payloads read without a document tree.
//!
//! Most `json` subscriptions read top-level keys only (`{"t":..,"temperature":..}`). Parsing
//! such a payload into a `serde_json::Value` tree allocates a map node and a `String` per
//! key, which was the largest share of decoding in a drain's profile. When every path of a
//! subscription is one key (and it has no `points` or `each`), the object is read with the
//! same `serde_json` parser straight into one slot per wanted key; every value is still
//! parsed as a `Value`, wanted or not, so what is accepted and every error message are the
//! same as with the tree (a later duplicate key wins, as in the tree's map).

use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::Value;

use super::path::JsonPath;

/// The distinct top-level keys a subscription's paths read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlatKeys {
    keys: Vec<Box<str>>,
}

impl FlatKeys {
    /// `None` unless there is at least one path and every path is a single key.
    pub(crate) fn for_paths<'p>(paths: impl IntoIterator<Item = &'p JsonPath>) -> Option<FlatKeys> {
        let mut keys: Vec<Box<str>> = Vec::new();
        for p in paths {
            let key = p.single_key()?;
            if !keys.iter().any(|k| &**k == key) {
                keys.push(key.into());
            }
        }
        (!keys.is_empty()).then_some(FlatKeys { keys })
    }

    /// Reads `text` into one slot per key. `Ok(None)`: the payload is not an object (an
    /// array, a number...), for the caller's general path.
    pub(crate) fn parse(&self, text: &str) -> Result<Option<Slots>, serde_json::Error> {
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Ok(None);
        }
        let mut slots = Slots {
            values: vec![None; self.keys.len()],
        };
        let mut de = serde_json::Deserializer::from_str(text);
        ObjectSeed {
            keys: &self.keys,
            slots: &mut slots.values,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(Some(slots))
    }

    /// The value `path` (one of the paths given to [`FlatKeys::for_paths`]) points at.
    pub(crate) fn get<'s>(&self, slots: &'s Slots, path: &JsonPath) -> Option<&'s Value> {
        let key = path.single_key()?;
        let i = self.keys.iter().position(|k| &**k == key)?;
        slots.values[i].as_ref()
    }
}

/// The values of one payload, by key.
pub(crate) struct Slots {
    values: Vec<Option<Value>>,
}

struct ObjectSeed<'a> {
    keys: &'a [Box<str>],
    slots: &'a mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(slot) = map.next_key_seed(KeySeed(self.keys))? {
            // Parsed even when unwanted: the same numbers, nesting and errors as the tree.
            let value: Value = map.next_value()?;
            if let Some(i) = slot {
                self.slots[i] = Some(value);
            }
        }
        Ok(())
    }
}

/// A key, as the index of the wanted key it is (no allocation, escaped keys included).
struct KeySeed<'a>(&'a [Box<str>]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|k| &**k == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(paths: &[&str]) -> (FlatKeys, Vec<JsonPath>) {
        let paths: Vec<JsonPath> = paths.iter().map(|p| JsonPath::parse(p).unwrap()).collect();
        (FlatKeys::for_paths(&paths).unwrap(), paths)
    }

    #[test]
    fn only_single_key_paths_qualify() {
        let p = |s: &str| JsonPath::parse(s).unwrap();
        assert!(FlatKeys::for_paths(&[p("a"), p("temp\\.inlet")]).is_some());
        assert!(FlatKeys::for_paths(&[p("a"), p("b.c")]).is_none());
        assert!(FlatKeys::for_paths(&[p("")]).is_none());
        assert!(FlatKeys::for_paths(&[]).is_none());
    }

    #[test]
    fn reads_wanted_keys_and_not_objects() {
        let (flat, paths) = keys(&["t", "temp\\.inlet", "x"]);
        let s = flat
            .parse(r#" {"t": 5, "other": [1, {"a": 2}], "temp.inlet": "v", "t": 6}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            flat.get(&s, &paths[0]),
            Some(&Value::from(6)),
            "last duplicate wins"
        );
        assert_eq!(flat.get(&s, &paths[1]), Some(&Value::from("v")));
        assert_eq!(flat.get(&s, &paths[2]), None);
        assert!(flat.parse("[1, 2]").unwrap().is_none());
        assert!(flat.parse("21.5").unwrap().is_none());
        assert!(flat.parse(r#"{"t": 1} x"#).is_err());
    }

    fn json_text() -> impl Strategy<Value = String> {
        // Objects of a few likely keys with assorted values, plus broken variants.
        let key = prop::sample::select(vec!["t", "a", "b", "temp.inlet", "a\\\"q", "é"]);
        let value = prop::sample::select(vec![
            "1",
            "-2.5",
            "1e400",
            "true",
            "null",
            "\"s\"",
            "\"\\u00e9\"",
            "[1,{\"a\":2}]",
            "{\"a\":{}}",
            "01",
            "\"",
            "",
        ]);
        (
            prop::collection::vec((key, value), 0..6),
            prop::sample::select(vec!["", " ", ",", "}", "x", "\n"]),
        )
            .prop_map(|(pairs, tail)| {
                let body: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}{tail}", body.join(","))
            })
    }

    proptest! {
        /// The slots hold exactly what the tree holds at each key, and a payload fails
        /// exactly when the tree parse fails, with the same message.
        #[test]
        fn agrees_with_the_value_tree(text in json_text()) {
            let (flat, paths) = keys(&["t", "a", "temp\\.inlet", "é", "missing"]);
            match (serde_json::from_str::<Value>(&text), flat.parse(&text)) {
                (Ok(tree), Ok(Some(slots))) => {
                    for p in &paths {
                        prop_assert_eq!(p.get(&tree), flat.get(&slots, p), "{}", text);
                    }
                }
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "{text}: tree {:?}, flat {:?}", a.map(|_| ()), b.map(|s| s.is_some())),
            }
        }

        #[test]
        fn never_panics(text in ".{0,60}") {
            let (flat, _) = keys(&["t", "a"]);
            let _ = flat.parse(&text);
        }
    }
}

//! Receiver matchers: globs on alert labels.

use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};

use super::payload::label_name;

/// All matchers of one receiver; an alert matches when every one does.
#[derive(Debug, Clone, Default)]
pub struct Matchers(Vec<(String, GlobMatcher)>);

impl Matchers {
    /// Compiles `label = glob` pairs. Label names are sanitised the same way alert labels are,
    /// so `rack-id = "r1"` matches the tag `rack-id` (sent as label `rack_id`).
    /// Errors are `(label, problem)`.
    pub fn compile(map: &BTreeMap<String, String>) -> Result<Matchers, (String, String)> {
        let mut out = Vec::with_capacity(map.len());
        for (label, pattern) in map {
            let glob = Glob::new(pattern).map_err(|e| {
                (
                    label.clone(),
                    format!("{pattern:?} is not a valid glob: {}", e.kind()),
                )
            })?;
            out.push((label_name(label), glob.compile_matcher()));
        }
        Ok(Matchers(out))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0
            .iter()
            .all(|(label, glob)| glob.is_match(labels.get(label).map(String::as_str).unwrap_or("")))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> Matchers {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Matchers::compile(&map).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn all_must_match_and_globs_work() {
        let l = labels(&[("severity", "critical"), ("site", "dc1"), ("rack", "r12")]);
        assert!(m(&[]).matches(&l));
        assert!(m(&[("severity", "critical"), ("site", "dc1")]).matches(&l));
        assert!(m(&[("rack", "r1*")]).matches(&l));
        assert!(m(&[("site", "{dc1,dc2}")]).matches(&l));
        assert!(!m(&[("severity", "critical"), ("site", "dc2")]).matches(&l));
        assert!(!m(&[("severity", "warning")]).matches(&l));
        // An absent label is the empty string: only an empty-matching glob accepts it.
        assert!(!m(&[("room", "a*")]).matches(&l));
        assert!(m(&[("room", "*")]).matches(&l));
    }

    #[test]
    fn matcher_names_are_sanitised_like_labels() {
        let l = labels(&[("rack_id", "7")]);
        assert!(m(&[("rack-id", "7")]).matches(&l));
    }

    #[test]
    fn bad_glob_names_label() {
        let map = [("site".to_string(), "[".to_string())]
            .into_iter()
            .collect();
        let (label, problem) = Matchers::compile(&map).unwrap_err();
        assert_eq!(label, "site");
        assert!(problem.contains("not a valid glob"), "{problem}");
    }
}

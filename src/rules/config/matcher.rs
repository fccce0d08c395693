//! `match` tag matchers: a glob per tag, compiled once with fast paths for `*` and plain values.

use globset::GlobMatcher;

use crate::model::TagSet;

/// A tag must match a glob (or, with a leading `!`, must not).
#[derive(Clone, Debug)]
pub struct TagMatcher {
    pub tag: String,
    pub pattern: String,
    pub negate: bool,
    pub(super) matcher: PatternMatcher,
}

/// The pattern compiled once: most rules say `rack = "*"` (the tag is present) or name one
/// value, which need no glob engine; a new series is matched against every candidate rule.
#[derive(Clone, Debug)]
pub(super) enum PatternMatcher {
    Any,
    Exact(String),
    Glob(GlobMatcher),
}

impl PatternMatcher {
    pub(super) fn new(glob: &str, compiled: GlobMatcher) -> PatternMatcher {
        if glob == "*" {
            PatternMatcher::Any
        } else if !glob.contains(['*', '?', '[', ']', '{', '}', '\\']) {
            PatternMatcher::Exact(glob.to_string())
        } else {
            PatternMatcher::Glob(compiled)
        }
    }

    pub(super) fn is_match(&self, v: &str) -> bool {
        match self {
            PatternMatcher::Any => true,
            PatternMatcher::Exact(x) => x == v,
            PatternMatcher::Glob(g) => g.is_match(v),
        }
    }
}

impl PartialEq for TagMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag && self.pattern == other.pattern && self.negate == other.negate
    }
}

impl TagMatcher {
    /// `tag = "glob"` (or `"!glob"`, which excludes), compiled; the error is what is wrong
    /// and what to write instead, for the caller to place (file:line, API key).
    pub fn parse(tag: &str, pattern: &str) -> Result<TagMatcher, (String, &'static str)> {
        let (negate, glob) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        if tag.is_empty() || glob.is_empty() {
            return Err((
                format!("match {tag:?} = {pattern:?} has an empty tag name or pattern"),
                "write e.g. match = { rack = \"r*\" } or { rack = \"!spare*\" }",
            ));
        }
        match globset::GlobBuilder::new(glob).build() {
            Ok(g) => Ok(TagMatcher {
                tag: tag.to_string(),
                pattern: pattern.to_string(),
                negate,
                matcher: PatternMatcher::new(glob, g.compile_matcher()),
            }),
            Err(e) => Err((
                format!(
                    "match pattern {pattern:?} for tag '{tag}' is not a valid glob: {}",
                    e.kind()
                ),
                "use *, ? and {a,b} wildcards, e.g. \"r1*\"",
            )),
        }
    }

    /// A missing tag fails a positive matcher and passes a negated one.
    pub fn matches(&self, tags: &TagSet) -> bool {
        match tags.get(&self.tag) {
            Some(v) => self.matcher.is_match(v) != self.negate,
            None => self.negate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use globset::GlobBuilder;

    proptest::proptest! {
        /// The fast paths (`*`, a plain value) decide exactly as the glob engine would.
        #[test]
        fn pattern_fast_paths_agree_with_globs(
            pattern in "([a-z0-9_.-]{0,6}|\\*|[a-z]{1,3}\\*|\\*[a-z]{1,2}|[a-z]\\?[a-z])",
            value in "[a-z0-9_.*-]{1,8}",
        ) {
            let glob = GlobBuilder::new(&pattern).build();
            proptest::prop_assume!(glob.is_ok() && !pattern.is_empty());
            let compiled = glob.unwrap().compile_matcher();
            let fast = PatternMatcher::new(&pattern, compiled.clone());
            proptest::prop_assert_eq!(fast.is_match(&value), compiled.is_match(&value), "{} on {}", pattern, value);
        }
    }
}

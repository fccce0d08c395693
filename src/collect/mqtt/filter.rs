//! MQTT topic filters as sets of topics: whether two filters can both match a topic, and the
//! one filter that matches exactly the topics both match.
//!
//! A partition's session subscribes to each subscription filter narrowed to each partition
//! topic (`a/+/c/#` ∩ `a/b/#` = `a/b/c/#`), and two partitions overlap when some topic matches
//! a filter of each. With MQTT's wildcards (`+` one level, `#` as the last level: the rest,
//! zero or more levels, so `a/#` matches `a` too) the topics two filters both match are again
//! the topics of one filter, or none: a `#` takes whatever the other filter has from there,
//! a `+` takes the other's level, two literals must be equal.
//!
//! Topics starting with `$` (`$SYS/...`) are matched by no filter whose first level is a
//! wildcard (MQTT 3.1.1 §4.7.2), so such a filter and a `$` literal have nothing in common.

/// Whether `filter` is a valid MQTT filter (rumqttc's check: `#` only as the whole last
/// level, `+` only as a whole level, not empty).
pub fn valid(filter: &str) -> bool {
    rumqttc::valid_filter(filter)
}

/// The filter matching exactly the topics that match both `a` and `b`; `None` when no topic
/// matches both. Both must be [`valid`].
pub fn intersect(a: &str, b: &str) -> Option<String> {
    let a: Vec<&str> = a.split('/').collect();
    let b: Vec<&str> = b.split('/').collect();
    let dollar = |f: &[&str]| f.first().is_some_and(|l| l.starts_with('$'));
    let wild = |f: &[&str]| f.first().is_some_and(|l| *l == "+" || *l == "#");
    if (dollar(&a) && wild(&b)) || (dollar(&b) && wild(&a)) {
        return None;
    }
    let mut out: Vec<&str> = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => break,
            // `#` matches the rest of the topic, whatever the other filter says of it.
            // (With the other filter finished: `a/#` ∩ `a` = `a`, `#` matches zero levels.)
            (Some(&"#"), _) => {
                out.extend_from_slice(&b[j..]);
                break;
            }
            (_, Some(&"#")) => {
                out.extend_from_slice(&a[i..]);
                break;
            }
            // One filter has levels left that the other, finished, does not allow.
            (None, Some(_)) | (Some(_), None) => return None,
            (Some(&x), Some(&y)) => {
                let level = match (x, y) {
                    ("+", other) | (other, "+") => other,
                    (x, y) if x == y => x,
                    _ => return None,
                };
                out.push(level);
                i += 1;
                j += 1;
            }
        }
    }
    Some(out.join("/"))
}

/// Whether some topic matches both `a` and `b`.
pub fn overlap(a: &str, b: &str) -> bool {
    intersect(a, b).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn intersections() {
        for (a, b, want) in [
            ("a/+/c/#", "a/b/#", Some("a/b/c/#")),
            ("a/b/#", "a/+/c/#", Some("a/b/c/#")),
            ("a/b", "a/c", None),
            ("a/+", "a/b", Some("a/b")),
            ("a/+", "+/b", Some("a/b")),
            ("+/+", "+", None),
            ("a/#", "a", Some("a")),
            ("a", "a/#", Some("a")),
            ("#", "x/+/y", Some("x/+/y")),
            ("a/+/#", "a/#", Some("a/+/#")),
            ("a/+", "a/b/c", None),
            ("a/b/c", "a/#", Some("a/b/c")),
            ("site/a/#", "site/b/#", None),
            ("dc/+/temp", "dc/hall-a/#", Some("dc/hall-a/temp")),
            ("$SYS/#", "#", None),
            ("+/x", "$SYS/x", None),
            ("$SYS/x", "$SYS/+", Some("$SYS/x")),
            ("a//b", "a/+/b", Some("a//b")),
        ] {
            assert_eq!(intersect(a, b).as_deref(), want, "{a} ∩ {b}");
            assert_eq!(overlap(a, b), want.is_some(), "{a} overlaps {b}");
        }
    }

    #[test]
    fn validity() {
        for ok in ["a", "a/#", "#", "+", "a/+/b", "a//b"] {
            assert!(valid(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "++"] {
            assert!(!valid(bad), "{bad}");
        }
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "c"])
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "c", "+", "+"]);
        (prop::collection::vec(level, 0..4), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            levels.join("/")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A topic matches the intersection exactly when it matches both filters.
        #[test]
        fn intersection_matches_exactly_what_both_match(a in filter(), b in filter(), t in topic()) {
            prop_assert!(valid(&a) && valid(&b));
            let both = rumqttc::matches(&t, &a) && rumqttc::matches(&t, &b);
            match intersect(&a, &b) {
                Some(i) => {
                    prop_assert!(valid(&i), "{} ∩ {} = {} is not a filter", a, b, i);
                    prop_assert_eq!(rumqttc::matches(&t, &i), both, "{} ∩ {} = {}, topic {}", a, b, i, t);
                }
                None => prop_assert!(!both, "{} ∩ {} empty, yet {} matches both", a, b, t),
            }
        }

        /// Narrowing is symmetric in what it matches.
        #[test]
        fn intersection_is_symmetric(a in filter(), b in filter(), t in topic()) {
            let ab = intersect(&a, &b).is_some_and(|i| rumqttc::matches(&t, &i));
            let ba = intersect(&b, &a).is_some_and(|i| rumqttc::matches(&t, &i));
            prop_assert_eq!(ab, ba);
        }
    }
}

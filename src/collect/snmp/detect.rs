//! Which profiles a device gets: by what it answers, not only by what it calls itself.
//!
//! The order and its reasons are in `docs/profiles.md`: vendor profiles first (by the
//! longest sysObjectID prefix, then by anchors), then standard MIBs, then generic ones only
//! when nothing else fits or their own sysObjectID matches; `replaces` removes what a
//! chosen profile makes redundant.

use std::sync::Arc;

use super::mib_view::MibView;
use super::profile::{Profile, ProfileClass, ProfileSet};
use super::value::ObjectId;
use super::SnmpError;

/// Asks the device about every anchor of `set` (one GETNEXT each, batched) and returns the
/// anchors it serves.
pub(crate) async fn answered_anchors<V: MibView>(
    view: &mut V,
    set: &ProfileSet,
) -> Result<Vec<ObjectId>, SnmpError> {
    let anchors = set.anchors();
    if anchors.is_empty() {
        return Ok(Vec::new());
    }
    let next = view.next_of(&anchors).await?;
    Ok(anchors
        .into_iter()
        .zip(next)
        .filter(|(a, n)| n.as_ref().is_some_and(|n| n.starts_with(a)))
        .map(|(a, _)| a)
        .collect())
}

/// The profiles for a device with this sysObjectID serving these anchors, in poll order.
pub fn choose(
    set: &ProfileSet,
    sys_object_id: Option<&ObjectId>,
    answered: &[ObjectId],
) -> Vec<Arc<Profile>> {
    // (class, matched by anchor only, longer prefix first, name): a stable, explainable order.
    let mut matched: Vec<(ProfileClass, bool, std::cmp::Reverse<usize>, &Arc<Profile>)> = set
        .iter()
        .filter_map(|p| {
            let by_prefix = sys_object_id.and_then(|o| p.match_len(o));
            let by_anchor = p.anchors.iter().any(|a| answered.contains(a));
            match (by_prefix, by_anchor) {
                (Some(len), _) => Some((p.class, false, std::cmp::Reverse(len), p)),
                (None, true) => Some((p.class, true, std::cmp::Reverse(0), p)),
                (None, false) => None,
            }
        })
        .collect();
    matched.sort_by(|a, b| {
        (a.0, a.1, a.2)
            .cmp(&(b.0, b.1, b.2))
            .then_with(|| a.3.name.cmp(&b.3.name))
    });
    let specific_exists = matched.iter().any(|m| m.0 != ProfileClass::Generic);
    let mut chosen: Vec<Arc<Profile>> = Vec::new();
    for (class, by_anchor, _, p) in matched {
        if class == ProfileClass::Generic && specific_exists && by_anchor {
            continue;
        }
        chosen.push(p.clone());
    }
    // A profile replaces others only when the device serves what it reads: one chosen by
    // sysObjectID whose anchors all stay silent (IF-MIB's ifXTable on an old agent) must not
    // push out the fallback that does answer (the basic ifTable).
    let replaced: Vec<String> = chosen
        .iter()
        .filter(|p| p.anchors.is_empty() || p.anchors.iter().any(|a| answered.contains(a)))
        .flat_map(|p| p.replaces.clone())
        .collect();
    chosen.retain(|p| !replaced.contains(&p.name));
    chosen
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::profile::parse_profile;
    use super::*;

    fn set(files: &[&str]) -> ProfileSet {
        let mut s = ProfileSet::default();
        for f in files {
            s.insert(parse_profile(Path::new("t.toml"), f).unwrap())
                .unwrap();
        }
        s.check_replaces().unwrap();
        s
    }

    fn oid(s: &str) -> ObjectId {
        ObjectId::parse(s).unwrap()
    }

    fn names(v: &[Arc<Profile>]) -> Vec<&str> {
        v.iter().map(|p| p.name.as_str()).collect()
    }

    fn fleet() -> ProfileSet {
        set(&[
            "name = \"ups-mib\"\nclass = \"standard\"\nanchors = [\"1.3.6.1.2.1.33.1.1\"]",
            "name = \"huawei-ups\"\nanchors = [\"1.3.6.1.4.1.2011.6.174\"]\nreplaces = [\"ups-mib\"]",
            "name = \"apc-rpdu2\"\nsys_object_id = [\"1.3.6.1.4.1.318.1.3.4.6\"]\nanchors = [\"1.3.6.1.4.1.318.1.1.26\"]",
            "name = \"apc-env\"\nanchors = [\"1.3.6.1.4.1.318.1.1.25\"]",
            "name = \"if-mib\"\nclass = \"generic\"\nsys_object_id = [\"1.3.6.1.4.1.9.1\"]\nanchors = [\"1.3.6.1.2.1.31.1.1\"]\nreplaces = [\"if-mib-basic\"]",
            "name = \"if-mib-basic\"\nclass = \"generic\"\nanchors = [\"1.3.6.1.2.1.2.2\"]",
        ])
    }

    #[test]
    fn vendor_before_standard_and_replaces() {
        let s = fleet();
        // A Huawei UPS under net-snmp's sysObjectID: its own profile, not UPS-MIB, no IF-MIB.
        let got = choose(
            &s,
            Some(&oid("1.3.6.1.4.1.8072.3.2.10")),
            &[
                oid("1.3.6.1.2.1.33.1.1"),
                oid("1.3.6.1.4.1.2011.6.174"),
                oid("1.3.6.1.2.1.2.2"),
            ],
        );
        assert_eq!(names(&got), ["huawei-ups"]);
        // Any UPS-MIB agent under a vendor sysObjectID.
        let got = choose(
            &s,
            Some(&oid("1.3.6.1.4.1.40614")),
            &[oid("1.3.6.1.2.1.33.1.1"), oid("1.3.6.1.2.1.2.2")],
        );
        assert_eq!(names(&got), ["ups-mib"]);
    }

    #[test]
    fn prefix_matches_come_before_anchor_matches() {
        let s = fleet();
        let got = choose(
            &s,
            Some(&oid("1.3.6.1.4.1.318.1.3.4.6")),
            &[oid("1.3.6.1.4.1.318.1.1.26"), oid("1.3.6.1.4.1.318.1.1.25")],
        );
        assert_eq!(names(&got), ["apc-rpdu2", "apc-env"]);
    }

    #[test]
    fn generic_only_by_its_own_prefix_or_alone() {
        let s = fleet();
        let switch = choose(
            &s,
            Some(&oid("1.3.6.1.4.1.9.1.516")),
            &[oid("1.3.6.1.2.1.2.2"), oid("1.3.6.1.2.1.31.1.1")],
        );
        assert_eq!(names(&switch), ["if-mib"]);
        // An old switch without ifXTable: its sysObjectID still picks IF-MIB, but the basic
        // ifTable profile is kept because IF-MIB's anchor did not answer.
        let old_switch = choose(
            &s,
            Some(&oid("1.3.6.1.4.1.9.1.516")),
            &[oid("1.3.6.1.2.1.2.2")],
        );
        assert_eq!(names(&old_switch), ["if-mib", "if-mib-basic"]);
        let unknown_host = choose(
            &s,
            Some(&oid("1.3.6.1.4.1.8072.3.2.10")),
            &[oid("1.3.6.1.2.1.2.2"), oid("1.3.6.1.2.1.31.1.1")],
        );
        assert_eq!(names(&unknown_host), ["if-mib"]);
        assert!(choose(&s, None, &[]).is_empty());
    }
}

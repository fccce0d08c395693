//! Scale-out of polled collectors (SNMP, Modbus): `sitewatch run --shard i/n` polls only the
//! devices shard `i` of `n` owns, so `n` instances with the same config split the targets between them.
//!
//! Ownership is rendezvous (highest-random-weight) hashing on the target **name**: every
//! instance computes, for each target, a score per shard and the highest score wins. No
//! coordination and no shared state are needed; all instances only have to agree on `n`.
//! Compared with `hash % n`, growing from `n` to `n + 1` instances moves only the ~1/(n+1) of
//! targets that the new shard wins (the rest keep their poller, their counter state and their
//! rate history), and shrinking moves only the removed shard's targets.
//!
//! The hash is FNV-1a over the name followed by a 64-bit finalizer (SplitMix64), written out
//! here rather than taken from `std::hash`, whose output may change between Rust releases:
//! two instances built by different compilers must still agree on who polls what.
//!
//! What sharding does not do: it does not fail over. If instance 2 of 3 is down, its targets
//! are not polled until it returns (run it under systemd with `Restart=always`, and alert on
//! the `snmp_poll` `up` field or on `sitewatch_snmp_polls_total` per instance). Cluster mode
//! (`crate::cluster`, docs/cluster.md) does, with the same hash over live member names
//! ([`owner_among`]).

use std::fmt;
use std::str::FromStr;

/// One shard of `count`: `index` is 1-based, as written on the command line (`2/3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shard {input:?}: {problem}; write it as INDEX/COUNT with 1 <= INDEX <= COUNT, e.g. --shard 2/3")]
pub struct ShardParseError {
    pub input: String,
    pub problem: &'static str,
}

impl Shard {
    /// Shard `index` (1-based) of `count`; `None` unless `1 <= index <= count`.
    pub fn new(index: u32, count: u32) -> Option<Shard> {
        (index >= 1 && index <= count).then_some(Shard { index, count })
    }

    /// The whole set: one instance polls everything.
    pub fn all() -> Shard {
        Shard { index: 1, count: 1 }
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// True when this shard polls the target called `name`.
    pub fn owns(self, name: &str) -> bool {
        owner(name, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardParseError;

    fn from_str(s: &str) -> Result<Shard, ShardParseError> {
        let fail = |problem| ShardParseError {
            input: s.to_string(),
            problem,
        };
        let (i, n) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| fail("missing '/'"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| fail("INDEX is not a whole number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| fail("COUNT is not a whole number"))?;
        if count == 0 {
            return Err(fail("COUNT must be at least 1"));
        }
        Shard::new(index, count).ok_or_else(|| fail("INDEX is outside 1..=COUNT"))
    }
}

/// Which shard (1-based) of `count` owns the target called `name`. `count == 0` is treated as
/// one shard.
pub fn owner(name: &str, count: u32) -> u32 {
    let base = fnv1a(name.as_bytes());
    let mut best = 1;
    let mut best_score = 0u64;
    for shard in 1..=count.max(1) {
        let score = splitmix64(base ^ splitmix64(u64::from(shard)));
        // Ties (astronomically rare) go to the lower shard, the same on every instance.
        if shard == 1 || score > best_score {
            best = shard;
            best_score = score;
        }
    }
    best
}

/// Which of `members` owns the unit called `name`, by the same rendezvous hash as [`owner`]
/// with each member's score seeded by the member's name instead of a shard number: the
/// cluster mode (`crate::cluster::assignment`) hashes over the live members' names, so a
/// member joining or leaving moves only its own share. `None` when `members` is empty.
pub fn owner_among<'a>(name: &str, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let base = fnv1a(name.as_bytes());
    let mut best: Option<(u64, &'a str)> = None;
    for m in members {
        let score = splitmix64(base ^ splitmix64(fnv1a(m.as_bytes())));
        // Ties (astronomically rare) go to the smaller name, the same on every member.
        let wins = match best {
            None => true,
            Some((s, b)) => score > s || (score == s && m < b),
        };
        if wins {
            best = Some((score, m));
        }
    }
    best.map(|(_, m)| m)
}

/// Keeps only the devices `shard` owns (by the name `name_of` gives); returns how many
/// were removed.
pub fn retain_owned<T>(devices: &mut Vec<T>, shard: Shard, name_of: impl Fn(&T) -> &str) -> usize {
    let before = devices.len();
    devices.retain(|d| shard.owns(name_of(d)));
    before - devices.len()
}

/// FNV-1a, written out so every build of sitewatch hashes a name the same way.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finalizer: FNV-1a alone leaves similar names ("pdu-a01", "pdu-a02") with
/// correlated high bits, which would skew the shard sizes.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "pdu-{}-r{:02}-{}",
                    ["ams1", "fra2", "lon3"][i % 3],
                    i % 40,
                    i
                )
            })
            .collect()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("2/3".parse::<Shard>().unwrap(), Shard::new(2, 3).unwrap());
        assert_eq!(" 1 / 1 ".parse::<Shard>().unwrap(), Shard::all());
        assert_eq!(Shard::new(4, 7).unwrap().to_string(), "4/7");
        for bad in ["", "3", "0/3", "4/3", "1/0", "a/2", "1/b", "-1/2", "1/2/3"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.to_string().contains("INDEX/COUNT"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_target_has_exactly_one_owner_and_shards_are_balanced() {
        let names = names(1000);
        for n in 1..=5u32 {
            let mut sizes = vec![0usize; n as usize];
            for name in &names {
                let owners: Vec<u32> = (1..=n)
                    .filter(|&i| Shard::new(i, n).unwrap().owns(name))
                    .collect();
                assert_eq!(owners.len(), 1, "{name} with n={n}: owners {owners:?}");
                sizes[(owners[0] - 1) as usize] += 1;
            }
            let ideal = 1000.0 / f64::from(n);
            for (i, &s) in sizes.iter().enumerate() {
                assert!(
                    (s as f64 - ideal).abs() <= 0.15 * ideal,
                    "n={n}: shard {} has {s} targets, ideal {ideal:.0} ({sizes:?})",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn growing_moves_about_one_share_and_only_to_the_new_shard() {
        let names = names(1000);
        for n in 1..=5u32 {
            let mut moved = 0usize;
            for name in &names {
                let before = owner(name, n);
                let after = owner(name, n + 1);
                if before != after {
                    // Rendezvous hashing: a target only ever moves to the shard just added.
                    assert_eq!(after, n + 1, "{name}: {before} -> {after}");
                    moved += 1;
                }
            }
            let expected = 1000.0 / f64::from(n + 1);
            assert!(
                (moved as f64 - expected).abs() <= 0.2 * expected,
                "n={n}->{}: moved {moved}, expected about {expected:.0}",
                n + 1
            );
        }
    }

    #[test]
    fn owner_is_stable_across_releases() {
        // Pinned values: a change here means instances of different versions would disagree
        // on who polls what during a rolling upgrade.
        let got: Vec<u32> = ["ups-1", "pdu-a01", "crac-3", ""]
            .iter()
            .map(|n| owner(n, 3))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 4] = [1, 2, 1, 2];

    #[test]
    fn retain_owned_partitions_a_target_list() {
        let all: Vec<String> = names(60);
        let mut seen = std::collections::BTreeSet::new();
        let mut total = 0;
        for i in 1..=3 {
            let mut mine = all.clone();
            let removed = retain_owned(&mut mine, Shard::new(i, 3).unwrap(), |n| n.as_str());
            assert_eq!(removed + mine.len(), all.len());
            total += mine.len();
            for t in mine {
                assert!(seen.insert(t), "polled by two shards");
            }
        }
        assert_eq!(total, all.len());
    }

    #[test]
    fn owner_among_moves_only_the_leaving_members_share() {
        let names = names(1000);
        let three = ["m1", "m2", "m3"];
        let two = ["m1", "m3"];
        let mut sizes = std::collections::BTreeMap::new();
        for n in &names {
            let before = owner_among(n, three).unwrap();
            *sizes.entry(before).or_insert(0usize) += 1;
            let after = owner_among(n, two).unwrap();
            if before != "m2" {
                assert_eq!(before, after, "{n} moved though its owner stayed");
            }
            // Order of the list does not matter.
            assert_eq!(owner_among(n, ["m3", "m2", "m1"]), Some(before));
        }
        for (m, s) in &sizes {
            assert!(
                (s * 3).abs_diff(1000) <= 150,
                "{m} owns {s} of 1000 ({sizes:?})"
            );
        }
        assert_eq!(owner_among("x", std::iter::empty()), None);
        assert_eq!(owner_among("ups-1", ["a", "b", "c"]), Some(PINNED_AMONG));
    }
    /// Pinned like [`PINNED`]: members of different versions must agree.
    const PINNED_AMONG: &str = "a";

    proptest! {
        #[test]
        fn exactly_one_owner_for_any_name(name in ".{0,40}", n in 1u32..12) {
            let owners = (1..=n).filter(|&i| Shard::new(i, n).unwrap().owns(&name)).count();
            prop_assert_eq!(owners, 1);
            prop_assert!((1..=n).contains(&owner(&name, n)));
        }

        #[test]
        fn parse_never_panics(s in ".{0,20}") {
            if let Ok(shard) = s.parse::<Shard>() {
                prop_assert!(shard.index() >= 1 && shard.index() <= shard.count());
                prop_assert_eq!(shard.to_string().parse::<Shard>().unwrap(), shard);
            }
        }
    }
}

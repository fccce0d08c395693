//! Which member owns which unit: rendezvous hashing of the unit name over the live members'
//! names ([`crate::collect::shard::owner_among`], the hash `--shard` uses), so every member
//! computes the same answer from the same member list with no coordination, and a member
//! joining or leaving moves only its own share.
//!
//! A unit is named by its kind and its name: `snmp:<target name>` for an SNMP target,
//! `modbus:<device name>` for a Modbus device, `mqtt:<partition>` for an MQTT partition; a trap
//! from an address no target has is the unit `snmp-trap-source:<ip>`, so exactly one member
//! records it too.

use std::collections::BTreeMap;

use crate::collect::shard::owner_among;

/// The unit of the SNMP target called `target`.
pub fn snmp_unit(target: &str) -> String {
    format!("snmp:{target}")
}

/// The unit of the Modbus device called `device`.
pub fn modbus_unit(device: &str) -> String {
    format!("modbus:{device}")
}

/// The unit of traps from `ip` when no target has that address.
pub fn trap_source_unit(ip: &str) -> String {
    format!("snmp-trap-source:{ip}")
}

/// The member of `members` that owns `unit`; `None` without members.
pub fn owner<'a>(unit: &str, members: &'a [String]) -> Option<&'a str> {
    owner_among(unit, members.iter().map(String::as_str))
}

/// The units `member` owns among `units`, in their order.
pub fn owned_by<'a>(units: &'a [String], members: &[String], member: &str) -> Vec<&'a str> {
    units
        .iter()
        .filter(|u| owner(u, members) == Some(member))
        .map(String::as_str)
        .collect()
}

/// Every member's units (members without units included, with none).
pub fn by_member<'a>(units: &'a [String], members: &[String]) -> BTreeMap<String, Vec<&'a str>> {
    let mut out: BTreeMap<String, Vec<&str>> =
        members.iter().map(|m| (m.clone(), Vec::new())).collect();
    for u in units {
        if let Some(m) = owner(u, members) {
            out.entry(m.to_string()).or_default().push(u);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_has_one_owner_and_the_split_is_even() {
        let units: Vec<String> = (0..300).map(|i| snmp_unit(&format!("pdu-{i}"))).collect();
        let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let split = by_member(&units, &members);
        assert_eq!(split.values().map(Vec::len).sum::<usize>(), 300);
        for (m, us) in &split {
            assert!(us.len() > 70 && us.len() < 130, "{m}: {}", us.len());
            assert_eq!(owned_by(&units, &members, m), *us);
        }
        assert!(owned_by(&units, &members, "not-a-member").is_empty());
        assert!(by_member(&units, &[]).is_empty());
    }
}

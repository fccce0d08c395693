//! Which notification a trap is: well-known trap OIDs and their names, which trap ends the
//! condition of another, and the SNMPv2 OID of an SNMPv1 trap (RFC 3584).

use crate::collect::snmp::value::ObjectId;

/// RFC 3584 §3.1: generic traps 0..=5 map to `snmpTraps.(generic + 1)`.
const SNMP_TRAPS: &[u32] = &[1, 3, 6, 1, 6, 3, 1, 1, 5];

/// Well-known notifications: OID (as SNMPv2 trap OID) → name.
pub(super) const KNOWN_TRAPS: &[(&[u32], &str)] = &[
    // SNMPv2-MIB snmpTraps (RFC 3418); v1 generic traps 0..=4 map here.
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 1], "coldStart"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 2], "warmStart"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 3], "linkDown"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 4], "linkUp"),
    (&[1, 3, 6, 1, 6, 3, 1, 1, 5, 5], "authenticationFailure"),
    // UPS-MIB (RFC 1628) upsTraps.
    (&[1, 3, 6, 1, 2, 1, 33, 2, 1], "upsTrapOnBattery"),
    (&[1, 3, 6, 1, 2, 1, 33, 2, 2], "upsTrapTestCompleted"),
    (&[1, 3, 6, 1, 2, 1, 33, 2, 3], "upsTrapAlarmEntryAdded"),
    (&[1, 3, 6, 1, 2, 1, 33, 2, 4], "upsTrapAlarmEntryRemoved"),
    // APC PowerNet-MIB SMIv1 traps (enterprise 318, mapped as enterprise.0.specific).
    (&[1, 3, 6, 1, 4, 1, 318, 0, 5], "upsOnBattery"),
    (&[1, 3, 6, 1, 4, 1, 318, 0, 7], "lowBattery"),
    (&[1, 3, 6, 1, 4, 1, 318, 0, 9], "powerRestored"),
];

/// (trap, the trap whose condition it ends, that trap's name). Only pairs that end the
/// condition for the whole device are listed: linkUp/linkDown are per interface, and UPS-MIB
/// alarm entries per alarm, which the trap series (source + trap OID) cannot tell apart.
pub(super) const CLEARS: &[(&[u32], &[u32], &str)] = &[(
    &[1, 3, 6, 1, 4, 1, 318, 0, 9],
    &[1, 3, 6, 1, 4, 1, 318, 0, 5],
    "upsOnBattery",
)];

/// Name of a well-known trap OID.
pub fn trap_name(oid: &ObjectId) -> Option<&'static str> {
    KNOWN_TRAPS
        .iter()
        .find(|(o, _)| *o == oid.0.as_slice())
        .map(|(_, n)| *n)
}

/// The SNMPv2 trap OID of an SNMPv1 trap (RFC 3584 §3.1): generic 0..=5 →
/// `1.3.6.1.6.3.1.1.5.(generic+1)`, enterpriseSpecific (6) → `enterprise.0.specific`.
pub fn v1_trap_oid(enterprise: &ObjectId, generic: i64, specific: i64) -> ObjectId {
    match generic {
        0..=5 => ObjectId(
            SNMP_TRAPS
                .iter()
                .copied()
                .chain([(generic + 1) as u32])
                .collect(),
        ),
        _ => {
            // A negative or huge specific code cannot be an OID arc; keep it visible rather
            // than wrap it into a different, plausible-looking trap.
            let specific = u32::try_from(specific).unwrap_or(u32::MAX);
            enterprise.child(&[0, specific])
        }
    }
}

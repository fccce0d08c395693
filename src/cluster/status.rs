//! `sitewatch cluster status`: the members registered in etcd (name, lease, time left) and
//! the units each owns, computed with the assignment every member uses.

use std::fmt::Write as _;
use std::time::Duration;

use super::assignment::by_member;
use super::config::ClusterConfig;
use super::membership::{connect, member_of, MembershipError};

/// How long each etcd request of `status` may take.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    pub lease: i64,
    /// Seconds until the lease expires without renewal; negative when etcd does not know it.
    pub ttl_left: i64,
    pub units: Vec<String>,
}

/// Reads the members from etcd and assigns `units` over them.
pub async fn read(
    cfg: &ClusterConfig,
    units: &[String],
) -> Result<Vec<MemberStatus>, MembershipError> {
    let endpoints = cfg.etcd.join(",");
    let etcd = |what, source| MembershipError::Etcd {
        endpoints: endpoints.clone(),
        what,
        source,
    };
    let timeout = |what| MembershipError::Timeout {
        endpoints: endpoints.clone(),
        what,
        after: STATUS_TIMEOUT,
    };
    let mut client = connect(cfg, STATUS_TIMEOUT).await?;
    let prefix = cfg.members_prefix();
    let listing = tokio::time::timeout(
        STATUS_TIMEOUT,
        client.get(
            prefix.as_str(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        ),
    )
    .await
    .map_err(|_| timeout("list members"))?
    .map_err(|e| etcd("list members", e))?;
    let mut found: Vec<(String, i64)> = listing
        .kvs()
        .iter()
        .filter_map(|kv| Some((member_of(kv.key(), &prefix)?.to_string(), kv.lease())))
        .collect();
    found.sort();
    let names: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
    let mut assigned = by_member(units, &names);
    let mut out = Vec::with_capacity(found.len());
    for (name, lease) in found {
        let ttl_left = tokio::time::timeout(STATUS_TIMEOUT, client.lease_time_to_live(lease, None))
            .await
            .map_err(|_| timeout("lease time-to-live"))?
            .map_err(|e| etcd("lease time-to-live", e))?
            .ttl();
        let units = assigned
            .remove(&name)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_string)
            .collect();
        out.push(MemberStatus {
            name,
            lease,
            ttl_left,
            units,
        });
    }
    Ok(out)
}

/// The report `sitewatch cluster status` prints.
pub fn render(cfg: &ClusterConfig, members: &[MemberStatus], units: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster {:?} (prefix {}), etcd {}: {} member(s), {} unit(s)",
        cfg.cluster,
        cfg.prefix(),
        cfg.etcd.join(","),
        members.len(),
        units
    );
    if members.is_empty() {
        let _ = writeln!(
            s,
            "no member registered: no unit is collected by this cluster"
        );
    }
    for m in members {
        let _ = writeln!(
            s,
            "member {}  lease {:x}  ttl {}s  owns {}: {}",
            m.name,
            m.lease,
            m.ttl_left,
            m.units.len(),
            m.units.join(", ")
        );
        let _ = writeln!(s, "  {}", by_kind(&m.units));
    }
    s
}

/// `snmp targets 100, modbus devices 2, mqtt partitions 2 (hall-1, hall-3)`: the partitions
/// by name (there are few, and they are what an operator looks for), the rest counted.
fn by_kind(units: &[String]) -> String {
    let count = |kind: &str| units.iter().filter(|u| u.starts_with(kind)).count();
    let partitions: Vec<&str> = units
        .iter()
        .filter_map(|u| u.strip_prefix("mqtt:"))
        .collect();
    format!(
        "snmp targets {}, modbus devices {}, mqtt partitions {}{}",
        count("snmp:"),
        count("modbus:"),
        partitions.len(),
        if partitions.is_empty() {
            String::new()
        } else {
            format!(" ({})", partitions.join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_counted_by_kind_and_partitions_named() {
        let units: Vec<String> = ["snmp:a", "snmp:b", "modbus:m", "mqtt:hall-1", "mqtt:hall-3"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            by_kind(&units),
            "snmp targets 2, modbus devices 1, mqtt partitions 2 (hall-1, hall-3)"
        );
        assert_eq!(
            by_kind(&[]),
            "snmp targets 0, modbus devices 0, mqtt partitions 0"
        );
    }
}

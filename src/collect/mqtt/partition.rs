//! `[[mqtt.partition]]`: the MQTT topic tree split into groups of filters, each collected by
//! its own persistent session, so that in cluster mode one member holds every sample of a
//! series and the broker keeps a partition's messages while it changes hands.
//!
//! ```toml
//! [[mqtt.partition]]
//! name = "hall-a"                       # the cluster unit `mqtt:hall-a`
//! topics = ["dc/site1/hall-a/#"]        # MQTT filters
//!
//! [[mqtt.partition]]
//! name = "hall-b"
//! topics = ["dc/site1/hall-b/#", "dc/site1/roof/#"]
//! ```
//!
//! A partition's session has the client id `<[mqtt] client_id>-<name>`, the same on every
//! member: whoever owns the partition resumes the one broker-side session, with its queued
//! QoS 1 messages. It subscribes to each subscription's filter narrowed to each of the
//! partition's topics ([`super::filter::intersect`]); routing to subscriptions by template is
//! unchanged. The checks here make sure no topic can reach two sessions (partitions overlap)
//! and no subscription is left with nothing (it overlaps no partition).

use super::config::{MqttConfig, MqttConfigError};
use super::filter;

/// The cluster unit of the partition called `name`.
pub fn partition_unit(name: &str) -> String {
    format!("mqtt:{name}")
}

/// Every partition's unit (`mqtt:<name>`), in config order; none without partitions (then
/// MQTT is not shared by a cluster: see [`cluster_warnings`]).
pub fn partition_units(cfg: &MqttConfig) -> Vec<String> {
    cfg.partitions
        .iter()
        .map(|p| partition_unit(&p.name))
        .collect()
}

/// The client id of a partition's session: the same on every member, so the owner of the
/// moment resumes the same broker-side session.
pub fn partition_client_id(client_id: &str, partition: &str) -> String {
    format!("{client_id}-{partition}")
}

/// What `[mqtt]` lacks to be shared by `[cluster]`, for `check` and the start-up log: without
/// partitions every member subscribes to every topic (duplicate rows and alerts).
pub fn cluster_warnings(cfg: &MqttConfig) -> Vec<String> {
    if !cfg.partitions.is_empty() {
        return Vec::new();
    }
    vec![
        "[mqtt] with [cluster] but no [[mqtt.partition]]: MQTT is not shared by the cluster, \
         every member subscribes to every topic (duplicate rows and alerts); add partitions \
         (see docs/cluster.md, \"MQTT partitions\")"
            .to_string(),
    ]
}

/// Filters the session of `topics` subscribes to: each subscription filter narrowed to each
/// topic, where they overlap.
pub(super) fn narrowed<'a>(
    filter: &'a str,
    topics: &'a [String],
) -> impl Iterator<Item = String> + 'a {
    topics
        .iter()
        .filter_map(move |t| filter::intersect(filter, t))
}

/// The partition checks of [`MqttConfig::validate`], after the subscriptions compiled;
/// `filters[i]` is the MQTT filter of subscription `i`.
pub(super) fn check(cfg: &MqttConfig, filters: &[String]) -> Result<(), MqttConfigError> {
    if cfg.partitions.is_empty() {
        return Ok(());
    }
    let global = |key, problem: String| MqttConfigError::Global { key, problem };
    if cfg.share_group.is_some() {
        return Err(global(
            "share_group",
            "cannot be used together with [[mqtt.partition]]: both split the messages among \
             instances (partitions by topic, each owned by one cluster member; a share group \
             message by message); remove one of them"
                .into(),
        ));
    }
    if cfg.clean_session {
        return Err(global(
            "clean_session",
            "must be false with [[mqtt.partition]]: a partition's session must outlive its \
             owner so the broker holds its messages while another member takes it over"
                .into(),
        ));
    }
    let mut names = std::collections::HashMap::new();
    for (index, p) in cfg.partitions.iter().enumerate() {
        let err = |problem: String| MqttConfigError::Partition {
            index,
            name: p.name.clone(),
            problem,
        };
        let plain = p
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if p.name.is_empty() || !plain {
            return Err(err(
                "`name` must be a plain name of letters, digits, '-' and '_' (it becomes part \
                 of the client id and of the cluster unit), e.g. \"hall-a\""
                    .into(),
            ));
        }
        if let Some(first) = names.insert(p.name.as_str(), index) {
            return Err(err(format!(
                "`name` is also the name of mqtt.partition[{first}]; partition names must be \
                 unique"
            )));
        }
        if partition_client_id(&cfg.client_id, &p.name).len() > 65535 {
            return Err(err(
                "client id `<client_id>-<name>` is longer than MQTT allows (65535 bytes)".into(),
            ));
        }
        if p.topics.is_empty() {
            return Err(err(
                "`topics` is empty; list the MQTT filters of this partition, e.g. \
                 [\"dc/site1/hall-a/#\"]"
                    .into(),
            ));
        }
        for (i, t) in p.topics.iter().enumerate() {
            if !filter::valid(t) {
                return Err(err(format!(
                    "`topics`: {t:?} is not an MQTT filter ('#' only as the whole last level, \
                     '+' only as a whole level, not empty)"
                )));
            }
            if let Some((u, both)) = p.topics[..i]
                .iter()
                .find_map(|u| filter::intersect(u, t).map(|both| (u, both)))
            {
                return Err(err(format!(
                    "`topics`: {u:?} and {t:?} overlap (both match {both:?}): a message \
                     would be received twice; make them disjoint"
                )));
            }
        }
    }
    for (i, p) in cfg.partitions.iter().enumerate() {
        for q in &cfg.partitions[..i] {
            for t in &p.topics {
                for u in &q.topics {
                    if let Some(both) = filter::intersect(u, t) {
                        return Err(MqttConfigError::Partition {
                            index: i,
                            name: p.name.clone(),
                            problem: format!(
                                "topic {t:?} overlaps {u:?} of partition {:?} (both match \
                                 {both:?}): a message would be collected by two sessions, \
                                 possibly on two members; make the partitions disjoint",
                                q.name
                            ),
                        });
                    }
                }
            }
        }
    }
    for (index, f) in filters.iter().enumerate() {
        let covered = cfg
            .partitions
            .iter()
            .any(|p| p.topics.iter().any(|t| filter::overlap(f, t)));
        if !covered {
            let sub = &cfg.subscriptions[index];
            return Err(MqttConfigError::Subscription {
                index,
                topic: sub.topic.clone(),
                key: "topic",
                problem: format!(
                    "its filter {f:?} overlaps no [[mqtt.partition]] topic, so no session \
                     would subscribe to it and it would collect nothing; add its topics to a \
                     partition"
                ),
            });
        }
    }
    Ok(())
}

/// For `sitewatch check`: one line per partition, its client id and topics.
pub fn describe(cfg: &MqttConfig) -> Vec<String> {
    cfg.partitions
        .iter()
        .map(|p| {
            format!(
                "partition {} (unit {}, client id {}): {}",
                p.name,
                partition_unit(&p.name),
                partition_client_id(&cfg.client_id, &p.name),
                p.topics.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str, partitions: &str) -> MqttConfig {
        toml::from_str(&format!(
            "host = \"h\"\nclient_id = \"sw\"\n{extra}\n\
             [[subscription]]\ntopic = \"site/{{site}}/{{sensor}}\"\nmeasurement = \"m\"\nformat = \"number\"\n\
             {partitions}"
        ))
        .unwrap()
    }

    const TWO: &str = "[[partition]]\nname = \"a\"\ntopics = [\"site/a/#\"]\n\
                       [[partition]]\nname = \"b\"\ntopics = [\"site/b/#\", \"site/c/+\"]\n";

    #[test]
    fn units_client_ids_and_narrowed_filters() {
        let c = cfg("", TWO);
        c.validate().unwrap();
        assert_eq!(partition_units(&c), vec!["mqtt:a", "mqtt:b"]);
        assert_eq!(partition_client_id(&c.client_id, "b"), "sw-b");
        let b = &c.partitions[1].topics;
        assert_eq!(
            narrowed("site/+/+", b).collect::<Vec<_>>(),
            vec!["site/b/+", "site/c/+"]
        );
        assert!(cluster_warnings(&c).is_empty());
        assert_eq!(cluster_warnings(&cfg("", "")).len(), 1);
        let d = describe(&c);
        assert_eq!(
            d[1],
            "partition b (unit mqtt:b, client id sw-b): site/b/#, site/c/+"
        );
    }

    #[test]
    fn bad_partitions_are_explained() {
        for (extra, partitions, wants) in [
            ("share_group = \"g\"", TWO, "mqtt.share_group"),
            ("clean_session = true", TWO, "mqtt.clean_session"),
            ("", "[[partition]]\nname = \"a\"\ntopics = []\n", "`topics` is empty"),
            ("", "[[partition]]\nname = \"a b\"\ntopics = [\"site/#\"]\n", "plain name"),
            ("", "[[partition]]\nname = \"\"\ntopics = [\"site/#\"]\n", "plain name"),
            (
                "",
                "[[partition]]\nname = \"a\"\ntopics = [\"site/a/#\"]\n\
                 [[partition]]\nname = \"a\"\ntopics = [\"site/b/#\"]\n",
                "partition[1] (\"a\"): `name` is also the name of mqtt.partition[0]",
            ),
            (
                "",
                "[[partition]]\nname = \"a\"\ntopics = [\"site/#/x\"]\n",
                "\"site/#/x\" is not an MQTT filter",
            ),
            (
                "",
                "[[partition]]\nname = \"a\"\ntopics = [\"site/a/#\", \"site/+/t\"]\n",
                "both match \"site/a/t\"",
            ),
            (
                "",
                "[[partition]]\nname = \"a\"\ntopics = [\"site/+/t\"]\n\
                 [[partition]]\nname = \"b\"\ntopics = [\"site/b/#\"]\n",
                "partition[1] (\"b\"): topic \"site/b/#\" overlaps \"site/+/t\" of partition \"a\" (both match \"site/b/t\")",
            ),
            (
                "",
                "[[partition]]\nname = \"a\"\ntopics = [\"other/#\"]\n",
                "subscription[0] (topic \"site/{site}/{sensor}\"): `topic`: its filter \"site/+/+\" overlaps no",
            ),
        ] {
            let e = cfg(extra, partitions).validate().unwrap_err().to_string();
            assert!(e.contains(wants), "{partitions}: {e}");
        }
        assert!(toml::from_str::<MqttConfig>(
            "host = \"h\"\n[[partition]]\nname = \"a\"\ntopics = [\"x\"]\ntopic = \"y\"\n"
        )
        .is_err());
    }
}

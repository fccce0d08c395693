//! `[service] global_tags` and `host_tag`: tags added to every sample of every collector,
//! Telegraf's `[global_tags]` and `host` tag. Applied in one place, between the collectors
//! and the rules stage ([`relay`], started by the topology only when there is a tag to add),
//! so rules, sinks and alerts all see them. A tag the sample already has is kept: a device's
//! own `site` wins over the global one.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::ServiceConfig;
use crate::hostname::hostname;
use crate::model::{Sample, TagSet};
use crate::pipeline::{Batch, BatchSender};

#[derive(Debug, thiserror::Error)]
pub enum GlobalTagsError {
    #[error(
        "[service] global_tags: tag {key:?} = {value:?}: keys and values must not be empty; \
         remove it or give it a value"
    )]
    Empty { key: String, value: String },
    #[error(
        "[service] host_tag = true: cannot read this machine's host name ({source}); set \
         global_tags = {{ host = \"...\" }} instead"
    )]
    Hostname { source: std::io::Error },
}

/// The tags to add, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalTags(Vec<(Arc<str>, Arc<str>)>);

impl GlobalTags {
    /// From `[service]`; `host_tag` adds `host` = the host name unless `global_tags` names a
    /// `host` itself.
    pub fn from_service(service: &ServiceConfig) -> Result<GlobalTags, GlobalTagsError> {
        let mut tags: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for (k, v) in &service.global_tags {
            if k.is_empty() || v.is_empty() {
                return Err(GlobalTagsError::Empty {
                    key: k.clone(),
                    value: v.clone(),
                });
            }
            tags.push((k.as_str().into(), v.as_str().into()));
        }
        if service.host_tag && !service.global_tags.contains_key("host") {
            let host = hostname().map_err(|source| GlobalTagsError::Hostname { source })?;
            tags.push(("host".into(), host.into()));
        }
        tags.sort();
        Ok(GlobalTags(tags))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds every tag the sample lacks.
    pub fn apply(&self, samples: &mut [Sample]) {
        for s in samples {
            let tags = &s.series.tags;
            if self.0.iter().all(|(k, _)| tags.get(k).is_some()) {
                continue;
            }
            let missing = self.0.iter().filter(|(k, _)| tags.get(k).is_none());
            let merged = tags.iter_shared().chain(missing).cloned();
            s.series.tags = TagSet::new(merged);
        }
    }
}

/// `dc=ams1, host=edge-7`, for `check`.
impl std::fmt::Display for GlobalTags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Forwards batches from the collectors to the rules stage with the global tags added, until
/// every collector has dropped its sender; the rules stage then sees its input close as usual.
pub async fn relay(
    tags: GlobalTags,
    mut from_sources: mpsc::Receiver<Batch>,
    to_rules: BatchSender,
) {
    while let Some(mut batch) = from_sources.recv().await {
        tags.apply(&mut batch.samples);
        if to_rules.send(batch).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SeriesKey;
    use std::collections::BTreeMap;

    fn service(tags: &[(&str, &str)], host_tag: bool) -> ServiceConfig {
        ServiceConfig {
            global_tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            host_tag,
            ..ServiceConfig::default()
        }
    }

    #[test]
    fn adds_missing_tags_and_keeps_the_samples_own() {
        let g = GlobalTags::from_service(&service(&[("dc", "ams1"), ("site", "global")], false))
            .unwrap();
        let own = TagSet::new([("site", "hall-b"), ("device", "ups-1")]);
        let mut samples = vec![Sample::new(SeriesKey::new("ups", own), 1)];
        g.apply(&mut samples);
        let tags: Vec<(&str, &str)> = samples[0].series.tags.iter().collect();
        assert_eq!(
            tags,
            [("dc", "ams1"), ("device", "ups-1"), ("site", "hall-b")]
        );
    }

    #[test]
    fn host_tag_is_the_host_name_unless_global_tags_sets_host() {
        let g = GlobalTags::from_service(&service(&[], true)).unwrap();
        let host = hostname().unwrap();
        assert_eq!(g.0, vec![("host".into(), host.as_str().into())]);
        let g = GlobalTags::from_service(&service(&[("host", "edge-7")], true)).unwrap();
        assert_eq!(g.0, vec![("host".into(), "edge-7".into())]);
        assert!(GlobalTags::from_service(&service(&[], false))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_empty_value_is_an_error_naming_the_key() {
        let e = GlobalTags::from_service(&service(&[("dc", "")], false)).unwrap_err();
        assert!(e.to_string().contains("\"dc\""), "{e}");
    }
}

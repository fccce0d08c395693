//! Per-topic rate limit of the MQTT collector's warnings: the first error of each topic is a
//! warning, so a newly broken sensor is always named, then at most one warning per
//! `interval` per topic, carrying how many were suppressed since. The topics tracked are
//! bounded: a flood of new bad topics (a misconfigured gateway publishing one topic per
//! reading) shares one warning per interval instead of growing memory or the log.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Whether to log an error of a topic at warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Warn {
    /// Warn; `suppressed` errors of this topic (or of the untracked topics) were only
    /// counted since the last warning.
    Yes { suppressed: u64 },
    /// Debug only: this topic warned less than `interval` ago.
    No,
}

struct Seen {
    last_warned: Instant,
    suppressed: u64,
}

pub(crate) struct TopicWarnings {
    interval: Duration,
    max_topics: usize,
    topics: HashMap<Box<str>, Seen>,
    /// The topics that found no room (all `max_topics` warned within `interval`).
    overflow: Option<Seen>,
    last_prune: Option<Instant>,
}

impl TopicWarnings {
    pub(crate) fn new(interval: Duration, max_topics: usize) -> TopicWarnings {
        TopicWarnings {
            interval,
            max_topics: max_topics.max(1),
            topics: HashMap::new(),
            overflow: None,
            last_prune: None,
        }
    }

    pub(crate) fn check(&mut self, topic: &str, now: Instant) -> Warn {
        let interval = self.interval;
        if let Some(seen) = self.topics.get_mut(topic) {
            return Self::due(seen, now, interval);
        }
        if self.topics.len() >= self.max_topics {
            self.prune(now);
        }
        if self.topics.len() < self.max_topics {
            self.topics.insert(
                topic.into(),
                Seen {
                    last_warned: now,
                    suppressed: 0,
                },
            );
            return Warn::Yes { suppressed: 0 };
        }
        match &mut self.overflow {
            Some(seen) => Self::due(seen, now, interval),
            None => {
                self.overflow = Some(Seen {
                    last_warned: now,
                    suppressed: 0,
                });
                Warn::Yes { suppressed: 0 }
            }
        }
    }

    fn due(seen: &mut Seen, now: Instant, interval: Duration) -> Warn {
        if now.duration_since(seen.last_warned) < interval {
            seen.suppressed += 1;
            return Warn::No;
        }
        let suppressed = std::mem::take(&mut seen.suppressed);
        seen.last_warned = now;
        Warn::Yes { suppressed }
    }

    /// Forgets topics that would warn on their next error anyway (their suppressed count,
    /// if any, is lost). At most once per interval: under a flood the scan stays rare.
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            return;
        }
        self.last_prune = Some(now);
        let interval = self.interval;
        self.topics
            .retain(|_, s| now.duration_since(s.last_warned) < interval);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.topics.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_new_topic_warns_then_once_per_interval_with_the_suppressed_count() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut w = TopicWarnings::new(minute, 100);
        assert_eq!(w.check("a/1", t0), Warn::Yes { suppressed: 0 });
        assert_eq!(w.check("a/1", t0), Warn::No);
        assert_eq!(w.check("a/1", t0 + Duration::from_secs(1)), Warn::No);
        // A second broken sensor is named at once, though the first one is quiet.
        assert_eq!(
            w.check("b/2", t0 + Duration::from_secs(2)),
            Warn::Yes { suppressed: 0 }
        );
        assert_eq!(w.check("a/1", t0 + minute), Warn::Yes { suppressed: 2 });
        assert_eq!(w.check("a/1", t0 + minute), Warn::No);
    }

    #[test]
    fn a_flood_of_topics_is_bounded_and_shares_one_warning() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut w = TopicWarnings::new(minute, 3);
        for i in 0..3 {
            assert_eq!(w.check(&format!("t/{i}"), t0), Warn::Yes { suppressed: 0 });
        }
        assert_eq!(w.check("t/3", t0), Warn::Yes { suppressed: 0 });
        for i in 4..1000 {
            assert_eq!(w.check(&format!("t/{i}"), t0), Warn::No);
        }
        assert_eq!(w.tracked(), 3);
        // A minute on, the old topics are forgotten and new ones are named again.
        let later = t0 + minute;
        assert_eq!(w.check("t/5000", later), Warn::Yes { suppressed: 0 });
        assert!(w.tracked() <= 3);
    }
}

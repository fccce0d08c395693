//! Every self-metric family sitewatch emits, with its type, help text and (for histograms)
//! buckets: the one place `/metrics` gets its `# HELP` and `# TYPE` lines from, and the list
//! the unit test below checks the code against, so a new metric cannot ship undescribed.
//! docs/METRICS.md is the same table for people (a test keeps the two in step).

/// How a family is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    /// Bucket upper bounds of a histogram, in its unit (seconds for every duration).
    pub buckets: &'static [f64],
}

/// Polls of one device over the network: a LAN answer takes milliseconds, a dead device
/// takes the configured timeout (seconds) times the retries.
const POLL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// HTTP writes to a time-series database: a healthy one answers in tens of milliseconds,
/// a struggling one up to the request timeout (default 10 s, up to a minute).
const WRITE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Alert delivery includes retries with backoff: up to minutes.
const NOTIFY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// A local file write and fsync.
const DISK_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
        buckets: &[],
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
        buckets: &[],
    }
}

const fn histogram(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Family {
    Family {
        name,
        kind: Kind::Histogram,
        help,
        buckets,
    }
}

/// The families, grouped by the component that emits them. The process_* families come
/// from the metrics-process crate, which describes them itself.
pub const FAMILIES: &[Family] = &[
    // Service
    gauge(
        "sitewatch_build_info",
        "Always 1; the labels say which build runs (version, arch, os)",
    ),
    counter(
        "sitewatch_samples_in_total",
        "Samples received from collectors by the rules stage",
    ),
    gauge(
        "sitewatch_pipeline_queue_batches",
        "Batches waiting between the collectors and the rules engine",
    ),
    // Every sink (status board)
    gauge(
        "sitewatch_sink_up",
        "1 while the sink's last write succeeded, by sink",
    ),
    gauge(
        "sitewatch_sink_spooling",
        "1 while the sink's server fails and new data goes to the disk spool, by sink",
    ),
    gauge(
        "sitewatch_sink_failing",
        "1 while the sink's server fails and data waits in memory (no spool), by sink",
    ),
    // InfluxDB sink
    counter(
        "sitewatch_influx_points_written_total",
        "Points accepted by InfluxDB",
    ),
    counter(
        "sitewatch_influx_write_errors_total",
        "Failed InfluxDB write requests, by kind (timeout, transport, server, throttled, auth, \
         not_found, too_large, partial, rejected)",
    ),
    counter("sitewatch_influx_retries_total", "InfluxDB write retries"),
    counter(
        "sitewatch_influx_dropped_total",
        "Samples the InfluxDB sink dropped, by reason (buffer_full, rejected, no_fields, \
         shutdown, spool_full, spool_corrupt)",
    ),
    counter(
        "sitewatch_influx_invalid_fields_total",
        "Fields left out of line protocol because InfluxDB cannot store them, by reason",
    ),
    gauge(
        "sitewatch_influx_buffer_samples",
        "Samples held in memory by the InfluxDB sink, not yet written",
    ),
    gauge(
        "sitewatch_influx_buffer_bytes",
        "Line-protocol bytes held in memory by the InfluxDB sink, not yet written",
    ),
    gauge(
        "sitewatch_influx_buffer_limit_samples",
        "Samples the InfluxDB sink holds in memory before it spools or drops ([influx] \
         buffer_limit)",
    ),
    gauge(
        "sitewatch_influx_buffer_limit_bytes",
        "Bytes the InfluxDB sink holds in memory before it spools or drops ([influx] \
         buffer_max_bytes)",
    ),
    histogram(
        "sitewatch_influx_write_duration_seconds",
        "Duration of InfluxDB write requests",
        WRITE_BUCKETS,
    ),
    counter(
        "sitewatch_influx_spilled_samples_total",
        "Samples moved from memory to the spool because the server was slow or hung",
    ),
    counter(
        "sitewatch_influx_spooled_samples_total",
        "Samples appended to the InfluxDB spool while the server failed",
    ),
    counter(
        "sitewatch_influx_spool_replayed_samples_total",
        "Samples written to InfluxDB from the spool",
    ),
    counter(
        "sitewatch_influx_spool_errors_total",
        "InfluxDB spool disk errors, by operation",
    ),
    counter(
        "sitewatch_influx_spool_corrupt_total",
        "Corrupt records found in the InfluxDB spool (skipped)",
    ),
    gauge(
        "sitewatch_influx_spool_bytes",
        "Bytes on disk in the InfluxDB spool",
    ),
    gauge(
        "sitewatch_influx_spool_samples",
        "Samples in the InfluxDB spool not yet written",
    ),
    gauge(
        "sitewatch_influx_spool_limit_bytes",
        "Largest size of the InfluxDB spool ([influx] spool_max_bytes); 0 without a spool",
    ),
    // Remote write sink
    counter(
        "sitewatch_remote_write_samples_total",
        "Remote-write samples by result: delivered, rejected (4xx), shutdown (unsent at stop), \
         skipped_string (string fields)",
    ),
    counter(
        "sitewatch_remote_write_requests_total",
        "Remote-write requests by status: 2xx, the HTTP status, timeout, transport",
    ),
    gauge(
        "sitewatch_remote_write_buffered_samples",
        "Remote-write samples held in memory, waiting or in flight",
    ),
    gauge(
        "sitewatch_remote_write_buffer_limit_samples",
        "Remote-write samples held in memory before batches wait ([remote_write] \
         max_buffered_samples)",
    ),
    gauge(
        "sitewatch_remote_write_failing",
        "1 while a remote-write request is being retried",
    ),
    histogram(
        "sitewatch_remote_write_request_duration_seconds",
        "Duration of remote-write requests",
        WRITE_BUCKETS,
    ),
    // MQTT collector
    counter(
        "sitewatch_mqtt_messages_total",
        "MQTT messages received, by subscription",
    ),
    counter(
        "sitewatch_mqtt_samples_total",
        "Samples decoded from MQTT messages, by subscription",
    ),
    counter(
        "sitewatch_mqtt_decode_errors_total",
        "MQTT payloads that could not be decoded, by subscription and reason",
    ),
    counter(
        "sitewatch_mqtt_field_errors_total",
        "Field values dropped from MQTT points because they do not fit the field's type, by \
         subscription, field and reason",
    ),
    counter(
        "sitewatch_mqtt_unknown_points_total",
        "MQTT points dropped because they are not in points.known or have no name, by \
         subscription and reason",
    ),
    counter(
        "sitewatch_mqtt_timestamp_fallbacks_total",
        "MQTT payload timestamps replaced by the receive time, by subscription and reason",
    ),
    counter(
        "sitewatch_mqtt_unmapped_total",
        "MQTT messages of a shape their subscription does not map, by subscription",
    ),
    counter(
        "sitewatch_mqtt_unmatched_total",
        "MQTT messages matching no subscription (a persistent session's older subscriptions)",
    ),
    counter(
        "sitewatch_mqtt_dropped_total",
        "MQTT samples dropped, by subscription and reason (series_cap: new series beyond \
         max_series)",
    ),
    counter(
        "sitewatch_mqtt_acks_total",
        "MQTT acknowledgements sent to the broker, by delivery",
    ),
    counter(
        "sitewatch_mqtt_stale_acks_total",
        "MQTT acknowledgements discarded because their connection was lost (the broker \
         redelivers)",
    ),
    gauge(
        "sitewatch_mqtt_connected",
        "1 while connected to the MQTT broker (with [[mqtt.partition]]: per partition this member runs, label partition)",
    ),
    gauge(
        "sitewatch_mqtt_partition_owned",
        "1 while this member runs the MQTT partition's session (label partition; without [cluster] every partition)",
    ),
    counter(
        "sitewatch_mqtt_reconnects_total",
        "Lost or failed MQTT connections (reconnected with backoff)",
    ),
    counter(
        "sitewatch_mqtt_subscribe_failures_total",
        "MQTT subscriptions the broker refused (ACL)",
    ),
    // SNMP collector
    counter(
        "sitewatch_snmp_polls_total",
        "SNMP polls, by result (ok, timeout, error, skipped, config_error, not_owner: a cluster member skipped a target another member owns)",
    ),
    counter(
        "sitewatch_snmp_target_polls_total",
        "SNMP polls per device, by result (ok, timeout, error)",
    ),
    histogram(
        "sitewatch_snmp_poll_duration_seconds",
        "Duration of SNMP polls (all devices)",
        POLL_BUCKETS,
    ),
    gauge(
        "sitewatch_snmp_target_poll_duration_seconds",
        "Duration of each device's last SNMP poll",
    ),
    gauge(
        "sitewatch_snmp_target_up",
        "1 while the SNMP device answers its polls, by device",
    ),
    counter(
        "sitewatch_snmp_varbinds_total",
        "Variable bindings received from SNMP agents",
    ),
    counter(
        "sitewatch_snmp_decode_errors_total",
        "SNMP values not decodable as the profile asks (field left out), by device",
    ),
    counter(
        "sitewatch_snmp_counter_resets_total",
        "SNMP counters that went backwards (device restart or wrap): one interval without a rate",
    ),
    counter(
        "sitewatch_snmp_traps_received_total",
        "SNMP traps and informs accepted, by SNMP version",
    ),
    counter(
        "sitewatch_snmp_traps_rejected_total",
        "SNMP traps dropped, by reason (community, credentials, malformed)",
    ),
    counter(
        "sitewatch_snmp_traps_dropped_total",
        "SNMP traps received but not recorded by this cluster member, by reason (not_owner: another member owns the device)",
    ),
    counter(
        "sitewatch_snmp_informs_answered_total",
        "SNMP informs acknowledged",
    ),
    counter(
        "sitewatch_snmp_informs_duplicate_total",
        "SNMP informs received again (a lost acknowledgement); answered, not forwarded twice",
    ),
    counter(
        "sitewatch_snmp_trap_kernel_drops_total",
        "SNMP trap datagrams dropped by the kernel before sitewatch read them (socket receive \
         buffer full; see [snmp.traps] receive_buffer and net.core.rmem_max)",
    ),
    gauge(
        "sitewatch_snmp_trap_receive_buffer_bytes",
        "Receive buffer of the SNMP trap socket as the kernel reports it (Linux: twice the size \
         it accepted)",
    ),
    gauge(
        "sitewatch_snmp_trap_listener_up",
        "1 while the SNMP trap listener is receiving",
    ),
    // Cluster mode (src/cluster/).
    gauge(
        "sitewatch_cluster_members",
        "Live cluster members (registered in etcd under a lease) as this member sees them",
    ),
    gauge(
        "sitewatch_cluster_owned_units",
        "Units (SNMP targets, MQTT partitions) the assignment gives this cluster member now",
    ),
    gauge(
        "sitewatch_cluster_active_units",
        "Units this cluster member collects now: owned, and their rule state taken up",
    ),
    histogram(
        "sitewatch_cluster_handover_seconds",
        "Time to take a unit up (waiting for the previous owner's release, restoring its rule state) or to release it (its collector stopped, its state written), by change (gained, released)",
        POLL_BUCKETS,
    ),
    counter(
        "sitewatch_cluster_checkpoint_writes_total",
        "Rule-state checkpoints written to etcd, by result (ok; refused: the lease is gone or another member has claimed the unit; superseded: not this member's to write; error; no_session: etcd unreachable)",
    ),
    counter(
        "sitewatch_cluster_checkpoint_reads_failed_total",
        "Checkpoints that could not be read when taking a unit up (the member's own last copy is used, if any)",
    ),
    counter(
        "sitewatch_cluster_checkpoints_dropped_total",
        "Periodic checkpoints the rules stage dropped because the handover's queue was full (the next one carries the state)",
    ),
    counter(
        "sitewatch_cluster_restore_errors_total",
        "Checkpoints the rules stage could not read back (the unit started with fresh rule state)",
    ),
    counter(
        "sitewatch_cluster_samples_unjudged_total",
        "Samples of a unit whose rule state this member does not hold (just released, or not yet restored): stored, not judged by the rules",
    ),
    counter(
        "sitewatch_cluster_ownership_changes_total",
        "Units this cluster member took over or let go, by change (gained, released)",
    ),
    gauge(
        "sitewatch_cluster_lease_ok",
        "1 while this cluster member's etcd lease is renewed in time; 0 when fenced (it holds no units) or fail-static",
    ),
    // Modbus collector
    counter(
        "sitewatch_modbus_polls_total",
        "Modbus polls, by result (ok, timeout, error, skipped)",
    ),
    counter(
        "sitewatch_modbus_device_polls_total",
        "Modbus polls per device, by result (ok, timeout, error)",
    ),
    histogram(
        "sitewatch_modbus_poll_duration_seconds",
        "Duration of Modbus polls (all devices)",
        POLL_BUCKETS,
    ),
    counter("sitewatch_modbus_requests_total", "Modbus requests sent"),
    counter(
        "sitewatch_modbus_errors_total",
        "Modbus failures, by reason (exceptions, timeouts, connection errors)",
    ),
    gauge(
        "sitewatch_modbus_device_up",
        "1 while the Modbus device answers its polls, by device",
    ),
    // Rules engine
    counter(
        "sitewatch_rules_events_total",
        "Rule state changes, by rule, severity and state",
    ),
    counter(
        "sitewatch_rules_evaluations_total",
        "Rule evaluations of incoming samples",
    ),
    gauge("sitewatch_rules_firing", "Alerts firing now"),
    gauge(
        "sitewatch_rules_series",
        "Series the rules engine keeps (those at least one rule watches)",
    ),
    gauge(
        "sitewatch_rules_held_states",
        "(series, rule) pairs whose state is held because they are pending, firing, stale, flapping or in a rate window",
    ),
    counter(
        "sitewatch_rules_inhibited_total",
        "Rule events held back by an inhibition, by rule and reason",
    ),
    counter(
        "sitewatch_rules_silenced_total",
        "Rule events muted by a silence, by rule",
    ),
    counter(
        "sitewatch_rules_flapping_total",
        "Rule events suppressed because the rule flaps, by rule",
    ),
    counter(
        "sitewatch_rules_unusable_values_total",
        "Samples a rule could not judge (missing or non-numeric field), by rule",
    ),
    counter(
        "sitewatch_rules_out_of_order_total",
        "Samples older than the last one of their series, ignored by the rules",
    ),
    counter(
        "sitewatch_rules_future_samples_total",
        "Samples stamped too far in the future, ignored by the rules",
    ),
    counter(
        "sitewatch_rules_alerts_dropped_total",
        "Alert events not handed to the notifier, by reason (full, closed)",
    ),
    counter(
        "sitewatch_rules_events_dropped_total",
        "Rule events not forwarded to a sink, by sink",
    ),
    counter(
        "sitewatch_rules_forward_dropped_samples_total",
        "Samples not forwarded to a sink (its queue closed), by sink",
    ),
    counter(
        "sitewatch_rules_reloads_total",
        "Rule reloads, by trigger and result",
    ),
    counter(
        "sitewatch_rules_state_errors_total",
        "Rule state file errors, by operation (load, save)",
    ),
    counter(
        "sitewatch_rules_state_saves_skipped_total",
        "Rule state saves skipped because the previous one was still running",
    ),
    histogram(
        "sitewatch_rules_state_save_seconds",
        "Duration of rule state saves",
        DISK_BUCKETS,
    ),
    // Notifier
    counter(
        "sitewatch_notify_sent_total",
        "Alerts delivered to a receiver (re-sends included)",
    ),
    counter(
        "sitewatch_notify_failures_total",
        "Failed delivery attempts by receiver and kind (transport, tls, timeout, http_429, \
         http_5xx, rejected)",
    ),
    counter(
        "sitewatch_notify_dropped_total",
        "Events dropped for a receiver: queue full (oldest dropped) or undelivered at shutdown",
    ),
    counter(
        "sitewatch_notify_escalations_total",
        "Escalation steps taken (an alert not acknowledged in time handed to the next receivers), by the receiver escalated from",
    ),
    counter(
        "sitewatch_alerts_acknowledged_total",
        "Open alerts acknowledged through the API",
    ),
    gauge(
        "sitewatch_api_silences",
        "Silences made through the API, by state (pending, active, expired and still listed)",
    ),
    counter(
        "sitewatch_api_silence_changes_total",
        "Silences added or expired through the API, by action",
    ),
    gauge(
        "sitewatch_notify_queue_depth",
        "Events waiting in a receiver's queue",
    ),
    histogram(
        "sitewatch_notify_latency_seconds",
        "From the event being handed to the notifier (just after the rules made it) to the \
         receiver accepting it; re-sends are not counted",
        NOTIFY_BUCKETS,
    ),
];

/// Registers every family's help text with the installed recorder.
pub fn describe_all() {
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => metrics::describe_counter!(f.name, f.help),
            Kind::Gauge => metrics::describe_gauge!(f.name, f.help),
            Kind::Histogram => metrics::describe_histogram!(f.name, f.help),
        }
    }
}

/// The histograms and their buckets, for the exporter.
pub fn histograms() -> impl Iterator<Item = &'static Family> {
    FAMILIES.iter().filter(|f| f.kind == Kind::Histogram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The string literal at the start of `s` (after whitespace), if any.
    fn literal(s: &str) -> Option<&str> {
        let s = s.trim_start().strip_prefix('"')?;
        s.find('"').map(|end| &s[..end])
    }

    /// `const NAME: &str = "value";` anywhere in `text`.
    fn str_const<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        let pattern = format!("const {name}: &str =");
        let at = text.find(&pattern)?;
        literal(&text[at + pattern.len()..])
    }

    /// Every metric name the code records, with the macro kinds it is recorded with and
    /// where. A name built at run time must be resolved here, or the test fails naming it.
    fn used_names() -> BTreeMap<String, Vec<(Kind, String)>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let texts: Vec<(String, String)> = files
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(&src).unwrap().display().to_string();
                (rel, std::fs::read_to_string(p).expect("read source"))
            })
            .collect();
        // This file speaks of the patterns it looks for: leave it out.
        let all = texts
            .iter()
            .filter(|(f, _)| !f.ends_with("catalog.rs"))
            .map(|(_, t)| t.as_str())
            .collect::<String>();
        // The sinks that own a spool: `SpoolOwner { sink: "influx", .. }` names
        // `sitewatch_influx_spool_bytes` and the like.
        let spool_owners: Vec<&str> = all
            .match_indices("SpoolOwner {")
            .filter_map(|(i, _)| {
                let rest = &all[i..];
                let s = rest.find("sink:")?;
                literal(&rest[s + 5..])
            })
            .filter(|s| !s.starts_with("test"))
            .collect();
        assert!(spool_owners.contains(&"influx"), "{spool_owners:?}");
        // The polled collectors' poll counters, handed to the shared schedule.
        let polls_metrics: Vec<String> = all
            .match_indices("polls_metric:")
            .filter_map(|(i, _)| {
                let rest = all[i + 13..].trim_start();
                match literal(rest) {
                    Some(l) => Some(l.to_string()),
                    None => {
                        let ident: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        str_const(&all, &ident).map(str::to_string)
                    }
                }
            })
            .filter(|n| n.starts_with("sitewatch_"))
            .collect();
        assert!(polls_metrics.len() >= 2, "{polls_metrics:?}");

        let mut used: BTreeMap<String, Vec<(Kind, String)>> = BTreeMap::new();
        for (file, text) in &texts {
            if file.ends_with("catalog.rs") {
                continue;
            }
            for (kind, mac) in [
                (Kind::Counter, "counter!("),
                (Kind::Gauge, "gauge!("),
                (Kind::Histogram, "histogram!("),
            ] {
                for (at, _) in text.match_indices(mac) {
                    if text[..at].ends_with('_') || text[..at].ends_with("::describe") {
                        continue; // describe_counter! and the like
                    }
                    let line = text[..at].lines().count();
                    let args = &text[at + mac.len()..];
                    let expr: String = args
                        .trim_start()
                        .chars()
                        .take_while(|c| *c != ',' && *c != ')' && *c != '\n')
                        .collect();
                    let names: Vec<String> = if let Some(l) = literal(args) {
                        vec![l.to_string()]
                    } else if let Some(what) = expr
                        .split_once(".metric(")
                        .and_then(|(_, rest)| literal(rest))
                    {
                        spool_owners
                            .iter()
                            .map(|o| format!("sitewatch_{o}_{what}"))
                            .collect()
                    } else if expr.trim() == "slot.polls_metric" {
                        polls_metrics.clone()
                    } else if let Some(v) = str_const(text, expr.trim()) {
                        vec![v.to_string()]
                    } else {
                        panic!(
                            "src/{file}:{line}: metric name `{expr}` is built at run time; \
                             teach telemetry::catalog's test how to resolve it"
                        );
                    };
                    for n in names {
                        if n.starts_with("sitewatch_") {
                            used.entry(n)
                                .or_default()
                                .push((kind, format!("src/{file}:{line}")));
                        }
                    }
                }
            }
        }
        used
    }

    #[test]
    fn every_metric_the_code_records_is_described_with_its_kind() {
        let used = used_names();
        assert!(used.len() > 60, "the scan found too few names: {used:?}");
        let mut problems = Vec::new();
        for (name, uses) in &used {
            match FAMILIES.iter().find(|f| f.name == name) {
                None => problems.push(format!(
                    "{name} (recorded at {}) is not in telemetry::catalog::FAMILIES",
                    uses[0].1
                )),
                Some(f) => {
                    for (kind, at) in uses {
                        if *kind != f.kind {
                            problems.push(format!(
                                "{name} is recorded as a {kind:?} at {at} but described as a {:?}",
                                f.kind
                            ));
                        }
                    }
                }
            }
        }
        for f in FAMILIES {
            if !used.contains_key(f.name) {
                problems.push(format!(
                    "{} is described but nothing records it (remove it from FAMILIES)",
                    f.name
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn families_are_unique_valid_and_histograms_have_sorted_buckets() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(!f.help.is_empty() && !f.help.contains('\n'), "{}", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
            if f.kind == Kind::Histogram {
                assert!(f.name.ends_with("_seconds"), "{}", f.name);
                assert!(f.buckets.len() >= 5, "{}", f.name);
                assert!(f.buckets.windows(2).all(|w| w[0] < w[1]), "{}", f.name);
            } else {
                assert!(f.buckets.is_empty(), "{}", f.name);
            }
        }
    }

    #[test]
    fn docs_list_every_family() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/METRICS.md"))
                .expect("read docs/METRICS.md");
        let missing: Vec<&str> = FAMILIES
            .iter()
            .map(|f| f.name)
            .filter(|n| !doc.contains(&format!("| `{n}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/METRICS.md has no row for: {missing:?}"
        );
    }
}

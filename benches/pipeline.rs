//! Criterion micro-benchmarks of the per-sample hot paths: MQTT payload decoding, SNMP
//! profile value decoding, rule evaluation and line-protocol encoding.
//!
//! `cargo bench --bench pipeline` measures; `cargo test --all-targets` runs each benchmark
//! once as a smoke test (criterion's test mode), which takes well under a second. Results and
//! the machine they came from are in docs/BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use sitewatch::collect::mqtt::{Decoder, MqttConfig};
use sitewatch::collect::snmp::client::SnmpValue;
use sitewatch::collect::snmp::decode::{Decoded, Kind, ScalarValues, ValueSpec};
use sitewatch::collect::snmp::ProfileSet;
use sitewatch::model::{FieldValue, Sample, SeriesKey, TagSet};
use sitewatch::rules::{parse_rules, Engine, RuleSet};
use sitewatch::sink::influx::encode_sample;

/// Racks the generated samples are spread over (series per measurement).
const RACKS: usize = 100;
/// Measurements the generated rules and samples use.
const MEASUREMENTS: usize = 10;
/// Fixed "receive time" so the decoders' plausibility window is stable.
const RECV_NS: i64 = 1_700_000_000_000_000_000;

fn mqtt_decoders() -> Vec<(&'static str, Decoder, String, Vec<u8>)> {
    let cfg: MqttConfig = toml::from_str(
        r#"
        host = "127.0.0.1"
        [[subscription]]
        name = "number"
        topic = "dc/{site}/{rack}/temperature"
        measurement = "environment"
        format = "number"
        field = "temperature"
        [[subscription]]
        name = "json"
        topic = "z2m/{site}/{sensor}"
        measurement = "environment"
        format = "json"
        fields = { temperature = "temperature", humidity = "humidity", battery = "battery" }
        tag_paths = { model = "device.model" }
        timestamp = "ts"
        [[subscription]]
        name = "json_flat"
        topic = "load/{site}/{rack}/temperature"
        measurement = "load"
        format = "json"
        fields = { temperature = "temperature", humidity = "humidity", power = "power", seq = "seq" }
        timestamp = "t"
        [[subscription]]
        name = "line_protocol"
        topic = "lp/{site}/#"
        format = "line_protocol"
        "#,
    )
    .expect("bench MQTT config parses");
    let decoders: Vec<Decoder> = cfg
        .subscriptions
        .iter()
        .enumerate()
        .map(|(i, s)| Decoder::compile(i, s).expect("bench subscription compiles"))
        .collect();
    let ts_s = RECV_NS / 1_000_000_000;
    let payloads = [
        ("dc/ams1/r042/temperature".to_string(), b"23.75".to_vec()),
        (
            "z2m/ams1/th-17".to_string(),
            format!(
                r#"{{"temperature":23.4,"humidity":41.5,"battery":97,"linkquality":120,"device":{{"model":"WSDCGQ11LM","fw":"3.0"}},"ts":{ts_s}}}"#
            )
            .into_bytes(),
        ),
        // The shape of benches/mqtt_matrix.sh: top-level keys only (the flat fast path).
        (
            "load/s1/r00042/temperature".to_string(),
            format!(
                r#"{{"t":{RECV_NS},"temperature":23.04,"humidity":41.5,"power":1132,"seq":184233}}"#
            )
            .into_bytes(),
        ),
        (
            "lp/ams1/pdu".to_string(),
            format!(
                "pdu,site=ams1,rack=r042,phase=1 current_a=12.5,power_kw=2.71,energy_kwh=18234.5 {RECV_NS}"
            )
            .into_bytes(),
        ),
    ];
    decoders
        .into_iter()
        .zip(payloads)
        .zip(["number", "json", "json_flat", "line_protocol"])
        .map(|((d, (topic, payload)), name)| (name, d, topic, payload))
        .collect()
}

fn bench_mqtt_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt_decode");
    group.throughput(Throughput::Elements(1));
    let mut captures: Vec<(Arc<str>, Arc<str>)> = Vec::new();
    for (name, decoder, topic, payload) in mqtt_decoders() {
        // Fail loudly here rather than benchmark the error path.
        captures.clear();
        assert!(decoder.template().match_topic(&topic, &mut captures));
        decoder
            .decode(&topic, &captures, &payload, RECV_NS)
            .expect("bench payload decodes");
        group.bench_function(BenchmarkId::new("match_and_decode", name), |b| {
            b.iter(|| {
                captures.clear();
                decoder.template().match_topic(&topic, &mut captures);
                decoder.decode(&topic, &captures, &payload, RECV_NS)
            })
        });
    }
    group.finish();
}

/// A plausible wire value for a spec: what a device would send for it.
fn value_for(spec: &ValueSpec, i: usize) -> SnmpValue {
    match spec.kind {
        Kind::String => SnmpValue::OctetString(format!("outlet-{i}").into_bytes()),
        Kind::Counter => SnmpValue::Counter64(1_000_000 + i as u64),
        Kind::Timeticks => SnmpValue::TimeTicks(360_000 + i as u32),
        Kind::Truthvalue => SnmpValue::Integer(2),
        Kind::Bool => SnmpValue::Integer(0),
        Kind::Auto if spec.enum_map.is_some() => SnmpValue::Integer(2),
        Kind::Auto => gauge(i),
    }
}

/// INTEGER or Gauge32-style values, alternating, since devices send either for the same MIB
/// object and decoding is by value.
fn gauge(i: usize) -> SnmpValue {
    if i % 2 == 0 {
        SnmpValue::Integer(200 + i as i64)
    } else {
        SnmpValue::Unsigned32(200 + i as u32)
    }
}

fn bench_snmp_decode(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/snmp");
    let profiles = ProfileSet::load_dir(&dir).expect("shipped SNMP profiles load");
    // Every value spec of every shipped profile, each with one plausible value: the work the
    // poller does per varbind after the BER parse.
    let mut varbinds: Vec<(ValueSpec, SnmpValue)> = Vec::new();
    for p in profiles.iter() {
        let specs = p.scalars.iter().map(|s| s.spec.clone()).chain(
            p.tables
                .iter()
                .flat_map(|t| t.columns.iter().map(|c| c.spec.clone())),
        );
        for (i, spec) in specs.enumerate() {
            let v = value_for(&spec, i);
            varbinds.push((spec, v));
        }
    }
    assert!(!varbinds.is_empty(), "no value specs in {}", dir.display());
    let scalars = ScalarValues::new();
    let mut group = c.benchmark_group("snmp_decode");
    group.throughput(Throughput::Elements(varbinds.len() as u64));
    group.bench_function(
        BenchmarkId::new("profile_values", format!("{}_varbinds", varbinds.len())),
        |b| {
            b.iter(|| {
                let mut fields = 0usize;
                for (spec, value) in &varbinds {
                    fields += match spec.decode(value, &scalars) {
                        Decoded::Fields(f) => f.len(),
                        _ => 1,
                    };
                }
                fields
            })
        },
    );
    group.finish();
}

/// `n` threshold rules over MEASUREMENTS measurements; each sample is watched by
/// n / MEASUREMENTS of them.
fn rules(n: usize) -> RuleSet {
    let mut text = String::new();
    for i in 0..n {
        let m = i % MEASUREMENTS;
        let warn = 25.0 + (i / MEASUREMENTS) as f64 * 0.01;
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nmeasurement = \"env{m}\"\nfield = \"temperature\"\n\
             match = {{ rack = \"*\" }}\n\
             above = {{ warning = {warn}, warning_clear = {}, critical = {}, critical_clear = {} }}\n\
             message = \"{{rack}} {{value}}\"\n\n",
            warn - 1.0,
            warn + 5.0,
            warn + 4.0
        ));
    }
    let parsed = parse_rules(&text, Path::new("bench-rules.toml")).expect("bench rules parse");
    RuleSet::new(parsed).expect("bench rules are valid")
}

/// `n` threshold rules all on `env0` with `rack = "*"`: every new series matches every rule.
fn broad_rules(n: usize) -> RuleSet {
    let mut text = String::new();
    for i in 0..n {
        let warn = 25.0 + i as f64 * 0.01;
        text.push_str(&format!(
            "[[rule]]\nname = \"b{i}\"\nmeasurement = \"env0\"\nfield = \"temperature\"\n\
             match = {{ rack = \"*\" }}\nabove = {{ warning = {warn} }}\n\n"
        ));
    }
    let parsed = parse_rules(&text, Path::new("bench-broad.toml")).expect("bench rules parse");
    RuleSet::new(parsed).expect("bench rules are valid")
}

/// One sample per (measurement, rack), values oscillating across the warning level so the
/// engine also produces events now and then.
fn samples() -> Vec<Sample> {
    let mut out = Vec::with_capacity(MEASUREMENTS * RACKS);
    for m in 0..MEASUREMENTS {
        for r in 0..RACKS {
            let tags = TagSet::new([("site", "ams1".to_string()), ("rack", format!("r{r:03}"))]);
            let value = 20.0 + ((m * RACKS + r) % 12) as f64;
            out.push(
                Sample::new(SeriesKey::new(format!("env{m}"), tags), RECV_NS)
                    .with_field("temperature", FieldValue::Float(value))
                    .with_field("humidity", FieldValue::Float(40.0)),
            );
        }
    }
    out
}

fn bench_rules(c: &mut Criterion) {
    let samples = samples();
    let mut group = c.benchmark_group("rules_observe");
    group.throughput(Throughput::Elements(samples.len() as u64));
    for n in [100usize, 1000] {
        let mut engine = Engine::new(rules(n));
        let mut events = Vec::new();
        // Warm: per-series rule matching happens once per series, not per sample.
        for s in &samples {
            engine.observe(s, &mut events);
        }
        let mut t = RECV_NS;
        group.bench_function(BenchmarkId::new("rules", n), |b| {
            b.iter(|| {
                events.clear();
                t += 1_000_000_000;
                for s in &samples {
                    let mut s = s.clone();
                    s.timestamp_ns = t;
                    engine.observe(&s, &mut events);
                }
                events.len()
            })
        });
    }
    group.finish();
}

/// What a new series costs the engine (matching it against the rules and setting up its
/// state, once): after a restart every known series is new at once, so this decides how long
/// catching up takes. Each measured batch is 1,000 new series into a fresh engine, so the
/// series map does not grow across iterations.
fn bench_rules_new_series(c: &mut Criterion) {
    const NEW: usize = 1000;
    let fresh: Vec<Sample> = (0..NEW)
        .map(|i| {
            let tags = TagSet::new([("site", "ams1".to_string()), ("rack", format!("n{i:04}"))]);
            Sample::new(SeriesKey::new("env0", tags), RECV_NS)
                .with_field("temperature", FieldValue::Float(20.0))
        })
        .collect();
    let mut group = c.benchmark_group("rules_new_series");
    group.throughput(Throughput::Elements(NEW as u64));
    // "spread": rules over 10 measurements (a new env0 series matches a tenth of them);
    // "broad": every rule on env0 with `rack = "*"` (a new series matches all of them).
    let cases = [
        ("spread", 100usize, rules(100)),
        ("spread", 1000, rules(1000)),
        ("broad", 1000, broad_rules(1000)),
    ];
    for (kind, n, set) in cases {
        group.bench_function(BenchmarkId::new(kind, n), |b| {
            b.iter_batched(
                || (Engine::new(set.clone()), Vec::new()),
                |(mut engine, mut events)| {
                    for s in &fresh {
                        engine.observe(s, &mut events);
                    }
                    (engine, events)
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// What a periodic rule-state save costs the rules task: before, the whole save (copy,
/// serialise, write, fsync) ran on it; now only the copy (`snapshot`) does and the rest runs
/// on a blocking thread (`write`, measured here for the ratio). 20,000 series × 1 rule, each
/// with a seen state.
fn bench_rules_state_save(c: &mut Criterion) {
    const SERIES: usize = 20_000;
    let mut engine = Engine::new(rules(MEASUREMENTS));
    let mut events = Vec::new();
    for i in 0..SERIES {
        let tags = TagSet::new([("site", "ams1".to_string()), ("rack", format!("s{i:05}"))]);
        let s = Sample::new(
            SeriesKey::new(format!("env{}", i % MEASUREMENTS), tags),
            RECV_NS,
        )
        .with_field("temperature", FieldValue::Float(20.0 + (i % 12) as f64));
        engine.observe(&s, &mut events);
    }
    let dir = std::env::temp_dir().join(format!("sitewatch-bench-state-{}", std::process::id()));
    let path = dir.join("rules-state.json");
    let mut group = c.benchmark_group("rules_state_save");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("snapshot_on_rules_task", |b| {
        b.iter(|| engine.state_snapshot().len())
    });
    let snapshot = engine.state_snapshot();
    group.bench_function("write_on_blocking_thread", |b| {
        b.iter(|| snapshot.write(&path).expect("bench state write"))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_line_protocol(c: &mut Criterion) {
    let samples = samples();
    let mut group = c.benchmark_group("line_protocol");
    group.throughput(Throughput::Elements(samples.len() as u64));
    let mut buf = Vec::with_capacity(samples.len() * 96);
    group.bench_function("encode_sample", |b| {
        b.iter(|| {
            buf.clear();
            for s in &samples {
                encode_sample(&mut buf, s);
            }
            buf.len()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    // Short runs: these are per-element costs in the microsecond range, stable within a few
    // seconds; the whole suite takes about a minute.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_mqtt_decode, bench_snmp_decode, bench_rules, bench_rules_new_series, bench_rules_state_save, bench_line_protocol
}
criterion_main!(benches);

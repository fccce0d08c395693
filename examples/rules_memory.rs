//! How much memory the rules engine keeps per series, counted by the allocator (exact, not
//! noisy like RSS): `cargo run --release --example rules_memory [SERIES]`.
//!
//! For each case it builds an engine, sends one sample of 4 fields per series the way the
//! MQTT decoder makes them (fresh tag strings per message, measurement and tag names shared),
//! and reports the bytes still allocated afterwards divided by the series, plus the time per
//! new series. "narrow": each series is watched by the 1 in 25 rules of its site; "broad":
//! every rule watches every series (`rack = "*"`). All values are inside the levels (a quiet
//! site); then one series in 1,000 goes over every threshold, and the bytes this adds are
//! divided by the (series, rule) states it makes the engine hold.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sitewatch::model::{FieldValue, Sample, SeriesKey, TagSet};
use sitewatch::rules::{parse_rules, Engine, RuleSet};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SITES: usize = 25;

fn rule_set(n: usize, broad: bool) -> RuleSet {
    let mut text = String::new();
    for i in 0..n {
        let matcher = if broad {
            "rack = \"*\"".to_string()
        } else {
            format!("site = \"s{}\", rack = \"*\"", i % SITES)
        };
        let warn = 30.0 + (i % 10) as f64 * 0.1;
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nmeasurement = \"load\"\nfield = \"temperature\"\n\
             match = {{ {matcher} }}\nabove = {{ warning = {warn}, warning_clear = {}, critical = {}, critical_clear = {} }}\n\
             message = \"{{rack}}: {{value}}\"\n\n",
            warn - 1.0,
            warn + 5.0,
            warn + 4.0
        ));
    }
    let parsed = parse_rules(&text, Path::new("memory-rules.toml")).expect("rules parse");
    RuleSet::new(parsed).expect("rules are valid")
}

fn main() {
    let series: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("SERIES must be a number"))
        .unwrap_or(200_000);
    let measurement: Arc<str> = "load".into();
    let (site, rack): (Arc<str>, Arc<str>) = ("site".into(), "rack".into());
    println!("| rules | kind | series | bytes per series | µs per new series | held states after breaches | bytes per held state |");
    println!("|---|---|---|---|---|---|---|");
    for (rules, broad) in [
        (0, false),
        (100, false),
        (1000, false),
        (100, true),
        (1000, true),
    ] {
        let set = rule_set(rules, broad);
        let base = LIVE.load(Ordering::Relaxed);
        let mut engine = Engine::new(set);
        let mut events = Vec::new();
        let started = Instant::now();
        let sample = |i: usize, temperature: f64, ts: i64| {
            let tags = TagSet::new([
                (site.clone(), Arc::<str>::from(format!("s{}", i % SITES))),
                (rack.clone(), Arc::<str>::from(format!("r{i:06}"))),
            ]);
            Sample::new(SeriesKey::new(measurement.clone(), tags), ts)
                .with_field("temperature", FieldValue::Float(temperature))
                .with_field("humidity", FieldValue::Float(45.0))
                .with_field("power", FieldValue::Float(3.2))
                .with_field("seq", FieldValue::Int(i as i64))
        };
        for i in 0..series {
            engine.observe(&sample(i, 22.0, 1_000_000_000), &mut events);
            events.clear();
        }
        let elapsed = started.elapsed();
        let quiet = LIVE.load(Ordering::Relaxed) - base;
        for i in (0..series).step_by(1000) {
            engine.observe(&sample(i, 40.0, 2_000_000_000), &mut events);
            events.clear();
        }
        let held = engine.held_states();
        let breached = LIVE.load(Ordering::Relaxed) - base - quiet;
        println!(
            "| {rules} | {} | {series} | {:.0} | {:.2} | {held} | {} |",
            if broad { "broad" } else { "narrow" },
            quiet as f64 / series as f64,
            elapsed.as_secs_f64() * 1e6 / series as f64,
            if held > 0 {
                format!("{:.0}", breached as f64 / held as f64)
            } else {
                "–".into()
            }
        );
        drop(engine);
    }
}

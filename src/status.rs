//! What each stage says about itself, for `/health` and `/ready`: each sink writing, spooling
//! or failing (and since when), MQTT connected or not, each polled collector's devices up and
//! down (SNMP, Modbus), the rules loaded and the last reload. Stages write their own part;
//! the HTTP side only reads.
//!
//! One process-wide board, because the stages are built in different places and a status
//! is a few words that change rarely: a mutex per part is cheap and never held across I/O.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How the sink is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkState {
    /// Writes succeed.
    Writing,
    /// The server fails or hangs; data goes to the disk spool and is acknowledged.
    Spooling,
    /// The server fails or hangs and there is no spool: data waits in memory.
    Failing,
}

impl SinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::Writing => "writing",
            SinkState::Spooling => "spooling",
            SinkState::Failing => "failing",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SinkStatus {
    pub name: &'static str,
    pub state: SinkState,
    /// Since when the server has not been written to (None while writing).
    pub down_since: Option<Instant>,
    /// Age of the oldest sample held in memory and not yet written.
    pub oldest_unwritten: Option<Duration>,
    pub spooled_samples: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct MqttStatus {
    pub connected: bool,
    pub since: Instant,
    pub last_error: Option<String>,
}

/// A polled collector's devices (SNMP targets, Modbus devices).
#[derive(Clone, Debug, Default)]
pub struct PolledStatus {
    pub devices: usize,
    pub up: usize,
    pub down: usize,
}

#[derive(Clone, Debug)]
pub struct RulesStatus {
    pub rules: usize,
    pub last_reload_ok: bool,
    pub last_reload_error: Option<String>,
}

#[derive(Default)]
struct Board {
    sinks: Mutex<BTreeMap<&'static str, SinkStatus>>,
    mqtt: Mutex<Option<MqttStatus>>,
    polled: Mutex<BTreeMap<&'static str, PolledStatus>>,
    rules: Mutex<Option<RulesStatus>>,
}

fn board() -> &'static Board {
    static BOARD: OnceLock<Board> = OnceLock::new();
    BOARD.get_or_init(Board::default)
}

fn set<T>(slot: &Mutex<Option<T>>, value: T) {
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
}

fn get<T: Clone>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A sink's status, by its name; also its `sitewatch_sink_{up,spooling,failing}` gauges, so
/// an alert can say which output is down without parsing `/health`.
pub fn set_sink(s: SinkStatus) {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    metrics::gauge!("sitewatch_sink_up", "sink" => s.name).set(flag(s.state == SinkState::Writing));
    metrics::gauge!("sitewatch_sink_spooling", "sink" => s.name)
        .set(flag(s.state == SinkState::Spooling));
    metrics::gauge!("sitewatch_sink_failing", "sink" => s.name)
        .set(flag(s.state == SinkState::Failing));
    board()
        .sinks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(s.name, s);
}

/// MQTT connected or lost; `since` moves only when the state changes.
pub fn set_mqtt(connected: bool, last_error: Option<String>) {
    let mut slot = board().mqtt.lock().unwrap_or_else(|p| p.into_inner());
    let since = match slot.as_ref() {
        Some(old) if old.connected == connected => old.since,
        _ => Instant::now(),
    };
    let last_error = last_error.or_else(|| slot.as_ref().and_then(|o| o.last_error.clone()));
    *slot = Some(MqttStatus {
        connected,
        since,
        last_error,
    });
}

/// A polled collector started with `devices` devices (none answered yet).
pub fn set_polled(collector: &'static str, devices: usize) {
    board()
        .polled
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            collector,
            PolledStatus {
                devices,
                up: 0,
                down: 0,
            },
        );
}

/// One device's poll result: `before` is its previous result (None on its first poll).
pub fn device_result(collector: &'static str, before: Option<bool>, up: bool) {
    if before == Some(up) {
        return;
    }
    let mut polled = board().polled.lock().unwrap_or_else(|p| p.into_inner());
    let s = polled.entry(collector).or_default();
    match before {
        Some(true) => s.up = s.up.saturating_sub(1),
        Some(false) => s.down = s.down.saturating_sub(1),
        None => {}
    }
    if up {
        s.up += 1;
    } else {
        s.down += 1;
    }
}

pub fn set_rules(s: RulesStatus) {
    set(&board().rules, s);
}

/// A reload was rejected: the previous rules (and their count) stay.
pub fn rules_reload_failed(error: String) {
    let mut slot = board().rules.lock().unwrap_or_else(|p| p.into_inner());
    let rules = slot.as_ref().map_or(0, |r| r.rules);
    *slot = Some(RulesStatus {
        rules,
        last_reload_ok: false,
        last_reload_error: Some(error),
    });
}

/// When `/ready` says no.
#[derive(Clone, Copy, Debug)]
pub struct ReadyPolicy {
    /// How long the sink may be down (spooling or failing) before the instance is not ready.
    pub sink_grace: Duration,
}

/// The components as JSON, and whether the instance is ready under `policy`.
pub fn report(policy: ReadyPolicy) -> (bool, Value) {
    let now = Instant::now();
    let mut problems: Vec<String> = Vec::new();
    let sinks: Vec<SinkStatus> = board()
        .sinks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    let mut sinks_json = serde_json::Map::new();
    for s in sinks {
        let down_s = s.down_since.map(|t| now.duration_since(t).as_secs_f64());
        if let Some(d) = s.down_since.map(|t| now.duration_since(t)) {
            if d > policy.sink_grace {
                problems.push(format!(
                    "sink {} {} for {:.0} s (grace {:?})",
                    s.name,
                    s.state.as_str(),
                    d.as_secs_f64(),
                    policy.sink_grace
                ));
            }
        }
        sinks_json.insert(
            s.name.to_string(),
            json!({
                "state": s.state.as_str(),
                "down_for_s": down_s,
                "oldest_unwritten_s": s.oldest_unwritten.map(|d| d.as_secs_f64()),
                "spooled_samples": s.spooled_samples,
                "last_error": s.last_error,
            }),
        );
    }
    let mqtt = get(&board().mqtt);
    let polled: Vec<(&'static str, PolledStatus)> = board()
        .polled
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    // A collector is "connected" when MQTT is, or any polled device answers.
    let mqtt_up = mqtt.as_ref().map(|m| m.connected);
    let polled_up = polled.iter().any(|(_, s)| s.up > 0 || s.devices == 0);
    let any_collector = mqtt_up.is_some() || !polled.is_empty();
    if any_collector && !mqtt_up.unwrap_or(false) && !polled_up {
        problems.push("no collector is connected".into());
    }
    let mut body = json!({
        "ready": problems.is_empty(),
        "problems": problems,
        "sinks": sinks_json,
        "mqtt": mqtt.map(|m| json!({
            "connected": m.connected,
            "for_s": now.duration_since(m.since).as_secs_f64(),
            "last_error": m.last_error,
        })),
        "rules": get(&board().rules).map(|r| json!({
            "rules": r.rules,
            "last_reload_ok": r.last_reload_ok,
            "last_reload_error": r.last_reload_error,
        })),
    });
    for (name, s) in polled {
        body[name] = json!({"devices": s.devices, "up": s.up, "down": s.down});
    }
    (body["ready"].as_bool().unwrap_or(false), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(state: SinkState, down_for_s: Option<u64>) -> SinkStatus {
        SinkStatus {
            name: "influx",
            state,
            down_since: down_for_s.map(|s| Instant::now() - Duration::from_secs(s)),
            oldest_unwritten: None,
            spooled_samples: 10,
            last_error: down_for_s.map(|_| "timeout".into()),
        }
    }

    // One test: the board is process-wide.
    #[test]
    fn ready_follows_the_sink_grace_and_the_collectors() {
        let policy = ReadyPolicy {
            sink_grace: Duration::from_secs(5),
        };
        set_sink(sink(SinkState::Writing, None));
        set_mqtt(true, None);
        let (ready, body) = report(policy);
        assert!(ready, "{body}");
        assert_eq!(body["sinks"]["influx"]["state"], "writing");

        set_sink(sink(SinkState::Spooling, Some(2)));
        assert!(report(policy).0, "within the grace");
        set_sink(sink(SinkState::Spooling, Some(9)));
        let (ready, body) = report(policy);
        assert!(!ready);
        assert!(body["problems"][0].as_str().unwrap().contains("spooling"));

        set_sink(sink(SinkState::Writing, None));
        set_mqtt(false, Some("connection refused".into()));
        let (ready, body) = report(policy);
        assert!(!ready, "{body}");
        assert_eq!(body["mqtt"]["last_error"], "connection refused");
        set_polled("snmp", 2);
        device_result("snmp", None, false);
        device_result("snmp", None, true);
        let (ready, body) = report(policy);
        assert!(
            ready,
            "an answering SNMP target is a connected collector: {body}"
        );
        assert_eq!(body["snmp"]["up"], 1);
        device_result("snmp", Some(true), false);
        assert_eq!(report(policy).1["snmp"]["down"], 2);
        assert!(!report(policy).0);
        // A second sink failing past its grace makes the instance unready on its own.
        set_sink(SinkStatus {
            name: "remote_write",
            ..sink(SinkState::Failing, Some(9))
        });
        device_result("snmp", Some(false), true);
        let (ready, body) = report(policy);
        assert!(!ready, "{body}");
        assert_eq!(body["sinks"]["remote_write"]["state"], "failing");
        assert_eq!(body["sinks"]["influx"]["state"], "writing");
    }
}

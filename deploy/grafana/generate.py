#!/usr/bin/env python3
"""Generates the Grafana dashboards in deploy/grafana/dashboards/ (the JSON is committed).

One source for every panel keeps units, thresholds, filters and the events annotation the
same on every dashboard. Measurement, field and tag names are those of docs/naming.md, which
every SNMP profile and MQTT mapping writes, so one query serves every vendor. Thresholds come
from the shipped rules in deploy/rules/; change both together.
Every InfluxQL query here is run against real ingested data by tests/dashboards.rs, and every
PromQL query against sitewatch's own /metrics.

Usage: python3 deploy/grafana/generate.py        (no third-party modules needed)
"""

import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards")

# Must match the uids in provisioning/datasources/*.yaml.
INFLUX = {"type": "influxdb", "uid": "sitewatch-influxdb"}
PROM = {"type": "prometheus", "uid": "sitewatch-prometheus"}

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x

# deploy/rules/environment.toml
TEMP_WARN, TEMP_CRIT = 27.0, 32.0  # rack_inlet_temperature (ASHRAE A1 recommended/allowable)
HUM_LOW, HUM_HIGH = 20.0, 70.0  # rack_humidity warning: outside 20-70 %RH (A1 recommended)
HUM_MIN, HUM_MAX = 8.0, 80.0  # rack_humidity critical: outside 8-80 %RH (A1 allowable)
# deploy/rules/power.toml
PHASE_WARN, CIRCUIT_A = 12.8, 16.0  # pdu_phase_current: 80 % of a 16 A circuit
RUNTIME_WARN, RUNTIME_CRIT = 10.0, 5.0  # ups_battery_runtime, minutes
LOAD_WARN, LOAD_CRIT = 80.0, 95.0  # ups_load / ups_output_load, %
# deploy/rules/cooling.toml
SUPPLY_WARN, SUPPLY_CRIT = 25.0, 27.0  # cooling_supply_air

# Filters. Variables with "All" expand to `.*` (allValue), which also matches series that
# lack the tag, e.g. an SNMP target configured without a `room` tag. Per-rack panels take only
# series that have a rack.
SR = '"site" =~ /^$site$/ AND "room" =~ /^$room$/'
RACK = SR + ' AND "rack" =~ /^$rack$/ AND "rack" != \'\''
DEV = SR + ' AND "device" =~ /^$device$/'
TF = "$timeFilter"
GT = "GROUP BY time($__interval)"


class Ids:
    def __init__(self):
        self.n = 0

    def next(self):
        self.n += 1
        return self.n


def influx(query, ref="A", alias=None, fmt="time_series"):
    t = {
        "datasource": INFLUX,
        "refId": ref,
        "query": query,
        "rawQuery": True,
        "resultFormat": fmt,
    }
    if alias:
        t["alias"] = alias
    return t


def prom(expr, legend, ref="A", instant=False):
    return {
        "datasource": PROM,
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }


def thresholds(*steps):
    """steps: ("green", None), ("orange", 27), ..."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def value_map(mapping):
    """mapping: {raw value: (display text, colour)}"""
    return [
        {
            "type": "value",
            "options": {
                str(k).lower() if isinstance(k, bool) else str(k): {"text": t, "color": c, "index": i}
                for i, (k, (t, c)) in enumerate(mapping.items())
            },
        }
    ]


# State vocabularies (`<field>_state`), as docs/naming.md defines them for every vendor.
UPS_OUTPUT = {
    "normal": ("On line", "green"),
    "battery": ("ON BATTERY", "red"),
    "bypass": ("BYPASS", "orange"),
    "booster": ("Boost", "yellow"),
    "reducer": ("Trim", "yellow"),
    "off": ("OFF", "red"),
    "none": ("NO OUTPUT", "red"),
    "other": ("Other", "purple"),
}
BATTERY_STATUS = {
    "normal": ("Normal", "green"),
    "low": ("LOW", "orange"),
    "depleted": ("DEPLETED", "red"),
    "unknown": ("Unknown", "purple"),
}
LEAK_STATE = {True: ("WATER", "red"), False: ("dry", "green")}
LOAD_STATE = {
    "low": ("Low", "blue"),
    "normal": ("Normal", "green"),
    "near_overload": ("NEAR OVERLOAD", "orange"),
    "overload": ("OVERLOAD", "red"),
}
UP_DOWN = {True: ("up", "green"), False: ("DOWN", "red")}
IF_STATUS = {
    "up": ("up", "green"),
    "down": ("down", "red"),
    "testing": ("testing", "yellow"),
    "unknown": ("unknown", "purple"),
    "dormant": ("dormant", "blue"),
    "not_present": ("not present", "text"),
    "lower_layer_down": ("lower layer down", "red"),
}
COOLING_STATE = {"on": ("On", "green"), "off": ("OFF", "red"), "standby": ("Standby", "yellow")}
SEVERITY = {"critical": ("critical", "red"), "warning": ("warning", "orange"), "ok": ("ok", "green")}
EVENT_STATE = {"firing": ("firing", "red"), "resolved": ("resolved", "green"),
               "acknowledged": ("acknowledged", "blue"), "escalated": ("escalated", "purple")}
ACKED = {"true": ("acknowledged", "blue"), "false": ("unacknowledged", "red")}

GAP_MS = 180000  # draw a break where a series is silent for more than 3 minutes


def panel(kind, title, targets, pos, ids, desc="", unit=None, mn=None, mx=None, th=None,
          mappings=None, decimals=None, options=None, custom=None, overrides=None,
          interval=None, extra=None):
    defaults = {"color": {"mode": "palette-classic"}}
    if unit:
        defaults["unit"] = unit
    if mn is not None:
        defaults["min"] = mn
    if mx is not None:
        defaults["max"] = mx
    if decimals is not None:
        defaults["decimals"] = decimals
    if th:
        defaults["thresholds"] = th
    else:
        defaults["thresholds"] = thresholds(("green", None))
    if mappings:
        defaults["mappings"] = mappings
    if custom:
        defaults["custom"] = custom
    p = {
        "id": ids.next(),
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": targets[0]["datasource"],
        "gridPos": {"x": pos[0], "y": pos[1], "w": pos[2], "h": pos[3]},
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if interval:
        p["interval"] = interval
    if extra:
        p.update(extra)
    return p


def timeseries(title, targets, pos, ids, desc="", unit=None, mn=None, mx=None, th=None,
               th_style="off", soft=None, stack=False, bars=False, overrides=None, mappings=None,
               interval="10s", legend_calcs=("lastNotNull", "max")):
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else (10 if stack else 0),
        "showPoints": "never",
        "pointSize": 4,
        "spanNulls": False,
        "insertNulls": GAP_MS,
        "lineInterpolation": "linear",
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "axisPlacement": "auto",
        "thresholdsStyle": {"mode": th_style},
    }
    if soft:
        custom["axisSoftMin"], custom["axisSoftMax"] = soft
    opts = {
        "legend": {"showLegend": True, "displayMode": "table", "placement": "right",
                   "calcs": list(legend_calcs)},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, targets, pos, ids, desc, unit, mn, mx, th, mappings,
                 options=opts, custom=custom, overrides=overrides, interval=interval)


def stat(title, targets, pos, ids, desc="", unit=None, mn=None, mx=None, th=None,
         mappings=None, text=False, color_mode="background", decimals=None):
    opts = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/.*/" if text else "",
                          "values": False},
        "colorMode": color_mode,
        "graphMode": "none",
        "textMode": "value_and_name",
        "justifyMode": "auto",
        "orientation": "auto",
        "wideLayout": True,
        "showPercentChange": False,
    }
    return panel("stat", title, targets, pos, ids, desc, unit, mn, mx, th, mappings,
                 options=opts, decimals=decimals,
                 custom=None)


def bargauge(title, targets, pos, ids, desc="", unit=None, mn=None, mx=None, th=None,
             decimals=None):
    opts = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "valueMode": "color",
        "showUnfilled": True,
        "namePlacement": "left",
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
        "maxVizHeight": 300,
    }
    return panel("bargauge", title, targets, pos, ids, desc, unit, mn, mx, th, options=opts,
                 decimals=decimals)


def state_timeline(title, targets, pos, ids, desc="", mappings=None, interval="10s"):
    opts = {
        "mergeValues": True,
        "showValue": "auto",
        "alignValue": "left",
        "rowHeight": 0.9,
        "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    custom = {"lineWidth": 0, "fillOpacity": 80, "spanNulls": False, "insertNulls": GAP_MS}
    p = panel("state-timeline", title, targets, pos, ids, desc, mappings=mappings, options=opts,
              custom=custom, interval=interval)
    p["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
    return p


def table(title, targets, pos, ids, desc="", overrides=None, transformations=None,
          sort=("Time", True), extra=None):
    opts = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": "", "countRows": False},
        "sortBy": [{"displayName": sort[0], "desc": sort[1]}] if sort else [],
    }
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False,
              "filterable": True}
    p = panel("table", title, targets, pos, ids, desc, options=opts, custom=custom,
              overrides=overrides, extra=extra)
    p["fieldConfig"]["defaults"]["color"] = {"mode": "thresholds"}
    if transformations:
        p["transformations"] = transformations
    return p


def row(title, y, ids):
    return {"id": ids.next(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def colored_column(name, mapping):
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "mappings", "value": value_map(mapping)},
            {"id": "custom.cellOptions", "value": {"type": "color-background", "mode": "basic"}},
        ],
    }


# ---------------------------------------------------------------- variables, annotations


def var(name, label, query, all_=True, multi=True):
    v = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": INFLUX,
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change: new devices show up without a reload
        "sort": 1,
        "regex": "",
        "hide": 0,
        "multi": multi,
        "includeAll": all_,
        "options": [],
        "skipUrlSync": False,
    }
    if all_:
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        v["current"] = {}
    return v


VAR_SITE = var("site", "Site", 'SHOW TAG VALUES WITH KEY = "site"', all_=False, multi=False)
VAR_ROOM = var("room", "Room", 'SHOW TAG VALUES WITH KEY = "room" WHERE "site" =~ /^$site$/')
VAR_RACK = var("rack", "Rack",
               'SHOW TAG VALUES FROM "environment" WITH KEY = "rack" WHERE ' + SR)
# Every device, SNMP targets and MQTT devices alike (docs/naming.md: `device` is on every sample).
VAR_DEVICE = var("device", "Device", 'SHOW TAG VALUES WITH KEY = "device" WHERE ' + SR)


def events_annotations(site_filter=True):
    where = (SR + " AND ") if site_filter else ""
    out = [{
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }]
    for name, sev, colour in (("Critical events", "critical", "red"),
                              ("Warning events", "warning", "orange")):
        q = ('SELECT "message", "rule", "state" FROM "events" WHERE "severity" = \'%s\' AND %s%s'
             % (sev, where, TF))
        out.append({
            "name": name,
            "datasource": INFLUX,
            "enable": True,
            "hide": False,
            "iconColor": colour,
            # Legacy keys (read by every Grafana with the InfluxQL editor) and the query
            # object newer releases keep; both say the same.
            "query": q,
            "textColumn": "message",
            "tagsColumn": "rule,state",
            "titleColumn": "",
            "timeEndColumn": "",
            "target": {
                "refId": "Anno",
                "query": q,
                "rawQuery": True,
                "resultFormat": "table",
                "fromAnnotations": True,
                "textColumn": "message",
                "tagsColumn": "rule,state",
            },
        })
    return out


def dashboard(uid, title, desc, panels, variables, annotations=None, refresh="30s",
              time_from="now-6h"):
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["sitewatch"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "links": [{"type": "dashboards", "tags": ["sitewatch"], "asDropdown": True,
                   "title": "sitewatch dashboards", "includeVars": True, "keepTime": True,
                   "icon": "external link", "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": variables},
        "annotations": {"list": annotations if annotations is not None else events_annotations()},
        "panels": panels,
    }


# ---------------------------------------------------------------- shared queries

def q_last(field, measurement, by):
    """Latest value per series: stat and bar gauge panels."""
    return ('SELECT last("%s") FROM "%s" WHERE %s AND %s GROUP BY %s'
            % (field, measurement, DEV, TF, by))


def q_over_time(agg, field, measurement, by, where=None, fill="none"):
    return ('SELECT %s("%s") FROM "%s" WHERE %s AND %s %s, %s fill(%s)'
            % (agg, field, measurement, where or DEV, TF, GT, by, fill))


PHASE_BY = '"device", "pdu_module", "phase"'
PHASE_ALIAS = "$tag_device $tag_phase"
LEAK_BY = '"device", "sensor", "sensor_index"'
LEAK_ALIAS = "$tag_device $tag_sensor$tag_sensor_index"
TEMP_TH = thresholds(("green", None), ("orange", TEMP_WARN), ("red", TEMP_CRIT))
HUM_TH = thresholds(("red", None), ("orange", HUM_MIN), ("green", HUM_LOW), ("orange", HUM_HIGH),
                    ("red", HUM_MAX))
PHASE_TH = thresholds(("green", None), ("orange", PHASE_WARN), ("red", CIRCUIT_A))
CHARGE_TH = thresholds(("red", None), ("orange", 50), ("green", 80))
RUNTIME_TH = thresholds(("red", None), ("orange", RUNTIME_CRIT), ("green", RUNTIME_WARN))
LOAD_TH = thresholds(("green", None), ("orange", LOAD_WARN), ("red", LOAD_CRIT))
SUPPLY_TH = thresholds(("green", None), ("orange", SUPPLY_WARN), ("red", SUPPLY_CRIT))

TEMP_DESC = ("Inlet temperature (environment temperature_c) per rack, the hottest sensor of "
             "each rack, from every SNMP probe and MQTT sensor with a rack tag. Lines: %.0f °C "
             "warning (ASHRAE A1 recommended limit), %.0f °C critical (allowable limit), as "
             "rule rack_inlet_temperature in deploy/rules/environment.toml."
             % (TEMP_WARN, TEMP_CRIT))
HUM_DESC = ("Relative humidity (environment humidity_pct) per rack. Orange outside %.0f-%.0f "
            "%%RH (ASHRAE A1 recommended), red outside %.0f-%.0f %%RH (allowable), as rule "
            "rack_humidity." % (HUM_LOW, HUM_HIGH, HUM_MIN, HUM_MAX))
PHASE_DESC = ("Phase current (pdu_phase current_a) of every PDU, SNMP or MQTT. Orange from "
              "%.1f A (80 %% of a 16 A circuit, rule pdu_phase_current), red at the %.0f A "
              "rating. Edit max and thresholds if your circuits are rated differently; PDUs "
              "that judge their own load are in 'Phase load state' (rule pdu_phase_load)."
              % (PHASE_WARN, CIRCUIT_A))
RUNTIME_DESC = ("Estimated runtime on battery at the present load (ups battery_runtime_min). "
                "Orange below %.0f min, red below %.0f min, as rule ups_battery_runtime."
                % (RUNTIME_WARN, RUNTIME_CRIT))


def overview():
    ids = Ids()
    p = []
    p.append(stat("UPS output", [influx(q_last("output_source_state", "ups", '"device"'),
                                        alias="$tag_device")],
                  (0, 0, 6, 5), ids, text=True, mappings=value_map(UPS_OUTPUT),
                  desc="Where the UPS output comes from (ups output_source_state): on line, ON "
                       "BATTERY, BYPASS. The same names for every vendor (docs/naming.md)."))
    p.append(stat("Battery charge", [influx(q_last("battery_charge_pct", "ups", '"device"'),
                                            alias="$tag_device")],
                  (6, 0, 5, 5), ids, unit="percent", mn=0, mx=100, th=CHARGE_TH, decimals=0))
    p.append(stat("Battery runtime", [influx(q_last("battery_runtime_min", "ups", '"device"'),
                                             alias="$tag_device")],
                  (11, 0, 5, 5), ids, unit="m", th=RUNTIME_TH, desc=RUNTIME_DESC))
    p.append(stat("Leak sensors", [influx(q_last("leak", "leak", LEAK_BY), alias=LEAK_ALIAS)],
                  (16, 0, 8, 5), ids, text=True, mappings=value_map(LEAK_STATE),
                  desc="Last reading of every leak sensor (leak: true = water), SNMP and MQTT."))

    p.append(timeseries("Rack inlet temperature", [influx(
        q_over_time("max", "temperature_c", "environment", '"rack"', where=RACK),
        alias="$tag_rack")], (0, 5, 12, 9), ids, desc=TEMP_DESC,
        unit="celsius", th=TEMP_TH, th_style="dashed", soft=(18, 35)))
    p.append(bargauge("PDU phase load", [influx(q_last("current_a", "pdu_phase", PHASE_BY),
                                                alias=PHASE_ALIAS)],
                      (12, 5, 12, 9), ids, desc=PHASE_DESC, unit="amp", mn=0, mx=CIRCUIT_A,
                      th=PHASE_TH, decimals=1))
    p.append(timeseries("Rack humidity", [influx(
        q_over_time("mean", "humidity_pct", "environment", '"rack"', where=RACK),
        alias="$tag_rack")], (0, 14, 12, 8), ids, desc=HUM_DESC,
        unit="humidity", mn=0, mx=100, th=HUM_TH, th_style="dashed"))
    p.append(state_timeline("Leak sensors over time", [influx(
        q_over_time("last", "leak", "leak", LEAK_BY, fill="previous"), alias=LEAK_ALIAS)],
        (12, 14, 12, 8), ids, mappings=value_map(LEAK_STATE)))

    p.append(active_alerts((0, 22, 24, 9), ids))
    return dashboard("sitewatch-overview", "Facility overview",
                     "UPS, PDU, temperature, humidity and leak at a glance, with active alerts.",
                     p, [VAR_SITE, VAR_ROOM, VAR_RACK, VAR_DEVICE])


def active_alerts(pos, ids):
    """Every open alert, whatever the dashboard range: the rules stage re-writes each open
    alert to the `alerts` measurement every 30 s (and once more, open = false, when it
    resolves), so the last row per alert within a few minutes tells what is firing now."""
    q = ('SELECT "series", "rule", "severity", "state", "message", "value", "threshold", '
         '"age_s", "silenced", "acked", "acked_by", "id", "runbook_url" FROM "alerts" '
         'WHERE %s AND time > now() - 3m' % SR)
    last = {"aggregations": ["last"], "operation": "aggregate"}
    transformations = [
        {"id": "groupBy", "options": {"fields": {
            "series": {"aggregations": [], "operation": "groupby"},
            "rule": {"aggregations": [], "operation": "groupby"},
            "severity": last, "state": last, "message": last, "value": last,
            "threshold": last, "age_s": last, "silenced": last, "acked": last,
            "acked_by": last, "id": last, "runbook_url": last,
        }}},
        {"id": "filterByValue", "options": {
            "type": "include", "match": "any",
            "filters": [{"fieldName": "state (last)", "config": {
                "id": "equal", "options": {"value": "firing"}}}]}},
        {"id": "organize", "options": {
            "excludeByName": {"state (last)": True},
            "renameByName": {
                "severity (last)": "Severity", "message (last)": "Message",
                "value (last)": "Value", "threshold (last)": "Threshold",
                "age_s (last)": "Open for", "silenced (last)": "Silenced",
                "acked (last)": "Acknowledged", "acked_by (last)": "By",
                "id (last)": "Alert id", "runbook_url (last)": "Runbook", "rule": "Rule",
                "series": "Series"}}},
    ]
    open_for = {"matcher": {"id": "byName", "options": "Open for"},
                "properties": [{"id": "unit", "value": "s"}]}
    runbook = {"matcher": {"id": "byName", "options": "Runbook"},
               "properties": [{"id": "links", "value": [
                   {"title": "Runbook", "url": "${__value.raw}", "targetBlank": True}]}]}
    return table("Active alerts", [influx(q, fmt="table")], pos, ids,
                 desc="Every alert firing now, however long ago it started (the alerts "
                      "measurement, re-written every 30 s while an alert is open; "
                      "GET /api/v1/alerts gives the same list). Take one with "
                      "`sitewatch ack <Alert id> --by NAME --comment ...` (docs/alerting.md).",
                 overrides=[colored_column("Severity", SEVERITY),
                            colored_column("Acknowledged", ACKED), open_for, runbook],
                 transformations=transformations, sort=("Open for", True))


def power():
    ids = Ids()
    p = [row("UPS", 0, ids)]
    p.append(state_timeline("UPS output source", [influx(
        q_over_time("last", "output_source_state", "ups", '"device"', fill="previous"),
        alias="$tag_device")], (0, 1, 24, 5), ids, mappings=value_map(UPS_OUTPUT),
        desc="ups output_source_state. Rules ups_on_battery (critical), ups_on_bypass "
             "(warning), ups_output_off / ups_no_output (critical)."))
    p.append(timeseries("Battery charge", [influx(
        q_over_time("mean", "battery_charge_pct", "ups", '"device"'), alias="$tag_device")],
        (0, 6, 8, 8), ids, unit="percent", mn=0, mx=100, th=CHARGE_TH, th_style="dashed"))
    p.append(timeseries("Battery runtime", [influx(
        q_over_time("mean", "battery_runtime_min", "ups", '"device"'), alias="$tag_device")],
        (8, 6, 8, 8), ids, unit="m", mn=0, th=RUNTIME_TH, th_style="dashed",
        desc=RUNTIME_DESC))
    p.append(timeseries("UPS load", [
        influx(q_over_time("mean", "output_load_pct", "ups", '"device"'), ref="A",
               alias="$tag_device"),
        influx(q_over_time("mean", "load_pct", "ups_output", '"device", "line"'), ref="B",
               alias="$tag_device L$tag_line"),
    ], (16, 6, 8, 8), ids, unit="percent", mn=0, mx=100, th=LOAD_TH, th_style="dashed",
        desc="Load in %% of the UPS rating: the whole unit (ups output_load_pct) or per output "
             "line (ups_output load_pct). Rules ups_load / ups_output_load: %.0f %% warning, "
             "%.0f %% critical." % (LOAD_WARN, LOAD_CRIT)))
    p.append(timeseries("Input voltage", [influx(
        q_over_time("mean", "voltage_v", "ups_input", '"device", "line"'),
        alias="$tag_device L$tag_line")], (0, 14, 8, 8), ids, unit="volt", soft=(200, 250)))
    p.append(timeseries("Output voltage", [influx(
        q_over_time("mean", "voltage_v", "ups_output", '"device", "line"'),
        alias="$tag_device L$tag_line")], (8, 14, 8, 8), ids, unit="volt", soft=(200, 250)))
    p.append(stat("Battery status", [influx(q_last("battery_status_state", "ups", '"device"'),
                                            alias="$tag_device")],
                  (16, 14, 4, 8), ids, text=True, mappings=value_map(BATTERY_STATUS),
                  desc="ups battery_status_state; rule ups_battery_low."))
    p.append(timeseries("Battery temperature", [influx(
        q_over_time("mean", "battery_temperature_c", "ups", '"device"'), alias="$tag_device")],
        (20, 14, 4, 8), ids, unit="celsius",
        th=thresholds(("green", None), ("orange", 30), ("red", 40)), th_style="dashed",
        soft=(15, 45), legend_calcs=()))

    p.append(row("PDU", 22, ids))
    p.append(timeseries("Phase current", [influx(
        q_over_time("max", "current_a", "pdu_phase", PHASE_BY), alias=PHASE_ALIAS)],
        (0, 23, 16, 9), ids, desc=PHASE_DESC, unit="amp", mn=0, th=PHASE_TH,
        th_style="dashed", soft=(0, CIRCUIT_A + 1)))
    p.append(bargauge("Phase load now", [influx(q_last("current_a", "pdu_phase", PHASE_BY),
                                                alias=PHASE_ALIAS)],
                      (16, 23, 8, 9), ids, desc=PHASE_DESC, unit="amp", mn=0, mx=CIRCUIT_A,
                      th=PHASE_TH, decimals=1))
    p.append(timeseries("PDU power", [influx(
        q_over_time("mean", "power_w", "pdu", '"device", "pdu_module"'),
        alias="$tag_device $tag_pdu_module")], (0, 32, 12, 8), ids, unit="watt", mn=0,
        stack=True, legend_calcs=("lastNotNull", "mean", "max"),
        desc="True power of each PDU (pdu power_w), stacked."))
    p.append(timeseries("PDU energy", [influx(
        q_over_time("last", "energy_kwh", "pdu", '"device", "pdu_module"'),
        alias="$tag_device $tag_pdu_module")], (12, 32, 6, 8), ids, unit="kwatth",
        legend_calcs=("lastNotNull",)))
    p.append(state_timeline("Phase load state", [influx(
        q_over_time("last", "load_state_state", "pdu_phase", PHASE_BY, fill="previous"),
        alias=PHASE_ALIAS)], (18, 32, 6, 8), ids, mappings=value_map(LOAD_STATE),
        desc="The PDU's own judgement against the thresholds set on it (pdu_phase "
             "load_state_state); rule pdu_phase_load."))
    return dashboard("sitewatch-power", "Power", "UPS state, battery, load and voltages; PDU "
                     "phase current against the circuit rating.", p,
                     [VAR_SITE, VAR_ROOM, VAR_DEVICE])


def cooling():
    ids = Ids()
    p = [row("Racks", 0, ids)]
    p.append(timeseries("Rack inlet temperature", [influx(
        q_over_time("max", "temperature_c", "environment", '"rack"', where=RACK),
        alias="$tag_rack")], (0, 1, 16, 9), ids, desc=TEMP_DESC,
        unit="celsius", th=TEMP_TH, th_style="line+area", soft=(18, 35)))
    p.append(bargauge("Hottest racks now", [influx(
        'SELECT last("temperature_c") FROM "environment" WHERE %s AND %s GROUP BY "rack", '
        '"device", "sensor"' % (RACK, TF), alias="$tag_rack $tag_sensor")], (16, 1, 8, 9), ids,
        unit="celsius", mn=15, mx=40, th=TEMP_TH, decimals=1))
    p.append(timeseries("Rack humidity", [influx(
        q_over_time("mean", "humidity_pct", "environment", '"rack"', where=RACK),
        alias="$tag_rack")], (0, 10, 12, 8), ids, desc=HUM_DESC, unit="humidity", mn=0,
        mx=100, th=HUM_TH, th_style="dashed"))
    p.append(timeseries("Temperature by sensor", [
        influx(q_over_time("mean", "temperature_c", "environment",
                           '"device", "sensor", "sensor_index"'),
               ref="A", alias="$tag_device $tag_sensor$tag_sensor_index"),
        influx('SELECT mean("value") FROM "sensor" WHERE "sensor_type" = \'celsius\' AND %s AND '
               '%s %s, "device", "sensor" fill(none)' % (DEV, TF, GT), ref="B",
               alias="$tag_device $tag_sensor"),
    ], (12, 10, 12, 8), ids, unit="celsius", th=TEMP_TH, th_style="dashed", soft=(18, 35),
        desc="Every environment sensor (SNMP probes of UPS cards, PDUs and environment "
             "monitors, MQTT sensors) and ENTITY-SENSOR-MIB celsius sensors, with or without "
             "a rack tag. Rear (hot aisle) probes read well above the inlet lines."))

    p.append(row("Cooling units", 18, ids))
    p.append(timeseries("Cooling unit air temperatures", [influx(
        'SELECT mean("supply_air_c") AS "supply", mean("return_air_c") AS "return", '
        'mean("rack_inlet_c") AS "rack inlet", mean("setpoint_c") AS "set point" FROM '
        '"cooling" WHERE %s AND %s %s, "device" fill(none)' % (DEV, TF, GT),
        alias="$tag_device $col")], (0, 19, 12, 8), ids, unit="celsius", soft=(15, 40),
        th=SUPPLY_TH, th_style="dashed",
        desc="Supply, return and rack inlet air and the set point of each cooling unit "
             "(cooling *_c). Lines: supply air %.0f °C warning, %.0f °C critical (rule "
             "cooling_supply_air)." % (SUPPLY_WARN, SUPPLY_CRIT)))
    p.append(state_timeline("Cooling unit state", [influx(
        q_over_time("last", "system_state_state", "cooling", '"device"', fill="previous"),
        alias="$tag_device")], (12, 19, 12, 8), ids, mappings=value_map(COOLING_STATE),
        desc="cooling system_state_state; rule cooling_unit_state alarms on its severity."))
    p.append(timeseries("Cooling capacity in use", [influx(
        q_over_time("mean", "cooling_capacity_pct", "cooling", '"device"'),
        alias="$tag_device")], (0, 27, 12, 8), ids, unit="percent", mn=0, mx=100,
        th=thresholds(("green", None), ("orange", 80), ("red", 95)), th_style="dashed"))
    p.append(state_timeline("Leak sensors", [influx(
        q_over_time("last", "leak", "leak", LEAK_BY, fill="previous"), alias=LEAK_ALIAS)],
        (12, 27, 12, 8), ids, mappings=value_map(LEAK_STATE),
        desc="Every leak sensor (leak: true = water); rule water_leak."))
    return dashboard("sitewatch-cooling", "Cooling", "Rack inlet temperatures and humidity, "
                     "all temperature sensors, cooling units and leak sensors.", p,
                     [VAR_SITE, VAR_ROOM, VAR_RACK, VAR_DEVICE])


def network():
    ids = Ids()
    p = []
    p.append(state_timeline("Device reachability (SNMP)", [influx(
        'SELECT last("up") FROM "snmp_poll" WHERE %s AND %s %s, "device" fill(null)'
        % (DEV, TF, GT), alias="$tag_device")], (0, 0, 24, 6), ids,
        desc="One bar per SNMP target: up when the last poll answered. A gap means no poll "
             "result was stored at all (sitewatch or InfluxDB down).",
        mappings=value_map(UP_DOWN), interval="30s"))
    p.append(timeseries("Poll duration", [influx(
        'SELECT max("duration_s") FROM "snmp_poll" WHERE %s AND %s %s, "device" fill(none)'
        % (DEV, TF, GT), alias="$tag_device")], (0, 6, 12, 8), ids, unit="s", mn=0,
        desc="Wall time of each poll. A poll close to timeout × (retries + 1) is a device "
             "about to be marked down.", interval="30s"))
    p.append(table("Failed polls", [influx(
        'SELECT "device", "error", "duration_s" FROM "snmp_poll" WHERE "up" = false AND %s AND '
        '%s' % (DEV, TF), fmt="table")], (12, 6, 12, 8), ids,
        desc="Every poll that did not answer, with the poller's reason."))
    p.append(timeseries("Interface traffic", [
        influx('SELECT mean("in_bps") FROM "interface" WHERE %s AND %s %s, "device", "ifName" '
               'fill(none)' % (DEV, TF, GT), ref="A", alias="$tag_device $tag_ifName in"),
        influx('SELECT mean("out_bps") * -1 FROM "interface" WHERE %s AND %s %s, "device", '
               '"ifName" fill(none)' % (DEV, TF, GT), ref="B",
               alias="$tag_device $tag_ifName out"),
    ], (0, 14, 16, 9), ids, unit="bps", desc="In above, out below the axis (IF-MIB 64-bit "
        "counters as bit/s).", interval="30s", legend_calcs=("mean", "max")))
    p.append(table("Interfaces", [influx(
        'SELECT last("oper_status_state") AS "oper", last("admin_status_state") AS "admin", '
        'last("speed_mbps") AS "speed Mb/s" FROM "interface" WHERE %s AND %s GROUP BY "device", '
        '"ifName", "ifAlias"' % (DEV, TF), fmt="table")], (16, 14, 8, 9), ids,
        overrides=[colored_column("oper", IF_STATUS), colored_column("admin", IF_STATUS)],
        transformations=[{"id": "merge", "options": {}}], sort=("device", False)))
    p.append(timeseries("Interface errors and discards", [influx(
        'SELECT mean("in_errors_ps") AS "in errors", mean("out_errors_ps") AS "out errors", '
        'mean("in_discards_ps") AS "in discards", mean("out_discards_ps") AS "out discards" '
        'FROM "interface" WHERE %s AND %s %s, "device", "ifName" fill(none)' % (DEV, TF, GT),
        alias="$tag_device $tag_ifName $col")], (0, 23, 12, 8), ids, unit="pps", mn=0,
        interval="30s", th=thresholds(("green", None), ("red", 1)), th_style="dashed"))
    p.append(timeseries("Hardware sensors (ENTITY-SENSOR-MIB)", [influx(
        'SELECT mean("value") FROM "sensor" WHERE %s AND %s %s, "device", "sensor", '
        '"sensor_type" fill(none)' % (DEV, TF, GT),
        alias="$tag_device $tag_sensor ($tag_sensor_type)")],
        (12, 23, 12, 8), ids, interval="30s"))
    return dashboard("sitewatch-network", "Network devices", "SNMP reachability and poll "
                     "health, interface traffic and errors, hardware sensors.", p,
                     [VAR_SITE, VAR_ROOM, VAR_DEVICE])


def alerts():
    ids = Ids()
    p = []
    p.append(timeseries("Rule events", [influx(
        'SELECT count("duration_s") FROM "events" WHERE "state" = \'firing\' AND %s AND %s %s, '
        '"severity" fill(none)' % (SR, TF, GT), alias="$tag_severity")], (0, 0, 12, 7), ids,
        unit="short", mn=0, bars=True, stack=True, interval="1m",
        overrides=[{"matcher": {"id": "byName", "options": n},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}]}
                   for n, c in (("critical", "red"), ("warning", "orange"))],
        legend_calcs=("sum",)))
    p.append(bargauge("Alarms by rule", [influx(
        'SELECT count("duration_s") FROM "events" WHERE "state" = \'firing\' AND %s AND %s '
        'GROUP BY "rule"' % (SR, TF), alias="$tag_rule")], (12, 0, 6, 7), ids, unit="short",
        mn=0, th=thresholds(("blue", None))))
    p.append(stat("Longest alarm", [influx(
        'SELECT max("duration_s") FROM "events" WHERE "state" = \'resolved\' AND %s AND %s '
        'GROUP BY "rule"' % (SR, TF), alias="$tag_rule")], (18, 0, 6, 7), ids, unit="s",
        color_mode="value", desc="How long the longest resolved alarm of each rule lasted."))
    p.append(active_alerts((0, 7, 24, 8), ids))
    p.append(table("Event log", [influx(
        'SELECT "severity", "state", "rule", "message", "value", "threshold", "duration_s", '
        '"series" FROM "events" WHERE %s AND %s' % (SR, TF), fmt="table")], (0, 15, 24, 12), ids,
        desc="Every rule state change: a firing event when a threshold was crossed for the "
             "rule's `for`, a resolved event when the value went back past its clear level.",
        overrides=[colored_column("severity", SEVERITY), colored_column("state", EVENT_STATE),
                   {"matcher": {"id": "byName", "options": "duration_s"},
                    "properties": [{"id": "unit", "value": "s"},
                                   {"id": "displayName", "value": "lasted"}]}]))
    return dashboard("sitewatch-alerts", "Alerts / events", "Rule state changes written by "
                     "sitewatch to the events measurement.", p, [VAR_SITE, VAR_ROOM],
                     time_from="now-24h")


def sla():
    """Response times and load of the responders, from the events history (docs/alerting.md):
    acknowledged rows carry time_to_ack_s, resolved rows time_to_resolve_s, escalated rows a
    step each."""
    ids = Ids()
    p = []
    ev = 'FROM "events" WHERE "state" = \'%s\' AND ' + SR + ' AND ' + TF
    p.append(stat("Mean time to acknowledge", [influx(
        'SELECT mean("time_to_ack_s") ' + ev % "acknowledged")], (0, 0, 6, 5), ids, unit="s",
        color_mode="value", desc="Mean of time_to_ack_s of the acknowledgements in the range: "
        "wall-clock seconds from an alert's first firing to its acknowledgement."))
    p.append(stat("Mean time to resolve", [influx(
        'SELECT mean("time_to_resolve_s") ' + ev % "resolved")], (6, 0, 6, 5), ids, unit="s",
        color_mode="value", desc="Mean of time_to_resolve_s of the alerts resolved in the "
        "range: wall-clock seconds from first firing to resolve."))
    p.append(stat("Escalations", [influx(
        'SELECT count("step") ' + ev % "escalated")], (12, 0, 6, 5), ids, unit="short",
        color_mode="value", th=thresholds(("green", None), ("orange", 1)),
        desc="Escalation steps taken in the range (alerts nobody acknowledged in time)."))
    p.append(stat("Acknowledged", [influx(
        'SELECT count("time_to_ack_s") ' + ev % "acknowledged")], (18, 0, 6, 5), ids,
        unit="short", color_mode="value", th=thresholds(("blue", None)),
        desc="Acknowledgements in the range."))
    p.append(timeseries("Time to acknowledge and resolve", [
        influx('SELECT mean("time_to_ack_s") ' + ev % "acknowledged" + ' GROUP BY time(1h) '
               'fill(none)', ref="A", alias="time to acknowledge"),
        influx('SELECT mean("time_to_resolve_s") ' + ev % "resolved" + ' GROUP BY time(1h) '
               'fill(none)', ref="B", alias="time to resolve")],
        (0, 5, 12, 8), ids, unit="s", mn=0, bars=True, interval="1h",
        desc="Hourly means: a shift whose bars grow is short-handed or its alerts are hard."))
    p.append(bargauge("Time to acknowledge by rule", [influx(
        'SELECT mean("time_to_ack_s") ' + ev % "acknowledged" + ' GROUP BY "rule"',
        alias="$tag_rule")], (12, 5, 6, 8), ids, unit="s", mn=0,
        th=thresholds(("green", None), ("orange", 900), ("red", 1800)),
        desc="Mean time to acknowledge per rule; orange past 15 min, red past 30 min."))
    p.append(bargauge("Time to resolve by site", [influx(
        'SELECT mean("time_to_resolve_s") ' + ev % "resolved" + ' GROUP BY "site"',
        alias="$tag_site")], (18, 5, 6, 8), ids, unit="s", mn=0, th=thresholds(("blue", None))))
    p.append(bargauge("Noisiest rules", [influx(
        'SELECT count("duration_s") ' + ev % "firing" + ' GROUP BY "rule"',
        alias="$tag_rule")], (0, 13, 8, 8), ids, unit="short", mn=0,
        th=thresholds(("blue", None)), desc="Firing events per rule in the range: candidates "
        "for a better threshold, a longer `for` or a repair."))
    p.append(bargauge("Escalations by rule", [influx(
        'SELECT count("step") ' + ev % "escalated" + ' GROUP BY "rule"',
        alias="$tag_rule")], (8, 13, 8, 8), ids, unit="short", mn=0,
        th=thresholds(("orange", None))))
    p.append(active_alerts((16, 13, 8, 8), ids))
    p.append(table("Acknowledgements and escalations", [influx(
        'SELECT "state", "rule", "severity", "acked_by", "comment", "time_to_ack_s", "step", '
        '"receivers", "series" FROM "events" WHERE ("state" = \'acknowledged\' OR '
        '"state" = \'escalated\') AND ' + SR + ' AND ' + TF, fmt="table")],
        (0, 21, 24, 9), ids,
        desc="Who took which alert and when, and which alerts went on to the next receivers.",
        overrides=[colored_column("state", EVENT_STATE), colored_column("severity", SEVERITY),
                   {"matcher": {"id": "byName", "options": "time_to_ack_s"},
                    "properties": [{"id": "unit", "value": "s"},
                                   {"id": "displayName", "value": "time to ack"}]}]))
    return dashboard("sitewatch-sla", "Alert response (SLA)", "Times to acknowledge and "
                     "resolve, escalations and the noisiest rules, from the events history.",
                     p, [VAR_SITE, VAR_ROOM], time_from="now-7d")


def health():
    ids = Ids()
    inst = 'instance=~"$instance"'
    p = []

    def r(metric, by=None, extra=""):
        sel = "%s{%s%s}" % (metric, inst, extra)
        inner = "rate(%s[$__rate_interval])" % sel
        return "sum by (%s) (%s)" % (by, inner) if by else "sum(%s)" % inner

    def failures(metric, by):
        # Counted only once something failed: absent means zero, not unknown. The metric name
        # is checked against src/ by tests/dashboards.rs, so a typo cannot hide behind this.
        return ("sum by (%s) (increase(%s{%s}[$__rate_interval])) or on() vector(0)"
                % (by, metric, inst))

    p.append(stat("Up", [prom('up{job="sitewatch", %s}' % inst, "{{instance}}", instant=True)],
                  (0, 0, 4, 5), ids, mappings=value_map({1: ("UP", "green"), 0: ("DOWN", "red")}),
                  desc="Prometheus reaches sitewatch's /metrics."))
    p.append(stat("MQTT connected", [prom("max(sitewatch_mqtt_connected{%s})" % inst,
                                          "connected", instant=True)], (4, 0, 4, 5), ids,
                  mappings=value_map({1: ("connected", "green"), 0: ("DISCONNECTED", "red")})))
    p.append(stat("Points to InfluxDB", [prom(r("sitewatch_influx_points_written_total"),
                                              "points/s", instant=True)],
                  (8, 0, 4, 5), ids, unit="ops", color_mode="value",
                  desc="Points InfluxDB accepted per second (samples and events)."))
    p.append(stat("InfluxDB buffer", [prom("sum(sitewatch_influx_buffer_samples{%s})" % inst,
                                           "held", instant=True)], (12, 0, 4, 5), ids,
                  unit="short", th=thresholds(("green", None), ("orange", 10000),
                                              ("red", 80000)),
                  desc="Samples waiting for InfluxDB. Grows while InfluxDB is down; beyond "
                       "buffer_limit (default 100000) the oldest are dropped."))
    p.append(stat("Alarms firing", [prom("sum(sitewatch_rules_firing{%s})" % inst, "firing",
                                         instant=True)], (16, 0, 4, 5), ids, unit="short",
                  th=thresholds(("green", None), ("red", 1))))
    p.append(stat("Data lost", [prom(
        "sum(increase(sitewatch_influx_dropped_total{%s}[$__range])) or on() vector(0)" % inst,
        "dropped", instant=True)], (20, 0, 4, 5), ids, unit="short",
        th=thresholds(("green", None), ("red", 1)),
        desc="Samples dropped in the selected range (buffer full or rejected by InfluxDB)."))

    p.append(timeseries("MQTT messages", [
        prom(r("sitewatch_mqtt_messages_total", "subscription"), "{{subscription}}", "A"),
    ], (0, 5, 12, 8), ids, unit="ops", mn=0, interval=None))
    p.append(timeseries("Decode errors", [
        prom(failures("sitewatch_mqtt_decode_errors_total", "subscription"), "{{subscription}}"),
    ], (12, 5, 12, 8), ids, unit="short", mn=0, interval=None, bars=True,
        th=thresholds(("green", None), ("red", 1))))
    p.append(timeseries("InfluxDB points written", [
        prom(r("sitewatch_influx_points_written_total"), "points/s", "A"),
    ], (0, 13, 8, 8), ids, unit="ops", mn=0, interval=None))
    # A histogram: quantiles over every instance's buckets (a summary's could not be summed).
    latency = ('histogram_quantile(%s, sum by (le) (rate('
               'sitewatch_influx_write_duration_seconds_bucket{%s}[$__rate_interval])))')
    p.append(timeseries("InfluxDB write latency", [
        prom(latency % ("0.5", inst), "p50", "A"),
        prom(latency % ("0.99", inst), "p99", "B"),
    ], (8, 13, 8, 8), ids, unit="s", mn=0, interval=None))
    p.append(timeseries("InfluxDB write errors and drops", [
        prom(failures("sitewatch_influx_write_errors_total", "kind"), "error {{kind}}", "A"),
        prom(failures("sitewatch_influx_dropped_total", "reason"), "dropped {{reason}}", "B"),
    ], (16, 13, 8, 8), ids, unit="short", mn=0, bars=True, interval=None,
        th=thresholds(("green", None), ("red", 1))))
    p.append(timeseries("SNMP polls", [
        prom(r("sitewatch_snmp_polls_total", "result"), "{{result}}"),
    ], (0, 21, 12, 8), ids, unit="ops", mn=0, stack=True, interval=None))
    p.append(timeseries("Rule events", [
        prom(r("sitewatch_rules_events_total", "rule, state"), "{{rule}} {{state}}"),
    ], (12, 21, 12, 8), ids, unit="ops", mn=0, interval=None))

    variables = [{
        "type": "query",
        "name": "instance",
        "label": "Instance",
        "datasource": PROM,
        "query": {"query": 'label_values(up{job="sitewatch"}, instance)', "refId": "V"},
        "definition": 'label_values(up{job="sitewatch"}, instance)',
        "refresh": 2,
        "sort": 1,
        "regex": "",
        "hide": 0,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "skipUrlSync": False,
    }]
    return dashboard("sitewatch-health", "sitewatch health",
                     "sitewatch's own metrics (Prometheus, scraped from [service] listen "
                     "/metrics): ingest rates, InfluxDB buffer and drops, SNMP polls, rules.",
                     p, variables, annotations=events_annotations(site_filter=False),
                     time_from="now-3h")


def main():
    os.makedirs(OUT, exist_ok=True)
    boards = {
        "facility-overview.json": overview(),
        "power.json": power(),
        "cooling.json": cooling(),
        "network-devices.json": network(),
        "alerts-events.json": alerts(),
        "alert-response.json": sla(),
        "sitewatch-health.json": health(),
    }
    for name, board in boards.items():
        with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
            json.dump(board, f, indent=2, ensure_ascii=False)
            f.write("\n")
        print("wrote", os.path.join("deploy/grafana/dashboards", name))


if __name__ == "__main__":
    main()

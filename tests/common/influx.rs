//! InfluxDB / VictoriaMetrics harness (in progress).

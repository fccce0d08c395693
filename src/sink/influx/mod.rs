//! InfluxDB writer (in progress).

//! Self-metrics and health (in progress).

//! Threshold rules (in progress).

//! Mosquitto harness (in progress).

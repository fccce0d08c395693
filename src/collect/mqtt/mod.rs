//! MQTT collector (in progress).

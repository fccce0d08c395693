//! SNMP collector (in progress).

//! Diagnostic events, emitted through `tracing` with the `tracing` feature and compiled
//! out without it. Never on the hit path: only failures, drops and contention.
//!
//! | event | level | fields |
//! |---|---|---|
//! | a store operation failed (the cache failed open) | `WARN` | `op`, `key`, `error` |
//! | a stored entry could not be decoded (it will be reloaded) | `WARN` | `op`, `key`, `error` |
//! | a loader panicked | `ERROR` | `key`, `panic` |
//! | a load ran past `load_timeout` | `WARN` | `key`, `timeout_ms` |
//! | a refresh was dropped: the queue was full | `WARN` | `key` |
//! | a refresh was skipped: another process holds the key's lock | `DEBUG` | `key` |
//! | a background refresh failed; the old value stays | `WARN` | `key` |
//!
//! All events have the target `echocache`.

#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

use std::time::Duration;

use crate::StoreError;

pub(crate) fn store_failed(op: &'static str, key: &str, err: &StoreError) {
    #[cfg(feature = "tracing")]
    {
        let error: &dyn std::error::Error = err;
        if err.is_decode() {
            tracing::warn!(target: "echocache", op, key, error, "stored entry could not be decoded; it will be reloaded");
        } else {
            tracing::warn!(target: "echocache", op, key, error, "store operation failed; the cache fails open");
        }
    }
}

pub(crate) fn loader_panicked(key: &str, message: &str) {
    #[cfg(feature = "tracing")]
    tracing::error!(target: "echocache", key, panic = message, "loader panicked");
}

pub(crate) fn load_timed_out(key: &str, timeout: Option<Duration>) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "echocache",
        key,
        timeout_ms = timeout.map(|t| t.as_millis() as u64),
        "load ran past load_timeout and was stopped"
    );
}

pub(crate) fn refresh_dropped(key: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "echocache", key, "refresh queue full; refresh dropped");
}

pub(crate) fn refresh_locked_out(key: &str) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "echocache", key, "refresh skipped: another process holds the key's lock");
}

pub(crate) fn refresh_failed(key: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "echocache", key, "background refresh failed; the old value stays");
}

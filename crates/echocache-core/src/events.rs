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
//! | the circuit breaker opened: the store is skipped | `WARN` | `failures`, `cool_down_ms` |
//! | the circuit breaker closed: the store answers again | `INFO` | |
//! | an entry's `written_at` lies beyond the clock-skew allowance (treated as expired) | `WARN` | `key` |
//! | a refresh's store lock could not be extended | `WARN` | `key` |
//! | the refresh dispatcher was restarted (its runtime had shut down) | `WARN` | |
//! | a refresh could not be queued: its runtime is gone and there is no other | `ERROR` | `key` |
//! | a load waited for another process's value past its bound and loads itself | `WARN` | `key`, `waited_ms` |
//! | `shutdown` stopped waiting for refreshes still running past its bound | `WARN` | `waited_ms` |
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

pub(crate) fn circuit_opened(failures: u32, cool_down: Duration) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "echocache",
        failures,
        cool_down_ms = cool_down.as_millis() as u64,
        "circuit breaker opened: the store is skipped until a probe finds it answering"
    );
}

pub(crate) fn circuit_closed() {
    #[cfg(feature = "tracing")]
    tracing::info!(target: "echocache", "circuit breaker closed: the store answers again");
}

pub(crate) fn future_dated(key: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "echocache", key, "entry written in the future beyond the clock-skew allowance; treated as expired");
}

pub(crate) fn refresh_lock_lost(key: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "echocache", key, "refresh lock could not be extended; another process may refresh this key too");
}

pub(crate) fn dispatcher_restarted() {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "echocache", "refresh dispatcher restarted on the current runtime (the cache's runtime had shut down)");
}

pub(crate) fn refresh_unschedulable(key: &str) {
    #[cfg(feature = "tracing")]
    tracing::error!(target: "echocache", key, "refresh dropped: the cache's runtime has shut down and no runtime is current");
}

pub(crate) fn shutdown_gave_up(waited: Duration) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "echocache", waited_ms = waited.as_millis() as u64, "shutdown stopped waiting for refreshes still running");
}

pub(crate) fn fleet_wait_gave_up(key: &str, waited: Duration) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "echocache", key, waited_ms = waited.as_millis() as u64, "another process's load of this key did not store a value in time; loading here");
}

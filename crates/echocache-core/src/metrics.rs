//! The `metrics` feature: a cache's counters, timings and gauges reported through the
//! [`metrics`](https://docs.rs/metrics) crate, labelled `cache = <name>`.
//!
//! - **Counters** (`echocache_<field>_total`, one per [`Stats`] field): a task of the cache
//!   sets them to the cache's own counts every [`METRICS_INTERVAL`] (`Counter::absolute`),
//!   so the hit path pays nothing for them.
//! - **Gauges**, set by the same task: `echocache_loads_in_flight` and
//!   `echocache_refreshes_pending` (`LazyEchoCache`'s refresh queue; 0 for `EchoCache`).
//! - **Histograms**, recorded as they happen: `echocache_load_duration_seconds` (every
//!   loader run, whatever its outcome) and `echocache_store_call_duration_seconds` with
//!   an `op` label (`get`, `set`, `remove`, `try_lock`, `unlock`, `extend_lock`,
//!   `get_versioned`, `set_if_version`; calls skipped by the open circuit breaker are not
//!   timed). Timing a call costs two clock reads: with a memory store that is most of a
//!   hit's cost, which is why nothing is timed unless the builder's `metrics` was called.
//!
//! Handles are taken from the recorder installed when the cache is built: install it
//! first (as the `metrics` crate asks of every library).

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::guard::StoreOp;
use crate::{BuildError, Stats};

/// How often a cache built with `metrics` sets its counters and gauges: 1 s.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

/// The histograms a cache records into as things happen.
pub(crate) struct Timings {
    load: Histogram,
    store_calls: [Histogram; StoreOp::ALL.len()],
}

impl Timings {
    pub(crate) fn new(cache: &Arc<str>) -> Self {
        describe();
        Self {
            load: metrics::histogram!("echocache_load_duration_seconds", "cache" => Arc::clone(cache)),
            store_calls: StoreOp::ALL.map(|op| {
                metrics::histogram!(
                    "echocache_store_call_duration_seconds",
                    "cache" => Arc::clone(cache),
                    "op" => op.name()
                )
            }),
        }
    }

    /// Times a loader run: recorded when the returned guard drops, so a load whose
    /// task is stopped (runtime shut down) is recorded too.
    pub(crate) fn time_load(&self) -> LoadTimer<'_> {
        LoadTimer {
            histogram: &self.load,
            started: Instant::now(),
        }
    }

    pub(crate) fn store_call(&self, op: StoreOp, started: Instant) {
        self.store_calls[op as usize].record(started.elapsed());
    }
}

/// Records the time since it was made into the load histogram when dropped.
pub(crate) struct LoadTimer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl Drop for LoadTimer<'_> {
    fn drop(&mut self) {
        self.histogram.record(self.started.elapsed());
    }
}

/// What the reporting task reads from a cache at each tick.
pub(crate) struct Sample {
    pub(crate) stats: Stats,
    pub(crate) loads_in_flight: usize,
    pub(crate) refreshes_pending: usize,
}

/// The counters and gauges of one cache, set from a [`Sample`].
struct Gauges {
    counters: Vec<(Counter, ReadField)>,
    loads_in_flight: Gauge,
    refreshes_pending: Gauge,
}

impl Gauges {
    fn new(cache: &Arc<str>) -> Self {
        let counters = FIELDS
            .iter()
            .map(|&(name, _, read)| {
                let counter = metrics::counter!(
                    format!("echocache_{name}_total"),
                    "cache" => Arc::clone(cache)
                );
                (counter, read)
            })
            .collect();
        Self {
            counters,
            loads_in_flight: metrics::gauge!("echocache_loads_in_flight", "cache" => Arc::clone(cache)),
            refreshes_pending: metrics::gauge!("echocache_refreshes_pending", "cache" => Arc::clone(cache)),
        }
    }

    fn set(&self, sample: &Sample) {
        for (counter, read) in &self.counters {
            counter.absolute(read(&sample.stats));
        }
        // Counts far below 2^52: exact as f64.
        self.loads_in_flight.set(sample.loads_in_flight as f64);
        self.refreshes_pending.set(sample.refreshes_pending as f64);
    }
}

/// What a builder's `metrics(name)` sets up: checked at `build`, then the histograms for
/// the cache's counters and the task that reports the rest.
pub(crate) struct Setup {
    name: Arc<str>,
    runtime: tokio::runtime::Handle,
}

impl Setup {
    /// Checks the builder's setting: a name that is not empty, a runtime for the task.
    pub(crate) fn new(name: Option<Arc<str>>) -> Result<Option<Self>, BuildError> {
        let Some(name) = name else {
            return Ok(None);
        };
        if name.is_empty() {
            return Err(BuildError::InvalidSetting {
                setting: "metrics",
                reason: "the cache name must not be empty",
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        Ok(Some(Self { name, runtime }))
    }

    /// The histograms to put in the cache's counters.
    pub(crate) fn timings(&self) -> Timings {
        Timings::new(&self.name)
    }

    /// Starts the task that sets the cache's counters and gauges now and every
    /// [`METRICS_INTERVAL`] until `sample` returns `None` (the cache is gone).
    pub(crate) fn start(self, sample: impl Fn() -> Option<Sample> + Send + 'static) {
        spawn_reporter(&self.runtime, &self.name, sample);
    }
}

fn spawn_reporter(
    runtime: &tokio::runtime::Handle,
    cache: &Arc<str>,
    sample: impl Fn() -> Option<Sample> + Send + 'static,
) {
    let gauges = Gauges::new(cache);
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(METRICS_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match sample() {
                Some(sample) => gauges.set(&sample),
                None => break,
            }
        }
    });
}

/// Reads one [`Stats`] field.
type ReadField = fn(&Stats) -> u64;

/// Every [`Stats`] field: its name, its description, how to read it.
type Field = (&'static str, &'static str, ReadField);

const FIELDS: &[Field] = &[
    (
        "hits",
        "fetches answered from the store with a fresh value",
        |s| s.hits,
    ),
    (
        "misses",
        "fetches that found no usable entry and loaded",
        |s| s.misses,
    ),
    (
        "stale_hits",
        "fetches answered with a stale value (refresh scheduled)",
        |s| s.stale_hits,
    ),
    ("loads", "loader runs started", |s| s.loads),
    ("load_errors", "loader runs that returned an error", |s| {
        s.load_errors
    }),
    ("loader_panics", "loader runs that panicked", |s| {
        s.loader_panics
    }),
    (
        "load_timeouts",
        "loader runs stopped by the load timeout",
        |s| s.load_timeouts,
    ),
    ("coalesced", "fetches that joined a running load", |s| {
        s.coalesced
    }),
    (
        "refreshes",
        "background refreshes that stored a new value",
        |s| s.refreshes,
    ),
    ("refresh_errors", "background refreshes that failed", |s| {
        s.refresh_errors
    }),
    (
        "refreshes_dropped",
        "refresh requests dropped on a full queue",
        |s| s.refreshes_dropped,
    ),
    (
        "refreshes_locked_out",
        "refreshes skipped: another process held the lock",
        |s| s.refreshes_locked_out,
    ),
    (
        "stale_if_error_served",
        "expired values served because the load failed",
        |s| s.stale_if_error_served,
    ),
    (
        "store_errors",
        "store calls that failed (the cache failed open)",
        |s| s.store_errors,
    ),
    (
        "decode_errors",
        "store reads whose bytes could not be decoded",
        |s| s.decode_errors,
    ),
    (
        "store_timeouts",
        "store calls given up after the store timeout",
        |s| s.store_timeouts,
    ),
    ("circuit_opens", "times the circuit breaker opened", |s| {
        s.circuit_opens
    }),
    (
        "store_calls_skipped",
        "store calls skipped by the open circuit breaker",
        |s| s.store_calls_skipped,
    ),
    (
        "future_dated_entries",
        "entries written too far in the future",
        |s| s.future_dated_entries,
    ),
    (
        "refresh_locks_lost",
        "refreshes whose store lock could not be extended",
        |s| s.refresh_locks_lost,
    ),
    (
        "refresh_dispatcher_restarts",
        "refresh dispatcher restarts on a new runtime",
        |s| s.refresh_dispatcher_restarts,
    ),
    (
        "fleet_waits",
        "loads answered by another process's load",
        |s| s.fleet_waits,
    ),
    (
        "fleet_wait_timeouts",
        "waits for another process's load given up",
        |s| s.fleet_wait_timeouts,
    ),
    (
        "stale_writes_refused",
        "loaded values not stored: the key changed meanwhile",
        |s| s.stale_writes_refused,
    ),
];

/// Describes every metric to the recorder (units and help texts).
fn describe() {
    for &(name, help, _) in FIELDS {
        metrics::describe_counter!(format!("echocache_{name}_total"), Unit::Count, help);
    }
    metrics::describe_histogram!(
        "echocache_load_duration_seconds",
        Unit::Seconds,
        "loader runs, whatever their outcome"
    );
    metrics::describe_histogram!(
        "echocache_store_call_duration_seconds",
        Unit::Seconds,
        "store calls the cache made, by kind (op)"
    );
    metrics::describe_gauge!(
        "echocache_loads_in_flight",
        Unit::Count,
        "loads running now"
    );
    metrics::describe_gauge!(
        "echocache_refreshes_pending",
        Unit::Count,
        "refreshes queued or running (LazyEchoCache)"
    );
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    #[test]
    fn every_stats_field_has_a_counter_that_reads_that_field() {
        // A `Stats` whose every field holds a different number, by name (through serde).
        let names: Vec<String> = serde_json::to_value(Stats::default())
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let numbered: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), serde_json::Value::from(i as u64 + 1)))
            .collect();
        let stats: Stats = serde_json::from_value(numbered.clone().into()).unwrap();
        assert_eq!(FIELDS.len(), names.len(), "one counter per field");
        for &(name, _, read) in FIELDS {
            assert_eq!(
                Some(read(&stats)),
                numbered.get(name).and_then(serde_json::Value::as_u64),
                "the counter `{name}` reads its own field"
            );
        }
    }
}

//! With the `metrics` feature, a cache built with `.metrics(name)` reports its counters,
//! gauges and timings through the `metrics` crate (seen here by its debugging recorder,
//! installed once for this test binary; each test uses its own cache name).
#![cfg(feature = "metrics")]

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use common::{Gate, Upstream, until};
use echocache_core::test_util::TestStore;
use echocache_core::{BuildError, EchoCache, Entry, LazyEchoCache, METRICS_INTERVAL, ManualClock};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    })
}

/// One metric of one cache: its name, its `op` label, its value (for a histogram, how
/// many values it has received so far).
type Metric = (String, Option<String>, Value);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Counter(u64),
    Gauge(f64),
    Recorded(usize),
}

/// What the recorder holds now for `cache`'s metrics. The debugging recorder hands out
/// each value once (a snapshot resets counters and gauges to 0 and empties histograms),
/// so the one test that reads it takes snapshots only after a report of the caches'
/// task, and adds up every snapshot's histogram values here, for every cache.
fn metrics_of(cache: &str) -> Vec<Metric> {
    /// (cache, name, `op` label, values so far) of every histogram seen.
    type Seen = (String, String, Option<String>, usize);
    static RECORDED: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
    let mut recorded = RECORDED.lock().unwrap();
    let mut out = Vec::new();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let (_, key): (MetricKind, _) = CompositeKey::into_parts(key);
        let label = |name: &str| {
            key.labels()
                .find(|l| l.key() == name)
                .map(|l| l.value().to_owned())
        };
        let (Some(of), op, name) = (label("cache"), label("op"), key.name().to_owned()) else {
            continue;
        };
        match value {
            DebugValue::Histogram(values) => {
                match recorded
                    .iter_mut()
                    .find(|(c, n, o, _)| *c == of && *n == name && *o == op)
                {
                    Some(entry) => entry.3 += values.len(),
                    None => recorded.push((of, name, op, values.len())),
                }
            }
            DebugValue::Counter(c) if of == cache => out.push((name, op, Value::Counter(c))),
            DebugValue::Gauge(g) if of == cache => {
                out.push((name, op, Value::Gauge(g.into_inner())));
            }
            _ => {}
        }
    }
    out.extend(
        recorded
            .iter()
            .filter(|(c, ..)| c == cache)
            .map(|(_, n, o, count)| (n.clone(), o.clone(), Value::Recorded(*count))),
    );
    out
}

fn find(all: &[Metric], name: &str, op: Option<&str>) -> Value {
    all.iter()
        .find(|(n, o, _)| n == name && o.as_deref() == op)
        .map(|m| m.2)
        .unwrap_or_else(|| panic!("no metric {name} {op:?} in {all:?}"))
}

fn counter(all: &[Metric], name: &str) -> u64 {
    match find(all, name, None) {
        Value::Counter(c) => c,
        other => panic!("{name} is {other:?}"),
    }
}

fn gauge(all: &[Metric], name: &str) -> f64 {
    match find(all, name, None) {
        Value::Gauge(g) => g,
        other => panic!("{name} is {other:?}"),
    }
}

/// How many values a histogram has received (`op`: its label, if any).
fn recorded(all: &[Metric], name: &str, op: Option<&str>) -> usize {
    match find(all, name, op) {
        Value::Recorded(n) => n,
        other => panic!("{name} is {other:?}"),
    }
}

/// One test reads the recorder (a snapshot resets what it reads, for every cache): the
/// scenarios run one after the other.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn counters_histograms_and_gauges_move_with_the_caches() {
    snapshotter();
    an_echo_cache_reports_what_it_does().await;
    a_lazy_cache_reports_its_refresh_queue().await;
}

async fn an_echo_cache_reports_what_it_does() {
    let cache = EchoCache::builder(TestStore::<String>::new())
        .metrics("metrics-echo")
        .build()
        .unwrap();
    let ok = || async { Ok::<_, Upstream>("v".to_string()) };
    assert_eq!(cache.fetch("a", ok).await.unwrap(), "v"); // miss, load, write
    assert_eq!(cache.fetch("a", ok).await.unwrap(), "v"); // hit
    let err = cache
        .fetch("b", || async { Err::<String, _>(Upstream("down")) })
        .await;
    assert!(err.is_err());

    // The histograms were recorded as it happened.
    let now = metrics_of("metrics-echo");
    assert_eq!(recorded(&now, "echocache_load_duration_seconds", None), 2);
    let store = "echocache_store_call_duration_seconds";
    assert_eq!(recorded(&now, store, Some("get")), 3, "{now:?}");
    // The misses took the fleet lock and wrote conditionally (TestStore shares locks).
    assert_eq!(recorded(&now, store, Some("try_lock")), 2, "{now:?}");
    assert_eq!(recorded(&now, store, Some("set_if_version")), 1, "{now:?}");
    // The counters are set by the reporting task, every METRICS_INTERVAL.
    tokio::time::sleep(METRICS_INTERVAL + Duration::from_millis(10)).await;
    let later = metrics_of("metrics-echo");
    assert_eq!(counter(&later, "echocache_hits_total"), 1);
    assert_eq!(counter(&later, "echocache_misses_total"), 2);
    assert_eq!(counter(&later, "echocache_loads_total"), 2);
    assert_eq!(counter(&later, "echocache_load_errors_total"), 1);
    assert_eq!(counter(&later, "echocache_stale_hits_total"), 0);
    assert_eq!(gauge(&later, "echocache_loads_in_flight"), 0.0);
    assert_eq!(gauge(&later, "echocache_refreshes_pending"), 0.0);
    assert_eq!(
        recorded(&later, "echocache_load_duration_seconds", None),
        2,
        "nothing loaded since"
    );
}

async fn a_lazy_cache_reports_its_refresh_queue() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let store = TestStore::<String>::new();
    store.put("k", Entry::new("old".to_string(), clock.now()));
    let cache = LazyEchoCache::builder(store)
        .refresh_after(Duration::from_secs(10))
        .clock(clock.clone())
        .metrics("metrics-lazy")
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(11));
    let gate = Gate::closed();
    let held = gate.clone();
    let served = cache
        .fetch("k", move || async move {
            held.pass().await;
            Ok::<_, Upstream>("new".to_string())
        })
        .await
        .unwrap();
    assert_eq!(served, "old", "a stale hit");
    until("the refresh is pending", || cache.refreshes_pending() == 1).await;

    tokio::time::sleep(METRICS_INTERVAL + Duration::from_millis(10)).await;
    let during = metrics_of("metrics-lazy");
    assert_eq!(counter(&during, "echocache_stale_hits_total"), 1);
    assert_eq!(gauge(&during, "echocache_refreshes_pending"), 1.0);
    assert_eq!(gauge(&during, "echocache_loads_in_flight"), 1.0);

    gate.open();
    until("the refresh is done", || cache.refreshes_pending() == 0).await;
    tokio::time::sleep(METRICS_INTERVAL).await;
    let after = metrics_of("metrics-lazy");
    assert_eq!(
        counter(&after, "echocache_refreshes_total"),
        1,
        "{:?}",
        cache.stats()
    );
    assert_eq!(gauge(&after, "echocache_refreshes_pending"), 0.0);
    assert_eq!(gauge(&after, "echocache_loads_in_flight"), 0.0);
    assert_eq!(recorded(&after, "echocache_load_duration_seconds", None), 1);
    assert!(
        recorded(
            &after,
            "echocache_store_call_duration_seconds",
            Some("try_lock")
        ) >= 1
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_empty_name_is_refused() {
    let err = EchoCache::<String, _>::builder(TestStore::new())
        .metrics("")
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting `metrics`: the cache name must not be empty"
    );
}

#[test]
fn metrics_need_a_runtime_to_report_from() {
    let err = EchoCache::<String, _>::builder(TestStore::new())
        .metrics("no-runtime")
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::NoRuntime), "{err}");
    // Without metrics, an EchoCache needs no runtime to be built.
    assert!(
        EchoCache::<String, _>::builder(TestStore::new())
            .build()
            .is_ok()
    );
}

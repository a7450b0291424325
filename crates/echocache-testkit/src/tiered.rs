//! Tiered-store scenarios every backplane runs: caches over `TieredStore`s on clients of
//! their own (separate "processes") sharing one server. Each takes a function that makes a
//! tiered store on new clients each call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use echocache_core::{Backplane, EchoCache, Store, TieredStore};
use tokio::time::Instant;

use crate::{OwnServer, eventually};

/// A write that returned: its version and when.
#[derive(Clone, Copy, Debug)]
struct Returned {
    version: u64,
    at: Instant,
}

/// The source of truth and the log the checker reads.
struct Truth {
    next: AtomicU64,
    /// Writes of one key go one at a time, so that the order they return in is the order
    /// of their versions (two racing inserts would otherwise land in either order).
    writing: Vec<tokio::sync::Mutex<()>>,
    /// Per key, the writes (`insert`, `invalidate`) that returned.
    returned: Mutex<HashMap<usize, Vec<Returned>>>,
}

impl Truth {
    fn new(keys: usize) -> Self {
        Self {
            next: AtomicU64::new(0),
            writing: (0..keys).map(|_| tokio::sync::Mutex::new(())).collect(),
            returned: Mutex::default(),
        }
    }

    fn version(&self) -> u64 {
        self.next.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn returned(&self, key: usize, version: u64) {
        self.returned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .push(Returned {
                version,
                at: Instant::now(),
            });
    }

    /// When the first write of `key` newer than `version` returned, if one did before
    /// `before`: since then a read of `version` is stale.
    fn stale_since(&self, key: usize, version: u64, before: Instant) -> Option<Instant> {
        self.returned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)?
            .iter()
            .filter(|r| r.at < before && r.version > version)
            .map(|r| r.at)
            .min()
    }

    /// The newest write of `key` that returned before `before`.
    fn newest_before(&self, key: usize, before: Instant) -> Option<u64> {
        self.returned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)?
            .iter()
            .filter(|r| r.at < before)
            .map(|r| r.version)
            .max()
    }
}

/// What the coherence run saw.
#[derive(Debug, Default)]
pub struct Coherence {
    /// Values served by `fetch` / `get`.
    pub served: u64,
    /// Values served after the fault's recovery time (all of them without a fault).
    pub served_after_recovery: u64,
    /// For every value served that a newer write, returned before the read began, had
    /// replaced: how long before the read that write had returned. The propagation delay
    /// as readers see it (a read begun within it may still see the old value).
    pub lags: Vec<Duration>,
    /// Values older than a write that had returned more than the bound before the read
    /// began, on any cache.
    pub violations: Vec<String>,
    /// Each cache's counters at the end.
    pub stats: Vec<echocache_core::Stats>,
}

impl Coherence {
    /// `(p50, p99, max)` of the stale reads' lags; zeros when no read was stale.
    pub fn lag_percentiles(&self) -> (Duration, Duration, Duration) {
        let mut lags = self.lags.clone();
        lags.sort_unstable();
        let at = |q: f64| {
            lags.get(((lags.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        (at(0.5), at(0.99), lags.last().copied().unwrap_or_default())
    }
}

/// A server fault in the middle of a coherence run: killed `kill_at` into it, started
/// again `down_for` later. Reads begun from the kill until `recovery` after the restart
/// are held to `bound_during` (the L1 TTL) instead of the run's bound; the others to the
/// run's bound, so the run also checks that coherence comes back with no user action.
#[derive(Debug)]
pub struct Fault<'a> {
    /// The server the stores use.
    pub server: &'a mut OwnServer,
    /// When the server is killed, from the start of the run.
    pub kill_at: Duration,
    /// How long it stays down.
    pub down_for: Duration,
    /// How long after the restart the looser bound still applies.
    pub recovery: Duration,
    /// The bound meanwhile.
    pub bound_during: Duration,
}

/// The outage window, once known: reads begun in it get the looser bound.
#[derive(Default)]
struct Window {
    killed: Option<Instant>,
    recovered: Option<Instant>,
}

impl Window {
    fn in_outage(&self, began: Instant) -> bool {
        match (self.killed, self.recovered) {
            (Some(killed), None) => began >= killed,
            (Some(killed), Some(recovered)) => began >= killed && began < recovered,
            _ => false,
        }
    }

    fn after_recovery(&self, began: Instant) -> bool {
        self.recovered.is_some_and(|r| began >= r)
    }
}

/// `caches` caches over tiered stores on clients of their own, random `insert` /
/// `invalidate` / `fetch` / `get` on `keys` keys from `tasks` tasks for `run`: every value
/// served is checked against the writes that had returned more than `bound` before the
/// read began, on any cache. Values are versions from one counter, so "older" is exact.
/// With a [`Fault`], the server is killed and restarted during the run.
pub async fn values_are_never_older_than_the_bound<S, F, Fut>(
    make: F,
    caches: usize,
    keys: usize,
    tasks: usize,
    run: Duration,
    bound: Duration,
    fault: Option<Fault<'_>>,
) -> Coherence
where
    S: Store<String>,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let mut fleet = Vec::new();
    for _ in 0..caches {
        fleet.push(EchoCache::new(make().await));
    }
    // Let the backplanes subscribe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let truth = Arc::new(Truth::new(keys));
    let fleet = Arc::new(fleet);
    let window = Arc::new(Mutex::new(Window::default()));
    let bound_during = fault.as_ref().map_or(bound, |f| f.bound_during);
    let fault_free = fault.is_none();
    let started = Instant::now();
    let deadline = started + run;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (truth, fleet) = (Arc::clone(&truth), Arc::clone(&fleet));
        let window = Arc::clone(&window);
        handles.push(tokio::spawn(async move {
            let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (t as u64 + 1);
            let mut next = move |n: usize| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % n as u64) as usize
            };
            let mut out = Coherence::default();
            while Instant::now() < deadline {
                // Answers from memory (L1 hits, an open breaker) never make a task wait:
                // without a yield, 8 tasks on 2 workers starve the timers and the server
                // restart of this very run.
                tokio::task::yield_now().await;
                let key = next(keys);
                let name = format!("k{key}");
                let cache = &fleet[next(fleet.len())];
                let roll = next(100);
                let began = Instant::now();
                let served = if roll < 5 {
                    let _one_at_a_time = truth.writing[key].lock().await;
                    let v = truth.version();
                    if cache.insert(&name, v.to_string()).await.is_ok() {
                        truth.returned(key, v);
                    }
                    None
                } else if roll < 10 {
                    let _one_at_a_time = truth.writing[key].lock().await;
                    let v = truth.version();
                    if cache.invalidate(&name).await.is_ok() {
                        truth.returned(key, v);
                    }
                    None
                } else if roll < 20 {
                    cache.get(&name).await.ok().flatten()
                } else {
                    let truth = Arc::clone(&truth);
                    cache
                        .fetch(&name, move || async move {
                            Ok::<_, std::io::Error>(truth.version().to_string())
                        })
                        .await
                        .ok()
                };
                let Some(value) = served else { continue };
                out.served += 1;
                let version: u64 = value.parse().expect("a version");
                let (in_outage, recovered) = {
                    let window = window
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    (window.in_outage(began), window.after_recovery(began))
                };
                if recovered || fault_free {
                    out.served_after_recovery += 1;
                }
                if let Some(since) = truth.stale_since(key, version, began) {
                    out.lags.push(began - since);
                }
                let bound = if in_outage { bound_during } else { bound };
                if let Some(newest) = began
                    .checked_sub(bound)
                    .and_then(|before| truth.newest_before(key, before))
                    && version < newest
                    && out.violations.len() < 10
                {
                    out.violations.push(format!(
                        "k{key}: served v{version} in a read begun {bound:?} after \
                         v{newest} had returned (outage: {in_outage})"
                    ));
                }
            }
            out
        }));
    }
    if let Some(fault) = fault {
        tokio::time::sleep_until(started + fault.kill_at).await;
        // Killing and starting a server block (a wait for the process, a poll until the
        // server answers): off the runtime's worker, or the load tasks queued on it stall.
        tokio::task::block_in_place(|| fault.server.kill());
        window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .killed = Some(Instant::now());
        tokio::time::sleep(fault.down_for).await;
        tokio::task::block_in_place(|| fault.server.restart());
        window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recovered = Some(Instant::now() + fault.recovery);
    }
    for h in &handles {
        while !h.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut all = Coherence {
        stats: fleet.iter().map(EchoCache::stats).collect(),
        ..Coherence::default()
    };
    for h in handles {
        let part = h.await.expect("a task panicked");
        all.served += part.served;
        all.served_after_recovery += part.served_after_recovery;
        all.lags.extend(part.lags);
        all.violations.extend(part.violations);
    }
    all
}

/// `store` once its backplane has subscribed and its L1 serves (bounded: 5 s), so that a
/// test's first write is announced to it.
///
/// # Panics
///
/// When the backplane did not subscribe within 5 s.
pub async fn subscribed<V, L1, L2, B: Backplane>(
    store: TieredStore<V, L1, L2, B>,
) -> TieredStore<V, L1, L2, B> {
    eventually("the backplane subscribes", Duration::from_secs(5), || {
        let serving = store.is_l1_serving();
        async move { serving.then_some(()) }
    })
    .await;
    store
}

/// The fleet guarantees (issue 15) through tiered stores, for both cache kinds: a load
/// never lands over another process's write, a cold key is loaded once across processes.
/// `store(prefix)` makes a tiered store on clients of its own (another "process").
pub async fn fleet_guarantees_hold<S, F, Fut>(store: F)
where
    S: Store<String>,
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = S>,
{
    for kind in crate::fleet::CacheKind::ALL {
        crate::fleet::a_load_never_lands_over_another_process_write(kind, &store, 50).await;
        crate::fleet::a_cold_key_is_loaded_once_across_processes(kind, &store, 3, 10, 50).await;
    }
}

/// The bound of the coherence runs: far above the backplane's delay on loopback (p99
/// ≈1 ms, docs/benchmarks.md), so that a busy CI machine does not fail the run; a
/// backplane that delivers nothing fails it by seconds.
pub const COHERENCE_BOUND: Duration = Duration::from_millis(250);

/// [`values_are_never_older_than_the_bound`] as every backplane runs it: 4 caches, 100
/// keys, 8 tasks, 20 s, [`COHERENCE_BOUND`]. Asserts that the run served values and none
/// was older than the bound; prints the lags of the stale reads.
pub async fn assert_coherent<S, F, Fut>(make: F)
where
    S: Store<String>,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let seen = values_are_never_older_than_the_bound(
        make,
        4,
        100,
        8,
        Duration::from_secs(20),
        COHERENCE_BOUND,
        None,
    )
    .await;
    report("coherence", &seen);
    assert!(
        seen.served > 1_000,
        "the run served values: {}",
        seen.served
    );
    assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
}

/// The same run with the server killed 6 s in and started again 2 s later, over stores
/// whose L1 TTL is `l1_ttl` (make them so): no value served is older than the L1 TTL
/// (plus the bound) during the outage and the 5 s after the restart, and after that the
/// usual bound holds again, with no user action.
pub async fn assert_coherent_through_a_restart<S, F, Fut>(
    server: &mut OwnServer,
    l1_ttl: Duration,
    make: F,
) where
    S: Store<String>,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let fault = Fault {
        server,
        kill_at: Duration::from_secs(6),
        down_for: Duration::from_secs(2),
        recovery: Duration::from_secs(5),
        bound_during: l1_ttl + COHERENCE_BOUND,
    };
    let seen = values_are_never_older_than_the_bound(
        make,
        4,
        100,
        8,
        Duration::from_secs(20),
        COHERENCE_BOUND,
        Some(fault),
    )
    .await;
    report("coherence through a restart", &seen);
    assert!(
        seen.served > 1_000,
        "the run served values: {}",
        seen.served
    );
    assert!(
        seen.served_after_recovery > 500,
        "coherence came back: {} values served after the recovery",
        seen.served_after_recovery
    );
    assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
}

fn report(what: &str, seen: &Coherence) {
    for (i, s) in seen.stats.iter().enumerate() {
        eprintln!(
            "cache {i}: hits {}, misses {}, loads {}, fleet waits {} ({} timed out), store \
             errors {}, timeouts {}, breaker opened {} times, calls skipped {}",
            s.hits,
            s.misses,
            s.loads,
            s.fleet_waits,
            s.fleet_wait_timeouts,
            s.store_errors,
            s.store_timeouts,
            s.circuit_opens,
            s.store_calls_skipped
        );
    }
    let (p50, p99, max) = seen.lag_percentiles();
    eprintln!(
        "{what}: {} values served ({} after recovery), {} stale (lag p50 {p50:?}, p99 \
         {p99:?}, max {max:?}), {} beyond the bound",
        seen.served,
        seen.served_after_recovery,
        seen.lags.len(),
        seen.violations.len()
    );
}

/// A cache over a tiered store holds `k` in its L1; the server is killed and started
/// again, and another process writes a new value straight into L2, announcing nothing (A
/// could not have heard it anyway while its connection was down). A sees the new value
/// within 5 s, though its L1 TTL is a minute: its backplane noticed the lost connection,
/// and on reconnecting dropped what its L1 held.
pub async fn l1_copies_are_dropped_when_the_backplane_reconnects<T, S, F, FutT, G, FutS>(
    server: &mut OwnServer,
    tiered: F,
    plain: G,
) where
    T: Store<String>,
    S: Store<String>,
    F: Fn(String) -> FutT,
    FutT: Future<Output = T>,
    G: Fn(String) -> FutS,
    FutS: Future<Output = S>,
{
    let a = EchoCache::new(tiered(server.url()).await);
    let other = plain(server.url()).await;
    let write = |v: &'static str| {
        let other = &other;
        async move {
            other
                .set(
                    "k",
                    &echocache_core::Entry::new(v.to_owned(), std::time::SystemTime::now()),
                )
                .await
                .ok()
        }
    };
    write("v1").await.expect("the first write");
    eventually("A holds v1 in its L1", Duration::from_secs(5), || {
        let a = a.clone();
        async move { (a.get("k").await.ok()?.as_deref() == Some("v1")).then_some(()) }
    })
    .await;
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some("v1"));
    server.restart();
    eventually(
        "the other process writes v2 after the restart",
        Duration::from_secs(10),
        || write("v2"),
    )
    .await;
    let (_, took) = eventually(
        "A sees v2 (its L1 copy of v1 dropped)",
        Duration::from_secs(5),
        || {
            let a = a.clone();
            async move { (a.get("k").await.ok()?.as_deref() == Some("v2")).then_some(()) }
        },
    )
    .await;
    eprintln!("A saw the unannounced write {took:?} after it returned");
}

//! Tiered-store scenarios every backplane runs: caches over `TieredStore`s on clients of
//! their own (separate "processes") sharing one server. Each takes a function that makes a
//! tiered store on new clients each call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use echocache_core::{EchoCache, Store};
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
    /// Values older than a write that had returned more than the bound before the read
    /// began, on any cache.
    pub violations: Vec<String>,
}

/// `caches` caches over tiered stores on clients of their own, random `insert` /
/// `invalidate` / `fetch` / `get` on `keys` keys from `tasks` tasks for `run`: every value
/// served is checked against the writes that had returned more than `bound` before the
/// read began, on any cache. Values are versions from one counter, so "older" is exact.
pub async fn values_are_never_older_than_the_bound<S, F, Fut>(
    make: F,
    caches: usize,
    keys: usize,
    tasks: usize,
    run: Duration,
    bound: Duration,
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
    let deadline = Instant::now() + run;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (truth, fleet) = (Arc::clone(&truth), Arc::clone(&fleet));
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
                if let Some(newest) = began
                    .checked_sub(bound)
                    .and_then(|before| truth.newest_before(key, before))
                    && version < newest
                    && out.violations.len() < 10
                {
                    out.violations.push(format!(
                        "k{key}: served v{version} in a read begun {:?} after v{newest} \
                         had returned",
                        bound
                    ));
                }
            }
            out
        }));
    }
    let mut all = Coherence::default();
    for h in handles {
        let part = h.await.expect("a task panicked");
        all.served += part.served;
        all.violations.extend(part.violations);
    }
    all
}

/// [`values_are_never_older_than_the_bound`] as every backplane runs it: 4 caches, 100
/// keys, 8 tasks, 3 s, a bound of 250 ms (far above the backplane's delay on loopback, so
/// that a busy CI machine does not fail the run; a backplane that delivers nothing fails it
/// by seconds). Asserts that the run served values and none was older than the bound.
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
        Duration::from_secs(3),
        Duration::from_millis(250),
    )
    .await;
    eprintln!("{} values served", seen.served);
    assert!(
        seen.served > 1_000,
        "the run served values: {}",
        seen.served
    );
    assert!(seen.violations.is_empty(), "{:#?}", seen.violations);
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

//! `TieredStore`: an L1 in front of a shared L2, coherent through a backplane. Here the
//! L2 is a `TestStore` shared by every "process" and the backplane an in-process
//! `LocalBus`; the Redis and NATS backplanes run the same checks against real servers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use echocache_core::test_util::{LocalBus, LocalNode, TestStore};
use echocache_core::{EchoCache, Entry, L1Entry, MAX_L1_TTL, ManualClock, Store, TieredStore};
use tokio::sync::Notify;

type L1 = TestStore<L1Entry<String>>;
type Tiered<L2> = TieredStore<String, L1, L2, LocalNode>;

fn node<L2: Store<String>>(l2: L2, bus: &LocalBus) -> Tiered<L2> {
    TieredStore::new(TestStore::new(), l2, bus.node())
}

fn entry(v: &str) -> Entry<String> {
    Entry::new(v.to_owned(), SystemTime::now())
}

async fn value<S: Store<String>>(store: &S, key: &str) -> Option<String> {
    store.get(key).await.unwrap().map(|e| e.value)
}

#[tokio::test]
async fn a_hit_comes_from_l1_with_the_l2_entry_as_it_was() {
    let l2 = TestStore::<String>::new();
    let written_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    l2.put("k", Entry::new("v".to_owned(), written_at));
    let a = node(l2.clone(), &LocalBus::new());
    assert_eq!(a.get("k").await.unwrap().unwrap().written_at, written_at);
    let reads = l2.gets.load(Ordering::SeqCst);
    for _ in 0..10 {
        let hit = a.get("k").await.unwrap().unwrap();
        assert_eq!(
            (hit.value.as_str(), hit.written_at),
            ("v", written_at),
            "L2's entry as is: ages stay fleet-wide"
        );
    }
    assert_eq!(l2.gets.load(Ordering::SeqCst), reads, "served from L1");
}

#[tokio::test]
async fn another_process_write_or_removal_reaches_this_l1() {
    let l2 = TestStore::<String>::new();
    let bus = LocalBus::new();
    let (a, b) = (node(l2.clone(), &bus), node(l2.clone(), &bus));
    b.set("k", &entry("v1")).await.unwrap();
    assert_eq!(
        value(&a, "k").await.as_deref(),
        Some("v1"),
        "A's L1 holds v1"
    );
    b.set("k", &entry("v2")).await.unwrap();
    assert_eq!(value(&a, "k").await.as_deref(), Some("v2"));
    b.remove("k").await.unwrap();
    assert_eq!(value(&a, "k").await, None);
    // This process's own writes need no echo.
    a.set("k", &entry("v3")).await.unwrap();
    assert_eq!(value(&a, "k").await.as_deref(), Some("v3"));
    assert_eq!(value(&b, "k").await.as_deref(), Some("v3"));
}

/// An L2 whose `get` can be held, with the value already read, until released: the
/// window between a read of L2 and the L1 fill that follows it.
#[derive(Clone)]
struct GatedL2 {
    inner: TestStore<String>,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    armed: std::sync::atomic::AtomicBool,
    reached: Notify,
    release: Notify,
}

impl Store<String> for GatedL2 {
    async fn get(&self, key: &str) -> Result<Option<Entry<String>>, echocache_core::StoreError> {
        let read = self.inner.get(key).await;
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            let released = self.gate.release.notified();
            self.gate.reached.notify_one();
            released.await;
        }
        read
    }

    async fn set(
        &self,
        key: &str,
        entry: &Entry<String>,
    ) -> Result<(), echocache_core::StoreError> {
        self.inner.set(key, entry).await
    }

    async fn remove(&self, key: &str) -> Result<(), echocache_core::StoreError> {
        self.inner.remove(key).await
    }

    async fn try_lock(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<echocache_core::LockToken>, echocache_core::StoreError> {
        self.inner.try_lock(key, ttl).await
    }

    async fn unlock(
        &self,
        key: &str,
        token: &echocache_core::LockToken,
    ) -> Result<(), echocache_core::StoreError> {
        self.inner.unlock(key, token).await
    }
}

#[tokio::test]
async fn an_l2_read_from_before_an_invalidation_never_fills_l1_for_later_reads() {
    let l2 = TestStore::<String>::new();
    l2.put("k", entry("old"));
    let gate = Arc::new(Gate::default());
    let bus = LocalBus::new();
    let a = Arc::new(node(
        GatedL2 {
            inner: l2.clone(),
            gate: Arc::clone(&gate),
        },
        &bus,
    ));
    let b = node(l2.clone(), &bus);

    // A reads L2 ("old") and is held before filling its L1.
    gate.armed.store(true, Ordering::SeqCst);
    let reached = gate.reached.notified();
    let read = tokio::spawn({
        let a = Arc::clone(&a);
        async move { value(&*a, "k").await }
    });
    reached.await;
    // Meanwhile B writes, and its announcement reaches A.
    b.set("k", &entry("new")).await.unwrap();
    gate.release.notify_one();
    assert_eq!(
        read.await.unwrap().as_deref(),
        Some("old"),
        "the read began before the write"
    );
    // A's fill (with "old") happened after the announcement: it must not be served.
    assert_eq!(value(&*a, "k").await.as_deref(), Some("new"));
    assert_eq!(value(&*a, "k").await.as_deref(), Some("new"));
}

#[tokio::test]
async fn a_lost_connection_stops_l1_and_a_new_one_drops_what_it_held() {
    let l2 = TestStore::<String>::new();
    let bus = LocalBus::new();
    let a = node(l2.clone(), &bus);
    let b = node(l2.clone(), &bus);
    b.set("k", &entry("v1")).await.unwrap();
    assert_eq!(value(&a, "k").await.as_deref(), Some("v1"));

    // A's connection drops (noticed): A reads L2 every time.
    a.backplane().set_connected(false);
    assert!(!a.is_l1_serving());
    b.set("k", &entry("v2")).await.unwrap(); // A misses this announcement
    let reads = l2.gets.load(Ordering::SeqCst);
    assert_eq!(value(&a, "k").await.as_deref(), Some("v2"));
    assert_eq!(value(&a, "k").await.as_deref(), Some("v2"));
    assert_eq!(
        l2.gets.load(Ordering::SeqCst),
        reads + 2,
        "no L1 while down"
    );

    // Back: L1 serves again, nothing from before the reconnect.
    a.backplane().set_connected(true);
    assert!(a.is_l1_serving());
    assert_eq!(value(&a, "k").await.as_deref(), Some("v2"));
    let reads = l2.gets.load(Ordering::SeqCst);
    assert_eq!(value(&a, "k").await.as_deref(), Some("v2"));
    assert_eq!(l2.gets.load(Ordering::SeqCst), reads, "L1 again");
}

#[tokio::test]
async fn the_l1_ttl_bounds_a_copy_whose_announcement_was_lost_unnoticed() {
    let l2 = TestStore::<String>::new();
    let bus = LocalBus::new();
    let clock = ManualClock::new(SystemTime::now());
    let a = TieredStore::new(TestStore::new(), l2.clone(), bus.node())
        .l1_ttl(Duration::from_secs(5))
        .clock(clock.clone());
    let b = node(l2.clone(), &bus);
    b.set("k", &entry("v1")).await.unwrap();
    assert_eq!(value(&a, "k").await.as_deref(), Some("v1"));
    a.backplane().lose_messages_silently();
    b.set("k", &entry("v2")).await.unwrap();
    assert_eq!(
        value(&a, "k").await.as_deref(),
        Some("v1"),
        "a lost announcement: A serves its copy"
    );
    clock.advance(Duration::from_secs(4));
    assert_eq!(
        value(&a, "k").await.as_deref(),
        Some("v1"),
        "within the L1 TTL"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        value(&a, "k").await.as_deref(),
        Some("v2"),
        "but not past the L1 TTL"
    );
}

#[tokio::test]
async fn an_l1_ttl_beyond_the_clock_is_taken_as_the_longest_one() {
    // `Duration::MAX` used to overflow the clock's time when a copy was filled (a panic).
    let l2 = TestStore::<String>::new();
    let bus = LocalBus::new();
    let clock = ManualClock::new(SystemTime::now());
    let a = TieredStore::new(TestStore::new(), l2.clone(), bus.node())
        .l1_ttl(Duration::MAX)
        .clock(clock.clone());
    l2.put("k", entry("v1"));
    assert_eq!(value(&a, "k").await.as_deref(), Some("v1"));
    a.backplane().lose_messages_silently();
    l2.put("k", entry("v2"));
    clock.advance(MAX_L1_TTL - Duration::from_secs(1));
    assert_eq!(
        value(&a, "k").await.as_deref(),
        Some("v1"),
        "served from L1"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        value(&a, "k").await.as_deref(),
        Some("v2"),
        "for MAX_L1_TTL"
    );
}

#[tokio::test]
async fn caches_over_tiered_stores_see_each_other_writes() {
    let l2 = TestStore::<String>::new();
    let bus = LocalBus::new();
    let a = EchoCache::new(node(l2.clone(), &bus));
    let b = EchoCache::new(node(l2.clone(), &bus));
    let v = a
        .fetch("k", || async {
            Ok::<_, std::io::Error>("loaded".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(v, "loaded");
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some("loaded"));
    b.insert("k", "newer".to_owned()).await.unwrap();
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some("newer"));
    a.invalidate("k").await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    assert!(
        a.store().backplane().published.load(Ordering::SeqCst) >= 2,
        "the load's write and the invalidation were announced"
    );
}

#[tokio::test]
async fn a_background_refresh_in_one_process_reaches_the_l1_of_another() {
    let l2 = TestStore::<String>::new();
    let bus = LocalBus::new();
    let clock = ManualClock::new(SystemTime::now());
    let a = echocache_core::LazyEchoCache::builder(node(l2.clone(), &bus))
        .refresh_after(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let b = node(l2.clone(), &bus);
    l2.put("k", Entry::new("old".to_owned(), clock.now()));
    assert_eq!(value(&b, "k").await.as_deref(), Some("old"), "in B's L1");
    clock.advance(Duration::from_secs(2));
    let stale = a
        .fetch("k", || async {
            Ok::<_, std::io::Error>("refreshed".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(
        stale, "old",
        "a stale hit; the refresh runs in the background"
    );
    for _ in 0..1_000 {
        if a.stats().refreshes == 1 && a.refreshes_pending() == 0 && a.loads_in_flight() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(a.stats().refreshes, 1, "{:?}", a.stats());
    assert_eq!(
        value(&b, "k").await.as_deref(),
        Some("refreshed"),
        "A's refresh was announced: B dropped its copy"
    );
    a.shutdown().await;
}

/// Process B waits (fleet single-flight) for process A's load of a cold key. Over tiered
/// stores, B reads A's value the moment A's write is announced, not at its next poll
/// (which, 400 ms into the wait, is up to 50 ms away). Paused time: "the moment" is exact.
#[tokio::test(start_paused = true)]
async fn a_fleet_waiter_reads_the_value_when_the_holder_write_is_announced() {
    let l2 = TestStore::<String>::new();
    let bus = LocalBus::new();
    let a = EchoCache::new(node(l2.clone(), &bus));
    let b = EchoCache::new(node(l2.clone(), &bus));
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let holder = tokio::spawn({
        let a = a.clone();
        async move {
            let v = a
                .fetch("k", move || async move {
                    let _ = started_tx.send(());
                    tokio::time::sleep(Duration::from_millis(403)).await;
                    Ok::<_, std::io::Error>("from A".to_owned())
                })
                .await;
            (v, tokio::time::Instant::now())
        }
    });
    started.await.unwrap();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            let v = b
                .fetch("k", || async {
                    Ok::<_, std::io::Error>("from B".to_owned())
                })
                .await;
            (v, tokio::time::Instant::now())
        }
    });
    let ((va, a_done), (vb, b_done)) = (holder.await.unwrap(), waiter.await.unwrap());
    assert_eq!(va.unwrap(), "from A");
    assert_eq!(vb.unwrap(), "from A", "B waited for A's value");
    assert_eq!(
        b_done.saturating_duration_since(a_done),
        Duration::ZERO,
        "B read it when A's write was announced"
    );
    assert_eq!(b.stats().fleet_waits, 1, "{:?}", b.stats());
}

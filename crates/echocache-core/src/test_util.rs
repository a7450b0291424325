//! Test helpers (feature `test-util`): the [`Store`] conformance checks every backend runs
//! from its `tests/conformance.rs`, and small stores for tests of the caches.
//!
//! The checks assert with `assert!`: they are meant for test code only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::{Entry, LockToken, Store, StoreError};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_700_000_000 + secs)
        + Duration::from_nanos(123_456_789)
}

/// Checks get / set / remove on an empty `store`, using keys that start with `ns`.
///
/// `written_at` must round-trip to the millisecond at least.
pub async fn check_data_ops<S: Store<String>>(store: &S, ns: &str) {
    let k1 = format!("{ns}conf-a");
    let k2 = format!("{ns}conf-b");
    assert!(
        store.get(&k1).await.expect("get missing").is_none(),
        "a missing key reads as None"
    );
    store
        .set(&k1, &Entry::new("one".into(), at(1)))
        .await
        .expect("set");
    let got = store
        .get(&k1)
        .await
        .expect("get")
        .expect("the entry just set");
    assert_eq!(got.value, "one");
    let skew = got
        .written_at
        .duration_since(at(1))
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_millis(1),
        "written_at round-trips: {skew:?} off"
    );
    assert!(
        store.get(&k2).await.expect("get other").is_none(),
        "keys are distinct"
    );
    store
        .set(&k1, &Entry::new("two".into(), at(2)))
        .await
        .expect("overwrite");
    assert_eq!(
        store.get(&k1).await.expect("get").expect("entry").value,
        "two"
    );
    store.remove(&k1).await.expect("remove");
    assert!(
        store.get(&k1).await.expect("get removed").is_none(),
        "a removed key reads as None"
    );
    store
        .remove(&k1)
        .await
        .expect("removing a missing key is not an error");
    let odd = format!("{ns}spaces and * > . : ünï/\u{2603}");
    store
        .set(&odd, &Entry::new("odd".into(), at(3)))
        .await
        .expect("set odd key");
    assert_eq!(
        store
            .get(&odd)
            .await
            .expect("get odd")
            .expect("odd entry")
            .value,
        "odd"
    );
    store.remove(&odd).await.expect("remove odd");
}

/// Checks that the lock excludes: a second `try_lock` fails while held, `unlock` with a
/// foreign token leaves it, `unlock` with the owner's token frees it.
pub async fn check_exclusive_lock<S: Store<String>>(store: &S, ns: &str) {
    let key = format!("{ns}conf-lock");
    let ttl = Duration::from_secs(30);
    let token = store
        .try_lock(&key, ttl)
        .await
        .expect("lock")
        .expect("free lock is granted");
    assert!(
        store
            .try_lock(&key, ttl)
            .await
            .expect("lock again")
            .is_none(),
        "a held lock is refused"
    );
    store
        .unlock(&key, &LockToken::new("not-the-owner"))
        .await
        .expect("foreign unlock is not an error");
    assert!(
        store
            .try_lock(&key, ttl)
            .await
            .expect("lock again")
            .is_none(),
        "a foreign unlock leaves the lock"
    );
    store.unlock(&key, &token).await.expect("unlock");
    let again = store
        .try_lock(&key, ttl)
        .await
        .expect("relock")
        .expect("a released lock is granted");
    store.unlock(&key, &again).await.expect("unlock");
    store
        .unlock(&key, &again)
        .await
        .expect("unlocking twice is not an error");
    // Locks and data don't share a namespace (Go bugs 21, 24).
    assert!(
        store.get(&key).await.expect("get").is_none(),
        "a lock is not an entry"
    );
}

/// Checks that the lock is granted at once, as in-memory stores do.
pub async fn check_granting_lock<S: Store<String>>(store: &S, ns: &str) {
    let key = format!("{ns}conf-lock");
    let a = store
        .try_lock(&key, Duration::from_secs(1))
        .await
        .expect("lock")
        .expect("granted");
    let b = store
        .try_lock(&key, Duration::from_secs(1))
        .await
        .expect("lock")
        .expect("granted again");
    store.unlock(&key, &a).await.expect("unlock");
    store.unlock(&key, &b).await.expect("unlock");
}

/// An unbounded in-memory store that counts operations and can be told to fail.
#[derive(Clone, Default)]
pub struct TestStore<V> {
    map: Arc<Mutex<HashMap<String, Entry<V>>>>,
    locks: Arc<Mutex<HashMap<String, HeldLock>>>,
    fail: Arc<AtomicBool>,
    corrupt: Arc<AtomicBool>,
    stalled: Arc<tokio::sync::watch::Sender<bool>>,
    latency: Arc<Mutex<Duration>>,
    reply_latency: Arc<Mutex<Duration>>,
    /// Number of `extend_lock` calls.
    pub extends: Arc<AtomicUsize>,
    /// Number of `get` calls.
    pub gets: Arc<AtomicUsize>,
    /// Number of `set` calls.
    pub sets: Arc<AtomicUsize>,
}

impl<V> std::fmt::Debug for TestStore<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestStore").finish_non_exhaustive()
    }
}

/// A lock as the test store keeps it: owner and expiry (tokio's clock, so paused-time
/// tests see locks expire).
#[derive(Clone)]
struct HeldLock {
    token: LockToken,
    until: tokio::time::Instant,
}

impl<V: Clone> TestStore<V> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            map: Arc::default(),
            locks: Arc::default(),
            fail: Arc::default(),
            corrupt: Arc::default(),
            stalled: Arc::new(tokio::sync::watch::channel(false).0),
            latency: Arc::default(),
            reply_latency: Arc::default(),
            extends: Arc::default(),
            gets: Arc::default(),
            sets: Arc::default(),
        }
    }

    /// Makes every operation hang until [`set_stalled(false)`](Self::set_stalled) (a
    /// server stopped with SIGSTOP: the connection stays open, nothing answers), or
    /// resumes the operations that hang.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Makes every operation take `latency` (tokio's clock) before it acts.
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap() = latency;
    }

    /// Makes `try_lock` act at once but answer `latency` later (tokio's clock): a server
    /// that took the lock while its reply came too late for the caller (a client that
    /// queued the command during a reconnection and sent it after the caller gave up).
    pub fn set_reply_latency(&self, latency: Duration) {
        *self.reply_latency.lock().unwrap() = latency;
    }

    /// Waits as a slow or stalled server would.
    async fn respond(&self) {
        let latency = *self.latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut stalled = self.stalled.subscribe();
        // The sender lives in `self`: the wait ends only when the store is resumed.
        let _ = stalled.wait_for(|s| !*s).await;
    }

    /// Makes every operation fail with a backend error (or stop failing).
    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Makes every `get` of a present key fail with a decode error (or stop).
    pub fn set_corrupt(&self, corrupt: bool) {
        self.corrupt.store(corrupt, Ordering::SeqCst);
    }

    /// Writes an entry directly, e.g. with an old `written_at`.
    pub fn put(&self, key: &str, entry: Entry<V>) {
        self.map.lock().unwrap().insert(key.to_owned(), entry);
    }

    /// Reads an entry directly.
    pub fn peek(&self, key: &str) -> Option<Entry<V>> {
        self.map.lock().unwrap().get(key).cloned()
    }

    /// Takes the lock for `key` as another process would (for an hour).
    pub fn hold_lock(&self, key: &str) -> LockToken {
        let token = LockToken::generate();
        let until = tokio::time::Instant::now() + Duration::from_secs(3600);
        self.locks.lock().unwrap().insert(
            key.to_owned(),
            HeldLock {
                token: token.clone(),
                until,
            },
        );
        token
    }

    /// Whether the lock for `key` is held (and not expired).
    pub fn is_locked(&self, key: &str) -> bool {
        self.locks
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|held| held.until > tokio::time::Instant::now())
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::backend_msg("test store is failing"))
        } else {
            Ok(())
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Store<V> for TestStore<V> {
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.respond().await;
        self.check()?;
        let entry = self.map.lock().unwrap().get(key).cloned();
        if entry.is_some() && self.corrupt.load(Ordering::SeqCst) {
            return Err(StoreError::decode_msg("test store holds corrupt bytes"));
        }
        Ok(entry)
    }

    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        self.sets.fetch_add(1, Ordering::SeqCst);
        self.respond().await;
        self.check()?;
        self.map
            .lock()
            .unwrap()
            .insert(key.to_owned(), entry.clone());
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.respond().await;
        self.check()?;
        self.map.lock().unwrap().remove(key);
        Ok(())
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.respond().await;
        self.check()?;
        let token = {
            let now = tokio::time::Instant::now();
            let mut locks = self.locks.lock().unwrap();
            if locks.get(key).is_some_and(|held| held.until > now) {
                return Ok(None);
            }
            let token = LockToken::generate();
            let held = HeldLock {
                token: token.clone(),
                until: now + ttl,
            };
            locks.insert(key.to_owned(), held);
            token
        };
        let reply_latency = *self.reply_latency.lock().unwrap();
        if !reply_latency.is_zero() {
            tokio::time::sleep(reply_latency).await;
        }
        Ok(Some(token))
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.respond().await;
        self.check()?;
        let mut locks = self.locks.lock().unwrap();
        if locks.get(key).is_some_and(|held| held.token == *token) {
            locks.remove(key);
        }
        Ok(())
    }

    async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.extends.fetch_add(1, Ordering::SeqCst);
        self.respond().await;
        self.check()?;
        let now = tokio::time::Instant::now();
        let mut locks = self.locks.lock().unwrap();
        match locks.get_mut(key) {
            Some(held) if held.token == *token && held.until > now => {
                held.until = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// An in-process [`Backplane`](crate::Backplane) for tests and examples of
/// [`TieredStore`](crate::TieredStore): every node's announcements reach every other
/// connected node at once. Make one node per tiered store with [`node`](Self::node).
#[derive(Clone, Default)]
pub struct LocalBus {
    nodes: Arc<Mutex<Vec<Arc<NodeState>>>>,
}

struct NodeState {
    connected: AtomicBool,
    listener: Mutex<Option<crate::Listener>>,
}

/// One process's end of a [`LocalBus`].
pub struct LocalNode {
    bus: LocalBus,
    state: Arc<NodeState>,
    /// Announcements this node published.
    pub published: Arc<AtomicUsize>,
}

impl LocalBus {
    /// A bus with no node yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new node on the bus, connected.
    pub fn node(&self) -> LocalNode {
        let state = Arc::new(NodeState {
            connected: AtomicBool::new(true),
            listener: Mutex::new(None),
        });
        self.nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::clone(&state));
        LocalNode {
            bus: self.clone(),
            state,
            published: Arc::default(),
        }
    }
}

impl NodeState {
    fn listener(&self) -> Option<crate::Listener> {
        self.listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl LocalNode {
    /// Drops (`false`) or restores (`true`) this node's connection: while it is down, what
    /// others publish does not reach it, and its own announcements reach no one. Tells
    /// the node's listener, as a real backplane does when it notices.
    pub fn set_connected(&self, up: bool) {
        self.state.connected.store(up, Ordering::SeqCst);
        if let Some(listener) = self.state.listener() {
            if up {
                listener.connected();
            } else {
                listener.disconnected();
            }
        }
    }

    /// Drops this node's connection without telling its listener (a loss the backplane
    /// did not notice): what others publish is lost for it.
    pub fn lose_messages_silently(&self) {
        self.state.connected.store(false, Ordering::SeqCst);
    }
}

impl crate::Backplane for LocalNode {
    async fn publish(&self, key: &str) -> Result<(), StoreError> {
        if !self.state.connected.load(Ordering::SeqCst) {
            return Err(StoreError::backend_msg(
                "local bus: this node is disconnected",
            ));
        }
        self.published.fetch_add(1, Ordering::SeqCst);
        let nodes = self
            .bus
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for node in nodes {
            if Arc::ptr_eq(&node, &self.state) || !node.connected.load(Ordering::SeqCst) {
                continue;
            }
            if let Some(listener) = node.listener() {
                listener.changed(key);
            }
        }
        Ok(())
    }

    fn listen(&self, listener: crate::Listener) {
        if self.state.connected.load(Ordering::SeqCst) {
            listener.connected();
        }
        *self
            .state
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listener);
    }
}

impl std::fmt::Debug for LocalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNode")
            .field("connected", &self.state.connected.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus").finish_non_exhaustive()
    }
}

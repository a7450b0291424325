//! [`TieredStore`]: an in-memory L1 in front of a shared L2 (Redis, NATS), kept coherent
//! across processes by a [`Backplane`].
//!
//! Coherence rule. Every key hashes to one of [`STRIPES`] stripes, each with a generation
//! counter; the store also has an epoch. An L1 entry records the generation of its stripe
//! and the epoch as they were *before* the L2 read that produced it, and is served only
//! while both are unchanged, while the backplane is connected, and for at most the L1 TTL.
//! An announcement from another process (and every write of this one) bumps the key's
//! stripe; a backplane that disconnects or reconnects bumps the epoch. So an L2 read that
//! began before an invalidation arrived can never be served from L1 after it: its entry
//! carries the old generation (the "no stale fill" check), whatever order the fill and the
//! invalidation take. The price: an invalidation also sends the other keys of its stripe
//! back to L2 once.

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use std::time::SystemTime;

use crate::{Clock, Entry, LockToken, Store, StoreError, Version};

/// Generation stripes of a [`TieredStore`]: an invalidation sends the L1 entries of its
/// stripe (about 1/4096 of them) back to L2 once.
pub const STRIPES: usize = 4096;

/// How long an L1 entry may be served without news from the backplane, by default.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(60);

/// The longest L1 TTL [`TieredStore::l1_ttl`] takes (a day): an L1 copy is a cache of a
/// cache, and a lost announcement should not be able to keep a stale value for longer.
pub const MAX_L1_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How the processes sharing an L2 tell each other that a key changed, so that each drops
/// its L1 copy (a Redis channel, a NATS subject…).
///
/// An implementation sends [`publish`](Self::publish)ed keys to every *other* process's
/// [`Listener`] (its own announcements need no echo), and says when its subscription is
/// lost and back ([`Listener::disconnected`], [`Listener::connected`]): a tiered store
/// serves nothing from L1 until the backplane is connected, and drops every L1 entry it
/// had when the connection comes back, since messages may have been missed meanwhile.
pub trait Backplane: Send + Sync + 'static {
    /// Announces that `key` changed (written or removed) in the shared store. Called after
    /// the L2 write returned.
    fn publish(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Starts delivering the other processes' announcements to `listener`, and its
    /// connection changes. Called once, by [`TieredStore::new`].
    fn listen(&self, listener: Listener);
}

/// What a [`Backplane`] tells the [`TieredStore`] it serves. Cheap to clone; it does not
/// keep the store alive ([`is_closed`](Self::is_closed) once the store is gone, when a
/// backplane's task should end).
#[derive(Clone)]
pub struct Listener(Weak<Coherence>);

impl Listener {
    /// Another process changed `key`: this process's L1 copy is no longer served.
    pub fn changed(&self, key: &str) {
        if let Some(c) = self.0.upgrade() {
            c.bump(key);
        }
    }

    /// The subscription is lost: messages may be missed from now on, so the L1 is not
    /// served (reads go to L2) until [`connected`](Self::connected).
    pub fn disconnected(&self) {
        if let Some(c) = self.0.upgrade() {
            c.connected.store(false, Ordering::SeqCst);
            c.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The subscription is (again) in place: every L1 entry from before is dropped
    /// (messages may have been missed), and the L1 serves again.
    pub fn connected(&self) {
        if let Some(c) = self.0.upgrade() {
            c.epoch.fetch_add(1, Ordering::SeqCst);
            c.connected.store(true, Ordering::SeqCst);
        }
    }

    /// Whether the tiered store serves from L1 now (the backplane said it is connected).
    pub fn is_connected(&self) -> bool {
        self.0
            .upgrade()
            .is_some_and(|c| c.connected.load(Ordering::SeqCst))
    }

    /// Whether the tiered store this listener served is gone.
    pub fn is_closed(&self) -> bool {
        self.0.strong_count() == 0
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("connected", &self.is_connected())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// The generations and epoch every L1 entry is checked against.
struct Coherence {
    stripes: Box<[AtomicU64]>,
    epoch: AtomicU64,
    connected: AtomicBool,
    hasher: foldhash::fast::FixedState,
    /// Woken at every bump, for the fleet waiters of [`Store::changed`].
    bumped: tokio::sync::Notify,
}

/// What an L1 entry must match to be served, read before the L2 read that fills it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    generation: u64,
    epoch: u64,
}

impl Coherence {
    fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            hasher: foldhash::fast::FixedState::default(),
            bumped: tokio::sync::Notify::new(),
        }
    }

    #[inline]
    fn stripe(&self, key: &str) -> &AtomicU64 {
        let h = self.hasher.hash_one(key) as usize;
        &self.stripes[h % STRIPES]
    }

    fn bump(&self, key: &str) {
        self.stripe(key).fetch_add(1, Ordering::SeqCst);
        self.bumped.notify_waiters();
    }

    /// The stamp of `key` now, if the L1 may be used (the backplane is connected).
    #[inline]
    fn stamp(&self, key: &str) -> Option<Stamp> {
        // Epoch before `connected`: a `disconnected` in between changes the epoch, so an
        // entry stamped here is never served after it.
        let epoch = self.epoch.load(Ordering::SeqCst);
        if !self.connected.load(Ordering::SeqCst) {
            return None;
        }
        Some(Stamp {
            generation: self.stripe(key).load(Ordering::SeqCst),
            epoch,
        })
    }
}

/// An L1 entry of a [`TieredStore`]: L2's entry as read (its `written_at` too, so that
/// ages stay fleet-wide), with what it must match to be served. The L1 store holds these;
/// its type is inferred (`LruStore::new(10_000)?` as the L1 of a `TieredStore<String, …>`
/// is an `LruStore<L1Entry<String>>`).
#[derive(Clone)]
pub struct L1Entry<V> {
    entry: Entry<V>,
    stamp: Stamp,
    /// When the copy stops being served: filled + the L1 TTL (compared, not subtracted, on
    /// every hit: a `SystemTime` difference costs a tenth of an L1 hit).
    expires: SystemTime,
}

impl<V> fmt::Debug for L1Entry<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("L1Entry")
            .field("written_at", &self.entry.written_at)
            .field("generation", &self.stamp.generation)
            .field("epoch", &self.stamp.epoch)
            .finish_non_exhaustive()
    }
}

/// A [`Store`] made of a fast local L1 (any memory store) in front of a shared L2 (Redis,
/// NATS), kept coherent across the processes sharing the L2 by a [`Backplane`].
///
/// - `get`: from L1 when it holds a valid copy (see the module docs), else from L2, whose
///   entry then fills L1 as is (its `written_at` too).
/// - `set` / `remove` / a conditional write that wrote: L2 first, then this process drops
///   its L1 copy (the next read fills it from L2), then the backplane tells the other
///   processes, which drop theirs.
/// - Locks, versions: L2's.
///
/// What it guarantees: a process serves an L1 copy only if no announcement for its key
/// (or its stripe) had arrived, and no write of its own had returned, when the read began
/// (a read takes effect when it begins), since the L2 read that produced the copy began;
/// while the backplane is connected; and for at most [`l1_ttl`](Self::l1_ttl). Another process's write is seen
/// here once its announcement arrives (the backplane's delay), or once the L1 TTL has
/// passed if the announcement is lost with the connection in a way the backplane did not
/// notice.
///
/// # Examples
///
/// ```
/// use echocache_core::test_util::{LocalBus, TestStore};
/// use echocache_core::{EchoCache, TieredStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // The L2 and backplane of a real fleet are Redis or NATS; here, in-process stand-ins.
/// let l2 = TestStore::<String>::new();
/// let bus = LocalBus::new();
/// let tiered = TieredStore::new(TestStore::new(), l2.clone(), bus.node());
/// let cache = EchoCache::new(tiered);
/// let v = cache
///     .fetch("k", || async { Ok::<_, std::io::Error>("v".to_owned()) })
///     .await
///     .unwrap();
/// assert_eq!(v, "v");
/// # }
/// ```
pub struct TieredStore<V, L1, L2, B> {
    l1: L1,
    l2: L2,
    backplane: B,
    coherence: Arc<Coherence>,
    l1_ttl: Duration,
    clock: Clock,
    value: PhantomData<fn() -> V>,
}

impl<V, L1, L2, B: Backplane> TieredStore<V, L1, L2, B> {
    /// An L1 `l1` in front of the shared `l2`, coherent through `backplane` (which starts
    /// listening now). Until the backplane says it is connected, every read goes to L2.
    pub fn new(l1: L1, l2: L2, backplane: B) -> Self {
        let coherence = Arc::new(Coherence::new());
        backplane.listen(Listener(Arc::downgrade(&coherence)));
        Self {
            l1,
            l2,
            backplane,
            coherence,
            l1_ttl: DEFAULT_L1_TTL,
            clock: Clock::default(),
            value: PhantomData,
        }
    }

    /// The clock the L1 TTL is counted on (e.g. a [`ManualClock`](crate::ManualClock) in
    /// tests).
    ///
    /// # Default
    ///
    /// [`Clock::system`]: the coarse wall clock, a few nanoseconds a read.
    pub fn clock(self, clock: impl Into<Clock>) -> Self {
        Self {
            clock: clock.into(),
            ..self
        }
    }

    /// Serves an L1 copy for at most `ttl` after it was filled: the bound on staleness if
    /// an announcement is ever lost unnoticed. At most [`MAX_L1_TTL`] (longer is taken as
    /// that).
    ///
    /// # Default
    ///
    /// [`DEFAULT_L1_TTL`] (60 s).
    pub fn l1_ttl(self, ttl: Duration) -> Self {
        Self {
            l1_ttl: ttl.min(MAX_L1_TTL),
            ..self
        }
    }

    /// The L1 store.
    pub fn l1(&self) -> &L1 {
        &self.l1
    }

    /// The shared L2 store.
    pub fn l2(&self) -> &L2 {
        &self.l2
    }

    /// The backplane.
    pub fn backplane(&self) -> &B {
        &self.backplane
    }

    /// Whether the L1 serves now (the backplane is connected).
    pub fn is_l1_serving(&self) -> bool {
        self.coherence.connected.load(Ordering::SeqCst)
    }
}

impl<V, L1, L2, B> fmt::Debug for TieredStore<V, L1, L2, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredStore")
            .field("l1_ttl", &self.l1_ttl)
            .field(
                "l1_serving",
                &self.coherence.connected.load(Ordering::SeqCst),
            )
            .finish_non_exhaustive()
    }
}

impl<V, L1, L2, B> TieredStore<V, L1, L2, B>
where
    V: Clone + Send + Sync + 'static,
    L1: Store<L1Entry<V>>,
    L2: Store<V>,
    B: Backplane,
{
    /// Puts `entry` in L1 stamped with `stamp` (a failing L1 is only a missed fill; so is
    /// an L1 TTL too long to add to the clock's time).
    async fn fill(&self, key: &str, entry: &Entry<V>, stamp: Stamp) {
        let Some(expires) = self.clock.now().checked_add(self.l1_ttl) else {
            return;
        };
        let copy = L1Entry {
            entry: entry.clone(),
            stamp,
            expires,
        };
        let _ = self.l1.set(key, &Entry::new(copy, entry.written_at)).await;
    }

    /// Reads L2 and fills L1 with what it read, stamped with `stamp` (taken before).
    async fn read_l2(
        &self,
        key: &str,
        stamp: Option<Stamp>,
    ) -> Result<Option<Entry<V>>, StoreError> {
        let read = self.l2.get(key).await?;
        if let (Some(entry), Some(stamp)) = (&read, stamp) {
            self.fill(key, entry, stamp).await;
        }
        Ok(read)
    }

    /// After this process changed `key` in L2: older L1 copies of it (in this process) are
    /// no longer served, and the others are told. The next read fills L1 from L2: filling
    /// it here could put an older value over a newer one when two writes of this process
    /// race (their L2 order and their fill order may differ).
    async fn changed_here(&self, key: &str) -> Result<(), StoreError> {
        self.coherence.bump(key);
        let _ = self.l1.remove(key).await;
        self.backplane.publish(key).await.map_err(|e| {
            StoreError::backend(Unannounced {
                source: Box::new(e),
            })
        })
    }
}

/// The L2 write succeeded but the backplane could not announce it.
#[derive(Debug)]
struct Unannounced {
    source: Box<StoreError>,
}

impl fmt::Display for Unannounced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "written to the shared store, but the backplane could not announce it: other \
             processes may serve their L1 copy until its L1 TTL ends",
        )
    }
}

impl std::error::Error for Unannounced {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl<V, L1, L2, B> Store<V> for TieredStore<V, L1, L2, B>
where
    V: Clone + Send + Sync + 'static,
    L1: Store<L1Entry<V>>,
    L2: Store<V>,
    B: Backplane,
{
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        // Stamped before both reads: an announcement that arrives from here on makes
        // whatever this read fills unservable.
        let stamp = self.coherence.stamp(key);
        if let Some(stamp) = stamp
            && let Ok(Some(copy)) = self.l1.get(key).await
        {
            let copy = copy.value;
            if copy.stamp == stamp && self.clock.now() < copy.expires {
                return Ok(Some(copy.entry));
            }
        }
        // Boxed: the L2 read's state (a network call) stays out of the L1 hit's future.
        Box::pin(self.read_l2(key, stamp)).await
    }

    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        self.l2.set(key, entry).await?;
        self.changed_here(key).await
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.l2.remove(key).await?;
        self.changed_here(key).await
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.l2.try_lock(key, ttl).await
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.l2.unlock(key, token).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.l2.extend_lock(key, token, ttl).await
    }

    /// L2's: the caches read versions on misses only.
    async fn get_versioned(&self, key: &str) -> Result<(Option<Entry<V>>, Version), StoreError> {
        self.l2.get_versioned(key).await
    }

    async fn set_if_version(
        &self,
        key: &str,
        entry: &Entry<V>,
        version: &Version,
    ) -> Result<bool, StoreError> {
        if !self.l2.set_if_version(key, entry, version).await? {
            return Ok(false);
        }
        self.changed_here(key).await.map(|()| true)
    }

    fn shares_locks(&self) -> bool {
        self.l2.shares_locks()
    }

    /// Returns as soon as an announcement for `key`'s stripe arrives (or this process
    /// writes it), else after `within`: a fleet waiter reads the holder's value as soon as
    /// the holder's write is announced.
    async fn changed(&self, key: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let stripe = self.coherence.stripe(key);
        let seen = stripe.load(Ordering::SeqCst);
        loop {
            let bumped = self.coherence.bumped.notified();
            let mut bumped = std::pin::pin!(bumped);
            // Registered before the check: a bump from here on wakes it.
            bumped.as_mut().enable();
            if stripe.load(Ordering::SeqCst) != seen {
                return;
            }
            tokio::select! {
                () = &mut bumped => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

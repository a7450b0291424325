//! Property tests: each store against a simple model under random sequences of
//! get / set / remove (and clock advances for the expiring stores).

mod common;

use std::time::{Duration, SystemTime};

use common::run;
use echocache_core::{Entry, ManualClock, Store};
use echocache_memory::{ExpiringLruStore, LruStore, SingleStore};
use proptest::prelude::*;

const KEYS: u8 = 8;

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
    Set(u8, u64),
    Remove(u8),
    /// Moves the clock forward by this many milliseconds.
    Advance(u64),
}

fn key(k: u8) -> String {
    format!("key-{k}")
}

fn data_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS).prop_map(Op::Get),
        4 => (0..KEYS, any::<u64>()).prop_map(|(k, v)| Op::Set(k, v)),
        1 => (0..KEYS).prop_map(Op::Remove),
    ]
}

fn timed_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        9 => data_op(),
        2 => (0..12u64).prop_map(Op::Advance),
    ]
}

/// A Vec-based LRU: front = least recently used. With a TTL, an entry expires at
/// `set time + ttl` (inclusive), is removed when read expired, and otherwise stays until
/// evicted: the model never reclaims on write.
struct Model {
    capacity: usize,
    ttl_ms: Option<u64>,
    entries: Vec<(u8, u64, u64)>, // key, value, expires at (ms)
}

impl Model {
    fn new(capacity: usize, ttl_ms: Option<u64>) -> Self {
        Self {
            capacity,
            ttl_ms,
            entries: Vec::new(),
        }
    }

    fn expired(&self, expires_at: u64, now: u64) -> bool {
        self.ttl_ms.is_some() && now >= expires_at
    }

    fn position(&self, k: u8) -> Option<usize> {
        self.entries.iter().position(|e| e.0 == k)
    }

    fn get(&mut self, k: u8, now: u64) -> Option<u64> {
        let i = self.position(k)?;
        let entry = self.entries.remove(i);
        if self.expired(entry.2, now) {
            return None;
        }
        self.entries.push(entry);
        Some(entry.1)
    }

    fn set(&mut self, k: u8, v: u64, now: u64) {
        if let Some(i) = self.position(k) {
            self.entries.remove(i);
        }
        self.entries
            .push((k, v, now + self.ttl_ms.unwrap_or(u64::MAX / 2)));
        if self.entries.len() > self.capacity {
            self.entries.remove(0);
        }
    }

    fn remove(&mut self, k: u8) {
        if let Some(i) = self.position(k) {
            self.entries.remove(i);
        }
    }

    fn live(&self, now: u64) -> usize {
        self.entries
            .iter()
            .filter(|e| !self.expired(e.2, now))
            .count()
    }
}

/// A timestamp the stores must return unchanged.
fn written(v: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(v % 1_000_000)
}

/// Applies `op` to both; returns the store's and the model's answer to a get.
fn step<S: Store<u64>>(
    store: &S,
    model: &mut Model,
    clock: &ManualClock,
    now: &mut u64,
    op: &Op,
) -> Result<(), TestCaseError> {
    match *op {
        Op::Get(k) => {
            let got = run(store.get(&key(k))).unwrap();
            let expected = model.get(k, *now);
            prop_assert_eq!(got.as_ref().map(|e| e.value), expected, "get {}", k);
            if let Some(entry) = got {
                prop_assert_eq!(entry.written_at, written(entry.value));
            }
        }
        Op::Set(k, v) => {
            run(store.set(&key(k), &Entry::new(v, written(v)))).unwrap();
            model.set(k, v, *now);
        }
        Op::Remove(k) => {
            run(store.remove(&key(k))).unwrap();
            model.remove(k);
        }
        Op::Advance(ms) => {
            clock.advance(Duration::from_millis(ms));
            *now += ms;
        }
    }
    Ok(())
}

fn start() -> (ManualClock, u64) {
    (
        ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)),
        0,
    )
}

proptest! {
    #[test]
    fn lru_store_matches_the_model(
        capacity in 1usize..=6,
        ops in prop::collection::vec(data_op(), 1..200),
    ) {
        let store = LruStore::new(capacity).unwrap();
        let mut model = Model::new(capacity, None);
        let (clock, mut now) = start();
        for op in &ops {
            step(&store, &mut model, &clock, &mut now, op)?;
            prop_assert_eq!(store.len(), model.entries.len());
            prop_assert!(store.len() <= capacity);
        }
        // Every key reads the same at the end (in the model's LRU order, which keeps it).
        for k in 0..KEYS {
            step(&store, &mut model, &clock, &mut now, &Op::Get(k))?;
        }
    }

    #[test]
    fn expiring_lru_store_matches_the_model(
        capacity in 1usize..=6,
        ttl_ms in 1u64..=20,
        ops in prop::collection::vec(timed_op(), 1..200),
    ) {
        let (clock, mut now) = start();
        let store = ExpiringLruStore::new(capacity, Duration::from_millis(ttl_ms))
            .unwrap()
            .with_clock(clock.clone());
        let mut model = Model::new(capacity, Some(ttl_ms));
        for op in &ops {
            step(&store, &mut model, &clock, &mut now, op)?;
            // The store reclaims expired entries the model keeps until read or evicted;
            // live entries are the same.
            prop_assert!(store.len() <= model.entries.len());
            prop_assert!(store.len() >= model.live(now));
            prop_assert!(store.len() <= capacity);
        }
        for k in 0..KEYS {
            step(&store, &mut model, &clock, &mut now, &Op::Get(k))?;
        }
    }

    #[test]
    fn single_store_matches_the_model(
        ttl_ms in 1u64..=20,
        ops in prop::collection::vec(timed_op(), 1..200),
    ) {
        let (clock, mut now) = start();
        let store = SingleStore::new(Duration::from_millis(ttl_ms))
            .unwrap()
            .with_clock(clock.clone());
        // One slot is an LRU of capacity one.
        let mut model = Model::new(1, Some(ttl_ms));
        for op in &ops {
            step(&store, &mut model, &clock, &mut now, op)?;
        }
        for k in 0..KEYS {
            step(&store, &mut model, &clock, &mut now, &Op::Get(k))?;
        }
    }
}
